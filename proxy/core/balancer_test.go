package core

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/clientip"
	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/metrics"
	"github.com/geoproxy/geoproxy/route"
)

// fixture builds a balancer over the three-region layout with db, every
// backend healthy except those of the regions in down.
func fixture(t testing.TB, db *geo.Database, down ...string) *Balancer {
	t.Helper()
	return fixtureWith(t, db, Options{}, down...)
}

// fixtureWith is fixture with o's retry settings.
func fixtureWith(t testing.TB, db *geo.Database, o Options, down ...string) *Balancer {
	t.Helper()
	specs := []route.RegionSpec{
		{Name: "us-east", Location: route.Point{Lat: 33.84, Lon: -81.16}, Backends: []*route.Backend{{ID: "http://e1", Region: "us-east", Weight: 1}}},
		{Name: "us-west", Location: route.Point{Lat: 45.59, Lon: -121.18}, Backends: []*route.Backend{{ID: "http://w1", Region: "us-west", Weight: 1}}},
		{Name: "europe-west", Location: route.Point{Lat: 50.45, Lon: 3.82}, Backends: []*route.Backend{
			{ID: "http://eu1", Region: "europe-west", Weight: 2}, {ID: "http://eu2", Region: "europe-west", Weight: 1}}},
	}
	idx := 0
	for _, s := range specs {
		for _, b := range s.Backends {
			b.Index = idx
			idx++
		}
	}
	store, err := health.NewStore()
	require.NoError(t, err)
	var rows []health.BackendSpec
	for _, s := range specs {
		for _, b := range s.Backends {
			rows = append(rows, health.BackendSpec{ID: b.ID, Region: s.Name})
		}
	}
	require.NoError(t, store.Sync(rows))
	isDown := map[string]bool{}
	for _, d := range down {
		isDown[d] = true
	}
	for _, r := range rows {
		st := health.Healthy
		if isDown[r.Region] {
			st = health.Unhealthy
		}
		_, _, err := store.SetStatus(r.ID, st, "")
		require.NoError(t, err)
	}
	router, err := NewRouter(specs, store, zap.NewNop(), Shaping{})
	require.NoError(t, err)
	o.Locator = geo.NewLocator(db, geo.Location{Lat: 40.71, Lon: -74.01}, nil)
	o.Resolver = clientip.NewResolver([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	o.Router = router
	o.Metrics = metrics.New(prometheus.NewRegistry(), "test")
	o.Log = zap.NewNop()
	return New(o)
}

func openCity(t testing.TB) *geo.Database {
	db, err := geo.Open("../../testdata/geoip2-city.mmdb")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestDecideAndNext(t *testing.T) {
	b := fixture(t, openCity(t), "europe-west")
	loopback := netip.MustParseAddr("127.0.0.1")
	var d Decision
	b.Decide(&d, loopback, nil, []string{"203.0.113.10"}, nil, time.Time{}) // London
	assert.Equal(t, "London", d.Location.City)
	assert.Equal(t, geo.ResultFound, d.GeoResult)
	assert.Equal(t, "europe-west", d.Plan.Nearest.Name)

	region, be := b.Next(&d)
	require.NotNil(t, be)
	assert.Equal(t, "us-east", region.Name, "europe-west is down: failover to the next-nearest")
	region, be = b.Next(&d)
	require.NotNil(t, be, "a retry goes on to the next region")
	assert.Equal(t, "us-west", region.Name)
	_, be = b.Next(&d)
	assert.Nil(t, be, "every healthy backend was tried")
	assert.Equal(t, 2, d.Attempts)
}

func TestNextRetriesInsideTheRegionFirst(t *testing.T) {
	b := fixture(t, openCity(t))
	var d Decision
	b.Decide(&d, netip.MustParseAddr("203.0.113.10"), nil, nil, nil, time.Time{})
	r1, b1 := b.Next(&d)
	r2, b2 := b.Next(&d)
	r3, _ := b.Next(&d)
	assert.Equal(t, "europe-west", r1.Name)
	assert.Equal(t, "europe-west", r2.Name)
	assert.NotSame(t, b1, b2)
	assert.Equal(t, "us-east", r3.Name)
}

func TestNoRegionNoBackend(t *testing.T) {
	b := fixture(t, openCity(t), "us-east", "us-west", "europe-west")
	var d Decision
	b.Decide(&d, netip.MustParseAddr("203.0.113.10"), nil, nil, nil, time.Time{})
	assert.Equal(t, -1, d.Plan.Serving)
	_, be := b.Next(&d)
	assert.Nil(t, be)
}

func TestDecisionDoesNotAllocate(t *testing.T) {
	db, err := geo.Open("")
	require.NoError(t, err)
	defer db.Close()
	b := fixture(t, db)
	peer := netip.MustParseAddr("127.0.0.1")
	xff := []string{"81.2.69.142"}
	var d Decision
	b.Decide(&d, peer, nil, xff, nil, time.Time{}) // warm the geo cache
	allocs := testing.AllocsPerRun(500, func() {
		b.Decide(&d, peer, nil, xff, nil, time.Time{})
		b.Next(&d)
	})
	assert.Zero(t, allocs)
}

// BenchmarkDecision is the routing decision of one request: trusted
// X-Forwarded-For to client address, embedded-database lookup, region plan
// and backend pick.
func BenchmarkDecision(b *testing.B) {
	db, err := geo.Open("")
	require.NoError(b, err)
	defer db.Close()
	bal := fixture(b, db)
	peer := netip.MustParseAddr("127.0.0.1")
	rng := rand.New(rand.NewPCG(1, 1))
	xffs := make([][]string, 512)
	for i := range xffs {
		// Public unicast space, spread over many countries.
		a := netip.AddrFrom4([4]byte{byte(1 + rng.IntN(222)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
		xffs[i] = []string{a.String()}
	}
	var d Decision
	for _, x := range xffs {
		bal.Decide(&d, peer, nil, x, nil, time.Time{})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		bal.Decide(&d, peer, nil, xffs[i%len(xffs)], nil, time.Time{})
		bal.Next(&d)
		i++
	}
}

// The one rule of what follows a failed attempt, for every engine.
func TestFailedDecidesWhatFollows(t *testing.T) {
	b := fixture(t, nil)
	be := &route.Backend{ID: "http://a", Region: "r"}
	var d Decision
	refused := &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	reset := &net.OpError{Op: "read", Err: syscall.ECONNRESET}
	for _, c := range []struct {
		name   string
		err    error
		method string
		p      Progress
		want   bool
	}{
		{"refused POST: it never left", refused, "POST", Progress{}, true},
		{"reset GET: idempotent", reset, "GET", Progress{}, true},
		{"reset POST: it may have been acted on", reset, "POST", Progress{}, false},
		{"part of the answer sent", reset, "GET", Progress{Answered: true}, false},
		{"streamed body read", reset, "PUT", Progress{BodySpent: true}, false},
		{"client gone", reset, "GET", Progress{ClientGone: true}, false},
		{"shutting down", reset, "GET", Progress{Stopping: true}, false},
	} {
		assert.Equal(t, c.want, b.Failed(&d, be, c.err, c.method, c.p), c.name)
	}
}

func TestRetriesStayWithinTheRegionsBudget(t *testing.T) {
	b := fixtureWith(t, openCity(t), Options{RetryBudget: 0.2, RetryBudgetMin: 1})
	london := netip.MustParseAddr("203.0.113.10")
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

	// Ten requests in flight in europe-west: 20% allows two retries there.
	ds := make([]Decision, 10)
	for i := range ds {
		b.Decide(&ds[i], london, nil, nil, nil, time.Now())
		r, be := b.Next(&ds[i])
		require.NotNil(t, be)
		require.Equal(t, "europe-west", r.Name)
	}
	retried := 0
	for i := range ds {
		require.True(t, b.Failed(&ds[i], ds[i].tried[0], reset, "GET", Progress{}))
		if _, be := b.Next(&ds[i]); be != nil {
			retried++
		}
	}
	assert.Equal(t, 2, retried, "a reset of each of ten requests makes two retries, not ten")
	var m dto.Metric
	require.NoError(t, b.regions[2].exhausted.Write(&m))
	assert.Equal(t, 8.0, m.GetCounter().GetValue(), "geoproxy_retry_budget_exhausted_total")

	// When those requests end, their budget is back.
	for i := range ds {
		b.Report(&ds[i], Outcome{Status: 502})
	}
	assert.Zero(t, b.regions[2].active.Load())
	assert.Zero(t, b.regions[2].retrying.Load())

	// A failed connect cost the backend nothing: its retry needs no budget.
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for i := range ds {
		b.Decide(&ds[i], london, nil, nil, nil, time.Now())
		_, be := b.Next(&ds[i])
		require.NotNil(t, be)
	}
	for i := range ds {
		require.True(t, b.Failed(&ds[i], ds[i].tried[0], refused, "GET", Progress{}))
		_, be := b.Next(&ds[i])
		assert.NotNil(t, be, "request %d", i)
	}
}

func TestTryTimeoutKeepsWithinTheRequestTimeout(t *testing.T) {
	b := fixtureWith(t, openCity(t), Options{PerTryTimeout: 2 * time.Second, RequestTimeout: 5 * time.Second})
	var d Decision
	start := time.Now()
	b.Decide(&d, netip.MustParseAddr("203.0.113.10"), nil, nil, nil, start)
	assert.Equal(t, 2*time.Second, b.TryTimeout(&d, start))
	assert.Equal(t, time.Second, b.TryTimeout(&d, start.Add(4*time.Second)), "what is left of the request's time")
	assert.Equal(t, time.Nanosecond, b.TryTimeout(&d, start.Add(6*time.Second)), "none left: fail at once")

	// Out of time, no further attempt; the answer is 504.
	_, be := b.Next(&d)
	require.NotNil(t, be)
	d.Start = time.Now().Add(-6 * time.Second)
	_, be = b.Next(&d)
	assert.Nil(t, be)
	assert.True(t, d.OutOfTime)
	code, msg := Failure(&d, nil)
	assert.Equal(t, 504, code)
	assert.Equal(t, MsgTimeout, msg)
}
