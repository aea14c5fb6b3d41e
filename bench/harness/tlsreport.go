//go:build linux

package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/geoproxy/geoproxy/bench/internal/mdreport"
)

// tlsSetup is how each target's TLS listener is configured.
const tlsSetup = "one certificate for all, made by the harness at the start (self-signed, ECDSA P-256, for 127.0.0.1, ::1 and " +
	"localhost); nginx: a second `server` with `listen … ssl http2`, `ssl_certificate`, `ssl_certificate_key`, " +
	"`ssl_protocols TLSv1.2 TLSv1.3` and the same `location`; HAProxy: a second frontend, `bind … ssl crt <certificate and key in one PEM> " +
	"alpn h2,http/1.1 ssl-min-ver TLSv1.2`, the same backend; Caddy: a second site with `tls <certificate> <key>`, `protocols h1 h2`; " +
	"geoproxy: `tls.listen` and `tls.certificates` (TLS 1.2 and up); by ALPN, HTTP/1.1 on the native engine's goroutines " +
	"and HTTP/2 on Go's net/http server, while its plain listener stays on the engine's own loops. Each proxies to the same backend over plain HTTP"

// tlsCases are the TLS cases that ran.
func (rp *report) tlsCases() []string {
	var cs []string
	for _, c := range []string{caseHTTPS, caseH2} {
		if rp.opts.has(c) {
			cs = append(cs, c)
		}
	}
	return cs
}

// caseRPS is t's median req/s in case c (0 if it did not run).
func (t *target) caseRPS(c string) float64 {
	switch c {
	case casePlain:
		return median(rps(t.runs))
	case caseHTTPS:
		return median(rps(t.https))
	case caseH2:
		xs := make([]float64, len(t.h2))
		for i, r := range t.h2 {
			xs[i] = r.RPS
		}
		return median(xs)
	}
	return 0
}

// findCase is the target called name if it was measured in case c.
func (rp *report) findCase(name, c string) *target {
	for _, t := range rp.targets {
		if t.name == name && t.skipped == "" && t.caseRPS(c) > 0 {
			return t
		}
	}
	return nil
}

// ratioLine is geoproxy's median req/s in case c divided by each peer's, or "" if geoproxy
// or every peer was not measured in it.
func (rp *report) ratioLine(c string) string {
	gp := rp.findCase("geoproxy", c)
	if gp == nil {
		return ""
	}
	var parts []string
	for _, peer := range []string{"nginx", "haproxy", "caddy"} {
		ref := rp.findCase(peer, c)
		if ref == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("÷ %s %.2f× (%s vs %s req/s)", displayName[peer], gp.caseRPS(c)/ref.caseRPS(c),
			fmtInt(gp.caseRPS(c)), fmtInt(ref.caseRPS(c))))
	}
	if len(parts) == 0 {
		return ""
	}
	return "geoproxy " + strings.Join(parts, ", ")
}

// ratioLines: one line per case that ran, printed at the end of the run.
func (rp *report) ratioLines() []string {
	var out []string
	for _, c := range allCases {
		if line := rp.ratioLine(c); rp.opts.has(c) && line != "" {
			out = append(out, fmt.Sprintf("%-5s  %s", c, line))
		}
	}
	return out
}

