package server_test

import (
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
	"github.com/valyala/fasthttp"
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

// BenchmarkServeFast is one full request through the fasthttp engine's
// handler: client address from a trusted X-Forwarded-For, embedded
// database, plan, pick, forward over a kept-alive connection to an
// in-process backend, response ready for the client.
func BenchmarkServeFast(b *testing.B) {
	h := benchServer(b, config.EngineFast).FastHandler()
	addrs := clientAddrs(256)
	peer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var req fasthttp.Request
		req.Header.SetMethod("GET")
		req.SetRequestURI("/")
		req.Header.SetHost("geoproxy")
		req.Header.Set("X-Forwarded-For", addrs[i%len(addrs)])
		ctx.Init(&req, peer, nil)
		h(&ctx)
		if ctx.Response.StatusCode() != http.StatusOK {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		i++
	}
}

// BenchmarkServeHTTP is one full request through the proxy handler (client
// address from a trusted X-Forwarded-For, embedded database, plan, pick,
// forward over a kept-alive connection to an in-process backend, response
// copied back), without the client-side network.
func BenchmarkServeHTTP(b *testing.B) {
	h := benchServer(b, config.EngineNetHTTP).Handler()
	reqs := make([]*http.Request, 256)
	for i, a := range clientAddrs(len(reqs)) {
		r := httptest.NewRequest(http.MethodGet, "http://geoproxy/", nil)
		r.RemoteAddr = "127.0.0.1:50000"
		r.Header.Set("X-Forwarded-For", a)
		reqs[i] = r
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, reqs[i%len(reqs)])
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
		i++
	}
}
