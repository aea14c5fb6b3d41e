package h1

import (
	"bytes"
	"errors"

	"github.com/geoproxy/geoproxy/proxy/reqcheck"
)

// Parsing errors; each maps to the status the client gets.
var (
	errMalformed   = errors.New("malformed message")
	errHeadTooBig  = errors.New("message head too large")
	errVersion     = errors.New("unsupported HTTP version")
	errCoding      = errors.New("unsupported transfer coding")
	errBodyTooBig  = errors.New("request body too large")
	errBadChunk    = errors.New("malformed chunked body")
	errBadResponse = errors.New("malformed response from backend")
	errConnect     = errors.New("CONNECT is not served: this is a reverse proxy")
	errTimeout     = errors.New("request not received in time")
)

// maxConnOptions caps the Connection list: each named field is looked for
// among all the others.
const maxConnOptions = 32

// field is one header field; both slices point into the head's buffer.
type field struct {
	name, value []byte
	kind        uint8 // what the engine does with it (kind* constants)
}

// Field kinds: which fields are framing, hop-by-hop or rewritten by the
// proxy. kindOther fields pass through.
const (
	kindOther uint8 = iota
	kindHost
	kindContentLength
	kindTransferEncoding
	kindConnection
	kindHop // Keep-Alive, Proxy-*, TE, Trailer, Upgrade
	kindXFF
	kindXFHost
	kindXFProto
	kindForwarded
	kindExpect
	kindDropped // named by Connection, or replaced by the proxy
)

// head is a parsed request or response head. Its slices point into buf,
// which the head owns, so they stay valid while the body is read.
type head struct {
	buf []byte

	// Request line (requests) or status line (responses).
	method, target []byte
	status         int
	reason         []byte
	minor          int // HTTP/1.minor

	fields []field

	contentLength int64  // -1: none
	lengthText    []byte // the Content-Length value as written
	te            bool   // a Transfer-Encoding field is there
	chunked       bool   // Transfer-Encoding ends in chunked
	otherCoding   bool   // Transfer-Encoding lists codings other than chunked
	codings       []byte // those codings, comma-separated
	close         bool   // the sender will close, or asks to
	keepAlive     bool   // "Connection: keep-alive" (HTTP/1.0)
	upgrade       bool   // "Connection: upgrade" with an Upgrade field
	hasUpgradeHdr bool
	expect100     bool
	connTokens    bool // Connection names other fields
	connOptions   int  // Connection list elements seen
	upgradeValue  []byte
	host          []byte
}

func (h *head) reset() {
	buf, fields, codings := h.buf[:0], h.fields[:0], h.codings[:0]
	*h = head{buf: buf, fields: fields, codings: codings, contentLength: -1}
}

// findEnd returns the length of the head at the start of b (through the
// empty line), or -1 if b does not hold a whole head yet.
func findEnd(b []byte) int {
	if i := bytes.Index(b, crlfcrlf); i >= 0 {
		return i + 4
	}
	return -1
}

var crlfcrlf = []byte("\r\n\r\n")

// parseRequest parses the request head in raw (as found by findEnd),
// copying it into h.buf first.
func (h *head) parseRequest(raw []byte) error {
	h.reset()
	if len(raw) >= 2 && raw[0] == '\r' && raw[1] == '\n' {
		// One empty line before a request line is ignored (RFC 9112
		// 2.2): some clients end a body with an extra CRLF.
		raw = raw[2:]
	}
	h.buf = append(h.buf, raw...)
	line, rest, err := firstLine(h.buf)
	if err != nil {
		return err
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errMalformed
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return errMalformed
	}
	sp2 += sp1 + 1
	h.method, h.target = line[:sp1], line[sp1+1:sp2]
	if !isToken(h.method) || !validTarget(h.target) {
		return errMalformed
	}
	if h.minor, err = parseVersion(line[sp2+1:]); err != nil {
		return err
	}
	if err := h.parseFields(rest); err != nil {
		return err
	}
	if string(h.method) == "CONNECT" {
		return errConnect
	}
	hostField := h.host != nil
	if hostField && !reqcheck.ValidHost(h.host) {
		return errMalformed // "a/b@c" would reach the backend as X-Forwarded-Host
	}
	switch {
	case h.target[0] == '*':
		if len(h.target) != 1 || !reqcheck.AsteriskAllowed(h.method) {
			return errMalformed // the asterisk form is for OPTIONS only
		}
	case h.target[0] != '/':
		// Absolute form (RFC 9112 3.2.2): its authority replaces Host,
		// and the backend gets the origin form.
		authority, path, ok := splitAbsolute(h.target)
		if !ok || !reqcheck.ValidHost(authority) {
			return errMalformed // user information ("u:p@evil") included
		}
		h.host, h.target = authority, path
	}
	if h.minor == 0 {
		h.close = h.close || !h.keepAlive
		if h.chunked || h.otherCoding {
			return errMalformed // no transfer codings in HTTP/1.0
		}
	}
	if h.te && !h.chunked && !h.otherCoding {
		return errMalformed // a Transfer-Encoding that names no coding: neither framing can be trusted
	}
	if h.otherCoding {
		return errCoding
	}
	if h.chunked && h.contentLength >= 0 {
		return errMalformed // both framings: refuse rather than guess
	}
	if h.minor == 1 && !hostField {
		return errMalformed // RFC 9112 3.2: an HTTP/1.1 request has a Host field, whatever its target
	}
	if reqcheck.DotSegments(h.target) {
		return errMalformed // "/app" + "/../admin" would leave a base path
	}
	h.upgrade = h.upgrade && h.hasUpgradeHdr && h.minor == 1
	return nil
}

