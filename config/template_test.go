package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		in   string
		want []Part
	}{
		{"", nil},
		{"plain", []Part{{Literal: "plain"}}},
		{"{city}", []Part{{Var: VarCity}}},
		{"{lat},{lon}", []Part{{Var: VarLat}, {Literal: ","}, {Var: VarLon}}},
		{"a {client_ip} b", []Part{{Literal: "a "}, {Var: VarClientIP}, {Literal: " b"}}},
		{"{{city}}", []Part{{Literal: "{city}"}}},
		{"x{{{region}}}y", []Part{{Literal: "x{"}, {Var: VarRegion}, {Literal: "}y"}}},
		{"{country}{continent}{subdivision}{nearest_region}",
			[]Part{{Var: VarCountry}, {Var: VarContinent}, {Var: VarSubdivision}, {Var: VarNearestRegion}}},
		{"tab\tok", []Part{{Literal: "tab\tok"}}},
	}
	for _, tt := range tests {
		got, err := parseTemplate(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, Template{Raw: tt.in, Parts: tt.want}, got, tt.in)
	}
}

func TestParseTemplateErrors(t *testing.T) {
	for in, want := range map[string]string{
		"{town}":       "unknown placeholder {town}",
		"{}":           "unknown placeholder {}",
		"{City}":       "unknown placeholder {City}",
		"{city":        `unbalanced "{" at offset 0`,
		"a{b{city}":    `unbalanced "{" at offset 1`,
		"city}":        `unbalanced "}" at offset 4`,
		"a\r\nb":       "control character",
		"nul\x00":      "control character",
		"{none}":       "unknown placeholder {none}",
		"{client_ip":   `unbalanced "{"`,
		"{{city}":      `unbalanced "}" at offset 6`,
		"{city}}}}}x}": `unbalanced "}" at offset 11`,
	} {
		_, err := parseTemplate(in)
		if assert.Error(t, err, in) {
			assert.Contains(t, err.Error(), want, in)
		}
	}
}

func TestVarString(t *testing.T) {
	want := []string{"none", "city", "country", "continent", "subdivision", "lat", "lon", "client_ip", "region", "nearest_region"}
	for v := VarNone; v <= VarNearestRegion; v++ {
		assert.Equal(t, want[v], v.String())
		if v != VarNone {
			got, ok := lookupVar(v.String())
			assert.True(t, ok)
			assert.Equal(t, v, got)
		}
	}
	assert.Equal(t, "Var(42)", Var(42).String())
}

func TestCheckHeaderName(t *testing.T) {
	for _, ok := range []string{"X-City", "x_y", "A.B", "!#$%&'*+-.^_`|~09az"} {
		assert.NoError(t, checkHeaderName(ok), ok)
	}
	for _, bad := range []string{"", "X City", "X:Y", "X\"", "Ä", "a\tb", "(x)"} {
		assert.Error(t, checkHeaderName(bad), bad)
	}
}
