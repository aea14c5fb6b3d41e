package route

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	usEast     = Point{33.84, -81.16}
	usWest     = Point{45.59, -121.18}
	europeWest = Point{50.45, 3.82}

	london  = Point{51.5142, -0.0931}
	seattle = Point{47.6062, -122.3321}
	newYork = Point{40.7128, -74.0060}
	tokyo   = Point{35.6895, 139.6917}
)

// topology returns the three-region layout of the example config; down lists
// regions whose backends are all unhealthy.
func topology(down ...string) *Snapshot {
	specs := []RegionSpec{
		{Name: "us-east", Location: usEast, Backends: []*Backend{{ID: "e1", Region: "us-east", Weight: 1}}},
		{Name: "us-west", Location: usWest, Backends: []*Backend{{ID: "w1", Region: "us-west", Weight: 1}}},
		{Name: "europe-west", Location: europeWest, Backends: []*Backend{
			{ID: "eu1", Region: "europe-west", Weight: 2},
			{ID: "eu2", Region: "europe-west", Weight: 1},
		}},
	}
	isDown := map[string]bool{}
	for _, d := range down {
		isDown[d] = true
	}
	return NewSnapshot(specs, func(b *Backend) bool { return !isDown[b.Region] }, 1)
}

func names(p Plan) []string {
	var out []string
	for _, c := range p.Candidates {
		out = append(out, c.Region.Name)
	}
	return out
}

func TestPlan(t *testing.T) {
	defaultLocation := Point{40.71, -74.01} // the example config's default_location
	cases := []struct {
		name       string
		client     Point
		down       []string
		order      []string
		serving    string // "" = none
		reasons    []Reason
		servingWhy string
	}{
		{
			name: "London goes to europe-west", client: london,
			order: []string{"europe-west", "us-east", "us-west"}, serving: "europe-west",
			reasons:    []Reason{ReasonNearest, ReasonFallback, ReasonFallback},
			servingWhy: "nearest",
		},
		{
			name: "Seattle goes to us-west", client: seattle,
			order: []string{"us-west", "us-east", "europe-west"}, serving: "us-west",
			reasons:    []Reason{ReasonNearest, ReasonFallback, ReasonFallback},
			servingWhy: "nearest",
		},
		{
			name: "New York goes to us-east", client: newYork,
			order: []string{"us-east", "us-west", "europe-west"}, serving: "us-east",
			reasons:    []Reason{ReasonNearest, ReasonFallback, ReasonFallback},
			servingWhy: "nearest",
		},
		{
			name: "Tokyo goes to us-west", client: tokyo,
			order: []string{"us-west", "europe-west", "us-east"}, serving: "us-west",
			reasons:    []Reason{ReasonNearest, ReasonFallback, ReasonFallback},
			servingWhy: "nearest",
		},
		{
			name: "nearest down fails over to next-nearest", client: london, down: []string{"europe-west"},
			order: []string{"europe-west", "us-east", "us-west"}, serving: "us-east",
			reasons:    []Reason{ReasonUnhealthy, ReasonFailover, ReasonFallback},
			servingWhy: "failover: europe-west unhealthy",
		},
		{
			name: "two nearest down", client: seattle, down: []string{"us-west", "us-east"},
			order: []string{"us-west", "us-east", "europe-west"}, serving: "europe-west",
			reasons:    []Reason{ReasonUnhealthy, ReasonUnhealthy, ReasonFailover},
			servingWhy: "failover: us-west, us-east are unhealthy",
		},
		{
			name: "all down serves nobody", client: newYork, down: []string{"us-west", "us-east", "europe-west"},
			order:   []string{"us-east", "us-west", "europe-west"},
			reasons: []Reason{ReasonUnhealthy, ReasonUnhealthy, ReasonUnhealthy},
		},
		{
			name: "unknown address uses the default location", client: defaultLocation,
			order: []string{"us-east", "us-west", "europe-west"}, serving: "us-east",
			reasons:    []Reason{ReasonNearest, ReasonFallback, ReasonFallback},
			servingWhy: "nearest",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := topology(c.down...)
			p := s.Plan(at(c.client, 0), nil)
			assert.Equal(t, c.order, names(p))
			require.Equal(t, c.order[0], p.Nearest.Name)
			var reasons []Reason
			for _, cand := range p.Candidates {
				reasons = append(reasons, cand.Reason)
			}
			assert.Equal(t, c.reasons, reasons)
			if c.serving == "" {
				assert.Equal(t, -1, p.Serving)
				assert.Nil(t, p.ServingRegion())
				return
			}
			require.NotNil(t, p.ServingRegion())
			assert.Equal(t, c.serving, p.ServingRegion().Name)
			assert.Equal(t, c.servingWhy, p.Explain(p.Serving))
		})
	}
}

