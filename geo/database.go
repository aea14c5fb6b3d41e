package geo

import (
	"bytes"
	_ "embed" // the default database
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oschwald/geoip2-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2"
)

// embeddedGz is the compact city database built from DB-IP IP to City Lite
// (CC BY 4.0) by package geo/geobuild, packed (see Pack).
// geo/embedded/refresh.sh updates it.
//
//go:embed embedded/dbip-city-compact.pack.gz
var embeddedGz []byte

// EmbeddedName is the Info.Name of the embedded default database.
const EmbeddedName = "embedded"

// EmbeddedPacked returns a copy of the embedded database as stored: packed
// (see Pack).
func EmbeddedPacked() []byte { return bytes.Clone(embeddedGz) }

// Kinds of database, as reported by Info.Kind.
const (
	KindGeoIP2City    = "geoip2-city"    // GeoIP2, GeoLite2 or DB-IP City/Enterprise
	KindGeoIP2Country = "geoip2-country" // GeoIP2, GeoLite2 or DB-IP Country
	KindFlatCity      = "flat-city"      // ip-location-db city: country_code, state1, city, latitude, longitude
	KindFlatCountry   = "flat-country"   // ip-location-db country: country_code
	KindCompactCity   = "compact-city"   // geoproxy's compact city database: country_code, latitude, longitude
)

// Attributions required by the data licences, as reported by Info.Attribution.
const (
	AttributionDBIP     = "IP Geolocation by DB-IP (https://db-ip.com)"
	AttributionGeoLite2 = "This product includes GeoLite2 data created by MaxMind, available from https://www.maxmind.com"
)

// ErrClosed is returned by lookups on a closed Database.
var ErrClosed = errors.New("geo: database is closed")

// Info describes an opened database (for `geoproxy version`, logs, /admin/status).
type Info struct {
	Name         string    // path, or "embedded"
	Kind         string    // "geoip2-city", "geoip2-country", "flat-city", "flat-country", "compact-city"
	DatabaseType string    // metadata database_type
	BuildTime    time.Time // metadata build epoch, UTC
	Attribution  string    // text the data licence asks to show, "" if none is known

	// Source names the data a derived database was built from (the compact
	// database records it in its metadata description), "" otherwise.
	Source string
	// SourceBuildTime is when the geolocation data itself was built: the
	// source's build time for a derived database, else BuildTime.
	SourceBuildTime time.Time
	// Modified says how a derived database changed its source's data
	// (licences such as CC BY 4.0 ask to say so), "" otherwise.
	Modified string
	// Description is the metadata description in English, "" if none.
	Description string
}

// Database is an opened .mmdb, safe for concurrent use, immutable.
//
// The whole file is held in memory, so replacing the file on disk never
// affects an opened Database; open the new file and swap the pointer instead.
type Database struct {
	info   Info
	kind   string
	reader *maxminddb.Reader
	data   compactData // data section, compact databases only
	keys   compactKeys // where data's key strings are
	closed atomic.Bool
	cache  recordCache // decoded records, all kinds but compact
}

// Open opens the database file at path and detects its kind from its
// metadata and records. An empty path opens the embedded default database
// (compact city data derived from DB-IP IP to City Lite).
func Open(path string) (*Database, error) {
	if path == "" {
		return openEmbedded()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		// The path is already in our message; keep the cause (and
		// errors.Is(err, fs.ErrNotExist)) without repeating it.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("geo: open %s: %w", path, err)
	}
	return OpenBytes(path, b)
}

// OpenBytes opens a database held in memory; name is used in errors and
// Info.Name. The Database keeps b: it must not be modified afterwards.
func OpenBytes(name string, b []byte) (*Database, error) {
	reader, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, fmt.Errorf("geo: open %s: %w", name, err)
	}
	md := reader.Metadata
	d := &Database{
		info: Info{
			Name:         name,
			DatabaseType: md.DatabaseType,
			BuildTime:    md.BuildTime().UTC(),
			Attribution:  attribution(md.DatabaseType),
			Description:  md.Description["en"],
		},
		reader: reader,
	}
	d.info.SourceBuildTime = d.info.BuildTime
	if md.DatabaseType == CompactDatabaseType {
		if err := d.openCompact(b); err != nil {
			return nil, fmt.Errorf("geo: open %s: %w", name, err)
		}
		return d, nil
	}
	d.kind, err = detectKind(b, reader)
	if err != nil {
		return nil, fmt.Errorf("geo: open %s: %w", name, err)
	}
	d.info.Kind = d.kind
	return d, nil
}

