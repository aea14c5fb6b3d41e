package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoproxy/geoproxy/certs/certstest"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

func TestMain(m *testing.M) {
	// Pebble's and certmagic's goroutines that live as long as the
	// process (the ACME tests) are not leaks.
	goleak.VerifyTestMain(m, certstest.LeakOptions()...)
}

// Addresses of testdata/geoip2-city.mmdb (see testdata/gen).
const (
	london  = "203.0.113.10"
	seattle = "203.0.113.70"
	newYork = "203.0.113.130"
)

// app is a regional app instance: a real HTTP server on loopback.
type app struct {
	region string
	srv    *httptest.Server
	// failing makes /health answer 503.
	failing atomic.Bool
	// probes counts /health requests.
	probes atomic.Int32
	// overloaded makes every other path answer 503.
	overloaded atomic.Bool
	// broken makes every other path answer 500 (while /health passes).
	broken atomic.Bool
	// hanging makes every other path wait, answering nothing, until the
	// request is cancelled (while /health passes).
	hanging atomic.Bool
	// served counts the requests to paths other than /health.
	served atomic.Int32
	mu     sync.Mutex
	last   http.Header // headers of the last proxied request
}

func newApp(t *testing.T, region string) *app {
	a := &app{region: region}
	a.srv = httptest.NewServer(a)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/health" {
		a.served.Add(1)
	}
	switch r.URL.Path {
	case "/health":
		a.probes.Add(1)
		if a.failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
		return
	case "/stream":
		flusher := w.(http.Flusher)
		for i := range 3 {
			_, _ = fmt.Fprintf(w, "chunk %d\n", i)
			flusher.Flush()
			select {
			case <-time.After(100 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		return
	case "/big":
		w.Header().Set("Content-Length", "3145728")
		w.Header().Set("Connection", "X-Backend-Hop")
		w.Header().Set("X-Backend-Hop", "secret")
		_, _ = w.Write(bytes.Repeat([]byte("0123456789abcdef"), 3<<16))
		return
	case "/chunked":
		for range 64 {
			_, _ = w.Write(bytes.Repeat([]byte("x"), 64<<10))
			w.(http.Flusher).Flush()
		}
		return
	case "/echo":
		a.mu.Lock()
		a.last = r.Header.Clone()
		a.mu.Unlock()
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		_, _ = fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		return
	case "/ws":
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Geoproxy-Region: spoofed\r\n\r\n")
		_ = rw.Flush()
		line, err := rw.ReadString('\n')
		if err != nil {
			return
		}
		_, _ = rw.WriteString(a.region + ":" + line)
		_ = rw.Flush()
		return
	}
	a.mu.Lock()
	a.last = r.Header.Clone()
	a.mu.Unlock()
	if a.hanging.Load() {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return
	}
	if a.broken.Load() {
		http.Error(w, a.region+" broken", http.StatusInternalServerError)
		return
	}
	if a.overloaded.Load() {
		http.Error(w, a.region+" overloaded", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("X-App-Region", a.region)
	_, _ = fmt.Fprintf(w, "%s %s %s", a.region, r.Method, body)
}

func (a *app) lastHeaders() http.Header {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

type env struct {
	t *testing.T
	// scheme and host are the proxy's as clients reach it: http and the
	// plain listener, or https and the TLS listener.
	scheme, host string
	apps         map[string]*app
	srv          *server.Server
	base         string // proxy URL
	admin        string // admin URL
	client       *http.Client
	h2           bool // the client speaks HTTP/2 over TLS
}

type envOpts struct {
	// engine is the engine's name, with "+h2" to reach the proxy over
	// its TLS listener with HTTP/2 (see forEachEngineAndProtocol).
	engine   string
	pprof    bool
	trusted  string
	interval string
	timeout  string            // probe timeout; default 90ms
	extra    map[string][]*app // more backends per region
	// adminExtra is more keys of the admin block, as geoip.
	adminExtra string
	// top is more top-level YAML (rules, say); geoip more keys of the
	// geoip block, as "key: value" lines indented by two spaces.
	top, geoip string
	// resilience is the body of the resilience block, as a YAML flow
	// mapping; default: no failback hold and no slow start, so that a
	// region back is served at once.
	resilience string
}

// start runs the real server in front of three regions with the GeoIP2 City
// fixture.
func start(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.trusted == "" {
		o.trusted = "[127.0.0.0/8]"
	}
	if o.engine == "" {
		o.engine = config.EngineNative
	}
	engine, h2 := strings.CutSuffix(o.engine, "+h2")
	tlsPool := x509.NewCertPool()
	if h2 {
		dir := t.TempDir()
		ca := certstest.NewCA(t, "geoproxy test CA")
		cert, key := ca.WritePair(t, dir, "proxy", x509.ExtKeyUsageServerAuth, "127.0.0.1", "localhost")
		tlsPool = ca.Pool
		o.top += fmt.Sprintf("tls:\n  listen: 127.0.0.1:0\n  certificates: [{cert: %s, key: %s}]\n", cert, key)
	}
	if o.interval == "" {
		o.interval = "100ms"
	}
	if o.timeout == "" {
		o.timeout = "90ms"
	}
	if o.resilience == "" {
		o.resilience = "{failback_hold: 0s, slow_start: 0s}"
	}
	e := &env{t: t, apps: map[string]*app{}}
	regions := []struct {
		name     string
		lat, lon float64
	}{{"us-east", 33.84, -81.16}, {"us-west", 45.59, -121.18}, {"europe-west", 50.45, 3.82}}
	var sb strings.Builder
	fmt.Fprintf(&sb, `listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  pprof: %v
%sgeoip:
  database: ../testdata/geoip2-city.mmdb
  trusted_proxies: %s
  default_location: {lat: 40.71, lon: -74.01}
%shealth_check:
  path: /health
  interval: %s
  timeout: %s
  healthy_threshold: 2
  unhealthy_threshold: 2
engine: %s
resilience: %s
%sregions:
`, o.pprof, o.adminExtra, o.trusted, o.geoip, o.interval, o.timeout, engine, o.resilience, o.top)
	for _, r := range regions {
		a := newApp(t, r.name)
		e.apps[r.name] = a
		fmt.Fprintf(&sb, "  - name: %s\n    location: {lat: %v, lon: %v}\n    backends:\n      - url: %s\n", r.name, r.lat, r.lon, a.srv.URL)
		for _, x := range o.extra[r.name] {
			fmt.Fprintf(&sb, "      - url: %s\n", x.srv.URL)
		}
	}
	cfg, err := config.Parse("e2e.yaml", []byte(sb.String()))
	require.NoError(t, err)
	srv, err := server.New(server.Options{Config: cfg, Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), Version: "test"})
	require.NoError(t, err)
	require.NoError(t, srv.Start(context.Background()))
	e.srv = srv
	e.scheme, e.host = "http", srv.ProxyAddr().String()
	e.client = &http.Client{Timeout: 5 * time.Second}
	if h2 {
		e.scheme, e.host = "https", srv.TLSAddr().String()
		e.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlsPool}, ForceAttemptHTTP2: true}
		e.h2 = true
	}
	e.base = e.scheme + "://" + e.host
	e.admin = "http://" + srv.AdminAddr().String()
	t.Cleanup(func() {
		e.client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
	})
	// A first probe can time out on a loaded machine; start from all up.
	for name := range e.apps {
		e.waitRegion(name, true)
	}
	return e
}

// runYAML builds a server from config text, starts it, and shuts it down
// when the test ends. o.Config is set from yaml; o.Log defaults to the
// test's log at error level and up.
func runYAML(t *testing.T, yaml string, o server.Options) *server.Server {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	require.NoError(t, err)
	return runConfig(t, cfg, o)
}

// runYAMLFile is runYAML for a config file (which Reload reads again).
func runYAMLFile(t *testing.T, path string) *server.Server {
	t.Helper()
	cfg, err := config.Load(path)
	require.NoError(t, err)
	return runConfig(t, cfg, server.Options{})
}

func runConfig(t *testing.T, cfg *config.Config, o server.Options) *server.Server {
	t.Helper()
	o.Config = cfg
	if o.Log == nil {
		o.Log = zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	}
	if o.Version == "" {
		o.Version = "test"
	}
	srv, err := server.New(o)
	require.NoError(t, err)
	require.NoError(t, srv.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
	})
	return srv
}

// get sends a request as a client at ip (through a trusted loopback hop).
func (e *env) get(ip, path string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.base+path, nil)
	require.NoError(e.t, err)
	if ip != "" {
		req.Header.Set("X-Forwarded-For", ip)
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) (*http.Response, string) {
	e.t.Helper()
	resp, err := e.client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	if e.h2 {
		require.Equal(e.t, 2, resp.ProtoMajor, "an answer over HTTP/2")
	}
	body, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp, string(body)
}

// servedBy returns the region that served a client at ip.
func (e *env) servedBy(ip string) string {
	resp, body := e.get(ip, "/")
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("status %d: %s", resp.StatusCode, body)
	}
	return resp.Header.Get("X-Geoproxy-Region")
}

