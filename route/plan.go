package route

import "math"

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

// Plan ranks the snapshot's regions for a client at p. It writes the
// candidates into dst's backing array (pass a buffer with capacity for every
// region to avoid allocating) and returns the plan.
func (s *Snapshot) Plan(p Point, dst []Candidate) Plan {
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
	for i := range dst {
		switch {
		case !dst[i].Region.Eligible():
			dst[i].Reason = ReasonUnhealthy
		case plan.Serving >= 0:
			dst[i].Reason = ReasonFallback
		case i == 0:
			plan.Serving = i
			dst[i].Reason = ReasonNearest
		default:
			plan.Serving = i
			dst[i].Reason = ReasonFailover
		}
	}
	return plan
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
		s := "failover:"
		for j := 0; j < i; j++ {
			s += " " + p.Candidates[j].Region.Name
			if j < i-1 {
				s += ","
			}
		}
		if i == 1 {
			return s + " unhealthy"
		}
		return s + " are unhealthy"
	case ReasonFallback:
		return "fallback if the regions before fail"
	case ReasonUnhealthy:
		return "skipped: no healthy backend"
	}
	return c.Reason.String()
}
