package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/server"
)

// status returns /admin/status.
func (e *env) status() server.Status {
	e.t.Helper()
	code, body := e.adminGet("/admin/status")
	require.Equal(e.t, http.StatusOK, code)
	var st server.Status
	require.NoError(e.t, json.Unmarshal([]byte(body), &st))
	return st
}

// backendStatus returns the status of the backend at url.
func (e *env) backendStatus(url string) server.BackendStatus {
	e.t.Helper()
	for _, r := range e.status().Regions {
		for _, b := range r.Backends {
			if b.URL == url {
				return b
			}
		}
	}
	e.t.Fatalf("no backend %s in /admin/status", url)
	return server.BackendStatus{}
}

func TestBackendAnswering500IsEjectedThoughItPassesItsProbes(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		bad := newApp(t, "europe-west")
		e := start(t, envOpts{engine: engine, extra: map[string][]*app{"europe-west": {bad}},
			resilience: "{failback_hold: 0s, slow_start: 0s, degraded_below: 0%, ejection_time: 1h, max_ejection_time: 1h}"})
		bad.broken.Store(true)

		fails := 0
		for range 200 {
			resp, _ := e.get(london, "/")
			if resp.StatusCode != http.StatusOK {
				fails++
			}
			if e.backendStatus(bad.srv.URL).Status == "ejected" {
				break
			}
		}
		st := e.backendStatus(bad.srv.URL)
		require.Equal(t, "ejected", st.Status, "a backend failing real traffic is ejected")
		assert.Equal(t, "passive health: 5xx", st.Reason)
		assert.Equal(t, 1, st.Ejections)
		require.NotNil(t, st.EjectedUntil)
		assert.WithinDuration(t, time.Now().Add(time.Hour), *st.EjectedUntil, time.Minute)
		// The 500s before the ejection reach clients (500 is not in
		// retry_on_status): the five that eject it, and the few sent while
		// the ejection is written and the routing snapshot rebuilt.
		assert.GreaterOrEqual(t, fails, 5)
		assert.Less(t, fails, 25)

		// Once ejected (and the routing snapshot, rebuilt on the change,
		// published) it gets no traffic, though its probes pass.
		require.Eventually(t, func() bool {
			return len(e.srv.Router().Snapshot().Region("europe-west").Healthy) == 1
		}, 2*time.Second, time.Millisecond)
		before := bad.served.Load()
		for range 20 {
			resp, body := e.get(london, "/")
			require.Equal(t, http.StatusOK, resp.StatusCode, body)
			assert.Equal(t, "europe-west", resp.Header.Get("X-Geoproxy-Region"))
		}
		assert.Equal(t, before, bad.served.Load())
		_, metrics := e.adminGet("/metrics")
		assert.Contains(t, metrics, `geoproxy_backend_ejections_total{backend="`+bad.srv.URL+`",reason="5xx",region="europe-west"} 1`)
		assert.Contains(t, metrics, `geoproxy_backend_up{backend="`+bad.srv.URL+`",region="europe-west"} 0`)
	})
}

func TestEjectedBackendReturnsAfterItsTimeWhenItPasses(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		bad := newApp(t, "europe-west")
		e := start(t, envOpts{engine: engine, extra: map[string][]*app{"europe-west": {bad}},
			resilience: "{failback_hold: 0s, slow_start: 0s, degraded_below: 0%, ejection_time: 500ms, eject_after_5xx: 2}"})
		bad.broken.Store(true)
		require.Eventually(t, func() bool {
			e.get(london, "/")
			return e.backendStatus(bad.srv.URL).Status == "ejected"
		}, 5*time.Second, 5*time.Millisecond)
		bad.broken.Store(false)
		ejectedAt := time.Now()
		require.Eventually(t, func() bool { return e.backendStatus(bad.srv.URL).Status == "healthy" }, 5*time.Second, 10*time.Millisecond)
		assert.GreaterOrEqual(t, time.Since(ejectedAt), 400*time.Millisecond, "not before its ejection time")
		before := bad.served.Load()
		require.Eventually(t, func() bool {
			e.get(london, "/")
			return bad.served.Load() > before
		}, 5*time.Second, 5*time.Millisecond, "it gets traffic again")
		_, metrics := e.adminGet("/metrics")
		assert.Contains(t, metrics, `geoproxy_backend_returns_total{backend="`+bad.srv.URL+`",region="europe-west"} 1`)
	})
}

func TestHangingBackendCostsAtMostThePerTryTimeout(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine,
			resilience: "{failback_hold: 0s, slow_start: 0s, per_try_timeout: 300ms, request_timeout: 2s}"})
		eu := e.apps["europe-west"]
		eu.hanging.Store(true) // accepts, reads, never answers; its probes pass

		start := time.Now()
		resp, body := e.get(london, "/")
		took := time.Since(start)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		assert.Equal(t, "us-east", resp.Header.Get("X-Geoproxy-Region"), "moved on to the next region")
		assert.Less(t, took, 1500*time.Millisecond, "one per-try timeout, then the next backend")
		assert.GreaterOrEqual(t, took, 250*time.Millisecond)

		// Five timeouts in a row eject it: then clients no longer wait.
		for range 4 {
			resp, _ := e.get(london, "/")
			require.Equal(t, http.StatusOK, resp.StatusCode)
		}
		require.Eventually(t, func() bool {
			return e.backendStatus(eu.srv.URL).Status == "ejected"
		}, 2*time.Second, 10*time.Millisecond)
		assert.Equal(t, "passive health: errors", e.backendStatus(eu.srv.URL).Reason)
		start = time.Now()
		resp, _ = e.get(london, "/")
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Less(t, time.Since(start), 200*time.Millisecond)
	})
}

