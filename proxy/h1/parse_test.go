package h1

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fieldValue returns the value of the first field named name.
func (h *head) fieldValue(name string) (string, bool) {
	for _, f := range h.fields {
		if equalFold(f.name, strings.ToLower(name)) {
			return string(f.value), true
		}
	}
	return "", false
}

func TestParseRequestAcceptsValidHeads(t *testing.T) {
	many := "GET /many HTTP/1.1\r\nHost: h\r\n"
	for i := range 100 {
		many += "X-Field-" + strings.Repeat("a", i%7) + ": v\r\n"
	}
	many += "\r\n"

	cases := []struct {
		name  string
		raw   string
		check func(t *testing.T, h *head)
	}{
		{"content-length repeated alike", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", func(t *testing.T, h *head) {
			assert.EqualValues(t, 3, h.contentLength)
		}},
		{"origin form", "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, "GET", string(h.method))
			assert.Equal(t, "/index.html?q=1", string(h.target))
			assert.Equal(t, 1, h.minor)
			assert.Equal(t, "example.com", string(h.host))
			assert.EqualValues(t, -1, h.contentLength)
			assert.False(t, h.chunked)
			assert.False(t, h.close, "HTTP/1.1 is persistent by default")
		}},
		{"absolute form", "GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, "/a/b?c=d", string(h.target), "the backend gets the origin form")
			assert.Equal(t, "example.com:8080", string(h.host))
		}},
		{"absolute form: its authority wins over Host", "GET HTTPS://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, "/x", string(h.target))
			assert.Equal(t, "a.example", string(h.host))
		}},
		{"absolute form without a path", "GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, "/", string(h.target))
			assert.Equal(t, "a.example", string(h.host))
		}},
		{"one empty line before the request line", "\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, "/a", string(h.target))
			assert.Equal(t, "h", string(h.host))
		}},
		{"IPv6 literal Host with a port", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, "[::1]:8080", string(h.host))
		}},
		{"asterisk form", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, "OPTIONS", string(h.method))
			assert.Equal(t, "*", string(h.target))
		}},
		{"HTTP/1.0 closes by default", "GET / HTTP/1.0\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 0, h.minor)
			assert.True(t, h.close)
			assert.Empty(t, h.fields)
		}},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 0, h.minor)
			assert.True(t, h.keepAlive)
			assert.False(t, h.close)
		}},
		{"HTTP/1.1 Connection close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", func(t *testing.T, h *head) {
			assert.True(t, h.close)
		}},
		{"many fields", many, func(t *testing.T, h *head) {
			assert.Len(t, h.fields, 101)
			assert.Equal(t, "X-Field-", string(h.fields[1].name))
			assert.Equal(t, "v", string(h.fields[100].value))
		}},
		{"values trimmed, empty allowed", "GET / HTTP/1.1\r\nHost: h\r\nX-A:   spaced  value \t \r\nX-B:\t\ttab\r\nX-Empty:\r\nX-Blank:   \r\n\r\n", func(t *testing.T, h *head) {
			v, _ := h.fieldValue("X-A")
			assert.Equal(t, "spaced  value", v, "inner spaces stay, outer ones go")
			v, _ = h.fieldValue("X-B")
			assert.Equal(t, "tab", v)
			v, ok := h.fieldValue("X-Empty")
			assert.True(t, ok)
			assert.Empty(t, v)
			v, ok = h.fieldValue("X-Blank")
			assert.True(t, ok)
			assert.Empty(t, v)
		}},
		{"obs-text and tab inside a value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: caf\xc3\xa9\tnoir\r\n\r\n", func(t *testing.T, h *head) {
			v, _ := h.fieldValue("X-A")
			assert.Equal(t, "caf\xc3\xa9\tnoir", v)
		}},
		{"content length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0042\r\n\r\n", func(t *testing.T, h *head) {
			assert.EqualValues(t, 42, h.contentLength)
		}},
		{"same content length twice", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", func(t *testing.T, h *head) {
			assert.EqualValues(t, 5, h.contentLength)
		}},
		{"chunked, any case", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", func(t *testing.T, h *head) {
			assert.True(t, h.chunked)
			assert.EqualValues(t, -1, h.contentLength)
		}},
		{"expect 100-continue", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", func(t *testing.T, h *head) {
			assert.True(t, h.expect100)
		}},
		{"connection tokens", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\n\r\n", func(t *testing.T, h *head) {
			assert.True(t, h.connTokens)
			h.dropConnectionTokens()
			for _, f := range h.fields {
				if equalFold(f.name, "x-foo") {
					assert.Equal(t, kindDropped, f.kind)
				}
			}
		}},
		{"upgrade needs both fields", "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", func(t *testing.T, h *head) {
			assert.True(t, h.upgrade)
			assert.Equal(t, "websocket", string(h.upgradeValue))
		}},
		{"upgrade field alone is no upgrade", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", func(t *testing.T, h *head) {
			assert.False(t, h.upgrade)
		}},
		{"field kinds", "GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nKeep-Alive: 5\r\nProxy-Authorization: x\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\nX-Other: y\r\n\r\n", func(t *testing.T, h *head) {
			kinds := []uint8{kindHost, kindHop, kindHop, kindHop, kindXFF, kindForwarded, kindOther}
			require.Len(t, h.fields, len(kinds))
			for i, k := range kinds {
				assert.Equal(t, k, h.fields[i].kind, string(h.fields[i].name))
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h head
			require.NoError(t, h.parseRequest([]byte(c.raw)))
			c.check(t, &h)
			// The head owns its bytes: the input may be reused at once.
			raw := []byte(c.raw)
			var h2 head
			require.NoError(t, h2.parseRequest(raw))
			for i := range raw {
				raw[i] = 'Z'
			}
			c.check(t, &h2)
		})
	}
}

