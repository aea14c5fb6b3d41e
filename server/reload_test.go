package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// reloadConfig is one of the configurations the reload test alternates:
// us-east is always there, the other regions, backends, weights and
// headers come and go.
func reloadConfig(engineName string, apps map[string]*app, extra *app, i int) string {
	engine, loops := engineName, 0
	if engineName == "native-goroutines" {
		engine, loops = config.EngineNative, -1
	}
	var b strings.Builder
	fmt.Fprintf(&b, `listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
geoip: {database: ../testdata/geoip2-city.mmdb, trusted_proxies: [127.0.0.0/8]}
health_check: {path: /health, interval: 500ms, timeout: 400ms, healthy_threshold: 1, unhealthy_threshold: 2}
engine: %s
proxy:
  event_loops: %d
  request_headers: {X-Generation: "g%d"}
regions:
  - name: us-east
    location: {lat: 33.84, lon: -81.16}
    backends:
      - {url: "%s", weight: %d}
`, engine, loops, i, apps["us-east"].srv.URL, 1+i%3)
	if i%2 == 0 {
		fmt.Fprintf(&b, "      - {url: %q}\n", extra.srv.URL)
	}
	if i%3 != 1 {
		fmt.Fprintf(&b, "  - {name: europe-west, location: {lat: 50.45, lon: 3.82}, backends: [{url: %q}]}\n", apps["europe-west"].srv.URL)
	}
	if i%4 != 2 {
		fmt.Fprintf(&b, "  - {name: us-west, location: {lat: 45.59, lon: -121.18}, backends: [{url: %q}]}\n", apps["us-west"].srv.URL)
	}
	return b.String()
}

// brokenConfigs are refused by a reload; the configuration in force stays.
// (Field errors take longest to place at their line, so they come less
// often.)
var brokenConfigs = func() []string {
	notYAML, binary := "regions: [\n  - name: x\n", "\x00\x01binary"
	list := []string{
		"regions:\n  - name: a\n    wieght: 1\n",                                                          // unknown key
		"regions:\n  - name: a\n    location: {lat: 1, lon: 2}\n    backends: [{url: \"127.0.0.1:1\"}]\n", // no scheme
	}
	for range 5 {
		list = append(list, notYAML, binary)
	}
	return list
}()

