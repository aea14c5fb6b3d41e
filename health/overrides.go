package health

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Override kinds, set by an operator through the admin API.
const (
	// Drain: no new requests; those in flight finish.
	Drain = "drain"
	// Disable: out of service at once, for maintenance.
	Disable = "disable"
)

// Override is an operator's setting for a region or a backend, kept in the
// store across config reloads while its target exists. Rows are
// immutable once stored.
type Override struct {
	// Target is "region:NAME" or "backend:URL".
	Target string
	// Kind is Drain, Disable, or "" (only a weight).
	Kind string
	// Weight, when positive, replaces a backend's configured weight.
	Weight int
	// Since is when the override was last changed.
	Since time.Time
}

const tableOverrides = "overrides"

func overridesTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableOverrides,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Target"}},
		},
	}
}

// RegionTarget and BackendTarget name override targets.
func RegionTarget(name string) string { return "region:" + name }

// BackendTarget names a backend's override target.
func BackendTarget(id string) string { return "backend:" + id }

// SetOverride sets (or, with kind "" and weight 0, removes) the override of
// target. Changing only the kind keeps the weight and the other way round
// when keep is true.
func (s *Store) SetOverride(target, kind string, weight int, keep bool) (*Override, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	raw, err := txn.First(tableOverrides, "id", target)
	if err != nil {
		return nil, fmt.Errorf("health: override %s: %w", target, err)
	}
	o := &Override{Target: target, Kind: kind, Weight: weight, Since: s.now()}
	if old, ok := raw.(*Override); ok && keep {
		if kind == "" && weight > 0 {
			o.Kind = old.Kind
		}
		if weight == 0 && kind != "" {
			o.Weight = old.Weight
		}
	}
	if o.Kind == "" && o.Weight == 0 {
		if raw != nil {
			if err := txn.Delete(tableOverrides, raw); err != nil {
				return nil, fmt.Errorf("health: override %s: %w", target, err)
			}
		}
		txn.Commit()
		return nil, nil
	}
	if err := txn.Insert(tableOverrides, o); err != nil {
		return nil, fmt.Errorf("health: override %s: %w", target, err)
	}
	txn.Commit()
	return o, nil
}

// Overrides returns every override, by target. When ws is not nil, it gets
// a channel that closes when any override changes.
func (s *Store) Overrides(ws memdb.WatchSet) (map[string]*Override, error) {
	it, err := s.db.Txn(false).Get(tableOverrides, "id")
	if err != nil {
		return nil, fmt.Errorf("health: list overrides: %w", err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	out := map[string]*Override{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		o := raw.(*Override)
		out[o.Target] = o
	}
	return out, nil
}

// Effective returns, from overrides (as Overrides lists them), what an
// operator set for the backend id of region: the drain or disable in force
// (the backend's own, else its region's; nil when none), and the weight
// set for the backend (0 when none).
func Effective(overrides map[string]*Override, region, id string) (out *Override, weight int) {
	if o := overrides[BackendTarget(id)]; o != nil {
		weight = o.Weight
		if o.Kind != "" {
			return o, weight
		}
	}
	if o := overrides[RegionTarget(region)]; o != nil && o.Kind != "" {
		return o, weight
	}
	return nil, weight
}

// PruneOverrides removes the overrides whose target is not in keep.
func (s *Store) PruneOverrides(keep map[string]bool) error {
	txn := s.db.Txn(true)
	defer txn.Abort()
	it, err := txn.Get(tableOverrides, "id")
	if err != nil {
		return fmt.Errorf("health: prune overrides: %w", err)
	}
	var stale []any
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if !keep[raw.(*Override).Target] {
			stale = append(stale, raw)
		}
	}
	for _, raw := range stale {
		if err := txn.Delete(tableOverrides, raw); err != nil {
			return fmt.Errorf("health: prune overrides: %w", err)
		}
	}
	txn.Commit()
	return nil
}
