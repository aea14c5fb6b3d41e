package server_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// TestNoClientEverGetsAnotherClientsAnswer runs many keep-alive clients
// (GET, HEAD, and POST with a small body, sometimes chunked) through the
// proxy to one backend that, on half of its answers, sends more than its
// answer: a body after a HEAD, 204 or 304 answer, or bytes beyond its
// Content-Length. Those extra bytes are always a complete answer carrying
// another client's token. They are sent with the answer, in the same
// write, or late: 2 to 30 ms after it, in a write of their own, while the
// connection is idle in the proxy's pool and no client request is in
// flight (see quietGate). A proxy that keeps such a connection, or reuses
// it without noticing the bytes, gives one client an answer meant for
// another. Every answer a client gets must carry its own token, in its
// X-Token header and its body, or be a proxy error (502, 503, 504)
// carrying none; no byte a client reads may carry another client's token;
// and nothing may follow an answer, so a HEAD answer has no body.
func TestNoClientEverGetsAnotherClientsAnswer(t *testing.T) {
	for _, c := range []struct{ name, engine, proxy string }{
		{"nethttp", config.EngineNetHTTP, ""},
		{"native", config.EngineNative, ""},
		{"native_event_loops_-1", config.EngineNative, "proxy: {event_loops: -1}\n"},
	} {
		t.Run(c.name, func(t *testing.T) { runMixing(t, c.engine, c.proxy) })
	}
}

const (
	mixClients   = 32
	mixRequests  = 40                    // per client
	mixTimeLimit = 8 * time.Second       // for all the clients' requests
	mixSettle    = 3 * time.Millisecond  // for the proxy to see late bytes on an idle connection
	mixWave      = 40 * time.Millisecond // between waves of requests
)