func TestParseRequestRefusesAmbiguousOrInvalidHeads(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		want error
	}{
		// Framing the proxy and a backend could read differently.
		{"content-length and transfer-encoding", "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", errMalformed},
		{"transfer-encoding then content-length", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", errMalformed},
		{"two different content-lengths", "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", errMalformed},
		{"same length written two ways", "POST / HTTP/1.1\r\nContent-Length: 03\r\nContent-Length: 3\r\n\r\n", errMalformed},
		{"content-length list", "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", errMalformed},
		{"content-length not digits", "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", errMalformed},
		{"content-length hex", "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", errMalformed},
		{"content-length negative", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", errMalformed},
		{"content-length plus sign", "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", errMalformed},
		{"content-length inner space", "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", errMalformed},
		{"content-length empty", "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", errMalformed},
		{"content-length huge", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", errMalformed},
		{"content-length past int64", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", errMalformed},
		{"obs-fold with space", "GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n", errMalformed},
		{"obs-fold with tab", "GET / HTTP/1.1\r\nX-A: one\r\n\ttwo\r\n\r\n", errMalformed},
		{"first field folded", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", errMalformed},
		{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", errMalformed},
		{"tab before colon", "GET / HTTP/1.1\r\nContent-Length\t: 5\r\n\r\n", errMalformed},
		{"space in name", "GET / HTTP/1.1\r\nX Foo: h\r\n\r\n", errMalformed},
		{"separator in name", "GET / HTTP/1.1\r\nX(Foo): h\r\n\r\n", errMalformed},
		{"quote in name", "GET / HTTP/1.1\r\nX\"Foo: h\r\n\r\n", errMalformed},
		{"empty name", "GET / HTTP/1.1\r\n: h\r\n\r\n", errMalformed},
		{"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", errMalformed},
		{"NUL in value", "GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", errMalformed},
		{"DEL in value", "GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", errMalformed},
		{"CR in value", "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", errMalformed},
		{"control char in value", "GET / HTTP/1.1\r\nX-A: \x01\r\n\r\n", errMalformed},
		{"bare LF between fields", "GET / HTTP/1.1\r\nHost: h\nX-Smuggled: 1\r\n\r\n", errMalformed},
		{"bare LF before the empty line", "GET / HTTP/1.1\r\nHost: h\n\r\n", errMalformed},
		{"bare LF after the request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", errMalformed},
		{"bare LF only", "GET / HTTP/1.1\nHost: h\n\n", errMalformed},
		{"no empty line", "GET / HTTP/1.1\r\nHost: h\r\n", errMalformed},
		// Transfer codings.
		{"gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", errCoding},
		{"identity", "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", errCoding},
		// chunked must be the last coding (RFC 9112 6.3).
		{"chunked then gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", errMalformed},
		{"chunked field then gzip field", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", errMalformed},
		// The proxy removes Transfer-Encoding and re-frames the body with
		// Content-Length: a gzip coding under chunked would reach the
		// backend as if the body were not coded at all.
		{"gzip then chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", errCoding},
		{"chunked twice in one field", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", errMalformed},
		{"chunked twice in two fields", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", errMalformed},
		{"HTTP/1.0 with chunked", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", errMalformed},
		{"HTTP/1.0 with gzip", "POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n", errMalformed},
		// Versions.
		{"HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", errVersion},
		{"HTTP/1.2", "GET / HTTP/1.2\r\n\r\n", errVersion},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", errVersion},
		{"HTTP/1.10 (one digit each, RFC 9112 2.3)", "GET / HTTP/1.10\r\n\r\n", errMalformed},
		{"lower-case version", "GET / http/1.1\r\n\r\n", errMalformed},
		{"not HTTP", "GET / FOO/1.1\r\n\r\n", errMalformed},
		// The request line.
		{"empty request line", "\r\n\r\n", errMalformed},
		{"method only", "GET\r\n\r\n", errMalformed},
		{"no version", "GET /\r\n\r\n", errMalformed},
		{"empty version", "GET / \r\n\r\n", errMalformed},
		{"no target", "GET  HTTP/1.1\r\n\r\n", errMalformed},
		{"no method", " / HTTP/1.1\r\n\r\n", errMalformed},
		{"space in target", "GET /a b HTTP/1.1\r\n\r\n", errMalformed},
		{"control char in target", "GET /a\x01b HTTP/1.1\r\n\r\n", errMalformed},
		{"DEL in target", "GET /a\x7f HTTP/1.1\r\n\r\n", errMalformed},
		{"separator in method", "G(T / HTTP/1.1\r\n\r\n", errMalformed},
		{"absolute form, not http", "GET ftp://a.example/x HTTP/1.1\r\n\r\n", errMalformed},
		{"absolute form, no authority", "GET http:///x HTTP/1.1\r\n\r\n", errMalformed},
		{"relative target", "GET a/b HTTP/1.1\r\n\r\n", errMalformed},
		{"two Host fields", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", errMalformed},
		{"CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", errConnect},
		{"a path and user information in Host", "GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n", errMalformed},
		{"user information in Host", "GET / HTTP/1.1\r\nHost: u@c\r\n\r\n", errMalformed},
		{"a space in Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", errMalformed},
		{"user information in the target", "GET http://u:p@evil/x HTTP/1.1\r\nHost: evil\r\n\r\n", errMalformed},
		{"absolute form without Host", "GET http://a.example/x HTTP/1.1\r\n\r\n", errMalformed},
		{"asterisk form with GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", errMalformed},
		{"asterisk with more", "OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n", errMalformed},
		{"Transfer-Encoding naming no coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", errMalformed},
		{"Transfer-Encoding naming no coding, with a length", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\nContent-Length: 3\r\n\r\n", errMalformed},
		{"Transfer-Encoding of commas, with a length", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\nContent-Length: 3\r\n\r\n", errMalformed},
		{"two empty lines before the request line", "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", errMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h head
			err := h.parseRequest([]byte(c.raw))
			assert.ErrorIs(t, err, c.want)
		})
	}
}

func TestParseResponseHeads(t *testing.T) {
	cases := []struct {
		name  string
		raw   string
		check func(t *testing.T, h *head)
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 200, h.status)
			assert.Equal(t, "OK", string(h.reason))
			assert.EqualValues(t, 5, h.contentLength)
			assert.False(t, h.close)
		}},
		{"no reason phrase", "HTTP/1.1 200\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 200, h.status)
			assert.Empty(t, h.reason)
		}},
		{"empty reason phrase", "HTTP/1.1 404 \r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 404, h.status)
			assert.Empty(t, h.reason)
		}},
		{"reason with spaces", "HTTP/1.1 404 Not Found Here\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, "Not Found Here", string(h.reason))
		}},
		{"100 continue", "HTTP/1.1 100 Continue\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 100, h.status)
		}},
		{"103 early hints", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 103, h.status)
			assert.Len(t, h.fields, 1)
		}},
		{"599", "HTTP/1.1 599 Whatever\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 599, h.status)
		}},
		{"transfer-encoding wins over content-length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n", func(t *testing.T, h *head) {
			assert.True(t, h.chunked)
			assert.EqualValues(t, -1, h.contentLength)
			assert.True(t, h.close, "a message with both framings must not be followed by another on that connection")
		}},
		{"chunked alone keeps the connection", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", func(t *testing.T, h *head) {
			assert.True(t, h.chunked)
			assert.False(t, h.close)
		}},
		{"non-chunked coding is read until close", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 10\r\n\r\n", func(t *testing.T, h *head) {
			assert.False(t, h.chunked)
			assert.True(t, h.otherCoding)
			assert.EqualValues(t, -1, h.contentLength)
			assert.True(t, h.close)
		}},
		{"HTTP/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", func(t *testing.T, h *head) {
			assert.Equal(t, 0, h.minor)
			assert.True(t, h.close)
		}},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", func(t *testing.T, h *head) {
			assert.False(t, h.close)
		}},
		{"Connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", func(t *testing.T, h *head) {
			assert.True(t, h.close)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h head
			require.NoError(t, h.parseResponse([]byte(c.raw)))
			c.check(t, &h)
		})
	}
}

