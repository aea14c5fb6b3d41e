//go:build linux

package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/geoproxy/geoproxy/bench/internal/procfs"
)

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
		m, err := procfs.ReadStatus(pid)
		if err == nil {
			var n int
			if n, err = procfs.CountFDs(pid); err == nil {
				u.samples++
				u.peakRSS = max(u.peakRSS, m.RSS)
				u.peakFDs = max(u.peakFDs, n)
				u.lastRSS, u.lastFDs = m.RSS, n
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

// busiest names the processes that used the most CPU between two readings
// of procfs.All over wall, leaving out the pids in skip: up to three
// names (processes of the same name together) that used at least 0.05
// cores each, as "name 0.45, other 0.12".
func busiest(before, after map[int]procfs.Stat, wall time.Duration, skip ...int) string {
	if wall <= 0 {
		return ""
	}
	byName := map[string]time.Duration{}
	for pid, a := range after {
		if slices.Contains(skip, pid) {
			continue
		}
		used := a.CPU
		if b, ok := before[pid]; ok && b.Name == a.Name {
			used -= b.CPU
		}
		byName[a.Name] += used
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

// cpuMeter measures the CPU time of the proxy, of this process (the attack
// clients, the backend and the side client) and of the rest of the machine
// over a span of time.
type cpuMeter struct {
	pid                  int
	at                   time.Time
	proxy, self, machine time.Duration
	procs                map[int]procfs.Stat
}

func startCPU(pid int) cpuMeter {
	m := cpuMeter{pid: pid, at: time.Now(), procs: procfs.All()}
	proxy, _ := procfs.ReadStat(pid)
	self, _ := procfs.ReadStat(0)
	m.proxy, m.self = proxy.CPU, self.CPU
	m.machine, _ = procfs.MachineCPU()
	return m
}

// cores returns the average number of cores each used since start, and
// the busiest of the other processes.
func (m cpuMeter) cores() (proxy, self, other float64, others string) {
	d := time.Since(m.at)
	wall := d.Seconds()
	p, err1 := procfs.ReadStat(m.pid)
	s, err2 := procfs.ReadStat(0)
	all, err3 := procfs.MachineCPU()
	if wall <= 0 || err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, ""
	}
	proxy, self = (p.CPU-m.proxy).Seconds()/wall, (s.CPU-m.self).Seconds()/wall
	other = max(0, (all-m.machine).Seconds()/wall-proxy-self)
	return proxy, self, other, busiest(m.procs, procfs.All(), d, m.pid, os.Getpid())
}
