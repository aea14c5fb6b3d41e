//go:build linux

package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// newSet returns a Set in dir.
func newSet(t *testing.T, dir string) *Set {
	t.Helper()
	s, err := NewSet(dir, "unused")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A Set without a work directory makes a temporary one and removes it on Close; one
// given stays.
func TestWorkDir(t *testing.T) {
	s, err := NewSet("", "proc-test.")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(s.Dir()), "proc-test.") {
		t.Errorf("work directory %s", s.Dir())
	}
	p, err := s.Start("sleeper", nil, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) || !p.Exited() {
		t.Errorf("after Close: %s stat %v, process %s; want both gone", s.Dir(), err, p.State())
	}
	dir := t.TempDir()
	if s = newSet(t, dir); s.Dir() != dir {
		t.Errorf("work directory %s, want %s", s.Dir(), dir)
	}
	if err := s.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the directory given was removed: %v", err)
	}
	if _, err := NewSet("", "a/b"); err == nil || !strings.Contains(err.Error(), "making the work directory") {
		t.Errorf("a prefix with a separator: %v", err)
	}
}

func TestStartAndStopAll(t *testing.T) {
	dir := t.TempDir()
	s := newSet(t, dir)
	a, err := s.Start("sleeper", nil, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	// A group whose leader ignores SIGTERM and has a child: SIGKILL after the grace ends both.
	b, err := s.Start("stubborn", []string{"BENCH_TEST=x"}, "sh", "-c", `trap "" TERM; echo "env $BENCH_TEST"; sleep 60 & wait`)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Process{a, b} {
		if _, err := os.Stat(filepath.Join(dir, "pids", p.name+".pid")); err != nil {
			t.Error(err)
		}
		if p.Exited() || p.State() != "running" {
			t.Fatalf("%s: %s at once", p.name, p.State())
		}
	}
	time.Sleep(100 * time.Millisecond) // for the shell to start its child
	at := time.Now()
	s.stopAll(200 * time.Millisecond)
	if took := time.Since(at); took > 3*time.Second {
		t.Errorf("stopping took %s", took)
	}
	for _, p := range []*Process{a, b} {
		if !p.Exited() {
			t.Errorf("%s still running after stopAll", p.name)
		}
		if _, err := os.Stat(p.pidPath); !os.IsNotExist(err) {
			t.Errorf("%s: pid file left: %v", p.name, err)
		}
		live := liveInGroup(p.PID())
		for deadline := time.Now().Add(time.Second); len(live) > 0 && time.Now().Before(deadline); live = liveInGroup(p.PID()) {
			time.Sleep(10 * time.Millisecond) // a signal sent is not yet a process ended
		}
		if len(live) > 0 {
			t.Errorf("%s: processes of its group still running: %v", p.name, live)
		}
	}
	if !strings.HasPrefix(a.State(), "exited: ") {
		t.Errorf("state %q, want how it ended", a.State())
	}
	if log, _ := os.ReadFile(b.logPath); string(log) != "env x\n" {
		t.Errorf("log %q: want the output, with the environment added", log)
	}
	s.stopAll(time.Second) // nothing left: returns at once
}

// liveInGroup lists the processes of group pgid that have not ended (a
// process killed is gone, or a zombie until its new parent reaps it).
func liveInGroup(pgid int) []string {
	var live []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			live = append(live, e.Name()+" "+f[0])
		}
	}
	return live
}

func TestStop(t *testing.T) {
	s := newSet(t, t.TempDir())
	a, err := s.Start("a", nil, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Start("b", nil, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	s.Stop(a, time.Second)
	if !a.Exited() || b.Exited() {
		t.Fatalf("after stopping a: a %s, b %s", a.State(), b.State())
	}
	if len(s.procs) != 1 || s.procs[0] != b {
		t.Errorf("the set still holds %d processes", len(s.procs))
	}
	s.stopAll(time.Second)
	if !b.Exited() {
		t.Error("b still running")
	}
}

func TestStartFails(t *testing.T) {
	s := newSet(t, t.TempDir())
	if _, err := s.Start("nothing", nil, "/nonexistent/program", "-x"); err == nil || !strings.Contains(err.Error(), "starting nothing (/nonexistent/program -x)") {
		t.Errorf("err = %v; want one naming the process and its command", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newSet(t, file).Start("x", nil, "true"); err == nil || !strings.Contains(err.Error(), "starting x") {
		t.Errorf("err = %v for a work directory that is a file", err)
	}
}

func TestLogTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.log")
	if got := logTail(path, 3); !strings.HasPrefix(got, "    (no log: ") {
		t.Errorf("missing log: %q", got)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := logTail(path, 3), "    (log "+path+" is empty)"; got != want {
		t.Errorf("empty log: %q, want %q", got, want)
	}
	if err := os.WriteFile(path, []byte("1\n2\n3\n4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := logTail(path, 3), "    2\n    3\n    4\n    (log: "+path+")"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFailure(t *testing.T) {
	s := newSet(t, t.TempDir())
	p, err := s.Start("talker", nil, "sh", "-c", "echo first; echo last; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	<-p.done
	err = p.Failure("checking", errors.New("no answer"))
	want := fmt.Sprintf("talker: checking: no answer (process %d exited: exit status 3); last lines of its log:\n    first\n    last\n", p.PID())
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %q\nwant it to start with %q", err, want)
	}
	if errors.Unwrap(err).Error() != "no answer" {
		t.Error("the cause is not wrapped")
	}
}

func TestWaitReady(t *testing.T) {
	s := newSet(t, t.TempDir())
	defer s.stopAll(time.Second)
	p, err := s.Start("sleeper", nil, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	if err := p.WaitReady(ctx, addr, 5*time.Second); err != nil || calls.Load() != 3 {
		t.Errorf("err %v after %d calls; want ready at the third", err, calls.Load())
	}

	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer refusing.Close()
	err = p.WaitReady(ctx, refusing.Listener.Addr().String(), 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no 200 answer within 200ms, last: status 502") {
		t.Errorf("err = %v; want the timeout and the last status", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.WaitReady(cctx, refusing.Listener.Addr().String(), time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v; want the context's", err)
	}

	quitter, err := s.Start("quitter", nil, "true")
	if err != nil {
		t.Fatal(err)
	}
	<-quitter.done
	if err := quitter.WaitReady(ctx, refusing.Listener.Addr().String(), time.Minute); err == nil || !strings.Contains(err.Error(), "it exited before answering") {
		t.Errorf("err = %v; want one saying it exited", err)
	}
}

func TestCheckPortsFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := ln.Addr().(*net.TCPAddr).Port
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := free.Addr().(*net.TCPAddr).Port
	_ = free.Close()
	if err := CheckPortsFree(map[int]string{freePort: "proxy"}); err != nil {
		t.Errorf("a free port: %v", err)
	}
	err = CheckPortsFree(map[int]string{taken: "backend", freePort: "proxy"})
	_ = ln.Close()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("port %d (backend) is not free", taken)) || strings.Contains(err.Error(), "(proxy)") {
		t.Errorf("err = %v; want one naming the taken port only", err)
	}
}
