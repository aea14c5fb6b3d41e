package h1

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeepAliveReusesOneBackendConnection(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)

	c.send(get("/one"))
	r1 := c.read("GET")
	require.Equal(t, 200, r1.status, r1.head)
	assert.Equal(t, "ok GET /one HTTP/1.1", string(r1.body))
	assert.Equal(t, "us-east", r1.value("X-Geoproxy-Region"))
	assert.False(t, r1.has("Connection"), "a keep-alive answer to HTTP/1.1 needs no Connection field: %q", r1.head)

	c.send(get("/two"))
	r2 := c.read("GET")
	require.Equal(t, 200, r2.status, r2.head)
	assert.Equal(t, "ok GET /two HTTP/1.1", string(r2.body))

	b := p.backends[0]
	assert.Equal(t, 1, b.next(t).conn)
	assert.Equal(t, 1, b.next(t).conn)
	assert.EqualValues(t, 1, b.conns.Load(), "the second request reuses the pooled backend connection")
}

func TestPipelinedRequestsAreAnsweredInOrder(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)
	c.send(get("/first") + "POST /second HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 3\r\n\r\nabc" + get("/third"))
	for _, want := range []string{"ok GET /first HTTP/1.1", "ok POST /second HTTP/1.1", "ok GET /third HTTP/1.1"} {
		r := c.read("GET")
		require.Equal(t, 200, r.status, r.head)
		assert.Equal(t, want, string(r.body))
	}
	b := p.backends[0]
	b.next(t)
	assert.Equal(t, "abc", string(b.next(t).body))
}

// lengthOrChunked answers /chunked with a chunked body and anything else
// with a Content-Length body, both "hello world".
func lengthOrChunked(nc net.Conn, r *bReq) bool {
	var err error
	if strings.Contains(r.line, "/chunked") {
		_, err = io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	} else {
		_, err = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
	}
	return err == nil
}

func TestHTTP10Client(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{lengthOrChunked}})

	t.Run("chunked backend answer is sent unchunked, then the connection closes", func(t *testing.T) {
		c := p.dial(t)
		c.send("GET /chunked HTTP/1.0\r\nHost: proxy.test\r\n\r\n")
		r := c.read("GET") // no length: reads until the proxy closes
		require.Equal(t, 200, r.status, r.head)
		assert.True(t, strings.HasPrefix(r.statusLine, "HTTP/1."), r.statusLine)
		assert.False(t, r.has("Transfer-Encoding"), "HTTP/1.0 has no chunked coding: %q", r.head)
		assert.Equal(t, "hello world", string(r.body))
		c.expectClosed(time.Second)
	})
	t.Run("without keep-alive the connection closes after the answer", func(t *testing.T) {
		c := p.dial(t)
		c.send("GET /len HTTP/1.0\r\nHost: proxy.test\r\n\r\n")
		r := c.read("GET")
		require.Equal(t, 200, r.status, r.head)
		assert.Equal(t, "11", r.value("Content-Length"))
		assert.Equal(t, "hello world", string(r.body))
		assert.False(t, r.has("Transfer-Encoding"))
		c.expectClosed(time.Second)
	})
	t.Run("keep-alive keeps the connection", func(t *testing.T) {
		c := p.dial(t)
		for i := range 2 {
			c.send("GET /len HTTP/1.0\r\nHost: proxy.test\r\nConnection: keep-alive\r\n\r\n")
			r := c.read("GET")
			require.Equal(t, 200, r.status, "request %d: %s", i, r.head)
			assert.Equal(t, "keep-alive", strings.ToLower(r.value("Connection")), r.head)
			assert.Equal(t, "hello world", string(r.body))
			assert.False(t, r.has("Transfer-Encoding"))
		}
		c.expectOpen(100 * time.Millisecond)
	})
	t.Run("keep-alive with a chunked backend answer ends the connection", func(t *testing.T) {
		c := p.dial(t)
		c.send("GET /chunked HTTP/1.0\r\nHost: proxy.test\r\nConnection: keep-alive\r\n\r\n")
		r := c.read("GET")
		require.Equal(t, 200, r.status, r.head)
		assert.False(t, r.has("Transfer-Encoding"), r.head)
		assert.Equal(t, "close", strings.ToLower(r.value("Connection")), "the body ends with the connection: %q", r.head)
		assert.Equal(t, "hello world", string(r.body))
	})
}

