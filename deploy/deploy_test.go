// Package deploy holds no code: its tests check the monitoring files in this
// directory, the Prometheus alert rules (prometheus/), their promtool unit
// tests, and the Grafana dashboard (grafana/).
//
// They need promtool (Debian/Ubuntu: apt-get install prometheus). Without it
// they fail, unless run with -short, when they are skipped.
package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

const (
	alertsFile     = "prometheus/geoproxy-alerts.yml"
	alertTestsFile = "prometheus/geoproxy-alerts_test.yml"
	dashboardFile  = "grafana/geoproxy.json"
)

// promtool returns promtool's path. It fails the test when promtool is not
// installed, or skips it in -short mode.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if testing.Short() {
			t.Skip("promtool is not installed (Debian/Ubuntu: apt-get install prometheus): skipped in -short mode")
		}
		t.Fatal("promtool is not installed: install it (Debian/Ubuntu: apt-get install prometheus), or run go test -short to skip this test")
	}
	return p
}

// runPromtool runs promtool with args and fails the test, with promtool's
// output, when it does not succeed.
func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestAlertRulesPassPromtool(t *testing.T) {
	runPromtool(t, "check", "rules", alertsFile)
	out := runPromtool(t, "test", "rules", alertTestsFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules %s: no SUCCESS in its output:\n%s", alertTestsFile, out)
	}
}

// ruleFile is the part of a Prometheus rule file these tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// alertRules returns the alerting rules of alertsFile.
func alertRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readYAML(t, alertsFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				rules = append(rules, r)
			}
		}
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no alerting rules", alertsFile)
	}
	return rules
}

// TestEveryAlertIsTested checks each alert's labels and annotations, and
// that the promtool unit tests have, for each alert, an evaluation where it
// fires and one where it does not.
func TestEveryAlertIsTested(t *testing.T) {
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name  string `yaml:"name"`
			Evals []struct {
				Alert string `yaml:"alertname"`
				Exp   []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, alertTestsFile, &tests)
	if !slices.Contains(tests.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("%s: rule_files %v does not name %s", alertTestsFile, tests.RuleFiles, filepath.Base(alertsFile))
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, c := range tests.Tests {
		for _, e := range c.Evals {
			if len(e.Exp) > 0 {
				fires[e.Alert]++
			} else {
				quiet[e.Alert]++
			}
		}
	}
	seen := map[string]bool{}
	for _, r := range alertRules(t) {
		if seen[r.Alert] {
			t.Errorf("alert %s: defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s: no %s annotation", r.Alert, a)
			}
		}
		if fires[r.Alert] == 0 {
			t.Errorf("alert %s: %s has no evaluation where it fires", r.Alert, alertTestsFile)
		}
		if quiet[r.Alert] == 0 {
			t.Errorf("alert %s: %s has no evaluation where it does not fire", r.Alert, alertTestsFile)
		}
	}
	for name := range fires {
		if !seen[name] {
			t.Errorf("%s tests alert %s, which %s does not define", alertTestsFile, name, alertsFile)
		}
	}
}

// query is one PromQL expression of the dashboard, with where it is.
type query struct {
	where string // JSON path, e.g. panels[3].targets[0]
	expr  string // as written, with Grafana variables
}

