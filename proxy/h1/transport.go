package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"sync"
	"time"

	"github.com/geoproxy/geoproxy/route"
)

// Transport is an http.RoundTripper over the engine's backend connection
// pools: how the net/http engine reaches its backends, so that both engines
// keep and reuse backend connections by the same rules (see fresh). Go's
// own http.Transport puts a connection back in its idle pool before it
// looks at bytes already read past an answer, so such bytes can become
// another request's answer (golang/go#68653); this one returns a connection
// only when its answer ended exactly where its framing said, and peeks at
// it again before reuse.
//
// It speaks HTTP/1.1 to the backends it was made for, writes the request as
// the proxy prepared it (no header added or changed but the framing ones),
// and passes the answer through undecoded.
type Transport struct {
	pools         map[string]*pool // by scheme and host
	dialer        net.Dialer
	headerTimeout time.Duration
	headerFor     func(*http.Request) time.Duration
	writeTimeout  time.Duration
	stop          chan struct{} // closed by Close: the reaper ends
	reaped        sync.WaitGroup
	closeOnce     sync.Once
}

// TransportOptions configure a Transport.
type TransportOptions struct {
	// Backends are every backend requests may go to.
	Backends []*route.Backend
	// DialTimeout bounds connecting to a backend.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an answer's head once the
	// request is written; zero means none.
	ResponseHeaderTimeout time.Duration
	// HeaderTimeout, when set, gives each request's ResponseHeaderTimeout
	// instead, asked once the request is written.
	HeaderTimeout func(*http.Request) time.Duration
	// WriteTimeout bounds each write of a request to a backend (a backend
	// that stops reading); zero means DefaultClientTimeout.
	WriteTimeout time.Duration
}

// NewTransport returns a Transport to the given backends.
func NewTransport(o TransportOptions) *Transport {
	t := &Transport{
		pools:         map[string]*pool{},
		dialer:        net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second},
		headerTimeout: o.ResponseHeaderTimeout,
		headerFor:     o.HeaderTimeout,
		writeTimeout:  o.WriteTimeout,
	}
	if t.writeTimeout <= 0 {
		t.writeTimeout = DefaultClientTimeout
	}
	for _, be := range o.Backends {
		key := poolKey(be.URL.Scheme, be.URL.Host)
		if _, ok := t.pools[key]; !ok {
			t.pools[key] = newPool(be)
		}
	}
	t.stop = make(chan struct{})
	t.reaped.Go(t.reap)
	return t
}

// reap closes expired idle connections every few seconds, so that a pool
// shrinks when no request comes, until Close.
func (t *Transport) reap() {
	tick := time.NewTicker(backendIdle / 4)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tick.C:
			for _, p := range t.pools {
				p.reap(now)
			}
		}
	}
}

// Close stops the Transport's reaper and closes its idle connections.
// Connections in use close when their requests end.
func (t *Transport) Close() {
	t.closeOnce.Do(func() { close(t.stop) })
	t.reaped.Wait()
	t.CloseIdleConnections()
}

func poolKey(scheme, host string) string { return scheme + "://" + host }

// CloseIdleConnections closes every idle backend connection.
func (t *Transport) CloseIdleConnections() {
	for _, p := range t.pools {
		p.closeAll()
	}
}

// errUnknownBackend: a request for a host the Transport was not made for.
var errUnknownBackend = errors.New("not a configured backend")

