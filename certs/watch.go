package certs

import (
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

const (
	// debounce is how long the files must stay quiet after a change
	// before they are read again, so a write in several steps is read
	// once it is complete.
	debounce = 200 * time.Millisecond
	// pollInterval is how often the files are read again when the
	// system cannot notify changes.
	pollInterval = 10 * time.Second
)

// fileWatcher watches the directories holding the certificate files.
// Directories rather than files are watched: an atomic replacement by
// rename (mv, Kubernetes secrets swapping a symlink) leaves a watch on
// the old file behind.
type fileWatcher struct {
	log  *zap.Logger
	fs   *fsnotify.Watcher // nil when notifications are unavailable
	dirs map[string]bool   // watched directories; guarded by Manager.mu
}

func newFileWatcher(log *zap.Logger) *fileWatcher {
	w := &fileWatcher{log: log, dirs: make(map[string]bool)}
	fs, err := fsnotify.NewWatcher()
	if err != nil {
		log.Error("certs: cannot watch certificate files; reading them every interval instead",
			zap.Duration("interval", pollInterval), zap.Error(err))
		return w
	}
	w.fs = fs
	return w
}

// sync watches the directories of the files in t (and of the files
// their symlinks point to) and stops watching the others. Manager.mu is
// held.
func (w *fileWatcher) sync(t *table) {
	if w.fs == nil {
		return
	}
	want := make(map[string]bool)
	if t != nil {
		for _, l := range t.pairs {
			for _, p := range []string{l.pair.Cert, l.pair.Key} {
				abs, err := filepath.Abs(p)
				if err != nil {
					continue
				}
				want[filepath.Dir(abs)] = true
				if real, err := filepath.EvalSymlinks(abs); err == nil {
					want[filepath.Dir(real)] = true
				}
			}
		}
	}
	for d := range w.dirs {
		if !want[d] {
			// The directory may be gone already, which ends the watch.
			_ = w.fs.Remove(d)
			delete(w.dirs, d)
		}
	}
	for d := range want {
		if w.dirs[d] {
			continue
		}
		if err := w.fs.Add(d); err != nil {
			w.log.Warn("certs: cannot watch directory", zap.String("dir", d), zap.Error(err))
			continue
		}
		w.dirs[d] = true
	}
}

func (w *fileWatcher) close() {
	if w.fs != nil {
		_ = w.fs.Close()
	}
}

// watch reads the files again after they change, until the Manager is
// closed.
func (m *Manager) watch() {
	defer m.wg.Done()
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
		poll   <-chan time.Time
	)
	if fs := m.watcher.fs; fs != nil {
		events, errs = fs.Events, fs.Errors
	} else {
		t := time.NewTicker(pollInterval)
		defer t.Stop()
		poll = t.C
	}
	quiet := time.NewTimer(debounce)
	quiet.Stop()
	defer quiet.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			quiet.Reset(debounce)
		case err, ok := <-errs:
			if !ok {
				return
			}
			m.log.Warn("certs: watching certificate files", zap.Error(err))
		case <-quiet.C:
			m.reloadFiles()
		case <-poll:
			m.reloadFiles()
		}
	}
}

// reloadFiles reads every pair again. A pair whose files changed and
// load is swapped in; one whose files do not load stays in service and
// the error is logged.
func (m *Manager) reloadFiles() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	st := m.state.Load()
	if st.files.empty() {
		return
	}
	list := make([]*loaded, len(st.files.pairs))
	changed := false
	for i, old := range st.files.pairs {
		l, err := loadPair(old.pair, old)
		if err != nil {
			m.log.Error("certs: certificate files changed but do not load; the previous certificate stays in service",
				zap.String("cert", old.pair.Cert), zap.String("key", old.pair.Key), zap.Error(err))
			list[i] = old
			continue
		}
		list[i] = l
		if l != old {
			changed = true
			m.log.Info("certs: certificate reloaded",
				zap.String("cert", l.pair.Cert),
				zap.Strings("names", l.cert.Leaf.DNSNames),
				zap.Time("not_after", l.cert.Leaf.NotAfter))
			warnExpired(l, m.log)
		}
	}
	if changed {
		next := *st
		next.files = buildTable(list)
		m.state.Store(&next)
	}
	m.watcher.sync(st.files)
}
