// Package core is the request core shared by every HTTP engine: it turns a
// peer address and its forwarding headers into a located client and an
// ordered plan of regions and backends, decides what follows each attempt
// (Failed, RetryStatus, Failure), and records each request's outcome
// (Report: metrics and the access log). It uses no net/http types; the
// engines (packages h1 and nethttp) only do I/O.
//
// A Router keeps the current route.Snapshot in step with the health store:
// it watches the store through memdb watch channels, rebuilds the immutable
// snapshot on every change and publishes it through an atomic pointer, so
// the request path never takes a lock.
package core

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-memdb"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/route"
)

// Router publishes routing snapshots built from the regions of one
// configuration and the health in a Store.
type Router struct {
	specs   []route.RegionSpec
	store   *health.Store
	log     *zap.Logger
	cur     atomic.Pointer[route.Snapshot]
	version uint64
	mu      sync.Mutex    // guards changed; never taken on the request path
	changed chan struct{} // closed and replaced on every publish
}

// NewRouter builds the first snapshot from the store's current health.
func NewRouter(specs []route.RegionSpec, store *health.Store, log *zap.Logger) (*Router, error) {
	r := &Router{specs: specs, store: store, log: log.Named("router"),
		changed: make(chan struct{})}
	if _, err := r.rebuild(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// Snapshot returns the current snapshot. It never blocks.
func (r *Router) Snapshot() *route.Snapshot { return r.cur.Load() }

// Changed returns a channel that is closed when the next snapshot is
// published.
func (r *Router) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Run rebuilds the snapshot whenever backend health changes, until ctx ends.
func (r *Router) Run(ctx context.Context) error {
	for {
		ws := memdb.NewWatchSet()
		if _, err := r.rebuild(ws); err != nil {
			return err
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return nil // ctx ended
		}
	}
}

func (r *Router) rebuild(ws memdb.WatchSet) (*route.Snapshot, error) {
	rows, err := r.store.Backends(ws)
	if err != nil {
		return nil, fmt.Errorf("core: read health: %w", err)
	}
	status := make(map[string]health.Status, len(rows))
	for _, b := range rows {
		status[b.ID] = b.Status
	}
	r.version++
	s := route.NewSnapshot(r.specs, func(b *route.Backend) bool { return status[b.ID] == health.Healthy }, r.version)
	if old := r.cur.Load(); old != nil && sameHealth(old, s) {
		return old, nil
	}
	r.cur.Store(s)
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if r.log.Core().Enabled(zap.DebugLevel) {
		for i := range s.Regions {
			reg := &s.Regions[i]
			r.log.Debug("region", zap.String("region", reg.Name), zap.Int("healthy", len(reg.Healthy)),
				zap.Int("backends", len(reg.Backends)), zap.Uint64("version", s.Version))
		}
	}
	return s, nil
}

// sameHealth reports whether two snapshots of the same regions route alike.
func sameHealth(a, b *route.Snapshot) bool {
	for i := range a.Regions {
		ha, hb := a.Regions[i].Healthy, b.Regions[i].Healthy
		if len(ha) != len(hb) {
			return false
		}
		for j := range ha {
			if ha[j] != hb[j] {
				return false
			}
		}
	}
	return true
}
