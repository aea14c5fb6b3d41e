package config

import (
	"strings"
	"time"
)

// Affinity keeps a client on the region and backend that served it, with a
// cookie (key "affinity"), while they stay healthy and allowed.
type Affinity struct {
	// Regions are the regions whose clients get the cookie (key
	// "affinity.regions"). Default none: affinity is off.
	Regions []string
	// Cookie is the cookie's name and attributes (key "affinity.cookie").
	Cookie Cookie
}

// Cookie is the affinity cookie.
type Cookie struct {
	// Name (key "name"). Default "geoproxy_affinity".
	Name string
	// TTL is its Max-Age (key "ttl", a duration of at least 1s). Default 1h.
	TTL time.Duration
	// Path (key "path"). Default "/".
	Path string
	// Domain (key "domain"). Default "": the request's host only.
	Domain string
	// Secure sends it over HTTPS only (key "secure"). Default false.
	Secure bool
	// HTTPOnly hides it from scripts (key "http_only"). Default true.
	HTTPOnly bool
	// SameSite is "lax", "strict" or "none" (key "same_site"; none needs
	// secure). Default "lax".
	SameSite string
}

type rawAffinity struct {
	Regions opt[[]scalar]  `yaml:"regions"`
	Cookie  opt[rawCookie] `yaml:"cookie"`
}

type rawCookie struct {
	Name     scalar `yaml:"name"`
	TTL      scalar `yaml:"ttl"`
	Path     scalar `yaml:"path"`
	Domain   scalar `yaml:"domain"`
	Secure   scalar `yaml:"secure"`
	HTTPOnly scalar `yaml:"http_only"`
	SameSite scalar `yaml:"same_site"`
}

func (c *checker) affinity(p fieldPath, o opt[rawAffinity]) Affinity {
	raw, _ := composite(c, p, o)
	a := Affinity{}
	a.Regions, _ = c.strings(p.key("regions"), raw.Regions)
	cp := p.key("cookie")
	rc, _ := composite(c, cp, raw.Cookie)
	a.Cookie = Cookie{
		Name:     c.str(cp.key("name"), rc.Name, "geoproxy_affinity"),
		TTL:      c.duration(cp.key("ttl"), rc.TTL, time.Hour),
		Path:     c.str(cp.key("path"), rc.Path, "/"),
		Domain:   c.str(cp.key("domain"), rc.Domain, ""),
		Secure:   c.bool(cp.key("secure"), rc.Secure, false),
		HTTPOnly: c.bool(cp.key("http_only"), rc.HTTPOnly, true),
		SameSite: strings.ToLower(c.str(cp.key("same_site"), rc.SameSite, "lax")),
	}
	return a
}

func (c *checker) validateAffinity(p fieldPath, a *Affinity, regions []Region) {
	known := map[string]bool{}
	for _, r := range regions {
		known[r.Name] = true
	}
	c.validateRegionList(p.key("regions"), a.Regions, known)
	cp := p.key("cookie")
	if !validCookieName(a.Cookie.Name) {
		c.errorf(cp.key("name"), "invalid cookie name %q: use letters, digits and !#$%%&'*+-.^_`|~", a.Cookie.Name)
	}
	if a.Cookie.TTL < time.Second {
		c.errorf(cp.key("ttl"), "must be at least 1s, got %s", a.Cookie.TTL)
	}
	for _, f := range []struct{ key, v string }{{"path", a.Cookie.Path}, {"domain", a.Cookie.Domain}} {
		if strings.ContainsAny(f.v, ";\r\n\x00 ") {
			c.errorf(cp.key(f.key), "%q cannot hold spaces, ';' or control characters", f.v)
		}
	}
	switch a.Cookie.SameSite {
	case "lax", "strict":
	case "none":
		if !a.Cookie.Secure {
			c.errorf(cp.key("same_site"), "none needs secure: true (browsers drop such cookies otherwise)")
		}
	default:
		c.errorf(cp.key("same_site"), "must be lax, strict or none, got %q", a.Cookie.SameSite)
	}
}

// validCookieName reports an RFC 6265 cookie name (an HTTP token).
func validCookieName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0) {
			return false
		}
	}
	return true
}
