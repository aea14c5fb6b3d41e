package server_test

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// chaosWindow is one period of a fault: from its injection (down) to its
// removal (up).
type chaosWindow struct{ down, up time.Time }

// chaosFigures are the results of one case on one engine.
type chaosFigures struct {
	c      chaosCase
	engine string
	ran    bool

	sent, failed, slow int
	failures           []string // the first few
	p50, p99, max      time.Duration
	faultFor           time.Duration
	moves              float64 // region changes per client of the failing region

	windows    int
	detected   int             // windows in which the fault was taken out of rotation
	toDetect   []time.Duration // one per detected window
	detectBy   string
	before     int // requests (dead: failed attempts) to the bad backends before detection
	after      int // ... after detection, while still out of rotation
	readmits   int // times a bad backend came back into rotation during the fault
	readmitted int // requests that reached it then
	upTraffic  int // flap: up periods in which the region got traffic again
	returned   bool
	toReturn   time.Duration
	allBack    bool          // every client of the region served there again (whole-region faults)
	toAllBack  time.Duration // from the last removal of the fault to the last of them

	checks []string
}

// chaosState is a backend's rotation state at an observation.
type chaosState struct {
	at  time.Time
	out bool
}

// timelineOf is the backend's state at every observation: out when it
// is missing from the routing snapshot, or when an admin reading begun
// after the snapshot last changed for it shows it out (an older reading
// may predate the change).
func timelineOf(obs []chaosObs, url string) []chaosState {
	tl := make([]chaosState, 0, len(obs))
	var changed time.Time
	for i, o := range obs {
		if i > 0 && o.routed[url] != obs[i-1].routed[url] {
			changed = o.at
		}
		fresh := !o.readAt.IsZero() && o.readAt.After(changed)
		tl = append(tl, chaosState{at: o.at, out: !o.routed[url] || (fresh && adminOut(o, url))})
	}
	return tl
}

// stateAt is the state last observed at or before t (in rotation when
// nothing was observed yet).
func stateAt(tl []chaosState, t time.Time) bool {
	i := sort.Search(len(tl), func(i int) bool { return tl[i].at.After(t) })
	return i > 0 && tl[i-1].out
}

// lastReadAt is the last admin reading that began at or before t.
func lastReadAt(obs []chaosObs, t time.Time) (chaosObs, bool) {
	var found chaosObs
	ok := false
	for _, o := range obs {
		if o.scraped && !o.readAt.After(t) {
			found, ok = o, true
		}
	}
	return found, ok
}

