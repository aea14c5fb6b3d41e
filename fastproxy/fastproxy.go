// Package fastproxy is geoproxy's fast HTTP/1.1 engine, built on fasthttp.
// It shares the routing core (package balancer) with the net/http engine
// and behaves the same: same headers, same retries, same error answers, same
// metrics and logs. Request bodies are buffered (so idempotent requests can
// be retried); responses above a size, chunked or close-delimited, are
// streamed; upgrades (WebSocket) are tunnelled.
package fastproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/balancer"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/route"
)

// MaxBufferedResponse is the largest response body held in memory; larger,
// chunked and close-delimited bodies are streamed to the client.
const MaxBufferedResponse = 1 << 20

// MaxRequestBody is the largest request body accepted (413 beyond).
const MaxRequestBody = 32 << 20

// Options configure a Handler.
type Options struct {
	Balancer *balancer.Balancer
	// Proxy holds the forwarding settings of the configuration.
	Proxy config.Proxy
	// Backends are every backend requests may go to.
	Backends []*route.Backend
	// RetryAfter is advertised when no region can serve.
	RetryAfter time.Duration
	Metrics    *metrics.Metrics
	Log        *zap.Logger
}

// Handler forwards requests to the nearest healthy region.
type Handler struct {
	b          *balancer.Balancer
	opts       config.Proxy
	upstreams  map[*route.Backend]*upstream
	headers    [][]byte // names of opts.RequestHeaders
	retryAfter string
	inFlight   prometheus.Gauge
	log        *zap.Logger
	states     sync.Pool
	dialer     net.Dialer

	mu       sync.Mutex
	tunnels  map[net.Conn]struct{}
	tunnelWG sync.WaitGroup
	closed   bool
}

// upstream is how one backend is reached.
type upstream struct {
	hc       *fasthttp.HostClient
	addr     string // host:port to dial
	host     []byte // Host header
	basePath string // prefixed to every request URI; "" or "/app"
}

// state is one request's progress; pooled.
type state struct {
	d       balancer.Decision
	vals    [8]string // header values handed to the resolver
	uri     []byte    // the client's request URI
	scratch []byte
}

// New returns a Handler. Close it to release backend connections.
func New(o Options) *Handler {
	h := &Handler{
		b:          o.Balancer,
		opts:       o.Proxy,
		upstreams:  make(map[*route.Backend]*upstream, len(o.Backends)),
		retryAfter: strconv.Itoa(int(max(1, (o.RetryAfter+time.Second-1)/time.Second))),
		inFlight:   o.Metrics.InFlight,
		log:        o.Log.Named("proxy"),
		dialer:     net.Dialer{Timeout: o.Proxy.DialTimeout, KeepAlive: 30 * time.Second},
		tunnels:    map[net.Conn]struct{}{},
	}
	h.states.New = func() any { return &state{scratch: make([]byte, 0, 256), uri: make([]byte, 0, 128)} }
	for _, be := range o.Backends {
		h.upstreams[be] = h.newUpstream(be)
	}
	for _, hd := range o.Proxy.RequestHeaders {
		h.headers = append(h.headers, []byte(hd.Name))
	}
	return h
}

