//go:build linux

package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/geoproxy/geoproxy/route"
)

// Event loops serve the common request without a goroutine of its own: a
// request with a small body or none, answered with a small Content-Length
// body or none. Each loop owns an epoll set with its client and backend
// sockets, reads a socket when epoll says it has bytes, and serves
// a whole batch of events before it waits again; it waits by parking on the
// epoll descriptor in the runtime's own poller, so an idle loop costs no
// thread. Whatever else a connection needs (a streamed answer, a large or
// chunked body, an upgrade, an unreadable head, an attempt on a backend
// that speaks TLS) the loop hands it to a goroutine of its own, which
// serves it from then on with the code the engine runs without loops.

const (
	// loopTick is how often a loop checks deadlines.
	loopTick = 50 * time.Millisecond
	// loopBody is the largest request body a loop forwards itself.
	loopBody = 16 << 10
	// loopAnswer is the largest response body a loop relays itself.
	loopAnswer = 64 << 10
	// maxFree caps the spare read buffers a loop keeps.
	maxFree = 512
	// sockEvents are the events every socket is registered for, edge
	// triggered: a loop reads until a short read, and writes until done
	// or EAGAIN, then waits for the next edge.
	sockEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	readEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	// hupEvents say the peer has ended: a short read is then no sign that
	// nothing follows, and reading goes on to the end.
	hupEvents = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
)

// Client connection states in a loop.
const (
	stIdle    uint8 = iota // waiting for a request head
	stBody                 // head parsed, waiting for the rest of the body
	stDial                 // waiting for a new backend connection
	stBackend              // the request is with a backend
	stWrite                // the answer is being written
	stClosed               // closed
	stGone                 // handed to a goroutine
)

// Backend connection states in a loop.
const (
	bIdle  uint8 = iota // in the pool
	bWrite              // writing a request
	bHead               // waiting for the response head
	bBody               // head read, waiting for the rest of a small body
)

// loopState is a client connection's state while a loop serves it.
type loopState struct {
	lp       *loop
	fd       int
	in       []byte    // bytes read and not yet consumed
	st       uint8     // stIdle...
	slot     int       // index in lp.conns
	deadline time.Time // when the client has taken too long; zero: none
	heading  bool      // stIdle: bytes of a head have come (deadline is the head's)
	outOff   int       // bytes of c.out already written
	headLen  int       // length of the parsed head (stBody)
	scanned  int       // bytes of in searched for the end of a head
	rdMore   bool      // the last read filled the buffer: read again
	starved  bool      // in could not grow: the memory budget is spent
	hup      bool      // epoll reported the client's end: read on to it
	eof      bool      // the client ended its side or failed
	acquired bool      // c.be counts this request in flight (Acquire)
	counted  bool      // the in-flight gauge counts this request
	bk       *lback    // backend connection of the attempt in progress
}

// lback is a backend connection owned by a loop.
type lback struct {
	fd       int // -1: closed
	p        *lpool
	in       []byte
	c        *conn // the client whose request it carries; nil when idle
	st       uint8
	outOff   int       // bytes of the request written
	used     time.Time // when it was last returned to the pool
	deadline time.Time // when the backend has taken too long; zero: none
	eof      bool      // the backend has ended its side
}

// lpool is a loop's idle connections to one backend, newest on top.
type lpool struct {
	p    *pool
	idle []*lback
}

// item is a message to a loop from another goroutine.
type item struct {
	kind uint8
	c    *conn
	fd   int
	lp   *lpool
	err  error
}

const (
	itemConn     uint8 = iota // a new client connection
	itemDialed                // a backend connection (or the error) for c
	itemShutdown              // stop taking requests, close idle connections
	itemForce                 // close everything now
)

type fdEntry struct {
	c *conn
	b *lback
}

type loop struct {
	e      *Engine
	ep     int // epoll descriptor (owned by file)
	wake   int // eventfd that wakes the loop for its inbox
	file   *os.File
	rc     syscall.RawConn
	pollFn func(uintptr) bool // polls into polled: made once, so a wait allocates nothing
	polled int
	events []unix.EpollEvent
	fds    []fdEntry // by descriptor
	conns  []*conn   // every client, for deadlines and shutdown
	pools  map[*route.Backend]*lpool
	ready  []*conn // idle clients with buffered bytes, served after a batch
	free   [][]byte
	now    time.Time // read once per batch of events
	tick   time.Time // next deadline check
	armed  time.Time // the file's read deadline
	ctx    context.Context
	cancel context.CancelFunc

	closing bool // shutting down: no new requests on idle connections
	forced  bool // shutting down now
	dialing int  // dials under way; the loop outlives them

	mu     sync.Mutex
	inbox  []item
	spare  []item
	exited bool
}

