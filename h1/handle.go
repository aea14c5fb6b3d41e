package h1

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/geoproxy/geoproxy/balancer"
	"github.com/geoproxy/geoproxy/route"
)

// errClient marks a failure to write to the client: nothing is retried and
// the connection ends.
var errClient = errors.New("client connection failed")

// handle serves one request whose head is raw (still in the read buffer);
// it reports whether the connection may carry another request.
func (c *conn) handle(raw []byte) bool {
	e := c.e
	err := c.req.parseRequest(raw)
	_, _ = c.br.Discard(len(raw))
	if err != nil {
		c.refuse(err)
		return false
	}
	start := time.Now()
	c.now = start
	r := &c.req
	r.dropConnectionTokens()
	c.wantsEnd = r.close || e.closing.Load()
	if err := c.readBody(); err != nil {
		c.refuse(err)
		return false
	}
	e.inFlight.Inc()

	// Where the client is, from the peer and the forwarding headers.
	n, nf := 0, 0
	for _, f := range r.fields {
		if f.kind == kindForwarded && n < len(c.vals) {
			c.vals[n] = b2s(f.value)
			n++
		}
	}
	nf = n
	for _, f := range r.fields {
		if f.kind == kindXFF && n < len(c.vals) {
			c.vals[n] = b2s(f.value)
			n++
		}
	}
	c.d = balancer.Decision{}
	e.b.Decide(&c.d, c.peer, c.vals[:nf], c.vals[nf:n])
	clear(c.vals[:n])
	c.prepare()

	method := b2s(r.method)
	var (
		region  *route.Region
		be      *route.Backend
		lastErr error
		status  int
		sent    bool
	)
	for attempt := 0; ; attempt++ {
		rg, b := e.b.Next(&c.d)
		if b == nil {
			break
		}
		if attempt > 0 {
			c.now = time.Now() // the last attempt may have taken a while
		}
		p := e.pools[b]
		var err error
		if r.upgrade {
			status, sent, err = c.tunnel(p, rg)
		} else {
			status, sent, err = c.forward(p, rg, method)
		}
		if err == nil {
			region, be, lastErr = rg, b, nil
			break
		}
		lastErr = err
		if sent || errors.Is(err, errClient) {
			region, be = rg, b
			break
		}
		if err == errShuttingDown {
			break
		}
		e.b.UpstreamError(b)
		if !balancer.MayRetry(err, method) {
			break
		}
	}
	keep := !c.wantsEnd && lastErr == nil
	if be == nil {
		code, msg := balancer.Failure(&c.d, lastErr)
		retryAfter := ""
		if code == http.StatusServiceUnavailable {
			retryAfter = e.retryAfter
		}
		c.out = appendPlain(c.out[:0], code, msg, retryAfter, c.wantsEnd)
		status = code
		keep = !c.wantsEnd
	}

	dur := time.Since(start)
	c.now = start.Add(dur)
	o := balancer.Outcome{Status: status, Region: region, Backend: be, Duration: dur, Err: lastErr}
	if e.b.AccessLog() {
		o.Method, o.Host, o.Path = string(r.method), string(r.host), string(pathOf(r.target))
	}
	e.inFlight.Dec()
	e.b.Report(&c.d, o)
	// The last bytes go out after the report, so a client that has its
	// answer finds it counted.
	if err := c.flush(); err != nil {
		keep = false
	}
	if cap(c.body) > 1<<20 {
		c.body = nil // do not keep a large buffer on an idle connection
	}
	return keep && !r.upgrade
}