func TestPlanEmptySnapshot(t *testing.T) {
	p := NewSnapshot(nil, func(*Backend) bool { return true }, 1).Plan(at(london, 0), nil)
	assert.Nil(t, p.Nearest)
	assert.Equal(t, -1, p.Serving)
}

func TestPlanTiesKeepConfigOrder(t *testing.T) {
	here := Point{10, 10}
	s := NewSnapshot([]RegionSpec{
		{Name: "b", Location: here, Backends: []*Backend{{ID: "1"}}},
		{Name: "a", Location: here, Backends: []*Backend{{ID: "2"}}},
	}, func(*Backend) bool { return true }, 1)
	assert.Equal(t, []string{"b", "a"}, names(s.Plan(at(here, 0), nil)))
}

func TestDistance(t *testing.T) {
	// London to New York is about 5570 km; the antipodes about 20015 km.
	assert.InDelta(t, 5570, Distance(london, newYork), 15)
	assert.InDelta(t, 20015, Distance(Point{0, 0}, Point{0, 180}), 1)
	assert.InDelta(t, 0, Distance(tokyo, tokyo), 1e-6)
	// Across the antimeridian: Fiji to Samoa is about 1150 km, not 38000.
	assert.InDelta(t, 1150, Distance(Point{-17.7, 178.0}, Point{-13.8, -172.1}), 60)
}

func TestPlanDoesNotAllocate(t *testing.T) {
	s := topology("europe-west")
	buf := make([]Candidate, 0, 8)
	allocs := testing.AllocsPerRun(200, func() {
		p := s.Plan(at(london, 0), buf)
		_ = p.ServingRegion().Pick(rand.Uint64, nil)
	})
	assert.Zero(t, allocs)
}

func TestPickFollowsWeightsWhenIdle(t *testing.T) {
	s := topology()
	eu := s.Region("europe-west")
	rng := rand.New(rand.NewPCG(1, 2))
	counts := map[string]int{}
	const n = 30000
	for range n {
		counts[eu.Pick(rng.Uint64, nil).ID]++
	}
	// Weights 2:1.
	assert.InDelta(t, 2.0/3, float64(counts["eu1"])/n, 0.02)
	assert.InDelta(t, 1.0/3, float64(counts["eu2"])/n, 0.02)
}

func TestPickAvoidsTheBusierBackend(t *testing.T) {
	s := NewSnapshot([]RegionSpec{{Name: "r", Backends: []*Backend{
		{ID: "slow", Weight: 1}, {ID: "fast", Weight: 1}, {ID: "other", Weight: 1},
	}}}, func(*Backend) bool { return true }, 1)
	r := s.Region("r")
	slow := r.Backends[0]
	for range 10 {
		slow.Acquire()
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		assert.NotEqual(t, "slow", r.Pick(rng.Uint64, nil).ID)
	}
}

