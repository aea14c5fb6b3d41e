// Package mdreport holds what the benchmark programs' markdown reports
// share: the table of the machine a run was on, with the geoproxy build it
// measured, byte counts in MB, and printing and writing the finished report.
package mdreport

import (
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/geoproxy/geoproxy/bench/internal/cli"
)

// MB writes a measured byte count in MB (10^6).
func MB(n uint64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// Table writes rows as a markdown table of two columns without headings.
func Table(rows [][2]string) string {
	var b strings.Builder
	b.WriteString("| | |\n|---|---|\n")
	for _, kv := range rows {
		fmt.Fprintf(&b, "| %s | %s |\n", kv[0], kv[1])
	}
	return b.String()
}

// Machine is the first rows of a report's machine table: the date, the
// CPU, the memory and the kernel.
func Machine() [][2]string {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	meminfo, _ := os.ReadFile("/proc/meminfo")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return [][2]string{
		{"date", time.Now().UTC().Format("2006-01-02 15:04 UTC")},
		{"CPU", fmt.Sprintf("%s, %d cores", cpuModel(string(cpuinfo)), runtime.NumCPU())},
		{"memory", memTotal(string(meminfo))},
		{"kernel", "Linux " + strings.TrimSpace(string(kernel))},
	}
}

// cpuModel is the first model name in the text of /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for line := range strings.SplitSeq(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// memTotal is MemTotal in GiB from the text of /proc/meminfo, or empty.
func memTotal(meminfo string) string {
	mem := ""
	for line := range strings.SplitSeq(meminfo, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	return mem
}

// FirstLine is the first line of what the command prints, trimmed; tools
// print their versions so.
func FirstLine(name string, args ...string) string {
	b, _ := exec.Command(name, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(line)
}

// Geoproxy names the geoproxy binary at bin: its version and the commit
// it was built from, "with local changes" if the tree had any, or "not
// built" without a binary.
func Geoproxy(bin string) string {
	if bin == "" {
		return "not built"
	}
	version := FirstLine(bin, "version")
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return version
	}
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" { // built with -buildvcs=false: ask git, without taking its index lock
		rev = FirstLine("git", "rev-parse", "HEAD")
		if st, err := exec.Command("git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			modified = true
		}
	}
	return withCommit(version, rev, modified)
}

// withCommit adds the commit rev (shortened to 12 digits) to version, if
// rev looks like one.
func withCommit(version, rev string, modified bool) string {
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" || strings.Contains(rev, " ") {
		return version
	}
	version += ", commit " + rev
	if modified {
		version += " with local changes"
	}
	return version
}

// Publish prints the report md to w and, unless out is empty, writes it to
// the file out and says so, with how long the run since began took.
func Publish(w io.Writer, md, out string, began time.Time) error {
	if _, err := io.WriteString(w, md); err != nil {
		return fmt.Errorf("printing the report: %w", err)
	}
	if out == "" {
		return nil
	}
	if err := cli.WriteFile(out, md); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	cli.Progress("wrote %s (run took %s)", out, time.Since(began).Round(time.Second))
	return nil
}