// readBody reads the request body into c.body.
func (c *conn) readBody() error {
	r := &c.req
	c.body = c.body[:0]
	c.hasBody = r.chunked || r.contentLength >= 0
	if !r.chunked && r.contentLength <= 0 {
		return nil
	}
	if r.contentLength > MaxRequestBody {
		return errBodyTooBig
	}
	if r.expect100 && r.minor == 1 && c.br.Buffered() == 0 {
		c.armWrite(c.now)
		if _, err := c.nc.Write(continue100); err != nil {
			return err
		}
	}
	waited := false
	if r.chunked {
		var err error
		c.body, waited, err = readChunked(c.br, c.body, MaxRequestBody)
		if err != nil {
			return err
		}
	} else {
		n := int(r.contentLength)
		waited = c.br.Buffered() < n
		var err error
		if c.body, err = readN(c.br, c.body, n); err != nil {
			return err
		}
	}
	if waited {
		c.now = time.Now()
	}
	return nil
}

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// readN appends n bytes from br to dst. The buffer grows with what arrives,
// not with what the client announced, so a large Content-Length costs
// memory only once its bytes come.
func readN(br *bufio.Reader, dst []byte, n int) ([]byte, error) {
	for n > 0 {
		if len(dst) == cap(dst) {
			dst = slices.Grow(dst, min(n, max(cap(dst), 64<<10)))
		}
		k := min(n, cap(dst)-len(dst))
		m, err := io.ReadFull(br, dst[len(dst):len(dst)+k])
		dst = dst[:len(dst)+m]
		n -= m
		if err != nil {
			return dst, readErr(err)
		}
	}
	return dst, nil
}

// readErr maps a failed read of a request to the error its answer names:
// 408 for a client too slow, 400 for one that ended mid-message.
func readErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errTimeout
	}
	return errMalformed
}

// readChunked decodes a chunked body from br, appending it to dst; waited
// says whether it had to wait for the network.
func readChunked(br *bufio.Reader, dst []byte, limit int) ([]byte, bool, error) {
	waited := false
	for {
		waited = waited || br.Buffered() == 0
		size, err := chunkSize(br)
		if err != nil {
			return dst, waited, err
		}
		if size == 0 {
			// Trailer fields, checked and dropped, up to the empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return dst, waited, errBadChunk
				}
				if len(line) == 2 && line[0] == '\r' {
					return dst, waited, nil
				}
				if !validFieldLine(line) {
					return dst, waited, errBadChunk
				}
			}
		}
		if len(dst)+size > limit {
			return dst, waited, errBodyTooBig
		}
		waited = waited || br.Buffered() < size+2
		if dst, err = readN(br, dst, size); err != nil {
			if err != errTimeout {
				err = errBadChunk
			}
			return dst, waited, err
		}
		if err := chunkEnd(br); err != nil {
			return dst, waited, err
		}
	}
}

// chunkSize reads a chunk-size line (extensions ignored).
func chunkSize(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil || len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, errBadChunk
	}
	line = line[:len(line)-2]
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = trimOWS(line)
	if len(line) == 0 || len(line) > 8 {
		return 0, errBadChunk
	}
	n := 0
	for _, ch := range line {
		var v byte
		switch {
		case '0' <= ch && ch <= '9':
			v = ch - '0'
		case 'a' <= ch && ch <= 'f':
			v = ch - 'a' + 10
		case 'A' <= ch && ch <= 'F':
			v = ch - 'A' + 10
		default:
			return 0, errBadChunk
		}
		n = n<<4 | int(v)
	}
	if n > 1<<30 {
		return 0, errBadChunk // beyond any limit, and beyond int on 32-bit
	}
	return n, nil
}

func chunkEnd(br *bufio.Reader) error {
	b, err := br.Peek(2)
	if err != nil || b[0] != '\r' || b[1] != '\n' {
		return errBadChunk
	}
	_, _ = br.Discard(2)
	return nil
}

