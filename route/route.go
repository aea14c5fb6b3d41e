// Package route decides where a request goes: which regions to try, in which
// order and why, and which backend inside a region.
//
// Everything here is a pure function of its inputs (a client point and an
// immutable Snapshot of regions and their healthy backends): no I/O, no
// locks, and no allocation on the request path. The only mutable state is
// each Backend's in-flight counter, an atomic.
package route

import (
	"crypto/tls"
	"math"
	"net/url"
	"sync/atomic"
	"time"
)

// EarthRadiusKm is the mean Earth radius used for great-circle distances.
const EarthRadiusKm = 6371.0088

// Point is a position on Earth in decimal degrees.
type Point struct {
	Lat, Lon float64
}

// Backend is one instance of the app in a region. A Backend lives as long as
// the configuration that declared it: successive snapshots of that
// configuration share the same *Backend, so its in-flight count is kept
// across health changes.
type Backend struct {
	// ID identifies the backend (its URL as configured).
	ID string
	// Region is the name of the region the backend belongs to.
	Region string
	// URL is where requests are forwarded.
	URL *url.URL
	// Weight is the backend's share of its region's traffic, relative to
	// the other backends of the region.
	Weight int
	// Index is the backend's position among every backend of its
	// configuration, from 0: per-backend state is kept in slices by it.
	Index int
	// TLS, for an https backend, is how to speak TLS to it; nil for the
	// defaults (the system's authorities, the URL's host).
	TLS *tls.Config
	// HTTP2 says the backend is spoken to in HTTP/2 (without TLS for an
	// http URL: h2c); false for HTTP/1.1.
	HTTP2 bool

	inflight atomic.Int64
}

// InFlight returns how many requests the backend is serving now.
func (b *Backend) InFlight() int64 { return b.inflight.Load() }

// Acquire counts one more request in flight on the backend.
func (b *Backend) Acquire() { b.inflight.Add(1) }

// Release counts one request in flight less on the backend.
func (b *Backend) Release() { b.inflight.Add(-1) }

// RegionSpec declares a region for NewSnapshot.
type RegionSpec struct {
	Name     string
	Location Point
	Backends []*Backend
	// Bias grows (positive) or shrinks (negative) the region's catchment:
	// distances to it count as distance × (1 - Bias/100), as Route 53's
	// geoproximity bias. -99 to 99.
	Bias int
	// Load, when set, holds the region's capacity and load.
	Load *Load
}

// Region is a region as seen by one Snapshot.
type Region struct {
	// Name is the region's configured name.
	Name string
	// Index is the region's position in the configuration.
	Index int
	// Location is where the region is.
	Location Point
	// Backends lists every configured backend of the region.
	Backends []*Backend
	// Healthy lists the backends that may receive traffic now.
	Healthy []*Backend
	// HealthyShare is the healthy backends' share of the region's weight,
	// 0 to 1.
	HealthyShare float64
	// Degraded: HealthyShare is below the snapshot's DegradedBelow, so
	// the region passes part of its clients on.
	Degraded bool
	// HeldUntil is when a region back from failover starts taking its
	// clients again (failback hold); zero when it is not held.
	HeldUntil time.Time
	// Ramp is the share of its clients a region back from failover takes
	// while it ramps up (slow start), 0 to 1; 1 when not ramping.
	Ramp float64
	// Share is the share of its clients the region takes, in 1/65536:
	// FullShare when healthy enough and not held or ramping. Its capacity
	// (Load) may take less.
	Share uint32
	// Bias is the region's configured bias.
	Bias int
	// Load is the region's capacity and load; nil when unlimited.
	Load *Load

	scale float64 // 1 - Bias/100

	sinLat, cosLat, lonRad float64
	cumWeight              []int64
	weight                 []int64 // effective weight of each Healthy backend (slow start)
}