func TestPickSkipsTried(t *testing.T) {
	s := topology()
	eu := s.Region("europe-west")
	first := eu.Healthy[0]
	got := eu.Pick(rand.Uint64, []*Backend{first})
	require.NotNil(t, got)
	assert.NotEqual(t, first, got)
	assert.Nil(t, eu.Pick(rand.Uint64, eu.Healthy))
	assert.Nil(t, topology("europe-west").Region("europe-west").Pick(rand.Uint64, nil))
}

func TestSnapshotKeepsOnlyHealthy(t *testing.T) {
	b1 := &Backend{ID: "1", Weight: 1}
	b2 := &Backend{ID: "2", Weight: 3}
	s := NewSnapshot([]RegionSpec{{Name: "r", Backends: []*Backend{b1, b2}}},
		func(b *Backend) bool { return b == b2 }, 7)
	r := s.Region("r")
	assert.Equal(t, []*Backend{b1, b2}, r.Backends)
	assert.Equal(t, []*Backend{b2}, r.Healthy)
	assert.Same(t, b2, r.Pick(rand.Uint64, nil))
	assert.Nil(t, s.Region("missing"))
	assert.Equal(t, uint64(7), s.Version)
}

func BenchmarkPlanAndPick(b *testing.B) {
	s := topology()
	buf := make([]Candidate, 0, 8)
	points := []Point{london, seattle, newYork, tokyo}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := s.Plan(at(points[i%len(points)], uint64(i)), buf)
		p.ServingRegion().Pick(rand.Uint64, nil)
		i++
	}
}

// tenBackends is a region "a" of ten backends of weight 1, of which the
// first up are healthy, and a region "b" of one healthy backend, farther
// from the client at london.
func tenBackends(up int, opts Build) *Snapshot {
	var bs []*Backend
	for i := range 10 {
		bs = append(bs, &Backend{ID: string(rune('0' + i)), Region: "a", Weight: 1, Index: i})
	}
	healthyIDs := map[string]bool{}
	for _, b := range bs[:up] {
		healthyIDs[b.ID] = true
	}
	opts.Specs = []RegionSpec{
		{Name: "a", Location: europeWest, Backends: bs},
		{Name: "b", Location: usEast, Backends: []*Backend{{ID: "b", Region: "b", Weight: 1, Index: 10}}},
	}
	opts.Backend = func(b *Backend) (bool, float64) { return b.Region == "b" || healthyIDs[b.ID], 1 }
	return opts.Snapshot()
}

// servedShare plans n clients with distinct keys and returns the share
// served by region "a", checking that each key always gets the same answer.
func servedShare(t *testing.T, s *Snapshot, n int) float64 {
	t.Helper()
	served := 0
	for k := range n {
		key := uint64(k) * 0x9e3779b97f4a7c15
		p := s.Plan(at(london, key), nil)
		again := s.Plan(at(london, key), nil)
		require.Equal(t, p.ServingRegion().Name, again.ServingRegion().Name, "a client must not bounce between regions")
		if p.ServingRegion().Name == "a" {
			served++
		}
	}
	return float64(served) / float64(n)
}

func TestDegradedRegionSpillsInProportion(t *testing.T) {
	const n = 20000
	// 8 of 10 healthy is above 72%: the region keeps every client.
	assert.Equal(t, 1.0, servedShare(t, tenBackends(8, Build{DegradedBelow: 0.72}), n))
	// 5 of 10: it carries 0.5/0.72 of its clients, the rest go to b.
	s := tenBackends(5, Build{DegradedBelow: 0.72})
	assert.True(t, s.Region("a").Degraded)
	assert.InDelta(t, 0.5/0.72, servedShare(t, s, n), 0.02)
	// 1 of 10: a tenth of 1/0.72.
	assert.InDelta(t, 0.1/0.72, servedShare(t, tenBackends(1, Build{DegradedBelow: 0.72}), n), 0.02)
	// Turned off: a degraded region keeps them all.
	assert.Equal(t, 1.0, servedShare(t, tenBackends(1, Build{}), n))

	// The clients kept at a smaller share are kept at a larger one: a
	// recovering region takes back clients, never swaps them.
	small, large := tenBackends(3, Build{DegradedBelow: 0.72}), tenBackends(6, Build{DegradedBelow: 0.72})
	for k := range 5000 {
		key := uint64(k) * 0x9e3779b97f4a7c15
		if small.Plan(at(london, key), nil).ServingRegion().Name == "a" {
			require.Equal(t, "a", large.Plan(at(london, key), nil).ServingRegion().Name)
		}
	}

	p := s.Plan(at(london, findKey(t, s, "b")), nil)
	assert.Equal(t, ReasonSpill, p.Candidates[0].Reason)
	assert.Equal(t, "degraded (50% healthy): this client goes on to the next region", p.Explain(0))
	assert.Equal(t, "failover: a degraded", p.Explain(1))
}

