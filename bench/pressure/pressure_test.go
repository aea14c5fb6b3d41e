//go:build linux

package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/geoproxy/geoproxy/bench/internal/procfs"
)

func TestBusiest(t *testing.T) {
	s := time.Second
	st := func(name string, cpu time.Duration) procfs.Stat { return procfs.Stat{Name: name, CPU: cpu} }
	before := map[int]procfs.Stat{1: st("fuzz", 10*s), 2: st("fuzz", 10*s), 3: st("go", 5*s), 4: st("proxy", 0), 5: st("idle", s), 6: st("old", s)}
	after := map[int]procfs.Stat{1: st("fuzz", 14*s), 2: st("fuzz", 13*s), 3: st("go", 6*s), 4: st("proxy", 9*s), 5: st("idle", s),
		7: st("new", 2*s), 6: st("reused", s/10)}
	// Over 10 s: fuzz 0.7 cores, new 0.2, go 0.1, reused 0.01 (a new process on an old pid), proxy left out.
	if got, want := busiest(before, after, 10*s, 4), "fuzz 0.70, new 0.20, go 0.10"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := busiest(before, before, 10*s); got != "" {
		t.Errorf("nothing used: got %q", got)
	}
}

func TestSample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	u := sample(ctx, os.Getpid(), 50*time.Millisecond)
	if u.samples < 3 || u.peakRSS == 0 || u.lastRSS == 0 || u.peakFDs == 0 || u.firstErr != nil {
		t.Errorf("got %+v: want several samples, memory and descriptors, no error", u)
	}
	// A process that does not exist: no sample, an error.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if u := sample(ctx2, 1<<30, 10*time.Millisecond); u.samples != 0 || u.firstErr == nil {
		t.Errorf("got %+v for a missing process", u)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1234": 1234, "64MiB": 64 << 20, "64 MiB": 64 << 20, "1GiB": 1 << 30, "3KiB": 3 << 10, "10B": 10, " 128MiB ": 128 << 20,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "64MB", "64mib", "1.5GiB", "-1", "99999999GiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
	for n, want := range map[int64]string{32 << 20: "32 MiB", 1536 << 20: "1.5 GiB", 100: "100 B", 16<<10 - 64: "15.9 KiB"} {
		if got := fmtSize(n); got != want {
			t.Errorf("fmtSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.requestMemory != "" || o.requestMemoryBytes != defaultRequestMemory || len(o.phases) != len(allPhases()) || len(o.engines) != 2 {
		t.Errorf("defaults: %+v", o)
	}
	if want := int64(32<<20) / 10; o.slowRate != want {
		t.Errorf("slow body rate %d, want the size over -duration + 2s: %d", o.slowRate, want)
	}
	o, err = parseFlags([]string{"-request-memory", "64MiB", "-phases", "idle", "-engines", "nethttp"})
	if err != nil {
		t.Fatal(err)
	}
	if o.requestMemoryBytes != 64<<20 || strings.Join(o.phases, ",") != "baseline,idle" || strings.Join(o.engines, ",") != "nethttp" {
		t.Errorf("got %d %v %v", o.requestMemoryBytes, o.phases, o.engines)
	}
	for _, args := range [][]string{{"-request-memory", "64MB"}, {"-phases", "nope"}, {"-k", "0"}, {"-slow-body-size", "x"}, {"extra"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestGeoproxyConfig(t *testing.T) {
	p := ports{18400}
	c := geoproxyConfig(p, "native", "")
	for _, want := range []string{"engine: native\n", "listen: 127.0.0.1:18401\n", "listen: 127.0.0.1:18402\n", "url: http://127.0.0.1:18403\n", "access_log: false\n"} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
	if strings.Contains(c, "limits") {
		t.Errorf("limits written without -request-memory:\n%s", c)
	}
	if c := geoproxyConfig(p, "nethttp", "64MiB"); !strings.Contains(c, "\nlimits: {request_memory: 64MiB}\n") || !strings.Contains(c, "engine: nethttp\n") {
		t.Errorf("config with request_memory:\n%s", c)
	}
}

func TestTallyAndRamp(t *testing.T) {
	tl := newTally()
	if tl.String() != "none" {
		t.Errorf("empty tally: %q", tl.String())
	}
	for _, o := range []string{"HTTP 503", outOpen, "HTTP 503", outClosed, outOpen, "HTTP 503"} {
		tl.add(o)
	}
	if got, want := tl.String(), "3 HTTP 503, 2 open at end, 1 closed"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if tl.total() != 6 || tl.count("HTTP 503") != 3 {
		t.Errorf("total %d, 503s %d", tl.total(), tl.count("HTTP 503"))
	}

	r := newRamp(2)
	a, b := r.one(), r.one()
	a()
	a() // a second mark of the same connection counts once
	select {
	case <-r.done:
		t.Fatal("ramp done with one connection of two")
	default:
	}
	b()
	select {
	case <-r.done:
	case <-time.After(time.Second):
		t.Fatal("ramp not done with both connections")
	}
	select {
	case <-newRamp(0).done:
	default:
		t.Error("a ramp of no connections is not done")
	}
}

func TestQuantile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	if quantile(ds, 0.5) != 50 || quantile(ds, 0.99) != 99 || quantile(ds, 1) != 100 || quantile(nil, 0.5) != 0 {
		t.Errorf("p50 %d p99 %d p100 %d", quantile(ds, 0.5), quantile(ds, 0.99), quantile(ds, 1))
	}
	if ds[0] != 100 {
		t.Error("quantile sorted its input")
	}
}

func TestParseEngineMemory(t *testing.T) {
	text := `# HELP geoproxy_request_memory_bytes Memory the native engine holds.
# TYPE geoproxy_request_memory_bytes gauge
geoproxy_request_memory_bytes 1.048576e+06
geoproxy_request_memory_limit_bytes 1.34217728e+08
geoproxy_request_memory_refusals_total 7
geoproxy_requests_in_flight 3
`
	m, err := parseEngineMemory(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if !m.ok || m.used != 1<<20 || m.limit != 128<<20 || m.refused != 7 {
		t.Errorf("got %+v", m)
	}
	if m, _ := parseEngineMemory(strings.NewReader("go_goroutines 9\n")); m.ok {
		t.Error("ok without the metrics")
	}
}

// newBackend starts the benchmark's backend on a free loopback port.
func newBackend(t *testing.T, large int64) *backend {
	t.Helper()
	b, err := startBackend("127.0.0.1:0", large)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.close() })
	return b
}

// runAttack runs an attack for d after its ramp, and returns its tally.
func runAttack(t *testing.T, n int, d time.Duration, attack func(ctx context.Context, n int, tl *tally, r *ramp)) *tally {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tl, r := newTally(), newRamp(n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		attack(ctx, n, tl, r)
	}()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Error("the attack's connections were not in place within 5s")
	}
	time.Sleep(d)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the attack did not stop within 5s of its end")
	}
	return tl
}

