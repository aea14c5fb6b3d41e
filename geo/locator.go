package geo

import (
	"cmp"
	"net/netip"
	"slices"
	"sync/atomic"
)

// Override pins a CIDR to a location (config `geoip.overrides`); it wins over the database.
type Override struct {
	Prefix   netip.Prefix
	Location Location
}

// Locator answers where a client is: overrides first (longest prefix wins),
// then private ranges -> default, then the database; not found or no
// coordinates -> default coordinates. It is safe for concurrent use; its
// overrides and default never change, and its database can be swapped for
// a reloaded one (Swap) while lookups run.
type Locator struct {
	db        atomic.Pointer[Database]
	def       Location
	overrides []Override // masked, unmapped, longest prefix first
}

// NewLocator returns a Locator over db (nil: no database, every public
// address is not found). def is answered for private, unknown and invalid
// addresses, and gives the coordinates of records that have none.
//
// A default or override location with a country but zero Lat and Lon gets
// the country's reference point (and continent, if unset); an override with
// neither gets the default coordinates. Override prefixes are masked,
// IPv4-mapped IPv6 prefixes (::ffff:a.b.c.d/n, n >= 96) become IPv4
// prefixes, and invalid prefixes are ignored. On equal prefixes the later
// override wins.
func NewLocator(db *Database, def Location, overrides []Override) *Locator {
	def = withCountryPoint(def)
	l := &Locator{def: def}
	l.db.Store(db)
	for _, o := range overrides {
		p := o.Prefix
		if !p.IsValid() {
			continue
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		loc := withCountryPoint(o.Location)
		if loc.Lat == 0 && loc.Lon == 0 {
			loc.Lat, loc.Lon = def.Lat, def.Lon
		}
		l.overrides = append(l.overrides, Override{Prefix: p, Location: loc})
	}
	// Longest prefix first; stable and reversed input order so that the last
	// of several equal prefixes is found first.
	slices.Reverse(l.overrides)
	slices.SortStableFunc(l.overrides, func(a, b Override) int {
		return cmp.Compare(b.Prefix.Bits(), a.Prefix.Bits())
	})
	return l
}

// withCountryPoint fills zero coordinates and an empty continent from the
// location's country, if it has a reference point.
func withCountryPoint(loc Location) Location {
	lat, lon, continent, ok := CountryPoint(loc.Country)
	if !ok {
		return loc
	}
	if loc.Lat == 0 && loc.Lon == 0 {
		loc.Lat, loc.Lon = lat, lon
	}
	if loc.Continent == "" {
		loc.Continent = continent
	}
	return loc
}

// Database returns the database the Locator reads, possibly nil.
func (l *Locator) Database() *Database { return l.db.Load() }

// Swap makes db the database lookups read from now on, and returns the one
// it replaces. Lookups under way finish on the old one, which stays usable
// (do not Close it).
func (l *Locator) Swap(db *Database) *Database { return l.db.Swap(db) }

// Default returns the default location, completed as NewLocator describes.
func (l *Locator) Default() Location { return l.def }

// Override returns the location of the configured override that holds
// addr, if any.
func (l *Locator) Override(addr netip.Addr) (Location, bool) {
	addr = addr.Unmap().WithZone("")
	for i := range l.overrides {
		if l.overrides[i].Prefix.Contains(addr) {
			return l.overrides[i].Location, true
		}
	}
	return Location{}, false
}

// Locate returns where addr is and how that was decided. IPv4-mapped IPv6
// addresses are treated as IPv4 and zones are ignored. Database errors give
// the default location with ResultError.
func (l *Locator) Locate(addr netip.Addr) (Location, Result) {
	if !addr.IsValid() {
		return l.def, ResultInvalid
	}
	addr = addr.Unmap().WithZone("")
	for i := range l.overrides {
		if l.overrides[i].Prefix.Contains(addr) {
			return l.overrides[i].Location, ResultOverride
		}
	}
	if isPrivate(addr) {
		return l.def, ResultPrivate
	}
	db := l.db.Load()
	if db == nil {
		return l.def, ResultNotFound
	}
	e, err := db.lookup(addr)
	if err != nil {
		return l.def, ResultError
	}
	if !e.found {
		return l.def, ResultNotFound
	}
	loc := e.loc
	if !e.coords {
		loc.Lat, loc.Lon = l.def.Lat, l.def.Lon
	}
	return loc, ResultFound
}

// isPrivate reports addresses that have no public location: private
// (RFC 1918, fc00::/7), loopback, link-local, unspecified, multicast and
// CGNAT shared space (100.64.0.0/10). Documentation ranges are not private:
// they are looked up like public addresses.
func isPrivate(addr netip.Addr) bool {
	if addr.IsPrivate() || addr.IsLoopback() || addr.IsUnspecified() ||
		addr.IsLinkLocalUnicast() || addr.IsMulticast() {
		return true
	}
	if addr.Is4() {
		b := addr.As4()
		return b[0] == 100 && b[1]&0xc0 == 64
	}
	return false
}
