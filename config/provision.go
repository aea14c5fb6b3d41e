package config

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults, documented on the Config fields.
const (
	defaultListen                = "127.0.0.1:8080"
	defaultAdminListen           = "127.0.0.1:9090"
	defaultHealthPath            = "/health"
	defaultHealthInterval        = 2 * time.Second
	defaultHealthTimeout         = time.Second
	defaultHealthyThreshold      = 2
	defaultUnhealthyThreshold    = 2
	defaultRegionHeader          = "X-Geoproxy-Region"
	defaultMaxAttempts           = 3
	defaultDialTimeout           = 2 * time.Second
	defaultRequestMemory         = 128 << 20
	defaultDrainDelay            = 5 * time.Second
	defaultMaxRequestBody        = 32 << 20
	defaultResponseHeaderTimeout = 60 * time.Second
	defaultWeight                = 1
)

// defaultRequestHeaders are set when proxy.request_headers is absent.
var defaultRequestHeaders = []struct{ name, value string }{
	{"X-City", "{city}"},
	{"X-Country", "{country}"},
	{"X-Geoproxy-Nearest-Region", "{nearest_region}"},
}

// provision converts raw to a Config: types, defaults and compiled values.
// Values that cannot be converted are reported and left at their default;
// validate skips fields that already have an error.
// defaultRetryOnStatus are the backend statuses retried by default.
var defaultRetryOnStatus = []int{502, 503, 504}

func (c *checker) provision(raw *rawConfig) *Config {
	root := fieldPath{}
	cfg := &Config{File: c.file}
	cfg.Listen = c.str(root.key("listen"), raw.Listen, defaultListen)
	cfg.AccessLog = c.bool(root.key("access_log"), raw.AccessLog, true)
	cfg.Engine = c.str(root.key("engine"), raw.Engine, EngineNative)
	switch cfg.Engine {
	case EngineNative, EngineNetHTTP:
	case "fasthttp":
		c.errorf(root.key("engine"), "%q is no longer available: use %q (the default), geoproxy's own HTTP/1.1 engine, which is faster", cfg.Engine, EngineNative)
	default:
		c.errorf(root.key("engine"), "must be %q or %q, got %q", EngineNative, EngineNetHTTP, cfg.Engine)
	}

	p := root.key("admin")
	admin, _ := composite(c, p, raw.Admin)
	cfg.Admin.Listen = c.str(p.key("listen"), admin.Listen, defaultAdminListen)
	cfg.Admin.Pprof = c.bool(p.key("pprof"), admin.Pprof, false)
	cfg.Admin.TokenFile = c.str(p.key("token_file"), admin.TokenFile, "")
	cfg.Admin.TokenEnv = c.str(p.key("token_env"), admin.TokenEnv, "")
	cfg.Admin.ProtectReads = c.bool(p.key("protect_reads"), admin.ProtectReads, false)
	if cfg.Admin.ProtectReads && cfg.Admin.TokenFile == "" && cfg.Admin.TokenEnv == "" {
		c.errorf(p.key("protect_reads"), "needs a token: set admin.token_file or admin.token_env")
	}
	if cfg.Admin.TokenFile != "" && cfg.Admin.TokenEnv != "" {
		c.errorf(p.key("token_env"), "give admin.token_file or admin.token_env, not both")
	}

	cfg.Regions = c.regions(root.key("regions"), raw.Regions)
	cfg.GeoIP = c.geoIP(root.key("geoip"), raw.GeoIP, cfg.Regions)
	cfg.HealthCheck = c.healthCheck(root.key("health_check"), raw.HealthCheck)
	cfg.Proxy = c.proxy(root.key("proxy"), raw.Proxy)
	p = root.key("limits")
	limits, _ := composite(c, p, raw.Limits)
	cfg.Limits.RequestMemory = c.size(p.key("request_memory"), limits.RequestMemory, defaultRequestMemory)
	cfg.Limits.MaxRequestBody = c.size(p.key("max_request_body"), limits.MaxRequestBody, defaultMaxRequestBody)
	c.clientLimits(p, limits, &cfg.Limits)
	cfg.TLS = c.tls(root.key("tls"), raw.TLS)
	cfg.ProxyProtocol = c.bool(root.key("proxy_protocol"), raw.ProxyProto, false)
	p = root.key("shutdown")
	shutdown, _ := composite(c, p, raw.Shutdown)
	cfg.Shutdown.DrainDelay = c.duration(p.key("drain_delay"), shutdown.DrainDelay, defaultDrainDelay)
	cfg.Resilience = c.resilience(root.key("resilience"), raw.Resilience)
	cfg.Rules = c.rules(root.key("rules"), raw.Rules)
	cfg.Affinity = c.affinity(root.key("affinity"), raw.Affinity)
	return cfg
}

