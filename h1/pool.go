package h1

import (
	"bufio"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/geoproxy/geoproxy/route"
)

// pool keeps one backend's idle connections, newest on top: the newest is
// the least likely to have been closed by the backend.
type pool struct {
	be   *route.Backend
	addr string // host:port to dial
	host []byte // Host header
	base string // prefixed to every request target; "" or "/app"
	tls  bool   // https backend

	mu   sync.Mutex
	idle []*bconn
}

// bconn is one backend connection.
type bconn struct {
	nc    net.Conn
	br    *bufio.Reader
	used  time.Time // when it was last returned to the pool
	armed time.Time // when its read deadline was set; zero: none set
}

func newPool(be *route.Backend) *pool {
	tls := be.URL.Scheme == "https"
	return &pool{be: be, addr: hostPort(be.URL, tls), host: []byte(be.URL.Host), base: basePath(be.URL), tls: tls}
}

func hostPort(u *url.URL, tls bool) string {
	if u.Port() != "" {
		return u.Host
	}
	if tls {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

func basePath(u *url.URL) string {
	base := u.EscapedPath()
	for len(base) > 0 && base[len(base)-1] == '/' {
		base = base[:len(base)-1]
	}
	return base
}

// get returns an idle connection, or nil; connections idle for longer than
// backendIdle are closed on the way.
func (p *pool) get(now time.Time) *bconn {
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		bc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if now.Sub(bc.used) <= backendIdle {
			p.mu.Unlock()
			return bc
		}
		_ = bc.nc.Close()
	}
	p.mu.Unlock()
	return nil
}

// put returns a connection whose last response was read completely.
func (p *pool) put(bc *bconn, now time.Time) {
	bc.used = now
	p.mu.Lock()
	if len(p.idle) < maxIdlePerBackend {
		p.idle = append(p.idle, bc)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	_ = bc.nc.Close()
}

func (p *pool) closeAll() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, bc := range idle {
		_ = bc.nc.Close()
	}
}
