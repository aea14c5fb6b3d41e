package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// validate checks ranges and the relations between values. A field that
// already has an error is not checked again.
func (c *checker) validate(cfg *Config) {
	root := fieldPath{}
	c.validateListen(root.key("listen"), cfg.Listen)
	ap := root.key("admin").key("listen")
	c.validateListen(ap, cfg.Admin.Listen)
	if cfg.Admin.Listen == cfg.Listen && !strings.HasSuffix(cfg.Listen, ":0") {
		c.errorf(ap, "same address as listen (%s); the admin listener needs its own", cfg.Listen)
	}

	c.validateGeoIP(root.key("geoip"), &cfg.GeoIP)
	c.validateHealthCheck(root.key("health_check"), &cfg.HealthCheck)
	c.validateProxy(root.key("proxy"), &cfg.Proxy)
	c.validateLimits(root.key("limits"), &cfg.Limits)
	c.validateClientLimits(root.key("limits"), &cfg.Limits)
	c.validateTLS(root.key("tls"), &cfg.TLS, cfg)
	if cfg.ProxyProtocol && len(cfg.GeoIP.TrustedProxies) == 0 {
		c.errorf(root.key("proxy_protocol"), "accepted only from geoip.trusted_proxies, which is empty: list the load balancer's addresses there")
	}
	if d := cfg.Shutdown.DrainDelay; d < 0 || d > 5*time.Minute {
		c.errorf(root.key("shutdown").key("drain_delay"), "must be 0 to 5m, got %s", d)
	}
	c.validateResilience(root.key("resilience"), &cfg.Resilience)
	c.validateRegions(root.key("regions"), cfg.Regions)
	c.validateProtocols(root.key("regions"), cfg)
	c.validateRules(root.key("rules"), cfg.Rules, cfg.Regions)
	c.validateAffinity(root.key("affinity"), &cfg.Affinity, cfg.Regions)
	if len(cfg.Regions) > MaxRegions {
		c.errorf(root.key("regions"), "%d regions: at most %d", len(cfg.Regions), MaxRegions)
	}
	for i, r := range cfg.Regions {
		rp := root.key("regions").idx(i)
		if r.Bias < -99 || r.Bias > 99 {
			c.errorf(rp.key("bias"), "must be -99 to 99, got %d", r.Bias)
		}
		if r.Capacity.MaxInFlight < 0 {
			c.errorf(rp.key("capacity").key("max_in_flight"), "must be 0 (unlimited) or more, got %d", r.Capacity.MaxInFlight)
		}
		if r.Capacity.MaxRPS < 0 {
			c.errorf(rp.key("capacity").key("max_rps"), "must be 0 (unlimited) or more, got %d", r.Capacity.MaxRPS)
		}
	}
	if e := cfg.GeoIP.EdgeHeaders; e.Any() && len(cfg.GeoIP.TrustedProxies) == 0 {
		c.errorf(root.key("geoip").key("edge_headers"), "believed only from geoip.trusted_proxies, which is empty: list the edge's addresses there")
	}
}

func (c *checker) validateLimits(p fieldPath, l *Limits) {
	bp := p.key("max_request_body")
	if l.MaxRequestBody < 1<<10 {
		c.errorf(bp, "must be at least 1KiB, got %d bytes", l.MaxRequestBody)
	}
	mp := p.key("request_memory")
	switch {
	case l.RequestMemory < 1<<20:
		c.errorf(mp, "must be at least 1MiB, got %d bytes", l.RequestMemory)
	case l.RequestMemory < l.MaxRequestBody:
		c.errorf(mp, "%d bytes is less than limits.max_request_body (%d): such a body could never be held", l.RequestMemory, l.MaxRequestBody)
	}
}

func (c *checker) validateListen(p fieldPath, addr string) {
	if err := checkHostPort(addr); err != nil {
		c.errorf(p, "invalid address %q: %v", addr, err)
	}
}

// checkHostPort checks a listen address: host:port, the host optional.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, such as 127.0.0.1:8080 or :8080")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be a number 0-65535")
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("host must be an IP address or a host name")
		}
	}
	return nil
}