// waitRegion waits until the router's snapshot says region's up state is up.
func (e *env) waitRegion(region string, up bool) {
	e.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		ch := e.srv.Router().Changed()
		if r := e.srv.Router().Snapshot().Region(region); r != nil && r.Eligible() == up {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			e.t.Fatalf("region %s did not become up=%v within 5s", region, up)
		}
	}
}

func TestEachClientGoesToTheNearestRegion(t *testing.T) {
	forEachEngineAndProtocol(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		cases := []struct{ ip, region, city, country string }{
			{london, "europe-west", "London", "GB"},
			{seattle, "us-west", "Seattle", "US"},
			{newYork, "us-east", "New York", "US"},
			{"2001:db8:1::1", "europe-west", "Paris", "FR"},
			{"10.1.2.3", "us-east", "", ""},  // private: default location (New York)
			{"192.0.2.1", "us-east", "", ""}, // not in the database: default location
			{"", "us-east", "", ""},          // the loopback peer itself
		}
		for _, c := range cases {
			t.Run(c.ip, func(t *testing.T) {
				resp, body := e.get(c.ip, "/hello")
				require.Equal(t, http.StatusOK, resp.StatusCode, body)
				assert.Equal(t, c.region, resp.Header.Get("X-Geoproxy-Region"))
				assert.Equal(t, c.region, resp.Header.Get("X-App-Region"))
				h := e.apps[c.region].lastHeaders()
				assert.Equal(t, c.city, h.Get("X-City"))
				assert.Equal(t, c.country, h.Get("X-Country"))
				assert.Equal(t, c.region, h.Get("X-Geoproxy-Nearest-Region"))
				if c.ip != "" {
					assert.Equal(t, c.ip+", 127.0.0.1", h.Get("X-Forwarded-For"))
				}
				assert.Equal(t, e.scheme, h.Get("X-Forwarded-Proto"))
				assert.Equal(t, e.host, h.Get("X-Forwarded-Host"))
			})
		}
	})
}

