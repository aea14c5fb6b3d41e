package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoproxy/geoproxy/certs/certstest"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// acmeDomain is the name geoproxy obtains a certificate for; Pebble's DNS
// server resolves every name to 127.0.0.1.
const acmeDomain = "movr.test"

// TestACMECertificateServesTraffic: on both engines, geoproxy obtains a
// certificate for its ACME domain from Pebble, through HTTP-01 on the
// plain listener (Pebble's TLS-ALPN-01 validations failing) or through
// TLS-ALPN-01 on the TLS listener (HTTP-01 failing), and serves HTTPS
// with it over HTTP/2 while the plain listener redirects; restarted over
// the same storage with Pebble gone, it serves the stored certificate at
// once.
func TestACMECertificateServesTraffic(t *testing.T) {
	waitGoroutines(t)
	// The top-level test's logger: certmagic may still log just after a
	// subtest's server has stopped.
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	for _, engine := range []string{config.EngineNative, config.EngineNetHTTP} {
		for _, challenge := range []string{certstest.ChallengeHTTP01, certstest.ChallengeTLSALPN01} {
			t.Run(engine+"/"+challenge, func(t *testing.T) {
				testACME(t, log, engine, challenge)
			})
		}
	}
}

func testACME(t *testing.T, log *zap.Logger, engine, challenge string) {
	start := time.Now()
	p := certstest.StartPebble(t, certstest.Options{})
	backend := newApp(t, "europe-west")
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
engine: %s
geoip: {database: ../testdata/geoip2-city.mmdb}
health_check: {path: /health, interval: 1s, timeout: 900ms}
tls:
  listen: 127.0.0.1:0
  acme: {domains: [%s], email: ops@example.com, ca: "%s", ca_root: "%s", storage: "%s"}
  redirect_http: true
regions:
  - name: europe-west
    location: {lat: 50.45, lon: 3.82}
    backends: [{url: "%s"}]
`, engine, acmeDomain, p.DirectoryURL, p.HTTPSRoot, t.TempDir(), backend.srv.URL)

	srv, stop := startACMEServer(t, yaml, log)
	// Pebble validates on one listener only: the other challenge type
	// fails at once, so the certificate proves the one left reached
	// geoproxy.
	switch challenge {
	case certstest.ChallengeHTTP01:
		p.SetChallengePorts(tcpPort(t, srv.ProxyAddr()), 0)
	case certstest.ChallengeTLSALPN01:
		p.SetChallengePorts(0, tcpPort(t, srv.TLSAddr()))
	}

	// An answer from the backend over the certificate, within 20 s.
	var resp *http.Response
	var body string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var err error
		resp, body, err = getACME(srv.TLSAddr().String(), p.Roots, "/hello")
		if err == nil && resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%s: %s", resp.Status, body)
			}
			t.Fatalf("no answer over a certificate for %s within 20 s: %v", acmeDomain, err)
		}
	}
	t.Logf("answered over the certificate %s after start", time.Since(start).Round(time.Millisecond))
	assert.Equal(t, "europe-west GET ", body)
	assert.Equal(t, "europe-west", resp.Header.Get("X-Geoproxy-Region"))
	assert.Equal(t, 2, resp.ProtoMajor, "HTTP/2")
	leaf := resp.TLS.PeerCertificates[0]
	assert.Equal(t, []string{acmeDomain}, leaf.DNSNames)
	assert.Equal(t, p.Issuer.Subject.String(), leaf.Issuer.String(), "issued by Pebble")
	assert.Equal(t, "https", backend.lastHeaders().Get("X-Forwarded-Proto"))
	// Pebble records the order just after issuing.
	var validated []string
	for wait := time.Now().Add(5 * time.Second); validated == nil && time.Now().Before(wait); {
		if validated = p.ValidatedBy(leaf); validated == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	assert.Equal(t, []string{challenge}, validated, "the challenge Pebble validated")

	// The plain listener redirects.
	served := backend.served.Load()
	req, err := http.NewRequest(http.MethodGet, "http://"+srv.ProxyAddr().String()+"/rides?city=paris", nil)
	require.NoError(t, err)
	req.Host = acmeDomain
	noFollow := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	plain, err := noFollow.Do(req)
	require.NoError(t, err)
	_ = plain.Body.Close()
	assert.Equal(t, http.StatusPermanentRedirect, plain.StatusCode)
	tlsPort := strconv.Itoa(tcpPort(t, srv.TLSAddr()))
	assert.Equal(t, "https://"+acmeDomain+":"+tlsPort+"/rides?city=paris", plain.Header.Get("Location"))
	assert.Equal(t, served, backend.served.Load(), "the redirect proxies nothing")

	// Restart with the CA gone: the stored certificate is served at once.
	stop()
	p.Close()
	srv, _ = startACMEServer(t, yaml, log)
	restarted := time.Now()
	var cs tls.ConnectionState
	require.Eventually(t, func() bool {
		var err error
		cs, err = handshakeACME(srv.TLSAddr().String(), p.Roots)
		return err == nil
	}, 2*time.Second, 20*time.Millisecond, "stored certificate served after the restart")
	t.Logf("stored certificate served %s after the restarted server started", time.Since(restarted).Round(time.Millisecond))
	assert.Equal(t, leaf.SerialNumber, cs.PeerCertificates[0].SerialNumber, "the certificate obtained before")
	resp, body, err = getACME(srv.TLSAddr().String(), p.Roots, "/again")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Equal(t, 2, resp.ProtoMajor)
}

// startACMEServer starts geoproxy from yaml; stop shuts it down, once,
// and runs when the test ends if not called before.
func startACMEServer(t *testing.T, yaml string, log *zap.Logger) (srv *server.Server, stop func()) {
	t.Helper()
	cfg, err := config.Parse("acme.yaml", []byte(yaml))
	require.NoError(t, err)
	srv, err = server.New(server.Options{Config: cfg, Log: log, Version: "test"})
	require.NoError(t, err)
	require.NoError(t, srv.Start(context.Background()))
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			assert.NoError(t, srv.Shutdown(ctx))
		})
	}
	t.Cleanup(stop)
	return srv, stop
}

// getACME sends a GET for path on acmeDomain to the TLS listener at addr,
// verifying its certificate against roots, and reads the answer.
func getACME(addr string, roots *x509.CertPool, path string) (*http.Response, string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		TLSClientConfig:   &tls.Config{ServerName: acmeDomain, RootCAs: roots},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get("https://" + acmeDomain + path)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// handshakeACME makes a TLS handshake for acmeDomain with addr, verified
// against roots.
func handshakeACME(addr string, roots *x509.CertPool) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: acmeDomain, RootCAs: roots})
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.ConnectionState(), nil
}

// tcpPort is a TCP listener address's port.
func tcpPort(t *testing.T, a net.Addr) int {
	t.Helper()
	ta, ok := a.(*net.TCPAddr)
	require.True(t, ok, "%v is not a TCP address", a)
	return ta.Port
}

// waitGoroutines fails t if goroutines started from now on, but those
// Pebble and certmagic keep by design (certstest.LeakOptions), are still
// running 15 s after its cleanups, so that none is left for the package's
// leak check.
func waitGoroutines(t *testing.T) {
	t.Helper()
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, certstest.LeakOptions()...)
	t.Cleanup(func() {
		var err error
		for deadline := time.Now().Add(15 * time.Second); ; {
			if err = goleak.Find(opts...); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		assert.NoError(t, err, "goroutines left")
	})
}
