// Package nethttp is geoproxy's net/http engine: an http.Handler that asks
// the request core (package core) where each request goes and forwards it
// with httputil.ReverseProxy over the native engine's backend pools
// (h1.Transport), retrying on another backend or region as the core
// decides.
package nethttp

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/proxy/core"
	"github.com/geoproxy/geoproxy/proxy/h1"
	"github.com/geoproxy/geoproxy/proxy/reqcheck"
	"github.com/geoproxy/geoproxy/route"
)

// Options configure a Handler.
type Options struct {
	Balancer *core.Balancer
	// Backends are every backend requests may go to.
	Backends []*route.Backend
	// Proxy holds the forwarding settings of the configuration.
	Proxy config.Proxy
	// RetryAfter is advertised when no region can serve.
	RetryAfter time.Duration
	// IdleTimeout is how long a connection may wait for the first byte of
	// its first and each next request (then it is closed, without an
	// answer), and how long each write to the client, or of a request to
	// a backend, may take (then the connection is closed). The server's
	// IdleTimeout should be the same.
	IdleTimeout time.Duration
	// HeadTimeout is how long a client may take to send a request's head
	// from its first byte (408 beyond, and the connection closed): kept
	// by Listener's connections (see ConnState). The server's
	// ReadHeaderTimeout should be the same.
	HeadTimeout time.Duration
	// BodyTimeout is how long a client may take to send a request's body
	// once its head is in (408 beyond, and the connection closed).
	BodyTimeout time.Duration
	// ClientTimeout is each of IdleTimeout, HeadTimeout and BodyTimeout
	// left zero; h1.DefaultClientTimeout when zero too, as on the native
	// engine.
	ClientTimeout time.Duration
	// MaxHeaderBytes is the largest request head (431 beyond); zero means
	// h1.DefaultMaxHeaderBytes. The server's MaxHeaderBytes should be
	// ServerMaxHeaderBytes of it.
	MaxHeaderBytes int
	// MaxRequestBody is the largest request body accepted (413 beyond);
	// zero means h1.DefaultMaxRequestBody.
	MaxRequestBody int64
	// Metrics receives the in-flight gauge and the client limits the
	// Handler refused requests by.
	Metrics *metrics.Metrics
	// Log is the Handler's logger (named "proxy").
	Log *zap.Logger
}

// Handler forwards requests to the nearest healthy region.
type Handler struct {
	b          *core.Balancer
	opts       config.Proxy
	retryAfter string
	inFlight   interface {
		Inc()
		Dec()
	}
	rp          *httputil.ReverseProxy
	transport   *h1.Transport
	backends    *backends
	idleTimeout time.Duration // see Options
	bodyTimeout time.Duration
	maxHead     int
	maxBody     int64
	limits      *connLimits
	draining    atomic.Bool
	log         *zap.Logger
	states      sync.Pool
}

type stateKey struct{}

// state is one request's progress; pooled.
type state struct {
	d           core.Decision
	region      *route.Region
	backend     *route.Backend
	peerTrusted bool
	err         error // the current attempt's error, set by the ReverseProxy's ErrorHandler
	gotResponse bool  // the current attempt got a response from the backend
	body        *replayGuard
	bodySent    bool // the body was sent once: the request's time runs from then
	edge        []string
	requestID   string
	rw          *responseWriter
}

// New returns a Handler. Close it to release idle backend connections.
func New(o Options) *Handler {
	h := &Handler{
		b:          o.Balancer,
		opts:       o.Proxy,
		retryAfter: strconv.Itoa(int(max(1, (o.RetryAfter+time.Second-1)/time.Second))),
		inFlight:   o.Metrics.InFlight,
		log:        o.Log.Named("proxy"),
	}
	all := cmp.Or(max(o.ClientTimeout, 0), h1.DefaultClientTimeout)
	h.idleTimeout = cmp.Or(max(o.IdleTimeout, 0), all)
	h.bodyTimeout = cmp.Or(max(o.BodyTimeout, 0), all)
	h.maxHead = cmp.Or(max(o.MaxHeaderBytes, 0), h1.DefaultMaxHeaderBytes)
	h.limits = newConnLimits(o.Metrics, h.idleTimeout, cmp.Or(max(o.HeadTimeout, 0), all))
	h.maxBody = cmp.Or(o.MaxRequestBody, h1.DefaultMaxRequestBody)
	h.states.New = func() any { return new(state) }
	// The backend connections are kept by the native engine's pools, so
	// that both engines reuse them by the same rules.
	h.transport = h1.NewTransport(h1.TransportOptions{
		Backends:      o.Backends,
		DialTimeout:   o.Proxy.DialTimeout,
		HeaderTimeout: h.tryTimeout,
		WriteTimeout:  h.idleTimeout,
	})
	h.backends = newBackends(h.transport, o.Backends, o.Proxy.DialTimeout, h.tryTimeout)
	h.rp = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      h.backends,
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.errorHandler,
		BufferPool:     newBufferPool(),
		ErrorLog:       mustStdLogAt(h.log, zap.DebugLevel),
	}
	return h
}

