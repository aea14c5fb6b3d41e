package geo_test

import (
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/geo"
)

const eps = 0.01

// def is the default location the tests give their Locators.
var def = geo.Location{Country: "US", Continent: "NA", City: "Ashburn", Lat: 39.0438, Lon: -77.4874}

func fixture(name string) string { return filepath.Join("..", "testdata", name) }

func open(t testing.TB, path string) *geo.Database {
	t.Helper()
	db, err := geo.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Country reference points (Google DSPL) used by the country-only cases.
var point = map[string][2]float64{
	"GB": {55.378051, -3.435973},
	"US": {37.09024, -95.712891},
	"DE": {51.165691, 10.451526},
	"JP": {36.204824, 138.252924},
	"FR": {46.227638, 2.213749},
	"SE": {60.128161, 18.643501},
}

// place is an expected answer; lat/lon are ignored when country-only.
type place struct {
	country, continent string
	subISO, subName    string
	city               string
	lat, lon           float64
}

var (
	london    = place{"GB", "EU", "ENG", "England", "London", 51.5142, -0.0931}
	seattle   = place{"US", "NA", "WA", "Washington", "Seattle", 47.6062, -122.3321}
	newYork   = place{"US", "NA", "NY", "New York", "New York", 40.7128, -74.0060}
	frankfurt = place{"DE", "EU", "HE", "Hesse", "Frankfurt am Main", 50.1109, 8.6821}
	tokyo     = place{"JP", "AS", "13", "Tokyo", "Tokyo", 35.6895, 139.6917}
	paris     = place{"FR", "EU", "IDF", "Île-de-France", "Paris", 48.8566, 2.3522}
	sweden    = place{country: "SE", continent: "EU"} // country only in every fixture
	unknownZZ = place{country: "ZZ"}                  // no coordinates, no reference point
)

// fixtureAddrs is the table of testdata/gen, keyed by address.
var fixtureAddrs = []struct {
	addr string
	want *place // nil: not in the fixtures
}{
	{"203.0.113.10", &london},
	{"203.0.113.63", &london},
	{"203.0.113.70", &seattle},
	{"203.0.113.130", &newYork},
	{"203.0.113.200", &frankfurt},
	{"198.51.100.10", &tokyo},
	{"198.51.100.130", &sweden},
	{"198.51.100.200", &unknownZZ},
	{"2001:db8:1::1", &paris},
	{"2001:db8:1:ffff::1", &paris},
	{"2001:db8:2::1", &seattle},
	{"2001:db8:3::1", &tokyo},
	{"::ffff:203.0.113.10", &london},
	{"::ffff:198.51.100.10", &tokyo},
	{"192.0.2.1", nil},
	{"2001:db8::1", nil},
	{"2001:db8:4::1", nil},
	{"8.8.8.8", nil},
	{"100.128.0.1", nil},
}

func TestFixtures(t *testing.T) {
	for _, fx := range []struct {
		file, kind, dbType string
		city, geoip2       bool
	}{
		{"geoip2-city.mmdb", geo.KindGeoIP2City, "GeoIP2-City", true, true},
		{"geoip2-country.mmdb", geo.KindGeoIP2Country, "GeoIP2-Country", false, true},
		{"flat-city.mmdb", geo.KindFlatCity, "city ipvAll", true, false},
		{"flat-country.mmdb", geo.KindFlatCountry, "country ipvAll", false, false},
	} {
		t.Run(fx.file, func(t *testing.T) {
			db := open(t, fixture(fx.file))
			info := db.Info()
			assert.Equal(t, fixture(fx.file), info.Name)
			assert.Equal(t, fx.kind, info.Kind)
			assert.Equal(t, fx.dbType, info.DatabaseType)
			assert.Equal(t, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), info.BuildTime)
			assert.Empty(t, info.Attribution)

			loc := geo.NewLocator(db, def, nil)
			assert.Same(t, db, loc.Database())
			for _, tc := range fixtureAddrs {
				t.Run(tc.addr, func(t *testing.T) {
					addr := netip.MustParseAddr(tc.addr)
					got, res := loc.Locate(addr)
					raw, found, err := db.Lookup(addr)
					require.NoError(t, err)
					if tc.want == nil {
						assert.Equal(t, geo.ResultNotFound, res)
						assert.Equal(t, def, got)
						assert.False(t, found)
						assert.Equal(t, geo.Location{}, raw)
						return
					}
					w := *tc.want
					require.Equal(t, geo.ResultFound, res)
					assert.True(t, found)
					assert.Equal(t, w.country, got.Country)
					assert.Equal(t, w.continent, got.Continent)
					if fx.city && w.city != "" {
						assert.Equal(t, w.city, got.City)
						if fx.geoip2 {
							assert.Equal(t, w.subISO, got.Subdivision)
						} else {
							assert.Equal(t, w.subName, got.Subdivision)
						}
					} else {
						assert.Empty(t, got.City)
						assert.Empty(t, got.Subdivision)
					}
					wantLat, wantLon := w.lat, w.lon
					switch {
					case w.country == "ZZ":
						// Found, but nothing gives coordinates: the
						// Locator uses the default's, Lookup leaves zero.
						wantLat, wantLon = def.Lat, def.Lon
						assert.Zero(t, raw.Lat)
						assert.Zero(t, raw.Lon)
					case !fx.city || w.city == "":
						wantLat, wantLon = point[w.country][0], point[w.country][1]
					}
					assert.InDelta(t, wantLat, got.Lat, eps)
					assert.InDelta(t, wantLon, got.Lon, eps)
					if w.country != "ZZ" {
						assert.Equal(t, got, raw, "Lookup and Locate agree")
					}
				})
			}
		})
	}
}