func TestChunkedRequestBodyIsForwardedWithALength(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)
	c.send("POST /upload HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n7;ext=1\r\n, world\r\nB\r\n 0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
	r := c.read("POST")
	require.Equal(t, 200, r.status, r.head)

	got := p.backends[0].next(t)
	assert.Equal(t, "hello, world 012345678", string(got.body[:22]))
	assert.Equal(t, "hello, world 0123456789", string(got.body))
	cl, _ := got.get("Content-Length")
	assert.Equal(t, "23", cl)
	assert.False(t, got.has("Transfer-Encoding"), "%v", got.fieldList)
	assert.False(t, got.has("X-Trailer"))

	// The connection carries on.
	c.send(get("/after"))
	assert.Equal(t, 200, c.read("GET").status)
}

func TestRequestBodyOverTheLimitGets413(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})

	t.Run("content-length", func(t *testing.T) {
		c := p.dial(t)
		c.send("POST /big HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: " + strconv.Itoa(DefaultMaxRequestBody+1) + "\r\n\r\n")
		r := c.read("POST")
		assert.Equal(t, 413, r.status, r.head)
		assert.Equal(t, "close", r.value("Connection"))
		c.expectClosed(time.Second)
	})
	t.Run("content-length at the limit with expect is accepted", func(t *testing.T) {
		c := p.dial(t)
		c.send("POST /big HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: " + strconv.Itoa(DefaultMaxRequestBody) + "\r\nExpect: 100-continue\r\n\r\n")
		r := c.read("POST")
		assert.Equal(t, 100, r.status, "the limit itself is allowed: %s", r.head)
	})
	assert.Zero(t, p.backends[0].conns.Load(), "nothing reached the backend")
}

func TestExpect100Continue(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)
	c.send("PUT /data HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	interim := c.read("PUT")
	require.Equal(t, "HTTP/1.1 100 Continue", interim.statusLine)
	b := p.backends[0]
	select {
	case r := <-b.reqs:
		t.Fatalf("the backend got the request before its body: %q", r.line)
	default:
	}

	c.send("hello")
	r := c.read("PUT")
	require.Equal(t, 200, r.status, r.head)
	assert.Equal(t, "ok PUT /data HTTP/1.1", string(r.body))

	got := b.next(t)
	assert.Equal(t, "hello", string(got.body))
	assert.False(t, got.has("Expect"), "the proxy answered the expectation itself: %v", got.fieldList)
}

func TestHeadAnswerHasLengthButNoBody(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		var err error
		if strings.HasPrefix(r.line, "HEAD ") {
			_, err = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n")
		} else {
			_, err = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
		}
		return err == nil
	}}})
	c := p.dial(t)
	c.send("HEAD /file HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
	r := c.read("HEAD")
	require.Equal(t, 200, r.status, r.head)
	assert.Equal(t, "5", r.value("Content-Length"))
	assert.False(t, r.has("Transfer-Encoding"))

	c.send(get("/file"))
	r = c.read("GET")
	require.Equal(t, 200, r.status, "a HEAD answer must not leave bytes that spoil the next one: %q", r.head)
	assert.Equal(t, "hello", string(r.body))
	assert.EqualValues(t, 1, p.backends[0].conns.Load())
}

