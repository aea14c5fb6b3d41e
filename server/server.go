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

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/proxy/core"
	"github.com/geoproxy/geoproxy/proxy/h1"
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

// Server is one geoproxy process's serving state: what lives as long as
// the process (listeners, metrics, the health store, the admin endpoints)
// and the current generation, everything built from the configuration in
// force (see generation and Reload).
type Server struct {
	log      *zap.Logger
	version  string
	rand     func() uint64
	registry *prometheus.Registry
	metrics  *metrics.Metrics
	store    *health.Store
	started  time.Time
	// clientTimeout: see Options.ClientTimeout.
	clientTimeout time.Duration

	gen      atomic.Pointer[generation]
	reloadMu sync.Mutex // one reload at a time
	last     atomic.Pointer[ReloadResult]
	retiring sync.WaitGroup // generations replaced, finishing their requests

	plain    *entry       // the proxy listener
	refusing atomic.Int64 // connections being refused (see refuseConn)
	tlsEntry *entry       // the TLS listener; nil without tls.listen
	certs    certManager
	adminLn  net.Listener
	adminSrv *http.Server
	// base lives until Shutdown is done: health checks, routers and
	// watchers run on it, not on the signal's context, so that a drain
	// keeps checking health until the last request.
	base     context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ready    chan struct{}
	draining atomic.Bool
}

// New builds a Server from a validated configuration. Nothing runs and no
// port is bound until Start.
func New(o Options) (*Server, error) {
	cfg := o.Config
	s := &Server{log: o.Log, version: o.Version, rand: o.Rand, ready: make(chan struct{}), clientTimeout: o.ClientTimeout}
	if s.clientTimeout <= 0 {
		s.clientTimeout = h1.DefaultClientTimeout
	}
	s.base, s.cancel = context.WithCancel(context.Background())

	db := o.Database
	if db == nil {
		var err error
		if db, err = geo.Open(cfg.GeoIP.Database); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}

	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = metrics.New(s.registry, o.Version)
	s.registry.MustRegister(metrics.NewGeoCollector(func() geo.Info { return s.gen.Load().locator.Database().Info() }))

	store, err := health.NewStore()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.store = store
	g, err := s.build(cfg, db, 1, fileHash(cfg.File))
	if err != nil {
		return nil, err
	}
	s.gen.Store(g)
	s.metrics.ConfigGeneration.Set(1)
	s.registry.MustRegister(metrics.NewStateCollector(s.snapshot))
	if cfg.Engine == config.EngineNative {
		metrics.RegisterRequestMemory(s.registry, func() (int64, int64, int64) { return s.gen.Load().memory() })
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
		spec := route.RegionSpec{Name: r.Name, Location: route.Point{Lat: r.Location.Lat, Lon: r.Location.Lon}, Bias: r.Bias}
		if c := r.Capacity; c.MaxInFlight > 0 || c.MaxRPS > 0 {
			spec.Load = route.NewLoad(c.MaxInFlight, c.MaxRPS)
		}
		for _, b := range r.Backends {
			id := b.URL.String()
			h2 := b.Protocol == config.ProtocolH2 || b.Protocol == config.ProtocolH2C
			spec.Backends = append(spec.Backends, &route.Backend{ID: id, Region: r.Name, URL: b.URL, Weight: b.Weight, Index: len(targets), HTTP2: h2})
			backends = append(backends, health.BackendSpec{ID: id, Region: r.Name})
			targets = append(targets, health.Target{ID: id, Region: r.Name, URL: b.URL, HTTP2: h2})
		}
		specs = append(specs, spec)
	}
	return specs, backends, targets
}

// Rules compiles cfg's rules for its regions.
func Rules(cfg *config.Config) []route.Rule {
	var names []string
	for _, r := range cfg.Regions {
		names = append(names, r.Name)
	}
	specs := make([]route.RuleSpec, 0, len(cfg.Rules))
	for _, r := range cfg.Rules {
		specs = append(specs, route.RuleSpec{
			Name: r.Name, Continents: r.Match.Continents, Countries: r.Match.Countries,
			Subdivisions: r.Match.Subdivisions, Networks: r.Match.Networks, Unknown: r.Match.Unknown,
			Restrict: r.HasAllow, Allow: r.Allow, Fallback: r.Fallback, Prefer: r.Prefer,
		})
	}
	return route.CompileRules(specs, names)
}

// Registry returns the server's metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Router returns the current generation's router.
func (s *Server) Router() *core.Router { return s.gen.Load().router }

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.gen.Load().cfg }

