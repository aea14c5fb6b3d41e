package geo

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCountryTable(t *testing.T) {
	valid := map[string]bool{"AF": true, "AN": true, "AS": true, "EU": true, "NA": true, "OC": true, "SA": true}
	for i, p := range countryPoints {
		require.Len(t, p.code, 2, p.code)
		assert.True(t, p.code[0] >= 'A' && p.code[0] <= 'Z' && p.code[1] >= 'A' && p.code[1] <= 'Z', p.code)
		if i > 0 {
			assert.Less(t, countryPoints[i-1].code, p.code, "sorted and unique")
		}
		assert.True(t, valid[p.continent], "%s continent %q", p.code, p.continent)
		assert.True(t, p.lat >= -90 && p.lat <= 90 && p.lon >= -180 && p.lon <= 180, p.code)
		assert.False(t, p.lat == 0 && p.lon == 0, p.code)
		lat, lon, continent, ok := CountryPoint(p.code)
		assert.True(t, ok, p.code)
		assert.Equal(t, p, countryPoint{p.code, continent, lat, lon})
	}
}

// Every country the embedded database names has a reference point, so the
// default database always answers with coordinates.
func TestEmbeddedCountriesHavePoints(t *testing.T) {
	if testing.Short() {
		t.Skip("walks the whole embedded database")
	}
	db, err := Open("")
	require.NoError(t, err)
	seen := map[uintptr]bool{} // record offsets already checked
	for res := range db.reader.Networks() {
		if seen[res.Offset()] {
			continue
		}
		seen[res.Offset()] = true
		var rec flatRecord
		require.NoError(t, res.Decode(&rec))
		_, _, _, ok := CountryPoint(rec.CountryCode)
		assert.True(t, ok, "no reference point for %q (%s)", rec.CountryCode, res.Prefix())
	}
	assert.Greater(t, len(seen), 200)
}

func TestCacheSlots(t *testing.T) {
	db, err := Open(filepath.Join("..", "testdata", "geoip2-city.mmdb"))
	require.NoError(t, err)
	addr := netip.MustParseAddr("203.0.113.10")
	res := db.reader.Lookup(addr)
	require.True(t, res.Found())
	slot := db.cache.slot(res.Offset())

	// A slot holding another record is a miss: the record is decoded again.
	for i := range db.cache {
		db.cache[i].Store(&entry{off: ^uintptr(0), loc: Location{Country: "XX"}, found: true})
	}
	got, found, err := db.Lookup(addr)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, "London", got.City)
	assert.Equal(t, res.Offset(), slot.Load().off, "decoded entry stored")

	// A slot holding this record is a hit: the stored entry is answered.
	slot.Store(&entry{off: res.Offset(), loc: Location{Country: "XX", City: "cached"}, coords: true, found: true})
	got, _, err = db.Lookup(addr)
	require.NoError(t, err)
	assert.Equal(t, "cached", got.City)

	// Small, evenly spaced offsets (records are clustered at the start of
	// the data section) spread over the table.
	slots := map[*atomic.Pointer[entry]]bool{}
	for off := uintptr(0); off < 12*1000; off += 12 {
		slots[db.cache.slot(off)] = true
	}
	assert.Greater(t, len(slots), 950, "1000 offsets, distinct slots")
}

