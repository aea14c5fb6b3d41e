//go:build linux

// Command pressure is the benchmark behind bench/pressure.sh: it runs
// geoproxy (each engine in turn) in front of a backend on loopback, attacks
// it with slow and greedy clients (slowloris heads, slow request bodies,
// bodies at full speed, clients that never read, thousands of idle
// connections) while a normal client makes small requests beside them, and
// reports the proxy's memory (VmRSS sampled every 100 ms, VmHWM, open
// descriptors, from /proc) against its documented budget, and the normal
// client's latency against its latency without the attack.
//
// Run it through bench/pressure.sh, which builds geoproxy and this program
// first.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/geoproxy/geoproxy/bench/internal/cli"
	"github.com/geoproxy/geoproxy/bench/internal/mdreport"
	"github.com/geoproxy/geoproxy/bench/internal/proc"
	"github.com/geoproxy/geoproxy/bench/internal/procfs"
)

// Documented costs of a client connection in the native engine beyond its
// request memory (README): about 1 KB idle on an
// event loop, about 10 KB on a goroutine of its own, and up to 80 KB while
// an answer is written to a client that is slow to read it.
const (
	loopConnCost       = 1_000
	goroutineConnCost  = 10_000
	slowReaderConnCost = 80_000
	// defaultRequestMemory is limits.request_memory when the config does
	// not set it.
	defaultRequestMemory = 128 << 20
	// sampleEvery is how often the proxy's memory and descriptors are read.
	sampleEvery = 100 * time.Millisecond
	// metricsEvery is how often the proxy's metrics are read.
	metricsEvery = 250 * time.Millisecond
	// busyCores: other processes using this much CPU during a phase make
	// its latencies suspect.
	busyCores = 0.2
	// touchSize is how much fresh memory is touched to time the machine's
	// page faults.
	touchSize = 256 << 20
)

// Phase names, in the order they run.
const (
	phBaseline   = "baseline"
	phSlowloris  = "slowloris"
	phSlowBodies = "slow-bodies"
	phFastBodies = "fast-bodies"
	phNeverRead  = "never-read"
	phIdle       = "idle"
	// phBaselineAgain is the baseline measured again after the attacks:
	// how far it moves from the first is how far the machine alone moves
	// the side client's figures.
	phBaselineAgain = "baseline-again"
)

func allPhases() []string {
	return []string{phBaseline, phSlowloris, phSlowBodies, phFastBodies, phNeverRead, phIdle, phBaselineAgain}
}

func isBaseline(ph string) bool { return ph == phBaseline || ph == phBaselineAgain }

func allEngines() []string { return []string{"native", "nethttp"} }

type options struct {
	engines []string
	phases  []string

	baseline time.Duration // the side client alone
	duration time.Duration // the side client under each attack

	k          int // slow bodies, fast bodies, never read
	slowlorisK int
	idleK      int

	lorisEvery time.Duration
	lorisBytes int
	slowSize   int64
	slowRate   int64 // 0: the size over duration + 2 s
	fastSize   int64
	largeSize  int64

	sidePause   time.Duration
	sideTimeout time.Duration

	requestMemory      string // written into the config when not empty
	requestMemoryBytes int64  // its value, or the default

	portBase     int
	geoproxyBin  string
	workDir      string
	out          string
	command      string
	startTimeout time.Duration
}

func main() { os.Exit(cli.Main("pressure", os.Args[1:], parseFlags, run)) }

