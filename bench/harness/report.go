//go:build linux

package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/geoproxy/geoproxy/bench/internal/mdreport"
)

type report struct {
	opts     options
	targets  []*target
	rate     float64
	rateNote string
	rateSet  []*target
	tooSlow  []*target // left out of the fixed rate: their median req/s is below it
	stalls   stallResult
	tlsSet   []*target // the targets of the TLS cases
	h2XFF    string    // the one X-Forwarded-For address of the h2 case
	h2load   string    // h2load's version, when the h2 case ran
	started  time.Time
	elapsed  time.Duration
	machine  [][2]string
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

func rps(runs []wrkResult) []float64 {
	xs := make([]float64, len(runs))
	for i, r := range runs {
		xs[i] = r.RPS
	}
	return xs
}

func (t *target) medRPS() float64 { return median(rps(t.runs)) }

func (t *target) medP(p99 bool) time.Duration { return medLatency(t.runs, p99) }

// medLatency is the median p99 (or p50) of runs.
func medLatency(runs []wrkResult, p99 bool) time.Duration {
	var ds []time.Duration
	for _, r := range runs {
		if p99 {
			ds = append(ds, r.P99)
		} else {
			ds = append(ds, r.P50)
		}
	}
	return medianDur(ds)
}

func (t *target) medRate(f func(rateResult) time.Duration) time.Duration {
	var ds []time.Duration
	for _, r := range t.rate {
		ds = append(ds, f(r))
	}
	return medianDur(ds)
}

// fmtDur shows a latency in milliseconds with three significant digits or so.
func fmtDur(d time.Duration) string {
	ms := float64(d) / 1e6
	switch {
	case ms < 1:
		return fmt.Sprintf("%.3f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.2f ms", ms)
	default:
		return fmt.Sprintf("%.0f ms", ms)
	}
}

func fmtInt(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (rp *report) find(name string) *target {
	for _, t := range rp.targets {
		if t.name == name && t.skipped == "" && len(t.runs) > 0 {
			return t
		}
	}
	return nil
}

var displayName = map[string]string{"direct": "direct", "nginx": "nginx", "haproxy": "HAProxy", "caddy": "Caddy"}

func (rp *report) markdown() string {
	o := rp.opts
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	w("# Benchmarks\n\n")
	w("geoproxy, with geo routing on, against nginx, HAProxy and Caddy as plain reverse proxies to the\n")
	w("same backend, on the same machine, in the same run. Written by `bench/run.sh`, which installs the\n")
	w("tools (Debian), builds geoproxy, starts every process itself on loopback and stops them at the end;\n")
	w("run it again to refresh this page. How each number is taken is at the end.\n\n")

	w("## Machine and run\n\n%s", mdreport.Table(rp.machine))
	cmd := o.command
	if cmd == "" {
		cmd = "go run ./bench/harness " + strings.Join(os.Args[1:], " ")
	}
	w("| command | `%s` |\n", cmd)
	w("| closed loop | wrk `-t%d -c%d`, %s per run after a %s warm-up per target, %d round(s), targets interleaved (order rotated each round), medians over rounds |\n",
		o.threads, o.conns, o.duration, o.warmup, o.rounds)
	if rp.rate > 0 {
		w("| fixed rate | %s req/s (%s), %d connections, %s per run after %s unmeasured, %d round(s), medians over rounds |\n",
			fmtInt(rp.rate), rp.rateNote, o.rateConns, o.rateDuration, o.rateWarmup, o.rateRounds)
	} else {
		w("| fixed rate | %s |\n", rp.rateNote)
	}
	w("| workers | %d per proxy (nginx `worker_processes`, HAProxy `nbthread`, `GOMAXPROCS` for Caddy and geoproxy); backend nginx %d |\n", o.workers, o.backendWorkers)
	w("| run time | %s |\n\n", rp.elapsed.Round(time.Second))

	// Main table.
	w("## Closed loop: wrk, fixed concurrency\n\n")
	if !o.has(casePlain) {
		w("Not run: `-cases` leaves out plain.\n")
	} else {
		refs := []string{"direct", "nginx", "haproxy", "caddy"}
		w("| target | req/s | p50 | p99 | CPU s/100k req | peak RSS | vs direct | vs nginx | vs HAProxy | vs Caddy |\n")
		w("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		var notes []string
		for _, t := range rp.targets {
			if t.skipped != "" {
				w("| %s | %s | | | | | | | | |\n", t.name, t.skipped)
				continue
			}
			if len(t.runs) == 0 {
				continue
			}
			cpu, rss := "–", "–"
			if t.proc != nil {
				cpu = fmt.Sprintf("%.2f", median(t.cpu))
				rss = mdreport.MB(t.rss)
			}
			w("| %s | %s | %s | %s | %s | %s |", t.name, fmtInt(t.medRPS()), fmtDur(t.medP(false)), fmtDur(t.medP(true)), cpu, rss)
			for _, r := range refs {
				ref := rp.find(r)
				if ref == nil || ref.medRPS() == 0 {
					w(" – |")
					continue
				}
				w(" %.2f× |", t.medRPS()/ref.medRPS())
			}
			w("\n")
			var sock, non2xx, total int64
			for _, r := range t.runs {
				sock += r.SocketErrs
				non2xx += r.Non2xx
				total += r.Requests
			}
			if sock+non2xx > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d socket errors and %d non-2xx answers in %s requests", t.name, sock, non2xx, fmtInt(float64(total))))
			}
		}
		w("\nvs X: req/s divided by X's req/s. CPU: the target's own processes only (not the backend, not wrk).\n")
		if len(notes) > 0 {
			w("\nErrors during the rounds: %s.\n", strings.Join(notes, "; "))
		} else {
			w("No errors: every request of every run got a 2xx answer.\n")
		}

		// Rounds.
		w("\nreq/s in each round (run order rotated each round):\n\n| target |")
		for r := 1; r <= o.rounds; r++ {
			w(" round %d |", r)
		}
		w("\n|---|%s\n", strings.Repeat("--:|", o.rounds))
		for _, t := range rp.targets {
			if t.skipped != "" || len(t.runs) == 0 {
				continue
			}
			w("| %s |", t.name)
			for _, r := range t.runs {
				if r.Other >= busyCores {
					w(" %s (busy %.1f) |", fmtInt(r.RPS), r.Other)
				} else {
					w(" %s |", fmtInt(r.RPS))
				}
			}
			w("\n")
		}
		w("\n%s\n", rp.noise())
	}

	// Fixed rate.
	direct := rp.find("direct")
	var overloaded []string
	if rp.rate > 0 && len(rp.rateSet) > 0 {
		w("\n## Fixed rate: open loop at %s req/s\n\n", fmtInt(rp.rate))
		w("Latency from each request's scheduled send time, so waiting behind a slow answer counts.\n\n")
		w("| target | achieved req/s | p50 | p90 | p99 | p99.9 | max | added p99 vs direct | errors |\n")
		w("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, t := range rp.rateSet {
			if len(t.rate) == 0 {
				continue
			}
			var ach []float64
			errs, sent, over := 0, 0, 0
			var mx time.Duration
			for _, r := range t.rate {
				ach = append(ach, r.Achieved)
				errs += r.Errors
				sent += r.Sent
				mx = max(mx, r.Max)
				if r.overloaded() {
					over++
				}
			}
			achieved := fmtInt(median(ach))
			if over > 0 {
				achieved += " (overloaded)"
				overloaded = append(overloaded, t.name)
			}
			added := "–"
			if direct != nil && len(direct.rate) > 0 && t != direct {
				d := t.medRate(func(r rateResult) time.Duration { return r.P99 }) - direct.medRate(func(r rateResult) time.Duration { return r.P99 })
				added = signedMs(d)
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %d of %s |\n", t.name, achieved,
				fmtDur(t.medRate(func(r rateResult) time.Duration { return r.P50 })),
				fmtDur(t.medRate(func(r rateResult) time.Duration { return r.P90 })),
				fmtDur(t.medRate(func(r rateResult) time.Duration { return r.P99 })),
				fmtDur(t.medRate(func(r rateResult) time.Duration { return r.P999 })),
				fmtDur(mx), added, errs, fmtInt(float64(sent)))
		}
		w("\nMedians over rounds, except max (the largest seen) and errors (all rounds).")
		var loads []float64
		for _, t := range rp.rateSet {
			for _, r := range t.rate {
				loads = append(loads, r.Load)
			}
		}
		if len(loads) > 0 {
			w(" The load itself (one thread) used %.2f cores in the median run, %.2f at most.", median(loads), slices.Max(loads))
		}
		w("\n")
		if rounds := len(rp.rateSet[0].rate); rounds > 1 {
			w("\np99 in each round (how much it moves on this machine):\n\n| target |")
			for i := range rounds {
				w(" round %d |", i+1)
			}
			w("\n|---|%s\n", strings.Repeat("--:|", rounds))
			for _, t := range rp.rateSet {
				w("| %s |", t.name)
				for _, r := range t.rate {
					w(" %s |", fmtDur(r.P99))
				}
				w("\n")
			}
		}
		if rp.stalls.Threads > 0 {
			w("\nThe machine's own stalls, measured just before these rounds: %s. A request in flight on a thread\n"+
				"held off its core waits as long; where such stalls take a percent of the time, they alone can set any target's p99.\n", rp.stalls)
		}
		if len(overloaded) > 0 {
			w("\nOverloaded (%s): the target answered less than 95%% of the rate or left requests unanswered; its queue grew\n"+
				"for the whole run, so its latencies mostly measure the run's length. Unanswered requests count as errors,\n"+
				"with the time they had waited (a lower bound) as their latency.\n", strings.Join(overloaded, ", "))
		}
	} else {
		w("\n## Fixed rate\n\n%s.\n", rp.rateNote)
	}
	if rp.rate > 0 && len(rp.tooSlow) > 0 {
		var slow []string
		for _, t := range rp.tooSlow {
			slow = append(slow, fmt.Sprintf("%s (%s req/s)", t.name, fmtInt(median(rps(t.runs)))))
		}
		w("\nNot run at this rate, because their median req/s in the closed loop is below it: %s. Their queue\n"+
			"would grow for the whole run, and their latencies would measure only its length (`-rate-targets` runs them anyway).\n",
			strings.Join(slow, ", "))
	}

	b.WriteString(rp.tlsMarkdown())

	// Targets.
	w("\n## Targets (issue 3)\n\n")
	for _, c := range rp.checks() {
		w("- %s\n", c)
	}

	// Setup.
	w("\n## What runs\n\n")
	w("- backend: one nginx (%d worker, access log off) answering `200` with a %d-byte body on 127.0.0.1:%d, %d and %d (geoproxy's three regions need three distinct backend URLs; the peers use the first)\n",
		o.backendWorkers, len(backendBody), ports{o.portBase}.backend(0), ports{o.portBase}.backend(1), ports{o.portBase}.backend(2))
	for _, t := range rp.targets {
		line := t.setup
		if t.skipped != "" {
			line += " — " + t.skipped
		}
		w("- %s: %s\n", t.name, line)
	}
	if len(rp.tlsSet) > 0 {
		w("- TLS (%s): %s\n", strings.Join(rp.tlsCases(), ", "), tlsSetup)
	}
	var cs []string
	for _, c := range clients {
		cs = append(cs, fmt.Sprintf("%s (%s)", c.addr, c.country))
	}
	w("- load: every request carries `X-Forwarded-For`, rotating over %d client addresses: %s. The peers ignore it; geoproxy routes by it.\n",
		len(clients), strings.Join(cs, ", "))
	if gp := rp.find("geoproxy"); gp != nil && gp.regions != nil {
		byRegion := map[string][]string{}
		var names []string
		for _, c := range clients {
			r := gp.regions[c.addr]
			if _, ok := byRegion[r]; !ok {
				names = append(names, r)
			}
			byRegion[r] = append(byRegion[r], c.country)
		}
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s ← %s", n, strings.Join(byRegion[n], ", ")))
		}
		w("- geoproxy served them (checked before the rounds, from its `X-Geoproxy-Region` answer header): %s\n", strings.Join(parts, "; "))
	}

	w("\n## How the numbers are taken\n\n")
	w("- req/s, p50, p99: wrk's `Requests/sec` and `--latency` distribution, median over the rounds. wrk is\n")
	w("  closed-loop: each connection sends its next request when the previous answer is in.\n")
	w("- CPU s/100k req: user + system CPU time of the target's processes (process group: nginx's master and\n")
	w("  workers; one process for the others) from `/proc/PID/stat`, read before and after each run, divided\n")
	w("  by the requests that run completed, times 100,000; median over the rounds.\n")
	w("- peak RSS: `VmHWM` from `/proc/PID/status`, summed over the target's processes, after the rounds.\n")
	w("- fixed rate: the harness schedules requests at a constant rate over keep-alive connections, from one\n")
	w("  thread with its own epoll set and a timer (as wrk2 does), so the load costs little CPU; latency runs\n")
	w("  from each request's scheduled time to its answer's last byte, so queueing in front of a busy\n")
	w("  connection counts (no coordinated omission). Percentiles by nearest rank over all samples of a run.\n")
	w("  Added p99 = p99(target) − p99(direct) at the same rate.\n")
	w("- Before each measured run the harness waits (at most 3 s) until the machine is quiet, so that no run\n")
	w("  inherits the previous one's backlog (an overloaded target still answering).\n")
	w("- Everything shares %d cores: wrk or the fixed-rate load, the backend and the target. Compare within one run;\n", runtime.NumCPU())
	w("  numbers from different runs or machines are not comparable.\n")
	if len(rp.tlsSet) > 0 {
		w("- https: the same, with wrk given an https URL (HTTP/1.1 over TLS, keep-alive). h2: h2load's `finished in`\n")
		w("  req/s and its mean `time for request` (it gives no percentiles), CPU per request counted over the\n")
		w("  requests that succeeded. Each target's TLS instance is a process of its own, started after the plain case\n")
		w("  (its plain listener open but unused); peak RSS is that instance's.\n")
	}
	w("\nWhere geoproxy's CPU goes, and what changed it: [profiling.md](profiling.md).\n")
	return b.String()
}

func signedMs(d time.Duration) string {
	if d < 0 {
		return "−" + fmtDur(-d)
	}
	return "+" + fmtDur(d)
}

// checks are issue 3's targets for geoproxy, each met or missed with its numbers.
func (rp *report) checks() []string {
	gp := rp.find("geoproxy")
	if gp == nil {
		return []string{"not checked: geoproxy was not measured"}
	}
	mark := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**missed**"
	}
	var out []string
	for _, c := range []struct {
		peer string
		want float64
	}{{"nginx", 0.9}, {"haproxy", 0.9}, {"caddy", 3}} {
		ref := rp.find(c.peer)
		if ref == nil || ref.medRPS() == 0 {
			out = append(out, fmt.Sprintf("not checked: geoproxy req/s ≥ %.1f× %s's (%s not measured)", c.want, displayName[c.peer], displayName[c.peer]))
			continue
		}
		ratio := gp.medRPS() / ref.medRPS()
		out = append(out, fmt.Sprintf("%s: geoproxy req/s ≥ %.1f× %s's: %.2f× (%s vs %s)", mark(ratio >= c.want), c.want,
			displayName[c.peer], ratio, fmtInt(gp.medRPS()), fmtInt(ref.medRPS())))
	}
	direct := rp.find("direct")
	if direct != nil && len(direct.rate) > 0 && len(gp.rate) > 0 {
		p99 := func(r rateResult) time.Duration { return r.P99 }
		added := gp.medRate(p99) - direct.medRate(p99)
		out = append(out, fmt.Sprintf("%s: added p99 ≤ 1 ms at half of geoproxy's top rate (%s req/s): %s (p99 %s vs direct %s)",
			mark(added <= time.Millisecond), fmtInt(rp.rate), signedMs(added), fmtDur(gp.medRate(p99)), fmtDur(direct.medRate(p99))))
	} else {
		out = append(out, "not checked: added p99 at half rate (the fixed-rate part did not run against both direct and geoproxy)")
	}
	out = append(out, fmt.Sprintf("%s: peak RSS under load < 100 MB: %s", mark(gp.rss < 100e6), mdreport.MB(gp.rss)))
	var errs int64
	for _, r := range gp.runs {
		errs += r.errors()
	}
	for _, r := range gp.rate {
		errs += int64(r.Errors)
	}
	out = append(out, fmt.Sprintf("%s: no errors under load: %d", mark(errs == 0), errs))
	return out
}