// findKey returns a client key that s serves from region want, for a
// client in London.
func findKey(t *testing.T, s *Snapshot, want string) uint64 {
	t.Helper()
	return findKeyAt(t, s, london, want)
}

func TestHeldRegionTakesNoClientUntilItsHoldEnds(t *testing.T) {
	until := time.Date(2026, 12, 7, 12, 0, 30, 0, time.UTC)
	held := tenBackends(10, Build{Region: func(r *Region) (time.Time, float64) {
		if r.Name == "a" {
			return until, 1
		}
		return time.Time{}, 1
	}})
	assert.Zero(t, servedShare(t, held, 2000))
	p := held.Plan(at(london, 1), nil)
	assert.Equal(t, ReasonHeld, p.Candidates[0].Reason)
	assert.Equal(t, "held back after failover until 2026-12-07T12:00:30Z", p.Explain(0))
	assert.Equal(t, "failover: a held back", p.Explain(1))

	ramping := tenBackends(10, Build{Region: func(r *Region) (time.Time, float64) {
		if r.Name == "a" {
			return time.Time{}, 0.25
		}
		return time.Time{}, 1
	}})
	assert.InDelta(t, 0.25, servedShare(t, ramping, 20000), 0.02)

	// Held, but the only region that can serve: it serves.
	alone := tenBackends(10, Build{Region: func(r *Region) (time.Time, float64) { return until, 1 }})
	alone.Regions[1].Healthy = nil
	assert.Equal(t, "a", alone.Plan(at(london, 1), nil).ServingRegion().Name)
}

func TestRampingBackendTakesPartOfItsShare(t *testing.T) {
	a, b := &Backend{ID: "a", Weight: 1}, &Backend{ID: "b", Weight: 1}
	s := Build{Specs: []RegionSpec{{Name: "r", Backends: []*Backend{a, b}}},
		Backend: func(be *Backend) (bool, float64) {
			if be == b {
				return true, 0.25
			}
			return true, 1
		}}.Snapshot()
	rng := rand.New(rand.NewPCG(5, 6))
	got := 0
	const n = 20000
	for range n {
		if s.Regions[0].Pick(rng.Uint64, nil) == b {
			got++
		}
	}
	// Drawn 1:4 by weight, the first drawn winning ties: b wins a draw of
	// two only when drawn both times or first, about 0.2·0.2 + 2·0.2·0.8/2.
	assert.InDelta(t, 0.2, float64(got)/n, 0.03)
}

func TestPanicSpreadsOverEveryBackendOfTheNearestRegion(t *testing.T) {
	s := tenBackends(0, Build{})
	down := Build{Specs: []RegionSpec{
		{Name: "a", Location: europeWest, Backends: s.Regions[0].Backends},
		{Name: "b", Location: usEast, Backends: s.Regions[1].Backends},
	}, Backend: func(*Backend) (bool, float64) { return false, 1 }}
	assert.Equal(t, -1, down.Snapshot().Plan(at(london, 1), nil).Serving, "reject mode: nobody serves")
	down.PanicWhenAllDown = true
	ps := down.Snapshot()
	require.True(t, ps.Panic)
	p := ps.Plan(at(london, 1), nil)
	assert.Equal(t, "a", p.ServingRegion().Name)
	assert.Equal(t, ReasonPanic, p.Candidates[0].Reason)
	assert.Len(t, p.ServingRegion().Healthy, 10)
	seen := map[string]bool{}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 2000 {
		seen[p.ServingRegion().Pick(rng.Uint64, nil).ID] = true
	}
	assert.Len(t, seen, 10)
}

