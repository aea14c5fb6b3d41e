package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Resilience configures how geoproxy survives failing backends and regions
// (key "resilience"): passive health (ejecting backends that fail real
// requests), the retry budget and timeouts, failback, degraded regions and
// what happens when every region is down. Shares are fractions from 0 to 1,
// written as percentages ("20%").
type Resilience struct {
	// PassiveHealth turns on ejection of backends from the results of real
	// requests (key "resilience.passive_health"). Default true.
	PassiveHealth bool

	// EjectAfterErrors ejects a backend after this many connect errors,
	// resets or timeouts in a row (key "resilience.eject_after_errors").
	// Default 5; 0 turns this test off.
	EjectAfterErrors int

	// EjectAfter5xx ejects a backend after this many answers in a row
	// with a status in EjectStatuses (key "resilience.eject_after_5xx").
	// Default 5; 0 turns this test off.
	EjectAfter5xx int

	// EjectStatuses are the answers that count as the backend's failure
	// (key "resilience.eject_statuses", 5xx codes). Default
	// [500, 502, 503, 504].
	EjectStatuses []int

	// EjectBelowSuccess ejects a backend whose share of successful
	// requests over SuccessWindow falls below it, once it had at least
	// SuccessMinRequests (key "resilience.eject_below_success", a
	// percentage). Default 50%; 0% turns this test off.
	EjectBelowSuccess float64

	// SuccessWindow is the window of the success-rate test
	// (key "resilience.success_window", a duration). Default 10s.
	SuccessWindow time.Duration

	// SuccessMinRequests is how many requests a backend needs in a window
	// for its success rate to count (key "resilience.success_min_requests").
	// Default 20.
	SuccessMinRequests int

	// EjectionTime is how long a first ejection lasts; the n-th lasts n
	// times as long, up to MaxEjectionTime (key "resilience.ejection_time").
	// Default 30s. An ejected backend returns once its time is over and it
	// passes an active probe.
	EjectionTime time.Duration

	// MaxEjectionTime caps one ejection (key "resilience.max_ejection_time").
	// Default 5m; at least ejection_time. A backend not ejected for this
	// long starts counting its ejections again from one.
	MaxEjectionTime time.Duration

	// MaxEjected is the largest share of a region's backends ejected at
	// once (key "resilience.max_ejected", a percentage). Default 50%. One
	// backend may always be ejected.
	MaxEjected float64

	// RetryBudget caps the retries in flight in a region at this share of
	// the requests in flight there (key "resilience.retry_budget", a
	// percentage). Default 20%.
	RetryBudget float64

	// RetryBudgetMin is how many retries may be in flight in a region
	// whatever the budget (key "resilience.retry_budget_min"). Default 10.
	// A retry after a failed connect (the backend got nothing) is always
	// allowed.
	RetryBudgetMin int

	// PerTryTimeout bounds the wait for one backend's answer head, after
	// which the request moves on to the next backend when it may be
	// repeated (key "resilience.per_try_timeout"). Default 10s; 0 means no
	// limit; it also never exceeds proxy.response_header_timeout when that
	// is set. Long polls that hold back their head need 0 here and in
	// request_timeout.
	PerTryTimeout time.Duration

	// RequestTimeout bounds the time from a request's arrival to its
	// answer head, across every try; past it the client gets 504
	// (key "resilience.request_timeout"). Default 30s; 0 means no limit;
	// at least per_try_timeout.
	RequestTimeout time.Duration

	// FailbackHold is how long a region that clients failed over from must
	// stay healthy before they come back (key "resilience.failback_hold").
	// Default 30s; 0 means at once.
	FailbackHold time.Duration

	// SlowStart is the time over which a region back from failover, or a
	// backend back in its region, ramps from a tenth of its share to all
	// of it (key "resilience.slow_start"). Default 30s; 0 turns it off.
	SlowStart time.Duration

	// DegradedBelow: a region counts fully while at least this share of
	// its backends' weight is healthy; below it, the share of its clients
	// it cannot carry goes to the next region of their plan
	// (key "resilience.degraded_below", a percentage). Default 72%; 0%
	// turns spilling off.
	DegradedBelow float64

	// WhenAllDown says what happens when no region has a healthy backend
	// (key "resilience.when_all_down"): "reject" (default) answers 503 with
	// Retry-After; "panic" spreads requests over every backend of the
	// client's nearest region, healthy or not.
	WhenAllDown string
}

