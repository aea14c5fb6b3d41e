//go:build unix

package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// dashClients are real addresses the embedded geo database places in
// these countries, and the region each goes to while all are up.
var dashClients = []struct{ ip, country, region string }{
	{"81.2.69.142", "GB", "europe-west"},
	{"193.99.144.80", "DE", "europe-west"},
	{"128.95.1.1", "US", "us-west"},
	{"133.11.0.1", "JP", "us-west"},
	{"128.122.0.1", "US", "us-east"},
	{"200.147.67.142", "BR", "us-east"},
}

// dashApp is a regional app instance whose /health can be made to fail.
type dashApp struct {
	region  string
	failing atomic.Bool
	srv     *httptest.Server
}

func (a *dashApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" && a.failing.Load() {
		http.Error(w, "failing", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, a.region+" ok\n")
}

// dashServer starts geoproxy in front of apps, its admin listener at
// admin, with the embedded geo database; it is shut down when the test
// ends unless stopped before.
func dashServer(t *testing.T, apps []*dashApp, admin string) (*server.Server, func()) {
	t.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, `listen: 127.0.0.1:0
admin:
  listen: %s
geoip:
  database: ""
  trusted_proxies: [127.0.0.0/8]
  default_location: {lat: 40.71, lon: -74.01}
health_check:
  path: /health
  interval: 250ms
  timeout: 200ms
  healthy_threshold: 2
  unhealthy_threshold: 2
resilience: {failback_hold: 0s, slow_start: 0s}
regions:
`, admin)
	at := map[string]string{"us-east": "33.84, lon: -81.16", "us-west": "45.59, lon: -121.18", "europe-west": "50.45, lon: 3.82"}
	for _, a := range apps {
		fmt.Fprintf(&sb, "  - name: %s\n    location: {lat: %s}\n    backends:\n      - url: %s\n", a.region, at[a.region], a.srv.URL)
	}
	cfg, err := config.Parse("dashboard.yaml", []byte(sb.String()))
	require.NoError(t, err)
	srv, err := server.New(server.Options{Config: cfg, Log: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), Version: "dashboard-test"})
	require.NoError(t, err)
	require.NoError(t, srv.Start(context.Background()))
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			assert.NoError(t, srv.Shutdown(ctx))
		})
	}
	t.Cleanup(stop)
	return srv, stop
}

