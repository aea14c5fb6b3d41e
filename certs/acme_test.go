package certs

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
	"golang.org/x/crypto/ocsp"

	"github.com/geoproxy/geoproxy/certs/certstest"
	"github.com/geoproxy/geoproxy/config"
)

// testDomain is the name certificates are obtained for; the test's DNS
// server resolves it to 127.0.0.1.
const testDomain = "movr.test"

// ACME certificates are polled for at most acmePollCount*acmePollEvery.
const (
	acmePollCount = 100
	acmePollEvery = 200 * time.Millisecond
)

// pebbleLogger prints Pebble's log to stderr with CERTS_TEST_LOG=1.
func pebbleLogger() *log.Logger {
	if os.Getenv("CERTS_TEST_LOG") == "1" {
		return log.New(os.Stderr, "pebble ", log.LstdFlags)
	}
	return nil
}

// startPebble runs Pebble with its VA validating HTTP-01 on httpPort and
// TLS-ALPN-01 on tlsPort of 127.0.0.1 (0: that challenge fails).
func startPebble(t *testing.T, httpPort, tlsPort int) *certstest.Pebble {
	t.Helper()
	p := certstest.StartPebble(t, certstest.Options{Log: pebbleLogger()})
	p.SetChallengePorts(httpPort, tlsPort)
	return p
}

