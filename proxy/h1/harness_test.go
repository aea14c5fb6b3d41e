package h1

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoproxy/geoproxy/clientip"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/proxy/core"
	"github.com/geoproxy/geoproxy/route"
)

// loopsFlag sets the event loops of every engine under test, unless a test
// sets its own: 0, one per GOMAXPROCS as in production; -1, none, as with
// TLS backends without Options.LoopsWithTLS (go test ./h1 -h1.loops=-1).
var loopsFlag = flag.Int("h1.loops", 0, "event loops of the engine under test (-1: none)")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioTimeout bounds every read and write a test makes.
const ioTimeout = 5 * time.Second

// ---------------------------------------------------------------------------
// Raw backends

// fieldList is a head's fields as read off the wire, names as sent.
type fieldList [][2]string

// get returns the first value of the field named name (any case).
func (l fieldList) get(name string) (string, bool) {
	for _, f := range l {
		if strings.EqualFold(f[0], name) {
			return f[1], true
		}
	}
	return "", false
}

func (l fieldList) has(name string) bool { _, ok := l.get(name); return ok }

func (l fieldList) value(name string) string { v, _ := l.get(name); return v }

// bReq is a request as a raw backend read it off the wire.
type bReq struct {
	line string // request line
	fieldList
	body []byte
	conn int             // which accepted connection (1-based) carried it
	quit <-chan struct{} // closed when the backend stops
}

// handler answers one request by writing raw bytes on nc; it returns false
// to close the connection afterwards.
type handler func(nc net.Conn, r *bReq) bool

// backend is a raw HTTP/1.1 server on loopback: it parses requests itself
// (Content-Length or chunked bodies) and answers with exact bytes.
type backend struct {
	ln    net.Listener
	url   *url.URL
	h     handler
	quit  chan struct{} // closed when the test ends: handlers stop waiting
	conns atomic.Int32
	reqs  chan *bReq // every request read, in order

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	wg     sync.WaitGroup
	closed sync.Once
}

func newBackend(t testing.TB, h handler) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return serveBackend(t, h, ln, "http")
}

// newTLSBackend is newBackend speaking TLS, with cert (see selfSigned).
func newTLSBackend(t testing.TB, h handler, cert tls.Certificate) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	return serveBackend(t, h, ln, "https")
}

func serveBackend(t testing.TB, h handler, ln net.Listener, scheme string) *backend {
	t.Helper()
	u, err := url.Parse(scheme + "://" + ln.Addr().String())
	require.NoError(t, err)
	b := &backend{ln: ln, url: u, h: h, quit: make(chan struct{}), reqs: make(chan *bReq, 256), open: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.accept()
	return b
}

func (b *backend) accept() {
	defer b.wg.Done()
	for {
		nc, err := b.ln.Accept()
		if err != nil {
			return
		}
		n := int(b.conns.Add(1))
		b.mu.Lock()
		b.open[nc] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serve(nc, n)
	}
}

func (b *backend) serve(nc net.Conn, n int) {
	defer b.wg.Done()
	defer func() {
		_ = nc.Close()
		b.mu.Lock()
		delete(b.open, nc)
		b.mu.Unlock()
	}()
	br := bufio.NewReader(nc)
	for {
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		r, err := readRequest(br)
		if err != nil {
			return
		}
		r.conn, r.quit = n, b.quit
		select {
		case b.reqs <- r:
		default:
		}
		if !b.h(nc, r) {
			return
		}
	}
}

// close stops the backend: listener, connections, handlers; a test may
// call it before its cleanup does.
func (b *backend) close() {
	b.closed.Do(b.stop)
}

func (b *backend) stop() {
	close(b.quit)
	_ = b.ln.Close()
	b.mu.Lock()
	for nc := range b.open {
		_ = nc.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// next returns the next request the backend read.
func (b *backend) next(t *testing.T) *bReq {
	t.Helper()
	select {
	case r := <-b.reqs:
		return r
	case <-time.After(ioTimeout):
		t.Fatal("the backend got no request")
		return nil
	}
}

// readRequest reads one request head and its body.
func readRequest(br *bufio.Reader) (*bReq, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	r := &bReq{line: strings.TrimRight(line, "\r\n")}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("bad field %q", l)
		}
		r.fieldList = append(r.fieldList, [2]string{name, strings.TrimSpace(value)})
	}
	if te, ok := r.get("Transfer-Encoding"); ok && strings.EqualFold(te, "chunked") {
		r.body, _, err = readChunkedBody(br)
		return r, err
	}
	if cl, ok := r.get("Content-Length"); ok {
		n, err := strconv.Atoi(cl)
		if err != nil {
			return nil, err
		}
		r.body = make([]byte, n)
		if _, err := io.ReadFull(br, r.body); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// readChunkedBody decodes a chunked body, returning the data and the raw
// trailer section (up to and including the final empty line).
func readChunkedBody(br *bufio.Reader) (data []byte, trailer string, err error) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, "", err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return nil, "", fmt.Errorf("chunk-size line %q without CRLF", line)
		}
		sz := strings.TrimSuffix(line, "\r\n")
		if i := strings.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i]
		}
		n, err := strconv.ParseUint(strings.TrimSpace(sz), 16, 32)
		if err != nil {
			return nil, "", err
		}
		if n == 0 {
			var tr strings.Builder
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return nil, "", err
				}
				tr.WriteString(l)
				if l == "\r\n" {
					return data, tr.String(), nil
				}
			}
		}
		start := len(data)
		data = append(data, make([]byte, n)...)
		if _, err := io.ReadFull(br, data[start:]); err != nil {
			return nil, "", err
		}
		crlf := make([]byte, 2)
		if _, err := io.ReadFull(br, crlf); err != nil || string(crlf) != "\r\n" {
			return nil, "", fmt.Errorf("chunk not followed by CRLF: %q", crlf)
		}
	}
}