// openCompact prepares a compact database: finds its data section, checks
// its first record and reads its description.
func (d *Database) openCompact(b []byte) error {
	md := d.reader.Metadata
	data, err := dataSection(b, md.NodeCount, md.RecordSize)
	if err != nil {
		return err
	}
	if _, err := data.record(0); err != nil && len(data) > 0 {
		return fmt.Errorf("first record: %w", err)
	}
	d.kind, d.data, d.keys = KindCompactCity, data, data.keys(0)
	d.info.Kind = KindCompactCity
	desc := md.Description
	d.info.Source = desc[DescSource]
	d.info.Modified = desc[DescModified]
	if a := desc[DescAttribution]; a != "" {
		d.info.Attribution = a
	} else if src := strings.ToLower(d.info.Source); strings.Contains(src, "db-ip") || strings.Contains(src, "dbip") {
		d.info.Attribution = AttributionDBIP
	}
	if t, err := time.Parse(time.RFC3339, desc[DescSourceBuildTime]); err == nil {
		d.info.SourceBuildTime = t.UTC()
	}
	return nil
}

func openEmbedded() (*Database, error) {
	b, err := Unpack(embeddedGz)
	if err != nil {
		return nil, fmt.Errorf("geo: open %s: %w", EmbeddedName, err)
	}
	d, err := OpenBytes(EmbeddedName, b)
	if err != nil {
		return nil, err
	}
	if d.info.Attribution == "" {
		d.info.Attribution = AttributionDBIP
	}
	return d, nil
}

// detectKind tells which of the four supported kinds the database is.
// GeoIP2-style database types are those geoip2-golang accepts; any other type
// is recognised by its first record.
func detectKind(b []byte, reader *maxminddb.Reader) (string, error) {
	dbType := reader.Metadata.DatabaseType
	g, err := geoip2.OpenBytes(b)
	if err == nil {
		defer g.Close()
		// City is allowed on every City, Country and Enterprise type and
		// refused (before any lookup) on ASN, ISP, anonymous-IP and the like.
		var invalid geoip2.InvalidMethodError
		if _, err := g.City(netip.IPv4Unspecified()); errors.As(err, &invalid) {
			return "", fmt.Errorf("database type %q has no locations", dbType)
		}
		if strings.Contains(dbType, "Country") {
			return KindGeoIP2Country, nil
		}
		return KindGeoIP2City, nil
	}
	var unknown geoip2.UnknownDatabaseTypeError
	if !errors.As(err, &unknown) {
		return "", err
	}
	return probeRecord(reader)
}

// probeRecord decodes the first record of a database whose type geoip2-golang
// does not know. A string country_code makes it a flat ip-location-db
// database; a country or location map, a custom database in the GeoIP2
// schema.
func probeRecord(reader *maxminddb.Reader) (string, error) {
	dbType := reader.Metadata.DatabaseType
	for res := range reader.Networks() {
		var rec map[string]any
		if err := res.Decode(&rec); err != nil {
			return "", fmt.Errorf("database type %q: first record: %w", dbType, err)
		}
		_, country := rec["country"].(map[string]any)
		_, location := rec["location"].(map[string]any)
		if _, ok := rec["country_code"].(string); !ok {
			switch {
			case location:
				return KindGeoIP2City, nil
			case country:
				return KindGeoIP2Country, nil
			}
			return "", fmt.Errorf("unsupported database type %q: records have neither a country_code (ip-location-db) nor a country (GeoIP2)", dbType)
		}
		_, lat := rec["latitude"]
		_, city := rec["city"]
		if lat || city || strings.Contains(strings.ToLower(dbType), "city") {
			return KindFlatCity, nil
		}
		return KindFlatCountry, nil
	}
	return "", fmt.Errorf("database type %q has no records", dbType)
}

// attribution returns the attribution a database type asks for, if known.
func attribution(dbType string) string {
	lower := strings.ToLower(dbType)
	switch {
	case strings.HasPrefix(lower, "dbip") || strings.Contains(lower, "db-ip"):
		return AttributionDBIP
	case strings.HasPrefix(lower, "geolite2"):
		return AttributionGeoLite2
	default:
		return ""
	}
}

// Info describes the database.
func (d *Database) Info() Info { return d.info }

// Close marks the database closed: later lookups fail with ErrClosed. The
// data lives in ordinary memory, so Close releases nothing the garbage
// collector would not; after swapping in a new Database it is fine to drop
// the old one without closing it, which keeps in-flight lookups working.
func (d *Database) Close() error {
	d.closed.Store(true)
	return nil
}