func TestNoContentAndNotModifiedHaveNoBody(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		var err error
		switch {
		case strings.Contains(r.line, "/204"):
			_, err = io.WriteString(nc, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
		case strings.Contains(r.line, "/304"):
			_, err = io.WriteString(nc, "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
		default:
			return okHandler(nc, r)
		}
		return err == nil
	}}})
	c := p.dial(t)
	for _, path := range []string{"/204", "/304", "/204", "/ok"} {
		c.send(get(path))
		r := c.read("GET")
		switch path {
		case "/204":
			require.Equal(t, 204, r.status, r.head)
			assert.Equal(t, "1", r.value("X-A"))
			assert.False(t, r.has("Content-Length"), "no Content-Length in a 204: %q", r.head)
			assert.False(t, r.has("Transfer-Encoding"), "no Transfer-Encoding in a 204: %q", r.head)
		case "/304":
			require.Equal(t, 304, r.status, r.head)
			assert.Equal(t, `"v1"`, r.value("ETag"))
			assert.False(t, r.has("Transfer-Encoding"), r.head)
		default:
			require.Equal(t, 200, r.status, "after bodiless answers: %q", r.head)
			assert.Equal(t, "ok GET /ok HTTP/1.1", string(r.body))
		}
	}
	c.expectOpen(50 * time.Millisecond)
	assert.EqualValues(t, 1, p.backends[0].conns.Load(), "bodiless answers keep the backend connection")
}

func TestChunkedAnswerWithTrailer(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{answer(
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n6;ext=x\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n")}})

	t.Run("HTTP/1.1 client", func(t *testing.T) {
		c := p.dial(t)
		c.send(get("/t"))
		r := c.read("GET")
		require.Equal(t, 200, r.status, r.head)
		assert.True(t, r.chunked, r.head)
		assert.Equal(t, "hello world", string(r.body))
		assert.Equal(t, "X-Sum: abc\r\n\r\n", r.trailer)
		c.send(get("/again"))
		r = c.read("GET")
		assert.Equal(t, "hello world", string(r.body))
	})
	t.Run("HTTP/1.0 client", func(t *testing.T) {
		c := p.dial(t)
		c.send("GET /t HTTP/1.0\r\nHost: proxy.test\r\n\r\n")
		r := c.read("GET")
		require.Equal(t, 200, r.status, r.head)
		assert.False(t, r.has("Transfer-Encoding"), r.head)
		assert.Equal(t, "hello world", string(r.body))
		c.expectClosed(time.Second)
	})
}

func TestCloseDelimitedAnswerIsChunkedForHTTP11(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		if _, err := io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, "); err != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
		_, _ = io.WriteString(nc, "second part")
		return false // the body ends when the connection does
	}}})
	c := p.dial(t)
	for i := range 2 {
		c.send(get("/stream"))
		r := c.read("GET")
		require.Equal(t, 200, r.status, "request %d: %s", i, r.head)
		assert.True(t, r.chunked, "the client gets a framed body: %q", r.head)
		assert.Equal(t, "first part, second part", string(r.body))
		assert.False(t, r.has("Connection"), "the client connection stays usable: %q", r.head)
	}
	assert.EqualValues(t, 2, p.backends[0].conns.Load())
}

func TestInterimAnswersAreSkipped(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{answer(
		"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 100 Continue\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")}})
	c := p.dial(t)
	for range 2 {
		c.send(get("/hints"))
		r := c.read("GET")
		for r.status >= 100 && r.status < 200 {
			r = c.read("GET")
		}
		require.Equal(t, 200, r.status, r.head)
		assert.Equal(t, "hi", string(r.body))
	}
}

func TestGarbageFromTheBackendIs502(t *testing.T) {
	t.Parallel()
	for name, h := range map[string]handler{
		"not a status line": answer("SSH-2.0-OpenSSH_9.6\r\n\r\n"),
		"bad status code":   answer("HTTP/1.1 2xx OK\r\nContent-Length: 0\r\n\r\n"),
		"bad field":         answer("HTTP/1.1 200 OK\r\nBad Field: 1\r\nContent-Length: 0\r\n\r\n"),
		"cut short": func(nc net.Conn, _ *bReq) bool {
			_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Le")
			return false
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := newProxy(t, proxyOpts{handlers: []handler{h}})
			c := p.dial(t)
			c.send(get("/"))
			r := c.read("GET")
			assert.Equal(t, 502, r.status, r.head)
			assert.Equal(t, "geoproxy: no backend could be reached\n", string(r.body))
		})
	}
}

