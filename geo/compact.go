package geo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// CompactDatabaseType is the metadata database_type of geoproxy's compact
// city database (see package geo/geobuild).
const CompactDatabaseType = "geoproxy-city-compact"

// Keys of the compact database's metadata description, besides the "en"
// notice. The values are plain strings.
const (
	DescSource          = "source"            // the data the database was derived from, e.g. "DB-IP IP to City Lite (...)"
	DescSourceBuildTime = "source_build_time" // build time of that data, RFC 3339
	DescModified        = "modified"          // how the data was changed
	DescAttribution     = "attribution"       // the credit the data's licence asks for
	DescLicense         = "license"           // the data's licence
)

// The compact database's records are maps with the keys country_code (a
// string), latitude and longitude (floats, degrees). compactData decodes
// them straight from the data section, without allocating, following the
// MaxMind DB format specification
// (https://maxmind.github.io/MaxMind-DB/): records and keys may be pointers,
// numbers may be of any numeric type, and keys other than those three are
// skipped.
type compactData []byte

// MaxMind DB data types.
const (
	mmdbExtended = 0
	mmdbPointer  = 1
	mmdbString   = 2
	mmdbDouble   = 3
	mmdbBytes    = 4
	mmdbUint16   = 5
	mmdbUint32   = 6
	mmdbMap      = 7
	mmdbInt32    = 8
	mmdbUint64   = 9
	mmdbUint128  = 10
	mmdbArray    = 11
	mmdbBool     = 14
	mmdbFloat    = 15
)

var errCompactData = errors.New("invalid data section")

// maxSkipDepth bounds the nesting of skipped values.
const maxSkipDepth = 8

// compactRecord is a decoded record of the compact database.
type compactRecord struct {
	country  [2]byte // upper case; zero when absent or not two letters
	lat, lon float64
	coords   bool
}

// pointer decodes the pointer at off: its target and the offset after it.
func (d compactData) pointer(off uint) (target, next uint, ok bool) {
	n := uint(len(d))
	if off >= n {
		return 0, 0, false
	}
	ctrl := d[off]
	i := off + 1
	ss := uint(ctrl>>3) & 3
	if i+ss+1 > n {
		return 0, 0, false
	}
	v := uint(ctrl & 7)
	switch ss {
	case 0:
		target = v<<8 | uint(d[i])
	case 1:
		target = (v<<16 | uint(d[i])<<8 | uint(d[i+1])) + 2048
	case 2:
		target = (v<<24 | uint(d[i])<<16 | uint(d[i+1])<<8 | uint(d[i+2])) + 526336
	default:
		target = uint(binary.BigEndian.Uint32(d[i:]))
	}
	return target, i + ss + 1, true
}

// value reads the header of the value at off, following one pointer. It
// returns the value's type; size (payload bytes, or entries of a map or
// array, or a bool's value); where its payload starts; where the stream it
// was read from continues (after the pointer, for a pointed-to value); and
// whether it came through a pointer. ok is false for invalid data. The
// payload of a scalar is within d.
func (d compactData) value(off uint) (typ byte, size, payload, next uint, pointed, ok bool) {
	n := uint(len(d))
	for hop := 0; ; hop++ {
		if off >= n {
			return 0, 0, 0, 0, false, false
		}
		ctrl := d[off]
		typ = ctrl >> 5
		i := off + 1
		if typ == mmdbPointer {
			if hop > 0 {
				return 0, 0, 0, 0, false, false // a pointer to a pointer
			}
			p, after, ok := d.pointer(off)
			if !ok {
				return 0, 0, 0, 0, false, false
			}
			next, pointed, off = after, true, p
			continue
		}
		if typ == mmdbExtended {
			if i >= n || d[i] == 0 || d[i] > mmdbFloat-7 {
				return 0, 0, 0, 0, false, false
			}
			typ = 7 + d[i]
			i++
		}
		size = uint(ctrl & 0x1f)
		if size >= 29 {
			k := size - 28 // 1, 2 or 3 more bytes
			if i+k > n {
				return 0, 0, 0, 0, false, false
			}
			var v uint
			for j := range k {
				v = v<<8 | uint(d[i+j])
			}
			i += k
			size = [...]uint{29, 285, 65821}[k-1] + v
		}
		end := i
		switch typ {
		case mmdbMap, mmdbArray, mmdbBool:
			// No payload (bool), or entries that follow (skip walks them).
		default:
			if size > n-i {
				return 0, 0, 0, 0, false, false
			}
			end = i + size
		}
		if !pointed {
			next = end
		}
		return typ, size, i, next, pointed, true
	}
}