// benchAddrs returns n public addresses the database has records for,
// spread over the address space (and so over countries): 3/4 IPv4, 1/4 IPv6.
func benchAddrs(tb testing.TB, db *Database, n int) []netip.Addr {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	addrs := make([]netip.Addr, 0, n)
	countries := map[string]bool{}
	for tries := 0; len(addrs) < n && tries < 1_000_000; tries++ {
		var a netip.Addr
		if len(addrs)%4 == 3 {
			var b [16]byte
			hi, lo := rng.Uint64(), rng.Uint64()
			for i := range 8 {
				b[i], b[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
			}
			b[0] = 0x20 | b[0]&0x0f // 2000::/4, mostly allocated space
			b[1] &= 0x0f
			a = netip.AddrFrom16(b)
		} else {
			v := rng.Uint32()
			a = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
		if isPrivate(a) {
			continue
		}
		loc, found, err := db.Lookup(a)
		if err != nil || !found {
			continue
		}
		countries[loc.Country] = true
		addrs = append(addrs, a)
	}
	require.Len(tb, addrs, n)
	tb.Logf("%d addresses in %d countries", len(addrs), len(countries))
	return addrs
}

// BenchmarkLookup is a lookup in the embedded database over addresses
// spread across the address space: with 400 addresses, as in earlier
// releases; with 100,000, many thousands of distinct records. The compact
// database decodes a record on every lookup (there is no cache to miss).
func BenchmarkLookup(b *testing.B) {
	db, err := Open("")
	require.NoError(b, err)
	for _, n := range []int{400, 100_000} {
		b.Run(fmt.Sprintf("addrs=%d", n), func(b *testing.B) {
			addrs := benchAddrs(b, db, n)
			records := map[uintptr]bool{}
			for _, a := range addrs {
				records[db.reader.Lookup(a).Offset()] = true
			}
			b.Logf("%d distinct records", len(records))
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				_, _, _ = db.Lookup(addrs[i%len(addrs)])
				i++
			}
		})
	}
}

func BenchmarkLocate(b *testing.B) {
	db, err := Open("")
	require.NoError(b, err)
	addrs := benchAddrs(b, db, 400)
	loc := NewLocator(db, Location{Country: "US"}, []Override{
		{Prefix: netip.MustParsePrefix("10.20.0.0/16"), Location: Location{Country: "GB"}},
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Location: Location{Country: "DE"}},
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Location: Location{Country: "JP"}},
	})
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		_, _ = loc.Locate(addrs[i%len(addrs)])
		i++
	}
}

// BenchmarkLookupCity is a warm lookup in the GeoIP2 city fixture.
func BenchmarkLookupCity(b *testing.B) {
	db, err := Open(filepath.Join("..", "testdata", "geoip2-city.mmdb"))
	require.NoError(b, err)
	addrs := []netip.Addr{
		netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.70"),
		netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("2001:db8:1::1"),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, _, _ = db.Lookup(addrs[i%len(addrs)])
		i++
	}
}

// BenchmarkDecode is the cache-miss cost: decoding one record.
func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"geoip2-city.mmdb", "geoip2-country.mmdb", "flat-city.mmdb", "flat-country.mmdb"} {
		b.Run(name, func(b *testing.B) {
			db, err := Open(filepath.Join("..", "testdata", name))
			require.NoError(b, err)
			res := db.reader.Lookup(netip.MustParseAddr("203.0.113.10"))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := db.decode(res); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpenEmbedded is the start-up cost of the embedded database:
// gunzip, unpack (see Pack) and open.
func BenchmarkOpenEmbedded(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(""); err != nil {
			b.Fatal(err)
		}
	}
}

// The fast path decodes what the general decoder decodes, and covers the
// embedded data's records.
func TestCompactFastPath(t *testing.T) {
	db, err := Open("")
	require.NoError(t, err)
	assert.NotEqual(t, compactKeys{noKey, noKey, noKey}, db.keys)
	addrs := benchAddrs(t, db, 5000)
	slow := 0
	for _, a := range addrs {
		off := uint(db.reader.Lookup(a).Offset())
		want, err := db.data.record(off)
		require.NoError(t, err, a)
		got, ok := db.data.recordFast(off, db.keys)
		if !ok {
			slow++
			continue
		}
		assert.Equal(t, want, got, a)
	}
	assert.Less(t, slow, len(addrs)/100, "records off the fast path")
}

// BenchmarkDecodeCompact is the decoding of one embedded record (in cache).
func BenchmarkDecodeCompact(b *testing.B) {
	db, err := Open("")
	require.NoError(b, err)
	off := db.reader.Lookup(netip.MustParseAddr("81.2.69.142")).Offset()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := db.decodeCompact(off); err != nil {
			b.Fatal(err)
		}
	}
}
