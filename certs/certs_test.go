package certs

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/config"
)

func TestSNISelection(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	pa, snA := ca.writePair(t, dir, "a", "a.example.com")
	pb, snB := ca.writePair(t, dir, "b", "b.example.com", "www.b.example.com")
	pw, snW := ca.writePair(t, dir, "wild", "*.wild.example.com")

	var reasons []string
	var mu sync.Mutex
	m, err := New(Options{
		Pairs: []config.CertPair{pa, pb, pw},
		OnHandshakeError: func(r string) {
			mu.Lock()
			reasons = append(reasons, r)
			mu.Unlock()
		},
	})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	srv := serveTLS(t, listen(t), m.TLSConfig)

	for _, c := range []struct {
		name, sni string
		want      int64
	}{
		{"first", "a.example.com", snA},
		{"second", "b.example.com", snB},
		{"second, other SAN", "www.b.example.com", snB},
		{"case-insensitive", "B.Example.COM", snB},
		{"wildcard", "x.wild.example.com", snW},
		{"wildcard, upper case", "X.WILD.example.com", snW},
		{"wildcard covers one label only", "y.x.wild.example.com", snA},
		{"wildcard does not cover its parent", "wild.example.com", snA},
		{"unknown name gets the default", "unknown.example.org", snA},
		{"no SNI gets the default", "", snA},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := clientConfig(c.sni, ca.pool)
			if c.want == snA && c.sni != "" && c.sni != "a.example.com" {
				// The default does not name the host; look at it anyway.
				cfg = &tls.Config{ServerName: c.sni, InsecureSkipVerify: true}
			}
			cs, err := handshake(srv.addr, cfg)
			require.NoError(t, err)
			assert.Equal(t, c.want, cs.PeerCertificates[0].SerialNumber.Int64())
		})
	}
	mu.Lock()
	assert.Empty(t, reasons, "every handshake got a certificate")
	mu.Unlock()
}

func TestIPAddressCertificate(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	pd, snD := ca.writePair(t, dir, "default", "a.example.com")
	pip, snIP := ca.writePair(t, dir, "ip", "127.0.0.1")
	m, err := New(Options{Pairs: []config.CertPair{pd, pip}})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	srv := serveTLS(t, listen(t), m.TLSConfig)

	// A client connecting to 127.0.0.1 sends no SNI; the certificate for
	// the address it connected to is served, and verifies.
	cs, err := handshake(srv.addr, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1"})
	require.NoError(t, err)
	assert.Equal(t, snIP, cs.PeerCertificates[0].SerialNumber.Int64())
	assert.Equal(t, snD, servedSerial(t, srv.addr, "a.example.com", ca.pool))
}

func TestHandshakeWithoutCertificate(t *testing.T) {
	checkLeaks(t)
	// With certificate files there is always a default; the error path
	// is reached through a table with no pairs.
	m := &Manager{}
	var got []string
	m.onError = func(r string) { got = append(got, r) }
	m.state.Store(&state{files: buildTable(nil), minVersion: tls.VersionTLS12})
	_, err := m.getCertificate(&tls.ClientHelloInfo{ServerName: "x.example.com"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "x.example.com")
	assert.Equal(t, []string{ReasonNoCertificate}, got)
}

func TestNewErrors(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	good, _ := ca.writePair(t, dir, "good", "a.example.com")
	other, _ := ca.writePair(t, dir, "other", "b.example.com")
	garbage := filepath.Join(dir, "garbage.crt")
	require.NoError(t, os.WriteFile(garbage, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), 0o600))

	for _, c := range []struct {
		name    string
		o       Options
		wantErr string
	}{
		{"nothing", Options{}, "no certificates"},
		{"missing cert", Options{Pairs: []config.CertPair{{Cert: filepath.Join(dir, "none.crt"), Key: good.Key}}}, filepath.Join(dir, "none.crt")},
		{"missing key", Options{Pairs: []config.CertPair{{Cert: good.Cert, Key: filepath.Join(dir, "none.key")}}}, filepath.Join(dir, "none.key")},
		{"not a certificate", Options{Pairs: []config.CertPair{{Cert: garbage, Key: good.Key}}}, garbage},
		{"mismatched key", Options{Pairs: []config.CertPair{{Cert: good.Cert, Key: other.Key}}}, other.Key},
		{"TLS 1.1", Options{Pairs: []config.CertPair{good}, MinVersion: tls.VersionTLS11}, "min version"},
		{"acme without listeners", Options{ACME: config.ACME{Domains: []string{"movr.test"}, Storage: dir}}, "no challenge can be answered"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := New(c.o)
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Contains(t, err.Error(), c.wantErr)
			assert.True(t, strings.HasPrefix(err.Error(), "certs: "), err.Error())
		})
	}
}

