package core

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/clientip"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/route"
)

// world is a random configuration for the residency property: regions,
// rules, health and ejections, and a balancer over them.
type world struct {
	names []string
	rules []route.RuleSpec
	store *health.Store
	b     *Balancer
}

var (
	testCountries  = []string{"DE", "FR", "US", "CA", "JP", "BR", "AU", "ZA"}
	testContinents = map[string]string{"DE": "EU", "FR": "EU", "US": "NA", "CA": "NA", "JP": "AS", "BR": "SA", "AU": "OC", "ZA": "AF"}
	testNetworks   = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("10.0.0.0/8")}
)

// subset picks a random subset of names, in random order.
func subset(rng *rand.Rand, names []string, min int) []string {
	out := slices.Clone(names)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min+rng.IntN(len(out)-min+1)]
}

func newWorld(t *testing.T, rng *rand.Rand, prev *Router) (*world, *Router) {
	t.Helper()
	w := &world{}
	n := 2 + rng.IntN(5)
	var specs []route.RegionSpec
	var rows []health.BackendSpec
	idx := 0
	for i := range n {
		name := fmt.Sprintf("r%d", i)
		w.names = append(w.names, name)
		spec := route.RegionSpec{Name: name, Location: route.Point{Lat: rng.Float64()*140 - 70, Lon: rng.Float64()*360 - 180},
			Bias: rng.IntN(199) - 99}
		if rng.IntN(4) == 0 {
			spec.Load = route.NewLoad(1+rng.IntN(3), 0)
		}
		for j := range 1 + rng.IntN(3) {
			id := fmt.Sprintf("http://%s-%d", name, j)
			spec.Backends = append(spec.Backends, &route.Backend{ID: id, Region: name, Weight: 1 + rng.IntN(3), Index: idx})
			rows = append(rows, health.BackendSpec{ID: id, Region: name})
			idx++
		}
		specs = append(specs, spec)
	}
	for k := range rng.IntN(5) {
		r := route.RuleSpec{Name: fmt.Sprintf("rule%d", k)}
		switch rng.IntN(4) {
		case 0:
			r.Countries = subset(rng, testCountries, 1)[:1+rng.IntN(2)]
		case 1:
			r.Continents = []string{testContinents[testCountries[rng.IntN(len(testCountries))]]}
		case 2:
			r.Networks = testNetworks[rng.IntN(2):]
		default:
			r.Unknown = true
		}
		if rng.IntN(3) > 0 {
			r.Restrict = true
			r.Allow = subset(rng, w.names, 0)
			rest := []string{}
			for _, name := range w.names {
				if !slices.Contains(r.Allow, name) {
					rest = append(rest, name)
				}
			}
			if len(rest) > 0 && rng.IntN(2) == 0 {
				r.Fallback = subset(rng, rest, 0)
			}
			if len(r.Allow) > 0 && rng.IntN(2) == 0 {
				r.Prefer = subset(rng, r.Allow, 1)
			}
		} else {
			r.Prefer = subset(rng, w.names, 1)
		}
		w.rules = append(w.rules, r)
	}
	store, err := health.NewStore()
	require.NoError(t, err)
	require.NoError(t, store.Sync(rows))
	for _, r := range rows {
		st := []health.Status{health.Healthy, health.Healthy, health.Unhealthy, health.Unknown}[rng.IntN(4)]
		_, _, err := store.SetStatus(r.ID, st, "")
		require.NoError(t, err)
		if rng.IntN(5) == 0 {
			_, _, err := store.Eject(health.Ejection{ID: r.ID, Reason: "5xx", Base: time.Hour, Max: time.Hour, MaxShare: 1})
			require.NoError(t, err)
		}
	}
	w.store = store
	router, err := NewRouter(specs, store, zap.NewNop(), Shaping{
		Rules: route.CompileRules(w.rules, w.names), Panic: rng.IntN(3) == 0,
		DegradedBelow: []float64{0, 0.72}[rng.IntN(2)], FailbackHold: time.Duration(rng.IntN(2)) * time.Minute,
		SlowStart: time.Duration(rng.IntN(2)) * time.Minute, Previous: prev,
	})
	require.NoError(t, err)
	w.b = New(Options{
		Locator: geo.NewLocator(nil, geo.Location{Lat: 1, Lon: 2}, []geo.Override{
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Location: geo.Location{Country: "DE", Continent: "EU", Lat: 52.5, Lon: 13.4}},
			{Prefix: netip.MustParsePrefix("198.51.100.0/25"), Location: geo.Location{Country: "US", Continent: "NA", Lat: 40, Lon: -74}},
		}),
		Resolver: clientip.NewResolver([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
		Router:   router, Metrics: metrics.New(prometheus.NewRegistry(), "test"), Log: zap.NewNop(),
		MaxAttempts: 1 + rng.IntN(10), RetryBudget: 0.2, RetryBudgetMin: 1 + rng.IntN(3),
		Rand:     rng.Uint64,
		Affinity: config.Affinity{Regions: subset(rng, w.names, 0), Cookie: config.Cookie{Name: "a", TTL: time.Hour, Path: "/", SameSite: "lax"}},
	})
	return w, router
}

// ruleFor is the oracle: the first rule that matches, by the spec alone.
func (w *world) ruleFor(loc geo.Location, res geo.Result, addr netip.Addr) *route.RuleSpec {
	for i := range w.rules {
		r := &w.rules[i]
		for _, n := range r.Networks {
			if n.Contains(addr) {
				return r
			}
		}
		if !res.Located() {
			if r.Unknown {
				return r
			}
			continue
		}
		if slices.Contains(r.Countries, loc.Country) || slices.Contains(r.Continents, loc.Continent) {
			return r
		}
	}
	return nil
}

// TestResidencyNeverLeaks: over random regions, rules, health, ejections,
// panic mode, clients, retries and reloads, no attempt ever goes to a
// region its client's rule does not allow, a fallback serves only when no
// allowed region can, and a refused request reaches no region.
func TestResidencyNeverLeaks(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	errs := []error{
		&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED},
		&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET},
		&StatusError{Code: 503},
	}
	clients := []string{"203.0.113.9", "198.51.100.7", "198.51.100.200", "10.1.2.3", "192.0.2.1", "127.0.0.1"}
	var router *Router
	attempts, refused, fellBack := 0, 0, 0
	for n := range 300 {
		var w *world
		w, router = newWorld(t, rng, router) // each world is a reload of the last
		for range 40 {
			addr := netip.MustParseAddr(clients[rng.IntN(len(clients))])
			var d Decision
			w.b.Decide(&d, addr, nil, nil, nil, time.Now())
			if af := w.b.affinity; af != nil && rng.IntN(2) == 0 {
				// An affinity cookie naming any backend, as a client
				// that moved (or forged it) would send.
				if v := af.value[rng.IntN(len(af.value))]; v != "" {
					w.b.Stick(&d, []string{"x=1; a=" + v})
				}
			}
			want := w.ruleFor(d.Location, d.GeoResult, addr)
			if want == nil {
				require.Nil(t, d.Plan.Rule, "world %d: %s matched a rule no spec matches", n, addr)
			} else {
				require.NotNil(t, d.Plan.Rule, "world %d: %s", n, addr)
				require.Equal(t, want.Name, d.Plan.Rule.Name, "world %d: %s", n, addr)
			}
			anyAllowedUp := false
			if want != nil {
				for _, name := range want.Allow {
					anyAllowedUp = anyAllowedUp || d.Snapshot.Region(name).Eligible()
				}
			}
			served := false
			for {
				region, be := w.b.Next(&d)
				if be == nil {
					break
				}
				attempts++
				served = true
				if want != nil && want.Restrict {
					allowed := slices.Contains(want.Allow, region.Name)
					fallback := slices.Contains(want.Fallback, region.Name) && !anyAllowedUp
					require.True(t, allowed || fallback, "world %d: %s (rule %s, allow %v, fallback %v) sent to %s",
						n, addr, want.Name, want.Allow, want.Fallback, region.Name)
					if fallback {
						fellBack++
					}
				}
				if !w.b.Failed(&d, be, errs[rng.IntN(len(errs))], []string{"GET", "POST"}[rng.IntN(2)], Progress{}) {
					break
				}
			}
			if d.Plan.Rejected {
				refused++
				require.False(t, served)
				code, msg := Failure(&d, nil)
				require.Equal(t, 503, code)
				require.Equal(t, MsgResidency, msg)
			}
			w.b.Report(&d, Outcome{Status: 200})
		}
		// Every request ended: nothing is left counted in flight.
		for _, r := range w.b.router.Snapshot().Regions {
			if r.Load != nil {
				require.Zero(t, r.Load.Wanted.Load(), "world %d: region %s", n, r.Name)
			}
		}
		for i := range w.b.regions {
			require.Zero(t, w.b.regions[i].active.Load())
			require.Zero(t, w.b.regions[i].retrying.Load())
		}
	}
	t.Logf("%d attempts checked; %d requests refused, %d attempts on a fallback", attempts, refused, fellBack)
	require.Positive(t, refused)
	require.Positive(t, fellBack)
}
