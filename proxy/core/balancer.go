package core

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geoproxy/geoproxy/clientip"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/route"
)

// inlineRegions is how many regions a Decision plans without allocating.
const inlineRegions = 16

// Balancer locates clients and plans where their requests go.
type Balancer struct {
	locator  *geo.Locator
	resolver *clientip.Resolver
	router   *Router
	rnd      func() uint64
	log      *zap.Logger
	access   bool
	m        *metrics.Metrics

	maxAttempts   int
	retryOnStatus []int
	passive       *health.Passive
	budget        float64
	budgetMin     int64
	perTry        time.Duration
	deadline      time.Duration

	edge      []edgeField
	edgeNames []string
	affinity  *affinity
	traffic   *traffic
	rate      *clientRate // nil: no per-client rate limit
	rateHits  prometheus.Counter
	// failLog limits the warn lines of failed requests: the next is due at
	// this unix time (ns); skipped counts those not logged meanwhile.
	failLog, skipped atomic.Int64
	flog             *zap.Logger

	geoCounters [geo.ResultEdge + 1]prometheus.Counter
	regions     []regionMetrics // by route.Region.Index
	none        regionMetrics
	rules       []ruleMetrics // by route.Rule.Index
}

type ruleMetrics struct {
	matches, rejections prometheus.Counter
}

type regionMetrics struct {
	requests  [6]prometheus.Counter // 1xx..5xx, other
	duration  prometheus.Observer
	failover  []prometheus.Counter // by serving region index
	spill     []prometheus.Counter // by serving region index
	retries   prometheus.Counter
	exhausted prometheus.Counter

	active   atomic.Int64 // requests in flight whose first try went here
	retrying atomic.Int64 // retries in flight here
	_        [48]byte     // keep regions' counters off one cache line
}

// Options configure a Balancer.
type Options struct {
	Locator  *geo.Locator
	Resolver *clientip.Resolver
	Router   *Router
	Metrics  *metrics.Metrics
	Log      *zap.Logger
	// AccessLog writes one info line per request.
	AccessLog bool
	// Rand supplies random numbers for backend picks; nil means
	// math/rand/v2's Uint64.
	Rand func() uint64
	// MaxAttempts caps the backends Next hands out per request; 0 means no
	// cap.
	MaxAttempts int
	// RetryOnStatus lists backend statuses retried for idempotent requests
	// without a body (see RetryStatus).
	RetryOnStatus []int
	// Passive, when set, learns each attempt's result (passive health).
	Passive *health.Passive
	// RetryBudget caps the retries in flight in a region at this share of
	// its requests in flight, but RetryBudgetMin are always allowed; a
	// zero RetryBudget with a zero RetryBudgetMin means no cap.
	RetryBudget    float64
	RetryBudgetMin int
	// PerTryTimeout bounds the wait for one backend's answer head, and
	// RequestTimeout that for the answer across every try (see
	// TryTimeout); 0: none.
	PerTryTimeout, RequestTimeout time.Duration
	// Edge names the client-location headers of a trusted CDN or load
	// balancer (see EdgeNames).
	Edge config.EdgeHeaders
	// Affinity configures affinity cookies (see Stick); off without
	// regions.
	Affinity config.Affinity
	// ClientRate caps the requests per second of each client address (as
	// Decide resolves it; an IPv6 client is its /64); 0 means no cap. A
	// request over it is Limited: answered 429, never forwarded.
	ClientRate float64
	// ClientBurst is how many requests a client may make at once above
	// ClientRate (at least 1).
	ClientBurst int
	// Previous is the balancer this one replaces (a reload), or nil: with
	// the same ClientRate and ClientBurst, its clients' buckets carry
	// over, so that a reload gives no client a fresh burst.
	Previous *Balancer
}