// SameBackends reports whether r and o serve with the same backends at the
// same weights.
func (r *Region) SameBackends(o *Region) bool {
	if len(r.Healthy) != len(o.Healthy) {
		return false
	}
	for i := range r.Healthy {
		if r.Healthy[i] != o.Healthy[i] || r.weight[i] != o.weight[i] {
			return false
		}
	}
	return true
}

// FullShare is Region.Share when the region takes all its clients.
const FullShare = 1 << 16

// Eligible reports whether the region can serve: it has a healthy backend.
func (r *Region) Eligible() bool { return len(r.Healthy) > 0 }

// Held reports whether the region is held back after failover.
func (r *Region) Held() bool { return !r.HeldUntil.IsZero() }

// takes reports whether the region takes the client with key, by its
// share: the same clients every time, and those taken at a smaller share
// are still taken at a larger one.
func (r *Region) takes(key uint64) bool {
	share := r.Share
	if r.Load != nil {
		share = uint32(uint64(share) * uint64(r.Load.Share()) >> 16)
	}
	if share >= FullShare {
		return true
	}
	h := (key ^ uint64(r.Index+1)*0x9e3779b97f4a7c15) * 0xbf58476d1ce4e5b9
	return uint32(h>>48) < share
}

// Snapshot is an immutable view of all regions and their healthy backends.
// The request path loads the current Snapshot through an atomic pointer and
// never locks.
type Snapshot struct {
	// Regions in configuration order.
	Regions []Region
	// Version increases with every snapshot built from the same source.
	Version uint64
	// Panic: no region has a healthy backend, and every backend of every
	// region is taken as healthy (see Build.PanicWhenAllDown).
	Panic bool
	// Rules steer the clients they match (see Plan).
	Rules []Rule

	biased bool // a region has a bias
}

// NewSnapshot builds a Snapshot. healthy reports whether a backend may get
// traffic; backends are kept in configuration order.
func NewSnapshot(specs []RegionSpec, healthy func(*Backend) bool, version uint64) *Snapshot {
	return Build{Specs: specs, Version: version,
		Backend: func(b *Backend) (bool, float64) { return healthy(b), 1 }}.Snapshot()
}

// Build describes a Snapshot to make.
type Build struct {
	Specs   []RegionSpec
	Version uint64
	// Backend reports whether a backend may get traffic, and the share of
	// its configured weight it takes now: below 1 while it ramps up, other
	// than 1 when an operator set its weight.
	Backend func(*Backend) (ok bool, ramp float64)
	// Region, when set, returns a region's failback state: until when it
	// is held back, and the share of its clients it takes while it ramps
	// up (0 to 1). It is asked only for regions with a healthy backend.
	Region func(r *Region) (heldUntil time.Time, ramp float64)
	// DegradedBelow: a region whose healthy share of weight is below it
	// takes only healthy share ÷ DegradedBelow of its clients; 0 never.
	DegradedBelow float64
	// PanicWhenAllDown: when no region has a healthy backend, take every
	// backend as healthy, but those Excluded.
	PanicWhenAllDown bool
	// Excluded, when set, reports backends that never serve, even in
	// panic mode (an operator drained or disabled them).
	Excluded func(*Backend) bool
	// Rules are the compiled rules (see CompileRules).
	Rules []Rule
}