// Lookup returns the database record for addr (IPv4-mapped IPv6 addresses
// are looked up as IPv4). found is false when the database has no record for
// addr, or a record with neither a country nor coordinates. Lat and Lon come
// from the record, else from the country's reference point (CountryPoint);
// with neither they are zero. Continent comes from the record, else from the
// country. A record already seen is served from a cache without allocating.
func (d *Database) Lookup(addr netip.Addr) (loc Location, found bool, err error) {
	e, err := d.lookup(addr)
	if err != nil || !e.found {
		return Location{}, false, err
	}
	return e.loc, true, nil
}

// lookup returns the record of addr: decoded in place for a compact
// database, else from the cache or freshly decoded. A zero entry (found
// false) means the database has none.
func (d *Database) lookup(addr netip.Addr) (entry, error) {
	if d.closed.Load() {
		return entry{}, ErrClosed
	}
	if !addr.IsValid() {
		return entry{}, nil
	}
	res := d.reader.Lookup(addr.Unmap())
	if err := res.Err(); err != nil {
		return entry{}, fmt.Errorf("geo: lookup %s in %s: %w", addr, d.info.Name, err)
	}
	if !res.Found() {
		return entry{}, nil
	}
	off := res.Offset()
	if d.data != nil {
		e, err := d.decodeCompact(off)
		if err != nil {
			return entry{}, fmt.Errorf("geo: lookup %s in %s: %w", addr, d.info.Name, err)
		}
		return e, nil
	}
	slot := d.cache.slot(off)
	if e := slot.Load(); e != nil && e.off == off {
		return *e, nil
	}
	e, err := d.decode(res)
	if err != nil {
		return entry{}, fmt.Errorf("geo: lookup %s in %s: %w", addr, d.info.Name, err)
	}
	slot.Store(e)
	return *e, nil
}

// decodeCompact decodes the compact record at off. Country codes come from
// the CountryPoint table, so nothing is allocated; a code it does not know
// is copied.
func (d *Database) decodeCompact(off uintptr) (entry, error) {
	e := entry{off: off}
	rec, ok := d.data.recordFast(uint(off), d.keys)
	if !ok {
		var err error
		if rec, err = d.data.record(uint(off)); err != nil {
			return e, err
		}
	}
	if rec.coords {
		e.loc.Lat, e.loc.Lon, e.coords = rec.lat, rec.lon, true
	}
	if rec.country != [2]byte{} {
		if p := findCountry(rec.country); p != nil {
			e.loc.Country, e.loc.Continent = p.code, p.continent
			if !e.coords {
				e.loc.Lat, e.loc.Lon, e.coords = p.lat, p.lon, true
			}
		} else {
			e.loc.Country = string(rec.country[:])
		}
	}
	e.found = e.loc.Country != "" || e.coords
	return e, nil
}

// decode reads the record res points at into a new cache entry.
func (d *Database) decode(res maxminddb.Result) (*entry, error) {
	e := &entry{off: res.Offset()}
	loc := &e.loc
	switch d.kind {
	case KindGeoIP2City:
		var rec geoip2.City
		if err := res.Decode(&rec); err != nil {
			return nil, err
		}
		loc.Country = rec.Country.ISOCode
		loc.Continent = rec.Continent.Code
		if len(rec.Subdivisions) > 0 {
			loc.Subdivision = rec.Subdivisions[0].ISOCode
		}
		loc.City = rec.City.Names.English
		if rec.Location.Latitude != nil && rec.Location.Longitude != nil {
			e.setCoords(*rec.Location.Latitude, *rec.Location.Longitude)
		}
	case KindGeoIP2Country:
		var rec geoip2.Country
		if err := res.Decode(&rec); err != nil {
			return nil, err
		}
		loc.Country = rec.Country.ISOCode
		loc.Continent = rec.Continent.Code
	default:
		var rec flatRecord
		if err := res.Decode(&rec); err != nil {
			return nil, err
		}
		loc.Country = rec.CountryCode
		loc.Subdivision = rec.State1
		loc.City = rec.City
		// 0,0 is the usual placeholder for unknown coordinates.
		if rec.Latitude.ok && rec.Longitude.ok && (rec.Latitude.v != 0 || rec.Longitude.v != 0) {
			e.setCoords(rec.Latitude.v, rec.Longitude.v)
		}
	}
	loc.Country = strings.ToUpper(loc.Country)
	if lat, lon, continent, ok := CountryPoint(loc.Country); ok {
		if !e.coords {
			e.setCoords(lat, lon)
		}
		if loc.Continent == "" {
			loc.Continent = continent
		}
	}
	e.found = loc.Country != "" || e.coords
	return e, nil
}

// setCoords stores lat/lon if they are a valid position.
func (e *entry) setCoords(lat, lon float64) {
	if math.IsNaN(lat) || math.IsNaN(lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return
	}
	e.loc.Lat, e.loc.Lon, e.coords = lat, lon, true
}
