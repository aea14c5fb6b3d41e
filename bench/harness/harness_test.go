//go:build linux

package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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
			var n, xff int
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n++ // one connection: no race
				if r.Header.Get("X-Forwarded-For") != "" {
					xff++
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
			if n < 190 || xff != n {
				t.Errorf("server saw %d requests, %d with X-Forwarded-For; want about 200, all", n, xff)
			}
			if res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 {
				t.Errorf("percentiles out of order: %+v", res)
			}
		})
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
