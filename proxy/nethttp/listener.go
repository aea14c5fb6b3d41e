package nethttp

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/proxy/h1"
)

// Listener wraps the proxy listener of the net/http engine so that one
// empty line a client sends before its first request line is ignored, as
// RFC 9112 2.2 asks and the native engine does. (Go's server itself skips
// such a line only after a POST.) It costs one small read per connection.
//
// Its connections also keep the native engine's idle and head timeouts
// once the Handler's ConnState has seen them (the server's ConnState must
// call it): see limitConn.
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &limitConn{Conn: nc}, nil
}

// ServerMaxHeaderBytes is the http.Server MaxHeaderBytes for a Handler whose
// limit is maxHeaderBytes (zero: h1.DefaultMaxHeaderBytes): above it, so
// that the Handler, which keeps the limit to the byte, answers and counts
// the 431 of a head a little too large. (Go's server reads up to its
// limit and 4 KiB more before it refuses a head.)
func ServerMaxHeaderBytes(maxHeaderBytes int) int {
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = h1.DefaultMaxHeaderBytes
	}
	return 2 * maxHeaderBytes
}

// ConnState keeps the client limits on a connection of Listener as Go's
// server moves it from state to state; call it from http.Server.ConnState.
// Other connections are left alone.
func (h *Handler) ConnState(nc net.Conn, state http.ConnState) {
	if c, ok := nc.(*limitConn); ok {
		c.moved(state, h.limits)
	}
}

// connLimits are what a Handler's connections keep, and count.
//
// The client limits on this engine, and what geoproxy_client_limit_hits_total
// counts of them:
//   - header_bytes: the Handler answers 431 to a head over MaxHeaderBytes,
//     to the byte, and counts it; a head beyond ServerMaxHeaderBytes gets
//     Go's own 431, counted on Listener's connections (limitConn.Write).
//   - request_body: the Handler answers 413 and counts it, for a
//     Content-Length over the limit and for a streamed body that grows
//     over it.
//   - body_timeout: the Handler answers 408 and counts it.
//   - head_timeout: Listener's connections answer 408 and count it
//     (limitConn); Go's server would close the connection silently.
//
// Not counted, and not answered as on the native engine:
//   - connections that are not Listener's (the TLS listener's, served by
//     Go's server on either engine): their head timeout is Go's
//     ReadHeaderTimeout, from when the server takes the connection for the
//     first request and from the next request's fourth byte for the
//     others (the idle timeout runs until then), and ends the connection
//     without a 408, uncounted; and Go's own 431, to a head beyond
//     ServerMaxHeaderBytes, is not counted;
//   - HTTP/2 (h2c with prior knowledge, or h2 over TLS): Go's HTTP/2
//     server times heads and refuses those beyond its header list limit
//     (from ServerMaxHeaderBytes) itself, uncounted; heads within it are
//     measured by the Handler as HTTP/1 heads would be (headSize);
//   - a streamed body that times out or grows over the limit after the
//     backend's answer has begun: the answer is cut, not replaced by a 408
//     or 413, and not counted (the native engine holds bodies whole
//     before it forwards them, so it always can answer);
//   - a byte of a pipelined request that Go's server reads while the one
//     before it is served: the head timeout of that request starts at its
//     next byte, not at that one (with no next byte, the idle timeout ends
//     the connection, silently).
type connLimits struct {
	idle, head time.Duration
	metrics.LimitCounters
}

func newConnLimits(m *metrics.Metrics, idle, head time.Duration) *connLimits {
	return &connLimits{idle: idle, head: head, LimitCounters: m.LimitCounters()}
}

// What a limitConn's read deadline is for.
const (
	unlimited   uint8 = iota // the server's, for good: no limits, HTTP/2, hijacked or closed
	waitIdle                 // the first byte of a request: the idle timeout, then closed silently
	waitHead                 // the rest of its head: the head timeout, then 408
	serverOwned              // the server's, or its handler's, while it has a request
)

// limitConn is a connection of Listener. It drops a CRLF at the very start
// of a connection: it reads the first two bytes on its own, and gives them
// back unless they are CRLF.
//
// With limits (see Handler.ConnState) it also keeps the native engine's
// timeouts on request heads, which Go's server does not: the idle timeout
// until the first byte of each request (Go's ReadHeaderTimeout runs from
// the connection's start for the first, and from the fourth byte for the
// next ones), then the head timeout from that byte, after which the client
// is answered 408, counted, before the server closes the connection (Go's
// would close it silently). While it waits for a head, it owns the read
// deadline and keeps the one the server asks for until the request is the
// server's (StateActive). It also counts the 431 Go's server answers
// itself, to a head beyond ServerMaxHeaderBytes.
type limitConn struct {
	net.Conn
	started bool
	pending []byte // the first bytes, not yet returned
	err     error  // the first read's error, after pending
	first   [2]byte

	mu     sync.Mutex
	lim    *connLimits // set at StateNew, before the server reads
	wait   uint8       // waitIdle...
	asked  time.Time   // the read deadline the server asked for while waiting
	seen   int         // bytes of the connection given to the server, up to len(h2Preface)
	prefix bool        // the bytes seen are the HTTP/2 preface's first ones
}

