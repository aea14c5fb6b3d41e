//go:build linux

package h1

// A request's way through a loop: reading it from the client, the attempts
// on backends, and writing the answer back.

import (
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/geoproxy/geoproxy/proxy/core"
)

// readClient reads what the client sent and serves what it can; hup: the
// client has ended its side.
func (l *loop) readClient(c *conn, hup bool) {
	c.hup = c.hup || hup
	for !c.eof {
		if c.in == nil {
			c.in = l.buffer()
		}
		if len(c.in) == cap(c.in) && !l.growIn(c) {
			c.rdMore = true
			break
		}
		n, err := recv(c.fd, c.in[len(c.in):cap(c.in)])
		if err == unix.EAGAIN {
			c.rdMore = false
			break
		}
		if n <= 0 {
			c.eof = true // its last requests are still served
			break
		}
		c.in = c.in[:len(c.in)+n]
		if len(c.in) < cap(c.in) && !c.hup {
			c.rdMore = false
			break
		}
	}
	if c.st == stIdle || c.st == stBody {
		l.request(c)
		if c.st == stGone {
			return // handed to a goroutine, which owns it from now on
		}
	}
	if c.starved {
		c.starved = false
		if (c.st == stIdle || c.st == stBody) && len(c.in) == cap(c.in) {
			// More of the request cannot be read: the memory budget is
			// spent (on slow clients, most likely).
			l.refuseNow(c, errMemory)
			return
		}
	}
	if c.eof && (c.st == stIdle || c.st == stBody) {
		l.clientEnded(c)
	}
}

// growIn makes room for more of a request: a head up to the largest
// (Options.MaxHeaderBytes) and a body up to loopBody, within the memory
// budget. Between requests, pipelined bytes wait in what there is.
func (l *loop) growIn(c *conn) bool {
	limit := l.e.maxHead + loopBody
	switch c.st {
	case stIdle:
	case stBody:
		limit = c.headLen + int(c.req.contentLength)
	default:
		return false
	}
	if cap(c.in) >= limit {
		return false
	}
	size := min(2*cap(c.in), limit)
	if !c.hold(&c.held.in, int64(size)) {
		c.starved = true
		return false
	}
	b := make([]byte, len(c.in), size)
	copy(b, c.in)
	l.recycle(c.in)
	c.in = b
	return true
}

// clientEnded ends a connection whose client has ended its side, once no
// whole request is left: a partial head or body goes to a goroutine, which
// answers 400 as it finds the end.
func (l *loop) clientEnded(c *conn) {
	if c.st == stIdle && len(c.in) == 0 {
		l.closeClient(c)
		return
	}
	l.handoff(c)
}

// resumeIdle serves the next pipelined request of a connection that just
// sent an answer.
func (l *loop) resumeIdle(c *conn) {
	defer func() {
		if r := recover(); r != nil {
			l.panicked(r, fdEntry{c: c})
		}
	}()
	if c.st != stIdle {
		return
	}
	if c.rdMore || c.eof {
		l.readClient(c, false)
	} else if len(c.in) > 0 {
		l.request(c)
	}
}

// request serves the request at the start of c.in once it is whole, or
// hands the connection to a goroutine when the loop cannot serve it.
func (l *loop) request(c *conn) {
	if c.st == stIdle {
		from := max(0, c.scanned-3)
		n := findEnd(c.in[from:])
		if n < 0 {
			c.scanned = len(c.in)
			switch {
			case len(c.in) >= l.e.maxHead:
				l.handoff(c) // answered 431 there
			case len(c.in) == 0 && !c.rdMore:
				l.dropIn(c)
			case len(c.in) > 0 && !c.heading:
				// The head's first bytes: it has the head timeout.
				c.heading = true
				c.deadline = l.now.Add(l.e.headTimeout)
			}
			return
		}
		n += from
		c.scanned = 0
		if n > l.e.maxHead {
			l.handoff(c) // answered 431 there
			return
		}
		c.borrow()
		r := &c.req
		if err := r.parseRequest(c.in[:n]); err != nil || r.upgrade || r.chunked || r.expect100 ||
			r.contentLength > min(loopBody, l.e.maxBody) { // (413 there, beyond the limit)
			c.giveBack()
			l.handoff(c)
			return
		}
		c.headLen = n
		c.st = stBody
		c.heading = false
		c.deadline = l.now.Add(l.e.bodyTimeout)
	}
	need := c.headLen + int(max(c.req.contentLength, 0))
	if len(c.in) < need {
		return
	}
	l.start(c, need)
}

