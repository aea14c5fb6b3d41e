// Compared by hand with HAProxy 2.6.12 (Debian 12) on loopback, in front of
// a frontend answering "src=%[src] port=%[src_port]": once with
// "bind 127.0.0.1:18443 accept-proxy", once with "tcp-request connection
// expect-proxy layer4 if { src ... }" for a trusted and an untrusted peer.
// Each sequence was followed by "GET /where HTTP/1.1" in the same write.
//
// The same here:
//   - "PROXY TCP4 203.0.113.10 192.0.2.1 56324 443\r\n": src 203.0.113.10:56324.
//   - the same line with a trailing " junk" before the CRLF: refused
//     ("Received an invalid PROXY protocol header", connection reset); here
//     an error (the library wants exactly six fields).
//   - "PROXY garbage\r\n", a v1 line ending in LF without CR, and a v1 line
//     without CRLF in its first 107 bytes: refused; here errors.
//   - "PROXY UNKNOWN\r\n": the connection's own address.
//   - v2 PROXY over IPv4, with and without an AWS TLV (0xEA): 203.0.113.10:56324.
//   - v2 LOCAL (family UNSPEC, length 0), LOCAL with an IPv4 block, LOCAL
//     with a UDP family: the connection's own address.
//   - v2 with version 1 in the 13th byte: refused ("does not look like a
//     PROXY protocol header"); here an error.
//   - v2 PROXY with family UNSPEC, UDP over IPv4 or IPv6, or UNIX stream:
//     refused ("invalid PROXY protocol header"); here errors too, on purpose
//     (no TCP client to name).
//   - expect-proxy: a matching peer's header is used; a peer not matching
//     that sends one gets 400, its header parsed as a request. Here that
//     peer gets ErrUntrusted: refused either way.
//
// Different, on purpose:
//   - a header split over writes 200 ms apart (v1 "PRO", "XY TC", ...; v2
//     the signature's first 5 bytes, the next 7, ...): HAProxy 2.6 refuses
//     at the first partial read ("Truncated PROXY protocol header
//     received"). Here Read waits for the rest until the deadline, as the
//     specification recommends ("be tolerant").
//   - no header from a peer that may send one: accept-proxy and a matching
//     expect-proxy refuse the connection; here it is served as itself (a
//     load balancer's health checks send none).
//   - "PROXY UNKNOWN 203.0.113.10 192.0.2.1 56324 443\r\n": HAProxy 2.6
//     refuses ("unhandled protocol"); the specification says a receiver
//     ignores what follows UNKNOWN up to the CRLF, and the library does:
//     the connection's own address.
//   - a v1 source port of 65536: HAProxy takes it, as port 0; here an
//     error (the library checks the range).
//   - "PROXY TCP6 ::ffff:203.0.113.10 ...": HAProxy keeps src as
//     ::ffff:203.0.113.10; here it is unmapped to 203.0.113.10 (the same
//     client for geo; X-Forwarded-For shows the IPv4 form).
//   - "PROX" and then the peer's end: HAProxy refuses a truncated header;
//     here the bytes are not a header and stay for the server, which sees
//     a truncated request. Neither serves anything.

package proxyheader

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ioTimeout bounds every read, write and header wait a test makes.
const ioTimeout = 5 * time.Second

// request is what a client sends after the header: it must reach the server
// intact.
const request = "GET /where HTTP/1.1\r\nHost: proxy.test\r\n\r\n"

// pair returns the two ends of a new loopback TCP connection.
func pair(t *testing.T) (srv, cli *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	cli, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	require.NoError(t, ln.SetDeadline(time.Now().Add(ioTimeout)))
	srv, err = ln.AcceptTCP()
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	require.NoError(t, cli.SetDeadline(time.Now().Add(ioTimeout)))
	return srv, cli
}

