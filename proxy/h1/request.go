package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/geoproxy/geoproxy/proxy/core"
	"github.com/geoproxy/geoproxy/proxy/reqcheck"
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
	c.wantsEnd = r.close || e.closing.Load() || e.draining.Load()
	if err := c.readBody(); err != nil {
		c.refuse(err)
		return false
	}
	e.inFlight.Inc()
	counted := true
	defer func() {
		if counted { // a panic on the way
			e.inFlight.Dec()
		}
	}()

	// Where the client is, from the peer and the forwarding headers.
	nf, nx := c.prepare()
	ne := min(len(e.edgeNames), maxEdgeHeaders)
	e.b.Decide(&c.d, c.peer, c.fwdVals[:nf], c.xffVals[:nx], c.edgeVals[:ne], time.Now()) // resets c.d; the request is all here
	e.b.Stick(&c.d, c.cookieVals[:c.ncookies])
	clear(c.fwdVals[:nf])
	clear(c.xffVals[:nx])
	clear(c.edgeVals[:ne])
	clear(c.cookieVals[:c.ncookies])
	c.ncookies = 0

	rg, b := e.b.Next(&c.d)
	counted = false // attempts reports it
	return c.attempts(start, rg, b, nil)
}

// attempts serves a request the core has planned (c.d), from its attempt
// on backend b of region rg (nil: no backend can serve it) on, and reports
// it; lastErr is that of an attempt made before (by an event loop), if
// any. It reports whether the connection may carry another request.
func (c *conn) attempts(start time.Time, rg *route.Region, b *route.Backend, lastErr error) bool {
	e, r := c.e, &c.req
	counted := true
	defer func() {
		if counted { // a panic on the way
			e.inFlight.Dec()
		}
	}()
	method := b2s(r.method)
	var (
		region *route.Region
		be     *route.Backend
		status int
		sent   bool
	)
	for attempt := 0; b != nil; attempt++ {
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
			region, be = rg, b // served, in part
			break
		}
		if !e.b.Failed(&c.d, b, err, method, core.Progress{Stopping: err == errShuttingDown}) {
			break
		}
		rg, b = e.b.Next(&c.d)
	}
	keep := !c.wantsEnd && lastErr == nil
	if be == nil {
		status = c.failure(lastErr)
		keep = !c.wantsEnd
	}

	dur := time.Since(start)
	c.now = start.Add(dur)
	counted = false
	c.conclude(dur, status, region, be, lastErr)
	// The last bytes go out after the report, so a client that has its
	// answer finds it counted.
	if err := c.flush(); err != nil {
		keep = false
	}
	return keep && !r.upgrade
}

// failure puts in c.out the answer to a request no backend served, and
// returns its status.
func (c *conn) failure(lastErr error) int {
	code, msg := core.Failure(&c.d, lastErr)
	retryAfter := ""
	switch code {
	case http.StatusServiceUnavailable:
		retryAfter = c.e.retryAfter
	case http.StatusTooManyRequests:
		retryAfter = strconv.Itoa(c.d.RetryAfter)
	}
	c.out = AppendPlain(c.out[:0], code, msg, retryAfter, c.wantsEnd)
	return code
}

// conclude counts a request out of flight and reports it: metrics and the
// access log.
func (c *conn) conclude(dur time.Duration, status int, region *route.Region, be *route.Backend, err error) {
	e, r := c.e, &c.req
	o := core.Outcome{Status: status, Region: region, Backend: be, Duration: dur, Err: err}
	if e.b.AccessLog() {
		o.Method, o.Host, o.Path = string(r.method), string(r.host), string(pathOf(r.target))
		o.RequestID, o.UserAgent = string(c.reqID), string(c.ua)
		o.BytesIn, o.BytesOut = c.inBytes, max(c.wrote+int64(len(c.out)-c.respHead), 0)
	}
	e.inFlight.Dec()
	e.b.Report(&c.d, o)
}

// readBody reads the request body into c.body, within the body timeout
// from c.now (the head's end).
func (c *conn) readBody() error {
	err := c.readBodyIn()
	if err == errTimeout {
		err = errBodyTimeout
	}
	return err
}