func (c *checker) geoIP(p fieldPath, o opt[rawGeoIP], regions []Region) GeoIP {
	raw, _ := composite(c, p, o)
	g := GeoIP{Database: c.str(p.key("database"), raw.Database, "")}

	tp := p.key("trusted_proxies")
	if list, ok := composite(c, tp, raw.TrustedProxies); ok {
		for i, s := range list {
			if pfx, ok := c.prefix(tp.idx(i), s); ok {
				g.TrustedProxies = append(g.TrustedProxies, pfx)
			}
		}
	}

	dl := p.key("default_location")
	if loc, ok := composite(c, dl, raw.DefaultLocation); ok {
		g.DefaultLocation = c.latLon(dl, loc)
	} else if len(regions) > 0 {
		g.DefaultLocation = regions[0].Location
	}

	op := p.key("overrides")
	if list, ok := composite(c, op, raw.Overrides); ok {
		for i, item := range list {
			ip := op.idx(i)
			ro, ok := composite(c, ip, item)
			if !ok {
				c.errorf(ip, "empty entry; give cidr and location")
				continue
			}
			var o Override
			if !ro.CIDR.set {
				c.errorf(ip.key("cidr"), "required")
			} else if pfx, ok := c.prefix(ip.key("cidr"), ro.CIDR); ok {
				o.Prefix = pfx
			}
			lp := ip.key("location")
			if loc, ok := composite(c, lp, ro.Location); ok {
				o.Location = c.overrideLocation(lp, loc)
			} else {
				c.errorf(lp, "required") // dropped if the value had the wrong shape
			}
			g.Overrides = append(g.Overrides, o)
		}
	}
	g.EdgeHeaders = c.edgeHeaders(p.key("edge_headers"), raw.EdgeHeaders)
	return g
}

func (c *checker) latLon(p fieldPath, raw rawLatLon) LatLon {
	return LatLon{
		Lat: c.requiredFloat(p.key("lat"), raw.Lat),
		Lon: c.requiredFloat(p.key("lon"), raw.Lon),
	}
}

func (c *checker) overrideLocation(p fieldPath, raw rawOverrideLocation) OverrideLocation {
	return OverrideLocation{
		Lat:         c.requiredFloat(p.key("lat"), raw.Lat),
		Lon:         c.requiredFloat(p.key("lon"), raw.Lon),
		Country:     strings.ToUpper(c.str(p.key("country"), raw.Country, "")),
		Subdivision: c.str(p.key("subdivision"), raw.Subdivision, ""),
		City:        c.str(p.key("city"), raw.City, ""),
		Continent:   strings.ToUpper(c.str(p.key("continent"), raw.Continent, "")),
	}
}

func (c *checker) healthCheck(p fieldPath, o opt[rawHealthCheck]) HealthCheck {
	raw, _ := composite(c, p, o)
	return HealthCheck{
		Path:               c.str(p.key("path"), raw.Path, defaultHealthPath),
		Interval:           c.duration(p.key("interval"), raw.Interval, defaultHealthInterval),
		Timeout:            c.duration(p.key("timeout"), raw.Timeout, defaultHealthTimeout),
		HealthyThreshold:   c.int(p.key("healthy_threshold"), raw.HealthyThreshold, defaultHealthyThreshold),
		UnhealthyThreshold: c.int(p.key("unhealthy_threshold"), raw.UnhealthyThreshold, defaultUnhealthyThreshold),
	}
}

