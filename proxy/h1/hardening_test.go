package h1

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A backend that answers the first request with more bytes than its
// framing says: those bytes must never become another client's answer.
func TestBytesBeyondAnAnswerNeverReachAnotherClient(t *testing.T) {
	const inner = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
	cases := map[string]struct{ method, first string }{
		"longer than Content-Length": {"GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + inner},
		"HEAD with a body":           {"HEAD", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(inner), inner)},
		"204 with a body":            {"GET", "HTTP/1.1 204 No Content\r\nContent-Length: 42\r\n\r\n" + inner},
		"101 nobody asked for":       {"GET", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n" + inner},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int32
			p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
				if n.Add(1) == 1 {
					_, err := io.WriteString(nc, c.first)
					return err == nil
				}
				return okHandler(nc, r)
			}}})
			a := p.dial(t)
			a.send(c.method + " /a HTTP/1.1\r\nHost: x\r\n\r\n")
			ra := a.read(c.method)
			if strings.HasPrefix(c.first, "HTTP/1.1 101") {
				assert.Equal(t, http.StatusBadGateway, ra.status, "a 101 to a plain request is a bad answer")
			}
			b := p.dial(t)
			b.send(get("/victim"))
			rb := b.read("GET")
			require.Equal(t, 200, rb.status, rb.head)
			assert.Equal(t, "ok GET /victim HTTP/1.1", string(rb.body))
		})
	}
}

// Bytes a backend writes after its answer, late, arrive while the
// connection waits in the pool: whichever path serves the next request (a
// loop, or a goroutine after a chunked body) finds them before reuse, and
// they never become that request's answer.
func TestLateBytesAfterAnAnswerNeverReachAnotherClient(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
	answers := map[string]struct{ method, first string }{
		"HEAD with a body":    {"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"},
		"204 with a body":     {"GET", "HTTP/1.1 204 No Content\r\n\r\n"},
		"304 with a body":     {"GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n"},
		"past Content-Length": {"GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	}
	next := map[string]string{
		"GET":          get("/victim"),
		"chunked POST": "POST /victim HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
	}
	for name, a := range answers {
		for kind, req := range next {
			t.Run(name+", then "+kind, func(t *testing.T) {
				t.Parallel()
				var n atomic.Int32
				wrote := make(chan struct{})
				p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
					if n.Add(1) > 1 {
						return okHandler(nc, r)
					}
					if _, err := io.WriteString(nc, a.first); err != nil {
						return false
					}
					time.Sleep(30 * time.Millisecond) // the answer is out; the connection is idle
					_, err := io.WriteString(nc, stray)
					close(wrote)
					return err == nil
				}}})
				c := p.dial(t)
				c.send(a.method + " /first HTTP/1.1\r\nHost: x\r\n\r\n")
				require.Equal(t, a.first[9:12], strconv.Itoa(c.read(a.method).status))
				<-wrote
				time.Sleep(10 * time.Millisecond) // let the stray bytes land in the socket
				c = p.dial(t)
				c.send(req)
				r := c.read("GET")
				require.Equal(t, 200, r.status, "%s%s", r.head, r.body)
				assert.Contains(t, string(r.body), "ok ")
				assert.Contains(t, string(r.body), "/victim")
			})
		}
	}
}

// Trailer lines are checked like fields: a bare LF in one cannot smuggle
// an answer to a pipelined request.
func TestTrailersCannotSmuggleAnAnswer(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		if strings.Contains(r.line, "/a") {
			_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n"+
				"X: y\n\nHTTP/1.1 200 OK\nContent-Length: 8\n\nevil\r\n\r\n")
			return false
		}
		return okHandler(nc, r)
	}}})
	nc, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(3*time.Second)))
	_, err = io.WriteString(nc, get("/a")+get("/b"))
	require.NoError(t, err)
	all, _ := io.ReadAll(nc) // until the proxy closes: the answer to /a was cut
	assert.NotContains(t, string(all), "evil")
}

// A valid trailer goes through; a framing field in a trailer does not.
func TestValidTrailersPassFramingOnesDoNot(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{answer(
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n2\r\nhi\r\n0\r\nX-Sum: 42\r\nContent-Length: 99\r\n\r\n")}})
	c := p.dial(t)
	c.send(get("/t"))
	r := c.read("GET")
	require.Equal(t, 200, r.status)
	assert.Equal(t, "hi", string(r.body))
	assert.Contains(t, r.trailer, "X-Sum: 42")
	assert.NotContains(t, r.trailer, "Content-Length")
}

// A POST cannot be repeated safely, so a pooled connection the backend has
// closed is found before the POST is written to it.
func TestPostAfterTheBackendClosedAnIdleConnection(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		okHandler(nc, r)
		return false // close after every answer, without saying so
	}}})
	c := p.dial(t)
	c.send(get("/one"))
	require.Equal(t, 200, c.read("GET").status)
	time.Sleep(50 * time.Millisecond) // let the FIN arrive
	c.send("POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	r := c.read("POST")
	require.Equal(t, 200, r.status, "%s%s", r.head, r.body)
	assert.Equal(t, "ok POST /form HTTP/1.1", string(r.body))
}