// parseResponse parses a response head in raw, copying it into h.buf.
func (h *head) parseResponse(raw []byte) error {
	h.reset()
	h.buf = append(h.buf, raw...)
	line, rest, err := firstLine(h.buf)
	if err != nil {
		return errBadResponse
	}
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || line[8] != ' ' {
		return errBadResponse
	}
	if h.minor, err = parseVersion(line[:8]); err != nil {
		return errBadResponse
	}
	c := line[9:12]
	if c[0] < '1' || c[0] > '5' || c[1] < '0' || c[1] > '9' || c[2] < '0' || c[2] > '9' {
		return errBadResponse
	}
	h.status = int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0')
	if len(line) > 12 {
		if line[12] != ' ' {
			return errBadResponse
		}
		h.reason = line[13:]
		if !validValue(h.reason) {
			return errBadResponse
		}
	}
	if err := h.parseFields(rest); err != nil {
		return errBadResponse
	}
	if h.minor == 0 && !h.keepAlive {
		h.close = true
	}
	if h.te && !h.chunked && !h.otherCoding {
		return errBadResponse // a Transfer-Encoding that names no coding
	}
	if h.chunked || h.otherCoding {
		// Transfer-Encoding wins over Content-Length; the connection is
		// not reused after such a message (RFC 9112 6.3).
		if h.contentLength >= 0 {
			h.close = true
		}
		h.contentLength = -1
		if !h.chunked {
			h.close = true // the body ends when the connection does
		}
	}
	return nil
}

// splitAbsolute splits an absolute-form target (http://authority/path?q)
// into its authority and origin-form rest ("/" when the path is empty).
func splitAbsolute(t []byte) (authority, path []byte, ok bool) {
	i := bytes.Index(t, []byte("://"))
	if i <= 0 || !(equalFold(t[:i], "http") || equalFold(t[:i], "https")) {
		return nil, nil, false
	}
	rest := t[i+3:]
	end := bytes.IndexAny(rest, "/?")
	if end < 0 {
		return rest, slash, len(rest) > 0
	}
	authority, path = rest[:end], rest[end:]
	if path[0] == '?' {
		return authority, nil, false // "/?q" would need a copy; rare enough to refuse
	}
	return authority, path, len(authority) > 0
}

var slash = []byte("/")

// firstLine splits the start line from the fields.
func firstLine(b []byte) (line, rest []byte, err error) {
	i := bytes.Index(b, crlf)
	if i < 0 {
		return nil, nil, errMalformed
	}
	return b[:i], b[i+2:], nil
}

var crlf = []byte("\r\n")

// parseVersion accepts HTTP/1.0 and HTTP/1.1; another well-formed version
// is errVersion (505), anything else errMalformed.
func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		return 0, errMalformed
	}
	if v[5] == '1' && v[7] == '0' {
		return 0, nil
	}
	if v[5] == '1' && v[7] == '1' {
		return 1, nil
	}
	return 0, errVersion
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseFields parses header fields up to the empty line ending b. One pass
// per line checks the name's characters, finds the colon, and checks the
// value's characters while looking for its end.
func (h *head) parseFields(b []byte) error {
	for {
		if len(b) < 2 {
			return errMalformed
		}
		if b[0] == '\r' {
			if b[1] == '\n' {
				return nil
			}
			return errMalformed
		}
		name, value, rest, ok := fieldLine(b)
		if !ok {
			return errMalformed
		}
		b = rest
		f := field{name: name, value: value, kind: classify(name)}
		if f.kind != kindOther {
			if err := h.note(&f); err != nil {
				return err
			}
		}
		h.fields = append(h.fields, f)
	}
}

// fieldLine parses the field line at the start of b, CRLF included: a
// token, a colon, a value without control characters. It returns the name,
// the value without surrounding spaces, and what follows the line. Anything
// else, such as a space before the colon or obs-fold (a line starting with
// a space), is not ok.
func fieldLine(b []byte) (name, value, rest []byte, ok bool) {
	i := 0
	for i < len(b) && tchar[b[i]] {
		i++
	}
	if i == 0 || i == len(b) || b[i] != ':' {
		return nil, nil, nil, false
	}
	name = b[:i]
	i++
	vs := i
	for i < len(b) && b[i] != '\r' {
		if isCTL(b[i]) {
			return nil, nil, nil, false
		}
		i++
	}
	if i+1 >= len(b) || b[i+1] != '\n' {
		return nil, nil, nil, false
	}
	return name, trimOWS(b[vs:i]), b[i+2:], true
}