func TestBackendClosingAnIdleConnectionIsTransparent(t *testing.T) {
	t.Parallel()
	var answered atomic.Int32
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		okHandler(nc, r)
		answered.Add(1)
		return false // close without saying so: the proxy pools the connection
	}}})
	b := p.backends[0]
	c1 := p.dial(t)
	c1.send(get("/one"))
	require.Equal(t, 200, c1.read("GET").status)
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return answered.Load() == 1 && len(b.open) == 0
	}, time.Second, 5*time.Millisecond, "the backend closed its side")
	time.Sleep(20 * time.Millisecond) // let the FIN reach the proxy's socket

	for i, c := range []*client{p.dial(t), c1} {
		c.send(get("/again"))
		r := c.read("GET")
		require.Equal(t, 200, r.status, "request %d after the idle close: %s%s", i, r.head, r.body)
		assert.Equal(t, "ok GET /again HTTP/1.1", string(r.body))
		require.Eventually(t, func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.open) == 0
		}, time.Second, 5*time.Millisecond)
		time.Sleep(20 * time.Millisecond)
	}
	assert.EqualValues(t, 3, b.conns.Load())
}

func TestHopByHopFieldsStayOnTheirHop(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{answer(
		"HTTP/1.1 200 OK\r\n" +
			"Connection: X-Backend-Hop, keep-alive\r\n" +
			"X-Backend-Hop: secret\r\n" +
			"Keep-Alive: timeout=5, max=100\r\n" +
			"Proxy-Authenticate: Basic realm=x\r\n" +
			"X-Geoproxy-Region: spoofed\r\n" +
			"Transfer-Encoding: CHUNKED\r\n" +
			"X-App: yes\r\n" +
			"\r\n" +
			"5\r\nhello\r\n0\r\n\r\n")}})
	c := p.dial(t)
	c.send("GET /hop HTTP/1.1\r\n" +
		"Host: proxy.test\r\n" +
		"Connection: X-Foo, keep-alive\r\n" +
		"X-Foo: secret\r\n" +
		"X-Keep: kept\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"TE: trailers\r\n" +
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"Upgrade: websocket\r\n" +
		"X-Forwarded-For: 203.0.113.10\r\n" +
		"X-City: Spoofville\r\n" +
		"x-country: ZZ\r\n" +
		"X-Geoproxy-Nearest-Region: spoofed\r\n" +
		"\r\n")
	r := c.read("GET")
	require.Equal(t, 200, r.status, r.head)
	assert.Equal(t, "hello", string(r.body))

	// What the client gets.
	assert.Equal(t, "yes", r.value("X-App"))
	for _, name := range []string{"X-Backend-Hop", "Keep-Alive", "Proxy-Authenticate", "Connection"} {
		assert.False(t, r.has(name), "%s reached the client: %q", name, r.head)
	}
	var regions, codings []string
	for _, f := range r.fieldList {
		switch strings.ToLower(f[0]) {
		case "x-geoproxy-region":
			regions = append(regions, f[1])
		case "transfer-encoding":
			codings = append(codings, f[1])
		}
	}
	assert.Equal(t, []string{"us-east"}, regions, "the proxy's region field replaces the backend's")
	assert.Equal(t, []string{"chunked"}, codings, "only the proxy's own framing: %q", r.head)

	// What the backend gets.
	got := p.backends[0].next(t)
	for _, name := range []string{"Connection", "X-Foo", "Keep-Alive", "TE", "Proxy-Authorization", "Proxy-Connection", "Upgrade"} {
		assert.False(t, got.has(name), "%s reached the backend: %v", name, got.fieldList)
	}
	v, _ := got.get("X-Keep")
	assert.Equal(t, "kept", v)
	var cities, countries, nearest []string
	for _, f := range got.fieldList {
		switch strings.ToLower(f[0]) {
		case "x-city":
			cities = append(cities, f[1])
		case "x-country":
			countries = append(countries, f[1])
		case "x-geoproxy-nearest-region":
			nearest = append(nearest, f[1])
		}
	}
	assert.Equal(t, []string{"London"}, cities, "the client's X-City is replaced")
	assert.Equal(t, []string{"GB"}, countries, "the client's X-Country is replaced")
	assert.Equal(t, []string{"us-east"}, nearest, "the client's X-Geoproxy-Nearest-Region is replaced")
	v, _ = got.get("X-Forwarded-For")
	assert.Equal(t, "203.0.113.10, 127.0.0.1", v)
	v, _ = got.get("Host")
	assert.Equal(t, p.backends[0].url.Host, v)
	v, _ = got.get("X-Forwarded-Host")
	assert.Equal(t, "proxy.test", v)
	v, _ = got.get("X-Forwarded-Proto")
	assert.Equal(t, "http", v)
}

