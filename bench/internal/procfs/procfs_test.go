//go:build linux

package procfs

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const statusSample = `Name:	geoproxy
Umask:	0022
State:	S (sleeping)
VmPeak:	 2246532 kB
VmSize:	 2246532 kB
VmHWM:	  101376 kB
VmRSS:	   51234 kB
RssAnon:	   30000 kB
Threads:	9
`

func TestParseStatus(t *testing.T) {
	m, err := ParseStatus(strings.NewReader(statusSample))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 51234<<10 || m.HWM != 101376<<10 {
		t.Errorf("got rss %d hwm %d, want %d and %d", m.RSS, m.HWM, 51234<<10, 101376<<10)
	}
	if _, err := ParseStatus(strings.NewReader("Name:\tkthreadd\nState:\tS (sleeping)\n")); err == nil {
		t.Error("no error for a status without VmRSS")
	}
	if _, err := ParseStatus(strings.NewReader("VmRSS:\t12 MB\nVmHWM:\t12 kB\n")); err == nil {
		t.Error("no error for a unit other than kB")
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses; group 1234; utime 150, stime 50 ticks.
	stat := "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 9 0 100 0 0"
	st, err := ParseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stat{Name: "a (b) c", Group: 1234, CPU: 2 * time.Second}); st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
	for _, bad := range []string{"1234 (x S 1", "1234 x) S 1 2 3 4 5 6 7 8 9 10 11 12", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 y 50 0"} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseMachineCPU(t *testing.T) {
	// user 100, nice 20, system 30, idle 1000, iowait 5, irq 0, softirq 0, steal 50: busy 200 ticks.
	d, err := ParseMachineCPU([]byte("cpu  100 20 30 1000 5 0 0 50 0 0\ncpu0 100 20 30 1000 5 0 0 50 0 0\n"))
	if err != nil || d != 2*time.Second {
		t.Errorf("got %s, %v; want 2s", d, err)
	}
	for _, bad := range []string{"", "cpu 1 2 3", "intr 1 2 3 4 5 6 7 8 9", "cpu 1 2 x 4 5 6 7 8 9"} {
		if _, err := ParseMachineCPU([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestThisProcess(t *testing.T) {
	pid := os.Getpid()
	m, err := ReadStatus(pid)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS == 0 || m.HWM < m.RSS {
		t.Errorf("rss %d, hwm %d: want rss > 0 and hwm >= rss", m.RSS, m.HWM)
	}
	before, err := CountFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	after, err := CountFDs(pid)
	_ = f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if after != before+1 {
		t.Errorf("descriptors: %d, then %d after opening one", before, after)
	}
	if err := ResetPeak(pid); err != nil {
		t.Errorf("resetting VmHWM: %v", err)
	}
	self, err := ReadStat(0)
	if err != nil {
		t.Fatal(err)
	}
	byPID, err := ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if self.Name != byPID.Name || self.Group != syscall.Getpgrp() {
		t.Errorf("self %+v, by pid %+v, process group %d", self, byPID, syscall.Getpgrp())
	}
	if _, err := MachineCPU(); err != nil {
		t.Error(err)
	}
	if _, err := ReadStatus(1 << 30); err == nil {
		t.Error("no error for a process that does not exist")
	}
	if _, ok := All()[pid]; !ok {
		t.Error("All left this process out")
	}
}

// A process group of two: a shell leading its own group and the sleep it starts.
func TestGroup(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	defer func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	var pids []int
	for deadline := time.Now().Add(5 * time.Second); len(pids) < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		pids = GroupPIDs(pgid)
	}
	if len(pids) != 2 || !slices.Contains(pids, pgid) {
		t.Fatalf("group %d: pids %v; want the shell and its sleep", pgid, pids)
	}
	if hwm, n := GroupHWM(pgid); n != 2 || hwm == 0 {
		t.Errorf("group VmHWM %d over %d processes; want both counted", hwm, n)
	}
	if d := GroupCPU(pgid); d < 0 || d > time.Minute {
		t.Errorf("group CPU %s", d)
	}
	if pids := GroupPIDs(1 << 30); len(pids) != 0 {
		t.Errorf("a group that does not exist: %v", pids)
	}
}