// loopsFor reports how many loops the engine runs: n, or none when a
// backend speaks TLS and Options.LoopsWithTLS is false (loops speak plain
// HTTP to backends; with LoopsWithTLS, an attempt on an https backend is
// made on a goroutine, see handoffAttempt).
func loopsFor(o Options, n int) int {
	if o.LoopsWithTLS {
		return n
	}
	for _, be := range o.Backends {
		if be.URL.Scheme == "https" {
			return 0
		}
	}
	return n
}

// startLoops starts the engine's loops; called once, under e.mu.
func (e *Engine) startLoops() {
	for range e.nloops {
		l, err := newLoop(e)
		if err != nil {
			e.log.Warn("event loops unavailable; every connection gets a goroutine", zap.Error(err))
			for _, l := range e.loops {
				l.close()
			}
			e.loops = nil
			return
		}
		e.loops = append(e.loops, l)
	}
	for _, l := range e.loops {
		e.wg.Add(1)
		go l.run()
	}
}

func newLoop(e *Engine) (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(ep)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &loop{e: e, ep: ep, wake: wake, events: make([]unix.EpollEvent, 256), pools: map[*route.Backend]*lpool{}}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		l.close()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		l.close()
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	l.file = os.NewFile(uintptr(ep), "epoll")
	if l.rc, err = l.file.SyscallConn(); err != nil {
		l.close()
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	for be, p := range e.pools {
		l.pools[be] = &lpool{p: p}
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.pollFn = func(uintptr) bool {
		l.polled = l.poll()
		return l.polled > 0
	}
	return l, nil
}

// close releases the loop's own descriptors.
func (l *loop) close() {
	_ = unix.Close(l.wake)
	if l.file != nil {
		_ = l.file.Close()
	} else {
		_ = unix.Close(l.ep)
	}
	if l.cancel != nil {
		l.cancel()
	}
}

// toLoop gives an accepted connection to a loop; false: serve it on a
// goroutine (not a TCP connection, or out of descriptors). A connection
// that wraps a TCP one (TCP() *net.TCPConn), such as one whose client
// address came in a PROXY header, is served by its TCP connection, with
// the wrapper's RemoteAddr as the client's address.
func (e *Engine) toLoop(nc net.Conn) bool {
	if len(e.loops) == 0 {
		return false
	}
	sock := nc
	wrapper, wrapped := nc.(interface{ TCP() *net.TCPConn })
	if wrapped {
		tc := wrapper.TCP()
		if tc == nil {
			return false
		}
		sock = tc
	} else if _, ok := nc.(*net.TCPConn); !ok {
		return false
	}
	c := e.connFor(nc)
	fd, err := detach(sock)
	if err != nil {
		e.log.Debug("connection served without a loop", zap.Error(err))
		return false
	}
	l := e.loops[e.next.Add(1)%uint32(len(e.loops))]
	c.lp, c.fd = l, fd
	if !l.post(item{kind: itemConn, c: c}) {
		// The loop has ended (a drained engine whose loops had no
		// connection left): the client still gets its answer.
		anc, err := attach(fd)
		if err != nil {
			c.releaseAll() // (attach has closed fd)
			return true
		}
		if tc, ok := anc.(*net.TCPConn); ok && wrapped {
			// Keep the wrapper's client address: its RemoteAddr, one
			// level up, hides the socket's.
			type remote interface{ RemoteAddr() net.Addr }
			type socket struct{ *net.TCPConn }
			anc = struct {
				remote
				socket
			}{nc, socket{tc}}
			type closer interface{ Closed() }
			if cl, ok := nc.(closer); ok {
				// And its release on close (see conn.closed).
				anc = struct {
					remote
					socket
					closer
				}{nc, socket{tc}, cl}
			}
		}
		e.goServeNew(anc)
	}
	return true
}

// signalLoops tells the loops to shut down, or to close everything now.
func (e *Engine) signalLoops(force bool) {
	kind := itemShutdown
	if force {
		kind = itemForce
	}
	for _, l := range e.loops {
		l.post(item{kind: kind})
	}
}

// detach takes a connection's socket away from the runtime's poller: a
// duplicate descriptor (non-blocking, like the original) replaces it.
func detach(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	_ = nc.Close()
	return fd, nil
}

// attach gives a loop's socket back to the runtime as a net.Conn.
func attach(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	_ = f.Close()
	return nc, err
}

// post hands it to the loop; false if the loop has ended.
func (l *loop) post(it item) bool {
	l.mu.Lock()
	if l.exited {
		l.mu.Unlock()
		return false
	}
	l.inbox = append(l.inbox, it)
	// Under the lock: once the loop has exited, its eventfd number may
	// belong to another file.
	var one = [8]byte{1}
	_, _ = unix.Write(l.wake, one[:])
	l.mu.Unlock()
	return true
}

// run serves events until the engine shuts down and the loop's
// connections are gone.
func (l *loop) run() {
	defer l.e.wg.Done()
	l.now = time.Now()
	l.tick = l.now.Add(loopTick)
	for {
		n := l.park()
		if n == 0 && l.finished() {
			return
		}
		l.now = time.Now()
		for i := range n {
			l.dispatch(l.events[i])
		}
		if !l.now.Before(l.tick) {
			l.timers()
		}
		for len(l.ready) > 0 {
			c := l.ready[len(l.ready)-1]
			l.ready = l.ready[:len(l.ready)-1]
			l.resumeIdle(c)
		}
	}
}

// poll collects ready events without waiting.
func (l *loop) poll() int {
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.ep),
		uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(r)
}

// park collects ready events, or waits in the runtime's poller until the
// epoll set has some or the next deadline check is due.
func (l *loop) park() int {
	if l.finishing() {
		return l.poll() // no waiting: the loop may be done
	}
	if !l.tick.Equal(l.armed) {
		_ = l.file.SetReadDeadline(l.tick)
		l.armed = l.tick
	}
	l.polled = 0
	_ = l.rc.Read(l.pollFn)
	return l.polled
}

// finishing reports whether the loop would end if it had nothing to do.
func (l *loop) finishing() bool {
	return (l.forced || l.closing && len(l.conns) == 0) && l.dialing == 0
}

// finished reports, when the loop has nothing to do, whether it may end;
// if so it refuses further items and closes what it still holds.
func (l *loop) finished() bool {
	if !l.finishing() {
		return false
	}
	l.mu.Lock()
	if len(l.inbox) > 0 {
		l.mu.Unlock()
		return false
	}
	l.exited = true
	l.mu.Unlock()
	for len(l.conns) > 0 {
		l.closeClient(l.conns[len(l.conns)-1])
	}
	for _, lp := range l.pools {
		for _, bk := range lp.idle {
			l.closeBack(bk)
		}
		lp.idle = nil
	}
	l.close()
	return true
}

// dispatch serves one event. A panic costs the connection, not the proxy.
func (l *loop) dispatch(ev unix.EpollEvent) {
	fd := int(ev.Fd)
	if fd == l.wake {
		l.drain()
		return
	}
	if fd >= len(l.fds) {
		return
	}
	ent := l.fds[fd]
	if ent.c == nil && ent.b == nil {
		return // closed earlier in this batch
	}
	if ent.c == nil {
		ent.c = ent.b.c // the handlers may part them before a panic
	}
	defer func() {
		if r := recover(); r != nil {
			l.panicked(r, ent)
		}
	}()
	switch {
	case ent.b == nil:
		c := ent.c
		if ev.Events&unix.EPOLLOUT != 0 && c.st == stWrite {
			l.writeClient(c)
		}
		if ev.Events&readEvents != 0 && c.st != stClosed && c.st != stGone {
			l.readClient(c, ev.Events&hupEvents != 0)
		}
	default:
		bk := ent.b
		if ev.Events&unix.EPOLLOUT != 0 && bk.st == bWrite && bk.c != nil {
			l.writeBack(bk)
		}
		if ev.Events&readEvents != 0 && bk.fd >= 0 {
			l.readBack(bk, ev.Events&hupEvents != 0)
		}
	}
}

func (l *loop) panicked(r any, ent fdEntry) {
	e := l.e
	e.panics.Add(1)
	e.log.Error("panic serving a connection; it was closed", zap.Any("panic", r), zap.StackSkip("stack", 2))
	c := ent.c
	if ent.b != nil {
		if ent.b.fd >= 0 {
			if ent.b.c != nil {
				ent.b.c.bk = nil
			}
			l.closeBack(ent.b)
		}
	}
	if c != nil && l.owns(c) {
		l.closeClient(c)
	}
}

// drain takes the loop's inbox.
func (l *loop) drain() {
	var buf [8]byte
	_, _ = unix.Read(l.wake, buf[:])
	l.mu.Lock()
	items := l.inbox
	l.inbox = l.spare[:0]
	l.mu.Unlock()
	for i := range items {
		l.take(&items[i])
		items[i] = item{}
	}
	l.spare = items[:0]
}

// take handles one item of the inbox. A panic costs the connection, not
// the proxy.
func (l *loop) take(it *item) {
	defer func() {
		if r := recover(); r != nil {
			l.panicked(r, fdEntry{c: it.c})
		}
	}()
	switch it.kind {
	case itemConn:
		l.adopt(it.c)
	case itemDialed:
		l.dialed(it)
	case itemShutdown:
		l.closing = true
		l.closeIdle()
	case itemForce:
		l.closing, l.forced = true, true
		l.cancel()
		for len(l.conns) > 0 {
			l.closeClient(l.conns[len(l.conns)-1])
		}
	}
}

// register adds a socket to the epoll set.
func (l *loop) register(fd int, ent fdEntry) error {
	if fd >= len(l.fds) {
		l.fds = append(l.fds, make([]fdEntry, fd+1-len(l.fds)+len(l.fds)/2)...)
	}
	l.fds[fd] = ent
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: sockEvents, Fd: int32(fd)}); err != nil {
		l.fds[fd] = fdEntry{}
		return err
	}
	return nil
}