// at is a located client at p whose address hashes to key.
func at(p Point, key uint64) *Client {
	return &Client{Point: p, Key: key, Located: true}
}

// ruled is the three-region topology with rules, down lists regions
// whose backends are all unhealthy.
func ruled(rules []RuleSpec, down ...string) *Snapshot {
	s := topology(down...)
	var names []string
	for _, r := range s.Regions {
		names = append(names, r.Name)
	}
	s.Rules = CompileRules(rules, names)
	return s
}

var euOnly = RuleSpec{Name: "eu-stays-in-eu", Continents: []string{"EU"}, Restrict: true, Allow: []string{"europe-west"}}

func TestResidencyRuleKeepsClientsInTheirRegions(t *testing.T) {
	paris := &Client{Point: Point{48.86, 2.35}, Country: "FR", Continent: "EU", Located: true}
	ny := &Client{Point: newYork, Country: "US", Continent: "NA", Subdivision: "NY", Located: true}

	s := ruled([]RuleSpec{euOnly})
	p := s.Plan(paris, nil)
	require.NotNil(t, p.Rule)
	assert.Equal(t, "eu-stays-in-eu", p.Rule.Name)
	assert.Equal(t, "europe-west", p.ServingRegion().Name)
	assert.Equal(t, []Reason{ReasonNearest, ReasonNotAllowed, ReasonNotAllowed}, reasons(p))
	assert.Nil(t, s.Plan(ny, nil).Rule, "a client no rule matches goes by distance")

	// europe-west down: refused, never sent to another region.
	down := ruled([]RuleSpec{euOnly}, "europe-west")
	p = down.Plan(paris, nil)
	assert.Equal(t, -1, p.Serving)
	assert.True(t, p.Rejected)
	assert.Equal(t, "not allowed by rule eu-stays-in-eu", p.Explain(1))

	// With a fallback, that serves instead, and only then.
	withFallback := euOnly
	withFallback.Fallback = []string{"us-east"}
	p = ruled([]RuleSpec{withFallback}, "europe-west").Plan(paris, nil)
	assert.Equal(t, "us-east", p.ServingRegion().Name)
	assert.Equal(t, ReasonResidencyFallback, p.Candidates[p.Serving].Reason)
	assert.False(t, p.Rejected)
	p = ruled([]RuleSpec{withFallback}).Plan(paris, nil)
	assert.Equal(t, "europe-west", p.ServingRegion().Name)
	for _, c := range p.Candidates[1:] {
		assert.Equal(t, ReasonNotAllowed, c.Reason, "no retry leaves the allowed region while it is up")
	}

	// Panic mode stays within the rule too.
	pb := Build{Specs: specsOf(s), Rules: s.Rules, PanicWhenAllDown: true,
		Backend: func(*Backend) (bool, float64) { return false, 1 }}.Snapshot()
	p = pb.Plan(paris, nil)
	assert.Equal(t, "europe-west", p.ServingRegion().Name)
	for _, c := range p.Candidates[1:] {
		assert.Equal(t, ReasonNotAllowed, c.Reason)
	}
}

func specsOf(s *Snapshot) []RegionSpec {
	var out []RegionSpec
	for _, r := range s.Regions {
		out = append(out, RegionSpec{Name: r.Name, Location: r.Location, Backends: r.Backends})
	}
	return out
}

func reasons(p Plan) []Reason {
	var out []Reason
	for _, c := range p.Candidates {
		out = append(out, c.Reason)
	}
	return out
}