func runMixing(t *testing.T, engine, proxyKeys string) {
	be := startMixBackend(t)
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin:
  listen: 127.0.0.1:0
geoip:
  database: ../testdata/geoip2-city.mmdb
  trusted_proxies: [127.0.0.0/8]
health_check:
  path: /health
  interval: 1s
  timeout: 500ms
engine: %s
%sregions:
  - name: local
    location: {lat: 40.71, lon: -74.01}
    backends:
      - url: http://%s
`, engine, proxyKeys, be.ln.Addr())
	srv := runYAML(t, yaml, server.Options{})
	(&env{t: t, srv: srv}).waitRegion("local", true)

	var (
		res   mixResults
		wg    sync.WaitGroup
		began = time.Now()
		stop  = began.Add(mixTimeLimit)
	)
	for id := range mixClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runMixClient(id, srv.ProxyAddr().String(), be.gate, began, stop, &res)
		}()
	}
	wg.Wait()
	took := time.Since(began)

	now, late := be.strays(false), be.strays(true)
	t.Logf("engine %s%s: %d requests in %v, %d answered by the backend, %d proxy errors\n"+
		"misbehaving answers with the extra bytes at once: %d (%s)\n"+
		"misbehaving answers with the extra bytes late: %d (%s); %d times not sent, as the proxy reused the connection first",
		engine, proxyKeysLabel(proxyKeys), res.requests.Load(), took.Round(time.Millisecond), be.answers.Load(), res.proxyErrors.Load(),
		now.total, now, late.total, late, be.lateSkipped.Load())

	// The misbehaviour happened, of every kind, at once and late.
	assert.GreaterOrEqual(t, res.requests.Load(), int64(mixClients*mixRequests/2), "requests made")
	for _, s := range []strayCounts{now, late} {
		for k := strayHeadBody; k < strayKinds; k++ {
			assert.GreaterOrEqual(t, s.byKind[k], int64(10), "misbehaving answers of kind %s", k)
		}
	}
	assert.GreaterOrEqual(t, now.total, int64(100), "misbehaving answers with the extra bytes at once")
	assert.GreaterOrEqual(t, late.total, int64(100), "misbehaving answers with the extra bytes late")

	res.mu.Lock()
	defer res.mu.Unlock()
	assert.Zero(t, res.failures, "%d wrong answers, %d of them with a token not the client's own; the first:\n%s",
		res.failures, res.foreign, strings.Join(res.first, "\n"))
}

func proxyKeysLabel(keys string) string {
	if keys == "" {
		return ""
	}
	return " (" + strings.TrimSpace(keys) + ")"
}

// tokenRE finds every client token in the bytes a client receives.
var tokenRE = regexp.MustCompile(`tok:(c[0-9]+-[0-9]+)`)

// mixResults collects what the clients saw.
type mixResults struct {
	requests    atomic.Int64
	proxyErrors atomic.Int64
	mu          sync.Mutex
	failures    int
	foreign     int
	first       []string
}

func (r *mixResults) fail(foreign bool, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures++
	if foreign {
		r.foreign++
	}
	if len(r.first) < 8 {
		r.first = append(r.first, fmt.Sprintf(format, args...))
	}
}

// recorder keeps every byte read from a connection since its last reset.
type recorder struct {
	r   io.Reader
	buf bytes.Buffer
}

func (rc *recorder) Read(p []byte) (int, error) {
	n, err := rc.r.Read(p)
	rc.buf.Write(p[:n])
	return n, err
}

// mixClient is one client: keep-alive connections to the proxy, one
// request at a time, every byte it gets checked.
type mixClient struct {
	id   int
	addr string
	gate *quietGate
	res  *mixResults
	rnd  *rand.Rand
	conn net.Conn
	rec  *recorder
	br   *bufio.Reader
}

// runMixClient sends up to mixRequests requests in waves: all the clients
// send one or two requests at the start of each wave, then wait for the
// next. A wave takes connections from the proxy's pool at once, and leaves
// them idle until the next wave, when late bytes come.
func runMixClient(id int, addr string, gate *quietGate, began, stop time.Time, res *mixResults) {
	c := &mixClient{id: id, addr: addr, gate: gate, res: res, rnd: rand.New(rand.NewPCG(uint64(id), 0x6d6978))}
	defer c.closeConn()
	i := 0
	for wave := 0; i < mixRequests; wave++ {
		at := began.Add(time.Duration(wave)*mixWave + time.Duration(c.rnd.IntN(2000))*time.Microsecond)
		if at.After(stop) {
			break
		}
		time.Sleep(time.Until(at))
		for range 1 + c.rnd.IntN(2) {
			if i == mixRequests || time.Now().After(stop) || !c.request(i) {
				break
			}
			i++
		}
	}
	if c.conn == nil {
		return
	}
	// Nothing may follow the last answer either.
	c.rec.buf.Reset()
	_ = c.conn.SetReadDeadline(time.Now().Add(40 * time.Millisecond))
	_, _ = c.br.Peek(1)
	if b := c.rec.buf.Bytes(); len(b) > 0 {
		c.res.fail(bytes.Contains(b, []byte("tok:")), "client c%02d: bytes after its last answer: %q", id, clip(b))
	}
}

func (c *mixClient) closeConn() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// request sends request i and checks its answer; false: the client cannot
// go on.
func (c *mixClient) request(i int) bool {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 2*time.Second)
		if err != nil {
			c.res.fail(false, "client c%02d: dial: %v", c.id, err)
			return false
		}
		c.conn = conn
		c.rec = &recorder{r: conn}
		c.br = bufio.NewReader(c.rec)
	}
	token := fmt.Sprintf("c%02d-%d", c.id, i)
	method, chunked := http.MethodGet, false
	switch n := c.rnd.IntN(8); {
	case n < 2:
		method = http.MethodHead
	case n < 4:
		method, chunked = http.MethodPost, n == 3
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s /t/%s HTTP/1.1\r\nHost: app\r\n", method, token)
	payload := "body of " + token
	switch {
	case chunked:
		fmt.Fprintf(&req, "Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", 5, payload[:5], len(payload)-5, payload[5:])
	case method == http.MethodPost:
		fmt.Fprintf(&req, "Content-Length: %d\r\n\r\n%s", len(payload), payload)
	default:
		req.WriteString("\r\n")
		payload = ""
	}

	c.gate.enter()
	c.res.requests.Add(1)
	c.rec.buf.Reset()
	_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := c.conn.Write(req.Bytes())
	var (
		resp *http.Response
		body []byte
	)
	if err == nil {
		resp, err = http.ReadResponse(c.br, &http.Request{Method: method})
	}
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	c.gate.leave()

	what := fmt.Sprintf("client c%02d, %s /t/%s", c.id, method, token)
	if chunked {
		what += " (chunked body)"
	}
	got := c.rec.buf.Bytes()
	if bad := foreignToken(got, token); bad != "" {
		c.res.fail(true, "%s: got a token not its own, %s, in %q", what, bad, clip(got))
		c.closeConn()
		return true
	}
	if err != nil {
		c.res.fail(false, "%s: no answer: %v (read %q)", what, err, clip(got))
		c.closeConn()
		return true
	}
	if msg := checkMixAnswer(resp, body, method, token, len(payload)); msg != "" {
		c.res.fail(false, "%s: %s in %q", what, msg, clip(got))
		c.closeConn()
		return true
	}
	if n := c.br.Buffered(); n > 0 {
		c.res.fail(false, "%s: %d bytes after the answer in %q", what, n, clip(got))
		c.closeConn()
		return true
	}
	if isProxyError(resp.StatusCode) {
		c.res.proxyErrors.Add(1)
	}
	if resp.Close {
		c.closeConn()
	}
	return true
}

// foreignToken returns the first token in b that is not own, or "".
func foreignToken(b []byte, own string) string {
	for _, m := range tokenRE.FindAllSubmatch(b, -1) {
		if string(m[1]) != own {
			return string(m[1])
		}
	}
	return ""
}

func isProxyError(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// checkMixAnswer returns what is wrong with an answer, or "".
func checkMixAnswer(resp *http.Response, body []byte, method, token string, sent int) string {
	if isProxyError(resp.StatusCode) {
		if v := resp.Header.Get("X-Token"); v != "" {
			return fmt.Sprintf("a proxy error %d with X-Token %q", resp.StatusCode, v)
		}
		return ""
	}
	if v := resp.Header.Get("X-Token"); v != "tok:"+token {
		return fmt.Sprintf("status %d with X-Token %q", resp.StatusCode, v)
	}
	switch {
	case resp.StatusCode == http.StatusOK && method != http.MethodHead:
		if want := fmt.Sprintf("tok:%s %s %d\n", token, method, sent); string(body) != want {
			return fmt.Sprintf("body %q, want %q", body, want)
		}
	case resp.StatusCode == http.StatusOK,
		resp.StatusCode == http.StatusNoContent && method != http.MethodHead,
		resp.StatusCode == http.StatusNotModified && method == http.MethodGet:
		if len(body) > 0 {
			return fmt.Sprintf("status %d with a body", resp.StatusCode)
		}
	default:
		return fmt.Sprintf("unexpected status %d", resp.StatusCode)
	}
	return ""
}

func clip(b []byte) []byte {
	if len(b) > 400 {
		return b[:400]
	}
	return b
}

// A quietGate holds new client requests back, and waits for those in flight
// to finish, while the backend sends late bytes on an idle connection: the
// proxy then has no request it could be sending on that connection, so
// bytes it later takes for an answer had been waiting there before the
// request was sent, where the proxy could have seen them.
type quietGate struct {
	mu       sync.Mutex
	cond     sync.Cond
	inFlight int
	holders  int
}

func newQuietGate() *quietGate {
	g := &quietGate{}
	g.cond.L = &g.mu
	return g
}

// enter waits while the gate is held, then counts a request in flight.
func (g *quietGate) enter() {
	g.mu.Lock()
	for g.holders > 0 {
		g.cond.Wait()
	}
	g.inFlight++
	g.mu.Unlock()
}

func (g *quietGate) leave() {
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
}

func (g *quietGate) hold() {
	g.mu.Lock()
	g.holders++
	g.mu.Unlock()
}

func (g *quietGate) release() {
	g.mu.Lock()
	g.holders--
	if g.holders == 0 {
		g.cond.Broadcast()
	}
	g.mu.Unlock()
}

func (g *quietGate) quiet() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight == 0
}

// stray is a way the backend sends more than its answer.
type stray int

const (
	strayNone         stray = iota
	strayHeadBody           // a HEAD answer with Content-Length: N, then N bytes
	strayAfter204           // bytes after a 204 answer
	strayAfter304           // bytes after a 304 answer (with Content-Length: N)
	strayBeyondLength       // more bytes than the Content-Length
	strayKinds
)

func (s stray) String() string {
	return [...]string{"none", "HEAD body", "after 204", "after 304", "beyond Content-Length"}[s]
}

type strayCounts struct {
	total  int64
	byKind [strayKinds]int64
}

func (s strayCounts) String() string {
	var parts []string
	for k := strayHeadBody; k < strayKinds; k++ {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.byKind[k]))
	}
	return strings.Join(parts, ", ")
}

// mixBackend is a keep-alive HTTP/1.1 backend on a raw socket that answers
// /t/<token> with the token, and now and then sends more than its answer.
type mixBackend struct {
	ln   net.Listener
	gate *quietGate
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	answers     atomic.Int64
	sent        [2][strayKinds]atomic.Int64 // [late][kind]
	lateSkipped atomic.Int64
}

func startMixBackend(t *testing.T) *mixBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &mixBackend{ln: ln, gate: newQuietGate(), conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *mixBackend) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *mixBackend) strays(late bool) strayCounts {
	i := 0
	if late {
		i = 1
	}
	var s strayCounts
	for k := strayHeadBody; k < strayKinds; k++ {
		s.byKind[k] = b.sent[i][k].Load()
		s.total += s.byKind[k]
	}
	return s
}

func (b *mixBackend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			_ = c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go b.serve(c)
	}
}

func (b *mixBackend) serve(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		_ = c.Close()
	}()
	br := bufio.NewReader(c)
	// lateDue: the last late bytes were not sent, as the proxy sent the
	// next request first; the next answer tries again.
	lateDue := false
	for {
		method, path, n, err := readMixRequest(br)
		if err != nil {
			return
		}
		if path == "/health" {
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
			continue
		}
		token, ok := strings.CutPrefix(path, "/t/")
		if !ok {
			if _, err := io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
			continue
		}
		b.answers.Add(1)
		kind := mixKind(method, lateDue)
		late := lateDue || kind != strayNone && rand.IntN(2) == 0
		answer, extra := mixAnswer(method, token, n, kind, late)
		if kind != strayNone && !late {
			answer = append(answer, extra...)
			b.sent[0][kind].Add(1)
		}
		if _, err := c.Write(answer); err != nil {
			return
		}
		if late {
			sent, alive := b.writeLate(c, br, extra, kind)
			if !alive {
				return
			}
			lateDue = !sent
		}
	}
}

// writeLate sends extra 2 to 30 ms after the answer, once no client request
// is in flight, unless the proxy sends the next request on the connection
// first: the extra bytes could then not be told from its answer. It reports
// whether it sent them, and whether the connection is still usable.
func (b *mixBackend) writeLate(c net.Conn, br *bufio.Reader, extra []byte, kind stray) (sent, alive bool) {
	// waitRequest waits up to d for the next request; idle: none came.
	waitRequest := func(d time.Duration) (idle, alive bool) {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := br.Peek(1)
		_ = c.SetReadDeadline(time.Time{})
		var ne net.Error
		switch {
		case err == nil:
			b.lateSkipped.Add(1)
			return false, true
		case errors.As(err, &ne) && ne.Timeout():
			return true, true
		}
		return false, false
	}
	if idle, alive := waitRequest(time.Duration(2000+rand.IntN(28000)) * time.Microsecond); !idle {
		return false, alive
	}
	b.gate.hold()
	defer b.gate.release()
	for giveUp := time.Now().Add(time.Second); !b.gate.quiet(); {
		if time.Now().After(giveUp) {
			b.lateSkipped.Add(1)
			return false, true
		}
		if idle, alive := waitRequest(200 * time.Microsecond); !idle {
			return false, alive
		}
	}
	if _, err := c.Write(extra); err != nil {
		return false, false
	}
	b.sent[1][kind].Add(1)
	time.Sleep(mixSettle)
	return true, true
}

// mixKind picks how the backend answers a request: half of the answers
// misbehave, or all when misbehave is set.
func mixKind(method string, misbehave bool) stray {
	switch {
	case !misbehave && rand.IntN(2) == 0:
		return strayNone
	case method == http.MethodHead:
		return strayHeadBody
	case method == http.MethodGet:
		return []stray{strayAfter204, strayAfter304, strayBeyondLength}[rand.IntN(3)]
	}
	return []stray{strayAfter204, strayBeyondLength}[rand.IntN(2)]
}

// mixAnswer returns the backend's answer to method /t/<token> with n body
// bytes, and the bytes of misbehaviour kind it sends after it (nil for
// strayNone), late or at once.
func mixAnswer(method, token string, n int, kind stray, late bool) (answer, extra []byte) {
	body := fmt.Sprintf("tok:%s %s %d\n", token, method, n)
	if kind != strayNone {
		extra = foreignAnswer(token, kind, late)
	}
	head := func(status string, length int) []byte {
		h := "HTTP/1.1 " + status + "\r\nX-Token: tok:" + token + "\r\n"
		if length >= 0 {
			h += "Content-Length: " + strconv.Itoa(length) + "\r\n"
		}
		return []byte(h + "\r\n")
	}
	switch kind {
	case strayHeadBody:
		return head("200 OK", len(extra)), extra
	case strayAfter204:
		length := -1
		if rand.IntN(2) == 0 {
			length = len(extra) // as if the body were meant
		}
		return head("204 No Content", length), extra
	case strayAfter304:
		return head("304 Not Modified", len(extra)), extra
	}
	answer = head("200 OK", len(body))
	if method != http.MethodHead {
		answer = append(answer, body...)
	}
	return answer, extra
}

// foreignAnswer is a complete answer to another client's GET; X-Stray says
// which misbehaviour sent it.
func foreignAnswer(token string, kind stray, late bool) []byte {
	var own int
	_, _ = fmt.Sscanf(token, "c%d-", &own)
	other := fmt.Sprintf("c%02d-%d", (own+1+rand.IntN(mixClients-1))%mixClients, rand.IntN(mixRequests))
	body := fmt.Sprintf("tok:%s GET 0\n", other)
	when := "at once"
	if late {
		when = "late"
	}
	return fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Token: tok:%s\r\nX-Stray: %s, %s\r\n\r\n%s",
		len(body), other, kind, when, body)
}

// readMixRequest reads one request and its body (by Content-Length or
// chunked), returning the method, path and the body's length.
func readMixRequest(br *bufio.Reader) (method, path string, n int, err error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", "", 0, err
	}
	f := strings.Fields(line)
	if len(f) != 3 {
		return "", "", 0, fmt.Errorf("request line %q", line)
	}
	method, path = f[0], f[1]
	length, chunked := 0, false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", "", 0, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return "", "", 0, fmt.Errorf("header line %q", line)
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			if length, err = strconv.Atoi(value); err != nil {
				return "", "", 0, err
			}
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		}
	}
	if !chunked {
		_, err = br.Discard(length)
		return method, path, length, err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", "", 0, err
		}
		size, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		s, err := strconv.ParseInt(size, 16, 32)
		if err != nil {
			return "", "", 0, err
		}
		if s == 0 {
			break
		}
		if _, err := br.Discard(int(s) + 2); err != nil {
			return "", "", 0, err
		}
		n += int(s)
	}
	for { // trailer
		line, err := br.ReadString('\n')
		if err != nil {
			return "", "", 0, err
		}
		if strings.TrimRight(line, "\r\n") == "" {
			return method, path, n, nil
		}
	}
}
