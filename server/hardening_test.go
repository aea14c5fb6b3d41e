package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// The same raw bytes, sent to every engine and path: the native engine with
// its event loops, the native engine with a goroutine per connection (as
// with TLS backends), and the net/http engine.

// baseRecorder is a backend under a base path that records what reaches it.
type baseRecorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []*http.Request // RequestURI, Header and the body read into Body's place
}

func (rec *baseRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/base/health" {
		return
	}
	body, _ := io.ReadAll(r.Body)
	r2 := r.Clone(context.Background())
	r2.Body = io.NopCloser(strings.NewReader(string(body)))
	rec.mu.Lock()
	rec.seen = append(rec.seen, r2)
	rec.mu.Unlock()
	_, _ = fmt.Fprintf(w, "%s %s %d", r.Method, r.RequestURI, len(body))
}

// requests returns what reached the backend, and forgets it.
func (rec *baseRecorder) requests() []*http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	seen := rec.seen
	rec.seen = nil
	return seen
}

type hardEnv struct {
	addr string
	rec  *baseRecorder
	srv  *server.Server
}

// hardEngines are the engines and paths the raw-byte tests run on.
var hardEngines = []struct{ name, yaml string }{
	{"native", "engine: native\n"},
	{"native-goroutines", "engine: native\nproxy: {event_loops: -1}\n"},
	{"nethttp", "engine: nethttp\n"},
}

// forEachPath runs a test against every engine and path, each with its own
// proxy in front of one recording backend at /base.
func forEachPath(t *testing.T, clientTimeout time.Duration, test func(t *testing.T, engine string, e *hardEnv)) {
	forEachPathWith(t, clientTimeout, "", test)
}

// forEachPathWith is forEachPath with more configuration (top-level keys).
func forEachPathWith(t *testing.T, clientTimeout time.Duration, extra string, test func(t *testing.T, engine string, e *hardEnv)) {
	for _, eng := range hardEngines {
		t.Run(eng.name, func(t *testing.T) {
			test(t, eng.name, startPath(t, eng.yaml+extra, server.Options{ClientTimeout: clientTimeout}))
		})
	}
}

