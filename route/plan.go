package route

import (
	"math"
	"strconv"
	"time"
)

// Reason says why a region holds its place in a Plan.
type Reason uint8

// Reasons, in the words the admin API and the CLI print.
const (
	// ReasonNearest: the nearest region, and it is healthy.
	ReasonNearest Reason = iota
	// ReasonFailover: the first healthy region, serving because every
	// nearer region is unhealthy.
	ReasonFailover
	// ReasonFallback: a later healthy region, tried if the ones before it
	// fail the request.
	ReasonFallback
	// ReasonUnhealthy: the region has no healthy backend and is skipped.
	ReasonUnhealthy
	// ReasonHeld: the region is back from failover but held back (the
	// failback hold) or still ramping up, and does not take this client
	// yet; it is skipped.
	ReasonHeld
	// ReasonSpill: the region is degraded (too little of it is healthy)
	// and passes this client on to the next; it is skipped.
	ReasonSpill
	// ReasonPanic: every region is down; the region serves with all its
	// backends, healthy or not.
	ReasonPanic
	// ReasonCapacity: the region is at its capacity and passes this
	// client on to the next; it is skipped.
	ReasonCapacity
	// ReasonNotAllowed: the client's rule does not allow the region; it
	// never serves this client.
	ReasonNotAllowed
	// ReasonResidencyFallback: no region the client's rule allows can
	// serve; the region is one of the rule's fallbacks and serves.
	ReasonResidencyFallback
	// ReasonPreferred: the client's rule prefers the region, and it
	// serves.
	ReasonPreferred
)

// String returns the reason's short name.
func (r Reason) String() string {
	switch r {
	case ReasonNearest:
		return "nearest"
	case ReasonFailover:
		return "failover"
	case ReasonFallback:
		return "fallback"
	case ReasonUnhealthy:
		return "unhealthy"
	case ReasonHeld:
		return "held"
	case ReasonSpill:
		return "spill"
	case ReasonPanic:
		return "panic"
	case ReasonCapacity:
		return "capacity"
	case ReasonNotAllowed:
		return "not_allowed"
	case ReasonResidencyFallback:
		return "residency_fallback"
	case ReasonPreferred:
		return "preferred"
	}
	return "unknown"
}

// Candidate is one region in a Plan.
type Candidate struct {
	Region *Region
	Reason Reason

	order       float64 // ranks by distance (see Region.order)
	group, rank uint8   // the rule's order (see Rule)
}

// Plan is the ordered list of regions for one client: nearest first.
type Plan struct {
	// Candidates holds every region, nearest first (ties in configuration
	// order). Regions with Reason ReasonUnhealthy are skipped when serving.
	Candidates []Candidate
	// Nearest is the nearest region regardless of health (among those the
	// client's rule allows, whatever it prefers); nil when the snapshot
	// has no region.
	Nearest *Region
	// Serving is the index in Candidates of the first eligible region, or
	// -1 when no region can serve.
	Serving int
	// Rule is the rule the client matched; nil when none did.
	Rule *Rule
	// Rejected: the rule allows no region that can serve now (and no
	// fallback can): the request is refused, not sent elsewhere.
	Rejected bool
	// Wanted is the index in Candidates of the first region that could
	// serve the client before shares and capacity passed it on; -1 when
	// none.
	Wanted int
}

// Plan ranks the snapshot's regions for client c. Without a rule, by
// distance (scaled by each region's bias). With a rule: the regions it
// allows, in its prefer order then by distance, then its fallbacks, then
// the others, which never serve it. The first region that may serve the
// client, has a healthy backend and takes it (see Region.Share: a region
// held back after failover, ramping up, degraded or at capacity takes only
// some clients, chosen by c.Key) serves; when none takes it, the first
// that may serve and has a healthy backend does. The fallbacks may serve
// only when no allowed region has a healthy backend. It writes the
// candidates into dst's backing array (pass a buffer with capacity for
// every region to avoid allocating) and returns the plan.
func (s *Snapshot) Plan(c *Client, dst []Candidate) Plan {
	plan := Plan{Serving: -1, Wanted: -1}
	for i := range s.Rules {
		if s.Rules[i].matches(c) {
			plan.Rule = &s.Rules[i]
			break
		}
	}
	rule := plan.Rule
	dst = dst[:0]
	sinLat, cosLat := math.Sincos(c.Point.Lat * math.Pi / 180)
	lonRad := c.Point.Lon * math.Pi / 180
	for i := range s.Regions {
		r := &s.Regions[i]
		cand := Candidate{Region: r, order: r.order(sinLat, cosLat, lonRad, s.biased)}
		if rule != nil {
			cand.group, cand.rank = rule.group[i], rule.rank[i]
		}
		// Insertion sort: a handful of regions, stable for equal keys.
		dst = append(dst, cand)
		j := len(dst) - 1
		for j > 0 && cand.before(&dst[j-1]) {
			dst[j] = dst[j-1]
			j--
		}
		dst[j] = cand
	}
	plan.Candidates = dst
	if len(dst) == 0 {
		return plan
	}
	// Nearest: the nearest (by biased distance) the client may go to,
	// whatever a rule prefers.
	plan.Nearest = dst[0].Region
	best := -1
	for i := range dst {
		if rule.allowed(dst[i].Region.Index, false) && (best < 0 || dst[i].order < dst[best].order) {
			best = i
		}
	}
	if best >= 0 {
		plan.Nearest = dst[best].Region
	}
	fallback := false // the rule's fallbacks are in use
	if rule != nil && rule.Restrict {
		fallback = true
		for _, i := range rule.Allow {
			if s.Regions[i].Eligible() {
				fallback = false
				break
			}
		}
	}
	first := -1 // the first region that may serve with a healthy backend
	for i := range dst {
		r := dst[i].Region
		switch {
		case !rule.allowed(r.Index, fallback):
			dst[i].Reason = ReasonNotAllowed
		case !r.Eligible():
			dst[i].Reason = ReasonUnhealthy
		case plan.Serving >= 0:
			dst[i].Reason = ReasonFallback
		default:
			if first < 0 {
				first = i
			}
			if r.takes(c.Key) {
				plan.Serving = i
				dst[i].Reason = serves(s, &dst[i], i, fallback, rule)
				break
			}
			switch {
			case r.Held() || r.Ramp < 1:
				dst[i].Reason = ReasonHeld
			case r.Share < FullShare:
				dst[i].Reason = ReasonSpill
			default:
				dst[i].Reason = ReasonCapacity
			}
		}
	}
	plan.Wanted = first
	if plan.Serving < 0 && first >= 0 {
		// No region takes the client: the first that can serves all.
		plan.Serving = first
		dst[first].Reason = serves(s, &dst[first], first, fallback, rule)
		for i := first + 1; i < len(dst); i++ {
			if dst[i].Reason != ReasonUnhealthy && dst[i].Reason != ReasonNotAllowed {
				dst[i].Reason = ReasonFallback
			}
		}
	}
	plan.Rejected = plan.Serving < 0 && rule != nil && rule.Restrict
	return plan
}

