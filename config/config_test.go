package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/certs/certstest"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func headerNames(hs []Header) []string {
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = h.Name
	}
	return names
}

func backendURLs(bs []Backend) []string {
	urls := make([]string, len(bs))
	for i, b := range bs {
		urls[i] = b.URL.String()
	}
	return urls
}

func TestLoadExample(t *testing.T) {
	cfg, err := Load("testdata/example.yaml")
	require.NoError(t, err)

	assert.Equal(t, "testdata/example.yaml", cfg.File)
	assert.Equal(t, "127.0.0.1:8080", cfg.Listen)
	assert.Equal(t, "127.0.0.1:9090", cfg.Admin.Listen)
	assert.True(t, cfg.AccessLog)

	assert.Equal(t, "", cfg.GeoIP.Database)
	assert.Equal(t, prefixes("127.0.0.1/32", "::1/128"), cfg.GeoIP.TrustedProxies)
	assert.Equal(t, LatLon{Lat: 40.71, Lon: -74.01}, cfg.GeoIP.DefaultLocation)
	assert.Empty(t, cfg.GeoIP.Overrides)

	assert.Equal(t, HealthCheck{
		Path:               "/health",
		Interval:           time.Second,
		Timeout:            500 * time.Millisecond,
		HealthyThreshold:   2,
		UnhealthyThreshold: 2,
	}, cfg.HealthCheck)

	// Defaults.
	assert.Equal(t, []string{"X-City", "X-Country", "X-Geoproxy-Nearest-Region"}, headerNames(cfg.Proxy.RequestHeaders))
	assert.Equal(t, []Part{{Var: VarCity}}, cfg.Proxy.RequestHeaders[0].Template.Parts)
	assert.Equal(t, []Part{{Var: VarCountry}}, cfg.Proxy.RequestHeaders[1].Template.Parts)
	assert.Equal(t, []Part{{Var: VarNearestRegion}}, cfg.Proxy.RequestHeaders[2].Template.Parts)
	assert.Equal(t, "X-Geoproxy-Region", cfg.Proxy.RegionHeader)
	assert.Equal(t, 3, cfg.Proxy.MaxAttempts)
	assert.Equal(t, 2*time.Second, cfg.Proxy.DialTimeout)
	assert.Equal(t, 60*time.Second, cfg.Proxy.ResponseHeaderTimeout)
	assert.Zero(t, cfg.Proxy.EventLoops, "automatic")
	assert.True(t, cfg.Proxy.EventLoopsWithTLSBackends)

	require.Len(t, cfg.Regions, 3)
	assert.Equal(t, "us-east", cfg.Regions[0].Name)
	assert.Equal(t, LatLon{Lat: 33.84, Lon: -81.16}, cfg.Regions[0].Location)
	assert.Equal(t, []string{"http://127.0.0.1:9101"}, backendURLs(cfg.Regions[0].Backends))
	assert.Equal(t, 1, cfg.Regions[0].Backends[0].Weight)
	assert.Equal(t, "us-west", cfg.Regions[1].Name)
	assert.Equal(t, LatLon{Lat: 45.59, Lon: -121.18}, cfg.Regions[1].Location)
	assert.Equal(t, "europe-west", cfg.Regions[2].Name)
	assert.Equal(t, LatLon{Lat: 50.45, Lon: 3.82}, cfg.Regions[2].Location)
	assert.Equal(t, []string{"http://127.0.0.1:9103", "http://127.0.0.1:9104"}, backendURLs(cfg.Regions[2].Backends))
	assert.Equal(t, 2, cfg.Regions[2].Backends[0].Weight)
	assert.Equal(t, 1, cfg.Regions[2].Backends[1].Weight)
}

// loadFull loads testdata/full.yaml, its certificate files
// (/etc/geoproxy/tls/...) made in a temporary directory.
func loadFull(t *testing.T) *Config {
	t.Helper()
	data, err := os.ReadFile("testdata/full.yaml")
	require.NoError(t, err)
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	for _, name := range []string{"movr.example.com", "default"} {
		ca.WritePair(t, dir, name, x509.ExtKeyUsageServerAuth, name)
	}
	path := filepath.Join(dir, "full.yaml")
	require.NoError(t, os.WriteFile(path, bytes.ReplaceAll(data, []byte("/etc/geoproxy/tls/"), []byte(dir+"/")), 0o600))
	cfg, err := Load(path)
	require.NoError(t, err)
	return cfg
}