// adopt starts serving a new client connection.
func (l *loop) adopt(c *conn) {
	if l.forced || l.closing && !l.e.draining.Load() {
		_ = unix.Close(c.fd)
		c.releaseAll()
		return
	}
	if err := l.register(c.fd, fdEntry{c: c}); err != nil {
		l.e.log.Warn("cannot watch a client connection; closed", zap.Error(err))
		_ = unix.Close(c.fd)
		c.releaseAll()
		return
	}
	c.slot = len(l.conns)
	l.conns = append(l.conns, c)
	l.waitRequest(c)
}

// waitRequest makes c wait for its next request: within the idle timeout
// for its first byte, or the head timeout from now when bytes of it are
// here already (pipelined).
func (l *loop) waitRequest(c *conn) {
	c.st = stIdle
	c.heading = len(c.in) > 0
	if c.heading {
		c.deadline = l.now.Add(l.e.headTimeout)
	} else {
		c.deadline = l.now.Add(l.e.idleTimeout)
	}
}

// buffer returns a read buffer of initialRead bytes.
func (l *loop) buffer() []byte {
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		return b
	}
	return make([]byte, 0, initialRead)
}

// recycle keeps an emptied read buffer for the next connection that reads.
func (l *loop) recycle(b []byte) {
	if cap(b) == initialRead && len(l.free) < maxFree {
		l.free = append(l.free, b[:0])
	}
}