func TestSilentClientIsDisconnectedAfterClientTimeout(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, clientTimeout: 300 * time.Millisecond})

	t.Run("sends nothing", func(t *testing.T) {
		t.Parallel()
		c := p.dial(t)
		start := time.Now()
		c.expectClosed(time.Second)
		assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "closed too early")
	})
	t.Run("idle after a request", func(t *testing.T) {
		t.Parallel()
		c := p.dial(t)
		c.send(get("/"))
		require.Equal(t, 200, c.read("GET").status)
		start := time.Now()
		c.expectClosed(time.Second)
		assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "closed too early")
	})
	t.Run("stops in the middle of a head", func(t *testing.T) {
		t.Parallel()
		c := p.dial(t)
		c.send("GET / HTTP/1.1\r\nHost: pro")
		require.NoError(t, c.nc.SetReadDeadline(time.Now().Add(time.Second)))
		b, err := io.ReadAll(c.br)
		if err != nil {
			require.True(t, isClosed(err), "want the connection closed within 1s, got %v", err)
		}
		if len(b) > 0 {
			assert.True(t, bytes.HasPrefix(b, []byte("HTTP/1.1 4")), "only an error answer: %q", b)
		}
	})
}

// hang never answers: it waits for the backend to stop (3 s at most).
func hang(_ net.Conn, r *bReq) bool {
	select {
	case <-r.quit:
	case <-time.After(3 * time.Second):
	}
	return false
}

func TestResponseHeaderTimeoutGives504(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{hang}, responseHeaderTimeout: 200 * time.Millisecond})
	c := p.dial(t)
	start := time.Now()
	c.send(get("/slow"))
	r := c.read("GET")
	elapsed := time.Since(start)
	assert.Equal(t, 504, r.status, r.head)
	assert.Equal(t, "geoproxy: the backend did not answer in time\n", string(r.body))
	assert.GreaterOrEqual(t, elapsed, 140*time.Millisecond)
	assert.Less(t, elapsed, time.Second)
}

// A backend that does not answer in time is a failed attempt like any
// other: an idempotent request goes on to the next region, which gets the
// full response header timeout too.
func TestResponseHeaderTimeoutFailsOverToTheNextRegion(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{hang, okHandler}, responseHeaderTimeout: 200 * time.Millisecond})
	c := p.dial(t)
	c.send(get("/slow-then-fine"))
	r := c.read("GET")
	require.Equal(t, 200, r.status, "%s%s(us-west backend: %d connection(s), %d request(s))",
		r.head, r.body, p.backends[1].conns.Load(), len(p.backends[1].reqs))
	assert.Equal(t, "us-west", r.value("X-Geoproxy-Region"))
	assert.Equal(t, 1, len(p.backends[1].reqs), "the second region got the request")
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func TestLargeBodiesArriveIntact(t *testing.T) {
	t.Parallel()
	const size = 5 << 20
	data := randomBytes(size, 1)
	want := sha256.Sum256(data)
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		switch {
		case strings.Contains(r.line, "/length"):
			if _, err := fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size); err != nil {
				return false
			}
			_, err := nc.Write(data)
			return err == nil
		case strings.Contains(r.line, "/chunked"):
			if _, err := io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
				return false
			}
			rest := data
			for k := 1; len(rest) > 0; k++ {
				n := min(len(rest), 1+(k*7919)%(200<<10)) // uneven chunks, up to 200 KiB
				if _, err := fmt.Fprintf(nc, "%x\r\n%s\r\n", n, rest[:n]); err != nil {
					return false
				}
				rest = rest[n:]
			}
			_, err := io.WriteString(nc, "0\r\n\r\n")
			return err == nil
		default: // echo the body's length and hash
			sum := sha256.Sum256(r.body)
			body := fmt.Sprintf("%d %x", len(r.body), sum)
			_, err := fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			return err == nil
		}
	}}})
	c := p.dial(t)

	c.send(get("/length"))
	r := c.read("GET")
	require.Equal(t, 200, r.status, r.head)
	assert.Len(t, r.body, size)
	assert.Equal(t, want, sha256.Sum256(r.body), "5 MiB with Content-Length")

	c.send(get("/chunked"))
	r = c.read("GET")
	require.Equal(t, 200, r.status, r.head)
	assert.True(t, r.chunked)
	assert.Len(t, r.body, size)
	assert.Equal(t, want, sha256.Sum256(r.body), "5 MiB chunked")

	up := data[:3<<20]
	c.send(fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: %d\r\n\r\n", len(up)))
	_, err := c.nc.Write(up)
	require.NoError(t, err)
	r = c.read("POST")
	require.Equal(t, 200, r.status, r.head)
	assert.Equal(t, fmt.Sprintf("%d %x", len(up), sha256.Sum256(up)), string(r.body), "3 MiB request body")
}