func TestRulesMatchFirstAndByEveryCriterion(t *testing.T) {
	rules := []RuleSpec{
		{Name: "office", Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Prefer: []string{"us-west"}},
		{Name: "california", Subdivisions: []string{"US-CA"}, Prefer: []string{"us-east"}},
		{Name: "canada", Countries: []string{"CA"}, Prefer: []string{"us-east", "europe-west"}},
		{Name: "nowhere", Unknown: true, Restrict: true},
	}
	s := ruled(rules)
	cases := []struct {
		c     Client
		rule  string
		order []string
	}{
		{Client{Point: seattle, Country: "US", Continent: "NA", Subdivision: "WA", Located: true}, "", []string{"us-west", "us-east", "europe-west"}},
		{Client{Point: seattle, Country: "US", Continent: "NA", Subdivision: "CA", Located: true}, "california", []string{"us-east", "us-west", "europe-west"}},
		{Client{Point: Point{43.65, -79.38}, Country: "CA", Continent: "NA", Located: true}, "canada", []string{"us-east", "europe-west", "us-west"}},
		{Client{Point: london, Addr: netip.MustParseAddr("192.0.2.7"), Country: "GB", Continent: "EU", Located: true}, "office", []string{"us-west", "europe-west", "us-east"}},
		{Client{Point: london, Addr: netip.MustParseAddr("10.0.0.1")}, "nowhere", nil},
		// A client that cannot be located matches no country rule.
		{Client{Point: seattle, Country: "CA"}, "nowhere", nil},
	}
	for _, tc := range cases {
		p := s.Plan(&tc.c, nil)
		name := ""
		if p.Rule != nil {
			name = p.Rule.Name
		}
		assert.Equal(t, tc.rule, name, "%+v", tc.c)
		if tc.order != nil {
			assert.Equal(t, tc.order, names(p))
		} else {
			assert.True(t, p.Rejected, "allow: [] refuses")
		}
	}
}

func TestBiasGrowsAndShrinksCatchments(t *testing.T) {
	// A client a bit nearer us-east than us-west.
	mid := Point{40, -100}
	specs := specsOf(topology())
	plain := NewSnapshot(specs, func(*Backend) bool { return true }, 1)
	dEast, dWest := Distance(mid, usEast), Distance(mid, usWest)
	require.Less(t, dWest, dEast*1.5)
	first := plain.Plan(at(mid, 0), nil).ServingRegion().Name
	// Bias 50 on the farther region halves its distance: it wins.
	other := "us-east"
	if first == "us-east" {
		other = "us-west"
	}
	for i := range specs {
		if specs[i].Name == other {
			specs[i].Bias = 50
		}
	}
	biased := NewSnapshot(specs, func(*Backend) bool { return true }, 1)
	assert.Equal(t, other, biased.Plan(at(mid, 0), nil).ServingRegion().Name)
	// Bias scales distances, as Route 53's: -99 nearly doubles them. It
	// shrinks a catchment; it does not send London across the Atlantic.
	for i := range specs {
		specs[i].Bias = 0
		if specs[i].Name == "europe-west" {
			specs[i].Bias = -99
		}
	}
	assert.Equal(t, "europe-west", NewSnapshot(specs, func(*Backend) bool { return true }, 1).Plan(at(london, 0), nil).ServingRegion().Name)
}