// answer returns a handler that always writes resp and keeps the connection.
func answer(resp string) handler {
	return func(nc net.Conn, _ *bReq) bool {
		_, err := io.WriteString(nc, resp)
		return err == nil
	}
}

// okHandler answers 200 with a body naming the request line.
func okHandler(nc net.Conn, r *bReq) bool {
	body := "ok " + r.line
	_, err := fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return err == nil
}

// ---------------------------------------------------------------------------
// The engine in front of raw backends

// Regions, nearest first for a loopback client (located at the default
// location, New York).
var regionSpecs = []struct {
	name string
	loc  route.Point
}{
	{"us-east", route.Point{Lat: 33.84, Lon: -81.16}},
	{"us-west", route.Point{Lat: 45.59, Lon: -121.18}},
	{"europe-west", route.Point{Lat: 50.45, Lon: 3.82}},
}

type proxyOpts struct {
	// handlers: one backend each, in regions us-east, us-west, europe-west
	// (at most three).
	handlers              []handler
	clientTimeout         time.Duration
	idleTimeout           time.Duration // Options.IdleTimeout
	headTimeout           time.Duration // Options.HeadTimeout
	bodyTimeout           time.Duration // Options.BodyTimeout
	maxHeaderBytes        int           // Options.MaxHeaderBytes
	responseHeaderTimeout time.Duration // 0: 3 s; <0: none
	basePath              string        // path of the backend URLs ("/app")
	loops                 int           // Options.Loops; 0: -h1.loops
	requestMemory         int64         // Options.RequestMemory
	loopsWithTLS          bool          // Options.LoopsWithTLS
	// tls says, by handler, which backends speak TLS: https URLs, with a
	// certificate for 127.0.0.1 the engine trusts (route.Backend.TLS).
	tls []bool
	// tlsServers are more backends, net/http ones speaking TLS
	// (httptest.NewTLSServer), in the regions after the handlers'.
	tlsServers []*httptest.Server
	// oneRegion puts every backend in us-east.
	oneRegion bool
}

type proxy struct {
	addr     string
	e        *Engine
	backends []*backend
	routes   []*route.Backend // every backend as the engine has it: handlers', then tlsServers'
	reg      *prometheus.Registry
	m        *metrics.Metrics
	served   chan error // Serve's result
	stopOnce sync.Once
}

