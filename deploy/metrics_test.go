package deploy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// Which metric names exist.
//
// An expression may only use a metric geoproxy exports. Its admin /metrics
// is the truth, but a labelled metric (a CounterVec...) exports nothing, not
// even its HELP line, until it has a child: geoproxy creates most children
// up front (requests, failovers and spill per region, rule matches and
// residency rejections per rule, retry budget per region), but upstream
// errors, ejections and returns appear at their first event. So:
//
//   - the test starts a real server and drives it through those events (a
//     backend that passes its health checks and answers 503 to traffic
//     causes upstream errors, retries, failovers and an ejection, then a
//     return; a client of a rule with allow: [] is refused), and requires a
//     HELP line in the scrape for every metric an expression uses: that
//     checks its name and its type, with nothing assumed;
//   - it also reads the names the Go sources declare (Name: "geoproxy_..."
//     in metric options, prometheus.NewDesc("geoproxy_...")), requires every
//     geoproxy_ family of the scrape to be among them, and names the reason
//     when a used metric is missing: declared but not produced by the test
//     server, or not a geoproxy metric at all.
//
// Histograms are used through their _bucket, _sum and _count series;
// rate(), irate() and increase() only on counters and histogram series.

// moduleRoot is the repository's root, from this package's directory.
const moduleRoot = ".."

var declaredName = regexp.MustCompile(`(?:\bName:\s*|\bNewDesc\(\s*)"(geoproxy_[a-zA-Z0-9_]+)"`)

// declaredMetrics returns the geoproxy_ metric names declared in the
// module's Go sources (tests, testdata and nested modules aside).
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir(moduleRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == moduleRoot {
				return nil
			}
			if n := d.Name(); strings.HasPrefix(n, ".") || n == "testdata" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range declaredName.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no geoproxy_ metric declared in the Go sources")
	}
	return names
}

// family is a metric family of a scrape.
type family struct{ help, typ string }

// scrape reads the families (HELP and TYPE lines) of a Prometheus text
// exposition.
func scrape(t *testing.T, url string) map[string]family {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	fams := map[string]family{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 4)
		if len(f) < 4 || f[0] != "#" {
			continue
		}
		x := fams[f[2]]
		switch f[1] {
		case "HELP":
			x.help = f[3]
		case "TYPE":
			x.typ = f[3]
		}
		fams[f[2]] = x
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return fams
}

// backend is a test backend: it answers /health with 200 and other paths
// with status.
func backend(t *testing.T, status int) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, http.StatusText(status))
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// exportedMetrics starts geoproxy (native engine, embedded geo data) in
// front of two regions: "near", where unlocated clients go first, whose
// backend passes its probes but answers 503, and "far", whose backend
// answers 200. It sends requests from a client the rule "refused" (allow:
// []) matches and from one no rule matches, and scrapes the admin /metrics
// until every family in want is there, or 20 s have passed. It returns the
// last scrape.
func exportedMetrics(t *testing.T, want []string) map[string]family {
	t.Helper()
	conf := fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin:
  listen: 127.0.0.1:0
geoip:
  trusted_proxies: [127.0.0.0/8]
  default_location: {lat: 50.45, lon: 3.82}
health_check:
  path: /health
  interval: 50ms
  timeout: 40ms
  healthy_threshold: 1
  unhealthy_threshold: 1
resilience:
  ejection_time: 1ms
  max_ejection_time: 1ms
  failback_hold: 0s
  slow_start: 0s
rules:
  - name: refused
    match: {networks: [192.0.2.0/24]}
    allow: []
regions:
  - name: near
    location: {lat: 50.45, lon: 3.82}
    backends:
      - url: %s
  - name: far
    location: {lat: 40.71, lon: -74.01}
    backends:
      - url: %s
`, backend(t, http.StatusServiceUnavailable), backend(t, http.StatusOK))
	cfg, err := config.Parse("deploy-test.yaml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Config: cfg, Log: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	proxy := "http://" + srv.ProxyAddr().String() + "/"
	metrics := "http://" + srv.AdminAddr().String() + "/metrics"
	get := func(from string) {
		req, err := http.NewRequest(http.MethodGet, proxy, nil)
		if err != nil {
			t.Fatal(err)
		}
		if from != "" {
			req.Header.Set("X-Forwarded-For", from)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	start := time.Now()
	for rounds := 1; ; rounds++ {
		get("")          // loopback: located at the default location, near "near"
		get("192.0.2.1") // matches "refused"
		fams := scrape(t, metrics)
		missing := slices.DeleteFunc(slices.Clone(want), func(n string) bool { return fams[n].help != "" })
		if len(missing) == 0 {
			t.Logf("every family wanted exported after %d rounds of requests, %v", rounds, time.Since(start).Round(time.Millisecond))
			return fams
		}
		if time.Since(start) > 20*time.Second {
			t.Logf("after %d rounds of requests, %v, still not exported: %s", rounds, time.Since(start).Round(time.Millisecond), strings.Join(missing, " "))
			return fams
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promToken    = regexp.MustCompile(`[A-Za-z0-9_:.]+`)
	promRated    = regexp.MustCompile(`\b(?:rate|irate|increase)\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
	promKeywords = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true,
	}
)

