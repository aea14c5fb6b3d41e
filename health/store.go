// Package health probes backends and keeps their health in a go-memdb store.
//
// One goroutine per backend sends an HTTP probe at once, then every interval
// (with jitter); a backend changes state only after a run of consecutive
// results (the thresholds), except its first result, which settles the
// initial unknown state. Every change is written to the Store in one
// transaction, logged once and reported to an Observer; readers watch the
// Store's memdb watch channels to learn about changes. The package knows
// nothing of the proxy.
package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Status is a backend's health.
type Status uint8

// Health states.
const (
	// Unknown: not probed yet. Unknown backends get no traffic.
	Unknown Status = iota
	// Healthy: passing its probes.
	Healthy
	// Unhealthy: failing its probes.
	Unhealthy
)

// String returns "unknown", "healthy" or "unhealthy".
func (s Status) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	}
	return "unknown"
}

// Backend is a row of the backends table: one backend and its health.
// Rows are immutable once stored; a change stores a new row.
type Backend struct {
	// ID identifies the backend (its URL).
	ID string
	// Region is the name of the backend's region.
	Region string
	// Status is the backend's current health.
	Status Status
	// Since is when Status last changed (or the backend was added).
	Since time.Time
	// Reason is the last probe error that counted toward Status, or "".
	Reason string

	// Ejected: passive health took the backend out of service for failing
	// real requests, whatever its probes say (see Passive).
	Ejected bool
	// EjectedAt is when the backend was last ejected.
	EjectedAt time.Time
	// EjectedUntil is when the ejection may end; the backend returns at
	// its first passing probe after it.
	EjectedUntil time.Time
	// EjectReason is why the backend was last ejected.
	EjectReason string
	// Ejections counts the backend's ejections in a row: each lasts that
	// many times the base ejection time.
	Ejections int
	// ReturnedAt is when the backend last came back into service after
	// being unhealthy or ejected (zero if it never left): it ramps up
	// from then (slow start).
	ReturnedAt time.Time
}

// InService reports whether the backend may get traffic: healthy and not
// ejected.
func (b *Backend) InService() bool { return b.Status == Healthy && !b.Ejected }

const tableBackends = "backends"

func backendsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableBackends,
		Indexes: map[string]*memdb.IndexSchema{
			"id":     {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"region": {Name: "region", Indexer: &memdb.StringFieldIndex{Field: "Region"}},
			"status": {Name: "status", Indexer: &memdb.UintFieldIndex{Field: "Status"}},
		},
	}
}

// Schema returns the store's memdb schema.
func Schema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableBackends:  backendsTableSchema(),
		tableOverrides: overridesTableSchema(),
	}}
}

// Store holds the backends with their health. It is safe for
// concurrent use: writes are serialised transactions, reads are lock-free
// snapshots.
type Store struct {
	db  *memdb.MemDB
	now func() time.Time
}

// NewStore returns an empty Store.
func NewStore() (*Store, error) {
	db, err := memdb.NewMemDB(Schema())
	if err != nil {
		return nil, fmt.Errorf("health: create store: %w", err)
	}
	return &Store{db: db, now: time.Now}, nil
}

// BackendSpec declares a backend for Sync.
type BackendSpec struct {
	ID     string
	Region string
}

// Sync makes the store hold exactly the given backends, in one
// transaction. Backends already present in the same region keep their
// health; new ones start Unknown; missing ones are removed.
func (s *Store) Sync(backends []BackendSpec) error {
	txn := s.db.Txn(true)
	defer txn.Abort()
	keep := make(map[string]bool, len(backends))
	now := s.now()
	for _, spec := range backends {
		keep[spec.ID] = true
		raw, err := txn.First(tableBackends, "id", spec.ID)
		if err != nil {
			return fmt.Errorf("health: sync backend %s: %w", spec.ID, err)
		}
		if old, ok := raw.(*Backend); ok && old.Region == spec.Region {
			continue
		}
		b := &Backend{ID: spec.ID, Region: spec.Region, Status: Unknown, Since: now}
		if err := txn.Insert(tableBackends, b); err != nil {
			return fmt.Errorf("health: sync backend %s: %w", spec.ID, err)
		}
	}
	it, err := txn.Get(tableBackends, "id")
	if err != nil {
		return fmt.Errorf("health: sync: %w", err)
	}
	var stale []*Backend
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if b := raw.(*Backend); !keep[b.ID] {
			stale = append(stale, b)
		}
	}
	for _, b := range stale {
		if err := txn.Delete(tableBackends, b); err != nil {
			return fmt.Errorf("health: remove backend %s: %w", b.ID, err)
		}
	}
	txn.Commit()
	return nil
}

// ErrNoBackend is returned for a backend the store does not hold.
var ErrNoBackend = errors.New("no such backend")

// SetStatus records a backend's new health. It returns the previous status
// and whether anything changed; the reason alone changing is not a change.
func (s *Store) SetStatus(id string, st Status, reason string) (Status, bool, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	raw, err := txn.First(tableBackends, "id", id)
	if err != nil {
		return Unknown, false, fmt.Errorf("health: set status of %s: %w", id, err)
	}
	old, ok := raw.(*Backend)
	if !ok {
		return Unknown, false, fmt.Errorf("health: set status of %s: %w", id, ErrNoBackend)
	}
	if old.Status == st {
		return old.Status, false, nil
	}
	b := *old
	b.Status, b.Reason, b.Since = st, reason, s.now()
	if old.Status == Unhealthy && st == Healthy {
		b.ReturnedAt = b.Since
	}
	if err := txn.Insert(tableBackends, &b); err != nil {
		return old.Status, false, fmt.Errorf("health: set status of %s: %w", id, err)
	}
	txn.Commit()
	return old.Status, true, nil
}