// start begins serving a whole request: need bytes of c.in.
func (l *loop) start(c *conn, need int) {
	e, r := l.e, &c.req
	c.start, c.now = l.now, l.now
	r.dropConnectionTokens()
	c.wantsEnd = r.close || l.closing || e.draining.Load()
	c.hasBody = r.contentLength >= 0
	if !c.body.append(c.in[c.headLen:need], c) {
		l.refuseNow(c, errMemory)
		return
	}
	c.in = c.in[:copy(c.in, c.in[need:])]
	if len(c.in) == 0 && !c.rdMore {
		l.dropIn(c)
	}
	c.headLen = 0
	c.deadline = time.Time{}
	c.st = stBackend
	e.inFlight.Inc()
	c.counted = true
	nf, nx := c.prepare()
	ne := min(len(e.edgeNames), maxEdgeHeaders)
	e.b.Decide(&c.d, c.peer, c.fwdVals[:nf], c.xffVals[:nx], c.edgeVals[:ne], l.now)
	e.b.Stick(&c.d, c.cookieVals[:c.ncookies])
	clear(c.fwdVals[:nf])
	clear(c.xffVals[:nx])
	clear(c.edgeVals[:ne])
	clear(c.cookieVals[:c.ncookies])
	c.ncookies = 0
	c.method = b2s(r.method)
	c.lastErr = nil
	l.attempt(c)
}

// attempt sends the request to the next backend, or answers that none
// could serve it; an attempt on a backend that speaks TLS is made on a
// goroutine (handoffAttempt).
func (l *loop) attempt(c *conn) {
	rg, b := l.e.b.Next(&c.d)
	if b == nil {
		l.fail(c)
		return
	}
	c.region, c.be = rg, b
	lp := l.pools[b]
	if lp.p.tls {
		l.handoffAttempt(c)
		return
	}
	b.Acquire()
	c.acquired = true
	if bk := lp.get(l); bk != nil {
		c.reused = true
		l.send(c, bk)
		return
	}
	c.reused = false
	l.dial(c, lp)
}

// dial connects to a backend on a goroutine (the resolver and connect may
// take a while), which posts the connection back.
func (l *loop) dial(c *conn, lp *lpool) {
	c.st = stDial
	l.dialing++
	ctx, d, addr := l.ctx, &l.e.dialer, lp.p.addr
	go func() {
		nc, err := d.DialContext(ctx, "tcp", addr)
		fd := -1
		if err == nil {
			if fd, err = detach(nc); err != nil {
				_ = nc.Close()
			}
		}
		if !l.post(item{kind: itemDialed, c: c, lp: lp, fd: fd, err: err}) && fd >= 0 {
			_ = unix.Close(fd)
		}
	}()
}

// dialed takes a dial's outcome.
func (l *loop) dialed(it *item) {
	l.dialing--
	c := it.c
	var bk *lback
	if it.err == nil {
		bk = &lback{fd: it.fd, p: it.lp}
		if err := l.register(it.fd, fdEntry{b: bk}); err != nil {
			_ = unix.Close(it.fd)
			bk, it.err = nil, fmt.Errorf("watching a backend connection: %w", err)
		}
	}
	if c.st != stDial || c.lp != l {
		// The client went away meanwhile: keep the connection for another.
		if bk != nil {
			if l.closing {
				l.closeBack(bk)
			} else {
				it.lp.put(l, bk)
			}
		}
		return
	}
	if bk == nil {
		l.attemptFailed(c, it.err)
		return
	}
	l.send(c, bk)
}

