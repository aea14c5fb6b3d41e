//go:build linux

package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// memStatus is what /proc/PID/status says about a process's memory.
type memStatus struct {
	rss uint64 // VmRSS: resident now, bytes
	hwm uint64 // VmHWM: the peak of VmRSS since start or since resetPeak, bytes
}

// parseStatus reads VmRSS and VmHWM from the text of /proc/PID/status.
func parseStatus(r io.Reader) (memStatus, error) {
	var m memStatus
	var seen int
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(rest) // "   1234 kB"
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("status: %s: unexpected value %q", key, rest)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("status: %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.rss = kb << 10
		} else {
			m.hwm = kb << 10
		}
		seen++
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if seen < 2 {
		return m, fmt.Errorf("status: no VmRSS and VmHWM lines (a kernel thread, or a process that has exited)")
	}
	return m, nil
}

// readStatus reads VmRSS and VmHWM of process pid.
func readStatus(pid int) (memStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	defer f.Close()
	m, err := parseStatus(f)
	if err != nil {
		return m, fmt.Errorf("/proc/%d/%w", pid, err)
	}
	return m, nil
}

// countFDs is how many file descriptors process pid has open.
func countFDs(pid int) (int, error) {
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(1024)
		n += len(names)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// resetPeak sets VmHWM of process pid back to its VmRSS (writing 5 to
// /proc/PID/clear_refs), so that VmHWM read later is the peak since now.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// usage is what a sampler saw of a process over a phase.
type usage struct {
	samples  int
	peakRSS  uint64 // the largest VmRSS sampled
	peakFDs  int
	lastRSS  uint64 // the last sample
	lastFDs  int
	firstErr error // the first failed read, if any (the process may have exited)
}

// sample reads the process's VmRSS and open descriptors every interval
// until ctx ends, and returns what it saw. The first sample is taken at
// once and one more as ctx ends, so a phase always has its last values.
func sample(ctx context.Context, pid int, every time.Duration) usage {
	var u usage
	take := func() {
		m, err := readStatus(pid)
		if err == nil {
			var n int
			if n, err = countFDs(pid); err == nil {
				u.samples++
				u.peakRSS = max(u.peakRSS, m.rss)
				u.peakFDs = max(u.peakFDs, n)
				u.lastRSS, u.lastFDs = m.rss, n
			}
		}
		if err != nil && u.firstErr == nil {
			u.firstErr = err
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	take()
	for {
		select {
		case <-ctx.Done():
			take()
			return u
		case <-t.C:
			take()
		}
	}
}

// clockTicks is USER_HZ: /proc/PID/stat counts CPU time in 1/100 s on Linux.
const clockTicks = 100

// parseCPU reads the CPU time (user + system, all threads) from the text
// of /proc/PID/stat.
func parseCPU(stat []byte) (time.Duration, error) {
	_, d, err := parseStat(stat)
	return d, err
}

// parseStat reads the command name and the CPU time (user + system, all
// threads) from the text of /proc/PID/stat.
func parseStat(stat []byte) (name string, cpu time.Duration, err error) {
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	s := string(stat)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return "", 0, fmt.Errorf("stat: unexpected format")
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 13 {
		return "", 0, fmt.Errorf("stat: unexpected format")
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return "", 0, fmt.Errorf("stat: unexpected format")
	}
	return s[i+1 : j], time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// procTime is a process's name and the CPU time it has used.
type procTime struct {
	name string
	cpu  time.Duration
}

// allProcTimes reads the name and CPU time of every process on the machine.
func allProcTimes() map[int]procTime {
	out := map[int]procTime{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if name, cpu, err := parseStat(b); err == nil {
			out[pid] = procTime{name, cpu}
		}
	}
	return out
}

// busiest names the processes that used the most CPU between two readings
// of allProcTimes over wall, leaving out the pids in skip: up to three
// names (processes of the same name together) that used at least 0.05
// cores each, as "name 0.45, other 0.12".
func busiest(before, after map[int]procTime, wall time.Duration, skip ...int) string {
	if wall <= 0 {
		return ""
	}
	byName := map[string]time.Duration{}
	for pid, a := range after {
		if slices.Contains(skip, pid) {
			continue
		}
		used := a.cpu
		if b, ok := before[pid]; ok && b.name == a.name {
			used -= b.cpu
		}
		byName[a.name] += used
	}
	names := make([]string, 0, len(byName))
	for n, d := range byName {
		if d.Seconds()/wall.Seconds() >= 0.05 {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		if byName[a] != byName[b] {
			return cmp.Compare(byName[b], byName[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, 3)
	for _, n := range names[:min(3, len(names))] {
		parts = append(parts, fmt.Sprintf("%s %.2f", n, byName[n].Seconds()/wall.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// readCPU is the CPU time process pid has used so far (pid 0: this process).
func readCPU(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseCPU(b)
}

// machineCPU is the CPU time the whole machine has spent busy (user, nice,
// system, steal) since boot, from the first line of /proc/stat, as
// bench/harness counts it.
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected format")
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 8} {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuMeter measures the CPU time of the proxy, of this process (the attack
// clients, the backend and the side client) and of the rest of the machine
// over a span of time.
type cpuMeter struct {
	pid                  int
	at                   time.Time
	proxy, self, machine time.Duration
	procs                map[int]procTime
}

func startCPU(pid int) cpuMeter {
	m := cpuMeter{pid: pid, at: time.Now(), procs: allProcTimes()}
	m.proxy, _ = readCPU(pid)
	m.self, _ = readCPU(0)
	m.machine, _ = machineCPU()
	return m
}

// cores returns the average number of cores each used since start, and
// the busiest of the other processes.
func (m cpuMeter) cores() (proxy, self, other float64, others string) {
	d := time.Since(m.at)
	wall := d.Seconds()
	p, err1 := readCPU(m.pid)
	s, err2 := readCPU(0)
	all, err3 := machineCPU()
	if wall <= 0 || err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, ""
	}
	proxy, self = (p-m.proxy).Seconds()/wall, (s-m.self).Seconds()/wall
	other = max(0, (all-m.machine).Seconds()/wall-proxy-self)
	return proxy, self, other, busiest(m.procs, allProcTimes(), d, m.pid, os.Getpid())
}
