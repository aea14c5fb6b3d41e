package server_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// BenchmarkServeHTTP is one full request through the proxy handler (client
// address from a trusted X-Forwarded-For, embedded database, plan, pick,
// forward over a kept-alive connection to an in-process backend, response
// copied back), without the client-side network.
func BenchmarkServeHTTP(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			return
		}
		_, _ = io.WriteString(w, "hello from the app\n")
	}))
	defer backend.Close()
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
geoip:
  trusted_proxies: [127.0.0.0/8]
health_check: {interval: 1h, timeout: 1s}
regions:
  - {name: us-east, location: {lat: 33.84, lon: -81.16}, backends: [{url: %[1]s}]}
  - {name: us-west, location: {lat: 45.59, lon: -121.18}, backends: [{url: %[1]s/w}]}
  - {name: europe-west, location: {lat: 50.45, lon: 3.82}, backends: [{url: %[1]s/e}]}
`, backend.URL)
	cfg, err := config.Parse("bench.yaml", []byte(yaml))
	require.NoError(b, err)
	srv, err := server.New(server.Options{Config: cfg, Log: zap.NewNop(), Version: "bench"})
	require.NoError(b, err)
	require.NoError(b, srv.Start(context.Background()))
	defer func() { _ = srv.Shutdown(context.Background()) }()
	h := srv.Handler()

	rng := rand.New(rand.NewPCG(2, 2))
	reqs := make([]*http.Request, 256)
	for i := range reqs {
		a := netip.AddrFrom4([4]byte{byte(1 + rng.IntN(222)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
		r := httptest.NewRequest(http.MethodGet, "http://geoproxy/", nil)
		r.RemoteAddr = "127.0.0.1:50000"
		r.Header.Set("X-Forwarded-For", a.String())
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
