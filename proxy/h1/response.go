package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/geoproxy/geoproxy/route"
)

// relay sends the response in c.resp and its body to the client, then
// returns the backend connection to p (when pooled and reusable) or closes
// it.
func (c *conn) relay(p *pool, bc *bconn, region *route.Region, method string, pooled bool) (status int, sent bool, err error) {
	c.dropBody() // the answer is committed: the body will not be sent again
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
	c.respHead = len(c.out)

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
	default: // chunked to an HTTP/1.1 client, until close to an HTTP/1.0 one
		toChunks := framing == chunked
		if rs.chunked {
			err = c.copyChunked(br, toChunks)
		} else {
			err = c.copyUntilEOF(br, toChunks)
			reusable = false
		}
	}
	if err == nil && reusable {
		p.put(bc, time.Now()) // the stream took a while
	} else {
		_ = bc.nc.Close()
	}
	if err != nil {
		c.wantsEnd = true
	}
	return status, true, err
}

// resume finishes, on the connection's own goroutine, a request an event
// loop handed over: either because its answer must be streamed (c.resp
// holds the response head and c.handBC the backend connection, with what
// the loop read of the body still buffered), or because the attempt the
// core chose goes to a backend that speaks TLS (c.region and c.be; see
// loop.handoffAttempt), which is made here, and any after it. It reports
// whether the connection may carry another request.
func (c *conn) resume() bool {
	if c.handBC == nil {
		return c.attempts(c.start, c.region, c.be, c.lastErr)
	}
	e := c.e
	counted := true
	defer func() {
		if counted { // a panic on the way
			e.inFlight.Dec()
		}
	}()
	bc, be := c.handBC, c.be
	c.handBC = nil
	c.inUse.Store(bc)
	defer be.Release()
	status, _, err := c.relay(e.pools[be], bc, c.region, c.method, true)
	c.inUse.Store(nil)
	dur := time.Since(c.start)
	c.now = c.start.Add(dur)
	counted = false
	c.conclude(dur, status, c.region, be, err)
	keep := !c.wantsEnd && err == nil
	if err := c.flush(); err != nil {
		keep = false
	}
	return keep
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
	if sc := e.b.SetCookie(&c.d); sc != "" && region != nil {
		dst = append(dst, "Set-Cookie: "...)
		dst = append(dst, sc...)
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
	c.wantsEnd = c.wantsEnd || e.closing.Load() || e.draining.Load()
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
// that stops reading for the idle timeout is cut off (the deadline is
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
	n, err := c.nc.Write(c.out)
	c.wrote += int64(n)
	c.out = c.out[:0]
	if err != nil {
		return errors.Join(errClient, err)
	}
	return nil
}

// armWrite keeps a write deadline of about the idle timeout ahead of now,
// moved at most once per quarter of it: a client that stops reading is cut
// off, and the common answer costs no timer update.
func (c *conn) armWrite(now time.Time) {
	if t := c.e.idleTimeout; now.Sub(c.wArmed) > t/4 {
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