// peerAddr is srv's peer, as Read returns it when no header names another.
func peerAddr(t *testing.T, srv *net.TCPConn) netip.AddrPort {
	t.Helper()
	ap := srv.RemoteAddr().(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// rest ends the client's side and returns all srv has left to read.
func rest(t *testing.T, srv, cli *net.TCPConn) string {
	t.Helper()
	require.NoError(t, cli.CloseWrite())
	require.NoError(t, srv.SetReadDeadline(time.Now().Add(ioTimeout)))
	b, err := io.ReadAll(srv)
	require.NoError(t, err)
	return string(b)
}

func send(t *testing.T, cli *net.TCPConn, b []byte) {
	t.Helper()
	_, err := cli.Write(b)
	require.NoError(t, err)
}

func trustAll(netip.Addr) bool  { return true }
func trustNone(netip.Addr) bool { return false }

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// v2Sig is the version 2 signature, in hex.
const v2Sig = "0d0a0d0a000d0a515549540a"

// format renders h with the library's writer, with tlvs.
func format(t *testing.T, h *proxyproto.Header, tlvs ...proxyproto.TLV) []byte {
	t.Helper()
	if len(tlvs) > 0 {
		require.NoError(t, h.SetTLVs(tlvs))
	}
	b, err := h.Format()
	require.NoError(t, err)
	return b
}

func tcp(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// A header from a trusted peer, then a request in the same write: the
// header's client address comes back, and the request is all still there.
func TestHeaderNamesTheClient(t *testing.T) {
	t.Parallel()
	awsTLV := proxyproto.TLV{Type: 0xEA, Value: append([]byte{0x01}, "vpce-0123456789abcdef0"...)}
	for _, tc := range []struct {
		name   string
		header []byte
		want   string // "": the peer's own address
	}{
		{"v1 TCP4", []byte("PROXY TCP4 203.0.113.10 192.0.2.1 56324 443\r\n"), "203.0.113.10:56324"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8:1::1 2001:db8::2 4000 80\r\n"), "[2001:db8:1::1]:4000"},
		{"v1 TCP6 IPv4-mapped", []byte("PROXY TCP6 ::ffff:203.0.113.10 ::ffff:192.0.2.1 4000 80\r\n"), "203.0.113.10:4000"},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), ""},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN 203.0.113.10 192.0.2.1 56324 443\r\n"), ""},
		{"v1 longest", []byte("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), ""},
		{"v2 PROXY IPv4", mustHex(v2Sig + "21 11 000c cb00710a c0000201 dc04 01bb"), "203.0.113.10:56324"},
		{"v2 PROXY IPv6", format(t, proxyproto.HeaderProxyFromAddrs(2, tcp("[2001:db8:1::1]:4000"), tcp("[2001:db8::2]:80"))), "[2001:db8:1::1]:4000"},
		{"v2 PROXY IPv6 IPv4-mapped", mustHex(v2Sig + "21 21 0024" +
			"00000000000000000000ffffcb00710a" + "00000000000000000000ffffc0000201" + "0fa0 0050"), "203.0.113.10:4000"},
		{"v2 LOCAL", mustHex(v2Sig + "20 00 0000"), ""},
		{"v2 LOCAL with addresses", mustHex(v2Sig + "20 11 000c cb00710a c0000201 dc04 01bb"), ""},
		{"v2 with an AWS TLV", format(t, proxyproto.HeaderProxyFromAddrs(2, tcp("203.0.113.10:56324"), tcp("192.0.2.1:443")), awsTLV), "203.0.113.10:56324"},
		{"v2 with TLVs over 2 KiB", format(t, proxyproto.HeaderProxyFromAddrs(2, tcp("203.0.113.70:1"), tcp("192.0.2.1:443")),
			awsTLV, proxyproto.TLV{Type: proxyproto.PP2_TYPE_NOOP, Value: bytes.Repeat([]byte{0}, 2500)}), "203.0.113.70:1"},
		{"v2 LOCAL UDP", mustHex(v2Sig + "20 12 000c cb00710a c0000201 dc04 01bb"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, cli := pair(t)
			var asked atomic.Value
			trusted := func(a netip.Addr) bool { asked.Store(a); return true }
			send(t, cli, append(append([]byte(nil), tc.header...), request...))
			got, err := Read(srv, trusted, time.Now().Add(ioTimeout))
			require.NoError(t, err)
			want := peerAddr(t, srv)
			if tc.want != "" {
				want = netip.MustParseAddrPort(tc.want)
			}
			assert.Equal(t, want, got)
			assert.Equal(t, netip.MustParseAddr("127.0.0.1"), asked.Load(), "trusted is asked about the peer")
			assert.Equal(t, request, rest(t, srv, cli), "the request after the header is intact")
		})
	}
}

// A header that arrives in pieces, a signature's first bytes alone, is
// waited for; Read wakes up as the pieces come, not at the deadline.
func TestHeaderInPieces(t *testing.T) {
	t.Parallel()
	v2 := format(t, proxyproto.HeaderProxyFromAddrs(2, tcp("203.0.113.10:56324"), tcp("192.0.2.1:443")),
		proxyproto.TLV{Type: 0xEA, Value: append([]byte{0x01}, "vpce-0123456789abcdef0"...)})
	v1 := []byte("PROXY TCP4 203.0.113.10 192.0.2.1 56324 443\r\n")
	for _, tc := range []struct {
		name   string
		pieces [][]byte
	}{
		{"v1", [][]byte{v1[:3], v1[3:8], v1[8:30], append(v1[30:], request...)}},
		{"v1 CRLF split", [][]byte{v1[:len(v1)-1], append(v1[len(v1)-1:], request...)}},
		{"v2", [][]byte{v2[:5], v2[5:12], v2[12:15], v2[15:20], append(v2[20:], request...)}},
		{"v2 then the request", [][]byte{v2[:1], v2[1:], []byte(request)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, cli := pair(t)
			go func() {
				for _, p := range tc.pieces {
					if _, err := cli.Write(p); err != nil {
						return
					}
					time.Sleep(30 * time.Millisecond)
				}
			}()
			start := time.Now()
			got, err := Read(srv, trustAll, start.Add(ioTimeout))
			require.NoError(t, err)
			assert.Equal(t, netip.MustParseAddrPort("203.0.113.10:56324"), got)
			assert.Less(t, time.Since(start), ioTimeout/2, "Read woke up as the pieces came")
			time.Sleep(30 * time.Millisecond * time.Duration(len(tc.pieces))) // the writer is done
			assert.Equal(t, request, rest(t, srv, cli))
		})
	}
}

// A trusted peer may send no header (a health check); Read then consumes
// nothing, and does not ask whether the peer is trusted.
func TestTrustedPeerWithoutHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, first string }{
		{"GET", request},
		{"CRLF then GET", "\r\n" + request},
		{"two CRLFs then GET", "\r\n\r\nGET / HTTP/1.0\r\n\r\n"},
		{"PUT", "PUT / HTTP/1.1\r\n\r\n"},
		{"PROPFIND", "PROPFIND / HTTP/1.1\r\n\r\n"},
		{"PROXYX", "PROXYX / HTTP/1.1\r\n\r\n"},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\n"},
		{"TLS record", "\x16\x03\x01\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			first := tc.first
			srv, cli := pair(t)
			asked := false
			send(t, cli, []byte(first))
			got, err := Read(srv, func(netip.Addr) bool { asked = true; return true }, time.Now().Add(ioTimeout))
			require.NoError(t, err)
			assert.Equal(t, peerAddr(t, srv), got)
			assert.False(t, asked)
			assert.Equal(t, first, rest(t, srv, cli))
		})
	}
}

// A peer that ends its side early: bytes that can no longer become a header
// are left for the server; a header cut short is an error.
func TestPeerEndsEarly(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("only Linux tells a peer's end (POLLRDHUP) while its bytes are unread")
	}
	for _, tc := range []struct {
		name, sent string
		wantErr    bool
	}{
		{"nothing", "", false},
		{"v1 signature prefix", "PROX", false},
		{"v2 signature prefix", "\r\n\r\n\x00\r", false},
		{"v1 line cut", "PROXY TCP4 203.0.113.10 192.0", true},
		{"v2 fixed part cut", "\r\n\r\n\x00\r\nQUIT\n\x21\x11", true},
		{"v2 addresses cut", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, cli := pair(t)
			send(t, cli, []byte(tc.sent))
			require.NoError(t, cli.CloseWrite())
			got, err := Read(srv, trustAll, time.Now().Add(ioTimeout))
			if tc.wantErr {
				require.Error(t, err)
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, peerAddr(t, srv), got)
			assert.Equal(t, tc.sent, rest(t, srv, cli))
		})
	}
}

