//go:build linux

package main

import (
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

// process is a program the benchmark started, as bench/harness starts its
// targets: the leader of its own process group, its output in
// workDir/logs/NAME.log and its group id in workDir/pids/NAME.pid (which
// bench/pressure.sh reads if the benchmark itself is killed).
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	pidPath string
	done    chan struct{}
	err     error // from Wait, valid once done is closed
}

// procSet is every process one run started, for stopping them all.
type procSet struct {
	workDir string
	mu      sync.Mutex
	procs   []*process
}

func newProcSet(workDir string) *procSet { return &procSet{workDir: workDir} }

// start runs argv in the background.
func (s *procSet) start(name string, env []string, argv ...string) (*process, error) {
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(filepath.Join(s.workDir, d), 0o755); err != nil {
			return nil, err
		}
	}
	p := &process{
		name:    name,
		logPath: filepath.Join(s.workDir, "logs", name+".log"),
		pidPath: filepath.Join(s.workDir, "pids", name+".pid"),
		done:    make(chan struct{}),
	}
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
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
	go func() {
		p.err = p.cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop stops p and forgets it.
func (s *procSet) stop(p *process, grace time.Duration) {
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

// stopAll stops every process still running, newest first.
func (s *procSet) stopAll(grace time.Duration) {
	s.mu.Lock()
	ps := s.procs
	s.procs = nil
	s.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].stop(grace)
	}
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then sends SIGKILL.
func (p *process) stop(grace time.Duration) {
	pgid := p.pid()
	if !p.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	_ = os.Remove(p.pidPath)
}

// state says whether p runs, or how it ended.
func (p *process) state() string {
	if !p.exited() {
		return "running"
	}
	if p.err != nil {
		return "exited: " + p.err.Error()
	}
	return "exited"
}

// failure wraps err with the process's state and the tail of its log.
func (p *process) failure(what string, err error) error {
	return fmt.Errorf("%s: %s: %w (process %d %s); last lines of its log:\n%s", p.name, what, err, p.pid(), p.state(), logTail(p.logPath, 20))
}

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

// waitReady polls GET http://addr/ until it answers 200, the process
// exits, ctx ends or timeout passes.
func (p *process) waitReady(ctx context.Context, addr string, timeout time.Duration) error {
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: time.Second, Transport: tr}
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			return p.failure("waiting for "+addr, errors.New("it exited before answering"))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			return err
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
			return p.failure("waiting for "+addr, fmt.Errorf("no 200 answer within %s, last: %v", timeout, err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkPortsFree fails, naming each port and its use, if any is taken.
func checkPortsFree(ports map[int]string) error {
	var problems []string
	for port, use := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			problems = append(problems, fmt.Sprintf("port %d (%s) is not free: %v", port, use, err))
			continue
		}
		_ = ln.Close()
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s\n(stop what holds them, or move every port with -port-base)", strings.Join(problems, "\n"))
	}
	return nil
}
