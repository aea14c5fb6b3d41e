package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	dockerfile = "../../Dockerfile"
	unitFile   = "../geoproxy.service"
)

// dockerfileCommands reads the Dockerfile's instructions (continuation
// lines joined, comments dropped) and returns the image's ENTRYPOINT and
// its HEALTHCHECK command, after checking that both run the binary the
// image holds.
func dockerfileCommands(t *testing.T) (entrypoint, healthcheck []string) {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var instructions []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		instructions = append(instructions, cur.String())
		cur.Reset()
	}
	var binary string
	for _, in := range instructions {
		keyword, rest, _ := strings.Cut(in, " ")
		switch strings.ToUpper(keyword) {
		case "FROM":
			binary = "" // only the last stage's files are in the image
		case "COPY":
			f := strings.Fields(rest)
			if len(f) > 0 && filepath.Base(f[len(f)-1]) == "geoproxy" {
				binary = f[len(f)-1]
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT %s: want the exec form: %v", rest, err)
			}
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(rest, "CMD ")
			if !ok {
				t.Fatalf("HEALTHCHECK %s: no CMD", rest)
			}
			if err := json.Unmarshal([]byte(cmd), &healthcheck); err != nil {
				t.Fatalf("HEALTHCHECK CMD %s: want the exec form (the image has no shell): %v", cmd, err)
			}
		}
	}
	if binary == "" || len(entrypoint) != 1 || entrypoint[0] != binary {
		t.Fatalf("the image holds %q, its ENTRYPOINT is %q", binary, entrypoint)
	}
	if len(healthcheck) < 2 || healthcheck[0] != binary || healthcheck[1] != "healthcheck" {
		t.Fatalf("HEALTHCHECK CMD %q, want [%s healthcheck ...]", healthcheck, binary)
	}
	return entrypoint, healthcheck
}

func TestDockerfileHealthcheck(t *testing.T) {
	_, hc := dockerfileCommands(t)
	acceptsFlags(t, hc[1:])
}

// unit is a systemd unit file: section, key, values (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, data []byte) unit {
	t.Helper()
	u := unit{}
	section := ""
	var pending string
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if pending != "" {
			line, pending = pending+" "+line, ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			pending = l
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: not a key=value line in a section: %q", unitFile, n+1, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		u[section][k] = append(u[section][k], v)
	}
	return u
}

// get returns a key's last value (the one systemd applies to a single
// value key).
func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// seconds reads a systemd time span in seconds: "30", "30s", "1min", "1min 30s".
func seconds(t *testing.T, span string) time.Duration {
	t.Helper()
	var total time.Duration
	for _, f := range strings.Fields(span) {
		num := strings.TrimRight(f, "abcdefghijklmnopqrstuvwxyz")
		n, err := strconv.Atoi(num)
		if err != nil {
			t.Fatalf("time span %q: %v", span, err)
		}
		unit := map[string]time.Duration{"": time.Second, "s": time.Second, "sec": time.Second,
			"m": time.Minute, "min": time.Minute, "ms": time.Millisecond}[f[len(num):]]
		if unit == 0 {
			t.Fatalf("time span %q: unit not handled here", span)
		}
		total += time.Duration(n) * unit
	}
	return total
}

func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, data)
	const bin, cfg = "/usr/local/bin/geoproxy", "/etc/geoproxy/geoproxy.yaml"
	svc := "Service"

	start := strings.Fields(u.get(svc, "ExecStart"))
	if want := []string{bin, "serve", "-config", cfg}; !slices.Equal(start, want) {
		t.Errorf("ExecStart %q, want %q", start, want)
	}
	if len(start) > 1 {
		acceptsFlags(t, start[1:])
	}
	for _, key := range []string{"ExecStartPre", "ExecReload"} {
		if !slices.Contains(u[svc][key], bin+" validate "+cfg) {
			t.Errorf("%s %q: want the config validated first", key, u[svc][key])
		}
	}
	if reload := u[svc]["ExecReload"]; len(reload) == 0 || reload[len(reload)-1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload %q: want /bin/kill -HUP $MAINPID last", reload)
	}
	for key, want := range map[string]string{
		"Type": "exec", "Restart": "on-failure", "KillSignal": "SIGTERM",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
		"ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "MemoryDenyWriteExecute": "yes",
		"CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
	} {
		if got := u.get(svc, key); got != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if u.get(svc, "DynamicUser") != "yes" && (u.get(svc, "User") == "" || u.get(svc, "User") == "root") {
		t.Error("runs as root: set DynamicUser=yes or User=")
	}
	// The defaults: drain_delay 5s, -shutdown-grace 15s.
	need := 5*time.Second + shutdownGrace(t, start)
	if stop := seconds(t, u.get(svc, "TimeoutStopSec")); stop <= need {
		t.Errorf("TimeoutStopSec %v: must exceed drain_delay + shutdown-grace = %v", stop, need)
	}
	if u.get("Install", "WantedBy") != "multi-user.target" {
		t.Error("not wanted by multi-user.target")
	}

	// The unit's validate step, run on a real config, passes.
	b, err := geoproxyBinary()
	if err != nil {
		t.Fatal(err)
	}
	pre := strings.Fields(u.get(svc, "ExecStartPre"))
	pre[len(pre)-1] = "../compose/config/geoproxy.yaml"
	if out, err := exec.Command(b, pre[1:]...).CombinedOutput(); err != nil || string(out) != "ok\n" {
		t.Errorf("%q: %v\n%s", pre, err, out)
	}
}

// systemd-analyze verify, where it is installed, reads the unit as systemd
// would: unknown keys, bad values and missing executables are reported.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	b, err := geoproxyBinary()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	// The binary is not installed here: point the unit at the one built.
	dir := t.TempDir()
	tmp := filepath.Join(dir, "geoproxy.service")
	fixed := bytes.ReplaceAll(data, []byte("/usr/local/bin/geoproxy"), []byte(b))
	if err := os.WriteFile(tmp, fixed, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", tmp).CombinedOutput()
	// Only lines about this unit count: verify also reports the host's
	// other units it loads.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, tmp) || strings.Contains(line, "geoproxy.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	if err != nil && !t.Failed() {
		t.Logf("systemd-analyze verify exited with %v (nothing about geoproxy.service):\n%s", err, out)
	}
}
