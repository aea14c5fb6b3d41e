package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A topology as world-atlas writes them: quantized, delta-encoded arcs,
// -1-i for arc i reversed. Arc 0 is a 10°×10° square's south and east
// sides from (0, 0), arc 1 its north and west sides back; arc 2 a ring
// across the antimeridian, from 170°E to 170°W; arc 3 a speck.
const topo = `{
  "type": "Topology",
  "transform": {"scale": [0.5, 0.5], "translate": [-180, -90]},
  "objects": {"countries": {"type": "GeometryCollection", "geometries": [
    {"type": "Polygon", "arcs": [[0, 1]], "id": "826", "properties": {"name": "United Kingdom"}},
    {"type": "MultiPolygon", "arcs": [[[2]], [[3]]], "id": "643", "properties": {"name": "Russia"}},
    {"type": "Polygon", "arcs": [[-2, -1]], "properties": {"name": "Kosovo"}},
    {"type": "Polygon", "arcs": [[3]], "id": "010", "properties": {"name": "Antarctica"}}
  ]}},
  "arcs": [
    [[360, 180], [20, 0], [0, 20]],
    [[380, 200], [-20, 0], [0, -20]],
    [[700, 300], [-680, 0], [0, 20], [680, 0], [0, -20]],
    [[100, 100], [0, 0], [0, 0]]
  ]
}`

const codes = `[["GB", "GBR", "826", "ISO 3166-2:GB"], ["RU", "RUS", "643", "ISO 3166-2:RU"], ["AQ", "ATA", "010", "ISO 3166-2:AQ"]]`

func TestCountries(t *testing.T) {
	cs, err := Countries([]byte(topo), []byte(codes))
	require.NoError(t, err)
	require.Len(t, cs, 3, "Antarctica left out")
	assert.Equal(t, []string{"GB", "RU", "XK"}, []string{cs[0].Code, cs[1].Code, cs[2].Code}, "by code; Kosovo has none in the atlas")

	gb := cs[0]
	require.Len(t, gb.Rings, 1)
	assert.Equal(t, []Point{{0, 0}, {10, 0}, {10, 10}, {0, 10}, {0, 0}}, gb.Rings[0], "arcs joined, shared ends once")
	assert.Equal(t, Point{5, 5}, Centre(gb))
	// Scale 1: x = lon + 180, y = 84 - lat; relative after the first.
	assert.Equal(t, "M180 84l10 0 0-10-10 0z", Path(gb, 1))

	xk := cs[2]
	assert.Equal(t, []Point{{0, 0}, {0, 10}, {10, 10}, {10, 0}, {0, 0}}, xk.Rings[0], "reversed arcs")

	ru := cs[1]
	assert.Equal(t, Point{Lon: 40, Lat: 55}, Centre(ru), "where its people live")
	d := Path(ru, 1)
	assert.Equal(t, 2, strings.Count(d, "M"), "the ring across the antimeridian is drawn twice, the speck not at all: %s", d)
	assert.Equal(t, "M350 24l20 0 0-10-20 0zM-10 24l20 0 0-10-20 0z", d, "in one piece over the eastern edge, and again over the western edge")
}

func TestCentreAcrossTheAntimeridian(t *testing.T) {
	c := Country{Code: "FJ", Rings: [][]Point{{{178, -17}, {-178, -17}, {-178, -19}, {178, -19}, {178, -17}}}}
	at := Centre(c)
	assert.InDelta(t, 180, abs(at.Lon), 0.01)
	assert.InDelta(t, -18, at.Lat, 0.01)
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func TestReplace(t *testing.T) {
	page := []byte("<svg>\n" + beginMarker + "\nold\n" + endMarker + "\n</svg>")
	out, err := Replace(page, beginMarker+"\nnew\n"+endMarker)
	require.NoError(t, err)
	assert.Equal(t, "<svg>\n"+beginMarker+"\nnew\n"+endMarker+"\n</svg>", string(out))
	_, err = Replace([]byte("<svg></svg>"), "x")
	assert.Error(t, err)
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	atlas, tab, page := filepath.Join(dir, "atlas.json"), filepath.Join(dir, "codes.json"), filepath.Join(dir, "page.html")
	require.NoError(t, os.WriteFile(atlas, []byte(topo), 0o644))
	require.NoError(t, os.WriteFile(tab, []byte(codes), 0o644))
	require.NoError(t, os.WriteFile(page, []byte("<svg>"+beginMarker+endMarker+"</svg>"), 0o644))
	require.NoError(t, run(atlas, tab, page, 2.5, nil))
	b, err := os.ReadFile(page)
	require.NoError(t, err)
	s := string(b)
	assert.Contains(t, s, `<g id="countries" data-scale="2.5" data-north="84" data-w="900" data-h="355">`)
	assert.Contains(t, s, `<path data-cc="GB" data-n="United Kingdom" data-at="5.0,5.0" d="M450 210l25 0 0-25-25 0z"/>`)
	assert.True(t, strings.HasSuffix(s, endMarker+"</svg>"))

	var out strings.Builder
	require.NoError(t, run(atlas, tab, "", 2.5, &out))
	assert.True(t, strings.HasPrefix(out.String(), beginMarker))
	assert.Error(t, run("", tab, "", 2.5, &out))
}