// Client side.

// timers enforces deadlines, and expires idle backend connections.
func (l *loop) timers() {
	l.tick = l.now.Add(loopTick)
	for i := 0; i < len(l.conns); i++ {
		c := l.conns[i]
		l.expire(c)
		if i < len(l.conns) && l.conns[i] != c {
			i-- // c left; another took its place
		}
	}
	for _, lp := range l.pools {
		for len(lp.idle) > 0 && l.now.Sub(lp.idle[0].used) > backendIdle {
			bk := lp.idle[0]
			lp.idle = lp.idle[1:]
			l.closeBack(bk)
		}
	}
	if l.closing {
		l.closeIdle()
	}
}

// expire enforces c's deadlines and its backend's.
func (l *loop) expire(c *conn) {
	defer func() {
		if r := recover(); r != nil {
			l.panicked(r, fdEntry{c: c})
		}
	}()
	if bk := c.bk; bk != nil && !bk.deadline.IsZero() && l.now.After(bk.deadline) {
		l.backFailed(bk, os.ErrDeadlineExceeded)
		return
	}
	if c.deadline.IsZero() || !l.now.After(c.deadline) {
		return
	}
	switch c.st {
	case stIdle:
		if !c.heading {
			l.closeClient(c) // idle: no answer
			return
		}
		// Too slow with a head: 408, as the goroutine engine does.
		l.refuseNow(c, errTimeout)
	case stBody:
		l.refuseNow(c, errBodyTimeout)
	case stWrite:
		l.closeClient(c) // it stopped reading
	}
}

