//go:build linux

// Package proc starts the programs a benchmark measures and stops them.
// Each program leads its own process group, so that a master and its
// workers are found, measured and stopped together; it writes its output to
// WORKDIR/logs/NAME.log, and its group id is in WORKDIR/pids/NAME.pid, which
// bench/lib.sh reads to stop what is left if the benchmark itself is killed.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one program a Set started.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	pidPath string
	done    chan struct{}
	err     error // from Wait, valid once done is closed
}

// Set is the processes one run started in its work directory, for
// stopping them all at its end.
type Set struct {
	workDir string
	temp    bool // the Set made workDir, and Close removes it
	mu      sync.Mutex
	procs   []*Process
}

// NewSet returns an empty Set whose processes run in workDir or, if
// workDir is empty, in a new temporary directory named after tempPrefix,
// which Close removes.
func NewSet(workDir, tempPrefix string) (*Set, error) {
	if workDir != "" {
		return &Set{workDir: workDir}, nil
	}
	d, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		return nil, fmt.Errorf("making the work directory: %w", err)
	}
	return &Set{workDir: d, temp: true}, nil
}

// Dir is the work directory.
func (s *Set) Dir() string { return s.workDir }

// Start runs argv in the background, with env added to this process's
// environment, as the process called name.
func (s *Set) Start(name string, env []string, argv ...string) (*Process, error) {
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(filepath.Join(s.workDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
	}
	p := &Process{
		name:    name,
		logPath: filepath.Join(s.workDir, "logs", name+".log"),
		pidPath: filepath.Join(s.workDir, "pids", name+".pid"),
		done:    make(chan struct{}),
	}
	// O_APPEND: a program may open its log itself as well (nginx's -e),
	// and neither writer then overwrites the other.
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = s.workDir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = logf
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	_ = os.WriteFile(p.pidPath, []byte(strconv.Itoa(p.cmd.Process.Pid)+"\n"), 0o644)
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	// Ends when the process does, which Stop makes sure of.
	go func() {
		p.err = p.cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Stop stops p and forgets it.
func (s *Set) Stop(p *Process, grace time.Duration) {
	s.mu.Lock()
	for i, q := range s.procs {
		if q == p {
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	p.stop(grace)
}

// Close stops every process still running, all at once, each within
// grace, then removes the work directory if the Set made it.
func (s *Set) Close(grace time.Duration) error {
	s.stopAll(grace)
	if s.temp {
		if err := os.RemoveAll(s.workDir); err != nil {
			return fmt.Errorf("removing the work directory: %w", err)
		}
	}
	return nil
}

// stopAll stops every process still running, all at once, each within grace.
func (s *Set) stopAll(grace time.Duration) {
	s.mu.Lock()
	ps := s.procs
	s.procs = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { p.stop(grace) })
	}
	wg.Wait()
}

// PID is the process's id, which is also its process group's.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then sends SIGKILL.
func (p *Process) stop(grace time.Duration) {
	pgid := p.PID()
	if !p.Exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// The leader may be gone while a worker lingers: the group gets SIGKILL either way.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	_ = os.Remove(p.pidPath)
}

// State says whether the process runs, or how it ended.
func (p *Process) State() string {
	if !p.Exited() {
		return "running"
	}
	if p.err != nil {
		return "exited: " + p.err.Error()
	}
	return "exited"
}

// Failure wraps err, met while doing what, with the process's state and
// the last lines of its log.
func (p *Process) Failure(what string, err error) error {
	return fmt.Errorf("%s: %s: %w (process %d %s); last lines of its log:\n%s", p.name, what, err, p.PID(), p.State(), logTail(p.logPath, 20))
}

// logTail is the last n lines of the log at path, indented, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "    (no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "    (log " + path + " is empty)"
	}
	return "    " + strings.Join(lines, "\n    ") + "\n    (log: " + path + ")"
}

// WaitReady polls GET http://addr/ until it answers 200, the process
// exits, ctx ends or timeout passes.
func (p *Process) WaitReady(ctx context.Context, addr string, timeout time.Duration) error {
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: time.Second, Transport: tr}
	deadline := time.Now().Add(timeout)
	for {
		if p.Exited() {
			return p.Failure("waiting for "+addr, errors.New("it exited before answering"))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", addr, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return p.Failure("waiting for "+addr, fmt.Errorf("no 200 answer within %s, last: %v", timeout, err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CheckPortsFree fails, naming each port taken on 127.0.0.1, its use (the
// value in ports) and what holds it, if any port is taken.
func CheckPortsFree(ports map[int]string) error {
	var problems []string
	for port, use := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			problems = append(problems, fmt.Sprintf("port %d (%s) is not free: %v%s", port, use, err, portHolder(port)))
			continue
		}
		_ = ln.Close()
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s\n(stop what holds them, or move every port with -port-base)", strings.Join(problems, "\n"))
	}
	return nil
}

// portHolder names the process listening on port, as ss tells it, or is
// empty when ss cannot.
func portHolder(port int) string {
	out, err := exec.Command("ss", "-Hltnp", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return ""
	}
	return "; held by: " + strings.Join(strings.Fields(string(out)), " ")
}
