package server

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/geo"
)

// geoProbes are looked up in a reloaded database before it is used: a
// lookup that fails (rather than finding nothing) means a broken file.
var geoProbes = []netip.Addr{
	netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("81.2.69.142"), netip.MustParseAddr("1.1.1.1"),
	netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:4860:4860::8888"),
}

// ReloadGeo opens geoip.database again, checks it and swaps it in; the
// database in use stays when the file is missing, truncated, corrupt or of
// a kind geoproxy cannot read. With the embedded database there is nothing
// to reload. Each attempt is logged and counted
// (geoproxy_geoip_reloads_total).
func (s *Server) ReloadGeo() error {
	g := s.gen.Load()
	path := g.cfg.GeoIP.Database
	if path == "" {
		return nil
	}
	db, err := openChecked(path)
	if err != nil {
		s.metrics.GeoReloads.WithLabelValues("failure").Inc()
		s.log.Error("geo database not reloaded; the one in use stays", zap.String("path", path), zap.Error(err))
		return err
	}
	old := g.locator.Swap(db) // the old one stays usable for lookups under way
	s.metrics.GeoReloads.WithLabelValues("success").Inc()
	info, was := db.Info(), old.Info()
	s.log.Info("geo database reloaded", zap.String("path", path), zap.String("kind", info.Kind),
		zap.String("database_type", info.DatabaseType), zap.Time("built", info.BuildTime), zap.Time("was_built", was.BuildTime))
	return nil
}

// openChecked opens a database file and looks a few addresses up in it.
func openChecked(path string) (*geo.Database, error) {
	db, err := geo.Open(path)
	if err != nil {
		return nil, err
	}
	for _, a := range geoProbes {
		if _, _, err := db.Lookup(a); err != nil {
			return nil, fmt.Errorf("geo: %s: looking up %s: %w", path, a, err)
		}
	}
	return db, nil
}

// watchGeo reloads geoip.database when its file changes, until ctx ends.
func (s *Server) watchGeo(ctx context.Context, settle time.Duration) {
	s.watchFile(ctx, "geo database", func() string { return s.gen.Load().cfg.GeoIP.Database }, settle,
		func() { _ = s.ReloadGeo() })
}

// watchFile calls changed when the file path() names changes, until ctx
// ends. It watches the file's directory, so that an editor's or a deploy's
// rename, and a Kubernetes ConfigMap's symlink swap, are seen as well as a
// write in place; a change is acted on once the directory has been quiet
// for settle, so that a file being copied is read whole, and only when the
// file itself differs (size, time, inode). An empty path watches nothing
// (until it names a file).
func (s *Server) watchFile(ctx context.Context, what string, path func() string, settle time.Duration, changed func()) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("changes to the "+what+" file will not be seen (SIGHUP still reloads it)", zap.Error(err))
		return
	}
	defer func() { _ = w.Close() }()
	watched, file := "", path()
	watch := func(p string) {
		if p == "" {
			return
		}
		dir := filepath.Dir(p)
		if dir == watched {
			return
		}
		if watched != "" {
			_ = w.Remove(watched)
		}
		if err := w.Add(dir); err != nil {
			s.log.Warn("changes to the "+what+" file will not be seen (SIGHUP still reloads it)", zap.String("dir", dir), zap.Error(err))
			return
		}
		watched = dir
	}
	watch(file)
	last := fileIdentity(file)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("watching the "+what+" file", zap.Error(err))
		case _, ok := <-w.Events:
			if !ok {
				return
			}
			// Any event in the directory may be ours (a rename onto the
			// path, a symlink swapped above it): look at the file itself.
			timer.Reset(settle)
		case <-timer.C:
			if p := path(); p != file {
				file = p // a reload named another file: it is the one loaded now
				watch(file)
				last = fileIdentity(file)
				continue
			}
			id := fileIdentity(file)
			if id == last || id == (identity{}) {
				continue // unchanged, or gone for now: what is in use stays
			}
			last = id
			changed()
		}
	}
}

// identity tells whether a file has changed: what os.Stat says of the file
// a path leads to (symlinks followed).
type identity struct {
	size    int64
	modTime time.Time
	ino     uint64
}

func fileIdentity(path string) identity {
	fi, err := os.Stat(path)
	if err != nil {
		return identity{}
	}
	id := identity{size: fi.Size(), modTime: fi.ModTime()}
	if st, ok := statIno(fi); ok {
		id.ino = st
	}
	return id
}
