// Package metrics defines geoproxy's Prometheus metrics. They are registered
// on a Registerer passed in (never the global one), once per process, and
// shared by every configuration the process runs.
package metrics

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/route"
)

// NoRegion is the region label of requests no region served.
const NoRegion = "none"

// Metrics holds every metric the proxy exports.
type Metrics struct {
	// Requests counts requests by the region that served them ("none" when
	// no region could) and status class ("2xx" ... "5xx").
	Requests *prometheus.CounterVec
	// Duration observes request durations by serving region.
	Duration *prometheus.HistogramVec
	// InFlight is the number of requests being served.
	InFlight prometheus.Gauge
	// Failover counts requests served by a region other than their nearest.
	Failover *prometheus.CounterVec
	// GeoLookups counts client location lookups by result.
	GeoLookups *prometheus.CounterVec
	// UpstreamErrors counts failed attempts to reach a backend.
	UpstreamErrors *prometheus.CounterVec
	// Retries counts attempts after the first.
	Retries *prometheus.CounterVec
	// HealthChecks counts probes by backend and result.
	HealthChecks *prometheus.CounterVec
	// HealthCheckDuration observes probe durations by region.
	HealthCheckDuration *prometheus.HistogramVec
	// HealthChanges counts backend state changes.
	HealthChanges *prometheus.CounterVec
	// GeoReloads counts reloads of the geo database by result.
	GeoReloads *prometheus.CounterVec
	// ConfigReloads counts config reloads by result.
	ConfigReloads *prometheus.CounterVec
	// ConfigGeneration is the generation of the configuration in force.
	ConfigGeneration prometheus.Gauge
	// ConfigLastSuccess is when the config was last reloaded successfully.
	ConfigLastSuccess prometheus.Gauge
	// Ejections counts backends ejected by passive health, by reason.
	Ejections *prometheus.CounterVec
	// Returns counts ejected backends back in service.
	Returns *prometheus.CounterVec
	// RetryBudgetExhausted counts retries not made because the region's
	// retry budget was spent.
	RetryBudgetExhausted *prometheus.CounterVec
	// RuleMatches counts requests by the rule their client matched.
	RuleMatches *prometheus.CounterVec
	// ResidencyRejections counts requests refused because no region their
	// rule allows could serve.
	ResidencyRejections *prometheus.CounterVec
	// ClientLimits counts what the client limits refused or cut, by limit
	// (see the Limit constants).
	ClientLimits *prometheus.CounterVec
	// Connections is the client connections open, by listener ("http",
	// "https").
	Connections *prometheus.GaugeVec
	// TLSHandshakeErrors counts TLS handshakes that failed, by reason.
	TLSHandshakeErrors *prometheus.CounterVec
	// Spill counts requests a region passed on (degraded, held back,
	// ramping up or at capacity), by that region and the one that took
	// them.
	Spill *prometheus.CounterVec
}

// The limit label values of ClientLimits.
const (
	LimitHeadTimeout       = "head_timeout"
	LimitBodyTimeout       = "body_timeout"
	LimitHeaderBytes       = "header_bytes"
	LimitRequestBody       = "request_body"
	LimitConnections       = "connections"
	LimitClientConnections = "client_connections"
	LimitClientRate        = "client_rate"
)

// LimitCounters are the children of ClientLimits an engine counts its own
// refusals in.
type LimitCounters struct {
	HeadTimeout, BodyTimeout, HeaderBytes, RequestBody prometheus.Counter
}

// LimitCounters returns the engines' children of ClientLimits.
func (m *Metrics) LimitCounters() LimitCounters {
	return LimitCounters{
		HeadTimeout: m.ClientLimits.WithLabelValues(LimitHeadTimeout),
		BodyTimeout: m.ClientLimits.WithLabelValues(LimitBodyTimeout),
		HeaderBytes: m.ClientLimits.WithLabelValues(LimitHeaderBytes),
		RequestBody: m.ClientLimits.WithLabelValues(LimitRequestBody),
	}
}