// Ejection asks Eject to take a backend out of service.
type Ejection struct {
	// ID is the backend's.
	ID string
	// Reason says why, in a word ("errors", "5xx", "success_rate").
	Reason string
	// Base is the first ejection's length; the n-th in a row lasts n times
	// as long, up to Max. A backend not ejected for Max starts again at one.
	Base, Max time.Duration
	// MaxShare is the largest share of the backend's region ejected at
	// once; one backend may always be.
	MaxShare float64
}

// Eject takes a backend out of service until its ejection time is over
// (see Ejection). It reports false, changing nothing, when the backend is
// already ejected or its region has as many ejected as MaxShare allows.
func (s *Store) Eject(e Ejection) (*Backend, bool, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	raw, err := txn.First(tableBackends, "id", e.ID)
	if err != nil {
		return nil, false, fmt.Errorf("health: eject %s: %w", e.ID, err)
	}
	old, ok := raw.(*Backend)
	if !ok {
		return nil, false, fmt.Errorf("health: eject %s: %w", e.ID, ErrNoBackend)
	}
	if old.Ejected {
		return old, false, nil
	}
	it, err := txn.Get(tableBackends, "region", old.Region)
	if err != nil {
		return nil, false, fmt.Errorf("health: eject %s: %w", e.ID, err)
	}
	total, ejected := 0, 0
	for raw := it.Next(); raw != nil; raw = it.Next() {
		total++
		if raw.(*Backend).Ejected {
			ejected++
		}
	}
	if ejected > 0 && float64(ejected+1) > e.MaxShare*float64(total) {
		return old, false, nil
	}
	now := s.now()
	b := *old
	if b.EjectedAt.IsZero() || now.Sub(b.EjectedAt) > e.Max+e.Base*time.Duration(b.Ejections) {
		b.Ejections = 0 // a long good run: the count starts again
	}
	b.Ejections++
	b.Ejected, b.EjectedAt, b.EjectReason = true, now, e.Reason
	b.EjectedUntil = now.Add(min(e.Base*time.Duration(b.Ejections), max(e.Max, e.Base)))
	if err := txn.Insert(tableBackends, &b); err != nil {
		return nil, false, fmt.Errorf("health: eject %s: %w", e.ID, err)
	}
	txn.Commit()
	return &b, true, nil
}

// ReturnIfDue puts an ejected backend back into service when its ejection
// time is over; the checker calls it when the backend passes a probe. It
// reports whether the backend returned.
func (s *Store) ReturnIfDue(id string) (*Backend, bool, error) {
	cur, err := s.Backend(id)
	if err != nil || !cur.Ejected || s.now().Before(cur.EjectedUntil) {
		return cur, false, err // a read only: nothing to do, most times
	}
	txn := s.db.Txn(true)
	defer txn.Abort()
	raw, err := txn.First(tableBackends, "id", id)
	if err != nil {
		return nil, false, fmt.Errorf("health: return %s: %w", id, err)
	}
	old, ok := raw.(*Backend)
	if !ok {
		return nil, false, fmt.Errorf("health: return %s: %w", id, ErrNoBackend)
	}
	if !old.Ejected {
		return old, false, nil
	}
	b := *old
	b.Ejected, b.ReturnedAt = false, s.now()
	if err := txn.Insert(tableBackends, &b); err != nil {
		return nil, false, fmt.Errorf("health: return %s: %w", id, err)
	}
	txn.Commit()
	return &b, true, nil
}

// Backends returns every backend ordered by ID. When ws is not nil, it gets
// a channel that closes when any backend changes.
func (s *Store) Backends(ws memdb.WatchSet) ([]*Backend, error) {
	txn := s.db.Txn(false)
	it, err := txn.Get(tableBackends, "id")
	if err != nil {
		return nil, fmt.Errorf("health: list backends: %w", err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*Backend
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Backend))
	}
	return out, nil
}

// Backend returns one backend, or ErrNoBackend.
func (s *Store) Backend(id string) (*Backend, error) {
	raw, err := s.db.Txn(false).First(tableBackends, "id", id)
	if err != nil {
		return nil, fmt.Errorf("health: get backend %s: %w", id, err)
	}
	b, ok := raw.(*Backend)
	if !ok {
		return nil, fmt.Errorf("health: get backend %s: %w", id, ErrNoBackend)
	}
	return b, nil
}

// InRegion returns the backends of one region, ordered by ID.
func (s *Store) InRegion(region string) ([]*Backend, error) {
	return s.list("region", region)
}

// WithStatus returns the backends in one state, ordered by ID.
func (s *Store) WithStatus(st Status) ([]*Backend, error) {
	return s.list("status", st)
}

func (s *Store) list(index string, arg any) ([]*Backend, error) {
	it, err := s.db.Txn(false).Get(tableBackends, index, arg)
	if err != nil {
		return nil, fmt.Errorf("health: list backends by %s: %w", index, err)
	}
	var out []*Backend
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Backend))
	}
	return out, nil
}

// WaitSettled blocks until no backend is Unknown (every backend has had its
// first probe), or ctx ends.
func (s *Store) WaitSettled(ctx context.Context) error {
	for {
		ws := memdb.NewWatchSet()
		bs, err := s.Backends(ws)
		if err != nil {
			return err
		}
		settled := true
		for _, b := range bs {
			if b.Status == Unknown {
				settled = false
				break
			}
		}
		if settled {
			return nil
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return fmt.Errorf("health: wait for first probes: %w", err)
		}
	}
}
