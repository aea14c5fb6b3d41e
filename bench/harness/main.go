//go:build linux

// Command harness is the benchmark behind bench/run.sh: one nginx backend on loopback,
// nginx, HAProxy and Caddy as plain reverse proxies to it, and geoproxy with geo routing
// on, each measured with wrk at fixed concurrency (interleaved, several rounds) and then at
// a fixed rate, with CPU time and peak RSS from /proc; then the same proxies over TLS with
// one certificate, measured with wrk over https (and h2load for HTTP/2, if asked). It
// prints the tables and writes them, with the machine's details, to docs/benchmarks.md.
//
// Run it through bench/run.sh, which installs the tools and builds geoproxy first.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/geoproxy/geoproxy/bench/internal/cli"
	"github.com/geoproxy/geoproxy/bench/internal/mdreport"
	"github.com/geoproxy/geoproxy/bench/internal/proc"
	"github.com/geoproxy/geoproxy/bench/internal/procfs"
)

// busyCores: other processes using this much CPU during a run make it suspect.
const busyCores = 0.2

var allTargets = []string{"direct", "nginx", "haproxy", "caddy", "geoproxy", "geoproxy-nethttp"}

type options struct {
	duration, warmup time.Duration
	rounds           int
	threads, conns   int
	targets          []string
	cases            []string
	h2Streams        int
	cpuProfile       string

	rateDuration time.Duration
	rateWarmup   time.Duration
	rateRounds   int
	rate         float64
	rateFrac     float64
	rateConns    int
	rateTargets  []string
	rateChosen   bool // -rate-targets was given: run those even if they cannot hold the rate
	stalls       time.Duration

	portBase       int
	workers        int
	backendWorkers int
	geoproxyBin    string
	workDir        string
	out            string
	command        string
	startTimeout   time.Duration
}

// target is one thing measured: direct (the backend itself) or a proxy in front of it.
type target struct {
	name    string
	port    int
	proc    *proc.Process
	skipped string // why it was not measured, if it was not
	setup   string // one line on how it is configured
	tlsPort int    // its TLS listener, when a TLS case runs (0: none)
	suite   string // what OpenSSL's default client (as wrk's) negotiates with it

	runs     []wrkResult
	cpu      []float64 // CPU seconds per 100k requests, one per run
	rss      uint64    // summed VmHWM after the rounds
	rssProcs int
	rate     []rateResult
	regions  map[string]string // geoproxy: client address -> region that served it

	// The TLS cases, on instances of their own, and their peak RSS after them.
	https    []wrkResult
	httpsCPU []float64
	h2       []h2Result
	h2CPU    []float64
	tlsRSS   uint64
}

func (t *target) addr() string    { return fmt.Sprintf("127.0.0.1:%d", t.port) }
func (t *target) tlsAddr() string { return fmt.Sprintf("127.0.0.1:%d", t.tlsPort) }

// has reports whether case c is to run.
func (o options) has(c string) bool { return slices.Contains(o.cases, c) }

// tlsOn reports whether the targets need a TLS listener.
func (o options) tlsOn() bool { return o.has(caseHTTPS) || o.has(caseH2) }

func main() { os.Exit(cli.Main("bench", os.Args[1:], parseFlags, run)) }