func TestLoadFull(t *testing.T) {
	cfg := loadFull(t)

	assert.Equal(t, "0.0.0.0:8080", cfg.Listen)
	assert.Equal(t, "127.0.0.1:9091", cfg.Admin.Listen)
	dir := filepath.Dir(cfg.File)
	assert.Equal(t, TLS{
		Listen: "0.0.0.0:8443",
		Certificates: []CertPair{
			{Cert: dir + "/movr.example.com.crt", Key: dir + "/movr.example.com.key"},
			{Cert: dir + "/default.crt", Key: dir + "/default.key"},
		},
		ACME: ACME{Domains: []string{"movr.example.com", "eu.movr.example.com"}, Email: "ops@example.com",
			Storage: "/var/lib/geoproxy/acme"},
		RedirectHTTP: true,
		RedirectPort: 443,
		MinVersion:   tls.VersionTLS12,
	}, cfg.TLS)
	assert.True(t, cfg.ProxyProtocol)
	assert.Equal(t, ProtocolH2C, cfg.Regions[1].Backends[1].Protocol)
	assert.Equal(t, ProtocolHTTP1, cfg.Regions[0].Backends[0].Protocol)
	assert.False(t, cfg.AccessLog)
	assert.Equal(t, EngineNetHTTP, cfg.Engine)
	assert.True(t, cfg.Admin.Pprof)
	assert.Equal(t, "GEOPROXY_ADMIN_TOKEN", cfg.Admin.TokenEnv)

	assert.Equal(t, prefixes("10.0.0.0/8", "192.168.1.7/32", "::1/128"), cfg.GeoIP.TrustedProxies)
	assert.Equal(t, LatLon{Lat: 40.71, Lon: -74.01}, cfg.GeoIP.DefaultLocation)
	assert.Equal(t, []Override{
		{
			Prefix: netip.MustParsePrefix("198.51.100.0/24"),
			Location: OverrideLocation{Lat: 47.61, Lon: -122.33, Country: "US", Subdivision: "WA",
				City: "Seattle", Continent: "NA"},
		},
		{
			Prefix:   netip.MustParsePrefix("2001:db8::/32"),
			Location: OverrideLocation{Lat: 48.86, Lon: 2.35, Country: "FR", City: "Paris", Continent: "EU"},
		},
	}, cfg.GeoIP.Overrides)

	assert.Equal(t, HealthCheck{
		Path:               "/healthz",
		Interval:           5 * time.Second,
		Timeout:            2 * time.Second,
		HealthyThreshold:   3,
		UnhealthyThreshold: 4,
	}, cfg.HealthCheck)

	px := cfg.Proxy
	assert.Equal(t, []string{"X-City", "X-Client-Ip", "X-Client-Location", "X-Country", "X-Geo"}, headerNames(px.RequestHeaders))
	assert.Equal(t, Template{Raw: "{lat},{lon}", Parts: []Part{{Var: VarLat}, {Literal: ","}, {Var: VarLon}}},
		px.RequestHeaders[2].Template)
	assert.Equal(t, []Part{
		{Var: VarContinent}, {Literal: "/"}, {Var: VarCountry}, {Literal: "/"}, {Var: VarSubdivision},
		{Literal: " via "}, {Var: VarRegion}, {Literal: " {nearest: "}, {Var: VarNearestRegion}, {Literal: "}"},
	}, px.RequestHeaders[4].Template.Parts)
	assert.Equal(t, "X-Served-By", px.RegionHeader)
	assert.Equal(t, 2, px.MaxAttempts)
	assert.Equal(t, []int{503}, px.RetryOnStatus)
	assert.Equal(t, 500*time.Millisecond, px.DialTimeout)
	assert.Equal(t, 30*time.Second, px.ResponseHeaderTimeout)
	assert.Equal(t, 3, px.EventLoops)
	assert.False(t, px.EventLoopsWithTLSBackends)
	assert.Equal(t, Limits{RequestMemory: 256 << 20, MaxRequestBody: 8 << 20, HeadTimeout: 10 * time.Second,
		BodyTimeout: 30 * time.Second, IdleTimeout: 75 * time.Second, MaxHeaderBytes: 32 << 10, MaxConnections: 20000,
		MaxConnectionsPerClient: 64, RequestsPerSecondPerClient: 50, BurstPerClient: 100}, cfg.Limits)
	assert.Equal(t, Shutdown{DrainDelay: 10 * time.Second}, cfg.Shutdown)
	assert.Equal(t, Resilience{
		PassiveHealth: true, EjectAfterErrors: 3, EjectAfter5xx: 4,
		EjectStatuses: []int{500, 503}, EjectBelowSuccess: 0.6,
		SuccessWindow: 20 * time.Second, SuccessMinRequests: 50,
		EjectionTime: 10 * time.Second, MaxEjectionTime: 2 * time.Minute, MaxEjected: 0.34,
		RetryBudget: 0.25, RetryBudgetMin: 5,
		PerTryTimeout: 3 * time.Second, RequestTimeout: 15 * time.Second,
		FailbackHold: time.Minute, SlowStart: 20 * time.Second,
		DegradedBelow: 0.8, WhenAllDown: AllDownPanic,
	}, cfg.Resilience)

	assert.Equal(t, EdgeHeaders{Cloudflare: true, Country: "X-Edge-Country", LatLon: "X-Edge-LatLon"}, cfg.GeoIP.EdgeHeaders)
	assert.Equal(t, 25, cfg.Regions[0].Bias)
	assert.Equal(t, Capacity{MaxInFlight: 500, MaxRPS: 2000}, cfg.Regions[0].Capacity)
	assert.Equal(t, []Rule{
		{Name: "eu-stays-in-eu", Match: Match{Continents: []string{"EU"}, Countries: []string{"CH", "NO"}},
			Allow: []string{"europe-west"}, HasAllow: true, Fallback: []string{}},
		{Name: "canada-east", Match: Match{Countries: []string{"CA"}, Subdivisions: []string{"US-VT"}}, Prefer: []string{"us-east"}},
		{Name: "unlocated", Match: Match{Unknown: true, Networks: prefixes("192.0.2.0/24")},
			Allow: []string{"us-east"}, HasAllow: true, Fallback: []string{"europe-west"}},
	}, cfg.Rules)

	assert.Equal(t, Affinity{Regions: []string{"europe-west"}, Cookie: Cookie{Name: "movr_region", TTL: 30 * time.Minute,
		Path: "/app", Domain: "movr.example.com", Secure: true, HTTPOnly: true, SameSite: "strict"}}, cfg.Affinity)

	require.Len(t, cfg.Regions, 2)
	assert.Equal(t, []string{"http://10.1.0.1:8000", "https://us-east-2.example.com/app"}, backendURLs(cfg.Regions[0].Backends))
	assert.Equal(t, 3, cfg.Regions[0].Backends[0].Weight)
	assert.Equal(t, 1, cfg.Regions[0].Backends[1].Weight)
	assert.Equal(t, BackendTLS{CAFile: "/etc/geoproxy/backend-ca.pem", ServerName: "app.internal",
		CertFile: "/etc/geoproxy/client.pem", KeyFile: "/etc/geoproxy/client.key"}, cfg.Regions[0].Backends[1].TLS)
	assert.Equal(t, BackendTLS{}, cfg.Regions[0].Backends[0].TLS)
	assert.Equal(t, "europe-west", cfg.Regions[1].Name)
}

// minimal is the smallest valid config; its lines are 1 to 5.
const minimal = `regions:
  - name: a
    location: {lat: 1, lon: 2}
    backends:
      - url: http://127.0.0.1:1
`

func TestDefaults(t *testing.T) {
	cfg, err := Parse("min.yaml", []byte(minimal))
	require.NoError(t, err)
	assert.Equal(t, &Config{
		File:   "min.yaml",
		Listen: "127.0.0.1:8080",
		Admin:  Admin{Listen: "127.0.0.1:9090"},
		GeoIP:  GeoIP{DefaultLocation: LatLon{Lat: 1, Lon: 2}},
		HealthCheck: HealthCheck{Path: "/health", Interval: 2 * time.Second, Timeout: time.Second,
			HealthyThreshold: 2, UnhealthyThreshold: 2},
		Proxy: Proxy{
			RequestHeaders: []Header{
				{Name: "X-City", Template: Template{Raw: "{city}", Parts: []Part{{Var: VarCity}}}},
				{Name: "X-Country", Template: Template{Raw: "{country}", Parts: []Part{{Var: VarCountry}}}},
				{Name: "X-Geoproxy-Nearest-Region", Template: Template{Raw: "{nearest_region}", Parts: []Part{{Var: VarNearestRegion}}}},
			},
			RegionHeader:  "X-Geoproxy-Region",
			MaxAttempts:   3,
			RetryOnStatus: []int{502, 503, 504},
			DialTimeout:   2 * time.Second,

			ResponseHeaderTimeout:     60 * time.Second,
			EventLoopsWithTLSBackends: true,
		},
		Limits: Limits{RequestMemory: 128 << 20, MaxRequestBody: 32 << 20, HeadTimeout: time.Minute, BodyTimeout: time.Minute,
			IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10, BurstPerClient: 1},
		TLS:      TLS{MinVersion: tls.VersionTLS12},
		Shutdown: Shutdown{DrainDelay: 5 * time.Second},
		Resilience: Resilience{
			PassiveHealth: true, EjectAfterErrors: 5, EjectAfter5xx: 5,
			EjectStatuses: []int{500, 502, 503, 504}, EjectBelowSuccess: 0.5,
			SuccessWindow: 10 * time.Second, SuccessMinRequests: 20,
			EjectionTime: 30 * time.Second, MaxEjectionTime: 5 * time.Minute, MaxEjected: 0.5,
			RetryBudget: 0.2, RetryBudgetMin: 10,
			PerTryTimeout: 10 * time.Second, RequestTimeout: 30 * time.Second,
			FailbackHold: 30 * time.Second, SlowStart: 30 * time.Second,
			DegradedBelow: 0.72, WhenAllDown: AllDownReject,
		},
		Affinity:  Affinity{Cookie: Cookie{Name: "geoproxy_affinity", TTL: time.Hour, Path: "/", HTTPOnly: true, SameSite: "lax"}},
		AccessLog: true,
		Engine:    EngineNative,
		Regions: []Region{{Name: "a", Location: LatLon{Lat: 1, Lon: 2},
			Backends: []Backend{{URL: cfg.Regions[0].Backends[0].URL, Weight: 1, Protocol: ProtocolHTTP1}}}},
	}, cfg)
	assert.Equal(t, "http://127.0.0.1:1", cfg.Regions[0].Backends[0].URL.String())
}

