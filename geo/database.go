package geo

import (
	"bytes"
	"compress/gzip"
	_ "embed" // the default database
	"encoding/binary"
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

// embeddedGz is the DB-IP Lite country database (CC BY 4.0), gzip-compressed.
// geo/embedded/refresh.sh updates it.
//
//go:embed embedded/dbip-country.mmdb.gz
var embeddedGz []byte

// EmbeddedName is the Info.Name of the embedded default database.
const EmbeddedName = "embedded"

// Kinds of database, as reported by Info.Kind.
const (
	KindGeoIP2City    = "geoip2-city"    // GeoIP2, GeoLite2 or DB-IP City/Enterprise
	KindGeoIP2Country = "geoip2-country" // GeoIP2, GeoLite2 or DB-IP Country
	KindFlatCity      = "flat-city"      // ip-location-db city: country_code, state1, city, latitude, longitude
	KindFlatCountry   = "flat-country"   // ip-location-db country: country_code
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
	Kind         string    // "geoip2-city", "geoip2-country", "flat-city", "flat-country"
	DatabaseType string    // metadata database_type
	BuildTime    time.Time // metadata build epoch, UTC
	Attribution  string    // text the data licence asks to show, "" if none is known
}

// Database is an opened .mmdb, safe for concurrent use, immutable.
//
// The whole file is held in memory, so replacing the file on disk never
// affects an opened Database; open the new file and swap the pointer instead.
type Database struct {
	info   Info
	kind   string
	reader *maxminddb.Reader
	closed atomic.Bool
	cache  recordCache
}

// Open opens the database file at path and detects its kind from its
// metadata and records. An empty path opens the embedded default database
// (DB-IP Lite country data).
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
	kind, err := detectKind(b, reader)
	if err != nil {
		return nil, fmt.Errorf("geo: open %s: %w", name, err)
	}
	return &Database{
		info: Info{
			Name:         name,
			Kind:         kind,
			DatabaseType: md.DatabaseType,
			BuildTime:    md.BuildTime().UTC(),
			Attribution:  attribution(md.DatabaseType),
		},
		kind:   kind,
		reader: reader,
	}, nil
}

func openEmbedded() (*Database, error) {
	b, err := gunzip(embeddedGz)
	if err != nil {
		return nil, fmt.Errorf("geo: open %s: %w", EmbeddedName, err)
	}
	d, err := OpenBytes(EmbeddedName, b)
	if err != nil {
		return nil, err
	}
	d.info.Attribution = AttributionDBIP
	return d, nil
}

// gunzip decompresses gz into a buffer sized from the gzip trailer.
func gunzip(gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	size := 0
	if len(gz) >= 4 {
		size = int(binary.LittleEndian.Uint32(gz[len(gz)-4:]))
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	if _, err := buf.ReadFrom(zr); err != nil {
		return nil, err
	}
	if err := zr.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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
	if err != nil || e == nil || !e.found {
		return Location{}, false, err
	}
	return e.loc, true, nil
}

// lookup returns the cached or freshly decoded record of addr, or nil when
// the database has none.
func (d *Database) lookup(addr netip.Addr) (*entry, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	if !addr.IsValid() {
		return nil, nil
	}
	res := d.reader.Lookup(addr.Unmap())
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("geo: lookup %s in %s: %w", addr, d.info.Name, err)
	}
	if !res.Found() {
		return nil, nil
	}
	off := res.Offset()
	slot := d.cache.slot(off)
	if e := slot.Load(); e != nil && e.off == off {
		return e, nil
	}
	e, err := d.decode(res)
	if err != nil {
		return nil, fmt.Errorf("geo: lookup %s in %s: %w", addr, d.info.Name, err)
	}
	slot.Store(e)
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
