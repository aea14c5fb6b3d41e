package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestValidate(t *testing.T) {
	code, out, _ := runCLI("validate", "-config", "../../config/testdata/example.yaml")
	assert.Equal(t, 0, code)
	assert.Equal(t, "ok\n", out)

	bad := writeFile(t, "bad.yaml", `listen: 127.0.0.1:8080
health_check:
  interval: 1s
  timeout: 2s
regions:
  - name: us-east
    location: {lat: 95, lon: -81.16}
    backends:
      - url: ftp://127.0.0.1:9101
`)
	code, out, errOut := runCLI("validate", "-config", bad)
	assert.Equal(t, 1, code)
	assert.Empty(t, out)
	// Every problem, each with file:line and field.
	assert.Contains(t, errOut, bad+":4:")
	assert.Contains(t, errOut, "health_check.timeout")
	assert.Contains(t, errOut, bad+":7:")
	assert.Contains(t, errOut, "regions[0].location.lat")
	assert.Contains(t, errOut, bad+":9:")
	assert.Contains(t, errOut, "regions[0].backends[0].url")

	code, _, errOut = runCLI("validate", "-config", filepath.Join(t.TempDir(), "missing.yaml"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "missing.yaml")
}

// The file may be given as an argument; the geo database it names must
// open; a binary file is named as such.
func TestValidateAsTyped(t *testing.T) {
	code, out, _ := runCLI("validate", "../../config/testdata/example.yaml")
	assert.Equal(t, 0, code)
	assert.Equal(t, "ok\n", out)
	code, _, errOut := runCLI("validate", "-config", "a.yaml", "b.yaml")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "once")

	dir := t.TempDir()
	corrupt := filepath.Join(dir, "city.mmdb")
	require.NoError(t, os.WriteFile(corrupt, []byte("not a database"), 0o600))
	for db, want := range map[string]string{
		filepath.Join(dir, "missing.mmdb"): "no such file",
		corrupt:                            "invalid MaxMind DB",
		"../../testdata/geoip2-city.mmdb":  "",
	} {
		cfg := writeFile(t, "db.yaml", "geoip:\n  database: "+db+"\nregions:\n  - name: a\n    location: {lat: 1, lon: 2}\n    backends: [{url: \"http://127.0.0.1:9101\"}]\n")
		code, out, errOut := runCLI("validate", cfg)
		if want == "" {
			assert.Equal(t, 0, code, errOut)
			assert.Equal(t, "ok\n", out)
			continue
		}
		assert.Equal(t, 1, code)
		assert.Contains(t, errOut, cfg+":2:13: geoip.database: ")
		assert.Contains(t, errOut, want)
	}

	bin, err := os.ReadFile("/proc/self/exe")
	require.NoError(t, err)
	cfg := writeFile(t, "geoproxy.bin", string(bin[:300]))
	code, _, errOut = runCLI("validate", cfg)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not a YAML config")
	assert.Less(t, len(errOut), 200, "one short line, not the file's bytes")
}

func TestLookup(t *testing.T) {
	cfg := writeFile(t, "geo.yaml", `geoip:
  database: ../../testdata/geoip2-city.mmdb
  default_location: {lat: 40.71, lon: -74.01}
regions:
  - {name: us-east, location: {lat: 33.84, lon: -81.16}, backends: [{url: "http://127.0.0.1:9101"}]}
  - {name: us-west, location: {lat: 45.59, lon: -121.18}, backends: [{url: "http://127.0.0.1:9102"}]}
  - {name: europe-west, location: {lat: 50.45, lon: 3.82}, backends: [{url: "http://127.0.0.1:9103"}]}
`)
	code, out, errOut := runCLI("lookup", "-config", cfg, "203.0.113.10", "203.0.113.70", "10.0.0.1")
	require.Equal(t, 0, code, errOut)
	blocks := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, blocks, 12, out)
	assert.Regexp(t, `^203\.0\.113\.10: London, ENG, GB, EU \(51\.51, -0\.09\) \[found\]$`, blocks[0])
	assert.Regexp(t, `1\.\s+europe-west\s+\d+ km\s+nearest`, blocks[1])
	assert.Regexp(t, `2\.\s+us-east`, blocks[2])
	assert.Regexp(t, `^203\.0\.113\.70: Seattle`, blocks[4])
	assert.Regexp(t, `1\.\s+us-west`, blocks[5])
	assert.Regexp(t, `^10\.0\.0\.1: unknown place \(40\.71, -74\.01\) \[private\]$`, blocks[8])
	assert.Regexp(t, `1\.\s+us-east`, blocks[9])

	code, _, errOut = runCLI("lookup", "-config", cfg, "not-an-ip")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `"not-an-ip" is not an IP address`)

	code, _, _ = runCLI("lookup", "-config", cfg)
	assert.Equal(t, 2, code)
}