func (c *checker) proxy(p fieldPath, o opt[rawProxy]) Proxy {
	raw, _ := composite(c, p, o)
	px := Proxy{
		RegionHeader:          c.str(p.key("region_header"), raw.RegionHeader, defaultRegionHeader),
		MaxAttempts:           c.int(p.key("max_attempts"), raw.MaxAttempts, defaultMaxAttempts),
		DialTimeout:           c.duration(p.key("dial_timeout"), raw.DialTimeout, defaultDialTimeout),
		ResponseHeaderTimeout: c.duration(p.key("response_header_timeout"), raw.ResponseHeaderTimeout, defaultResponseHeaderTimeout),
		EventLoops:            c.int(p.key("event_loops"), raw.EventLoops, 0),

		EventLoopsWithTLSBackends: c.bool(p.key("event_loops_with_tls_backends"), raw.EventLoopsWithTLS, true),
	}
	px.RetryOnStatus = c.statuses(p.key("retry_on_status"), raw.RetryOnStatus, defaultRetryOnStatus)
	if px.RegionHeader != "" {
		rp := p.key("region_header")
		canon := textproto.CanonicalMIMEHeaderKey(px.RegionHeader)
		if err := checkHeaderName(px.RegionHeader); err != nil {
			c.errorf(rp, "%v", err)
		} else if why, bad := forbiddenRequestHeaders[canon]; bad && canon != "Host" {
			c.errorf(rp, "header %s cannot be used: %s", canon, why)
		}
		px.RegionHeader = canon
	}

	hp := p.key("request_headers")
	if raw.RequestHeaders.set || raw.RequestHeaders.wrong {
		headers, ok := composite(c, hp, raw.RequestHeaders)
		if !ok {
			return px
		}
		px.RequestHeaders = c.requestHeaders(hp, headers)
		return px
	}
	for _, h := range defaultRequestHeaders {
		t, err := parseTemplate(h.value)
		if err != nil {
			panic("config: bad default header template: " + err.Error())
		}
		px.RequestHeaders = append(px.RequestHeaders, Header{Name: h.name, Template: t})
	}
	return px
}

// requestHeaders compiles the given headers, sorted by canonical name.
func (c *checker) requestHeaders(p fieldPath, raw map[string]scalar) []Header {
	// File order, so that of two names differing only in case the second
	// is the duplicate.
	order := make(map[string]int)
	for i, k := range c.keysInOrder(p) {
		order[k] = i
	}
	names := slices.Collect(maps.Keys(raw))
	slices.SortFunc(names, func(a, b string) int {
		ia, oka := order[a]
		ib, okb := order[b]
		if !oka {
			ia = len(order)
		}
		if !okb {
			ib = len(order)
		}
		return cmp.Or(cmp.Compare(ia, ib), strings.Compare(a, b))
	})
	headers := []Header{} // present but empty means no headers, not the default
	seen := make(map[string]string)
	for _, name := range names {
		hp := p.key(name)
		if err := checkHeaderName(name); err != nil {
			c.keyErrorf(hp, "%v", err)
			continue
		}
		canon := textproto.CanonicalMIMEHeaderKey(name)
		if first, dup := seen[canon]; dup {
			c.keyErrorf(hp, "duplicate header: %q and %q are the same header", first, name)
			continue
		}
		seen[canon] = name
		if why, bad := forbiddenRequestHeaders[canon]; bad {
			c.keyErrorf(hp, "header %s cannot be set: %s", canon, why)
			continue
		}
		s := raw[name]
		if !s.set {
			c.errorf(hp, "missing value; give a template such as \"{city}\" or \"\"")
			continue
		}
		value := c.str(hp, s, "")
		t, err := parseTemplate(value)
		if err != nil {
			c.errorf(hp, "%v", err)
			continue
		}
		headers = append(headers, Header{Name: canon, Template: t})
	}
	slices.SortFunc(headers, func(a, b Header) int { return strings.Compare(a.Name, b.Name) })
	return headers
}

// forbiddenRequestHeaders cannot be set on proxied requests, with the reason.
var forbiddenRequestHeaders = map[string]string{
	"Connection":          "it is hop-by-hop",
	"Keep-Alive":          "it is hop-by-hop",
	"Proxy-Connection":    "it is hop-by-hop",
	"Proxy-Authenticate":  "it is hop-by-hop",
	"Proxy-Authorization": "it is hop-by-hop",
	"Te":                  "it is hop-by-hop",
	"Trailer":             "it is hop-by-hop",
	"Transfer-Encoding":   "it is hop-by-hop",
	"Upgrade":             "it is hop-by-hop",
	"Host":                "the backend URL decides it",
	"Content-Length":      "it is set from the body",
}

func (c *checker) regions(p fieldPath, o opt[[]opt[rawRegion]]) []Region {
	list, _ := composite(c, p, o)
	regions := make([]Region, 0, len(list))
	for i, item := range list {
		rp := p.idx(i)
		raw, ok := composite(c, rp, item)
		if !ok {
			c.errorf(rp, "empty entry; give name, location and backends")
			continue
		}
		r := Region{Name: c.str(rp.key("name"), raw.Name, "")}
		lp := rp.key("location")
		if loc, ok := composite(c, lp, raw.Location); ok {
			r.Location = c.latLon(lp, loc)
		} else {
			c.errorf(lp, "required") // dropped if the value had the wrong shape
		}
		r.Bias = c.int(rp.key("bias"), raw.Bias, 0)
		cp := rp.key("capacity")
		if capacity, ok := composite(c, cp, raw.Capacity); ok {
			r.Capacity.MaxInFlight = c.int(cp.key("max_in_flight"), capacity.MaxInFlight, 0)
			r.Capacity.MaxRPS = c.int(cp.key("max_rps"), capacity.MaxRPS, 0)
		}
		regionTLS := c.backendTLS(rp.key("tls"), raw.TLS, BackendTLS{})
		regionProtocol := c.str(rp.key("protocol"), raw.Protocol, ProtocolHTTP1)
		bp := rp.key("backends")
		backends, _ := composite(c, bp, raw.Backends)
		for j, item := range backends {
			if b, ok := c.backend(bp.idx(j), item, regionTLS, regionProtocol); ok {
				r.Backends = append(r.Backends, b)
			}
		}
		regions = append(regions, r)
	}
	return regions
}

