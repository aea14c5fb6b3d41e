package h1

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Event loops beside backends that speak TLS (Options.LoopsWithTLS): the
// loops serve requests to cleartext backends, and hand a connection to a
// goroutine when an attempt of its request goes to an https one.

// seattle is a client address the test database places nearest us-west;
// a loopback client without one is nearest us-east.
const seattle = "203.0.113.70"

// whoHandler answers as mixedHandler, but a path under /who with a body
// that names the backend and repeats the request line and body:
// "name GET /who/1 HTTP/1.1 body". A path under /who/unavailable-name is
// answered 503 by the backend called name.
func whoHandler(name string) handler {
	return func(nc net.Conn, r *bReq) bool {
		path := strings.Fields(r.line)[1]
		if !strings.HasPrefix(path, "/who") {
			return mixedHandler(nc, r)
		}
		if strings.HasPrefix(path, "/who/unavailable-"+name) {
			_, err := io.WriteString(nc, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
			return err == nil
		}
		body := name + " " + r.line + " " + string(r.body)
		_, err := fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return err == nil
	}
}

// upgradeOr answers an Upgrade: echo request with 101, then echoes one
// line; anything else as h.
func upgradeOr(h handler) handler {
	return func(nc net.Conn, r *bReq) bool {
		if up, _ := r.get("Upgrade"); up != "echo" {
			return h(nc, r)
		}
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		line, err := bufio.NewReader(nc).ReadString('\n') // the client speaks once it has the 101
		if err == nil {
			_, _ = io.WriteString(nc, "echo:"+line)
		}
		return false
	}
}

// call is one request of a test and the answer it wants.
type call struct {
	method, path, from, body string // from: the client's address (X-Forwarded-For), or ""
	want                     string // the answer's body
}

func (c call) String() string {
	var b strings.Builder
	b.WriteString(c.method + " " + c.path + " HTTP/1.1\r\nHost: proxy.test\r\n")
	if c.from != "" {
		b.WriteString("X-Forwarded-For: " + c.from + "\r\n")
	}
	if c.method == "POST" {
		b.WriteString("Content-Length: " + strconv.Itoa(len(c.body)) + "\r\n")
	}
	b.WriteString("\r\n" + c.body)
	return b.String()
}

// who is a call to /who/path, from the client at from, answered by the
// backend called name; a POST when body is not empty.
func who(name, path, from, body string) call {
	method := "GET"
	if body != "" {
		method = "POST"
	}
	return call{method: method, path: "/who/" + path, from: from, body: body,
		want: name + " " + method + " /who/" + path + " HTTP/1.1 " + body}
}

// exchange sends the calls, one after the other or all at once, and checks
// every answer.
func (c *client) exchange(calls []call, pipelined bool) {
	c.t.Helper()
	if pipelined {
		var all strings.Builder
		for _, cl := range calls {
			all.WriteString(cl.String())
		}
		c.send(all.String())
	}
	for _, cl := range calls {
		if !pipelined {
			c.send(cl.String())
		}
		r := c.read(cl.method)
		require.Equal(c.t, 200, r.status, "%s %s: %s", cl.method, cl.path, r.head)
		require.Equal(c.t, cl.want, string(r.body), "%s %s", cl.method, cl.path)
	}
}

// family sums the values of a metric family of the proxy's registry.
func (p *proxy) family(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// expectCounted waits (at most 5 s) until the engine has let go of every
// request, then checks that the core saw each of n requests once: n
// reported, n located (Decide), retries more attempts.
func (p *proxy) expectCounted(t *testing.T, n, retries int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		used, _, _ := p.e.RequestMemory()
		busy := 0
		for _, rb := range p.routes {
			busy += int(rb.InFlight())
		}
		inFlight := p.family(t, "geoproxy_requests_in_flight")
		if used == 0 && busy == 0 && inFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still held: %d bytes of request memory, %d requests on backends, %v in flight", used, busy, inFlight)
		}
		time.Sleep(5 * time.Millisecond)
	}
	assert.EqualValues(t, n, p.family(t, "geoproxy_requests_total"), "requests reported")
	assert.EqualValues(t, n, p.family(t, "geoproxy_geo_lookups_total"), "requests located")
	assert.EqualValues(t, retries, p.family(t, "geoproxy_retries_total"), "retries")
}