func TestExplicitValuesOverrideDefaults(t *testing.T) {
	t.Run("empty request_headers and region_header", func(t *testing.T) {
		cfg, err := Parse("x.yaml", []byte("proxy:\n  request_headers: {}\n  region_header: \"\"\n"+minimal))
		require.NoError(t, err)
		assert.NotNil(t, cfg.Proxy.RequestHeaders)
		assert.Empty(t, cfg.Proxy.RequestHeaders)
		assert.Equal(t, "", cfg.Proxy.RegionHeader)
	})
	t.Run("null is absent", func(t *testing.T) {
		cfg, err := Parse("x.yaml", []byte("listen:\nadmin: ~\nproxy:\n  request_headers:\n"+minimal))
		require.NoError(t, err)
		assert.Equal(t, "127.0.0.1:8080", cfg.Listen)
		assert.Equal(t, "127.0.0.1:9090", cfg.Admin.Listen)
		assert.Len(t, cfg.Proxy.RequestHeaders, 3)
	})
	t.Run("zero response_header_timeout", func(t *testing.T) {
		cfg, err := Parse("x.yaml", []byte("proxy: {response_header_timeout: 0, max_attempts: 1}\n"+minimal))
		require.NoError(t, err)
		assert.Equal(t, time.Duration(0), cfg.Proxy.ResponseHeaderTimeout)
		assert.Equal(t, 1, cfg.Proxy.MaxAttempts)
	})
	t.Run("both listeners on port 0", func(t *testing.T) {
		_, err := Parse("x.yaml", []byte("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n"+minimal))
		require.NoError(t, err)
	})
	t.Run("headers sorted by canonical name", func(t *testing.T) {
		cfg, err := Parse("x.yaml", []byte("proxy:\n  request_headers: {x-b: \"b\", X-A: \"{{a}}\", x-c-d: \"{client_ip}\"}\n"+minimal))
		require.NoError(t, err)
		assert.Equal(t, []string{"X-A", "X-B", "X-C-D"}, headerNames(cfg.Proxy.RequestHeaders))
		assert.Equal(t, []Part{{Literal: "{a}"}}, cfg.Proxy.RequestHeaders[0].Template.Parts)
	})
}

func TestBackendURLNormalised(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:1":            "http://127.0.0.1:1",
		"HTTP://Example.COM:80/":        "http://example.com",
		"https://example.com:443/api/":  "https://example.com/api",
		"https://example.com:8443/a/b":  "https://example.com:8443/a/b",
		"http://[::1]:9000":             "http://[::1]:9000",
		"http://[2001:DB8::1]/":         "http://[2001:db8::1]",
		"http://example.com/a%2Fb/":     "http://example.com/a%2Fb",
		"http://example.com/with space": "http://example.com/with%20space",
	} {
		u, err := parseBackendURL(in)
		if assert.NoError(t, err, in) {
			assert.Equal(t, want, u.String(), in)
		}
	}
}

