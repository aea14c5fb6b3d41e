package main

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"go.uber.org/zap/zapcore"
)

// reopener is a log file that can be opened again under its name, after
// logrotate moved it away.
type reopener struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openLog(path string) (*reopener, error) {
	r := &reopener{path: path}
	if err := r.reopen(); err != nil {
		return nil, err
	}
	return r, nil
}

// reopen opens the file at r.path (creating it) and closes the old one.
func (r *reopener) reopen() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("access log: %w", err)
	}
	r.mu.Lock()
	old := r.f
	r.f = f
	r.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

func (r *reopener) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Write(p)
}

func (r *reopener) Sync() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Sync()
}

func (r *reopener) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}

// splitCore sends the access log's entries (logger "access") to one core
// and every other entry to another.
type splitCore struct {
	access, rest zapcore.Core
}

func isAccess(name string) bool { return name == "access" || strings.HasSuffix(name, ".access") }

func (c splitCore) Enabled(l zapcore.Level) bool {
	return c.access.Enabled(l) || c.rest.Enabled(l)
}

func (c splitCore) With(fields []zapcore.Field) zapcore.Core {
	return splitCore{access: c.access.With(fields), rest: c.rest.With(fields)}
}

func (c splitCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if isAccess(e.LoggerName) {
		return c.access.Check(e, ce)
	}
	return c.rest.Check(e, ce)
}

func (c splitCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if isAccess(e.LoggerName) {
		return c.access.Write(e, fields)
	}
	return c.rest.Write(e, fields)
}

func (c splitCore) Sync() error {
	err := c.access.Sync()
	if err2 := c.rest.Sync(); err == nil {
		err = err2
	}
	return err
}
