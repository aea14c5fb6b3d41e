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
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
}

// openLoop sends GET / to addr at a fixed rate over conns keep-alive connections for
// warm+dur, and measures the latency of each request scheduled after warm from the time it
// was scheduled, not from when a connection was free to send it: when the target falls
// behind, the wait counts (no coordinated omission). Requests rotate X-Forwarded-For over
// clients, as the wrk script does. A target that cannot keep up gets drainMax after the
// last scheduled request; what is still unanswered then counts as an error, with the time
// it had waited as its latency (a lower bound).
func openLoop(ctx context.Context, addr string, rate float64, conns int, warm, dur time.Duration) (rateResult, error) {
	const drainMax = 3 * time.Second
	res := rateResult{Rate: rate}
	if rate <= 0 {
		return res, errors.New("rate must be positive")
	}
	reqs := make([][]byte, len(clients))
	for i, c := range clients {
		reqs[i] = fmt.Appendf(nil, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: geoproxy-bench\r\nX-Forwarded-For: %s\r\n\r\n", addr, c.addr)
	}

	// Connect first, so that connection setup is not measured.
	cs := make([]*olConn, conns)
	for i := range cs {
		c, err := dialOL(addr)
		if err != nil {
			for _, c := range cs[:i] {
				_ = c.nc.Close()
			}
			return res, fmt.Errorf("connecting to %s: %w", addr, err)
		}
		cs[i] = c
	}

	type job struct {
		at       time.Time // scheduled send time
		measured bool
	}
	total := int(rate * (warm + dur).Seconds())
	jobs := make(chan job, min(total, 1<<20))
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now().Add(5 * time.Millisecond)
	measureFrom := start.Add(warm)
	deadline := start.Add(warm + dur + drainMax)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	var (
		mu         sync.Mutex
		samples    = make([]time.Duration, 0, int(rate*dur.Seconds())+16)
		okN        atomic.Int64
		unanswered atomic.Int64
		lastErr    atomic.Value
		wg         sync.WaitGroup
	)
	for w, c := range cs {
		wg.Add(1)
		go func(w int, c *olConn) {
			defer wg.Done()
			defer func() { _ = c.nc.Close() }()
			local := make([]time.Duration, 0, cap(samples)/conns+16)
			k := w
			for j := range jobs {
				if ctx.Err() != nil { // out of time: what is left is unanswered
					if j.measured {
						unanswered.Add(1)
						local = append(local, time.Since(j.at))
					}
					continue
				}
				k++
				err := c.do(reqs[k%len(reqs)], deadline)
				lat := time.Since(j.at)
				if err != nil {
					if ctx.Err() != nil {
						if j.measured {
							unanswered.Add(1)
							local = append(local, lat)
						}
						continue
					}
					// Reconnect; the next job tells whether the target is back.
					_ = c.nc.Close()
					if nc, derr := dialOL(addr); derr == nil {
						*c = *nc
					}
					if j.measured {
						lastErr.Store(err.Error())
						local = append(local, lat)
					}
					continue
				}
				if j.measured {
					okN.Add(1)
					local = append(local, lat)
				}
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		}(w, c)
	}

	// Pacer: hand out every request whose time has come, with its own time, then sleep until
	// the next one. Go's timers wake sub-millisecond sleeps about 1 ms late here, which would
	// send the load in bursts; nanosleep on a locked thread is late by some 50 µs.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	measuredSent := 0
	for i := 0; i < total && ctx.Err() == nil; {
		now := time.Now()
		for i < total {
			at := start.Add(time.Duration(i) * interval)
			if at.After(now) {
				break
			}
			m := !at.Before(measureFrom)
			if m {
				measuredSent++
			}
			jobs <- job{at: at, measured: m} // workers drain the channel even when out of time
			i++
		}
		if i < total {
			sleep(min(time.Until(start.Add(time.Duration(i)*interval)), time.Millisecond))
		}
	}
	close(jobs)
	wg.Wait()
	finished := time.Now()

	res.Sent = measuredSent
	res.OK = int(okN.Load())
	res.Errors = measuredSent - res.OK
	res.Unanswered = int(unanswered.Load())
	if res.OK == 0 {
		msg, _ := lastErr.Load().(string)
		return res, fmt.Errorf("no request to %s succeeded (%d failed, last error: %s)", addr, res.Errors, msg)
	}
	res.Achieved = float64(res.OK) / max(finished.Sub(measureFrom).Seconds(), dur.Seconds())
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

// sleep for d with nanosleep(2), precise to the kernel's timer slack.
func sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}

// percentile of sorted samples, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// olConn is a minimal HTTP/1.1 keep-alive client connection: enough for GET with a
// Content-Length or chunked response, cheap enough not to compete with the target.
type olConn struct {
	nc net.Conn
	br *bufio.Reader
}

func dialOL(addr string) (*olConn, error) {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return &olConn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10)}, nil
}

var errStatus = errors.New("status not 200")

func (c *olConn) do(req []byte, deadline time.Time) error {
	d := time.Now().Add(5 * time.Second)
	if deadline.Before(d) {
		d = deadline
	}
	_ = c.nc.SetDeadline(d)
	if _, err := c.nc.Write(req); err != nil {
		return err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return fmt.Errorf("bad status line %q", line)
	}
	status := string(line[9:12])
	length, chunked, closeConn := int64(-1), false, false
	for {
		h, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(v), 10, 64); err != nil {
				return fmt.Errorf("bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(v), []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closeConn = bytes.EqualFold(v, []byte("close"))
		}
	}
	switch {
	case chunked:
		if err := skipChunked(c.br); err != nil {
			return err
		}
	case length >= 0:
		if _, err := c.br.Discard(int(length)); err != nil {
			return err
		}
	default:
		return errors.New("response without Content-Length or chunked body")
	}
	if closeConn {
		return errors.New("target closed the connection")
	}
	if status != "200" {
		return fmt.Errorf("%w: %s", errStatus, status)
	}
	return nil
}

func skipChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, then the empty line
				t, err := br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n)); err != nil {
			return err
		}
		if _, err := io.ReadFull(br, make([]byte, 2)); err != nil {
			return err
		}
	}
}