// RoundTrip sends one request on a fresh pooled connection or a new one,
// and returns the answer. A pooled connection the backend had closed is
// replaced once, as the native engine does, when nothing of the request
// could have reached the backend or the request may be repeated.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	p := t.pools[poolKey(req.URL.Scheme, req.URL.Host)]
	if p == nil {
		closeBody(req)
		return nil, fmt.Errorf("%s: %w", req.URL.Host, errUnknownBackend)
	}
	ctx := req.Context()
	head := appendOutgoing(nil, req)
	hasBody := req.Body != nil && req.Body != http.NoBody
	bc := p.get(time.Now())
	reused := bc != nil
	for {
		if bc == nil {
			var err error
			if bc, err = dialBackend(ctx, &t.dialer, p); err != nil {
				closeBody(req)
				return nil, err
			}
		}
		res, err := t.exchange(ctx, p, bc, req, head, hasBody)
		if err == nil {
			return res, nil
		}
		_ = bc.nc.Close()
		var ex *exchangeError
		if errors.As(err, &ex) && redial(reused, ex.err, ex.nothingWritten, ex.answered, ex.bodyRead, req.Method) && ctx.Err() == nil {
			reused, bc = false, nil // the backend closed an idle connection: once more on a new one
			continue
		}
		closeBody(req)
		if errors.As(err, &ex) {
			err = ex.err
		}
		return nil, err
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// exchangeError is a failed exchange, with how far it got.
type exchangeError struct {
	err            error
	nothingWritten bool // not a byte of the request was written
	bodyRead       bool // some of the request body was read
	answered       bool // some of the answer came
}

func (e *exchangeError) Error() string { return e.err.Error() }
func (e *exchangeError) Unwrap() error { return e.err }

// exchange writes the request on bc, body included, then reads the
// answer's head. The body is written before the answer is read, in the
// request's own goroutine, as nginx does: nothing reads it once RoundTrip
// has returned. A backend that answers early and stops reading makes the
// write fail; its answer, if it sent one, is still read and passed on.
func (t *Transport) exchange(ctx context.Context, p *pool, bc *bconn, req *http.Request, out []byte, hasBody bool) (*http.Response, error) {
	// A client that goes away ends the wait for the backend.
	stop := context.AfterFunc(ctx, func() { _ = bc.nc.SetDeadline(time.Unix(1, 0)) })
	_ = bc.nc.SetWriteDeadline(time.Now().Add(t.writeTimeout))
	if n, err := bc.nc.Write(out); err != nil {
		stop()
		return nil, &exchangeError{err: ctxErr(ctx, err), nothingWritten: n == 0}
	}
	var (
		body *countingReader
		werr error
	)
	if hasBody {
		body = &countingReader{r: req.Body}
		werr = t.writeBody(bc, req, body)
		var rerr *bodyReadError
		if errors.As(werr, &rerr) {
			// The client failed to send its body: the backend has only
			// part of the request, and waiting for its answer is pointless.
			stop()
			return nil, &exchangeError{err: rerr.err, bodyRead: true}
		}
	}
	wait := t.headerTimeout
	if t.headerFor != nil {
		wait = t.headerFor(req)
	}
	if wait > 0 {
		_ = bc.nc.SetReadDeadline(time.Now().Add(wait))
		if ctx.Err() != nil {
			_ = bc.nc.SetReadDeadline(time.Unix(1, 0)) // the client left meanwhile: no waiting
		}
	}
	var rs head
	answered := false
	for {
		raw, err := readBackendHead(bc.br)
		answered = answered || raw != nil
		if err == nil {
			err = rs.parseResponse(raw)
			_, _ = bc.br.Discard(len(raw))
		}
		if err != nil {
			stop()
			if werr != nil && !answered {
				err = werr // the write failed first
			}
			return nil, &exchangeError{err: ctxErr(ctx, err), answered: answered, bodyRead: body != nil && body.n > 0}
		}
		if rs.status >= 200 || rs.status == http.StatusSwitchingProtocols {
			break
		}
	}
	_ = bc.nc.SetReadDeadline(time.Time{})
	if rs.status == http.StatusSwitchingProtocols && req.Header.Get("Upgrade") == "" {
		// Nobody asked to switch: the connection now speaks something else.
		stop()
		return nil, &exchangeError{err: errBadResponse, answered: true}
	}
	if werr != nil {
		rs.close = true // the backend stopped reading the request: not reused
	}
	return t.response(stop, p, bc, req, &rs), nil
}

// errBodyDone: the request body's writer was stopped because its exchange
// had already ended.
var errBodyDone = errors.New("request body no longer wanted")

// ctxErr prefers the context's error to the one its cancellation caused.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// writeBody writes the request body, with a length or chunked, and
// closes it.
func (t *Transport) writeBody(bc *bconn, req *http.Request, body *countingReader) error {
	defer func() { _ = req.Body.Close() }()
	w := &deadlineWriter{nc: bc.nc, timeout: t.writeTimeout}
	if req.ContentLength > 0 {
		n, err := io.Copy(w, io.LimitReader(body, req.ContentLength))
		if err == nil && n < req.ContentLength {
			err = &bodyReadError{io.ErrUnexpectedEOF} // the body ended before its length
		}
		return err
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			_, _ = fmt.Fprintf(bw, "%x\r\n", n)
			_, _ = bw.Write(buf[:n])
			_, _ = bw.WriteString("\r\n")
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			_, _ = bw.WriteString("0\r\n\r\n")
			return bw.Flush()
		}
		if rerr != nil {
			return rerr
		}
	}
}

