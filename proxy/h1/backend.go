package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/geoproxy/geoproxy/proxy/core"
	"github.com/geoproxy/geoproxy/route"
)

// appendRequest appends the request head for one backend, and the body if
// it is small.
func (c *conn) appendRequest(dst []byte, p *pool, region *route.Region, upgrade bool) []byte {
	r := &c.req
	dst = append(dst, r.method...)
	dst = append(dst, ' ')
	if p.base != "" {
		dst = append(dst, p.base...)
		if r.target[0] != '/' {
			dst = append(dst, '/')
		}
	}
	dst = append(dst, r.target...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, p.host...)
	dst = append(dst, "\r\n"...)
	for _, f := range r.fields {
		switch f.kind {
		case kindOther:
		case kindXFHost:
			if !c.xfHost {
				continue
			}
		case kindXFProto:
			if !c.xfProto {
				continue
			}
		default:
			continue
		}
		dst = appendField(dst, f.name, f.value)
	}
	if len(c.xff) > 0 {
		dst = appendFieldS(dst, "X-Forwarded-For", c.xff)
	}
	if !c.xfHost && len(r.host) > 0 {
		dst = appendFieldS(dst, "X-Forwarded-Host", r.host)
	}
	switch {
	case c.xfProto:
	case c.tls:
		dst = append(dst, "X-Forwarded-Proto: https\r\n"...)
	default:
		dst = append(dst, "X-Forwarded-Proto: http\r\n"...)
	}
	dst = appendFieldS(dst, core.RequestIDHeader, c.reqID)
	for i, hd := range c.e.opts.RequestHeaders {
		c.tmp = core.AppendHeader(c.tmp[:0], hd.Template, &c.d, region)
		if len(c.tmp) > 0 && validValue(c.tmp) {
			dst = appendField(dst, c.e.geoNames[i], c.tmp)
		}
	}
	if upgrade {
		dst = append(dst, "Connection: Upgrade\r\n"...)
		dst = appendFieldS(dst, "Upgrade", r.upgradeValue)
	}
	if c.hasBody {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(c.body.size()), 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	if len(c.body.chunks) == 1 {
		dst = append(dst, c.body.chunks[0]...) // a small body goes in the same write
	}
	return dst
}

func appendField(dst, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

func appendFieldS(dst []byte, name string, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// dial opens a backend connection.
func (c *conn) dial(p *pool) (*bconn, error) {
	return dialBackend(context.Background(), &c.e.dialer, p)
}

// forward makes one attempt on a backend of pool p and, on success, sends
// the response to the client. sent reports that the client got part of an
// answer (so nothing may be retried).
func (c *conn) forward(p *pool, region *route.Region, method string) (status int, sent bool, err error) {
	bc := p.get(c.now)
	reused := bc != nil
	if bc == nil {
		if bc, err = c.dial(p); err != nil {
			return 0, false, err
		}
	}
	c.inUse.Store(bc)
	defer func() {
		if r := recover(); r != nil {
			_ = c.inUse.Load().nc.Close() // a panic: the connection's state is unknown
			panic(r)
		}
		c.inUse.Store(nil)
	}()
	p.be.Acquire()
	defer p.be.Release()
	c.out = c.appendRequest(c.out[:0], p, region, false)
	ok, err := c.exchange(bc)
	if err != nil && redial(reused, err, errors.Is(err, errNothingWritten), ok, false, method) {
		// The backend closed an idle connection: once more on a new one.
		_ = bc.nc.Close()
		c.now = time.Now()
		if bc, err = c.dial(p); err != nil {
			return 0, false, err
		}
		c.inUse.Store(bc)
		_, err = c.exchange(bc)
	}
	if err != nil {
		_ = bc.nc.Close()
		return 0, false, err
	}
	if c.resp.status == http.StatusSwitchingProtocols {
		// Nobody asked to switch: the connection now speaks something else.
		_ = bc.nc.Close()
		return 0, false, errBadResponse
	}
	if err := c.e.b.RetryStatus(&c.d, c.resp.status, method, c.body.size() > 0); err != nil {
		c.discard(p, bc, method)
		return 0, false, err
	}
	return c.relay(p, bc, region, method, true)
}

// closedByPeer reports the errors of a connection the backend had closed:
// EOF before any answer, a reset, a broken pipe. A timeout is not one.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// errShuttingDown: a tunnel asked for while the engine shuts down.
var errShuttingDown = errors.New("shutting down")

// errNothingWritten: the request could not be written at all.
var errNothingWritten = errors.New("request not written")

// armHead sets bc's read deadline for the answer head: the try's timeout
// (see core.Balancer.TryTimeout) from c.now. Coarse, like the client's: a
// deadline already set is kept when it falls within the last quarter of
// the timeout, so that most requests on a connection set none.
func (c *conn) armHead(bc *bconn) {
	t := c.e.b.TryTimeout(&c.d, c.now)
	if t <= 0 {
		if !bc.armed.IsZero() {
			_ = bc.nc.SetReadDeadline(time.Time{})
			bc.armed = time.Time{}
		}
		return
	}
	want := c.now.Add(t)
	if bc.armed.IsZero() || bc.armed.After(want) || want.Sub(bc.armed) > t/4 {
		_ = bc.nc.SetReadDeadline(want)
		bc.armed = want
	}
}

// exchange writes the request in c.out (and the body if it was too large
// to be appended) and reads the response head into c.resp, skipping
// informational responses. ok reports whether any response byte came.
func (c *conn) exchange(bc *bconn) (ok bool, err error) {
	c.armHead(bc)
	if t := c.e.idleTimeout; c.now.Sub(bc.wArmed) > t/4 {
		// A backend that stops reading the request is given up on.
		_ = bc.nc.SetWriteDeadline(c.now.Add(t))
		bc.wArmed = c.now
	}
	var werr error // the request could not be written whole
	if n, err := bc.nc.Write(c.out); err != nil {
		if n == 0 {
			return false, errors.Join(errNothingWritten, err)
		}
		werr = err
	}
	if len(c.body.chunks) > 1 && werr == nil {
		bufs := c.body.buffers()
		if _, err := bufs.WriteTo(bc.nc); err != nil {
			werr = err
		}
		// The header timeout runs from the end of the request.
		c.now = time.Now()
		c.armHead(bc)
	}
	for {
		raw, err := readBackendHead(bc.br)
		if err != nil {
			if werr != nil && raw == nil {
				err = werr // it stopped reading, and said nothing
			}
			return raw != nil, err
		}
		if werr != nil {
			// It answered before it had read the whole request (a 413,
			// say): the answer goes through; the connection is not reused.
			defer func() { c.resp.close = true }()
		}
		err = c.resp.parseResponse(raw)
		_, _ = bc.br.Discard(len(raw))
		if err != nil {
			return true, err
		}
		if c.resp.status >= 200 || c.resp.status == http.StatusSwitchingProtocols {
			return true, nil
		}
	}
}

// readBackendHead waits for a whole response head; the head is nil if the
// connection ended before any byte came.
func readBackendHead(br *bufio.Reader) ([]byte, error) {
	return readHead(br, errBadResponse, backendReadErr)
}

// backendReadErr keeps a timeout (504) and turns the rest into 502.
func backendReadErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errBadResponse
}

// noBody reports whether a response to method with this status has no body.
func noBody(method string, status int) bool {
	return method == "HEAD" || status == http.StatusNoContent || status == http.StatusNotModified || status < 200
}

// discard drops a response that is retried elsewhere, keeping the backend
// connection when its body is already here.
func (c *conn) discard(p *pool, bc *bconn, method string) {
	rs := &c.resp
	switch {
	case rs.close:
	case noBody(method, rs.status):
		p.put(bc, c.now)
		return
	case rs.contentLength >= 0 && int64(bc.br.Buffered()) >= rs.contentLength:
		_, _ = bc.br.Discard(int(rs.contentLength))
		p.put(bc, c.now)
		return
	}
	_ = bc.nc.Close()
}
