//go:build linux

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geoproxy/geoproxy/config"
)

const wrkSample = `Running 8s test @ http://127.0.0.1:18101/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.41ms    2.03ms  52.06ms   95.73%
    Req/Sec    37.18k     2.01k   40.54k    72.50%
  Latency Distribution
     50%    1.04ms
     75%    1.29ms
     90%    1.87ms
     99%   11.23ms
  296034 requests in 8.00s, 42.91MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  36998.44
Transfer/sec:      5.36MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 296034, Seconds: 8, RPS: 36998.44, P50: 1040 * time.Microsecond,
		P99: 11230 * time.Microsecond, SocketErrs: 3, Non2xx: 7}
	if r != want {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
	for _, us := range []string{"  50%  812.00us\n", "  50%    2.00s\n"} {
		out := strings.Replace(wrkSample, "     50%    1.04ms\n", us, 1)
		if _, err := parseWrk(out); err != nil {
			t.Errorf("%q: %v", us, err)
		}
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("no error for output without results")
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for q, want := range map[float64]time.Duration{0.5: 50, 0.99: 99, 0.999: 100, 1: 100, 0: 1} {
		if got := percentile(s, q); got != want {
			t.Errorf("percentile(%v) = %v, want %v", q, got, want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing")
	}
}

// The fixed-rate client reads Content-Length and chunked answers and keeps the rate.
func TestOpenLoop(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprint("chunked=", chunked), func(t *testing.T) {
			var n, xff atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				if r.Header.Get("X-Forwarded-For") != "" {
					xff.Add(1)
				}
				if chunked {
					w.Write([]byte("hello, "))
					w.(http.Flusher).Flush()
				}
				w.Write([]byte("world\n"))
			}))
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "http://")
			res, err := openLoop(context.Background(), addr, 500, 1, 100*time.Millisecond, 300*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.OK < 140 || res.OK > 160 {
				t.Errorf("%+v: want about 150 answers, no errors", res)
			}
			if n.Load() < 190 || xff.Load() != n.Load() {
				t.Errorf("server saw %d requests, %d with X-Forwarded-For; want about 200, all", n.Load(), xff.Load())
			}
			if res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 {
				t.Errorf("percentiles out of order: %+v", res)
			}
			if res.Load <= 0 || res.Load > 0.5 {
				t.Errorf("the load used %.2f cores for 500 req/s; want a little above 0", res.Load)
			}
		})
	}
}

// A request that waits behind a stalled answer counts its wait from its scheduled time:
// one 100 ms stall on the only connection shows in the tail, not only in one sample.
func TestOpenLoopCountsTheWait(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 100 { // 200 ms in, inside the measured part
			time.Sleep(100 * time.Millisecond)
		}
		w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	res, err := openLoop(context.Background(), strings.TrimPrefix(srv.URL, "http://"), 500, 1, 100*time.Millisecond, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Max < 95*time.Millisecond || res.P99 < 50*time.Millisecond {
		t.Errorf("%+v: want no errors, max ≥ 95 ms and p99 ≥ 50 ms (the stall's queue)", res)
	}
	if res.P50 > 20*time.Millisecond {
		t.Errorf("p50 %v: the queue behind the stall should have drained", res.P50)
	}
}

// A refusal that keeps the connection open is an error for its request only: the load
// goes on over the same connection.
func TestOpenLoopKeepsConnectionAfterRefusal(t *testing.T) {
	var n, conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write([]byte("ok\n"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	res, err := openLoop(context.Background(), strings.TrimPrefix(srv.URL, "http://"), 500, 1, 0, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors < 10 || res.Errors > 20 || res.OK < 120 {
		t.Errorf("%+v: want about 1 error in 10", res)
	}
	if conns.Load() != 1 {
		t.Errorf("the server saw %d connections; want the one, kept", conns.Load())
	}
	if res.P99 > 20*time.Millisecond {
		t.Errorf("p99 %v: the refusals held the load up", res.P99)
	}
}

// A target that closes every connection after its answer: each such answer is an error,
// and the load reconnects and goes on.
func TestOpenLoopReconnects(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Connection", "close")
		w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	res, err := openLoop(context.Background(), strings.TrimPrefix(srv.URL, "http://"), 200, 4, 0, 300*time.Millisecond)
	if err == nil && res.OK > 0 {
		t.Errorf("%+v: answers with Connection: close counted as successes", res)
	}
	if n.Load() < 8 {
		t.Errorf("server saw %d requests; want the load to reconnect and go on", n.Load())
	}
}

func TestOpenLoopCountsFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := openLoop(context.Background(), strings.TrimPrefix(srv.URL, "http://"), 200, 2, 0, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("err = %v, want one naming status 502", err)
	}
}

func TestTargetList(t *testing.T) {
	got, err := targetList("geoproxy, direct,nginx,direct")
	if err != nil || strings.Join(got, ",") != "direct,nginx,geoproxy" {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := targetList("envoy"); err == nil {
		t.Error("unknown target accepted")
	}
}

func TestFlagsRateRounds(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.rounds != 3 || o.rateRounds != 7 {
		t.Errorf("defaults: %d rounds, %d fixed-rate rounds; want 3 and 7", o.rounds, o.rateRounds)
	}
	if o, err = parseFlags([]string{"-rounds", "1", "-rate-rounds", "-1"}); err != nil || o.rateRounds != -1 {
		t.Errorf("-rate-rounds -1: %d, %v", o.rateRounds, err)
	}
	if _, err := parseFlags([]string{"-rate-rounds", "0"}); err == nil || !strings.Contains(err.Error(), "-rate-rounds 0") {
		t.Errorf("-rate-rounds 0: %v; want an error naming it", err)
	}
}

// fakeRuns gives a target closed-loop results with the given median req/s.
func fakeRuns(name string, rps float64) *target {
	return &target{name: name, runs: []wrkResult{{RPS: rps - 10}, {RPS: rps}, {RPS: rps + 10}}}
}

func TestRateTargetsLeavesOutTheTooSlow(t *testing.T) {
	act := []*target{fakeRuns("direct", 150000), fakeRuns("nginx", 85000), fakeRuns("caddy", 20000),
		fakeRuns("geoproxy", 80000), fakeRuns("geoproxy-nethttp", 27000)}
	names := func(ts []*target) string {
		var n []string
		for _, t := range ts {
			n = append(n, t.name)
		}
		return strings.Join(n, ",")
	}

	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	run, slow := rateTargets(o, act, 40000)
	if names(run) != "direct,nginx,geoproxy" || names(slow) != "caddy,geoproxy-nethttp" {
		t.Errorf("default: run %s, left out %s; want direct,nginx,geoproxy and caddy,geoproxy-nethttp", names(run), names(slow))
	}

	rp := report{opts: o, targets: act, rate: 40000, rateNote: "set by -rate", rateSet: run, tooSlow: slow}
	md := rp.markdown()
	if !strings.Contains(md, "Not run at this rate") || !strings.Contains(md, "caddy (20,000 req/s), geoproxy-nethttp (27,000 req/s)") {
		t.Errorf("the report does not say which targets were left out of the fixed rate:\n%s", md)
	}

	if o, err = parseFlags([]string{"-rate-targets", "caddy,geoproxy"}); err != nil {
		t.Fatal(err)
	}
	run, slow = rateTargets(o, act, 40000)
	if names(run) != "caddy,geoproxy" || len(slow) != 0 {
		t.Errorf("-rate-targets caddy,geoproxy: run %s, left out %s; want both run", names(run), names(slow))
	}
}

func TestStallAccounting(t *testing.T) {
	var s stallResult
	for _, gap := range []time.Duration{50 * time.Microsecond, 99 * time.Microsecond, 100 * time.Microsecond,
		600 * time.Microsecond, 2 * time.Millisecond, 1 * time.Millisecond} {
		s.add(gap)
	}
	if s.Over100us != 4 || s.Over500us != 3 || s.Over1ms != 2 || s.Max != 2*time.Millisecond || s.Lost != 3700*time.Microsecond {
		t.Errorf("got %+v; want 4 over 0.1 ms, 3 over 0.5 ms, 2 over 1 ms, max 2ms, lost 3.7ms", s)
	}
}

func TestMeasureStallsSeesAStop(t *testing.T) {
	// A helper process stops this one for 50 ms while the meter spins: each spinning thread
	// is held off its core for that long, as a busy hypervisor would hold it.
	stop := exec.Command("sh", "-c", fmt.Sprintf("sleep 0.1; kill -STOP %d; sleep 0.05; kill -CONT %d", os.Getpid(), os.Getpid()))
	if err := stop.Start(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	s := measureStalls(context.Background(), 2, 400*time.Millisecond)
	took := time.Since(began)
	if err := stop.Wait(); err != nil {
		t.Fatal(err)
	}
	if took < 400*time.Millisecond || took > 3*time.Second {
		t.Errorf("measuring for 400ms took %s", took)
	}
	if s.Threads != 2 || s.Over1ms < 2 || s.Max < 45*time.Millisecond || s.Lost < 90*time.Millisecond {
		t.Errorf("got %+v; want each of the 2 threads to see the 50 ms stop", s)
	}
	if !strings.Contains(s.String(), "each of the 2 cores for 400ms") {
		t.Errorf("report line: %s", s)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	began = time.Now()
	measureStalls(ctx, 1, time.Minute)
	if took := time.Since(began); took > time.Second {
		t.Errorf("a cancelled measurement took %s", took)
	}
}

func TestFlagsCases(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.cases, ",") != "plain,https" || !o.tlsOn() || o.h2Streams != 10 {
		t.Errorf("defaults: cases %v, h2 streams %d; want plain,https and 10", o.cases, o.h2Streams)
	}
	if o, err = parseFlags([]string{"-cases", "h2, plain"}); err != nil || strings.Join(o.cases, ",") != "plain,h2" || !o.tlsOn() {
		t.Errorf("-cases h2,plain: %v, %v", o.cases, err)
	}
	if o, err = parseFlags([]string{"-cases", "plain"}); err != nil || o.tlsOn() {
		t.Errorf("-cases plain: %v, TLS on %v, %v", o.cases, o.tlsOn(), err)
	}
	for _, bad := range [][]string{{"-cases", "quic"}, {"-cases", ""}, {"-h2-streams", "0"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// With -cases plain the configs are those of the plain case alone: no TLS anywhere.
func TestPlainConfigsHaveNoTLS(t *testing.T) {
	p := ports{18000}
	for name, conf := range map[string]string{
		"nginx":    nginxProxyConfig("/x", "/x/e.log", p, 2, nil),
		"haproxy":  haproxyConfig(p, 2, nil),
		"caddy":    caddyConfig(p, nil),
		"geoproxy": geoproxyConfig(p, "geoproxy", "", nil, false),
	} {
		for _, word := range []string{"ssl", "tls", "18111", "18112", "18113", "18114", "pprof"} {
			if strings.Contains(conf, word) {
				t.Errorf("%s's plain config mentions %q:\n%s", name, word, conf)
			}
		}
	}
}

func TestWriteCert(t *testing.T) {
	dir := t.TempDir()
	c, err := writeCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		t.Fatal(err)
	}
	pemData, err := os.ReadFile(c.pem)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(pemData, pemData); err != nil {
		t.Errorf("HAProxy's PEM (certificate and key): %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T; want ECDSA P-256", leaf.PublicKey)
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: c.pool()}); err != nil {
			t.Errorf("verifying for %s: %v", host, err)
		}
	}
}

// The TLS configs serve the certificate on the TLS port, beside the plain listener, and
// nginx, HAProxy, Caddy and geoproxy accept them (each check runs where its tool is).
func TestTLSConfigsAreValid(t *testing.T) {
	dir := t.TempDir()
	c, err := writeCert(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	p := ports{18000}
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	nginxConf := nginxProxyConfig(dir, filepath.Join(dir, "error.log"), p, 2, c)
	haproxyConf := haproxyConfig(p, 2, c)
	caddyConf := caddyConfig(p, c)
	for _, want := range []struct{ conf, text string }{
		{nginxConf, "listen 127.0.0.1:18101;"},
		{nginxConf, "listen 127.0.0.1:18111 ssl http2;"},
		{nginxConf, "ssl_certificate " + c.cert + ";"},
		{nginxConf, "ssl_certificate_key " + c.key + ";"},
		{nginxConf, "ssl_protocols TLSv1.2 TLSv1.3;"},
		{haproxyConf, "bind 127.0.0.1:18102\n"},
		{haproxyConf, "bind 127.0.0.1:18112 ssl crt " + c.pem + " alpn h2,http/1.1 ssl-min-ver TLSv1.2"},
		{caddyConf, "https://:18113 {"},
		{caddyConf, "tls " + c.cert + " " + c.key},
	} {
		if !strings.Contains(want.conf, want.text) {
			t.Errorf("no %q in:\n%s", want.text, want.conf)
		}
	}

	for _, pprof := range []bool{false, true} {
		path := write("geoproxy.yaml", geoproxyConfig(p, "geoproxy", "", c, pprof))
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatalf("geoproxy config: %v", err)
		}
		if cfg.Listen != "127.0.0.1:18104" || cfg.TLS.Listen != "127.0.0.1:18114" || len(cfg.TLS.Certificates) != 1 ||
			cfg.TLS.Certificates[0] != (config.CertPair{Cert: c.cert, Key: c.key}) || cfg.Admin.Pprof != pprof {
			t.Errorf("geoproxy config read back as listen %s, tls %+v, pprof %v", cfg.Listen, cfg.TLS, cfg.Admin.Pprof)
		}
	}

	tool := func(name string) string {
		for _, d := range []string{"", "/usr/sbin/", "/sbin/"} {
			if path, err := exec.LookPath(d + name); err == nil {
				return path
			}
		}
		return ""
	}
	run := func(name string, args ...string) {
		t.Helper()
		bin := tool(name)
		if bin == "" {
			t.Logf("%s is not installed: its config is not checked", name)
			return
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("nginx", "-t", "-q", "-p", dir+"/", "-e", filepath.Join(dir, "error.log"), "-c", write("nginx.conf", nginxConf))
	run("haproxy", "-c", "-q", "-f", write("haproxy.cfg", haproxyConf))
	run("caddy", "validate", "--adapter", "caddyfile", "--config", write("Caddyfile", caddyConf))
}

// checkTLS accepts a server with the bench's certificate, over HTTP/1.1 and HTTP/2, and
// refuses one with another certificate.
func TestCheckTLS(t *testing.T) {
	c, err := writeCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := writeCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	serve := func(cf *certFiles) *httptest.Server {
		pair, err := tls.LoadX509KeyPair(cf.cert, cf.key)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(backendBody))
		}))
		srv.EnableHTTP2 = true
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	tgt := func(srv *httptest.Server) *target {
		return &target{name: "nginx", tlsPort: srv.Listener.Addr().(*net.TCPAddr).Port}
	}
	good := tgt(serve(c))
	for _, h2 := range []bool{false, true} {
		if err := checkTLS(context.Background(), good, c, h2, time.Second); err != nil {
			t.Errorf("h2 %v: %v", h2, err)
		}
	}
	if err := checkTLS(context.Background(), tgt(serve(other)), c, false, time.Second); err == nil {
		t.Error("a server with another certificate passed")
	}
}

const h2loadSample = `starting benchmark...
spawning thread #0: 64 total client(s). Timing-based test with 0s of warm-up time and 8s of main duration for measurements.
Application protocol: h2
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 8.00s, 44542.50 req/s, 1.53MB/s
requests: 356340 total, 356980 started, 356340 done, 356338 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 356338 2xx, 0 3xx, 2 4xx, 0 5xx
traffic: 12.24MB (12834906) total, 1.49MB (1558752) headers (space savings 93.73%), 4.93MB (5170130) data
                     min         max         mean         sd        +/- sd