// New returns a Balancer for the regions the router serves.
func New(o Options) *Balancer {
	b := &Balancer{
		locator: o.Locator, resolver: o.Resolver, router: o.Router, rnd: o.Rand,
		log: o.Log.Named("access"), access: o.AccessLog, m: o.Metrics,
		maxAttempts: o.MaxAttempts, retryOnStatus: o.RetryOnStatus, passive: o.Passive,
		budget: o.RetryBudget, budgetMin: int64(o.RetryBudgetMin),
		perTry: o.PerTryTimeout, deadline: o.RequestTimeout,
	}
	if b.rnd == nil {
		b.rnd = rand.Uint64
	}
	b.flog = o.Log.Named("proxy")
	b.edge = edgeFields(o.Edge)
	b.affinity = newAffinity(o.Affinity, o.Router.specs)
	b.traffic = newTraffic(len(o.Router.specs))
	b.rate = newClientRate(o.ClientRate, o.ClientBurst, rateClients)
	if p := o.Previous; p != nil && p.rate != nil && b.rate != nil &&
		p.rate.interval == b.rate.interval && p.rate.tolerance == b.rate.tolerance {
		b.rate = p.rate
	}
	b.rateHits = o.Metrics.ClientLimits.WithLabelValues(metrics.LimitClientRate)
	for _, f := range b.edge {
		b.edgeNames = append(b.edgeNames, f.name)
	}
	for r := geo.ResultFound; r <= geo.ResultEdge; r++ {
		b.geoCounters[r] = o.Metrics.GeoLookups.WithLabelValues(r.String())
	}
	specs := o.Router.specs
	b.regions = make([]regionMetrics, len(specs))
	for i, from := range specs {
		b.regions[i].init(o.Metrics, from.Name)
		b.regions[i].failover = make([]prometheus.Counter, len(specs))
		b.regions[i].spill = make([]prometheus.Counter, len(specs))
		for j, to := range specs {
			if i != j {
				b.regions[i].failover[j] = o.Metrics.Failover.WithLabelValues(from.Name, to.Name)
				b.regions[i].spill[j] = o.Metrics.Spill.WithLabelValues(from.Name, to.Name)
			}
		}
	}
	for _, r := range o.Router.Snapshot().Rules {
		b.rules = append(b.rules, ruleMetrics{
			matches:    o.Metrics.RuleMatches.WithLabelValues(r.Name),
			rejections: o.Metrics.ResidencyRejections.WithLabelValues(r.Name),
		})
	}
	b.none.init(o.Metrics, metrics.NoRegion)
	return b
}

func (rm *regionMetrics) init(m *metrics.Metrics, region string) {
	rm.duration = m.Duration.WithLabelValues(region)
	for i, class := range []string{"1xx", "2xx", "3xx", "4xx", "5xx", "other"} {
		rm.requests[i] = m.Requests.WithLabelValues(region, class)
	}
	if region != metrics.NoRegion {
		rm.retries = m.Retries.WithLabelValues(region)
		rm.exhausted = m.RetryBudgetExhausted.WithLabelValues(region)
	}
}

// EdgeNames returns the canonical names of the headers a trusted edge
// locates clients with; engines pass their values to Decide in this order
// (none when no edge is configured).
func (b *Balancer) EdgeNames() []string { return b.edgeNames }

// Router returns the router whose snapshots the balancer plans with.
func (b *Balancer) Router() *Router { return b.router }

// AccessLog reports whether requests are logged (so engines build the
// outcome's strings only when needed).
func (b *Balancer) AccessLog() bool { return b.access }

// Resolver returns the balancer's client address resolver.
func (b *Balancer) Resolver() *clientip.Resolver { return b.resolver }

// Locator returns the balancer's locator.
func (b *Balancer) Locator() *geo.Locator { return b.locator }

