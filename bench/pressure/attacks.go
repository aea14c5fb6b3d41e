//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The attack clients. Each attack opens its connections to the proxy, marks
// each one on a ramp once it is in place (so that the side client starts
// measuring only when the whole attack is on), holds them until its context
// ends, and counts in a tally how each connection (or, for the clients that
// repeat requests, each request) ended.

// Outcomes counted in a tally besides "HTTP <status>".
const (
	outOpen    = "open at end"   // nothing came back before the phase ended
	outClosed  = "closed"        // the proxy closed the connection without an answer
	outReset   = "reset"         // the proxy reset the connection without an answer
	outTimeout = "timed out"     // no answer within the client's own deadline
	outConnect = "connect error" // the connection could not be made
)

// tally counts outcomes by name, and the request body bytes the attack sent.
type tally struct {
	mu   sync.Mutex
	n    map[string]int
	sent atomic.Int64
}

func newTally() *tally { return &tally{n: map[string]int{}} }

func (t *tally) add(outcome string) {
	t.mu.Lock()
	t.n[outcome]++
	t.mu.Unlock()
}

func (t *tally) count(outcome string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n[outcome]
}

func (t *tally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, v := range t.n {
		n += v
	}
	return n
}

// String lists the outcomes, the most frequent first: "46 open at end, 2 HTTP 408".
func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.n) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(t.n))
	for k := range t.n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if t.n[a] != t.n[b] {
			return t.n[b] - t.n[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", t.n[k], k)
	}
	return strings.Join(parts, ", ")
}

// ramp tells when every connection of an attack is in place.
type ramp struct {
	left atomic.Int64
	done chan struct{}
}

func newRamp(n int) *ramp {
	r := &ramp{done: make(chan struct{})}
	r.left.Store(int64(n))
	if n <= 0 {
		close(r.done)
	}
	return r
}

// one returns the mark of one connection: calling it, once or more, counts
// that connection as in place (or as failed: either way the ramp moves on).
func (r *ramp) one() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			if r.left.Add(-1) == 0 {
				close(r.done)
			}
		})
	}
}

// classify names how a wait for an answer ended: the status of the answer,
// or why there was none. ctx is the attack's: an error after it ended is
// the attack's own closing of the connection.
func classify(ctx context.Context, resp *http.Response, err error) string {
	if err == nil {
		return fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return outOpen
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return outClosed
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return outReset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return outTimeout
	}
	return "error: " + shortErr(err)
}

// shortErr is the last part of an error's text, for tallies.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// dial connects to addr on loopback. A positive rcvbuf sets the socket's
// receive buffer before the connection is made (which also turns off the
// kernel's growing of it), for clients that read little or nothing.
func dial(ctx context.Context, addr string, rcvbuf int) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return d.DialContext(ctx, "tcp", addr)
}

// attacker holds the attacks' settings.
type attacker struct {
	addr string // the proxy

	lorisEvery time.Duration // slowloris: how often each connection sends more of its head
	lorisBytes int           // slowloris: how many bytes it sends each time
	lorisMax   int           // slowloris: where a head stops growing (under the proxy's head limit)

	slowSize  int64 // slow bodies: the Content-Length announced
	slowRate  int64 // slow bodies: bytes per second each connection sends
	slowEvery time.Duration

	fastSize int64 // fast bodies: the body size, sent at full speed

	neverReadBuf int // never read: the receive buffer of each connection

	payload []byte // body bytes, shared read-only by every writer
}

// newAttacker returns an attacker with a payload to send bodies from.
func newAttacker(addr string) *attacker {
	p := make([]byte, 256<<10)
	for i := range p {
		p[i] = 'b'
	}
	return &attacker{addr: addr, payload: p, slowEvery: 100 * time.Millisecond, neverReadBuf: 4096}
}

// hold runs one connection's work for each of n connections and waits for all.
func hold(n int, r *ramp, work func(i int, inPlace func())) {
	var wg sync.WaitGroup
	for i := range n {
		inPlace := r.one()
		wg.Go(func() {
			defer inPlace()
			work(i, inPlace)
		})
	}
	wg.Wait()
}