func parseFlags(args []string) (options, error) {
	var o options
	fs := cli.NewFlagSet("harness", "bench/run.sh",
		"Benchmarks geoproxy (geo routing on) against nginx, HAProxy and Caddy as reverse proxies\n"+
			"to one nginx backend on loopback, prints the table and writes it to -out.")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "length of each measured wrk run (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured wrk run against each target before the rounds (0 = none)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every target once, in an order rotated each round")
	fs.IntVar(&o.threads, "threads", 1, "wrk threads (-t)")
	fs.IntVar(&o.conns, "connections", 64, "wrk connections (-c)")
	targets := fs.String("targets", strings.Join(allTargets, ","), "targets, comma-separated, from: "+strings.Join(allTargets, ", "))
	cases := fs.String("cases", casePlain+","+caseHTTPS, "cases, comma-separated, from: plain (HTTP/1.1, wrk, then the fixed rate), https (HTTP/1.1 over TLS, wrk with an https URL), h2 (HTTP/2 over TLS, h2load); direct runs plain only")
	fs.IntVar(&o.h2Streams, "h2-streams", 10, "h2 case: requests in flight on each connection (h2load -m)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "directory to write geoproxy's CPU profile under each case's load to (geoproxy-CASE.pprof), taken in one extra unmeasured run per case after the rounds (admin.pprof on)")
	fs.DurationVar(&o.rateDuration, "rate-duration", 0, "length of each measured fixed-rate run (default: -duration, at most 5s)")
	fs.DurationVar(&o.rateWarmup, "rate-warmup", time.Second, "unmeasured start of each fixed-rate run")
	fs.IntVar(&o.rateRounds, "rate-rounds", 7, "fixed-rate rounds (-1 = skip the fixed-rate part)")
	fs.Float64Var(&o.rate, "rate", 0, "fixed rate in req/s (default: -rate-fraction of geoproxy's median req/s)")
	fs.Float64Var(&o.rateFrac, "rate-fraction", 0.5, "fixed rate as a fraction of geoproxy's median req/s")
	fs.IntVar(&o.rateConns, "rate-connections", 0, "connections of the fixed-rate load (default: -connections)")
	rateTargets := fs.String("rate-targets", "", "targets of the fixed-rate part (default: every target measured whose median req/s reaches the rate)")
	fs.DurationVar(&o.stalls, "stalls", 3*time.Second, "how long to measure the machine's stalls before the fixed rate, a spinning thread per core (0 = skip)")
	fs.IntVar(&o.portBase, "port-base", 18000, "ports used: base+1..3 (backend), base+101..105 (proxies), base+111..115 (their TLS listeners), base+194..195 (geoproxy admin)")
	fs.IntVar(&o.workers, "workers", runtime.NumCPU(), "worker processes/threads of each proxy (nginx worker_processes, HAProxy nbthread, GOMAXPROCS)")
	fs.IntVar(&o.backendWorkers, "backend-workers", 1, "worker processes of the backend nginx")
	fs.StringVar(&o.geoproxyBin, "geoproxy", "", "geoproxy binary (bench/run.sh builds it)")
	fs.StringVar(&o.workDir, "workdir", "", "directory for configs, logs and pid files (default: a new temporary directory)")
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", `file to write the report to ("" = stdout only)`)
	fs.StringVar(&o.command, "command", "", "the command line to show in the report")
	fs.DurationVar(&o.startTimeout, "start-timeout", 10*time.Second, "how long each process may take to answer on its port")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (flags start with -; see -h)", fs.Arg(0))
	}
	var err error
	if o.targets, err = targetList(*targets); err != nil {
		return o, fmt.Errorf("-targets: %w", err)
	}
	if o.cases, err = cli.Names(*cases, allCases, "case", "no case"); err != nil {
		return o, fmt.Errorf("-cases: %w", err)
	}
	if *rateTargets == "" {
		o.rateTargets = o.targets
	} else if o.rateTargets, err = targetList(*rateTargets); err != nil {
		return o, fmt.Errorf("-rate-targets: %w", err)
	} else {
		o.rateChosen = true
	}
	switch {
	case o.duration < time.Second || o.duration%time.Second != 0:
		return o, fmt.Errorf("-duration %s: use whole seconds, at least 1s (wrk counts in seconds)", o.duration)
	case o.warmup != 0 && (o.warmup < time.Second || o.warmup%time.Second != 0):
		return o, fmt.Errorf("-warmup %s: use 0 or whole seconds", o.warmup)
	case o.rounds < 1:
		return o, fmt.Errorf("-rounds %d: at least 1", o.rounds)
	case o.rateRounds == 0 || o.rateRounds < -1:
		return o, fmt.Errorf("-rate-rounds %d: at least 1, or -1 to skip the fixed rate", o.rateRounds)
	case o.threads < 1 || o.conns < o.threads:
		return o, fmt.Errorf("-threads %d -connections %d: need 1 <= threads <= connections", o.threads, o.conns)
	case o.workers < 1 || o.backendWorkers < 1:
		return o, errors.New("-workers and -backend-workers: at least 1")
	case o.h2Streams < 1:
		return o, fmt.Errorf("-h2-streams %d: at least 1", o.h2Streams)
	case o.rateFrac <= 0 && o.rate <= 0:
		return o, errors.New("-rate-fraction: must be positive")
	case o.portBase < 1024 || o.portBase > 65000:
		return o, fmt.Errorf("-port-base %d: between 1024 and 65000", o.portBase)
	}
	if o.rateDuration == 0 {
		o.rateDuration = min(o.duration, 5*time.Second)
	}
	if o.rateConns == 0 {
		o.rateConns = o.conns
	}
	return o, nil
}

