package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/geo"
)

func TestGeoCollector(t *testing.T) {
	built := time.Date(2026, 6, 5, 13, 43, 16, 0, time.UTC)
	info := geo.Info{
		Kind: geo.KindCompactCity, DatabaseType: geo.CompactDatabaseType, Source: "DB-IP IP to City Lite (test)",
		BuildTime: built, SourceBuildTime: built.Add(-time.Hour),
	}
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(NewGeoCollector(func() geo.Info { return info })))

	gather := func() map[string]float64 {
		families, err := reg.Gather()
		require.NoError(t, err)
		got := map[string]float64{}
		for _, f := range families {
			assert.Equal(t, "GAUGE", f.GetType().String(), f.GetName())
			assert.NotEmpty(t, f.GetHelp(), f.GetName())
			for _, m := range f.GetMetric() {
				key := f.GetName()
				for _, l := range m.GetLabel() {
					key += " " + l.GetName() + "=" + l.GetValue()
				}
				got[key] = m.GetGauge().GetValue()
			}
		}
		return got
	}
	assert.Equal(t, map[string]float64{
		"geoproxy_geoip_database_info database_type=geoproxy-city-compact kind=compact-city source=DB-IP IP to City Lite (test)": 1,
		"geoproxy_geoip_build_timestamp_seconds":        float64(built.Unix()),
		"geoproxy_geoip_source_build_timestamp_seconds": float64(built.Add(-time.Hour).Unix()),
	}, gather())

	// Read at each scrape; a database without dates exports the info only.
	info = geo.Info{Kind: geo.KindFlatCountry, DatabaseType: "country ipvAll"}
	assert.Equal(t, map[string]float64{
		"geoproxy_geoip_database_info database_type=country ipvAll kind=flat-country source=": 1,
	}, gather())
}