// answer starts reading the answer to what is sent on conn, and returns
// where its outcome will arrive. The reader ends when conn is closed.
func answer(ctx context.Context, conn net.Conn) <-chan string {
	got := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
		if err == nil {
			_ = resp.Body.Close()
		}
		got <- classify(ctx, resp, err)
	}()
	return got
}

// lorisHead is the head a slowloris connection sends: a request line and
// padding fields, lorisMax bytes in all, never ending.
func (a *attacker) lorisHead() []byte {
	b := []byte("GET /slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pressure-slowloris\r\n")
	for i := 0; len(b) < a.lorisMax; i++ {
		line := fmt.Sprintf("X-Pad-%05d: ", i)
		line += strings.Repeat("p", 62-len(line)) + "\r\n"
		b = append(b, line...)
	}
	return b[:a.lorisMax]
}

// lorisStart is how much of its head connection i of n sends at once: from
// 1 KiB for the first to 1 KiB under lorisMax for the last, so that the
// heads held cover every size a head buffer may need.
func (a *attacker) lorisStart(i, n int) int {
	lo, hi := min(1<<10, a.lorisMax), max(a.lorisMax-1<<10, 0)
	if n <= 1 || hi <= lo {
		return lo
	}
	return lo + (hi-lo)*i/(n-1)
}

// slowloris holds n connections, each sending a request head slowly: a
// part of it at once, then lorisBytes more every lorisEvery, up to
// lorisMax; the head never ends.
func (a *attacker) slowloris(ctx context.Context, n int, t *tally, r *ramp) {
	head := a.lorisHead()
	a.trickle(ctx, n, t, r, a.lorisEvery, func(i int, conn net.Conn) func() {
		sent := a.lorisStart(i, n)
		_, _ = conn.Write(head[:sent]) // a failed write shows in the answer
		return func() {
			if sent < len(head) {
				k := min(a.lorisBytes, len(head)-sent)
				_, _ = conn.Write(head[sent : sent+k])
				sent += k
			}
		}
	})
}

// trickle holds n connections: on each, begin writes what goes at once and
// returns what writes more, which runs every interval until the proxy
// answers (the outcome is counted in t) or ctx ends.
func (a *attacker) trickle(ctx context.Context, n int, t *tally, r *ramp, every time.Duration, begin func(i int, conn net.Conn) (more func())) {
	hold(n, r, func(i int, inPlace func()) {
		conn, err := dial(ctx, a.addr, 0)
		if err != nil {
			t.add(dialOutcome(ctx, err))
			return
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
		defer stop()
		got := answer(ctx, conn)
		more := begin(i, conn)
		inPlace()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case o := <-got:
				t.add(o)
				return
			case <-tick.C:
				more()
			}
		}
	})
}

// dialOutcome names a failed dial.
func dialOutcome(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return outOpen
	}
	return outConnect + ": " + shortErr(err)
}

// postHead is the head of a POST with a body of size bytes.
func postHead(path string, size int64) []byte {
	return fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pressure\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", path, size)
}

// slowBodies holds n connections, each announcing a body of slowSize bytes
// and sending it at slowRate bytes a second, in slices every slowEvery.
func (a *attacker) slowBodies(ctx context.Context, n int, t *tally, r *ramp) {
	head := postHead("/upload/slow", a.slowSize)
	per := max(1, a.slowRate*int64(a.slowEvery)/int64(time.Second))
	a.trickle(ctx, n, t, r, a.slowEvery, func(_ int, conn net.Conn) func() {
		_, _ = conn.Write(head)
		left := a.slowSize
		return func() {
			if left > 0 {
				w, _ := writeRepeated(conn, a.payload, min(left, per))
				t.sent.Add(w)
				left -= w
			}
		}
	})
}