// A peer not trusted that starts with a header is refused as soon as the
// signature is in, and nothing is consumed; without a header it is served.
func TestUntrustedPeer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, sent string
		refused    bool
	}{
		{"v1", "PROXY TCP4 203.0.113.10 192.0.2.1 56324 443\r\n" + request, true},
		{"v1 signature only", "PROXY ", true},
		{"v1 malformed", "PROXY garbage\r\n" + request, true},
		{"v2", string(mustHex(v2Sig+"21 11 000c cb00710a c0000201 dc04 01bb")) + request, true},
		{"v2 signature only", string(mustHex(v2Sig)), true},
		{"no header", request, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, cli := pair(t)
			send(t, cli, []byte(tc.sent))
			start := time.Now()
			got, err := Read(srv, trustNone, start.Add(ioTimeout))
			assert.Less(t, time.Since(start), ioTimeout/2)
			if tc.refused {
				require.ErrorIs(t, err, ErrUntrusted)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, peerAddr(t, srv), got)
			assert.Equal(t, tc.sent, rest(t, srv, cli), "nothing was consumed")
		})
	}
	t.Run("nil trusts none", func(t *testing.T) {
		t.Parallel()
		srv, cli := pair(t)
		send(t, cli, []byte("PROXY UNKNOWN\r\n"))
		_, err := Read(srv, nil, time.Now().Add(ioTimeout))
		require.ErrorIs(t, err, ErrUntrusted)
	})
}

