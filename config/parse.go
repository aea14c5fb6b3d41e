package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// The raw types mirror the file. Every value is kept in a scalar or opt so
// that an absent key can be told from an explicit zero, and so that a value
// of the wrong type does not stop decoding: provision reports it with the
// others.

type rawConfig struct {
	Listen      scalar                `yaml:"listen"`
	Admin       opt[rawAdmin]         `yaml:"admin"`
	GeoIP       opt[rawGeoIP]         `yaml:"geoip"`
	HealthCheck opt[rawHealthCheck]   `yaml:"health_check"`
	Proxy       opt[rawProxy]         `yaml:"proxy"`
	Limits      opt[rawLimits]        `yaml:"limits"`
	TLS         opt[rawTLS]           `yaml:"tls"`
	ProxyProto  scalar                `yaml:"proxy_protocol"`
	Shutdown    opt[rawShutdown]      `yaml:"shutdown"`
	Resilience  opt[rawResilience]    `yaml:"resilience"`
	AccessLog   scalar                `yaml:"access_log"`
	Engine      scalar                `yaml:"engine"`
	Regions     opt[[]opt[rawRegion]] `yaml:"regions"`
	Rules       opt[[]opt[rawRule]]   `yaml:"rules"`
	Affinity    opt[rawAffinity]      `yaml:"affinity"`
}

type rawAdmin struct {
	Listen       scalar `yaml:"listen"`
	Pprof        scalar `yaml:"pprof"`
	TokenFile    scalar `yaml:"token_file"`
	TokenEnv     scalar `yaml:"token_env"`
	ProtectReads scalar `yaml:"protect_reads"`
}

type rawGeoIP struct {
	Database        scalar                  `yaml:"database"`
	TrustedProxies  opt[[]scalar]           `yaml:"trusted_proxies"`
	DefaultLocation opt[rawLatLon]          `yaml:"default_location"`
	Overrides       opt[[]opt[rawOverride]] `yaml:"overrides"`
	EdgeHeaders     opt[[]any]              `yaml:"edge_headers"`
}

type rawLatLon struct {
	Lat scalar `yaml:"lat"`
	Lon scalar `yaml:"lon"`
}

type rawOverride struct {
	CIDR     scalar                   `yaml:"cidr"`
	Location opt[rawOverrideLocation] `yaml:"location"`
}

type rawOverrideLocation struct {
	Lat         scalar `yaml:"lat"`
	Lon         scalar `yaml:"lon"`
	Country     scalar `yaml:"country"`
	Subdivision scalar `yaml:"subdivision"`
	City        scalar `yaml:"city"`
	Continent   scalar `yaml:"continent"`
}

type rawHealthCheck struct {
	Path               scalar `yaml:"path"`
	Interval           scalar `yaml:"interval"`
	Timeout            scalar `yaml:"timeout"`
	HealthyThreshold   scalar `yaml:"healthy_threshold"`
	UnhealthyThreshold scalar `yaml:"unhealthy_threshold"`
}

type rawProxy struct {
	RequestHeaders        opt[map[string]scalar] `yaml:"request_headers"`
	RegionHeader          scalar                 `yaml:"region_header"`
	MaxAttempts           scalar                 `yaml:"max_attempts"`
	DialTimeout           scalar                 `yaml:"dial_timeout"`
	ResponseHeaderTimeout scalar                 `yaml:"response_header_timeout"`
	RetryOnStatus         opt[[]scalar]          `yaml:"retry_on_status"`
	EventLoops            scalar                 `yaml:"event_loops"`
	EventLoopsWithTLS     scalar                 `yaml:"event_loops_with_tls_backends"`
}

type rawLimits struct {
	RequestMemory              scalar `yaml:"request_memory"`
	MaxRequestBody             scalar `yaml:"max_request_body"`
	HeadTimeout                scalar `yaml:"head_timeout"`
	BodyTimeout                scalar `yaml:"body_timeout"`
	IdleTimeout                scalar `yaml:"idle_timeout"`
	MaxHeaderBytes             scalar `yaml:"max_header_bytes"`
	MaxConnections             scalar `yaml:"max_connections"`
	MaxConnectionsPerClient    scalar `yaml:"max_connections_per_client"`
	RequestsPerSecondPerClient scalar `yaml:"requests_per_second_per_client"`
	BurstPerClient             scalar `yaml:"burst_per_client"`
}

type rawShutdown struct {
	DrainDelay scalar `yaml:"drain_delay"`
}

type rawRegion struct {
	Name     scalar                 `yaml:"name"`
	Location opt[rawLatLon]         `yaml:"location"`
	Backends opt[[]opt[rawBackend]] `yaml:"backends"`
	Bias     scalar                 `yaml:"bias"`
	Capacity opt[rawCapacity]       `yaml:"capacity"`
	TLS      opt[rawBackendTLS]     `yaml:"tls"`
	Protocol scalar                 `yaml:"protocol"`
}

type rawBackend struct {
	URL      scalar             `yaml:"url"`
	Weight   scalar             `yaml:"weight"`
	TLS      opt[rawBackendTLS] `yaml:"tls"`
	Protocol scalar             `yaml:"protocol"`
}