// writeRepeated writes n bytes to w from p, again and again.
func writeRepeated(w io.Writer, p []byte, n int64) (int64, error) {
	var done int64
	for done < n {
		k, err := w.Write(p[:min(int64(len(p)), n-done)])
		done += int64(k)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// fastBodies runs n clients, each posting bodies of fastSize bytes at full
// speed, one after the other on a kept-alive connection (a new one after an
// answer other than 200 or a failure). Each request's outcome is counted.
func (a *attacker) fastBodies(ctx context.Context, n int, t *tally, r *ramp) {
	head := postHead("/upload/fast", a.fastSize)
	hold(n, r, func(_ int, inPlace func()) {
		for ctx.Err() == nil {
			conn, err := dial(ctx, a.addr, 0)
			if err != nil {
				t.add(dialOutcome(ctx, err))
				inPlace()
				select { // a refused connection is not retried in a tight loop
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			inPlace()
			a.postLoop(ctx, conn, head, t)
		}
	})
}

// postLoop posts on conn until an answer other than 200, a failure or the
// end of ctx, and closes conn.
func (a *attacker) postLoop(ctx context.Context, conn net.Conn, head []byte, t *tally) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	br := bufio.NewReaderSize(conn, 4096)
	for {
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			if _, err := conn.Write(head); err != nil {
				return
			}
			w, _ := writeRepeated(conn, a.payload, a.fastSize)
			t.sent.Add(w)
		}()
		resp, err := http.ReadResponse(br, nil)
		ok := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			ok = ok && err == nil && !resp.Close
		}
		t.add(classify(ctx, resp, err))
		if !ok {
			// A refusal may come before the whole body went: the
			// connection cannot carry another request, and closing it
			// ends the write.
			_ = conn.Close()
			<-wrote
			return
		}
		<-wrote // a 200 comes once the body is read: the write is ending
	}
}

// neverRead holds n connections, each asking for GET /large and reading
// nothing while ctx lasts; each has a small receive buffer, so the answer
// stays with the proxy. When ctx ends, each reads for drain, with a larger
// buffer, to tell what the proxy did with the answer.
func (a *attacker) neverRead(ctx context.Context, n int, t *tally, r *ramp, drain time.Duration) {
	req := []byte("GET " + largePath + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pressure-never-reads\r\n\r\n")
	hold(n, r, func(_ int, inPlace func()) {
		conn, err := dial(ctx, a.addr, a.neverReadBuf)
		if err != nil {
			t.add(dialOutcome(ctx, err))
			return
		}
		defer conn.Close()
		if _, err := conn.Write(req); err != nil {
			t.add(classify(context.Background(), nil, err))
			return
		}
		inPlace()
		<-ctx.Done()
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(1 << 20)
		}
		_ = conn.SetReadDeadline(time.Now().Add(drain))
		t.add(drainOutcome(conn))
	})
}

// drainOutcome reads the answer on conn until its end or the read
// deadline, and names what was found.
func drainOutcome(conn net.Conn) string {
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		return classify(context.Background(), nil, err) + " before the answer"
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	var ne net.Error
	switch {
	case err == nil:
		return fmt.Sprintf("HTTP %d, whole body read at the end", resp.StatusCode)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("HTTP %d, body still coming when read at the end", resp.StatusCode)
	}
	return fmt.Sprintf("HTTP %d, body cut short", resp.StatusCode)
}

// idle holds n kept-alive connections: each sends one GET, reads its
// answer, then stays open and silent until ctx ends or the proxy closes it.
// At most 256 connections are being opened at a time.
func (a *attacker) idle(ctx context.Context, n int, t *tally, r *ramp) {
	req := []byte("GET /idle HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pressure-idle\r\n\r\n")
	opening := make(chan struct{}, 256)
	hold(n, r, func(_ int, inPlace func()) {
		select {
		case opening <- struct{}{}:
		case <-ctx.Done():
			t.add(outOpen + " (never opened)")
			return
		}
		conn, err := a.idleOpen(ctx, req)
		<-opening
		inPlace()
		if err != nil {
			t.add(err.Error())
			return
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
		defer stop()
		var one [1]byte
		_, err = conn.Read(one[:])
		if err == nil {
			t.add("sent bytes unasked")
			return
		}
		t.add(classify(ctx, nil, err))
	})
}

// idleOpen opens a connection and gets one answer on it; the error names
// what went wrong, as a tally outcome.
func (a *attacker) idleOpen(ctx context.Context, req []byte) (net.Conn, error) {
	conn, err := dial(ctx, a.addr, 0)
	if err != nil {
		return nil, errors.New(dialOutcome(ctx, err))
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write(req)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(bufio.NewReaderSize(conn, 1024), nil)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		return nil, errors.New("first request: " + classify(ctx, resp, err))
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}