func TestRequestHeadOver16KiBGets431(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)
	c.send("GET / HTTP/1.1\r\nHost: proxy.test\r\nX-Big: " + strings.Repeat("a", 17<<10) + "\r\n\r\n")
	r, err := readResponse(c.br, "GET")
	require.NoError(t, err, "the client must get the answer, not a reset connection")
	assert.Equal(t, 431, r.status, r.head)
	assert.Equal(t, "close", r.value("Connection"))
	assert.Zero(t, p.backends[0].conns.Load())
}

func TestHeadJustUnderTheLimitIsServed(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)
	head := "GET / HTTP/1.1\r\nHost: proxy.test\r\nX-Big: "
	head += strings.Repeat("a", DefaultMaxHeaderBytes-len(head)-4) + "\r\n\r\n"
	require.Len(t, head, DefaultMaxHeaderBytes)
	c.send(head)
	r := c.read("GET")
	assert.Equal(t, 200, r.status, r.head)
	got := p.backends[0].next(t)
	v, _ := got.get("X-Big")
	assert.Len(t, v, DefaultMaxHeaderBytes-len("GET / HTTP/1.1\r\nHost: proxy.test\r\nX-Big: ")-4)
}

func TestMalformedRequestsAreRefused(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	cases := []struct {
		name, req string
		status    int
	}{
		{"content-length and chunked", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"two content-lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400},
		{"gzip coding", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
		{"CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 405},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400},
		{"body cut short", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := p.dial(t)
			c.send(tc.req)
			if tc.name == "body cut short" {
				require.NoError(t, c.nc.(*net.TCPConn).CloseWrite())
			}
			r := c.read("GET")
			assert.Equal(t, tc.status, r.status, r.head)
			assert.Equal(t, "close", r.value("Connection"))
			c.expectClosed(time.Second)
		})
	}
	assert.Zero(t, p.backends[0].conns.Load(), "no refused request reached the backend")
}

// The proxy removes Transfer-Encoding and frames the body itself; a coding
// other than chunked must not be lost on the way, or the receiver reads
// coded bytes as the content.
func TestTransferCodingsOtherThanChunkedAreNotLost(t *testing.T) {
	t.Parallel()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("the real content"))
	require.NoError(t, zw.Close())
	coded := gz.Bytes()

	t.Run("response", func(t *testing.T) {
		p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, _ *bReq) bool {
			_, _ = fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(coded), coded)
			return true
		}}})
		c := p.dial(t)
		c.send(get("/gz"))
		te := readCodings(t, c)
		assert.Equal(t, []string{"gzip,chunked"}, te, "the client must learn that the content is gzip-coded")
	})
	t.Run("close-delimited response", func(t *testing.T) {
		p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, _ *bReq) bool {
			_, _ = fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n%s", coded)
			return false
		}}})
		c := p.dial(t)
		c.send(get("/gz"))
		te := readCodings(t, c)
		assert.Equal(t, []string{"gzip,chunked"}, te, "the client must learn that the content is gzip-coded")
	})
	t.Run("request", func(t *testing.T) {
		p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
		c := p.dial(t)
		c.send(fmt.Sprintf("POST /gz HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(coded), coded))
		r := c.read("POST")
		if r.status == 200 {
			got := p.backends[0].next(t)
			te, _ := got.get("Transfer-Encoding")
			assert.Contains(t, strings.ToLower(te), "gzip", "the backend got %d gzip bytes as plain content: %v", len(got.body), got.fieldList)
			return
		}
		assert.Equal(t, 501, r.status, r.head)
	})
}

// readCodings reads a response head and returns its Transfer-Encoding
// values, lower-cased and without spaces.
func readCodings(t *testing.T, c *client) []string {
	t.Helper()
	line, err := c.br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 200 OK\r\n", line)
	var te []string
	for {
		l, err := c.br.ReadString('\n')
		require.NoError(t, err)
		if l == "\r\n" {
			return te
		}
		if name, v, _ := strings.Cut(strings.TrimSpace(l), ":"); strings.EqualFold(name, "Transfer-Encoding") {
			te = append(te, strings.ToLower(strings.ReplaceAll(v, " ", "")))
		}
	}
}

func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	t.Parallel()
	inFlight := make(chan struct{}, 1)
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		if strings.Contains(r.line, "/slow") {
			inFlight <- struct{}{}
			time.Sleep(300 * time.Millisecond)
		}
		return okHandler(nc, r)
	}}})

	idle := p.dial(t)
	idle.send(get("/warm"))
	require.Equal(t, 200, idle.read("GET").status)

	busy := p.dial(t)
	busy.send(get("/slow"))
	select {
	case <-inFlight:
	case <-time.After(ioTimeout):
		t.Fatal("the slow request did not reach the backend")
	}

	stopped := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		p.shutdown(t, 5*time.Second)
		stopped <- time.Since(start)
	}()

	idle.expectClosed(time.Second)

	r := busy.read("GET")
	require.Equal(t, 200, r.status, r.head)
	assert.Equal(t, "ok GET /slow HTTP/1.1", string(r.body))
	busy.expectClosed(time.Second)

	select {
	case d := <-stopped:
		assert.Less(t, d, 2*time.Second)
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return")
	}

	_, err := net.DialTimeout("tcp", p.addr, time.Second)
	assert.Error(t, err, "new connections are refused after Shutdown")
}

