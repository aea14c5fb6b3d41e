package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/geoproxy/geoproxy/certs/certstest"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// grpcBackend is a gRPC server speaking h2c, as gRPC servers do behind a
// proxy: gRPC's health service (a unary call, Check, and a server stream,
// Watch) for "movr", whose status names the region; and /health for the
// probes.
type grpcBackend struct {
	region string
	health *health.Server
	srv    *http.Server
	ln     net.Listener
}

// newGRPCBackend starts a gRPC backend, in h2c; or, with tlsCfg, in
// HTTP/2 over TLS.
func newGRPCBackend(t *testing.T, region string, tlsCfg *tls.Config) *grpcBackend {
	t.Helper()
	b := &grpcBackend{region: region, health: health.NewServer()}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, b.health)
	reflection.Register(gs) // a stream in both directions, ServerReflectionInfo
	b.health.SetServingStatus("movr", healthpb.HealthCheckResponse_SERVING)
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	if tlsCfg != nil {
		protocols = new(http.Protocols)
		protocols.SetHTTP2(true)
	}
	b.srv = &http.Server{Protocols: protocols, TLSConfig: tlsCfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			// The region, as gRPC header metadata, and whether the
			// proxy's geo headers arrived.
			w.Header().Set("X-App-Region", b.region)
			w.Header().Set("X-App-Saw-City", r.Header.Get("X-City"))
			gs.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/health" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.NotFound(w, r)
	})}
	var err error
	b.ln, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if tlsCfg != nil {
		go func() { _ = b.srv.ServeTLS(b.ln, "", "") }()
	} else {
		go func() { _ = b.srv.Serve(b.ln) }()
	}
	t.Cleanup(func() { _ = b.srv.Close(); gs.Stop() })
	return b
}