// h2Preface starts an HTTP/2 connection with prior knowledge; Go's server
// then hands the connection to its HTTP/2 server, which sets deadlines of
// its own.
const h2Preface = "PRI * HTTP/2.0"

func (c *limitConn) Read(p []byte) (int, error) {
	if !c.started {
		c.started = true
		n, err := c.readAtLeast(c.first[:])
		if n == 2 && c.first[0] == '\r' && c.first[1] == '\n' {
			n = 0
		}
		c.pending, c.err = c.first[:n], err
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		c.saw(p[:n])
		return n, nil
	}
	if c.err != nil {
		err := c.err
		c.err = nil
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		return 0, err
	}
	n, err := c.read(p)
	c.saw(p[:n])
	return n, err
}

// readAtLeast fills p, as io.ReadAtLeast does.
func (c *limitConn) readAtLeast(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := c.read(p[n:])
		n += k
		if err != nil {
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
	return n, nil
}

// read reads from the connection, keeping the head's limits.
func (c *limitConn) read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	switch c.wait {
	case waitIdle:
		if n > 0 {
			// A request's first byte: its head has the head timeout.
			c.wait = waitHead
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.lim.head))
		}
	case waitHead:
		if err != nil && isTimeout(err) {
			c.wait = unlimited
			c.mu.Unlock()
			c.refuseSlowHead()
			return n, err
		}
	}
	c.mu.Unlock()
	return n, err
}

// saw notes the first bytes the server reads: those of HTTP/2's preface
// end the limits, which are HTTP/1's.
func (c *limitConn) saw(b []byte) {
	if c.seen >= len(h2Preface) || len(b) == 0 {
		return
	}
	if c.seen == 0 {
		c.prefix = true
	}
	k := min(len(b), len(h2Preface)-c.seen)
	c.prefix = c.prefix && string(b[:k]) == h2Preface[c.seen:c.seen+k]
	c.seen += k
	if c.seen == len(h2Preface) && c.prefix {
		c.mu.Lock()
		c.release(unlimited)
		c.mu.Unlock()
	}
}

// release gives the read deadline back to the server: the one it asked for
// last. Under c.mu.
func (c *limitConn) release(to uint8) {
	if c.wait == waitIdle || c.wait == waitHead {
		_ = c.Conn.SetReadDeadline(c.asked)
	}
	c.wait = to
}

// refuseSlowHead answers 408 to a client whose head did not come in time;
// the server then closes the connection.
func (c *limitConn) refuseSlowHead() {
	c.lim.HeadTimeout.Inc()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.lim.idle))
	_, _ = c.Conn.Write(h1.AppendPlain(nil, http.StatusRequestTimeout, "geoproxy: request not received in time", "", true))
	_ = c.CloseWrite()
}

// moved follows the server's state of the connection.
func (c *limitConn) moved(state http.ConnState, lim *connLimits) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch state {
	case http.StateNew:
		if c.lim == nil && lim != nil {
			c.lim = lim
			c.wait = waitIdle
			_ = c.Conn.SetReadDeadline(time.Now().Add(lim.idle))
		} else {
			c.wait = unlimited
		}
	case http.StateActive:
		// A request, or an error answer, is the server's now.
		if c.wait == waitIdle || c.wait == waitHead {
			c.release(serverOwned)
		}
	case http.StateIdle:
		if c.wait == serverOwned {
			c.wait = waitIdle
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.lim.idle))
		}
	default: // hijacked or closed
		c.release(unlimited)
	}
}

// SetReadDeadline sets the read deadline, unless the connection waits for a
// request head: it is kept until the request is the server's.
func (c *limitConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wait == waitIdle || c.wait == waitHead {
		c.asked = t
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, the read one as SetReadDeadline does.
func (c *limitConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// goTooLarge starts the 431 Go's server writes itself, to a head beyond its
// MaxHeaderBytes. (The Handler's own answers have their fields sorted,
// Connection first.)
var goTooLarge = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")

func (c *limitConn) Write(p []byte) (int, error) {
	if len(p) >= len(goTooLarge) && p[9] == '4' && p[10] == '3' && p[11] == '1' && bytes.HasPrefix(p, goTooLarge) {
		c.mu.Lock()
		lim := c.lim
		c.mu.Unlock()
		if lim != nil {
			lim.HeaderBytes.Inc()
		}
	}
	return c.Conn.Write(p)
}

// CloseWrite half-closes the connection, as Go's server does before it
// closes one it has refused (so the client reads the refusal, not a reset).
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// headSize is the size of r's head as the native engine counts it, from
// what Go's server parsed: the request line, each field as "Name: value"
// with its line end (Host and Transfer-Encoding included, which Go takes
// out of the fields), and the empty line. Whitespace around field values,
// which Go drops, is not counted.
func headSize(r *http.Request) int {
	n := len(r.Method) + len(" ") + len(r.RequestURI) + len(" ") + len(r.Proto) + len("\r\n\r\n")
	if r.Host != "" {
		n += len("Host: \r\n") + len(r.Host)
	}
	if len(r.TransferEncoding) > 0 {
		n += len("Transfer-Encoding: \r\n") + len(r.TransferEncoding) - 1
		for _, te := range r.TransferEncoding {
			n += len(te)
		}
	}
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + len(": \r\n") + len(v)
		}
	}
	return n
}