// Decision is everything decided for one request. Reuse Decisions (a
// sync.Pool) to keep the request path free of allocations.
type Decision struct {
	// Client is the client address (see clientip).
	Client netip.Addr
	// Location is where the client is.
	Location geo.Location
	// GeoResult says how Location was found.
	GeoResult geo.Result
	// Plan ranks the regions for the client.
	Plan route.Plan
	// Snapshot is the routing state the plan was made with.
	Snapshot *route.Snapshot
	// Attempts made so far (Next calls that returned a backend).
	Attempts int
	// Start is when the request arrived (for resilience.request_timeout).
	Start time.Time
	// OutOfTime: the request's time ran out before its answer came.
	OutOfTime bool
	// Limited: the client is over its request rate (Options.ClientRate);
	// the request has no plan, and Failure answers 429.
	Limited bool
	// RetryAfter is, when Limited, the seconds until the client may make
	// another request (at least 1).
	RetryAfter int
	// freeRetry: the last attempt failed to connect, so the backend got
	// nothing and a retry costs no budget.
	freeRetry bool
	// fenced: a retry was due, but only regions the client's rule does
	// not allow were left.
	fenced bool
	// sticky is the backend the client's affinity cookie named, when it
	// may serve (see Stick), in candidate stickyAt.
	sticky   *route.Backend
	stickyAt int

	next     int // index in Plan.Candidates of the region being tried
	active   int // 1 + index of the region counting the request in flight; 0: none
	wanted   int // 1 + index of the region counting it wanted (capacity); 0: none
	retrying int // 1 + index of the region counting its retry in flight; 0: none
	tried    []*route.Backend
	buf      [inlineRegions]route.Candidate
	tbuf     [8]*route.Backend
}

// Decide locates the client of a request from peer carrying the given
// Forwarded and X-Forwarded-For values and the edge's location headers
// (values in EdgeNames order), and plans its regions; the request arrived
// at now. d is reset.
func (b *Balancer) Decide(d *Decision, peer netip.Addr, forwarded, xff, edge []string, now time.Time) {
	b.release(d) // in case the last request on d ended without a Report (a panic)
	d.Client = b.resolver.Resolve(peer, forwarded, xff)
	d.Location, d.GeoResult = b.locate(d.Client, peer, edge)
	b.geoCounters[d.GeoResult].Inc()
	d.Limited, d.RetryAfter = false, 0
	if b.rate != nil && d.Client.IsValid() {
		if ok, wait := b.rate.allow(d.Client, now); !ok {
			b.limit(d, wait, now)
			return
		}
	}
	d.Snapshot = b.router.Snapshot()
	c := route.Client{
		Point:   route.Point{Lat: d.Location.Lat, Lon: d.Location.Lon},
		Country: d.Location.Country, Continent: d.Location.Continent, Subdivision: d.Location.Subdivision,
		Addr: d.Client, Located: d.GeoResult.Located(), Key: clientKey(d.Client),
	}
	d.Plan = d.Snapshot.Plan(&c, d.buf[:0])
	d.Attempts = 0
	d.Start, d.OutOfTime, d.freeRetry, d.fenced, d.sticky = now, false, false, false, nil
	d.next = max(d.Plan.Serving, 0)
	d.tried = d.tbuf[:0]
	if r := d.Plan.Rule; r != nil && r.Index < len(b.rules) {
		b.rules[r.Index].matches.Inc()
	}
	if w := d.Plan.Wanted; w >= 0 {
		want := d.Plan.Candidates[w].Region
		if l := want.Load; l != nil {
			l.Wanted.Add(1)
			l.Arrivals.Add(1)
			d.wanted = want.Index + 1
		}
		if d.Plan.Serving != w {
			b.regions[want.Index].spill[d.Plan.Candidates[d.Plan.Serving].Region.Index].Inc()
		}
	}
}