// sizeValue is a flag holding a size such as 32MiB.
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil || *v.n == 0 {
		return ""
	}
	return strings.ReplaceAll(fmtSize(*v.n), " ", "")
}

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.n = n
	return nil
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := cli.NewFlagSet("pressure", "bench/pressure.sh",
		"Attacks geoproxy with slow and greedy clients, each engine in turn, while a normal client\n"+
			"makes small requests beside them; reports the proxy's memory against its budget and the\n"+
			"normal client's latency against its latency without the attack, and writes it to -out.")
	engines := fs.String("engines", strings.Join(allEngines(), ","), "engines, comma-separated, from: "+strings.Join(allEngines(), ", "))
	phases := fs.String("phases", strings.Join(allPhases(), ","), "phases, comma-separated, from: "+strings.Join(allPhases(), ", ")+" (the first baseline always runs)")
	fs.DurationVar(&o.baseline, "baseline", 5*time.Second, "how long the side client measures alone")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "how long the side client measures under each attack")
	fs.IntVar(&o.k, "k", 48, "connections of the slow-bodies, fast-bodies and never-read attacks")
	fs.IntVar(&o.slowlorisK, "slowloris-k", 1000, "connections of the slowloris attack")
	fs.IntVar(&o.idleK, "idle-k", 5000, "idle kept-alive connections")
	fs.DurationVar(&o.lorisEvery, "slowloris-every", time.Second, "slowloris: how often each connection sends more of its head")
	fs.IntVar(&o.lorisBytes, "slowloris-bytes", 8, "slowloris: bytes each connection sends each time")
	o.slowSize, o.fastSize, o.largeSize = 32<<20, 32<<20, 8<<20
	fs.Var(sizeValue{&o.slowSize}, "slow-body-size", "slow bodies: the Content-Length announced (the engine's body limit is 32MiB)")
	fs.Var(sizeValue{&o.slowRate}, "slow-body-rate", "slow bodies: bytes per second each connection sends (default: the size over -duration + 2s, so that all are mid-upload when the phase ends)")
	fs.Var(sizeValue{&o.fastSize}, "fast-body-size", "fast bodies: the body size, sent at full speed")
	fs.Var(sizeValue{&o.largeSize}, "large-size", "never read: the size of the answer they ask for")
	fs.DurationVar(&o.sidePause, "side-pause", 0, "side client: pause between an answer and the next request (0: back to back)")
	fs.DurationVar(&o.sideTimeout, "side-timeout", 5*time.Second, "side client: limit for one request")
	fs.StringVar(&o.requestMemory, "request-memory", "", "write limits: {request_memory: VALUE} into the config (such as 64MiB); \"\" writes no limits key, and the budget uses the default 128MiB")
	fs.IntVar(&o.portBase, "port-base", 18400, "ports: proxy base+1, admin base+2, backend base+3, on 127.0.0.1")
	fs.StringVar(&o.geoproxyBin, "geoproxy", "", "the geoproxy binary (bench/pressure.sh builds it)")
	fs.StringVar(&o.workDir, "workdir", "", "directory for configs and logs (default: a temporary one, removed at the end)")
	fs.StringVar(&o.out, "out", "docs/pressure.md", "write the report here as markdown too (\"\" = stdout only)")
	fs.StringVar(&o.command, "command", "", "the command line to name in the report (bench/pressure.sh sets it)")
	fs.DurationVar(&o.startTimeout, "start-timeout", 10*time.Second, "how long geoproxy may take to answer after it starts")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var err error
	if o.engines, err = names(*engines, allEngines()); err != nil {
		return o, fmt.Errorf("-engines: %w", err)
	}
	if o.phases, err = names(*phases+","+phBaseline, allPhases()); err != nil {
		return o, fmt.Errorf("-phases: %w", err)
	}
	o.requestMemoryBytes = defaultRequestMemory
	if o.requestMemory != "" {
		if o.requestMemoryBytes, err = parseSize(o.requestMemory); err != nil {
			return o, fmt.Errorf("-request-memory: %w", err)
		}
	}
	switch {
	case o.baseline < time.Second || o.duration < time.Second:
		return o, errors.New("-baseline and -duration: at least 1s")
	case o.k < 1 || o.slowlorisK < 1 || o.idleK < 1:
		return o, errors.New("-k, -slowloris-k and -idle-k: at least 1")
	case o.lorisEvery <= 0 || o.lorisBytes < 1:
		return o, errors.New("-slowloris-every and -slowloris-bytes: positive")
	case o.slowSize < 1 || o.fastSize < 1 || o.largeSize < 1:
		return o, errors.New("-slow-body-size, -fast-body-size and -large-size: at least 1 byte")
	case o.sideTimeout <= 0 || o.sidePause < 0:
		return o, errors.New("-side-timeout: positive; -side-pause: not negative")
	case o.portBase < 1024 || o.portBase > 65000:
		return o, fmt.Errorf("-port-base %d: between 1024 and 65000", o.portBase)
	}
	if o.slowRate == 0 {
		o.slowRate = max(1, int64(float64(o.slowSize)/(o.duration+2*time.Second).Seconds()))
	}
	return o, nil
}

