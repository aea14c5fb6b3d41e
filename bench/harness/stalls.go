//go:build linux

package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// stallGap is the smallest gap between two clock reads of a spinning thread that counts as a
// stall: far longer than one read (well under a microsecond) or a timer interrupt.
const stallGap = 100 * time.Microsecond

// stallResult is what spinning threads saw of the machine holding them off their cores
// (the hypervisor running something else, the kernel's own work, other processes).
type stallResult struct {
	Threads   int
	Duration  time.Duration
	Over100us int
	Over500us int
	Over1ms   int
	Max       time.Duration
	Lost      time.Duration // all stalls of all threads, summed
}

// add counts one gap between two clock reads.
func (s *stallResult) add(gap time.Duration) {
	if gap < stallGap {
		return
	}
	s.Over100us++
	s.Lost += gap
	s.Max = max(s.Max, gap)
	if gap >= 500*time.Microsecond {
		s.Over500us++
	}
	if gap >= time.Millisecond {
		s.Over1ms++
	}
}

func (s *stallResult) merge(o stallResult) {
	s.Over100us += o.Over100us
	s.Over500us += o.Over500us
	s.Over1ms += o.Over1ms
	s.Lost += o.Lost
	s.Max = max(s.Max, o.Max)
}

// String is one line for the report.
func (s stallResult) String() string {
	if s.Threads == 0 {
		return "not measured"
	}
	return fmt.Sprintf("a spinning thread on each of the %d cores for %s saw %d stalls over 1 ms (the longest %s), "+
		"%d over 0.5 ms, %d over 0.1 ms: %s lost of %s (%.2f%%)", s.Threads, s.Duration, s.Over1ms, fmtDur(s.Max),
		s.Over500us, s.Over100us, fmtDur(s.Lost), time.Duration(s.Threads)*s.Duration,
		100*s.Lost.Seconds()/(float64(s.Threads)*s.Duration.Seconds()))
}

// measureStalls runs threads spinning threads, each locked to its OS thread, for d (or until
// ctx ends), and counts the gaps between their clock reads. With every core busy, such gaps
// are time a thread was runnable but not running; every request in flight through a thread
// held off its core waits as long.
func measureStalls(ctx context.Context, threads int, d time.Duration) stallResult {
	total := stallResult{Threads: threads, Duration: d}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range threads {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var s stallResult
			start := time.Now()
			end := start.Add(d)
			last := start
			for i := 0; ; i++ {
				now := time.Now()
				s.add(now.Sub(last))
				last = now
				if !now.Before(end) || (i%4096 == 0 && ctx.Err() != nil) {
					break
				}
			}
			mu.Lock()
			total.merge(s)
			mu.Unlock()
		})
	}
	wg.Wait()
	return total
}
