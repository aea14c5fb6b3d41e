// Package h1 is geoproxy's own HTTP/1.1 engine: a server for client
// connections and a client for backend connections, written for the proxy's
// one job. It parses each head once, forwards fields as they came (minus
// hop-by-hop ones, plus the forwarding and geo headers), writes a small
// response in one system call, streams everything else, and tunnels
// upgrades. It shares the request core (package core) with the net/http
// engine and behaves the same: same headers, retries, error answers,
// metrics and logs.
//
// On Linux, event loops serve the common request without a goroutine per
// connection (loop_linux.go); a connection that needs more is handed to a
// goroutine of its own, which runs the code in engine.go, request.go,
// backend.go and response.go.
//
// Parsing is strict where leniency lets two parties disagree on where a
// message ends: a request with both Content-Length and Transfer-Encoding,
// conflicting Content-Lengths, obsolete line folding, or a field name with
// spaces is refused with 400, and the connection closed.
package h1

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/proxy/core"
	"github.com/geoproxy/geoproxy/route"
)

// Limits of the engine.
const (
	// DefaultMaxHeaderBytes is the largest request head, its request line
	// and final empty line included (431 beyond), unless Options say
	// otherwise.
	DefaultMaxHeaderBytes = 16 << 10
	// maxResponseHead is the largest response head from a backend (502
	// beyond).
	maxResponseHead = 16 << 10
	// DefaultMaxRequestBody is the largest request body accepted (413
	// beyond) unless Options say otherwise. Request bodies are held in
	// memory so that a failed attempt can be repeated on another backend.
	DefaultMaxRequestBody = 32 << 20
	// DefaultRequestMemory is the memory budget for requests (see budget)
	// unless Options say otherwise.
	DefaultRequestMemory = 128 << 20
	// DefaultClientTimeout is each client timeout (see Options) unless
	// Options say otherwise.
	DefaultClientTimeout = 60 * time.Second
	// maxEdgeHeaders caps the edge location headers read (three edges of
	// three, and a pair of one's own).
	maxEdgeHeaders = 12
	// maxIdlePerBackend caps the idle connections kept per backend.
	maxIdlePerBackend = 1024
	// backendIdle is how long an idle backend connection is kept.
	backendIdle = 55 * time.Second
)

// Options configure an Engine.
type Options struct {
	Balancer *core.Balancer
	// Proxy holds the forwarding settings of the configuration.
	Proxy config.Proxy
	// Backends are every backend requests may go to.
	Backends []*route.Backend
	// RetryAfter is advertised when no region can serve.
	RetryAfter time.Duration
	// IdleTimeout is how long a connection may wait for the first byte
	// of its first and each next request (then it is closed, without an
	// answer), and how long each write to the client, or of a request to
	// a backend, may take (then the connection is closed).
	IdleTimeout time.Duration
	// HeadTimeout is how long a client may take to send a request's head
	// from its first byte (408 beyond, and the connection closed).
	HeadTimeout time.Duration
	// BodyTimeout is how long a client may take to send a request's body
	// once its head is in (408 beyond, and the connection closed).
	BodyTimeout time.Duration
	// ClientTimeout is each of IdleTimeout, HeadTimeout and BodyTimeout
	// left zero; DefaultClientTimeout when zero too.
	ClientTimeout time.Duration
	// MaxHeaderBytes: see DefaultMaxHeaderBytes (used when zero).
	MaxHeaderBytes int
	// MaxRequestBody: see DefaultMaxRequestBody (used when zero).
	MaxRequestBody int64
	// RequestMemory: see DefaultRequestMemory (used when zero) and budget.
	RequestMemory int64
	// Loops is how many event loops serve connections: 0 means one per
	// GOMAXPROCS but one (at least one), so that a P is always free for
	// the goroutines that are not loops; a negative number means none
	// (every connection then gets a goroutine). When a backend speaks TLS,
	// see LoopsWithTLS.
	Loops int
	// LoopsWithTLS keeps the event loops when some backends speak TLS
	// (https): loops serve the requests whose attempts go to cleartext
	// backends, and hand a connection to a goroutine of its own when an
	// attempt of its request goes to an https backend (loops speak plain
	// HTTP only). False: no loops at all as soon as one backend speaks
	// TLS.
	LoopsWithTLS bool
	// Metrics receives the engine's in-flight gauge and the client limits
	// it refused requests by.
	Metrics *metrics.Metrics
	// Log is the engine's logger (named "proxy").
	Log *zap.Logger
}

