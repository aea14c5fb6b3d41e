//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gen is the fixed-rate load's connections, epoll set and timer, all driven by one thread.
type gen struct {
	sa    unix.Sockaddr
	ep    int
	tfd   int
	conns []*genConn
	spare []*genConn // connected and idle, most recently freed last
	busy  int        // connections with a request in flight
}

// genConn is one keep-alive connection of the load.
type genConn struct {
	id       int
	fd       int // -1 while down
	inflight int // index of the request in flight, -1 if none
	k        int // rotates X-Forwarded-For
	buf      []byte
	n        int       // bytes in buf
	downAt   time.Time // when it went down, to pace reconnecting
}

func newGen(sa unix.Sockaddr, conns int) (*gen, error) {
	g := &gen{sa: sa, ep: -1, tfd: -1}
	var err error
	if g.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if g.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		g.close()
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	if err := unix.EpollCtl(g.ep, unix.EPOLL_CTL_ADD, g.tfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(g.tfd)}); err != nil {
		g.close()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	// Connect first, so that connection setup is not measured.
	for i := range conns {
		c := &genConn{id: i, fd: -1, inflight: -1, buf: make([]byte, 16<<10)}
		g.conns = append(g.conns, c)
		if err := g.connect(c, 0); err != nil {
			g.close()
			return nil, err
		}
		g.spare = append(g.spare, c)
	}
	return g, nil
}

// connect opens c's socket (a blocking connect: loopback answers at once, or refuses),
// then makes it non-blocking and adds it to the epoll set, level-triggered. A timeout, if
// set, bounds the connect: a target that stops accepting would hold it for minutes.
func (g *gen) connect(c *genConn, timeout time.Duration) error {
	fd, err := unix.Socket(sockFamily(g.sa), unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if timeout > 0 { // SO_SNDTIMEO bounds connect(2) too
		tv := unix.NsecToTimeval(int64(timeout))
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
	if err := unix.Connect(fd, g.sa); err != nil {
		unix.Close(fd)
		return fmt.Errorf("connecting: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("non-blocking socket: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd), Pad: int32(c.id)}
	if err := unix.EpollCtl(g.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	c.fd, c.n, c.inflight = fd, 0, -1
	return nil
}

func (g *gen) close() {
	for _, c := range g.conns {
		if c.fd >= 0 {
			unix.Close(c.fd)
			c.fd = -1
		}
	}
	if g.tfd >= 0 {
		unix.Close(g.tfd)
	}
	if g.ep >= 0 {
		unix.Close(g.ep)
	}
}

// idle tells whether a connection could take a request now.
func (g *gen) idle() bool { return len(g.spare) > 0 }

// free takes an idle connection for a request, nil if there is none.
func (g *gen) free() *genConn {
	if len(g.spare) == 0 {
		return nil
	}
	c := g.spare[len(g.spare)-1]
	g.spare = g.spare[:len(g.spare)-1]
	return c
}

// release returns c, its answer read, to the idle ones.
func (g *gen) release(c *genConn) {
	c.inflight = -1
	g.busy--
	g.spare = append(g.spare, c)
}

// fail closes c after an error; revive reconnects it.
func (g *gen) fail(c *genConn) {
	if c.inflight >= 0 {
		g.busy--
		c.inflight = -1
	}
	if i := slices.Index(g.spare, c); i >= 0 {
		g.spare = slices.Delete(g.spare, i, i+1)
	}
	if c.fd >= 0 {
		unix.Close(c.fd) // also leaves the epoll set
		c.fd = -1
	}
	c.downAt = time.Now()
}

// down tells whether a connection is waiting to be reconnected.
func (g *gen) down() bool { return len(g.spare)+g.busy < len(g.conns) }

// revive reconnects the connections that went down, each at most every 50 ms, so that a
// target that refuses does not turn the load into a loop of connects.
func (g *gen) revive() {
	if !g.down() {
		return
	}
	for _, c := range g.conns {
		if c.fd >= 0 || time.Since(c.downAt) < 50*time.Millisecond {
			continue
		}
		if g.connect(c, 100*time.Millisecond) != nil {
			c.downAt = time.Now()
			continue
		}
		g.spare = append(g.spare, c)
	}
}

// arm sets the timer to fire at t on CLOCK_MONOTONIC.
func (g *gen) arm(t time.Duration) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(t))}
	if err := unix.TimerfdSettime(g.tfd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		return fmt.Errorf("timerfd_settime: %w", err)
	}
	return nil
}

// wait is epoll_wait without telling the Go scheduler: the thread keeps its P while
// it waits, so the runtime does not hand the P around at every wait (which cost a futex
// wake-up each time, more than the wait itself). The wait is short (at most ms
// milliseconds), and a signal from the runtime (GC, preemption) ends it early.
func (g *gen) wait(events []unix.EpollEvent, ms int) (int, error) {
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(g.ep),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(ms), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func (g *gen) drainTimer() {
	var b [8]byte
	_, _ = unix.Read(g.tfd, b[:])
}

// send writes request i's bytes on c (a request fits a socket buffer whole).
func (g *gen) send(c *genConn, req []byte, i int) error {
	c.inflight = i
	g.busy++
	for off := 0; off < len(req); {
		n, err := unix.SendmsgN(c.fd, req[off:], nil, nil, unix.MSG_NOSIGNAL)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("sending: %w", err)
		}
		off += n
	}
	return nil
}