// New creates the metrics and registers them, with the build info, on reg.
func New(reg prometheus.Registerer, version string) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_requests_total",
			Help: "Requests served, by serving region (\"none\" when no region could serve) and status class.",
		}, []string{"region", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "geoproxy_request_duration_seconds",
			Help:    "Time from request received to response finished, by serving region.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"region"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "geoproxy_requests_in_flight",
			Help: "Requests being served now.",
		}),
		Failover: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_failover_requests_total",
			Help: "Requests served by a region other than the client's first choice (its nearest, or the region its rule prefers), by that region and the serving region.",
		}, []string{"from", "to"}),
		GeoLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_geo_lookups_total",
			Help: "Client location lookups, by result (found, override, private, not_found, invalid, error).",
		}, []string{"result"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_upstream_errors_total",
			Help: "Attempts to reach a backend that failed before a response, by region and backend.",
		}, []string{"region", "backend"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_retries_total",
			Help: "Attempts after the first one of a request, by the region retried in.",
		}, []string{"region"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_config_reloads_total",
			Help: "Config reloads (SIGHUP, file change, POST /admin/reload), by result (success; failure: the config in force stays).",
		}, []string{"result"}),
		ConfigGeneration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "geoproxy_config_generation",
			Help: "Generation of the configuration in force: 1 at start, one more for each successful reload.",
		}),
		ConfigLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "geoproxy_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration in force was loaded (at start, or by the last successful reload), seconds since the Unix epoch.",
		}),
		GeoReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_geoip_reloads_total",
			Help: "Reloads of the geo database file (on change or SIGHUP), by result (success, failure: the database in use stays).",
		}, []string{"result"}),
		HealthChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_health_checks_total",
			Help: "Active health probes, by region, backend and result (pass, fail).",
		}, []string{"region", "backend", "result"}),
		HealthCheckDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "geoproxy_health_check_duration_seconds",
			Help:    "Duration of active health probes, by region.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"region"}),
		HealthChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_backend_health_changes_total",
			Help: "Backend health state changes, by region, backend and new state.",
		}, []string{"region", "backend", "state"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_backend_ejections_total",
			Help: "Backends taken out of service by passive health for failing real requests, by region, backend and reason (errors, 5xx, success_rate).",
		}, []string{"region", "backend", "reason"}),
		Returns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_backend_returns_total",
			Help: "Ejected backends back in service after their ejection time and a passing probe, by region and backend.",
		}, []string{"region", "backend"}),
		RetryBudgetExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_retry_budget_exhausted_total",
			Help: "Retries not made because the region's retry budget (resilience.retry_budget) was spent, by region.",
		}, []string{"region"}),
		RuleMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_rule_matches_total",
			Help: "Requests whose client matched a rule, by rule.",
		}, []string{"rule"}),
		ResidencyRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_residency_rejections_total",
			Help: "Requests refused with 503 because no region their rule allows (nor a fallback) could serve, by rule.",
		}, []string{"rule"}),
		Spill: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_spill_requests_total",
			Help: "Requests a region passed on to the next of their plan (degraded, held back or ramping up after failover, or at capacity), by that region and the one that took them.",
		}, []string{"from", "to"}),
		ClientLimits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_client_limit_hits_total",
			Help: "Requests and connections a client limit refused or cut, by limit: head_timeout, body_timeout (408), header_bytes (431), request_body (413), connections (503, limits.max_connections), client_connections and client_rate (429).",
		}, []string{"limit"}),
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "geoproxy_client_connections",
			Help: "Client connections open, by listener (http, https).",
		}, []string{"listener"}),
		TLSHandshakeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "geoproxy_tls_handshake_errors_total",
			Help: "TLS handshakes with clients that failed, by reason: no_certificate (no certificate for the name asked), protocol (a version, cipher suite or message refused), timeout, closed (the client left), other.",
		}, []string{"reason"}),
	}
	for _, r := range []string{"no_certificate", "protocol", "timeout", "closed", "other"} {
		m.TLSHandshakeErrors.WithLabelValues(r)
	}
	for _, l := range []string{LimitHeadTimeout, LimitBodyTimeout, LimitHeaderBytes, LimitRequestBody, LimitConnections, LimitClientConnections, LimitClientRate} {
		m.ClientLimits.WithLabelValues(l)
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "geoproxy_build_info",
		Help:        "Always 1; labels carry the version and Go version.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(m.Requests, m.Duration, m.InFlight, m.Failover, m.GeoLookups, m.UpstreamErrors,
		m.Retries, m.HealthChecks, m.HealthCheckDuration, m.HealthChanges, m.GeoReloads,
		m.ConfigReloads, m.ConfigGeneration, m.ConfigLastSuccess, m.Ejections, m.Returns,
		m.RetryBudgetExhausted, m.RuleMatches, m.ResidencyRejections, m.Spill, m.ClientLimits, m.Connections, m.TLSHandshakeErrors, build)
	for _, r := range []string{"success", "failure"} {
		m.GeoReloads.WithLabelValues(r) // at 0 from the start, so rate() and alerts see them
		m.ConfigReloads.WithLabelValues(r)
	}
	m.ConfigLastSuccess.SetToCurrentTime()
	return m
}

