//go:build linux

// Package procfs reads what Linux's /proc says about processes and about
// the machine: CPU time, memory, open descriptors and process groups. Both
// benchmark programs measure the processes they start with it.
package procfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ: /proc/PID/stat counts CPU time in 1/100 s on Linux.
const clockTicks = 100

// errFormat is what a parse of an unexpected /proc text fails with.
var errFormat = errors.New("unexpected format")

// Stat is what /proc/PID/stat says about a process.
type Stat struct {
	Name  string        // the command name, without its parentheses
	Group int           // the process group id
	CPU   time.Duration // user + system time, all threads
}

// ParseStat reads the command name, the process group and the CPU time
// from the text of /proc/PID/stat.
func ParseStat(stat []byte) (Stat, error) {
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	s := string(stat)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return Stat{}, fmt.Errorf("stat: %w", errFormat)
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 13 {
		return Stat{}, fmt.Errorf("stat: %w", errFormat)
	}
	group, err1 := strconv.Atoi(f[2])               // field 5
	utime, err2 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err3 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2, err3); err != nil {
		return Stat{}, fmt.Errorf("stat: %w: %w", errFormat, err)
	}
	return Stat{Name: s[i+1 : j], Group: group, CPU: ticks(utime + stime)}, nil
}

// ReadStat reads /proc/PID/stat of process pid (pid 0: this process).
func ReadStat(pid int) (Stat, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, err
	}
	st, err := ParseStat(b)
	if err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// All reads /proc/PID/stat of every process on the machine, by pid.
// Processes that end while it reads are left out.
func All() map[int]Stat {
	out := map[int]Stat{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if st, err := ParseStat(b); err == nil {
			out[pid] = st
		}
	}
	return out
}

// GroupPIDs lists the processes of process group pgid.
func GroupPIDs(pgid int) []int {
	var pids []int
	for pid, st := range All() {
		if st.Group == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// GroupCPU is the CPU time (user + system) used so far by the live
// processes of group pgid.
func GroupCPU(pgid int) time.Duration {
	var d time.Duration
	for _, st := range All() {
		if st.Group == pgid {
			d += st.CPU
		}
	}
	return d
}

// GroupHWM is the sum of the peak resident set sizes (VmHWM) of the
// processes of group pgid, and how many processes it counts.
func GroupHWM(pgid int) (bytes uint64, n int) {
	for _, pid := range GroupPIDs(pgid) {
		if m, err := ReadStatus(pid); err == nil {
			bytes += m.HWM
			n++
		}
	}
	return bytes, n
}

// Mem is what /proc/PID/status says about a process's memory.
type Mem struct {
	RSS uint64 // VmRSS: resident now, bytes
	HWM uint64 // VmHWM: the peak of VmRSS since start or since ResetPeak, bytes
}

// ParseStatus reads VmRSS and VmHWM from the text of /proc/PID/status.
func ParseStatus(r io.Reader) (Mem, error) {
	var m Mem
	var seen int
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(rest) // "   1234 kB"
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("status: %s: unexpected value %q", key, rest)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("status: %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
		seen++
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("status: %w", err)
	}
	if seen < 2 {
		return m, errors.New("status: no VmRSS and VmHWM lines (a kernel thread, or a process that has exited)")
	}
	return m, nil
}

// ReadStatus reads VmRSS and VmHWM of process pid.
func ReadStatus(pid int) (Mem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	defer f.Close()
	m, err := ParseStatus(f)
	if err != nil {
		return m, fmt.Errorf("/proc/%d/%w", pid, err)
	}
	return m, nil
}

// CountFDs is how many file descriptors process pid has open.
func CountFDs(pid int) (int, error) {
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(1024)
		n += len(names)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("/proc/%d/fd: %w", pid, err)
		}
	}
}

// ResetPeak sets VmHWM of process pid back to its VmRSS (writing 5 to
// /proc/PID/clear_refs), so that VmHWM read later is the peak since now.
func ResetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// ParseMachineCPU reads the CPU time the whole machine has spent busy
// (user, nice, system, steal) since boot from the text of /proc/stat.
func ParseMachineCPU(stat []byte) (time.Duration, error) {
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: %w", errFormat)
	}
	var n uint64
	for _, i := range []int{1, 2, 3, 8} {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		n += v
	}
	return ticks(n), nil
}

// MachineCPU is the CPU time the whole machine has spent busy (user, nice,
// system, steal) since boot, from the first line of /proc/stat.
func MachineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return ParseMachineCPU(b)
}

// ticks converts a count of clock ticks to a duration.
func ticks(n uint64) time.Duration { return time.Duration(n) * time.Second / clockTicks }