// countingReader counts the bytes read through it, and marks a failed
// read as the client's (bodyReadError).
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		err = &bodyReadError{err}
	}
	return n, err
}

// bodyReadError: reading the request body from the client failed.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// deadlineWriter moves the write deadline before each write.
type deadlineWriter struct {
	nc      net.Conn
	timeout time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.nc.Write(p)
}

// appendOutgoing appends the request head as the proxy prepared it.
func appendOutgoing(dst []byte, req *http.Request) []byte {
	dst = append(dst, req.Method...)
	dst = append(dst, ' ')
	dst = append(dst, req.URL.RequestURI()...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	dst = append(dst, host...)
	dst = append(dst, "\r\n"...)
	for name, values := range req.Header {
		switch name {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		case "User-Agent":
			if len(values) == 1 && values[0] == "" {
				continue // the proxy asked for none
			}
		}
		for _, v := range values {
			dst = append(dst, name...)
			dst = append(dst, ": "...)
			dst = append(dst, v...)
			dst = append(dst, "\r\n"...)
		}
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	switch {
	case hasBody && req.ContentLength > 0:
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, req.ContentLength, 10)
		dst = append(dst, "\r\n"...)
	case hasBody:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		dst = append(dst, "Content-Length: 0\r\n"...)
	}
	if req.Close {
		dst = append(dst, "Connection: close\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// response builds the answer around the head in rs; its body reads from
// bc and gives the connection back when the answer has ended where its
// framing said.
func (t *Transport) response(stop func() bool, p *pool, bc *bconn, req *http.Request, rs *head) *http.Response {
	res := &http.Response{
		Status:     strconv.Itoa(rs.status) + " " + string(rs.reason),
		StatusCode: rs.status,
		Proto:      "HTTP/1." + strconv.Itoa(rs.minor),
		ProtoMajor: 1, ProtoMinor: rs.minor,
		Header:        make(http.Header, len(rs.fields)),
		ContentLength: rs.contentLength,
		Close:         rs.close,
		Request:       req,
	}
	for _, f := range rs.fields {
		if f.kind == kindTransferEncoding || f.kind == kindContentLength && rs.chunked {
			continue // the answer is chunked: a length beside it is not its length
		}
		name := textproto.CanonicalMIMEHeaderKey(string(f.name))
		res.Header[name] = append(res.Header[name], string(f.value))
		if f.kind == kindHop && name == "Trailer" {
			for tok := range tokens(f.value) {
				if res.Trailer == nil {
					res.Trailer = http.Header{}
				}
				res.Trailer[textproto.CanonicalMIMEHeaderKey(string(tok))] = nil
			}
		}
	}
	b := &backendBody{p: p, bc: bc, stop: stop, res: res, left: rs.contentLength, chunked: rs.chunked}
	switch {
	case rs.status == http.StatusSwitchingProtocols:
		stop()
		res.ContentLength = -1
		res.Body = &upgraded{bc: bc}
		return res
	case noBody(req.Method, rs.status):
		res.ContentLength = max(0, rs.contentLength)
		if req.Method != http.MethodHead {
			res.ContentLength = 0
		}
		res.Body = http.NoBody
		b.finish(nil)
		return res
	case rs.chunked:
		res.TransferEncoding = []string{"chunked"}
		res.ContentLength = -1
	case rs.contentLength < 0:
		b.untilClose = true
		res.Close = true
	}
	if !rs.chunked && rs.contentLength == 0 {
		res.Body = http.NoBody
		b.finish(nil)
		return res
	}
	res.Body = b
	return res
}

// backendBody reads an answer's body from its backend connection.
type backendBody struct {
	p          *pool
	bc         *bconn
	stop       func() bool // ends the client's hold on the connection's deadlines
	res        *http.Response
	left       int64 // of a length-delimited body, or of the current chunk
	chunked    bool
	untilClose bool
	inChunk    bool // chunked: within a chunk's data
	excess     int  // chunked: framing bytes beyond their allowance
	mu         sync.Mutex
	done       bool
	err        error
}

func (b *backendBody) Read(buf []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n, err := b.read(buf)
	if err != nil {
		b.finish(err)
		if err != io.EOF {
			return n, err
		}
		if b.err != nil {
			return n, b.err
		}
		return n, io.EOF
	}
	return n, nil
}

// read reads body bytes; io.EOF at the body's end.
func (b *backendBody) read(buf []byte) (int, error) {
	br := b.bc.br
	switch {
	case b.untilClose:
		n, err := br.Read(buf)
		if err == io.EOF {
			return n, io.EOF
		}
		return n, err
	case !b.chunked:
		if b.left == 0 {
			return 0, io.EOF
		}
		n, err := b.readLeft(buf)
		if err == nil && b.left == 0 {
			err = io.EOF
		}
		return n, err
	}
	for !b.inChunk {
		size, line, err := chunkLine(br)
		if err != nil {
			return 0, err
		}
		if b.excess, err = chunkExcess(b.excess, line, size); err != nil {
			return 0, err
		}
		if size == 0 {
			return 0, b.trailer()
		}
		b.left, b.inChunk = int64(size), true
	}
	n, err := b.readLeft(buf)
	if err == nil && b.left == 0 {
		b.inChunk = false
		err = chunkEnd(br)
	}
	return n, err
}

// readLeft reads at most the b.left bytes still due (of the body, or of
// the chunk); the connection ending before them is an error.
func (b *backendBody) readLeft(buf []byte) (int, error) {
	if int64(len(buf)) > b.left {
		buf = buf[:b.left]
	}
	n, err := b.bc.br.Read(buf)
	b.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// trailer reads the trailer fields after the last chunk into the answer's
// Trailer; io.EOF at the empty line.
func (b *backendBody) trailer() error {
	for {
		line, err := b.bc.br.ReadSlice('\n')
		if err != nil {
			return errBadChunk
		}
		if len(line) == 2 && line[0] == '\r' {
			return io.EOF
		}
		name, value, _, ok := fieldLine(line)
		if !ok {
			return errBadChunk
		}
		if classify(name) != kindOther {
			continue // framing and hop-by-hop fields have no place here
		}
		if b.res.Trailer == nil {
			b.res.Trailer = http.Header{}
		}
		key := textproto.CanonicalMIMEHeaderKey(string(name))
		b.res.Trailer[key] = append(b.res.Trailer[key], string(value))
	}
}

// finish ends the body: the connection goes back to its pool when the
// answer ended cleanly where its framing said, else it is closed.
func (b *backendBody) finish(err error) {
	if b.done {
		return
	}
	b.done = true
	// When the client went away meanwhile, its cancellation set a past
	// deadline on the connection: it cannot be pooled.
	clean := b.stop() && (err == nil || err == io.EOF)
	if clean && !b.untilClose && !b.res.Close {
		_ = b.bc.nc.SetWriteDeadline(time.Time{})
		b.p.put(b.bc, time.Now())
		return
	}
	_ = b.bc.nc.Close()
	if err != nil && err != io.EOF {
		b.err = err
	}
}

// Close ends the body; a body not read to its end costs the connection.
func (b *backendBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.finish(errBodyDone)
	}
	return nil
}

// upgraded is the connection after a 101 answer, for ReverseProxy to
// tunnel: reads start with what is buffered.
type upgraded struct{ bc *bconn }

func (u *upgraded) Read(p []byte) (int, error) {
	if u.bc.br.Buffered() > 0 {
		return u.bc.br.Read(p)
	}
	return u.bc.nc.Read(p)
}

func (u *upgraded) Write(p []byte) (int, error) {
	_ = u.bc.nc.SetWriteDeadline(time.Time{})
	return u.bc.nc.Write(p)
}

func (u *upgraded) Close() error { return u.bc.nc.Close() }

var _ http.RoundTripper = (*Transport)(nil)
