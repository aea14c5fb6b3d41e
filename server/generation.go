package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/clientip"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/proxy/core"
	"github.com/geoproxy/geoproxy/proxy/h1"
	"github.com/geoproxy/geoproxy/proxy/nethttp"
	"github.com/geoproxy/geoproxy/route"
)

// generation is everything built from one configuration: the locator with
// its overrides, the routing specs and router, the balancer with its retry
// settings and metric children, the engine with its backend pools, and the
// health checker. The server hands each new client connection to the
// current generation, which serves it to its end; a reload builds the next
// generation beside the current one, swaps it in, and retires the old one
// once its requests are done. Nothing on the request path takes a lock to
// find its generation: a connection is given to one.
type generation struct {
	id       int64
	cfg      *config.Config
	token    string // the admin bearer token; "" for none
	hash     string
	loadedAt time.Time

	locator  *geo.Locator
	router   *core.Router
	bal      *core.Balancer
	native   *h1.Engine       // engine native
	handler  *nethttp.Handler // engine nethttp
	httpSrv  *http.Server     // engine nethttp
	checker  *health.Checker
	passive  *health.Passive // nil when resilience.passive_health is off
	backends []health.BackendSpec
	targets  []health.Target
	ln       *handoff     // the plain listener's connections the server gives it
	open     atomic.Int64 // net/http servers: connections open
	// The TLS listener (when tls.listen is set): its connections, served
	// by Go's net/http server on either engine (HTTP/2 and HTTP/1.1, by
	// ALPN), over tlsHandler (the native engine's; the nethttp engine's is
	// handler).
	tlsIn      *handoff
	tlsSrv     *http.Server
	tlsHandler *nethttp.Handler
	// tlsH1 are the TLS listener's HTTP/1.1 connections on the native
	// engine, which serves them on goroutines (HTTP/2 goes to tlsSrv).
	tlsH1 *handoff
	// redirectSrv answers the plain listener's requests with redirects to
	// https (tls.redirect_http), in place of the engine.
	redirectSrv *http.Server

	stopChecks context.CancelFunc
	stopRouter context.CancelFunc
	checks     sync.WaitGroup // the checker
	serving    sync.WaitGroup // the router and the engine
}

