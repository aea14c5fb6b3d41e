package core

import (
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/route"
)

// affinity keeps clients on the region and backend that served them, with
// a cookie whose value names the backend (a hash of its URL, so that it
// survives reloads and tells nothing of the backend).
type affinity struct {
	name    string
	byValue map[string]*route.Backend
	set     []string // by backend index: the Set-Cookie value; "" outside the affinity regions
	value   []string // by backend index: the cookie value
}

func newAffinity(a config.Affinity, specs []route.RegionSpec) *affinity {
	if len(a.Regions) == 0 {
		return nil
	}
	af := &affinity{name: a.Cookie.Name, byValue: map[string]*route.Backend{}}
	var attrs strings.Builder
	attrs.WriteString("; Path=" + a.Cookie.Path)
	if a.Cookie.Domain != "" {
		attrs.WriteString("; Domain=" + a.Cookie.Domain)
	}
	attrs.WriteString("; Max-Age=" + strconv.FormatInt(int64(a.Cookie.TTL.Seconds()), 10))
	if a.Cookie.Secure {
		attrs.WriteString("; Secure")
	}
	if a.Cookie.HTTPOnly {
		attrs.WriteString("; HttpOnly")
	}
	attrs.WriteString("; SameSite=" + strings.ToUpper(a.Cookie.SameSite[:1]) + a.Cookie.SameSite[1:])
	n := 0
	for _, spec := range specs {
		n += len(spec.Backends)
	}
	af.set, af.value = make([]string, n), make([]string, n)
	for _, spec := range specs {
		on := false
		for _, name := range a.Regions {
			on = on || name == spec.Name
		}
		if !on {
			continue
		}
		for _, be := range spec.Backends {
			h := fnv.New64a()
			_, _ = h.Write([]byte(be.ID))
			v := strconv.FormatUint(h.Sum64(), 36)
			af.byValue[v] = be
			af.value[be.Index] = v
			af.set[be.Index] = af.name + "=" + v + attrs.String()
		}
	}
	return af
}

// cookie returns the value of the named cookie in Cookie header values, or
// "".
func cookie(values []string, name string) string {
	for _, line := range values {
		for len(line) > 0 {
			var pair string
			pair, line, _ = strings.Cut(line, ";")
			pair = strings.TrimSpace(pair)
			if k, v, ok := strings.Cut(pair, "="); ok && k == name {
				return strings.Trim(v, `"`)
			}
		}
	}
	return ""
}

// Affinity reports whether affinity cookies are on, so that engines
// collect Cookie headers only then.
func (b *Balancer) Affinity() bool { return b.affinity != nil }

// Stick applies a request's affinity cookie (its Cookie header values):
// the first attempt goes to the backend it names, if that backend is in
// service and its region may serve the client now (its rule allows it, it
// has a healthy backend). Otherwise the cookie is ignored, and the answer
// sets a new one. Call it after Decide, before Next.
func (b *Balancer) Stick(d *Decision, cookies []string) {
	af := b.affinity
	if af == nil || len(cookies) == 0 {
		return
	}
	be := af.byValue[cookie(cookies, af.name)]
	if be == nil {
		return
	}
	for i, c := range d.Plan.Candidates {
		if c.Region.Name != be.Region {
			continue
		}
		switch c.Reason {
		case route.ReasonNotAllowed, route.ReasonUnhealthy:
			return // never across a residency boundary, nor to a dead region
		}
		if d.Plan.Rule != nil && !d.Plan.Rule.Allowed(c.Region.Index) {
			return
		}
		for _, h := range c.Region.Healthy {
			if h == be && !d.Snapshot.Panic {
				d.sticky, d.stickyAt = be, i
				return
			}
		}
		return
	}
}

// SetCookie returns the Set-Cookie value for the answer to d (from the
// backend of its last attempt), or "" when none is due: affinity is off,
// the backend's region is not in affinity.regions, or the client's cookie
// already names that backend.
func (b *Balancer) SetCookie(d *Decision) string {
	af := b.affinity
	if af == nil || len(d.tried) == 0 {
		return ""
	}
	be := d.tried[len(d.tried)-1]
	if be.Index >= len(af.set) || (d.sticky == be) {
		return ""
	}
	return af.set[be.Index]
}
