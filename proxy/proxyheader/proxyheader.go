// Package proxyheader reads the PROXY protocol header (versions 1 and 2) that
// a load balancer sends at the start of a TCP connection, and carries the
// client address it names.
//
// The header is read off the socket byte for byte, never further: what follows
// it stays in the kernel's buffer, so the connection can then be served as a
// plain *net.TCPConn, including by code that reads its descriptor directly.
// The grammar is parsed by github.com/pires/go-proxyproto; this package only
// finds where the header ends, by peeking at the socket.
package proxyheader

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// ErrUntrusted is the error Read returns when a peer that may not send a PROXY header starts with one.
var ErrUntrusted = errors.New("proxyheader: PROXY header from a peer not trusted to send one")

const (
	// v1Max is the longest version 1 header, CRLF included.
	v1Max = 107
	// v2Fixed is the fixed part of a version 2 header: the signature,
	// version and command, family and protocol, and the length of the rest.
	v2Fixed = 16
	// maxWakes bounds how often Read wakes up without a decision; a header
	// trickling in a byte at a time needs fewer than v1Max.
	maxWakes = 1024
)

// v1Sig is how a version 1 header starts.
var v1Sig = []byte("PROXY ")

// Conn is a TCP connection whose client address came in a PROXY header.
type Conn struct {
	*net.TCPConn
	// Client is the address the header carried.
	Client netip.AddrPort
}

// RemoteAddr returns the client address the PROXY header carried.
func (c Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.Client) }

// TCP returns the underlying TCP connection, whose peer is the load balancer.
func (c Conn) TCP() *net.TCPConn { return c.TCPConn }

// Wrap returns tc itself when client is its peer's address, and otherwise a Conn that reports client as its remote address.
func Wrap(tc *net.TCPConn, client netip.AddrPort) net.Conn {
	if peer, err := peerOf(tc); err == nil && peer == client {
		return tc
	}
	return Conn{TCPConn: tc, Client: client}
}

// Read reads a PROXY protocol header, v1 or v2, from the start of tc,
// without reading any byte past it, and returns the client address it carries.
//
// trusted says whether the peer (its address unmapped) may send a header; it
// is asked only when one comes, and nil trusts no peer. A trusted peer may
// also send none: Read then returns the peer's own address, as it does for a
// LOCAL or v1 UNKNOWN header. A malformed header, or a PROXY header for a
// family other than TCP over IPv4 or IPv6, is an error. A header from a peer
// not trusted is refused with ErrUntrusted, nothing read. When the first
// bytes cannot start a header, Read consumes nothing: they stay for the
// server, which can serve tc as a plain *net.TCPConn. Waiting for the bytes
// that decide ends at deadline (zero: no limit) with an error wrapping
// os.ErrDeadlineExceeded. Read leaves tc without a read deadline.
func Read(tc *net.TCPConn, trusted func(netip.Addr) bool, deadline time.Time) (netip.AddrPort, error) {
	peer, err := peerOf(tc)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if err := tc.SetReadDeadline(deadline); err != nil {
		return peer, fmt.Errorf("proxyheader: setting the read deadline: %w", err)
	}
	defer func() { _ = tc.SetReadDeadline(time.Time{}) }()

	rc, err := tc.SyscallConn()
	if err != nil {
		return peer, fmt.Errorf("proxyheader: socket: %w", err)
	}
	var (
		buf   [v1Max]byte
		trust int8 // 0: not asked yet; 1: trusted; -1: not
		found kind
		size  int // bytes of the header, once known
		ferr  error
		wakes int
	)
	// step decides on the first bytes b, or returns false when more must
	// come; ended says none will.
	step := func(b []byte, ended bool) bool {
		found, size, ferr = classify(b), 0, nil
		if found == none || found == prefix && ended {
			found = none // not a header: whatever came stays for the server
			return true
		}
		if found == prefix {
			return false
		}
		if trust == 0 {
			trust = -1
			if trusted != nil && trusted(peer.Addr()) {
				trust = 1
			}
		}
		if trust < 0 {
			ferr = ErrUntrusted
			return true
		}
		size, ferr = headerSize(found, b, ended)
		return size > 0 || ferr != nil
	}
	decide := func(fd uintptr) bool {
		n, err := peek(int(fd), buf[:])
		switch {
		case err == unix.EAGAIN:
			// Nothing yet: wait until the socket is readable.
		case err != nil:
			ferr = fmt.Errorf("proxyheader: peeking: %w", err)
			return true
		case step(buf[:n], n == 0):
			return true
		case peerEnded(int(fd)):
			// No more bytes will come: decide on all that did (peeking
			// again, for any that came after the first look).
			if n, err = peek(int(fd), buf[:]); err != nil {
				ferr = fmt.Errorf("proxyheader: peeking: %w", err)
			} else {
				step(buf[:n], true) // with ended set, step always decides
			}
			return true
		}
		// Wait for the next bytes: the runtime's poller is edge-triggered,
		// and each arrival is an edge even with earlier bytes unread.
		if wakes++; wakes > maxWakes {
			ferr = errors.New("proxyheader: no decision after many partial reads")
			return true
		}
		return false
	}
	if err := rc.Read(decide); err != nil {
		return peer, fmt.Errorf("proxyheader: waiting for a header: %w", err)
	}
	if ferr != nil {
		return peer, ferr
	}
	if found == none {
		return peer, nil
	}
	return parse(tc, size, peer)
}