time for request:      263us     37.72ms     13.21ms      3.38ms    79.51%
time for connect:     1.80ms     20.58ms      9.93ms      5.45ms    57.81%
time to 1st byte:    24.19ms     41.49ms     31.47ms      4.79ms    60.94%
req/s           :     682.21      748.38      721.13       14.47    68.75%
`

func TestParseH2load(t *testing.T) {
	r, err := parseH2load(h2loadSample)
	if err != nil {
		t.Fatal(err)
	}
	want := h2Result{Requests: 356340, Succeeded: 356338, Failed: 2, Non2xx: 2, RPS: 44542.5,
		Mean: 13210 * time.Microsecond, Max: 37720 * time.Microsecond}
	if r != want {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
	if _, err := parseH2load("connect to 127.0.0.1:1: Connection refused\n"); err == nil {
		t.Error("no error for output without results")
	}
}

// The HTTPS section: its own rows, geoproxy's ratios over TLS beside the plain ones, and
// the plain table's "| geoproxy |" row still the only one.
func TestReportHTTPS(t *testing.T) {
	o, err := parseFlags([]string{"-cases", "plain,https,h2", "-rounds", "1", "-command", "bench/run.sh"})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, plain, https, h2 float64) *target {
		tg := &target{name: name, tlsPort: 1, suite: "TLSv1.3 TLS_AES_128_GCM_SHA256 X25519",
			runs: []wrkResult{{RPS: plain}}, cpu: []float64{1}, https: []wrkResult{{RPS: https}}, httpsCPU: []float64{2},
			h2: []h2Result{{RPS: h2, Requests: 100}}, h2CPU: []float64{3}}
		return tg
	}
	nginx, haproxy, gp := mk("nginx", 50000, 40000, 30000), mk("haproxy", 45000, 40000, 60000), mk("geoproxy", 45000, 20000, 15000)
	rp := report{opts: o, targets: []*target{nginx, haproxy, gp}, tlsSet: []*target{nginx, haproxy, gp}, h2XFF: clients[0].addr,
		rateNote: "skipped (-rate-rounds -1)"}
	md := rp.markdown()
	for _, want := range []string{
		"## HTTPS: the same proxies over TLS",
		"**Over HTTPS: geoproxy ÷ nginx 0.50× (20,000 vs 40,000 req/s), ÷ HAProxy 0.50× (20,000 vs 40,000 req/s).** Plain, same run: geoproxy ÷ nginx 0.90×",
		"| geoproxy (https) | 20,000 |",
		"| 0.50× | 0.50× | – | 0.44× | TLSv1.3 TLS_AES_128_GCM_SHA256 X25519 |",
		"**Over HTTP/2: geoproxy ÷ nginx 0.50× (15,000 vs 30,000 req/s), ÷ HAProxy 0.25×",
		"| geoproxy (h2) | 15,000 |",
		"`X-Forwarded-For: 81.2.69.142` (GB)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in the report:\n%s", want, md)
		}
	}
	lines := rp.ratioLines()
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "plain  geoproxy ÷ nginx 0.90×") || !strings.HasPrefix(lines[1], "https  geoproxy ÷ nginx 0.50×") ||
		!strings.HasPrefix(lines[2], "h2     geoproxy ÷ nginx 0.50×") {
		t.Errorf("ratio lines: %q", lines)
	}

	// -cases plain: no HTTPS section, and the same rows called "| geoproxy |" (the plain
	// table's and its rounds').
	if o, err = parseFlags([]string{"-cases", "plain", "-rounds", "1", "-command", "bench/run.sh"}); err != nil {
		t.Fatal(err)
	}
	rp.opts, rp.tlsSet = o, nil
	plain := rp.markdown()
	if strings.Contains(strings.ToLower(plain), "https") {
		t.Errorf("-cases plain: the report mentions HTTPS:\n%s", plain)
	}
	if n, want := strings.Count(md, "\n| geoproxy |"), strings.Count(plain, "\n| geoproxy |"); n != want || n != 2 {
		t.Errorf("%d rows called \"| geoproxy |\" with the TLS cases, %d without; want 2 (the plain table's and its rounds')", n, want)
	}

	// -cases https: the plain section says it did not run, and shows no empty table.
	if o, err = parseFlags([]string{"-cases", "https", "-rounds", "1", "-command", "bench/run.sh"}); err != nil {
		t.Fatal(err)
	}
	for _, tg := range rp.targets {
		tg.runs, tg.cpu = nil, nil
	}
	rp.opts, rp.tlsSet = o, []*target{nginx, haproxy, gp}
	md = rp.markdown()
	if !strings.Contains(md, "Not run: `-cases` leaves out plain.") || strings.Contains(md, "| target | req/s | p50 | p99 | CPU s/100k req | peak RSS | vs direct") ||
		!strings.Contains(md, "| geoproxy (https) | 20,000 |") || !strings.Contains(md, "| 0.50× | 0.50× | – | – |") {
		t.Errorf("-cases https:\n%s", md)
	}
}