// A malformed header from a trusted peer is an error.
func TestMalformedHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		sent []byte
		is   error // the library's error, or ours; nil: any
	}{
		{"v1 garbage", []byte("PROXY garbage\r\n" + request), proxyproto.ErrCantReadAddressFamilyAndProtocol},
		{"v1 trailing garbage", []byte("PROXY TCP4 203.0.113.10 192.0.2.1 56324 443 junk\r\n" + request), nil},
		{"v1 bad address", []byte("PROXY TCP4 203.0.113.300 192.0.2.1 56324 443\r\n" + request), nil},
		{"v1 IPv6 in TCP4", []byte("PROXY TCP4 2001:db8::1 192.0.2.1 56324 443\r\n" + request), nil},
		{"v1 bad port", []byte("PROXY TCP4 203.0.113.10 192.0.2.1 65536 443\r\n" + request), nil},
		{"v1 LF without CR", []byte("PROXY TCP4 203.0.113.10 192.0.2.1 56324 443\n" + request), proxyproto.ErrLineMustEndWithCrlf},
		{"v1 no CRLF in 107 bytes", []byte("PROXY UNKNOWN " + strings.Repeat("f", 120) + "\r\n"), proxyproto.ErrVersion1HeaderTooLong},
		{"v2 version 1", mustHex(v2Sig + "11 11 000c cb00710a c0000201 dc04 01bb"), nil},
		{"v2 version 3", mustHex(v2Sig + "31 11 000c cb00710a c0000201 dc04 01bb"), nil},
		{"v2 unknown command", mustHex(v2Sig + "22 11 000c cb00710a c0000201 dc04 01bb"), nil},
		{"v2 unknown family", mustHex(v2Sig + "21 41 000c cb00710a c0000201 dc04 01bb"), nil},
		{"v2 PROXY UNSPEC", mustHex(v2Sig + "21 00 0000"), nil},
		{"v2 PROXY UDP over IPv4", mustHex(v2Sig + "21 12 000c cb00710a c0000201 dc04 01bb"), nil},
		{"v2 PROXY UDP over IPv6", mustHex(v2Sig + "21 22 0024" + strings.Repeat("00", 15) + "01" + strings.Repeat("00", 15) + "02" + "0fa0 0050"), nil},
		{"v2 PROXY UNIX stream", append(mustHex(v2Sig+"21 31 00d8"), make([]byte, 216)...), nil},
		{"v2 length under the addresses", mustHex(v2Sig + "21 11 0008 cb00710a c0000201"), nil},
		{"v2 length over the library's limit", append(mustHex(v2Sig+"21 11 ffff cb00710a c0000201 dc04 01bb"), make([]byte, 1000)...), proxyproto.ErrInvalidLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, cli := pair(t)
			send(t, cli, tc.sent)
			start := time.Now()
			_, err := Read(srv, trustAll, start.Add(ioTimeout))
			require.Error(t, err)
			assert.Less(t, time.Since(start), ioTimeout/2, "the error came without waiting for the deadline")
			assert.NotErrorIs(t, err, ErrUntrusted)
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
			assert.True(t, strings.HasPrefix(err.Error(), "proxyheader: "), err.Error())
		})
	}
}

