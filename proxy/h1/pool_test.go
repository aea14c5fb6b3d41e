package h1

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// selfSigned returns a certificate for 127.0.0.1.
func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "backend"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsPair returns a pooled-style TLS backend connection and the server
// end of it, after one exchange of bytes each way.
func tlsPair(t *testing.T) (*bconn, net.Conn) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	require.NoError(t, err)
	defer ln.Close()
	srv := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			srv <- nil
			return
		}
		_ = nc.SetDeadline(time.Now().Add(ioTimeout))
		buf := make([]byte, 4)
		_, _ = io.ReadFull(nc, buf)
		_, _ = io.WriteString(nc, "pong")
		srv <- nc
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	bc := &bconn{tls: true}
	bc.raw, _ = nc.(syscall.Conn).SyscallConn()
	bc.nc = tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	bc.br = bufio.NewReaderSize(bc.nc, maxResponseHead)
	require.NoError(t, bc.nc.SetDeadline(time.Now().Add(ioTimeout)))
	_, err = io.WriteString(bc.nc, "ping")
	require.NoError(t, err)
	got := make([]byte, 4)
	_, err = io.ReadFull(bc.br, got)
	require.NoError(t, err)
	s := <-srv
	require.NotNil(t, s)
	t.Cleanup(func() { _ = bc.nc.Close(); _ = s.Close() })
	return bc, s
}

// The freshness check sees through TLS: an idle TLS connection is quiet;
// one on which the backend wrote after its answer, or that it closed, is
// not.
func TestFreshnessOfTLSConnections(t *testing.T) {
	bc, _ := tlsPair(t)
	time.Sleep(20 * time.Millisecond) // any session ticket has arrived
	assert.True(t, bc.quiet(), "an idle connection")
	assert.True(t, bc.quiet(), "the check leaves it usable")
	_, err := io.WriteString(bc.nc, "ping")
	require.NoError(t, err, "and writable")

	bc, s := tlsPair(t)
	_, err = io.WriteString(s, "stray")
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	assert.False(t, bc.quiet(), "bytes nobody asked for")

	bc, s = tlsPair(t)
	_ = s.Close()
	time.Sleep(20 * time.Millisecond)
	assert.False(t, bc.quiet(), "closed by the backend")
}