// Probed counts one health probe; it makes Metrics a health.Observer.
func (m *Metrics) Probed(t health.Target, ok bool, took time.Duration) {
	result := "fail"
	if ok {
		result = "pass"
	}
	m.HealthChecks.WithLabelValues(t.Region, t.ID, result).Inc()
	m.HealthCheckDuration.WithLabelValues(t.Region).Observe(took.Seconds())
}

// Changed counts one backend state change.
func (m *Metrics) Changed(t health.Target, _, to health.Status) {
	m.HealthChanges.WithLabelValues(t.Region, t.ID, to.String()).Inc()
}

// Ejected counts one ejection by passive health.
func (m *Metrics) Ejected(t health.Target, reason string) {
	m.Ejections.WithLabelValues(t.Region, t.ID, reason).Inc()
}

// Returned counts an ejected backend back in service.
func (m *Metrics) Returned(t health.Target) {
	m.Returns.WithLabelValues(t.Region, t.ID).Inc()
}

var _ health.Observer = (*Metrics)(nil)

// StateCollector exports the current routing state at scrape time: one
// series per backend that exists now, so removed backends disappear.
type StateCollector struct {
	snapshot func() *route.Snapshot
	up       *prometheus.Desc
	healthy  *prometheus.Desc
	backends *prometheus.Desc
	eligible *prometheus.Desc
	share    *prometheus.Desc
	held     *prometheus.Desc
	allDown  *prometheus.Desc
	panic    *prometheus.Desc
}

// NewStateCollector reads the current snapshot through snapshot (which may
// return nil before the first one exists).
func NewStateCollector(snapshot func() *route.Snapshot) *StateCollector {
	return &StateCollector{
		snapshot: snapshot,
		up: prometheus.NewDesc("geoproxy_backend_up",
			"1 when the backend is healthy and gets traffic, 0 when it is unhealthy or not probed yet.",
			[]string{"region", "backend"}, nil),
		healthy: prometheus.NewDesc("geoproxy_region_healthy_backends",
			"Healthy backends in the region.", []string{"region"}, nil),
		backends: prometheus.NewDesc("geoproxy_region_backends",
			"Configured backends in the region.", []string{"region"}, nil),
		eligible: prometheus.NewDesc("geoproxy_region_up",
			"1 when the region has at least one healthy backend and can serve.", []string{"region"}, nil),
		share: prometheus.NewDesc("geoproxy_region_client_share",
			"Share of its clients the region takes, 0 to 1: below 1 while it is degraded (resilience.degraded_below), held back or ramping up after failover.",
			[]string{"region"}, nil),
		held: prometheus.NewDesc("geoproxy_region_failback_held",
			"1 while the region, back from failover, is held back (resilience.failback_hold).", []string{"region"}, nil),
		allDown: prometheus.NewDesc("geoproxy_all_regions_down",
			"1 while no region has a healthy backend.", nil, nil),
		panic: prometheus.NewDesc("geoproxy_panic_mode",
			"1 while every region is down and requests are spread over every backend of the nearest region (resilience.when_all_down: panic).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *StateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.healthy
	ch <- c.backends
	ch <- c.eligible
	ch <- c.share
	ch <- c.held
	ch <- c.allDown
	ch <- c.panic
}

// Collect implements prometheus.Collector.
func (c *StateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	if s == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v bool, labels ...string) {
		f := 0.0
		if v {
			f = 1
		}
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, f, labels...)
	}
	anyUp := false
	for i := range s.Regions {
		r := &s.Regions[i]
		healthy := make(map[*route.Backend]bool, len(r.Healthy))
		if !s.Panic { // in panic mode none is healthy, whatever is tried
			for _, b := range r.Healthy {
				healthy[b] = true
			}
		}
		for _, b := range r.Backends {
			v := 0.0
			if healthy[b] {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, v, r.Name, b.ID)
		}
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, float64(len(healthy)), r.Name)
		ch <- prometheus.MustNewConstMetric(c.backends, prometheus.GaugeValue, float64(len(r.Backends)), r.Name)
		gauge(c.eligible, len(healthy) > 0, r.Name)
		anyUp = anyUp || len(healthy) > 0
		share := float64(r.Share) / route.FullShare
		if len(healthy) == 0 {
			share = 0
		}
		ch <- prometheus.MustNewConstMetric(c.share, prometheus.GaugeValue, share, r.Name)
		gauge(c.held, r.Held(), r.Name)
	}
	gauge(c.allDown, !anyUp)
	gauge(c.panic, s.Panic)
}
