// Command gen writes the synthetic GeoIP fixtures in testdata/. Run it from
// the repository root:
//
//	go run ./testdata/gen
//
// Every fixture maps documentation address ranges (RFC 5737 and RFC 3849) to
// the same places, so tests of any package can rely on this table:
//
//	network            example address  country continent subdivision (GeoIP2 / flat)  city               lat, lon
//	203.0.113.0/26     203.0.113.10     GB      EU        ENG / England                London             51.5142, -0.0931
//	203.0.113.64/26    203.0.113.70     US      NA        WA  / Washington             Seattle            47.6062, -122.3321
//	203.0.113.128/26   203.0.113.130    US      NA        NY  / New York               New York           40.7128, -74.0060
//	203.0.113.192/26   203.0.113.200    DE      EU        HE  / Hesse                  Frankfurt am Main  50.1109, 8.6821
//	198.51.100.0/25    198.51.100.10    JP      AS        13  / Tokyo                  Tokyo              35.6895, 139.6917
//	198.51.100.128/26  198.51.100.130   SE      EU        -                            -                  none (country only)
//	198.51.100.192/26  198.51.100.200   ZZ      -         -                            -                  none (country unknown)
//	2001:db8:1::/48    2001:db8:1::1    FR      EU        IDF / Île-de-France          Paris              48.8566, 2.3522
//	2001:db8:2::/48    2001:db8:2::1    US      NA        WA  / Washington             Seattle            47.6062, -122.3321
//	2001:db8:3::/48    2001:db8:3::1    JP      AS        13  / Tokyo                  Tokyo              35.6895, 139.6917
//
// Nothing else is covered: 192.0.2.0/24, 2001:db8::/48 and every public
// address are absent from all four files.
//
// The files:
//
//   - geoip2-city.mmdb: DatabaseType "GeoIP2-City", GeoIP2 schema (continent,
//     country, registered_country, subdivisions, city, location).
//   - geoip2-country.mmdb: DatabaseType "GeoIP2-Country", continent, country
//     and registered_country only; no city, subdivision or coordinates.
//   - flat-city.mmdb: DatabaseType "city ipvAll", the flat ip-location-db
//     schema (country_code, state1, state2, city, postcode, latitude,
//     longitude, timezone; coordinates as float32 like the published files).
//   - flat-country.mmdb: DatabaseType "country ipvAll", country_code only.
//
// The SE and ZZ records carry a country but no coordinates. SE has a country
// reference point in package geo; ZZ has none, so lookups keep the country and
// fall back to the default coordinates. Continent-less flat records get their
// continent from the country.
//
// The build epoch is fixed, so running the generator again without changing
// this file reproduces the same bytes.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// buildTime is the build epoch written into every fixture.
var buildTime = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// place is one row of the table in the package comment.
type place struct {
	networks      []string
	country       string
	countryName   string
	continent     string
	continentName string
	subISO        string // GeoIP2 subdivision ISO code
	subName       string // subdivision name (flat state1)
	city          string
	timezone      string
	lat, lon      float64
	coords        bool
}

var places = []place{
	{
		networks: []string{"203.0.113.0/26"},
		country:  "GB", countryName: "United Kingdom", continent: "EU", continentName: "Europe",
		subISO: "ENG", subName: "England", city: "London", timezone: "Europe/London",
		lat: 51.5142, lon: -0.0931, coords: true,
	},
	{
		networks: []string{"203.0.113.64/26", "2001:db8:2::/48"},
		country:  "US", countryName: "United States", continent: "NA", continentName: "North America",
		subISO: "WA", subName: "Washington", city: "Seattle", timezone: "America/Los_Angeles",
		lat: 47.6062, lon: -122.3321, coords: true,
	},
	{
		networks: []string{"203.0.113.128/26"},
		country:  "US", countryName: "United States", continent: "NA", continentName: "North America",
		subISO: "NY", subName: "New York", city: "New York", timezone: "America/New_York",
		lat: 40.7128, lon: -74.0060, coords: true,
	},
	{
		networks: []string{"203.0.113.192/26"},
		country:  "DE", countryName: "Germany", continent: "EU", continentName: "Europe",
		subISO: "HE", subName: "Hesse", city: "Frankfurt am Main", timezone: "Europe/Berlin",
		lat: 50.1109, lon: 8.6821, coords: true,
	},
	{
		networks: []string{"198.51.100.0/25", "2001:db8:3::/48"},
		country:  "JP", countryName: "Japan", continent: "AS", continentName: "Asia",
		subISO: "13", subName: "Tokyo", city: "Tokyo", timezone: "Asia/Tokyo",
		lat: 35.6895, lon: 139.6917, coords: true,
	},
	{
		networks: []string{"198.51.100.128/26"},
		country:  "SE", countryName: "Sweden", continent: "EU", continentName: "Europe",
	},
	{
		networks: []string{"198.51.100.192/26"},
		country:  "ZZ", countryName: "Unknown",
	},
	{
		networks: []string{"2001:db8:1::/48"},
		country:  "FR", countryName: "France", continent: "EU", continentName: "Europe",
		subISO: "IDF", subName: "Île-de-France", city: "Paris", timezone: "Europe/Paris",
		lat: 48.8566, lon: 2.3522, coords: true,
	},
}

