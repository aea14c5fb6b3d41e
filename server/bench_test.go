package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// benchServer starts a server with the given engine in front of one
// in-process backend; the three regions share it through base paths.
func benchServer(b *testing.B, engine string) *server.Server {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/health") {
			return
		}
		_, _ = io.WriteString(w, "hello from the app\n")
	}))
	b.Cleanup(backend.Close)
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
engine: %[2]s
geoip:
  trusted_proxies: [127.0.0.0/8]
health_check: {interval: 1h, timeout: 1s}
regions:
  - {name: us-east, location: {lat: 33.84, lon: -81.16}, backends: [{url: %[1]s}]}
  - {name: us-west, location: {lat: 45.59, lon: -121.18}, backends: [{url: %[1]s/w}]}
  - {name: europe-west, location: {lat: 50.45, lon: 3.82}, backends: [{url: %[1]s/e}]}
`, backend.URL, engine)
	cfg, err := config.Parse("bench.yaml", []byte(yaml))
	require.NoError(b, err)
	srv, err := server.New(server.Options{Config: cfg, Log: zap.NewNop(), Version: "bench"})
	require.NoError(b, err)
	require.NoError(b, srv.Start(context.Background()))
	b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv
}

func clientAddrs(n int) []string {
	rng := rand.New(rand.NewPCG(2, 2))
	out := make([]string, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{byte(1 + rng.IntN(222)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))}).String()
	}
	return out
}

// BenchmarkServeNative is one full request through the native engine, on
// real loopback connections: a kept-alive client connection sends a
// request with a trusted X-Forwarded-For, the proxy locates the client in
// the embedded database, plans, picks, forwards over a kept-alive
// connection to an in-process backend and relays the answer.
func BenchmarkServeNative(b *testing.B) { benchServe(b, config.EngineNative) }

// BenchmarkServeNetHTTP is the same request through the net/http engine.
func BenchmarkServeNetHTTP(b *testing.B) { benchServe(b, config.EngineNetHTTP) }

func benchServe(b *testing.B, engine string) {
	srv := benchServer(b, engine)
	conn, err := net.Dial("tcp", srv.ProxyAddr().String())
	require.NoError(b, err)
	b.Cleanup(func() { _ = conn.Close() })
	reqs := make([][]byte, 256)
	for i, a := range clientAddrs(len(reqs)) {
		reqs[i] = []byte("GET / HTTP/1.1\r\nHost: geoproxy\r\nX-Forwarded-For: " + a + "\r\n\r\n")
	}
	br := bufio.NewReader(conn)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := conn.Write(reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		i++
	}
}
