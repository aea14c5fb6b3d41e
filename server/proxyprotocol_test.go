package server_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/certs/certstest"
)

// TestProxyProtocol: behind a load balancer that speaks the PROXY
// protocol (v1 or v2), the address its header carries is the client's,
// for geo and X-Forwarded-For, on the plain and the TLS listener of both
// engines; a peer that is not a trusted proxy and sends a header is
// refused; one that sends none is served as itself.
func TestProxyProtocol(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		dir := t.TempDir()
		ca := certstest.NewCA(t, "geoproxy test CA")
		cert, key := ca.WritePair(t, dir, "proxy", x509.ExtKeyUsageServerAuth, "127.0.0.1")
		e := start(t, envOpts{engine: engine, trusted: "[127.0.0.1/32]", top: fmt.Sprintf(
			"proxy_protocol: true\ntls:\n  listen: 127.0.0.1:0\n  certificates: [{cert: %s, key: %s}]\n", cert, key)})

		// ask connects from local, sends header (if any), then a request,
		// over TLS if asked, and returns the answer (nil if the
		// connection was closed without one).
		ask := func(local string, header []byte, overTLS bool) *http.Response {
			t.Helper()
			addr := e.srv.ProxyAddr().String()
			if overTLS {
				addr = e.srv.TLSAddr().String()
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
			nc, err := d.Dial("tcp", addr)
			require.NoError(t, err)
			defer nc.Close()
			require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
			if header != nil {
				_, err = nc.Write(header)
				require.NoError(t, err)
			}
			conn := nc
			if overTLS {
				tc := tls.Client(nc, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
				if tc.Handshake() != nil {
					return nil
				}
				conn = tc
			}
			if _, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
				return nil
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return nil
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp
		}
		v1 := []byte("PROXY TCP4 " + london + " 192.0.2.1 40000 80\r\n")
		v2, err := proxyproto.HeaderProxyFromAddrs(2,
			&net.TCPAddr{IP: net.ParseIP(seattle), Port: 40000}, &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 443}).Format()
		require.NoError(t, err)

		for _, overTLS := range []bool{false, true} {
			t.Run(fmt.Sprintf("tls=%v", overTLS), func(t *testing.T) {
				resp := ask("127.0.0.1", v1, overTLS)
				require.NotNil(t, resp)
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.Equal(t, "europe-west", resp.Header.Get("X-Geoproxy-Region"), "v1: the client is in London")
				h := e.apps["europe-west"].lastHeaders()
				assert.Equal(t, london, h.Get("X-Forwarded-For"))
				assert.Equal(t, "London", h.Get("X-City"))

				resp = ask("127.0.0.1", v2, overTLS)
				require.NotNil(t, resp)
				assert.Equal(t, "us-west", resp.Header.Get("X-Geoproxy-Region"), "v2: the client is in Seattle")
				assert.Equal(t, seattle, e.apps["us-west"].lastHeaders().Get("X-Forwarded-For"))

				// The trusted proxy's own connection (a health check) needs no header.
				resp = ask("127.0.0.1", nil, overTLS)
				require.NotNil(t, resp)
				assert.Equal(t, http.StatusOK, resp.StatusCode)

				// Anyone else sending a header is refused, v1 or v2.
				assert.Nil(t, ask("127.0.0.2", v1, overTLS), "an untrusted peer's v1 header")
				assert.Nil(t, ask("127.0.0.2", v2, overTLS), "an untrusted peer's v2 header")
				// And served as itself without one.
				resp = ask("127.0.0.2", nil, overTLS)
				require.NotNil(t, resp)
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.Equal(t, "127.0.0.2", e.apps["us-east"].lastHeaders().Get("X-Forwarded-For"))
			})
		}
	})
}
