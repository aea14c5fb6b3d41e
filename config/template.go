package config

import (
	"fmt"
	"strings"
)

// Template is a compiled header value: literal text and placeholders.
//
// In the file a placeholder is a name in braces, such as "{city}", and "{{"
// and "}}" stand for a literal "{" and "}". An unknown name or a brace
// without its partner is an error. Text outside placeholders must not hold
// control characters.
type Template struct {
	// Raw is the value as written in the file.
	Raw string
	// Parts are the literals and placeholders in order. Adjacent literals
	// are merged; there are no empty literals.
	Parts []Part
}

// Part is a literal (Var == VarNone) or a placeholder.
type Part struct {
	// Literal is the text of a literal part.
	Literal string
	// Var is the placeholder, or VarNone for a literal part.
	Var Var
}

// Var is a placeholder of a header template, filled per request.
type Var uint8

// The placeholders. Values that are not known for a request (a client not
// in the database, a field the database lacks) expand to "".
const (
	VarNone          Var = iota // not a placeholder: the Part is a literal
	VarCity                     // {city}: the client's city name
	VarCountry                  // {country}: the client's ISO 3166-1 alpha-2 country code
	VarContinent                // {continent}: the client's continent code (AF AN AS EU NA OC SA)
	VarSubdivision              // {subdivision}: the client's state or province
	VarLat                      // {lat}: the client's latitude in degrees
	VarLon                      // {lon}: the client's longitude in degrees
	VarClientIP                 // {client_ip}: the client's address
	VarRegion                   // {region}: the name of the region serving the request
	VarNearestRegion            // {nearest_region}: the name of the region nearest the client, healthy or not
)

var varNames = [...]string{
	VarNone:          "none",
	VarCity:          "city",
	VarCountry:       "country",
	VarContinent:     "continent",
	VarSubdivision:   "subdivision",
	VarLat:           "lat",
	VarLon:           "lon",
	VarClientIP:      "client_ip",
	VarRegion:        "region",
	VarNearestRegion: "nearest_region",
}

// String returns the placeholder name without braces ("city"), or "none"
// for VarNone.
func (v Var) String() string {
	if int(v) < len(varNames) {
		return varNames[v]
	}
	return fmt.Sprintf("Var(%d)", uint8(v))
}

// lookupVar returns the placeholder with the given name.
func lookupVar(name string) (Var, bool) {
	for v := VarNone + 1; int(v) < len(varNames); v++ {
		if varNames[v] == name {
			return v, true
		}
	}
	return VarNone, false
}

// placeholderList is the known placeholders, for messages.
func placeholderList() string {
	names := make([]string, 0, len(varNames)-1)
	for _, n := range varNames[1:] {
		names = append(names, "{"+n+"}")
	}
	return strings.Join(names, " ")
}

// parseTemplate compiles a header value template.
func parseTemplate(s string) (Template, error) {
	t := Template{Raw: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.Parts = append(t.Parts, Part{Literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case strings.HasPrefix(s[i:], "{{"):
			lit.WriteByte('{')
			i += 2
		case strings.HasPrefix(s[i:], "}}"):
			lit.WriteByte('}')
			i += 2
		case c == '{':
			end := strings.IndexAny(s[i+1:], "{}")
			if end < 0 || s[i+1+end] != '}' {
				return Template{}, fmt.Errorf("template %q: unbalanced \"{\" at offset %d (write \"{{\" for a literal brace)", s, i)
			}
			name := s[i+1 : i+1+end]
			v, ok := lookupVar(name)
			if !ok {
				return Template{}, fmt.Errorf("template %q: unknown placeholder {%s}; known: %s", s, name, placeholderList())
			}
			flush()
			t.Parts = append(t.Parts, Part{Var: v})
			i += end + 2
		case c == '}':
			return Template{}, fmt.Errorf("template %q: unbalanced \"}\" at offset %d (write \"}}\" for a literal brace)", s, i)
		case c < ' ' && c != '\t' || c == 0x7f:
			return Template{}, fmt.Errorf("template %q: control character %q is not allowed in a header value", s, c)
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush()
	return t, nil
}

// checkHeaderName checks that name is a valid HTTP header name (an RFC 7230
// token).
func checkHeaderName(name string) error {
	if name == "" {
		return fmt.Errorf("empty header name")
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("invalid header name %q: character %q is not allowed", name, name[i])
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
