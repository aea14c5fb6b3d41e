package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/server"
)

// The client limits (key "limits"), on every engine and path, with raw
// bytes: what each answers, and what geoproxy_client_limit_hits_total
// counts.

type limitEnv struct{ *hardEnv }

// forEachPathLimits runs a test against every engine and path (see
// hardEngines), each with its own proxy with the limits block given, in
// front of one recording backend at /base.
func forEachPathLimits(t *testing.T, limits string, test func(t *testing.T, engine string, e *limitEnv)) {
	for _, eng := range hardEngines {
		t.Run(eng.name, func(t *testing.T) {
			t.Parallel()
			e := startPath(t, "limits: {"+limits+"}\n"+eng.yaml, server.Options{})
			test(t, eng.name, &limitEnv{e})
		})
	}
}

// hits reads geoproxy_client_limit_hits_total{limit}.
func (e *limitEnv) hits(t *testing.T, limit string) float64 {
	t.Helper()
	return counterOf(t, e.srv, "geoproxy_client_limit_hits_total", map[string]string{"limit": limit})
}

// counterOf reads a counter of the server's registry by its labels; 0 when
// it is not there.
func counterOf(t *testing.T, srv *server.Server, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := srv.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// dialFrom connects to the proxy from a loopback address of its own: a
// client of its own.
func (e *limitEnv) dialFrom(t *testing.T, ip string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	nc, err := d.Dial("tcp", e.addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// endsWithin waits for the proxy to end the connection, reading what it
// sends meanwhile; it returns that and how long it took.
func (c *rawConn) endsWithin(d time.Duration) (string, time.Duration) {
	c.t.Helper()
	start := time.Now()
	require.NoError(c.t, c.nc.SetReadDeadline(start.Add(d)))
	got, err := io.ReadAll(c.br)
	if err != nil {
		require.False(c.t, isTimeoutErr(err), "still open after %s, with %q", d, got)
	}
	return string(got), time.Since(start)
}

// A head that stalls after its first bytes gets 408 at the head timeout; a
// connection that sends nothing is closed at the idle timeout, later and
// without an answer; so is one idle after a request, whose next head then
// stalls.
func TestHeadAndIdleTimeouts(t *testing.T) {
	const head, idle = 250 * time.Millisecond, 900 * time.Millisecond
	forEachPathLimits(t, "head_timeout: 250ms, idle_timeout: 900ms", func(t *testing.T, _ string, e *limitEnv) {
		slow := e.dial(t)
		silent, dialed := e.dial(t), time.Now()
		kept := e.dial(t)
		slow.send("GET /base/slow HTTP/1.1\r\nHo")

		got, took := slow.endsWithin(5 * time.Second)
		assert.True(t, strings.HasPrefix(got, "HTTP/1.1 408 "), "a stalled head: %q", got)
		assert.Contains(t, got, "geoproxy: request not received in time")
		assert.GreaterOrEqual(t, took, head-50*time.Millisecond)
		assert.Less(t, took, idle-100*time.Millisecond, "the head timeout, not the idle one")

		kept.send("GET /base/one HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
		code, _ := kept.answer("GET")
		assert.Equal(t, 200, code)
		kept.send("GET /base/two HTTP/1.1\r\nHost: proxy.test\r\nX-Slow:")
		got, took = kept.endsWithin(5 * time.Second)
		assert.True(t, strings.HasPrefix(got, "HTTP/1.1 408 "), "a stalled head after a request: %q", got)
		assert.Less(t, took, idle-100*time.Millisecond)

		got, _ = silent.endsWithin(5 * time.Second)
		assert.Empty(t, got, "an idle connection is closed without an answer")
		assert.GreaterOrEqual(t, time.Since(dialed), idle-50*time.Millisecond, "the idle timeout, not the head one")

		assert.Equal(t, 2.0, e.hits(t, metrics.LimitHeadTimeout))
		assert.Zero(t, e.hits(t, metrics.LimitBodyTimeout))
		assert.Len(t, e.rec.requests(), 1)
	})
}

// An idle keep-alive connection is closed at the idle timeout, without an
// answer.
func TestIdleKeepAliveConnectionIsClosedSilently(t *testing.T) {
	forEachPathLimits(t, "head_timeout: 100ms, idle_timeout: 600ms", func(t *testing.T, _ string, e *limitEnv) {
		c := e.dial(t)
		c.send("GET /base/one HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
		code, _ := c.answer("GET")
		require.Equal(t, 200, code)
		got, took := c.endsWithin(5 * time.Second)
		assert.Empty(t, got)
		assert.GreaterOrEqual(t, took, 400*time.Millisecond, "the idle timeout (600ms, coarsely), not the head one (100ms)")
		assert.Zero(t, e.hits(t, metrics.LimitHeadTimeout))
	})
}

// A body that stalls gets 408 at the body timeout.
func TestSlowBodyGets408AtTheBodyTimeout(t *testing.T) {
	const body = 250 * time.Millisecond
	forEachPathLimits(t, "body_timeout: 250ms", func(t *testing.T, _ string, e *limitEnv) {
		c := e.dial(t)
		start := time.Now()
		c.send("POST /base/upload HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 10\r\n\r\nabc")
		code, msg := c.answer("POST")
		assert.Equal(t, http.StatusRequestTimeout, code)
		assert.Equal(t, "geoproxy: request not received in time\n", msg)
		assert.GreaterOrEqual(t, time.Since(start), body-50*time.Millisecond)
		assert.True(t, c.closed())
		assert.Equal(t, 1.0, e.hits(t, metrics.LimitBodyTimeout))
		assert.Zero(t, e.hits(t, metrics.LimitHeadTimeout))
	})
}

// headOf is a GET whose head (request line to the empty line) is n bytes.
func headOf(t *testing.T, n int) string {
	t.Helper()
	head := "GET /base/big HTTP/1.1\r\nHost: proxy.test\r\nX-Pad: "
	require.Greater(t, n, len(head)+4)
	head += strings.Repeat("a", n-len(head)-4) + "\r\n\r\n"
	require.Len(t, head, n)
	return head
}

// A head of max_header_bytes passes; one byte more is 431, counted, and
// so is one far beyond (which Go's server refuses itself on the nethttp
// engine).
func TestMaxHeaderBytes(t *testing.T) {
	const limit = 2048
	forEachPathLimits(t, "max_header_bytes: 2KiB", func(t *testing.T, _ string, e *limitEnv) {
		c := e.dial(t)
		c.send(headOf(t, limit))
		code, _ := c.answer("GET")
		assert.Equal(t, 200, code, "a head of the limit")
		c.send(headOf(t, limit-1))
		code, _ = c.answer("GET")
		assert.Equal(t, 200, code, "a head under the limit")
		require.Len(t, e.rec.requests(), 2)

		c = e.dial(t)
		c.send(headOf(t, limit+1))
		code, msg := c.answer("GET")
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, code)
		assert.Equal(t, "geoproxy: message head too large\n", msg)
		assert.True(t, c.closed())
		assert.Equal(t, 1.0, e.hits(t, metrics.LimitHeaderBytes))

		c = e.dial(t)
		c.send(headOf(t, 12<<10))
		code, _ = c.answer("GET")
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, code)
		assert.Equal(t, 2.0, e.hits(t, metrics.LimitHeaderBytes))
		assert.Empty(t, e.rec.requests())
	})
}

// A body over max_request_body is 413, counted, and goes nowhere.
func TestMaxRequestBody(t *testing.T) {
	forEachPathLimits(t, "max_request_body: 1KiB", func(t *testing.T, _ string, e *limitEnv) {
		c := e.dial(t)
		c.send("POST /base/upload HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("b", 1024))
		code, _ := c.answer("POST")
		assert.Equal(t, 200, code, "a body of the limit")

		c = e.dial(t)
		c.send("POST /base/upload HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 1025\r\n\r\n")
		code, msg := c.answer("POST")
		assert.Equal(t, http.StatusRequestEntityTooLarge, code)
		assert.Equal(t, "geoproxy: request body too large\n", msg)
		assert.Equal(t, 1.0, e.hits(t, metrics.LimitRequestBody))
		assert.Len(t, e.rec.requests(), 1)
	})
}

// A client gets its burst, then 429 with Retry-After until a token comes;
// the refused request is not forwarded, is counted, and is a request of
// region "none". Another client is not affected.
func TestClientRateLimit(t *testing.T) {
	forEachPathLimits(t, "requests_per_second_per_client: 1, burst_per_client: 3", func(t *testing.T, _ string, e *limitEnv) {
		none4xx := map[string]string{"region": metrics.NoRegion, "code": "4xx"}
		before := counterOf(t, e.srv, "geoproxy_requests_total", none4xx)
		a := e.dialFrom(t, "127.0.0.2")
		for i := range 3 {
			a.send(fmt.Sprintf("GET /base/a%d HTTP/1.1\r\nHost: proxy.test\r\n\r\n", i))
			code, _ := a.answer("GET")
			require.Equal(t, 200, code, "request %d is within the burst", i)
		}
		require.Len(t, e.rec.requests(), 3)

		a.send("GET /base/over HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
		resp, err := http.ReadResponse(a.br, &http.Request{Method: "GET"})
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		assert.Equal(t, "geoproxy: too many requests from this client; try again later\n", string(body))
		assert.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
		wait, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		require.NoError(t, err, "Retry-After: %q", resp.Header.Get("Retry-After"))
		assert.GreaterOrEqual(t, wait, 1)
		assert.False(t, resp.Close, "the connection stays")
		assert.Empty(t, e.rec.requests(), "not forwarded")
		assert.Equal(t, 1.0, e.hits(t, metrics.LimitClientRate))
		assert.Equal(t, before+1, counterOf(t, e.srv, "geoproxy_requests_total", none4xx))

		b := e.dialFrom(t, "127.0.0.3")
		b.send("GET /base/b HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
		code, _ := b.answer("GET")
		assert.Equal(t, 200, code, "another client has its own bucket")

		time.Sleep(time.Duration(wait) * time.Second)
		a.send("GET /base/later HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
		code, _ = a.answer("GET")
		assert.Equal(t, 200, code, "after Retry-After")
		assert.Len(t, e.rec.requests(), 2)
		assert.Equal(t, 1.0, e.hits(t, metrics.LimitClientRate))
	})
}

// With the defaults (no rate limit, 16 KiB heads, 60 s timeouts) nothing is
// refused: a burst of requests from one client all pass, and no limit is
// counted.
func TestClientLimitsOffByDefault(t *testing.T) {
	forEachPathLimits(t, "", func(t *testing.T, _ string, e *limitEnv) {
		c := e.dialFrom(t, "127.0.0.2")
		for i := range 50 {
			c.send(fmt.Sprintf("GET /base/%d HTTP/1.1\r\nHost: proxy.test\r\n\r\n", i))
			code, _ := c.answer("GET")
			require.Equal(t, 200, code, "request %d", i)
		}
		c.send(headOf(t, 16<<10))
		code, _ := c.answer("GET")
		assert.Equal(t, 200, code, "a head of 16 KiB")
		assert.Len(t, e.rec.requests(), 51)
		for _, l := range []string{metrics.LimitHeadTimeout, metrics.LimitBodyTimeout, metrics.LimitHeaderBytes,
			metrics.LimitRequestBody, metrics.LimitClientRate} {
			assert.Zero(t, e.hits(t, l), l)
		}
	})
}

// An HTTP/2 connection with prior knowledge (h2c) on the nethttp engine is
// HTTP/2's to time: quiet longer than the head timeout, it still serves.
func TestH2CIsNotCutByTheHeadTimeout(t *testing.T) {
	rec := &baseRecorder{}
	rec.srv = httptest.NewServer(rec)
	t.Cleanup(rec.srv.Close)
	srv := runYAML(t, fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
engine: nethttp
geoip: {database: ../testdata/geoip2-city.mmdb}
health_check: {path: /health, interval: 1s, timeout: 500ms}
limits: {head_timeout: 150ms, idle_timeout: 2s}
regions:
  - name: europe-west
    location: {lat: 50.45, lon: 3.82}
    backends: [{url: "%s/base"}]
`, rec.srv.URL), server.Options{})
	(&env{t: t, srv: srv}).waitRegion("europe-west", true)

	// A client that opens with the preface and its settings, then waits.
	nc, err := net.Dial("tcp", srv.ProxyAddr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	_, err = io.WriteString(nc, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	require.NoError(t, err)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
	got, err := io.ReadAll(nc)
	require.True(t, isTimeoutErr(err), "the connection stays open: %v", err)
	assert.NotContains(t, string(got), "HTTP/1.1", "no HTTP/1 answer on an HTTP/2 connection")
	assert.NotEmpty(t, got, "the server's settings")

	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: protocols}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for i := range 3 {
		resp, err := client.Get("http://" + srv.ProxyAddr().String() + "/x")
		require.NoError(t, err, "request %d", i)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, 2, resp.ProtoMajor)
		time.Sleep(300 * time.Millisecond) // twice the head timeout
	}
	assert.Zero(t, counterOf(t, srv, "geoproxy_client_limit_hits_total", map[string]string{"limit": metrics.LimitHeadTimeout}))
	assert.Len(t, rec.requests(), 3)
}
