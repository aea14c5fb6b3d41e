// Package reqcheck holds the rules both HTTP engines apply to a client's
// request before any of it is forwarded: which request targets and Host
// values are refused, and which header fields are dropped. Each rule exists
// once, here, so that the engines cannot drift apart; each is written for
// strings and byte slices alike, without allocating.
//
// The rules close gaps between what a lenient backend reads and what the
// proxy routed: a path that climbs out of a backend's base path, a Host with
// a path or user information in it, a header name that CGI-style gateways
// read as another one.
package reqcheck

// text is what the rules read: a string or a byte slice.
type text interface{ ~string | ~[]byte }

// DotSegments reports whether the path of a request target has a "." or
// ".." segment, plain or percent-encoded. Browsers remove them before they
// send a request; the engines refuse the rest, so that "/app" + "/../admin"
// cannot leave a backend's base path. Segments end at "/", and also where
// some backends see a separator: "\", an encoded slash or an encoded
// backslash. A ";" starts path parameters, which servlet containers strip,
// so "..;x" counts as "..". The query (after "?") is not looked at.
func DotSegments[T text](target T) bool {
	path := target
	for i := 0; i < len(path); i++ {
		if path[i] == '?' {
			path = path[:i]
			break
		}
	}
	for len(path) > 0 {
		end, next := len(path), len(path)
		for i := 0; i < len(path); i++ {
			if path[i] == '/' || path[i] == '\\' {
				end, next = i, i+1
				break
			}
			if path[i] == '%' && i+2 < len(path) && (path[i+1] == '2' && path[i+2]|0x20 == 'f' || path[i+1] == '5' && path[i+2]|0x20 == 'c') {
				end, next = i, i+3
				break
			}
		}
		seg := path[:end]
		path = path[next:]
		for i := 0; i < len(seg); i++ {
			if seg[i] == ';' {
				seg = seg[:i]
				break
			}
		}
		if len(seg) == 0 || len(seg) > 6 || seg[0] != '.' && seg[0] != '%' {
			continue
		}
		if onlyDots(seg) {
			return true
		}
	}
	return false
}

// onlyDots reports whether seg is one or two dots, each plain or "%2e".
func onlyDots[T text](seg T) bool {
	dots := 0
	for len(seg) > 0 {
		switch {
		case seg[0] == '.':
			seg = seg[1:]
		case len(seg) >= 3 && seg[0] == '%' && seg[1] == '2' && seg[2]|0x20 == 'e':
			seg = seg[3:]
		default:
			return false
		}
		dots++
	}
	return dots <= 2
}

// ValidHost reports whether a Host field value, or the authority of an
// absolute-form target, is a host with an optional port and nothing else
// (RFC 9110 §7.2, RFC 3986 §3.2.2): letters, digits, "-._~", the
// sub-delimiters "!$&'()*+,;=", "%" (percent-encoding, IPv6 zones), ":"
// before a port or inside an IPv6 literal, and the brackets of one. Refused
// are a "/" or "\" (a path), an "@" (user information, which an http URI
// must not carry: RFC 9110 §4.2.4), "?" and "#", spaces and control bytes:
// the backend would receive them in X-Forwarded-Host. An empty value is
// valid; RFC 9112 allows it when the target has no authority.
func ValidHost[T text](host T) bool {
	for i := 0; i < len(host); i++ {
		if !hostByte[host[i]] {
			return false
		}
	}
	return true
}

var hostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "-._~!$&'()*+,;=%:[]" {
		t[c] = true
	}
	return t
}()

// DropField reports whether a client's header field is dropped rather than
// forwarded: a name with an underscore. CGI, WSGI (Flask, Django), PHP and
// Rack map "X_City" and "X-City" to the same variable (HTTP_X_CITY), so
// such a field would let a client set what the proxy sets, such as the
// location or the forwarding chain the app reads. nginx drops them too
// (underscores_in_headers off).
func DropField[T text](name T) bool {
	for i := 0; i < len(name); i++ {
		if name[i] == '_' {
			return true
		}
	}
	return false
}

// AsteriskAllowed reports whether a request with this method may have the
// asterisk-form target "*": only OPTIONS may (RFC 9112 §3.2.4).
func AsteriskAllowed[T text](method T) bool {
	const options = "OPTIONS"
	if len(method) != len(options) {
		return false
	}
	for i := 0; i < len(options); i++ {
		if method[i] != options[i] {
			return false
		}
	}
	return true
}