// limit makes d the decision of a request over its client's rate, whose
// client may make another in wait: no plan, so nothing is tried, and
// Failure answers 429. It counts in no region's traffic or capacity.
func (b *Balancer) limit(d *Decision, wait time.Duration, now time.Time) {
	b.rateHits.Inc()
	d.Limited, d.RetryAfter = true, retryAfter(wait)
	d.Snapshot = b.router.Snapshot()
	d.Plan = route.Plan{Candidates: d.buf[:0], Serving: -1, Wanted: -1}
	d.Attempts = 0
	d.Start, d.OutOfTime, d.freeRetry, d.fenced, d.sticky = now, false, false, false, nil
	d.next = 0
	d.tried = d.tbuf[:0]
}

// locate finds where the client is: an override, then a trusted edge's
// headers, then the database.
func (b *Balancer) locate(client, peer netip.Addr, edge []string) (geo.Location, geo.Result) {
	if len(b.edge) > 0 && len(edge) > 0 && b.resolver.Trusted(peer) {
		if loc, ok := b.locator.Override(client); ok {
			return loc, geo.ResultOverride
		}
		if loc, ok := locateEdge(b.edge, edge); ok {
			if loc.Country == "" {
				// A bare point: the country (for rules) is the database's.
				if db, res := b.locator.Locate(client); res == geo.ResultFound {
					loc.Country, loc.Continent, loc.Subdivision = db.Country, db.Continent, db.Subdivision
				}
			}
			return loc, geo.ResultEdge
		}
	}
	return b.locator.Locate(client)
}

// clientKey hashes a client address: the same client always gets the same
// key, so a degraded or ramping region keeps the same clients.
func clientKey(a netip.Addr) uint64 {
	b := a.As16()
	h := binary.BigEndian.Uint64(b[:8])*0x9e3779b97f4a7c15 ^ binary.BigEndian.Uint64(b[8:])
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	return h ^ h>>29
}

// Next returns the backend for the next attempt: another backend of the
// current region, else the next eligible region's; nil when none is left,
// the attempts are used up, the request's time ran out (OutOfTime), or the
// region's retry budget is spent. A retry in the same or another region is
// counted.
func (b *Balancer) Next(d *Decision) (*route.Region, *route.Backend) {
	if d.Plan.Serving < 0 || b.attemptsUsed(d) {
		return nil, nil
	}
	if d.Attempts > 0 && b.deadline > 0 && time.Since(d.Start) >= b.deadline {
		d.OutOfTime = true
		return nil, nil
	}
	for i := d.next; i < len(d.Plan.Candidates); i++ {
		c := d.Plan.Candidates[i]
		var be *route.Backend
		if d.sticky != nil && d.Attempts == 0 {
			// The first attempt goes to the backend of the client's
			// affinity cookie (see Stick), in whichever region it is;
			// retries go on from the plan's serving region.
			c, be = d.Plan.Candidates[d.stickyAt], d.sticky
		} else {
			d.next = i
			if !serving(c.Reason) {
				continue
			}
			be = c.Region.Pick(b.rnd, d.tried)
		}
		if be == nil {
			continue
		}
		rm := &b.regions[c.Region.Index]
		if d.Attempts == 0 {
			rm.active.Add(1)
			d.active = c.Region.Index + 1
		} else {
			if !d.freeRetry && !b.mayRetry(rm) {
				rm.exhausted.Inc()
				return nil, nil
			}
			rm.retrying.Add(1)
			if d.retrying > 0 {
				b.regions[d.retrying-1].retrying.Add(-1)
			}
			d.retrying = c.Region.Index + 1
			rm.retries.Inc()
		}
		d.tried = append(d.tried, be)
		d.Attempts++
		return c.Region, be
	}
	if r := d.Plan.Rule; r != nil && r.Restrict && d.Attempts > 0 {
		for _, c := range d.Plan.Candidates {
			if c.Reason == route.ReasonNotAllowed && c.Region.Eligible() {
				d.fenced = true // elsewhere could have served: the rule said no
				break
			}
		}
	}
	return nil, nil
}