// Start begins health checking, waits (at most one probe timeout plus a
// second) for every backend's first probe so that the first requests see
// real health, then binds the proxy and admin listeners and serves in the
// background. ctx is not kept: Shutdown stops the server.
func (s *Server) Start(ctx context.Context) error {
	s.started = time.Now()
	g := s.gen.Load()
	cfg := g.cfg
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		g.abandon()
		s.cancel()
		return fmt.Errorf("server: proxy listener: %w", err)
	}
	s.plain = newEntry(listenerHTTP, ln, s.metrics)
	if cfg.TLS.Enabled() {
		tln, err := net.Listen("tcp", cfg.TLS.Listen)
		if err != nil {
			g.abandon()
			_ = ln.Close()
			s.cancel()
			return fmt.Errorf("server: TLS listener: %w", err)
		}
		s.tlsEntry = newEntry(listenerHTTPS, tln, s.metrics)
		// The certificates come once the listeners are bound: ACME's
		// challenges are answered on them.
		if s.certs, err = s.newCerts(cfg); err != nil {
			g.abandon()
			s.closeListeners()
			s.cancel()
			return fmt.Errorf("server: tls: %w", err)
		}
	}
	if err := s.start(g, ln.Addr()); err != nil {
		g.abandon()
		s.closeListeners()
		s.closeCerts()
		s.cancel()
		return err
	}
	s.wg.Go(func() { s.watchGeo(s.base, geoSettle) })
	s.wg.Go(func() { s.watchConfig(s.base, configSettle) })

	wait, cancelWait := context.WithTimeout(ctx, cfg.HealthCheck.Timeout+time.Second)
	err = s.store.WaitSettled(wait)
	cancelWait()
	if err != nil {
		s.log.Warn("serving before every backend was probed", zap.Error(err))
	}

	if s.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
		s.closeListeners()
		s.closeCerts()
		_ = g.shutdown(context.Background(), false)
		s.stop()
		return fmt.Errorf("server: admin listener: %w", err)
	}
	errLog, _ := zap.NewStdLogAt(s.log.Named("http"), zap.DebugLevel)
	s.adminSrv = &http.Server{
		Handler:           s.adminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
	}
	s.wg.Go(func() {
		if err := s.adminSrv.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", zap.Error(err))
		}
	})
	s.wg.Go(func() { s.dispatch(s.plain) })
	if s.tlsEntry != nil {
		s.wg.Go(func() { s.dispatch(s.tlsEntry) })
	}
	close(s.ready)
	info := g.locator.Database().Info()
	s.log.Info("geoproxy serving",
		zap.String("version", s.version),
		zap.Stringer("listen", s.plain.ln.Addr()),
		zap.Stringer("tls_listen", s.TLSAddr()),
		zap.Stringer("admin", s.adminLn.Addr()),
		zap.String("engine", cfg.Engine),
		zap.Int("regions", len(cfg.Regions)),
		zap.Int("backends", len(g.targets)),
		zap.String("geoip", info.Name),
		zap.String("geoip_kind", info.Kind),
		zap.Time("geoip_built", info.BuildTime),
	)
	return nil
}

// ProxyAddr is the proxy listener's address (after Start).
func (s *Server) ProxyAddr() net.Addr { return s.plain.ln.Addr() }

// TLSAddr is the TLS listener's address (after Start); nil without one.
func (s *Server) TLSAddr() net.Addr {
	if s.tlsEntry == nil {
		return nil
	}
	return s.tlsEntry.ln.Addr()
}

// closeCerts stops watching certificate files and renewing certificates.
func (s *Server) closeCerts() {
	if s.certs != nil {
		s.certs.Close()
	}
}

// closeListeners closes the proxy listeners: their dispatchers end.
func (s *Server) closeListeners() {
	for _, e := range []*entry{s.plain, s.tlsEntry} {
		if e != nil {
			_ = e.ln.Close()
		}
	}
}

// AdminAddr is the admin listener's address (after Start).
func (s *Server) AdminAddr() net.Addr { return s.adminLn.Addr() }

// Shutdown stops accepting connections, lets in-flight requests finish
// (those of generations replaced by a reload too) until ctx ends, then
// stops health checks and waits for every goroutine.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	s.closeListeners() // the dispatchers end
	g := s.gen.Load()
	if err := g.shutdown(ctx, false); err != nil {
		errs = append(errs, err)
	}
	retired := make(chan struct{})
	go func() { s.retiring.Wait(); close(retired) }()
	select {
	case <-retired:
	case <-ctx.Done():
		s.cancel() // generations still retiring stop now
		<-retired
	}
	if s.adminSrv != nil {
		if err := s.adminSrv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			_ = s.adminSrv.Close()
		}
	}
	s.stop()
	s.closeCerts()
	if err := g.locator.Database().Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	return nil
}

func (s *Server) stop() {
	s.cancel()
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
	delay := s.gen.Load().cfg.Shutdown.DrainDelay
	s.Drain() // before the line, so that what reads it finds /readyz failing
	s.log.Info("draining: /readyz fails, answers close their connections", zap.Duration("drain_delay", delay), zap.Duration("grace", grace))
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
	s.gen.Load().drain(time.Second)
}

// Explain says where a direct client at addr would go now.
func (s *Server) Explain(addr netip.Addr) core.Explanation {
	g := s.gen.Load()
	return core.Explain(g.locator, g.router.Snapshot(), addr)
}
