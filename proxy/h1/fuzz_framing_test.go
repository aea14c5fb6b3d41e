package h1

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzFraming feeds the same client bytes to the engine and to a reference
// parser (net/http.ReadRequest, each body read to its end) and checks that
// they agree on where every request starts and ends.
//
// The bytes go to two engines, one serving with an event loop and one with
// a goroutine per connection, each in front of a backend that records what
// it receives. The engine may be stricter than the reference: it may refuse
// a request the reference accepts, and then it stops. But every request it
// forwards must be the reference's request at the same place in the
// sequence, with the same method, target (in origin form), body, host and
// end-to-end fields; the engine must not forward a request the reference
// refuses, nor more requests than the reference finds. The client's
// answers must be the backend's 200s, one per request forwarded, then at
// most one refusal.
//
// The reference ignores empty lines before a request line, as RFC 9112
// section 2.2 allows, and knows of a few deliberate differences between
// the engine and net/http, where net/http refuses what RFC 9110 and 9112
// allow (see standIn).
func FuzzFraming(f *testing.F) {
	engines := []*framingEngine{
		newFramingEngine(f, "event loop", 1),
		newFramingEngine(f, "goroutine per connection", -1),
	}
	src := newSourceAddrs(f, engines[0].p.addr)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > maxFramingInput {
			t.Skip("input too large")
		}
		ref := parseReference(in)
		for _, fe := range engines {
			fe.check(t, in, ref, src.next())
		}
	})
}

// maxFramingInput bounds the inputs tried, so that one execution stays
// short.
const maxFramingInput = 64 << 10

// framingWait bounds one exchange with an engine: dialling, writing the
// input, and reading until the engine closes the connection.
const framingWait = 5 * time.Second

// framingEngine is an engine in front of a backend that records every
// request it gets, by client address.
type framingEngine struct {
	name string
	p    *proxy

	mu  sync.Mutex
	got map[netip.Addr][]*bReq
}

func newFramingEngine(f *testing.F, name string, loops int) *framingEngine {
	fe := &framingEngine{name: name, got: map[netip.Addr][]*bReq{}}
	fe.p = newProxy(f, proxyOpts{loops: loops, handlers: []handler{fe.record}})
	return fe
}

// record is the backend's handler: it files the request under the client
// address the engine names last in X-Forwarded-For, answers 200 with an
// empty body and keeps the connection.
func (fe *framingEngine) record(nc net.Conn, r *bReq) bool {
	xff := r.value("X-Forwarded-For")
	peer, err := netip.ParseAddr(strings.TrimSpace(xff[strings.LastIndexByte(xff, ',')+1:]))
	if err == nil {
		fe.mu.Lock()
		fe.got[peer] = append(fe.got[peer], r)
		fe.mu.Unlock()
	}
	_, err = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	return err == nil
}

// take returns the requests forwarded for client address a, and forgets
// every request recorded so far.
func (fe *framingEngine) take(a netip.Addr) []*bReq {
	fe.mu.Lock()
	defer fe.mu.Unlock()
	got := fe.got[a]
	clear(fe.got)
	return got
}

// sourceAddrs gives each exchange a loopback address of its own to dial
// from, so that the requests of one fuzz execution cannot be taken for
// another's: the engine names the client's address in X-Forwarded-For.
// Where only 127.0.0.1 can be bound, every exchange uses it, and
// executions are kept apart by running one at a time, each waiting until
// the engine has closed its connection (by then every request it forwarded
// has been answered, so recorded).
type sourceAddrs struct {
	many bool
	n    atomic.Uint32
}

