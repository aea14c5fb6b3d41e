//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// rateResult is one fixed-rate (open-loop) run.
type rateResult struct {
	Rate     float64 // requests per second asked for
	Achieved float64 // responses per second received in the measured window
	Sent     int     // requests scheduled in the measured window
	OK       int     // 200 answers among them
	Errors   int     // failed, non-200 or unanswered among them
	// Unanswered: still waiting when the run's time was up (included in Errors; their
	// wait so far is in the percentiles).
	Unanswered int
	P50, P90   time.Duration
	P99        time.Duration
	P999       time.Duration
	Max        time.Duration
	Other      float64 // CPU used meanwhile by other processes on the machine, in cores
	Load       float64 // CPU used by the load itself (its one thread), in cores
}

// openLoop sends GET / to addr at a fixed rate over conns keep-alive connections for
// warm+dur, and measures the latency of each request scheduled after warm from the time it
// was scheduled, not from when a connection was free to send it: when the target falls
// behind, the wait counts (no coordinated omission). Requests rotate X-Forwarded-For over
// clients, as the wrk script does. A target that cannot keep up gets drainMax after the
// last scheduled request; what is still unanswered then counts as an error, with the time
// it had waited as its latency (a lower bound).
//
// The whole load runs on one locked OS thread, as wrk2 does: non-blocking sockets in an
// epoll set, and a timerfd armed for the next request's time. A request due while every
// connection is busy waits for the first one free. It costs about what a goroutine per
// connection did (0.44 of a core at 34,000 req/s), but adds less latency of its own (a
// direct p50 of 23 µs, against 74) and moves between CPUs a sixth as often.
func openLoop(ctx context.Context, addr string, rate float64, conns int, warm, dur time.Duration) (rateResult, error) {
	const drainMax = 3 * time.Second
	res := rateResult{Rate: rate}
	if rate <= 0 || conns <= 0 {
		return res, errors.New("rate and connections must be positive")
	}
	sa, err := sockaddr(addr)
	if err != nil {
		return res, err
	}
	reqs := make([][]byte, len(clients))
	for i, c := range clients {
		reqs[i] = fmt.Appendf(nil, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: geoproxy-bench\r\nX-Forwarded-For: %s\r\n\r\n", addr, c.addr)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g, err := newGen(sa, conns)
	if err != nil {
		return res, err
	}
	defer g.close()

	total := int(rate * (warm + dur).Seconds())
	// at is request i's scheduled time, from the start.
	at := func(i int) time.Duration { return time.Duration(float64(i) * float64(time.Second) / rate) }
	firstMeasured := sort.Search(total, func(i int) bool { return at(i) >= warm })
	samples := make([]time.Duration, 0, total-firstMeasured+16)
	var lastErr string
	record := func(i int, lat time.Duration, err error) {
		if i < firstMeasured {
			return
		}
		samples = append(samples, lat)
		if err != nil {
			lastErr = err.Error()
			return
		}
		res.OK++
	}

	var ru0 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru0)
	// The timer runs on CLOCK_MONOTONIC, Go's clock too. Go's is read first: whatever passes
	// between the two reads makes the timer late, never early.
	t0 := time.Now()
	mono, err := monotonic()
	if err != nil {
		return res, err
	}
	start := t0.Add(5 * time.Millisecond)
	mono += 5 * time.Millisecond // CLOCK_MONOTONIC at start, or a little after
	deadline := warm + dur + drainMax
	next, armed := 0, time.Duration(-1)
	events := make([]unix.EpollEvent, conns+1)
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		now := time.Since(start)
		// Send what is due on the free connections.
		for next < total && at(next) <= now {
			c := g.free()
			if c == nil {
				break
			}
			c.k++
			if err := g.send(c, reqs[c.k%len(reqs)], next); err != nil {
				record(next, time.Since(start)-at(next), err)
				g.fail(c)
			}
			next++
		}
		if next == total && g.busy == 0 {
			break
		}
		if now >= deadline {
			break
		}
		// Wake for the next request when a connection is free to take it.
		if next < total && g.idle() && armed != at(next) {
			armed = at(next)
			if err := g.arm(mono + armed); err != nil {
				return res, err
			}
		}
		wait := 100
		if g.down() {
			wait = 10 // so that reconnects keep their pace
		}
		n, err := g.wait(events, wait)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return res, fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == g.tfd {
				g.drainTimer()
				armed = -1 // whatever it was armed for, arm again if needed
				continue
			}
			c := g.conns[ev.Pad]
			for fill := true; c.fd >= 0; fill = false {
				done, err := c.receive(fill)
				if !done && err == nil {
					break // more to come
				}
				if c.inflight >= 0 {
					record(c.inflight, time.Since(start)-at(c.inflight), err)
				}
				if err != nil && (!done || errors.Is(err, errClosed)) {
					g.fail(c)
					break
				}
				g.release(c) // a whole answer, even a refusal, leaves the connection usable
			}
		}
		g.revive()
	}
	end := time.Since(start)
	// What is still waiting when time is up is unanswered, with its wait so far.
	for _, c := range g.conns {
		if c.inflight >= firstMeasured {
			res.Unanswered++
			samples = append(samples, end-at(c.inflight))
		}
	}
	for i := max(next, firstMeasured); i < total; i++ {
		res.Unanswered++
		samples = append(samples, end-at(i))
	}
	var ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru1)
	res.Load = (time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())).Seconds() / max(end.Seconds(), 1e-9)

	res.Sent = total - firstMeasured
	res.Errors = res.Sent - res.OK
	if res.OK == 0 {
		if lastErr == "" {
			lastErr = "none answered"
		}
		return res, fmt.Errorf("no request to %s succeeded (%d failed, last error: %s)", addr, res.Errors, lastErr)
	}
	res.Achieved = float64(res.OK) / max((end-warm).Seconds(), dur.Seconds())
	slices.Sort(samples)
	res.P50 = percentile(samples, 0.50)
	res.P90 = percentile(samples, 0.90)
	res.P99 = percentile(samples, 0.99)
	res.P999 = percentile(samples, 0.999)
	res.Max = samples[len(samples)-1]
	return res, nil
}

// overloaded: the target did not keep up with the rate.
func (r rateResult) overloaded() bool { return r.Unanswered > 0 || r.Achieved < 0.95*r.Rate }

// percentile of sorted samples, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
