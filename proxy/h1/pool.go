package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/geoproxy/geoproxy/proxy/core"
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
	raw   syscall.RawConn // the TCP socket under nc (and under TLS), for the peek
	tls   bool            // nc is a TLS client over raw
	used  time.Time       // when it was last returned to the pool
	armed time.Time       // its read deadline; zero: none set
	// wArmed is when its write deadline was last set.
	wArmed time.Time
}

// fresh is the one rule for reusing an idle backend connection, on every
// path of the engine: it has not been idle for longer than backendIdle, and
// a peek finds nothing on it. Nothing means neither the end of the
// connection (the backend closed it) nor a byte: a byte nobody asked for,
// such as a body after a HEAD answer or past a Content-Length written late,
// would be read as the next request's answer and so reach another client.
// The peek costs one system call, made at every reuse whatever the age.
func fresh(idle time.Duration, quiet func() bool) bool {
	return idle <= backendIdle && quiet()
}

// redial is the one rule, for every path, of when an attempt that failed
// on a pooled connection is made again at once on a new connection to the
// same backend: the backend had closed the idle connection (EOF, a reset,
// a broken pipe; a timeout is not one) before any of the answer came and
// before any of a streamed body was read, and either nothing of the request
// was written or its method may be repeated. It is the same attempt: not a
// retry, and not counted against the backend.
func redial(reused bool, err error, nothingWritten, answered, bodySpent bool, method string) bool {
	return reused && !answered && !bodySpent && closedByPeer(err) &&
		(nothingWritten || core.Idempotent(method))
}

// quiet peeks at the idle connection without blocking; see fresh.
func (bc *bconn) quiet() bool {
	if bc.br.Buffered() > 0 || bc.raw == nil {
		return false
	}
	if !bc.armed.IsZero() {
		// A read deadline left from the last answer may have passed; the
		// reads below must not mistake it for a dead connection.
		_ = bc.nc.SetReadDeadline(time.Time{})
		bc.armed = time.Time{}
	}
	ok := false
	if err := bc.raw.Control(func(fd uintptr) { ok = quiet(fd) }); err != nil || !ok {
		return false
	}
	if bc.tls {
		// TLS may hold a whole record it read from the socket with the
		// last answer. A read with a deadline already passed returns such
		// a record, and otherwise fails at once without touching the
		// socket; a timeout does not break a TLS connection.
		_ = bc.nc.SetReadDeadline(time.Unix(1, 0))
		_, err := bc.br.Peek(1)
		_ = bc.nc.SetReadDeadline(time.Time{})
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return false // a record, or the end of the connection
		}
	}
	return true
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

// dialBackend opens a connection to p's backend, and shakes hands when it
// speaks TLS, within the dialer's timeout.
func dialBackend(ctx context.Context, d *net.Dialer, p *pool) (*bconn, error) {
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	bc := &bconn{nc: nc, tls: p.tls}
	if sc, ok := nc.(syscall.Conn); ok {
		bc.raw, _ = sc.SyscallConn()
	}
	if p.tls {
		cfg := &tls.Config{ServerName: p.be.URL.Hostname(), MinVersion: tls.VersionTLS12}
		if p.be.TLS != nil {
			cfg = p.be.TLS.Clone() // a CA, a server name, a client certificate
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		if d.Timeout > 0 {
			_ = nc.SetDeadline(time.Now().Add(d.Timeout))
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", p.addr, err)
		}
		_ = nc.SetDeadline(time.Time{})
		bc.nc = tc
	}
	bc.br = bufio.NewReaderSize(bc.nc, maxResponseHead)
	return bc, nil
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

// get returns a fresh idle connection, or nil; the others it finds on the
// way are closed.
func (p *pool) get(now time.Time) *bconn {
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
		if fresh(now.Sub(bc.used), bc.quiet) {
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