func TestUntrustedPeerCannotChooseItsLocation(t *testing.T) {
	forEachEngineAndProtocol(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine, trusted: "[192.0.2.0/24]"})
		req, err := http.NewRequest(http.MethodGet, e.base+"/", nil)
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-For", london)
		req.Header.Set("Forwarded", "for="+london)
		req.Header.Set("X-City", "Spoofville")
		resp, body := e.do(req)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		// 127.0.0.1 is private: the default location, New York, is nearest us-east.
		assert.Equal(t, "us-east", resp.Header.Get("X-Geoproxy-Region"))
		h := e.apps["us-east"].lastHeaders()
		assert.Equal(t, "127.0.0.1", h.Get("X-Forwarded-For"), "the client's own X-Forwarded-For is dropped")
		assert.Empty(t, h.Get("Forwarded"))
		assert.Empty(t, h.Get("X-City"), "a client-sent geo header never reaches the app")
	})
}

func TestMalformedForwardingHeaderIsIgnored(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		for _, v := range []string{"not-an-ip", "1.2.3.4.5", "[::1", ",,,", strings.Repeat("9", 300)} {
			resp, body := e.get(v, "/")
			assert.Equal(t, http.StatusOK, resp.StatusCode, "X-Forwarded-For %q: %s", v, body)
		}
	})
}