// scalar is a leaf value as decoded by the YAML library, converted to its Go
// type later. set is false when the key is absent or its value is null.
type scalar struct {
	set  bool
	v    any    // string, bool, a number, or a mapping or list given by mistake
	text string // the value as a string, when it is a scalar
}

// UnmarshalYAML keeps the value whatever its type.
func (s *scalar) UnmarshalYAML(unmarshal func(any) error) error {
	if err := unmarshal(&s.v); err != nil {
		return err
	}
	s.set = s.v != nil
	if s.set && shapeOfValue(s.v) == shapeScalar {
		if err := unmarshal(&s.text); err != nil {
			s.text = fmt.Sprint(s.v)
		}
	}
	return nil
}

// opt is a mapping or list that may be absent (or null: set is false). When
// the file has a value of another shape, wrong is set and got holds it.
type opt[T any] struct {
	set   bool
	wrong bool
	got   any
	v     T
}

// UnmarshalYAML decodes the value when its shape is right and keeps it
// otherwise.
func (o *opt[T]) UnmarshalYAML(unmarshal func(any) error) error {
	var got any
	if err := unmarshal(&got); err != nil {
		return err
	}
	if got == nil {
		return nil
	}
	o.set = true
	if shapeOfValue(got) != shapeOfType(reflect.TypeFor[T]()) {
		o.wrong, o.got = true, got
		return nil
	}
	return unmarshal(&o.v)
}

// elemType is the type opt decodes into; it lets the unknown-key message list
// the keys a mapping accepts.
func (o opt[T]) elemType() reflect.Type { return reflect.TypeFor[T]() }

type wrapper interface{ elemType() reflect.Type }

type shape int

const (
	shapeScalar shape = iota
	shapeMapping
	shapeList
)

func (s shape) String() string {
	switch s {
	case shapeMapping:
		return "a mapping"
	case shapeList:
		return "a list"
	}
	return "a single value"
}

func shapeOfType(t reflect.Type) shape {
	switch t.Kind() {
	case reflect.Map, reflect.Struct:
		return shapeMapping
	case reflect.Slice, reflect.Array:
		return shapeList
	}
	return shapeScalar
}

func shapeOfValue(v any) shape {
	if v == nil {
		return shapeScalar
	}
	return shapeOfType(reflect.TypeOf(v))
}

// maxUnknownKeys bounds how many unknown keys are reported.
const maxUnknownKeys = 20

// parse decodes data. It reports false when decoding could not finish; it
// reports true with errors recorded when only unknown keys were found.
func (c *checker) parse(data []byte) (*rawConfig, bool) {
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // a byte order mark some editors write
	if at := binaryAt(data); at >= 0 {
		line := 1 + bytes.Count(data[:at], []byte("\n"))
		col := at - bytes.LastIndexByte(data[:at], '\n')
		c.add(&Error{File: c.file, Line: line, Column: col, Msg: fmt.Sprintf(
			"not a YAML config: byte %d is binary data (%s); give the path of the .yaml file", at, binaryWhat(data[at:]))})
		return nil, false
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		c.libraryError(err)
		return nil, false
	}
	c.ast = f

	var docs []*ast.DocumentNode
	for _, d := range f.Docs {
		if d.Body != nil {
			docs = append(docs, d)
		}
	}
	if len(docs) == 0 {
		c.add(&Error{File: c.file, Line: 1, Column: 1, Msg: "config is empty"})
		return nil, false
	}
	if len(docs) > 1 {
		tk := docs[1].Start
		if tk == nil {
			tk = startToken(docs[1].Body)
		}
		c.add(&Error{File: c.file, Line: tk.Position.Line, Column: tk.Position.Column,
			Msg: "found a second YAML document; the config must be a single document"})
		return nil, false
	}
	body := docs[0].Body
	for {
		if t, ok := body.(*ast.TagNode); ok {
			body = t.Value
			continue
		}
		if a, ok := body.(*ast.AnchorNode); ok {
			body = a.Value
			continue
		}
		break
	}
	switch body.Type() {
	case ast.MappingType, ast.MappingValueType:
	case ast.NullType:
		c.add(&Error{File: c.file, Line: 1, Column: 1, Msg: "config is empty"})
		return nil, false
	default:
		tk := startToken(body)
		c.add(&Error{File: c.file, Line: tk.Position.Line, Column: tk.Position.Column,
			Msg: fmt.Sprintf("config must be a mapping of keys to values, got %s", describeNode(body))})
		return nil, false
	}

	// Decode strictly. The library stops at the first unknown key, so decode
	// again, allowing the keys already found, until every one is known.
	var allowed []string
	for range maxUnknownKeys {
		raw := new(rawConfig)
		err := yaml.NodeToValue(body, raw, yaml.Strict(), yaml.AllowFieldPrefixes(allowed...))
		var unknown *yaml.UnknownFieldError
		switch {
		case err == nil:
			return raw, true
		case errors.As(err, &unknown) && unknown.Token != nil:
			c.unknownKey(unknown.Token)
			allowed = append(allowed, unknown.Token.Value)
		default:
			c.libraryError(err)
			return nil, false
		}
	}
	raw := new(rawConfig)
	if err := yaml.NodeToValue(body, raw); err != nil {
		c.libraryError(err)
		return nil, false
	}
	return raw, true
}

