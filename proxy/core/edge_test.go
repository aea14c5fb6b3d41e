package core

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/geoproxy/geoproxy/config"
)

func TestLocateEdge(t *testing.T) {
	all := edgeFields(config.EdgeHeaders{Cloudflare: true, CloudFront: true, GCP: true, Country: "x-edge-country", LatLon: "X-Edge-LatLon"})
	var names []string
	for _, f := range all {
		names = append(names, f.name)
	}
	assert.Equal(t, []string{"Cf-Ipcountry", "Cf-Iplatitude", "Cf-Iplongitude", "Cloudfront-Viewer-Country",
		"Cloudfront-Viewer-Latitude", "Cloudfront-Viewer-Longitude", "X-Client-Geo-Location", "X-Edge-Country", "X-Edge-Latlon"}, names)

	values := func(kv map[string]string) []string {
		out := make([]string, len(all))
		for i, f := range all {
			out[i] = kv[f.name]
		}
		return out
	}
	cases := []struct {
		name       string
		headers    map[string]string
		ok         bool
		country    string
		continent  string
		sub, city  string
		lat, lon   float64
		pointAbout bool // lat/lon are the country's reference point
	}{
		{"cloudflare country", map[string]string{"Cf-Ipcountry": "de"}, true, "DE", "EU", "", "", 0, 0, true},
		{"cloudflare with coordinates", map[string]string{"Cf-Ipcountry": "JP", "Cf-Iplatitude": "35.68", "Cf-Iplongitude": "139.69"}, true, "JP", "AS", "", "", 35.68, 139.69, false},
		{"cloudflare unknown", map[string]string{"Cf-Ipcountry": "XX"}, false, "", "", "", "", 0, 0, false},
		{"cloudflare tor", map[string]string{"Cf-Ipcountry": "T1"}, false, "", "", "", "", 0, 0, false},
		{"cloudfront", map[string]string{"Cloudfront-Viewer-Country": "BR", "Cloudfront-Viewer-Latitude": "-23.55", "Cloudfront-Viewer-Longitude": "-46.63"}, true, "BR", "SA", "", "", -23.55, -46.63, false},
		{"gcp region and city", map[string]string{"X-Client-Geo-Location": "US,Mountain View"}, true, "US", "NA", "", "Mountain View", 0, 0, true},
		{"gcp subdivision", map[string]string{"X-Client-Geo-Location": "USCA,Mountain View"}, true, "US", "NA", "CA", "Mountain View", 0, 0, true},
		{"generic pair", map[string]string{"X-Edge-Country": "FR", "X-Edge-Latlon": "48.86, 2.35"}, true, "FR", "EU", "", "", 48.86, 2.35, false},
		{"coordinates out of range are ignored", map[string]string{"X-Edge-Country": "FR", "X-Edge-Latlon": "480, 2"}, true, "FR", "EU", "", "", 0, 0, true},
		{"a country that does not exist", map[string]string{"Cf-Ipcountry": "QQ"}, false, "", "", "", "", 0, 0, false},
		{"nothing", nil, false, "", "", "", "", 0, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			loc, ok := locateEdge(all, values(c.headers))
			assert.Equal(t, c.ok, ok)
			if !ok {
				return
			}
			assert.Equal(t, c.country, loc.Country)
			assert.Equal(t, c.continent, loc.Continent)
			assert.Equal(t, c.sub, loc.Subdivision)
			assert.Equal(t, c.city, loc.City)
			if !c.pointAbout {
				assert.Equal(t, c.lat, loc.Lat)
				assert.Equal(t, c.lon, loc.Lon)
			} else {
				assert.NotZero(t, loc.Lat+loc.Lon, "the country's reference point")
			}
		})
	}
}