func TestFailoverAndFailback(t *testing.T) {
	forEachEngineAndProtocol(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		eu := e.apps["europe-west"]
		require.Equal(t, "europe-west", e.servedBy(london))

		// europe-west fails its health checks: after unhealthy_threshold (2)
		// failed probes London moves to the next-nearest region, us-east.
		before := eu.probes.Load()
		eu.failing.Store(true)
		e.waitRegion("europe-west", false)
		assert.LessOrEqual(t, eu.probes.Load()-before, int32(3), "down within the threshold (plus one probe in flight)")
		assert.Equal(t, "us-east", e.servedBy(london))
		assert.Equal(t, "us-west", e.servedBy(seattle), "other clients are unaffected")

		// It recovers: after healthy_threshold (2) passes London comes back.
		before = eu.probes.Load()
		eu.failing.Store(false)
		e.waitRegion("europe-west", true)
		assert.LessOrEqual(t, eu.probes.Load()-before, int32(3))
		assert.Equal(t, "europe-west", e.servedBy(london))

		// The failover was counted.
		_, metrics := e.adminGet("/metrics")
		assert.Contains(t, metrics, `geoproxy_failover_requests_total{from="europe-west",to="us-east"} 1`)
	})
}

func TestRegionDyingUnderTrafficCausesNoErrors(t *testing.T) {
	forEachEngineAndProtocol(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		eu := e.apps["europe-west"]
		require.Equal(t, "europe-west", e.servedBy(london))

		// Kill the region outright (connections refused) while clients keep
		// coming: requests before the health checks notice are retried in the
		// next region; none fails.
		eu.srv.Close()
		served := map[string]int{}
		for i := 0; i < 200; i++ {
			resp, body := e.get(london, "/")
			require.Equal(t, http.StatusOK, resp.StatusCode, "request %d: %s", i, body)
			served[resp.Header.Get("X-Geoproxy-Region")]++
			if i > 20 && !e.srv.Router().Snapshot().Region("europe-west").Eligible() {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		assert.Equal(t, 0, served["europe-west"])
		assert.Positive(t, served["us-east"])
		e.waitRegion("europe-west", false)
	})
}

func TestRefusedBackendIsRetriedInTheSameRegion(t *testing.T) {
	forEachEngineAndProtocol(t, func(t *testing.T, engine string) {
		dead := newApp(t, "europe-west")
		// With one of its two backends out, europe-west is degraded and
		// would pass part of its clients on (resilience.degraded_below):
		// not here, where the retry within the region is tested.
		// The one probe each gets must pass, even on a loaded machine.
		e := start(t, envOpts{engine: engine, interval: "1h", timeout: "2s", extra: map[string][]*app{"europe-west": {dead}},
			resilience: "{failback_hold: 0s, slow_start: 0s, degraded_below: 0%}"})
		require.Eventually(t, func() bool {
			return len(e.srv.Router().Snapshot().Region("europe-west").Healthy) == 2
		}, 5*time.Second, 5*time.Millisecond)
		// Both europe-west backends passed their first probe; with a one-hour
		// interval nothing notices that one of them now refuses connections.
		dead.srv.Close()
		live := e.apps["europe-west"]
		for i := 0; i < 20; i++ {
			req, err := http.NewRequest(http.MethodPost, e.base+"/orders", strings.NewReader(fmt.Sprintf("order-%d", i)))
			require.NoError(t, err)
			req.Header.Set("X-Forwarded-For", london)
			resp, body := e.do(req)
			require.Equal(t, http.StatusOK, resp.StatusCode, body)
			assert.Equal(t, fmt.Sprintf("europe-west POST order-%d", i), body, "the body survives the retry")
			assert.Equal(t, live.region, resp.Header.Get("X-Geoproxy-Region"))
		}
		_, metrics := e.adminGet("/metrics")
		assert.Contains(t, metrics, `geoproxy_upstream_errors_total{backend="`+dead.srv.URL+`",region="europe-west"}`)
	})
}

func TestAllRegionsDownGives503(t *testing.T) {
	forEachEngineAndProtocol(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		for _, a := range e.apps {
			a.failing.Store(true)
		}
		for name := range e.apps {
			e.waitRegion(name, false)
		}
		resp, body := e.get(london, "/")
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.NotEmpty(t, resp.Header.Get("Retry-After"))
		date, err := http.ParseTime(resp.Header.Get("Date"))
		if assert.NoError(t, err, "a Date header") {
			assert.WithinDuration(t, time.Now(), date, time.Minute)
		}
		assert.Equal(t, "geoproxy: no healthy region can serve this request\n", body)

		code, ready := e.adminGet("/readyz")
		assert.Equal(t, http.StatusServiceUnavailable, code)
		assert.Contains(t, ready, "no healthy region")
		_, metrics := e.adminGet("/metrics")
		assert.Contains(t, metrics, `geoproxy_requests_total{code="5xx",region="none"} 1`)
	})
}