func TestBackend(t *testing.T) {
	b := newBackend(t, 100_000)
	get := func(method, path string, body io.Reader) string {
		req, _ := http.NewRequest(method, "http://"+b.addr()+path, body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return string(out)
	}
	if got := get("GET", "/anything", nil); got != smallBody {
		t.Errorf("GET: %q", got)
	}
	if got := get("GET", largePath, nil); len(got) != 100_000 {
		t.Errorf("GET %s: %d bytes", largePath, len(got))
	}
	if got := get("POST", "/upload", strings.NewReader(strings.Repeat("x", 12345))); got != "received 12345 bytes\n" {
		t.Errorf("POST: %q", got)
	}
}

func TestSlowloris(t *testing.T) {
	newA := func(addr string) *attacker {
		a := newAttacker(addr)
		a.lorisEvery, a.lorisBytes, a.lorisMax = 20*time.Millisecond, 8, 2048
		return a
	}
	// A server without a head timeout holds them all.
	b := newBackend(t, 1)
	a := newA(b.addr())
	if h := a.lorisHead(); len(h) != 2048 || strings.Contains(string(h), "\r\n\r\n") || !strings.HasPrefix(string(h), "GET /slowloris HTTP/1.1\r\n") {
		t.Errorf("head: %d bytes, %q...", len(h), h[:40])
	}
	if a.lorisStart(0, 5) != 1024 || a.lorisStart(4, 5) != 1024 || newA("").lorisStart(0, 1) != 1024 {
		t.Errorf("start sizes %d..%d", a.lorisStart(0, 5), a.lorisStart(4, 5))
	}
	a.lorisMax = 8 << 10
	if a.lorisStart(0, 3) != 1<<10 || a.lorisStart(1, 3) != 4<<10 || a.lorisStart(2, 3) != 7<<10 {
		t.Errorf("start sizes %d %d %d", a.lorisStart(0, 3), a.lorisStart(1, 3), a.lorisStart(2, 3))
	}
	a.lorisMax = 2048
	if tl := runAttack(t, 5, 200*time.Millisecond, a.slowloris); tl.count(outOpen) != 5 {
		t.Errorf("without a head timeout: %s; want 5 open at end", tl)
	}
	// A server with one closes them.
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ReadHeaderTimeout = 100 * time.Millisecond
	srv.Start()
	defer srv.Close()
	if tl := runAttack(t, 5, 400*time.Millisecond, newA(srv.Listener.Addr().String()).slowloris); tl.count(outOpen) != 0 || tl.total() != 5 {
		t.Errorf("with a head timeout: %s; want 5 ended by the server", tl)
	}
}

func TestSlowBodies(t *testing.T) {
	// Sent whole: the backend answers each.
	b := newBackend(t, 1)
	a := newAttacker(b.addr())
	a.slowSize, a.slowRate, a.slowEvery = 64<<10, 1<<20, 10*time.Millisecond
	if tl := runAttack(t, 4, 300*time.Millisecond, a.slowBodies); tl.count("HTTP 200") != 4 || tl.sent.Load() != 4*64<<10 {
		t.Errorf("small bodies: %s, %d bytes sent; want 4 HTTP 200 and %d bytes", tl, tl.sent.Load(), 4*64<<10)
	}
	// Mid-upload at the end.
	a.slowSize = 32 << 20
	if tl := runAttack(t, 4, 100*time.Millisecond, a.slowBodies); tl.count(outOpen) != 4 || tl.sent.Load() == 0 {
		t.Errorf("large bodies: %s, %d bytes sent; want 4 open at end", tl, tl.sent.Load())
	}
	// Refused before the body is in: the refusal is counted.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	a2 := newAttacker(srv.Listener.Addr().String())
	a2.slowSize, a2.slowRate, a2.slowEvery = 32<<20, 1<<20, 10*time.Millisecond
	if tl := runAttack(t, 4, 200*time.Millisecond, a2.slowBodies); tl.count("HTTP 503") != 4 {
		t.Errorf("refused: %s; want 4 HTTP 503", tl)
	}
}

func TestFastBodies(t *testing.T) {
	b := newBackend(t, 1)
	a := newAttacker(b.addr())
	a.fastSize = 1 << 20
	tl := runAttack(t, 3, 300*time.Millisecond, a.fastBodies)
	if tl.count("HTTP 200") < 3 || tl.total() != tl.count("HTTP 200")+tl.count(outOpen) {
		t.Errorf("got %s; want several HTTP 200, nothing else but open at end", tl)
	}
	if tl.sent.Load() < int64(tl.count("HTTP 200"))<<20 {
		t.Errorf("%d bytes sent for %d answers", tl.sent.Load(), tl.count("HTTP 200"))
	}
	// Refused at once: each refusal is counted, and the client goes on.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	}))
	defer srv.Close()
	a2 := newAttacker(srv.Listener.Addr().String())
	a2.fastSize = 32 << 20
	if tl := runAttack(t, 2, 200*time.Millisecond, a2.fastBodies); tl.count("HTTP 413") < 4 {
		t.Errorf("refused: %s; want several HTTP 413", tl)
	}
}

func TestNeverRead(t *testing.T) {
	b := newBackend(t, 1<<20)
	a := newAttacker(b.addr())
	attack := func(ctx context.Context, n int, tl *tally, r *ramp) { a.neverRead(ctx, n, tl, r, time.Second) }
	if tl := runAttack(t, 3, 100*time.Millisecond, attack); tl.count("HTTP 200, whole body read at the end") != 3 {
		t.Errorf("got %s", tl)
	}
	// A server that cuts the answer short.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		_, _ = io.WriteString(w, "short")
	}))
	defer srv.Close()
	a2 := newAttacker(srv.Listener.Addr().String())
	attack2 := func(ctx context.Context, n int, tl *tally, r *ramp) { a2.neverRead(ctx, n, tl, r, time.Second) }
	if tl := runAttack(t, 2, 50*time.Millisecond, attack2); tl.count("HTTP 200, body cut short") != 2 {
		t.Errorf("cut short: got %s", tl)
	}
}