// dashboard reads the dashboard's JSON model.
func dashboard(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// labelValues is Grafana's label_values(SELECTOR, LABEL) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$`)

// dashboardQueries returns every PromQL expression of the dashboard: each
// "expr" (panel targets, annotations) and the selectors of its variables'
// label_values queries.
func dashboardQueries(t *testing.T, d map[string]any) []query {
	t.Helper()
	var qs []query
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if e, ok := v[k].(string); ok && k == "expr" {
					qs = append(qs, query{where: path, expr: e})
					continue
				}
				walk(path+"."+k, v[k])
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	walk("", d)
	for _, v := range templateVars(t, d) {
		if v["type"] != "query" {
			continue
		}
		q, _ := v["query"].(string)
		if m, ok := v["query"].(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		sel := labelValues.FindStringSubmatch(q)
		if sel == nil {
			t.Errorf("%s: variable %v: query %q is not label_values(SELECTOR, LABEL)", dashboardFile, v["name"], q)
			continue
		}
		qs = append(qs, query{where: fmt.Sprintf(".templating.%v", v["name"]), expr: sel[1]})
	}
	for i := range qs {
		qs[i].where = strings.TrimPrefix(qs[i].where, ".")
	}
	return qs
}

func templateVars(t *testing.T, d map[string]any) []map[string]any {
	t.Helper()
	tm, _ := d["templating"].(map[string]any)
	list, _ := tm["list"].([]any)
	var vars []map[string]any
	for _, v := range list {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: templating.list holds %T", dashboardFile, v)
		}
		vars = append(vars, m)
	}
	return vars
}

var (
	grafanaVar = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[A-Za-z]+)?\}|\$([A-Za-z0-9_]+)`)
	// Grafana's own variables, and the durations that stand for them in
	// the expressions promtool checks.
	grafanaDurations = map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
)

// promQL replaces the Grafana variables of expr: interval variables by a
// duration, the dashboard's own (used in regex matchers) by ".*".
func promQL(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		s := grafanaVar.FindStringSubmatch(m)
		name := s[1] + s[2]
		if d, ok := grafanaDurations[name]; ok {
			return d
		}
		return ".*"
	})
}

// TestDashboard checks the dashboard's model (one data source variable used
// by every panel and query, unique panel ids, panels within the grid,
// defined variables) and, with promtool, that every expression parses: they
// are written as recording rules of a temporary rule file for promtool check
// rules.
func TestDashboard(t *testing.T) {
	d := dashboard(t)
	for _, k := range []string{"title", "uid", "panels", "templating", "schemaVersion"} {
		if d[k] == nil {
			t.Errorf("%s: no %q", dashboardFile, k)
		}
	}
	if d["id"] != nil {
		t.Errorf("%s: id is %v; an importable dashboard has \"id\": null", dashboardFile, d["id"])
	}

	defined := map[string]bool{}
	dsVar := ""
	for _, v := range templateVars(t, d) {
		name, _ := v["name"].(string)
		defined[name] = true
		if v["type"] == "datasource" && v["query"] == "prometheus" {
			dsVar = name
		}
	}
	if dsVar == "" {
		t.Fatalf("%s: no data source variable of type prometheus", dashboardFile)
	}
	wantDS := "${" + dsVar + "}"

	panels, _ := d["panels"].([]any)
	if len(panels) == 0 {
		t.Fatalf("%s: no panels", dashboardFile)
	}
	ids := map[float64]string{}
	var checkPanel func(where string, p map[string]any)
	checkPanel = func(where string, p map[string]any) {
		title, _ := p["title"].(string)
		where = fmt.Sprintf("%s (%q)", where, title)
		id, _ := p["id"].(float64)
		if prev, dup := ids[id]; dup {
			t.Errorf("%s: id %v, as %s", where, id, prev)
		}
		ids[id] = where
		g, _ := p["gridPos"].(map[string]any)
		x, _ := g["x"].(float64)
		w, _ := g["w"].(float64)
		h, _ := g["h"].(float64)
		if w <= 0 || h <= 0 || x < 0 || x+w > 24 {
			t.Errorf("%s: gridPos %v is not within the 24 columns", where, g)
		}
		if p["type"] == "row" {
			sub, _ := p["panels"].([]any)
			for i, s := range sub {
				checkPanel(fmt.Sprintf("%s.panels[%d]", where, i), s.(map[string]any))
			}
			return
		}
		if uid := dsUID(p["datasource"]); uid != wantDS {
			t.Errorf("%s: datasource uid %q, want %q", where, uid, wantDS)
		}
		targets, _ := p["targets"].([]any)
		if len(targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		for i, tg := range targets {
			tm := tg.(map[string]any)
			if uid := dsUID(tm["datasource"]); uid != wantDS {
				t.Errorf("%s.targets[%d]: datasource uid %q, want %q", where, i, uid, wantDS)
			}
			if e, _ := tm["expr"].(string); strings.TrimSpace(e) == "" {
				t.Errorf("%s.targets[%d]: no expr", where, i)
			}
		}
	}
	for i, p := range panels {
		checkPanel(fmt.Sprintf("panels[%d]", i), p.(map[string]any))
	}

	qs := dashboardQueries(t, d)
	type recording struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []recording
	for _, q := range qs {
		for _, m := range grafanaVar.FindAllStringSubmatch(q.expr, -1) {
			name := m[1] + m[2]
			if _, builtin := grafanaDurations[name]; !builtin && !defined[name] {
				t.Errorf("%s: %s: variable $%s is not defined", dashboardFile, q.where, name)
			}
		}
		rules = append(rules, recording{Record: "dashboard:" + recordName(q.where), Expr: promQL(q.expr)})
	}
	// JSON is YAML: the rule file is written with encoding/json.
	b, err := json.MarshalIndent(map[string]any{
		"groups": []any{map[string]any{"name": "dashboard", "rules": rules}},
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := runPromtool(t, "check", "rules", file)
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(rules)); !strings.Contains(out, want) {
		t.Fatalf("promtool check rules on the dashboard's %d expressions: want %q in\n%s", len(rules), want, out)
	}
	t.Logf("%s: %d expressions parse", dashboardFile, len(rules))
}

func dsUID(v any) string {
	m, _ := v.(map[string]any)
	uid, _ := m["uid"].(string)
	return uid
}

var notName = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// recordName turns a JSON path into a metric name's tail: panels[3].targets[0]
// becomes panels_3_targets_0.
func recordName(where string) string {
	return strings.Trim(notName.ReplaceAllString(where, "_"), "_")
}
