// Package clientip finds the address of the client behind a chain of proxies.
//
// The TCP peer is the client unless it is a trusted proxy. When it is, the
// forwarding headers it sent (Forwarded, else X-Forwarded-For) are walked from
// the right, skipping trusted hops, and the first untrusted address is the
// client. A malformed or obfuscated entry stops the walk: the last address
// seen (a trusted hop) is used, so a bad header can never make a client appear
// to come from an address of its choosing and never fails a request.
//
// The package uses only netip types and header values as strings, so any HTTP
// engine can use it.
package clientip

import (
	"net/netip"
	"strings"
)

// Resolver finds client addresses given a set of trusted proxy networks.
// The zero value trusts nobody. A Resolver is immutable and safe for
// concurrent use.
type Resolver struct {
	trusted []netip.Prefix
}

// NewResolver returns a Resolver that trusts forwarding headers sent by peers
// inside the given networks.
func NewResolver(trusted []netip.Prefix) *Resolver {
	t := make([]netip.Prefix, len(trusted))
	for i, p := range trusted {
		t[i] = p.Masked()
	}
	return &Resolver{trusted: t}
}

// Trusted reports whether addr is inside a trusted proxy network.
func (r *Resolver) Trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range r.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Resolve returns the client address for a request from peer carrying the
// given Forwarded and X-Forwarded-For header values (each may hold several
// comma-separated entries, and a header may appear several times).
func (r *Resolver) Resolve(peer netip.Addr, forwarded, xff []string) netip.Addr {
	peer = peer.Unmap()
	if !peer.IsValid() || !r.Trusted(peer) {
		return peer
	}
	if len(forwarded) > 0 {
		return r.walk(peer, forwarded, forwardedFor)
	}
	if len(xff) > 0 {
		return r.walk(peer, xff, plainAddr)
	}
	return peer
}

// walk goes through the header values from the rightmost entry to the
// leftmost. parse turns one entry into an address; ok false means malformed.
func (r *Resolver) walk(peer netip.Addr, values []string, parse func(string) (netip.Addr, bool)) netip.Addr {
	last := peer
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for {
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			entry = strings.TrimSpace(entry)
			if entry != "" {
				addr, ok := parse(entry)
				if !ok {
					return last
				}
				if !r.Trusted(addr) {
					return addr
				}
				last = addr
			}
			if v == "" {
				break
			}
		}
	}
	// Every hop was trusted: the leftmost one is the best we know.
	return last
}

// plainAddr parses an X-Forwarded-For entry: an address, optionally with a
// port ("192.0.2.1:443", "[2001:db8::1]:443").
func plainAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	// A bracketed IPv6 address without port.
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// forwardedFor extracts the for= parameter of one RFC 7239 Forwarded element
// ("for=192.0.2.60;proto=http;by=203.0.113.43"). "unknown", obfuscated
// identifiers and a missing for= are reported as malformed.
func forwardedFor(element string) (netip.Addr, bool) {
	for element != "" {
		var pair string
		if j := strings.IndexByte(element, ';'); j >= 0 {
			pair, element = element[:j], element[j+1:]
		} else {
			pair, element = element, ""
		}
		pair = strings.TrimSpace(pair)
		eq := strings.IndexByte(pair, '=')
		if eq < 0 || !strings.EqualFold(pair[:eq], "for") {
			continue
		}
		v := pair[eq+1:]
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return plainAddr(v)
	}
	return netip.Addr{}, false
}
