package nethttp

import (
	"io"
	"net"
)

// Listener wraps the proxy listener of the net/http engine so that one
// empty line a client sends before its first request line is ignored, as
// RFC 9112 2.2 asks and the native engine does. (Go's server itself skips
// such a line only after a POST.) It costs one small read per connection.
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &crlfConn{Conn: nc}, nil
}

// crlfConn drops a CRLF at the very start of a connection: it reads the
// first two bytes on its own, and gives them back unless they are CRLF.
type crlfConn struct {
	net.Conn
	started bool
	pending []byte // the first bytes, not yet returned
	err     error  // the first read's error, after pending
	first   [2]byte
}

func (c *crlfConn) Read(p []byte) (int, error) {
	if !c.started {
		c.started = true
		n, err := io.ReadAtLeast(c.Conn, c.first[:], len(c.first))
		if n == 2 && c.first[0] == '\r' && c.first[1] == '\n' {
			n = 0
		}
		c.pending, c.err = c.first[:n], err
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
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
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection, as Go's server does before it
// closes one it has refused (so the client reads the refusal, not a reset).
func (c *crlfConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