func TestIdle(t *testing.T) {
	b := newBackend(t, 1)
	if tl := runAttack(t, 20, 100*time.Millisecond, newAttacker(b.addr()).idle); tl.count(outOpen) != 20 {
		t.Errorf("got %s; want 20 open at end", tl)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv.Config.IdleTimeout = 50 * time.Millisecond
	srv.Start()
	defer srv.Close()
	if tl := runAttack(t, 5, 300*time.Millisecond, newAttacker(srv.Listener.Addr().String()).idle); tl.count(outClosed) != 5 {
		t.Errorf("with an idle timeout: %s; want 5 closed", tl)
	}
}

func TestSideClient(t *testing.T) {
	b := newBackend(t, 1)
	res := sideClient{addr: b.addr(), timeout: time.Second}.run(context.Background(), 200*time.Millisecond)
	if len(res.lat) < 10 || res.errs.total() != 0 || res.quantile(0.5) <= 0 {
		t.Errorf("%d answers, errors %s", len(res.lat), res.errs)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	res = sideClient{addr: srv.Listener.Addr().String(), pause: 10 * time.Millisecond, timeout: time.Second}.run(context.Background(), 100*time.Millisecond)
	if len(res.lat) != 0 || res.errs.count("HTTP 503") == 0 || res.errs.total() != res.errs.count("HTTP 503") {
		t.Errorf("%d answers, errors %s; want only HTTP 503 errors", len(res.lat), res.errs)
	}
	// Nothing listening: connect errors, and run still ends on time.
	at := time.Now()
	res = sideClient{addr: "127.0.0.1:1", timeout: time.Second}.run(context.Background(), 100*time.Millisecond)
	if res.errs.total() == 0 || time.Since(at) > time.Second {
		t.Errorf("errors %s after %s", res.errs, time.Since(at))
	}
}

func TestReport(t *testing.T) {
	o, err := parseFlags([]string{"-request-memory", "64MiB"})
	if err != nil {
		t.Fatal(err)
	}
	o.command = "bench/pressure.sh -request-memory 64MiB"
	side := func(d time.Duration) sideResult {
		return sideResult{lat: []time.Duration{d, d, d}, errs: newTally()}
	}
	attack := newTally()
	attack.add("HTTP 503")
	results := []phaseResult{
		{engine: "native", phase: phBaseline, perConn: goroutineConnCost, idleRSS: 50e6, peakRSS: 51e6, endRSS: 51e6, samples: 50, side: side(100 * time.Microsecond), attack: newTally()},
		{engine: "native", phase: phSlowBodies, conns: 48, inPlace: 48, perConn: goroutineConnCost, idleRSS: 50e6, peakRSS: 900e6, endRSS: 800e6, samples: 100,
			side: side(300 * time.Microsecond), attack: attack, sent: 1 << 30, engineMem: engineWatch{scrapes: 3, peakUsed: 60e6, last: engineMemory{ok: true, used: 50e6, limit: 64 << 20, refused: 9}}},
		{engine: "nethttp", phase: phBaseline, perConn: goroutineConnCost, idleRSS: 60e6, peakRSS: 61e6, endRSS: 61e6, samples: 50, side: side(200 * time.Microsecond), attack: newTally()},
	}
	rp := report{opts: o, results: results, started: time.Now(), elapsed: 2 * time.Minute, machine: [][2]string{{"CPU", "test CPU, 2 cores"}}}
	md := rp.markdown()
	for _, want := range []string{
		"`bench/pressure.sh -request-memory 64MiB`",
		"| CPU | test CPU, 2 cores |",
		"`limits: {request_memory: 64MiB}`",
		"| native | slow-bodies | slow-bodies ×48 | 50.0 MB | 900.0 MB | 800.0 MB | 117.6 MB | **no**, 7.7× | 60.0 MB, 50.0 MB; 9 |",
		"| native | baseline | none | 50.0 MB | 51.0 MB | 51.0 MB | 117.1 MB | yes |",
		"| nethttp | baseline | none | 60.0 MB | 61.0 MB | 61.0 MB | - | - | - |",
		"| native | slow-bodies | 3 | 300 µs | 300 µs | 3.00× | 3.00× | 0 |",
		"1 HTTP 503 |",
		"**native, slow-bodies: over budget.**",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
