package geo_test

import (
	"bytes"
	"compress/gzip"
	"math/big"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/geo"
)

// writeDB writes a database with the given options and records keyed by
// CIDR.
func writeDB(t testing.TB, opts mmdbwriter.Options, records map[string]mmdbtype.DataType) []byte {
	t.Helper()
	opts.IncludeReservedNetworks = true
	tree, err := mmdbwriter.New(opts)
	require.NoError(t, err)
	for cidr, rec := range records {
		_, network, err := net.ParseCIDR(cidr)
		require.NoError(t, err)
		require.NoError(t, tree.Insert(network, rec))
	}
	var buf bytes.Buffer
	_, err = tree.WriteTo(&buf)
	require.NoError(t, err)
	return buf.Bytes()
}

func compactRecord(cc string, lat, lon float32) mmdbtype.Map {
	return mmdbtype.Map{"country_code": mmdbtype.String(cc), "latitude": mmdbtype.Float32(lat), "longitude": mmdbtype.Float32(lon)}
}

func TestCompactDatabase(t *testing.T) {
	built := time.Date(2026, 6, 5, 13, 43, 16, 0, time.UTC)
	b := writeDB(t, mmdbwriter.Options{
		DatabaseType: geo.CompactDatabaseType,
		BuildEpoch:   built.Unix(),
		RecordSize:   24,
		Description: map[string]string{
			"en":                    "Compact test data. IP Geolocation by DB-IP (https://db-ip.com).",
			geo.DescSource:          "DB-IP IP to City Lite (test)",
			geo.DescSourceBuildTime: "2026-06-01T10:00:00Z",
			geo.DescModified:        "modified: rounded",
		},
	}, map[string]mmdbtype.DataType{
		"203.0.113.0/26":  compactRecord("GB", 51.5, -0.1),
		"203.0.113.64/26": compactRecord("us", 47.6, -122.3), // lower case
		"203.0.113.128/26": mmdbtype.Map{ // other numeric types, extra keys
			"country_code": mmdbtype.String("JP"),
			"latitude":     mmdbtype.Float64(35.7),
			"longitude":    mmdbtype.Int32(139),
			"city":         mmdbtype.String("Tokyo"),
			"names":        mmdbtype.Map{"en": mmdbtype.String("Tokyo"), "ja": mmdbtype.String("東京")},
			"tags":         mmdbtype.Slice{mmdbtype.Bool(true), (*mmdbtype.Uint128)(big.NewInt(1)), mmdbtype.Bytes{1, 2}, mmdbtype.Uint64(7)},
		},
		"203.0.113.192/26":  mmdbtype.Map{"country_code": mmdbtype.String("DE"), "latitude": mmdbtype.Uint16(50), "longitude": mmdbtype.Uint32(8)},
		"198.51.100.0/26":   mmdbtype.Map{"country_code": mmdbtype.String("FR")},                                                                      // no coordinates
		"198.51.100.64/26":  compactRecord("SE", 0, 0),                                                                                                // 0,0: none
		"198.51.100.128/26": mmdbtype.Map{"country_code": mmdbtype.String("ZZ"), "latitude": mmdbtype.String("1"), "longitude": mmdbtype.String("2")}, // unknown country, unusable coordinates
		"198.51.100.192/26": mmdbtype.Map{"latitude": mmdbtype.Float32(-33.9), "longitude": mmdbtype.Float32(151.2)},                                  // coordinates only
		"192.0.2.0/25":      mmdbtype.Map{},
		"192.0.2.128/25":    mmdbtype.Map{"country_code": mmdbtype.String("GBR"), "latitude": mmdbtype.Float32(91), "longitude": mmdbtype.Float32(0)},
		"2001:db8:1::/48":   compactRecord("FR", 48.9, 2.4),
	})
	db, err := geo.OpenBytes("compact", b)
	require.NoError(t, err)
	info := db.Info()
	assert.Equal(t, geo.KindCompactCity, info.Kind)
	assert.Equal(t, geo.CompactDatabaseType, info.DatabaseType)
	assert.Equal(t, "DB-IP IP to City Lite (test)", info.Source)
	assert.Equal(t, time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC), info.SourceBuildTime)
	assert.Equal(t, built, info.BuildTime)
	assert.Equal(t, "modified: rounded", info.Modified)
	assert.Equal(t, geo.AttributionDBIP, info.Attribution, "from the source's name")
	assert.Contains(t, info.Description, "Compact test data")

	for _, tc := range []struct {
		addr  string
		want  geo.Location
		found bool
	}{
		{"203.0.113.1", geo.Location{Country: "GB", Continent: "EU", Lat: 51.5, Lon: -0.1}, true},
		{"203.0.113.65", geo.Location{Country: "US", Continent: "NA", Lat: 47.6, Lon: -122.3}, true},
		{"203.0.113.129", geo.Location{Country: "JP", Continent: "AS", Lat: 35.7, Lon: 139}, true},
		{"203.0.113.193", geo.Location{Country: "DE", Continent: "EU", Lat: 50, Lon: 8}, true},
		{"198.51.100.1", geo.Location{Country: "FR", Continent: "EU", Lat: 46.227638, Lon: 2.213749}, true},
		{"198.51.100.65", geo.Location{Country: "SE", Continent: "EU", Lat: 60.128161, Lon: 18.643501}, true},
		{"198.51.100.129", geo.Location{Country: "ZZ"}, true},
		{"198.51.100.193", geo.Location{Lat: -33.9, Lon: 151.2}, true},
		{"192.0.2.1", geo.Location{}, false},   // empty record
		{"192.0.2.129", geo.Location{}, false}, // three-letter code, latitude 91
		{"2001:db8:1::1", geo.Location{Country: "FR", Continent: "EU", Lat: 48.9, Lon: 2.4}, true},
		{"::ffff:203.0.113.1", geo.Location{Country: "GB", Continent: "EU", Lat: 51.5, Lon: -0.1}, true},
		{"2001:db8:2::1", geo.Location{}, false},
	} {
		got, found, err := db.Lookup(netip.MustParseAddr(tc.addr))
		require.NoError(t, err, tc.addr)
		assert.Equal(t, tc.found, found, tc.addr)
		assert.Equal(t, tc.want.Country, got.Country, tc.addr)
		assert.Equal(t, tc.want.Continent, got.Continent, tc.addr)
		assert.InDelta(t, tc.want.Lat, got.Lat, 1e-5, tc.addr)
		assert.InDelta(t, tc.want.Lon, got.Lon, 1e-5, tc.addr)
	}

	// The Locator gives a ZZ client the default coordinates.
	got, res := geo.NewLocator(db, def, nil).Locate(netip.MustParseAddr("198.51.100.129"))
	assert.Equal(t, geo.ResultFound, res)
	assert.Equal(t, geo.Location{Country: "ZZ", Lat: def.Lat, Lon: def.Lon}, got)
}

