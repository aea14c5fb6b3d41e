package core

import (
	"strconv"
	"strings"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/geo"
)

// edgeKind says what an edge header carries.
type edgeKind uint8

const (
	edgeCountry edgeKind = iota // an ISO country code
	edgeLat                     // a latitude
	edgeLon                     // a longitude
	edgeLatLon                  // "lat,lon"
	edgeGCP                     // "{client_region},{client_city}"
)

// edgeField is one header an edge locates clients with.
type edgeField struct {
	name string // canonical
	kind edgeKind
}

// edgeFields lists the headers of the configured edges, in the order
// engines pass their values to Decide.
func edgeFields(e config.EdgeHeaders) []edgeField {
	var f []edgeField
	if e.Cloudflare {
		f = append(f, edgeField{"Cf-Ipcountry", edgeCountry}, edgeField{"Cf-Iplatitude", edgeLat},
			edgeField{"Cf-Iplongitude", edgeLon})
	}
	if e.CloudFront {
		f = append(f, edgeField{"Cloudfront-Viewer-Country", edgeCountry},
			edgeField{"Cloudfront-Viewer-Latitude", edgeLat}, edgeField{"Cloudfront-Viewer-Longitude", edgeLon})
	}
	if e.GCP {
		f = append(f, edgeField{"X-Client-Geo-Location", edgeGCP})
	}
	if e.Country != "" {
		f = append(f, edgeField{canonical(e.Country), edgeCountry})
	}
	if e.LatLon != "" {
		f = append(f, edgeField{canonical(e.LatLon), edgeLatLon})
	}
	return f
}

// canonical is the canonical form of a header name (textproto's, without
// its allocation when already canonical).
func canonical(name string) string {
	b := []byte(strings.ToLower(name))
	upper := true
	for i, c := range b {
		if upper && 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		upper = c == '-'
	}
	return string(b)
}

// locateEdge reads a location from the edge's header values (in the order
// of fields); ok is false when they name no usable country or point.
func locateEdge(fields []edgeField, values []string) (loc geo.Location, ok bool) {
	var lat, lon float64
	var haveLat, haveLon bool
	for i, f := range fields {
		if i >= len(values) || values[i] == "" {
			continue
		}
		v := strings.TrimSpace(values[i])
		switch f.kind {
		case edgeCountry:
			if loc.Country == "" {
				loc.Country = countryCode(v)
			}
		case edgeLat:
			lat, haveLat = parseCoord(v, 90)
		case edgeLon:
			lon, haveLon = parseCoord(v, 180)
		case edgeLatLon:
			a, b, found := strings.Cut(v, ",")
			if found {
				lat, haveLat = parseCoord(strings.TrimSpace(a), 90)
				lon, haveLon = parseCoord(strings.TrimSpace(b), 180)
			}
		case edgeGCP:
			region, city, _ := strings.Cut(v, ",")
			region = strings.TrimSpace(region)
			if len(region) > 2 && loc.Country == "" {
				// A CLDR subdivision id such as "USCA".
				loc.Subdivision = strings.ToUpper(region[2:])
				region = region[:2]
			}
			if loc.Country == "" {
				loc.Country = countryCode(region)
			}
			if loc.City == "" {
				loc.City = strings.TrimSpace(city)
			}
		}
	}
	if loc.Country == "" && !(haveLat && haveLon) {
		return geo.Location{}, false
	}
	if loc.Country != "" {
		clat, clon, continent, _ := geo.CountryPoint(loc.Country)
		loc.Continent = continent
		loc.Lat, loc.Lon = clat, clon
	}
	if haveLat && haveLon {
		loc.Lat, loc.Lon = lat, lon
	}
	return loc, true
}

// countryCode returns v as a known ISO country code, or "" (Cloudflare
// sends XX for unknown and T1 for Tor).
func countryCode(v string) string {
	v = strings.ToUpper(v)
	if len(v) != 2 || v == "XX" || v == "T1" {
		return ""
	}
	if _, _, _, ok := geo.CountryPoint(v); !ok {
		return ""
	}
	return v
}

func parseCoord(v string, limit float64) (float64, bool) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < -limit || f > limit || f != f {
		return 0, false
	}
	return f, true
}