// analyse computes the figures of one run.
func analyse(f *chaosFigures, s chaosSettings, c chaosCase, load *chaosLoad, obs []chaosObs, bad []*chaosBackend, windows []chaosWindow) {
	// What the clients saw.
	results := load.results()
	f.sent = len(results)
	var lat []time.Duration
	for _, r := range results {
		lat = append(lat, r.took)
		if r.failed() {
			f.failed++
			if len(f.failures) < 3 {
				what := r.err
				if what == "" {
					what = fmt.Sprintf("status %d from %q", r.code, r.region)
				}
				f.failures = append(f.failures, fmt.Sprintf("at +%s after %s: %s",
					r.at.Sub(windows[0].down).Round(time.Millisecond), r.took.Round(time.Millisecond), what))
			}
		}
		if r.took > s.slowAfter() {
			f.slow++
		}
	}
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		f.p50, f.p99, f.max = lat[n/2], lat[min(n-1, n*99/100)], lat[n-1]
	}
	var clients, moves int
	for _, cl := range load.clients {
		if cl.region != c.region {
			continue
		}
		clients++
		prev := ""
		for _, r := range cl.results {
			if r.failed() {
				continue
			}
			if prev != "" && r.region != prev {
				moves++
			}
			prev = r.region
		}
	}
	if clients > 0 {
		f.moves = float64(moves) / float64(clients)
	}

	// What the proxy did.
	tls := make([][]chaosState, len(bad))
	for i, b := range bad {
		tls[i] = timelineOf(obs, b.url)
	}
	allOutAt := func(i int) bool {
		for _, tl := range tls {
			if !tl[i].out {
				return false
			}
		}
		return true
	}
	f.windows = len(windows)
	causes := &chaosCauses{reasons: map[string]bool{}}
	for k, win := range windows {
		f.faultFor += win.up.Sub(win.down)
		detect := -1
		for i, o := range obs {
			if o.at.Before(win.down) {
				continue
			}
			if !o.at.Before(win.up) {
				break
			}
			if allOutAt(i) {
				detect = i
				break
			}
		}
		end := win.up
		if detect >= 0 {
			f.detected++
			f.toDetect = append(f.toDetect, obs[detect].at.Sub(win.down))
			end = obs[detect].at
			causes.detectedBy(obs, detect, win.down, bad)
		}
		for i, b := range bad {
			if c.dead {
				f.before += int(errorsBetween(obs, b.url, win.down, end))
				if detect >= 0 {
					f.after += int(errorsWhileOut(obs, tls[i], b.url, end, win.up))
				}
			} else {
				for _, at := range b.arrivalsSince(win.down) {
					switch {
					case at.After(win.up):
					case !at.After(end):
						f.before++
					case stateAt(tls[i], at):
						f.after++
					default:
						f.readmitted++
					}
				}
			}
			if detect >= 0 {
				out := true
				for _, st := range tls[i][detect:] {
					if st.at.After(win.up) {
						break
					}
					if out && !st.out {
						f.readmits++
					}
					out = st.out
				}
			}
		}
		if c.flap && k+1 < len(windows) {
			for _, b := range bad {
				if a := b.arrivalsSince(win.up); len(a) > 0 && a[0].Before(windows[k+1].down) {
					f.upTraffic++
					break
				}
			}
		}
	}
	f.detectBy = causes.String()
	last := windows[len(windows)-1].up
	if c.wholeRegion() {
		f.allBack = true
		for _, cl := range load.clients {
			if cl.region != c.region {
				continue
			}
			back := false
			for _, r := range cl.results {
				if !r.at.Before(last) && !r.failed() && r.region == c.region {
					f.toAllBack = max(f.toAllBack, r.at.Add(r.took).Sub(last))
					back = true
					break
				}
			}
			f.allBack = f.allBack && back
		}
	}
	for _, b := range bad {
		if a := b.arrivalsSince(last); len(a) > 0 {
			if d := a[0].Sub(last); !f.returned || d < f.toReturn {
				f.toReturn = d
			}
			f.returned = true
		}
	}
}

// chaosCauses is what showed faults out of rotation, over a run's
// windows.
type chaosCauses struct {
	probes, ejection, routing bool
	reasons                   map[string]bool
}

func (c *chaosCauses) String() string {
	var parts []string
	if c.probes {
		parts = append(parts, "active probes")
	}
	if c.ejection {
		if len(c.reasons) > 0 {
			parts = append(parts, "ejection ("+strings.Join(sortedKeys(c.reasons), ", ")+")")
		} else {
			parts = append(parts, "ejection")
		}
	}
	if len(parts) == 0 && c.routing {
		parts = append(parts, "routing snapshot")
	}
	return strings.Join(parts, " + ")
}

// detectedBy adds to c what showed the fault, in the first admin reading
// begun at or after the detection (within 300 ms): active probes (status
// "unhealthy"), an ejection (status "ejected" or a rise of the ejection
// counter, with its reasons), else the routing snapshot alone.
func (c *chaosCauses) detectedBy(obs []chaosObs, detect int, down time.Time, bad []*chaosBackend) {
	base, _ := lastReadAt(obs, down)
	at := obs[detect].at
	for _, o := range obs[detect:] {
		if o.at.Sub(at) > 300*time.Millisecond {
			break
		}
		if !o.scraped || o.readAt.Before(at) {
			continue
		}
		shown := false
		for _, b := range bad {
			if o.status[b.url] == "unhealthy" {
				c.probes, shown = true, true
			}
			if o.ejected[b.url] || o.ejections[b.url] > base.ejections[b.url] {
				c.ejection, shown = true, true
				for reason, n := range o.reasons[b.url] {
					if n > base.reasons[b.url][reason] {
						c.reasons[reason] = true
					}
				}
			}
		}
		c.routing = c.routing || !shown
		return
	}
	c.routing = true
}

// errorsBetween is the rise of geoproxy_upstream_errors_total for url
// from the last admin reading begun at or before from to the first begun
// after to (the reading interval around each end counts in).
func errorsBetween(obs []chaosObs, url string, from, to time.Time) float64 {
	a, okA := lastReadAt(obs, from)
	if !okA {
		return 0
	}
	for _, o := range obs {
		if o.scraped && o.readAt.After(to) {
			return max(o.upstreamErrors[url]-a.upstreamErrors[url], 0)
		}
	}
	b, _ := lastReadAt(obs, to)
	return max(b.upstreamErrors[url]-a.upstreamErrors[url], 0)
}

