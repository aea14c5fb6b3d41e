// Package server assembles a running geoproxy from a configuration: the geo
// database, the health store and checkers, the router, the proxy handler and
// the admin listener, and runs them until told to stop.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/balancer"
	"github.com/geoproxy/geoproxy/clientip"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/h1"
	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/proxy"
	"github.com/geoproxy/geoproxy/route"
)

// geoSettle is how long the geo database file must be quiet after a change
// before it is reloaded.
const geoSettle = 250 * time.Millisecond

// Options configure a Server.
type Options struct {
	Config  *config.Config
	Log     *zap.Logger
	Version string
	// Database, when set, is used instead of opening Config.GeoIP.Database.
	Database *geo.Database
	// Rand supplies random numbers for backend picks (tests); nil = default.
	Rand func() uint64
	// ClientTimeout bounds, on both engines, how long a client may take to
	// send a request's head and body, stay idle between requests, and take
	// each part of its answer; zero means 60 s.
	ClientTimeout time.Duration
}

// Server is one geoproxy process's serving state.
type Server struct {
	cfg      *config.Config
	log      *zap.Logger
	version  string
	registry *prometheus.Registry
	metrics  *metrics.Metrics
	locator  *geo.Locator
	store    *health.Store
	checker  *health.Checker
	targets  []health.Target
	router   *balancer.Router
	bal      *balancer.Balancer
	handler  *proxy.Handler // engine nethttp
	native   *h1.Engine     // engine native
	started  time.Time
	// clientTimeout: see Options.ClientTimeout.
	clientTimeout time.Duration

	proxyLn, adminLn   net.Listener
	proxySrv, adminSrv *http.Server
	cancel             context.CancelFunc
	wg                 sync.WaitGroup
	ready              chan struct{}
	draining           atomic.Bool
}