// stripPromQL removes from expr what holds no metric name: strings, label
// matchers, ranges and grouping label lists.
func stripPromQL(expr string) string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, "{}")
	s = promRange.ReplaceAllString(s, "[]")
	return promGrouping.ReplaceAllString(s, " ")
}

// metricNames returns the metric names a PromQL expression selects.
func metricNames(expr string) []string {
	s := stripPromQL(expr)
	var names []string
	for _, loc := range promToken.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if c := tok[0]; c >= '0' && c <= '9' || c == '.' || promKeywords[strings.ToLower(tok)] {
			continue
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if !slices.Contains(names, tok) {
			names = append(names, tok)
		}
	}
	return names
}

func TestMetricNamesInPromQL(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`geoproxy_region_up == 0`, []string{"geoproxy_region_up"}},
		{`histogram_quantile(0.99, sum by (le, region) (rate(a_bucket{job=~"x|y",region!="on(b)"}[5m])))`, []string{"a_bucket"}},
		{`sum(rate(a{code="5xx"}[5m])) by (job) / on (job) group_left () sum without (x) (b) > bool 0.05`, []string{"a", "b"}},
		{"x unless x offset 15m or y[1h:1m] and time() - z > 60 * 86400 or vector(1e3)", []string{"x", "y", "z"}},
		{`max by (instance) (c{}) > Inf`, []string{"c"}},
	} {
		if got := metricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}

// used is a metric name an expression uses, and where.
type used struct{ name, where, expr string }

// TestMetricNamesAreExported checks that every metric name in the alert
// rules and the dashboard is one geoproxy exports (see "Which metric names
// exist" above).
func TestMetricNamesAreExported(t *testing.T) {
	var exprs []query
	for _, r := range alertRules(t) {
		exprs = append(exprs, query{where: alertsFile + ": alert " + r.Alert, expr: r.Expr})
	}
	for _, q := range dashboardQueries(t, dashboard(t)) {
		exprs = append(exprs, query{where: dashboardFile + ": " + q.where, expr: promQL(q.expr)})
	}
	var uses []used
	wantSet := map[string]bool{}
	for _, q := range exprs {
		names := metricNames(q.expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", q.where, q.expr)
		}
		for _, n := range names {
			uses = append(uses, used{name: n, where: q.where, expr: q.expr})
			wantSet[familyOf(n)] = true
		}
	}
	want := make([]string, 0, len(wantSet))
	for n := range wantSet {
		want = append(want, n)
	}
	sort.Strings(want)

	declared := declaredMetrics(t)
	// Wait only for what may come: a name not declared never will.
	fams := exportedMetrics(t, slices.DeleteFunc(slices.Clone(want), func(n string) bool {
		return strings.HasPrefix(n, "geoproxy_") && !declared[n]
	}))
	for n := range fams {
		if strings.HasPrefix(n, "geoproxy_") && !declared[n] {
			t.Errorf("the server exports %s, which this test did not find declared in the Go sources: teach declaredName its form", n)
		}
	}

	for _, u := range uses {
		if err := exported(u.name, fams, declared); err != nil {
			t.Errorf("%s: %v\n\texpr: %s", u.where, err, u.expr)
		}
	}
	for _, q := range exprs {
		for _, m := range promRated.FindAllStringSubmatch(stripPromQL(q.expr), -1) {
			n := m[1]
			if f := fams[familyOf(n)]; f.typ != "" && f.typ != "counter" && !(f.typ == "histogram" && n != familyOf(n)) {
				t.Errorf("%s: rate or increase of %s, a %s", q.where, n, f.typ)
			}
		}
	}
	if !t.Failed() {
		t.Logf("%d expressions use %d metrics, all exported: %s", len(exprs), len(want), strings.Join(want, " "))
	}
}

// familyOf returns the family a series name belongs to: a histogram's
// _bucket, _sum and _count series belong to the histogram.
func familyOf(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(name, s) {
			return strings.TrimSuffix(name, s)
		}
	}
	return name
}

// exported says why name, used in an expression, is not a series geoproxy
// exports (nil when it is).
func exported(name string, fams map[string]family, declared map[string]bool) error {
	if f, ok := fams[name]; ok && f.help != "" {
		if f.typ == "histogram" || f.typ == "summary" {
			return fmt.Errorf("%s is a %s: use its _bucket, _sum or _count series", name, f.typ)
		}
		return nil
	}
	if fam := familyOf(name); fam != name {
		f := fams[fam]
		switch {
		case f.typ == "histogram":
			return nil
		case f.typ == "summary" && !strings.HasSuffix(name, "_bucket"):
			return nil
		case f.help != "":
			return fmt.Errorf("%s: %s is a %s, not a histogram", name, fam, f.typ)
		}
		name = fam
	}
	if declared[name] {
		return fmt.Errorf("%s is declared in the Go sources, but the test server did not export it: make exportedMetrics produce it", name)
	}
	return fmt.Errorf("%s is not a metric geoproxy exports", name)
}