// machineInfo: the machine, Go, geoproxy and the tools' versions, and the date.
func machineInfo(geoproxyBin string) [][2]string {
	return append(mdreport.Machine(),
		[2]string{"Go", runtime.Version()},
		[2]string{"geoproxy", mdreport.Geoproxy(geoproxyBin)},
		[2]string{"nginx", strings.TrimPrefix(mdreport.FirstLine("nginx", "-v"), "nginx version: ")},
		[2]string{"HAProxy", strings.TrimSuffix(strings.Split(mdreport.FirstLine("haproxy", "-v"), " - ")[0], " ")},
		[2]string{"Caddy", mdreport.FirstLine("caddy", "version")},
		[2]string{"wrk", strings.Split(mdreport.FirstLine("wrk", "-v"), " Copyright")[0]},
	)
}

// noise says how much CPU other processes on the machine took during the plain case's runs.
func (rp *report) noise() string {
	var all []float64
	var wheres []string
	for _, t := range rp.targets {
		for i, r := range t.runs {
			all = append(all, r.Other)
			wheres = append(wheres, fmt.Sprintf("%s, round %d", t.name, i+1))
		}
		for i, r := range t.rate {
			all = append(all, r.Other)
			wheres = append(wheres, fmt.Sprintf("%s, fixed rate round %d", t.name, i+1))
		}
	}
	return noiseLine(all, wheres)
}

