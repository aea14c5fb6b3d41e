package k8s

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/geoproxy/geoproxy/config"
)

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (monitoring.coreos.com/v1) that the manifests use; a field outside it
// fails the strict decode, and must be added here from the operator's API.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// kustomization is the part of kustomize's Kustomization that the manifests
// use.
type kustomization struct {
	metav1.TypeMeta `json:",inline"`
	Namespace       string   `json:"namespace,omitempty"`
	Resources       []string `json:"resources"`
	Images          []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
}

// manifests are the objects of every YAML file in this directory and below.
type manifests struct {
	files          []string // slash-separated, relative to this directory
	configMaps     []*corev1.ConfigMap
	deployments    []*appsv1.Deployment
	services       []*corev1.Service
	pdbs           []*policyv1.PodDisruptionBudget
	networkPols    []*networkingv1.NetworkPolicy
	monitors       []*serviceMonitor
	kustomizations []*kustomization
}

var loadManifests = sync.OnceValues(func() (*manifests, error) {
	m := &manifests{}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (path.Ext(p) != ".yaml" && path.Ext(p) != ".yml") {
			return err
		}
		m.files = append(m.files, filepath.ToSlash(p))
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		docs, err := splitDocuments(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for i, doc := range docs {
			if err := m.add(doc); err != nil {
				return fmt.Errorf("%s, document %d: %w", p, i+1, err)
			}
		}
		return nil
	})
	return m, err
})

// add decodes one document strictly into the type its apiVersion and kind
// name.
func (m *manifests) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := decodeStrictTypeMeta(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		o := &corev1.ConfigMap{}
		m.configMaps, obj = append(m.configMaps, o), o
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		m.deployments, obj = append(m.deployments, o), o
	case "v1 Service":
		o := &corev1.Service{}
		m.services, obj = append(m.services, o), o
	case "policy/v1 PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		m.pdbs, obj = append(m.pdbs, o), o
	case "networking.k8s.io/v1 NetworkPolicy":
		o := &networkingv1.NetworkPolicy{}
		m.networkPols, obj = append(m.networkPols, o), o
	case "monitoring.coreos.com/v1 ServiceMonitor":
		o := &serviceMonitor{}
		m.monitors, obj = append(m.monitors, o), o
	case "kustomize.config.k8s.io/v1beta1 Kustomization":
		o := &kustomization{}
		m.kustomizations, obj = append(m.kustomizations, o), o
	default:
		return fmt.Errorf("unexpected apiVersion %q, kind %q", tm.APIVersion, tm.Kind)
	}
	return decodeStrict(doc, obj)
}

// decodeStrictTypeMeta reads apiVersion and kind only.
func decodeStrictTypeMeta(doc []byte, tm *metav1.TypeMeta) error {
	var head struct {
		metav1.TypeMeta `json:",inline"`
	}
	var all map[string]any
	if err := decodeStrict(doc, &all); err != nil {
		return err
	}
	head.APIVersion, _ = all["apiVersion"].(string)
	head.Kind, _ = all["kind"].(string)
	if head.APIVersion == "" || head.Kind == "" {
		return fmt.Errorf("no apiVersion or kind")
	}
	*tm = head.TypeMeta
	return nil
}

func load(t *testing.T) *manifests {
	t.Helper()
	m, err := loadManifests()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// one returns the only object of a kind.
func one[T any](t *testing.T, kind string, objs []T) T {
	t.Helper()
	if len(objs) != 1 {
		t.Fatalf("%d %s objects, want 1", len(objs), kind)
	}
	return objs[0]
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := load(t)
	got := map[string]int{
		"ConfigMap": len(m.configMaps), "Deployment": len(m.deployments), "Service": len(m.services),
		"PodDisruptionBudget": len(m.pdbs), "NetworkPolicy": len(m.networkPols),
		"ServiceMonitor": len(m.monitors), "Kustomization": len(m.kustomizations),
	}
	want := map[string]int{
		"ConfigMap": 1, "Deployment": 1, "Service": 2, "PodDisruptionBudget": 1,
		"NetworkPolicy": 1, "ServiceMonitor": 1, "Kustomization": 1,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%d %s objects, want %d", got[k], k, n)
		}
	}
	t.Logf("decoded %v from %v", got, m.files)
}