func TestRequestTimeoutBoundsEveryTry(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine,
			resilience: "{failback_hold: 0s, slow_start: 0s, per_try_timeout: 400ms, request_timeout: 600ms, passive_health: false}"})
		for _, a := range e.apps {
			a.hanging.Store(true)
		}
		start := time.Now()
		resp, body := e.get(london, "/")
		took := time.Since(start)
		assert.Equal(t, http.StatusGatewayTimeout, resp.StatusCode, body)
		assert.Equal(t, "geoproxy: the backend did not answer in time\n", body)
		assert.GreaterOrEqual(t, took, 550*time.Millisecond)
		assert.Less(t, took, 1200*time.Millisecond, "600ms in all, not three tries of 400ms")
	})
}

func TestFailbackIsHeldThenRampsUp(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine, resilience: "{failback_hold: 1s, slow_start: 0s}"})
		eu := e.apps["europe-west"]
		eu.failing.Store(true)
		e.waitRegion("europe-west", false)
		require.Equal(t, "us-east", e.servedBy(london))

		eu.failing.Store(false)
		e.waitRegion("europe-west", true)
		back := time.Now()
		// Healthy again, but held back: London stays in us-east.
		assert.Equal(t, "us-east", e.servedBy(london))
		st := e.status()
		var eus server.RegionStatus
		for _, r := range st.Regions {
			if r.Name == "europe-west" {
				eus = r
			}
		}
		assert.Equal(t, "held", eus.State)
		require.NotNil(t, eus.HeldUntil)
		assert.WithinDuration(t, back.Add(time.Second), *eus.HeldUntil, 300*time.Millisecond)
		code, lookup := e.adminGet("/admin/lookup?ip=" + london)
		require.Equal(t, http.StatusOK, code)
		var plan struct {
			Serving string
			Regions []struct{ Name, Reason, Why string }
		}
		require.NoError(t, json.Unmarshal([]byte(lookup), &plan))
		assert.Equal(t, "us-east", plan.Serving)
		assert.Equal(t, "europe-west", plan.Regions[0].Name)
		assert.Equal(t, "held", plan.Regions[0].Reason)
		assert.Contains(t, plan.Regions[0].Why, "held back after failover until")

		// After the hold, London comes back.
		require.Eventually(t, func() bool { return e.servedBy(london) == "europe-west" }, 3*time.Second, 20*time.Millisecond)
		assert.GreaterOrEqual(t, time.Since(back), 900*time.Millisecond)
	})
}

func TestPanicModeSpreadsOverTheNearestRegionWhenAllAreDown(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine, resilience: "{failback_hold: 0s, slow_start: 0s, when_all_down: panic}"})
		for _, a := range e.apps {
			a.failing.Store(true) // probes fail; traffic is still served
		}
		require.Eventually(t, func() bool { return e.srv.Router().Snapshot().Panic }, 5*time.Second, 10*time.Millisecond)
		resp, body := e.get(london, "/")
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		assert.Equal(t, "europe-west", resp.Header.Get("X-Geoproxy-Region"), "the nearest region, healthy or not")
		code, ready := e.adminGet("/readyz")
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, ready, "panic")
		_, metrics := e.adminGet("/metrics")
		assert.Contains(t, metrics, "geoproxy_panic_mode 1")
		assert.Contains(t, metrics, "geoproxy_all_regions_down 1")
		for _, r := range e.status().Regions {
			assert.Equal(t, "panic", r.State)
		}

		e.apps["us-east"].failing.Store(false)
		require.Eventually(t, func() bool {
			_, m := e.adminGet("/metrics")
			return strings.Contains(m, "geoproxy_panic_mode 0")
		}, 3*time.Second, 20*time.Millisecond)
		assert.Equal(t, "us-east", e.servedBy(london), "panic ends when a region is up")
	})
}

func TestDegradedRegionPassesPartOfItsClientsOn(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		extra := []*app{newApp(t, "europe-west"), newApp(t, "europe-west"), newApp(t, "europe-west")}
		e := start(t, envOpts{engine: engine, trusted: "[127.0.0.0/8]", extra: map[string][]*app{"europe-west": extra}})
		for _, a := range extra {
			a.failing.Store(true)
		}
		require.Eventually(t, func() bool {
			return len(e.srv.Router().Snapshot().Region("europe-west").Healthy) == 1
		}, 5*time.Second, 10*time.Millisecond)
		// 1 of 4 healthy is 25%: europe-west keeps 25/72 of its clients,
		// the rest go to us-east. The clients: the 64 London addresses of
		// the test database, each sent the same way every time.
		kept := 0
		for i := range 64 {
			ip := fmt.Sprintf("203.0.113.%d", i)
			first := e.servedBy(ip)
			require.Contains(t, []string{"europe-west", "us-east"}, first)
			for range 2 {
				require.Equal(t, first, e.servedBy(ip), "a client does not bounce between regions")
			}
			if first == "europe-west" {
				kept++
			}
		}
		assert.InDelta(t, 0.25/0.72, float64(kept)/64, 0.2)
		var st server.RegionStatus
		for _, r := range e.status().Regions {
			if r.Name == "europe-west" {
				st = r
			}
		}
		assert.Equal(t, "degraded", st.State)
		assert.InDelta(t, 0.25, st.HealthyShare, 0.001)
		assert.InDelta(t, 0.25/0.72, st.ClientShare, 0.01)
	})
}