func TestParseResponseRefusesMalformedHeads(t *testing.T) {
	for _, raw := range []string{
		"garbage\r\n\r\n",
		"\r\n\r\n",
		"HTTP/1.1\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 200OK\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n",
		"HTTP/1.1 abc OK\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"HTTP/1.1 600 High\r\n\r\n",
		"HTTP/1.2 200 OK\r\n\r\n",
		"HTTP/2 200 OK\r\n\r\n",
		"http/1.1 200 OK\r\n\r\n",
		"ICY 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Field: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: \x00\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
	} {
		var h head
		assert.ErrorIs(t, h.parseResponse([]byte(raw)), errBadResponse, "%q", raw)
	}
}

func TestChunkSizeLines(t *testing.T) {
	valid := []struct {
		line string
		want int
	}{
		{"0\r\n", 0},
		{"5\r\n", 5},
		{"a\r\n", 10},
		{"A\r\n", 10},
		{"1F\r\n", 31},
		{"00000010\r\n", 16},
		{"40000000\r\n", 1 << 30},
		{"5;name=value\r\n", 5},
		{"5;a=1;b=\"q;x\"\r\n", 5},
		{"5 ;ext\r\n", 5},
		{"5\t\r\n", 5},
	}
	for _, c := range valid {
		n, err := chunkSize(bufio.NewReader(strings.NewReader(c.line)))
		if assert.NoError(t, err, "%q", c.line) {
			assert.Equal(t, c.want, n, "%q", c.line)
		}
	}
	for _, line := range []string{
		"\r\n",
		";ext\r\n",
		"123456789\r\n", // too long
		"000000001\r\n", // too long, even with leading zeros
		"g\r\n",
		"-1\r\n",
		"+1\r\n",
		"0x5\r\n",
		"5 5\r\n",
		"5\n", // bare LF
		"5\r", // no LF
		"5",   // no line end
		"5\rx\n",
		"ffffffff\r\n", // beyond any body limit (and int on 32-bit)
		"40000001\r\n",
		" 3\r\n", // whitespace before the size: not in the grammar
		"\t3\r\n",
		"3;a\rb\r\n", // a bare CR in an extension
		"0;\r\r\n",
		"3;a\x00\r\n",
	} {
		_, err := chunkSize(bufio.NewReader(strings.NewReader(line)))
		assert.ErrorIs(t, err, errBadChunk, "%q", line)
	}
}