// libraryError records an error from the YAML library at its token.
func (c *checker) libraryError(err error) {
	e := &Error{File: c.file, Msg: err.Error()}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e.Msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
			if n := c.nodeOf(tk); n != nil {
				e.Field = displayPath(n.GetPath())
			}
		}
	}
	c.add(e)
}

// unknownKey records an unknown key, listing the keys its mapping accepts.
func (c *checker) unknownKey(tk *token.Token) {
	e := &Error{File: c.file, Line: tk.Position.Line, Column: tk.Position.Column,
		Msg: fmt.Sprintf("unknown key %q", tk.Value)}
	parent := c.mappingWithKey(tk)
	if parent == nil {
		c.add(e)
		return
	}
	e.Field = fieldPath(nil).key(tk.Value).String()
	if p := displayPath(parent.GetPath()); p != "" {
		e.Field = p + "." + e.Field
	}
	if keys := knownKeys(parent.GetPath()); len(keys) > 0 {
		e.Msg = fmt.Sprintf("unknown key (valid keys here: %s)", strings.Join(keys, ", "))
	}
	c.add(e)
}

// nodeOf returns the first node of the file that starts at tk.
func (c *checker) nodeOf(tk *token.Token) ast.Node {
	if c.ast == nil {
		return nil
	}
	var found ast.Node
	for _, d := range c.ast.Docs {
		ast.Walk(visitFunc(func(n ast.Node) bool {
			if found == nil && n.GetToken() == tk {
				found = n
			}
			return found == nil
		}), d)
	}
	return found
}

// mappingWithKey returns the mapping that has the key token tk.
func (c *checker) mappingWithKey(tk *token.Token) ast.Node {
	if c.ast == nil {
		return nil
	}
	var found ast.Node
	for _, d := range c.ast.Docs {
		ast.Walk(visitFunc(func(n ast.Node) bool {
			if found != nil {
				return false
			}
			if m, ok := n.(*ast.MappingNode); ok {
				for _, v := range m.Values {
					if v.Key.GetToken() == tk {
						found = m
					}
				}
			}
			return found == nil
		}), d)
	}
	return found
}

type visitFunc func(ast.Node) bool

func (f visitFunc) Visit(n ast.Node) ast.Visitor {
	if f(n) {
		return f
	}
	return nil
}

// displayPath turns a library path ("$.regions[0].name") into a field path
// ("regions[0].name").
func displayPath(p string) string {
	p = strings.TrimPrefix(p, "$")
	return strings.TrimPrefix(p, ".")
}

// knownKeys returns the keys accepted by the mapping at the library path p,
// which holds only struct keys and list indexes.
func knownKeys(p string) []string {
	t := reflect.TypeFor[rawConfig]()
	p = displayPath(p)
	for p != "" {
		var name string
		name, p, _ = strings.Cut(p, ".")
		name, _, _ = strings.Cut(name, "[")
		f, ok := fieldByKey(unwrapType(t), name)
		if !ok {
			return nil
		}
		t = f
	}
	t = unwrapType(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for f := range t.Fields() {
		keys = append(keys, f.Tag.Get("yaml"))
	}
	return keys
}

// unwrapType strips opt and slices off t.
func unwrapType(t reflect.Type) reflect.Type {
	for {
		if w, ok := reflect.Zero(t).Interface().(wrapper); ok {
			t = w.elemType()
			continue
		}
		if t.Kind() == reflect.Slice {
			t = t.Elem()
			continue
		}
		return t
	}
}

func fieldByKey(t reflect.Type, key string) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	i := slices.IndexFunc(slices.Collect(t.Fields()), func(f reflect.StructField) bool {
		return f.Tag.Get("yaml") == key
	})
	if i < 0 {
		return nil, false
	}
	return t.Field(i).Type, true
}

// describeNode names the kind of a node for messages.
func describeNode(n ast.Node) string {
	switch n.Type() {
	case ast.SequenceType:
		return "a list"
	case ast.MappingType, ast.MappingValueType:
		return "a mapping"
	}
	return fmt.Sprintf("the value %q", n.String())
}

// binaryAt returns the offset of the first byte that no text file holds (a
// NUL, another control byte but tab and line ends, or invalid UTF-8), or -1.
func binaryAt(data []byte) int {
	for i := 0; i < len(data); {
		b := data[i]
		if b < 0x20 && b != '\t' && b != '\n' && b != '\r' || b == 0x7f {
			return i
		}
		if b < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// binaryWhat names the byte at the start of b.
func binaryWhat(b []byte) string {
	if b[0] < utf8.RuneSelf {
		return fmt.Sprintf("0x%02x", b[0])
	}
	return fmt.Sprintf("0x%02x, not UTF-8", b[0])
}
