package core

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geoproxy/geoproxy/geo"
)

// A client gets its burst at once, then its rate; one over it is Limited,
// has no backend, is answered 429 with the wait until its next request,
// and is counted; another client is not affected.
func TestClientRateLimitsEachClient(t *testing.T) {
	b := fixtureWith(t, openCity(t), Options{ClientRate: 2, ClientBurst: 3})
	obs, logs := observer.New(zap.InfoLevel)
	b.log, b.access = zap.New(obs), true
	peer := netip.MustParseAddr("127.0.0.1") // trusted: the client is X-Forwarded-For's
	london, paris := []string{"203.0.113.10"}, []string{"203.0.113.20"}
	now := time.Now()
	var d Decision
	for i := range 3 {
		b.Decide(&d, peer, nil, london, nil, now)
		require.False(t, d.Limited, "request %d is within the burst", i)
		r, be := b.Next(&d)
		require.NotNil(t, be)
		b.Report(&d, Outcome{Status: 200, Region: r, Backend: be})
	}
	b.Decide(&d, peer, nil, london, nil, now.Add(100*time.Millisecond))
	require.True(t, d.Limited)
	assert.Equal(t, "203.0.113.10", d.Client.String())
	assert.Equal(t, 1, d.RetryAfter, "a token comes in 400ms: Retry-After 1")
	assert.Equal(t, -1, d.Plan.Serving)
	assert.False(t, b.HasNext(&d))
	_, be := b.Next(&d)
	assert.Nil(t, be, "never forwarded")
	code, msg := Failure(&d, nil)
	assert.Equal(t, 429, code)
	assert.Equal(t, MsgClientRate, msg)
	b.Report(&d, Outcome{Status: 429})
	line := logs.All()[logs.Len()-1].ContextMap()
	assert.EqualValues(t, 429, line["status"], "the access log has it")
	assert.Equal(t, "203.0.113.10", line["client"])
	assert.Equal(t, "", line["region"])
	assert.Equal(t, 1.0, counterValue(t, b.rateHits))
	assert.Equal(t, 1.0, counterValue(t, b.none.requests[3]), "requests_total{region=\"none\",code=\"4xx\"}")

	b.Decide(&d, peer, nil, paris, nil, now.Add(100*time.Millisecond))
	assert.False(t, d.Limited, "another client has its own bucket")
	b.Report(&d, Outcome{Status: 200})

	// At the rate, a token every 500ms.
	b.Decide(&d, peer, nil, london, nil, now.Add(510*time.Millisecond))
	assert.False(t, d.Limited)
	b.Report(&d, Outcome{Status: 200})
	b.Decide(&d, peer, nil, london, nil, now.Add(520*time.Millisecond))
	assert.True(t, d.Limited)
	b.Report(&d, Outcome{Status: 429})
}

// An IPv6 client is its /64; IPv4 clients are each their own.
func TestClientRateKeysIPv6ByItsSlash64(t *testing.T) {
	b := fixtureWith(t, nil, Options{ClientRate: 1, ClientBurst: 1})
	now := time.Now()
	var d Decision
	b.Decide(&d, netip.MustParseAddr("2001:db8:1:2::1"), nil, nil, nil, now)
	require.False(t, d.Limited)
	b.Decide(&d, netip.MustParseAddr("2001:db8:1:2:ffff::9"), nil, nil, nil, now)
	assert.True(t, d.Limited, "the same /64")
	b.Decide(&d, netip.MustParseAddr("2001:db8:1:3::1"), nil, nil, nil, now)
	assert.False(t, d.Limited, "another /64")
	b.Decide(&d, netip.MustParseAddr("192.0.2.1"), nil, nil, nil, now)
	assert.False(t, d.Limited)
	b.Decide(&d, netip.MustParseAddr("192.0.2.2"), nil, nil, nil, now)
	assert.False(t, d.Limited)
	b.Decide(&d, netip.MustParseAddr("::ffff:192.0.2.1"), nil, nil, nil, now)
	assert.True(t, d.Limited, "a mapped IPv4 address is the IPv4 client")
}

// Off, nothing is kept and nothing is limited.
func TestClientRateOff(t *testing.T) {
	b := fixture(t, nil)
	require.Nil(t, b.rate)
	var d Decision
	for range 100 {
		b.Decide(&d, netip.MustParseAddr("192.0.2.1"), nil, nil, nil, time.Now())
		require.False(t, d.Limited)
	}
}