// sendTraffic sends requests from every dashClients address, about 30 a
// second each, until the returned function is called.
func sendTraffic(t *testing.T, proxy string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 2 * time.Second}
	wg.Go(func() {
		tick := time.NewTicker(33 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(2 * time.Minute) // bounded, whatever happens
		for {
			for _, c := range dashClients {
				req, _ := http.NewRequest(http.MethodGet, proxy+"/", nil)
				req.Header.Set("X-Forwarded-For", c.ip)
				if resp, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			select {
			case <-done:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			client.CloseIdleConnections()
		})
	}
	t.Cleanup(stop)
	return stop
}

// dashState is what the dashboard shows, read from its DOM.
type dashState struct {
	Conn        string `json:"conn"`
	Offline     bool   `json:"offline"`
	Filter      string `json:"filter"`
	Banner      string `json:"banner"`
	Meta        string `json:"meta"`
	Config      string `json:"config"`
	Fresh       string `json:"fresh"`
	Attribution string `json:"attribution"`
	Links       []string
	Summary     map[string]string `json:"summary"`
	Countries   int               `json:"countries"`
	Regions     []struct {
		Name     string            `json:"name"`
		State    string            `json:"state"`
		Pin      string            `json:"pin"`
		Stats    map[string]string `json:"stats"`
		Text     string            `json:"text"`
		Backends []struct {
			Status string `json:"status"`
			Since  string `json:"since"`
		} `json:"backends"`
	} `json:"regions"`
	Flows []struct {
		Country  string `json:"country"`
		From     string `json:"from"`
		To       string `json:"to"`
		Failover bool   `json:"failover"`
	} `json:"flows"`
	FlowRows []string `json:"flowRows"`
	Plan     string   `json:"plan"`
	Steps    []struct {
		Region string `json:"region"`
		Reason string `json:"reason"`
		Serves bool   `json:"serves"`
	} `json:"steps"`
}

const readDashboard = `(() => {
  const q = s => document.querySelector(s), all = s => [...document.querySelectorAll(s)];
  const txt = e => e ? e.textContent.replace(/\s+/g, " ").trim() : "";
  if (!q("#page") || !q("footer")) return JSON.stringify({conn: "not loaded"});
  return JSON.stringify({
    conn: document.body.dataset.conn,
    offline: document.body.classList.contains("offline"),
    filter: getComputedStyle(q("#page")).filter,
    banner: q("#banner").hidden ? "" : txt(q("#banner")),
    meta: txt(q("#meta")), config: txt(q("#config")), fresh: txt(q("#fresh")),
    attribution: txt(q("#attribution")), Links: all("#attribution a").map(a => a.href),
    summary: Object.fromEntries(all("#summary b[data-k]").map(b => [b.dataset.k, b.textContent])),
    countries: all("#countries path").length,
    regions: all(".region").map(r => {
      const pin = q("#pin-" + r.id.slice("region-".length));
      return {name: r.id.slice("region-".length), state: r.dataset.state, pin: pin ? pin.dataset.state : "",
        stats: Object.fromEntries([...r.querySelectorAll("dd[data-k]")].map(d => [d.dataset.k, d.textContent])),
        text: txt(r),
        backends: [...r.querySelectorAll("tr.backend")].map(b => ({status: b.dataset.status, since: txt(b.querySelector(".since"))}))};
    }),
    flows: all("#flows path.flow").map(p => ({country: p.dataset.country, from: p.dataset.from, to: p.dataset.to, failover: p.classList.contains("failover")})),
    flowRows: all("#flowlist tr[data-to]").map(tr => [...tr.cells].map(txt).join(" ")),
    plan: q("#plan").hidden ? "" : txt(q("#plan")),
    steps: all("#plan li").map(li => ({region: li.dataset.region, reason: li.dataset.reason, serves: li.classList.contains("serves")})),
  });
})()`

func (b *browser) state() dashState {
	b.t.Helper()
	var raw string
	b.eval(readDashboard, &raw)
	var s dashState
	require.NoError(b.t, json.Unmarshal([]byte(raw), &s))
	return s
}

// waitFor polls the page until ok says its state is the one wanted.
func (b *browser) waitFor(what string, within time.Duration, ok func(dashState) bool) dashState {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := b.state()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			out, _ := json.MarshalIndent(s, "", "  ")
			b.t.Fatalf("the dashboard did not show %s within %s; it shows:\n%s", what, within, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s dashState) region(name string) (state, pin string, stats map[string]string, text string) {
	for _, r := range s.Regions {
		if r.Name == name {
			return r.State, r.Pin, r.Stats, r.Text
		}
	}
	return "", "", nil, ""
}

// perSecond reads a rate the page shows ("12", "0.4/s", "…").
func perSecond(v string) float64 {
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "/s"), 64)
	if err != nil {
		return -1
	}
	return f
}

func (s dashState) hasFlow(country, from, to string, failover bool) bool {
	for _, f := range s.Flows {
		if f.Country == country && f.From == from && f.To == to && f.Failover == failover {
			return true
		}
	}
	return false
}

func (s dashState) flowsTo(region string) int {
	n := 0
	for _, f := range s.Flows {
		if f.To == region {
			n++
		}
	}
	return n
}

// TestDashboardInBrowser loads the dashboard from a running geoproxy in
// front of three real regional apps, in headless Chromium, and reads what
// it shows: every region healthy; europe-west's health checks failing;
// geoproxy stopped, and back.
func TestDashboardInBrowser(t *testing.T) {
	chromium := findChromium(t)
	if testing.Short() && os.Getenv(browserTestsEnv) != "1" {
		t.Skip("-short: no browser")
	}
	began := time.Now()
	t.Cleanup(func() {
		t.Logf("browser test, with its set-up and clean-up: %s", time.Since(began).Round(10*time.Millisecond))
	})

	var apps []*dashApp
	byRegion := map[string]*dashApp{}
	for _, name := range []string{"us-east", "us-west", "europe-west"} {
		a := &dashApp{region: name}
		a.srv = httptest.NewServer(a)
		t.Cleanup(a.srv.Close)
		apps = append(apps, a)
		byRegion[name] = a
	}
	srv, stopServer := dashServer(t, apps, "127.0.0.1:0")
	admin := srv.AdminAddr().String()
	require.Eventually(t, func() bool {
		snap := srv.Router().Snapshot()
		for i := range snap.Regions {
			if !snap.Regions[i].Eligible() {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "every region becomes healthy")
	stopTraffic := sendTraffic(t, "http://"+srv.ProxyAddr().String())

	const width = 1280
	b := launchBrowser(t, chromium, width, 1000)
	b.navigate("http://" + admin + "/?refresh=0.5")

	// 1. Every region healthy, and traffic from six places.
	s := b.waitFor("every region up, with rates and flows", 20*time.Second, func(s dashState) bool {
		if len(s.Regions) != 3 || s.Conn != "ok" {
			return false
		}
		for _, r := range s.Regions {
			if r.State != "up" || r.Pin != "up" || perSecond(r.Stats["rps"]) <= 0 || r.Stats["p50"] == "—" || r.Stats["fo-out"] != "0/s" {
				return false
			}
		}
		for _, c := range dashClients {
			if !s.hasFlow(c.country, c.region, c.region, false) {
				return false
			}
		}
		for _, f := range s.Flows {
			if f.Failover {
				return false
			}
		}
		return true
	})
	assert.Empty(t, s.Banner)
	assert.False(t, s.Offline)
	assert.Equal(t, "none", s.Filter, "not greyed out")
	assert.Contains(t, s.Meta, "version dashboard-test")
	assert.Contains(t, s.Meta, "geo data: compact-city")
	assert.Contains(t, s.Config, "generation 1")
	assert.Contains(t, s.Fresh, "data of ")
	assert.Contains(t, s.Attribution, "IP Geolocation by DB-IP")
	assert.Contains(t, s.Attribution, "CC BY 4.0")
	assert.Contains(t, s.Attribution, "the data was modified by geoproxy")
	assert.Contains(t, s.Links, "https://db-ip.com/")
	assert.Greater(t, s.Countries, 150, "the world map's countries")
	assert.Equal(t, "3 of 3", s.Summary["up"])
	assert.Greater(t, perSecond(s.Summary["rps"]), 0.0)
	for _, r := range s.Regions {
		assert.Equal(t, "0%", r.Stats["err"], r.Name)
		assert.NotEqual(t, "—", r.Stats["p99"], r.Name)
		require.Len(t, r.Backends, 1, r.Name)
		assert.Equal(t, "healthy", r.Backends[0].Status, r.Name)
		assert.Regexp(t, `^\d+s$`, r.Backends[0].Since, "%s: how long it has been healthy", r.Name)
	}

	// The lookup box: a plan in words.
	b.eval(`document.getElementById("ip").value = "81.2.69.142"; document.getElementById("lookup").requestSubmit()`, nil)
	s = b.waitFor("London's plan", 10*time.Second, func(s dashState) bool { return strings.Contains(s.Plan, "Served by europe-west") })
	assert.Contains(t, s.Plan, "81.2.69.142 is in United Kingdom (GB), Europe")
	assert.Contains(t, s.Plan, "located by the geo database")
	assert.Contains(t, s.Plan, "No rule matches")
	assert.NotContains(t, s.Plan, "{", "not JSON")
	require.Len(t, s.Steps, 3)
	assert.Equal(t, "europe-west", s.Steps[0].Region)
	assert.Equal(t, "nearest", s.Steps[0].Reason)
	assert.True(t, s.Steps[0].Serves)
	assert.Contains(t, s.Plan, "serves: the nearest region")
	assert.Contains(t, s.Plan, "next, if the regions before fail the request")
	saveScreenshot(t, "healthy.png", b.screenshot(width))

	// 2. europe-west's health checks fail: it shows down, and its clients'
	// flows go to us-east, marked as failover.
	byRegion["europe-west"].failing.Store(true)
	s = b.waitFor("europe-west down, its clients served by us-east", 20*time.Second, func(s dashState) bool {
		state, pin, stats, _ := s.region("europe-west")
		_, _, east, _ := s.region("us-east")
		return state == "down" && pin == "down" && stats["rps"] == "0" && perSecond(stats["fo-out"]) > 0 &&
			perSecond(east["fo-in"]) > 0 && s.flowsTo("europe-west") == 0 &&
			s.hasFlow("GB", "europe-west", "us-east", true) && s.hasFlow("DE", "europe-west", "us-east", true) &&
			strings.Contains(s.Plan, "Served by us-east")
	})
	_, _, _, text := s.region("europe-west")
	assert.Contains(t, text, "0/1 healthy")
	assert.Contains(t, text, "unhealthy")
	assert.Equal(t, "2 of 3", s.Summary["up"])
	assert.Greater(t, perSecond(s.Summary["failover"]), 0.0, "served elsewhere")
	for _, c := range dashClients {
		if c.region != "europe-west" {
			assert.True(t, s.hasFlow(c.country, c.region, c.region, false), "%s still served by %s", c.ip, c.region)
		}
	}
	assert.Contains(t, strings.Join(s.FlowRows, "\n"), "GB → us-east failing over from europe-west")
	assert.Equal(t, "europe-west", s.Steps[0].Region)
	assert.Equal(t, "unhealthy", s.Steps[0].Reason)
	assert.Contains(t, s.Plan, "skipped: no healthy backend")
	assert.Contains(t, s.Plan, "serves: failing over (failover: europe-west unhealthy)")
	saveScreenshot(t, "region-down.png", b.screenshot(width))

	// 3. geoproxy stops: a banner, everything greyed out, the last data kept.
	stopTraffic()
	stopServer()
	s = b.waitFor("the banner, greyed out", 10*time.Second, func(s dashState) bool {
		return s.Conn == "offline" && s.Offline && s.Banner != ""
	})
	assert.Contains(t, s.Banner, "Cannot reach geoproxy at "+admin+" since ")
	assert.Contains(t, s.Banner, "the last good data, from ")
	assert.Contains(t, s.Filter, "grayscale(1)")
	state, _, _, _ := s.region("europe-west")
	assert.Equal(t, "down", state, "the last data stays, greyed out")
	assert.Contains(t, s.Plan, "Served by us-east", "the last plan stays too")
	saveScreenshot(t, "offline.png", b.screenshot(width))

	// And back: geoproxy again on the same admin address.
	_, _ = dashServer(t, apps, admin)
	s = b.waitFor("recovery", 10*time.Second, func(s dashState) bool {
		return s.Conn == "ok" && !s.Offline && s.Banner == "" && len(s.Regions) == 3
	})
	assert.Equal(t, "none", s.Filter)

	// An operator drains us-west.
	resp, err := http.Post("http://"+admin+"/admin/drain?region=us-west", "", nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	s = b.waitFor("us-west drained", 10*time.Second, func(s dashState) bool {
		state, pin, _, _ := s.region("us-west")
		return state == "draining" && pin == "draining"
	})
	_, _, _, text = s.region("us-west")
	assert.Contains(t, text, "drained by an operator")
	for _, r := range s.Regions {
		if r.Name == "us-west" {
			require.Len(t, r.Backends, 1)
			assert.Contains(t, []string{"draining", "drained"}, r.Backends[0].Status)
			assert.Regexp(t, `^\d+s$`, r.Backends[0].Since)
		}
	}
	http.DefaultClient.CloseIdleConnections()

	requests, exceptions := b.seen()
	assert.Empty(t, exceptions, "uncaught JavaScript exceptions")
	require.NotEmpty(t, requests)
	for _, u := range requests {
		assert.True(t, strings.HasPrefix(u, "http://"+admin+"/"), "the page asked for %s: only its own admin listener is allowed", u)
	}
}