func (c *conn) readBodyIn() error {
	r := &c.req
	c.dropBody()
	c.hasBody = r.chunked || r.contentLength >= 0
	if !r.chunked && r.contentLength <= 0 {
		return nil
	}
	if r.contentLength > c.e.maxBody {
		return errBodyTooBig
	}
	if r.chunked || int64(c.br.Buffered()) < r.contentLength {
		c.armRead(c.e.bodyTimeout)
	}
	if r.expect100 && r.minor == 1 && c.br.Buffered() == 0 {
		c.armWrite(c.now)
		if _, err := c.nc.Write(continue100); err != nil {
			return err
		}
	}
	waited := false
	if r.chunked {
		if !c.growReader(maxChunkLine) {
			return errMemory
		}
		var err error
		waited, err = readChunked(c.br, &c.body, int(c.e.maxBody), c)
		if err != nil {
			return err
		}
	} else {
		n := int(r.contentLength)
		waited = c.br.Buffered() < n
		if err := readN(c.br, &c.body, n, c); err != nil {
			return err
		}
	}
	if waited {
		c.now = time.Now()
	}
	return nil
}

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// readN appends n bytes from br to b. The body grows with what arrives,
// not with what the client announced, so a large Content-Length costs
// memory only once its bytes come; each chunk comes from a (nil: made
// here), and errMemory ends the read when a cannot give one.
func readN(br *bufio.Reader, b *body, n int, a chunker) error {
	for n > 0 {
		room := b.room()
		if len(room) == 0 {
			if !b.grow(a) {
				return errMemory
			}
			room = b.room()
		}
		k := min(n, len(room))
		m, err := io.ReadFull(br, room[:k])
		b.wrote(m)
		n -= m
		if err != nil {
			return readErr(err)
		}
	}
	return nil
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

// readChunked decodes a chunked body from br, appending it to b; waited
// says whether it had to wait for the network. a gives the body's chunks
// (see readN).
func readChunked(br *bufio.Reader, b *body, limit int, a chunker) (bool, error) {
	waited := false
	excess := 0 // framing bytes beyond a small allowance per chunk
	total := b.size()
	for {
		waited = waited || br.Buffered() == 0
		size, line, err := chunkLine(br)
		if err != nil {
			return waited, err
		}
		if excess, err = chunkExcess(excess, line, size); err != nil {
			return waited, err
		}
		if size == 0 {
			// Trailer fields, checked and dropped, up to the empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return waited, errBadChunk
				}
				if len(line) == 2 && line[0] == '\r' {
					return waited, nil
				}
				if !validFieldLine(line) {
					return waited, errBadChunk
				}
			}
		}
		if total += size; total > limit {
			return waited, errBodyTooBig
		}
		waited = waited || br.Buffered() < size+2
		if err = readN(br, b, size, a); err != nil {
			if err != errTimeout && err != errMemory {
				err = errBadChunk
			}
			return waited, err
		}
		if err := chunkEnd(br); err != nil {
			return waited, err
		}
	}
}

// maxChunkLine is the longest chunk-size or trailer line of a chunked
// request body.
const maxChunkLine = 16 << 10

// maxChunkExcess bounds the framing bytes of a chunked body beyond its
// allowance (see chunkExcess).
const maxChunkExcess = 16 << 10

// chunkExcess counts a chunk-size line of length line for a chunk of size
// bytes against a chunked body's framing allowance, and returns the new
// excess. Chunk extensions are ignored, but not without end: a sender of
// many one-byte chunks with long extensions could otherwise stream any
// amount through a body timeout. As Go's server does, 16 framing bytes per
// chunk plus twice its size are free, and maxChunkExcess beyond that in
// all (errBadChunk).
func chunkExcess(excess, line, size int) (int, error) {
	excess = max(0, excess+line+2-16-2*size)
	if excess > maxChunkExcess {
		return excess, errBadChunk
	}
	return excess, nil
}

// chunkSize reads a chunk-size line (extensions ignored).
func chunkSize(br *bufio.Reader) (int, error) {
	n, _, err := chunkLine(br)
	return n, err
}

// chunkLine reads a chunk-size line (extensions ignored) and also returns
// the line's length.
func chunkLine(br *bufio.Reader) (size, length int, err error) {
	line, err := br.ReadSlice('\n')
	length = len(line)
	if err != nil {
		if readErr(err) == errTimeout {
			return 0, length, errTimeout
		}
		return 0, length, errBadChunk
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, length, errBadChunk
	}
	line = line[:len(line)-2]
	if !validValue(line) {
		return 0, length, errBadChunk // a bare CR or another control byte, extensions included
	}
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	// chunk-size = 1*HEXDIG, then optional whitespace before an extension
	// (RFC 9112 7.1): nothing before the size.
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 8 {
		return 0, length, errBadChunk
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
			return 0, length, errBadChunk
		}
		n = n<<4 | int(v)
	}
	if n > 1<<30 {
		return 0, length, errBadChunk // beyond any limit, and beyond int on 32-bit
	}
	return n, length, nil
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
// proxy replaces, in one pass over the fields. It also collects the
// Forwarded and X-Forwarded-For values the client is located from, into
// c.fwdVals[:nf] and c.xffVals[:nx], and a trusted peer's edge headers in
// c.edgeVals.
func (c *conn) prepare() (nf, nx int) {
	e, r := c.e, &c.req
	c.xfHost, c.xfProto, c.ncookies = false, false, 0
	c.reqID, c.ua, c.wrote, c.respHead = c.reqID[:0], nil, 0, 0
	c.inBytes = int64(c.body.size())
	xff := c.xff[:0]
	for i := range r.fields {
		f := &r.fields[i]
		switch f.kind {
		case kindForwarded:
			if nf < len(c.fwdVals) {
				c.fwdVals[nf] = b2s(f.value)
				nf++
			}
		case kindXFF:
			if nx < len(c.xffVals) {
				c.xffVals[nx] = b2s(f.value)
				nx++
			}
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
			if reqcheck.DropField(f.name) {
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
			switch {
			case equalFold2(f.name, "x-request-id"):
				// Kept from a trusted proxy, else made anew; sent on
				// in its own field either way.
				if c.trusted && len(c.reqID) == 0 && core.ValidRequestID(f.value) {
					c.reqID = append(c.reqID, f.value...)
				}
				f.kind = kindDropped
				continue
			case equalFold2(f.name, "user-agent"):
				c.ua = f.value
			}
			if c.ncookies < len(c.cookieVals) && e.b.Affinity() && equalFold2(f.name, "cookie") {
				c.cookieVals[c.ncookies] = b2s(f.value)
				c.ncookies++
			}
			if c.trusted {
				for j, name := range e.edgeNames[:min(len(e.edgeNames), maxEdgeHeaders)] {
					if c.edgeVals[j] == "" && equalFoldBytes(f.name, name) {
						c.edgeVals[j] = b2s(f.value)
					}
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
	if len(c.reqID) == 0 {
		c.reqID = core.AppendRequestID(c.reqID)
	}
	return nf, nx
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