// kubectl apply -k deploy/k8s applies every manifest but the
// ServiceMonitor, which needs the Prometheus Operator's CRD.
func TestKustomizationListsTheManifests(t *testing.T) {
	m := load(t)
	k := one(t, "Kustomization", m.kustomizations)
	var want []string
	for _, f := range m.files {
		if f != "kustomization.yaml" && !strings.HasPrefix(f, "monitoring/") {
			want = append(want, f)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want %v", got, want)
	}
	if k.Namespace == "" {
		t.Error("kustomization sets no namespace")
	}
	d := one(t, "Deployment", m.deployments)
	image := d.Spec.Template.Spec.Containers[0].Image
	if len(k.Images) != 1 || !strings.HasPrefix(image, k.Images[0].Name+":") || k.Images[0].NewTag == "" {
		t.Errorf("kustomization images %+v do not set the Deployment's image %q", k.Images, image)
	}
}

// configFile returns the config the Deployment runs with, from the
// ConfigMap it mounts, parsed as geoproxy parses it.
func configFile(t *testing.T, m *manifests) (*config.Config, string) {
	t.Helper()
	d := one(t, "Deployment", m.deployments)
	c := d.Spec.Template.Spec.Containers[0]
	configPath := flagValue(t, c.Args, "-config")
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == path.Dir(configPath) {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Fatalf("no volume mounted at %s, the directory of -config %s", path.Dir(configPath), configPath)
	}
	if mount.SubPath != "" || mount.SubPathExpr != "" {
		t.Errorf("the config volume is mounted with subPath: the kubelet never updates it")
	}
	if !mount.ReadOnly {
		t.Errorf("the config volume is writable")
	}
	var cmName string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == mount.Name && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
			if len(v.ConfigMap.Items) > 0 {
				t.Errorf("the config volume picks items: keep the ConfigMap's keys as files")
			}
		}
	}
	cm := one(t, "ConfigMap", m.configMaps)
	if cm.Name != cmName {
		t.Fatalf("the Deployment mounts ConfigMap %q, the manifests have %q", cmName, cm.Name)
	}
	key := path.Base(configPath)
	data, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cm.Name, key)
	}
	cfg, err := config.Parse("configmap.yaml: data."+key, []byte(data))
	if err != nil {
		t.Fatalf("the ConfigMap's config does not parse:\n%v", err)
	}
	return cfg, configPath
}

// flagValue returns the value of a -name flag in a command line.
func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	t.Fatalf("no %s in %q", name, args)
	return ""
}

// port returns the port of a host:port address.
func port(t *testing.T, addr string) (host string, port int32) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return h, int32(n)
}

func TestConfigMapConfig(t *testing.T) {
	m := load(t)
	cfg, _ := configFile(t, m)
	if len(cfg.Regions) == 0 {
		t.Error("no region")
	}
	if h, _ := port(t, cfg.Admin.Listen); h != "0.0.0.0" && h != "" && h != "::" {
		t.Errorf("admin.listen %s: the kubelet's probes and Prometheus reach the pod IP, not loopback", cfg.Admin.Listen)
	}
	if h, _ := port(t, cfg.Listen); h != "0.0.0.0" && h != "" && h != "::" {
		t.Errorf("listen %s: the Service reaches the pod IP, not loopback", cfg.Listen)
	}
}

func containerPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, name)
	return 0
}

// shutdownGrace is serve's -shutdown-grace in a command line, or its
// default.
func shutdownGrace(t *testing.T, args []string) time.Duration {
	t.Helper()
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "-shutdown-grace=")
		if a == "-shutdown-grace" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	return 15 * time.Second
}