func TestHelpAndUnknownCommand(t *testing.T) {
	code, _, errOut := runCLI()
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "Usage:")
	code, _, errOut = runCLI("frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)
	for _, cmd := range []string{"serve", "validate", "lookup", "demo", "app", "healthcheck"} {
		code, _, errOut = runCLI(cmd, "-h")
		assert.Equal(t, 0, code, cmd)
		assert.Contains(t, errOut, "Usage: geoproxy "+cmd, cmd)
		assert.Contains(t, errOut, "-", cmd)
	}
	code, _, errOut = runCLI("serve", "-log-level", "loud", "-config", "../../config/testdata/example.yaml")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "-log-level")
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI("version")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "geoproxy ")
	assert.Regexp(t, `embedded geo data: .* built \d{4}-\d{2}-\d{2}`, out)
	assert.Contains(t, out, "IP Geolocation by DB-IP")
}

// buildBinary compiles geoproxy once for the process tests.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "geoproxy-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "geoproxy")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestServeStopsGracefullyOnSIGTERM runs the real binary, sends it a real
// signal while a slow request is in flight, and checks the request finishes
// and the process exits 0.
func TestServeStopsGracefullyOnSIGTERM(t *testing.T) {
	bin, err := buildBinary()
	require.NoError(t, err)
	slowStarted := make(chan struct{}, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slowStarted <- struct{}{}
			time.Sleep(500 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "done")
	}))
	defer backend.Close()
	listen, admin := freePort(t), freePort(t)
	cfg := writeFile(t, "serve.yaml", fmt.Sprintf(`listen: %s
admin: {listen: %s}
health_check: {interval: 1s, timeout: 900ms, healthy_threshold: 1}
shutdown: {drain_delay: 300ms}
regions:
  - {name: us-east, location: {lat: 33.84, lon: -81.16}, backends: [{url: %q}]}
`, listen, admin, backend.URL))

	cmd, logs := startServe(t, bin, cfg)
	client := &http.Client{Timeout: 10 * time.Second}
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "the backend becomes healthy")

	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := client.Get("http://" + listen + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b), err}
	}()
	select {
	case <-slowStarted:
	case r := <-res:
		t.Fatalf("request ended before reaching the backend: %+v", r)
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the backend within 10s")
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	waitFor(t, logs, `"msg":"draining`)
	// The line is logged just before the drain starts: /readyz fails within
	// moments, well before drain_delay (300ms) ends.
	assert.Eventually(t, func() bool {
		resp, err := client.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 150*time.Millisecond, 5*time.Millisecond, "/readyz fails at once, while the admin listener serves")
	var r result
	select {
	case r = <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10s of SIGTERM")
	}
	require.NoError(t, r.err)
	assert.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, "done", r.body)
	waitFor(t, logs, `"msg":"shutting down`)
	waitFor(t, logs, `"msg":"geoproxy stopped"`)
	require.NoError(t, cmd.Wait(), "exit status 0")
}