func newSourceAddrs(f *testing.F, addr string) *sourceAddrs {
	s := &sourceAddrs{}
	d := net.Dialer{Timeout: framingWait, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	if nc, err := d.Dial("tcp", addr); err == nil {
		_ = nc.Close()
		s.many = true
	} else {
		f.Logf("dialling from 127.0.0.1 only (%v)", err)
	}
	return s
}

// next returns the address of the next exchange: 127.0.0.2 and on, up to
// 127.255.255.254, then again.
func (s *sourceAddrs) next() netip.Addr {
	if !s.many {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	n := 2 + (s.n.Add(1)-1)%(1<<24-3)
	return netip.AddrFrom4([4]byte{127, byte(n >> 16), byte(n >> 8), byte(n)})
}

// exchange sends in to the engine from address from, ends the sending
// side, and reads everything until the engine closes the connection.
// reset reports that the connection ended with a reset (the engine closed
// it with input unread), so the answers may be cut short.
func (fe *framingEngine) exchange(t *testing.T, in []byte, from netip.Addr) (answers []byte, reset bool) {
	t.Helper()
	deadline := time.Now().Add(framingWait)
	d := net.Dialer{Deadline: deadline, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
	nc, err := d.Dial("tcp", fe.p.addr)
	if err != nil {
		t.Fatalf("%s: dialling the engine from %v: %v", fe.name, from, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(deadline)
	// The engine may refuse a request and close before reading all: the
	// write may then fail, and what it answered is still read.
	if _, err := nc.Write(in); err == nil {
		_ = nc.(*net.TCPConn).CloseWrite()
	}
	answers, err = io.ReadAll(nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the engine did not close the connection within %v\ninput: %q\nanswers so far: %q", fe.name, framingWait, in, answers)
	}
	return answers, err != nil
}

// check sends in to the engine and compares what its backend got with what
// the reference parser found.
func (fe *framingEngine) check(t *testing.T, in []byte, ref refResult, from netip.Addr) {
	t.Helper()
	fe.take(netip.Addr{}) // forget stragglers of earlier executions
	answers, reset := fe.exchange(t, in, from)
	got := fe.take(from)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s\ninput: %q\nreference: %s\nforwarded by the engine:%s\nanswers: %q",
			fe.name, fmt.Sprintf(format, args...), in, ref, describeForwarded(got), answers)
	}
	for i, g := range got {
		if i >= len(ref.reqs) {
			if ref.err != nil {
				fail("the engine forwarded request %d; the reference refuses the bytes from %d: %v", i+1, ref.stop, ref.err)
			}
			fail("the engine forwarded request %d; the reference finds only %d in the input", i+1, len(ref.reqs))
		}
		if msg := ref.reqs[i].differs(g); msg != "" {
			fail("request %d differs: %s", i+1, msg)
		}
	}
	if msg := checkAnswers(answers, reset, len(got)); msg != "" {
		fail("%s", msg)
	}
}

func describeForwarded(got []*bReq) string {
	if len(got) == 0 {
		return " none"
	}
	var b strings.Builder
	for i, g := range got {
		fmt.Fprintf(&b, "\n  %d. %q %q body %q", i+1, g.line, g.fieldList, g.body)
	}
	return b.String()
}

// checkAnswers reads what the client got: an answer (200, from the
// backend) to each request forwarded, in order, possibly after interim
// 100s, then at most one refusal from the engine itself. A connection
// reset may have cut the answers short. It returns what is wrong, if
// anything.
func checkAnswers(answers []byte, reset bool, forwarded int) string {
	br := bufio.NewReader(bytes.NewReader(answers))
	ok, refused := 0, 0
	for {
		if _, err := br.Peek(1); err != nil {
			break
		}
		r, err := readResponse(br, http.MethodGet)
		if err != nil {
			if reset {
				break
			}
			return fmt.Sprintf("unreadable answer after %d: %v", ok+refused, err)
		}
		switch {
		case r.status == http.StatusContinue:
			continue
		case refused > 0:
			return fmt.Sprintf("answer %d (%d) after the engine's refusal", ok+refused+1, r.status)
		case r.status == http.StatusOK:
			ok++
		case refusalStatus(r.status):
			refused++
		default:
			return fmt.Sprintf("answer %d is %q: %q", ok+refused+1, r.statusLine, r.body)
		}
	}
	if ok > forwarded || !reset && ok < forwarded {
		return fmt.Sprintf("%d answers from the backend to %d requests forwarded", ok, forwarded)
	}
	return ""
}

// refusalStatus reports the statuses the engine answers a request it
// cannot read with (see refusal).
func refusalStatus(code int) bool {
	switch code {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestTimeout,
		http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge,
		http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return true
	}
	return false
}

// ---------------------------------------------------------------------------
// The reference parser

// refReq is a request as the reference parser read it.
type refReq struct {
	start, end int // its bytes in the input
	method     string
	target     string // as in the request line
	origin     string // the target in origin form, as a proxy forwards it
	host       string // the authority it is for (Request.Host)
	header     http.Header
	body       []byte
}

// refResult is what the reference parser found in an input: requests, up
// to stop, where it refused the rest (err) or found no more bytes.
type refResult struct {
	reqs []refReq
	stop int
	err  error
}

func (r refResult) String() string {
	var b strings.Builder
	for i, q := range r.reqs {
		fmt.Fprintf(&b, "\n  %d. bytes [%d,%d): %s %q host %q body %q", i+1, q.start, q.end, q.method, q.target, q.host, q.body)
	}
	if r.err != nil {
		fmt.Fprintf(&b, "\n  refused from byte %d: %v", r.stop, r.err)
	} else {
		fmt.Fprintf(&b, "\n  end of input at byte %d", r.stop)
	}
	return b.String()
}

// parseReference reads requests from in with http.ReadRequest, each body to
// its end, until the bytes end or it refuses one. Empty lines before a
// request line are ignored (RFC 9112 section 2.2).
func parseReference(in []byte) refResult {
	var res refResult
	pos := 0
	for {
		for pos < len(in) && in[pos] == '\n' || pos+1 < len(in) && in[pos] == '\r' && in[pos+1] == '\n' {
			if in[pos] == '\r' {
				pos++
			}
			pos++
		}
		res.stop = pos
		if pos == len(in) {
			return res
		}
		q, err := readReference(in, pos)
		if err != nil {
			res.err = err
			return res
		}
		res.reqs = append(res.reqs, q)
		pos = q.end
	}
}

// refBuffer is the size of the reference's read buffer. It bounds a
// trailer section, which http.ReadRequest wants whole in the buffer.
const refBuffer = 64 << 10

// maxStandIns bounds the stand-ins tried for one request (see standIn).
const maxStandIns = 64

// readReference reads the request at in[start:] with http.ReadRequest from
// a bufio.Reader, and its body to the end. Where net/http refuses what RFC
// 9110 and 9112 allow, and the engine deliberately accepts, the request is
// read again with a stand-in for the part refused (see standIn); the bytes
// of the stand-in are the input's with that part rewritten, and the
// request's end is mapped back onto the input.
func readReference(in []byte, start int) (refReq, error) {
	data, target := in, ""
	for range maxStandIns {
		rd := bytes.NewReader(data[start:])
		br := bufio.NewReaderSize(rd, refBuffer)
		at := func() int { return len(data) - rd.Len() - br.Buffered() }
		req, err := http.ReadRequest(br)
		inBody := err == nil
		var body []byte
		if err == nil {
			body, err = io.ReadAll(req.Body)
		}
		if err == nil {
			q := refReq{start: start, end: at() - (len(data) - len(in)), method: req.Method,
				target: cmp.Or(target, req.RequestURI), header: req.Header, body: body}
			q.origin = originForm(q.target)
			q.host = hostOf(q.target, req.Host)
			return q, nil
		}
		if inBody {
			err = fmt.Errorf("body: %w", err)
		}
		fixed, raw, ok := standIn(data, start, at(), inBody, err)
		if !ok {
			return refReq{}, err
		}
		data, target = fixed, cmp.Or(target, raw)
	}
	return refReq{}, errors.New("too many stand-ins")
}

// standIn rewrites the part of the request at data[start:] that
// http.ReadRequest refused, when the engine's accepting it is a deliberate
// and safe difference, one of:
//
//   - A request target that net/url refuses (a bad percent-encoding, an
//     authority it cannot parse, an asterisk followed by more): the engine
//     forwards a target byte for byte, whatever net/url makes of it, as long
//     as it is visible ASCII or obs-text; which targets and hosts it refuses
//     is the policy of package reqcheck, not a matter of framing. The
//     stand-in target is "/"; raw returns the target, from which the target
//     and host are then taken as RFC 9112 section 3.2 splits them.
//   - Empty list elements in Transfer-Encoding ("chunked,", ", chunked", or
//     an empty field besides "Transfer-Encoding: chunked"), which net/http
//     refuses and RFC 9110 section 5.6.1 tells recipients to ignore: the
//     stand-in is one "Transfer-Encoding: chunked" field. A field with no
//     coding at all is no such case: RFC 9112 section 6.3 wants a 400.
//   - Whitespace between a chunk size and ";" (BWS in RFC 9112 section
//     7.1.1), which net/http refuses: the stand-in is the line without it.
//   - A chunk-size line of 4096 bytes or more (long chunk extensions),
//     which net/http refuses as a limit of its own: the engine bounds such
//     lines by maxChunkLine and by its allowance for extensions instead. The
//     stand-in is the line without its extensions.
//
// failAt is where the reader stood when it failed (just after the line
// refused), inBody whether the head had been read.
func standIn(data []byte, start, failAt int, inBody bool, err error) (fixed []byte, raw string, ok bool) {
	replace := func(i, j int, with string) []byte {
		return slices.Concat(data[:i], []byte(with), data[j:])
	}
	msg := err.Error()
	var ue *url.Error
	switch {
	case !inBody && errors.As(err, &ue):
		i, j, ok := targetSpan(data, start)
		if !ok || !visibleTarget(data[i:j]) {
			return nil, "", false
		}
		return replace(i, j, "/"), string(data[i:j]), true

	case !inBody && (strings.Contains(msg, "unsupported transfer encoding") || strings.Contains(msg, "too many transfer encodings")):
		// The head is data[start:failAt]; its field lines end in LF.
		var first, last int // the first Transfer-Encoding line, and the end of the last
		var codings []string
		for i := start; i < failAt; {
			k := bytes.IndexByte(data[i:failAt], '\n')
			if k < 0 {
				return nil, "", false
			}
			j := i + k + 1
			name, value, _ := strings.Cut(string(data[i:j]), ":")
			if i > start && strings.EqualFold(name, "Transfer-Encoding") {
				if j < failAt && (data[j] == ' ' || data[j] == '\t') {
					return nil, "", false // folded: no stand-in
				}
				if first == 0 {
					first = i
				}
				last = j
				for c := range strings.SplitSeq(value, ",") {
					if c = strings.Trim(c, " \t\r\n"); c != "" {
						codings = append(codings, c)
					}
				}
			}
			i = j
		}
		if first == 0 || len(codings) != 1 || !strings.EqualFold(codings[0], "chunked") {
			return nil, "", false
		}
		// Other fields between the first and the last stay, in order.
		var b strings.Builder
		b.WriteString("Transfer-Encoding: chunked\r\n")
		for i := first; i < last; {
			j := i + bytes.IndexByte(data[i:last], '\n') + 1 // every line ends in LF
			if name, _, _ := strings.Cut(string(data[i:j]), ":"); !strings.EqualFold(name, "Transfer-Encoding") {
				b.Write(data[i:j])
			}
			i = j
		}
		return replace(first, last, b.String()), "", true

	case inBody && (strings.Contains(msg, "invalid byte in chunk length") || strings.Contains(msg, "header line too long")):
		if failAt < 2 || data[failAt-1] != '\n' || data[failAt-2] != '\r' {
			return nil, "", false
		}
		i := bytes.LastIndexByte(data[:failAt-1], '\n') + 1
		line := data[i : failAt-2]
		n := 0
		for n < len(line) && isHex(line[n]) {
			n++
		}
		ws := n
		for ws < len(line) && (line[ws] == ' ' || line[ws] == '\t') {
			ws++
		}
		if n == 0 || ws == len(line) || line[ws] != ';' {
			return nil, "", false
		}
		if strings.Contains(msg, "header line too long") {
			return replace(i, failAt, string(line[:n])+";\r\n"), "", true
		}
		if ws == n {
			return nil, "", false
		}
		return replace(i+n, i+ws, ""), "", true
	}
	return nil, "", false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// targetSpan finds the request target in the request line starting at
// in[start:] as http.ReadRequest splits it: in[i:j].
func targetSpan(in []byte, start int) (i, j int, ok bool) {
	line := in[start:]
	if k := bytes.IndexByte(line, '\n'); k >= 0 {
		line = line[:k]
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 {
		return 0, 0, false
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 < 0 {
		return 0, 0, false
	}
	return start + sp1 + 1, start + sp1 + 1 + sp2, true
}

// visibleTarget reports whether a request target is made of visible ASCII
// and obs-text only, as the engine wants one.
func visibleTarget(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return len(b) > 0
}

// hostOf returns the host an absolute-form target names, as in the bytes
// (net/url decodes it) but without user information, or hostField (the
// Host field's value) when it names none.
func hostOf(target, hostField string) string {
	if strings.HasPrefix(target, "/") {
		return hostField
	}
	_, rest, ok := strings.Cut(target, "://")
	if !ok {
		return hostField
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if rest == "" {
		return hostField
	}
	return rest
}

// originForm returns the origin form of a request target: an absolute-form
// target loses its scheme and authority (RFC 9112 section 3.2.2).
func originForm(target string) string {
	if strings.HasPrefix(target, "/") || target == "*" {
		return target
	}
	_, rest, ok := strings.Cut(target, "://")
	if !ok {
		return target
	}
	i := strings.IndexAny(rest, "/?")
	if i < 0 {
		return "/"
	}
	if rest[i] == '?' {
		return "/" + rest[i:]
	}
	return rest[i:]
}

// engineFields are the fields the engine writes itself to a backend
// rather than passing the client's on.
var engineFields = []string{
	"Host", "X-Forwarded-For", "Content-Length", "Connection", "Upgrade",
	"X-City", "X-Country", "X-Geoproxy-Nearest-Region", "X-Request-Id",
}

// differs compares a request the backend got with the reference's, and
// says how they differ ("" if they do not).
func (q *refReq) differs(g *bReq) string {
	method, rest, _ := strings.Cut(g.line, " ")
	target := rest[:max(0, strings.LastIndexByte(rest, ' '))]
	if method != q.method {
		return fmt.Sprintf("method %q, reference %q", method, q.method)
	}
	if target != q.origin {
		return fmt.Sprintf("target %q, reference %q (in origin form %q)", target, q.target, q.origin)
	}
	if !bytes.Equal(g.body, q.body) {
		return fmt.Sprintf("body %q, reference %q", g.body, q.body)
	}
	// The authority: the engine names it in X-Forwarded-Host, unless the
	// client sent its own.
	if !q.has("X-Forwarded-Host") {
		if h := g.value("X-Forwarded-Host"); h != q.host {
			return fmt.Sprintf("host %q, reference %q", h, q.host)
		}
	}
	if !q.has("X-Forwarded-Proto") {
		if p := g.value("X-Forwarded-Proto"); p != "http" {
			return fmt.Sprintf("X-Forwarded-Proto %q, want http", p)
		}
	}
	// Every other field is the client's, as the reference read it.
fields:
	for _, fl := range g.fieldList {
		name, value := fl[0], fl[1]
		for _, n := range engineFields {
			if strings.EqualFold(name, n) {
				continue fields
			}
		}
		if (strings.EqualFold(name, "X-Forwarded-Host") || strings.EqualFold(name, "X-Forwarded-Proto")) && !q.has(name) {
			continue // the engine's own
		}
		found := false
		for _, v := range q.header.Values(name) {
			// The backend trims values with strings.TrimSpace.
			found = found || strings.TrimSpace(v) == value
		}
		if !found {
			return fmt.Sprintf("field %q: %q, reference %q", name, value, q.header.Values(name))
		}
	}
	return ""
}

// has reports whether the client sent a field named name.
func (q *refReq) has(name string) bool {
	_, ok := q.header[http.CanonicalHeaderKey(name)]
	return ok
}
