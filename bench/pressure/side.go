//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"time"
)

// sideResult is what the side client saw: the latency of each request
// answered 200, and every other outcome by name.
type sideResult struct {
	lat  []time.Duration
	errs *tally
}

func (s sideResult) requests() int { return len(s.lat) + s.errs.total() }

// quantile is the q-quantile (0 < q <= 1) of the latencies, nearest rank.
func (s sideResult) quantile(q float64) time.Duration { return quantile(s.lat, q) }

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// sideClient is a normal client: small GETs, one after the other, over one
// kept-alive connection (a new one after a failure), with a pause between
// requests.
type sideClient struct {
	addr    string
	pause   time.Duration // between an answer and the next request
	timeout time.Duration // for one request, connecting included
}

const sideRequest = "GET /side HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pressure-side\r\n\r\n"

// run sends requests for d, or until ctx ends.
func (c sideClient) run(ctx context.Context, d time.Duration) sideResult {
	res := sideResult{errs: newTally()}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var conn net.Conn
	var br *bufio.Reader
	drop := func() {
		if conn != nil {
			_ = conn.Close()
			conn = nil
		}
	}
	defer drop()
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-ctx.Done():
			return res
		case <-pause.C:
		}
		began := time.Now()
		deadline := began.Add(c.timeout)
		if conn == nil {
			dctx, dcancel := context.WithDeadline(ctx, deadline)
			var err error
			conn, err = (&net.Dialer{}).DialContext(dctx, "tcp", c.addr)
			dcancel()
			if err != nil {
				conn = nil
				if ctx.Err() != nil {
					return res
				}
				res.errs.add(dialOutcome(ctx, err))
				pause.Reset(max(c.pause, 10*time.Millisecond))
				continue
			}
			br = bufio.NewReaderSize(conn, 4096)
		}
		stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
		err := c.once(conn, br, deadline)
		stop()
		if ctx.Err() != nil {
			return res // a request cut off by the end of the phase is not counted
		}
		if err != nil {
			res.errs.add(err.Error())
			drop()
		} else {
			res.lat = append(res.lat, time.Since(began))
		}
		pause.Reset(c.pause)
	}
}

// once sends one request on conn and reads its answer; the error names what
// went wrong, as a tally outcome.
func (c sideClient) once(conn net.Conn, br *bufio.Reader, deadline time.Time) error {
	_ = conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, sideRequest); err != nil {
		return errors.New(classify(context.Background(), nil, err))
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return errors.New(classify(context.Background(), nil, err))
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	switch {
	case err != nil:
		return fmt.Errorf("body: %s", classify(context.Background(), nil, err))
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	case resp.Close:
		return errors.New("HTTP 200 with Connection: close")
	}
	return nil
}