// New builds a Server from a validated configuration. Nothing runs and no
// port is bound until Start.
func New(o Options) (*Server, error) {
	cfg := o.Config
	s := &Server{cfg: cfg, log: o.Log, version: o.Version, ready: make(chan struct{}), clientTimeout: o.ClientTimeout}
	if s.clientTimeout <= 0 {
		s.clientTimeout = h1.DefaultClientTimeout
	}

	db := o.Database
	if db == nil {
		var err error
		if db, err = geo.Open(cfg.GeoIP.Database); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	s.locator = NewLocator(cfg, db)

	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = metrics.New(s.registry, o.Version)
	s.registry.MustRegister(metrics.NewGeoCollector(func() geo.Info { return s.locator.Database().Info() }))

	store, err := health.NewStore()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.store = store
	specs, backends, targets := Topology(cfg)
	if err := store.Sync(backends); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.targets = targets
	s.checker = health.NewChecker(store, health.Settings{
		Path:               cfg.HealthCheck.Path,
		Interval:           cfg.HealthCheck.Interval,
		Timeout:            cfg.HealthCheck.Timeout,
		HealthyThreshold:   cfg.HealthCheck.HealthyThreshold,
		UnhealthyThreshold: cfg.HealthCheck.UnhealthyThreshold,
	}, o.Log, s.metrics)

	s.router, err = balancer.NewRouter(specs, store, o.Log)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.registry.MustRegister(metrics.NewStateCollector(s.router.Snapshot))
	s.bal = balancer.New(balancer.Options{
		Locator:   s.locator,
		Resolver:  clientip.NewResolver(cfg.GeoIP.TrustedProxies),
		Router:    s.router,
		Metrics:   s.metrics,
		Log:       o.Log,
		AccessLog: cfg.AccessLog,
		Rand:      o.Rand,

		MaxAttempts:   cfg.Proxy.MaxAttempts,
		RetryOnStatus: cfg.Proxy.RetryOnStatus,
	})
	retryAfter := cfg.HealthCheck.Interval * time.Duration(cfg.HealthCheck.HealthyThreshold)
	var all []*route.Backend
	for _, spec := range specs {
		all = append(all, spec.Backends...)
	}
	switch cfg.Engine {
	case config.EngineNetHTTP:
		s.handler = proxy.New(proxy.Options{
			Balancer: s.bal, Backends: all, Proxy: cfg.Proxy, RetryAfter: retryAfter, Metrics: s.metrics, Log: o.Log,
			ClientTimeout: s.clientTimeout, MaxRequestBody: cfg.Limits.MaxRequestBody,
		})
	default:
		s.native = h1.New(h1.Options{
			Balancer: s.bal, Proxy: cfg.Proxy, Backends: all, RetryAfter: retryAfter, Metrics: s.metrics, Log: o.Log,
			Loops: cfg.Proxy.EventLoops, ClientTimeout: s.clientTimeout,
			MaxRequestBody: cfg.Limits.MaxRequestBody, RequestMemory: cfg.Limits.RequestMemory,
		})
		metrics.RegisterRequestMemory(s.registry, s.native.RequestMemory)
	}
	return s, nil
}

// NewLocator builds the configuration's locator over db.
func NewLocator(cfg *config.Config, db *geo.Database) *geo.Locator {
	var overrides []geo.Override
	for _, o := range cfg.GeoIP.Overrides {
		l := o.Location
		overrides = append(overrides, geo.Override{Prefix: o.Prefix, Location: geo.Location{
			Country: l.Country, Continent: l.Continent, Subdivision: l.Subdivision, City: l.City,
			Lat: l.Lat, Lon: l.Lon,
		}})
	}
	def := geo.Location{Lat: cfg.GeoIP.DefaultLocation.Lat, Lon: cfg.GeoIP.DefaultLocation.Lon}
	return geo.NewLocator(db, def, overrides)
}

// Topology turns the configuration's regions into routing specs, health
// store rows and probe targets.
func Topology(cfg *config.Config) ([]route.RegionSpec, []health.BackendSpec, []health.Target) {
	var (
		specs    []route.RegionSpec
		backends []health.BackendSpec
		targets  []health.Target
	)
	for _, r := range cfg.Regions {
		spec := route.RegionSpec{Name: r.Name, Location: route.Point{Lat: r.Location.Lat, Lon: r.Location.Lon}}
		for _, b := range r.Backends {
			id := b.URL.String()
			spec.Backends = append(spec.Backends, &route.Backend{ID: id, Region: r.Name, URL: b.URL, Weight: b.Weight})
			backends = append(backends, health.BackendSpec{ID: id, Region: r.Name})
			targets = append(targets, health.Target{ID: id, Region: r.Name, URL: b.URL})
		}
		specs = append(specs, spec)
	}
	return specs, backends, targets
}

// Registry returns the server's metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Router returns the router.
func (s *Server) Router() *balancer.Router { return s.router }

// Start begins health checking, waits (at most one probe timeout plus a
// second) for every backend's first probe so that the first requests see
// real health, then binds the proxy and admin listeners and serves in the
// background.
func (s *Server) Start(ctx context.Context) error {
	// Health checks and the router live until Shutdown has let the last
	// request finish, not until ctx (the signal) ends.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.started = time.Now()

	s.wg.Go(func() { s.checker.Run(ctx, s.targets) })
	s.wg.Go(func() { s.watchGeo(ctx, geoSettle) })
	s.wg.Go(func() {
		if err := s.router.Run(ctx); err != nil {
			s.log.Error("router stopped", zap.Error(err))
		}
	})

	wait, cancelWait := context.WithTimeout(ctx, s.cfg.HealthCheck.Timeout+time.Second)
	err := s.store.WaitSettled(wait)
	cancelWait()
	if err != nil {
		s.log.Warn("serving before every backend was probed", zap.Error(err))
	}

	if s.adminLn, err = net.Listen("tcp", s.cfg.Admin.Listen); err != nil {
		s.stop()
		return fmt.Errorf("server: admin listener: %w", err)
	}
	if s.proxyLn, err = net.Listen("tcp", s.cfg.Listen); err != nil {
		_ = s.adminLn.Close()
		s.stop()
		return fmt.Errorf("server: proxy listener: %w", err)
	}
	errLog, _ := zap.NewStdLogAt(s.log.Named("http"), zap.DebugLevel)
	s.adminSrv = &http.Server{
		Handler:           s.adminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
	}
	serve := func(ln net.Listener, serve func(net.Listener) error) {
		s.wg.Go(func() {
			if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("listener stopped", zap.Stringer("addr", ln.Addr()), zap.Error(err))
			}
		})
	}
	serve(s.adminLn, s.adminSrv.Serve)
	if s.handler != nil {
		protocols := new(http.Protocols)
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true)
		s.proxySrv = &http.Server{
			Handler: s.handler,
			// The native engine's limits: a head within the client
			// timeout, and as long idle between requests. The body's
			// deadline is set by the handler, so that a long answer is
			// not cut by a ReadTimeout.
			ReadHeaderTimeout: s.clientTimeout,
			IdleTimeout:       s.clientTimeout,
			MaxHeaderBytes:    h1.MaxHead, // as the native engine: 431 beyond (Go's default is 1 MiB)
			ErrorLog:          errLog,
			Protocols:         protocols,
		}
		serve(proxy.Listener(s.proxyLn), s.proxySrv.Serve)
	} else {
		serve(s.proxyLn, s.native.Serve)
	}
	close(s.ready)
	info := s.locator.Database().Info()
	s.log.Info("geoproxy serving",
		zap.String("version", s.version),
		zap.Stringer("listen", s.proxyLn.Addr()),
		zap.Stringer("admin", s.adminLn.Addr()),
		zap.String("engine", s.cfg.Engine),
		zap.Int("regions", len(s.cfg.Regions)),
		zap.Int("backends", len(s.targets)),
		zap.String("geoip", info.Name),
		zap.String("geoip_kind", info.Kind),
		zap.Time("geoip_built", info.BuildTime),
	)
	return nil
}