// Engine accepts client connections and forwards their requests to the
// nearest healthy region.
type Engine struct {
	b           *core.Balancer
	opts        config.Proxy
	pools       map[*route.Backend]*pool
	geoNames    [][]byte // names of opts.RequestHeaders
	edgeNames   [][]byte // the balancer's EdgeNames
	retryAfter  string
	idleTimeout time.Duration // see Options
	headTimeout time.Duration
	bodyTimeout time.Duration
	maxHead     int // the largest request head
	maxBody     int64
	limitHits   limitCounters
	mem         budget
	chunks      chunkPool // of request bodies
	inFlight    prometheus.Gauge
	log         *zap.Logger
	dialer      net.Dialer
	works       sync.Pool // *work
	nloops      int
	loops       []*loop
	next        atomic.Uint32 // the loop that gets the next connection

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	tunnels   map[net.Conn]struct{}
	closing   atomic.Bool
	draining  atomic.Bool  // Drain was called: every answer closes its connection
	drainIdle atomic.Int64 // see Drain
	forced    bool         // Shutdown ran out of time (under mu)
	wg        sync.WaitGroup

	panics atomic.Int64 // recovered in connection goroutines (tests check it)

	reaper     sync.Once
	stopReaper chan struct{}
}

// New returns an Engine; Serve it on a listener, Shutdown to stop.
func New(o Options) *Engine {
	e := &Engine{
		b:          o.Balancer,
		opts:       o.Proxy,
		pools:      make(map[*route.Backend]*pool, len(o.Backends)),
		retryAfter: strconv.Itoa(int(max(1, (o.RetryAfter+time.Second-1)/time.Second))),
		inFlight:   o.Metrics.InFlight,
		log:        o.Log.Named("proxy"),
		dialer:     net.Dialer{Timeout: o.Proxy.DialTimeout, KeepAlive: 30 * time.Second},
		listeners:  map[net.Listener]struct{}{},
		conns:      map[*conn]struct{}{},
		tunnels:    map[net.Conn]struct{}{},
		stopReaper: make(chan struct{}),
	}
	all := cmp.Or(max(o.ClientTimeout, 0), DefaultClientTimeout)
	e.idleTimeout = cmp.Or(max(o.IdleTimeout, 0), all)
	e.headTimeout = cmp.Or(max(o.HeadTimeout, 0), all)
	e.bodyTimeout = cmp.Or(max(o.BodyTimeout, 0), all)
	e.maxHead = cmp.Or(max(o.MaxHeaderBytes, 0), DefaultMaxHeaderBytes)
	e.limitHits = limitCounters{o.Metrics.LimitCounters()}
	e.maxBody = cmp.Or(o.MaxRequestBody, DefaultMaxRequestBody)
	e.mem.limit = cmp.Or(o.RequestMemory, DefaultRequestMemory)
	e.chunks.max = int(e.mem.limit / bodyChunk)
	e.works.New = newWork
	switch {
	case o.Loops == 0:
		e.nloops = loopsFor(o, max(1, runtime.GOMAXPROCS(0)-1))
	case o.Loops > 0:
		e.nloops = loopsFor(o, o.Loops)
	}
	for _, be := range o.Backends {
		e.pools[be] = newPool(be)
	}
	for _, hd := range o.Proxy.RequestHeaders {
		e.geoNames = append(e.geoNames, []byte(hd.Name))
	}
	for _, name := range o.Balancer.EdgeNames() {
		e.edgeNames = append(e.edgeNames, []byte(name))
	}
	return e
}

// Serve accepts connections on ln until Shutdown; it then returns
// http.ErrServerClosed.
func (e *Engine) Serve(ln net.Listener) error {
	e.mu.Lock()
	if e.closing.Load() {
		e.mu.Unlock()
		return http.ErrServerClosed
	}
	e.listeners[ln] = struct{}{}
	e.reaper.Do(func() {
		e.wg.Add(1)
		go e.reap()
		e.startLoops()
	})
	// Shutdown waits for this loop too: a connection it accepted just
	// before the listener closed is counted before Shutdown stops waiting.
	e.wg.Add(1)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.listeners, ln)
		e.mu.Unlock()
		e.wg.Done()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if e.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				e.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if e.toLoop(nc) {
			continue
		}
		if !e.goServeNew(nc) {
			return http.ErrServerClosed
		}
	}
}

