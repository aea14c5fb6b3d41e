//go:build linux

package main

import (
	"context"
	"runtime"
	"time"

	"github.com/geoproxy/geoproxy/bench/internal/procfs"
)

// machineCPU is the CPU time the whole machine has spent busy since boot,
// 0 if /proc/stat cannot be read.
func machineCPU() time.Duration {
	d, _ := procfs.MachineCPU()
	return d
}

// selfCPU is the harness's own CPU time.
func selfCPU() time.Duration {
	st, _ := procfs.ReadStat(0)
	return st.CPU
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
	m.backend = procfs.GroupCPU(backendPG)
	if targetPG > 0 {
		m.target = procfs.GroupCPU(targetPG)
	}
	return m
}

// stop returns the target's CPU time and the other processes' average use in cores.
func (m cpuMeter) stop(loadGen time.Duration) (target time.Duration, otherCores float64) {
	if m.targetPG > 0 {
		target = procfs.GroupCPU(m.targetPG) - m.target
	}
	ours := target + (procfs.GroupCPU(m.backendPG) - m.backend) + (selfCPU() - m.self) + loadGen
	other := machineCPU() - m.machine - ours
	wall := time.Since(m.at)
	if wall <= 0 || other < 0 {
		return target, 0
	}
	return target, other.Seconds() / wall.Seconds()
}