func openCity(t testing.TB) *geo.Database {
	t.Helper()
	db, err := geo.Open("../../testdata/geoip2-city.mmdb")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// newProxy starts raw backends and an engine in front of them; everything
// stops when the test ends (backends first, so that no request is left
// waiting on one, then the engine).
func newProxy(t testing.TB, o proxyOpts) *proxy {
	t.Helper()
	require.NotEmpty(t, o.handlers)
	require.LessOrEqual(t, len(o.handlers)+len(o.tlsServers), len(regionSpecs))
	db := openCity(t)

	p := &proxy{served: make(chan error, 1)}
	var (
		specs []route.RegionSpec
		rows  []health.BackendSpec
		all   []*route.Backend
		cert  tls.Certificate
		roots *x509.CertPool
	)
	add := func(u url.URL, tc *tls.Config) {
		rs := regionSpecs[len(all)]
		if o.oneRegion {
			rs = regionSpecs[0]
		}
		u.Path = o.basePath
		rb := &route.Backend{ID: u.String(), Region: rs.name, URL: &u, Weight: 1, Index: len(all), TLS: tc}
		if len(specs) > 0 && specs[len(specs)-1].Name == rs.name {
			specs[len(specs)-1].Backends = append(specs[len(specs)-1].Backends, rb)
		} else {
			specs = append(specs, route.RegionSpec{Name: rs.name, Location: rs.loc, Backends: []*route.Backend{rb}})
		}
		rows = append(rows, health.BackendSpec{ID: rb.ID, Region: rs.name})
		all = append(all, rb)
	}
	for i, h := range o.handlers {
		var be *backend
		var tc *tls.Config
		if i < len(o.tls) && o.tls[i] {
			if roots == nil {
				cert, roots = selfSigned(t), x509.NewCertPool()
				leaf, err := x509.ParseCertificate(cert.Certificate[0])
				require.NoError(t, err)
				roots.AddCert(leaf)
			}
			be = newTLSBackend(t, h, cert)
			tc = &tls.Config{ServerName: "127.0.0.1", RootCAs: roots, MinVersion: tls.VersionTLS12}
		} else {
			be = newBackend(t, h)
		}
		p.backends = append(p.backends, be)
		add(*be.url, tc)
	}
	for _, srv := range o.tlsServers {
		u, err := url.Parse(srv.URL)
		require.NoError(t, err)
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		add(*u, &tls.Config{ServerName: "127.0.0.1", RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	p.routes = all
	store, err := health.NewStore()
	require.NoError(t, err)
	require.NoError(t, store.Sync(rows))
	for _, r := range rows {
		_, _, err := store.SetStatus(r.ID, health.Healthy, "")
		require.NoError(t, err)
	}
	log := zaptest.NewLogger(t)
	if _, fuzzing := t.(*testing.F); fuzzing {
		// A fuzz target may not log through the F it was made with.
		log = zap.NewNop()
	}
	router, err := core.NewRouter(specs, store, log, core.Shaping{})
	require.NoError(t, err)
	p.reg = prometheus.NewRegistry()
	m := metrics.New(p.reg, "test")
	p.m = m
	px := config.Proxy{
		RequestHeaders: []config.Header{
			{Name: "X-City", Template: config.Template{Raw: "{city}", Parts: []config.Part{{Var: config.VarCity}}}},
			{Name: "X-Country", Template: config.Template{Raw: "{country}", Parts: []config.Part{{Var: config.VarCountry}}}},
			{Name: "X-Geoproxy-Nearest-Region", Template: config.Template{Raw: "{nearest_region}", Parts: []config.Part{{Var: config.VarNearestRegion}}}},
		},
		RegionHeader:          "X-Geoproxy-Region",
		MaxAttempts:           3,
		RetryOnStatus:         []int{502, 503, 504},
		DialTimeout:           time.Second,
		ResponseHeaderTimeout: 3 * time.Second,
	}
	switch {
	case o.responseHeaderTimeout > 0:
		px.ResponseHeaderTimeout = o.responseHeaderTimeout
	case o.responseHeaderTimeout < 0:
		px.ResponseHeaderTimeout = 0
	}
	b := core.New(core.Options{
		Locator:       geo.NewLocator(db, geo.Location{Lat: 40.71, Lon: -74.01}, nil),
		Resolver:      clientip.NewResolver([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
		Router:        router,
		Metrics:       m,
		Log:           log,
		MaxAttempts:   px.MaxAttempts,
		RetryOnStatus: px.RetryOnStatus,
		PerTryTimeout: px.ResponseHeaderTimeout, // the server passes the lower of it and resilience.per_try_timeout
	})
	p.e = New(Options{
		Balancer:       b,
		Proxy:          px,
		Backends:       all,
		RetryAfter:     time.Second,
		ClientTimeout:  o.clientTimeout,
		IdleTimeout:    o.idleTimeout,
		HeadTimeout:    o.headTimeout,
		BodyTimeout:    o.bodyTimeout,
		MaxHeaderBytes: o.maxHeaderBytes,
		RequestMemory:  o.requestMemory,
		Loops:          cmp.Or(o.loops, *loopsFlag),
		LoopsWithTLS:   o.loopsWithTLS,
		Metrics:        m,
		Log:            log,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p.addr = ln.Addr().String()
	go func() { p.served <- p.e.Serve(ln) }()

	t.Cleanup(func() {
		// Runs last: the engine.
		p.shutdown(t, 5*time.Second)
	})
	t.Cleanup(func() {
		// Runs first: the backends.
		for _, be := range p.backends {
			be.close()
		}
	})
	return p
}

// shutdown stops the engine (once) and waits for Serve to return.
func (p *proxy) shutdown(t testing.TB, within time.Duration) {
	p.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		_ = p.e.Shutdown(ctx)
		select {
		case err := <-p.served:
			if !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
			}
		case <-time.After(ioTimeout):
			t.Error("Serve did not return after Shutdown")
		}
	})
}

// ---------------------------------------------------------------------------
// Raw clients

type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (p *proxy) dial(t *testing.T) *client {
	t.Helper()
	nc, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(ioTimeout)))
	return &client{t: t, nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
}

func (c *client) send(s string) {
	c.t.Helper()
	_, err := io.WriteString(c.nc, s)
	require.NoError(c.t, err)
}

// resp is a response as the client read it off the wire.
type resp struct {
	statusLine string
	status     int
	fieldList
	body    []byte
	chunked bool   // framed with chunked
	trailer string // raw trailer section of a chunked body
	head    string // the head as received
}

// read reads one response to a request with method; bodiless statuses and
// HEAD have no body; without length or chunked it reads to EOF.
func (c *client) read(method string) *resp {
	c.t.Helper()
	r, err := readResponse(c.br, method)
	require.NoError(c.t, err, "reading the response")
	return r
}

func readResponse(br *bufio.Reader, method string) (*resp, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	r := &resp{statusLine: strings.TrimRight(line, "\r\n"), head: line}
	if len(r.statusLine) < 12 || !strings.HasPrefix(r.statusLine, "HTTP/1.") {
		return nil, fmt.Errorf("bad status line %q", r.statusLine)
	}
	if r.status, err = strconv.Atoi(r.statusLine[9:12]); err != nil {
		return nil, err
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		r.head += l
		if !strings.HasSuffix(l, "\r\n") {
			return nil, fmt.Errorf("field line %q without CRLF", l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		if l == "" {
			break
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("bad field %q", l)
		}
		r.fieldList = append(r.fieldList, [2]string{name, strings.TrimSpace(value)})
	}
	if method == "HEAD" || r.status < 200 || r.status == 204 || r.status == 304 {
		return r, nil
	}
	if te, ok := r.get("Transfer-Encoding"); ok {
		if !strings.EqualFold(te, "chunked") {
			return nil, fmt.Errorf("transfer coding %q", te)
		}
		r.chunked = true
		r.body, r.trailer, err = readChunkedBody(br)
		return r, err
	}
	if cl, ok := r.get("Content-Length"); ok {
		n, err := strconv.Atoi(cl)
		if err != nil {
			return nil, err
		}
		r.body = make([]byte, n)
		_, err = io.ReadFull(br, r.body)
		return r, err
	}
	r.body, err = io.ReadAll(br)
	return r, err
}

// expectClosed asserts the proxy closes the connection within d, without
// sending anything more.
func (c *client) expectClosed(d time.Duration) {
	c.t.Helper()
	require.NoError(c.t, c.nc.SetReadDeadline(time.Now().Add(d)))
	b, err := c.br.ReadByte()
	require.Error(c.t, err, "the connection stays open; got byte %q", b)
	require.True(c.t, isClosed(err), "want the connection closed within %v, got %v", d, err)
}

// expectOpen asserts the proxy neither sends anything nor closes the
// connection for d.
func (c *client) expectOpen(d time.Duration) {
	c.t.Helper()
	require.NoError(c.t, c.nc.SetReadDeadline(time.Now().Add(d)))
	b, err := c.br.ReadByte()
	var ne net.Error
	require.True(c.t, errors.As(err, &ne) && ne.Timeout(), "want the connection open and silent, got byte %q, err %v", b, err)
	require.NoError(c.t, c.nc.SetReadDeadline(time.Now().Add(ioTimeout)))
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed)
}

// get is a simple keep-alive GET.
func get(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: proxy.test\r\n\r\n"
}
