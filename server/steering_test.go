package server_test

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const euRule = `rules:
  - name: eu-stays-in-eu
    match: {continents: [EU]}
    allow: [europe-west]
`

func TestResidencyHoldsWhenTheOnlyAllowedRegionDiesUnderLoad(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine, top: euRule})
		eu := e.apps["europe-west"]
		require.Equal(t, "europe-west", e.servedBy(london))

		var (
			wg               sync.WaitGroup
			ok, refused, bad atomic.Int32
			stop             = make(chan struct{})
			mu               sync.Mutex
			badAnswers       []string
		)
		for range 4 {
			wg.Go(func() {
				for i := 0; i < 5000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					resp, body := e.get(london, "/")
					switch {
					case resp.StatusCode == http.StatusOK && resp.Header.Get("X-Geoproxy-Region") == "europe-west":
						ok.Add(1)
					case resp.StatusCode == http.StatusServiceUnavailable &&
						body == "geoproxy: this request cannot be served in its jurisdiction now\n" &&
						resp.Header.Get("Retry-After") != "":
						refused.Add(1)
					default:
						bad.Add(1)
						mu.Lock()
						badAnswers = append(badAnswers, resp.Status+" "+resp.Header.Get("X-Geoproxy-Region")+" "+body)
						mu.Unlock()
					}
				}
			})
		}
		time.Sleep(100 * time.Millisecond)
		eu.srv.Close() // the only allowed region dies: listener and connections
		e.waitRegion("europe-west", false)
		require.Eventually(t, func() bool { return refused.Load() > 20 }, 5*time.Second, 10*time.Millisecond)
		close(stop)
		wg.Wait()

		assert.Positive(t, ok.Load())
		assert.Zero(t, bad.Load(), "answers neither from europe-west nor the refusal: %q", badAnswers[:min(3, len(badAnswers))])
		assert.Zero(t, e.apps["us-east"].served.Load(), "no request left the EU")
		assert.Zero(t, e.apps["us-west"].served.Load(), "no request left the EU")
		_, metrics := e.adminGet("/metrics")
		assert.Contains(t, metrics, `geoproxy_residency_rejections_total{rule="eu-stays-in-eu"}`)
		assert.Contains(t, metrics, `geoproxy_rule_matches_total{rule="eu-stays-in-eu"}`)

		// A client outside the rule still fails over as before.
		assert.Equal(t, "us-east", e.servedBy(newYork))
	})
}

func TestResidencyFallbackServesOnlyWhenNoAllowedRegionCan(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine, top: euRule + "    fallback: [us-west]\n"})
		eu := e.apps["europe-west"]
		assert.Equal(t, "europe-west", e.servedBy(london))
		eu.failing.Store(true)
		e.waitRegion("europe-west", false)
		// Not us-east, the nearer: the rule's fallback.
		assert.Equal(t, "us-west", e.servedBy(london))
		code, lookup := e.adminGet("/admin/lookup?ip=" + london)
		require.Equal(t, http.StatusOK, code)
		assert.Contains(t, lookup, `"rule": "eu-stays-in-eu"`)
		assert.Contains(t, lookup, "fallback of rule eu-stays-in-eu: no allowed region can serve")
	})
}

func TestTrustedEdgeHeadersLocateTheClient(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine, trusted: "[127.0.0.0/8]", geoip: "  edge_headers: [cloudflare]\n", top: euRule})
		get := func(headers map[string]string) *http.Response {
			req, err := http.NewRequest(http.MethodGet, e.base+"/", nil)
			require.NoError(t, err)
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			resp, _ := e.do(req)
			return resp
		}
		// The peer (loopback) is a trusted edge: its country wins over
		// the database (New York's address, but DE): the EU rule applies.
		resp := get(map[string]string{"X-Forwarded-For": newYork, "CF-IPCountry": "DE"})
		assert.Equal(t, "europe-west", resp.Header.Get("X-Geoproxy-Region"))
		assert.Equal(t, "DE", e.apps["europe-west"].lastHeaders().Get("X-Country"))
		// Coordinates when sent: Tokyo is nearest us-west.
		resp = get(map[string]string{"CF-IPCountry": "JP", "CF-IPLatitude": "35.68", "CF-IPLongitude": "139.69"})
		assert.Equal(t, "us-west", resp.Header.Get("X-Geoproxy-Region"))
		// Cloudflare's XX (unknown) falls back to the database.
		resp = get(map[string]string{"X-Forwarded-For": newYork, "CF-IPCountry": "XX"})
		assert.Equal(t, "us-east", resp.Header.Get("X-Geoproxy-Region"))
	})
}