// closeIdle closes the connections waiting for a request.
func (l *loop) closeIdle() {
	for i := len(l.conns) - 1; i >= 0; i-- {
		c := l.conns[i]
		if c.st == stIdle && (!c.heading || !l.e.draining.Load()) &&
			l.e.idleLongEnough(c.deadline.Add(-l.e.idleTimeout), l.now) {
			l.closeClient(c)
		}
	}
}

// owns reports whether c is one of the loop's connections.
func (l *loop) owns(c *conn) bool {
	return c.lp == l && c.slot < len(l.conns) && l.conns[c.slot] == c
}

// release ends c's hold on the backend of its attempt.
func (l *loop) release(c *conn) {
	if c.acquired {
		c.acquired = false
		c.be.Release()
	}
}

// closeClient closes a client connection, and the backend connection of a
// request in flight (a forced shutdown).
func (l *loop) closeClient(c *conn) {
	if c.st == stClosed || c.st == stGone {
		return
	}
	l.release(c)
	if c.counted {
		c.counted = false
		l.e.inFlight.Dec()
	}
	if bk := c.bk; bk != nil {
		c.bk, bk.c = nil, nil
		l.closeBack(bk)
	}
	if c.work != nil {
		c.giveBack()
	}
	l.unlist(c)
	_ = unix.Close(c.fd)
	l.dropIn(c)
	c.releaseAll()
	c.st = stClosed
}

// dropIn lets go of a client's read buffer, and of the memory budget a
// grown one held.
func (l *loop) dropIn(c *conn) {
	l.recycle(c.in)
	c.in = nil
	c.hold(&c.held.in, 0)
}

// refuseNow answers a request the loop cannot serve, and closes the
// connection.
func (l *loop) refuseNow(c *conn, err error) {
	if c.work == nil {
		c.borrow()
	}
	c.refusal(err)
	_, _ = send(c.fd, c.out)
	l.closeClient(c)
}

// unlist forgets a client connection.
func (l *loop) unlist(c *conn) {
	l.fds[c.fd] = fdEntry{}
	last := l.conns[len(l.conns)-1]
	l.conns[c.slot] = last
	last.slot = c.slot
	l.conns[len(l.conns)-1] = nil
	l.conns = l.conns[:len(l.conns)-1]
}

// handoff gives a connection between requests to a goroutine of its own,
// with the bytes read so far.
func (l *loop) handoff(c *conn) {
	if c.work != nil {
		c.giveBack()
	}
	nc, err := l.detachClient(c)
	if err != nil {
		c.releaseAll()
		l.e.log.Warn("cannot hand a connection over; closed", zap.Error(err))
		return
	}
	l.e.goServe(c, nc)
}

// handoffAnswer gives a connection whose answer must be streamed to a
// goroutine of its own, with the backend connection.
func (l *loop) handoffAnswer(c *conn, bk *lback) {
	held := bk.in
	bk.in = nil
	c.bk, bk.c = nil, nil
	l.fds[bk.fd] = fdEntry{}
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, bk.fd, nil)
	bnc, berr := attach(bk.fd)
	bk.fd = -1
	nc, err := l.detachClient(c)
	if err != nil || berr != nil {
		if bnc != nil {
			_ = bnc.Close()
		}
		if nc != nil {
			_ = nc.Close()
		}
		l.dropRequest(c, errors.Join(err, berr))
		return
	}
	bc := &bconn{nc: bnc, br: bufio.NewReaderSize(prefixed(held, bnc), maxResponseHead)}
	if sc, ok := bnc.(syscall.Conn); ok {
		bc.raw, _ = sc.SyscallConn()
	}
	c.handBC = bc
	c.acquired, c.counted = false, false // resume releases and reports
	l.e.goServe(c, nc)
}