// TestGRPCPassesThrough: gRPC calls reach h2c backends through the TLS
// listener on both engines and through the nethttp engine's h2c: routed
// by the client's location, with geo headers, trailers (grpc-status) and
// a server stream whose messages arrive as they are sent, and retried in
// the next region when the nearest is gone. The next region's backend
// speaks HTTP/2 over TLS (protocol: h2), the nearest's h2c.
func TestGRPCPassesThrough(t *testing.T) {
	for _, c := range []struct {
		name, engine string
		overTLS      bool
	}{
		{"native/tls", config.EngineNative, true},
		{"nethttp/tls", config.EngineNetHTTP, true},
		{"nethttp/h2c", config.EngineNetHTTP, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ca := certstest.NewCA(t, "geoproxy test CA")
			cert, key := ca.WritePair(t, dir, "proxy", x509.ExtKeyUsageServerAuth, "127.0.0.1", "localhost")
			// The TLS backend's certificate, and the CA file geoproxy checks it by.
			backendCert, err := tls.LoadX509KeyPair(ca.WritePair(t, dir, "backend", x509.ExtKeyUsageServerAuth, "127.0.0.1"))
			require.NoError(t, err)
			caFile := filepath.Join(dir, "ca.pem")
			require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600))
			eu := newGRPCBackend(t, "europe-west", nil)
			us := newGRPCBackend(t, "us-east", &tls.Config{Certificates: []tls.Certificate{backendCert}})
			srv := runYAML(t, fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
engine: %s
tls:
  listen: 127.0.0.1:0
  certificates: [{cert: %s, key: %s}]
  redirect_http: %v
geoip:
  database: ../testdata/geoip2-city.mmdb
  trusted_proxies: [127.0.0.0/8]
health_check: {interval: 100ms, timeout: 90ms}
limits: {body_timeout: 300ms, idle_timeout: 500ms, max_request_body: 1KiB}
resilience: {failback_hold: 0s, slow_start: 0s}
regions:
  - name: europe-west
    location: {lat: 50.45, lon: 3.82}
    protocol: h2c
    backends: [{url: "http://%s"}]
  - name: us-east
    location: {lat: 33.84, lon: -81.16}
    backends: [{url: "https://%s", protocol: h2, tls: {ca_file: %s}}]
`, c.engine, cert, key, c.engine == config.EngineNative, eu.ln.Addr(), us.ln.Addr(), caFile), server.Options{})
			require.Eventually(t, func() bool {
				s := srv.Router().Snapshot()
				return s.Region("europe-west").Eligible() && s.Region("us-east").Eligible()
			}, 5*time.Second, 10*time.Millisecond, "the probes speak h2c and h2")

			if c.overTLS {
				// An HTTP/1.1 client over TLS reaches the HTTP/2 backends too
				// (on the native engine, Go's server takes it, as the engine
				// speaks HTTP/1.1 to backends).
				h1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, NextProtos: []string{"http/1.1"}}}
				defer h1.CloseIdleConnections()
				req, err := http.NewRequest(http.MethodGet, "https://"+srv.TLSAddr().String()+"/health", nil)
				require.NoError(t, err)
				req.Header.Set("X-Forwarded-For", london)
				resp, err := (&http.Client{Transport: h1, Timeout: 5 * time.Second}).Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				assert.Equal(t, 1, resp.ProtoMajor)
				assert.Equal(t, http.StatusOK, resp.StatusCode)
			}
			creds, addr := insecure.NewCredentials(), srv.ProxyAddr().String()
			if c.overTLS {
				creds, addr = credentials.NewTLS(&tls.Config{RootCAs: ca.Pool}), srv.TLSAddr().String()
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
			require.NoError(t, err)
			defer conn.Close()
			client := healthpb.NewHealthClient(conn)
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", london), 10*time.Second)
			defer cancel()

			// A unary call: its answer, header metadata and trailers.
			var header, trailer metadata.MD
			res, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "movr"}, grpc.Header(&header), grpc.Trailer(&trailer))
			require.NoError(t, err)
			assert.Equal(t, healthpb.HealthCheckResponse_SERVING, res.Status)
			assert.Equal(t, []string{"europe-west"}, header.Get("x-geoproxy-region"))
			assert.Equal(t, []string{"europe-west"}, header.Get("x-app-region"))
			assert.Equal(t, []string{"London"}, header.Get("x-app-saw-city"))
			// A gRPC error travels in the trailers.
			_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "NotFound")

			// A server stream: each message arrives when it is sent.
			stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "movr"})
			require.NoError(t, err)
			first, err := stream.Recv()
			require.NoError(t, err)
			assert.Equal(t, healthpb.HealthCheckResponse_SERVING, first.Status)
			// Quiet for longer than limits.idle_timeout, the time a client has
			// to take each part of an answer: a stream waiting for news is
			// not a client that stopped reading.
			time.Sleep(800 * time.Millisecond)
			eu.health.SetServingStatus("movr", healthpb.HealthCheckResponse_NOT_SERVING)
			next, err := stream.Recv()
			require.NoError(t, err)
			assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.Status)
			eu.health.SetServingStatus("movr", healthpb.HealthCheckResponse_SERVING)

			// A stream in both directions outlives limits.body_timeout: a
			// gRPC request's body is a stream, not a slow upload.
			bidi, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
			require.NoError(t, err)
			for range 2 {
				require.NoError(t, bidi.Send(&reflectionpb.ServerReflectionRequest{
					MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
				answer, err := bidi.Recv()
				require.NoError(t, err)
				assert.NotEmpty(t, answer.GetListServicesResponse().GetService())
				time.Sleep(500 * time.Millisecond)
			}
			// Its messages add up to more than limits.max_request_body,
			// which bounds a body, not a stream.
			require.NoError(t, bidi.Send(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: strings.Repeat("x", 1500)}}))
			answer, err := bidi.Recv()
			require.NoError(t, err)
			assert.NotNil(t, answer.GetErrorResponse(), "the backend's answer: no such symbol")
			require.NoError(t, bidi.CloseSend())

			// The nearest region goes away: the call is retried in the next.
			// (Once geoproxy has seen its connection to it close: a call
			// sent on a connection as it closes has sent its body, and a
			// POST is not repeated then.)
			require.NoError(t, eu.srv.Close())
			time.Sleep(200 * time.Millisecond)
			header = nil
			res, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "movr"}, grpc.Header(&header))
			require.NoError(t, err)
			assert.Equal(t, healthpb.HealthCheckResponse_SERVING, res.Status)
			assert.Equal(t, []string{"us-east"}, header.Get("x-geoproxy-region"))
		})
	}
}
