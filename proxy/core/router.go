// Package core is the request core shared by every HTTP engine: it turns a
// peer address and its forwarding headers into a located client and an
// ordered plan of regions and backends, decides what follows each attempt
// (Failed, RetryStatus, Failure), and records each request's outcome
// (Report: metrics and the access log). It uses no net/http types; the
// engines (packages h1 and nethttp) only do I/O.
//
// A Router keeps the current route.Snapshot in step with the health store:
// it watches the store through memdb watch channels, rebuilds the immutable
// snapshot on every change and publishes it through an atomic pointer, so
// the request path never takes a lock.
package core

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/route"
)

// Router publishes routing snapshots built from the regions of one
// configuration and the health in a Store. It also keeps each region's
// failback state: a region that clients failed over from is held back for
// Shaping.FailbackHold once it is healthy again, then ramps up over
// Shaping.SlowStart, as does a backend back in service.
type Router struct {
	specs   []route.RegionSpec
	store   *health.Store
	log     *zap.Logger
	shaping Shaping
	now     func() time.Time
	cur     atomic.Pointer[route.Snapshot]
	version uint64
	mu      sync.Mutex    // guards changed and regions; never taken on the request path
	changed chan struct{} // closed and replaced on every publish
	regions map[string]*regionState
	allDown bool
	rates   []rate // regions with a max_rps
}

// rate measures a region's arrivals per second for its max_rps.
type rate struct {
	load *route.Load
	last int64     // arrivals counted at the last reading
	at   time.Time // of the last reading
	ewma float64
}

// rateEvery is how often arrival rates are measured.
const rateEvery = 250 * time.Millisecond

// Shaping is how a Router shapes traffic beyond plain health.
type Shaping struct {
	// FailbackHold: a region back from failover takes no client until it
	// has been healthy this long.
	FailbackHold time.Duration
	// SlowStart: a region after its hold, or a backend back in service,
	// ramps from a tenth of its share to all of it over this time.
	SlowStart time.Duration
	// DegradedBelow: see route.Build.
	DegradedBelow float64
	// Panic: when every region is down, spread requests over every
	// backend of the nearest region.
	Panic bool
	// Rules are the compiled rules every snapshot carries.
	Rules []route.Rule
	// Previous, when set, is the router this one replaces: the regions'
	// failback state carries over by name.
	Previous *Router
}

// regionState is a region's failback state.
type regionState struct {
	everUp bool      // it had a healthy backend once
	down   bool      // it lost them all after that: its clients failed over
	backAt time.Time // when it had a healthy backend again; zero when settled
}

