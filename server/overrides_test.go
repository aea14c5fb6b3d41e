package server_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adminPost sends POST path to the admin listener with the bearer token
// tok ("" for none).
func (e *env) adminPost(path, tok string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.admin+path, nil)
	require.NoError(e.t, err)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := e.client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestDrainLetsRequestsInFlightFinishAndSendsNoNewOnes(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		second := newApp(t, "europe-west")
		e := start(t, envOpts{engine: engine, extra: map[string][]*app{"europe-west": {second}},
			resilience: "{failback_hold: 0s, slow_start: 0s, degraded_below: 0%}"})
		first := e.apps["europe-west"]

		// A streamed answer is in flight on the first backend when it is
		// drained (the stream lasts 300 ms).
		type result struct {
			body string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			for {
				req, _ := http.NewRequest(http.MethodGet, e.base+"/stream", nil)
				req.Header.Set("X-Forwarded-For", london)
				resp, err := e.client.Do(req)
				if err != nil {
					done <- result{err: err}
					return
				}
				body, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if first.served.Load() > 0 || err != nil {
					done <- result{string(body), err}
					return
				}
			}
		}()
		require.Eventually(t, func() bool { return first.served.Load() > 0 }, 5*time.Second, time.Millisecond)
		code, body := e.adminPost("/admin/drain?backend="+first.srv.URL, "")
		require.Equal(t, http.StatusOK, code, body)
		assert.Contains(t, body, `"override": "drain"`)
		st := e.backendStatus(first.srv.URL)
		assert.Contains(t, []string{"draining", "drained"}, st.Status)
		assert.Equal(t, "drain", st.Override)

		r := <-done
		require.NoError(t, r.err, "the request in flight finished")
		assert.Equal(t, "chunk 0\nchunk 1\nchunk 2\n", r.body)

		require.Eventually(t, func() bool {
			return len(e.srv.Router().Snapshot().Region("europe-west").Healthy) == 1
		}, 2*time.Second, time.Millisecond)
		before := first.served.Load()
		for range 20 {
			resp, _ := e.get(london, "/")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "europe-west", resp.Header.Get("X-Geoproxy-Region"))
		}
		assert.Equal(t, before, first.served.Load(), "no new request to a drained backend")
		assert.Equal(t, "drained", e.backendStatus(first.srv.URL).Status)

		// Enabled again: it gets traffic.
		code, _ = e.adminPost("/admin/enable?backend="+first.srv.URL, "")
		require.Equal(t, http.StatusOK, code)
		require.Eventually(t, func() bool {
			e.get(london, "/")
			return first.served.Load() > before
		}, 3*time.Second, 5*time.Millisecond)
		assert.Equal(t, "healthy", e.backendStatus(first.srv.URL).Status)
	})
}

func TestDisableARegionFailsItsClientsOverWithoutAReload(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e := start(t, envOpts{engine: engine})
		code, body := e.adminPost("/admin/disable?region=europe-west", "")
		require.Equal(t, http.StatusOK, code, body)
		require.Eventually(t, func() bool { return e.servedBy(london) == "us-east" }, 2*time.Second, 5*time.Millisecond)
		var eu server_RegionStatus
		for _, r := range e.status().Regions {
			if r.Name == "europe-west" {
				eu = server_RegionStatus{r.State, r.Override}
			}
		}
		assert.Equal(t, server_RegionStatus{"disabled", "disable"}, eu)
		assert.Equal(t, "disabled", e.backendStatus(e.apps["europe-west"].srv.URL).Status)

		// Bad requests name the problem.
		code, body = e.adminPost("/admin/disable?region=mars", "")
		assert.Equal(t, http.StatusBadRequest, code)
		assert.Contains(t, body, `no region \"mars\"`)
		code, body = e.adminPost("/admin/weight?backend="+e.apps["us-east"].srv.URL+"&weight=0", "")
		assert.Equal(t, http.StatusBadRequest, code)
		assert.Contains(t, body, "weight must be 1 to 1000")
		code, _ = e.adminPost("/admin/drain", "")
		assert.Equal(t, http.StatusBadRequest, code)

		code, _ = e.adminPost("/admin/enable?region=europe-west", "")
		require.Equal(t, http.StatusOK, code)
		require.Eventually(t, func() bool { return e.servedBy(london) == "europe-west" }, 2*time.Second, 5*time.Millisecond)
	})
}

type server_RegionStatus struct{ State, Override string }