func TestPrivateAndInvalid(t *testing.T) {
	loc := geo.NewLocator(open(t, fixture("geoip2-city.mmdb")), def, nil)
	for _, a := range []string{
		"10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.10.1",
		"100.64.0.1", "100.127.255.254", "0.0.0.0", "224.0.0.251", "239.1.2.3",
		"::1", "::", "fe80::1", "fe80::1%eth0", "fd00::1", "fc00::1", "ff02::1", "ff05::2",
		"::ffff:10.0.0.1", "::ffff:127.0.0.1",
	} {
		got, res := loc.Locate(netip.MustParseAddr(a))
		assert.Equal(t, geo.ResultPrivate, res, a)
		assert.Equal(t, def, got, a)
	}
	got, res := loc.Locate(netip.Addr{})
	assert.Equal(t, geo.ResultInvalid, res)
	assert.Equal(t, def, got)

	// A documentation address is looked up, not treated as private.
	_, res = loc.Locate(netip.MustParseAddr("203.0.113.10"))
	assert.Equal(t, geo.ResultFound, res)
}

func TestOverrides(t *testing.T) {
	toronto := geo.Location{Country: "CA", Continent: "NA", City: "Toronto", Lat: 43.65, Lon: -79.38}
	office := geo.Location{Country: "GB", City: "Office", Lat: 51.5, Lon: -0.1}
	overrides := []geo.Override{
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Location: toronto},
		{Prefix: netip.MustParsePrefix("203.0.113.64/26"), Location: geo.Location{Country: "AU"}},
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Location: office},
		{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Location: geo.Location{Country: "ZZ", City: "Nowhere"}},
		{Prefix: netip.MustParsePrefix("::ffff:198.51.100.0/121"), Location: geo.Location{Country: "NZ"}},
		{Prefix: netip.MustParsePrefix("192.0.2.7/24"), Location: geo.Location{Country: "IE"}}, // unmasked
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Location: geo.Location{Country: "IS"}}, // same prefix, later wins
		{}, // invalid, ignored
	}
	loc := geo.NewLocator(open(t, fixture("geoip2-city.mmdb")), def, overrides)

	au := geo.Location{Country: "AU", Continent: "OC", Lat: -25.274398, Lon: 133.775136}
	for _, tc := range []struct {
		addr string
		want geo.Location
		res  geo.Result
	}{
		{"203.0.113.10", toronto, geo.ResultOverride},                 // beats the database (London)
		{"203.0.113.70", au, geo.ResultOverride},                      // longest prefix wins
		{"::ffff:203.0.113.70", au, geo.ResultOverride},               // mapped address
		{"10.1.2.3", withContinent(office, "EU"), geo.ResultOverride}, // beats private
		{"10.2.0.1", def, geo.ResultPrivate},
		{"2001:db8:1::1", geo.Location{Country: "ZZ", City: "Nowhere", Lat: def.Lat, Lon: def.Lon}, geo.ResultOverride},
		{"198.51.100.10", geo.Location{Country: "NZ", Continent: "OC", Lat: -40.900557, Lon: 174.885971}, geo.ResultOverride},
		{"198.51.100.130", geo.Location{Country: "SE", Continent: "EU", Lat: 60.128161, Lon: 18.643501}, geo.ResultFound},
		{"192.0.2.200", geo.Location{Country: "IS", Continent: "EU", Lat: 64.963051, Lon: -19.020835}, geo.ResultOverride},
	} {
		got, res := loc.Locate(netip.MustParseAddr(tc.addr))
		assert.Equal(t, tc.res, res, tc.addr)
		assert.Equal(t, tc.want, got, tc.addr)
	}
}