// goroutines returns how many client connections are on goroutines.
func (p *proxy) goroutines() int {
	p.e.mu.Lock()
	defer p.e.mu.Unlock()
	return len(p.e.conns)
}

// pooled returns how many idle connections to backend i the goroutines'
// pool holds (the loops keep their own).
func (p *proxy) pooled(i int) int {
	pl := p.e.pools[p.routes[i]]
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return len(pl.idle)
}

func onLinux(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops run on Linux")
	}
}

// With LoopsWithTLS, the loops stay when a backend speaks TLS: a
// keep-alive connection whose requests go to a cleartext backend is served
// on a loop throughout; one whose request goes to the https backend moves
// to a goroutine at that request (before anything is sent to the backend)
// and stays there, its next requests to either backend served from it.
// Every request, with or without a body, arrives once at the right backend,
// and the core counts each once.
func TestLoopsServeCleartextBackendsBesideTLSOnes(t *testing.T) {
	t.Parallel()
	onLinux(t)
	p := newProxy(t, proxyOpts{
		handlers: []handler{whoHandler("clear"), whoHandler("tls")}, tls: []bool{false, true},
		loops: 2, loopsWithTLS: true,
	})
	require.Equal(t, 2, p.e.nloops)
	require.Equal(t, "https", p.routes[1].URL.Scheme)

	a := p.dial(t)
	a.exchange([]call{
		who("clear", "a1", "", ""),
		who("clear", "a2", "", "a body"),
		who("clear", "a3", "", strings.Repeat("x", 10<<10)),
		who("clear", "a4", "", ""),
	}, false)
	assert.Zero(t, p.goroutines(), "cleartext requests are served on a loop")
	assert.Zero(t, p.pooled(0), "and over the loop's own backend connections")
	assert.EqualValues(t, 1, p.backends[0].conns.Load())

	b := p.dial(t)
	b.exchange([]call{
		who("clear", "b1", "", ""),
		who("tls", "b2", seattle, "to the https backend"),
	}, false)
	assert.Equal(t, 1, p.goroutines(), "the connection whose request went to the https backend")
	b.exchange([]call{
		who("tls", "b3", seattle, ""),
		who("clear", "b4", "", "on the goroutine now"),
		who("tls", "b5", seattle, strings.Repeat("y", 12<<10)),
	}, false)
	assert.Equal(t, 1, p.pooled(0), "b4 went over the goroutines' pool")
	assert.EqualValues(t, 1, p.backends[1].conns.Load(), "one TLS connection, kept alive")

	a.exchange([]call{who("clear", "a5", "", "")}, false)
	assert.Equal(t, 1, p.goroutines(), "a is still on its loop")
	p.expectCounted(t, 10, 0)
	assert.Zero(t, p.e.panics.Load())
}

// Pipelined requests that alternate between a cleartext and an https
// backend are answered in order, whichever comes first: what follows the
// request handed over goes with it to the goroutine.
func TestPipelinedRequestsAlternateBetweenCleartextAndTLSBackends(t *testing.T) {
	t.Parallel()
	for _, tlsFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls-first=%v", tlsFirst), func(t *testing.T) {
			t.Parallel()
			p := newProxy(t, proxyOpts{
				handlers: []handler{whoHandler("clear"), whoHandler("tls")}, tls: []bool{false, true},
				loopsWithTLS: true,
			})
			var calls []call
			for i := range 8 {
				name, from := "clear", ""
				if (i%2 == 1) != tlsFirst {
					name, from = "tls", seattle
				}
				body := ""
				if i%3 == 1 {
					body = strings.Repeat(strconv.Itoa(i), 100*i)
				}
				calls = append(calls, who(name, strconv.Itoa(i), from, body))
			}
			c := p.dial(t)
			c.exchange(calls, true)
			c.exchange(calls[:3], true) // and once more, on the goroutine
			assert.EqualValues(t, 1, p.backends[1].conns.Load(), "one TLS connection, kept alive")
			p.expectCounted(t, 11, 0)
		})
	}
}

