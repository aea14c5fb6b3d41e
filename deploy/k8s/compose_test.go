package k8s

import (
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geoproxy/geoproxy/config"
)

const composeFile = "../compose/compose.yaml"

// composeService is the part of the Compose specification's service that
// compose.yaml uses; any other key fails the strict decode.
type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build,omitempty"`
	Command     []string `json:"command,omitempty"`
	Ports       []string `json:"ports,omitempty"`
	Volumes     []string `json:"volumes,omitempty"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval,omitempty"`
		Timeout     string   `json:"timeout,omitempty"`
		Retries     int      `json:"retries,omitempty"`
		StartPeriod string   `json:"start_period,omitempty"`
	} `json:"healthcheck,omitempty"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on,omitempty"`
	StopGracePeriod string   `json:"stop_grace_period,omitempty"`
	ReadOnly        bool     `json:"read_only,omitempty"`
	CapDrop         []string `json:"cap_drop,omitempty"`
	SecurityOpt     []string `json:"security_opt,omitempty"`
	Restart         string   `json:"restart,omitempty"`
}

type compose struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
}

// The compose file runs three regional apps and geoproxy in front of them,
// all from the one image, and the geoproxy config it mounts parses and
// sends each region to its app by the app's service name.
func TestCompose(t *testing.T) {
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := decodeStrict(data, &c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	entry, healthcheck := dockerfileCommands(t)

	gp, ok := c.Services["geoproxy"]
	if !ok {
		t.Fatal("no service geoproxy")
	}
	if len(c.Services) != 4 {
		t.Errorf("%d services, want geoproxy and three apps", len(c.Services))
	}
	for name, s := range c.Services {
		if s.Image == "" || s.Image != gp.Image {
			t.Errorf("service %s runs image %q, geoproxy %q: want one image", name, s.Image, gp.Image)
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("service %s: want read_only, cap_drop [ALL] and no-new-privileges", name)
		}
		if (s.Build != nil) != (name == "geoproxy") {
			t.Errorf("service %s: only geoproxy builds the image", name)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 3 || s.Healthcheck.Test[0] != "CMD" ||
			s.Healthcheck.Test[1] != entry[0] || s.Healthcheck.Test[2] != "healthcheck" {
			t.Errorf("service %s: healthcheck %+v, want [CMD %s healthcheck ...]", name, s.Healthcheck, entry[0])
			continue
		}
		acceptsFlags(t, s.Healthcheck.Test[2:])
		if len(s.Command) > 0 {
			acceptsFlags(t, s.Command)
		}
	}
	if gp.Build == nil {
		t.Fatal("geoproxy does not build the image")
	}
	if _, err := os.Stat(filepath.Join("../compose", gp.Build.Context, gp.Build.Dockerfile)); err != nil {
		t.Errorf("build: %v", err)
	}

	// geoproxy's config: the file in the mounted directory.
	if len(gp.Command) != 3 || gp.Command[0] != "serve" || gp.Command[1] != "-config" {
		t.Fatalf("geoproxy command %q, want serve -config FILE", gp.Command)
	}
	configPath := gp.Command[2]
	var hostDir string
	for _, v := range gp.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) == 3 && parts[1] == path.Dir(configPath) && parts[2] == "ro" {
			hostDir = parts[0]
		}
	}
	if hostDir == "" {
		t.Fatalf("geoproxy volumes %q: want the directory of %s mounted read-only (a directory, so that edits are seen)", gp.Volumes, configPath)
	}
	cfg, err := config.Load(filepath.Join("../compose", hostDir, path.Base(configPath)))
	if err != nil {
		t.Fatalf("the config compose.yaml mounts:\n%v", err)
	}

	// Each region's backend is an app service running that region.
	apps := map[string]bool{}
	for _, r := range cfg.Regions {
		for _, b := range r.Backends {
			u := b.URL
			app, ok := c.Services[u.Hostname()]
			if !ok {
				t.Errorf("region %s: backend %s is no service of compose.yaml", r.Name, b.URL)
				continue
			}
			apps[u.Hostname()] = true
			want := []string{"app", "-region", r.Name, "-listen", ":" + u.Port()}
			if !slices.Equal(app.Command, want) {
				t.Errorf("service %s runs %q, want %q", u.Hostname(), app.Command, want)
			}
			if hc := app.Healthcheck; hc != nil && !slices.Contains(hc.Test, "http://127.0.0.1:"+u.Port()+cfg.HealthCheck.Path) {
				t.Errorf("service %s: healthcheck %q does not check %s", u.Hostname(), hc.Test, cfg.HealthCheck.Path)
			}
			if _, ok := gp.DependsOn[u.Hostname()]; !ok {
				t.Errorf("geoproxy does not depend on %s", u.Hostname())
			}
		}
	}
	for _, want := range []string{"us-east", "us-west", "europe-west"} {
		if !apps[want] {
			t.Errorf("no region is served by the app %s", want)
		}
	}

	// Ports: the proxy published, the admin listener on the host's loopback
	// only, and the healthcheck on the admin listener's /readyz.
	_, proxyPort, _ := net.SplitHostPort(cfg.Listen)
	adminHost, adminPort, _ := net.SplitHostPort(cfg.Admin.Listen)
	if adminHost != "0.0.0.0" && adminHost != "" {
		t.Errorf("admin.listen %s: publish it from the container's every interface", cfg.Admin.Listen)
	}
	if !slices.Contains(gp.Ports, proxyPort+":"+proxyPort) {
		t.Errorf("geoproxy ports %q do not publish listen %s", gp.Ports, cfg.Listen)
	}
	if !slices.Contains(gp.Ports, "127.0.0.1:"+adminPort+":"+adminPort) {
		t.Errorf("geoproxy ports %q do not publish admin.listen %s on loopback only", gp.Ports, cfg.Admin.Listen)
	}
	for _, p := range gp.Ports {
		if strings.HasSuffix(p, ":"+adminPort) && !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("geoproxy publishes its admin port to every interface: %s", p)
		}
	}
	if want := append(append([]string{"CMD"}, healthcheck...), "-url", "http://127.0.0.1:"+adminPort+"/readyz"); !slices.Equal(gp.Healthcheck.Test, want) {
		t.Errorf("geoproxy healthcheck %q, want %q", gp.Healthcheck.Test, want)
	}

	// docker stop waits for the drain.
	stop, err := time.ParseDuration(gp.StopGracePeriod)
	if need := cfg.Shutdown.DrainDelay + shutdownGrace(t, gp.Command); err != nil || stop <= need {
		t.Errorf("stop_grace_period %q: must exceed drain_delay + shutdown-grace = %v", gp.StopGracePeriod, need)
	}
}
