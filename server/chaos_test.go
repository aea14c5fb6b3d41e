package server_test

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// The chaos suite: geoproxy in front of three regions of two backends
// each, under a steady GET load from clients placed in every region, while
// backends fail in five ways, on every engine. It measures what the
// clients saw (failed and slow GETs), how long the proxy took to take the
// failing backends out of rotation and to bring them back, and how many
// requests still reached them meanwhile. Loopback only, real sockets.
//
//	go test ./server -run '^TestChaos$'                 # short: CI, asserts
//	go test ./server -run '^TestChaos$' -chaos.report ../docs/chaos.md -timeout 20m
//
// The second runs longer faults on every engine and path and writes the
// report (docs/chaos.md).

var chaosReport = flag.String("chaos.report", "",
	"run the long chaos suite (longer faults, every engine and path) and write its Markdown report to this file, e.g. ../docs/chaos.md")

// chaosEngine is one engine and path.
type chaosEngine struct {
	name, engine string
	noLoops      bool // proxy.event_loops: -1
}

var (
	chaosNative     = chaosEngine{name: "native", engine: config.EngineNative}
	chaosGoroutines = chaosEngine{name: "native-goroutines", engine: config.EngineNative, noLoops: true}
	chaosNetHTTP    = chaosEngine{name: "nethttp", engine: config.EngineNetHTTP}
)

// chaosSettings are the durations and sizes of one mode.
type chaosSettings struct {
	full      bool
	engines   []chaosEngine
	perRegion int           // clients per region
	pace      time.Duration // between two GETs of a client
	// detectWait bounds the wait for the proxy to take a fault out of
	// rotation; hold is how long the fault stays after that (or after
	// detectWait); returnWait bounds the wait for traffic to come back
	// once the fault is removed; tail is the load kept after it.
	detectWait, hold, returnWait, tail time.Duration
	// flapEvery: the flapping region goes down, and up, every flapEvery;
	// flaps is how many times it goes down.
	flapEvery time.Duration
	flaps     int

	// Configuration.
	interval, probeTimeout                      time.Duration
	ejectionTime, failbackHold, slowStart       time.Duration
	perTryTimeout, requestTimeout, maxEjections time.Duration
}

func chaosShortSettings() chaosSettings {
	return chaosSettings{
		engines:   []chaosEngine{chaosNative, chaosNetHTTP},
		perRegion: 3, pace: 20 * time.Millisecond,
		detectWait: 2500 * time.Millisecond, hold: 500 * time.Millisecond,
		returnWait: 5 * time.Second, tail: 200 * time.Millisecond,
		flapEvery: time.Second, flaps: 2,
		interval: 200 * time.Millisecond, probeTimeout: 150 * time.Millisecond,
		ejectionTime: time.Second, failbackHold: time.Second, slowStart: 500 * time.Millisecond,
		perTryTimeout: 300 * time.Millisecond, requestTimeout: 3 * time.Second, maxEjections: 10 * time.Second,
	}
}

func chaosFullSettings() chaosSettings {
	return chaosSettings{
		full:      true,
		engines:   []chaosEngine{chaosNative, chaosGoroutines, chaosNetHTTP},
		perRegion: 3, pace: 10 * time.Millisecond,
		detectWait: 10 * time.Second, hold: 5 * time.Second,
		returnWait: 30 * time.Second, tail: 2 * time.Second,
		flapEvery: 2 * time.Second, flaps: 5,
		interval: 200 * time.Millisecond, probeTimeout: 150 * time.Millisecond,
		ejectionTime: 2 * time.Second, failbackHold: 2 * time.Second, slowStart: time.Second,
		perTryTimeout: 300 * time.Millisecond, requestTimeout: 3 * time.Second, maxEjections: 30 * time.Second,
	}
}

// slowAfter is the latency past which a GET counts as slow: a GET that
// met a hanging backend and was retried elsewhere takes per_try_timeout
// and one more answer; a second is the slack of a loaded 2-core machine.
func (s chaosSettings) slowAfter() time.Duration { return s.perTryTimeout + time.Second }

// chaosRegions are the regions, each with the subnet its clients dial
// from (127.0.<subnet>.0/24, placed by geoip.overrides in a city near it).
var chaosRegions = []struct {
	name             string
	lat, lon         float64
	subnet           byte
	city, country    string
	cityLat, cityLon float64
}{
	{"us-east", 33.84, -81.16, 10, "New York", "US", 40.71, -74.01},
	{"us-west", 45.59, -121.18, 11, "Seattle", "US", 47.61, -122.33},
	{"europe-west", 50.45, 3.82, 12, "London", "GB", 51.51, -0.13},
}

// chaosCase is one kind of failure.
type chaosCase struct {
	n           int
	slug, title string
	region      string
	bad         []int      // the failing backends, by index in the region
	dead        bool       // the fault kills the backends (else fault)
	fault       chaosFault // what the backends do while failing
	flap        bool       // the region goes down and up, flaps times
}

