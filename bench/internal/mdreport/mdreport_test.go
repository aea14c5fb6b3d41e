package mdreport

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMB(t *testing.T) {
	for n, want := range map[uint64]string{0: "0.0 MB", 51_234_567: "51.2 MB", 1_250_000_000: "1250.0 MB"} {
		if got := MB(n); got != want {
			t.Errorf("MB(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestTable(t *testing.T) {
	got := Table([][2]string{{"CPU", "test CPU, 2 cores"}, {"Go", "go1.26"}})
	if want := "| | |\n|---|---|\n| CPU | test CPU, 2 cores |\n| Go | go1.26 |\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestMachine(t *testing.T) {
	cpuinfo := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: other\n"
	if got := cpuModel(cpuinfo); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel: %q", got)
	}
	if got := cpuModel("processor\t: 0\n"); got != "unknown" {
		t.Errorf("cpuModel without a model name: %q", got)
	}
	if got := memTotal("MemTotal:        8148084 kB\nMemFree:  100 kB\n"); got != "7.8 GiB" {
		t.Errorf("memTotal: %q", got)
	}
	if got := memTotal(""); got != "" {
		t.Errorf("memTotal of nothing: %q", got)
	}
	rows := Machine()
	var keys []string
	for _, kv := range rows {
		keys = append(keys, kv[0])
	}
	if strings.Join(keys, ",") != "date,CPU,memory,kernel" || !strings.HasPrefix(rows[3][1], "Linux ") {
		t.Errorf("rows %v", rows)
	}
}

func TestFirstLine(t *testing.T) {
	if got := FirstLine("sh", "-c", "echo '  nginx version: nginx/1.26  '; echo second"); got != "nginx version: nginx/1.26" {
		t.Errorf("got %q", got)
	}
	if got := FirstLine("/nonexistent/tool", "-v"); got != "" {
		t.Errorf("a missing tool: %q", got)
	}
}

func TestGeoproxy(t *testing.T) {
	if got := Geoproxy(""); got != "not built" {
		t.Errorf("no binary: %q", got)
	}
	// A binary without Go build information: its version only.
	bin := filepath.Join(t.TempDir(), "geoproxy")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"geoproxy 1.2.3 (go1.26)\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := Geoproxy(bin); got != "geoproxy 1.2.3 (go1.26)" {
		t.Errorf("got %q", got)
	}
	for _, c := range []struct {
		rev      string
		modified bool
		want     string
	}{
		{"0123456789abcdef0123", false, "v1, commit 0123456789ab"},
		{"0123456789ab", true, "v1, commit 0123456789ab with local changes"},
		{"", true, "v1"},
		{"fatal: not a git repository", false, "v1"},
	} {
		if got := withCommit("v1", c.rev, c.modified); got != c.want {
			t.Errorf("withCommit(%q, %v) = %q, want %q", c.rev, c.modified, got, c.want)
		}
	}
}

func TestPublish(t *testing.T) {
	var printed strings.Builder
	if err := Publish(&printed, "# Report\n", "", time.Now()); err != nil || printed.String() != "# Report\n" {
		t.Errorf("stdout only: printed %q, %v", printed.String(), err)
	}
	out := filepath.Join(t.TempDir(), "docs", "report.md")
	printed.Reset()
	if err := Publish(&printed, "# Report\n", out, time.Now()); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "# Report\n" || printed.String() != "# Report\n" {
		t.Errorf("wrote %q (%v), printed %q", b, err, printed.String())
	}
	if err := Publish(&printed, "x", filepath.Join(out, "under-a-file"), time.Now()); err == nil || !strings.Contains(err.Error(), "writing the report") {
		t.Errorf("err = %v", err)
	}
}