func readFixture(name string) ([]byte, error) { return os.ReadFile(fixture(name)) }

func TestCompactLookupAllocs(t *testing.T) {
	db := open(t, "")
	loc := geo.NewLocator(db, def, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	addrs := make([]netip.Addr, 0, 2000)
	for len(addrs) < cap(addrs) {
		v := rng.Uint32()
		addrs = append(addrs, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, byte(rng.IntN(16)), byte(rng.Uint32()), byte(rng.Uint32())
		addrs = append(addrs, netip.AddrFrom16(b))
	}
	i := 0
	allocs := testing.AllocsPerRun(len(addrs), func() {
		_, _, _ = db.Lookup(addrs[i%len(addrs)])
		_, _ = loc.Locate(addrs[i%len(addrs)])
		i++
	})
	assert.Zero(t, allocs, "no allocation, also for records never seen before")
}

func TestCompactCorrupt(t *testing.T) {
	// A record that is not a map: refused at open (the first record is
	// checked) ...
	b := writeDB(t, mmdbwriter.Options{DatabaseType: geo.CompactDatabaseType, RecordSize: 24},
		map[string]mmdbtype.DataType{"203.0.113.0/24": mmdbtype.String("GB")})
	_, err := geo.OpenBytes("bad", b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "geo: open bad: first record: ")

	// ... or an error on lookup when it is not the first.
	b = writeDB(t, mmdbwriter.Options{DatabaseType: geo.CompactDatabaseType, RecordSize: 24},
		map[string]mmdbtype.DataType{
			"198.51.100.0/24":  compactRecord("GB", 51.5, -0.1), // written first
			"203.0.113.0/25":   mmdbtype.Map{"country_code": mmdbtype.String("GB"), "latitude": mmdbtype.Slice{}},
			"203.0.113.128/25": mmdbtype.Slice{mmdbtype.String("x")},
		})
	db, err := geo.OpenBytes("bad", b)
	require.NoError(t, err)
	_, _, err = db.Lookup(netip.MustParseAddr("198.51.100.1"))
	require.NoError(t, err)
	got, found, err := db.Lookup(netip.MustParseAddr("203.0.113.1"))
	require.NoError(t, err, "a latitude of another type is skipped")
	assert.True(t, found)
	assert.Equal(t, "GB", got.Country)
	_, _, err = db.Lookup(netip.MustParseAddr("203.0.113.200"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "geo: lookup 203.0.113.200 in bad: ")
	assert.Contains(t, err.Error(), "not a map")

	// Damaged data sections give errors, never a panic.
	good := writeDB(t, mmdbwriter.Options{DatabaseType: geo.CompactDatabaseType, RecordSize: 24},
		map[string]mmdbtype.DataType{
			"203.0.113.0/25":   compactRecord("GB", 51.5, -0.1),
			"203.0.113.128/25": compactRecord("DE", 50.1, 8.7),
			"198.51.100.0/24":  compactRecord("JP", 35.7, 139.8),
		})
	marker := bytes.LastIndex(good, []byte("\xAB\xCD\xEFMaxMind.com"))
	rng := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		b := bytes.Clone(good)
		for range 1 + rng.IntN(3) {
			// Damage the data section only (between the tree and the
			// metadata), as the reader checks the rest.
			i := marker - 1 - rng.IntN(40)
			b[i] = byte(rng.Uint32())
		}
		db, err := geo.OpenBytes("damaged", b)
		if err != nil {
			continue
		}
		for _, a := range []string{"203.0.113.1", "203.0.113.200", "198.51.100.1"} {
			_, _, _ = db.Lookup(netip.MustParseAddr(a))
		}
	}
}

func TestPackRoundTrip(t *testing.T) {
	recs := map[string]mmdbtype.DataType{
		"203.0.113.0/26":  compactRecord("GB", 51.5, -0.1),
		"203.0.113.64/26": compactRecord("US", 47.6, -122.3),
		"198.51.100.0/24": compactRecord("JP", 35.7, 139.8),
		"2001:db8:1::/48": compactRecord("FR", 48.9, 2.4),
		"2001:db8:2::/48": compactRecord("GB", 51.5, -0.1),
	}
	for _, size := range []int{24, 28, 32} {
		b := writeDB(t, mmdbwriter.Options{DatabaseType: geo.CompactDatabaseType, RecordSize: size}, recs)
		packed, err := geo.Pack(b)
		require.NoError(t, err, size)
		got, err := geo.Unpack(packed)
		require.NoError(t, err, size)
		assert.Equal(t, b, got, "record size %d", size)
	}
	// The fixtures and the embedded database.
	for _, name := range []string{"geoip2-city.mmdb", "flat-country.mmdb"} {
		b, err := readFixture(name)
		require.NoError(t, err)
		packed, err := geo.Pack(b)
		require.NoError(t, err)
		got, err := geo.Unpack(packed)
		require.NoError(t, err)
		assert.Equal(t, b, got, name)
	}
	b := writeDB(t, mmdbwriter.Options{DatabaseType: geo.CompactDatabaseType, RecordSize: 24}, recs)
	p1, err := geo.Pack(b)
	require.NoError(t, err)
	p2, err := geo.Pack(b)
	require.NoError(t, err)
	assert.Equal(t, p1, p2, "packing is deterministic")
}

func TestUnpackErrors(t *testing.T) {
	b := writeDB(t, mmdbwriter.Options{DatabaseType: geo.CompactDatabaseType, RecordSize: 24},
		map[string]mmdbtype.DataType{"203.0.113.0/24": compactRecord("GB", 51.5, -0.1)})
	packed, err := geo.Pack(b)
	require.NoError(t, err)
	raw := gunzipped(t, packed)

	for name, in := range map[string][]byte{
		"not gzip":  []byte("plain text"),
		"no magic":  gzipped(t, []byte("hello")),
		"truncated": gzipped(t, raw[:len(raw)/2]),
		"too long":  gzipped(t, append(bytes.Clone(raw), 0)),
	} {
		_, err := geo.Unpack(in)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "geo: unpack: ", name)
	}
	_, err = geo.Pack([]byte("not a database"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "geo: pack: ")

	// Damaged streams fail cleanly.
	rng := rand.New(rand.NewPCG(7, 8))
	for range 2000 {
		d := bytes.Clone(raw)
		d[rng.IntN(len(d))] = byte(rng.Uint32())
		out, err := geo.Unpack(gzipped(t, d))
		if err == nil {
			_, _ = geo.OpenBytes("damaged", out)
		}
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func gunzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = buf.ReadFrom(zr)
	require.NoError(t, err)
	return buf.Bytes()
}