// A request whose attempt on a cleartext backend fails on a loop goes on
// to the https backend, on a goroutine, with its body, as one request
// (one more attempt, not a second request); and one whose attempt on the
// https backend fails goes on to the cleartext backend from its goroutine.
func TestRetriesBetweenCleartextAndTLSBackends(t *testing.T) {
	t.Parallel()
	t.Run("from a dead cleartext backend", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t, proxyOpts{
			handlers: []handler{whoHandler("clear"), whoHandler("tls")}, tls: []bool{false, true},
			loopsWithTLS: true,
		})
		p.backends[0].close()
		c := p.dial(t)
		c.exchange([]call{
			who("tls", "1", "", ""),
			who("tls", "2", "", "a body that is sent once"),
		}, false)
		b := p.backends[1]
		assert.Equal(t, "a body that is sent once", string(append(b.next(t).body, b.next(t).body...)))
		p.expectCounted(t, 2, 2)
	})
	t.Run("from a cleartext backend that answers 503", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t, proxyOpts{
			handlers: []handler{whoHandler("clear"), whoHandler("tls")}, tls: []bool{false, true},
			loopsWithTLS: true,
		})
		c := p.dial(t)
		c.exchange([]call{
			who("clear", "1", "", ""),
			who("tls", "unavailable-clear", "", ""),
			who("clear", "2", "", ""),
		}, true)
		assert.Equal(t, 3, len(p.backends[0].reqs), "the 503 came from the cleartext backend")
		p.expectCounted(t, 3, 1)
	})
	t.Run("from a dead https backend", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t, proxyOpts{
			handlers: []handler{whoHandler("tls"), whoHandler("clear")}, tls: []bool{true, false},
			loopsWithTLS: true,
		})
		p.backends[0].close()
		c := p.dial(t)
		c.exchange([]call{
			who("clear", "1", "", ""),
			who("clear", "2", "", "a body"),
		}, false)
		assert.Equal(t, 1, p.pooled(1), "the cleartext attempts were made from the goroutine")
		p.expectCounted(t, 2, 2)
	})
	t.Run("from an https backend that answers 503", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t, proxyOpts{
			handlers: []handler{whoHandler("tls"), whoHandler("clear")}, tls: []bool{true, false},
			loopsWithTLS: true,
		})
		c := p.dial(t)
		c.exchange([]call{
			who("clear", "unavailable-tls", "", ""),
			who("tls", "1", "", "a body"),
		}, false)
		p.expectCounted(t, 2, 1)
	})
}

// Answers an https backend streams (chunked, or too large for a loop),
// and upgrades to it, go through a handed-over connection as they do
// without loops, among small answers from the cleartext backend.
func TestStreamedAnswersAndUpgradesFromATLSBackend(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{
		handlers: []handler{mixedHandler, upgradeOr(mixedHandler)}, tls: []bool{false, true},
		loopsWithTLS: true,
	})
	c := p.dial(t)
	for _, path := range []string{"/small/1", "/chunked", "/small/2", "/big", "/small/3"} {
		c.send("GET " + path + " HTTP/1.1\r\nHost: proxy.test\r\nX-Forwarded-For: " + seattle + "\r\n\r\n")
		r := c.read("GET")
		require.Equal(t, 200, r.status, path)
		require.Equal(t, want(path), string(r.body), path)
		assert.Equal(t, "us-west", r.value("X-Geoproxy-Region"), path)
		c.send(get(path))
		r = c.read("GET")
		require.Equal(t, want(path), string(r.body), path)
		assert.Equal(t, "us-east", r.value("X-Geoproxy-Region"), path)
	}

	u := p.dial(t)
	u.send("GET /ws HTTP/1.1\r\nHost: proxy.test\r\nX-Forwarded-For: " + seattle + "\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	r := u.read("GET")
	require.Equal(t, 101, r.status, r.head)
	assert.Equal(t, "us-west", r.value("X-Geoproxy-Region"))
	u.send("ping\n")
	line, err := u.br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo:ping\n", line)
	u.expectClosed(time.Second)
	p.expectCounted(t, 11, 0)
}