// goServeNew serves a new connection on a goroutine of its own; false
// (and the connection closed) when the engine no longer takes any.
func (e *Engine) goServeNew(nc net.Conn) bool {
	c := e.newConn(nc)
	e.mu.Lock()
	if e.forced || e.closing.Load() && !e.draining.Load() {
		// (Drained, it is served: its client has sent or is sending a
		// request, which gets an answer that closes.)
		e.mu.Unlock()
		_ = nc.Close()
		return false
	}
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	go c.serve()
	return true
}

// isTemporary reports accept errors worth waiting out (out of file
// descriptors, a connection aborted before it was accepted).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Shutdown stops accepting, ends tunnels, closes idle client connections,
// lets requests in flight finish (their connections close after the
// response) until ctx ends, then closes whatever is left, backend
// connections in use included, and every idle backend connection.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if !e.closing.Swap(true) {
		close(e.stopReaper)
	}
	for ln := range e.listeners {
		_ = ln.Close()
	}
	for t := range e.tunnels {
		_ = t.Close()
	}
	e.mu.Unlock()
	e.signalLoops(false)

	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
loop:
	for {
		e.closeIdle()
		select {
		case <-done:
			break loop
		case <-ctx.Done():
			err = ctx.Err()
			e.signalLoops(true)
			e.mu.Lock()
			e.forced = true
			for c := range e.conns {
				_ = c.nc.Close()
				if bc := c.inUse.Load(); bc != nil {
					_ = bc.nc.Close()
				}
			}
			e.mu.Unlock()
			<-done
			break loop
		case <-tick.C:
		}
	}
	for _, p := range e.pools {
		p.closeAll()
	}
	return err
}

// reap closes expired idle backend connections every few seconds, so a
// pool shrinks even when no request comes to do it, until Shutdown.
func (e *Engine) reap() {
	defer e.wg.Done()
	tick := time.NewTicker(backendIdle / 4)
	defer tick.Stop()
	for {
		select {
		case <-e.stopReaper:
			return
		case now := <-tick.C:
			for _, p := range e.pools {
				p.reap(now)
			}
			e.chunks.trim()
		}
	}
}

// closeIdle closes client connections waiting for a request.
func (e *Engine) closeIdle() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for c := range e.conns {
		if c.idle.Load() && e.idleLongEnough(time.Unix(0, c.idleSince.Load()), time.Now()) {
			_ = c.nc.Close()
		}
	}
}

// idleLongEnough reports whether a connection waiting for a request since
// since may be closed at shutdown: at once, unless the engine was drained,
// and then once it has waited as long as Drain said.
func (e *Engine) idleLongEnough(since, now time.Time) bool {
	return !e.draining.Load() || now.Sub(since) >= time.Duration(e.drainIdle.Load())
}

// Drain makes every answer from now on close its connection
// ("Connection: close"), so that keep-alive clients move elsewhere while
// the engine still accepts. A Shutdown that follows closes a connection
// waiting for a request only once it has waited idle: a client that has
// just connected, or that is sending its next request as the close
// happens, would otherwise see its request fail. With the idle timeout
// as idle, connections end on their own: after their next answer, or at
// their idle timeout.
func (e *Engine) Drain(idle time.Duration) {
	e.drainIdle.Store(int64(idle))
	e.draining.Store(true)
}

// track registers a tunnelled connection so Shutdown can end it; it reports
// false when shutting down already.
func (e *Engine) track(nc net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing.Load() {
		return false
	}
	e.tunnels[nc] = struct{}{}
	return true
}

func (e *Engine) untrack(nc net.Conn) {
	e.mu.Lock()
	delete(e.tunnels, nc)
	e.mu.Unlock()
}