// A request that timed out on a reused connection is not sent again.
func TestATimedOutRequestIsNotSentTwice(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		if n.Add(1) == 1 {
			return okHandler(nc, r)
		}
		select {
		case <-r.quit:
		case <-time.After(2 * time.Second):
		}
		return false
	}}, responseHeaderTimeout: 300 * time.Millisecond})
	c := p.dial(t)
	c.send(get("/one"))
	require.Equal(t, 200, c.read("GET").status)
	c.send("DELETE /thing HTTP/1.1\r\nHost: x\r\n\r\n")
	r := c.read("DELETE")
	assert.Equal(t, http.StatusGatewayTimeout, r.status)
	assert.EqualValues(t, 2, n.Load(), "one GET and one DELETE reached the backend")
}

// A client that pipelines requests and never reads its answers is cut off
// after the client timeout instead of holding a goroutine forever.
func TestClientThatNeverReadsIsCutOff(t *testing.T) {
	t.Parallel()
	body := strings.Repeat("x", 12000)
	p := newProxy(t, proxyOpts{
		handlers:      []handler{answer("HTTP/1.1 200 OK\r\nContent-Length: 12000\r\n\r\n" + body)},
		clientTimeout: 300 * time.Millisecond,
	})
	nc, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.(*net.TCPConn).SetReadBuffer(4096))
	go func() {
		for range 2000 {
			if _, err := io.WriteString(nc, get("/x")); err != nil {
				return
			}
		}
	}()
	require.Eventually(t, func() bool {
		p.e.mu.Lock()
		defer p.e.mu.Unlock()
		return len(p.e.conns) == 0
	}, 5*time.Second, 20*time.Millisecond)
}

// An announced body costs memory only as its bytes arrive.
func TestAnnouncedBodyIsNotAllocatedUpFront(t *testing.T) {
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for range 4 {
		nc, err := net.Dial("tcp", p.addr)
		require.NoError(t, err)
		defer nc.Close()
		_, err = io.WriteString(nc, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 33554432\r\n\r\n")
		require.NoError(t, err)
	}
	time.Sleep(200 * time.Millisecond)
	runtime.ReadMemStats(&m1)
	assert.Less(t, int64(m1.HeapAlloc)-int64(m0.HeapAlloc), int64(16<<20), "four 32 MiB announcements")
}

func TestRequestHeadLimits(t *testing.T) {
	t.Parallel()
	var seen atomic.Value
	p := newProxy(t, proxyOpts{handlers: []handler{func(nc net.Conn, r *bReq) bool {
		seen.Store(r)
		return okHandler(nc, r)
	}}})
	cases := []struct {
		name, req string
		status    int
	}{
		{"33 Connection options", "GET / HTTP/1.1\r\nHost: x\r\nConnection: " + strings.Repeat("a,", 32) + "a\r\n\r\n", 400},
		{"dot segment", "GET /a/../admin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"encoded dot segment", "GET /a/%2E%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"dots inside a name are fine", "GET /a%2ebin/.well-known/x..y HTTP/1.1\r\nHost: x\r\n\r\n", 200},
	}
	for _, c := range cases {
		cl := p.dial(t)
		cl.send(c.req)
		r := cl.read("GET")
		assert.Equal(t, c.status, r.status, "%s: %s", c.name, r.head)
	}

	// A field name with an underscore never reaches the backend: CGI-style
	// gateways would read X_Forwarded_For as X-Forwarded-For.
	cl := p.dial(t)
	cl.send("GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX-Fine: 1\r\n\r\n")
	require.Equal(t, 200, cl.read("GET").status)
	r := seen.Load().(*bReq)
	assert.False(t, r.has("X_Forwarded_For"))
	assert.True(t, r.has("X-Fine"))
}

// A slow client gets 408, not 400.
func TestSlowRequestBodyGets408(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, clientTimeout: 300 * time.Millisecond})
	c := p.dial(t)
	c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
	r := c.read("POST")
	assert.Equal(t, http.StatusRequestTimeout, r.status)
}

