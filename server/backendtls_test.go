package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/certs/certstest"
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

// clientCA makes a certificate authority and a client certificate it
// signed; it returns the authority's pool and the client's files.
func clientCA(t *testing.T, dir string) (*x509.CertPool, string, string) {
	t.Helper()
	ca := certstest.NewCA(t, "geoproxy test client CA")
	cert, key := ca.WritePair(t, dir, "client", x509.ExtKeyUsageClientAuth, "geoproxy")
	return ca.Pool, cert, key
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