// conn is one client connection.
type conn struct {
	e  *Engine
	nc net.Conn
	// tls: the client connection is TLS (its handshake made before the
	// engine got it); requests get X-Forwarded-Proto https.
	tls bool
	// closed, when the accepted connection has a Closed method (the
	// server's admission counts), is called once the connection is
	// closed, by whichever path closes it (see releaseAll).
	closed func()
	br     *bufio.Reader
	src    io.Reader // what br reads: nc, after any bytes read before
	peer   netip.Addr
	idle   atomic.Bool // waiting for a request (Shutdown may close it)
	// idleSince is when it started waiting (Unix nanoseconds).
	idleSince atomic.Int64
	// inUse is the backend connection the current request is on, closed
	// by a Shutdown that runs out of time.
	inUse atomic.Pointer[bconn]

	// work is the state of the request being served, nil while idle.
	*work
	// loopState is the state of a connection an event loop serves.
	loopState

	now       time.Time // the latest clock reading
	armed     time.Time // the read deadline set; zero: none
	wArmed    time.Time // when the write deadline was last set; zero: none
	held      holdings  // taken from the engine's memory budget
	grown     io.Reader // what a grown c.br reads (see shrink)
	streaming bool      // a body is being streamed to the client
	wantsEnd  bool      // close after this response
	trusted   bool      // the peer is a trusted proxy (it cannot change)
}

// work is what serving one request takes. Connections borrow it from a
// pool for each request, so an idle connection holds only its read buffer.
type work struct {
	req  head
	resp head
	out  []byte // what is written next to the client or backend
	body body   // the request body
	tmp  []byte // header values being built
	xff  []byte

	d core.Decision
	// The Forwarded and X-Forwarded-For values handed to the balancer, and
	// a trusted edge's location headers (by the balancer's EdgeNames).
	fwdVals, xffVals [8]string
	edgeVals         [maxEdgeHeaders]string
	reqID            []byte    // the request's ID (see core.RequestIDHeader)
	ua               []byte    // its User-Agent, in c.req.buf
	inBytes, wrote   int64     // body bytes read from the client for it; bytes written to it
	respHead         int       // length of its answer's head (not counted as body)
	cookieVals       [4]string // Cookie values, when affinity is on
	ncookies         int       // in cookieVals

	hasBody bool
	xfHost  bool // keep the client's X-Forwarded-Host
	xfProto bool // keep the client's X-Forwarded-Proto

	// Kept across events by the event loops, and handed over with the
	// request when a loop passes it to a goroutine (see resume).
	start   time.Time
	method  string         // the request's method, viewing req.buf
	region  *route.Region  // of the attempt in progress, or that served
	be      *route.Backend // likewise
	lastErr error          // of the last failed attempt
	status  int            // of the answer
	reused  bool           // the attempt is on a pooled connection
	handBC  *bconn         // backend connection with an answer to relay
}

func newWork() any {
	w := &work{out: make([]byte, 0, 4096), tmp: make([]byte, 0, 256)}
	w.req.fields = make([]field, 0, 32)
	w.resp.fields = make([]field, 0, 32)
	w.req.buf = make([]byte, 0, 1024)
	w.resp.buf = make([]byte, 0, 1024)
	return w
}

// borrow gives the connection the state to serve a request.
func (c *conn) borrow() { c.work = c.e.works.Get().(*work) }

// giveBack returns it, without buffers grown large by one request.
func (c *conn) giveBack() {
	c.dropBody()
	w := c.work
	c.work = nil
	c.e.b.Abandon(&w.d) // a request cut short (a panic, a forced close) counts in flight no more
	w.region, w.be, w.lastErr, w.handBC, w.method = nil, nil, nil, nil, ""
	if cap(w.out) > 64<<10 {
		w.out = make([]byte, 0, 4096)
	}
	c.e.works.Put(w)
}

// initialRead is a client connection's read buffer until a head needs
// more (up to Options.MaxHeaderBytes).
const initialRead = 4 << 10

func (e *Engine) newConn(nc net.Conn) *conn {
	c := e.connFor(nc)
	c.nc, c.src = nc, nc
	c.br = bufio.NewReaderSize(nc, initialRead)
	return c
}

// connFor returns the state of a client connection, without its reader.
func (e *Engine) connFor(nc net.Conn) *conn {
	c := &conn{e: e, now: time.Now()}
	_, c.tls = nc.(*tls.Conn)
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		c.peer = a.AddrPort().Addr().Unmap()
	}
	c.trusted = c.peer.IsValid() && e.b.Resolver().Trusted(c.peer)
	if cl, ok := nc.(interface{ Closed() }); ok {
		c.closed = cl.Closed
	}
	return c
}