// errorsWhileOut sums the rises of geoproxy_upstream_errors_total for url
// between consecutive admin readings, both begun in (from, to], the first
// begun with the backend out of rotation. Those in the reading interval
// around from are errorsBetween's.
func errorsWhileOut(obs []chaosObs, tl []chaosState, url string, from, to time.Time) float64 {
	var (
		sum  float64
		prev *chaosObs
	)
	for i := range obs {
		o := &obs[i]
		if !o.scraped || !o.readAt.After(from) {
			continue
		}
		if o.readAt.After(to) {
			break
		}
		if prev != nil && stateAt(tl, prev.readAt) {
			sum += max(o.upstreamErrors[url]-prev.upstreamErrors[url], 0)
		}
		prev = o
	}
	return sum
}

func sortedKeys(m map[string]bool) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func ms(d time.Duration) string {
	switch {
	case d >= time.Second && d%(100*time.Millisecond) == 0:
		return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

// detection says how long the proxy took to take the fault out of
// rotation: one figure, or for several windows the median and the
// longest, with how many were detected.
func (f *chaosFigures) detection(s chaosSettings) string {
	if f.detected == 0 {
		if f.c.flap {
			return fmt.Sprintf("never (0 of %d)", f.windows)
		}
		return "not within " + ms(s.detectWait+s.hold)
	}
	if f.windows == 1 {
		return ms(f.toDetect[0])
	}
	d := slices.Clone(f.toDetect)
	slices.Sort(d)
	return fmt.Sprintf("%s median, %s max (%d of %d)", ms(d[len(d)/2]), ms(d[len(d)-1]), f.detected, f.windows)
}

func (f *chaosFigures) returnTime(s chaosSettings) string {
	if f.detected == 0 && !f.c.dead {
		return "never out"
	}
	if !f.returned {
		return "not within " + ms(s.returnWait)
	}
	return ms(f.toReturn)
}

func (f *chaosFigures) summary(s chaosSettings) string {
	return fmt.Sprintf("%d GETs, %d failed, %d slow (> %s); latency p50 %s, p99 %s, max %s; fault on %s; detected: %s by %s; to the bad backends %d before, %d after detection; %s: %s; return: %s; all clients back: %s; moves per client %.1f",
		f.sent, f.failed, f.slow, s.slowAfter(), ms(f.p50), ms(f.p99), ms(f.max), ms(f.faultFor), f.detection(s),
		orDash(f.detectBy), f.before, f.after, f.backHeader(), f.back(), f.returnTime(s), f.allBackTime(s), f.moves)
}

// backHeader and back: how often the failing backends came back during
// the fault (for the flapping region: in how many up periods it got
// traffic).
func (f *chaosFigures) backHeader() string {
	if f.c.flap {
		return "up periods with traffic back"
	}
	return "back in rotation during the fault (requests then)"
}

func (f *chaosFigures) back() string {
	if f.c.flap {
		return fmt.Sprintf("%d of %d", f.upTraffic, max(f.windows-1, 0))
	}
	return fmt.Sprintf("%d (%d)", f.readmits, f.readmitted)
}

func (f *chaosFigures) allBackTime(s chaosSettings) string {
	switch {
	case !f.c.wholeRegion():
		return "—"
	case !f.allBack:
		return "not within " + ms(s.returnWait)
	}
	return ms(f.toAllBack)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// chaosCommand is the command line that ran the suite.
func chaosCommand() string {
	var sb strings.Builder
	sb.WriteString("go test")
	if chaosRace {
		sb.WriteString(" -race")
	}
	sb.WriteString(" ./server")
	if fl := flag.Lookup("test.run"); fl != nil && fl.Value.String() != "" {
		fmt.Fprintf(&sb, " -run '%s'", fl.Value.String())
	}
	fmt.Fprintf(&sb, " -chaos.report %s", *chaosReport)
	if fl := flag.Lookup("test.timeout"); fl != nil && fl.Value.String() != "0s" {
		d := fl.Value.String()
		for _, zero := range []string{"m0s", "h0m"} {
			if strings.HasSuffix(d, zero) {
				d = strings.TrimSuffix(d, zero[1:])
			}
		}
		fmt.Fprintf(&sb, " -timeout %s", d)
	}
	return sb.String()
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	fh, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return "Linux " + strings.TrimSpace(string(b))
}

// chaosMarkdown is the report.
func chaosMarkdown(s chaosSettings, runs []*chaosFigures, began time.Time, took time.Duration) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	date := began.UTC().Format("2006-01-02 15:04 UTC")
	var engines []string
	for _, e := range s.engines {
		engines = append(engines, "`"+e.name+"`")
	}
	p("# geoproxy under failure: the chaos suite\n\n")
	p("Generated by `%s` (from the repository root; the report path is relative to `server/`, where the test runs) on %s; the run took %s. ", chaosCommand(), date, took.Round(time.Second))
	p("The suite is `TestChaos` in [server/chaos_test.go](../server/chaos_test.go). It runs geoproxy in process in front of three regions of two backends each, ")
	p("under a steady GET load from clients placed in every region, makes backends fail in five ways, one case at a time, on each engine and path (%s), ", strings.Join(engines, ", "))
	p("and measures what the clients saw and what the proxy did. Without `-chaos.report` it runs a short version of the same cases (native and nethttp) and only asserts.\n\n")
	p("| | |\n|---|---|\n")
	p("| date | %s |\n", date)
	p("| CPU | %s, %d cores (nproc), GOMAXPROCS %d |\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	p("| kernel | %s |\n", kernel())
	race := "off"
	if chaosRace {
		race = "on"
	}
	p("| Go | %s, race detector %s |\n\n", runtime.Version(), race)

	p("## Setup\n\n")
	p("- **Regions**: us-east, us-west, europe-west, two backends each. A backend is a Go `net/http` server on a fixed loopback port that can be killed (its listener and every open connection closed at once) and started again on the same port. It records when each proxied request reached it; `/health` answers 200 whenever it listens, whatever the fault.\n")
	p("- **Clients**: %d per region, each dialling from its own loopback address (127.0.10.x for us-east, 127.0.11.x for us-west, 127.0.12.x for europe-west), which `geoip.overrides` place in New York, Seattle and London, so each group's nearest region is known. Each client has its own kept-alive connection and sends `GET /chaos` every %s (or as soon as the last answer came, when slower), with a limit of %s per GET; the load runs from before the fault until after the traffic came back.\n",
		s.perRegion, ms(s.pace), ms(chaosClientTimeout))
	p("- **Proxy**: `geoproxy` built from the config below, in the test's process (`server.New`, `Start`), the regions' URLs filled in. `proxy.retry_on_status` includes 500, so that a GET answered 500 moves on to another backend; everything else not shown takes its default.\n\n")
	p("```yaml\n%s```\n\n", chaosSettingsYAML(s, chaosNative))
	p("- **Cases**, each with a fresh proxy and fresh backends:\n")
	for _, c := range chaosCases {
		p("  %d. %s: %s.\n", c.n, c.title, chaosCaseMethod(s, c))
	}
	short := chaosShortSettings()
	p("\nThe short version (CI, without `-chaos.report`) runs the same cases on `native` and `nethttp` with `ejection_time: %s`, `failback_hold: %s`, `slow_start: %s`, GETs every %s, each fault held %s after detection (at most %s before), and the region flapping every %s, %d times.\n",
		short.ejectionTime, short.failbackHold, short.slowStart, ms(short.pace), ms(short.hold), ms(short.detectWait), ms(short.flapEvery), short.flaps)
	p("\n## Definitions\n\n")
	p("- **failed**: a GET that got anything but a 2xx answer, or a transport error (refused, reset, timed out after %s). **slow**: a GET that took longer than `per_try_timeout` + 1 s (%s).\n", ms(chaosClientTimeout), ms(s.slowAfter()))
	p("- **out of rotation**: a backend is out when it is missing from its region's routing snapshot (`Server.Router().Snapshot()`, what requests are routed with, read in process on every change), or when `/admin/status` on the admin listener shows it other than `healthy` (`unhealthy`, `ejected`) in a reading begun after the snapshot last changed for it. The admin listener (`/admin/status` and `/metrics`) is read every %s.\n", ms(chaosScrapeEvery))
	p("- **time to detect**: from the fault's injection to the first observation in which every failing backend of the case is out of rotation. **taken out by**: what the first admin reading begun at or after that moment shows (within 300 ms): `active probes` (status `unhealthy`), `ejection (reason)` (passive health: status `ejected`, or a rise of `geoproxy_backend_ejections_total{backend,reason}`), or `routing snapshot` when only the snapshot showed it.\n")
	p("- **to the bad backend before / after detection**: proxied requests that reached a failing backend from the injection to the detection, and after the detection while that backend was still out of rotation (until the fault was removed): requests the proxy should no longer have sent it. A killed backend receives nothing; for it (cases 1 and 5, marked †) these are the proxy's failed attempts on it, from the rises of `geoproxy_upstream_errors_total` between admin readings (%s apart), those in the reading interval around the detection counted before it.\n", ms(chaosScrapeEvery))
	p("- **back in rotation during the fault**: how many times a failing backend came back into rotation before the fault was removed (an ejection ends after `ejection_time` and a passing probe, and `/health` passes), and in brackets the requests that reached it then. For the flapping region: in how many of its up periods (but the last) clients got traffic there again.\n")
	p("- **time to return**: from the fault's removal (the last one, for the flapping region) to the first proxied request that reached a failing backend again. **all clients back**, when a whole region failed: from the same moment until the last of its clients got an answer from it again (after `failback_hold`, `slow_start` admits the region's clients gradually, by a hash of their address).\n")
	p("- **moves per client**: how many times, on average, a client of the failing backends' region saw the serving region (`X-Geoproxy-Region`) change. A region with one backend of two out of rotation has half its weight healthy, under `degraded_below` (72%%): it passes that share of its clients, chosen by a hash of their address, to the next region, so some clients move in cases 2 and 3 too.\n\n")

	p("## Results\n\n")
	for _, c := range chaosCases {
		p("### %d. %s\n\n", c.n, c.title)
		dagger := ""
		if c.dead {
			dagger = " †"
		}
		p("| engine | GETs | failed | slow | latency p50 / p99 / max | fault on | taken out by | time to detect | to the bad backend before / after detection%s | %s | time to return | all clients back | moves per client | checks |\n",
			dagger, (&chaosFigures{c: c}).backHeader())
		p("|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|---|\n")
		for _, f := range runs {
			if f.c.n != c.n {
				continue
			}
			if !f.ran {
				p("| %s | run did not finish | | | | | | | | | | | | |\n", f.engine)
				continue
			}
			checks := "pass"
			if len(f.checks) > 0 {
				checks = fmt.Sprintf("**%d failed**", len(f.checks))
			}
			p("| %s | %d | %d | %d | %s / %s / %s | %s | %s | %s | %d / %d | %s | %s | %s | %.1f | %s |\n",
				f.engine, f.sent, f.failed, f.slow, ms(f.p50), ms(f.p99), ms(f.max), ms(f.faultFor), orDash(f.detectBy),
				f.detection(s), f.before, f.after, f.back(), f.returnTime(s), f.allBackTime(s), f.moves, checks)
		}
		p("\n")
	}
	p("## Checks\n\n")
	p("The suite asserts what a user would notice: no failed GET in any case; in case 2, no slow GET (a request that meets the hanging backend moves on within `per_try_timeout`); in case 3, the backend answering 500 is taken out of rotation and at most %d requests (one per client of its region) reach it after that; in cases 1 and 5, the region gets traffic back once its backends are up, and every one of its clients is served there again.\n\n", s.perRegion)
	var failed []string
	for _, f := range runs {
		for _, msg := range f.checks {
			failed = append(failed, fmt.Sprintf("- case %d (%s), %s: %s", f.c.n, f.c.slug, f.engine, msg))
		}
	}
	if len(failed) == 0 {
		p("Every check passed.\n")
	} else {
		p("Failed in this run:\n\n%s\n", strings.Join(failed, "\n"))
	}
	return b.String()
}

// chaosCaseMethod describes how a case is run in mode s.
func chaosCaseMethod(s chaosSettings, c chaosCase) string {
	hold := fmt.Sprintf("the fault stays on until the proxy takes it out of rotation (at most %s), then %s more, and is removed", ms(s.detectWait), ms(s.hold))
	switch c.slug {
	case "killed":
		return "both " + c.region + " backends killed; " + hold + " by starting both again on the same addresses"
	case "hang":
		return "one " + c.region + " backend reads each request and holds it without an answer (the held requests get their answer when the fault ends); " + hold
	case "500":
		return "one " + c.region + " backend answers 500 to every proxied request; " + hold
	case "reset":
		return "one " + c.region + " backend answers each request with `Connection: close`, and resets every third new connection (SO_LINGER 0, then close) once the request's first bytes arrived; " + hold
	case "flap":
		return fmt.Sprintf("both %s backends killed, then started again %s later, %s later killed again, %d times; then left up", c.region, ms(s.flapEvery), ms(s.flapEvery), s.flaps)
	}
	return ""
}