// Drain makes every HTTP/1 answer from now on close its connection
// ("Connection: close"), so that keep-alive clients move elsewhere while
// the server still accepts.
func (h *Handler) Drain() { h.draining.Store(true) }

// Close releases idle connections to backends and stops their reaper.
func (h *Handler) Close() {
	h.transport.Close()
	h.backends.Close()
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h.inFlight.Inc()
	defer h.inFlight.Dec()

	st := h.states.Get().(*state)
	*st = state{edge: st.edge[:0]} // the edge values' room is kept
	defer h.states.Put(st)

	rw := &responseWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: h.idleTimeout, h2: r.ProtoMajor == 2}
	st.rw = rw
	if headSize(r) > h.maxHead {
		// Go's server allows more (see ServerMaxHeaderBytes): the limit
		// is kept here, to the byte, as on the native engine.
		h.limits.HeaderBytes.Inc()
		if r.ProtoMajor == 1 {
			rw.Header().Set("Connection", "close")
		}
		plain(rw, http.StatusRequestHeaderFieldsTooLarge, "geoproxy: message head too large")
		return
	}
	if msg := refusal(r); msg != "" {
		refuse(rw, r, msg)
		return
	}
	if r.ContentLength > h.maxBody {
		h.limits.RequestBody.Inc()
		rw.Header().Set("Connection", "close")
		plain(rw, http.StatusRequestEntityTooLarge, "geoproxy: request body too large")
		return
	}
	if h.draining.Load() {
		// The keep-alive client moves elsewhere: over HTTP/1 the answer
		// closes the connection; over HTTP/2 Go's server takes the field
		// for a GOAWAY, and closes the connection once its streams end.
		rw.Header().Set("Connection", "close")
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// Go's server drops a Content-Length sent with Transfer-Encoding,
		// so the two cannot be told apart here: every chunked HTTP/1 request
		// ends its connection after the answer, which RFC 9112 6.1 asks of
		// one with both (the native engine refuses those with 400).
		rw.Header().Set("Connection", "close")
	}

	peer := peerAddr(r.RemoteAddr)
	st.requestID = r.Header.Get(core.RequestIDHeader)
	if !h.b.Resolver().Trusted(peer) || !core.ValidRequestID(st.requestID) {
		st.requestID = string(core.AppendRequestID(make([]byte, 0, 16)))
	}
	var edge []string
	if names := h.b.EdgeNames(); len(names) > 0 {
		for _, name := range names {
			st.edge = append(st.edge, r.Header.Get(name))
		}
		edge = st.edge
	}
	h.b.Decide(&st.d, peer, r.Header["Forwarded"], r.Header["X-Forwarded-For"], edge, start)
	h.b.Stick(&st.d, r.Header["Cookie"])
	st.peerTrusted = h.b.Resolver().Trusted(peer)

	out := r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	// (An HTTP/2 request without a body has one that is empty at once,
	// of length 0.)
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		// The body must arrive within the body timeout, as on the native
		// engine; once it has, the deadline goes, so that Go's server can
		// watch the idle connection while a slow answer is streamed. A
		// gRPC request's body is a stream of messages that lasts as long
		// as the call: it has none.
		grpc := strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
		if !grpc {
			_ = rw.rc.SetReadDeadline(start.Add(h.bodyTimeout))
		}
		body := r.Body
		if !grpc {
			// (A gRPC stream's messages are not one body: no limit on
			// their sum.)
			body = http.MaxBytesReader(w, r.Body, h.maxBody)
		}
		st.body = &replayGuard{ReadCloser: body, rc: rw.rc}
		out.Body = st.body
	}

	defer func() {
		// Runs on a normal return and when ReverseProxy aborts a response
		// whose body failed mid-copy (panic(http.ErrAbortHandler)).
		status := rw.status
		if status == 0 && r.Context().Err() != nil {
			status = 499 // the client went away before an answer
		}
		o := core.Outcome{
			Status: status, Duration: time.Since(start), Err: st.err,
			Method: r.Method, Host: r.Host, Path: r.URL.Path,
			RequestID: st.requestID, UserAgent: r.UserAgent(), BytesOut: rw.written,
		}
		if st.body != nil {
			o.BytesIn = st.body.n
		}
		if rw.status != 0 && st.backend != nil && st.gotResponse {
			o.Region, o.Backend = st.region, st.backend
		}
		h.b.Report(&st.d, o)
	}()

	for {
		region, be := h.b.Next(&st.d)
		if be == nil {
			break
		}
		st.region, st.backend, st.err, st.gotResponse = region, be, nil, false
		h.forward(rw, out, be)
		if st.err == nil {
			return
		}
		progress := core.Progress{
			Answered:   rw.status != 0 || st.gotResponse,
			BodySpent:  st.body != nil && st.body.touched,
			ClientGone: r.Context().Err() != nil,
		}
		if !h.b.Failed(&st.d, be, st.err, r.Method, progress) {
			break
		}
		h.log.Debug("retrying", zap.String("backend", be.ID), zap.Error(st.err))
	}
	if rw.status != 0 {
		return
	}
	if st.body != nil && st.body.err != nil {
		// The client failed to send its body: its fault, not a backend's.
		code, msg := http.StatusBadRequest, "geoproxy: malformed message"
		var tooBig *http.MaxBytesError
		switch {
		case isTimeout(st.body.err):
			h.limits.BodyTimeout.Inc()
			code, msg = http.StatusRequestTimeout, "geoproxy: request not received in time"
		case errors.As(st.body.err, &tooBig):
			h.limits.RequestBody.Inc()
			code, msg = http.StatusRequestEntityTooLarge, "geoproxy: request body too large"
		}
		rw.Header().Set("Connection", "close")
		plain(rw, code, msg)
		return
	}
	if r.Context().Err() != nil {
		return // the client is gone: nobody to answer
	}
	code, msg := core.Failure(&st.d, st.err)
	switch code {
	case http.StatusServiceUnavailable:
		rw.Header().Set("Retry-After", h.retryAfter)
	case http.StatusTooManyRequests:
		rw.Header().Set("Retry-After", strconv.Itoa(st.d.RetryAfter))
	}
	plain(rw, code, msg)
}

