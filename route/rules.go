package route

import (
	"net/netip"
	"sync/atomic"
)

// Client is what the planner knows of a client.
type Client struct {
	// Point is where the client is (the default location when it could
	// not be located).
	Point Point
	// Country (ISO 3166-1 alpha-2), Continent and Subdivision (the ISO
	// 3166-2 code after the country's, such as "CA" for US-CA); "" when
	// unknown.
	Country, Continent, Subdivision string
	// Addr is the client's address.
	Addr netip.Addr
	// Located: the location came from an override, a trusted edge header
	// or the database; false for a client that could not be located. A
	// located client with neither country nor continent matches rules as
	// one that could not be located.
	Located bool
	// Key hashes the address: a client always gets the same key (see
	// Region.Share).
	Key uint64
}

// Rule steers the clients it matches (see RuleSpec). Rules are compiled
// once per configuration and shared by its snapshots.
type Rule struct {
	// Name is the rule's configured name; Index its position.
	Name  string
	Index int
	// Restrict: only Allow (and, when no allowed region can serve,
	// Fallback) may serve; with Allow empty, the clients are refused.
	Restrict bool
	// Allow and Fallback are region indexes, in configured order.
	Allow, Fallback []int
	// Prefer are region indexes tried first, in order.
	Prefer []int

	countries, continents []uint16
	subdivisions          []string // "US-CA"
	networks              []netip.Prefix
	unknown               bool
	group, rank           []uint8 // by region index: allowed 0, fallback 1, others 2; order within
}

// RuleSpec declares a rule for CompileRules; regions are named.
type RuleSpec struct {
	Name                                string
	Continents, Countries, Subdivisions []string
	Networks                            []netip.Prefix
	Unknown                             bool
	Restrict                            bool
	Allow, Fallback, Prefer             []string
}

// CompileRules compiles specs for the regions named, in order; region
// names it does not know are ignored (the configuration checks them).
func CompileRules(specs []RuleSpec, regions []string) []Rule {
	index := make(map[string]int, len(regions))
	for i, name := range regions {
		index[name] = i
	}
	indexes := func(names []string) []int {
		var out []int
		for _, n := range names {
			if i, ok := index[n]; ok {
				out = append(out, i)
			}
		}
		return out
	}
	rules := make([]Rule, len(specs))
	for k, sp := range specs {
		r := Rule{Name: sp.Name, Index: k, Restrict: sp.Restrict,
			Allow: indexes(sp.Allow), Fallback: indexes(sp.Fallback), Prefer: indexes(sp.Prefer),
			subdivisions: sp.Subdivisions, networks: sp.Networks, unknown: sp.Unknown,
			group: make([]uint8, len(regions)), rank: make([]uint8, len(regions))}
		for _, c := range sp.Countries {
			r.countries = append(r.countries, code2(c))
		}
		for _, c := range sp.Continents {
			r.continents = append(r.continents, code2(c))
		}
		for i := range regions {
			r.rank[i] = uint8(min(len(r.Prefer), 255))
			if r.Restrict {
				r.group[i] = 2
			}
		}
		for pos, i := range r.Prefer {
			r.rank[i] = uint8(pos)
		}
		for _, i := range r.Allow {
			r.group[i] = 0
		}
		for pos, i := range r.Fallback {
			r.group[i], r.rank[i] = 1, uint8(pos)
		}
		rules[k] = r
	}
	return rules
}

// code2 packs a two-letter code; anything else packs to 0.
func code2(s string) uint16 {
	if len(s) != 2 {
		return 0
	}
	return uint16(s[0])<<8 | uint16(s[1])
}

// matches reports whether the rule is for c.
func (r *Rule) matches(c *Client) bool {
	for _, n := range r.networks {
		if n.Contains(c.Addr) {
			return true
		}
	}
	if !c.Located || c.Country == "" && c.Continent == "" {
		// Not located, or located without a country (a bare point): no
		// country or continent rule can say it is theirs.
		return r.unknown
	}
	if cc := code2(c.Country); cc != 0 {
		for _, x := range r.countries {
			if x == cc {
				return true
			}
		}
		for _, sd := range r.subdivisions {
			if len(sd) > 3 && sd[:2] == c.Country && sd[3:] == c.Subdivision {
				return true
			}
		}
	}
	if ct := code2(c.Continent); ct != 0 {
		for _, x := range r.continents {
			if x == ct {
				return true
			}
		}
	}
	return false
}

// allowed reports whether region i may serve the rule's clients now:
// allowed, or a fallback when fallbacks are in use.
func (r *Rule) allowed(i int, fallback bool) bool {
	if r == nil || !r.Restrict {
		return true
	}
	return r.group[i] == 0 || fallback && r.group[i] == 1
}

// Allowed reports whether region i may ever serve the rule's clients
// (allowed or fallback); true without a rule.
func (r *Rule) Allowed(i int) bool { return r.allowed(i, true) }

// Load is a region's load, shared by the snapshots of one configuration,
// for its capacity.
type Load struct {
	// MaxInFlight and MaxRPS are the region's capacity; 0: unlimited.
	MaxInFlight, MaxRPS int64
	// Wanted counts requests in flight whose plan put this region first
	// (before any share or capacity spill); Arrivals counts them all.
	Wanted, Arrivals atomic.Int64
	// rpsShare is the share of its clients the region takes for MaxRPS,
	// in 1/65536, set by UpdateRate.
	rpsShare atomic.Uint32
}

// NewLoad returns the load of a region with the given capacity.
func NewLoad(maxInFlight, maxRPS int) *Load {
	l := &Load{MaxInFlight: int64(maxInFlight), MaxRPS: int64(maxRPS)}
	l.rpsShare.Store(FullShare)
	return l
}

// UpdateRate sets the requests-per-second share from the arrival rate
// measured over the last period.
func (l *Load) UpdateRate(rate float64) {
	if l.MaxRPS <= 0 || rate <= float64(l.MaxRPS) {
		l.rpsShare.Store(FullShare)
		return
	}
	l.rpsShare.Store(uint32(float64(l.MaxRPS) / rate * FullShare))
}

// Share is the share of its clients the region takes for its capacity, in
// 1/65536.
func (l *Load) Share() uint32 {
	if l == nil {
		return FullShare
	}
	s := l.rpsShare.Load()
	if l.MaxInFlight > 0 {
		if w := l.Wanted.Load(); w > l.MaxInFlight {
			s = min(s, uint32(l.MaxInFlight*FullShare/w))
		}
	}
	return s
}