// Snapshot builds the snapshot b describes.
func (b Build) Snapshot() *Snapshot {
	s := &Snapshot{Regions: make([]Region, len(b.Specs)), Version: b.Version, Rules: b.Rules}
	eligible := false
	for i, spec := range b.Specs {
		latRad := spec.Location.Lat * math.Pi / 180
		r := Region{
			Name:     spec.Name,
			Index:    i,
			Location: spec.Location,
			Backends: spec.Backends,
			Ramp:     1,
			Bias:     spec.Bias,
			Load:     spec.Load,
			scale:    1 - float64(spec.Bias)/100,
			sinLat:   math.Sin(latRad),
			cosLat:   math.Cos(latRad),
			lonRad:   spec.Location.Lon * math.Pi / 180,
		}
		total, healthy := 0, 0
		for _, be := range spec.Backends {
			total += max(be.Weight, 1)
			if ok, ramp := b.Backend(be); ok {
				healthy += max(be.Weight, 1)
				r.add(be, ramp)
			}
		}
		if total > 0 {
			r.HealthyShare = float64(healthy) / float64(total)
		}
		eligible = eligible || r.Eligible()
		s.biased = s.biased || r.Bias != 0
		s.Regions[i] = r
	}
	if !eligible && b.PanicWhenAllDown && len(s.Regions) > 0 {
		s.Panic = true
		for i := range s.Regions {
			r := &s.Regions[i]
			for _, be := range r.Backends {
				if b.Excluded == nil || !b.Excluded(be) {
					r.add(be, 1)
				}
			}
		}
	}
	for i := range s.Regions {
		r := &s.Regions[i]
		share := 1.0
		if !s.Panic && b.DegradedBelow > 0 && r.HealthyShare < b.DegradedBelow {
			r.Degraded = true
			share = r.HealthyShare / b.DegradedBelow
		}
		if r.Eligible() && !s.Panic && b.Region != nil {
			r.HeldUntil, r.Ramp = b.Region(r)
			if r.Held() {
				r.Ramp = 0
			}
			share *= r.Ramp
		}
		r.Share = uint32(min(max(share, 0), 1) * FullShare)
	}
	return s
}

// add makes be a healthy backend of r, at ramp times its weight.
func (r *Region) add(be *Backend, ramp float64) {
	// Weights are kept in thousandths so that a ramping backend takes a
	// fraction of its share.
	w := max(int64(float64(max(be.Weight, 1))*1000*ramp), 1)
	total := w
	if n := len(r.cumWeight); n > 0 {
		total += r.cumWeight[n-1]
	}
	r.Healthy = append(r.Healthy, be)
	r.weight = append(r.weight, w)
	r.cumWeight = append(r.cumWeight, total)
}

// Region returns the region with the given name, or nil.
func (s *Snapshot) Region(name string) *Region {
	for i := range s.Regions {
		if s.Regions[i].Name == name {
			return &s.Regions[i]
		}
	}
	return nil
}

// Distance returns the great-circle distance in km between two points.
func Distance(a, b Point) float64 {
	sa, ca := math.Sincos(a.Lat * math.Pi / 180)
	sb, cb := math.Sincos(b.Lat * math.Pi / 180)
	return haversine(sa, ca, a.Lon*math.Pi/180, sb, cb, b.Lon*math.Pi/180)
}

// order is the key a Plan ranks the region by for a client whose
// latitude's sine and cosine are given: the distance scaled by the bias,
// or, when no region of the snapshot has a bias, the haversine term, which
// grows with the distance and spares the arcsine.
func (r *Region) order(sinLat, cosLat, lonRad float64, biased bool) float64 {
	h := hav(r.sinLat, r.cosLat, r.lonRad, sinLat, cosLat, lonRad)
	if !biased {
		return h
	}
	return 2 * EarthRadiusKm * math.Asin(math.Sqrt(h)) * r.scale
}

// haversine takes both points' precomputed sine and cosine of latitude.
func haversine(sinLat1, cosLat1, lon1, sinLat2, cosLat2, lon2 float64) float64 {
	h := hav(sinLat1, cosLat1, lon1, sinLat2, cosLat2, lon2)
	return 2 * EarthRadiusKm * math.Asin(math.Sqrt(h))
}

// hav is the haversine term of the distance between two points, 0 to 1.
func hav(sinLat1, cosLat1, lon1, sinLat2, cosLat2, lon2 float64) float64 {
	// sin²(Δφ/2) = (1 - cos Δφ)/2 with cos Δφ = cosφ1 cosφ2 + sinφ1 sinφ2.
	cosDLat := cosLat1*cosLat2 + sinLat1*sinLat2
	sinHalfDLon := math.Sin((lon2 - lon1) / 2)
	h := (1-cosDLat)/2 + cosLat1*cosLat2*sinHalfDLon*sinHalfDLon
	return min(max(h, 0), 1)
}
