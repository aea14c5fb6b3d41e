package geo

import (
	"strconv"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2/mmdbdata"
)

// flatRecord is a record of the ip-location-db databases: country files hold
// only country_code; city files add state1, state2, city, postcode, timezone,
// latitude and longitude.
type flatRecord struct {
	CountryCode string `maxminddb:"country_code"`
	State1      string `maxminddb:"state1"`
	City        string `maxminddb:"city"`
	Latitude    coord  `maxminddb:"latitude"`
	Longitude   coord  `maxminddb:"longitude"`
}

// coord is a latitude or longitude stored as a float (float32 in the
// published files), an integer or a decimal string. Values of any other type
// are skipped and leave ok false.
type coord struct {
	v  float64
	ok bool
}

// UnmarshalMaxMindDBCursor implements mmdbdata.CursorUnmarshaler.
func (c *coord) UnmarshalMaxMindDBCursor(cur mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	kind, err := cur.Kind()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	switch kind {
	case mmdbdata.KindFloat32, mmdbdata.KindFloat64:
		v, next, err := cur.ReadFloat()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		c.v, c.ok = v, true
		return next, nil
	case mmdbdata.KindInt32, mmdbdata.KindUint16, mmdbdata.KindUint32, mmdbdata.KindUint64:
		v, signed, next, err := cur.ReadInteger()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		if signed {
			c.v = float64(int64(v))
		} else {
			c.v = float64(v)
		}
		c.ok = true
		return next, nil
	case mmdbdata.KindString:
		s, next, err := cur.ReadString()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
			c.v, c.ok = v, true
		}
		return next, nil
	default:
		return cur.Skip()
	}
}