// Proof that a reload loses nothing: a bounded load (kept-alive and fresh
// connections, GETs and small POSTs, clients of three regions) runs while
// the config is reloaded 50 times, good files (regions and backends added
// and removed, weights and headers changed) alternating with broken ones,
// half through the file watcher's SIGHUP path (Reload) and half through POST
// /admin/reload. Not one request fails, and the configuration in force at
// the end is the last good file. (TestMain checks that no goroutine is
// left; the open descriptors are counted here.)
func TestReloadsUnderLoadLoseNoRequest(t *testing.T) {
	for _, eng := range hardEngines {
		t.Run(eng.name, func(t *testing.T) {
			fdsBefore := openFDs(t)
			apps := map[string]*app{}
			for _, r := range []string{"us-east", "us-west", "europe-west"} {
				apps[r] = newApp(t, r)
			}
			extra := newApp(t, "us-east")
			dir := t.TempDir()
			path := filepath.Join(dir, "geoproxy.yaml")
			require.NoError(t, os.WriteFile(path, []byte(reloadConfig(eng.name, apps, extra, 0)), 0o600))
			cfg, err := config.Load(path)
			require.NoError(t, err)
			srv, err := server.New(server.Options{Config: cfg, Log: zaptest.NewLogger(t, zaptest.Level(zap.DPanicLevel)), Version: "test"})
			require.NoError(t, err)
			require.NoError(t, srv.Start(context.Background()))
			stopped := false
			shutdown := func() {
				if stopped {
					return
				}
				stopped = true
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				assert.NoError(t, srv.Shutdown(ctx))
			}
			t.Cleanup(shutdown)
			base := "http://" + srv.ProxyAddr().String()
			admin := "http://" + srv.AdminAddr().String()

			var (
				done     = make(chan struct{})
				wg       sync.WaitGroup
				served   atomic.Int64
				mu       sync.Mutex
				failures []string
			)
			keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			t.Cleanup(keep.CloseIdleConnections)
			clientIPs := []string{london, seattle, newYork}
			for w := range 6 {
				wg.Go(func() {
					client := keep
					if w%3 == 2 {
						client = fresh
					}
					for i := 0; i < 100000; i++ {
						select {
						case <-done:
							return
						default:
						}
						var req *http.Request
						if i%4 == 0 {
							req, _ = http.NewRequest(http.MethodPost, base+"/echo", strings.NewReader("ride=42"))
						} else {
							req, _ = http.NewRequest(http.MethodGet, base+"/", nil)
						}
						req.Header.Set("X-Forwarded-For", clientIPs[(w+i)%3])
						resp, err := client.Do(req)
						if err == nil {
							var body []byte
							body, err = io.ReadAll(resp.Body)
							_ = resp.Body.Close()
							if err == nil && resp.StatusCode != http.StatusOK {
								err = fmt.Errorf("status %d %q", resp.StatusCode, body)
							}
						}
						if err != nil {
							mu.Lock()
							failures = append(failures, fmt.Sprintf("%s %s: %v", req.Method, req.URL.Path, err))
							mu.Unlock()
							continue
						}
						served.Add(1)
					}
				})
			}

			lastGood, good := 0, 0
			for n := 1; n <= 50; n++ {
				var text string
				if n%2 == 1 {
					text = reloadConfig(eng.name, apps, extra, n)
				} else {
					text = brokenConfigs[(n/2)%len(brokenConfigs)]
				}
				require.NoError(t, os.WriteFile(path+".tmp", []byte(text), 0o600))
				require.NoError(t, os.Rename(path+".tmp", path))
				var ok bool
				if n%4 < 2 {
					ok = srv.Reload().OK
				} else {
					resp, err := http.Post(admin+"/admin/reload", "", nil)
					require.NoError(t, err)
					_ = resp.Body.Close()
					ok = resp.StatusCode == http.StatusOK
				}
				assert.Equal(t, n%2 == 1, ok, "reload %d", n)
				if ok {
					lastGood = n
					good++
				}
				time.Sleep(20 * time.Millisecond) // some traffic on each configuration
			}
			close(done)
			wg.Wait()

			t.Logf("%d requests served over %d good reloads", served.Load(), good)
			assert.Zero(t, len(failures), "failed requests; the first: %q", failures[:min(5, len(failures))])
			assert.Greater(t, served.Load(), int64(200))

			want, err := config.Parse(path, []byte(reloadConfig(eng.name, apps, extra, lastGood)))
			require.NoError(t, err)
			got := srv.Config()
			assert.Equal(t, regionNames(want), regionNames(got), "the last good file is in force")
			assert.Equal(t, want.Proxy.RequestHeaders, got.Proxy.RequestHeaders)
			assert.Equal(t, want.Regions[0].Backends, got.Regions[0].Backends)
			st := srv.Status()
			assert.Equal(t, int64(1+good), st.Config.Generation)
			require.NotNil(t, st.Config.LastReload)
			assert.False(t, st.Config.LastReload.OK, "the last reload (a broken file) is shown")

			keep.CloseIdleConnections()
			shutdown()
			for _, a := range append([]*app{extra}, apps["us-east"], apps["us-west"], apps["europe-west"]) {
				a.srv.CloseClientConnections()
			}
			require.Eventually(t, func() bool { return openFDs(t) <= fdsBefore+8 }, 5*time.Second, 20*time.Millisecond,
				"open descriptors: %d before, %d after", fdsBefore, openFDs(t))
		})
	}
}