// kind is what the first bytes of a connection are.
type kind uint8

const (
	none   kind = iota // not a PROXY header
	prefix             // a strict prefix of a signature: more must come
	v1                 // a version 1 header
	v2                 // a version 2 header
)

// classify tells from the first bytes whether they start a header.
func classify(b []byte) kind {
	for _, s := range []struct {
		sig  []byte
		kind kind
	}{{v1Sig, v1}, {proxyproto.SIGV2, v2}} {
		n := min(len(b), len(s.sig))
		if n == 0 || !bytes.Equal(b[:n], s.sig[:n]) {
			continue
		}
		if n < len(s.sig) {
			return prefix
		}
		return s.kind
	}
	return none
}

// headerSize returns the length of the header that b starts, or 0 when more
// bytes must come first; ended says no more will.
func headerSize(k kind, b []byte, ended bool) (int, error) {
	switch k {
	case v1:
		if i := bytes.IndexByte(b[:min(len(b), v1Max)], '\n'); i >= 0 {
			return i + 1, nil
		}
		if len(b) >= v1Max {
			return 0, fmt.Errorf("proxyheader: v1 header without CRLF in %d bytes: %w", v1Max, proxyproto.ErrVersion1HeaderTooLong)
		}
	case v2:
		if len(b) >= v2Fixed {
			return v2Fixed + int(binary.BigEndian.Uint16(b[v2Fixed-2:v2Fixed])), nil
		}
	}
	if ended {
		return 0, fmt.Errorf("proxyheader: connection ended within a header: %w", io.ErrUnexpectedEOF)
	}
	return 0, nil
}

// parse reads the size bytes of the header off tc and parses them.
func parse(tc *net.TCPConn, size int, peer netip.AddrPort) (netip.AddrPort, error) {
	// The library reads through a limit: it cannot take a byte past the
	// header, and what it needs of the header it reads as it comes.
	lr := &io.LimitedReader{R: tc, N: int64(size)}
	h, err := proxyproto.Read(bufio.NewReaderSize(lr, 256))
	if err != nil {
		return peer, fmt.Errorf("proxyheader: reading the header: %w", err)
	}
	if lr.N != 0 {
		return peer, fmt.Errorf("proxyheader: header of %d bytes parsed with %d left", size, lr.N)
	}
	if h.Command.IsLocal() {
		return peer, nil
	}
	if h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6 {
		// A datagram or UNIX socket client on a TCP listener (HAProxy
		// refuses these too).
		return peer, fmt.Errorf("proxyheader: PROXY header for a family other than TCP over IPv4 or IPv6 (0x%02x)", byte(h.TransportProtocol))
	}
	src, _, ok := h.TCPAddrs()
	if !ok {
		return peer, errors.New("proxyheader: header without a TCP source address")
	}
	a := src.AddrPort()
	if !a.Addr().IsValid() {
		return peer, fmt.Errorf("proxyheader: header with an invalid source address %v", src)
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), nil
}

// peerOf returns tc's peer address, unmapped.
func peerOf(tc *net.TCPConn) (netip.AddrPort, error) {
	a, ok := tc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errors.New("proxyheader: connection without a TCP peer address")
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// peek copies what the socket holds into b without consuming it.
func peek(fd int, b []byte) (int, error) {
	for range 100 {
		n, _, err := unix.Recvfrom(fd, b, unix.MSG_PEEK)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
	return 0, syscall.EINTR
}