// WhenAllDown modes.
const (
	// AllDownReject answers 503 when every region is down.
	AllDownReject = "reject"
	// AllDownPanic routes to every backend of the nearest region when
	// every region is down.
	AllDownPanic = "panic"
)

type rawResilience struct {
	PassiveHealth      scalar        `yaml:"passive_health"`
	EjectAfterErrors   scalar        `yaml:"eject_after_errors"`
	EjectAfter5xx      scalar        `yaml:"eject_after_5xx"`
	EjectStatuses      opt[[]scalar] `yaml:"eject_statuses"`
	EjectBelowSuccess  scalar        `yaml:"eject_below_success"`
	SuccessWindow      scalar        `yaml:"success_window"`
	SuccessMinRequests scalar        `yaml:"success_min_requests"`
	EjectionTime       scalar        `yaml:"ejection_time"`
	MaxEjectionTime    scalar        `yaml:"max_ejection_time"`
	MaxEjected         scalar        `yaml:"max_ejected"`
	RetryBudget        scalar        `yaml:"retry_budget"`
	RetryBudgetMin     scalar        `yaml:"retry_budget_min"`
	PerTryTimeout      scalar        `yaml:"per_try_timeout"`
	RequestTimeout     scalar        `yaml:"request_timeout"`
	FailbackHold       scalar        `yaml:"failback_hold"`
	SlowStart          scalar        `yaml:"slow_start"`
	DegradedBelow      scalar        `yaml:"degraded_below"`
	WhenAllDown        scalar        `yaml:"when_all_down"`
}

// defaultEjectStatuses are the answers counted against a backend.
var defaultEjectStatuses = []int{500, 502, 503, 504}

func (c *checker) resilience(p fieldPath, o opt[rawResilience]) Resilience {
	raw, _ := composite(c, p, o)
	r := Resilience{
		PassiveHealth:      c.bool(p.key("passive_health"), raw.PassiveHealth, true),
		EjectAfterErrors:   c.int(p.key("eject_after_errors"), raw.EjectAfterErrors, 5),
		EjectAfter5xx:      c.int(p.key("eject_after_5xx"), raw.EjectAfter5xx, 5),
		EjectBelowSuccess:  c.percent(p.key("eject_below_success"), raw.EjectBelowSuccess, 0.5),
		SuccessWindow:      c.duration(p.key("success_window"), raw.SuccessWindow, 10*time.Second),
		SuccessMinRequests: c.int(p.key("success_min_requests"), raw.SuccessMinRequests, 20),
		EjectionTime:       c.duration(p.key("ejection_time"), raw.EjectionTime, 30*time.Second),
		MaxEjectionTime:    c.duration(p.key("max_ejection_time"), raw.MaxEjectionTime, 5*time.Minute),
		MaxEjected:         c.percent(p.key("max_ejected"), raw.MaxEjected, 0.5),
		RetryBudget:        c.percent(p.key("retry_budget"), raw.RetryBudget, 0.2),
		RetryBudgetMin:     c.int(p.key("retry_budget_min"), raw.RetryBudgetMin, 10),
		PerTryTimeout:      c.duration(p.key("per_try_timeout"), raw.PerTryTimeout, 10*time.Second),
		RequestTimeout:     c.duration(p.key("request_timeout"), raw.RequestTimeout, 30*time.Second),
		FailbackHold:       c.duration(p.key("failback_hold"), raw.FailbackHold, 30*time.Second),
		SlowStart:          c.duration(p.key("slow_start"), raw.SlowStart, 30*time.Second),
		DegradedBelow:      c.percent(p.key("degraded_below"), raw.DegradedBelow, 0.72),
		WhenAllDown:        c.str(p.key("when_all_down"), raw.WhenAllDown, AllDownReject),
	}
	r.EjectStatuses = c.statuses(p.key("eject_statuses"), raw.EjectStatuses, defaultEjectStatuses)
	return r
}