// tryTimeout bounds the wait for an attempt's answer head (see
// core.Balancer.TryTimeout). The request's time runs from when it is all
// received: for a streamed body, when the first attempt has sent it.
func (h *Handler) tryTimeout(r *http.Request) time.Duration {
	st := r.Context().Value(stateKey{}).(*state)
	now := time.Now()
	if st.body != nil && !st.bodySent {
		st.bodySent = true
		st.d.Start = now
	}
	return h.b.TryTimeout(&st.d, now)
}

// forward makes one attempt on be.
func (h *Handler) forward(rw *responseWriter, out *http.Request, be *route.Backend) {
	be.Acquire()
	defer be.Release()
	h.rp.ServeHTTP(rw, out)
}

// rewrite builds the outbound request of one attempt.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(stateKey{}).(*state)
	for k := range pr.Out.Header {
		if reqcheck.DropField(k) {
			delete(pr.Out.Header, k)
		}
	}
	pr.SetURL(st.backend.URL)
	pr.Out.Header.Set(core.RequestIDHeader, st.requestID)
	if st.peerTrusted {
		// Keep the chain a trusted proxy sent; SetXForwarded appends the peer.
		if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
			pr.Out.Header["X-Forwarded-For"] = append([]string(nil), prior...)
		}
	}
	pr.SetXForwarded()
	if st.peerTrusted {
		for _, k := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
			if v := pr.In.Header.Get(k); v != "" {
				pr.Out.Header.Set(k, v)
			}
		}
	}
	var buf [128]byte
	for _, hd := range h.opts.RequestHeaders {
		if v := core.AppendHeader(buf[:0], hd.Template, &st.d, st.region); len(v) > 0 {
			pr.Out.Header[hd.Name] = []string{string(v)}
		} else {
			delete(pr.Out.Header, hd.Name)
		}
	}
}

func (h *Handler) modifyResponse(res *http.Response) error {
	st := res.Request.Context().Value(stateKey{}).(*state)
	if err := h.b.RetryStatus(&st.d, res.StatusCode, res.Request.Method, st.body != nil); err != nil {
		// ReverseProxy discards this response and calls errorHandler:
		// the next backend or region gets the request.
		return err
	}
	st.gotResponse = true
	if res.StatusCode == http.StatusSwitchingProtocols {
		st.rw.status = res.StatusCode // the connection is hijacked; WriteHeader is never called
	}
	if h.opts.RegionHeader != "" {
		res.Header.Set(h.opts.RegionHeader, st.region.Name)
	}
	if sc := h.b.SetCookie(&st.d); sc != "" {
		res.Header.Add("Set-Cookie", sc)
	}
	return nil
}