// build makes a generation from cfg over the geo database db; nothing runs
// until start.
func (s *Server) build(cfg *config.Config, db *geo.Database, id int64, hash string) (*generation, error) {
	g := &generation{id: id, cfg: cfg, hash: hash, loadedAt: time.Now()}
	token, err := adminToken(cfg)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	g.token = token
	g.locator = NewLocator(cfg, db)
	specs, backends, targets := Topology(cfg)
	g.backends, g.targets = backends, targets
	for i, r := range cfg.Regions {
		for j, b := range r.Backends {
			tc, err := backendTLS(b.TLS, b.URL.Hostname())
			if err != nil {
				return nil, fmt.Errorf("server: regions[%d].backends[%d]: %w", i, j, err)
			}
			be := specs[i].Backends[j]
			be.TLS, targets[be.Index].TLS = tc, tc
		}
	}
	res := cfg.Resilience
	shaping := core.Shaping{
		FailbackHold: res.FailbackHold, SlowStart: res.SlowStart,
		DegradedBelow: res.DegradedBelow, Panic: res.WhenAllDown == config.AllDownPanic,
		Rules: Rules(cfg),
	}
	if prev := s.gen.Load(); prev != nil {
		shaping.Previous = prev.router // failback state carries over
	}
	router, err := core.NewRouter(specs, s.store, s.log, shaping)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	g.router = router
	g.checker = health.NewChecker(s.store, health.Settings{
		Path:               cfg.HealthCheck.Path,
		Interval:           cfg.HealthCheck.Interval,
		Timeout:            cfg.HealthCheck.Timeout,
		HealthyThreshold:   cfg.HealthCheck.HealthyThreshold,
		UnhealthyThreshold: cfg.HealthCheck.UnhealthyThreshold,
	}, s.log, s.metrics)
	if res.PassiveHealth {
		g.passive = health.NewPassive(s.store, health.PassiveSettings{
			ErrorsInRow: res.EjectAfterErrors, FailuresInRow: res.EjectAfter5xx, Statuses: res.EjectStatuses,
			BelowSuccess: res.EjectBelowSuccess, Window: res.SuccessWindow, MinRequests: res.SuccessMinRequests,
			EjectionTime: res.EjectionTime, MaxEjectionTime: res.MaxEjectionTime, MaxEjected: res.MaxEjected,
		}, targets, s.log, s.metrics)
	}
	perTry := res.PerTryTimeout // 0: none
	if t := cfg.Proxy.ResponseHeaderTimeout; t > 0 && (perTry == 0 || t < perTry) {
		perTry = t
	}
	g.bal = core.New(core.Options{
		Locator:   g.locator,
		Resolver:  clientip.NewResolver(cfg.GeoIP.TrustedProxies),
		Router:    g.router,
		Metrics:   s.metrics,
		Log:       s.log,
		AccessLog: cfg.AccessLog,
		Rand:      s.rand,

		MaxAttempts:    cfg.Proxy.MaxAttempts,
		RetryOnStatus:  cfg.Proxy.RetryOnStatus,
		Passive:        g.passive,
		RetryBudget:    res.RetryBudget,
		RetryBudgetMin: res.RetryBudgetMin,
		PerTryTimeout:  perTry,
		RequestTimeout: res.RequestTimeout,
		Edge:           cfg.GeoIP.EdgeHeaders,
		Affinity:       cfg.Affinity,
		ClientRate:     float64(cfg.Limits.RequestsPerSecondPerClient),
		ClientBurst:    cfg.Limits.BurstPerClient,
		Previous:       previousBalancer(s.gen.Load()),
	})
	retryAfter := cfg.HealthCheck.Interval * time.Duration(cfg.HealthCheck.HealthyThreshold)
	var all []*route.Backend
	for _, spec := range specs {
		all = append(all, spec.Backends...)
	}
	httpOpts := nethttp.Options{
		Balancer: g.bal, Backends: all, Proxy: cfg.Proxy, RetryAfter: retryAfter, Metrics: s.metrics, Log: s.log,
		MaxRequestBody: cfg.Limits.MaxRequestBody, MaxHeaderBytes: cfg.Limits.MaxHeaderBytes,
		// Options.ClientTimeout (tests) stands for every client timeout.
		IdleTimeout: h1.Timeout(cfg.Limits.IdleTimeout, s.clientTimeout),
		HeadTimeout: h1.Timeout(cfg.Limits.HeadTimeout, s.clientTimeout),
		BodyTimeout: h1.Timeout(cfg.Limits.BodyTimeout, s.clientTimeout),
	}
	switch cfg.Engine {
	case config.EngineNetHTTP:
		g.handler = nethttp.New(httpOpts)
		protocols := new(http.Protocols)
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true)
		g.httpSrv = s.httpServer(g, s.challenges(cfg, g.handler), protocols)
	default:
		g.native = h1.New(h1.Options{
			Balancer: g.bal, Proxy: cfg.Proxy, Backends: all, RetryAfter: retryAfter, Metrics: s.metrics, Log: s.log,
			Loops: cfg.Proxy.EventLoops, LoopsWithTLS: cfg.Proxy.EventLoopsWithTLSBackends, MaxHeaderBytes: cfg.Limits.MaxHeaderBytes,
			MaxRequestBody: cfg.Limits.MaxRequestBody, RequestMemory: cfg.Limits.RequestMemory,
			// Options.ClientTimeout (tests) stands for every client timeout.
			IdleTimeout: h1.Timeout(cfg.Limits.IdleTimeout, s.clientTimeout),
			HeadTimeout: h1.Timeout(cfg.Limits.HeadTimeout, s.clientTimeout),
			BodyTimeout: h1.Timeout(cfg.Limits.BodyTimeout, s.clientTimeout),
		})
	}
	if cfg.TLS.Enabled() {
		s.buildTLS(g, httpOpts)
	}
	return g, nil
}

