// Command worldmap turns Natural Earth's 1:110m country outlines, as the
// TopoJSON of the npm package world-atlas (countries-110m.json), into the
// SVG paths of the dashboard's world map, and writes them into
// server/dashboard.html between its worldmap markers.
//
//	npm pack world-atlas@2.0.2 i18n-iso-countries@7.14.0
//	tar xzf world-atlas-2.0.2.tgz --one-top-level=wa
//	tar xzf i18n-iso-countries-7.14.0.tgz --one-top-level=iso
//	go run ./tools/worldmap -atlas wa/package/countries-110m.json \
//	    -codes iso/package/codes.json -html server/dashboard.html
//
// The projection is equirectangular, Antarctica left out: x = (lon + 180) ×
// scale, y = (north - lat) × scale, coordinates rounded to whole units of
// the viewBox (0.4° at the default scale), relative, with repeated points
// and specks dropped. Each country is one path carrying its ISO 3166-1
// alpha-2 code (data-cc), its name (data-n) and the latitude and longitude
// of the centre of its largest part (data-at), where the dashboard starts
// the flows of its clients. Natural Earth's data is in the public domain.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// The markers around the generated block in the page.
const (
	beginMarker = "<!-- worldmap:begin -->"
	endMarker   = "<!-- worldmap:end -->"
)

// Map extent: latitudes from North down to South (Antarctica is left out).
const (
	North = 84.0
	South = -58.0
)

// noID names the countries world-atlas gives no ISO numeric code, with the
// code whose clients they hold.
var noID = map[string]string{"Kosovo": "XK", "Somaliland": "SO", "N. Cyprus": "CY"}

// peopled are where the flows of countries whose people mostly live far
// from the middle of their land start, instead of that middle.
var peopled = map[string]Point{"RU": {Lon: 40, Lat: 55}, "CA": {Lon: -80, Lat: 46}}

// Topology is the part of a TopoJSON document the map needs.
type Topology struct {
	Transform *struct {
		Scale     [2]float64 `json:"scale"`
		Translate [2]float64 `json:"translate"`
	} `json:"transform"`
	Arcs    [][][2]float64 `json:"arcs"`
	Objects map[string]struct {
		Geometries []Geometry `json:"geometries"`
	} `json:"objects"`
}

// Geometry is a Polygon or MultiPolygon of a GeometryCollection.
type Geometry struct {
	Type       string          `json:"type"`
	ID         string          `json:"id"`
	Arcs       json.RawMessage `json:"arcs"`
	Properties struct {
		Name string `json:"name"`
	} `json:"properties"`
}

// Point is a longitude, latitude pair.
type Point struct{ Lon, Lat float64 }

// Country is one country's outline.
type Country struct {
	Code, Name string
	Rings      [][]Point // outer rings and holes, in any order
}

// decodeArcs returns the topology's arcs in longitude and latitude,
// undoing the quantization's delta encoding.
func decodeArcs(t *Topology) [][]Point {
	out := make([][]Point, len(t.Arcs))
	for i, arc := range t.Arcs {
		pts := make([]Point, len(arc))
		var x, y float64
		for j, p := range arc {
			if t.Transform == nil {
				pts[j] = Point{p[0], p[1]}
				continue
			}
			x, y = x+p[0], y+p[1]
			pts[j] = Point{x*t.Transform.Scale[0] + t.Transform.Translate[0], y*t.Transform.Scale[1] + t.Transform.Translate[1]}
		}
		out[i] = pts
	}
	return out
}

// ring joins the arcs of one ring; a negative index ~i is arc i reversed.
func ring(arcs [][]Point, idx []int) ([]Point, error) {
	var out []Point
	for _, i := range idx {
		rev := i < 0
		if rev {
			i = ^i
		}
		if i >= len(arcs) {
			return nil, fmt.Errorf("arc %d of %d", i, len(arcs))
		}
		a := arcs[i]
		pts := make([]Point, len(a))
		copy(pts, a)
		if rev {
			for l, r := 0, len(pts)-1; l < r; l, r = l+1, r-1 {
				pts[l], pts[r] = pts[r], pts[l]
			}
		}
		if len(out) > 0 && len(pts) > 0 {
			pts = pts[1:] // an arc starts where the one before ends
		}
		out = append(out, pts...)
	}
	return out, nil
}