// backend converts one backend, its tls block over its region's; ok is
// false when the entry is unusable.
func (c *checker) backend(p fieldPath, o opt[rawBackend], regionTLS BackendTLS, regionProtocol string) (b Backend, ok bool) {
	raw, ok := composite(c, p, o)
	if !ok {
		c.errorf(p, "empty entry; give url")
		return b, false
	}
	b.Weight = c.int(p.key("weight"), raw.Weight, defaultWeight)
	b.TLS = c.backendTLS(p.key("tls"), raw.TLS, regionTLS)
	b.Protocol = c.str(p.key("protocol"), raw.Protocol, regionProtocol)
	up := p.key("url")
	if !raw.URL.set {
		c.errorf(up, "required")
		return b, true
	}
	s := c.str(up, raw.URL, "")
	u, err := parseBackendURL(s)
	if err != nil {
		c.errorf(up, "invalid URL %q: %v", s, err)
		return b, true
	}
	b.URL = u
	return b, true
}

// parseBackendURL parses and normalises a backend base URL.
func parseBackendURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if !strings.Contains(s, "://") && (err != nil || u.Opaque != "" || u.Scheme == "") {
		// "127.0.0.1:9101", "localhost:9101", "backend/app"
		return nil, fmt.Errorf("missing scheme: write it as http://%s (or https://)", s)
	}
	if err != nil {
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return nil, err
	}
	u.Scheme = strings.ToLower(u.Scheme)
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("scheme must be http or https")
	case u.Opaque != "" || u.Host == "":
		return nil, fmt.Errorf("missing host; write it as %s://host:port", u.Scheme)
	case u.User != nil:
		return nil, fmt.Errorf("credentials are not allowed in a backend URL")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("a query is not allowed in a backend URL")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, fmt.Errorf("a fragment is not allowed in a backend URL")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" {
		return nil, fmt.Errorf("missing host; write it as %s://host:port", u.Scheme)
	}
	if strings.HasSuffix(u.Host, ":") {
		return nil, fmt.Errorf("empty port")
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("port must be 1-65535")
		}
	}
	if port == "80" && u.Scheme == "http" || port == "443" && u.Scheme == "https" {
		port = ""
	}
	if port != "" {
		u.Host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		u.Host = "[" + host + "]"
	} else {
		u.Host = host
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, nil
}

// prefix converts a CIDR or a bare address to a masked prefix.
func (c *checker) prefix(p fieldPath, s scalar) (netip.Prefix, bool) {
	text := c.str(p, s, "")
	if c.reported[p.String()] {
		return netip.Prefix{}, false
	}
	pfx, err := parsePrefix(text)
	if err != nil {
		c.errorf(p, "invalid CIDR %q: %v", text, err)
		return netip.Prefix{}, false
	}
	return pfx, true
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("want a network such as 10.0.0.0/8 or an address such as 192.0.2.1")
		}
		if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
			// Clients' addresses are unmapped: so is the network.
			pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
		}
		return pfx.Masked(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("want a network such as 10.0.0.0/8 or an address such as 192.0.2.1")
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("an IPv6 zone is not allowed")
	}
	addr = addr.Unmap()
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

// statuses reads a list of 5xx status codes, each once; def (cloned) when
// the key is absent. An empty list stays empty: the feature is off.
func (c *checker) statuses(p fieldPath, o opt[[]scalar], def []int) []int {
	list, ok := composite(c, p, o)
	if !ok {
		if o.wrong {
			return nil
		}
		return slices.Clone(def)
	}
	out := []int{}
	for i, v := range list {
		code := c.int(p.idx(i), v, 0)
		switch {
		case v.set && (code < 500 || code > 599):
			c.errorf(p.idx(i), "must be a 5xx status code, got %d", code)
		case slices.Contains(out, code):
			c.errorf(p.idx(i), "status %d is listed twice", code)
		case code != 0:
			out = append(out, code)
		}
	}
	return out
}