func TestBroken(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		// Parse errors from the YAML library.
		{"empty file", "", []string{"bad.yaml:1:1: config is empty"}},
		{"only comments", "# nothing here\n", []string{"bad.yaml:1:1: config is empty"}},
		{"null document", "~\n", []string{"bad.yaml:1:1: config is empty"}},
		{"not a mapping", "- a\n- b\n", []string{"bad.yaml:1:1: config must be a mapping", "got a list"}},
		{"scalar document", "hello\n", []string{"bad.yaml:1:1: config must be a mapping", `"hello"`}},
		{"two documents", minimal + "---\nlisten: x\n", []string{"bad.yaml:6:1:", "single document"}},
		{"syntax error", "listen: [\n", []string{"bad.yaml:1:9:", "']' not found"}},
		{"duplicate key", "listen: a:1\nlisten: b:1\n", []string{"bad.yaml:2:1:", `"listen" already defined`}},
		{"unknown top-level key", "lisen: 127.0.0.1:80\n" + minimal,
			[]string{"bad.yaml:1:1: lisen: unknown key (valid keys here: listen, admin, geoip"}},
		{"unknown nested key", minimal + "        wieght: 2\n",
			[]string{"bad.yaml:6:9: regions[0].backends[0].wieght: unknown key (valid keys here: url, weight, tls, protocol)"}},
		{"unknown key in flow mapping", "geoip: {default_location: {lat: 1, lon: 2, alt: 3}}\n" + minimal,
			[]string{"bad.yaml:1:44: geoip.default_location.alt: unknown key (valid keys here: lat, lon)"}},

		// Wrong types.
		{"interval not a duration", "health_check:\n  interval: fast\n" + minimal,
			[]string{"bad.yaml:2:13: health_check.interval: invalid duration \"fast\""}},
		{"duration without unit", "proxy:\n  dial_timeout: 5\n" + minimal,
			[]string{"bad.yaml:2:17: proxy.dial_timeout: expected a duration with a unit", "got 5"}},
		{"lat not a number", strings.Replace(minimal, "lat: 1", "lat: north", 1),
			[]string{"bad.yaml:3:21: regions[0].location.lat: expected a number, got \"north\""}},
		{"weight not whole", minimal + "        weight: 1.5\n",
			[]string{"bad.yaml:6:17: regions[0].backends[0].weight: expected a whole number, got 1.5"}},
		{"unknown engine", "engine: turbo\n" + minimal,
			[]string{`bad.yaml:1:9: engine: must be "native" or "nethttp", got "turbo"`}},
		{"retired engine", "engine: fasthttp\n" + minimal,
			[]string{`bad.yaml:1:9: engine: "fasthttp" is no longer available: use "native" (the default), geoproxy's own HTTP/1.1 engine, which is faster`}},
		{"access_log yes", "access_log: yes\n" + minimal,
			[]string{"bad.yaml:1:13: access_log: expected true or false, got \"yes\""}},
		{"regions not a list", "regions: us-east\n",
			[]string{"bad.yaml:1:10: regions: expected a list, got \"us-east\""}},
		{"location not a mapping", strings.Replace(minimal, "{lat: 1, lon: 2}", "[1, 2]", 1),
			[]string{"bad.yaml:3:15: regions[0].location: expected a mapping, got a list"}},
		{"listen is a list", "listen: [a]\n" + minimal,
			[]string{"bad.yaml:1:9: listen: expected a string, got a list"}},
		{"region entry not a mapping", "regions:\n  - us-east\n",
			[]string{"bad.yaml:2:5: regions[0]: expected a mapping, got \"us-east\""}},

		// URLs.
		{"bad scheme", strings.Replace(minimal, "http://127.0.0.1:1", "htp:/x", 1),
			[]string{`bad.yaml:5:14: regions[0].backends[0].url: invalid URL "htp:/x": scheme must be http or https`}},
		{"no host", strings.Replace(minimal, "http://127.0.0.1:1", "http:///path", 1),
			[]string{"bad.yaml:5:14: regions[0].backends[0].url:", "missing host"}},
		{"relative URL", strings.Replace(minimal, "http://127.0.0.1:1", "127.0.0.1:1", 1),
			[]string{"bad.yaml:5:14: regions[0].backends[0].url: invalid URL"}},
		{"query", strings.Replace(minimal, "http://127.0.0.1:1", "http://127.0.0.1:1/?a=b", 1),
			[]string{"bad.yaml:5:14: regions[0].backends[0].url:", "query is not allowed"}},
		{"fragment", strings.Replace(minimal, "http://127.0.0.1:1", "'http://127.0.0.1:1/#x'", 1),
			[]string{"bad.yaml:5:14: regions[0].backends[0].url:", "fragment is not allowed"}},
		{"credentials", strings.Replace(minimal, "http://127.0.0.1:1", "http://u:p@127.0.0.1:1", 1),
			[]string{"bad.yaml:5:14: regions[0].backends[0].url:", "credentials"}},
		{"bad port", strings.Replace(minimal, "http://127.0.0.1:1", "http://127.0.0.1:99999", 1),
			[]string{"bad.yaml:5:14: regions[0].backends[0].url:", "port"}},
		{"missing url", strings.Replace(minimal, "url: http://127.0.0.1:1", "weight: 2", 1),
			[]string{"bad.yaml:5:9: regions[0].backends[0].url: required"}},
		{"duplicate backend URL after normalisation", minimal + "  - name: b\n    location: {lat: 1, lon: 2}\n    backends:\n      - url: HTTP://127.0.0.1:1/\n",
			[]string{"bad.yaml:9:14: regions[1].backends[0].url: duplicate backend URL http://127.0.0.1:1 (also regions[0].backends[0].url)"}},

		// Regions.
		{"no regions", "listen: 127.0.0.1:8080\n",
			[]string{"bad.yaml:1:1: regions: at least one region is required"}},
		{"empty regions", "regions: []\n",
			[]string{"bad.yaml:1:10: regions: at least one region is required"}},
		{"duplicate region names", minimal + "  - name: a\n    location: {lat: 1, lon: 2}\n    backends:\n      - url: http://127.0.0.1:2\n",
			[]string{`bad.yaml:6:11: regions[1].name: duplicate region name "a" (also regions[0].name)`}},
		{"empty region name", strings.Replace(minimal, "name: a", `name: ""`, 1),
			[]string{"bad.yaml:2:11: regions[0].name: required"}},
		{"missing region name", strings.Replace(minimal, "  - name: a\n    location", "  - location", 1),
			[]string{"bad.yaml:2:5: regions[0].name: required"}},
		{"bad region name", strings.Replace(minimal, "name: a", "name: US-East", 1),
			[]string{`bad.yaml:2:11: regions[0].name: invalid region name "US-East"`}},
		{"region name starts with dash", strings.Replace(minimal, "name: a", "name: -a", 1),
			[]string{`bad.yaml:2:11: regions[0].name: invalid region name "-a"`}},
		{"lat out of range", strings.Replace(minimal, "lat: 1", "lat: 90.5", 1),
			[]string{"bad.yaml:3:21: regions[0].location.lat: latitude 90.5 is outside [-90, 90]"}},
		{"lon out of range", strings.Replace(minimal, "lon: 2", "lon: -180.01", 1),
			[]string{"bad.yaml:3:29: regions[0].location.lon: longitude -180.01 is outside [-180, 180]"}},
		{"lat NaN", strings.Replace(minimal, "lat: 1", "lat: .nan", 1),
			[]string{"bad.yaml:3:21: regions[0].location.lat: latitude NaN is outside"}},
		{"missing lon", strings.Replace(minimal, ", lon: 2", "", 1),
			[]string{"bad.yaml:3:15: regions[0].location.lon: required"}},
		{"missing location", strings.Replace(minimal, "    location: {lat: 1, lon: 2}\n", "", 1),
			[]string{"bad.yaml:2:5: regions[0].location: required"}},
		{"no backends", "regions:\n  - name: a\n    location: {lat: 1, lon: 2}\n    backends: []\n",
			[]string{"bad.yaml:4:15: regions[0].backends: a region needs at least one backend"}},
		{"backends absent", "regions:\n  - name: a\n    location: {lat: 1, lon: 2}\n",
			[]string{"bad.yaml:2:5: regions[0].backends: a region needs at least one backend"}},
		{"weight zero", minimal + "        weight: 0\n",
			[]string{"bad.yaml:6:17: regions[0].backends[0].weight: must be 1 to 1000, got 0"}},
		{"weight too big", minimal + "        weight: 1001\n",
			[]string{"bad.yaml:6:17: regions[0].backends[0].weight: must be 1 to 1000, got 1001"}},

		// Health check.
		{"zero interval", "health_check:\n  interval: 0s\n" + minimal,
			[]string{"bad.yaml:2:13: health_check.interval: must be positive, got 0s"}},
		{"zero threshold", "health_check:\n  healthy_threshold: 0\n  unhealthy_threshold: -1\n" + minimal,
			[]string{"bad.yaml:2:22: health_check.healthy_threshold: must be at least 1, got 0",
				"bad.yaml:3:24: health_check.unhealthy_threshold: must be at least 1, got -1"}},
		{"timeout not below interval", "health_check:\n  interval: 1s\n  timeout: 1s\n" + minimal,
			[]string{"bad.yaml:3:12: health_check.timeout: timeout 1s must be below interval 1s"}},
		{"default timeout not below interval", "health_check:\n  interval: 500ms\n" + minimal,
			[]string{"bad.yaml:2:13: health_check.interval: interval 500ms must be above timeout 1s (the default)"}},
		{"negative timeout", "health_check:\n  timeout: -1s\n" + minimal,
			[]string{"bad.yaml:2:12: health_check.timeout: must be positive, got -1s"}},
		{"health path without slash", "health_check: {path: health}\n" + minimal,
			[]string{`bad.yaml:1:22: health_check.path: path "health" must start with "/"`}},

		// GeoIP.
		{"bad trusted proxy", "geoip:\n  trusted_proxies: [10.0.0.0/8, 10.0.0/8]\n" + minimal,
			[]string{`bad.yaml:2:33: geoip.trusted_proxies[1]: invalid CIDR "10.0.0/8"`}},
		{"bad prefix length", "geoip:\n  trusted_proxies:\n    - 10.0.0.0/33\n" + minimal,
			[]string{`bad.yaml:3:7: geoip.trusted_proxies[0]: invalid CIDR "10.0.0.0/33"`}},
		{"bad override cidr", "geoip:\n  overrides:\n    - cidr: nope\n      location: {lat: 1, lon: 2}\n" + minimal,
			[]string{`bad.yaml:3:13: geoip.overrides[0].cidr: invalid CIDR "nope"`}},
		{"override without location", "geoip:\n  overrides:\n    - cidr: 192.0.2.1\n" + minimal,
			[]string{"bad.yaml:3:7: geoip.overrides[0].location: required"}},
		{"duplicate override", "geoip:\n  overrides:\n    - {cidr: 192.0.2.0/24, location: {lat: 1, lon: 2}}\n    - {cidr: 192.0.2.9/24, location: {lat: 1, lon: 2}}\n" + minimal,
			[]string{"bad.yaml:4:14: geoip.overrides[1].cidr: duplicate override for 192.0.2.0/24 (also geoip.overrides[0].cidr)"}},
		{"bad override country", "geoip:\n  overrides:\n    - {cidr: 192.0.2.0/24, location: {lat: 1, lon: 2, country: USA, continent: XX}}\n" + minimal,
			[]string{`bad.yaml:3:64: geoip.overrides[0].location.country: invalid country code "USA"`,
				`geoip.overrides[0].location.continent: invalid continent code "XX"`}},
		{"default location out of range", "geoip:\n  default_location: {lat: 1, lon: 200}\n" + minimal,
			[]string{"bad.yaml:2:35: geoip.default_location.lon: longitude 200 is outside [-180, 180]"}},

		// Proxy.
		{"max_attempts zero", "proxy:\n  max_attempts: 0\n" + minimal,
			[]string{"bad.yaml:2:17: proxy.max_attempts: must be 1 to 10, got 0"}},
		{"max_attempts too many", "proxy:\n  max_attempts: 11\n" + minimal,
			[]string{"bad.yaml:2:17: proxy.max_attempts: must be 1 to 10, got 11"}},
		{"retry_on_status not 5xx", "proxy:\n  retry_on_status: [503, 404]\n" + minimal,
			[]string{"bad.yaml:2:26: proxy.retry_on_status[1]: must be a 5xx status code, got 404"}},
		{"retry_on_status twice", "proxy:\n  retry_on_status: [503, 503]\n" + minimal,
			[]string{"bad.yaml:2:26: proxy.retry_on_status[1]: status 503 is listed twice"}},
		{"retry_on_status not a list", "proxy:\n  retry_on_status: 503\n" + minimal,
			[]string{"bad.yaml:2:20: proxy.retry_on_status: expected a list"}},
		{"dial_timeout zero", "proxy:\n  dial_timeout: 0s\n" + minimal,
			[]string{"bad.yaml:2:17: proxy.dial_timeout: must be positive"}},
		{"negative response_header_timeout", "proxy:\n  response_header_timeout: -1s\n" + minimal,
			[]string{"bad.yaml:2:28: proxy.response_header_timeout: must not be negative"}},
		{"event_loops below -1", "proxy:\n  event_loops: -2\n" + minimal,
			[]string{"bad.yaml:2:16: proxy.event_loops: must be -1 (none), 0 (automatic) or 1 to 256, got -2"}},
		{"event_loops too many", "proxy:\n  event_loops: 257\n" + minimal,
			[]string{"bad.yaml:2:16: proxy.event_loops: must be -1 (none), 0 (automatic) or 1 to 256, got 257"}},
		{"event_loops not a number", "proxy:\n  event_loops: many\n" + minimal,
			[]string{"bad.yaml:2:16: proxy.event_loops:"}},
		{"event_loops_with_tls_backends not a bool", "proxy:\n  event_loops_with_tls_backends: 1\n" + minimal,
			[]string{"bad.yaml:2:34: proxy.event_loops_with_tls_backends: expected true or false, got 1"}},
		{"request_memory without a unit we know", "limits:\n  request_memory: 64MB\n" + minimal,
			[]string{`bad.yaml:2:19: limits.request_memory: invalid size "64MB": use a number with a unit (B, KiB, MiB, GiB), such as "64MiB"`}},
		{"request_memory too small", "limits:\n  request_memory: 1000\n" + minimal,
			[]string{"bad.yaml:2:19: limits.request_memory: must be at least 1MiB, got 1000 bytes"}},
		{"request_memory below the body limit", "limits:\n  request_memory: 16MiB\n" + minimal,
			[]string{"bad.yaml:2:19: limits.request_memory: 16777216 bytes is less than limits.max_request_body (33554432): such a body could never be held"}},
		{"max_request_body negative", "limits:\n  max_request_body: -1\n" + minimal,
			[]string{"bad.yaml:2:21: limits.max_request_body: expected a size"}},
		{"max_request_body tiny", "limits:\n  max_request_body: 1B\n" + minimal,
			[]string{"bad.yaml:2:21: limits.max_request_body: must be at least 1KiB, got 1 bytes"}},
		{"head_timeout too short", "limits:\n  head_timeout: 10ms\n" + minimal,
			[]string{"bad.yaml:2:17: limits.head_timeout: must be 100ms to 1h, got 10ms"}},
		{"max_header_bytes too large", "limits:\n  max_header_bytes: 2MiB\n" + minimal,
			[]string{"bad.yaml:2:21: limits.max_header_bytes: must be 1KiB to 1MiB, got 2097152 bytes"}},
		{"max_connections negative", "limits:\n  max_connections: -1\n" + minimal,
			[]string{"bad.yaml:2:20: limits.max_connections: must be 0 (unlimited) or more, got -1"}},
		{"burst_per_client zero", "limits:\n  requests_per_second_per_client: 5\n  burst_per_client: 0\n" + minimal,
			[]string{"bad.yaml:3:21: limits.burst_per_client: must be at least 1, got 0"}},
		{"tls without listen", "tls:\n  redirect_http: true\n" + minimal,
			[]string{"bad.yaml:2:3: tls.listen: required when certificates, acme or redirect_http is set: the TLS listener's address, such as :443"}},
		{"tls without certificates", "tls:\n  listen: :8443\n" + minimal,
			[]string{"bad.yaml:2:3: tls: give certificates or acme.domains: a TLS listener needs a certificate"}},
		{"tls certificate missing", "tls:\n  listen: :8443\n  certificates:\n    - {cert: /nonexistent/a.crt, key: /nonexistent/a.key}\n" + minimal,
			[]string{"bad.yaml:4:7: tls.certificates[0]: cannot use the certificate: open /nonexistent/a.crt: no such file or directory"}},
		{"tls certificate without key", "tls:\n  listen: :8443\n  certificates:\n    - {cert: a.crt}\n" + minimal,
			[]string{"bad.yaml:4:7: tls.certificates[0].key: required: the PEM key file"}},
		{"tls on the proxy's address", "listen: 127.0.0.1:8080\ntls:\n  listen: 127.0.0.1:8080\n  acme: {domains: [movr.example.com]}\n" + minimal,
			[]string{"bad.yaml:3:11: tls.listen: same address as listen (127.0.0.1:8080); the TLS listener needs its own"}},
		{"acme wildcard", "tls:\n  listen: :8443\n  acme: {domains: [\"*.example.com\"]}\n" + minimal,
			[]string{`bad.yaml:3:20: tls.acme.domains[0]: "*.example.com" is not a DNS name (a wildcard needs the DNS challenge, which geoproxy does not do)`}},
		{"acme ca not https", "tls:\n  listen: :8443\n  acme: {domains: [a.example.com], ca: \"http://ca/dir\"}\n" + minimal,
			[]string{`bad.yaml:3:40: tls.acme.ca: must be the https URL of an ACME directory, got "http://ca/dir"`}},
		{"min_version 1.1", "tls:\n  listen: :8443\n  min_version: \"1.1\"\n  acme: {domains: [a.example.com]}\n" + minimal,
			[]string{`bad.yaml:3:16: tls.min_version: must be "1.2" or "1.3", got "1.1"`}},
		{"proxy_protocol without trusted proxies", "proxy_protocol: true\n" + minimal,
			[]string{"bad.yaml:1:17: proxy_protocol: accepted only from geoip.trusted_proxies, which is empty: list the load balancer's addresses there"}},
		{"h2c with an https URL", strings.Replace(minimal, "http://127.0.0.1:1", "https://127.0.0.1:1\n        protocol: h2c", 1) + "engine: nethttp\n",
			[]string{"bad.yaml:6:19: regions[0].backends[0].protocol: h2c needs an http:// URL, got https://127.0.0.1:1"}},
		{"h2c on the native engine", strings.Replace(minimal, "backends:", "protocol: h2c\n    backends:", 1),
			[]string{"bad.yaml:4:15: regions[0].protocol: HTTP/2 backends are reached from Go's server (the nethttp engine, and the TLS listener's connections then): set engine: nethttp, or tls.redirect_http: true so that the native engine's plain listener proxies nothing"}},
		{"unknown protocol", strings.Replace(minimal, "backends:", "protocol: spdy\n    backends:", 1),
			[]string{`bad.yaml:4:15: regions[0].protocol: must be "http1", "h2c" or "h2", got "spdy"`}},
		{"backend URL without a scheme", strings.Replace(minimal, "http://127.0.0.1:1", "127.0.0.1:9101", 1),
			[]string{`bad.yaml:5:14: regions[0].backends[0].url: invalid URL "127.0.0.1:9101": missing scheme: write it as http://127.0.0.1:9101 (or https://)`}},
		{"backend host and port without a scheme", strings.Replace(minimal, "http://127.0.0.1:1", "localhost:9101", 1),
			[]string{`bad.yaml:5:14: regions[0].backends[0].url: invalid URL "localhost:9101": missing scheme: write it as http://localhost:9101 (or https://)`}},
		{"a binary file", "regions:\n\x00\x01\x02ELF\xff\xfe",
			[]string{"bad.yaml:2:1: not a YAML config: byte 9 is binary data (0x00); give the path of the .yaml file"}},
		{"latin-1, not UTF-8", "listen: caf\xe9\n" + minimal,
			[]string{"bad.yaml:1:12: not a YAML config: byte 11 is binary data (0xe9, not UTF-8); give the path of the .yaml file"}},
		{"drain_delay negative", "shutdown:\n  drain_delay: -1s\n" + minimal,
			[]string{"bad.yaml:2:16: shutdown.drain_delay: must be 0 to 5m, got -1s"}},
		{"limits unknown key", "limits:\n  body_memory: 1MiB\n" + minimal,
			[]string{"bad.yaml:2:3: limits.body_memory: unknown key"}},
		{"invalid header name", "proxy:\n  request_headers:\n    X City: \"{city}\"\n" + minimal,
			[]string{`bad.yaml:3:5: proxy.request_headers["X City"]: invalid header name "X City"`}},
		{"hop-by-hop header", "proxy:\n  request_headers:\n    X-City: \"{city}\"\n    connection: close\n" + minimal,
			[]string{"bad.yaml:4:5: proxy.request_headers.connection: header Connection cannot be set: it is hop-by-hop"}},
		{"host header", "proxy:\n  request_headers:\n    Host: example.com\n" + minimal,
			[]string{"bad.yaml:3:5: proxy.request_headers.Host: header Host cannot be set"}},
		{"header differing in case", "proxy:\n  request_headers:\n    x-city: a\n    X-City: b\n" + minimal,
			[]string{`bad.yaml:4:5: proxy.request_headers.X-City: duplicate header: "x-city" and "X-City" are the same header`}},
		{"unknown placeholder", "proxy:\n  request_headers:\n    X-City: \"{town}\"\n" + minimal,
			[]string{"bad.yaml:3:13: proxy.request_headers.X-City:", "unknown placeholder {town}"}},
		{"unbalanced open brace", "proxy:\n  request_headers:\n    X-City: \"{city\"\n" + minimal,
			[]string{"bad.yaml:3:13: proxy.request_headers.X-City:", `unbalanced "{"`}},
		{"unbalanced close brace", "proxy:\n  request_headers:\n    X-City: \"city}\"\n" + minimal,
			[]string{"bad.yaml:3:13: proxy.request_headers.X-City:", `unbalanced "}"`}},
		{"header without value", "proxy:\n  request_headers:\n    X-City:\n" + minimal,
			[]string{"bad.yaml:3:12: proxy.request_headers.X-City: missing value"}},
		{"control character in value", "proxy:\n  request_headers:\n    X-City: \"a\\nb\"\n" + minimal,
			[]string{"bad.yaml:3:13: proxy.request_headers.X-City:", "control character"}},
		{"bad region header", "proxy: {region_header: \"X Region\"}\n" + minimal,
			[]string{`bad.yaml:1:24: proxy.region_header: invalid header name "X Region"`}},
		{"hop-by-hop region header", "proxy: {region_header: upgrade}\n" + minimal,
			[]string{`bad.yaml:1:24: proxy.region_header: header Upgrade cannot be used`}},

		// Resilience.
		{"percentage without sign", "resilience:\n  retry_budget: 20\n" + minimal,
			[]string{`bad.yaml:2:17: resilience.retry_budget: expected a percentage such as "20%", got 20`}},
		{"percentage over 100", "resilience:\n  max_ejected: 120%\n" + minimal,
			[]string{`bad.yaml:2:16: resilience.max_ejected: invalid percentage "120%": want 0% to 100%`}},
		{"unknown all-down mode", "resilience: {when_all_down: fail}\n" + minimal,
			[]string{`bad.yaml:1:29: resilience.when_all_down: must be "reject" or "panic", got "fail"`}},
		{"request timeout below per-try", "resilience: {per_try_timeout: 5s, request_timeout: 2s}\n" + minimal,
			[]string{`resilience.request_timeout: 2s is less than resilience.per_try_timeout (5s)`}},
		{"max ejection below ejection", "resilience: {ejection_time: 1m, max_ejection_time: 10s}\n" + minimal,
			[]string{`resilience.max_ejection_time: 10s is less than resilience.ejection_time (1m0s)`}},
		{"eject status not 5xx", "resilience: {eject_statuses: [404]}\n" + minimal,
			[]string{`resilience.eject_statuses[0]: must be a 5xx status code, got 404`}},
		{"zero success window", "resilience: {success_window: 0s}\n" + minimal,
			[]string{`resilience.success_window: must be 1s to 1h, got 0s`}},

		// Rules.
		{"rule names an unknown region", "rules: [{name: r, match: {countries: [DE]}, allow: [mars]}]\n" + minimal,
			[]string{`bad.yaml:1:53: rules[0].allow[0]: unknown region "mars"`}},
		{"country code that does not exist", "rules: [{name: r, match: {countries: [DE, XX]}, allow: [a]}]\n" + minimal,
			[]string{`bad.yaml:1:43: rules[0].match.countries[1]: unknown country code "XX"`}},
		{"bad continent", "rules: [{name: r, match: {continents: [EUR]}, allow: [a]}]\n" + minimal,
			[]string{`rules[0].match.continents[0]: invalid continent code "EUR"`}},
		{"bad subdivision", "rules: [{name: r, match: {subdivisions: [CA]}, allow: [a]}]\n" + minimal,
			[]string{`rules[0].match.subdivisions[0]: invalid subdivision "CA": want an ISO 3166-2 code such as US-CA`}},
		{"rule shadowed by an earlier one", "rules:\n  - {name: eu, match: {continents: [EU]}, allow: [a]}\n  - {name: de, match: {countries: [de]}, prefer: [a]}\n" + minimal,
			[]string{`bad.yaml:3:23: rules[1].match: never applies: every client it matches matches rules[0] ("eu") first`}},
		{"empty match", "rules: [{name: r, match: {}, allow: [a]}]\n" + minimal,
			[]string{`rules[0].match: matches no client`}},
		{"fallback without allow", "rules: [{name: r, match: {unknown: true}, prefer: [a], fallback: [a]}]\n" + minimal,
			[]string{`rules[0].fallback: only with allow`}},
		{"prefer outside allow", "rules: [{name: r, match: {unknown: true}, allow: [a], prefer: [b]}]\n" + minimal +
			"  - {name: b, location: {lat: 0, lon: 0}, backends: [{url: http://127.0.0.1:2}]}\n",
			[]string{`rules[0].prefer[0]: region "b" is not in allow`}},
		{"bias out of range", strings.Replace(minimal, "    location:", "    bias: 100\n    location:", 1),
			[]string{`regions[0].bias: must be -99 to 99, got 100`}},
		{"edge headers without trusted proxies", "geoip: {edge_headers: [cloudflare]}\n" + minimal,
			[]string{`geoip.edge_headers: believed only from geoip.trusted_proxies, which is empty`}},
		{"unknown edge", "geoip: {trusted_proxies: [10.0.0.0/8], edge_headers: [akamai]}\n" + minimal,
			[]string{`geoip.edge_headers[0]: unknown edge "akamai"`}},

		// Affinity.
		{"affinity for an unknown region", "affinity: {regions: [b]}\n" + minimal,
			[]string{`bad.yaml:1:22: affinity.regions[0]: unknown region "b"`}},
		{"same_site none without secure", "affinity: {regions: [a], cookie: {same_site: none}}\n" + minimal,
			[]string{`affinity.cookie.same_site: none needs secure: true`}},
		{"bad cookie name", "affinity: {regions: [a], cookie: {name: \"a b\"}}\n" + minimal,
			[]string{`affinity.cookie.name: invalid cookie name "a b"`}},

		// Listeners.
		{"listen without port", "listen: localhost\n" + minimal,
			[]string{`bad.yaml:1:9: listen: invalid address "localhost": must be host:port`}},
		{"listen port out of range", "listen: 127.0.0.1:65536\n" + minimal,
			[]string{`bad.yaml:1:9: listen: invalid address "127.0.0.1:65536": port must be a number 0-65535`}},
		{"admin listen bad", "admin:\n  listen: 9090\n" + minimal,
			[]string{`bad.yaml:2:11: admin.listen: invalid address "9090"`}},
		{"admin same as listen", "listen: 127.0.0.1:8080\nadmin:\n  listen: 127.0.0.1:8080\n" + minimal,
			[]string{"bad.yaml:3:11: admin.listen: same address as listen (127.0.0.1:8080)"}},
		{"admin same as default listen", "admin:\n  listen: 127.0.0.1:8080\n" + minimal,
			[]string{"bad.yaml:2:11: admin.listen: same address as listen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("bad.yaml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Nil(t, cfg)
			var errs Errors
			require.ErrorAs(t, err, &errs)
			require.NotEmpty(t, errs)
			for _, want := range tt.want {
				assert.Contains(t, err.Error(), want)
			}
			for _, e := range errs {
				assert.Equal(t, "bad.yaml", e.File)
				assert.Positive(t, e.Line, e.Error())
				assert.Positive(t, e.Column, e.Error())
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	data := `listen: 127.0.0.1:8080
health_check:
  interval: fast
regions:
  - name: us-east
    location: {lat: 33.84, lon: -81.16}
    backends:
      - url: htp:/x
  - name: us-east
    location: {lat: 95, lon: 3.82}
    backends:
      - url: http://127.0.0.1:9104
        wieght: 2
`
	_, err := Parse("bad.yaml", []byte(data))
	require.Error(t, err)
	var errs Errors
	require.ErrorAs(t, err, &errs)
	want := []string{
		`bad.yaml:3:13: health_check.interval: invalid duration "fast": use a Go duration such as "1s" or "500ms"`,
		`bad.yaml:8:14: regions[0].backends[0].url: invalid URL "htp:/x": scheme must be http or https`,
		`bad.yaml:9:11: regions[1].name: duplicate region name "us-east" (also regions[0].name)`,
		`bad.yaml:10:21: regions[1].location.lat: latitude 95 is outside [-90, 90]`,
		`bad.yaml:13:9: regions[1].backends[0].wieght: unknown key (valid keys here: url, weight, tls, protocol)`,
	}
	assert.Equal(t, strings.Join(want, "\n"), err.Error())
	require.Len(t, errs, len(want))
	assert.Equal(t, &Error{File: "bad.yaml", Line: 8, Column: 14, Field: "regions[0].backends[0].url",
		Msg: `invalid URL "htp:/x": scheme must be http or https`}, errs[1])

	var one *Error
	require.ErrorAs(t, err, &one)
	assert.Equal(t, 3, one.Line)
}

func TestSeveralUnknownKeys(t *testing.T) {
	_, err := Parse("bad.yaml", []byte("a: 1\nb: 2\nhealth_check: {c: 3, d: 4}\n"+minimal))
	require.Error(t, err)
	var errs Errors
	require.ErrorAs(t, err, &errs)
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	assert.Equal(t, []string{"a", "b", "health_check.c", "health_check.d"}, fields)
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path)
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	var pe *fs.PathError
	require.True(t, errors.As(err, &pe))
	assert.Equal(t, path, pe.Path)
	assert.Contains(t, err.Error(), path)
}

func TestErrorFormat(t *testing.T) {
	e := &Error{File: "geoproxy.yaml", Line: 12, Column: 7, Field: "regions[1].backends[0].url",
		Msg: `invalid URL "htp:/x": scheme must be http or https`}
	assert.Equal(t, `geoproxy.yaml:12:7: regions[1].backends[0].url: invalid URL "htp:/x": scheme must be http or https`, e.Error())
	assert.Equal(t, "f.yaml: config is empty", (&Error{File: "f.yaml", Msg: "config is empty"}).Error())
	assert.Equal(t, "a.yaml:1:2: x\nb.yaml:3: f: y",
		Errors{{File: "a.yaml", Line: 1, Column: 2, Msg: "x"}, {File: "b.yaml", Line: 3, Field: "f", Msg: "y"}}.Error())
}

func TestFieldPath(t *testing.T) {
	p := fieldPath{}.key("regions").idx(1).key("backends").idx(0).key("url")
	assert.Equal(t, "regions[1].backends[0].url", p.String())
	assert.Equal(t, "$.regions[1].backends[0].url", p.yamlPath().String())
	assert.Equal(t, `proxy.request_headers["X.Y z"]`, fieldPath{}.key("proxy").key("request_headers").key("X.Y z").String())

	// Extending a path does not change it or its siblings.
	base := fieldPath{}.key("a")
	x, y := base.key("x"), base.key("y")
	assert.Equal(t, "a.x", x.String())
	assert.Equal(t, "a.y", y.String())
}

// FuzzParse checks that no input makes Parse panic, and that every rejected
// input gets positioned errors.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/example.yaml", "testdata/full.yaml"} {
		data, err := os.ReadFile(name)
		require.NoError(f, err)
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("regions: [~]\nproxy: {request_headers: {x: '{city'}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil {
			require.NotNil(t, cfg)
			require.NotEmpty(t, cfg.Regions)
			return
		}
		var errs Errors
		require.ErrorAs(t, err, &errs)
		require.NotEmpty(t, errs)
	})
}

