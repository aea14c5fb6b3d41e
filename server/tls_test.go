package server_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/certs/certstest"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// tlsEnv starts the e2e environment with a TLS listener whose certificate
// (for 127.0.0.1 and localhost) a test CA signed, plus more of the tls
// block and top-level YAML; it returns the env and the CA's pool.
func tlsEnv(t *testing.T, engine, tlsExtra, top string) (*env, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	ca := certstest.NewCA(t, "geoproxy test CA")
	cert, key := ca.WritePair(t, dir, "proxy", x509.ExtKeyUsageServerAuth, "127.0.0.1", "localhost")
	e := start(t, envOpts{engine: engine, top: fmt.Sprintf(
		"tls:\n  listen: 127.0.0.1:0\n  certificates: [{cert: %s, key: %s}]\n%s%s", cert, key, tlsExtra, top)})
	e.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}
	return e, ca.Pool
}

// TestTLSListenerSpeaksHTTP2AndHTTP1: ALPN gives HTTP/2 to clients that
// offer it and HTTP/1.1 to the others, on both engines; TLS 1.2 and 1.3
// are accepted, older versions refused and counted.
func TestTLSListenerSpeaksHTTP2AndHTTP1(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e, pool := tlsEnv(t, engine, "", "")
		url := "https://" + e.srv.TLSAddr().String() + "/hello"
		for _, c := range []struct {
			name  string
			tr    *http.Transport
			proto int
		}{
			{"h2", &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, 2},
			{"http/1.1", &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}}, 1},
			{"tls1.2", &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}, 2},
		} {
			t.Run(c.name, func(t *testing.T) {
				defer c.tr.CloseIdleConnections()
				req, err := http.NewRequest(http.MethodGet, url, nil)
				require.NoError(t, err)
				req.Header.Set("X-Forwarded-For", london)
				resp, err := (&http.Client{Transport: c.tr, Timeout: 5 * time.Second}).Do(req)
				require.NoError(t, err)
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
				assert.Equal(t, c.proto, resp.ProtoMajor)
				assert.Equal(t, "europe-west", resp.Header.Get("X-Geoproxy-Region"))
				h := e.apps["europe-west"].lastHeaders()
				assert.Equal(t, "https", h.Get("X-Forwarded-Proto"))
				assert.Equal(t, "London", h.Get("X-City"))
			})
		}
		// TLS 1.1 is refused, and counted.
		_, err := tls.Dial("tcp", e.srv.TLSAddr().String(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		require.Error(t, err)
		require.Eventually(t, func() bool {
			_, m := e.adminGet("/metrics")
			return strings.Contains(m, `geoproxy_tls_handshake_errors_total{reason="protocol"} 1`)
		}, 5*time.Second, 20*time.Millisecond)
		// The plain listener still proxies.
		resp, body := e.get(seattle, "/")
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		assert.Equal(t, "us-west", resp.Header.Get("X-Geoproxy-Region"))
	})
}

// TestRedirectHTTP: with tls.redirect_http the plain listener answers
// every request with 308 to the same URL on the TLS listener, and proxies
// nothing.
func TestRedirectHTTP(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e, _ := tlsEnv(t, engine, "  redirect_http: true\n", "")
		_, port, err := net.SplitHostPort(e.srv.TLSAddr().String())
		require.NoError(t, err)
		client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for _, c := range []struct{ host, path, want string }{
			{"movr.example.com", "/rides?city=paris", "https://movr.example.com:" + port + "/rides?city=paris"},
			{"movr.example.com:8080", "/", "https://movr.example.com:" + port + "/"},
			{"[2001:db8::1]:80", "/a%20b", "https://[2001:db8::1]:" + port + "/a%20b"},
		} {
			req, err := http.NewRequest(http.MethodPost, "http://"+e.srv.ProxyAddr().String()+c.path, strings.NewReader("x"))
			require.NoError(t, err)
			req.Host = c.host
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusPermanentRedirect, resp.StatusCode)
			assert.Equal(t, c.want, resp.Header.Get("Location"))
		}
		for name, a := range e.apps {
			assert.Zero(t, a.served.Load(), "%s got a request", name)
		}
		// The TLS listener serves.
		resp, body := e.get(london, "/")
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
	})
	// Behind a port mapping, the port clients use.
	for port, want := range map[string]string{"443": "https://movr.example.com/a", "8443": "https://movr.example.com:8443/a"} {
		e, _ := tlsEnv(t, config.EngineNative, "  redirect_http: true\n  redirect_port: "+port+"\n", "")
		req, err := http.NewRequest(http.MethodGet, "http://"+e.srv.ProxyAddr().String()+"/a", nil)
		require.NoError(t, err)
		req.Host = "movr.example.com"
		resp, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, want, resp.Header.Get("Location"))
	}
}