func (c *checker) validateResilience(p fieldPath, r *Resilience) {
	for _, f := range []struct {
		key string
		n   int
		min int
	}{
		{"eject_after_errors", r.EjectAfterErrors, 0},
		{"eject_after_5xx", r.EjectAfter5xx, 0},
		{"success_min_requests", r.SuccessMinRequests, 1},
		{"retry_budget_min", r.RetryBudgetMin, 0},
	} {
		if f.n < f.min || f.n > 1000000 {
			c.errorf(p.key(f.key), "must be %d to 1000000, got %d", f.min, f.n)
		}
	}
	for _, f := range []struct {
		key      string
		d        time.Duration
		zeroOK   bool
		min, max time.Duration
	}{
		{"success_window", r.SuccessWindow, false, time.Second, time.Hour},
		{"ejection_time", r.EjectionTime, false, time.Millisecond, time.Hour},
		{"max_ejection_time", r.MaxEjectionTime, false, time.Millisecond, 24 * time.Hour},
		{"per_try_timeout", r.PerTryTimeout, true, time.Millisecond, time.Hour},
		{"request_timeout", r.RequestTimeout, true, time.Millisecond, 24 * time.Hour},
		{"failback_hold", r.FailbackHold, true, 0, time.Hour},
		{"slow_start", r.SlowStart, true, 0, time.Hour},
	} {
		if f.d == 0 && f.zeroOK {
			continue
		}
		if f.d < f.min || f.d > f.max {
			c.errorf(p.key(f.key), "must be %s to %s, got %s", short(f.min), short(f.max), f.d)
		}
	}
	if r.MaxEjectionTime < r.EjectionTime && r.MaxEjectionTime > 0 {
		c.errorf(p.key("max_ejection_time"), "%s is less than resilience.ejection_time (%s)", r.MaxEjectionTime, r.EjectionTime)
	}
	if r.RequestTimeout > 0 && r.PerTryTimeout > 0 && r.RequestTimeout < r.PerTryTimeout {
		c.errorf(p.key("request_timeout"), "%s is less than resilience.per_try_timeout (%s): no try could use its time", r.RequestTimeout, r.PerTryTimeout)
	}
	switch r.WhenAllDown {
	case AllDownReject, AllDownPanic:
	default:
		c.errorf(p.key("when_all_down"), "must be %q or %q, got %q", AllDownReject, AllDownPanic, r.WhenAllDown)
	}
}

func short(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	for _, unit := range []string{"h0m0s", "m0s"} {
		if strings.HasSuffix(s, unit) {
			return s[:len(s)-len(unit)+1]
		}
	}
	return s
}

// percent reads a percentage such as "20%" (or "12.5%") as a fraction.
func (c *checker) percent(p fieldPath, s scalar, def float64) float64 {
	if !s.set {
		return def
	}
	if v, ok := s.v.(string); ok {
		t := strings.TrimSpace(v)
		if n, found := strings.CutSuffix(t, "%"); found {
			f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
			if err == nil && f >= 0 && f <= 100 && !math.IsNaN(f) {
				return f / 100
			}
			c.errorf(p, "invalid percentage %q: want 0%% to 100%%", v)
			return def
		}
	}
	if f, ok := number(s.v); ok && f == 0 {
		return 0
	}
	c.errorf(p, "expected a percentage such as \"20%%\", got %s", describe(s.v, s.text))
	return def
}

// Percent formats a fraction as a percentage, as the config writes it.
func Percent(f float64) string {
	return fmt.Sprintf("%g%%", math.Round(f*10000)/100)
}
