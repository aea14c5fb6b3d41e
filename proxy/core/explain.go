package core

import (
	"net/netip"
	"time"

	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/route"
)

// Explanation says where a client would go and why; the admin API and the
// lookup command print it.
type Explanation struct {
	IP       string         `json:"ip"`
	Location ExplainedPlace `json:"location"`
	// GeoResult is where the location came from: found (the database),
	// override, edge (a trusted CDN's headers), or private, not_found,
	// invalid, error (not located: the default location).
	GeoResult string `json:"geo_result"`
	// Rule is the rule the client matched, "" when none; Allowed,
	// Fallback and Preferred are its regions; Rejected: no region it
	// allows can serve now, the request would get 503.
	Rule      string            `json:"rule,omitempty"`
	Allowed   []string          `json:"allowed,omitempty"`
	Fallback  []string          `json:"fallback,omitempty"`
	Preferred []string          `json:"preferred,omitempty"`
	Rejected  bool              `json:"rejected,omitempty"`
	Nearest   string            `json:"nearest"`
	Serving   string            `json:"serving"` // "" when no region can serve
	Regions   []ExplainedRegion `json:"regions"`
}

// ExplainedPlace is a geo.Location for JSON.
type ExplainedPlace struct {
	Country     string  `json:"country"`
	Continent   string  `json:"continent"`
	Subdivision string  `json:"subdivision"`
	City        string  `json:"city"`
	Lat         float64 `json:"lat"`
	Lon         float64 `json:"lon"`
}

// ExplainedRegion is one region of a plan, in try order.
type ExplainedRegion struct {
	Name            string  `json:"name"`
	DistanceKm      float64 `json:"distance_km"`
	Reason          string  `json:"reason"`
	Why             string  `json:"why"`
	HealthyBackends int     `json:"healthy_backends"`
	Backends        int     `json:"backends"`
	// HeldUntil is when a region back from failover takes clients again.
	HeldUntil *time.Time `json:"held_until,omitempty"`
	// ClientShare is the share of its clients the region takes now: below
	// 1 while it is degraded, held back or ramping up.
	ClientShare float64 `json:"client_share"`
	// Bias is the region's bias: its distances count as distance × (1 -
	// bias/100).
	Bias int `json:"bias,omitempty"`
	// Capacity, when the region has one: its limits, the requests in
	// flight that want it, and the share of its clients it takes for it.
	Capacity *ExplainedCapacity `json:"capacity,omitempty"`
}

// ExplainedCapacity is a region's capacity in an Explanation.
type ExplainedCapacity struct {
	MaxInFlight int64   `json:"max_in_flight,omitempty"`
	MaxRPS      int64   `json:"max_rps,omitempty"`
	Wanted      int64   `json:"wanted_in_flight"`
	Share       float64 `json:"share"`
}

// Explain locates addr as a direct client (no forwarding or edge headers)
// and plans its regions with snapshot s.
func Explain(loc *geo.Locator, s *route.Snapshot, addr netip.Addr) Explanation {
	l, res := loc.Locate(addr)
	c := route.Client{Point: route.Point{Lat: l.Lat, Lon: l.Lon}, Country: l.Country, Continent: l.Continent,
		Subdivision: l.Subdivision, Addr: addr, Located: res.Located(), Key: clientKey(addr)}
	plan := s.Plan(&c, nil)
	e := Explanation{
		IP:        addr.String(),
		Location:  ExplainedPlace{l.Country, l.Continent, l.Subdivision, l.City, l.Lat, l.Lon},
		GeoResult: res.String(),
		Rejected:  plan.Rejected,
	}
	if r := plan.Rule; r != nil {
		e.Rule = r.Name
		names := func(idx []int) []string {
			out := []string{}
			for _, i := range idx {
				out = append(out, s.Regions[i].Name)
			}
			return out
		}
		if r.Restrict {
			e.Allowed, e.Fallback = names(r.Allow), names(r.Fallback)
		}
		if len(r.Prefer) > 0 {
			e.Preferred = names(r.Prefer)
		}
	}
	if plan.Nearest != nil {
		e.Nearest = plan.Nearest.Name
	}
	if r := plan.ServingRegion(); r != nil {
		e.Serving = r.Name
	}
	for i, cand := range plan.Candidates {
		r := cand.Region
		er := ExplainedRegion{
			Name: r.Name, DistanceKm: float64(int(route.Distance(c.Point, r.Location)*10)) / 10,
			Reason: cand.Reason.String(), Why: plan.Explain(i),
			HealthyBackends: len(r.Healthy), Backends: len(r.Backends),
			ClientShare: float64(r.Share) / route.FullShare, Bias: r.Bias,
		}
		if r.Held() {
			until := r.HeldUntil
			er.HeldUntil = &until
		}
		if s.Panic {
			er.HealthyBackends = 0
		}
		if ld := r.Load; ld != nil {
			er.Capacity = &ExplainedCapacity{MaxInFlight: ld.MaxInFlight, MaxRPS: ld.MaxRPS,
				Wanted: ld.Wanted.Load(), Share: float64(ld.Share()) / route.FullShare}
		}
		e.Regions = append(e.Regions, er)
	}
	return e
}