// Shutdown's context bounds the wait: a request stuck on a backend that
// never answers (no response header timeout configured) must not keep
// Shutdown from returning once the context ends.
func TestShutdownDeadlineEndsARequestStuckOnABackend(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{hang}, responseHeaderTimeout: -1})
	b := p.backends[0]
	c := p.dial(t)
	c.send(get("/never"))
	select {
	case <-b.reqs:
	case <-time.After(ioTimeout):
		t.Fatal("the request did not reach the backend")
	}
	stopped := make(chan struct{})
	go func() {
		p.shutdown(t, 200*time.Millisecond)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(1500 * time.Millisecond):
		t.Error("Shutdown did not return 1.3 s after its context ended")
	}
	c.expectClosed(time.Second)
	// The backend is closed first at cleanup, which unblocks the engine
	// if it is still waiting.
}

func TestConnectionCloseEndsTheConnection(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)
	c.send("GET /bye HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n")
	r := c.read("GET")
	require.Equal(t, 200, r.status, r.head)
	assert.Equal(t, "close", r.value("Connection"))
	assert.Equal(t, "ok GET /bye HTTP/1.1", string(r.body))
	c.expectClosed(time.Second)
	assert.False(t, p.backends[0].next(t).has("Connection"), "the client's Connection field is hop-by-hop")
}

// readRawHead reads up to and including the empty line ending a head.
func readRawHead(t *testing.T, c *client) string {
	t.Helper()
	var head strings.Builder
	for !strings.HasSuffix(head.String(), "\r\n\r\n") {
		b, err := c.br.ReadByte()
		require.NoError(t, err, "after %q", head.String())
		head.WriteByte(b)
	}
	return head.String()
}