// goServe serves a connection an event loop handed over on a goroutine of
// its own; c.br holds what the loop had read.
func (e *Engine) goServe(c *conn, nc net.Conn) {
	c.nc, c.lp = nc, nil
	e.mu.Lock()
	if e.forced {
		// Shutdown has closed every connection it knew of: not this one.
		e.mu.Unlock()
		_ = nc.Close()
		if c.work != nil { // a request in flight (see resume)
			if bc := c.handBC; bc != nil {
				_ = bc.nc.Close()
				c.be.Release()
			}
			e.inFlight.Dec()
			c.giveBack()
		}
		c.releaseAll()
		return
	}
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	go c.serve()
}

func (c *conn) serve() {
	e := c.e
	defer func() {
		if r := recover(); r != nil {
			// A bug must cost one connection, never the proxy.
			e.panics.Add(1)
			e.log.Error("panic serving a connection; it was closed",
				zap.Any("panic", r), zap.Stringer("client", c.nc.RemoteAddr()), zap.StackSkip("stack", 1))
			if bc := c.inUse.Load(); bc != nil {
				_ = bc.nc.Close()
			}
		}
		_ = c.nc.Close()
		if c.work != nil {
			c.giveBack()
		}
		c.releaseAll()
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
		e.wg.Done()
	}()
	if c.work != nil {
		// Handed over by an event loop in the middle of a request.
		keep := c.resume()
		c.giveBack()
		if !keep {
			return
		}
	}
	for {
		c.shrink()
		c.idleSince.Store(c.now.UnixNano()) // the latest clock reading: the request's end
		c.idle.Store(true)
		if e.closing.Load() && !e.draining.Load() {
			return // (drained: closeIdle closes it once it has waited long enough)
		}
		raw, err := c.readHead()
		c.idle.Store(false)
		if err != nil {
			if raw == nil {
				return // closed, timed out or reset while idle
			}
			c.borrow()
			c.refuse(err)
			c.giveBack()
			return
		}
		c.borrow()
		keep := c.handle(raw)
		c.giveBack()
		if !keep {
			return
		}
	}
}

// armRead sets the client read deadline to t from c.now, coarsely: a
// deadline already set is kept when it is no later and less than a quarter
// of t earlier, so that the common request costs no timer update.
func (c *conn) armRead(t time.Duration) {
	want := c.now.Add(t)
	if c.armed.IsZero() || c.armed.After(want) || want.Sub(c.armed) > t/4 {
		_ = c.nc.SetReadDeadline(want)
		c.armed = want
	}
}

// readHead waits for a whole request head in the read buffer: for its
// first byte within the idle timeout, then for the rest within the head
// timeout. It returns a nil head with the error if the connection ended
// before any byte came.
func (c *conn) readHead() ([]byte, error) {
	if c.br.Buffered() == 0 {
		c.armRead(c.e.idleTimeout)
		if _, err := c.br.Peek(1); err != nil {
			return nil, err
		}
	}
	if buf, _ := c.br.Peek(c.br.Buffered()); findEnd(buf) < 0 {
		// The common head comes whole in one read; this one did not.
		c.now = time.Now()
		c.armRead(c.e.headTimeout)
	}
	for {
		raw, err := readHead(c.br, errHeadTooBig, readErr)
		if err == nil && len(raw) > c.e.maxHead {
			return raw, errHeadTooBig // in a read buffer larger than the limit
		}
		if err != errHeadTooBig || c.br.Size() >= c.e.maxHead {
			return raw, err
		}
		if !c.growReader(c.e.maxHead) {
			return raw, errMemory
		}
	}
}

// prefixed reads held, then r.
func prefixed(held []byte, r io.Reader) io.Reader {
	if len(held) == 0 {
		return r
	}
	return &heldReader{held: held, r: r}
}

// heldReader reads bytes read earlier, then r: what an event loop had read
// of a connection it handed over, or what a small read buffer held when a
// larger one replaced it.
type heldReader struct {
	held []byte
	r    io.Reader
}