func withContinent(l geo.Location, c string) geo.Location {
	l.Continent = c
	return l
}

func TestDefaultCompletedFromCountry(t *testing.T) {
	loc := geo.NewLocator(nil, geo.Location{Country: "de"}, nil)
	want := geo.Location{Country: "de", Continent: "EU", Lat: 51.165691, Lon: 10.451526}
	assert.Equal(t, want, loc.Default())
	got, res := loc.Locate(netip.MustParseAddr("8.8.8.8"))
	assert.Equal(t, geo.ResultNotFound, res, "no database")
	assert.Equal(t, want, got)
	assert.Nil(t, loc.Database())
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.mmdb")
	_, err := geo.Open(missing)
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Equal(t, "geo: open "+missing+": no such file or directory", err.Error())

	garbage := filepath.Join(dir, "garbage.mmdb")
	require.NoError(t, os.WriteFile(garbage, []byte("this is not a MaxMind database\n"), 0o600))
	_, err = geo.Open(garbage)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "geo: open "+garbage+": ")
	assert.Contains(t, err.Error(), "invalid MaxMind DB")

	for _, tc := range []struct {
		name, dbType string
		records      map[string]mmdbtype.Map
		wantErr      string
	}{
		{"asn.mmdb", "Test-ASN", map[string]mmdbtype.Map{"203.0.113.0/24": {"asn": mmdbtype.Uint32(1)}},
			`unsupported database type "Test-ASN": records have neither a country_code (ip-location-db) nor a country (GeoIP2)`},
		{"geolite2-asn.mmdb", "GeoLite2-ASN", map[string]mmdbtype.Map{"203.0.113.0/24": {"autonomous_system_number": mmdbtype.Uint32(1)}},
			`database type "GeoLite2-ASN" has no locations`},
		{"empty.mmdb", "country ipvAll", nil, `database type "country ipvAll" has no records`},
	} {
		path := filepath.Join(dir, tc.name)
		require.NoError(t, os.WriteFile(path, build(t, tc.dbType, tc.records), 0o600))
		_, err := geo.Open(path)
		require.Error(t, err, tc.name)
		assert.Equal(t, "geo: open "+path+": "+tc.wantErr, err.Error())
	}

	_, err = geo.OpenBytes("inline", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "geo: open inline: ")
}

// build writes a database of the given type with records keyed by CIDR.
func build(t testing.TB, dbType string, records map[string]mmdbtype.Map) []byte {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            dbType,
		IncludeReservedNetworks: true,
		RecordSize:              24,
	})
	require.NoError(t, err)
	for cidr, rec := range records {
		_, network, err := net.ParseCIDR(cidr)
		require.NoError(t, err)
		require.NoError(t, tree.Insert(network, rec))
	}
	f, err := os.CreateTemp(t.TempDir(), "*.mmdb")
	require.NoError(t, err)
	_, err = tree.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	b, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	return b
}

func TestCorruptRecord(t *testing.T) {
	// A GeoIP2-City database whose record does not fit the schema: opening
	// works (the type is right), looking it up is a database error.
	b := build(t, "GeoIP2-City", map[string]mmdbtype.Map{
		"203.0.113.0/24": {"country": mmdbtype.String("GB")},
	})
	db, err := geo.OpenBytes("corrupt", b)
	require.NoError(t, err)

	_, found, err := db.Lookup(netip.MustParseAddr("203.0.113.1"))
	require.Error(t, err)
	assert.False(t, found)
	assert.Contains(t, err.Error(), "geo: lookup 203.0.113.1 in corrupt: ")

	loc := geo.NewLocator(db, def, nil)
	got, res := loc.Locate(netip.MustParseAddr("203.0.113.1"))
	assert.Equal(t, geo.ResultError, res)
	assert.Equal(t, def, got)

	// Other addresses are unaffected.
	_, res = loc.Locate(netip.MustParseAddr("192.0.2.1"))
	assert.Equal(t, geo.ResultNotFound, res)
}