func TestTLSVersionsAndCiphers(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	pa, _ := ca.writePair(t, t.TempDir(), "a", "a.example.com")
	m, err := New(Options{Pairs: []config.CertPair{pa}, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	srv := serveTLS(t, listen(t), m.TLSConfig)

	client := func(minV, maxV uint16) *tls.Config {
		return &tls.Config{ServerName: "a.example.com", RootCAs: ca.pool, MinVersion: minV, MaxVersion: maxV}
	}
	_, err = handshake(srv.addr, client(tls.VersionTLS10, tls.VersionTLS11))
	require.Error(t, err, "TLS 1.1 must be refused")

	cs, err := handshake(srv.addr, client(tls.VersionTLS12, tls.VersionTLS12))
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS12), cs.Version)
	assert.Contains(t, cipherSuites(), cs.CipherSuite)

	cs, err = handshake(srv.addr, client(tls.VersionTLS13, tls.VersionTLS13))
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS13), cs.Version)

	// A TLS 1.2 client offering only CBC suites is refused.
	cbc := client(tls.VersionTLS12, tls.VersionTLS12)
	cbc.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}
	_, err = handshake(srv.addr, cbc)
	require.Error(t, err, "CBC suites are not in the intermediate set")

	// Update raises the minimum to 1.3 for the configurations taken
	// from then on (serveTLS takes one per connection).
	require.NoError(t, m.Update(Options{Pairs: []config.CertPair{pa}, MinVersion: tls.VersionTLS13}))
	_, err = handshake(srv.addr, client(tls.VersionTLS12, tls.VersionTLS12))
	require.Error(t, err, "TLS 1.2 must be refused after raising the minimum")
	_, err = handshake(srv.addr, client(tls.VersionTLS12, tls.VersionTLS13))
	require.NoError(t, err)
}

func TestALPN(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	pa, _ := ca.writePair(t, t.TempDir(), "a", "a.example.com")
	m, err := New(Options{Pairs: []config.CertPair{pa}})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	assert.Equal(t, []string{"h2", "http/1.1"}, m.TLSConfig().NextProtos)
	// One configuration while the settings hold (its session tickets
	// resume across connections); another once they change.
	assert.Same(t, m.TLSConfig(), m.TLSConfig())
	before := m.TLSConfig()
	require.NoError(t, m.Update(Options{Pairs: []config.CertPair{pa}, MinVersion: tls.VersionTLS13}))
	assert.NotSame(t, before, m.TLSConfig())
	assert.Equal(t, uint16(tls.VersionTLS13), m.TLSConfig().MinVersion)
	require.NoError(t, m.Update(Options{Pairs: []config.CertPair{pa}}))
	srv := serveTLS(t, listen(t), m.TLSConfig)

	for _, c := range []struct {
		offer []string
		want  string
	}{
		{[]string{"h2", "http/1.1"}, "h2"},
		{[]string{"http/1.1"}, "http/1.1"},
		{[]string{"http/1.1", "h2"}, "h2"},
		{nil, ""},
	} {
		cfg := clientConfig("a.example.com", ca.pool)
		cfg.NextProtos = c.offer
		cs, err := handshake(srv.addr, cfg)
		require.NoError(t, err)
		assert.Equal(t, c.want, cs.NegotiatedProtocol, "offer %v", c.offer)
	}
	// Without ACME, acme-tls/1 is not spoken.
	cfg := clientConfig("a.example.com", ca.pool)
	cfg.NextProtos = []string{acmeTLS1}
	_, err = handshake(srv.addr, cfg)
	require.Error(t, err)
}

// TestHTTPServer serves HTTP/2 and HTTP/1.1 through net/http with
// TLSConfig.
func TestHTTPServer(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	pa, _ := ca.writePair(t, t.TempDir(), "a", "a.example.com")
	m, err := New(Options{Pairs: []config.CertPair{pa}})
	require.NoError(t, err)
	t.Cleanup(m.Close)

	ln := listen(t)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Proto)
		}),
		TLSConfig:         m.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		hs.Close()
		<-done
	})

	addr := ln.Addr().String()
	for _, c := range []struct {
		h2   bool
		want string
	}{{true, "HTTP/2.0"}, {false, "HTTP/1.1"}} {
		tr := &http.Transport{
			TLSClientConfig:   clientConfig("a.example.com", ca.pool),
			ForceAttemptHTTP2: c.h2,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		}
		if !c.h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := client.Get("https://a.example.com/")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, c.want, string(body))
		tr.CloseIdleConnections()
	}
}