// wholeRegion: every backend of the region fails, and its clients leave.
func (c chaosCase) wholeRegion() bool { return len(c.bad) == 2 }

var chaosCases = []chaosCase{
	{n: 1, slug: "killed", title: "A region's backends killed, then started again on the same addresses", region: "us-west", bad: []int{0, 1}, dead: true},
	{n: 2, slug: "hang", title: "A backend that takes requests and never answers (its /health answers 200)", region: "europe-west", bad: []int{0}, fault: faultHang},
	{n: 3, slug: "500", title: "A backend that answers 500 to traffic, 200 to /health", region: "us-east", bad: []int{0}, fault: fault500},
	{n: 4, slug: "reset", title: "A backend that resets every third connection", region: "us-west", bad: []int{1}, fault: faultReset},
	{n: 5, slug: "flap", title: "A region that flaps: all its backends down, then up", region: "europe-west", bad: []int{0, 1}, dead: true, flap: true},
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos suite takes tens of seconds")
	}
	s := chaosShortSettings()
	if *chaosReport != "" {
		s = chaosFullSettings()
	}
	began := time.Now()
	var runs []*chaosFigures
	for _, c := range chaosCases {
		t.Run(fmt.Sprintf("%d-%s", c.n, c.slug), func(t *testing.T) {
			for _, eng := range s.engines {
				t.Run(eng.name, func(t *testing.T) {
					f := &chaosFigures{c: c, engine: eng.name}
					runs = append(runs, f)
					runChaos(t, s, eng, c, f)
					for _, msg := range f.checks {
						t.Error(msg)
					}
					t.Log(f.summary(s))
				})
			}
		})
	}
	took := time.Since(began)
	t.Logf("chaos suite: %d runs in %s", len(runs), took.Round(time.Millisecond))
	if *chaosReport != "" {
		require.NoError(t, os.WriteFile(*chaosReport, []byte(chaosMarkdown(s, runs, began, took)), 0o644))
		t.Logf("report written to %s", *chaosReport)
	}
}

// chaosYAML is the proxy's configuration for one run.
func chaosYAML(s chaosSettings, eng chaosEngine, backends map[string][]*chaosBackend) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
engine: %s
geoip:
  database: ../testdata/geoip2-city.mmdb
  default_location: {lat: 40.71, lon: -74.01}
  overrides:
`, eng.engine)
	for _, r := range chaosRegions {
		fmt.Fprintf(&sb, "    - cidr: 127.0.%d.0/24\n      location: {lat: %v, lon: %v, country: %s, city: %s}\n",
			r.subnet, r.cityLat, r.cityLon, r.country, r.city)
	}
	sb.WriteString(chaosSettingsYAML(s, eng))
	sb.WriteString("regions:\n")
	for _, r := range chaosRegions {
		fmt.Fprintf(&sb, "  - name: %s\n    location: {lat: %v, lon: %v}\n    backends:\n", r.name, r.lat, r.lon)
		for _, b := range backends[r.name] {
			fmt.Fprintf(&sb, "      - url: %s\n", b.url)
		}
	}
	return sb.String()
}

// chaosSettingsYAML is the part of the configuration the suite is about.
func chaosSettingsYAML(s chaosSettings, eng chaosEngine) string {
	loops := ""
	if eng.noLoops {
		loops = "  event_loops: -1\n"
	}
	return fmt.Sprintf(`health_check:
  path: /health
  interval: %s
  timeout: %s
  healthy_threshold: 2
  unhealthy_threshold: 2
proxy:
  max_attempts: 3
  retry_on_status: [500, 502, 503, 504]
%sresilience:
  passive_health: true
  eject_after_errors: 5
  eject_after_5xx: 5
  ejection_time: %s
  max_ejection_time: %s
  max_ejected: 50%%
  retry_budget: 20%%
  retry_budget_min: 3
  per_try_timeout: %s
  request_timeout: %s
  failback_hold: %s
  slow_start: %s
  degraded_below: 72%%
  when_all_down: reject