// names reads the -engines and -phases flags: names from known.
func names(s string, known []string) ([]string, error) {
	return cli.Names(s, known, "name", "none given")
}

// maxConns is the most connections one phase opens to the proxy.
func (o options) maxConns() int {
	n := 1
	for _, ph := range o.phases {
		n = max(n, o.phaseConns(ph))
	}
	return n
}

// phaseConns is how many attack connections a phase opens.
func (o options) phaseConns(ph string) int {
	switch ph {
	case phSlowloris:
		return o.slowlorisK
	case phSlowBodies, phFastBodies, phNeverRead:
		return o.k
	case phIdle:
		return o.idleK
	}
	return 0
}

// perConn is the documented cost of each of a phase's connections in the
// native engine: idle connections stay on an event loop; a client that
// never reads holds an answer being written; every attack connection of
// the other phases has a goroutine of its own (a head over the loop's
// buffer or a large body moves it there).
func perConn(ph string) int64 {
	switch ph {
	case phIdle:
		return loopConnCost
	case phNeverRead:
		return slowReaderConnCost
	}
	return goroutineConnCost
}

// estimate is how long the run should take.
func (o options) estimate() time.Duration {
	perPhase := 3 * time.Second // start, warm-up, ramp, stop
	d := 2 * time.Second
	for _, ph := range o.phases {
		d += perPhase + o.duration
		switch ph {
		case phBaseline, phBaselineAgain:
			d += o.baseline - o.duration
		case phNeverRead:
			d += time.Second
		case phIdle:
			d += time.Duration(o.idleK) * 300 * time.Microsecond
		}
	}
	return d * time.Duration(len(o.engines))
}

func run(ctx context.Context, o options) error {
	began := time.Now()
	if o.geoproxyBin == "" {
		return errors.New("-geoproxy: the geoproxy binary is needed (bench/pressure.sh builds it)")
	}
	procs, err := proc.NewSet(o.workDir, "geoproxy-pressure.")
	if err != nil {
		return err
	}
	defer procs.Close(3 * time.Second)
	o.workDir = procs.Dir()

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		// This process holds each attack connection and, as the backend,
		// each connection the proxy opens for it.
		if need := 2*o.maxConns() + 200; uint64(need) > lim.Cur {
			return fmt.Errorf("checking limits: a phase needs about %d open files here and the limit is %d: raise ulimit -n or lower -idle-k / -slowloris-k", need, lim.Cur)
		}
	}

	p := ports{o.portBase}
	cfgs := map[string]string{}
	for _, e := range o.engines {
		path := filepath.Join(o.workDir, "geoproxy-"+e+".yaml")
		if err := cli.WriteFile(path, geoproxyConfig(p, e, o.requestMemory)); err != nil {
			return fmt.Errorf("writing configs: %w", err)
		}
		out, err := exec.CommandContext(ctx, o.geoproxyBin, "validate", "-config", path).CombinedOutput()
		if err != nil {
			hint := ""
			if o.requestMemory != "" {
				hint = "\n(this geoproxy may not know the limits block yet: run without -request-memory)"
			}
			return fmt.Errorf("checking the config for engine %s: geoproxy validate: %v\n%s%s", e, err, strings.TrimSpace(string(out)), hint)
		}
		cfgs[e] = path
	}
	if err := proc.CheckPortsFree(map[int]string{p.proxy(): "proxy", p.admin(): "admin", p.backend(): "backend"}); err != nil {
		return fmt.Errorf("checking ports: %w", err)
	}

	machine := machineInfo(o.geoproxyBin)
	touched := touchFresh(touchSize)
	machine = append(machine, [2]string{"fresh memory", fmt.Sprintf("%.2f GB/s at first touch (%s in %s, timed here before the run)",
		float64(touchSize)/1e9/touched.Seconds(), fmtSize(touchSize), touched.Round(time.Millisecond))})
	cli.Progress("work directory %s; this run should take about %s", o.workDir, o.estimate().Round(10*time.Second))

	be, err := startBackend(fmt.Sprintf("127.0.0.1:%d", p.backend()), o.largeSize)
	if err != nil {
		return fmt.Errorf("starting the backend: %w", err)
	}
	defer be.close()

	var results []phaseResult
	for _, e := range o.engines {
		for _, ph := range o.phases {
			r, err := runPhase(ctx, o, procs, e, ph, cfgs[e])
			if err != nil {
				return fmt.Errorf("engine %s, phase %s: %w", e, ph, err)
			}
			results = append(results, r)
			cli.Progress("%s", r.line(baselineOf(results, e)))
		}
	}

	rep := report{opts: o, results: results, started: began, elapsed: time.Since(began), machine: machine}
	return mdreport.Publish(os.Stdout, rep.markdown(), o.out, began)
}