// targetList reads the -targets and -rate-targets flags.
func targetList(s string) ([]string, error) { return cli.Names(s, allTargets, "target", "no target") }

func run(ctx context.Context, o options) error {
	began := time.Now()
	procs, err := proc.NewSet(o.workDir, "geoproxy-bench.")
	if err != nil {
		return err
	}
	defer procs.Close(3 * time.Second)
	o.workDir = procs.Dir()

	needGeoproxy := slices.Contains(o.targets, "geoproxy") || slices.Contains(o.targets, "geoproxy-nethttp")
	if needGeoproxy && o.geoproxyBin == "" {
		return errors.New("-geoproxy: the geoproxy binary is needed (bench/run.sh builds it)")
	}

	// Step: tools.
	tools := []string{"wrk", "nginx"}
	if o.has(caseH2) {
		tools = append(tools, "h2load")
	}
	for _, n := range []string{"haproxy", "caddy"} {
		if slices.Contains(o.targets, n) {
			tools = append(tools, n)
		}
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("checking tools: %s is not on PATH (bench/run.sh installs it on Debian)", t)
		}
	}

	// Step: configs.
	p := ports{o.portBase}
	w := o.workDir
	logPath := func(name string) string { return filepath.Join(w, "logs", name+".log") }
	var cert *certFiles // one certificate for every TLS listener
	if o.tlsOn() {
		if cert, err = writeCert(filepath.Join(w, "tls")); err != nil {
			return fmt.Errorf("making the certificate: %w", err)
		}
	}
	pprof := o.cpuProfile != ""
	files := map[string]string{
		"backend/nginx.conf":    backendConfig(filepath.Join(w, "backend"), logPath("backend"), p, o.backendWorkers),
		"nginx/nginx.conf":      nginxProxyConfig(filepath.Join(w, "nginx"), logPath("nginx"), p, o.workers, nil),
		"haproxy.cfg":           haproxyConfig(p, o.workers, nil),
		"Caddyfile":             caddyConfig(p, nil),
		"geoproxy.yaml":         geoproxyConfig(p, "geoproxy", "", nil, pprof),
		"geoproxy-nethttp.yaml": geoproxyConfig(p, "geoproxy-nethttp", "nethttp", nil, pprof),
		"load.lua":              wrkScript(),
	}
	// The TLS cases run on instances of their own, started once the plain case is done: the
	// plain one's configs, plus a TLS listener. The plain case's processes stay as they were.
	if cert != nil {
		files["nginx"+tlsSuffix+"/nginx.conf"] = nginxProxyConfig(filepath.Join(w, "nginx"+tlsSuffix), logPath("nginx"+tlsSuffix), p, o.workers, cert)
		files["haproxy"+tlsSuffix+".cfg"] = haproxyConfig(p, o.workers, cert)
		files["Caddyfile"+tlsSuffix] = caddyConfig(p, cert)
		files["geoproxy"+tlsSuffix+".yaml"] = geoproxyConfig(p, "geoproxy", "", cert, pprof)
		files["geoproxy-nethttp"+tlsSuffix+".yaml"] = geoproxyConfig(p, "geoproxy-nethttp", "nethttp", cert, pprof)
	}
	for name, content := range files {
		if err := cli.WriteFile(filepath.Join(w, name), content); err != nil {
			return fmt.Errorf("writing configs: %w", err)
		}
	}
	for _, d := range []string{"logs", "pids", "caddy"} {
		if err := os.MkdirAll(filepath.Join(w, d), 0o755); err != nil {
			return err
		}
	}
	script := filepath.Join(w, "load.lua")

	var targets []*target
	for _, n := range o.targets {
		t := &target{name: n, port: p.target(n)}
		if o.tlsOn() && tlsCapable(n) {
			t.tlsPort = p.tlsTarget(n)
		}
		switch n {
		case "direct":
			t.setup = fmt.Sprintf("wrk straight at the backend (nginx, %d worker, `return 200`, %d-byte body, access log off)", o.backendWorkers, len(backendBody))
		case "nginx":
			t.setup = fmt.Sprintf("`worker_processes %d`, `proxy_pass` to an upstream with `keepalive 256`, `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, access log off", o.workers)
		case "haproxy":
			t.setup = fmt.Sprintf("`mode http`, `nbthread %d`, `http-reuse always`, keep-alive, no logging", o.workers)
		case "caddy":
			t.setup = fmt.Sprintf("`reverse_proxy`, admin off, `auto_https off`, no access log, GOMAXPROCS=%d", o.workers)
		case "geoproxy":
			t.setup = fmt.Sprintf("default engine (no `engine` key), geo routing on (embedded DB-IP database, X-Forwarded-For trusted from 127.0.0.0/8, three regions, one backend port each), `access_log: false`, health checks every 1s, GOMAXPROCS=%d", o.workers)
		case "geoproxy-nethttp":
			t.setup = "`engine: nethttp` (the net/http reference engine), otherwise as geoproxy"
		}
		targets = append(targets, t)
	}
	find := func(name string) *target {
		for _, t := range targets {
			if t.name == name {
				return t
			}
		}
		return nil
	}

	// Step: does this geoproxy know the engine key?
	if t := find("geoproxy-nethttp"); t != nil {
		cmd := exec.CommandContext(ctx, o.geoproxyBin, "validate", "-config", filepath.Join(w, "geoproxy-nethttp.yaml"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			msg := strings.TrimSpace(string(out))
			if i := strings.IndexByte(msg, '\n'); i >= 0 {
				msg = msg[:i]
			}
			t.skipped = "skipped: this geoproxy does not accept `engine: nethttp` (" + strings.TrimSpace(strings.TrimPrefix(msg, filepath.Join(w, "")+"/")) + ")"
			cli.Progress("geoproxy-nethttp %s", t.skipped)
		}
	}
	if t := find("geoproxy"); t != nil {
		out, err := exec.CommandContext(ctx, o.geoproxyBin, "validate", "-config", filepath.Join(w, "geoproxy.yaml")).CombinedOutput()
		if err != nil {
			return fmt.Errorf("checking the geoproxy config: geoproxy validate: %v\n%s", err, indent(string(out)))
		}
		if cert != nil {
			out, err := exec.CommandContext(ctx, o.geoproxyBin, "validate", "-config", filepath.Join(w, "geoproxy"+tlsSuffix+".yaml")).CombinedOutput()
			if err != nil {
				return fmt.Errorf("checking the geoproxy config of the TLS cases: geoproxy validate: %v\n%s", err, indent(string(out)))
			}
		}
	}
	active := func() []*target {
		var a []*target
		for _, t := range targets {
			if t.skipped == "" {
				a = append(a, t)
			}
		}
		return a
	}

	// Step: ports.
	need := map[int]string{p.backend(0): "backend", p.backend(1): "backend", p.backend(2): "backend"}
	for _, t := range active() {
		if t.name != "direct" {
			need[t.port] = t.name
		}
		if strings.HasPrefix(t.name, "geoproxy") {
			need[p.geoproxyAdmin(t.name)] = t.name + " admin"
		}
		if t.tlsPort != 0 {
			need[t.tlsPort] = t.name + " TLS"
		}
	}
	if err := proc.CheckPortsFree(need); err != nil {
		return fmt.Errorf("checking ports: %w", err)
	}

	machine := machineInfo(o.geoproxyBin) // before the run: the commit and date it started with
	nTLS := 0
	for _, t := range active() {
		if t.tlsPort != 0 {
			nTLS++
		}
	}
	est := estimate(o, len(active()), nTLS)
	cli.Progress("work directory %s; this run should take about %s", w, est.Round(10*time.Second))

	// Step: start everything.
	gomax := fmt.Sprintf("GOMAXPROCS=%d", o.workers)
	backend, err := procs.Start("backend", nil, "nginx", "-p", filepath.Join(w, "backend")+"/",
		"-c", filepath.Join(w, "backend/nginx.conf"), "-e", logPath("backend"))
	if err != nil {
		return fmt.Errorf("starting the backend: %w", err)
	}
	for i := 0; i < 3; i++ {
		if err := backend.WaitReady(ctx, fmt.Sprintf("127.0.0.1:%d", p.backend(i)), o.startTimeout); err != nil {
			return fmt.Errorf("starting the backend: %w", err)
		}
	}
	cli.Progress("backend up on 127.0.0.1:%d-%d", p.backend(0), p.backend(2))
	// start starts t from its plain config or, with tls, from its TLS variant (which listens
	// on the plain port too), waits until it answers and checks its answers.
	start := func(t *target, tls bool) error {
		sfx, what := "", t.name
		if tls {
			sfx, what = tlsSuffix, t.name+" for the TLS cases"
		}
		var err error
		switch t.name {
		case "direct":
			t.proc = nil
		case "nginx":
			t.proc, err = procs.Start("nginx"+sfx, nil, "nginx", "-p", filepath.Join(w, "nginx"+sfx)+"/",
				"-c", filepath.Join(w, "nginx"+sfx, "nginx.conf"), "-e", logPath("nginx"+sfx))
		case "haproxy":
			t.proc, err = procs.Start("haproxy"+sfx, nil, "haproxy", "-db", "-f", filepath.Join(w, "haproxy"+sfx+".cfg"),
				"-p", filepath.Join(w, "haproxy"+sfx+".pid"))
		case "caddy":
			home := filepath.Join(w, "caddy")
			t.proc, err = procs.Start("caddy"+sfx, []string{gomax, "HOME=" + home, "XDG_DATA_HOME=" + home, "XDG_CONFIG_HOME=" + home},
				"caddy", "run", "--config", filepath.Join(w, "Caddyfile"+sfx), "--adapter", "caddyfile",
				"--pidfile", filepath.Join(w, "caddy"+sfx+".pid"))
		case "geoproxy", "geoproxy-nethttp":
			t.proc, err = procs.Start(t.name+sfx, []string{gomax}, o.geoproxyBin, "serve",
				"-config", filepath.Join(w, t.name+sfx+".yaml"), "-log-level", "warn", "-shutdown-grace", "1s")
		}
		if err != nil {
			return fmt.Errorf("starting %s: %w", what, err)
		}
		if t.proc != nil {
			if err := t.proc.WaitReady(ctx, t.addr(), o.startTimeout); err != nil {
				return fmt.Errorf("starting %s: %w", what, err)
			}
		}
		if err := check(t); err != nil {
			if t.proc != nil {
				return fmt.Errorf("checking %s: %w", what, t.proc.Failure("first requests", err))
			}
			return fmt.Errorf("checking %s: %w", what, backend.Failure("first requests", err))
		}
		if !tls {
			cli.Progress("%-16s up on %s", t.name, t.addr())
			return nil
		}
		if err := checkTLS(ctx, t, cert, o.has(caseH2), o.startTimeout); err != nil {
			return fmt.Errorf("checking %s over TLS on %s: %w", what, t.tlsAddr(), t.proc.Failure("first requests over TLS", err))
		}
		t.suite = negotiated(ctx, t.tlsAddr())
		cli.Progress("%-16s up on %s and %s (TLS: %s)", t.name, t.addr(), t.tlsAddr(), orDash(t.suite))
		return nil
	}
	if o.has(casePlain) {
		for _, t := range active() {
			if err := start(t, false); err != nil {
				return err
			}
		}
	}

	alive := func(t *target) error {
		if backend.Exited() {
			return backend.Failure("during the "+t.name+" run", errors.New("the backend stopped"))
		}
		if t.proc != nil && t.proc.Exited() {
			return t.proc.Failure("during its run", errors.New("it stopped"))
		}
		return nil
	}

	// measure makes one measured run of t once the machine is quiet: load runs it and returns
	// the requests it completed and the load generator's own CPU time. It returns the
	// target's CPU seconds per 100k requests (-1 for direct) and the CPU other processes on
	// the machine used meanwhile, in cores.
	measure := func(t *target, load func() (int64, time.Duration, error)) (cpu, other float64, err error) {
		pg := 0
		if t.proc != nil {
			pg = t.proc.PID()
		}
		if err := settle(ctx); err != nil {
			return 0, 0, err
		}
		meter := startMeter(backend.PID(), pg)
		n, loadCPU, err := load()
		if aerr := alive(t); aerr != nil { // a process that died explains a failed run best
			err = aerr
		}
		if err != nil {
			return 0, 0, err
		}
		used, other := meter.stop(loadCPU)
		cpu = -1
		if t.proc != nil && n > 0 {
			cpu = used.Seconds() / float64(n) * 1e5
		}
		return cpu, other, nil
	}

	h2XFF := clients[0] // h2load sends the same headers on every request

	// profile takes geoproxy's CPU profile under case c's load, in an extra unmeasured run
	// after that case's rounds, with -cpuprofile.
	profile := func(c string) error {
		gp := find("geoproxy")
		if o.cpuProfile == "" || !o.has(c) || gp == nil || gp.skipped != "" || (c != casePlain && gp.tlsPort == 0) {
			return nil
		}
		if err := os.MkdirAll(o.cpuProfile, 0o755); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		load := func(d time.Duration) error {
			var err error
			switch c {
			case casePlain:
				_, _, err = runWrk(ctx, script, "http://"+gp.addr()+"/", o.threads, o.conns, d)
			case caseHTTPS:
				_, _, err = runWrk(ctx, script, "https://"+gp.tlsAddr()+"/", o.threads, o.conns, d)
			case caseH2:
				_, err = runH2load(ctx, "https://"+gp.tlsAddr()+"/", o.threads, o.conns, o.h2Streams, h2XFF.addr, d)
			}
			return err
		}
		path := filepath.Join(o.cpuProfile, "geoproxy-"+c+".pprof")
		if err := settle(ctx); err != nil {
			return err
		}
		admin := fmt.Sprintf("127.0.0.1:%d", p.geoproxyAdmin(gp.name))
		if err := cpuProfile(ctx, admin, o.duration, load, path); err != nil {
			return fmt.Errorf("profiling geoproxy under the %s load: %w", c, err)
		}
		cli.Progress("CPU profile of geoproxy under the %s load (%s): %s", c, o.duration, path)
		return nil
	}

	act := active()
	if o.has(casePlain) {
		// Step: warm-up.
		if o.warmup > 0 {
			for _, t := range act {
				_, _, err := runWrk(ctx, script, "http://"+t.addr()+"/", o.threads, o.conns, o.warmup)
				if aerr := alive(t); aerr != nil {
					err = aerr
				}
				if err != nil {
					return fmt.Errorf("warming up %s: %w", t.name, err)
				}
			}
			cli.Progress("warmed up every target for %s", o.warmup)
		}

		// Step: closed-loop rounds, interleaved.
		for r := 0; r < o.rounds; r++ {
			for i := range act {
				t := act[(i+r)%len(act)]
				var res wrkResult
				cpu, other, err := measure(t, func() (int64, time.Duration, error) {
					var err error
					res, _, err = runWrk(ctx, script, "http://"+t.addr()+"/", o.threads, o.conns, o.duration)
					return res.Requests, res.WrkCPU, err
				})
				if err != nil {
					return fmt.Errorf("round %d, %s: %w", r+1, t.name, err)
				}
				res.Other = other
				t.runs = append(t.runs, res)
				t.cpu = append(t.cpu, cpu)
				cli.Progress("round %d/%d  %-16s %9.0f req/s  p50 %-9s p99 %-9s cpu %s%s%s", r+1, o.rounds, t.name, res.RPS, fmtDur(res.P50), fmtDur(res.P99), cpuNote(cpu), wrkErrNote(res), busyNote(other))
			}
		}
		for _, t := range act {
			if t.proc != nil {
				t.rss, t.rssProcs = procfs.GroupHWM(t.proc.PID())
			}
		}
	}

	// Step: fixed rate.
	var rate float64
	rateNote := ""
	if o.rateRounds > 0 {
		switch gp := find("geoproxy"); {
		case !o.has(casePlain):
			rateNote = "skipped: the plain case did not run (-cases)"
		case o.rate > 0:
			rate = o.rate
			rateNote = "set by -rate"
		case gp != nil && gp.skipped == "":
			rate = o.rateFrac * median(rps(gp.runs))
			rateNote = fmt.Sprintf("%.0f%% of geoproxy's median req/s", o.rateFrac*100)
		default:
			rateNote = "skipped: no geoproxy target to take the rate from and no -rate"
		}
	} else {
		rateNote = "skipped (-rate-rounds -1)"
	}
	rateSet, tooSlow := rateTargets(o, act, rate)
	var stalls stallResult
	if rate > 0 && len(rateSet) > 0 && o.stalls > 0 {
		if err := settle(ctx); err != nil {
			return err
		}
		stalls = measureStalls(ctx, runtime.NumCPU(), o.stalls)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cli.Progress("stalls: %s", stalls)
	}
	if rate > 0 {
		rate = float64(int(rate))
		for r := 0; r < o.rateRounds; r++ {
			for i := range rateSet {
				t := rateSet[(i+r)%len(rateSet)]
				pg := 0
				if t.proc != nil {
					pg = t.proc.PID()
				}
				if err := settle(ctx); err != nil {
					return err
				}
				meter := startMeter(backend.PID(), pg)
				res, err := openLoop(ctx, t.addr(), rate, o.rateConns, o.rateWarmup, o.rateDuration)
				if aerr := alive(t); aerr != nil {
					err = aerr
				}
				if err != nil {
					return fmt.Errorf("fixed rate round %d, %s: %w", r+1, t.name, err)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				_, res.Other = meter.stop(0)
				t.rate = append(t.rate, res)
				over := ""
				if res.overloaded() {
					over = "  (overloaded: it did not keep up)"
				}
				cli.Progress("fixed rate %d/%d  %-16s %7.0f req/s asked, %7.0f answered  p50 %-9s p99 %-9s errors %d%s", r+1, o.rateRounds, t.name, res.Rate, res.Achieved, fmtDur(res.P50), fmtDur(res.P99), res.Errors, over)
			}
		}
	}

	if err := profile(casePlain); err != nil {
		return err
	}

	// Step: the TLS cases, against every target with a TLS listener, as the plain one, on
	// instances of their own: the plain case's stop first.
	var tlsSet []*target
	for _, t := range act {
		if t.tlsPort != 0 {
			tlsSet = append(tlsSet, t)
		}
	}
	if len(tlsSet) > 0 {
		if o.has(casePlain) {
			var wg sync.WaitGroup
			for _, t := range act {
				if t.proc != nil {
					wg.Go(func() { procs.Stop(t.proc, 3*time.Second) })
				}
			}
			wg.Wait()
			for _, t := range act {
				t.proc = nil
			}
			cli.Progress("stopped the plain case's proxies; starting their TLS instances")
		}
		for _, t := range tlsSet {
			if err := start(t, true); err != nil {
				return err
			}
		}
	}
	if o.has(caseHTTPS) && len(tlsSet) > 0 {
		if o.warmup > 0 {
			for _, t := range tlsSet {
				_, _, err := runWrk(ctx, script, "https://"+t.tlsAddr()+"/", o.threads, o.conns, o.warmup)
				if aerr := alive(t); aerr != nil {
					err = aerr
				}
				if err != nil {
					return fmt.Errorf("warming up %s over https: %w", t.name, err)
				}
			}
			cli.Progress("warmed up every target over https for %s", o.warmup)
		}
		for r := 0; r < o.rounds; r++ {
			for i := range tlsSet {
				t := tlsSet[(i+r)%len(tlsSet)]
				var res wrkResult
				cpu, other, err := measure(t, func() (int64, time.Duration, error) {
					var err error
					res, _, err = runWrk(ctx, script, "https://"+t.tlsAddr()+"/", o.threads, o.conns, o.duration)
					return res.Requests, res.WrkCPU, err
				})
				if err != nil {
					return fmt.Errorf("https round %d, %s: %w", r+1, t.name, err)
				}
				res.Other = other
				t.https = append(t.https, res)
				t.httpsCPU = append(t.httpsCPU, cpu)
				cli.Progress("https %d/%d  %-16s %9.0f req/s  p50 %-9s p99 %-9s cpu %s%s%s", r+1, o.rounds, t.name, res.RPS, fmtDur(res.P50), fmtDur(res.P99), cpuNote(cpu), wrkErrNote(res), busyNote(other))
			}
		}
	}
	if o.has(caseH2) && len(tlsSet) > 0 {
		h2 := func(t *target, d time.Duration) (h2Result, error) {
			return runH2load(ctx, "https://"+t.tlsAddr()+"/", o.threads, o.conns, o.h2Streams, h2XFF.addr, d)
		}
		if o.warmup > 0 {
			for _, t := range tlsSet {
				_, err := h2(t, o.warmup)
				if aerr := alive(t); aerr != nil {
					err = aerr
				}
				if err != nil {
					return fmt.Errorf("warming up %s over HTTP/2: %w", t.name, err)
				}
			}
			cli.Progress("warmed up every target over HTTP/2 for %s", o.warmup)
		}
		for r := 0; r < o.rounds; r++ {
			for i := range tlsSet {
				t := tlsSet[(i+r)%len(tlsSet)]
				var res h2Result
				cpu, other, err := measure(t, func() (int64, time.Duration, error) {
					var err error
					res, err = h2(t, o.duration)
					return res.Succeeded, res.LoadCPU, err
				})
				if err != nil {
					return fmt.Errorf("h2 round %d, %s: %w", r+1, t.name, err)
				}
				res.Other = other
				t.h2 = append(t.h2, res)
				t.h2CPU = append(t.h2CPU, cpu)
				errs := ""
				if res.errors() > 0 {
					errs = fmt.Sprintf("  ERRORS: %d failed, %d non-2xx", res.Failed, res.Non2xx)
				}
				cli.Progress("h2 %d/%d  %-16s %9.0f req/s  mean %-9s cpu %s%s%s", r+1, o.rounds, t.name, res.RPS, fmtDur(res.Mean), cpuNote(cpu), errs, busyNote(other))
			}
		}
	}
	for _, t := range tlsSet {
		if t.proc != nil {
			t.tlsRSS, _ = procfs.GroupHWM(t.proc.PID())
		}
	}
	if err := profile(caseHTTPS); err != nil {
		return err
	}
	if err := profile(caseH2); err != nil {
		return err
	}

	// Step: report.
	rep := report{opts: o, targets: targets, rate: rate, rateNote: rateNote, rateSet: rateSet, tooSlow: tooSlow,
		stalls: stalls, tlsSet: tlsSet, h2XFF: h2XFF.addr,
		started: began, elapsed: time.Since(began), machine: machine}
	if o.has(caseH2) {
		rep.h2load = mdreport.FirstLine("h2load", "--version")
	}
	if err := mdreport.Publish(os.Stdout, rep.markdown(), o.out, began); err != nil {
		return err
	}
	for _, line := range rep.ratioLines() {
		cli.Progress("%s", line)
	}
	return nil
}

// cpuNote, wrkErrNote and busyNote are the ends of a round's progress line.
func cpuNote(cpu float64) string {
	if cpu < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s/100k", cpu)
}

func wrkErrNote(res wrkResult) string {
	if res.errors() == 0 {
		return ""
	}
	return fmt.Sprintf("  ERRORS: %d socket, %d non-2xx", res.SocketErrs, res.Non2xx)
}

func busyNote(other float64) string {
	if other < busyCores {
		return ""
	}
	return fmt.Sprintf("  (other processes used %.1f cores meanwhile)", other)
}

// rateTargets splits the measured targets into those the fixed rate runs against and those
// left out because their median req/s in the closed loop is below the rate. Such a target
// cannot hold the rate: its queue would grow for the whole run, and its latencies would
// measure only the run's length. Targets named by -rate-targets run anyway.
func rateTargets(o options, act []*target, rate float64) (run, tooSlow []*target) {
	for _, t := range act {
		switch {
		case !slices.Contains(o.rateTargets, t.name):
		case !o.rateChosen && median(rps(t.runs)) < rate:
			tooSlow = append(tooSlow, t)
		default:
			run = append(run, t)
		}
	}
	return run, tooSlow
}

// check sends one request per client address and checks the answer; for geoproxy it also
// records which region served each, and fails unless the clients reached every region.
func check(t *target) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	regions := map[string]string{}
	for _, c := range clients {
		req, _ := http.NewRequest("GET", "http://"+t.addr()+"/", nil)
		req.Header.Set("X-Forwarded-For", c.addr)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || string(body) != backendBody {
			return fmt.Errorf("GET / (X-Forwarded-For: %s): status %d, body %q; want 200 and %q", c.addr, resp.StatusCode, body, backendBody)
		}
		regions[c.addr] = resp.Header.Get("X-Geoproxy-Region")
	}
	if !strings.HasPrefix(t.name, "geoproxy") {
		return nil
	}
	seen := map[string]bool{}
	for addr, r := range regions {
		if r == "" {
			return fmt.Errorf("GET / (X-Forwarded-For: %s): no X-Geoproxy-Region header in the answer", addr)
		}
		seen[r] = true
	}
	if len(seen) < 3 {
		return fmt.Errorf("the %d client addresses were served by %d region(s) only (%v): geo routing is not working as configured", len(clients), len(seen), regions)
	}
	t.regions = regions
	return nil
}

// estimate is how long the run should take: n targets, nTLS of them with a TLS listener.
func estimate(o options, n, nTLS int) time.Duration {
	perRun := 300 * time.Millisecond
	d := 5 * time.Second
	closed := func(n int) time.Duration {
		return time.Duration(n)*(o.warmup+perRun) + time.Duration(o.rounds*n)*(o.duration+perRun)
	}
	if o.has(casePlain) {
		d += closed(n)
		if o.rateRounds > 0 {
			d += time.Duration(o.rateRounds*len(o.rateTargets)) * (o.rateWarmup + o.rateDuration + perRun)
			d += o.stalls
		}
	}
	for _, c := range []string{caseHTTPS, caseH2} {
		if o.has(c) {
			d += closed(nTLS)
		}
	}
	if o.cpuProfile != "" {
		d += time.Duration(len(o.cases)) * (o.duration + time.Second + perRun)
	}
	return d
}