// serving reports whether a region of a plan may be tried.
func serving(r route.Reason) bool {
	switch r {
	case route.ReasonNearest, route.ReasonPreferred, route.ReasonFailover, route.ReasonFallback, route.ReasonPanic, route.ReasonResidencyFallback:
		return true
	}
	return false
}

// mayRetry reports whether the region's retry budget allows one more
// retry in flight.
func (b *Balancer) mayRetry(rm *regionMetrics) bool {
	if b.budget <= 0 && b.budgetMin <= 0 {
		return true
	}
	limit := max(b.budgetMin, int64(b.budget*float64(rm.active.Load())))
	return rm.retrying.Load() < limit
}

// Abandon gives back what d counts in flight, for a request that ends
// without a Report (a panic, a connection closed under it). It does
// nothing after a Report.
func (b *Balancer) Abandon(d *Decision) { b.release(d) }

// release gives back what d counts in flight.
func (b *Balancer) release(d *Decision) {
	if d.wanted > 0 {
		if l := d.Snapshot.Regions[d.wanted-1].Load; l != nil {
			l.Wanted.Add(-1)
		}
		d.wanted = 0
	}
	if d.active > 0 {
		b.regions[d.active-1].active.Add(-1)
		d.active = 0
	}
	if d.retrying > 0 {
		b.regions[d.retrying-1].retrying.Add(-1)
		d.retrying = 0
	}
}

// TryTimeout returns how long the attempt starting at now may wait for
// its backend's answer head: the per-try timeout, within what is left of
// the request's time; 0 means no limit. When no time is left it returns a
// nanosecond, so that the attempt fails at once as timed out.
func (b *Balancer) TryTimeout(d *Decision, now time.Time) time.Duration {
	t := b.perTry
	if b.deadline > 0 {
		left := b.deadline - now.Sub(d.Start)
		if left <= 0 {
			return time.Nanosecond
		}
		if t <= 0 || left < t {
			t = left
		}
	}
	return t
}

// HasNext reports whether Next would return a backend, without taking it.
func (b *Balancer) HasNext(d *Decision) bool {
	if d.Plan.Serving < 0 || b.attemptsUsed(d) {
		return false
	}
	if d.Attempts > 0 && b.deadline > 0 && time.Since(d.Start) >= b.deadline {
		return false
	}
	for i := d.next; i < len(d.Plan.Candidates); i++ {
		c := d.Plan.Candidates[i]
		if !serving(c.Reason) {
			continue
		}
	backends:
		for _, be := range c.Region.Healthy {
			for _, t := range d.tried {
				if t == be {
					continue backends
				}
			}
			return d.Attempts == 0 || d.freeRetry || b.mayRetry(&b.regions[c.Region.Index])
		}
	}
	return false
}

func (b *Balancer) attemptsUsed(d *Decision) bool {
	return b.maxAttempts > 0 && d.Attempts >= b.maxAttempts
}

// Outcome is how a request ended.
type Outcome struct {
	// Status is the HTTP status sent to the client (0 if none was sent).
	Status int
	// Region served the request; nil when none could.
	Region *route.Region
	// Backend served the request; nil when none could.
	Backend *route.Backend
	// Duration from request received to response finished.
	Duration time.Duration
	// Method, Host and Path describe the request for the access log.
	Method, Host, Path string
	// Err is the last upstream error, if any.
	Err error
	// RequestID is the request's ID (a trusted proxy's X-Request-Id, or
	// one made for it), sent to the backend too.
	RequestID string
	// UserAgent is the client's User-Agent.
	UserAgent string
	// BytesIn and BytesOut are the body bytes read from the client and
	// written to it for this request.
	BytesIn, BytesOut int64
}

// UpstreamError counts one failed attempt to reach a backend.
func (b *Balancer) UpstreamError(be *route.Backend) {
	b.m.UpstreamErrors.WithLabelValues(be.Region, be.ID).Inc()
}