// TestConnectionLimits: beyond limits.max_connections a new connection is
// answered 503 and closed; beyond limits.max_connections_per_client, 429;
// both with Retry-After, on each listener, counted; closing a connection
// makes room again.
func TestConnectionLimits(t *testing.T) {
	for _, engine := range []string{config.EngineNative, config.EngineNetHTTP} {
		for _, overTLS := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tls=%v", engine, overTLS), func(t *testing.T) {
				e, pool := tlsEnv(t, engine, "", "limits: {max_connections: 3, max_connections_per_client: 2}\n")
				addr := e.srv.ProxyAddr().String()
				if !overTLS {
					pool = nil
				} else {
					addr = e.srv.TLSAddr().String()
				}
				dial := func(local string) net.Conn {
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
					var c net.Conn
					var err error
					if pool != nil {
						c, err = tls.DialWithDialer(&d, "tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
					} else {
						c, err = d.Dial("tcp", addr)
					}
					require.NoError(t, err)
					t.Cleanup(func() { c.Close() })
					return c
				}
				roundTrip := func(c net.Conn) *http.Response {
					require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
					_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: app\r\n\r\n")
					require.NoError(t, err)
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					require.NoError(t, err)
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					return resp
				}
				a1, a2 := dial("127.0.0.2"), dial("127.0.0.2")
				assert.Equal(t, http.StatusOK, roundTrip(a1).StatusCode)
				assert.Equal(t, http.StatusOK, roundTrip(a2).StatusCode)
				// A third from the same client: 429.
				resp := roundTrip(dial("127.0.0.2"))
				assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
				assert.Equal(t, "1", resp.Header.Get("Retry-After"))
				// Another client may open one more: the listener's third.
				b1 := dial("127.0.0.3")
				assert.Equal(t, http.StatusOK, roundTrip(b1).StatusCode)
				// A fourth connection on the listener: 503.
				resp = roundTrip(dial("127.0.0.4"))
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
				assert.Equal(t, "1", resp.Header.Get("Retry-After"))
				// Closing one makes room.
				require.NoError(t, a1.Close())
				require.Eventually(t, func() bool {
					c := dial("127.0.0.4")
					defer c.Close()
					return roundTrip(c).StatusCode == http.StatusOK
				}, 5*time.Second, 50*time.Millisecond)
				_, m := e.adminGet("/metrics")
				assert.Contains(t, m, `geoproxy_client_limit_hits_total{limit="client_connections"} 1`)
				assert.Regexp(t, `geoproxy_client_limit_hits_total\{limit="connections"\} [1-9]`, m)
				listener := "http"
				if overTLS {
					listener = "https"
				}
				assert.Regexp(t, `geoproxy_client_connections\{listener="`+listener+`"\} [23]\n`, m)
			})
		}
	}
}

