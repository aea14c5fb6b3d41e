//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	Requests   int64
	Seconds    float64
	RPS        float64
	P50, P99   time.Duration
	SocketErrs int64 // connect + read + write + timeout
	Non2xx     int64 // "Non-2xx or 3xx responses"

	WrkCPU time.Duration // wrk's own CPU time
	Other  float64       // CPU used meanwhile by other processes on the machine, in cores
}

func (r wrkResult) errors() int64 { return r.SocketErrs + r.Non2xx }

// runWrk runs wrk closed-loop against url for d with the given threads and connections.
func runWrk(ctx context.Context, script, url string, threads, conns int, d time.Duration) (wrkResult, string, error) {
	secs := int(d.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+20*time.Second)
	defer cancel()
	args := []string{
		"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", secs),
		"--timeout", "2s", "--latency", "-s", script, url,
	}
	cmd := exec.CommandContext(ctx, "wrk", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, string(out), fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, indent(string(out)))
	}
	r, err := parseWrk(string(out))
	r.WrkCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if err != nil {
		return r, string(out), fmt.Errorf("wrk %s: %v; its output:\n%s", strings.Join(args, " "), err, indent(string(out)))
	}
	return r, string(out), nil
}

var (
	reRequests = regexp.MustCompile(`^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),`)
	reRPS      = regexp.MustCompile(`^Requests/sec:\s+([0-9.]+)`)
	rePct      = regexp.MustCompile(`^\s*(50|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	reSocket   = regexp.MustCompile(`^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`^\s*Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads the text wrk 4 prints with --latency.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReq, haveRPS, have50, have99, inDist bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "Latency Distribution") {
			inDist = true
			continue
		}
		if m := rePct.FindStringSubmatch(line); m != nil && inDist {
			d, err := parseWrkDuration(m[2], m[3])
			if err != nil {
				return r, err
			}
			if m[1] == "50" {
				r.P50, have50 = d, true
			} else {
				r.P99, have99 = d, true
			}
			continue
		}
		if m := reRequests.FindStringSubmatch(line); m != nil {
			inDist = false
			r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
			d, err := parseWrkDuration(m[2], m[3])
			if err != nil {
				return r, err
			}
			r.Seconds = d.Seconds()
			haveReq = true
			continue
		}
		if m := reSocket.FindStringSubmatch(line); m != nil {
			for _, s := range m[1:] {
				n, _ := strconv.ParseInt(s, 10, 64)
				r.SocketErrs += n
			}
			continue
		}
		if m := reNon2xx.FindStringSubmatch(line); m != nil {
			r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
			continue
		}
		if m := reRPS.FindStringSubmatch(line); m != nil {
			r.RPS, _ = strconv.ParseFloat(m[1], 64)
			haveRPS = true
		}
	}
	var missing []string
	if !haveReq {
		missing = append(missing, `"N requests in T"`)
	}
	if !haveRPS {
		missing = append(missing, `"Requests/sec"`)
	}
	if !have50 || !have99 {
		missing = append(missing, "the 50% and 99% lines of the latency distribution")
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("cannot read wrk's output: no %s", strings.Join(missing, ", "))
	}
	return r, nil
}

func parseWrkDuration(num, unit string) (time.Duration, error) {
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("bad number %q in wrk output", num)
	}
	scale := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}[unit]
	return time.Duration(v * scale), nil
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