func TestFlatCoordinateTypes(t *testing.T) {
	b := build(t, "city ipv4", map[string]mmdbtype.Map{
		"203.0.113.0/26":   {"country_code": mmdbtype.String("GB"), "latitude": mmdbtype.Float64(51.5), "longitude": mmdbtype.Float64(-0.1)},
		"203.0.113.64/26":  {"country_code": mmdbtype.String("US"), "latitude": mmdbtype.String("47.6"), "longitude": mmdbtype.String(" -122.3 ")},
		"203.0.113.128/26": {"country_code": mmdbtype.String("jp"), "latitude": mmdbtype.Int32(35), "longitude": mmdbtype.Uint16(139)},
		"203.0.113.192/26": {"country_code": mmdbtype.String("DE"), "latitude": mmdbtype.Float32(0), "longitude": mmdbtype.Float32(0)},
		"198.51.100.0/24":  {"country_code": mmdbtype.String("FR"), "latitude": mmdbtype.Bool(true), "longitude": mmdbtype.Map{}},
		"192.0.2.0/24":     {"country_code": mmdbtype.String(""), "city": mmdbtype.String("")},
	})
	db, err := geo.OpenBytes("types", b)
	require.NoError(t, err)
	assert.Equal(t, geo.KindFlatCity, db.Info().Kind)

	for _, tc := range []struct {
		addr, country string
		lat, lon      float64
	}{
		{"203.0.113.1", "GB", 51.5, -0.1},
		{"203.0.113.65", "US", 47.6, -122.3},
		{"203.0.113.129", "JP", 35, 139},
		{"203.0.113.193", "DE", 51.165691, 10.451526}, // 0,0 means none: country point
		{"198.51.100.1", "FR", 46.227638, 2.213749},   // unusable types: country point
	} {
		got, found, err := db.Lookup(netip.MustParseAddr(tc.addr))
		require.NoError(t, err, tc.addr)
		assert.True(t, found, tc.addr)
		assert.Equal(t, tc.country, got.Country, tc.addr)
		assert.InDelta(t, tc.lat, got.Lat, eps, tc.addr)
		assert.InDelta(t, tc.lon, got.Lon, eps, tc.addr)
	}

	// A record with neither a country nor coordinates counts as not found.
	_, found, err := db.Lookup(netip.MustParseAddr("192.0.2.1"))
	require.NoError(t, err)
	assert.False(t, found)
	_, res := geo.NewLocator(db, def, nil).Locate(netip.MustParseAddr("192.0.2.1"))
	assert.Equal(t, geo.ResultNotFound, res)
}

func TestCustomGeoIP2Schema(t *testing.T) {
	// A database type geoip2-golang does not know, in the GeoIP2 schema.
	b := build(t, "Example-City", map[string]mmdbtype.Map{"203.0.113.0/24": {
		"country":  mmdbtype.Map{"iso_code": mmdbtype.String("NO")},
		"city":     mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String("Oslo")}},
		"location": mmdbtype.Map{"latitude": mmdbtype.Float64(59.91), "longitude": mmdbtype.Float64(10.75)},
	}})
	db, err := geo.OpenBytes("custom", b)
	require.NoError(t, err)
	assert.Equal(t, geo.KindGeoIP2City, db.Info().Kind)
	got, found, err := db.Lookup(netip.MustParseAddr("203.0.113.9"))
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, geo.Location{Country: "NO", Continent: "EU", City: "Oslo", Lat: 59.91, Lon: 10.75}, got)

	b = build(t, "Example-Country", map[string]mmdbtype.Map{"203.0.113.0/24": {
		"country": mmdbtype.Map{"iso_code": mmdbtype.String("NO")},
	}})
	db, err = geo.OpenBytes("custom", b)
	require.NoError(t, err)
	assert.Equal(t, geo.KindGeoIP2Country, db.Info().Kind)
}

func TestAttribution(t *testing.T) {
	rec := map[string]mmdbtype.Map{"203.0.113.0/24": {"country": mmdbtype.Map{"iso_code": mmdbtype.String("GB")}}}
	for dbType, want := range map[string]string{
		"DBIP-Country-Lite": geo.AttributionDBIP,
		"DBIP-City-Lite":    geo.AttributionDBIP,
		"GeoLite2-City":     geo.AttributionGeoLite2,
		"GeoLite2-Country":  geo.AttributionGeoLite2,
		"GeoIP2-Country":    "",
	} {
		db, err := geo.OpenBytes(dbType, build(t, dbType, rec))
		require.NoError(t, err, dbType)
		assert.Equal(t, want, db.Info().Attribution, dbType)
		got, found, err := db.Lookup(netip.MustParseAddr("203.0.113.5"))
		require.NoError(t, err)
		assert.True(t, found)
		assert.Equal(t, "GB", got.Country)
		assert.Equal(t, "EU", got.Continent, "continent from the country")
	}
}