// A tunnel outlives the client timeout: no deadline of the HTTP exchange
// applies to it.
func TestTunnelOutlivesTheClientTimeout(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{clientTimeout: 200 * time.Millisecond, handlers: []handler{func(nc net.Conn, r *bReq) bool {
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		buf := make([]byte, 64)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return false
			}
			if _, err := nc.Write(buf[:n]); err != nil {
				return false
			}
		}
	}}})
	c := p.dial(t)
	c.send("GET /ws HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	require.Equal(t, 101, c.read("GET").status)
	for i := range 3 {
		time.Sleep(250 * time.Millisecond) // more than the client timeout
		c.send(fmt.Sprintf("ping %d\n", i))
		line, err := c.br.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("ping %d\n", i), line)
	}
}

// When the client has finished sending into a tunnel, a backend that never
// closes its side is given the client timeout, not forever.
func TestHalfClosedTunnelEnds(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{clientTimeout: 300 * time.Millisecond, handlers: []handler{func(nc net.Conn, r *bReq) bool {
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(io.Discard, nc) // reads to the end, never closes
		<-r.quit
		return false
	}}})
	c := p.dial(t)
	c.send("GET /ws HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	require.Equal(t, 101, c.read("GET").status)
	c.send("bye\n")
	require.NoError(t, c.nc.(*net.TCPConn).CloseWrite())
	c.expectClosed(2 * time.Second)
}

// Idle backend connections past backendIdle are closed by the reaper even
// when no request comes to notice them; fresh ones stay.
func TestExpiredIdleBackendConnectionsAreReaped(t *testing.T) {
	now := time.Now()
	p := &pool{}
	var ends []net.Conn
	for _, age := range []time.Duration{2 * backendIdle, backendIdle / 2, backendIdle + time.Second, 0} {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		p.idle = append(p.idle, &bconn{nc: a, used: now.Add(-age)})
		ends = append(ends, b)
	}
	p.reap(now)
	require.Len(t, p.idle, 2)
	for i, b := range ends {
		_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := b.Read(make([]byte, 1))
		closed := err == io.EOF
		assert.Equal(t, i == 0 || i == 2, closed, "connection %d", i)
	}
}

// A head larger than the connection's first read buffer is served, and so
// is the request pipelined right behind it.
func TestLargeHeadThenPipelinedRequest(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)
	big := "GET /big HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 10<<10) + "\r\n\r\n"
	c.send(big + get("/next"))
	r1 := c.read("GET")
	require.Equal(t, 200, r1.status)
	assert.Equal(t, "ok GET /big HTTP/1.1", string(r1.body))
	r2 := c.read("GET")
	require.Equal(t, 200, r2.status)
	assert.Equal(t, "ok GET /next HTTP/1.1", string(r2.body))
	c.send(get("/third"))
	assert.Equal(t, "ok GET /third HTTP/1.1", string(c.read("GET").body))
}

// A keep-alive client that idles for most of the client timeout still gets
// the whole timeout for its next request's body.
func TestIdleThenSlowUploadIsNotCutShort(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, clientTimeout: time.Second})
	c := p.dial(t)
	c.send(get("/one"))
	require.Equal(t, 200, c.read("GET").status)
	c.send(get("/two"))
	require.Equal(t, 200, c.read("GET").status)
	time.Sleep(700 * time.Millisecond) // idle, most of the timeout
	c.send("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
	time.Sleep(500 * time.Millisecond) // a slow body: past the first deadline
	c.send("def")
	r := c.read("POST")
	assert.Equal(t, 200, r.status, "%s%s", r.head, r.body)
}

// A pooled connection whose read deadline passed while it was idle is
// still reused: the liveness check clears the old deadline first.
func TestPooledConnectionOutlivesItsOldDeadline(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, responseHeaderTimeout: 300 * time.Millisecond})
	c := p.dial(t)
	c.send(get("/one"))
	require.Equal(t, 200, c.read("GET").status)
	time.Sleep(1200 * time.Millisecond) // past the deadline and the probe threshold
	c.send("POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
	require.Equal(t, 200, c.read("POST").status)
	assert.EqualValues(t, 1, p.backends[0].conns.Load(), "one backend connection served both")
}

// Chunk-size and trailer lines may be as long as a head, even on a
// connection whose first read buffer is smaller.
func TestLongTrailerLineInARequest(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}})
	c := p.dial(t)
	c.send("POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Long: " +
		strings.Repeat("v", 5000) + "\r\n\r\n")
	r := c.read("POST")
	assert.Equal(t, 200, r.status, "%s%s", r.head, r.body)
}