// prepare decides the forwarding headers and marks the client fields the
// proxy replaces.
func (c *conn) prepare() {
	e, r := c.e, &c.req
	c.trusted = c.peer.IsValid() && e.b.Resolver().Trusted(c.peer)
	c.xfHost, c.xfProto = false, false
	xff := c.xff[:0]
	for i := range r.fields {
		f := &r.fields[i]
		switch f.kind {
		case kindXFF:
			if c.trusted {
				if len(xff) > 0 {
					xff = append(xff, ", "...)
				}
				xff = append(xff, f.value...)
			}
		case kindXFHost:
			c.xfHost = c.xfHost || c.trusted
		case kindXFProto:
			c.xfProto = c.xfProto || c.trusted
		case kindOther:
			if bytes.IndexByte(f.name, '_') >= 0 {
				// Apps behind CGI-style gateways read X_Forwarded_For as
				// X-Forwarded-For: such names are dropped, as nginx does.
				f.kind = kindDropped
				continue
			}
			for _, name := range e.geoNames {
				if equalFoldBytes(f.name, name) {
					f.kind = kindDropped
					break
				}
			}
		}
	}
	if c.peer.IsValid() {
		if len(xff) > 0 {
			xff = append(xff, ", "...)
		}
		xff = c.peer.AppendTo(xff)
	}
	c.xff = xff
}

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
	if !c.xfProto {
		dst = append(dst, "X-Forwarded-Proto: http\r\n"...)
	}
	for i, hd := range c.e.opts.RequestHeaders {
		c.tmp = balancer.AppendHeader(c.tmp[:0], hd.Template, &c.d, region)
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
		dst = strconv.AppendInt(dst, int64(len(c.body)), 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	if len(c.body) <= 16<<10 {
		dst = append(dst, c.body...)
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
	nc, err := c.e.dialer.Dial("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	bc := &bconn{nc: nc}
	if p.tls {
		bc.nc = tls.Client(nc, &tls.Config{ServerName: p.be.URL.Hostname(), MinVersion: tls.VersionTLS12})
	} else if sc, ok := nc.(syscall.Conn); ok {
		bc.raw, _ = sc.SyscallConn()
	}
	bc.br = bufio.NewReaderSize(bc.nc, MaxHead)
	return bc, nil
}

// forward makes one attempt on a backend of pool p and, on success, sends
// the response to the client. sent reports that the client got part of an
// answer (so nothing may be retried).
func (c *conn) forward(p *pool, region *route.Region, method string) (status int, sent bool, err error) {
	bc := p.get(c.now, !balancer.Idempotent(method))
	reused := bc != nil
	if bc == nil {
		if bc, err = c.dial(p); err != nil {
			return 0, false, err
		}
	}
	c.inUse.Store(bc)
	defer c.inUse.Store(nil)
	p.be.Acquire()
	defer p.be.Release()
	c.out = c.appendRequest(c.out[:0], p, region, false)
	ok, err := c.exchange(bc)
	if err != nil && reused && !ok && closedByPeer(err) && (errors.Is(err, errNothingWritten) || balancer.Idempotent(method)) {
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
	if err := c.e.b.RetryStatus(&c.d, c.resp.status, method, len(c.body) > 0); err != nil {
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

// exchange writes the request in c.out (and the body if it was too large
// to be appended) and reads the response head into c.resp, skipping
// informational responses. ok reports whether any response byte came.
func (c *conn) exchange(bc *bconn) (ok bool, err error) {
	if t := c.e.opts.ResponseHeaderTimeout; t > 0 && (bc.armed.IsZero() || c.now.Sub(bc.armed) > t/4) {
		// Coarse, like the client's: the wait is bounded by 3/4 to 1 of t.
		_ = bc.nc.SetReadDeadline(c.now.Add(t))
		bc.armed = c.now
	}
	if t := c.e.clientTimeout; c.now.Sub(bc.wArmed) > t/4 {
		// A backend that stops reading the request is given up on.
		_ = bc.nc.SetWriteDeadline(c.now.Add(t))
		bc.wArmed = c.now
	}
	if n, err := bc.nc.Write(c.out); err != nil {
		if n == 0 {
			return false, errors.Join(errNothingWritten, err)
		}
		return false, err
	}
	if len(c.body) > 16<<10 {
		if _, err := bc.nc.Write(c.body); err != nil {
			return false, err
		}
	}
	for {
		raw, err := readBackendHead(bc.br)
		if err != nil {
			return raw != nil, err
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

// relay sends the response in c.resp and its body to the client, then
// returns the backend connection to p (when pooled and reusable) or closes
// it.
func (c *conn) relay(p *pool, bc *bconn, region *route.Region, method string, pooled bool) (status int, sent bool, err error) {
	rs := &c.resp
	rs.dropConnectionTokens()
	status = rs.status
	reusable := pooled && !rs.close
	client10 := c.req.minor == 0

	// How the body is framed to the client.
	const (
		none = iota
		length
		chunked
		untilClose
	)
	framing := none
	switch {
	case noBody(method, rs.status):
	case rs.contentLength >= 0:
		framing = length
	case client10:
		framing = untilClose
		c.wantsEnd = true
	default:
		framing = chunked
	}
	c.out = c.appendResponseHead(c.out[:0], region, framing == chunked, noBody(method, rs.status))

	br := bc.br
	switch {
	case framing == none:
		if reusable {
			p.put(bc, c.now)
		} else {
			_ = bc.nc.Close()
		}
		return status, true, nil // handle writes c.out
	case framing == length && int64(br.Buffered()) >= rs.contentLength:
		// The common case: the whole body is here. One write, and the
		// backend connection goes back first.
		body, _ := br.Peek(int(rs.contentLength))
		c.out = append(c.out, body...)
		_, _ = br.Discard(len(body))
		if reusable {
			p.put(bc, c.now)
		} else {
			_ = bc.nc.Close()
		}
		return status, true, nil // handle writes c.out
	}

	// Streamed: no deadline on reading the body, only on heads; the
	// client must keep reading (see flush).
	if !bc.armed.IsZero() {
		_ = bc.nc.SetReadDeadline(time.Time{})
		bc.armed = time.Time{}
	}
	c.streaming = true
	defer c.endStreaming()
	switch framing {
	case length:
		err = c.copyN(br, rs.contentLength)
	case chunked:
		if rs.chunked {
			err = c.copyChunked(br, true)
		} else {
			err = c.copyUntilEOF(br, true)
			reusable = false
		}
	case untilClose:
		if rs.chunked {
			err = c.copyChunked(br, false)
		} else {
			err = c.copyUntilEOF(br, false)
			reusable = false
		}
	}
	if err == nil && reusable {
		p.put(bc, c.now)
	} else {
		_ = bc.nc.Close()
	}
	if err != nil {
		c.wantsEnd = true
	}
	return status, true, err
}

// appendResponseHead appends the head sent to the client.
func (c *conn) appendResponseHead(dst []byte, region *route.Region, chunked, bodiless bool) []byte {
	rs, e := &c.resp, c.e
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(rs.status), 10)
	dst = append(dst, ' ')
	if len(rs.reason) > 0 {
		dst = append(dst, rs.reason...)
	} else {
		dst = append(dst, http.StatusText(rs.status)...)
	}
	dst = append(dst, "\r\n"...)
	regionHeader := e.opts.RegionHeader
	for _, f := range rs.fields {
		switch f.kind {
		case kindContentLength, kindTransferEncoding, kindConnection, kindHop, kindDropped:
			continue
		}
		if regionHeader != "" && equalFold2(f.name, regionHeader) {
			continue
		}
		dst = appendField(dst, f.name, f.value)
	}
	if regionHeader != "" && region != nil {
		dst = append(dst, regionHeader...)
		dst = append(dst, ": "...)
		dst = append(dst, region.Name...)
		dst = append(dst, "\r\n"...)
	}
	switch {
	case rs.contentLength >= 0 && (!bodiless || rs.status != http.StatusNoContent && rs.status >= 200):
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, rs.contentLength, 10)
		dst = append(dst, "\r\n"...)
	case chunked && len(rs.codings) > 0:
		dst = append(dst, "Transfer-Encoding: "...)
		dst = append(dst, rs.codings...)
		dst = append(dst, ", chunked\r\n"...)
	case chunked:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	// To an HTTP/1.0 client, a body with codings other than chunked goes
	// as coded, until close, without Transfer-Encoding (RFC 9112 6.1).
	c.wantsEnd = c.wantsEnd || e.closing.Load()
	switch {
	case c.wantsEnd:
		dst = append(dst, "Connection: close\r\n"...)
	case c.req.minor == 0:
		dst = append(dst, "Connection: keep-alive\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// equalFold2 compares a field name with a configured name, ignoring case.
func equalFold2(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	return equalFoldBytes(b, unsafe.Slice(unsafe.StringData(s), len(s)))
}

// flush writes c.out to the client. While a body is streamed, a client
// that stops reading for the client timeout is cut off (the deadline is
// moved coarsely, like the read deadline).
func (c *conn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	if c.streaming {
		c.armWrite(time.Now())
	} else {
		c.armWrite(c.now)
	}
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		return errors.Join(errClient, err)
	}
	return nil
}

// armWrite keeps a write deadline of about the client timeout ahead of
// now, moved at most once per quarter of it: a client that stops reading
// is cut off, and the common answer costs no timer update.
func (c *conn) armWrite(now time.Time) {
	if t := c.e.clientTimeout; now.Sub(c.wArmed) > t/4 {
		_ = c.nc.SetWriteDeadline(now.Add(t))
		c.wArmed = now
	}
}

// endStreaming ends a streamed body; the clock moved meanwhile.
func (c *conn) endStreaming() {
	c.streaming = false
	c.now = time.Now()
}

// fill makes sure br has buffered data, flushing what is pending for the
// client before waiting on the backend.
func (c *conn) fill(br *bufio.Reader) error {
	if br.Buffered() > 0 {
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	_, err := br.Peek(1)
	return err
}

// copyN streams n body bytes.
func (c *conn) copyN(br *bufio.Reader, n int64) error {
	for n > 0 {
		if err := c.fill(br); err != nil {
			return err
		}
		k := int(min(int64(br.Buffered()), n))
		b, _ := br.Peek(k)
		c.out = append(c.out, b...)
		_, _ = br.Discard(k)
		n -= int64(k)
		if len(c.out) >= 32<<10 {
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
	return nil // the rest is in c.out, for handle to write
}

// copyChunked streams a chunked body, re-chunked for the client (chunk
// boundaries kept) or decoded for an HTTP/1.0 client.
func (c *conn) copyChunked(br *bufio.Reader, chunk bool) error {
	for {
		if err := c.fillLine(br); err != nil {
			return err
		}
		size, err := chunkSize(br)
		if err != nil {
			return err
		}
		if size == 0 {
			if chunk {
				c.out = append(c.out, "0\r\n"...)
			}
			for {
				if err := c.fillLine(br); err != nil {
					return err
				}
				line, err := br.ReadSlice('\n')
				if err != nil {
					return errBadChunk
				}
				last := len(line) == 2 && line[0] == '\r'
				if !last && !validFieldLine(line) {
					return errBadChunk
				}
				if chunk && (last || classify(line[:bytes.IndexByte(line, ':')]) == kindOther) {
					c.out = append(c.out, line...)
				}
				if last {
					return nil // the rest is in c.out, for handle to write
				}
			}
		}
		if chunk {
			c.out = strconv.AppendInt(c.out, int64(size), 16)
			c.out = append(c.out, "\r\n"...)
		}
		for size > 0 {
			if err := c.fill(br); err != nil {
				return err
			}
			k := min(br.Buffered(), size)
			b, _ := br.Peek(k)
			c.out = append(c.out, b...)
			_, _ = br.Discard(k)
			size -= k
			if len(c.out) >= 32<<10 {
				if err := c.flush(); err != nil {
					return err
				}
			}
		}
		if chunk {
			c.out = append(c.out, "\r\n"...)
		}
		if err := c.fillN(br, 2); err != nil {
			return err
		}
		if err := chunkEnd(br); err != nil {
			return err
		}
	}
}

// fillLine flushes before waiting for a whole line from the backend.
func (c *conn) fillLine(br *bufio.Reader) error {
	if b, _ := br.Peek(br.Buffered()); bytes.IndexByte(b, '\n') >= 0 {
		return nil
	}
	return c.flush()
}

// fillN flushes before waiting for n bytes from the backend.
func (c *conn) fillN(br *bufio.Reader, n int) error {
	if br.Buffered() >= n {
		return nil
	}
	return c.flush()
}

// copyUntilEOF streams a body that ends when the backend closes, chunked
// for an HTTP/1.1 client.
func (c *conn) copyUntilEOF(br *bufio.Reader, chunk bool) error {
	for {
		if err := c.fill(br); err != nil {
			if errors.Is(err, io.EOF) {
				if chunk {
					c.out = append(c.out, "0\r\n\r\n"...)
				}
				return nil // the rest is in c.out, for handle to write
			}
			return err
		}
		k := br.Buffered()
		b, _ := br.Peek(k)
		if chunk {
			c.out = strconv.AppendInt(c.out, int64(k), 16)
			c.out = append(c.out, "\r\n"...)
		}
		c.out = append(c.out, b...)
		_, _ = br.Discard(k)
		if chunk {
			c.out = append(c.out, "\r\n"...)
		}
	}
}

// tunnel sends an upgrade request to a backend of pool p on a connection
// of its own; on 101 it passes the answer on and copies bytes both ways
// until either side closes. Any other answer is relayed as a response.
func (c *conn) tunnel(p *pool, region *route.Region) (status int, sent bool, err error) {
	bc, err := c.dial(p)
	if err != nil {
		return 0, false, err
	}
	c.inUse.Store(bc)
	defer c.inUse.Store(nil)
	c.out = c.appendRequest(c.out[:0], p, region, true)
	if _, err = c.exchange(bc); err != nil {
		_ = bc.nc.Close()
		return 0, false, err
	}
	if c.resp.status != http.StatusSwitchingProtocols {
		c.wantsEnd = true
		return c.relay(p, bc, region, b2s(c.req.method), false)
	}
	// 101: the head goes as it came (Connection and Upgrade included).
	rs := &c.resp
	out := append(c.out[:0], "HTTP/1.1 101 "...)
	out = append(out, rs.reason...)
	out = append(out, "\r\n"...)
	for _, f := range rs.fields {
		if c.e.opts.RegionHeader != "" && equalFold2(f.name, c.e.opts.RegionHeader) {
			continue
		}
		out = appendField(out, f.name, f.value)
	}
	if c.e.opts.RegionHeader != "" {
		out = append(out, c.e.opts.RegionHeader...)
		out = append(out, ": "...)
		out = append(out, region.Name...)
		out = append(out, "\r\n"...)
	}
	c.out = append(out, "\r\n"...)
	if !c.e.track(bc.nc) {
		_ = bc.nc.Close()
		return 0, false, errShuttingDown
	}
	defer c.e.untrack(bc.nc)
	defer bc.nc.Close()
	c.now = time.Now() // the backend may have taken a while to switch
	if err := c.flush(); err != nil {
		return status, true, err
	}
	c.wantsEnd = true
	// A tunnel lives as long as both sides want: no deadlines.
	_ = c.nc.SetDeadline(time.Time{})
	_ = bc.nc.SetDeadline(time.Time{})
	c.e.wg.Add(1)
	done := make(chan struct{})
	t := c.e.clientTimeout
	go func() {
		defer c.e.wg.Done()
		defer close(done)
		pump(bc.nc, c.br, t) // the client's bytes, buffered ones first
		// The client is done sending: the backend has the client timeout
		// to finish, rather than forever.
		closeWrite(bc.nc)
		_ = bc.nc.SetReadDeadline(time.Now().Add(t))
	}()
	p.be.Acquire()
	pump(c.nc, bc.br, t)
	p.be.Release()
	_ = c.nc.Close()
	<-done
	return http.StatusSwitchingProtocols, true, nil
}

// pump copies a tunnel's bytes from src to dst until either fails. Reading
// may wait as long as it takes (a quiet WebSocket), but each write must
// finish within t: a side that stops reading is given up on.
func pump(dst net.Conn, src io.Reader, t time.Duration) {
	buf := make([]byte, 32<<10)
	var armed time.Time
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if now := time.Now(); now.Sub(armed) > t/4 {
				_ = dst.SetWriteDeadline(now.Add(t))
				armed = now
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func closeWrite(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// b2s views b as a string without copying; the string must not outlive
// the request.
func b2s(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func pathOf(target []byte) []byte {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		return target[:i]
	}
	return target
}