func regionNames(c *config.Config) []string {
	var names []string
	for _, r := range c.Regions {
		names = append(names, r.Name)
	}
	return names
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// BenchmarkReload times validating a config of 64 regions (the most) with 16 backends
// each and swapping it in (the engine's build, the health store's sync, the
// checker's start), alternating two files that differ in weights.
func BenchmarkReload(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "geoproxy.yaml")
	write := func(weight int) {
		var sb strings.Builder
		sb.WriteString(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
geoip: {database: ../testdata/geoip2-city.mmdb}
health_check: {interval: 1m, timeout: 500ms}
regions:
`)
		for r := range config.MaxRegions {
			fmt.Fprintf(&sb, "  - name: region-%d\n    location: {lat: %d, lon: %d}\n    backends:\n", r, r%90, r*3%180)
			for i := range 16 {
				fmt.Fprintf(&sb, "      - {url: \"http://127.0.%d.%d:9\", weight: %d}\n", r, i+1, weight)
			}
		}
		require.NoError(b, os.WriteFile(path, []byte(sb.String()), 0o600))
	}
	write(1)
	cfg, err := config.Load(path)
	require.NoError(b, err)
	srv, err := server.New(server.Options{Config: cfg, Log: zap.NewNop(), Version: "bench"})
	require.NoError(b, err)
	require.NoError(b, srv.Start(context.Background()))
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		write(2 + i%2)
		b.StartTimer()
		if res := srv.Reload(); !res.OK {
			b.Fatalf("reload: %v", res.Errors)
		}
	}
}

// A Kubernetes ConfigMap volume swaps a "..data" symlink to a new
// directory; the file's path, a symlink through it, stays. The change is
// seen and loaded without a signal, and a broken one is refused.
func TestConfigMapSwapIsReloaded(t *testing.T) {
	dir := t.TempDir()
	backend := newApp(t, "us-east")
	cfgText := func(region string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
geoip: {database: %s}
health_check: {path: /health, interval: 1s, timeout: 500ms}
regions:
  - {name: %s, location: {lat: 33.84, lon: -81.16}, backends: [{url: %q}]}
`, mustAbs(t, "../testdata/geoip2-city.mmdb"), region, backend.srv.URL)
	}
	publish := func(version, text string) {
		data := filepath.Join(dir, "..2026_"+version)
		require.NoError(t, os.Mkdir(data, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(data, "geoproxy.yaml"), []byte(text), 0o600))
		tmp := filepath.Join(dir, "..data_tmp")
		require.NoError(t, os.Symlink(filepath.Base(data), tmp))
		require.NoError(t, os.Rename(tmp, filepath.Join(dir, "..data"))) // atomic, as the kubelet does
	}
	publish("1", cfgText("us-east"))
	path := filepath.Join(dir, "geoproxy.yaml")
	require.NoError(t, os.Symlink(filepath.Join("..data", "geoproxy.yaml"), path))

	cfg, err := config.Load(path)
	require.NoError(t, err)
	srv, err := server.New(server.Options{Config: cfg, Log: zaptest.NewLogger(t, zaptest.Level(zap.DPanicLevel)), Version: "test"})
	require.NoError(t, err)
	require.NoError(t, srv.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
	})

	publish("2", cfgText("us-east-2"))
	// Generous: the whole suite shares two cores under the race detector.
	require.Eventually(t, func() bool { return srv.Config().Regions[0].Name == "us-east-2" }, 15*time.Second, 20*time.Millisecond)
	assert.Equal(t, int64(2), srv.Status().Config.Generation)

	publish("3", "regions: [\n")
	require.Eventually(t, func() bool { r := srv.LastReload(); return r != nil && !r.OK }, 15*time.Second, 20*time.Millisecond)
	assert.Equal(t, "us-east-2", srv.Config().Regions[0].Name, "the broken file changed nothing")
	assert.Contains(t, strings.Join(srv.LastReload().Errors, "\n"), "geoproxy.yaml:")
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	require.NoError(t, err)
	return a
}