func TestDeployment(t *testing.T) {
	m := load(t)
	d := one(t, "Deployment", m.deployments)
	cfg, configPath := configFile(t, m)
	spec := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the Deployment's selector %v does not select its pods %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if want := []string{"serve", "-config", "/etc/geoproxy/geoproxy.yaml"}; !slices.Equal(c.Args, want) || len(c.Command) != 0 {
		t.Errorf("command %q args %q, want the image's entrypoint with %q", c.Command, c.Args, want)
	}
	acceptsFlags(t, c.Args)
	if configPath != "/etc/geoproxy/geoproxy.yaml" {
		t.Errorf("-config %s", configPath)
	}

	// Ports: those of the config.
	_, adminPort := port(t, cfg.Admin.Listen)
	_, proxyPort := port(t, cfg.Listen)
	if p := containerPort(t, c, "admin"); p != adminPort {
		t.Errorf("container port admin %d, admin.listen %s", p, cfg.Admin.Listen)
	}
	if p := containerPort(t, c, "http"); p != proxyPort {
		t.Errorf("container port http %d, listen %s", p, cfg.Listen)
	}

	// Probes on the admin port.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		g := p.probe.HTTPGet
		onAdmin := g.Port == intstr.FromString("admin") || g.Port == intstr.FromInt32(adminPort)
		if g.Path != p.path || !onAdmin || g.Host != "" {
			t.Errorf("%s probe %s on port %s, want %s on the admin port", p.name, g.Path, g.Port.String(), p.path)
		}
	}

	// Drain: preStop sleeps drain_delay, the grace period covers it all.
	drain := cfg.Shutdown.DrainDelay
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("no preStop sleep")
	}
	sleep := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	if sleep != drain {
		t.Errorf("preStop sleeps %v, shutdown.drain_delay is %v: keep them equal", sleep, drain)
	}
	need := sleep + drain + shutdownGrace(t, c.Args)
	grace := 30 * time.Second // Kubernetes' default
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	if grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v, must exceed preStop + drain_delay + shutdown-grace = %v", grace, need)
	}
	if u := d.Spec.Strategy.RollingUpdate; u == nil || u.MaxUnavailable == nil || u.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update %+v: want maxUnavailable 0, so that a new pod is ready before an old one drains", u)
	}

	// Scrape annotations on the admin port.
	a := d.Spec.Template.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(adminPort)) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v, want the admin port %d and /metrics", a, adminPort)
	}

	// Security.
	psc, sc := spec.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("no security context")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("the pod may run as root")
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("no RuntimeDefault seccomp profile")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root file system is writable")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("privilege escalation is allowed")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v, want all dropped", sc.Capabilities)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod gets a service account token it does not use")
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}
}

// selects reports whether a label selector, as Services and network
// policies write it, picks the Deployment's pods.
func selects(t *testing.T, m *manifests, sel map[string]string) bool {
	t.Helper()
	d := one(t, "Deployment", m.deployments)
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(d.Spec.Template.Labels))
}

func TestServices(t *testing.T) {
	m := load(t)
	c := one(t, "Deployment", m.deployments).Spec.Template.Spec.Containers[0]
	var public, admin *corev1.Service
	for _, s := range m.services {
		if !selects(t, m, s.Spec.Selector) {
			t.Errorf("Service %s selects %v, not the Deployment's pods", s.Name, s.Spec.Selector)
		}
		for _, p := range s.Spec.Ports {
			switch p.TargetPort {
			case intstr.FromString("admin"), intstr.FromInt32(containerPort(t, c, "admin")):
				admin = s
			case intstr.FromString("http"), intstr.FromInt32(containerPort(t, c, "http")):
				public = s
			default:
				t.Errorf("Service %s port %s targets %s, no port of the container", s.Name, p.Name, p.TargetPort.String())
			}
		}
	}
	if public == nil || admin == nil || public == admin {
		t.Fatal("want one Service for the proxy port and another for the admin port")
	}
	if public.Spec.Type == corev1.ServiceTypeLoadBalancer && public.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Error("the LoadBalancer Service hides client addresses: set externalTrafficPolicy: Local")
	}
	if admin.Spec.Type != "" && admin.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("the admin Service is of type %s: keep it inside the cluster", admin.Spec.Type)
	}
	if !admin.Spec.PublishNotReadyAddresses {
		t.Error("the admin Service drops pods that are not ready: they would not be scraped")
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	m := load(t)
	pdb := one(t, "PodDisruptionBudget", m.pdbs)
	d := one(t, "Deployment", m.deployments)
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the PDB's selector %v does not select the Deployment's pods (%v)", pdb.Spec.Selector, err)
	}
	replicas := int(*d.Spec.Replicas)
	switch {
	case pdb.Spec.MaxUnavailable != nil:
		if n := pdb.Spec.MaxUnavailable.IntValue(); n < 1 || n >= replicas {
			t.Errorf("maxUnavailable %d of %d replicas", n, replicas)
		}
	case pdb.Spec.MinAvailable != nil:
		if n := pdb.Spec.MinAvailable.IntValue(); n < 1 || n >= replicas {
			t.Errorf("minAvailable %d of %d replicas: a node drain could never evict one", n, replicas)
		}
	default:
		t.Error("the PDB sets neither maxUnavailable nor minAvailable")
	}
}