// fixture is one file to write.
type fixture struct {
	file         string
	databaseType string
	record       func(place) mmdbtype.Map
}

var fixtures = []fixture{
	{"geoip2-city.mmdb", "GeoIP2-City", geoip2City},
	{"geoip2-country.mmdb", "GeoIP2-Country", geoip2Country},
	{"flat-city.mmdb", "city ipvAll", flatCity},
	{"flat-country.mmdb", "country ipvAll", flatCountry},
}

func main() {
	out := flag.String("out", "testdata", "directory to write the fixtures to")
	flag.Parse()
	for _, f := range fixtures {
		path := filepath.Join(*out, f.file)
		if err := write(path, f); err != nil {
			log.Fatalf("gen: %s: %v", path, err)
		}
		fmt.Println("wrote", path)
	}
}

func write(path string, f fixture) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            f.databaseType,
		Description:             map[string]string{"en": "geoproxy test fixture (synthetic data)"},
		Languages:               []string{"en"},
		IncludeReservedNetworks: true,
		IPVersion:               6,
		RecordSize:              24,
		BuildEpoch:              buildTime.Unix(),
	})
	if err != nil {
		return err
	}
	for _, p := range places {
		for _, cidr := range p.networks {
			_, network, err := net.ParseCIDR(cidr)
			if err != nil {
				return err
			}
			if err := tree.Insert(network, f.record(p)); err != nil {
				return fmt.Errorf("insert %s: %w", cidr, err)
			}
		}
	}
	tmp := path + ".tmp"
	fh, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := tree.WriteTo(fh); err != nil {
		fh.Close()
		os.Remove(tmp)
		return err
	}
	if err := fh.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func names(en string) mmdbtype.Map {
	return mmdbtype.Map{"en": mmdbtype.String(en)}
}

// geoip2Country is the GeoIP2-Country record of p.
func geoip2Country(p place) mmdbtype.Map {
	country := mmdbtype.Map{
		"iso_code": mmdbtype.String(p.country),
		"names":    names(p.countryName),
	}
	if p.country == "DE" || p.country == "FR" || p.country == "SE" {
		country["is_in_european_union"] = mmdbtype.Bool(true)
	}
	m := mmdbtype.Map{
		"country":            country,
		"registered_country": country,
	}
	if p.continent != "" {
		m["continent"] = mmdbtype.Map{
			"code":  mmdbtype.String(p.continent),
			"names": names(p.continentName),
		}
	}
	return m
}

// geoip2City is the GeoIP2-City record of p.
func geoip2City(p place) mmdbtype.Map {
	m := geoip2Country(p)
	if p.subISO != "" {
		m["subdivisions"] = mmdbtype.Slice{mmdbtype.Map{
			"iso_code": mmdbtype.String(p.subISO),
			"names":    names(p.subName),
		}}
	}
	if p.city != "" {
		m["city"] = mmdbtype.Map{"names": names(p.city)}
	}
	if p.coords {
		m["location"] = mmdbtype.Map{
			"latitude":        mmdbtype.Float64(p.lat),
			"longitude":       mmdbtype.Float64(p.lon),
			"accuracy_radius": mmdbtype.Uint16(20),
			"time_zone":       mmdbtype.String(p.timezone),
		}
	}
	return m
}

// flatCountry is the ip-location-db country record of p.
func flatCountry(p place) mmdbtype.Map {
	return mmdbtype.Map{"country_code": mmdbtype.String(p.country)}
}

// flatCity is the ip-location-db city record of p. Records without
// coordinates leave latitude and longitude out.
func flatCity(p place) mmdbtype.Map {
	m := mmdbtype.Map{
		"country_code": mmdbtype.String(p.country),
		"state1":       mmdbtype.String(p.subName),
		"state2":       mmdbtype.String(""),
		"city":         mmdbtype.String(p.city),
		"postcode":     mmdbtype.String(""),
		"timezone":     mmdbtype.String(p.timezone),
	}
	if p.coords {
		m["latitude"] = mmdbtype.Float32(float32(p.lat))
		m["longitude"] = mmdbtype.Float32(float32(p.lon))
	}
	return m
}