// httpServer is a net/http server of the generation over handler: the
// nethttp engine's, or the TLS listener's.
func (s *Server) httpServer(g *generation, handler http.Handler, protocols *http.Protocols) *http.Server {
	errLog, _ := zap.NewStdLogAt(s.log.Named("http"), zap.DebugLevel)
	return &http.Server{
		Handler: handler,
		// The native engine's limits: a head within the head timeout,
		// and the idle timeout between requests (on the connections of
		// nethttp.Listener, the handler's ConnState keeps them as the
		// native engine does). The body's deadline is set by the
		// handler, so that a long answer is not cut by a ReadTimeout.
		ReadHeaderTimeout: h1.Timeout(g.cfg.Limits.HeadTimeout, s.clientTimeout),
		IdleTimeout:       h1.Timeout(g.cfg.Limits.IdleTimeout, s.clientTimeout),
		// Above limits.max_header_bytes, which the handler keeps and
		// counts (431); Go's default is 1 MiB.
		MaxHeaderBytes: nethttp.ServerMaxHeaderBytes(g.cfg.Limits.MaxHeaderBytes),
		ErrorLog:       errLog,
		Protocols:      protocols,
		ConnState: func(nc net.Conn, state http.ConnState) {
			if g.handler != nil {
				g.handler.ConnState(nc, state) // the nethttp engine's limits on its connections
			}
			switch state {
			case http.StateNew:
				g.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				g.open.Add(-1)
			}
		},
	}
}

// start makes the health store hold the generation's backends (those that
// were there keep their health), starts its checker, router and engine.
// The engine takes connections from g.ln once the server gives them.
func (s *Server) start(g *generation, addr net.Addr) error {
	if err := s.store.Sync(g.backends); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := s.pruneOverrides(g); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	checks, stopChecks := context.WithCancel(s.base)
	routing, stopRouter := context.WithCancel(s.base)
	g.stopChecks, g.stopRouter = stopChecks, stopRouter
	g.checks.Go(func() { g.checker.Run(checks, g.targets) })
	if g.passive != nil {
		g.checks.Go(func() { g.passive.Run(checks) })
	}
	g.serving.Go(func() {
		if err := g.router.Run(routing); err != nil {
			s.log.Error("router stopped", zap.Error(err))
		}
	})
	g.ln = newHandoff(addr)
	if g.tlsSrv != nil {
		g.tlsIn = newHandoff(s.tlsEntry.ln.Addr())
		if g.native != nil && !anyHTTP2(g.cfg) {
			// (The native engine speaks HTTP/1.1 to backends: with HTTP/2
			// ones, every TLS connection goes to Go's server.)
			g.tlsH1 = newHandoff(s.tlsEntry.ln.Addr())
		}
	}
	serve := func(ln net.Listener, serve func(net.Listener) error) {
		g.serving.Go(func() {
			if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				s.log.Error("proxy engine stopped", zap.Int64("generation", g.id), zap.Error(err))
			}
		})
	}
	switch {
	case g.redirectSrv != nil:
		serve(g.ln, g.redirectSrv.Serve)
	case g.httpSrv != nil:
		serve(nethttp.Listener(g.ln), g.httpSrv.Serve)
	default:
		serve(g.ln, g.native.Serve)
	}
	if g.tlsSrv != nil {
		serve(g.tlsIn, g.tlsSrv.Serve)
	}
	if g.tlsH1 != nil {
		serve(g.tlsH1, g.native.Serve)
	}
	return nil
}

// in is the handoff of the listener's connections; proto is a TLS
// connection's protocol (ALPN).
func (g *generation) in(listener, proto string) *handoff {
	switch {
	case listener != listenerHTTPS:
		return g.ln
	case proto != "h2" && g.tlsH1 != nil:
		return g.tlsH1
	}
	return g.tlsIn
}

// previousBalancer is g's balancer; nil for no generation yet.
func previousBalancer(g *generation) *core.Balancer {
	if g == nil {
		return nil
	}
	return g.bal
}

// anyHTTP2 reports whether a backend of cfg speaks HTTP/2.
func anyHTTP2(cfg *config.Config) bool {
	for _, r := range cfg.Regions {
		for _, b := range r.Backends {
			if b.Protocol == config.ProtocolH2 || b.Protocol == config.ProtocolH2C {
				return true
			}
		}
	}
	return false
}