func (h *Handler) newUpstream(be *route.Backend) *upstream {
	u := be.URL
	tls := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if tls {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	base := u.EscapedPath()
	if base == "/" {
		base = ""
	}
	for len(base) > 0 && base[len(base)-1] == '/' {
		base = base[:len(base)-1]
	}
	return &upstream{
		addr:     addr,
		host:     []byte(u.Host),
		basePath: base,
		hc: &fasthttp.HostClient{
			Addr:                          addr,
			IsTLS:                         tls,
			Dial:                          h.dial,
			MaxConns:                      1024,
			MaxIdleConnDuration:           60 * time.Second,
			ReadTimeout:                   h.opts.ResponseHeaderTimeout,
			MaxResponseBodySize:           MaxBufferedResponse,
			MaxIdemponentCallAttempts:     1, // retries are ours: other backend, other region
			RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
		},
	}
}

func (h *Handler) dial(addr string) (net.Conn, error) {
	return h.dialer.Dial("tcp", addr)
}

// Close ends tunnelled connections and releases idle backend connections.
func (h *Handler) Close() {
	h.mu.Lock()
	h.closed = true
	for c := range h.tunnels {
		_ = c.Close()
	}
	h.mu.Unlock()
	h.tunnelWG.Wait()
	for _, u := range h.upstreams {
		u.hc.CloseIdleConnections()
	}
}

// b2s views b as a string without copying; the string must not outlive the
// request (the resolver does not keep it).
func b2s(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func peerOf(ctx *fasthttp.RequestCtx) netip.Addr {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Serve is the fasthttp request handler.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) {
	start := ctx.Time() // when the server began reading the request
	h.inFlight.Inc()
	defer h.inFlight.Dec()

	st := h.states.Get().(*state)
	st.d = balancer.Decision{}
	defer h.states.Put(st)

	req := &ctx.Request
	peer := peerOf(ctx)
	n := 0
	var fwd, xff []string
	if vals := req.Header.PeekAll("Forwarded"); len(vals) > 0 {
		for _, v := range vals {
			if n < len(st.vals) {
				st.vals[n] = b2s(v)
				n++
			}
		}
		fwd = st.vals[:n]
	}
	if vals := req.Header.PeekAll("X-Forwarded-For"); len(vals) > 0 {
		m := n
		for _, v := range vals {
			if n < len(st.vals) {
				st.vals[n] = b2s(v)
				n++
			}
		}
		xff = st.vals[m:n]
	}
	h.b.Decide(&st.d, peer, fwd, xff)
	clear(st.vals[:n])

	clientClose := req.Header.ConnectionClose()
	upgrade := isUpgrade(req)
	h.prepare(ctx, st, peer, upgrade)

	var (
		region  *route.Region
		be      *route.Backend
		lastErr error
		status  int
	)
	method := b2s(req.Header.Method())
	hasBody := len(req.Body()) > 0
	resp := &ctx.Response
	for {
		r, b := h.b.Next(&st.d)
		if b == nil {
			break
		}
		up := h.upstreams[b]
		h.target(req, st, up, r)
		var err error
		if upgrade {
			err = h.tunnel(ctx, up, b)
		} else {
			err = h.forward(req, resp, up, b, &st.d, method, hasBody)
		}
		if err == nil {
			region, be, lastErr, status = r, b, nil, resp.StatusCode()
			break
		}
		lastErr = err
		h.b.UpstreamError(b)
		if !balancer.MayRetry(err, method) {
			break
		}
	}

	switch {
	case be != nil && !upgrade:
		cleanResponse(&resp.Header)
		if h.opts.RegionHeader != "" {
			resp.Header.Set(h.opts.RegionHeader, region.Name)
		}
	case be != nil:
		// Tunnelled: the response was written by the hijack handler.
	default:
		resp.Reset()
		code, msg := balancer.Failure(&st.d, lastErr)
		if code == fasthttp.StatusServiceUnavailable {
			resp.Header.Set("Retry-After", h.retryAfter)
		}
		status = plain(ctx, code, msg)
	}
	if clientClose {
		ctx.SetConnectionClose()
	}

	o := balancer.Outcome{Status: status, Region: region, Backend: be, Duration: time.Since(start), Err: lastErr}
	if h.b.AccessLog() {
		o.Method, o.Host, o.Path = string(req.Header.Method()), string(req.Header.Host()), string(pathOf(st.uri))
	}
	h.b.Report(&st.d, o)
}

// Bits for the headers prepare looks for.
const (
	bitXFF uint32 = 1 << iota
	bitXFHost
	bitXFProto
	bitForwarded
	bitConnection
	bitHop // any of hopHeaders
)

// headerBit classifies a canonical header name.
func headerBit(k []byte) uint32 {
	switch string(k) {
	case "X-Forwarded-For":
		return bitXFF
	case "X-Forwarded-Host":
		return bitXFHost
	case "X-Forwarded-Proto":
		return bitXFProto
	case "Forwarded":
		return bitForwarded
	case "Connection":
		return bitConnection
	case "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade":
		return bitHop
	}
	return 0
}

// forward makes one attempt on backend b. A retryable status comes back as
// a *balancer.StatusError.
func (h *Handler) forward(req *fasthttp.Request, resp *fasthttp.Response, up *upstream, b *route.Backend, d *balancer.Decision, method string, hasBody bool) error {
	resp.Reset()
	resp.StreamBody = true
	b.Acquire()
	err := up.hc.Do(req, resp)
	b.Release()
	if err != nil {
		return err
	}
	if err := h.b.RetryStatus(d, resp.StatusCode(), method, hasBody); err != nil {
		_ = resp.CloseBodyStream()
		return err
	}
	if cl := resp.Header.ContentLength(); cl >= 0 && cl <= MaxBufferedResponse {
		// The body is already in memory: give the backend connection back
		// now rather than after the client has it.
		_ = resp.CloseBodyStream()
	}
	return nil
}

// prepare rewrites the request headers that do not depend on the backend:
// hop-by-hop headers out, forwarding headers in. One pass finds which of
// them the request has, so the common request costs few header scans.
func (h *Handler) prepare(ctx *fasthttp.RequestCtx, st *state, peer netip.Addr, upgrade bool) {
	req := &ctx.Request
	trusted := peer.IsValid() && h.b.Resolver().Trusted(peer)
	st.uri = append(st.uri[:0], req.Header.RequestURI()...)
	var seen uint32
	for k := range req.Header.All() {
		seen |= headerBit(k)
	}

	// X-Forwarded-For: a trusted proxy's chain plus the peer; else the peer.
	s := st.scratch[:0]
	if trusted && seen&bitXFF != 0 {
		for _, v := range req.Header.PeekAll("X-Forwarded-For") {
			if len(s) > 0 {
				s = append(s, ", "...)
			}
			s = append(s, v...)
		}
	}
	if peer.IsValid() {
		if len(s) > 0 {
			s = append(s, ", "...)
		}
		s = peer.AppendTo(s)
	}
	if seen&bitXFF != 0 {
		req.Header.Del("X-Forwarded-For")
	}
	if len(s) > 0 {
		req.Header.SetCanonical(strXForwardedFor, s)
	}
	if !trusted || seen&bitXFHost == 0 {
		if seen&bitXFHost != 0 {
			req.Header.Del("X-Forwarded-Host")
		}
		req.Header.SetCanonical(strXForwardedHost, req.Header.Host())
	}
	if !trusted || seen&bitXFProto == 0 {
		if seen&bitXFProto != 0 {
			req.Header.Del("X-Forwarded-Proto")
		}
		proto := strHTTP
		if ctx.IsTLS() {
			proto = strHTTPS
		}
		req.Header.SetCanonical(strXForwardedProto, proto)
	}
	if seen&bitForwarded != 0 {
		req.Header.Del("Forwarded")
	}
	if !upgrade && seen&(bitConnection|bitHop) != 0 {
		cleanRequest(&req.Header)
	}
	req.Header.ResetConnectionClose()
	st.scratch = s
}

// target points the request at one backend and sets the geo headers.
func (h *Handler) target(req *fasthttp.Request, st *state, up *upstream, region *route.Region) {
	req.Header.SetHostBytes(up.host)
	if up.basePath != "" {
		s := append(st.scratch[:0], up.basePath...)
		if len(st.uri) == 0 || st.uri[0] != '/' {
			s = append(s, '/')
		}
		s = append(s, st.uri...)
		req.Header.SetRequestURIBytes(s)
		st.scratch = s
	} else {
		req.Header.SetRequestURIBytes(st.uri)
	}
	for i, hd := range h.opts.RequestHeaders {
		v := balancer.AppendHeader(st.scratch[:0], hd.Template, &st.d, region)
		if len(v) > 0 {
			req.Header.SetCanonical(h.headers[i], v)
		} else {
			req.Header.DelBytes(h.headers[i])
		}
		st.scratch = v
	}
}

var (
	strXForwardedFor   = []byte("X-Forwarded-For")
	strXForwardedHost  = []byte("X-Forwarded-Host")
	strXForwardedProto = []byte("X-Forwarded-Proto")
	strHTTP            = []byte("http")
	strHTTPS           = []byte("https")
)

// hopHeaders are removed in both directions (RFC 9110 7.6.1); fasthttp
// handles Connection and Transfer-Encoding itself.
var hopHeaders = []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}

func cleanRequest(h *fasthttp.RequestHeader) {
	for _, k := range connectionTokens(h.Peek("Connection")) {
		h.Del(k)
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

func cleanResponse(h *fasthttp.ResponseHeader) {
	h.ResetConnectionClose()
	var seen uint32
	for k := range h.All() {
		seen |= headerBit(k)
	}
	if seen&(bitConnection|bitHop) == 0 {
		return
	}
	for _, k := range connectionTokens(h.Peek("Connection")) {
		h.Del(k)
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	h.ResetConnectionClose()
}

// connectionTokens lists header names a Connection header marks as
// hop-by-hop (other than close and keep-alive).
func connectionTokens(v []byte) []string {
	if len(v) == 0 {
		return nil
	}
	var out []string
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		tok := trimSpace(v[:i])
		if len(tok) > 0 && !equalFold(tok, "close") && !equalFold(tok, "keep-alive") && !equalFold(tok, "upgrade") {
			out = append(out, string(tok))
		}
		if i < len(v) {
			i++
		}
		v = v[i:]
	}
	return out
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func isUpgrade(req *fasthttp.Request) bool {
	if len(req.Header.Peek("Upgrade")) == 0 {
		return false
	}
	for _, t := range splitTokens(req.Header.Peek("Connection")) {
		if equalFold(t, "upgrade") {
			return true
		}
	}
	return false
}

func splitTokens(v []byte) [][]byte {
	var out [][]byte
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		out = append(out, trimSpace(v[:i]))
		if i < len(v) {
			i++
		}
		v = v[i:]
	}
	return out
}

func pathOf(uri []byte) []byte {
	for i, c := range uri {
		if c == '?' {
			return uri[:i]
		}
	}
	return uri
}

// plain writes a one-line text answer and returns its status.
func plain(ctx *fasthttp.RequestCtx, code int, msg string) int {
	ctx.Response.SetStatusCode(code)
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.Response.SetBodyString(msg + "\n")
	return code
}

// tunnel sends an upgrade request to the backend on a connection of its
// own; on 101 it hijacks the client connection and copies both ways until
// either side closes. Any other answer is passed on as a normal response.
func (h *Handler) tunnel(ctx *fasthttp.RequestCtx, up *upstream, be *route.Backend) error {
	conn, err := h.dial(up.addr)
	if err != nil {
		return err
	}
	if _, err := ctx.Request.WriteTo(conn); err != nil {
		_ = conn.Close()
		return err
	}
	br := bufio.NewReader(conn)
	resp := &ctx.Response
	resp.Reset()
	if err := resp.Header.Read(br); err != nil {
		_ = conn.Close()
		return err
	}
	if resp.StatusCode() != fasthttp.StatusSwitchingProtocols {
		// Not upgraded: read the body and answer normally.
		err := resp.ReadBody(br, MaxBufferedResponse)
		_ = conn.Close()
		if err != nil {
			return err
		}
		cleanResponse(&resp.Header)
		if h.opts.RegionHeader != "" {
			resp.Header.Set(h.opts.RegionHeader, be.Region)
		}
		return nil
	}
	if h.opts.RegionHeader != "" {
		resp.Header.Set(h.opts.RegionHeader, be.Region)
	}
	head := append([]byte(nil), resp.Header.Header()...)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = conn.Close()
		return errors.New("shutting down")
	}
	h.tunnels[conn] = struct{}{}
	h.mu.Unlock()
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		h.mu.Lock()
		if h.closed {
			delete(h.tunnels, conn)
			h.mu.Unlock()
			_ = client.Close()
			_ = conn.Close()
			return
		}
		h.tunnels[client] = struct{}{}
		h.tunnelWG.Add(1)
		h.mu.Unlock()
		be.Acquire()
		defer h.tunnelWG.Done()
		defer be.Release()
		defer func() {
			h.mu.Lock()
			delete(h.tunnels, client)
			delete(h.tunnels, conn)
			h.mu.Unlock()
			_ = client.Close()
			_ = conn.Close()
		}()
		if _, err := client.Write(head); err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(conn, client)
			if c, ok := conn.(*net.TCPConn); ok {
				_ = c.CloseWrite()
			}
		}()
		_, _ = io.Copy(client, br) // the backend's bytes, buffered ones first
		_ = client.Close()
		<-done
	})
	return nil
}