func TestReadChunkedBody(t *testing.T) {
	read := func(s string, limit int) ([]byte, error) {
		var bd body
		_, err := readChunked(bufio.NewReader(strings.NewReader(s)), &bd, limit, nil)
		var b []byte
		for _, ch := range bd.chunks {
			b = append(b, ch...)
		}
		return b, err
	}
	b, err := read("5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n", 100)
	require.NoError(t, err)
	assert.Equal(t, "hello, world", string(b))

	b, err = read("0\r\n\r\n", 100)
	require.NoError(t, err)
	assert.Empty(t, b)

	for _, bad := range []string{
		"5\r\nhelloX\r\n0\r\n\r\n", // data longer than its size
		"5\r\nhel",                 // cut short
		"5\r\nhello\r\n",           // no last chunk
		"5\r\nhello\r\n0\r\n",      // no end of trailer
		"z\r\n",
	} {
		_, err := read(bad, 100)
		assert.ErrorIs(t, err, errBadChunk, "%q", bad)
	}
	_, err = read("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 9)
	assert.ErrorIs(t, err, errBodyTooBig)
}

// requestSeeds and responseSeeds start the fuzzers.
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
	"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	"GET / HTTP/1.1\r\nConnection: Upgrade, X-Foo\r\nUpgrade: websocket\r\nX-Foo: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
	"GET / HTTP/1.1\nHost: h\r\n\r\n",
	"GET / HTTP/2.0\r\n\r\n",
	"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
	"\r\n\r\n",
	"",
	"G",
	"GET / HTTP/1.1",
	"GET / HTTP/1.1\r\n",
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 200\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"HTTP/1.1 2000 OK\r\n\r\n",
	"garbage\r\n\r\n",
	"",
	"HTTP/1.1 200 OK",
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h head
		err := h.parseRequest(data)
		// A reused head gives the same answer.
		var again head
		_ = again.parseRequest([]byte("POST /x HTTP/1.0\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"))
		err2 := again.parseRequest(data)
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("a fresh head says %v, a reused one %v", err, err2)
		}
		if err != nil {
			return
		}
		if h.chunked && h.contentLength >= 0 {
			t.Fatal("accepted with both chunked and Content-Length")
		}
		if h.otherCoding {
			t.Fatal("accepted with a coding the engine does not decode")
		}
		if h.contentLength < -1 {
			t.Fatalf("content length %d", h.contentLength)
		}
		if h.minor != 0 && h.minor != 1 {
			t.Fatalf("minor version %d", h.minor)
		}
		if h.minor == 0 && (h.chunked || !h.keepAlive && !h.close) {
			t.Fatal("HTTP/1.0: chunked, or persistent without keep-alive")
		}
		if !isToken(h.method) || !validTarget(h.target) {
			t.Fatalf("method %q target %q", h.method, h.target)
		}
		if h.upgrade && !h.hasUpgradeHdr {
			t.Fatal("upgrade without an Upgrade field")
		}
		checkFields(t, &h)
		if again.contentLength != h.contentLength || again.chunked != h.chunked || len(again.fields) != len(h.fields) || again.close != h.close {
			t.Fatal("a reused head parsed differently")
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h head
		if err := h.parseResponse(data); err != nil {
			if err != errBadResponse {
				t.Fatalf("error %v, want errBadResponse", err)
			}
			return
		}
		if h.status < 100 || h.status > 599 {
			t.Fatalf("status %d", h.status)
		}
		if h.chunked && h.contentLength >= 0 {
			t.Fatal("chunked with a Content-Length")
		}
		if h.otherCoding && (h.chunked || !h.close || h.contentLength >= 0) {
			t.Fatal("a body of unknown coding that does not end with the connection")
		}
		if h.minor == 0 && !h.keepAlive && !h.close {
			t.Fatal("HTTP/1.0 persistent without keep-alive")
		}
		if !fieldValueOK(h.reason) {
			t.Fatalf("reason %q", h.reason)
		}
		checkFields(t, &h)
	})
}

// FuzzChunkSize: chunk-size lines never panic and sizes stay in range.
func FuzzChunkSize(f *testing.F) {
	for _, s := range []string{"0\r\n", "5;a=b\r\n", "ffffffff\r\n", "123456789\r\n", "\r\n", "5\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := chunkSize(bufio.NewReader(bytes.NewReader(data)))
		if err == nil && (n < 0 || n > 0xffffffff) {
			t.Fatalf("size %d", n)
		}
	})
}

func checkFields(t *testing.T, h *head) {
	for _, f := range h.fields {
		if !isToken(f.name) {
			t.Fatalf("field name %q is not a token", f.name)
		}
		if !fieldValueOK(f.value) || bytes.ContainsAny(f.value, "\r\n") {
			t.Fatalf("field value %q", f.value)
		}
		if len(f.value) > 0 && (f.value[0] == ' ' || f.value[0] == '\t' || f.value[len(f.value)-1] == ' ' || f.value[len(f.value)-1] == '\t') {
			t.Fatalf("field value %q not trimmed", f.value)
		}
	}
}

// fieldValueOK: no control characters other than HTAB (RFC 9110 5.5).
func fieldValueOK(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