// phaseResult is what one phase measured.
type phaseResult struct {
	engine, phase string
	conns         int    // attack connections asked for
	inPlace       int    // attack connections in place when the side client started
	perConn       int64  // documented cost of each connection, for the budget
	idleRSS       uint64 // before the attack, after the side client's warm-up
	peakRSS       uint64 // the larger of the sampled VmRSS peak and VmHWM
	endRSS        uint64 // when the side client stopped, the attack still on
	peakFDs       int
	endFDs        int
	samples       int
	proxyCores    float64     // CPU the proxy used while the side client ran
	selfCores     float64     // CPU this process (attack, backend, side client) used meanwhile
	otherCores    float64     // CPU the rest of the machine used meanwhile
	busiest       string      // the other processes that used the most of it
	hwmSinceStart bool        // VmHWM could not be reset: it counts from the proxy's start
	engineMem     engineWatch // the proxy's own count of what it holds for requests
	side          sideResult
	attack        *tally
	sent          int64 // request body bytes the attack sent
	note          string
}

// budget is the memory the native engine should stay under in this phase,
// as the README documents it: idle RSS + request_memory + every
// connection's cost, or Go's soft memory limit that geoproxy sets, if
// larger (memory let go waits for the collector, which lets the heap grow
// up to that limit before it collects).
func (r phaseResult) budget(requestMemory int64) uint64 {
	b := r.idleRSS + uint64(requestMemory) + uint64(r.conns+1)*uint64(r.perConn)
	return max(b, uint64(r.engineMem.last.goLimit))
}

// baselineOf is the baseline phase of engine among results, if any.
func baselineOf(results []phaseResult, engine string) *phaseResult {
	for i := range results {
		if results[i].engine == engine && results[i].phase == phBaseline {
			return &results[i]
		}
	}
	return nil
}