// startPath starts a proxy configured with yaml (top-level keys: the
// engine and path, and more) in front of one recording backend at /base.
func startPath(t *testing.T, yaml string, o server.Options) *hardEnv {
	t.Helper()
	rec := &baseRecorder{}
	rec.srv = httptest.NewServer(rec)
	t.Cleanup(rec.srv.Close)
	srv := runYAML(t, fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
geoip: {database: ../testdata/geoip2-city.mmdb}
health_check: {path: /health, interval: 1s, timeout: 500ms}
%sregions:
  - name: europe-west
    location: {lat: 50.45, lon: 3.82}
    backends: [{url: "%s/base"}]
`, yaml, rec.srv.URL), o)
	e := &env{t: t, srv: srv}
	e.waitRegion("europe-west", true)
	return &hardEnv{addr: srv.ProxyAddr().String(), rec: rec, srv: srv}
}

// rawConn is a client connection that sends raw bytes.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (e *hardEnv) dial(t *testing.T) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	_, err := io.WriteString(c.nc, s)
	require.NoError(c.t, err)
}

// answer reads one answer: its status and body.
func (c *rawConn) answer(method string) (int, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	require.NoError(c.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp.StatusCode, string(body)
}

// closed reports whether the proxy ends the connection (within 2 s).
func (c *rawConn) closed() bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.br.ReadByte()
	return err == io.EOF || err != nil && !isTimeoutErr(err)
}

func isTimeoutErr(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// A request cannot leave the backend's base path, however the dot segment
// is spelled: refused with 400, and nothing reaches the backend.
func TestRequestsCannotLeaveTheBasePath(t *testing.T) {
	forEachPath(t, 0, func(t *testing.T, _ string, e *hardEnv) {
		for _, target := range []string{
			"/../admin", "/%2e%2e/admin", "/a/../../admin", "/..%2fadmin", "/.%2E/admin", "/a/./b",
			"http://h.example/../admin",
		} {
			c := e.dial(t)
			c.send("GET " + target + " HTTP/1.1\r\nHost: h.example\r\n\r\n")
			code, body := c.answer("GET")
			assert.Equal(t, http.StatusBadRequest, code, "%s: %s", target, body)
			assert.True(t, c.closed(), "%s: the connection ends after a refusal", target)
		}
		assert.Empty(t, e.rec.requests(), "no refused request reaches the backend")

		c := e.dial(t)
		c.send("GET /rides/a.b/..c?next=/../x HTTP/1.1\r\nHost: h.example\r\n\r\n")
		code, body := c.answer("GET")
		require.Equal(t, http.StatusOK, code, body)
		assert.Equal(t, "GET /base/rides/a.b/..c?next=/../x 0", body)
	})
}

// A field name with an underscore is dropped: a CGI-style app would read
// X_City as X-City and X_Forwarded_For as X-Forwarded-For.
func TestFieldsWithUnderscoresAreDropped(t *testing.T) {
	forEachPath(t, 0, func(t *testing.T, _ string, e *hardEnv) {
		c := e.dial(t)
		c.send("GET /rides HTTP/1.1\r\nHost: h.example\r\nX_City: Paris\r\nX_Forwarded_For: 1.2.3.4\r\nx_country: FR\r\nX-Kept: yes\r\n\r\n")
		code, body := c.answer("GET")
		require.Equal(t, http.StatusOK, code, body)
		seen := e.rec.requests()
		require.Len(t, seen, 1)
		for name := range seen[0].Header {
			assert.NotContains(t, name, "_", "the backend got %s", name)
		}
		assert.NotEqual(t, "Paris", seen[0].Header.Get("X-City"))
		assert.NotContains(t, seen[0].Header.Get("X-Forwarded-For"), "1.2.3.4")
		assert.Equal(t, "yes", seen[0].Header.Get("X-Kept"))
	})
}

// A request with both Content-Length and Transfer-Encoding may be an
// attack (RFC 9112 6.1): the connection ends after its answer. The native
// engine refuses it; net/http serves it by its chunked framing.
func TestBothLengthAndChunkedEndTheConnection(t *testing.T) {
	forEachPath(t, 0, func(t *testing.T, engine string, e *hardEnv) {
		c := e.dial(t)
		c.send("POST /x HTTP/1.1\r\nHost: h.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h.example\r\n\r\n")
		code, body := c.answer("POST")
		if engine == config.EngineNetHTTP {
			assert.Equal(t, http.StatusOK, code, body)
			assert.Equal(t, "POST /base/x 5", body)
		} else {
			assert.Equal(t, http.StatusBadRequest, code, body)
		}
		assert.True(t, c.closed(), "the connection ends after the answer")
		for _, r := range e.rec.requests() {
			assert.NotEqual(t, "/base/smuggled", r.RequestURI, "the pipelined request is never served")
		}
	})
}

// A client that sends its body too slowly gets 408 and is disconnected
// after the client timeout, on every engine; it does not hold a
// connection for longer.
func TestSlowBodyGets408(t *testing.T) {
	forEachPath(t, 400*time.Millisecond, func(t *testing.T, _ string, e *hardEnv) {
		c := e.dial(t)
		start := time.Now()
		c.send("POST /upload HTTP/1.1\r\nHost: h.example\r\nContent-Length: 100\r\n\r\n0123456789")
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 30 { // 10 bytes every 100 ms: never the whole body in time
				time.Sleep(100 * time.Millisecond)
				if _, err := io.WriteString(c.nc, "0"); err != nil {
					return
				}
			}
		}()
		code, body := c.answer("POST")
		assert.Equal(t, http.StatusRequestTimeout, code, body)
		assert.Less(t, time.Since(start), 2*time.Second)
		assert.True(t, c.closed())
		_ = c.nc.Close()
		<-done
	})
}

// Request targets and Host are checked as RFC 9112 3.2 and nginx do.
func TestRequestTargetsAndHostAreChecked(t *testing.T) {
	forEachPath(t, 0, func(t *testing.T, _ string, e *hardEnv) {
		for name, req := range map[string]string{
			"a path in Host":             "GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n",
			"user information in Host":   "GET / HTTP/1.1\r\nHost: u@c\r\n\r\n",
			"user information in target": "GET http://u:p@evil/x HTTP/1.1\r\nHost: evil\r\n\r\n",
			"absolute form without Host": "GET http://h.example/x HTTP/1.1\r\n\r\n",
			"asterisk form with GET":     "GET * HTTP/1.1\r\nHost: h.example\r\n\r\n",
			"no Host at all":             "GET /x HTTP/1.1\r\n\r\n",
		} {
			c := e.dial(t)
			c.send(req)
			code, body := c.answer("GET")
			assert.Equal(t, http.StatusBadRequest, code, "%s: %s", name, body)
		}
		assert.Empty(t, e.rec.requests())

		// One empty line before a request line is ignored (RFC 9112 2.2).
		c := e.dial(t)
		c.send("\r\nGET /x HTTP/1.1\r\nHost: h.example\r\n\r\n")
		code, body := c.answer("GET")
		assert.Equal(t, http.StatusOK, code, body)
		// An absolute-form target with a Host field is served in origin form.
		c.send("GET http://h.example/y?q=1 HTTP/1.1\r\nHost: h.example\r\n\r\n")
		code, body = c.answer("GET")
		assert.Equal(t, http.StatusOK, code, body)
		assert.Equal(t, "GET /base/y?q=1 0", body)
	})
}

// Chunk extensions are ignored, but a body cannot be mostly extensions: a
// client streaming extension bytes is refused, as Go's server does.
func TestChunkExtensionsAreBounded(t *testing.T) {
	forEachPath(t, 0, func(t *testing.T, _ string, e *hardEnv) {
		c := e.dial(t)
		c.send("POST /x HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n")
		ext := ";" + strings.Repeat("e", 1000)
		go func(nc net.Conn) {
			for range 100 { // 100 KB of extensions for 100 bytes of data
				if _, err := io.WriteString(nc, "1"+ext+"\r\nx\r\n"); err != nil {
					return
				}
			}
			_, _ = io.WriteString(nc, "0\r\n\r\n")
		}(c.nc)
		code, body := c.answer("POST")
		assert.Equal(t, http.StatusBadRequest, code, body)
		assert.True(t, c.closed())

		// Short extensions pass.
		c = e.dial(t)
		c.send("POST /x HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"3;name=value\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n")
		code, body = c.answer("POST")
		assert.Equal(t, http.StatusOK, code, body)
		assert.Equal(t, "POST /base/x 5", body)
	})
}

// limits.max_request_body holds on every engine, for a body announced with
// its length and for a chunked one.
func TestBodiesOverTheLimitGet413(t *testing.T) {
	forEachPathWith(t, 0, "limits: {max_request_body: 64KiB}\n", func(t *testing.T, _ string, e *hardEnv) {
		c := e.dial(t)
		c.send("POST /x HTTP/1.1\r\nHost: h.example\r\nContent-Length: 70000\r\n\r\n")
		code, body := c.answer("POST")
		assert.Equal(t, http.StatusRequestEntityTooLarge, code, body)

		c = e.dial(t)
		c.send("POST /x HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n")
		go func(nc net.Conn) {
			chunk := fmt.Sprintf("%x\r\n%s\r\n", 10000, strings.Repeat("z", 10000))
			for range 7 {
				if _, err := io.WriteString(nc, chunk); err != nil {
					return
				}
			}
			_, _ = io.WriteString(nc, "0\r\n\r\n")
		}(c.nc)
		code, body = c.answer("POST")
		assert.Equal(t, http.StatusRequestEntityTooLarge, code, body)

		c = e.dial(t)
		c.send("POST /x HTTP/1.1\r\nHost: h.example\r\nContent-Length: 60000\r\n\r\n" + strings.Repeat("y", 60000))
		code, body = c.answer("POST")
		assert.Equal(t, http.StatusOK, code, body)
		assert.Equal(t, "POST /base/x 60000", body)
	})
}

// A head over 16 KiB (with net/http's 4 KiB of slack) gets 431 on every
// engine: net/http alone would read up to 1 MiB of it.
func TestLongHeadsGet431(t *testing.T) {
	forEachPath(t, 0, func(t *testing.T, _ string, e *hardEnv) {
		c := e.dial(t)
		c.send("GET /x HTTP/1.1\r\nHost: h.example\r\nX-Pad: " + strings.Repeat("p", 24<<10) + "\r\n\r\n")
		code, body := c.answer("GET")
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, code, body)
		assert.Empty(t, e.rec.requests())
	})
}
