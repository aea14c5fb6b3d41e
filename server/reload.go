package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"reflect"
	"time"

	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/geo"
)

// configSettle is how long the config file must be quiet after a change
// before it is reloaded.
const configSettle = 250 * time.Millisecond

// ReloadResult is what a reload did: the JSON answer of POST /admin/reload,
// and the last one is in /admin/status.
type ReloadResult struct {
	// OK is false when the file was refused; the configuration in force
	// did not change.
	OK bool `json:"ok"`
	// Generation is the configuration in force after the reload.
	Generation int64 `json:"generation"`
	// Hash identifies the file's content (SHA-256, 12 hex digits).
	Hash string `json:"hash"`
	// File is the config file read.
	File string `json:"file"`
	// Time is when the reload ended.
	Time time.Time `json:"time"`
	// Unchanged: the file was the one in force; nothing was rebuilt.
	Unchanged bool `json:"unchanged,omitempty"`
	// Errors are the file's problems, each "file:line:col: field: message".
	Errors []string `json:"errors,omitempty"`
	// NeedsRestart names keys whose change was not applied: they take a
	// restart (the listen addresses, the engine).
	NeedsRestart []string `json:"needs_restart,omitempty"`
}

// Reload reads the config file again and, when it is valid, builds the
// next generation beside the current one and swaps it in; the current one
// finishes its requests on its own configuration. An invalid file changes
// nothing: each problem is logged at error level and counted
// (geoproxy_config_reloads_total{result="failure"}). Backends that stay
// (same region and URL) keep their health; new ones are probed at once and
// get traffic after their first pass; removed ones stop being probed once
// their requests are done. Listen addresses and the engine take a restart:
// the result names them, and the rest applies.
func (s *Server) Reload() (res ReloadResult) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cur := s.gen.Load()
	res = ReloadResult{File: cur.cfg.File, Generation: cur.id}
	defer func() { // the result returned, whichever return made it
		res.Time = time.Now()
		s.last.Store(&res)
	}()
	data, err := os.ReadFile(cur.cfg.File)
	if err != nil {
		return s.refused(res, []string{"read config: " + err.Error()})
	}
	res.Hash = hashOf(data)
	if res.Hash == cur.hash {
		res.OK, res.Unchanged = true, true
		return res
	}
	var newDB *geo.Database
	cfg, err := config.ParseChecked(cur.cfg.File, data, func(c *config.Config) (string, error) {
		if c.GeoIP.Database == cur.cfg.GeoIP.Database {
			return "", nil // the one in use; its file has its own watcher
		}
		db, err := geo.Open(c.GeoIP.Database)
		if err != nil {
			return "geoip.database", err
		}
		newDB = db
		return "", nil
	})
	if err != nil {
		var lines []string
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				lines = append(lines, e.Error())
			}
		} else {
			lines = []string{err.Error()}
		}
		return s.refused(res, lines)
	}
	// What cannot change live keeps its value in force.
	next := *cfg
	if next.Listen != cur.cfg.Listen {
		res.NeedsRestart = append(res.NeedsRestart, "listen")
		next.Listen = cur.cfg.Listen
	}
	if next.Admin.Listen != cur.cfg.Admin.Listen {
		res.NeedsRestart = append(res.NeedsRestart, "admin.listen")
		next.Admin.Listen = cur.cfg.Admin.Listen
	}
	if next.TLS.Listen != cur.cfg.TLS.Listen {
		// The TLS listener, and the certificates behind it, come and go
		// with a restart.
		res.NeedsRestart = append(res.NeedsRestart, "tls.listen")
		next.TLS = cur.cfg.TLS
	}
	if next.Engine != cur.cfg.Engine {
		res.NeedsRestart = append(res.NeedsRestart, "engine")
		next.Engine = cur.cfg.Engine
	}
	db := newDB
	if db == nil {
		db = cur.locator.Database()
	}
	g, err := s.build(&next, db, cur.id+1, res.Hash)
	if err != nil {
		return s.refused(res, []string{err.Error()})
	}
	if s.certs != nil && !reflect.DeepEqual(next.TLS, cur.cfg.TLS) {
		if err := s.certs.Update(next.TLS); err != nil {
			g.abandon()
			return s.refused(res, []string{"tls: " + err.Error()})
		}
	}
	// The old checker stops first: the store is about to lose the backends
	// the new configuration removed.
	cur.stopChecks()
	cur.checks.Wait()
	if err := s.start(g, s.plain.ln.Addr()); err != nil {
		g.abandon()
		return s.refused(res, []string{err.Error()})
	}
	if s.draining.Load() {
		g.drain(time.Second)
	}
	s.gen.Store(g)
	s.retire(cur)

	res.OK, res.Generation = true, g.id
	s.metrics.ConfigReloads.WithLabelValues("success").Inc()
	s.metrics.ConfigGeneration.Set(float64(g.id))
	s.metrics.ConfigLastSuccess.SetToCurrentTime()
	fields := []zap.Field{zap.Int64("generation", g.id), zap.String("hash", res.Hash),
		zap.Int("regions", len(next.Regions)), zap.Int("backends", len(g.targets))}
	if len(res.NeedsRestart) > 0 {
		fields = append(fields, zap.Strings("needs_restart", res.NeedsRestart))
		s.log.Warn("config reloaded; some keys take a restart and were not applied", fields...)
	} else {
		s.log.Info("config reloaded", fields...)
	}
	return res
}

// refused records a reload that changed nothing.
func (s *Server) refused(res ReloadResult, problems []string) ReloadResult {
	res.Errors = problems
	s.metrics.ConfigReloads.WithLabelValues("failure").Inc()
	for _, p := range problems {
		s.log.Error("config not reloaded; the one in force stays", zap.String("problem", p))
	}
	return res
}

// retire lets a replaced generation finish its requests, each answer
// closing its connection, then stops it.
func (s *Server) retire(g *generation) {
	g.drain(s.clientTimeout)
	// Its requests get as long as its limits give a client, and a grace.
	l := g.cfg.Limits
	longest := max(s.clientTimeout, l.HeadTimeout+l.BodyTimeout, l.IdleTimeout)
	s.retiring.Go(func() {
		ctx, cancel := context.WithTimeout(s.base, longest+retireGrace)
		defer cancel()
		if err := g.shutdown(ctx, true); err != nil {
			s.log.Warn("a replaced configuration's requests were cut at its grace", zap.Int64("generation", g.id), zap.Error(err))
		}
	})
}

// watchConfig reloads the config when its file changes, until ctx ends.
func (s *Server) watchConfig(ctx context.Context, settle time.Duration) {
	if fileIdentity(s.gen.Load().cfg.File) == (identity{}) {
		return // not read from a file (the demo's, a test's): nothing to watch
	}
	s.watchFile(ctx, "config", func() string { return s.gen.Load().cfg.File }, settle, func() { s.Reload() })
}

// LastReload returns the last reload's result, or nil before any.
func (s *Server) LastReload() *ReloadResult { return s.last.Load() }

// hashOf identifies a file's content.
func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6])
}

// fileHash is hashOf the file at path; "" when it cannot be read (a
// configuration not read from a file).
func fileHash(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return hashOf(data)
}
