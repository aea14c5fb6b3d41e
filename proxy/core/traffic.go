package core

import (
	"sync/atomic"

	"github.com/geoproxy/geoproxy/route"
)

// traffic counts served requests by client country, the region their plan
// put first and the region that served them, for the dashboard's flows.
// One atomic per (country, first, serving): lock-free on the request path.
// With more than maxTrafficRegions regions the first choice is not kept.
type traffic struct {
	regions int
	byFirst bool
	n       []atomic.Int64
}

// maxTrafficRegions bounds the regions whose flows keep their first
// choice: 677 countries × 16 × 16 counters are 1.4 MB.
const maxTrafficRegions = 16

const trafficCountries = 26*26 + 1 // every two-letter code, and unknown

func newTraffic(regions int) *traffic {
	t := &traffic{regions: regions, byFirst: regions <= maxTrafficRegions}
	size := trafficCountries * regions
	if t.byFirst {
		size *= regions
	}
	t.n = make([]atomic.Int64, size)
	return t
}

func countryIndex(c string) int {
	if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
		return trafficCountries - 1
	}
	return int(c[0]-'A')*26 + int(c[1]-'A')
}

func (t *traffic) add(country string, first, served *route.Region) {
	i := countryIndex(country)*t.regions + served.Index
	if t.byFirst {
		f := served.Index
		if first != nil {
			f = first.Index
		}
		i = i*t.regions + f
	}
	t.n[i].Add(1)
}

// Flow is the requests of one client country from one first-choice region
// to one serving region since the process started.
type Flow struct {
	Country  string `json:"country"` // "" when unknown
	From     string `json:"from"`    // "" when not kept (many regions)
	To       string `json:"to"`
	Requests int64  `json:"requests"`
}

// Traffic returns the flows with at least one request; names are the
// regions' names by index.
func (b *Balancer) Traffic() []Flow {
	t := b.traffic
	names := make([]string, len(b.regions))
	for _, r := range b.router.Snapshot().Regions {
		names[r.Index] = r.Name
	}
	var out []Flow
	for i := range t.n {
		v := t.n[i].Load()
		if v == 0 {
			continue
		}
		f := Flow{Requests: v}
		rest := i
		if t.byFirst {
			f.From = names[rest%t.regions]
			rest /= t.regions
		}
		f.To = names[rest%t.regions]
		if c := rest / t.regions; c < trafficCountries-1 {
			f.Country = string([]byte{byte('A' + c/26), byte('A' + c%26)})
		}
		out = append(out, f)
	}
	return out
}