// TestTLSReload: a reload that names other certificate files serves them
// to new handshakes, while a connection opened before keeps serving
// requests; a reload naming a broken file changes nothing.
func TestTLSReload(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		dir := t.TempDir()
		ca := certstest.NewCA(t, "geoproxy test CA")
		certA, keyA := ca.WritePair(t, dir, "a", x509.ExtKeyUsageServerAuth, "a", "127.0.0.1")
		certB, keyB := ca.WritePair(t, dir, "b", x509.ExtKeyUsageServerAuth, "b", "127.0.0.1")
		app := newApp(t, "europe-west")
		text := func(cert, key string) string {
			return fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
engine: %s
tls:
  listen: 127.0.0.1:0
  certificates: [{cert: %s, key: %s}]
geoip: {database: ../testdata/geoip2-city.mmdb}
regions:
  - name: europe-west
    location: {lat: 50.45, lon: 3.82}
    backends: [{url: %s}]
`, engine, cert, key, app.srv.URL)
		}
		path := dir + "/geoproxy.yaml"
		require.NoError(t, os.WriteFile(path, []byte(text(certA, keyA)), 0o600))
		srv := runYAMLFile(t, path)
		addr := srv.TLSAddr().String()
		served := func() string {
			c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool})
			require.NoError(t, err)
			defer c.Close()
			return c.ConnectionState().PeerCertificates[0].Subject.CommonName
		}
		require.Equal(t, "a", served())

		// An HTTP/2 connection opened now.
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		get := func() *http.Response {
			resp, err := client.Get("https://" + addr + "/")
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp
		}
		first := get()
		require.Equal(t, http.StatusOK, first.StatusCode)
		require.Equal(t, 2, first.ProtoMajor)

		require.NoError(t, os.WriteFile(path, []byte(text(certB, keyB)), 0o600))
		res := srv.Reload()
		require.True(t, res.OK, "%v", res.Errors)
		assert.Equal(t, "b", served(), "a new handshake gets the new certificate")
		resp := get()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "the open connection still serves")
		assert.Equal(t, "a", resp.TLS.PeerCertificates[0].Subject.CommonName, "on its own handshake")

		// A broken certificate file refuses the reload.
		require.NoError(t, os.WriteFile(dir+"/broken.crt", []byte("not a certificate"), 0o600))
		require.NoError(t, os.WriteFile(path, []byte(text(dir+"/broken.crt", keyB)), 0o600))
		res = srv.Reload()
		require.False(t, res.OK)
		assert.Contains(t, strings.Join(res.Errors, "\n"), "tls.certificates[0]: cannot use the certificate")
		assert.Equal(t, "b", served())
	})
}

// TestNativeEngineParsesTLSRequests: on the native engine, HTTP/1.1 over
// TLS is parsed by the engine itself, as on the plain listener: what it
// refuses there (here, both Content-Length and Transfer-Encoding) it
// refuses over TLS, and pipelined requests are answered in order.
func TestNativeEngineParsesTLSRequests(t *testing.T) {
	e, pool := tlsEnv(t, config.EngineNative, "", "")
	dial := func() (*tls.Conn, *bufio.Reader) {
		c, err := tls.Dial("tcp", e.srv.TLSAddr().String(), &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		return c, bufio.NewReader(c)
	}
	c, br := dial()
	_, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)

	c, br = dial()
	_, err = io.WriteString(c, "GET /a HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: "+london+"\r\n\r\n"+
		"GET /b HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: "+seattle+"\r\n\r\n")
	require.NoError(t, err)
	for _, region := range []string{"europe-west", "us-west"} {
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, region, resp.Header.Get("X-Geoproxy-Region"))
	}
	assert.Equal(t, "https", e.apps["us-west"].lastHeaders().Get("X-Forwarded-Proto"))
}

// TestHTTP2ClientsMoveToAReloadedConfig: an HTTP/2 client that keeps one
// connection busy through reloads is told to move (GOAWAY) by the
// configuration a reload replaced, and goes on, without an error, on the
// new one; not cut when the old one's grace ends.
func TestHTTP2ClientsMoveToAReloadedConfig(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		dir := t.TempDir()
		ca := certstest.NewCA(t, "geoproxy test CA")
		cert, key := ca.WritePair(t, dir, "proxy", x509.ExtKeyUsageServerAuth, "127.0.0.1")
		app := newApp(t, "europe-west")
		text := func(gen int) string {
			return fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
engine: %s
tls:
  listen: 127.0.0.1:0
  certificates: [{cert: %s, key: %s}]
geoip: {database: ../testdata/geoip2-city.mmdb}
proxy: {request_headers: {X-Generation: "g%d"}}
regions:
  - name: europe-west
    location: {lat: 50.45, lon: 3.82}
    backends: [{url: %s}]
`, engine, cert, key, gen, app.srv.URL)
		}
		path := dir + "/geoproxy.yaml"
		require.NoError(t, os.WriteFile(path, []byte(text(1)), 0o600))
		cfg, err := config.Load(path)
		require.NoError(t, err)
		srv := runConfig(t, cfg, server.Options{ClientTimeout: time.Second})
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		url := "https://" + srv.TLSAddr().String() + "/"
		get := func() error {
			resp, err := client.Get(url)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && (resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2) {
				err = fmt.Errorf("status %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
			}
			return err
		}
		require.NoError(t, get())
		for gen := 2; gen <= 3; gen++ {
			require.NoError(t, os.WriteFile(path, []byte(text(gen)), 0o600))
			require.True(t, srv.Reload().OK)
			// Requests keep coming past the old configuration's grace
			// (the client timeout, 1 s, and its own).
			for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
				require.NoError(t, get())
				time.Sleep(5 * time.Millisecond)
			}
			assert.Equal(t, fmt.Sprintf("g%d", gen), app.lastHeaders().Get("X-Generation"), "served by the reloaded configuration")
		}
	})
}

// TestTLSSessionsResume: a client that comes back resumes its TLS session
// (no new certificate exchange), on both engines.
func TestTLSSessionsResume(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		e, pool := tlsEnv(t, engine, "", "")
		cache := tls.NewLRUClientSessionCache(4)
		for i, want := range []bool{false, true, true} {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ClientSessionCache: cache}, ForceAttemptHTTP2: true}
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + e.srv.TLSAddr().String() + "/")
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body) // (the session ticket comes after the handshake)
			resp.Body.Close()
			tr.CloseIdleConnections()
			assert.Equal(t, want, resp.TLS.DidResume, "connection %d", i+1)
		}
	})
}