// startServe runs `geoproxy serve` on cfg, with its log lines on a channel,
// and waits until it serves; the process is killed if the test ends first.
func startServe(t *testing.T, bin, cfg string, flags ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd, logs := startCmd(t, bin, append([]string{"serve", "-config", cfg}, flags...)...)
	waitFor(t, logs, `"msg":"geoproxy serving"`)
	return cmd, logs
}

// startCmd starts bin with args (for at most 30 s) and passes on its log
// lines.
func startCmd(t *testing.T, bin string, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, args...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	logs := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs <- sc.Text()
		}
		close(logs)
	}()
	return cmd, logs
}

func waitFor(t *testing.T, logs <-chan string, pattern string) {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(pattern))
	timeout := time.After(15 * time.Second)
	for {
		select {
		case line, ok := <-logs:
			if !ok {
				t.Fatalf("process ended before logging %s", pattern)
			}
			if re.MatchString(line) {
				return
			}
		case <-timeout:
			t.Fatalf("no log line %s within 15s", pattern)
		}
	}
}

// serveOneRegion builds the binary and runs serve, with flags, in front of
// one region of one backend; it returns the process, its log lines, and
// the proxy and admin addresses.
func serveOneRegion(t *testing.T, flags ...string) (*exec.Cmd, <-chan string, string, string) {
	t.Helper()
	bin, err := buildBinary()
	require.NoError(t, err)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(backend.Close)
	listen, admin := freePort(t), freePort(t)
	cfg := writeFile(t, "one.yaml", fmt.Sprintf(`listen: %s
admin: {listen: %s}
geoip: {database: ../../testdata/geoip2-city.mmdb}
health_check: {interval: 1s, timeout: 900ms, healthy_threshold: 1}
shutdown: {drain_delay: 0s}
regions:
  - {name: us-east, location: {lat: 33.84, lon: -81.16}, backends: [{url: %q}]}
`, listen, admin, backend.URL))
	cmd, logs := startServe(t, bin, cfg, flags...)
	return cmd, logs, listen, admin
}

// SIGHUP (what systemctl reload sends) reloads the geo database and keeps
// the process serving; before, it ended it without a word.
func TestServeSurvivesSIGHUP(t *testing.T) {
	cmd, logs, _, admin := serveOneRegion(t)
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	waitFor(t, logs, `"msg":"geo database reloaded"`)
	resp, err := http.Get("http://" + admin + "/healthz")
	require.NoError(t, err, "still serving")
	_ = resp.Body.Close()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	waitFor(t, logs, `"msg":"geoproxy stopped"`)
	require.NoError(t, cmd.Wait())
}

// -access-log writes the access lines to a file, the rest to stderr;
// SIGUSR1 (logrotate's postrotate) opens the file again under its name.
func TestAccessLogFileIsReopenedOnSIGUSR1(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "access.log")
	cmd, logs, listen, _ := serveOneRegion(t, "-access-log", logFile)
	get := func(path string) {
		resp, err := http.Get("http://" + listen + path)
		require.NoError(t, err)
		_ = resp.Body.Close()
	}
	has := func(file, path string) bool {
		data, _ := os.ReadFile(file)
		return strings.Contains(string(data), `"path":"`+path+`"`)
	}
	get("/before")
	require.Eventually(t, func() bool { return has(logFile, "/before") }, 5*time.Second, 10*time.Millisecond)

	rotated := logFile + ".1"
	require.NoError(t, os.Rename(logFile, rotated))
	require.NoError(t, cmd.Process.Signal(syscall.SIGUSR1))
	waitFor(t, logs, `"msg":"SIGUSR1: access log reopened"`)
	get("/after")
	require.Eventually(t, func() bool { return has(logFile, "/after") }, 5*time.Second, 10*time.Millisecond)
	assert.False(t, has(rotated, "/after"))
	assert.True(t, has(rotated, "/before"))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	waitFor(t, logs, `"msg":"geoproxy stopped"`)
	require.NoError(t, cmd.Wait())
	data, _ := os.ReadFile(logFile)
	assert.NotContains(t, string(data), "geoproxy stopped", "only access lines go to the file")
}