// NewRouter builds the first snapshot from the store's current health.
func NewRouter(specs []route.RegionSpec, store *health.Store, log *zap.Logger, shaping Shaping) (*Router, error) {
	r := &Router{specs: specs, store: store, log: log.Named("router"), shaping: shaping, now: time.Now,
		changed: make(chan struct{}), regions: make(map[string]*regionState, len(specs))}
	for _, spec := range specs {
		if spec.Load != nil && spec.Load.MaxRPS > 0 {
			r.rates = append(r.rates, rate{load: spec.Load, last: spec.Load.Arrivals.Load(), at: r.now()})
		}
	}
	if prev := shaping.Previous; prev != nil {
		prev.mu.Lock()
		for name, st := range prev.regions {
			cp := *st
			r.regions[name] = &cp
		}
		r.allDown = prev.allDown
		prev.mu.Unlock()
		r.shaping.Previous = nil
	}
	if _, _, err := r.rebuild(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// Snapshot returns the current snapshot. It never blocks.
func (r *Router) Snapshot() *route.Snapshot { return r.cur.Load() }

// Changed returns a channel that is closed when the next snapshot is
// published.
func (r *Router) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Run rebuilds the snapshot whenever backend health changes, and while a
// region or backend is held back or ramping up, until ctx ends.
func (r *Router) Run(ctx context.Context) error {
	for {
		ws := memdb.NewWatchSet()
		_, next, err := r.rebuild(ws)
		if err != nil {
			return err
		}
		wait := ctx
		cancel := context.CancelFunc(func() {})
		if !next.IsZero() {
			wait, cancel = context.WithDeadline(ctx, next)
		}
		err = ws.WatchCtx(wait)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		_ = err // a change, or time for the next step of a ramp
	}
}

// rampStep is how often a ramp is re-evaluated, as a share of SlowStart.
const rampSteps = 20

// rebuild publishes a snapshot of the store's health, shaped; next is when
// it should be rebuilt though nothing changed (zero: only on a change).
func (r *Router) rebuild(ws memdb.WatchSet) (*route.Snapshot, time.Time, error) {
	rows, err := r.store.Backends(ws)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("core: read health: %w", err)
	}
	overrides, err := r.store.Overrides(ws)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("core: read overrides: %w", err)
	}
	now := r.now()
	var next time.Time
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	step := max(r.shaping.SlowStart/rampSteps, 50*time.Millisecond)
	for i := range r.rates {
		rt := &r.rates[i]
		if dt := now.Sub(rt.at); dt >= rateEvery/2 {
			n := rt.load.Arrivals.Load()
			rt.ewma = 0.5*rt.ewma + 0.5*float64(n-rt.last)/dt.Seconds()
			rt.last, rt.at = n, now
			rt.load.UpdateRate(rt.ewma)
		}
		soon(now.Add(rateEvery))
	}
	byID := make(map[string]*health.Backend, len(rows))
	for _, b := range rows {
		byID[b.ID] = b
	}
	backend := func(be *route.Backend) (bool, float64) {
		row := byID[be.ID]
		if row == nil || !row.InService() {
			return false, 0
		}
		out, weight := health.Effective(overrides, be.Region, be.ID)
		if out != nil {
			return false, 0 // drained or disabled by an operator
		}
		scale := 1.0
		if weight > 0 {
			scale = float64(weight) / float64(max(be.Weight, 1))
		}
		return true, scale * r.ramp(row.ReturnedAt, now, soon, step)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.version++
	s := route.Build{
		Specs: r.specs, Version: r.version, Backend: backend, Rules: r.shaping.Rules,
		Excluded: func(be *route.Backend) bool {
			out, _ := health.Effective(overrides, be.Region, be.ID)
			return out != nil
		},
		DegradedBelow: r.shaping.DegradedBelow, PanicWhenAllDown: r.shaping.Panic,
		Region: func(reg *route.Region) (time.Time, float64) {
			st := r.regions[reg.Name]
			if st == nil || st.backAt.IsZero() {
				return time.Time{}, 1
			}
			if until := st.backAt.Add(r.shaping.FailbackHold); now.Before(until) {
				soon(until)
				return until, 0
			}
			ramp := r.ramp(st.backAt.Add(r.shaping.FailbackHold), now, soon, step)
			if ramp >= 1 {
				st.backAt = time.Time{}
			}
			return time.Time{}, ramp
		},
	}
	// The regions' failback state follows their health first. A region
	// whose backends are all not probed yet (at start, or just added) says
	// nothing: it is neither down nor back.
	anyUp, anyKnown := false, false
	for _, spec := range r.specs {
		up, known := false, false
		for _, be := range spec.Backends {
			if row := byID[be.ID]; row != nil && row.Status != health.Unknown {
				known = true
			}
			if ok, _ := backend(be); ok {
				up = true
			}
		}
		anyUp, anyKnown = anyUp || up, anyKnown || known
		st := r.regions[spec.Name]
		if st == nil {
			st = &regionState{}
			r.regions[spec.Name] = st
		}
		if !known {
			continue
		}
		switch {
		case !up && st.everUp && !st.down:
			st.down, st.backAt = true, time.Time{}
			r.log.Warn("region down: its clients fail over", zap.String("region", spec.Name))
		case up && st.down:
			st.down, st.backAt = false, now
			r.log.Warn("region up: its clients come back", zap.String("region", spec.Name),
				zap.Time("held_until", now.Add(r.shaping.FailbackHold)),
				zap.Duration("slow_start", r.shaping.SlowStart))
		}
		st.everUp = st.everUp || up
	}
	// Before any probe, nothing is down: no panic.
	s.PanicWhenAllDown = s.PanicWhenAllDown && anyKnown
	snap := s.Snapshot()
	r.noteAllDown(!anyUp && anyKnown, snap.Panic)
	if old := r.cur.Load(); old != nil && sameRouting(old, snap) {
		return old, next, nil
	}
	r.cur.Store(snap)
	close(r.changed)
	r.changed = make(chan struct{})
	if r.log.Core().Enabled(zap.DebugLevel) {
		for i := range snap.Regions {
			reg := &snap.Regions[i]
			r.log.Debug("region", zap.String("region", reg.Name), zap.Int("healthy", len(reg.Healthy)),
				zap.Int("backends", len(reg.Backends)), zap.Float64("share", float64(reg.Share)/route.FullShare),
				zap.Uint64("version", snap.Version))
		}
	}
	return snap, next, nil
}

// ramp is the share taken at now by what came back at since, over
// SlowStart: from a tenth to all. It asks for a rebuild while ramping.
func (r *Router) ramp(since, now time.Time, soon func(time.Time), step time.Duration) float64 {
	if since.IsZero() || r.shaping.SlowStart <= 0 {
		return 1
	}
	f := float64(now.Sub(since)) / float64(r.shaping.SlowStart)
	if f >= 1 {
		return 1
	}
	soon(now.Add(step))
	return max(0.1, f)
}

// noteAllDown logs, once each, when every region goes down and when one
// comes back.
func (r *Router) noteAllDown(down, panic bool) {
	if down == r.allDown {
		return
	}
	r.allDown = down
	switch {
	case down && panic:
		r.log.Warn("every region is down: panic mode, requests are spread over every backend of their nearest region")
	case down:
		r.log.Warn("every region is down: requests are answered 503")
	case panic || r.shaping.Panic:
		r.log.Warn("a region is up again: panic mode ends")
	default:
		r.log.Warn("a region is up again")
	}
}

// sameRouting reports whether two snapshots of the same regions route
// alike.
func sameRouting(a, b *route.Snapshot) bool {
	if a.Panic != b.Panic {
		return false
	}
	for i := range a.Regions {
		ra, rb := &a.Regions[i], &b.Regions[i]
		if ra.Share != rb.Share || !ra.HeldUntil.Equal(rb.HeldUntil) || !ra.SameBackends(rb) {
			return false
		}
	}
	return true
}