func TestCapacitySpillsTheSurplusDeterministically(t *testing.T) {
	specs := specsOf(topology())
	load := NewLoad(100, 0)
	for i := range specs {
		if specs[i].Name == "europe-west" {
			specs[i].Load = load
		}
	}
	s := NewSnapshot(specs, func(*Backend) bool { return true }, 1)
	served := func() float64 {
		n := 0
		for k := range 20000 {
			if s.Plan(at(london, uint64(k)*0x9e3779b97f4a7c15), nil).ServingRegion().Name == "europe-west" {
				n++
			}
		}
		return float64(n) / 20000
	}
	assert.Equal(t, 1.0, served())
	load.Wanted.Store(400) // four times its capacity wants it
	assert.InDelta(t, 0.25, served(), 0.02)
	p := s.Plan(at(london, findKeyAt(t, s, london, "us-east")), nil)
	assert.Equal(t, ReasonCapacity, p.Candidates[0].Reason)
	assert.Equal(t, "at capacity: this client goes on to the next region", p.Explain(0))
	assert.Equal(t, 0, p.Wanted, "it wanted europe-west")

	load.Wanted.Store(0)
	rps := NewLoad(0, 1000)
	rps.UpdateRate(4000)
	for i := range specs {
		specs[i].Load = nil
		if specs[i].Name == "europe-west" {
			specs[i].Load = rps
		}
	}
	s = NewSnapshot(specs, func(*Backend) bool { return true }, 1)
	assert.InDelta(t, 0.25, served(), 0.02)

	// Residency wins over capacity: a full allowed region still serves.
	s.Rules = CompileRules([]RuleSpec{euOnly}, []string{"us-east", "us-west", "europe-west"})
	paris := &Client{Point: Point{48.86, 2.35}, Country: "FR", Continent: "EU", Located: true}
	for k := range 200 {
		paris.Key = uint64(k) * 0x9e3779b97f4a7c15
		require.Equal(t, "europe-west", s.Plan(paris, nil).ServingRegion().Name)
	}
}

func findKeyAt(t *testing.T, s *Snapshot, p Point, want string) uint64 {
	t.Helper()
	for k := range 1000 {
		key := uint64(k) * 0x9e3779b97f4a7c15
		if s.Plan(at(p, key), nil).ServingRegion().Name == want {
			return key
		}
	}
	t.Fatalf("no client goes to %s", want)
	return 0
}

func BenchmarkPlanTenRulesTenRegions(b *testing.B) {
	var specs []RegionSpec
	var names []string
	for i := range 10 {
		name := "r" + string(rune('0'+i))
		names = append(names, name)
		specs = append(specs, RegionSpec{Name: name, Location: Point{float64(i*15 - 70), float64(i*35 - 170)},
			Backends: []*Backend{{ID: name, Region: name, Weight: 1}}})
	}
	var rules []RuleSpec
	for i := range 9 {
		rules = append(rules, RuleSpec{Name: "c" + string(rune('0'+i)), Countries: []string{"X" + string(rune('A'+i))},
			Subdivisions: []string{"Y" + string(rune('A'+i)) + "-Z"}, Restrict: true, Allow: names[i : i+1]})
	}
	rules = append(rules, RuleSpec{Name: "eu", Continents: []string{"EU"}, Prefer: names[3:5]})
	s := Build{Specs: specs, Rules: CompileRules(rules, names),
		Backend: func(*Backend) (bool, float64) { return true, 1 }}.Snapshot()
	c := &Client{Point: london, Country: "FR", Continent: "EU", Subdivision: "IDF", Located: true,
		Addr: netip.MustParseAddr("81.2.69.142")}
	buf := make([]Candidate, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		c.Key++
		p := s.Plan(c, buf)
		if p.Serving < 0 {
			b.Fatal("no region")
		}
	}
}

// A client located without a country (a bare point from an edge, a
// database record without one) matches no country or continent rule: it
// matches the rules for unknown clients, so residency cannot be escaped.
func TestAClientWithoutACountryMatchesOnlyUnknownRules(t *testing.T) {
	s := ruled([]RuleSpec{euOnly, {Name: "nowhere", Unknown: true, Restrict: true}})
	p := s.Plan(&Client{Point: Point{52.52, 13.40}, Located: true}, nil)
	require.NotNil(t, p.Rule)
	assert.Equal(t, "nowhere", p.Rule.Name)
	assert.True(t, p.Rejected)
}
