package config

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/geoproxy/geoproxy/geo"
)

// Rule steers the clients it matches (key "rules[]"): data residency
// (Allow, Fallback) and a preferred order of regions (Prefer). Rules are
// tried in file order; the first that matches a client applies; a client
// that matches none is routed by distance.
type Rule struct {
	// Name identifies the rule in metrics, logs and explanations (key
	// "name"). Required, unique, as a region name.
	Name string
	// Match says which clients the rule is for (key "match"). Required.
	Match Match
	// Allow, when set (HasAllow), is the only regions that may ever serve
	// the matched clients (key "allow"): on the first try, on retries, in
	// failover and in panic mode. An empty list rejects them all.
	Allow    []string
	HasAllow bool
	// Fallback regions, in order, serve the matched clients only when no
	// allowed region can (key "fallback"); empty: such a request is
	// refused with 503. Only with allow.
	Fallback []string
	// Prefer is an order of regions tried first, before the rest by
	// distance (key "prefer"); with allow, only allowed regions.
	Prefer []string
}

// Match selects clients (key "match"): a client matches when any of the
// given criteria holds.
type Match struct {
	// Continents are continent codes: AF AN AS EU NA OC SA (key
	// "continents"; written in any case).
	Continents []string
	// Countries are ISO 3166-1 alpha-2 codes (key "countries"; any case).
	Countries []string
	// Subdivisions are ISO 3166-2 codes such as "US-CA" (key
	// "subdivisions"; any case): the country, "-", and the subdivision
	// code the geo database gives.
	Subdivisions []string
	// Networks are client networks (key "networks", CIDRs or addresses).
	// They match by address, located or not.
	Networks []netip.Prefix
	// Unknown matches clients that cannot be located: a private address
	// without an override, an address not in the database (key
	// "unknown"). Such clients match no country, continent or
	// subdivision.
	Unknown bool
}

// EdgeHeaders name the client-location headers of a CDN or load balancer
// in front of geoproxy (key "geoip.edge_headers"), believed only from
// trusted_proxies peers.
type EdgeHeaders struct {
	// Cloudflare: CF-IPCountry, and cf-iplatitude/cf-iplongitude when
	// sent (entry "cloudflare").
	Cloudflare bool
	// CloudFront: CloudFront-Viewer-Country, -Latitude, -Longitude (entry
	// "cloudfront").
	CloudFront bool
	// GCP: X-Client-Geo-Location, configured on the load balancer as
	// "{client_region},{client_city}" (entry "gcp").
	GCP bool
	// Country and LatLon name a generic pair (entry {country: NAME,
	// lat_lon: NAME}): a header with the ISO country code, and one with
	// "lat,lon"; either may be "".
	Country, LatLon string
}

// Any reports whether any edge header is configured.
func (e EdgeHeaders) Any() bool {
	return e.Cloudflare || e.CloudFront || e.GCP || e.Country != "" || e.LatLon != ""
}

// Capacity bounds a region's load (key "regions[].capacity"); beyond it
// the surplus of its clients goes to the next region of their plan.
type Capacity struct {
	// MaxInFlight is the most requests in flight the region takes (key
	// "max_in_flight"); 0: unlimited.
	MaxInFlight int
	// MaxRPS is the most requests per second the region takes (key
	// "max_rps"); 0: unlimited.
	MaxRPS int
}

type rawRule struct {
	Name     scalar        `yaml:"name"`
	Match    opt[rawMatch] `yaml:"match"`
	Allow    opt[[]scalar] `yaml:"allow"`
	Fallback opt[[]scalar] `yaml:"fallback"`
	Prefer   opt[[]scalar] `yaml:"prefer"`
}

type rawMatch struct {
	Continents   opt[[]scalar] `yaml:"continents"`
	Countries    opt[[]scalar] `yaml:"countries"`
	Subdivisions opt[[]scalar] `yaml:"subdivisions"`
	Networks     opt[[]scalar] `yaml:"networks"`
	Unknown      scalar        `yaml:"unknown"`
}