func (c *checker) validateGeoIP(p fieldPath, g *GeoIP) {
	// An absent default_location is the first region's, checked there.
	if dl := p.key("default_location"); c.present(dl) {
		c.validateLatLon(dl, g.DefaultLocation.Lat, g.DefaultLocation.Lon)
	}
	op := p.key("overrides")
	first := make(map[netip.Prefix]int)
	for i, o := range g.Overrides {
		ip := op.idx(i)
		if o.Prefix.IsValid() {
			if j, dup := first[o.Prefix]; dup {
				c.errorf(ip.key("cidr"), "duplicate override for %s (also %s)", o.Prefix, op.idx(j).key("cidr"))
			} else {
				first[o.Prefix] = i
			}
		}
		lp := ip.key("location")
		c.validateLatLon(lp, o.Location.Lat, o.Location.Lon)
		if cc := o.Location.Country; cc != "" && !isAlpha2(cc) {
			c.errorf(lp.key("country"), "invalid country code %q: want an ISO 3166-1 alpha-2 code such as US", cc)
		}
		if ct := o.Location.Continent; ct != "" && !continents[ct] {
			c.errorf(lp.key("continent"), "invalid continent code %q: want one of AF AN AS EU NA OC SA", ct)
		}
	}
}

var continents = map[string]bool{"AF": true, "AN": true, "AS": true, "EU": true, "NA": true, "OC": true, "SA": true}