// skip returns the offset after the value at off.
func (d compactData) skip(off uint, depth int) (uint, bool) {
	typ, size, payload, next, pointed, ok := d.value(off)
	if !ok {
		return 0, false
	}
	if pointed || (typ != mmdbMap && typ != mmdbArray) {
		return next, true
	}
	if depth >= maxSkipDepth {
		return 0, false
	}
	if typ == mmdbMap {
		size *= 2
	}
	pos := payload
	for range size {
		if pos, ok = d.skip(pos, depth+1); !ok {
			return 0, false
		}
	}
	return pos, true
}

// record decodes the record at off.
func (d compactData) record(off uint) (compactRecord, error) {
	var rec compactRecord
	typ, entries, pos, _, _, ok := d.value(off)
	if !ok {
		return rec, errCompactData
	}
	if typ != mmdbMap {
		return rec, fmt.Errorf("record at %d is not a map", off)
	}
	var lat, lon float64
	var hasLat, hasLon bool
	for range entries {
		typ, size, payload, next, _, ok := d.value(pos)
		if !ok {
			return rec, errCompactData
		}
		if typ != mmdbString {
			return rec, fmt.Errorf("record at %d: map key is not a string", off)
		}
		key := d[payload : payload+size]
		pos = next
		switch {
		case string(key) == "country_code":
			typ, size, payload, next, _, ok := d.value(pos)
			if !ok {
				return rec, errCompactData
			}
			if typ == mmdbString && size == 2 {
				a, b := upper(d[payload]), upper(d[payload+1])
				if isUpper(a) && isUpper(b) {
					rec.country = [2]byte{a, b}
				}
			}
			pos = next
		case string(key) == "latitude":
			lat, hasLat, pos, ok = d.number(pos)
		case string(key) == "longitude":
			lon, hasLon, pos, ok = d.number(pos)
		default:
			pos, ok = d.skip(pos, 0)
		}
		if !ok {
			return rec, errCompactData
		}
	}
	// 0,0 is the usual placeholder for unknown coordinates.
	if hasLat && hasLon && (lat != 0 || lon != 0) && validCoords(lat, lon) {
		rec.lat, rec.lon, rec.coords = lat, lon, true
	}
	return rec, nil
}

// compactKeys are the offsets of the key strings "country_code",
// "latitude" and "longitude" in the data section (noKey when unknown).
// mmdbwriter writes each key once, in the first record that uses it, and
// points to it from every later record.
type compactKeys struct{ country, lat, lon uint }

const noKey = ^uint(0)

// keys finds the key strings of the record at off (the first record).
func (d compactData) keys(off uint) compactKeys {
	k := compactKeys{noKey, noKey, noKey}
	typ, entries, pos, _, _, ok := d.value(off)
	if !ok || typ != mmdbMap {
		return k
	}
	for range entries {
		// The key's own control byte: where pointers to it point.
		at := pos
		if pos >= uint(len(d)) {
			return k
		}
		if d[pos]>>5 == mmdbPointer {
			if at, _, ok = d.pointer(pos); !ok {
				return k
			}
		}
		typ, size, payload, next, _, ok := d.value(pos)
		if !ok || typ != mmdbString {
			return k
		}
		switch string(d[payload : payload+size]) {
		case "country_code":
			k.country = at
		case "latitude":
			k.lat = at
		case "longitude":
			k.lon = at
		}
		if pos, ok = d.skip(next, 0); !ok {
			return k
		}
	}
	return k
}