type rawCapacity struct {
	MaxInFlight scalar `yaml:"max_in_flight"`
	MaxRPS      scalar `yaml:"max_rps"`
}

// strings reads a list of strings.
func (c *checker) strings(p fieldPath, o opt[[]scalar]) ([]string, bool) {
	list, ok := composite(c, p, o)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(list))
	for i, s := range list {
		if v := c.str(p.idx(i), s, ""); v != "" || s.set {
			out = append(out, v)
		}
	}
	return out, true
}

func (c *checker) rules(p fieldPath, o opt[[]opt[rawRule]]) []Rule {
	list, _ := composite(c, p, o)
	var rules []Rule
	for i, item := range list {
		rp := p.idx(i)
		raw, ok := composite(c, rp, item)
		if !ok {
			c.errorf(rp, "empty entry; give name, match, and allow or prefer")
			continue
		}
		r := Rule{Name: c.str(rp.key("name"), raw.Name, "")}
		mp := rp.key("match")
		if m, ok := composite(c, mp, raw.Match); ok {
			r.Match = c.match(mp, m)
		} else if !raw.Match.wrong {
			c.errorf(mp, "required: give continents, countries, subdivisions, networks or unknown")
		}
		r.Allow, r.HasAllow = c.strings(rp.key("allow"), raw.Allow)
		r.Fallback, _ = c.strings(rp.key("fallback"), raw.Fallback)
		r.Prefer, _ = c.strings(rp.key("prefer"), raw.Prefer)
		rules = append(rules, r)
	}
	return rules
}

func (c *checker) match(p fieldPath, raw rawMatch) Match {
	var m Match
	cp := p.key("continents")
	list, _ := c.strings(cp, raw.Continents)
	for i, v := range list {
		v = strings.ToUpper(v)
		if !continents[v] {
			c.errorf(cp.idx(i), "invalid continent code %q: want one of AF AN AS EU NA OC SA", list[i])
			continue
		}
		m.Continents = append(m.Continents, v)
	}
	cp = p.key("countries")
	list, _ = c.strings(cp, raw.Countries)
	for i, v := range list {
		v = strings.ToUpper(v)
		if _, _, _, ok := geo.CountryPoint(v); !ok || !isAlpha2(v) {
			c.errorf(cp.idx(i), "unknown country code %q: want an ISO 3166-1 alpha-2 code such as DE", list[i])
			continue
		}
		m.Countries = append(m.Countries, v)
	}
	sp := p.key("subdivisions")
	list, _ = c.strings(sp, raw.Subdivisions)
	for i, v := range list {
		v = strings.ToUpper(v)
		country, sub, found := strings.Cut(v, "-")
		if _, _, _, ok := geo.CountryPoint(country); !found || sub == "" || !ok || !isAlpha2(country) {
			c.errorf(sp.idx(i), "invalid subdivision %q: want an ISO 3166-2 code such as US-CA", list[i])
			continue
		}
		m.Subdivisions = append(m.Subdivisions, v)
	}
	np := p.key("networks")
	nets, _ := composite(c, np, raw.Networks)
	for i, s := range nets {
		if pfx, ok := c.prefix(np.idx(i), s); ok {
			m.Networks = append(m.Networks, pfx)
		}
	}
	m.Unknown = c.bool(p.key("unknown"), raw.Unknown, false)
	if len(m.Continents)+len(m.Countries)+len(m.Subdivisions)+len(m.Networks) == 0 && !m.Unknown && !c.hasErrorWithin(p) {
		c.errorf(p, "matches no client: give continents, countries, subdivisions, networks or unknown: true")
	}
	return m
}

