package h1

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/proxy/proxyheader"
)

// headerListener reads a PROXY header on each connection it accepts, from
// loopback peers, and hands on the connection as proxyheader.Wrap makes it:
// a wrapper with TCP() and the carried RemoteAddr, or the *net.TCPConn.
type headerListener struct {
	*net.TCPListener
}

func (l headerListener) Accept() (net.Conn, error) {
	for range 100 {
		tc, err := l.AcceptTCP()
		if err != nil {
			return nil, err
		}
		client, err := proxyheader.Read(tc, func(a netip.Addr) bool { return a.IsLoopback() }, time.Now().Add(ioTimeout))
		if err != nil {
			_ = tc.Close()
			continue
		}
		return proxyheader.Wrap(tc, client), nil
	}
	return nil, errors.New("too many connections with bad headers")
}

// serveHeaders makes p's engine serve a second listener, one that reads PROXY
// headers, and returns its address.
func serveHeaders(t *testing.T, p *proxy) string {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- p.e.Serve(headerListener{ln}) }()
	t.Cleanup(func() {
		// Runs before newProxy's: the engine's shutdown closes ln too.
		p.shutdown(t, 5*time.Second)
		select {
		case err := <-served:
			assert.ErrorIs(t, err, http.ErrServerClosed)
		case <-time.After(ioTimeout):
			t.Error("Serve did not return after Shutdown")
		}
		_ = ln.Close()
	})
	return ln.Addr().String()
}

// dialWith opens a client connection to addr.
func dialWith(t *testing.T, addr string) *client {
	t.Helper()
	p := &proxy{addr: addr}
	return p.dial(t)
}

// goroutines is how many connections the engine serves on goroutines.
func goroutines(p *proxy) int {
	p.e.mu.Lock()
	defer p.e.mu.Unlock()
	return len(p.e.conns)
}

// The client address a PROXY header carries is the client's for geo and
// X-Forwarded-For, on an event loop and on a goroutine alike.
func TestProxyHeaderClientAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, header string
		xff, city    string
	}{
		{"v1", "PROXY TCP4 203.0.113.10 192.0.2.1 56324 443\r\n", "203.0.113.10", "London"},
		{"v2 IPv6", "\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24" +
			"\x20\x01\x0d\xb8\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01" +
			"\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02" +
			"\x0f\xa0\x00\x50", "2001:db8:1::1", "Paris"},
		{"v2 LOCAL", "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", "127.0.0.1", ""},
		{"none", "", "127.0.0.1", ""},
	} {
		for _, loops := range []int{2, -1} {
			name := tc.name + "/loops"
			if loops < 0 {
				name = tc.name + "/goroutines"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, loops: loops})
				c := dialWith(t, serveHeaders(t, p))
				c.send(tc.header + get("/first"))
				for i, path := range []string{"/first", "/second"} {
					if i > 0 {
						c.send(get(path))
					}
					r := c.read("GET")
					require.Equal(t, 200, r.status, r.head)
					got := p.backends[0].next(t)
					assert.Equal(t, "GET "+path+" HTTP/1.1", got.line)
					assert.Equal(t, tc.xff, got.value("X-Forwarded-For"))
					assert.Equal(t, tc.city, got.value("X-City"))
				}
				if loops > 0 {
					assert.Zero(t, goroutines(p), "served on an event loop")
				} else {
					assert.Equal(t, 1, goroutines(p), "served on a goroutine")
				}
			})
		}
	}
}

// A loop that hands the connection to a goroutine (a streamed answer) keeps
// the carried address for the requests that follow.
func TestProxyHeaderClientAddressAfterHandOver(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{mixedHandler}, loops: 2})
	c := dialWith(t, serveHeaders(t, p))
	c.send("PROXY TCP4 203.0.113.70 192.0.2.1 56324 443\r\n")
	for i, path := range []string{"/small/1", "/chunked", "/small/2"} {
		c.send(get(path))
		r := c.read("GET")
		require.Equal(t, 200, r.status, r.head)
		assert.Equal(t, want(path), string(r.body))
		got := p.backends[0].next(t)
		assert.Equal(t, "203.0.113.70", got.value("X-Forwarded-For"), "request %d", i)
		assert.Equal(t, "Seattle", got.value("X-City"), "request %d", i)
	}
	assert.Equal(t, 1, goroutines(p), "the chunked answer moved the connection to a goroutine")
}

// A connection given to a loop that has just ended is served on a goroutine,
// still with the carried address.
func TestProxyHeaderClientAddressWhenTheLoopHasEnded(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, loops: 1})
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	// Serve starts the loops; its listener is not used.
	c := p.dial(t)
	c.send(get("/warm"))
	require.Equal(t, 200, c.read("GET").status)
	p.backends[0].next(t)

	cli, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer func() { _ = cli.Close() }()
	require.NoError(t, cli.SetDeadline(time.Now().Add(ioTimeout)))
	require.NoError(t, ln.SetDeadline(time.Now().Add(ioTimeout)))
	tc, err := ln.AcceptTCP()
	require.NoError(t, err)
	nc := proxyheader.Wrap(tc, netip.MustParseAddrPort("203.0.113.200:4000"))

	p.e.mu.Lock() // Serve started the loops under it
	loops := p.e.loops
	p.e.mu.Unlock()
	require.NotEmpty(t, loops)
	setExited := func(v bool) {
		for _, l := range loops {
			l.mu.Lock()
			l.exited = v
			l.mu.Unlock()
		}
	}
	setExited(true)
	served := p.e.toLoop(nc)
	setExited(false)
	require.True(t, served)
	require.Equal(t, 1, goroutines(p), "served on a goroutine")

	cc := &client{t: t, nc: cli, br: bufio.NewReaderSize(cli, 64<<10)}
	cc.send(get("/after"))
	r := cc.read("GET")
	require.Equal(t, 200, r.status, r.head)
	got := p.backends[0].next(t)
	assert.Equal(t, "203.0.113.200", got.value("X-Forwarded-For"))
	assert.Equal(t, "Frankfurt am Main", got.value("X-City"))
	assert.True(t, strings.HasSuffix(got.line, "/after HTTP/1.1"), got.line)
}