func TestStreamingIsNotBuffered(t *testing.T) {
	forEachEngineAndProtocol(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		req, err := http.NewRequest(http.MethodGet, e.base+"/stream", nil)
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-For", london)
		start := time.Now()
		resp, err := e.client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "chunk 0\n", line)
		assert.Less(t, time.Since(start), 150*time.Millisecond, "the first chunk arrives before the backend finishes (300ms)")
	})
}

func TestUpgradeIsTunnelled(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		conn, err := net.Dial("tcp", e.srv.ProxyAddr().String())
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Forwarded-For: %s\r\n\r\n", seattle)
		require.NoError(t, err)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		assert.Equal(t, "us-west", resp.Header.Get("X-Geoproxy-Region"))
		_, err = io.WriteString(conn, "ping\n")
		require.NoError(t, err)
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "us-west:ping\n", line)
	})
}

func (e *env) adminGet(path string) (int, string) {
	e.t.Helper()
	resp, err := e.client.Get(e.admin + path)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp.StatusCode, string(b)
}

func TestAdminEndpoints(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		code, body := e.adminGet("/healthz")
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "ok\n", body)
		code, body = e.adminGet("/readyz")
		assert.Equal(t, http.StatusOK, code, body)

		code, body = e.adminGet("/admin/status")
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, body, `"name": "europe-west"`)
		assert.Contains(t, body, `"status": "healthy"`)
		assert.Contains(t, body, `"kind": "geoip2-city"`)

		code, body = e.adminGet("/admin/lookup?ip=" + london)
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, body, `"serving": "europe-west"`)
		assert.Contains(t, body, `"city": "London"`)

		code, body = e.adminGet("/admin/lookup?ip=nope")
		assert.Equal(t, http.StatusBadRequest, code)
		assert.Contains(t, body, "not an IP address")

		code, body = e.adminGet("/")
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, body, "<title>geoproxy</title>")

		e.get(london, "/")
		_, body = e.adminGet("/metrics")
		for _, want := range []string{
			`geoproxy_requests_total{code="2xx",region="europe-west"} 1`,
			`geoproxy_backend_up{backend="` + e.apps["us-west"].srv.URL + `",region="us-west"} 1`,
			`geoproxy_region_healthy_backends{region="us-east"} 1`,
			`geoproxy_geo_lookups_total{result="found"} 1`,
			`geoproxy_requests_in_flight 0`,
			`geoproxy_request_duration_seconds_bucket{region="europe-west",le="+Inf"} 1`,
			`geoproxy_build_info{`,
		} {
			assert.Contains(t, body, want)
		}
	})
}

func TestMetricsPassLint(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		e.get(london, "/")
		e.apps["europe-west"].failing.Store(true)
		e.waitRegion("europe-west", false)
		e.get(london, "/")
		_, body := e.adminGet("/metrics")
		problems, err := promlint.New(strings.NewReader(body)).Lint()
		require.NoError(t, err)
		assert.Empty(t, problems)
	})
}