// The Retry-After is the wait for a token, rounded up to whole seconds.
func TestClientRateRetryAfter(t *testing.T) {
	r := newClientRate(0.1, 1, 64) // a request every 10 s
	c := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	ok, _ := r.allow(c, now)
	require.True(t, ok)
	ok, wait := r.allow(c, now.Add(2500*time.Millisecond))
	require.False(t, ok)
	assert.Equal(t, 7500*time.Millisecond, wait)
	assert.Equal(t, 8, retryAfter(wait))
	assert.Equal(t, 1, retryAfter(time.Nanosecond))
	ok, _ = r.allow(c, now.Add(10*time.Second))
	assert.True(t, ok)
}

// A flood of new addresses keeps no more buckets than the cap; the buckets
// of clients over their rate survive it while there are full ones to drop.
func TestClientRateStateIsBounded(t *testing.T) {
	const clients = 256
	r := newClientRate(1, 1, clients)
	now := time.Now()
	heavy := netip.MustParseAddr("198.51.100.7")
	ok, _ := r.allow(heavy, now)
	require.True(t, ok)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
		// Spoofed clients each send once, a second apart: their buckets
		// are full again by the time the next ones come.
		_, _ = r.allow(a, now.Add(time.Duration(i/1000)*time.Second))
		require.LessOrEqual(t, r.size(), clients)
	}
	// All at the same instant: every bucket is in use, the cap holds.
	for range 10_000 {
		a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
		_, _ = r.allow(a, now.Add(200*time.Second))
	}
	assert.LessOrEqual(t, r.size(), clients)
}

// With the limit on, a decision still allocates nothing once the client's
// bucket exists.
func TestDecisionWithClientRateDoesNotAllocate(t *testing.T) {
	db, err := geo.Open("")
	require.NoError(t, err)
	defer db.Close()
	b := fixtureWith(t, db, Options{ClientRate: 1e9, ClientBurst: 1000})
	peer := netip.MustParseAddr("127.0.0.1")
	xff := []string{"81.2.69.142"}
	var d Decision
	b.Decide(&d, peer, nil, xff, nil, time.Now())
	allocs := testing.AllocsPerRun(500, func() {
		b.Decide(&d, peer, nil, xff, nil, time.Now())
		b.Next(&d)
		b.Report(&d, Outcome{Status: 200})
	})
	assert.Zero(t, allocs)
}

// BenchmarkDecisionClientRate is BenchmarkDecision with the per-client rate
// limit on (every request within it), over the same 512 clients.
func BenchmarkDecisionClientRate(b *testing.B) {
	db, err := geo.Open("")
	require.NoError(b, err)
	defer db.Close()
	bal := fixtureWith(b, db, Options{ClientRate: 1e9, ClientBurst: 1000})
	peer := netip.MustParseAddr("127.0.0.1")
	rng := rand.New(rand.NewPCG(1, 1))
	xffs := make([][]string, 512)
	for i := range xffs {
		a := netip.AddrFrom4([4]byte{byte(1 + rng.IntN(222)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
		xffs[i] = []string{a.String()}
	}
	var d Decision
	now := time.Now() // the engines pass a time they have read already
	for _, x := range xffs {
		bal.Decide(&d, peer, nil, x, nil, now)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		bal.Decide(&d, peer, nil, xffs[i%len(xffs)], nil, now.Add(time.Duration(i)*time.Microsecond))
		bal.Next(&d)
		i++
	}
}

// BenchmarkClientRateParallel is the rate limit alone, from every P at
// once, over many clients.
func BenchmarkClientRateParallel(b *testing.B) {
	r := newClientRate(1e9, 1000, rateClients)
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			a := netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(16)), byte(rng.IntN(256))})
			r.allow(a, time.Now())
		}
	})
}

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

// A reload with the same rate and burst keeps each client's bucket: the
// new balancer does not hand out fresh bursts. With other settings it
// starts afresh.
func TestClientRateCarriesOverAReload(t *testing.T) {
	db := openCity(t)
	old := fixtureWith(t, db, Options{ClientRate: 1, ClientBurst: 2})
	peer := netip.MustParseAddr("127.0.0.1")
	london := []string{"203.0.113.10"}
	now := time.Now()
	var d Decision
	for range 2 {
		old.Decide(&d, peer, nil, london, nil, now)
		require.False(t, d.Limited)
		old.Report(&d, Outcome{Status: 200})
	}
	same := fixtureWith(t, db, Options{ClientRate: 1, ClientBurst: 2, Previous: old})
	same.Decide(&d, peer, nil, london, nil, now)
	assert.True(t, d.Limited, "the burst was spent before the reload")
	same.Report(&d, Outcome{Status: 429})

	other := fixtureWith(t, db, Options{ClientRate: 1, ClientBurst: 5, Previous: same})
	other.Decide(&d, peer, nil, london, nil, now)
	assert.False(t, d.Limited, "another burst: buckets start afresh")
	other.Report(&d, Outcome{Status: 200})
}