// before orders candidates: by the rule's group (allowed, fallback,
// others) and preference, then by biased distance.
func (c *Candidate) before(o *Candidate) bool {
	if c.group != o.group {
		return c.group < o.group
	}
	if c.rank != o.rank {
		return c.rank < o.rank
	}
	return c.order < o.order
}

// serves is the reason of the serving candidate c, at index i of a plan.
func serves(s *Snapshot, c *Candidate, i int, fallback bool, rule *Rule) Reason {
	switch {
	case fallback:
		return ReasonResidencyFallback
	case s.Panic:
		return ReasonPanic
	case i == 0 && rule != nil && int(c.rank) < len(rule.Prefer):
		return ReasonPreferred
	case i == 0:
		return ReasonNearest
	}
	return ReasonFailover
}

// ServingRegion returns the region that serves the client, or nil.
func (p Plan) ServingRegion() *Region {
	if p.Serving < 0 {
		return nil
	}
	return p.Candidates[p.Serving].Region
}

// Explain describes candidate i in a sentence fragment, e.g.
// "failover: us-east unhealthy".
func (p Plan) Explain(i int) string {
	c := p.Candidates[i]
	switch c.Reason {
	case ReasonNearest:
		return "nearest"
	case ReasonFailover:
		// "failover: us-west, us-east are unhealthy", or each region
		// with its own reason when they differ.
		alike := true
		for j := 1; j < i; j++ {
			alike = alike && p.Candidates[j].Reason == p.Candidates[0].Reason
		}
		s := "failover:"
		for j := 0; j < i; j++ {
			s += " " + p.Candidates[j].Region.Name
			if !alike {
				s += " " + p.Candidates[j].Reason.why()
			}
			if j < i-1 {
				s += ","
			}
		}
		switch {
		case !alike:
			return s
		case i == 1:
			return s + " " + p.Candidates[0].Reason.why()
		}
		return s + " are " + p.Candidates[0].Reason.why()
	case ReasonFallback:
		return "fallback if the regions before fail"
	case ReasonUnhealthy:
		return "skipped: no healthy backend"
	case ReasonHeld:
		r := c.Region
		if r.Held() {
			return "held back after failover until " + r.HeldUntil.UTC().Format(time.RFC3339)
		}
		return "ramping up after failover (" + strconv.Itoa(int(r.Ramp*100)) + "% of its clients): this client waits"
	case ReasonSpill:
		return "degraded (" + strconv.Itoa(int(c.Region.HealthyShare*100)) + "% healthy): this client goes on to the next region"
	case ReasonPanic:
		return "panic: every region is down; all backends of the nearest region are tried"
	case ReasonCapacity:
		return "at capacity: this client goes on to the next region"
	case ReasonNotAllowed:
		return "not allowed by rule " + p.Rule.Name
	case ReasonPreferred:
		return "preferred by rule " + p.Rule.Name
	case ReasonResidencyFallback:
		return "fallback of rule " + p.Rule.Name + ": no allowed region can serve"
	}
	return c.Reason.String()
}

// why is the reason a region before the serving one was passed, as a
// fragment.
func (r Reason) why() string {
	switch r {
	case ReasonHeld:
		return "held back"
	case ReasonSpill:
		return "degraded"
	case ReasonCapacity:
		return "at capacity"
	case ReasonNotAllowed:
		return "not allowed"
	}
	return "unhealthy"
}
