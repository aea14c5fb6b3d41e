// Package geo answers where a client address is.
//
// A Database is an opened MaxMind DB (.mmdb) file of one of five kinds:
// GeoIP2/GeoLite2/DB-IP City or Country databases (the types
// github.com/oschwald/geoip2-golang/v2 accepts, decoded into its record
// types), the flat ip-location-db databases with top-level country_code,
// state1, city, latitude and longitude fields (decoded with
// github.com/oschwald/maxminddb-golang/v2), or geoproxy's compact city
// database (DatabaseType CompactDatabaseType: country_code, latitude,
// longitude). A database of another type is accepted if its records follow
// the GeoIP2 or the flat schema.
//
// Open("") opens the embedded default: the compact city database that
// package geo/geobuild derives from DB-IP IP to City Lite (CC BY 4.0,
// "IP Geolocation by DB-IP", https://db-ip.com; modified: nearby networks
// of a country merged, coordinates rounded to 0.1 degree, names dropped).
// It is stored packed (see Pack) and unpacked at Open. Its Info carries the
// source, the source's build date and the modification note.
//
// A Locator puts a Database together with configured overrides and a default
// location, and always answers with coordinates: records that only name a
// country get the country's reference point (see CountryPoint), and anything
// else gets the default.
//
// Lookups in a compact database decode the record in place, without
// allocating. Lookups in other databases of a record already seen are served
// from a per-Database cache keyed by the record's offset in the file,
// without allocating.
package geo

// Location is where a client is.
type Location struct {
	Country     string  // ISO 3166-1 alpha-2, "" if unknown
	Continent   string  // AF AN AS EU NA OC SA, "" if unknown
	Subdivision string  // first subdivision ISO code (GeoIP2) or state1 (flat), may be ""
	City        string  // English name, may be ""
	Lat, Lon    float64 // always set by Locator.Locate (default location when nothing better)
}

// Result says how a lookup was answered (used as a metric label).
type Result uint8

// Results of Locator.Locate.
const (
	ResultFound    Result = iota // database had a record (with coordinates or a country point)
	ResultOverride               // a configured CIDR override matched
	ResultPrivate                // private, loopback, link-local, unspecified, CGNAT or multicast address
	ResultNotFound               // public address not in the database
	ResultInvalid                // zero netip.Addr
	ResultError                  // database error (corrupt data)
	ResultEdge                   // a trusted CDN or load balancer in front said where the client is
)

// Located reports whether the result places the client (an override, a
// trusted edge, or the database); the others give the default location.
func (r Result) Located() bool {
	return r == ResultFound || r == ResultOverride || r == ResultEdge
}

// String returns the metric label of r: "found", "override", "private",
// "not_found", "invalid" or "error".
func (r Result) String() string {
	switch r {
	case ResultFound:
		return "found"
	case ResultOverride:
		return "override"
	case ResultPrivate:
		return "private"
	case ResultNotFound:
		return "not_found"
	case ResultInvalid:
		return "invalid"
	case ResultError:
		return "error"
	case ResultEdge:
		return "edge"
	default:
		return "unknown"
	}
}