// runPhase starts a fresh geoproxy, warms it up, starts the phase's attack,
// measures the side client and the proxy's memory while it runs, and stops
// everything it started.
func runPhase(ctx context.Context, o options, procs *proc.Set, engine, ph, cfg string) (phaseResult, error) {
	res := phaseResult{engine: engine, phase: ph, conns: o.phaseConns(ph), perConn: perConn(ph)}
	addr := fmt.Sprintf("127.0.0.1:%d", ports{o.portBase}.proxy())
	gp, err := procs.Start("geoproxy-"+engine+"-"+ph, nil, o.geoproxyBin, "serve",
		"-config", cfg, "-log-level", "warn", "-shutdown-grace", "1s")
	if err != nil {
		return res, err
	}
	defer procs.Stop(gp, 2*time.Second)
	if err := gp.WaitReady(ctx, addr, o.startTimeout); err != nil {
		return res, err
	}
	side := sideClient{addr: addr, pause: o.sidePause, timeout: o.sideTimeout}
	if warm := side.run(ctx, 500*time.Millisecond); warm.errs.total() > 0 || len(warm.lat) == 0 {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, gp.Failure("warm-up", fmt.Errorf("the side client got %s and %d answers", warm.errs, len(warm.lat)))
	}
	if err := sleep(ctx, 200*time.Millisecond); err != nil {
		return res, err
	}
	pid := gp.PID()
	idle, err := procfs.ReadStatus(pid)
	if err != nil {
		return res, gp.Failure("reading its memory", err)
	}
	res.idleRSS = idle.RSS
	res.hwmSinceStart = procfs.ResetPeak(pid) != nil

	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan usage, 1)
	go func() { sampled <- sample(sctx, pid, sampleEvery) }()
	watched := make(chan engineWatch, 1)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", ports{o.portBase}.admin())
	go func() { watched <- watchEngineMemory(sctx, adminAddr, metricsEvery) }()
	var u usage
	sampling := true
	endSampling := func() {
		if sampling {
			stopSampling()
			u, res.engineMem, sampling = <-sampled, <-watched, false
		}
	}
	defer endSampling()

	actx, stopAttack := context.WithCancel(ctx)
	attackDone := make(chan struct{})
	defer func() {
		stopAttack()
		<-attackDone
	}()
	res.attack = newTally()
	if run := o.attack(ph, addr); run != nil {
		rp := newRamp(res.conns)
		go func() {
			defer close(attackDone)
			run(actx, res.conns, res.attack, rp)
		}()
		select {
		case <-rp.done:
		case <-ctx.Done():
		case <-time.After(30 * time.Second):
		}
		res.inPlace = res.conns - int(rp.left.Load())
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return res, err
		}
	} else {
		close(attackDone)
	}

	d := o.duration
	if isBaseline(ph) {
		d = o.baseline
	}
	cpu := startCPU(pid)
	res.side = side.run(ctx, d)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	res.proxyCores, res.selfCores, res.otherCores, res.busiest = cpu.cores()
	endSampling()
	res.samples, res.peakRSS, res.endRSS, res.peakFDs, res.endFDs = u.samples, u.peakRSS, u.lastRSS, u.peakFDs, u.lastFDs
	if m, err := procfs.ReadStatus(pid); err == nil {
		res.peakRSS = max(res.peakRSS, m.HWM)
	}
	stopAttack()
	<-attackDone
	res.sent = res.attack.sent.Load()
	if gp.Exited() {
		res.note = "geoproxy " + gp.State() + " during the phase"
		if u.firstErr != nil {
			res.note += " (" + u.firstErr.Error() + ")"
		}
	}
	return res, ctx.Err()
}

// attack is the attack of a phase, nil for the baseline.
func (o options) attack(ph, addr string) func(ctx context.Context, n int, t *tally, r *ramp) {
	a := newAttacker(addr)
	a.lorisEvery, a.lorisBytes, a.lorisMax = o.lorisEvery, o.lorisBytes, 16<<10-64
	a.slowSize, a.slowRate = o.slowSize, o.slowRate
	a.fastSize = o.fastSize
	switch ph {
	case phSlowloris:
		return a.slowloris
	case phSlowBodies:
		return a.slowBodies
	case phFastBodies:
		return a.fastBodies
	case phNeverRead:
		return func(ctx context.Context, n int, t *tally, r *ramp) { a.neverRead(ctx, n, t, r, time.Second) }
	case phIdle:
		return a.idle
	}
	return nil
}

// touchFresh times the first write to each page of size bytes of fresh
// memory, then gives the memory back: a process that grows pays this for
// each page it adds.
func touchFresh(size int) time.Duration {
	b := make([]byte, size)
	at := time.Now()
	for i := 0; i < len(b); i += os.Getpagesize() {
		b[i] = 1
	}
	d := time.Since(at)
	runtime.KeepAlive(b)
	debug.FreeOSMemory()
	return max(d, time.Microsecond)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
