package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/proxy/h1"
	"github.com/geoproxy/geoproxy/proxy/proxyheader"
)

// A proxy listener's name, as in geoproxy_client_connections{listener}.
const (
	listenerHTTP  = "http"
	listenerHTTPS = "https"
)

// entry is one of the proxy's client listeners and the connections it has
// open: every accepted connection passes its admission (see admit) before
// the current generation serves it.
type entry struct {
	name  string
	ln    net.Listener
	tls   bool
	open  atomic.Int64
	gauge prometheus.Gauge

	mu        sync.Mutex
	perClient map[netip.Prefix]int // open connections by client (see clientKey)
}

func newEntry(name string, ln net.Listener, m *metrics.Metrics) *entry {
	return &entry{name: name, ln: ln, tls: name == listenerHTTPS, gauge: m.Connections.WithLabelValues(name),
		perClient: map[netip.Prefix]int{}}
}

// clientKey is what per-client limits count by: an IPv4 address, or the
// /64 of an IPv6 one (a host gets a whole /64 to pick addresses from).
func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// clientConn is an admitted client connection: its client address (from
// a PROXY header, or the peer's), and the release of what it counts
// against the limits, done once when it closes. The native engine's event
// loops serve it by its TCP connection (TCP) and call Closed when they
// close that.
type clientConn struct {
	*net.TCPConn
	client  netip.AddrPort
	release func()
	once    sync.Once
}

// RemoteAddr is the client's address.
func (c *clientConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.client) }

// TCP is the connection underneath.
func (c *clientConn) TCP() *net.TCPConn { return c.TCPConn }

// Closed releases what the connection counts, once; for a server that
// closes the TCP connection itself.
func (c *clientConn) Closed() {
	if c.release != nil {
		c.once.Do(c.release)
	}
}

// Close closes the connection and releases what it counts.
func (c *clientConn) Close() error {
	err := c.TCPConn.Close()
	c.Closed()
	return err
}

// dispatch accepts on a proxy listener and gives each connection, once
// admitted, to the current generation, until the listener is closed.
func (s *Server) dispatch(e *entry) {
	var backoff time.Duration
	for {
		nc, err := e.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", zap.String("listener", e.name), zap.Error(err), zap.Duration("in", backoff))
				select {
				case <-time.After(backoff):
				case <-s.base.Done():
					return
				}
				continue
			}
			s.log.Error("proxy listener stopped", zap.String("listener", e.name), zap.Error(err))
			return
		}
		backoff = 0
		tc, ok := nc.(*net.TCPConn)
		if !ok {
			s.give(e, nc) // (a TCP listener gives TCP connections only)
			continue
		}
		cfg := s.gen.Load().cfg
		if max := cfg.Limits.MaxConnections; max > 0 && e.open.Load() >= int64(max) {
			s.metrics.ClientLimits.WithLabelValues(metrics.LimitConnections).Inc()
			s.refuseConn(e, tc, http.StatusServiceUnavailable, "geoproxy: too many connections")
			continue
		}
		e.open.Add(1)
		e.gauge.Inc()
		c := &clientConn{TCPConn: tc, client: tcpAddr(tc.RemoteAddr()), release: e.release}
		if e.tls || cfg.ProxyProtocol {
			// The header and the handshake are read off the accept loop.
			s.wg.Go(func() { s.admit(e, c, cfg) })
			continue
		}
		if s.countClient(e, c, cfg.Limits.MaxConnectionsPerClient) {
			// The native engine's event loops serve c by its descriptor.
			s.give(e, c)
		}
	}
}

// release uncounts a connection of the listener.
func (e *entry) release() {
	e.open.Add(-1)
	e.gauge.Dec()
}

