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
	IP        string            `json:"ip"`
	Location  ExplainedPlace    `json:"location"`
	GeoResult string            `json:"geo_result"`
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
}

// Explain locates addr as a direct client (no forwarding headers) and plans
// its regions with snapshot s.
func Explain(loc *geo.Locator, s *route.Snapshot, addr netip.Addr) Explanation {
	l, res := loc.Locate(addr)
	plan := s.Plan(route.Point{Lat: l.Lat, Lon: l.Lon}, clientKey(addr), nil)
	e := Explanation{
		IP:        addr.String(),
		Location:  ExplainedPlace{l.Country, l.Continent, l.Subdivision, l.City, l.Lat, l.Lon},
		GeoResult: res.String(),
	}
	if plan.Nearest != nil {
		e.Nearest = plan.Nearest.Name
	}
	if r := plan.ServingRegion(); r != nil {
		e.Serving = r.Name
	}
	for i, c := range plan.Candidates {
		e.Regions = append(e.Regions, ExplainedRegion{
			Name: c.Region.Name, DistanceKm: float64(int(c.DistanceKm*10)) / 10,
			Reason: c.Reason.String(), Why: plan.Explain(i),
			HealthyBackends: len(c.Region.Healthy), Backends: len(c.Region.Backends),
			ClientShare: float64(c.Region.Share) / route.FullShare,
		})
		if c.Region.Held() {
			until := c.Region.HeldUntil
			e.Regions[len(e.Regions)-1].HeldUntil = &until
		}
		if s.Panic {
			e.Regions[len(e.Regions)-1].HealthyBackends = 0
		}
	}
	return e
}