func (c *checker) edgeHeaders(p fieldPath, o opt[[]any]) EdgeHeaders {
	var e EdgeHeaders
	list, _ := composite(c, p, o)
	for i, item := range list {
		ip := p.idx(i)
		switch v := item.(type) {
		case string:
			switch strings.ToLower(v) {
			case "cloudflare":
				e.Cloudflare = true
			case "cloudfront":
				e.CloudFront = true
			case "gcp":
				e.GCP = true
			default:
				c.errorf(ip, "unknown edge %q: want cloudflare, cloudfront, gcp, or {country: HEADER, lat_lon: HEADER}", v)
			}
		case map[string]any:
			for k, hv := range v {
				name, ok := hv.(string)
				if !ok || checkHeaderName(name) != nil {
					c.errorf(ip.key(k), "expected a header name, got %s", describe(hv, ""))
					continue
				}
				switch k {
				case "country":
					e.Country = name
				case "lat_lon":
					e.LatLon = name
				default:
					c.errorf(ip.key(k), "unknown key (valid keys here: country, lat_lon)")
				}
			}
		default:
			c.errorf(ip, "expected cloudflare, cloudfront, gcp, or {country: HEADER, lat_lon: HEADER}, got %s", describe(item, ""))
		}
	}
	return e
}

// validateRules checks rule names, region names and that every rule can
// match a client no earlier rule takes.
func (c *checker) validateRules(p fieldPath, rules []Rule, regions []Region) {
	known := make(map[string]bool, len(regions))
	for _, r := range regions {
		known[r.Name] = true
	}
	names := make(map[string]int)
	for i, r := range rules {
		rp := p.idx(i)
		c.validateName(p, i, "rule", r.Name, names)
		c.validateRegionList(rp.key("allow"), r.Allow, known)
		c.validateRegionList(rp.key("fallback"), r.Fallback, known)
		c.validateRegionList(rp.key("prefer"), r.Prefer, known)
		if len(r.Fallback) > 0 && !r.HasAllow {
			c.errorf(rp.key("fallback"), "only with allow: fallback regions serve when no allowed region can")
		}
		for j, f := range r.Fallback {
			if slices.Contains(r.Allow, f) {
				c.errorf(rp.key("fallback").idx(j), "region %q is already allowed", f)
			}
		}
		if r.HasAllow {
			for j, name := range r.Prefer {
				if known[name] && !slices.Contains(r.Allow, name) {
					c.errorf(rp.key("prefer").idx(j), "region %q is not in allow: it may never serve these clients", name)
				}
			}
		}
		if !r.HasAllow && len(r.Prefer) == 0 {
			c.errorf(rp, "does nothing: give allow or prefer")
		}
		for j := range i {
			if covers(rules[j].Match, r.Match) {
				c.errorf(rp.key("match"), "never applies: every client it matches matches %s (%q) first", p.idx(j), rules[j].Name)
				break
			}
		}
	}
}

// covers reports whether every client m matches is matched by e.
func covers(e, m Match) bool {
	if len(m.Continents)+len(m.Countries)+len(m.Subdivisions)+len(m.Networks) == 0 && !m.Unknown {
		return false
	}
	continentOf := func(country string) string {
		_, _, cont, _ := geo.CountryPoint(country)
		return cont
	}
	for _, ct := range m.Continents {
		if !slices.Contains(e.Continents, ct) {
			return false
		}
	}
	for _, cc := range m.Countries {
		if !slices.Contains(e.Countries, cc) && !slices.Contains(e.Continents, continentOf(cc)) {
			return false
		}
	}
	for _, sd := range m.Subdivisions {
		cc, _, _ := strings.Cut(sd, "-")
		if !slices.Contains(e.Subdivisions, sd) && !slices.Contains(e.Countries, cc) && !slices.Contains(e.Continents, continentOf(cc)) {
			return false
		}
	}
	for _, n := range m.Networks {
		if !slices.ContainsFunc(e.Networks, func(en netip.Prefix) bool { return en.Bits() <= n.Bits() && en.Contains(n.Addr()) }) {
			return false
		}
	}
	return !m.Unknown || e.Unknown
}

// MaxRegions is the most regions a configuration may have.
const MaxRegions = 64
