package health

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Ejection reasons, as logged and as the metric's reason label.
const (
	// ReasonErrors: connect errors, resets or timeouts in a row.
	ReasonErrors = "errors"
	// Reason5xx: answers with a counted 5xx status in a row.
	Reason5xx = "5xx"
	// ReasonSuccessRate: too few successes over a window.
	ReasonSuccessRate = "success_rate"
)

// PassiveSettings configure passive health (see Passive).
type PassiveSettings struct {
	// ErrorsInRow ejects after that many connect errors, resets or
	// timeouts in a row; 0: never.
	ErrorsInRow int
	// FailuresInRow ejects after that many answers with a status in
	// Statuses in a row; 0: never.
	FailuresInRow int
	// Statuses are the answers counted against a backend.
	Statuses []int
	// BelowSuccess ejects a backend whose success rate over Window falls
	// below it, with at least MinRequests in the window; 0: never.
	BelowSuccess float64
	Window       time.Duration
	MinRequests  int
	// EjectionTime is the first ejection's length; the n-th in a row
	// lasts n times as long, up to MaxEjectionTime.
	EjectionTime, MaxEjectionTime time.Duration
	// MaxEjected is the largest share of a region's backends ejected at
	// once; one may always be.
	MaxEjected float64
}

// Passive ejects backends that fail real requests (outlier detection).
// Engines report each attempt's result by the backend's index; counting is
// lock-free (atomics), and an ejection, rare, is handed to Run, which
// writes it to the Store. The checker puts an ejected backend back once
// its ejection time is over and it passes a probe.
type Passive struct {
	store    *Store
	settings PassiveSettings
	targets  []Target
	state    []passiveState
	failing  [100]bool // by status - 500
	eject    chan ejectRequest
	log      *zap.Logger
	obs      Observer
}

type passiveState struct {
	errors   atomic.Int32 // in a row
	failures atomic.Int32 // counted 5xx in a row
	ok       atomic.Int64 // in the current window
	total    atomic.Int64
	pending  atomic.Bool // an ejection is on its way to Run
	_        [32]byte    // keep neighbours' counters off one cache line
}

type ejectRequest struct {
	i      int
	reason string
}

// NewPassive returns a detector for targets, indexed as given (a backend's
// index is its position there). obs may be nil.
func NewPassive(store *Store, s PassiveSettings, targets []Target, log *zap.Logger, obs Observer) *Passive {
	p := &Passive{
		store: store, settings: s, targets: targets,
		state: make([]passiveState, len(targets)),
		eject: make(chan ejectRequest, len(targets)),
		log:   log.Named("health"), obs: obs,
	}
	for _, code := range s.Statuses {
		if code >= 500 && code < 600 {
			p.failing[code-500] = true
		}
	}
	return p
}

// Answered records an answer with status from backend i: a failure when
// the status is one of Statuses, else a success.
func (p *Passive) Answered(i, status int) {
	st := &p.state[i]
	st.total.Add(1)
	if status >= 500 && status < 600 && p.failing[status-500] {
		if n := st.failures.Add(1); int(n) == p.settings.FailuresInRow {
			p.request(i, Reason5xx)
		}
		return
	}
	st.ok.Add(1)
	if st.errors.Load() != 0 {
		st.errors.Store(0)
	}
	if st.failures.Load() != 0 {
		st.failures.Store(0)
	}
}

// Failed records a connect error, reset or timeout of backend i.
func (p *Passive) Failed(i int) {
	st := &p.state[i]
	st.total.Add(1)
	if n := st.errors.Add(1); int(n) == p.settings.ErrorsInRow {
		p.request(i, ReasonErrors)
	}
}

// request hands an ejection to Run, once at a time per backend, without
// blocking.
func (p *Passive) request(i int, reason string) {
	if !p.state[i].pending.CompareAndSwap(false, true) {
		return
	}
	select {
	case p.eject <- ejectRequest{i, reason}:
	default:
		p.state[i].pending.Store(false)
	}
}

// Run applies ejections and tests success rates every window until ctx
// ends.
func (p *Passive) Run(ctx context.Context) {
	var tick <-chan time.Time
	if p.settings.BelowSuccess > 0 && p.settings.Window > 0 {
		t := time.NewTicker(p.settings.Window)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.eject:
			p.apply(r)
		case <-tick:
			for i := range p.state {
				st := &p.state[i]
				ok, total := st.ok.Swap(0), st.total.Swap(0)
				if total >= int64(max(p.settings.MinRequests, 1)) && float64(ok) < p.settings.BelowSuccess*float64(total) {
					if st.pending.CompareAndSwap(false, true) {
						p.apply(ejectRequest{i, ReasonSuccessRate})
					}
				}
			}
		}
	}
}

// apply writes one ejection, logs it and counts it.
func (p *Passive) apply(r ejectRequest) {
	st, t := &p.state[r.i], p.targets[r.i]
	defer st.pending.Store(false)
	b, ok, err := p.store.Eject(Ejection{ID: t.ID, Reason: r.reason,
		Base: p.settings.EjectionTime, Max: p.settings.MaxEjectionTime, MaxShare: p.settings.MaxEjected})
	switch {
	case err != nil:
		p.log.Error("eject backend", zap.String("backend", t.ID), zap.Error(err))
		return
	case !ok:
		// Refused (max_ejected) or already ejected: the counts start
		// again, so that the backend is judged anew, and asked for again
		// after as many failures.
		st.errors.Store(0)
		st.failures.Store(0)
		if b != nil && !b.Ejected {
			p.log.Debug("backend not ejected: its region has as many ejected as resilience.max_ejected allows",
				zap.String("region", t.Region), zap.String("backend", t.ID), zap.String("reason", r.reason))
		}
		return
	}
	// It starts afresh when it returns.
	st.errors.Store(0)
	st.failures.Store(0)
	st.ok.Store(0)
	st.total.Store(0)
	p.log.Warn("backend ejected", zap.String("region", t.Region), zap.String("backend", t.ID),
		zap.String("reason", r.reason), zap.Int("ejections", b.Ejections),
		zap.Duration("for", b.EjectedUntil.Sub(b.EjectedAt)))
	if p.obs != nil {
		p.obs.Ejected(t, r.reason)
	}
}
