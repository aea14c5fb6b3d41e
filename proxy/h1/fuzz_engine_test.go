package h1

import (
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzBackendAnswer sends whatever a backend might answer through the
// engine: the client gets a well-formed HTTP/1.1 answer (the backend's or
// a 502/504), nothing else, and the engine never panics.
func FuzzBackendAnswer(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nGZP\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n",
		"garbage",
		"",
	} {
		f.Add(seed)
	}
	var answer atomic.Value
	answer.Store("")
	p := newProxy(f, proxyOpts{
		responseHeaderTimeout: 300 * time.Millisecond,
		handlers: []handler{func(nc net.Conn, r *bReq) bool {
			_, _ = io.WriteString(nc, answer.Load().(string))
			return false
		}},
	})
	f.Fuzz(func(t *testing.T, resp string) {
		answer.Store(resp)
		nc, err := net.Dial("tcp", p.addr)
		require.NoError(t, err)
		defer nc.Close()
		require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = io.WriteString(nc, "GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		require.NoError(t, err)
		got, _ := io.ReadAll(nc)
		if !strings.HasPrefix(string(got), "HTTP/1.1 ") {
			t.Fatalf("the client got %q", got)
		}
		if n := p.e.panics.Load(); n != 0 {
			t.Fatalf("%d panics in the engine", n)
		}
	})
}

// FuzzClientBytes sends whatever a client might send: every answer is
// well-formed HTTP/1.1 (from the backend, or the proxy's own 4xx/5xx), and
// the engine never panics.
func FuzzClientBytes(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello",
		"GET http://a.example/x HTTP/1.1\r\n\r\n",
		"GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: a, b, c\r\na: 1\r\n\r\n",
		"\r\n\r\n",
		"",
	} {
		f.Add(seed)
	}
	p := newProxy(f, proxyOpts{handlers: []handler{okHandler}})
	f.Fuzz(func(t *testing.T, in string) {
		nc, err := net.Dial("tcp", p.addr)
		require.NoError(t, err)
		defer nc.Close()
		require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
		_, _ = io.WriteString(nc, in)
		_ = nc.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(nc)
		if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 ") {
			t.Fatalf("the client got %q", got)
		}
		if n := p.e.panics.Load(); n != 0 {
			t.Fatalf("%d panics in the engine", n)
		}
	})
}