func isAlpha2(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

func (c *checker) validateLatLon(p fieldPath, lat, lon float64) {
	if !(lat >= -90 && lat <= 90) {
		c.errorf(p.key("lat"), "latitude %v is outside [-90, 90]", lat)
	}
	if !(lon >= -180 && lon <= 180) {
		c.errorf(p.key("lon"), "longitude %v is outside [-180, 180]", lon)
	}
}

func (c *checker) validateHealthCheck(p fieldPath, h *HealthCheck) {
	pp := p.key("path")
	if !strings.HasPrefix(h.Path, "/") {
		c.errorf(pp, "path %q must start with \"/\"", h.Path)
	} else if strings.ContainsAny(h.Path, " \t\r\n#") {
		c.errorf(pp, "path %q must not contain spaces or \"#\"", h.Path)
	}
	ip, tp := p.key("interval"), p.key("timeout")
	if h.Interval <= 0 {
		c.errorf(ip, "must be positive, got %v", h.Interval)
	}
	if h.Timeout <= 0 {
		c.errorf(tp, "must be positive, got %v", h.Timeout)
	}
	if h.Timeout >= h.Interval && !c.reported[ip.String()] && !c.reported[tp.String()] {
		switch {
		case c.present(tp):
			c.errorf(tp, "timeout %v must be below interval %v", h.Timeout, h.Interval)
		case c.present(ip):
			c.errorf(ip, "interval %v must be above timeout %v (the default)", h.Interval, h.Timeout)
		default:
			c.errorf(tp, "timeout %v must be below interval %v", h.Timeout, h.Interval)
		}
	}
	for _, k := range []struct {
		key string
		n   int
	}{{"healthy_threshold", h.HealthyThreshold}, {"unhealthy_threshold", h.UnhealthyThreshold}} {
		if k.n < 1 {
			c.errorf(p.key(k.key), "must be at least 1, got %d", k.n)
		}
	}
}

func (c *checker) validateProxy(p fieldPath, px *Proxy) {
	if px.MaxAttempts < 1 || px.MaxAttempts > 10 {
		c.errorf(p.key("max_attempts"), "must be 1 to 10, got %d", px.MaxAttempts)
	}
	if px.DialTimeout <= 0 {
		c.errorf(p.key("dial_timeout"), "must be positive, got %v", px.DialTimeout)
	}
	if px.ResponseHeaderTimeout < 0 {
		c.errorf(p.key("response_header_timeout"), "must not be negative (0 means no limit), got %v", px.ResponseHeaderTimeout)
	}
	if px.EventLoops < -1 || px.EventLoops > MaxEventLoops {
		c.errorf(p.key("event_loops"), "must be -1 (none), 0 (automatic) or 1 to %d, got %d", MaxEventLoops, px.EventLoops)
	}
}

// validateName checks the name of entry i of list p (a region or a rule):
// required, well formed, unique among names.
func (c *checker) validateName(p fieldPath, i int, what, name string, names map[string]int) {
	np := p.idx(i).key("name")
	switch {
	case name == "":
		c.errorf(np, "required")
	case !validRegionName(name):
		c.errorf(np, "invalid %s name %q: use lower-case letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit", what, name)
	default:
		if j, dup := names[name]; dup {
			c.errorf(np, "duplicate %s name %q (also %s)", what, name, p.idx(j).key("name"))
		} else {
			names[name] = i
		}
	}
}

// validateRegionList checks a list of region names: known, each once.
func (c *checker) validateRegionList(p fieldPath, list []string, known map[string]bool) {
	seen := map[string]bool{}
	for j, name := range list {
		switch {
		case !known[name]:
			c.errorf(p.idx(j), "unknown region %q", name)
		case seen[name]:
			c.errorf(p.idx(j), "region %q is listed twice", name)
		}
		seen[name] = true
	}
}

func (c *checker) validateRegions(p fieldPath, regions []Region) {
	if len(regions) == 0 && !c.hasErrorWithin(p) {
		c.errorf(p, "at least one region is required")
	}
	names := make(map[string]int)
	urls := make(map[string]fieldPath)
	for i, r := range regions {
		rp := p.idx(i)
		c.validateName(p, i, "region", r.Name, names)
		c.validateLatLon(rp.key("location"), r.Location.Lat, r.Location.Lon)
		bp := rp.key("backends")
		if len(r.Backends) == 0 && !c.hasErrorWithin(bp) {
			c.errorf(bp, "a region needs at least one backend")
		}
		for j, b := range r.Backends {
			ep := bp.idx(j)
			if b.Weight < 1 || b.Weight > 1000 {
				c.errorf(ep.key("weight"), "must be 1 to 1000, got %d", b.Weight)
			}
			if b.URL == nil {
				continue
			}
			up := ep.key("url")
			if first, dup := urls[b.URL.String()]; dup {
				c.errorf(up, "duplicate backend URL %s (also %s)", b.URL, first)
			} else {
				urls[b.URL.String()] = up
			}
		}
	}
}

// validateProtocols checks each backend's protocol against its URL, and
// that HTTP/2 backends are reached only where geoproxy speaks HTTP/2 to
// backends: the nethttp engine and the TLS listener.
func (c *checker) validateProtocols(p fieldPath, cfg *Config) {
	for i, r := range cfg.Regions {
		for j, b := range r.Backends {
			kp := p.idx(i).key("backends").idx(j).key("protocol")
			if !c.present(kp) {
				kp = p.idx(i).key("protocol")
			}
			if c.hasErrorWithin(kp) || b.URL == nil {
				continue
			}
			switch b.Protocol {
			case ProtocolHTTP1:
			case ProtocolH2C, ProtocolH2:
				if want := map[string]string{ProtocolH2C: "http", ProtocolH2: "https"}[b.Protocol]; b.URL.Scheme != want {
					c.errorf(kp, "%s needs an %s:// URL, got %s", b.Protocol, want, b.URL)
				} else if cfg.Engine == EngineNative && !cfg.TLS.RedirectHTTP {
					c.errorf(kp, "HTTP/2 backends are reached from Go's server (the nethttp engine, and the TLS listener's connections then): set engine: nethttp, or tls.redirect_http: true so that the native engine's plain listener proxies nothing")
				}
			default:
				c.errorf(kp, "must be %q, %q or %q, got %q", ProtocolHTTP1, ProtocolH2C, ProtocolH2, b.Protocol)
			}
		}
	}
}

// validRegionName reports whether s matches [a-z0-9][a-z0-9._-]*.
func validRegionName(s string) bool {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case i > 0 && (r == '.' || r == '_' || r == '-'):
		default:
			return false
		}
	}
	return s != ""
}