// receive takes the next answer from c's buffer, reading the socket once first if fill
// is set. It reports done when an answer is complete (with an error if it was not a 200
// the connection can go on from), an error alone when the connection broke, and neither
// when more is needed. After an answer the caller calls it again without fill, so that a
// read that brought more than one is taken whole, and no read is spent to learn that
// nothing more has come (the epoll set is level-triggered).
func (c *genConn) receive(fill bool) (done bool, err error) {
	if fill {
		if err := c.fill(); err != nil {
			return false, err
		}
	}
	size, closes, err := c.answer()
	if err != nil || size == 0 {
		return false, err
	}
	return c.take(size, closes)
}

// fill reads what the socket has into c's buffer, growing it if it is full.
func (c *genConn) fill() error {
	if c.n == len(c.buf) {
		if len(c.buf) >= 1<<20 {
			return errors.New("answer over 1 MiB")
		}
		c.buf = append(c.buf, make([]byte, len(c.buf))...)
	}
	n, err := unix.Read(c.fd, c.buf[c.n:])
	switch {
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		return nil
	case err != nil:
		return fmt.Errorf("reading: %w", err)
	case n == 0:
		return errClosed
	}
	c.n += n
	return nil
}

// take consumes a complete answer of size bytes.
func (c *genConn) take(size int, closes bool) (bool, error) {
	if c.inflight < 0 {
		return false, errors.New("an answer to no request")
	}
	var refused error
	if status := c.buf[9:12]; !bytes.Equal(status, []byte("200")) {
		refused = fmt.Errorf("%w: %s", errStatus, status)
	}
	c.n = copy(c.buf, c.buf[size:c.n])
	switch {
	case closes: // first: the connection cannot go on, whatever the status
		if refused != nil {
			return true, fmt.Errorf("%w, %w", refused, errClosed)
		}
		return true, errClosed
	case refused != nil:
		return true, refused
	}
	return true, nil
}

var (
	errClosed = errors.New("target closed the connection")
	errStatus = errors.New("status not 200")
)

// answer returns the size of the complete answer at the start of c's buffer, 0 if more is
// needed, and whether it asks to close the connection. It reads a Content-Length or
// chunked body.
func (c *genConn) answer() (size int, closes bool, err error) {
	b := c.buf[:c.n]
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return 0, false, nil
	}
	if len(b) < 12 || !bytes.HasPrefix(b, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("bad status line %q", b[:min(len(b), 40)])
	}
	body := end + 4
	length, chunked := int64(-1), false
	_, rest, _ := bytes.Cut(b[:end], []byte("\r\n")) // past the status line
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || n < 0 {
				return 0, false, fmt.Errorf("bad Content-Length %q", v)
			}
			length = n
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(v), []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closes = bytes.EqualFold(v, []byte("close"))
		}
	}
	switch {
	case chunked:
		size, err = chunkedEnd(b, body)
		return size, closes, err
	case length >= 0:
		if int64(len(b)-body) < length {
			return 0, false, nil
		}
		return body + int(length), closes, nil
	}
	return 0, false, errors.New("answer without Content-Length or chunked body")
}

// chunkedEnd returns where a chunked body starting at off ends in b, 0 if it is not all in.
func chunkedEnd(b []byte, off int) (int, error) {
	for {
		eol := bytes.Index(b[off:], []byte("\r\n"))
		if eol < 0 {
			return 0, nil
		}
		line := b[off : off+eol]
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad chunk size %q", line)
		}
		off += eol + 2
		if n == 0 { // trailers, then the empty line
			for {
				eol := bytes.Index(b[off:], []byte("\r\n"))
				if eol < 0 {
					return 0, nil
				}
				off += eol + 2
				if eol == 0 {
					return off, nil
				}
			}
		}
		if n > int64(len(b)) {
			return 0, fmt.Errorf("chunk of %d bytes: over what the load reads", n)
		}
		if int64(len(b)-off) < n+2 {
			return 0, nil
		}
		off += int(n) + 2
	}
}

// sockaddr resolves "host:port" to a socket address.
func sockaddr(addr string) (unix.Sockaddr, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", addr, err)
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		sa := &unix.SockaddrInet4{Port: ta.Port}
		copy(sa.Addr[:], ip4)
		return sa, nil
	}
	sa := &unix.SockaddrInet6{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To16())
	return sa, nil
}

func sockFamily(sa unix.Sockaddr) int {
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// monotonic reads CLOCK_MONOTONIC, the clock of Go's time.Since and of the timer.
func monotonic() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