// recordFast decodes the record at off when it has the shape mmdbwriter
// gives the compact database's records: a map of country_code (a two-letter
// string), latitude and longitude (floats), keys as 2-byte pointers to the
// known key strings. ok is false for any other shape; record handles those.
func (d compactData) recordFast(off uint, k compactKeys) (rec compactRecord, ok bool) {
	if off >= uint(len(d)) || d[off] != 0xe3 || k.country == noKey || k.lat == noKey || k.lon == noKey {
		return rec, false
	}
	pos := off + 1
	var lat, lon float64
	for _, want := range [3]uint{k.country, k.lat, k.lon} {
		// The key: a 2-byte pointer (control 0x20-0x27) to the known string.
		if pos+1 >= uint(len(d)) {
			return rec, false
		}
		c := d[pos]
		if c&0xf8 != 0x20 || uint(c&7)<<8|uint(d[pos+1]) != want {
			return rec, false
		}
		pos += 2
		typ, size, payload, next, _, ok := d.value(pos)
		if !ok {
			return rec, false
		}
		switch {
		case want == k.country && typ == mmdbString && size == 2:
			a, b := upper(d[payload]), upper(d[payload+1])
			if isUpper(a) && isUpper(b) {
				rec.country = [2]byte{a, b}
			}
		case want != k.country && typ == mmdbFloat && size == 4:
			f := float64(math.Float32frombits(binary.BigEndian.Uint32(d[payload:])))
			f = math.Round(f*1e5) / 1e5
			if want == k.lat {
				lat = f
			} else {
				lon = f
			}
		default:
			return rec, false
		}
		pos = next
	}
	if (lat != 0 || lon != 0) && validCoords(lat, lon) {
		rec.lat, rec.lon, rec.coords = lat, lon, true
	}
	return rec, true
}

// number reads a numeric value at off; isNum is false for other types,
// which are skipped.
func (d compactData) number(off uint) (v float64, isNum bool, next uint, ok bool) {
	typ, size, payload, next, _, ok := d.value(off)
	if !ok {
		return 0, false, 0, false
	}
	switch typ {
	case mmdbDouble:
		if size != 8 {
			return 0, false, 0, false
		}
		return math.Float64frombits(binary.BigEndian.Uint64(d[payload:])), true, next, true
	case mmdbFloat:
		if size != 4 {
			return 0, false, 0, false
		}
		// Rounded to 5 decimals (about 1 m, below a float32's precision
		// for degrees), so that 37.4 reads 37.4, not 37.400001525878906.
		f := float64(math.Float32frombits(binary.BigEndian.Uint32(d[payload:])))
		return math.Round(f*1e5) / 1e5, true, next, true
	case mmdbUint16, mmdbUint32, mmdbUint64, mmdbInt32:
		if size > 8 || (typ == mmdbInt32 && size > 4) {
			return 0, false, 0, false
		}
		var u uint64
		for _, c := range d[payload : payload+size] {
			u = u<<8 | uint64(c)
		}
		if typ == mmdbInt32 {
			return float64(int32(uint32(u))), true, next, true
		}
		return float64(u), true, next, true
	}
	next, ok = d.skip(off, 0)
	return 0, false, next, ok
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }

// validCoords reports whether lat/lon is a position on Earth.
func validCoords(lat, lon float64) bool {
	return !math.IsNaN(lat) && !math.IsNaN(lon) && lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
}

// dataSection returns the data section of a MaxMind DB file.
func dataSection(b []byte, nodes, recSize uint) (compactData, error) {
	start := nodes*recSize/4 + 16 // the tree, then 16 zero bytes
	end := bytes.LastIndex(b, metadataMarker)
	if end < 0 || start > uint(end) {
		return nil, errCompactData
	}
	return compactData(b[start:end]), nil
}

var metadataMarker = []byte("\xAB\xCD\xEFMaxMind.com")