// validFieldLine checks one whole line, CRLF included, as parseFields would.
func validFieldLine(line []byte) bool {
	_, _, rest, ok := fieldLine(line)
	return ok && len(rest) == 0
}

// validValue rejects control characters other than HTAB.
func validValue(b []byte) bool {
	for _, ch := range b {
		if isCTL(ch) {
			return false
		}
	}
	return true
}

// isCTL reports a control character other than HTAB.
func isCTL(c byte) bool { return (c < ' ' && c != '\t') || c == 0x7f }

// note records what a framing or connection field says.
func (h *head) note(f *field) error {
	switch f.kind {
	case kindHost:
		if h.host != nil {
			return errMalformed // two Host fields
		}
		h.host = f.value
	case kindContentLength:
		// A repeated Content-Length must repeat the same text: "03" and
		// "3" are refused, as net/http does, so that no two parsers can
		// disagree about where the body ends.
		if h.lengthText != nil {
			if !bytes.Equal(f.value, h.lengthText) {
				return errMalformed
			}
			break
		}
		n, ok := parseContentLength(f.value)
		if !ok {
			return errMalformed
		}
		h.contentLength, h.lengthText = n, f.value
	case kindTransferEncoding:
		// chunked, if there, must be the last coding and only once; the
		// other codings are listed in h.codings and never decoded here.
		h.te = true
		for tok := range tokens(f.value) {
			switch {
			case len(tok) == 0:
			case h.chunked:
				return errMalformed // a coding after chunked
			case equalFold(tok, "chunked"):
				h.chunked = true
			default:
				h.otherCoding = true
				if len(h.codings) > 0 {
					h.codings = append(h.codings, ", "...)
				}
				h.codings = append(h.codings, tok...)
			}
		}
	case kindConnection:
		for tok := range tokens(f.value) {
			if h.connOptions++; h.connOptions > maxConnOptions {
				return errMalformed
			}
			switch {
			case equalFold(tok, "close"):
				h.close = true
			case equalFold(tok, "keep-alive"):
				h.keepAlive = true
			case equalFold(tok, "upgrade"):
				h.upgrade = true
			case len(tok) > 0:
				h.connTokens = true
			}
		}
	case kindHop:
		if equalFold(f.name, "upgrade") {
			h.hasUpgradeHdr = true
			h.upgradeValue = f.value
		}
	case kindExpect:
		if equalFold(f.value, "100-continue") {
			h.expect100 = true
		}
	}
	return nil
}

// dropConnectionTokens marks the fields the Connection fields name as
// hop-by-hop.
func (h *head) dropConnectionTokens() {
	if !h.connTokens {
		return
	}
	for _, c := range h.fields {
		if c.kind != kindConnection {
			continue
		}
		for tok := range tokens(c.value) {
			for i := range h.fields {
				if h.fields[i].kind == kindOther && equalFoldBytes(h.fields[i].name, tok) {
					h.fields[i].kind = kindDropped
				}
			}
		}
	}
}

// classify says what kind of field a name is.
func classify(name []byte) uint8 {
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			return kindHop
		}
	case 4:
		if equalFold(name, "host") {
			return kindHost
		}
	case 6:
		if equalFold(name, "expect") {
			return kindExpect
		}
	case 7:
		if equalFold(name, "upgrade") || equalFold(name, "trailer") {
			return kindHop
		}
	case 9:
		if equalFold(name, "forwarded") {
			return kindForwarded
		}
	case 10:
		if equalFold(name, "connection") {
			return kindConnection
		}
		if equalFold(name, "keep-alive") {
			return kindHop
		}
	case 14:
		if equalFold(name, "content-length") {
			return kindContentLength
		}
	case 15:
		if equalFold(name, "x-forwarded-for") {
			return kindXFF
		}
	case 16:
		if equalFold(name, "x-forwarded-host") {
			return kindXFHost
		}
		if equalFold(name, "proxy-connection") {
			return kindHop
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return kindTransferEncoding
		}
		if equalFold(name, "x-forwarded-proto") {
			return kindXFProto
		}
	case 18:
		if equalFold(name, "proxy-authenticate") {
			return kindHop
		}
	case 19:
		if equalFold(name, "proxy-authorization") {
			return kindHop
		}
	}
	return kindOther
}

// parseContentLength accepts only digits (no sign, no spaces), at most 18.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// tokens yields the comma-separated elements of a list field, trimmed.
func tokens(v []byte) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(v) > 0 {
			i := bytes.IndexByte(v, ',')
			if i < 0 {
				i = len(v)
			}
			if !yield(trimOWS(v[:i])) {
				return
			}
			if i < len(v) {
				i++
			}
			v = v[i:]
		}
	}
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares b with the lower-case ASCII s, ignoring b's case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// tchar per RFC 9110 5.6.2.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

// validTarget accepts any visible ASCII (and obs-text) request target.
func validTarget(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