// servers are the generation's net/http servers.
func (g *generation) servers() []*http.Server {
	var all []*http.Server
	for _, srv := range []*http.Server{g.httpSrv, g.tlsSrv, g.redirectSrv} {
		if srv != nil {
			all = append(all, srv)
		}
	}
	return all
}

// drain makes every answer of the generation close its connection; a
// shutdown that follows closes a connection waiting for a request once it
// has waited idle (see h1.Engine.Drain).
func (g *generation) drain(idle time.Duration) {
	if g.native != nil {
		g.native.Drain(idle)
	}
	if g.handler != nil {
		g.handler.Drain()
	}
	if g.tlsHandler != nil {
		g.tlsHandler.Drain()
	}
}

// shutdown stops the generation's engine from taking connections, lets
// its requests finish until ctx ends, then stops its health checks and
// router. With waitIdle (a generation a reload replaced), the net/http
// engine's idle keep-alive connections are not closed: each ends after
// its next answer or at its idle timeout, so that no client's request
// meets a connection closing under it.
func (g *generation) shutdown(ctx context.Context, waitIdle bool) error {
	var err error
	// The native engine and Go's servers finish their requests side by
	// side: HTTP/2 clients get their GOAWAY at once.
	var native sync.WaitGroup
	if g.native != nil {
		native.Go(func() { err = g.native.Shutdown(ctx) })
	}
	if srvs := g.servers(); len(srvs) > 0 {
		_ = g.ln.Close()
		for _, h := range []*handoff{g.tlsIn, g.tlsH1} {
			if h != nil {
				_ = h.Close()
			}
		}
		if waitIdle {
			tick := time.NewTicker(20 * time.Millisecond)
			for g.open.Load() > 0 && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
			tick.Stop()
		}
		var wg sync.WaitGroup
		errs := make([]error, len(srvs))
		for i, srv := range srvs {
			wg.Go(func() {
				if errs[i] = srv.Shutdown(ctx); errs[i] != nil {
					_ = srv.Close()
				}
			})
		}
		wg.Wait()
		native.Wait()
		err = errors.Join(append(errs, err)...)
		g.abandon()
	}
	native.Wait()
	_ = g.ln.Close()
	for _, h := range []*handoff{g.tlsIn, g.tlsH1} {
		if h != nil {
			_ = h.Close()
		}
	}
	g.stopChecks()
	g.checks.Wait()
	g.stopRouter()
	g.serving.Wait()
	return err
}

// abandon releases what build made, for a generation never started.
func (g *generation) abandon() {
	if g.handler != nil {
		g.handler.Close()
	}
	if g.tlsHandler != nil {
		g.tlsHandler.Close()
	}
}

// memory reports the native engine's request memory; zeros for nethttp.
func (g *generation) memory() (used, limit, refused int64) {
	if g.native == nil {
		return 0, 0, 0
	}
	return g.native.RequestMemory()
}

// handoff is a listener the server feeds: each generation's engine accepts
// from its own, and the server gives every new connection to the current
// generation's.
type handoff struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next connection given, or net.ErrClosed.
func (h *handoff) Accept() (net.Conn, error) {
	select {
	case nc := <-h.conns:
		return nc, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept.
func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

// Addr is the real listener's address.
func (h *handoff) Addr() net.Addr { return h.addr }

// give hands nc to the engine accepting; false when the listener is closed.
func (h *handoff) give(nc net.Conn) bool {
	select {
	case h.conns <- nc:
		return true
	case <-h.done:
		return false
	}
}

// isTemporary reports accept errors worth waiting out (out of file
// descriptors, a connection aborted before it was accepted).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// retireGrace is how long a generation a reload replaced has, beyond the
// client timeout (its connections' idle timeout), for its requests.
const retireGrace = 15 * time.Second

// snapshot returns the current generation's routing snapshot.
func (s *Server) snapshot() *route.Snapshot { return s.gen.Load().router.Snapshot() }