func (h *heldReader) Read(p []byte) (int, error) {
	if len(h.held) == 0 {
		return h.r.Read(p)
	}
	n := copy(p, h.held)
	h.held = h.held[n:]
	if len(h.held) == 0 {
		h.held = nil // let the buffer go
	}
	return n, nil
}

// shrink lets go, between requests, of what one request made the
// connection grow: a read buffer of the largest head, and what an event loop had read
// before it handed the connection over. Both give their budget back.
func (c *conn) shrink() {
	if h, ok := c.src.(*heldReader); ok && h.held == nil && c.held.in > 0 {
		c.hold(&c.held.in, 0)
	}
	if c.br.Size() > initialRead && c.br.Buffered() == 0 {
		if h, ok := c.grown.(*heldReader); !ok || h.held == nil {
			c.br = bufio.NewReaderSize(c.src, initialRead)
			c.grown = nil
			c.hold(&c.held.reader, 0)
		}
	}
}

// growReader gives the connection a read buffer of size bytes for the rest
// of the request, starting with what the small one holds: for a head
// larger than the first buffer (up to Options.MaxHeaderBytes), or for the
// chunk-size and trailer lines of a chunked body (up to maxChunkLine). It
// reports false when the memory budget cannot give it.
func (c *conn) growReader(size int) bool {
	if c.br.Size() >= size {
		return true
	}
	if !c.hold(&c.held.reader, int64(size)) {
		return false
	}
	held, _ := c.br.Peek(c.br.Buffered())
	c.grown = prefixed(bytes.Clone(held), c.src)
	c.br = bufio.NewReaderSize(c.grown, size)
	return true
}

// readHead waits for a whole head in br's buffer, searching only the new
// bytes each time more arrive. It returns a nil head with the error if the
// connection ended before any byte came; tooBig is the error of a head
// that fills the buffer, mapErr turns a failed read into the error
// returned.
func readHead(br *bufio.Reader, tooBig error, mapErr func(error) error) ([]byte, error) {
	from := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if n := findEnd(buf[from:]); n >= 0 {
			return buf[:from+n], nil
		}
		if len(buf) >= br.Size() {
			return buf, tooBig
		}
		from = max(0, len(buf)-3)
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if len(buf) == 0 {
				return nil, err
			}
			return buf, mapErr(err)
		}
	}
}

// refuse answers a request the engine cannot read and ends the connection.
func (c *conn) refuse(err error) {
	c.refusal(err)
	c.now = time.Now() // a slow client may have taken a while
	_ = c.flush()
}

// refusal puts in c.out the answer to a request the engine cannot read,
// closing the connection.
func (c *conn) refusal(err error) {
	code, retryAfter := http.StatusBadRequest, ""
	switch err {
	case errMemory:
		code, retryAfter = http.StatusServiceUnavailable, c.e.retryAfter
	case errHeadTooBig:
		code = http.StatusRequestHeaderFieldsTooLarge
	case errVersion:
		code = http.StatusHTTPVersionNotSupported
	case errCoding:
		code = http.StatusNotImplemented
	case errBodyTooBig:
		code = http.StatusRequestEntityTooLarge
	case errConnect:
		code = http.StatusMethodNotAllowed
	case errTimeout, errBodyTimeout:
		code = http.StatusRequestTimeout
	}
	c.wantsEnd = true
	c.e.limitHits.count(err)
	c.out = AppendPlain(c.out[:0], code, "geoproxy: "+err.Error(), retryAfter, true)
}

// AppendPlain appends a whole one-line text answer to dst: msg, with a
// Retry-After field when retryAfter is set, closing the connection when
// closing is. Every answer geoproxy writes itself on a connection is this.
func AppendPlain(dst []byte, code int, msg, retryAfter string, closing bool) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(code)...)
	dst = append(dst, "\r\nDate: "...)
	dst = time.Now().UTC().AppendFormat(dst, http.TimeFormat)
	dst = append(dst, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(msg)+1), 10)
	dst = append(dst, "\r\n"...)
	if retryAfter != "" {
		dst = append(dst, "Retry-After: "...)
		dst = append(dst, retryAfter...)
		dst = append(dst, "\r\n"...)
	}
	if closing {
		dst = append(dst, "Connection: close\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	dst = append(dst, msg...)
	return append(dst, '\n')
}