func TestEmbedded(t *testing.T) {
	db := open(t, "")
	info := db.Info()
	assert.Equal(t, geo.EmbeddedName, info.Name)
	assert.Equal(t, geo.KindCompactCity, info.Kind)
	assert.Equal(t, geo.CompactDatabaseType, info.DatabaseType)
	assert.Equal(t, geo.AttributionDBIP, info.Attribution)
	assert.Contains(t, info.Source, "DB-IP IP to City Lite")
	assert.Contains(t, info.Modified, "modified")
	assert.Contains(t, info.Description, "IP Geolocation by DB-IP (https://db-ip.com)")
	assert.Contains(t, info.Description, "CC BY 4.0")
	assert.True(t, info.SourceBuildTime.After(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)), info.SourceBuildTime)
	assert.Equal(t, info.SourceBuildTime, info.BuildTime, "the compact database carries its source's date")

	// Well-known networks land in their country and near their city (the
	// compact data merges networks and rounds coordinates to 0.1 degree).
	loc := geo.NewLocator(db, def, nil)
	for _, tc := range []struct {
		addr, country, continent string
		lat, lon                 float64 // the city
	}{
		{"81.2.69.142", "GB", "EU", 51.51, -0.13},              // London
		{"::ffff:81.2.69.142", "GB", "EU", 51.51, -0.13},       // the same, IPv4-mapped
		{"128.112.0.1", "US", "NA", 40.35, -74.66},             // Princeton University
		{"129.132.0.1", "CH", "EU", 47.38, 8.55},               // ETH Zurich
		{"130.88.0.1", "GB", "EU", 53.47, -2.23},               // University of Manchester
		{"133.11.0.1", "JP", "AS", 35.71, 139.76},              // University of Tokyo
		{"2001:240::1", "JP", "AS", 35.68, 139.77},             // IIJ, Tokyo
		{"2001:630:1::1", "GB", "EU", 51.51, -0.13},            // Jisc (JANET), London
		{"2001:67c:2e8::1", "NL", "EU", 52.37, 4.90},           // RIPE NCC, Amsterdam
		{"2001:12ff::1", "BR", "SA", -23.55, -46.63},           // NIC.br, Sao Paulo
		{"2620:0:860::1", "US", "NA", 37.77, -122.42},          // Wikimedia, San Francisco
		{"2001:da8::1", "CN", "AS", 39.99, 116.31},             // CERNET, Beijing
		{"5.9.0.1", "DE", "EU", 49.45, 11.08},                  // Hetzner, Bavaria
		{"8.8.8.8", "US", "NA", 37.39, -122.08},                // Google, Mountain View
		{"::ffff:128.112.0.1", "US", "NA", 40.35, -74.66},      // IPv4-mapped
		{"::ffff:133.11.0.1", "JP", "AS", 35.71, 139.76},       // IPv4-mapped
		{"2001:67c:2e8:22::c100:68b", "NL", "EU", 52.37, 4.90}, // RIPE NCC www
	} {
		got, res := loc.Locate(netip.MustParseAddr(tc.addr))
		require.Equal(t, geo.ResultFound, res, tc.addr)
		assert.Equal(t, tc.country, got.Country, tc.addr)
		assert.Equal(t, tc.continent, got.Continent, tc.addr)
		assert.Empty(t, got.City, tc.addr)
		assert.Less(t, km(got.Lat, got.Lon, tc.lat, tc.lon), 300.0, "%s at %.2f, %.2f", tc.addr, got.Lat, got.Lon)
	}
	for _, a := range []string{"192.0.2.1", "198.51.100.1", "2001:db8::1"} {
		_, res := loc.Locate(netip.MustParseAddr(a))
		assert.Equal(t, geo.ResultNotFound, res, a)
	}
}

// km is the great-circle distance between two points.
func km(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	a := math.Sin((lat2-lat1)*rad/2)*math.Sin((lat2-lat1)*rad/2) +
		math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin((lon2-lon1)*rad/2)*math.Sin((lon2-lon1)*rad/2)
	return 2 * 6371 * math.Asin(math.Sqrt(a))
}

