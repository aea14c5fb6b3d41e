package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// writePEM writes one PEM block to a file in dir and returns its path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a certificate the authority signed, for usage and the
// DNS names or IP addresses given, and its key, to dir/name.crt and
// dir/name.key; it returns their paths.
func (ca *testCA) issue(t *testing.T, dir, name string, usage x509.ExtKeyUsage, hosts ...string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	leaf := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return writePEM(t, dir, name+".crt", "CERTIFICATE", der), writePEM(t, dir, name+".key", "PRIVATE KEY", keyDER)
}

// clientCA makes a certificate authority and a client certificate it
// signed; it returns the authority's pool and the client's files.
func clientCA(t *testing.T, dir string) (*x509.CertPool, string, string) {
	t.Helper()
	ca := newTestCA(t, "geoproxy test client CA")
	cert, key := ca.issue(t, dir, "geoproxy", x509.ExtKeyUsageClientAuth)
	return ca.pool, cert, key
}

// TestHTTPSBackends: an https backend's authority, server name and client
// certificate come from the config, for the requests and the probes, on
// both engines.
func TestHTTPSBackends(t *testing.T) {
	dir := t.TempDir()
	clientPool, certFile, keyFile := clientCA(t, dir)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "anonymous"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			who = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		_, _ = io.WriteString(w, "hello "+who)
	})
	backend := httptest.NewUnstartedServer(app)
	backend.TLS = &tls.Config{ClientCAs: clientPool, ClientAuth: tls.VerifyClientCertIfGiven}
	backend.StartTLS()
	t.Cleanup(backend.Close)
	mtls := httptest.NewUnstartedServer(app)
	mtls.TLS = &tls.Config{ClientCAs: clientPool, ClientAuth: tls.RequireAndVerifyClientCert}
	mtls.StartTLS()
	t.Cleanup(mtls.Close)
	caFile := writePEM(t, dir, "ca.crt", "CERTIFICATE", backend.Certificate().Raw) // both share httptest's certificate

	cases := []struct {
		name, url, tls string
		want           string // "" when the backend must be unreachable (503: no region)
	}{
		{"its authority from ca_file", backend.URL, fmt.Sprintf("{ca_file: %s}", caFile), "hello anonymous"},
		{"an unknown authority is refused", backend.URL, "", ""},
		{"server_name names the certificate's host", backend.URL, fmt.Sprintf("{ca_file: %s, server_name: example.com}", caFile), "hello anonymous"},
		{"a server_name the certificate lacks is refused", backend.URL, fmt.Sprintf("{ca_file: %s, server_name: wrong.example}", caFile), ""},
		{"a client certificate for mutual TLS", mtls.URL, fmt.Sprintf("{ca_file: %s, cert_file: %s, key_file: %s}", caFile, certFile, keyFile), "hello geoproxy"},
		{"mutual TLS without a client certificate is refused", mtls.URL, fmt.Sprintf("{ca_file: %s}", caFile), ""},
	}
	for _, engine := range []string{"native", "nethttp"} {
		for _, c := range cases {
			t.Run(engine+"/"+c.name, func(t *testing.T) {
				tlsKey := ""
				if c.tls != "" {
					tlsKey = ", tls: " + c.tls
				}
				srv := runYAML(t, fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
engine: %s
geoip: {database: ../testdata/geoip2-city.mmdb}
health_check: {interval: 2s, timeout: 1s, healthy_threshold: 1}
regions:
  - {name: r, location: {lat: 1, lon: 2}, backends: [{url: %q%s}]}
`, engine, c.url, tlsKey), server.Options{})
				if c.want == "" {
					resp, err := http.Get("http://" + srv.ProxyAddr().String() + "/")
					require.NoError(t, err)
					_ = resp.Body.Close()
					assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "its probes fail: no region can serve")
					return
				}
				require.Eventually(t, func() bool { return srv.Router().Snapshot().Regions[0].Eligible() },
					5*time.Second, 10*time.Millisecond, "its probe passes over the same TLS settings")
				resp, err := http.Get("http://" + srv.ProxyAddr().String() + "/")
				require.NoError(t, err)
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.Equal(t, c.want, string(body))
			})
		}
	}
}

func TestBackendTLSFilesThatCannotBeReadRefuseTheConfig(t *testing.T) {
	_, err := server.New(server.Options{Config: mustParse(t, `regions:
  - {name: r, location: {lat: 1, lon: 2}, backends: [{url: "https://127.0.0.1:1", tls: {ca_file: /nonexistent/ca.pem}}]}
`)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "regions[0].backends[0]: tls.ca_file: open /nonexistent/ca.pem")
}

func mustParse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	require.NoError(t, err)
	return cfg
}