// ProxyAddr is the proxy listener's address (after Start).
func (s *Server) ProxyAddr() net.Addr { return s.proxyLn.Addr() }

// AdminAddr is the admin listener's address (after Start).
func (s *Server) AdminAddr() net.Addr { return s.adminLn.Addr() }

// Shutdown stops accepting connections, lets in-flight requests finish
// until ctx ends, then stops health checks and waits for every goroutine.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if s.native != nil {
		if err := s.native.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, srv := range []*http.Server{s.proxySrv, s.adminSrv} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			_ = srv.Close()
		}
	}
	s.stop()
	if s.handler != nil {
		s.handler.Close()
	}
	if err := s.locator.Database().Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	return nil
}

func (s *Server) stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

// Run starts the server and serves until ctx ends, then drains (see
// Drain) for shutdown.drain_delay and shuts down gracefully, giving
// in-flight requests up to grace to finish.
func (s *Server) Run(ctx context.Context, grace time.Duration) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	delay := s.cfg.Shutdown.DrainDelay
	s.log.Info("draining: /readyz fails, answers close their connections", zap.Duration("drain_delay", delay), zap.Duration("grace", grace))
	s.Drain()
	if delay > 0 {
		time.Sleep(delay)
	}
	s.log.Info("shutting down: no new connections; requests in flight finish", zap.Duration("grace", grace))
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.Shutdown(sctx)
	if err != nil {
		s.log.Error("stopped before every request finished", zap.Error(err))
	} else {
		s.log.Info("geoproxy stopped")
	}
	return err
}

// Drain takes the server out of rotation while it still serves: /readyz
// answers 503 "draining" from now on, so load balancers and Kubernetes
// endpoints stop sending new connections, and every answer closes its
// connection, so keep-alive clients reconnect elsewhere.
func (s *Server) Drain() {
	s.draining.Store(true)
	if s.native != nil {
		s.native.Drain()
	}
	if s.handler != nil {
		s.handler.Drain()
	}
}

// Explain says where a direct client at addr would go now.
func (s *Server) Explain(addr netip.Addr) balancer.Explanation {
	return balancer.Explain(s.locator, s.router.Snapshot(), addr)
}
