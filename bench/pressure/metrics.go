//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// engineMemory is what the proxy's metrics say about the native engine's
// memory budget for requests.
type engineMemory struct {
	ok      bool  // the proxy exports these metrics
	used    int64 // geoproxy_request_memory_bytes
	limit   int64 // geoproxy_request_memory_limit_bytes
	refused int64 // geoproxy_request_memory_refusals_total
	goLimit int64 // go_gc_gomemlimit_bytes: Go's soft memory limit; 0 when none is set
}

// parseEngineMemory reads the request memory metrics from a Prometheus
// text exposition.
func parseEngineMemory(r io.Reader) (engineMemory, error) {
	var m engineMemory
	seen := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		var dst *int64
		switch name {
		case "geoproxy_request_memory_bytes":
			dst = &m.used
		case "geoproxy_request_memory_limit_bytes":
			dst = &m.limit
		case "geoproxy_request_memory_refusals_total":
			dst = &m.refused
		case "go_gc_gomemlimit_bytes":
			f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err == nil && f < math.MaxInt64/2 {
				m.goLimit = int64(f)
			}
			continue
		default:
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return m, fmt.Errorf("metrics: %s: %w", name, err)
		}
		*dst = int64(f)
		seen++
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	m.ok = seen == 3
	return m, nil
}

// scrapeEngineMemory reads the request memory metrics from the admin
// listener at addr.
func scrapeEngineMemory(ctx context.Context, addr string) (engineMemory, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return engineMemory{}, err
	}
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return engineMemory{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return engineMemory{}, fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	return parseEngineMemory(resp.Body)
}

// engineWatch is what scraping the proxy's metrics over a phase saw.
type engineWatch struct {
	last     engineMemory // the last scrape that worked
	peakUsed int64        // the most held for requests in any scrape
	scrapes  int
}

// watchEngineMemory scrapes the request memory metrics every interval until
// ctx ends, once more at the end.
func watchEngineMemory(ctx context.Context, addr string, every time.Duration) engineWatch {
	var w engineWatch
	take := func(ctx context.Context) {
		m, err := scrapeEngineMemory(ctx, addr)
		if err != nil || !m.ok {
			return
		}
		w.last, w.peakUsed = m, max(w.peakUsed, m.used)
		w.scrapes++
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last scrape outlives ctx by at most its own timeout.
			take(context.WithoutCancel(ctx))
			return w
		case <-t.C:
			take(ctx)
		}
	}
}
