package h1

import (
	"bufio"
	"net"
	"net/url"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

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
	raw   syscall.RawConn // for the liveness probe; nil for TLS
	used  time.Time       // when it was last returned to the pool
	armed time.Time       // when its read deadline was set; zero: none set
	// wArmed is when its write deadline was last set.
	wArmed time.Time
}

// probeAfter is how long a connection may sit idle before get checks that
// the backend has not closed it (or sent something unasked) meanwhile.
const probeAfter = time.Second

// alive peeks at an idle connection without blocking: EOF means the backend
// closed it, data means the backend sent something nobody asked for. Both
// make the connection unusable. One system call, made only for connections
// idle longer than probeAfter.
func (bc *bconn) alive() bool {
	if bc.raw == nil {
		return true
	}
	if !bc.armed.IsZero() {
		// A read deadline left from the last answer may have passed; the
		// peek must not mistake it for a dead connection.
		_ = bc.nc.SetReadDeadline(time.Time{})
		bc.armed = time.Time{}
	}
	ok := false
	if err := bc.raw.Control(func(fd uintptr) { ok = quiet(fd) }); err != nil {
		return false
	}
	return ok
}

// quiet peeks at an idle socket without blocking, in one system call: it
// reports true when there is nothing to read and the peer has not closed
// it.
func quiet(fd uintptr) bool {
	var b [1]byte
	_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return errno == unix.EAGAIN
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

// get returns an idle connection, or nil. Connections idle for longer than
// backendIdle are closed on the way; those idle for longer than probeAfter,
// or all of them when probe is set (a request that could not be repeated
// if the backend had closed the connection), are checked first.
func (p *pool) get(now time.Time, probe bool) *bconn {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		bc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		idle := now.Sub(bc.used)
		if idle <= backendIdle && (idle <= probeAfter && !probe || bc.alive()) {
			return bc
		}
		_ = bc.nc.Close()
	}
}

// put returns a connection whose last response was read completely. A
// connection with bytes beyond that response is closed: they would be read
// as the next request's answer. The oldest idle connection is closed when
// it has expired, so a pool shrinks after a burst.
func (p *pool) put(bc *bconn, now time.Time) {
	if bc.br.Buffered() > 0 {
		_ = bc.nc.Close()
		return
	}
	bc.used = now
	var expired *bconn
	p.mu.Lock()
	if len(p.idle) > 0 && now.Sub(p.idle[0].used) > backendIdle {
		expired = p.idle[0]
		copy(p.idle, p.idle[1:])
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
	}
	if len(p.idle) < maxIdlePerBackend {
		p.idle = append(p.idle, bc)
		bc = nil
	}
	p.mu.Unlock()
	if expired != nil {
		_ = expired.nc.Close()
	}
	if bc != nil {
		_ = bc.nc.Close()
	}
}

// reap closes the idle connections that have expired.
func (p *pool) reap(now time.Time) {
	p.mu.Lock()
	keep := p.idle[:0]
	var expired []*bconn
	for _, bc := range p.idle {
		if now.Sub(bc.used) > backendIdle {
			expired = append(expired, bc)
		} else {
			keep = append(keep, bc)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, bc := range expired {
		_ = bc.nc.Close()
	}
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