// noiseTLS is noise for the TLS cases' runs.
func (rp *report) noiseTLS() string {
	var all []float64
	var wheres []string
	for _, t := range rp.tlsSet {
		for i, r := range t.https {
			all = append(all, r.Other)
			wheres = append(wheres, fmt.Sprintf("%s, https round %d", t.name, i+1))
		}
		for i, r := range t.h2 {
			all = append(all, r.Other)
			wheres = append(wheres, fmt.Sprintf("%s, h2 round %d", t.name, i+1))
		}
	}
	return noiseLine(all, wheres)
}

// noiseLine: all is the CPU other processes used in each run, in cores; wheres names each run.
func noiseLine(all []float64, wheres []string) string {
	worst, where := 0.0, ""
	for i, x := range all {
		if x > worst {
			worst, where = x, wheres[i]
		}
	}
	if len(all) == 0 {
		return ""
	}
	if where == "" {
		return "Other processes on the machine (not the target, the backend, wrk or the harness) used no measurable CPU in any run."
	}
	s := fmt.Sprintf("Other processes on the machine (not the target, the backend, wrk or the harness) used %.2f cores "+
		"in the median run, %.2f at most (%s).", median(all), worst, where)
	if worst >= busyCores {
		busy := 0
		for _, x := range all {
			if x >= busyCores {
				busy++
			}
		}
		s += fmt.Sprintf(" **%d of %d runs shared the machine with %.1f cores or more of other work** (marked \"busy\" above): "+
			"their numbers are low and noisy; rerun on a quiet machine.", busy, len(all), busyCores)
	}
	return s
}