// tlsMarkdown is the report's section on the TLS cases ("" if none ran).
func (rp *report) tlsMarkdown() string {
	o := rp.opts
	if !o.tlsOn() {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("\n## HTTPS: the same proxies over TLS\n\n")
	if len(rp.tlsSet) == 0 {
		w("Not run: no target with a TLS listener (direct, the backend itself, speaks plain HTTP only).\n")
		return b.String()
	}
	w("Each proxy runs again, once the plain case is done, from the same config plus a TLS listener with the same certificate:\n")
	w("%s. direct is not measured (the backend speaks no TLS). Rows are named with the case, so that the plain table's\n", tlsSetup)
	w("rows stay the only ones called by the target's name.\n")
	peers := []string{"nginx", "haproxy", "caddy"}
	vs := func(t *target, c string) string {
		var s string
		for _, peer := range peers {
			ref := rp.findCase(peer, c)
			if ref == nil {
				s += " – |"
				continue
			}
			s += fmt.Sprintf(" %.2f× |", t.caseRPS(c)/ref.caseRPS(c))
		}
		return s
	}
	plainOf := func(t *target, c string) string {
		if t.caseRPS(casePlain) == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", t.caseRPS(c)/t.caseRPS(casePlain))
	}
	rounds := func(c string, get func(*target) []float64, busy func(*target) []float64) {
		w("\nreq/s in each round (run order rotated each round):\n\n| target |")
		for r := 1; r <= o.rounds; r++ {
			w(" round %d |", r)
		}
		w("\n|---|%s\n", strings.Repeat("--:|", o.rounds))
		for _, t := range rp.tlsSet {
			w("| %s (%s) |", t.name, c)
			others := busy(t)
			for i, x := range get(t) {
				if others[i] >= busyCores {
					w(" %s (busy %.1f) |", fmtInt(x), others[i])
				} else {
					w(" %s |", fmtInt(x))
				}
			}
			w("\n")
		}
	}

	if o.has(caseHTTPS) {
		w("\n### HTTP/1.1 over TLS: wrk, fixed concurrency\n\n")
		w("wrk `-t%d -c%d` with an https URL: HTTP/1.1 with keep-alive (no ALPN), so each run makes %d TLS handshakes and then\n", o.threads, o.conns, o.conns)
		w("only encrypts and decrypts records. %s per run after a %s warm-up per target, %d round(s), targets interleaved\n", o.duration, o.warmup, o.rounds)
		w("(order rotated each round), medians over rounds; the same load script as the plain case.\n\n")
		if line := rp.ratioLine(caseHTTPS); line != "" {
			w("**Over HTTPS: %s.**", line)
			if pl := rp.ratioLine(casePlain); pl != "" {
				w(" Plain, same run: %s.", pl)
			}
			w("\n\n")
		}
		w("| target | req/s | p50 | p99 | CPU s/100k req | peak RSS ¹ | vs nginx | vs HAProxy | vs Caddy | https ÷ plain | negotiated ² |\n")
		w("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
		var notes []string
		for _, t := range rp.tlsSet {
			if len(t.https) == 0 {
				continue
			}
			w("| %s (https) | %s | %s | %s | %.2f | %s |%s %s | %s |\n", t.name, fmtInt(t.caseRPS(caseHTTPS)),
				fmtDur(medLatency(t.https, false)), fmtDur(medLatency(t.https, true)), median(t.httpsCPU),
				mdreport.MB(t.tlsRSS), vs(t, caseHTTPS), plainOf(t, caseHTTPS), orDash(t.suite))
			var sock, non2xx, total int64
			for _, r := range t.https {
				sock += r.SocketErrs
				non2xx += r.Non2xx
				total += r.Requests
			}
			if sock+non2xx > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d socket errors and %d non-2xx answers in %s requests", t.name, sock, non2xx, fmtInt(float64(total))))
			}
		}
		w("\n¹ Peak RSS of the target's TLS instance, read after the TLS rounds (https, and h2 if it ran).\n")
		w("² What OpenSSL's default client, which wrk uses, negotiates with the target (`openssl s_client`).\n")
		if len(notes) > 0 {
			w("\nErrors during the https rounds: %s.\n", strings.Join(notes, "; "))
		} else {
			w("\nNo errors: every request of every https run got a 2xx answer.\n")
		}
		rounds(caseHTTPS, func(t *target) []float64 { return rps(t.https) }, func(t *target) []float64 {
			xs := make([]float64, len(t.https))
			for i, r := range t.https {
				xs[i] = r.Other
			}
			return xs
		})
	}

	if o.has(caseH2) {
		country, region := "", ""
		for _, c := range clients {
			if c.addr == rp.h2XFF {
				country = c.country
			}
		}
		if gp := rp.findCase("geoproxy", caseH2); gp != nil {
			region = gp.regions[rp.h2XFF]
		}
		w("\n### HTTP/2: h2load, fixed concurrency\n\n")
		w("h2load `-t%d -c%d -m%d` (%s, %d requests in flight), HTTP/2 by ALPN, %s per run after a %s warm-up per target,\n",
			o.threads, o.conns, o.h2Streams, orDash(rp.h2load), o.conns*o.h2Streams, o.duration, o.warmup)
		w("%d round(s), interleaved, medians. h2load sends the same headers on every request: `X-Forwarded-For: %s` (%s)",
			o.rounds, rp.h2XFF, country)
		if region != "" {
			w(", which geoproxy routes to %s", region)
		}
		w(". Latency: h2load's mean and longest time for request (it reports no percentiles).\n\n")
		if line := rp.ratioLine(caseH2); line != "" {
			w("**Over HTTP/2: %s.**\n\n", line)
		}
		w("| target | req/s | mean | max | CPU s/100k req | vs nginx | vs HAProxy | vs Caddy | h2 ÷ plain | errors |\n")
		w("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, t := range rp.tlsSet {
			if len(t.h2) == 0 {
				continue
			}
			var means []time.Duration
			var mx time.Duration
			var errs, total int64
			for _, r := range t.h2 {
				means = append(means, r.Mean)
				mx = max(mx, r.Max)
				errs += r.errors()
				total += r.Requests
			}
			w("| %s (h2) | %s | %s | %s | %.2f |%s %s | %d of %s |\n", t.name, fmtInt(t.caseRPS(caseH2)), fmtDur(medianDur(means)),
				fmtDur(mx), median(t.h2CPU), vs(t, caseH2), plainOf(t, caseH2), errs, fmtInt(float64(total)))
		}
		w("\nmean: median over rounds; max: the longest in any round; errors: failed, errored, timed out or non-2xx, all rounds.\n")
		rounds(caseH2, func(t *target) []float64 {
			xs := make([]float64, len(t.h2))
			for i, r := range t.h2 {
				xs[i] = r.RPS
			}
			return xs
		}, func(t *target) []float64 {
			xs := make([]float64, len(t.h2))
			for i, r := range t.h2 {
				xs[i] = r.Other
			}
			return xs
		})
	}
	w("\n%s\n", rp.noiseTLS())
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