func TestServiceMonitor(t *testing.T) {
	m := load(t)
	sm := one(t, "ServiceMonitor", m.monitors)
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var picked []*corev1.Service
	for _, s := range m.services {
		if sel.Matches(labels.Set(s.Labels)) {
			picked = append(picked, s)
		}
	}
	if len(picked) != 1 {
		t.Fatalf("the ServiceMonitor selects %d Services, want the admin one only", len(picked))
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(sm.Spec.Endpoints))
	}
	e := sm.Spec.Endpoints[0]
	found := false
	for _, p := range picked[0].Spec.Ports {
		found = found || (p.Name == e.Port && p.TargetPort == intstr.FromString("admin"))
	}
	if !found || e.Path != "/metrics" {
		t.Errorf("the ServiceMonitor scrapes %s on port %q, want /metrics on the admin port of Service %s", e.Path, e.Port, picked[0].Name)
	}
	if v := picked[0].Labels[sm.Spec.JobLabel]; v == "" {
		t.Errorf("jobLabel %q: the admin Service has no such label", sm.Spec.JobLabel)
	}
	for _, d := range []string{e.Interval, e.ScrapeTimeout} {
		if _, err := time.ParseDuration(d); err != nil {
			t.Errorf("duration %q: %v", d, err)
		}
	}
}

func TestNetworkPolicy(t *testing.T) {
	m := load(t)
	np := one(t, "NetworkPolicy", m.networkPols)
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	d := one(t, "Deployment", m.deployments)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Fatalf("the NetworkPolicy does not select the Deployment's pods (%v)", err)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Fatal("the NetworkPolicy does not restrict ingress")
	}
	open := map[string]bool{} // port name -> reachable from anywhere
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port == nil {
				t.Errorf("a rule opens every port")
				continue
			}
			open[p.Port.String()] = open[p.Port.String()] || len(r.From) == 0
		}
	}
	if v, ok := open["http"]; !ok || !v {
		t.Error("the proxy port is not open to all")
	}
	if v, ok := open["admin"]; !ok || v {
		t.Errorf("the admin port is %s", map[bool]string{true: "open to all", false: "not reachable at all"}[v])
	}
}

// The admin listener is on the pod IP: changes through it need the token,
// read from a Secret that is mounted, not world-readable, and not in the
// manifests.
func TestAdminToken(t *testing.T) {
	m := load(t)
	cfg, _ := configFile(t, m)
	if cfg.Admin.TokenFile == "" {
		t.Fatal("admin.listen is on the pod IP without admin.token_file")
	}
	spec := one(t, "Deployment", m.deployments).Spec.Template.Spec
	var mount *corev1.VolumeMount
	for i, vm := range spec.Containers[0].VolumeMounts {
		if vm.MountPath == path.Dir(cfg.Admin.TokenFile) {
			mount = &spec.Containers[0].VolumeMounts[i]
		}
	}
	if mount == nil || !mount.ReadOnly || mount.SubPath != "" {
		t.Fatalf("admin.token_file %s: no read-only volume mounted at %s", cfg.Admin.TokenFile, path.Dir(cfg.Admin.TokenFile))
	}
	var secret *corev1.SecretVolumeSource
	for _, v := range spec.Volumes {
		if v.Name == mount.Name {
			secret = v.Secret
		}
	}
	if secret == nil {
		t.Fatalf("volume %s is not a Secret", mount.Name)
	}
	if secret.Optional != nil && *secret.Optional {
		t.Error("the token's Secret is optional: geoproxy would refuse its config")
	}
	if secret.DefaultMode == nil || *secret.DefaultMode&0o007 != 0 {
		t.Errorf("the token file's mode %v lets every user read it", secret.DefaultMode)
	}
	if sc := spec.SecurityContext; secret.DefaultMode != nil && *secret.DefaultMode&0o070 != 0 &&
		(sc == nil || sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup) {
		t.Error("the token file is readable by its group: set fsGroup to the process's group")
	}
	found := len(secret.Items) == 0
	for _, it := range secret.Items {
		found = found || it.Path == path.Base(cfg.Admin.TokenFile)
	}
	if !found {
		t.Errorf("Secret %s has no item at %s", secret.SecretName, path.Base(cfg.Admin.TokenFile))
	}
}
