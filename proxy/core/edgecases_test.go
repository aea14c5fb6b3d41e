package core

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/route"
)

var refusedErr = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

// An affinity cookie for a backend of another region than the serving one:
// when that backend fails, the retry goes to the serving region.
func TestStickyFailureRetriesFromTheServingRegion(t *testing.T) {
	b := fixtureWith(t, openCity(t), Options{Affinity: config.Affinity{Regions: []string{"europe-west", "us-east"},
		Cookie: config.Cookie{Name: "a", TTL: time.Hour, Path: "/", SameSite: "lax"}}})
	var d Decision
	b.Decide(&d, netip.MustParseAddr("203.0.113.130"), nil, nil, nil, time.Now()) // New York: us-east
	require.Equal(t, "us-east", d.Plan.ServingRegion().Name)
	eu := d.Snapshot.Region("europe-west").Backends[0]
	b.Stick(&d, []string{"a=" + b.affinity.value[eu.Index]})
	r, be := b.Next(&d)
	require.Same(t, eu, be, "the first attempt goes to the cookie's backend")
	assert.Equal(t, "europe-west", r.Name)
	require.True(t, b.Failed(&d, be, refusedErr, "GET", Progress{}))
	r, be = b.Next(&d)
	require.NotNil(t, be, "the retry goes on from the serving region")
	assert.Equal(t, "us-east", r.Name)
}

// A backend that answered (a retryable status) after an attempt that
// failed to connect: whether another attempt may be made is judged with the
// budget, so that the real answer is not thrown away for a 502.
func TestRetryStatusAfterAFailedConnectRespectsTheBudget(t *testing.T) {
	// A budget of no retry at all but free ones.
	b := fixtureWith(t, openCity(t), Options{RetryOnStatus: []int{503}, RetryBudget: 0.0001})
	london := netip.MustParseAddr("203.0.113.10")
	var be *route.Backend
	var d Decision
	b.Decide(&d, london, nil, nil, nil, time.Now())
	_, be = b.Next(&d)
	require.True(t, b.Failed(&d, be, refusedErr, "GET", Progress{}))
	_, be = b.Next(&d) // free: the first one never connected
	require.NotNil(t, be)
	assert.Nil(t, b.RetryStatus(&d, 503, "GET", false), "no budget for another try: the 503 goes to the client")
}

// Past the request's deadline, a retryable answer goes to the client, and
// a try cut short by the deadline is not held against its backend.
func TestPastTheDeadline(t *testing.T) {
	b := fixtureWith(t, openCity(t), Options{RetryOnStatus: []int{503}, RequestTimeout: time.Second})
	var d Decision
	b.Decide(&d, netip.MustParseAddr("203.0.113.10"), nil, nil, nil, time.Now().Add(-2*time.Second))
	_, be := b.Next(&d)
	require.NotNil(t, be)
	assert.Nil(t, b.RetryStatus(&d, 503, "GET", false))
	assert.False(t, b.Failed(&d, be, os.ErrDeadlineExceeded, "GET", Progress{}))
	assert.True(t, d.OutOfTime)
	code, _ := Failure(&d, os.ErrDeadlineExceeded)
	assert.Equal(t, 504, code)
}

// Panic mode never routes to what an operator took out.
func TestPanicLeavesOutOperatorOverrides(t *testing.T) {
	b := fixtureWith(t, openCity(t), Options{}, "us-west", "europe-west")
	// us-east is the only one up; an operator disables it for maintenance.
	_, err := b.router.store.SetOverride(health.RegionTarget("us-east"), health.Disable, 0, true)
	require.NoError(t, err)
	r, err := NewRouter(b.router.specs, b.router.store, b.log, Shaping{Panic: true})
	require.NoError(t, err)
	s := r.Snapshot()
	require.True(t, s.Panic)
	assert.Empty(t, s.Region("us-east").Healthy, "disabled: not even in panic mode")
	assert.NotEmpty(t, s.Region("europe-west").Healthy)
}