// failLogEvery spaces the warn lines of failed requests.
const failLogEvery = 100 * time.Millisecond

// logFailure writes a warn line for a request no backend answered, naming
// the region and backend of its last attempt; at most one per
// failLogEvery, with how many were not logged since the last.
func (b *Balancer) logFailure(d *Decision, o Outcome) {
	now := time.Now().UnixNano()
	due := b.failLog.Load()
	if now < due || !b.failLog.CompareAndSwap(due, now+int64(failLogEvery)) {
		b.skipped.Add(1)
		return
	}
	region, backend := "", ""
	if n := len(d.tried); n > 0 {
		region, backend = d.tried[n-1].Region, d.tried[n-1].ID
	}
	fields := []zap.Field{zap.Int("status", o.Status), zap.String("region", region), zap.String("backend", backend),
		zap.Int("attempts", d.Attempts), zap.Stringer("client", d.Client), zap.Int64("not_logged_since_last", b.skipped.Swap(0))}
	if o.Err != nil {
		fields = append(fields, zap.NamedError("upstream_error", o.Err))
	}
	b.flog.Warn("request failed: no backend answered", fields...)
}

// Report records a finished request: metrics, passive health and the
// access log line.
func (b *Balancer) Report(d *Decision, o Outcome) {
	b.release(d)
	if (d.Plan.Rejected || d.fenced) && o.Region == nil {
		if r := d.Plan.Rule; r != nil && r.Index < len(b.rules) {
			b.rules[r.Index].rejections.Inc()
		}
	}
	if b.passive != nil && o.Backend != nil && o.Err == nil && o.Status > 0 {
		b.passive.Answered(o.Backend.Index, o.Status)
	}
	rm := &b.none
	if o.Region != nil {
		rm = &b.regions[o.Region.Index]
		// Away from the plan's first choice (the nearest, or the region
		// a rule prefers): a failover.
		var first *route.Region
		if len(d.Plan.Candidates) > 0 {
			first = d.Plan.Candidates[0].Region
		}
		if first != nil && first != o.Region {
			b.regions[first.Index].failover[o.Region.Index].Inc()
		}
		b.traffic.add(d.Location.Country, first, o.Region)
	}
	if o.Region == nil && (o.Status == 502 || o.Status == 504) {
		b.logFailure(d, o)
	}
	class := o.Status/100 - 1
	if class < 0 || class > 4 {
		class = 5
	}
	rm.requests[class].Inc()
	rm.duration.Observe(o.Duration.Seconds())

	if !b.access {
		return
	}
	if ce := b.log.Check(zapcore.InfoLevel, "request"); ce != nil {
		served, backend, nearest := "", "", ""
		if o.Region != nil {
			served = o.Region.Name
		}
		if o.Backend != nil {
			backend = o.Backend.ID
		}
		if d.Plan.Nearest != nil {
			nearest = d.Plan.Nearest.Name
		}
		fields := []zap.Field{
			zap.Stringer("client", d.Client),
			zap.String("country", d.Location.Country),
			zap.String("city", d.Location.City),
			zap.String("geo", d.GeoResult.String()),
			zap.String("nearest", nearest),
			zap.String("region", served),
			zap.String("backend", backend),
			zap.String("method", o.Method),
			zap.String("host", o.Host),
			zap.String("path", o.Path),
			zap.Int("status", o.Status),
			zap.Float64("duration_ms", float64(o.Duration.Microseconds())/1000),
			zap.Int("attempts", d.Attempts),
			zap.String("request_id", o.RequestID),
			zap.Int64("bytes_in", o.BytesIn),
			zap.Int64("bytes_out", o.BytesOut),
			zap.String("user_agent", o.UserAgent),
		}
		if o.Err != nil {
			fields = append(fields, zap.NamedError("upstream_error", o.Err))
		}
		ce.Write(fields...)
	}
}