func TestEdgeHeadersFromAnUntrustedPeerAreIgnored(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine, trusted: "[10.0.0.0/8]", geoip: "  edge_headers: [cloudflare, cloudfront]\n"})
		req, err := http.NewRequest(http.MethodGet, e.base+"/", nil)
		require.NoError(t, err)
		req.Header.Set("CF-IPCountry", "DE")
		req.Header.Set("CloudFront-Viewer-Country", "FR")
		resp, _ := e.do(req)
		// The loopback peer is not trusted: it is located as itself (a
		// private address: the default location, New York).
		assert.Equal(t, "us-east", resp.Header.Get("X-Geoproxy-Region"))
	})
}

func TestAffinityKeepsAClientOnItsBackendWhileItMayServe(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		second := newApp(t, "europe-west")
		e := start(t, envOpts{engine: engine, extra: map[string][]*app{"europe-west": {second}},
			top:        "affinity: {regions: [europe-west, us-east], cookie: {name: movr, ttl: 10m}}\n" + euRule,
			resilience: "{failback_hold: 0s, slow_start: 0s, degraded_below: 0%}"})
		jar := func(cookie string) (*http.Response, string) {
			req, err := http.NewRequest(http.MethodGet, e.base+"/", nil)
			require.NoError(t, err)
			req.Header.Set("X-Forwarded-For", london)
			if cookie != "" {
				req.Header.Set("Cookie", "other=1; "+cookie)
			}
			return e.do(req)
		}
		resp, _ := jar("")
		set := resp.Header.Get("Set-Cookie")
		require.NotEmpty(t, set, "the first answer sets the cookie")
		assert.Contains(t, set, "; Path=/; Max-Age=600; HttpOnly; SameSite=Lax")
		cookie, _, _ := strings.Cut(set, ";")
		require.True(t, strings.HasPrefix(cookie, "movr="))

		// Every request with it goes to the same backend, and sets nothing.
		before1, before2 := e.apps["europe-west"].served.Load(), second.served.Load()
		for range 20 {
			resp, _ := jar(cookie)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Empty(t, resp.Header.Get("Set-Cookie"))
		}
		d1, d2 := e.apps["europe-west"].served.Load()-before1, second.served.Load()-before2
		assert.True(t, d1 == 20 && d2 == 0 || d1 == 0 && d2 == 20, "all on one backend: %d and %d", d1, d2)

		// Its backend goes down: the cookie is dropped and replaced.
		stuck := e.apps["europe-west"]
		if d2 == 20 {
			stuck = second
		}
		stuck.failing.Store(true)
		require.Eventually(t, func() bool {
			return len(e.srv.Router().Snapshot().Region("europe-west").Healthy) == 1
		}, 5*time.Second, 10*time.Millisecond)
		resp, _ = jar(cookie)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		newCookie, _, _ := strings.Cut(resp.Header.Get("Set-Cookie"), ";")
		assert.NotEqual(t, cookie, newCookie)
		assert.NotEmpty(t, newCookie)

		// A us-east cookie (a New York client's) keeps a client that
		// moves to New York's neighbourhood... but never takes an EU
		// client out of the EU: there it is ignored and replaced.
		req, err := http.NewRequest(http.MethodGet, e.base+"/", nil)
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-For", newYork)
		resp, _ = e.do(req)
		require.Equal(t, "us-east", resp.Header.Get("X-Geoproxy-Region"))
		usCookie, _, _ := strings.Cut(resp.Header.Get("Set-Cookie"), ";")
		require.NotEmpty(t, usCookie)
		resp, _ = jar(usCookie)
		assert.Equal(t, "europe-west", resp.Header.Get("X-Geoproxy-Region"))
		assert.NotEmpty(t, resp.Header.Get("Set-Cookie"))
		// A client no rule holds keeps its region even where another is
		// nearer: Seattle with the us-east cookie stays on us-east.
		req.Header.Set("X-Forwarded-For", seattle)
		req.Header.Set("Cookie", usCookie)
		resp, _ = e.do(req)
		assert.Equal(t, "us-east", resp.Header.Get("X-Geoproxy-Region"))
		assert.Empty(t, resp.Header.Get("Set-Cookie"))
	})
}
