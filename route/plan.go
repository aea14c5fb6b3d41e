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
	}
	return "unknown"
}

// Candidate is one region in a Plan.
type Candidate struct {
	Region *Region
	// DistanceKm is the great-circle distance from the client.
	DistanceKm float64
	Reason     Reason
}

// Plan is the ordered list of regions for one client: nearest first.
type Plan struct {
	// Candidates holds every region, nearest first (ties in configuration
	// order). Regions with Reason ReasonUnhealthy are skipped when serving.
	Candidates []Candidate
	// Nearest is the nearest region regardless of health; nil when the
	// snapshot has no region.
	Nearest *Region
	// Serving is the index in Candidates of the first eligible region, or
	// -1 when no region can serve.
	Serving int
}

// Plan ranks the snapshot's regions for a client at p whose address hashes
// to key. The first region that has a healthy backend and takes the client
// (see Region.Share: a region held back after failover, ramping up, or
// degraded takes only some clients, chosen by key) serves; when none takes
// it, the first with a healthy backend does. It writes the candidates into
// dst's backing array (pass a buffer with capacity for every region to
// avoid allocating) and returns the plan.
func (s *Snapshot) Plan(p Point, key uint64, dst []Candidate) Plan {
	dst = dst[:0]
	sinLat, cosLat := math.Sincos(p.Lat * math.Pi / 180)
	lonRad := p.Lon * math.Pi / 180
	for i := range s.Regions {
		r := &s.Regions[i]
		c := Candidate{Region: r, DistanceKm: r.distance(sinLat, cosLat, lonRad)}
		// Insertion sort: a handful of regions, stable for equal distances.
		dst = append(dst, c)
		j := len(dst) - 1
		for j > 0 && dst[j-1].DistanceKm > c.DistanceKm {
			dst[j] = dst[j-1]
			j--
		}
		dst[j] = c
	}
	plan := Plan{Candidates: dst, Serving: -1}
	if len(dst) == 0 {
		return plan
	}
	plan.Nearest = dst[0].Region
	first := -1 // the first region with a healthy backend
	for i := range dst {
		r := dst[i].Region
		switch {
		case !r.Eligible():
			dst[i].Reason = ReasonUnhealthy
		case plan.Serving >= 0:
			dst[i].Reason = ReasonFallback
		case !r.takes(key):
			if first < 0 {
				first = i
			}
			dst[i].Reason = ReasonSpill
			if r.Held() || r.Ramp < 1 {
				dst[i].Reason = ReasonHeld
			}
		default:
			plan.Serving = i
			dst[i].Reason = serves(s, i)
		}
	}
	if plan.Serving < 0 && first >= 0 {
		// No region takes the client: the first that can serves all.
		plan.Serving = first
		dst[first].Reason = serves(s, first)
		for i := first + 1; i < len(dst); i++ {
			if dst[i].Reason != ReasonUnhealthy {
				dst[i].Reason = ReasonFallback
			}
		}
	}
	return plan
}

// serves is the reason of the serving region at index i of a plan.
func serves(s *Snapshot, i int) Reason {
	switch {
	case s.Panic:
		return ReasonPanic
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
	}
	return "unhealthy"
}