func TestClose(t *testing.T) {
	db, err := geo.Open(fixture("flat-country.mmdb"))
	require.NoError(t, err)
	addr := netip.MustParseAddr("203.0.113.10")
	_, found, err := db.Lookup(addr)
	require.NoError(t, err)
	require.True(t, found)

	require.NoError(t, db.Close())
	require.NoError(t, db.Close())
	_, _, err = db.Lookup(addr)
	assert.ErrorIs(t, err, geo.ErrClosed)
	_, res := geo.NewLocator(db, def, nil).Locate(addr)
	assert.Equal(t, geo.ResultError, res)
}

func TestResultString(t *testing.T) {
	for r, s := range map[geo.Result]string{
		geo.ResultFound:    "found",
		geo.ResultOverride: "override",
		geo.ResultPrivate:  "private",
		geo.ResultNotFound: "not_found",
		geo.ResultInvalid:  "invalid",
		geo.ResultError:    "error",
		geo.Result(200):    "unknown",
	} {
		assert.Equal(t, s, r.String())
	}
}

func TestCountryPoint(t *testing.T) {
	lat, lon, continent, ok := geo.CountryPoint("gb")
	assert.True(t, ok)
	assert.Equal(t, "EU", continent)
	assert.InDelta(t, 55.378051, lat, 1e-9)
	assert.InDelta(t, -3.435973, lon, 1e-9)

	for code, want := range map[string]string{
		"AD": "EU", "ZW": "AF", "AQ": "AN", "BR": "SA", "NZ": "OC", "CN": "AS",
		"MX": "NA", "XK": "EU", "SS": "AF", "CW": "NA", "AX": "EU", "UM": "OC",
	} {
		_, _, continent, ok := geo.CountryPoint(code)
		assert.True(t, ok, code)
		assert.Equal(t, want, continent, code)
	}
	for _, code := range []string{"", "G", "GBR", "ZZ", "A1", "aa", "zz"} {
		_, _, _, ok := geo.CountryPoint(code)
		assert.False(t, ok, code)
	}
}

func TestLookupCacheHitAllocs(t *testing.T) {
	for _, path := range []string{"", fixture("geoip2-city.mmdb"), fixture("flat-city.mmdb")} {
		db := open(t, path)
		loc := geo.NewLocator(db, def, []geo.Override{
			{Prefix: netip.MustParsePrefix("10.9.0.0/16"), Location: def},
		})
		for _, a := range []string{"203.0.113.10", "2001:db8:1::1", "81.2.69.142", "::ffff:203.0.113.70"} {
			addr := netip.MustParseAddr(a)
			_, _, err := db.Lookup(addr) // warm the cache
			require.NoError(t, err)
			allocs := testing.AllocsPerRun(1000, func() {
				_, _, _ = db.Lookup(addr)
			})
			assert.Zero(t, allocs, "Lookup %s in %q", a, path)
			allocs = testing.AllocsPerRun(1000, func() {
				_, _ = loc.Locate(addr)
			})
			assert.Zero(t, allocs, "Locate %s in %q", a, path)
		}
	}
}

func TestConcurrentLookups(t *testing.T) {
	dbs := []*geo.Database{open(t, fixture("geoip2-city.mmdb")), open(t, fixture("flat-city.mmdb")), open(t, "")}
	addrs := make([]netip.Addr, 0, len(fixtureAddrs)+2)
	for _, tc := range fixtureAddrs {
		addrs = append(addrs, netip.MustParseAddr(tc.addr))
	}
	addrs = append(addrs, netip.MustParseAddr("81.2.69.142"), netip.MustParseAddr("10.0.0.1"))

	for _, db := range dbs {
		loc := geo.NewLocator(db, def, nil)
		// Expected answers, computed before the cache is shared.
		fresh := geo.NewLocator(reopen(t, db), def, nil)
		want := make([]geo.Location, len(addrs))
		for i, a := range addrs {
			want[i], _ = fresh.Locate(a)
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 500 {
					k := (i*7 + g) % len(addrs)
					got, res := loc.Locate(addrs[k])
					if res == geo.ResultError || got != want[k] {
						t.Errorf("%s: got %+v (%s), want %+v", addrs[k], got, res, want[k])
						return
					}
				}
			})
		}
		wg.Wait()
	}
}

// reopen opens the same database again, with an empty cache.
func reopen(t *testing.T, db *geo.Database) *geo.Database {
	t.Helper()
	name := db.Info().Name
	if name == geo.EmbeddedName {
		name = ""
	}
	return open(t, name)
}
