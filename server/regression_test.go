package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/server"
)

// switchingBackend answers its health checks 200 and every other request
// "101 Switching Protocols", whether or not the request asked to upgrade,
// then keeps the connection until the test ends.
func switchingBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() {
				br := bufio.NewReader(nc)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if l == "\r\n" {
							break
						}
					}
					if strings.Contains(line, "/health") {
						_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
						continue
					}
					_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
					return
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, nc := range conns {
			_ = nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// startRegressionProxy starts a proxy on the engine configured by engineYAML in
// front of one backend, and waits until it is ready.
func startRegressionProxy(t *testing.T, engineYAML, backendURL string) *server.Server {
	t.Helper()
	return startRegressionProxyWith(t, engineYAML, backendURL, 0)
}

// startRegressionProxyWith is startRegressionProxy with a client timeout.
func startRegressionProxyWith(t *testing.T, engineYAML, backendURL string, clientTimeout time.Duration) *server.Server {
	t.Helper()
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
geoip: {database: ../testdata/geoip2-city.mmdb}
health_check: {path: /health, interval: 200ms, timeout: 100ms}
%sregions:
  - name: europe-west
    location: {lat: 50.45, lon: 3.82}
    backends: [{url: "%s"}]
`, engineYAML, backendURL)
	srv := runYAML(t, yaml, server.Options{ClientTimeout: clientTimeout})
	require.Eventually(t, func() bool { ok, _ := srv.Ready(); return ok }, 5*time.Second, 10*time.Millisecond)
	return srv
}

// A backend that switches protocols when nobody asked it to has not
// answered the request: every engine answers 502, as the native engine
// does, never a 200 with nothing in it.
func TestUnaskedSwitchIsA502OnEveryEngine(t *testing.T) {
	for _, eng := range hardEngines {
		t.Run(eng.name, func(t *testing.T) {
			srv := startRegressionProxy(t, eng.yaml, switchingBackend(t))
			nc, err := net.Dial("tcp", srv.ProxyAddr().String())
			require.NoError(t, err)
			defer nc.Close()
			require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
			_, err = io.WriteString(nc, "GET /plain HTTP/1.1\r\nHost: h.example\r\n\r\n")
			require.NoError(t, err)
			res, err := http.ReadResponse(bufio.NewReader(nc), &http.Request{Method: http.MethodGet})
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			assert.Equal(t, http.StatusBadGateway, res.StatusCode, "%s body %q", res.Status, body)
		})
	}
}

// A backend that answers an upload early, without reading it, and then
// closes the connection (as Go's server does for a large unread body) has
// answered: its answer reaches the client on every engine, rather than a
// 502 for a backend that was reached.
func TestEarlyAnswerToAnUploadReachesTheClient(t *testing.T) {
	for _, eng := range hardEngines {
		t.Run(eng.name, func(t *testing.T) {
			be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/health" {
					http.Error(w, "too big for this app", http.StatusRequestEntityTooLarge)
				}
			}))
			t.Cleanup(be.Close)
			srv := startRegressionProxy(t, eng.yaml, be.URL)
			const size = 8 << 20
			req, err := http.NewRequest(http.MethodPost, "http://"+srv.ProxyAddr().String()+"/upload",
				io.LimitReader(strings.NewReader(strings.Repeat("u", size)), size))
			require.NoError(t, err)
			req.ContentLength = size
			client := &http.Client{Timeout: 10 * time.Second}
			res, err := client.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			assert.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode, "%s %q", res.Status, body)
		})
	}
}

// A head not received within the client timeout ends the connection on
// every engine, with 408 (on the nethttp engine, the connections of
// nethttp.Listener answer it: Go's server would close without one).
func TestSlowHeadEndsTheConnection(t *testing.T) {
	for _, eng := range hardEngines {
		t.Run(eng.name, func(t *testing.T) {
			be := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			t.Cleanup(be.Close)
			srv := startRegressionProxyWith(t, eng.yaml, be.URL, 300*time.Millisecond)
			nc, err := net.Dial("tcp", srv.ProxyAddr().String())
			require.NoError(t, err)
			defer nc.Close()
			require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
			start := time.Now()
			_, err = io.WriteString(nc, "GET /slow HTTP/1.1\r\nHost: h.example\r\n")
			require.NoError(t, err)
			res, err := http.ReadResponse(bufio.NewReader(nc), &http.Request{Method: http.MethodGet})
			assert.Less(t, time.Since(start), 2*time.Second, "cut at the client timeout")
			require.NoError(t, err)
			_ = res.Body.Close()
			assert.Equal(t, http.StatusRequestTimeout, res.StatusCode)
		})
	}
}