`, s.interval, s.probeTimeout, loops, s.ejectionTime, s.maxEjections, s.perTryTimeout, s.requestTimeout,
		s.failbackHold, s.slowStart)
}

// runChaos runs one case on one engine and fills f.
func runChaos(t *testing.T, s chaosSettings, eng chaosEngine, c chaosCase, f *chaosFigures) {
	backends := map[string][]*chaosBackend{}
	var all []*chaosBackend
	t.Cleanup(func() {
		for _, b := range all {
			b.close()
		}
	})
	for _, r := range chaosRegions {
		for range 2 {
			b, err := newChaosBackend(r.name)
			require.NoError(t, err)
			backends[r.name] = append(backends[r.name], b)
			all = append(all, b)
		}
	}
	var bad []*chaosBackend
	for _, i := range c.bad {
		bad = append(bad, backends[c.region][i])
	}

	srv := runYAML(t, chaosYAML(s, eng, backends), server.Options{})
	require.True(t, waitUntil(5*time.Second, func() bool {
		snap := srv.Router().Snapshot()
		n := 0
		for i := range snap.Regions {
			n += len(snap.Regions[i].Healthy)
		}
		return n == len(all)
	}), "every backend healthy before the load starts")

	w := startChaosWatcher(srv)
	load := startChaosLoad("http://"+srv.ProxyAddr().String()+"/chaos", s.perRegion, s.pace)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		for _, b := range all {
			b.setFault(faultNone) // hanging requests get their answer
		}
		load.stop()
		w.stop()
	}
	defer stop()

	// Warm-up: every client has had answers from its own region.
	require.True(t, waitUntil(10*time.Second, func() bool {
		for _, cl := range load.clients {
			if cl.home.Load() < 3 {
				return false
			}
		}
		return true
	}), "every client served by its nearest region before the fault")

	inject := func() {
		for _, b := range bad {
			if c.dead {
				b.kill()
			} else {
				b.setFault(c.fault)
			}
		}
	}
	restore := func() {
		for _, b := range bad {
			if c.dead {
				require.NoError(t, b.revive())
			} else {
				b.setFault(faultNone)
			}
		}
	}
	var windows []chaosWindow
	if c.flap {
		for k := range s.flaps {
			win := chaosWindow{down: time.Now()}
			inject()
			time.Sleep(s.flapEvery)
			win.up = time.Now()
			restore()
			windows = append(windows, win)
			if k < s.flaps-1 {
				time.Sleep(s.flapEvery)
			}
		}
	} else {
		win := chaosWindow{down: time.Now()}
		inject()
		waitUntil(s.detectWait, func() bool {
			o, ok := w.latest()
			return ok && o.at.After(win.down) && allOut(o, bad)
		})
		time.Sleep(s.hold) // the fault stays on while the leak is counted
		win.up = time.Now()
		restore()
		windows = append(windows, win)
	}
	last := windows[len(windows)-1].up
	waitUntil(s.returnWait, func() bool {
		for _, b := range bad {
			if len(b.arrivalsSince(last)) > 0 {
				return true
			}
		}
		return false
	})
	if c.wholeRegion() {
		// and until every client of the region is served there again
		waitUntil(s.returnWait-time.Since(last), func() bool {
			for _, cl := range load.clients {
				if cl.region == c.region && cl.homeAt.Load() < last.UnixNano() {
					return false
				}
			}
			return true
		})
	}
	time.Sleep(s.tail)
	stop()

	analyse(f, s, c, load, w.observations(), bad, windows)
	f.ran = true
	check(f, s)
}

// allOut reports whether every backend of bad is out of rotation in o.
func allOut(o chaosObs, bad []*chaosBackend) bool {
	for _, b := range bad {
		if !isOut(o, b.url) {
			return false
		}
	}
	return true
}

// isOut: out of the routing snapshot, or shown out in /admin/status
// (however old the reading; see timelineOf for the exact rule).
func isOut(o chaosObs, url string) bool { return !o.routed[url] || adminOut(o, url) }

// adminOut: /admin/status shows the backend other than healthy, or
// ejected.
func adminOut(o chaosObs, url string) bool {
	st := o.status[url]
	return (st != "" && st != "healthy") || o.ejected[url]
}

// check turns the figures into the assertions a user would notice.
func check(f *chaosFigures, s chaosSettings) {
	fail := func(format string, args ...any) { f.checks = append(f.checks, fmt.Sprintf(format, args...)) }
	if f.failed > 0 {
		fail("%d of %d GETs failed (non-2xx or transport error); first: %s", f.failed, f.sent, strings.Join(f.failures, " | "))
	}
	switch f.c.slug {
	case "hang":
		if f.slow > 0 {
			fail("%d GETs took longer than per_try_timeout + 1s (%s), the longest %s: requests that met the hanging backend were not moved on within per_try_timeout",
				f.slow, s.slowAfter(), f.max.Round(time.Millisecond))
		}
	case "500":
		switch {
		case f.detected == 0:
			fail("the backend answering 500 was never taken out of rotation (within %s of the fault)", s.detectWait)
		case f.after > s.perRegion:
			fail("%d requests reached the backend answering 500 after it was taken out of rotation (at most %d allowed)", f.after, s.perRegion)
		}
	case "killed":
		if f.detected == 0 {
			fail("the killed region was never taken out of rotation (within %s)", s.detectWait)
		}
		if !f.returned {
			fail("the region did not get traffic back within %s of its backends' return", s.returnWait)
		}
	case "flap":
		if !f.returned {
			fail("the region did not get traffic back within %s of its last return", s.returnWait)
		}
	}
	if f.c.wholeRegion() && f.returned && !f.allBack {
		fail("not every client of %s was served there again within %s of its return", f.c.region, s.returnWait)
	}
}