// send writes the request to bk.
func (l *loop) send(c *conn, bk *lback) {
	c.bk, bk.c = bk, c
	c.st = stBackend
	c.out = c.appendRequest(c.out[:0], bk.p.p, c.region, false)
	bk.st, bk.outOff = bWrite, 0
	bk.deadline = l.now.Add(l.e.idleTimeout) // a backend that stops reading
	l.writeBack(bk)
}

// writeBack writes what is left of the request.
func (l *loop) writeBack(bk *lback) {
	c := bk.c
	for bk.outOff < len(c.out) {
		n, err := send(bk.fd, c.out[bk.outOff:])
		if err == unix.EAGAIN {
			return // the next EPOLLOUT edge continues
		}
		if err != nil {
			if bk.outOff == 0 {
				err = errors.Join(errNothingWritten, err)
			}
			l.backFailed(bk, err)
			return
		}
		bk.outOff += n
	}
	bk.st = bHead
	bk.deadline = time.Time{}
	if t := l.e.b.TryTimeout(&c.d, l.now); t > 0 {
		bk.deadline = l.now.Add(t)
	}
	if len(bk.in) > 0 {
		l.parseBack(bk) // it answered before reading everything
	}
}

// readBack reads what a backend sent; hup: the backend has ended its side.
func (l *loop) readBack(bk *lback, hup bool) {
	if bk.c == nil {
		// Idle: the backend closed it, or sent something unasked, unless
		// the event is stale.
		if !bk.quiet() {
			l.dropIdle(bk)
		}
		return
	}
	const limit = maxResponseHead + loopAnswer
	for {
		if bk.in == nil {
			bk.in = l.buffer()
		}
		if len(bk.in) == cap(bk.in) {
			if cap(bk.in) >= limit {
				break // streamed by a goroutine, which reads the rest
			}
			b := make([]byte, len(bk.in), min(2*cap(bk.in), limit))
			copy(b, bk.in)
			l.recycle(bk.in)
			bk.in = b
		}
		n, err := recv(bk.fd, bk.in[len(bk.in):cap(bk.in)])
		if err == unix.EAGAIN {
			break
		}
		if n <= 0 {
			if len(bk.in) > 0 || bk.st == bBody {
				bk.eof = true // the answer may end here; parseBack decides
				break
			}
			if err == nil {
				err = io.EOF
			}
			l.backFailed(bk, err)
			return
		}
		bk.in = bk.in[:len(bk.in)+n]
		if len(bk.in) < cap(bk.in) && !hup {
			break
		}
	}
	if bk.st != bWrite {
		l.parseBack(bk)
	}
}

// parseBack reads the answer's head and, when the body is here, relays it.
func (l *loop) parseBack(bk *lback) {
	c := bk.c
	rs := &c.resp
	for bk.st == bHead {
		n := findEnd(bk.in)
		if n < 0 {
			if len(bk.in) >= maxResponseHead || bk.eof {
				l.backFailed(bk, errBadResponse)
			}
			return
		}
		if n > maxResponseHead {
			l.backFailed(bk, errBadResponse)
			return
		}
		err := rs.parseResponse(bk.in[:n])
		bk.consume(n)
		if err != nil {
			l.backFailed(bk, err)
			return
		}
		if rs.status < 200 && rs.status != 101 {
			continue // informational
		}
		if rs.status == 101 {
			// Nobody asked to switch: the connection now speaks something else.
			l.backFailed(bk, errBadResponse)
			return
		}
		if err := l.e.b.RetryStatus(&c.d, rs.status, c.method, c.body.size() > 0); err != nil {
			l.discard(bk)
			l.attemptFailed(c, err)
			return
		}
		bk.st = bBody
		bk.deadline = time.Time{} // a body may take its time, as when streamed
	}
	nb := noBody(c.method, rs.status)
	switch {
	case nb:
	case rs.contentLength < 0 || rs.contentLength > loopAnswer:
		l.handoffAnswer(c, bk)
		return
	case int64(len(bk.in)) < rs.contentLength:
		if bk.eof {
			l.backFailed(bk, errBadResponse) // ended mid-body
		}
		return // the rest is on its way
	}
	l.respond(c, bk, nb)
}