// serveHTTP serves h on ln until the test ends and counts the requests
// the Manager took for HTTP-01 challenges.
func serveHTTP(t *testing.T, ln net.Listener, m *Manager, challenges *atomic.Int32) {
	t.Helper()
	h := m.HTTPChallenge(http.NotFoundHandler())
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if m.IsChallenge(r) {
				challenges.Add(1)
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	t.Cleanup(func() {
		hs.Close()
		<-done
	})
}

func port(t *testing.T, ln net.Listener) int {
	t.Helper()
	_, p, err := net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

// waitACMECertificate polls addr until it serves a certificate for
// testDomain that Pebble issued, and returns the connection state.
func waitACMECertificate(t *testing.T, addr string, roots *x509.CertPool) tls.ConnectionState {
	t.Helper()
	var cs tls.ConnectionState
	eventually(t, acmePollCount, acmePollEvery, "certificate for "+testDomain+" from Pebble", func() bool {
		var err error
		cs, err = handshake(addr, &tls.Config{ServerName: testDomain, RootCAs: roots})
		return err == nil
	})
	return cs
}

// checkStapled checks the OCSP response stapled in cs is Pebble's
// "good" answer for the leaf.
func checkStapled(t *testing.T, cs tls.ConnectionState, issuer *x509.Certificate) {
	t.Helper()
	require.NotEmpty(t, cs.OCSPResponse, "no OCSP response stapled")
	resp, err := ocsp.ParseResponse(cs.OCSPResponse, issuer)
	require.NoError(t, err)
	assert.Equal(t, ocsp.Good, resp.Status)
	assert.Equal(t, cs.PeerCertificates[0].SerialNumber, resp.SerialNumber)
}

// storedCertificate finds the certificate for testDomain that certmagic
// wrote under storage.
func storedCertificate(t *testing.T, storage string) *x509.Certificate {
	t.Helper()
	var found string
	require.NoError(t, filepath.WalkDir(storage, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == testDomain+".crt" {
			found = path
		}
		return err
	}))
	require.NotEmpty(t, found, "no %s.crt under %s", testDomain, storage)
	data, err := os.ReadFile(found)
	require.NoError(t, err)
	chain, err := parseChain(data)
	require.NoError(t, err)
	return chain[0]
}

// TestACMEHTTP01AndRestart obtains a certificate through HTTP-01 with
// TLS-ALPN-01 off, then starts a second Manager over the same storage
// with Pebble gone, which serves the stored certificate.
func TestACMEHTTP01AndRestart(t *testing.T) {
	checkLeaks(t, ignoreLockRefresh)
	httpLn, tlsLn := listen(t), listen(t)
	p := startPebble(t, port(t, httpLn), port(t, tlsLn))
	storage := t.TempDir()
	logger, _ := testLogger()
	acme := config.ACME{Domains: []string{testDomain}, Email: "ops@movr.test", CA: p.DirectoryURL, CARoot: p.HTTPSRoot, Storage: storage}

	start := time.Now()
	m, err := New(Options{ACME: acme, HTTPAddr: httpLn.Addr().String(), Log: logger})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	assert.Less(t, time.Since(start), 2*time.Second, "New does not wait for the certificate")
	assert.NotContains(t, m.TLSConfig().NextProtos, acmeTLS1, "TLS-ALPN-01 is off")

	var challenges atomic.Int32
	serveHTTP(t, httpLn, m, &challenges)
	ts := serveTLS(t, tlsLn, m.TLSConfig)

	cs := waitACMECertificate(t, ts.addr, p.Roots)
	leaf := cs.PeerCertificates[0]
	assert.Equal(t, []string{testDomain}, leaf.DNSNames)
	assert.Equal(t, p.Issuer.Subject.String(), leaf.Issuer.String())
	assert.Positive(t, challenges.Load(), "HTTP-01 challenges answered")
	assert.Zero(t, ts.alpnChallenges.Load(), "no TLS-ALPN-01 handshake")
	eventually(t, 40, 50*time.Millisecond, "Pebble's record of the validation", func() bool {
		return assert.ObjectsAreEqual([]string{certstest.ChallengeHTTP01}, p.ValidatedBy(leaf))
	})
	checkStapled(t, cs, p.Issuer)
	assert.Positive(t, p.OCSPRequests())

	// Only challenges for the managed names are taken.
	assert.True(t, m.IsChallenge(httptest.NewRequest(http.MethodGet, "http://movr.test/.well-known/acme-challenge/abc", nil)))
	assert.True(t, m.IsChallenge(httptest.NewRequest(http.MethodGet, "http://MOVR.test:8080/.well-known/acme-challenge/abc", nil)))
	assert.False(t, m.IsChallenge(httptest.NewRequest(http.MethodGet, "http://other.test/.well-known/acme-challenge/abc", nil)))
	assert.False(t, m.IsChallenge(httptest.NewRequest(http.MethodGet, "http://movr.test/index.html", nil)))
	assert.False(t, m.IsChallenge(httptest.NewRequest(http.MethodPost, "http://movr.test/.well-known/acme-challenge/abc", nil)))
	rec := httptest.NewRecorder()
	m.HTTPChallenge(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://movr.test/index.html", nil))
	assert.Equal(t, http.StatusTeapot, rec.Code, "other requests go to next")

	stored := storedCertificate(t, storage)
	assert.Equal(t, leaf.SerialNumber, stored.SerialNumber, "the certificate is stored on disk")

	// Restart: the first Manager and Pebble stop; a second Manager over
	// the same storage serves the stored certificate, and its stored
	// OCSP staple, without a CA to ask.
	m.Close()
	p.Close()
	ocspBefore := p.OCSPRequests()

	httpLn2, tlsLn2 := listen(t), listen(t)
	t.Cleanup(func() { httpLn2.Close() })
	m2, err := New(Options{ACME: acme, HTTPAddr: httpLn2.Addr().String(), Log: logger})
	require.NoError(t, err)
	t.Cleanup(m2.Close)
	ts2 := serveTLS(t, tlsLn2, m2.TLSConfig)
	// Loading from disk takes milliseconds; allow 2 s on a busy machine.
	var cs2 tls.ConnectionState
	eventually(t, 40, 50*time.Millisecond, "stored certificate served after restart", func() bool {
		cs2, err = handshake(ts2.addr, &tls.Config{ServerName: testDomain, RootCAs: p.Roots})
		return err == nil
	})
	assert.Equal(t, leaf.SerialNumber, cs2.PeerCertificates[0].SerialNumber)
	checkStapled(t, cs2, p.Issuer)
	assert.Equal(t, ocspBefore, p.OCSPRequests())
	m2.Close()
}

// TestACMETLSALPN01 obtains a certificate through TLS-ALPN-01 answered
// on the TLS listener, with HTTP-01 off.
func TestACMETLSALPN01(t *testing.T) {
	checkLeaks(t, ignoreLockRefresh)
	tlsLn := listen(t)
	p := startPebble(t, 0, port(t, tlsLn))
	logger, _ := testLogger()
	storage := t.TempDir()

	m, err := New(Options{
		ACME:    config.ACME{Domains: []string{testDomain}, CA: p.DirectoryURL, CARoot: p.HTTPSRoot, Storage: storage},
		TLSAddr: tlsLn.Addr().String(),
		Log:     logger,
	})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	assert.Equal(t, []string{"h2", "http/1.1", acmeTLS1}, m.TLSConfig().NextProtos)
	assert.False(t, m.IsChallenge(httptest.NewRequest(http.MethodGet, "http://movr.test/.well-known/acme-challenge/abc", nil)), "HTTP-01 is off")
	ts := serveTLS(t, tlsLn, m.TLSConfig)

	cs := waitACMECertificate(t, ts.addr, p.Roots)
	assert.Equal(t, []string{testDomain}, cs.PeerCertificates[0].DNSNames)
	assert.Positive(t, ts.alpnChallenges.Load(), "TLS-ALPN-01 challenges answered")
	eventually(t, 40, 50*time.Millisecond, "Pebble's record of the validation", func() bool {
		return assert.ObjectsAreEqual([]string{certstest.ChallengeTLSALPN01}, p.ValidatedBy(cs.PeerCertificates[0]))
	})
	checkStapled(t, cs, p.Issuer)
	assert.Equal(t, "h2", func() string {
		cfg := &tls.Config{ServerName: testDomain, RootCAs: p.Roots, NextProtos: []string{"h2", "http/1.1"}}
		cs, err := handshake(ts.addr, cfg)
		require.NoError(t, err)
		return cs.NegotiatedProtocol
	}())
	storedCertificate(t, storage)

	// Without certificate files, a client sending no SNI gets the first
	// ACME domain's certificate.
	cs, err = handshake(ts.addr, &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	assert.Equal(t, []string{testDomain}, cs.PeerCertificates[0].DNSNames)
	m.Close()
}

// TestACMEUpdate turns ACME on, adds and removes a domain and turns it
// off again through Update on one listener.
func TestACMEUpdate(t *testing.T) {
	checkLeaks(t, ignoreLockRefresh)
	httpLn, tlsLn := listen(t), listen(t)
	p := startPebble(t, port(t, httpLn), port(t, tlsLn))
	testRoots := newTestCA(t)
	pa, snA := testRoots.writePair(t, t.TempDir(), "a", "a.example.com")
	logger, _ := testLogger()
	var reasons atomic.Int32
	base := Options{
		Pairs:            []config.CertPair{pa},
		HTTPAddr:         httpLn.Addr().String(),
		TLSAddr:          tlsLn.Addr().String(),
		Log:              logger,
		OnHandshakeError: func(r string) { reasons.Add(1) },
	}
	m, err := New(base)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	var challenges atomic.Int32
	serveHTTP(t, httpLn, m, &challenges)
	ts := serveTLS(t, tlsLn, m.TLSConfig)
	defaultFor := func(name string) int64 {
		cs, err := handshake(ts.addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		require.NoError(t, err)
		return cs.PeerCertificates[0].SerialNumber.Int64()
	}
	assert.NotContains(t, m.TLSConfig().NextProtos, acmeTLS1)

	const api = "api." + testDomain
	withACME := func(domains ...string) Options {
		o := base
		o.ACME = config.ACME{Domains: domains, CA: p.DirectoryURL, CARoot: p.HTTPSRoot, Storage: filepath.Join(t.TempDir(), "acme")}
		return o
	}
	on := withACME(testDomain)
	require.NoError(t, m.Update(on))
	assert.Contains(t, m.TLSConfig().NextProtos, acmeTLS1)
	waitACMECertificate(t, ts.addr, p.Roots)
	first := m.state.Load().acme

	// A client offering only acme-tls/1 with no challenge under way is
	// refused and reported.
	before := reasons.Load()
	_, err = handshake(ts.addr, &tls.Config{ServerName: testDomain, InsecureSkipVerify: true, NextProtos: []string{acmeTLS1}})
	require.Error(t, err)
	assert.Greater(t, reasons.Load(), before)

	// Adding a domain keeps the running ACME manager: the first
	// certificate is served right after Update returns.
	added := on
	added.ACME.Domains = []string{testDomain, api}
	require.NoError(t, m.Update(added))
	assert.Same(t, first, m.state.Load().acme)
	_, err = handshake(ts.addr, &tls.Config{ServerName: testDomain, RootCAs: p.Roots})
	require.NoError(t, err)
	eventually(t, acmePollCount, acmePollEvery, "certificate for "+api, func() bool {
		_, err := handshake(ts.addr, &tls.Config{ServerName: api, RootCAs: p.Roots})
		return err == nil
	})

	// Removing a domain starts a new ACME manager, which loads the
	// remaining certificate from storage; the removed name falls back to
	// the files.
	require.NoError(t, m.Update(on))
	second := m.state.Load().acme
	assert.NotSame(t, first, second)
	assert.Error(t, first.ctx.Err(), "the replaced ACME manager is stopped")
	eventually(t, 40, 50*time.Millisecond, "stored certificate served by the new ACME manager", func() bool {
		_, err := handshake(ts.addr, &tls.Config{ServerName: testDomain, RootCAs: p.Roots})
		return err == nil
	})
	assert.Equal(t, snA, defaultFor(api))

	// Turning ACME off.
	require.NoError(t, m.Update(base))
	assert.Nil(t, m.state.Load().acme)
	assert.Error(t, second.ctx.Err())
	assert.NotContains(t, m.TLSConfig().NextProtos, acmeTLS1)
	assert.Equal(t, snA, defaultFor(testDomain))
	m.Close()
}

// TestACMEWithFiles serves an ACME name from ACME while other names,
// and clients without SNI, get the certificate files.
func TestACMEWithFiles(t *testing.T) {
	checkLeaks(t, ignoreLockRefresh)
	httpLn, tlsLn := listen(t), listen(t)
	p := startPebble(t, port(t, httpLn), port(t, tlsLn))
	testRoots := newTestCA(t)
	pa, snA := testRoots.writePair(t, t.TempDir(), "a", "a.example.com")
	logger, _ := testLogger()

	m, err := New(Options{
		Pairs:    []config.CertPair{pa},
		ACME:     config.ACME{Domains: []string{testDomain}, CA: p.DirectoryURL, CARoot: p.HTTPSRoot, Storage: t.TempDir()},
		HTTPAddr: httpLn.Addr().String(),
		TLSAddr:  tlsLn.Addr().String(),
		Log:      logger,
	})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	var challenges atomic.Int32
	serveHTTP(t, httpLn, m, &challenges)
	ts := serveTLS(t, tlsLn, m.TLSConfig)

	// Before the ACME certificate exists, the name gets the default.
	cs, err := handshake(ts.addr, &tls.Config{ServerName: testDomain, InsecureSkipVerify: true})
	require.NoError(t, err)
	if cs.PeerCertificates[0].SerialNumber.Int64() != snA {
		assert.Equal(t, []string{testDomain}, cs.PeerCertificates[0].DNSNames, "already obtained")
	}

	waitACMECertificate(t, ts.addr, p.Roots)
	assert.Equal(t, snA, servedSerial(t, ts.addr, "a.example.com", testRoots.pool))
	assert.Equal(t, snA, servedSerial(t, ts.addr, "", nil))
	assert.Positive(t, challenges.Load()+ts.alpnChallenges.Load())
	m.Close()
}

func TestACMEOptionErrors(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	bound := listen(t)
	free := listen(t)
	freeAddr := free.Addr().String()
	free.Close()
	badRoot := filepath.Join(dir, "root.pem")
	require.NoError(t, os.WriteFile(badRoot, []byte("not a certificate"), 0o600))
	acme := config.ACME{Domains: []string{testDomain}, CA: "https://127.0.0.1:1/dir", Storage: dir}

	for _, c := range []struct {
		name    string
		o       Options
		wantErr string
	}{
		{"nothing listens", Options{ACME: acme, HTTPAddr: freeAddr}, "nothing listens on " + freeAddr},
		{"port zero", Options{ACME: acme, TLSAddr: "127.0.0.1:0"}, "not a port number"},
		{"no storage", Options{ACME: config.ACME{Domains: []string{testDomain}}, HTTPAddr: bound.Addr().String()}, "storage"},
		{"bad CA root", Options{ACME: config.ACME{Domains: []string{testDomain}, CARoot: badRoot, Storage: dir}, HTTPAddr: bound.Addr().String()}, badRoot},
		{"missing CA root", Options{ACME: config.ACME{Domains: []string{testDomain}, CARoot: badRoot + ".none", Storage: dir}, HTTPAddr: bound.Addr().String()}, badRoot + ".none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := New(c.o)
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Contains(t, err.Error(), c.wantErr)
		})
	}
	bound.Close()
}

// Renewal test schedule: Pebble issues certificates valid for
// renewValidity; certmagic checks them every renewCheckEvery and renews
// them with renewWindowRatio of their lifetime left, that is
// renewValidity*(1-renewWindowRatio) = 5 s after issuance at the latest
// (ACME Renewal Information may pick an earlier time), long before they
// expire.
const (
	renewValidity    = 20 * time.Second
	renewWindowRatio = 0.75
	renewCheckEvery  = 250 * time.Millisecond
	// renewWait bounds the wait for the renewed certificate: it is
	// served within about 6 s.
	renewWait = 20 * time.Second
)

// TestACMERenewsBeforeExpiry obtains a short-lived certificate and
// waits until certmagic's maintenance renews it: new handshakes get a
// new certificate from Pebble, a connection opened before keeps
// working, and the renewed certificate is stored.
func TestACMERenewsBeforeExpiry(t *testing.T) {
	checkLeaks(t, ignoreLockRefresh)
	httpLn, tlsLn := listen(t), listen(t)
	p := certstest.StartPebble(t, certstest.Options{Log: pebbleLogger(), CertValidity: renewValidity})
	p.SetChallengePorts(port(t, httpLn), port(t, tlsLn))
	storage := t.TempDir()
	logger, logs := testLogger()

	m, err := New(Options{
		ACME:     config.ACME{Domains: []string{testDomain}, CA: p.DirectoryURL, CARoot: p.HTTPSRoot, Storage: storage},
		HTTPAddr: httpLn.Addr().String(),
		TLSAddr:  tlsLn.Addr().String(),
		Log:      logger,
		maintenance: acmeMaintenance{
			renewCheckInterval: renewCheckEvery,
			renewalWindowRatio: renewWindowRatio,
		},
	})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	var challenges atomic.Int32
	serveHTTP(t, httpLn, m, &challenges)
	ts := serveTLS(t, tlsLn, m.TLSConfig)
	client := &tls.Config{ServerName: testDomain, RootCAs: p.Roots}

	// The first certificate is the one a connection kept open gets.
	var before *tls.Conn
	eventually(t, acmePollCount, acmePollEvery, "certificate for "+testDomain+" from Pebble", func() bool {
		before, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ts.addr, client)
		return err == nil
	})
	t.Cleanup(func() { before.Close() })
	first := before.ConnectionState().PeerCertificates[0]
	lifetime := first.NotAfter.Sub(first.NotBefore)
	require.Equal(t, renewValidity-time.Second, lifetime, "Pebble's validity period")
	require.True(t, time.Now().Before(first.NotAfter))
	checkStapled(t, before.ConnectionState(), p.Issuer)
	echo(t, before, "before renewal")

	// New handshakes get a renewed certificate before the first expires.
	start := time.Now()
	var renewed *x509.Certificate
	var cs tls.ConnectionState
	var lastErr error
	for deadline := start.Add(renewWait); renewed == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("certificate serial %x not renewed within %v; last handshake error: %v", first.SerialNumber, renewWait, lastErr)
		}
		cs, lastErr = handshake(ts.addr, client)
		if lastErr == nil && cs.PeerCertificates[0].SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = cs.PeerCertificates[0]
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("renewed %v after the first certificate was issued (%v after the first handshake), %v before it expires",
		time.Since(first.NotBefore).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond),
		time.Until(first.NotAfter).Round(100*time.Millisecond))
	assert.True(t, renewed.NotAfter.After(first.NotAfter), "renewed NotAfter %v, first %v", renewed.NotAfter, first.NotAfter)
	assert.Equal(t, []string{testDomain}, renewed.DNSNames)
	assert.Equal(t, p.Issuer.Subject.String(), renewed.Issuer.String())
	assert.NotEqual(t, first.PublicKey, renewed.PublicKey, "a new key")
	eventually(t, 40, 50*time.Millisecond, "Pebble's record of the renewal", func() bool {
		return len(p.ValidatedBy(renewed)) > 0 && p.Replaced(first)
	})
	checkStapled(t, cs, p.Issuer)

	// The connection opened before keeps its certificate and works.
	echo(t, before, "after renewal")
	assert.Equal(t, first.SerialNumber, before.ConnectionState().PeerCertificates[0].SerialNumber)

	// Storage holds the renewed certificate, or a later one if
	// maintenance renewed again in the meantime.
	stored := storedCertificate(t, storage)
	assert.NotEqual(t, first.SerialNumber, stored.SerialNumber, "the renewal is stored")
	assert.False(t, stored.NotAfter.Before(renewed.NotAfter), "stored NotAfter %v, served %v", stored.NotAfter, renewed.NotAfter)
	eventually(t, 40, 50*time.Millisecond, "Pebble's record of the stored certificate", func() bool {
		return len(p.ValidatedBy(stored)) > 0
	})
	assert.Empty(t, logs.FilterLevelExact(zapcore.ErrorLevel).All(), "errors logged")
	m.Close()
}

// echo writes a line on c and checks it comes back, within 5 s.
func echo(t *testing.T, c *tls.Conn, line string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Write([]byte(line + "\n"))
	require.NoError(t, err)
	got, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, line+"\n", got)
	require.NoError(t, c.SetDeadline(time.Time{}))
}
