package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/geoproxy/geoproxy/geo"
)

// GeoCollector exports which geo database is in use and how old its data
// is:
//
//	geoproxy_geoip_database_info{kind, database_type, source}  1
//	geoproxy_geoip_build_timestamp_seconds                     the database's build time
//	geoproxy_geoip_source_build_timestamp_seconds              its data's build time (the source's, for derived data)
//
// An alert on time() - geoproxy_geoip_source_build_timestamp_seconds tells
// when the data needs a refresh.
type GeoCollector struct {
	info                        func() geo.Info
	database, built, sourceDate *prometheus.Desc
}

var _ prometheus.Collector = (*GeoCollector)(nil)

// NewGeoCollector reads the database's description through info at each
// scrape, so a swapped database shows at once.
func NewGeoCollector(info func() geo.Info) *GeoCollector {
	return &GeoCollector{
		info: info,
		database: prometheus.NewDesc("geoproxy_geoip_database_info",
			"The geo database in use: kind, metadata database type and the data it was derived from (\"\" if not derived). Always 1.",
			[]string{"kind", "database_type", "source"}, nil),
		built: prometheus.NewDesc("geoproxy_geoip_build_timestamp_seconds",
			"Build time of the geo database in use, seconds since the Unix epoch.", nil, nil),
		sourceDate: prometheus.NewDesc("geoproxy_geoip_source_build_timestamp_seconds",
			"Build time of the geolocation data in use (for derived data, of its source), seconds since the Unix epoch.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *GeoCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.database
	ch <- c.built
	ch <- c.sourceDate
}

// Collect implements prometheus.Collector.
func (c *GeoCollector) Collect(ch chan<- prometheus.Metric) {
	info := c.info()
	ch <- prometheus.MustNewConstMetric(c.database, prometheus.GaugeValue, 1, info.Kind, info.DatabaseType, info.Source)
	if !info.BuildTime.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.built, prometheus.GaugeValue, float64(info.BuildTime.Unix()))
	}
	if !info.SourceBuildTime.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.sourceDate, prometheus.GaugeValue, float64(info.SourceBuildTime.Unix()))
	}
}
