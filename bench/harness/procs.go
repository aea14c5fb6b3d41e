//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one program the harness started. It leads its own process group (so a
// master and its workers are found, measured and stopped together) and writes its
// output to its own log file in the work directory.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	pidPath string
	done    chan struct{}
	err     error // from Wait, valid once done is closed
}

// procs is every process started, for stopping them all at the end.
var (
	procsMu sync.Mutex
	procs   []*process
)

// start runs argv in the background with its output in workDir/logs/name.log and its
// process group id in workDir/pids/name.pid (which bench/run.sh reads if the harness
// itself is killed).
func start(workDir, name string, env []string, argv ...string) (*process, error) {
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(filepath.Join(workDir, d), 0o755); err != nil {
			return nil, err
		}
	}
	p := &process{
		name:    name,
		logPath: filepath.Join(workDir, "logs", name+".log"),
		pidPath: filepath.Join(workDir, "pids", name+".pid"),
		done:    make(chan struct{}),
	}
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = workDir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = logf
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	_ = os.WriteFile(p.pidPath, []byte(strconv.Itoa(p.cmd.Process.Pid)+"\n"), 0o644)
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then sends SIGKILL.
func (p *process) stop(grace time.Duration) {
	pgid := p.pid()
	if !p.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// The leader may be gone while a worker lingers: the group gets SIGKILL either way.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	_ = os.Remove(p.pidPath)
}

// stopAll stops every process started, all at once, newest first within the grace.
func stopAll(grace time.Duration) {
	procsMu.Lock()
	ps := procs
	procs = nil
	procsMu.Unlock()
	var wg sync.WaitGroup
	for i := len(ps) - 1; i >= 0; i-- {
		wg.Add(1)
		go func(p *process) { defer wg.Done(); p.stop(grace) }(ps[i])
	}
	wg.Wait()
}

// tail returns the last n lines of the process's log, indented, for error messages.
func (p *process) tail(n int) string { return logTail(p.logPath, n) }

func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "    (no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "    (log " + path + " is empty)"
	}
	return "    " + strings.Join(lines, "\n    ") + "\n    (log: " + path + ")"
}

// failure wraps err with the process's state and log tail.
func (p *process) failure(what string, err error) error {
	state := "running"
	if p.exited() {
		state = "exited"
		if p.err != nil {
			state = "exited: " + p.err.Error()
		}
	}
	return fmt.Errorf("%s: %s: %w (process %d %s); last lines of its log:\n%s", p.name, what, err, p.pid(), state, p.tail(20))
}

// waitReady polls GET http://addr/ until it answers 200, the process exits, or timeout.
func (p *process) waitReady(ctx context.Context, addr string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			return p.failure("waiting for "+addr, errors.New("it exited before answering"))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return p.failure("waiting for "+addr, fmt.Errorf("no 200 answer within %s, last: %v", timeout, err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkPortsFree fails, naming the port, its use and its current holder, if any port is taken.
func checkPortsFree(ports map[int]string) error {
	var problems []string
	for port, use := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			problems = append(problems, fmt.Sprintf("port %d (%s) is not free: %v%s", port, use, err, portHolder(port)))
			continue
		}
		_ = ln.Close()
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s\n(stop what holds them, or move every port with -port-base)", strings.Join(problems, "\n"))
	}
	return nil
}

func portHolder(port int) string {
	out, err := exec.Command("ss", "-Hltnp", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return ""
	}
	return "; held by: " + strings.Join(strings.Fields(string(out)), " ")
}

// Process statistics from /proc.

const clockTicks = 100 // USER_HZ: /proc/PID/stat counts CPU time in 1/100 s on Linux

// groupPIDs lists the processes of process group pgid.
func groupPIDs(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.pgrp != pgid {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

type procStat struct {
	pgrp  int
	ticks uint64 // utime + stime, all threads
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	pgrp, _ := strconv.Atoi(f[2])                // field 5
	utime, _ := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseUint(f[12], 10, 64) // field 15
	return procStat{pgrp: pgrp, ticks: utime + stime}, nil
}

// groupCPU is the CPU time (user + system) used so far by the live processes of group pgid.
func groupCPU(pgid int) time.Duration {
	var ticks uint64
	for _, pid := range groupPIDs(pgid) {
		if st, err := readStat(pid); err == nil {
			ticks += st.ticks
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// groupHWM is the sum of the peak resident set sizes (VmHWM) of the processes of group pgid.
func groupHWM(pgid int) (bytes uint64, n int) {
	for _, pid := range groupPIDs(pgid) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "VmHWM:") {
				continue
			}
			fs := strings.Fields(line) // VmHWM: 1234 kB
			if len(fs) >= 2 {
				if kb, err := strconv.ParseUint(fs[1], 10, 64); err == nil {
					bytes += kb * 1024
					n++
				}
			}
		}
		_ = f.Close()
	}
	return bytes, n
}

// machineCPU is the CPU time the whole machine has spent busy (user, nice, system, steal)
// since boot, from the first line of /proc/stat.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks uint64
	for _, i := range []int{1, 2, 3, 8} {
		if i < len(f) {
			n, _ := strconv.ParseUint(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// settle waits, at most 3 s, until the machine is quiet (under 0.1 cores
// busy over 100 ms), after collecting the harness's own garbage, so that
// no run inherits the previous one's backlog: an overloaded target still
// answering, the backend serving it.
func settle(ctx context.Context) error {
	runtime.GC()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		before, at := machineCPU(), time.Now()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if busy := (machineCPU() - before).Seconds() / time.Since(at).Seconds(); busy < 0.1 {
			return nil
		}
	}
	return nil
}

// selfCPU is the harness's own CPU time.
func selfCPU() time.Duration {
	st, err := readStat(os.Getpid())
	if err != nil {
		return 0
	}
	return time.Duration(st.ticks) * time.Second / clockTicks
}

// cpuMeter tells how much CPU the rest of the machine used while a run went on: busy time
// of the whole machine minus the harness, the backend, the target and the load generator.
type cpuMeter struct {
	at                     time.Time
	machine, self, backend time.Duration
	target                 time.Duration
	backendPG, targetPG    int
}

func startMeter(backendPG, targetPG int) cpuMeter {
	m := cpuMeter{at: time.Now(), machine: machineCPU(), self: selfCPU(), backendPG: backendPG, targetPG: targetPG}
	m.backend = groupCPU(backendPG)
	if targetPG > 0 {
		m.target = groupCPU(targetPG)
	}
	return m
}

// stop returns the target's CPU time and the other processes' average use in cores.
func (m cpuMeter) stop(loadGen time.Duration) (target time.Duration, otherCores float64) {
	if m.targetPG > 0 {
		target = groupCPU(m.targetPG) - m.target
	}
	ours := target + (groupCPU(m.backendPG) - m.backend) + (selfCPU() - m.self) + loadGen
	other := machineCPU() - m.machine - ours
	wall := time.Since(m.at)
	if wall <= 0 || other < 0 {
		return target, 0
	}
	return target, other.Seconds() / wall.Seconds()
}