// composite returns the value of a mapping or list, reporting a value of the
// wrong shape. ok is false when there is no usable value.
func composite[T any](c *checker, p fieldPath, o opt[T]) (v T, ok bool) {
	if o.wrong {
		c.errorf(p, "expected %s, got %s", shapeOfType(reflect.TypeFor[T]()), describe(o.got, ""))
		return v, false
	}
	return o.v, o.set
}

// describe names a value for messages: its text for a scalar, its shape
// otherwise.
func describe(v any, text string) string {
	if s := shapeOfValue(v); s != shapeScalar {
		return s.String()
	}
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	if text != "" {
		return text
	}
	return fmt.Sprint(v)
}

// str returns a string value; other scalars are taken as written.
func (c *checker) str(p fieldPath, s scalar, def string) string {
	if !s.set {
		return def
	}
	if v, ok := s.v.(string); ok {
		return v
	}
	if shapeOfValue(s.v) != shapeScalar {
		c.errorf(p, "expected a string, got %s", describe(s.v, s.text))
		return def
	}
	return s.text
}

func (c *checker) bool(p fieldPath, s scalar, def bool) bool {
	if !s.set {
		return def
	}
	if v, ok := s.v.(bool); ok {
		return v
	}
	c.errorf(p, "expected true or false, got %s", describe(s.v, s.text))
	return def
}

// number returns a numeric value as a float64.
func number(v any) (float64, bool) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Float32, reflect.Float64:
		return rv.Float(), true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(rv.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return float64(rv.Uint()), true
	}
	return 0, false
}

func (c *checker) requiredFloat(p fieldPath, s scalar) float64 {
	if !s.set {
		c.errorf(p, "required")
		return 0
	}
	f, ok := number(s.v)
	if !ok {
		c.errorf(p, "expected a number, got %s", describe(s.v, s.text))
		return 0
	}
	return f
}

func (c *checker) int(p fieldPath, s scalar, def int) int {
	if !s.set {
		return def
	}
	f, ok := number(s.v)
	if !ok || f != math.Trunc(f) {
		c.errorf(p, "expected a whole number, got %s", describe(s.v, s.text))
		return def
	}
	if f < math.MinInt32 || f > math.MaxInt32 {
		c.errorf(p, "%s is out of range", s.text)
		return def
	}
	return int(f)
}

// size reads a number of bytes: a whole number, or a string with a unit
// (B, KiB, MiB, GiB), such as "64MiB".
func (c *checker) size(p fieldPath, s scalar, def int64) int64 {
	if !s.set {
		return def
	}
	if f, ok := number(s.v); ok {
		if f != math.Trunc(f) || f < 0 || f > 1<<50 {
			c.errorf(p, "expected a size such as \"64MiB\" or a whole number of bytes, got %s", s.text)
			return def
		}
		return int64(f)
	}
	if v, ok := s.v.(string); ok {
		if n, err := parseSize(v); err == nil {
			return n
		}
		c.errorf(p, "invalid size %q: use a number with a unit (B, KiB, MiB, GiB), such as \"64MiB\"", v)
		return def
	}
	c.errorf(p, "expected a size such as \"64MiB\", got %s", describe(s.v, s.text))
	return def
}

// parseSize parses "<whole number><unit>" with a binary unit.
func parseSize(v string) (int64, error) {
	v = strings.TrimSpace(v)
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	n, err := strconv.ParseInt(v[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: no number", v)
	}
	var unit int64
	switch strings.TrimSpace(v[i:]) {
	case "B", "":
		unit = 1
	case "KiB":
		unit = 1 << 10
	case "MiB":
		unit = 1 << 20
	case "GiB":
		unit = 1 << 30
	default:
		return 0, fmt.Errorf("size %q: unknown unit", v)
	}
	if n > (1<<50)/unit {
		return 0, fmt.Errorf("size %q: too large", v)
	}
	return n * unit, nil
}

func (c *checker) duration(p fieldPath, s scalar, def time.Duration) time.Duration {
	if !s.set {
		return def
	}
	if v, ok := s.v.(string); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			c.errorf(p, "invalid duration %q: use a Go duration such as \"1s\" or \"500ms\"", v)
			return def
		}
		return d
	}
	if f, ok := number(s.v); ok && f == 0 {
		return 0
	}
	c.errorf(p, "expected a duration with a unit, such as \"1s\" or \"500ms\", got %s", describe(s.v, s.text))
	return def
}
