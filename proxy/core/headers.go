package core

import (
	"strconv"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/route"
)

// AppendHeader appends the value of a request header template for a
// request decided by d and served by region (nil before a region is chosen)
// to dst. Both HTTP engines use it, so apps see the same headers.
func AppendHeader(dst []byte, t config.Template, d *Decision, region *route.Region) []byte {
	for _, p := range t.Parts {
		if p.Var == config.VarNone {
			dst = append(dst, p.Literal...)
			continue
		}
		loc := &d.Location
		switch p.Var {
		case config.VarCity:
			dst = append(dst, loc.City...)
		case config.VarCountry:
			dst = append(dst, loc.Country...)
		case config.VarContinent:
			dst = append(dst, loc.Continent...)
		case config.VarSubdivision:
			dst = append(dst, loc.Subdivision...)
		case config.VarLat:
			dst = strconv.AppendFloat(dst, loc.Lat, 'f', 4, 64)
		case config.VarLon:
			dst = strconv.AppendFloat(dst, loc.Lon, 'f', 4, 64)
		case config.VarClientIP:
			if d.Client.IsValid() {
				dst = d.Client.AppendTo(dst)
			}
		case config.VarRegion:
			if region != nil {
				dst = append(dst, region.Name...)
			}
		case config.VarNearestRegion:
			if d.Plan.Nearest != nil {
				dst = append(dst, d.Plan.Nearest.Name...)
			}
		}
	}
	return dst
}

// Idempotent reports whether a request method may be repeated safely.
func Idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}
