// Package route decides where a request goes: which regions to try, in which
// order and why, and which backend inside a region.
//
// Everything here is a pure function of its inputs (a client point and an
// immutable Snapshot of regions and their healthy backends): no I/O, no
// locks, and no allocation on the request path. The only mutable state is
// each Backend's in-flight counter, an atomic.
package route

import (
	"math"
	"net/url"
	"sync/atomic"
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

	sinLat, cosLat, lonRad float64
	cumWeight              []int
}

// Eligible reports whether the region can serve: it has a healthy backend.
func (r *Region) Eligible() bool { return len(r.Healthy) > 0 }

// Snapshot is an immutable view of all regions and their healthy backends.
// The request path loads the current Snapshot through an atomic pointer and
// never locks.
type Snapshot struct {
	// Regions in configuration order.
	Regions []Region
	// Version increases with every snapshot built from the same source.
	Version uint64
}

// NewSnapshot builds a Snapshot. healthy reports whether a backend may get
// traffic; backends are kept in configuration order.
func NewSnapshot(specs []RegionSpec, healthy func(*Backend) bool, version uint64) *Snapshot {
	s := &Snapshot{Regions: make([]Region, len(specs)), Version: version}
	for i, spec := range specs {
		latRad := spec.Location.Lat * math.Pi / 180
		r := Region{
			Name:     spec.Name,
			Index:    i,
			Location: spec.Location,
			Backends: spec.Backends,
			sinLat:   math.Sin(latRad),
			cosLat:   math.Cos(latRad),
			lonRad:   spec.Location.Lon * math.Pi / 180,
		}
		total := 0
		for _, b := range spec.Backends {
			if healthy(b) {
				r.Healthy = append(r.Healthy, b)
				total += max(b.Weight, 1)
				r.cumWeight = append(r.cumWeight, total)
			}
		}
		s.Regions[i] = r
	}
	return s
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

// distance to a client whose latitude's sine and cosine are given.
func (r *Region) distance(sinLat, cosLat, lonRad float64) float64 {
	return haversine(r.sinLat, r.cosLat, r.lonRad, sinLat, cosLat, lonRad)
}

// haversine takes both points' precomputed sine and cosine of latitude.
func haversine(sinLat1, cosLat1, lon1, sinLat2, cosLat2, lon2 float64) float64 {
	// sin²(Δφ/2) = (1 - cos Δφ)/2 with cos Δφ = cosφ1 cosφ2 + sinφ1 sinφ2.
	cosDLat := cosLat1*cosLat2 + sinLat1*sinLat2
	sinHalfDLon := math.Sin((lon2 - lon1) / 2)
	h := (1-cosDLat)/2 + cosLat1*cosLat2*sinHalfDLon*sinHalfDLon
	h = min(max(h, 0), 1)
	return 2 * EarthRadiusKm * math.Asin(math.Sqrt(h))
}