func TestRetryableStatusMovesToTheNextRegion(t *testing.T) {
	forEachEngineAndProtocol(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine, interval: "1h"})
		e.apps["europe-west"].overloaded.Store(true)
		// Health checks pass, but requests get 503: a GET moves on to us-east.
		resp, body := e.get(london, "/")
		assert.Equal(t, http.StatusOK, resp.StatusCode, body)
		assert.Equal(t, "us-east", resp.Header.Get("X-Geoproxy-Region"))

		// A POST is not repeated: the client gets the backend's answer.
		req, err := http.NewRequest(http.MethodPost, e.base+"/orders", strings.NewReader("order"))
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-For", london)
		resp, body = e.do(req)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.Equal(t, "europe-west overloaded\n", body)

		// When every attempt gets 503, the last answer reaches the client.
		for _, a := range e.apps {
			a.overloaded.Store(true)
		}
		resp, body = e.get(london, "/")
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.Equal(t, "us-west overloaded\n", body, "three attempts: europe-west, us-east, us-west")
		assert.Equal(t, "us-west", resp.Header.Get("X-Geoproxy-Region"))
	})
}

// forEachEngineAndProtocol runs a test against both HTTP engines, their
// clients speaking HTTP/1.1 in clear, then HTTP/2 over TLS (the engine
// names then end in "+h2", which start understands).
func forEachEngineAndProtocol(t *testing.T, test func(t *testing.T, engine string)) {
	for _, engine := range []string{config.EngineNative, config.EngineNetHTTP, config.EngineNative + "+h2", config.EngineNetHTTP + "+h2"} {
		t.Run(engine, func(t *testing.T) { test(t, engine) })
	}
}

// forEachEngine runs a test against both HTTP engines.
func forEachEngine(t *testing.T, test func(t *testing.T, engine string)) {
	for _, engine := range []string{config.EngineNative, config.EngineNetHTTP} {
		t.Run(engine, func(t *testing.T) { test(t, engine) })
	}
}

func TestPprofIsOffUnlessAsked(t *testing.T) {
	e := start(t, envOpts{})
	code, _ := e.adminGet("/debug/pprof/")
	assert.Equal(t, http.StatusNotFound, code)
	e = start(t, envOpts{pprof: true})
	code, body := e.adminGet("/debug/pprof/")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "goroutine")
}

func TestBodiesAndHopByHopHeaders(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})

		// A 3 MiB response with a length, and a 4 MiB chunked one, arrive whole.
		resp, body := e.get(london, "/big")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, int64(3<<20), resp.ContentLength)
		assert.Equal(t, bytes.Repeat([]byte("0123456789abcdef"), 3<<16), []byte(body))
		assert.Empty(t, resp.Header.Get("X-Backend-Hop"), "headers the backend marks hop-by-hop stay behind")
		resp, body = e.get(london, "/chunked")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, 4<<20, len(body))

		// A 2 MiB request body reaches the app intact; hop-by-hop headers do not.
		payload := bytes.Repeat([]byte("geoproxy"), 1<<18)
		req, err := http.NewRequest(http.MethodPost, e.base+"/echo", bytes.NewReader(payload))
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-For", london)
		req.Header.Set("Connection", "X-Client-Hop")
		req.Header.Set("X-Client-Hop", "secret")
		req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
		req.Header.Set("X-Kept", "yes")
		resp, body = e.do(req)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, fmt.Sprintf("%d %x", len(payload), sha256.Sum256(payload)), body)
		h := e.apps["europe-west"].lastHeaders()
		assert.Empty(t, h.Get("X-Client-Hop"))
		assert.Empty(t, h.Get("Proxy-Authorization"))
		assert.Equal(t, "yes", h.Get("X-Kept"))

		// HEAD gets the headers and no body.
		req, err = http.NewRequest(http.MethodHead, e.base+"/big", nil)
		require.NoError(t, err)
		resp, body = e.do(req)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Empty(t, body)
	})
}
