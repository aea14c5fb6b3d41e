package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// A stop (SIGTERM) under keep-alive load loses no request, on every
// engine: /readyz fails at once, so the load balancer (here, the load
// itself, which watches /readyz) sends nothing new; keep-alive clients get
// "Connection: close" meanwhile; after shutdown.drain_delay the listener
// closes and what is in flight finishes; Run returns nil.
func TestStopUnderLoadLosesNoRequest(t *testing.T) {
	for _, eng := range hardEngines {
		t.Run(eng.name, func(t *testing.T) {
			backend := newApp(t, "europe-west")
			yaml := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
access_log: false
geoip: {database: ../testdata/geoip2-city.mmdb}
health_check: {path: /health, interval: 200ms, timeout: 100ms}
shutdown: {drain_delay: 400ms}
%sregions:
  - name: europe-west
    location: {lat: 50.45, lon: 3.82}
    backends: [{url: "%s"}]
`, eng.yaml, backend.srv.URL)
			cfg, err := config.Parse("drain.yaml", []byte(yaml))
			require.NoError(t, err)
			srv, err := server.New(server.Options{Config: cfg, Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), Version: "test"})
			require.NoError(t, err)
			ctx, stop := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- srv.Run(ctx, 5*time.Second) }()
			t.Cleanup(stop)

			// Wait until it serves.
			require.Eventually(t, func() bool { ok, _ := srv.Ready(); return ok }, 5*time.Second, 10*time.Millisecond)
			proxyURL := "http://" + srv.ProxyAddr().String()
			readyURL := "http://" + srv.AdminAddr().String() + "/readyz"

			// The load balancer: in rotation while /readyz answers 200.
			var removed atomic.Bool
			removedAt := make(chan time.Time, 1)
			watch := make(chan struct{})
			go func() {
				defer close(watch)
				for range 1000 {
					resp, err := http.Get(readyURL)
					if err == nil {
						_ = resp.Body.Close()
					}
					if err != nil || resp.StatusCode != http.StatusOK {
						removedAt <- time.Now()
						time.Sleep(100 * time.Millisecond) // the balancer takes a while to act
						removed.Store(true)
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()

			var (
				served, closes atomic.Int64
				mu             sync.Mutex
				failures       []string
				wg             sync.WaitGroup
			)
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			t.Cleanup(client.CloseIdleConnections)
			for w := range 8 {
				wg.Go(func() {
					for i := 0; i < 10000 && !removed.Load(); i++ {
						var req *http.Request
						if (w+i)%3 == 0 {
							req, _ = http.NewRequest(http.MethodPost, proxyURL+"/echo", strings.NewReader("ride=42"))
						} else {
							req, _ = http.NewRequest(http.MethodGet, proxyURL+"/", nil)
						}
						resp, err := client.Do(req)
						if err == nil {
							_, err = io.Copy(io.Discard, resp.Body)
							_ = resp.Body.Close()
							if resp.Close {
								closes.Add(1)
							}
							if err == nil && resp.StatusCode != http.StatusOK {
								err = fmt.Errorf("status %d", resp.StatusCode)
							}
						}
						if err != nil {
							mu.Lock()
							failures = append(failures, fmt.Sprintf("%s %s: %v", req.Method, req.URL.Path, err))
							mu.Unlock()
							continue
						}
						served.Add(1)
					}
				})
			}
			time.Sleep(300 * time.Millisecond) // load before the stop
			stopped := time.Now()
			stop()
			wg.Wait()
			<-watch
			select {
			case at := <-removedAt:
				assert.Less(t, at.Sub(stopped), 200*time.Millisecond, "/readyz fails at once")
			default:
				t.Error("/readyz never failed")
			}
			select {
			case err := <-ran:
				assert.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			t.Logf("%d requests served, %d answers closed their connection", served.Load(), closes.Load())
			assert.Zero(t, len(failures), "failed requests; the first: %q", failures[:min(5, len(failures))])
			assert.Greater(t, served.Load(), int64(100))
			assert.Positive(t, closes.Load(), "keep-alive clients were told to go")
		})
	}
}