// Waiting ends at the deadline with a timeout, whether nothing came or only
// part of a header.
func TestDeadline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, sent string
		trusted    func(netip.Addr) bool
	}{
		{"nothing", "", trustAll},
		{"nothing, untrusted", "", trustNone},
		{"v1 signature prefix", "PROX", trustNone},
		{"v2 signature prefix", "\r\n\r\n\x00\r\nQU", trustAll},
		{"v1 without CRLF yet", "PROXY TCP4 203.0.113.10", trustAll},
		{"v2 fixed part", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00", trustAll},
		{"v2 addresses", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00", trustAll},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, cli := pair(t)
			send(t, cli, []byte(tc.sent))
			start := time.Now()
			_, err := Read(srv, tc.trusted, start.Add(200*time.Millisecond))
			elapsed := time.Since(start)
			require.Error(t, err)
			assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
			var ne net.Error
			assert.True(t, errors.As(err, &ne) && ne.Timeout(), "a timeout: %v", err)
			assert.GreaterOrEqual(t, elapsed, 150*time.Millisecond)
			assert.Less(t, elapsed, ioTimeout/2)
		})
	}
	t.Run("already passed", func(t *testing.T) {
		t.Parallel()
		srv, _ := pair(t)
		_, err := Read(srv, trustAll, time.Now().Add(-time.Second))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	})
	t.Run("deadline cleared", func(t *testing.T) {
		t.Parallel()
		srv, cli := pair(t)
		send(t, cli, []byte("PROXY UNKNOWN\r\n"))
		_, err := Read(srv, trustAll, time.Now().Add(100*time.Millisecond))
		require.NoError(t, err)
		time.Sleep(150 * time.Millisecond)
		go func() {
			time.Sleep(50 * time.Millisecond)
			_, _ = cli.Write([]byte("x"))
		}()
		var b [1]byte
		_, err = srv.Read(b[:])
		require.NoError(t, err, "Read left no deadline behind")
	})
}

// Conn reports the carried address and gives back its TCP connection; Wrap
// makes one only when the address is not the peer's.
func TestConn(t *testing.T) {
	t.Parallel()
	srv, cli := pair(t)
	client := netip.MustParseAddrPort("203.0.113.10:56324")
	nc := Wrap(srv, client)
	c, ok := nc.(Conn)
	require.True(t, ok)
	assert.Equal(t, "203.0.113.10:56324", nc.RemoteAddr().String())
	assert.Same(t, srv, c.TCP())
	assert.Equal(t, srv.LocalAddr(), nc.LocalAddr())
	var _ interface{ TCP() *net.TCPConn } = c
	var _ net.Conn = &c

	assert.Same(t, srv, Wrap(srv, peerAddr(t, srv)), "the peer's own address needs no wrapper")

	send(t, cli, []byte("hi"))
	var b [2]byte
	_, err := io.ReadFull(nc, b[:])
	require.NoError(t, err)
	assert.Equal(t, "hi", string(b[:]))
}