func TestWeightOverrideShiftsTraffic(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		second := newApp(t, "europe-west")
		e := start(t, envOpts{engine: engine, extra: map[string][]*app{"europe-west": {second}}})
		first := e.apps["europe-west"]
		code, body := e.adminPost("/admin/weight?backend="+second.srv.URL+"&weight=9", "")
		require.Equal(t, http.StatusOK, code, body)
		assert.Equal(t, 9, e.backendStatus(second.srv.URL).WeightOverride)
		require.Eventually(t, func() bool {
			return e.srv.Router().Snapshot().Version > 0 && len(e.srv.Router().Snapshot().Region("europe-west").Healthy) == 2
		}, time.Second, time.Millisecond)
		time.Sleep(50 * time.Millisecond) // the snapshot with the weight is published
		a0, b0 := first.served.Load(), second.served.Load()
		for range 200 {
			resp, _ := e.get(london, "/")
			require.Equal(t, http.StatusOK, resp.StatusCode)
		}
		a, b := first.served.Load()-a0, second.served.Load()-b0
		assert.Greater(t, b, 3*a, "weight 9 against 1: %d and %d", a, b)
	})
}

func TestOverridesSurviveAReloadWhileTheirTargetExists(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "geoproxy.yaml")
	a, b := newApp(t, "europe-west"), newApp(t, "us-east")
	cfg := func(withB bool) string {
		s := "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\naccess_log: false\n" +
			"geoip: {database: ../testdata/geoip2-city.mmdb}\n" +
			"health_check: {interval: 100ms, timeout: 90ms, healthy_threshold: 1, unhealthy_threshold: 1}\n" +
			"regions:\n  - {name: europe-west, location: {lat: 50.45, lon: 3.82}, backends: [{url: \"" + a.srv.URL + "\"}]}\n"
		if withB {
			s += "  - {name: us-east, location: {lat: 33.84, lon: -81.16}, backends: [{url: \"" + b.srv.URL + "\"}]}\n"
		}
		return s
	}
	require.NoError(t, os.WriteFile(path, []byte(cfg(true)), 0o600))
	srv := runYAMLFile(t, path)
	e := &env{t: t, srv: srv, admin: "http://" + srv.AdminAddr().String(), client: &http.Client{Timeout: 5 * time.Second}}
	code, _ := e.adminPost("/admin/drain?backend="+a.srv.URL, "")
	require.Equal(t, http.StatusOK, code)
	code, _ = e.adminPost("/admin/disable?backend="+b.srv.URL, "")
	require.Equal(t, http.StatusOK, code)

	// A reload that keeps a and drops b: a stays drained, b's override goes.
	require.NoError(t, os.WriteFile(path, []byte(cfg(false)+"# v2\n"), 0o600))
	require.True(t, srv.Reload().OK)
	assert.Equal(t, "drain", e.backendStatus(a.srv.URL).Override)
	require.NoError(t, os.WriteFile(path, []byte(cfg(true)+"# v3\n"), 0o600))
	require.True(t, srv.Reload().OK)
	assert.Empty(t, e.backendStatus(b.srv.URL).Override, "b's override went with b")
	assert.Equal(t, "drain", e.backendStatus(a.srv.URL).Override)
}

func TestAdminTokenProtectsChanges(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		tokFile := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(tokFile, []byte("s3cret\n"), 0o600))
		e := start(t, envOpts{engine: engine, top: "", adminExtra: "  token_file: " + tokFile + "\n"})
		for _, path := range []string{"/admin/drain?region=europe-west", "/admin/enable?region=europe-west", "/admin/reload", "/admin/weight?backend=x&weight=2"} {
			code, body := e.adminPost(path, "")
			assert.Equal(t, http.StatusUnauthorized, code, path)
			assert.Contains(t, body, "bearer token")
			code, _ = e.adminPost(path, "wrong")
			assert.Equal(t, http.StatusUnauthorized, code, path)
		}
		code, _ := e.adminPost("/admin/drain?region=europe-west", "s3cret")
		assert.Equal(t, http.StatusOK, code)
		// Reads stay open unless protect_reads.
		code, _ = e.adminGet("/admin/status")
		assert.Equal(t, http.StatusOK, code)
		code, _ = e.adminGet("/metrics")
		assert.Equal(t, http.StatusOK, code)
	})
}

func TestProtectReadsGuardsEveryAdminEndpoint(t *testing.T) {
	t.Setenv("GEOPROXY_TEST_ADMIN_TOKEN", "tok")
	e := start(t, envOpts{engine: "native", adminExtra: "  token_env: GEOPROXY_TEST_ADMIN_TOKEN\n  protect_reads: true\n"})
	code, _ := e.adminGet("/admin/status")
	assert.Equal(t, http.StatusUnauthorized, code)
	req, _ := http.NewRequest(http.MethodGet, e.admin+"/admin/status", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := e.client.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	code, _ = e.adminGet("/readyz")
	assert.Equal(t, http.StatusOK, code, "probes stay open")
	_ = strings.TrimSpace
}