// TestNoFollowOnErrors checks that a bad value is reported once, without
// further errors caused by it.
func TestNoFollowOnErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"empty region entry", "regions: [~]\n",
			[]string{"bad.yaml:1:11: regions[0]: empty entry; give name, location and backends"}},
		{"empty backend entry", "regions:\n  - name: a\n    location: {lat: 1, lon: 2}\n    backends:\n      -\n",
			[]string{"bad.yaml:5:9: regions[0].backends[0]: empty entry; give url"}},
		{"bad interval and timeout", "health_check: {interval: fast, timeout: 5s}\n" + minimal,
			[]string{`bad.yaml:1:26: health_check.interval: invalid duration "fast": use a Go duration such as "1s" or "500ms"`}},
		{"bad region location", strings.Replace(minimal, "lat: 1", "lat: 100", 1),
			[]string{"bad.yaml:3:21: regions[0].location.lat: latitude 100 is outside [-90, 90]"}},
		{"wrong shape location", strings.Replace(minimal, "{lat: 1, lon: 2}", "here", 1),
			[]string{`bad.yaml:3:15: regions[0].location: expected a mapping, got "here"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Equal(t, strings.Join(tt.want, "\n"), err.Error())
		})
	}
}

func TestByteOrderMark(t *testing.T) {
	cfg, err := Parse("bom.yaml", []byte("\ufefflisten: 127.0.0.1:1\n"+minimal))
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:1", cfg.Listen)
}

func TestBackendTLSInheritsTheRegions(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte(`regions:
  - name: a
    location: {lat: 1, lon: 2}
    tls: {ca_file: /ca.pem, server_name: app.internal}
    backends:
      - url: https://10.0.0.1
      - {url: https://10.0.0.2, tls: {server_name: other.internal, cert_file: /c.pem, key_file: /k.pem}}
`))
	require.NoError(t, err)
	assert.Equal(t, BackendTLS{CAFile: "/ca.pem", ServerName: "app.internal"}, cfg.Regions[0].Backends[0].TLS)
	assert.Equal(t, BackendTLS{CAFile: "/ca.pem", ServerName: "other.internal", CertFile: "/c.pem", KeyFile: "/k.pem"}, cfg.Regions[0].Backends[1].TLS)

	_, err = Parse("x.yaml", []byte(strings.Replace(minimal, "      - url: http://127.0.0.1:1", "      - {url: \"https://127.0.0.1:1\", tls: {cert_file: /c.pem}}", 1)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "regions[0].backends[0].tls: give cert_file and key_file together")
}

func TestMappedNetworksAreStoredAsIPv4(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte("rules: [{name: r, match: {networks: [\"::ffff:10.0.0.0/104\", \"::ffff:192.0.2.1\"]}, allow: [a]}]\n"+minimal))
	require.NoError(t, err)
	assert.Equal(t, prefixes("10.0.0.0/8", "192.0.2.1/32"), cfg.Rules[0].Match.Networks, "clients' addresses are unmapped: so are networks")
}

func TestRetryOnStatusEmptyTurnsItOff(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte("proxy: {retry_on_status: []}\n"+minimal))
	require.NoError(t, err)
	assert.Empty(t, cfg.Proxy.RetryOnStatus)
	assert.NotNil(t, cfg.Proxy.RetryOnStatus)
}

// Checks report what the file names outside itself at the field's line.
func TestChecksReportAtTheField(t *testing.T) {
	data := "geoip:\n  database: /nowhere/city.mmdb\n" + minimal
	_, err := ParseChecked("c.yaml", []byte(data), func(cfg *Config) (string, error) {
		return "geoip.database", fmt.Errorf("open %s: no such file", cfg.GeoIP.Database)
	})
	require.EqualError(t, err, "c.yaml:2:13: geoip.database: open /nowhere/city.mmdb: no such file")
	_, err = ParseChecked("c.yaml", []byte(data), func(*Config) (string, error) { return "", nil })
	require.NoError(t, err)
}