// tcpAddr is a TCP address as an AddrPort, unmapped.
func tcpAddr(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// countClient counts c against its client's connections; false (and c
// refused, with 429) when the client has max open already (0: no limit).
func (s *Server) countClient(e *entry, c *clientConn, max int) bool {
	if max <= 0 {
		return true
	}
	key := clientKey(c.client.Addr())
	e.mu.Lock()
	n := e.perClient[key]
	if n >= max {
		e.mu.Unlock()
		c.Closed() // it no longer counts on the listener either
		s.metrics.ClientLimits.WithLabelValues(metrics.LimitClientConnections).Inc()
		s.refuseConn(e, c.TCPConn, http.StatusTooManyRequests, "geoproxy: too many connections from this client")
		return false
	}
	e.perClient[key] = n + 1
	e.mu.Unlock()
	listener := c.release
	c.release = func() {
		e.mu.Lock()
		if e.perClient[key]--; e.perClient[key] <= 0 {
			delete(e.perClient, key)
		}
		e.mu.Unlock()
		listener()
	}
	return true
}

// admit reads a connection's PROXY header and makes its TLS handshake,
// within the head timeout, and gives it to the current generation; or
// closes it.
func (s *Server) admit(e *entry, c *clientConn, cfg *config.Config) {
	deadline := time.Now().Add(cfg.Limits.HeadTimeout)
	if cfg.ProxyProtocol {
		trusted := s.gen.Load().bal.Resolver().Trusted
		// A shutdown does not wait for a header that is not coming.
		stop := context.AfterFunc(s.base, func() { _ = c.SetReadDeadline(time.Now()) })
		client, err := proxyheader.Read(c.TCPConn, trusted, deadline)
		stop()
		if err != nil {
			s.log.Debug("connection refused: PROXY header", zap.Stringer("peer", c.TCPConn.RemoteAddr()), zap.Error(err))
			_ = c.Close()
			return
		}
		c.client = client
	}
	if !s.countClient(e, c, cfg.Limits.MaxConnectionsPerClient) {
		return
	}
	if !e.tls {
		s.give(e, c)
		return
	}
	tc := tls.Server(c, s.certs.TLSConfig())
	ctx, cancel := context.WithDeadline(s.base, deadline)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.metrics.TLSHandshakeErrors.WithLabelValues(handshakeReason(err)).Inc()
		s.log.Debug("TLS handshake failed", zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
		_ = c.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "acme-tls/1" {
		// An ACME TLS-ALPN-01 validation: the handshake was all of it.
		_ = tc.Close()
		return
	}
	s.give(e, tc)
}

// handshakeReason classifies a failed TLS handshake for
// geoproxy_tls_handshake_errors_total. (crypto/tls returns most of its
// errors untyped, as text beginning "tls: ".)
func handshakeReason(err error) string {
	var ne net.Error
	var rec tls.RecordHeaderError
	msg := err.Error()
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		return "closed"
	case strings.Contains(msg, "no certificate"):
		return "no_certificate"
	case errors.As(err, &rec), strings.HasPrefix(msg, "tls: "):
		return "protocol"
	}
	return "other"
}

// give hands an admitted connection to the current generation, or closes
// it when the server is shutting down. A TLS connection, its handshake
// made, goes by its protocol: HTTP/2 to Go's server, HTTP/1.1 to the
// native engine (its goroutines) when that is the engine.
func (s *Server) give(e *entry, nc net.Conn) {
	var proto string
	if tc, ok := nc.(*tls.Conn); ok {
		proto = tc.ConnectionState().NegotiatedProtocol
	}
	for {
		g := s.gen.Load()
		if g.in(e.name, proto).give(nc) {
			return
		}
		if s.gen.Load() == g {
			_ = nc.Close() // the last generation has stopped: shutting down
			return
		}
		// A reload swapped generations meanwhile: the new one takes it.
	}
}

// maxRefusing bounds the refusals under way: beyond, a connection beyond a
// limit is closed without an answer, so that a flood costs no more than
// this many goroutines.
const maxRefusing = 512

// refuseConn answers, on a goroutine of its own, a connection beyond a
// limit with code and Retry-After, in HTTP/1.1 (over TLS on the TLS
// listener, offering only HTTP/1.1), and closes it; within a second.
func (s *Server) refuseConn(e *entry, nc net.Conn, code int, msg string) {
	if s.refusing.Add(1) > maxRefusing {
		s.refusing.Add(-1)
		_ = nc.Close()
		return
	}
	s.wg.Go(func() {
		defer s.refusing.Add(-1)
		s.answerRefusal(e, nc, code, msg)
	})
}

func (s *Server) answerRefusal(e *entry, nc net.Conn, code int, msg string) {
	defer nc.Close()
	if e.tls && s.gen.Load().cfg.ProxyProtocol {
		return // a PROXY header may come first, which a handshake cannot take
	}
	_ = nc.SetDeadline(time.Now().Add(time.Second))
	var conn net.Conn = nc
	if e.tls {
		cfg := s.certs.TLSConfig().Clone()
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Server(nc, cfg)
		if tc.Handshake() != nil {
			return
		}
		conn = tc
	}
	if _, err := conn.Write(h1.AppendPlain(nil, code, msg, "1", true)); err != nil {
		return
	}
	// Read what the client sends until it closes (or the deadline), so
	// that closing does not reset the connection under the answer.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
}

// redirectHandler answers every request with 308 to the same URL over
// https on the TLS listener's port.
func redirectHandler(tlsPort func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			http.Error(w, "geoproxy: malformed message: no Host", http.StatusBadRequest)
			return
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
			host = "[" + host + "]"
		}
		if port := tlsPort(); port != "443" {
			host += ":" + port
		}
		w.Header().Set("Location", "https://"+host+r.URL.RequestURI())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusPermanentRedirect)
		_, _ = fmt.Fprintln(w, "geoproxy: this site is served over https")
	})
}

// certManager is the process's certificates: what the TLS listener
// needs, what a reload changes, and a Close.
type certManager interface {
	// TLSConfig is the server side of the handshake.
	TLSConfig() *tls.Config
	// IsChallenge reports whether r is an ACME HTTP-01 challenge to answer.
	IsChallenge(r *http.Request) bool
	// HTTPChallenge answers ACME HTTP-01 challenges and passes the rest to next.
	HTTPChallenge(next http.Handler) http.Handler
	// Update applies a reloaded tls block; on error nothing changes.
	Update(config.TLS) error
	// Close stops watching files and renewing certificates.
	Close()
}
