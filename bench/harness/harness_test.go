//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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