// An https backend that is a net/http server: a body it streams (flushed
// in parts) and the request bodies it echoes go through, while the
// cleartext backend's answers are served on the loop.
func TestNetHTTPTLSBackendBesideACleartextOne(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			for i := range 3 {
				_, _ = fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
				time.Sleep(5 * time.Millisecond)
			}
			return
		}
		body, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "nethttp %s %s %s %s", r.Method, r.URL.Path, r.Proto, body)
	}))
	t.Cleanup(srv.Close)
	p := newProxy(t, proxyOpts{handlers: []handler{whoHandler("clear")}, tlsServers: []*httptest.Server{srv}, loopsWithTLS: true})
	c := p.dial(t)
	c.exchange([]call{
		who("clear", "1", "", "x"),
		{method: "POST", path: "/echo", from: seattle, body: "to net/http", want: "nethttp POST /echo HTTP/1.1 to net/http"},
		{method: "GET", path: "/stream", from: seattle, want: "part 0;part 1;part 2;"},
		who("clear", "2", "", ""),
		{method: "GET", path: "/x", from: seattle, want: "nethttp GET /x HTTP/1.1 "},
	}, false)
	p.expectCounted(t, 5, 0)
}

// Options.LoopsWithTLS false is the engine as it was: no loops as soon as a
// backend speaks TLS, and every connection on a goroutine; true keeps them.
func TestLoopsWithTLSOption(t *testing.T) {
	t.Parallel()
	onLinux(t)
	for _, with := range []bool{false, true} {
		t.Run(fmt.Sprintf("with=%v", with), func(t *testing.T) {
			t.Parallel()
			p := newProxy(t, proxyOpts{
				handlers: []handler{whoHandler("clear"), whoHandler("tls")}, tls: []bool{false, true},
				loops: 2, loopsWithTLS: with,
			})
			c := p.dial(t)
			c.exchange([]call{who("clear", "1", "", ""), who("clear", "2", "", "b")}, false)
			if with {
				assert.Equal(t, 2, p.e.nloops)
				assert.Zero(t, p.goroutines())
			} else {
				assert.Zero(t, p.e.nloops)
				assert.Equal(t, 1, p.goroutines())
			}
			c.exchange([]call{who("tls", "3", seattle, "")}, false)
			assert.Equal(t, 1, p.goroutines())
			p.expectCounted(t, 3, 0)
		})
	}
	// Without a backend on TLS the option changes nothing.
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, loops: 2})
	assert.Equal(t, 2, p.e.nloops)
}

// Many clients at once on a region whose two backends, one cleartext and
// one https, share its requests: random mixes of small, streamed, large
// and closing answers, request bodies, pipelined or not. Every answer is
// the right one, the core counts each request once, and a graceful
// shutdown at the end leaves nothing behind.
func TestMixedLoadOnARegionOfCleartextAndTLSBackends(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{
		handlers: []handler{mixedHandler, mixedHandler}, tls: []bool{false, true}, oneRegion: true,
		loopsWithTLS: true,
	})
	const clients, each = 12, 30
	mixedLoad(t, p.addr, clients, each, []string{"/small", "/small", "/small", "/echo", "/echo", "/chunked", "/big", "/close"}, 11, 3)
	for i, be := range p.backends {
		assert.NotZero(t, len(be.reqs), "backend %d served none", i)
	}
	p.expectCounted(t, clients*each, 0)
	p.shutdown(t, 5*time.Second)
	assert.Zero(t, p.goroutines())
	assert.Zero(t, p.e.panics.Load())
}