// handoffAttempt gives a connection to a goroutine of its own in the
// middle of a request, when the attempt the core has just chosen (c.region,
// c.be) goes to a backend that speaks TLS, which loops do not: nothing of
// the request has gone to that backend yet. The goroutine makes the
// attempt, and any that follow, with the request as the loop read and
// planned it (c.req, c.body, c.d after Next, c.lastErr of an attempt the
// loop made before), then reports it; the connection stays on that
// goroutine afterwards.
func (l *loop) handoffAttempt(c *conn) {
	nc, err := l.detachClient(c)
	if err != nil {
		l.dropRequest(c, err)
		return
	}
	c.counted = false // the goroutine reports it
	l.e.goServe(c, nc)
}

// dropRequest lets go of a request, and of its connection, that could not
// be handed over.
func (l *loop) dropRequest(c *conn, err error) {
	l.release(c)
	if c.counted {
		c.counted = false
		l.e.inFlight.Dec()
	}
	if c.work != nil {
		c.giveBack()
	}
	c.releaseAll()
	l.e.log.Warn("cannot hand a connection over; closed", zap.Error(err))
}

// detachClient takes a client connection out of the loop as a net.Conn,
// its read buffer in c.br.
func (l *loop) detachClient(c *conn) (net.Conn, error) {
	l.unlist(c)
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, c.fd, nil)
	held := c.in
	c.in = nil
	c.st = stGone
	nc, err := attach(c.fd)
	if err != nil {
		return nil, err
	}
	c.src = prefixed(held, nc)
	c.br = bufio.NewReaderSize(c.src, initialRead)
	c.now = l.now
	return nc, nil
}

// dropIdle closes an idle pooled connection.
func (l *loop) dropIdle(bk *lback) {
	idle := bk.p.idle
	for i, b := range idle {
		if b == bk {
			copy(idle[i:], idle[i+1:])
			idle[len(idle)-1] = nil
			bk.p.idle = idle[:len(idle)-1]
			break
		}
	}
	l.closeBack(bk)
}

// closeBack closes a backend connection.
func (l *loop) closeBack(bk *lback) {
	if bk.fd < 0 {
		return
	}
	l.fds[bk.fd] = fdEntry{}
	_ = unix.Close(bk.fd)
	bk.fd = -1
	l.recycle(bk.in)
	bk.in = nil
}

func (bk *lback) consume(n int) {
	bk.in = bk.in[:copy(bk.in, bk.in[n:])]
}

// quiet peeks at an idle connection without blocking: EOF means the
// backend closed it, data means it sent something nobody asked for.
func (bk *lback) quiet() bool { return quiet(uintptr(bk.fd)) }

// get returns a fresh idle connection, or nil; see fresh. An idle
// connection's socket stays in the epoll set, so bytes that arrive while it
// waits close it (readBack), but they may arrive after the loop's last
// wait: the peek sees them.
func (lp *lpool) get(l *loop) *lback {
	for n := len(lp.idle); n > 0; n = len(lp.idle) {
		bk := lp.idle[n-1]
		lp.idle[n-1] = nil
		lp.idle = lp.idle[:n-1]
		if fresh(l.now.Sub(bk.used), bk.quiet) {
			return bk
		}
		l.closeBack(bk)
	}
	return nil
}

// put keeps an idle connection.
func (lp *lpool) put(l *loop, bk *lback) {
	if len(lp.idle) >= maxIdlePerBackend {
		l.closeBack(bk)
		return
	}
	bk.st = bIdle
	bk.used = l.now
	bk.deadline = time.Time{}
	if len(bk.in) == 0 {
		l.recycle(bk.in)
		bk.in = nil
	}
	lp.idle = append(lp.idle, bk)
}

// recv and send are the loop's system calls: raw (a non-blocking socket
// never blocks), on sockets rather than files, and without SIGPIPE.
func recv(fd int, b []byte) (int, error) {
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(r), nil
	}
}

func send(fd int, b []byte) (int, error) {
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_NOSIGNAL, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(r), nil
	}
}