func TestBackendStatusLineWithControlCharactersIs502(t *testing.T) {
	t.Parallel()
	for name, status := range map[string]string{
		"bare LF in the reason": "HTTP/1.1 200 OK\nX-Injected: 1",
		"NUL in the reason":     "HTTP/1.1 200 O\x00K",
		"CR in the reason":      "HTTP/1.1 200 OK\rX-Injected: 1",
	} {
		t.Run(name, func(t *testing.T) {
			p := newProxy(t, proxyOpts{handlers: []handler{answer(status + "\r\nContent-Length: 2\r\n\r\nhi")}})
			c := p.dial(t)
			c.send(get("/"))
			head := readRawHead(t, c)
			assert.True(t, strings.HasPrefix(head, "HTTP/1.1 502 "), "a status line that is not one must not reach the client: %q", head)
			assert.NotContains(t, head, "X-Injected")
		})
	}
}

func TestTargetIsSentInOriginFormUnderTheBasePath(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, basePath: "/app"})
	b := p.backends[0]
	for _, tc := range []struct{ target, want string }{
		{"/a/b?c=d", "GET /app/a/b?c=d HTTP/1.1"},
		{"http://proxy.test/a/b?c=d", "GET /app/a/b?c=d HTTP/1.1"},
	} {
		c := p.dial(t)
		c.send("GET " + tc.target + " HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
		r := c.read("GET")
		require.Equal(t, 200, r.status, r.head)
		got := b.next(t)
		assert.Equal(t, tc.want, got.line, "client target %q", tc.target)
		xfh, _ := got.get("X-Forwarded-Host")
		assert.Equal(t, "proxy.test", xfh)
	}
}

// RFC 9112 3.2: a server must answer 400 to an HTTP/1.1 request without a
// Host field or with more than one (the net/http engine does).
func TestRequestsWithoutExactlyOneHostAreRefused(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"HTTP/1.0 without Host is fine", "GET / HTTP/1.0\r\n\r\n", 200},
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400},
		{"two Host fields", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := p.dial(t)
			c.send(tc.req)
			r := c.read("GET")
			assert.Equal(t, tc.status, r.status, "%s%s", r.head, r.body)
		})
	}
}

func TestUpgradeIsTunnelled(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		if up, _ := r.get("Upgrade"); up != "echo" {
			_, _ = io.WriteString(nc, "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
			return true
		}
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Geoproxy-Region: spoofed\r\n\r\n")
		// The client speaks only once it has the 101: nothing is buffered.
		var line []byte
		one := make([]byte, 1)
		for len(line) == 0 || line[len(line)-1] != '\n' {
			if _, err := nc.Read(one); err != nil {
				return false
			}
			line = append(line, one[0])
		}
		_, _ = io.WriteString(nc, "echo:"+string(line))
		return false
	}}})
	c := p.dial(t)
	c.send("GET /ws HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	r := c.read("GET")
	require.Equal(t, 101, r.status, r.head)
	assert.Equal(t, "echo", r.value("Upgrade"))
	assert.Equal(t, "us-east", r.value("X-Geoproxy-Region"))
	c.send("ping\n")
	line, err := c.br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo:ping\n", line)
	c.expectClosed(time.Second)

	got := p.backends[0].next(t)
	conn, _ := got.get("Connection")
	assert.Equal(t, "upgrade", strings.ToLower(conn))
}

// A client that stops reading a streamed body is cut off after the client
// timeout, which frees the backend connection.
func TestClientThatStopsReadingIsCutOff(t *testing.T) {
	t.Parallel()
	writeFailed := make(chan time.Time, 1)
	p := newProxy(t, proxyOpts{clientTimeout: 300 * time.Millisecond, handlers: []handler{func(nc net.Conn, r *bReq) bool {
		_ = nc.SetWriteDeadline(time.Now().Add(4 * time.Second))
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 64<<10, bytes.Repeat([]byte("x"), 64<<10))
		if _, err := io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			return false
		}
		for {
			if _, err := io.WriteString(nc, chunk); err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					writeFailed <- time.Now()
				}
				return false
			}
		}
	}}})
	c := p.dial(t)
	start := time.Now()
	c.send(get("/endless"))
	select {
	case at := <-writeFailed:
		assert.Less(t, at.Sub(start), 3*time.Second)
	case <-time.After(4 * time.Second):
		t.Fatal("the proxy kept the backend streaming to a client that reads nothing")
	}
}