// rings returns every ring of a Polygon or MultiPolygon.
func rings(arcs [][]Point, g Geometry) ([][]Point, error) {
	var polys [][][]int
	switch g.Type {
	case "Polygon":
		var p [][]int
		if err := json.Unmarshal(g.Arcs, &p); err != nil {
			return nil, err
		}
		polys = [][][]int{p}
	case "MultiPolygon":
		if err := json.Unmarshal(g.Arcs, &polys); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	var out [][]Point
	for _, p := range polys {
		for _, idx := range p {
			r, err := ring(arcs, idx)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// Countries reads a world-atlas topology and the i18n-iso-countries code
// table ([alpha-2, alpha-3, numeric, ...] rows).
func Countries(topo, codes []byte) ([]Country, error) {
	var t Topology
	if err := json.Unmarshal(topo, &t); err != nil {
		return nil, fmt.Errorf("atlas: %w", err)
	}
	var rows [][]string
	if err := json.Unmarshal(codes, &rows); err != nil {
		return nil, fmt.Errorf("codes: %w", err)
	}
	alpha2 := map[int]string{}
	for _, r := range rows {
		if len(r) < 3 {
			continue
		}
		if n, err := strconv.Atoi(r[2]); err == nil {
			alpha2[n] = r[0]
		}
	}
	obj, ok := t.Objects["countries"]
	if !ok {
		return nil, errors.New("atlas: no countries object")
	}
	arcs := decodeArcs(&t)
	byCode := map[string]*Country{}
	var order []string
	for _, g := range obj.Geometries {
		code := noID[g.Properties.Name]
		if n, err := strconv.Atoi(g.ID); err == nil {
			code = alpha2[n]
		}
		if code == "" || code == "AQ" {
			continue
		}
		rs, err := rings(arcs, g)
		if err != nil {
			return nil, fmt.Errorf("atlas: %s: %w", g.Properties.Name, err)
		}
		c := byCode[code]
		if c == nil {
			c = &Country{Code: code, Name: g.Properties.Name}
			byCode[code] = c
			order = append(order, code)
		}
		c.Rings = append(c.Rings, rs...)
	}
	sort.Strings(order)
	out := make([]Country, 0, len(order))
	for _, code := range order {
		out = append(out, *byCode[code])
	}
	return out, nil
}

// area returns a ring's signed area and centroid (in degrees).
func area(r []Point) (float64, Point) {
	var a, cx, cy float64
	for i := range r {
		p, q := r[i], r[(i+1)%len(r)]
		f := p.Lon*q.Lat - q.Lon*p.Lat
		a += f
		cx += (p.Lon + q.Lon) * f
		cy += (p.Lat + q.Lat) * f
	}
	if a == 0 {
		return 0, r[0]
	}
	return a / 2, Point{cx / (3 * a), cy / (3 * a)}
}

// Centre returns the centroid of a country's largest ring, or where its
// people live (peopled).
func Centre(c Country) Point {
	if p, ok := peopled[c.Code]; ok {
		return p
	}
	best, at := -1.0, Point{}
	for _, r := range c.Rings {
		if len(r) == 0 {
			continue
		}
		a, p := area(unwrap(r))
		if math.Abs(a) > best {
			best, at = math.Abs(a), p
		}
	}
	if at.Lon > 180 {
		at.Lon -= 360
	}
	return at
}

// crosses reports whether a ring crosses the antimeridian: it jumps by
// more than half the world between two points.
func crosses(r []Point) bool {
	for i := 1; i < len(r); i++ {
		if math.Abs(r[i].Lon-r[i-1].Lon) > 180 {
			return true
		}
	}
	return false
}

// unwrap returns a ring that crosses the antimeridian with its western
// longitudes moved east by 360°, so that it is drawn in one piece.
func unwrap(r []Point) []Point {
	if !crosses(r) {
		return r
	}
	out := make([]Point, len(r))
	for i, p := range r {
		if p.Lon < 0 {
			p.Lon += 360
		}
		out[i] = p
	}
	return out
}

// shift returns r moved by dlon degrees of longitude.
func shift(r []Point, dlon float64) []Point {
	out := make([]Point, len(r))
	for i, p := range r {
		out[i] = Point{p.Lon + dlon, p.Lat}
	}
	return out
}

// Path returns the SVG path data of a country at scale units per degree.
func Path(c Country, scale float64) string {
	var b strings.Builder
	num := func(v int, first bool) {
		if !first && v >= 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(v))
	}
	var all [][]Point
	for _, r := range c.Rings {
		if crosses(r) { // drawn whole, once beyond each edge of the map
			u := unwrap(r)
			all = append(all, u, shift(u, -360))
			continue
		}
		all = append(all, r)
	}
	for _, r := range all {
		pts := make([][2]int, 0, len(r))
		for _, p := range r {
			lat := math.Max(South, math.Min(North, p.Lat))
			q := [2]int{int(math.Round((p.Lon + 180) * scale)), int(math.Round((North - lat) * scale))}
			if n := len(pts); n > 0 && pts[n-1] == q {
				continue
			}
			pts = append(pts, q)
		}
		if n := len(pts); n > 1 && pts[n-1] == pts[0] {
			pts = pts[:n-1]
		}
		if len(pts) < 3 || math.Abs(pixelArea(pts)) < 1 {
			continue // a speck at this scale
		}
		b.WriteByte('M')
		num(pts[0][0], true)
		num(pts[0][1], false)
		b.WriteByte('l')
		for i := 1; i < len(pts); i++ {
			num(pts[i][0]-pts[i-1][0], i == 1)
			num(pts[i][1]-pts[i-1][1], false)
		}
		b.WriteByte('z')
	}
	return b.String()
}

func pixelArea(pts [][2]int) float64 {
	var a int
	for i := range pts {
		p, q := pts[i], pts[(i+1)%len(pts)]
		a += p[0]*q[1] - q[0]*p[1]
	}
	return float64(a) / 2
}

// Block returns the generated SVG group, between the markers.
func Block(cs []Country, scale float64) string {
	var b strings.Builder
	w, h := int(math.Round(360*scale)), int(math.Round((North-South)*scale))
	fmt.Fprintf(&b, "%s\n<g id=\"countries\" data-scale=\"%g\" data-north=\"%g\" data-w=\"%d\" data-h=\"%d\">\n", beginMarker, scale, North, w, h)
	for _, c := range cs {
		d := Path(c, scale)
		if d == "" {
			continue
		}
		at := Centre(c)
		fmt.Fprintf(&b, "<path data-cc=\"%s\" data-n=\"%s\" data-at=\"%.1f,%.1f\" d=\"%s\"/>\n",
			c.Code, html.EscapeString(c.Name), at.Lat, at.Lon, d)
	}
	b.WriteString("</g>\n" + endMarker)
	return b.String()
}

// Replace puts block in place of the text between the markers of page.
func Replace(page []byte, block string) ([]byte, error) {
	i := bytes.Index(page, []byte(beginMarker))
	j := bytes.Index(page, []byte(endMarker))
	if i < 0 || j < i {
		return nil, errors.New("the page has no " + beginMarker + " ... " + endMarker)
	}
	out := append([]byte{}, page[:i]...)
	out = append(out, block...)
	return append(out, page[j+len(endMarker):]...), nil
}

func main() {
	atlas := flag.String("atlas", "", "world-atlas countries-110m.json")
	codes := flag.String("codes", "", "i18n-iso-countries codes.json")
	page := flag.String("html", "", "page to write the map into, between its markers (default: print the block)")
	scale := flag.Float64("scale", 2.5, "viewBox units per degree")
	flag.Parse()
	if err := run(*atlas, *codes, *page, *scale, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worldmap:", err)
		os.Exit(1)
	}
}

func run(atlas, codes, page string, scale float64, stdout io.Writer) error {
	if atlas == "" || codes == "" {
		return errors.New("-atlas and -codes are required")
	}
	topo, err := os.ReadFile(atlas)
	if err != nil {
		return err
	}
	tab, err := os.ReadFile(codes)
	if err != nil {
		return err
	}
	cs, err := Countries(topo, tab)
	if err != nil {
		return err
	}
	block := Block(cs, scale)
	if page == "" {
		_, err := io.WriteString(stdout, block+"\n")
		return err
	}
	old, err := os.ReadFile(page)
	if err != nil {
		return err
	}
	out, err := Replace(old, block)
	if err != nil {
		return err
	}
	return os.WriteFile(page, out, 0o644)
}