// respond sends a whole small answer, the backend connection back first.
func (l *loop) respond(c *conn, bk *lback, bodiless bool) {
	rs := &c.resp
	rs.dropConnectionTokens()
	c.out = c.appendResponseHead(c.out[:0], c.region, false, bodiless)
	c.respHead = len(c.out)
	if !bodiless {
		n := int(rs.contentLength)
		c.out = append(c.out, bk.in[:n]...)
		bk.consume(n)
	}
	c.status = rs.status
	c.bk, bk.c = nil, nil
	l.release(c)
	if !rs.close && !bk.eof && len(bk.in) == 0 {
		bk.p.put(l, bk)
	} else {
		l.closeBack(bk) // more bytes than the answer: they would answer the next request
	}
	l.finish(c)
}

// discard drops an answer that is retried elsewhere, keeping the backend
// connection when its body is already here.
func (l *loop) discard(bk *lback) {
	c := bk.c
	rs := &c.resp
	c.bk, bk.c = nil, nil
	switch {
	case rs.close || bk.eof:
	case noBody(c.method, rs.status):
		if len(bk.in) == 0 {
			bk.p.put(l, bk)
			return
		}
	case rs.contentLength >= 0 && int64(len(bk.in)) == rs.contentLength:
		bk.consume(len(bk.in))
		bk.p.put(l, bk)
		return
	}
	l.closeBack(bk)
}

// backFailed ends an attempt whose backend connection failed. A pooled
// connection the backend had closed is replaced once, as the goroutine
// engine does.
func (l *loop) backFailed(bk *lback, err error) {
	c := bk.c
	c.bk, bk.c = nil, nil
	l.closeBack(bk)
	if redial(c.reused, err, errors.Is(err, errNothingWritten), false, false, c.method) {
		c.reused = false
		l.dial(c, bk.p)
		return
	}
	l.attemptFailed(c, err)
}

// attemptFailed moves a request on to the next backend when it may be
// repeated, or answers the failure.
func (l *loop) attemptFailed(c *conn, err error) {
	l.release(c)
	c.lastErr = err
	if !l.e.b.Failed(&c.d, c.be, err, c.method, core.Progress{}) {
		l.fail(c)
		return
	}
	l.attempt(c)
}

// fail answers a request no backend served.
func (l *loop) fail(c *conn) {
	c.wantsEnd = c.wantsEnd || l.closing
	c.status = c.failure(c.lastErr)
	c.region, c.be = nil, nil
	l.finish(c)
}

// finish reports the request and writes its answer in c.out.
func (l *loop) finish(c *conn) {
	err := c.lastErr
	if c.be != nil {
		err = nil // served: earlier attempts' errors are not the outcome
	}
	c.counted = false
	c.conclude(l.now.Sub(c.start), c.status, c.region, c.be, err)
	c.st = stWrite
	c.outOff = 0
	c.deadline = l.now.Add(l.e.idleTimeout) // a client that stops reading
	l.writeClient(c)
}

// writeClient writes what is left of the answer; once it is out, the
// connection waits for the next request.
func (l *loop) writeClient(c *conn) {
	for c.outOff < len(c.out) {
		n, err := send(c.fd, c.out[c.outOff:])
		if err == unix.EAGAIN {
			return // the next EPOLLOUT edge continues
		}
		if err != nil {
			l.closeClient(c)
			return
		}
		c.outOff += n
	}
	c.giveBack()
	if c.wantsEnd || l.forced {
		// Closing a connection whose answer did not say so could meet the
		// client's next request: when shutting down, an idle one is
		// closed by closeIdle, by the rules of a drain.
		l.closeClient(c)
		return
	}
	l.waitRequest(c)
	if len(c.in) > 0 || c.rdMore || c.eof {
		l.ready = append(l.ready, c)
	}
}