// errorHandler records the attempt's error; ServeHTTP decides between a
// retry and an error response.
func (h *Handler) errorHandler(_ http.ResponseWriter, r *http.Request, err error) {
	st := r.Context().Value(stateKey{}).(*state)
	st.err = err
}

// refusal returns why a request must not be forwarded, or "": the rules of
// package reqcheck, which the native engine applies to the same bytes.
// Go's server has already refused what it cannot parse, a Host with bytes
// outside the host grammar and an HTTP/1.1 request without a Host field.
func refusal(r *http.Request) string {
	target := r.RequestURI
	switch {
	case target == "*":
		if !reqcheck.AsteriskAllowed(r.Method) {
			return "geoproxy: malformed message: the asterisk form is for OPTIONS only"
		}
		return ""
	case !strings.HasPrefix(target, "/"):
		// Absolute form: Go has moved its authority to r.Host.
		if r.URL.User != nil {
			return "geoproxy: malformed message: user information in the request target"
		}
		target = r.URL.EscapedPath()
	}
	if !reqcheck.ValidHost(r.Host) {
		return "geoproxy: malformed message: invalid Host"
	}
	if reqcheck.DotSegments(target) {
		return "geoproxy: malformed message: a path segment is . or .."
	}
	return ""
}

// refuse answers 400 to a request that is not forwarded, as the native
// engine does: not counted as a request (it never was one to route).
func refuse(rw *responseWriter, r *http.Request, msg string) {
	if r.ProtoMajor == 1 {
		rw.Header().Set("Connection", "close")
	}
	plain(rw, http.StatusBadRequest, msg)
}

// isTimeout reports whether err is a timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// peerAddr parses a net/http RemoteAddr; the zero Addr if it is not an IP.
func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}

// plain writes a one-line text response.
func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

// replayGuard wraps a request body: it records whether any of it was read
// (after which a retry is impossible) and ignores Close, which the
// transport calls after a failed attempt; the server closes the real body.
// It also records a failed read of the client's body, and lifts the body's
// read deadline once the body has arrived.
type replayGuard struct {
	io.ReadCloser
	rc      *http.ResponseController
	touched bool
	err     error // reading the body failed (not EOF)
	n       int64 // bytes read
}

func (g *replayGuard) Read(p []byte) (int, error) {
	n, err := g.ReadCloser.Read(p)
	g.n += int64(n)
	if n > 0 || (err != nil && err != io.EOF) {
		g.touched = true
	}
	switch {
	case err == io.EOF:
		_ = g.rc.SetReadDeadline(time.Time{})
	case err != nil && g.err == nil:
		g.err = err
	}
	return n, err
}

func (g *replayGuard) Close() error { return nil }

// responseWriter remembers the status sent. Unwrap gives ReverseProxy the
// underlying writer for flushing and WebSocket hijacking.
// Writes carry a deadline of the idle timeout, moved coarsely (at most
// once per quarter of it), so a client that stops reading its answer is cut
// off as on the native engine, while one that reads a long stream is not.
type responseWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	armed   time.Time // when the write deadline was last moved
	h2      bool      // an HTTP/2 stream (see disarm)
	status  int
	written int64 // body bytes written
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.arm()
	n, err := w.ResponseWriter.Write(p)
	w.disarm()
	w.written += int64(n)
	return n, err
}

func (w *responseWriter) arm() {
	if now := time.Now(); w.h2 || now.Sub(w.armed) > w.timeout/4 {
		_ = w.rc.SetWriteDeadline(now.Add(w.timeout))
		w.armed = now
	}
}

// disarm lifts an HTTP/2 stream's write deadline once a write is done: Go's
// HTTP/2 server resets a stream whose deadline passes even with no write
// pending, which would cut a quiet stream (a gRPC server stream, a long
// poll). Over HTTP/1 the deadline stays; the connection has one.
func (w *responseWriter) disarm() {
	if w.h2 {
		_ = w.rc.SetWriteDeadline(time.Time{})
	}
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends buffered data to the client.
func (w *responseWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.arm()
	_ = w.rc.Flush()
	w.disarm()
}

type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }

// mustStdLogAt adapts a zap logger for ReverseProxy's standard logger.
func mustStdLogAt(l *zap.Logger, level zapcore.Level) *log.Logger {
	std, err := zap.NewStdLogAt(l, level)
	if err != nil {
		return zap.NewStdLog(l)
	}
	return std
}
