package server_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geoproxy/geoproxy/server"
)

// TestAccessLinesCarryRequestIDBytesAndUserAgent: each access line has the
// request's ID (a trusted proxy's X-Request-Id, else a new one, sent to the
// backend either way), the bytes in and out, and the user agent.
func TestAccessLinesCarryRequestIDBytesAndUserAgent(t *testing.T) {
	for _, engine := range []string{"native", "nethttp"} {
		for _, trusted := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/trusted=%v", engine, trusted), func(t *testing.T) {
				var (
					mu   sync.Mutex
					seen []string
				)
				backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					seen = append(seen, r.Header.Get("X-Request-Id"))
					mu.Unlock()
					_, _ = w.Write([]byte("hello, world"))
				}))
				t.Cleanup(backend.Close)
				trust := "[10.9.9.9]"
				if trusted {
					trust = "[127.0.0.0/8]"
				}
				core, logs := observer.New(zapcore.InfoLevel)
				srv := runYAML(t, fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
engine: %s
geoip: {database: ../testdata/geoip2-city.mmdb, trusted_proxies: %s}
health_check: {interval: 200ms, timeout: 150ms, healthy_threshold: 1}
regions:
  - {name: r, location: {lat: 1, lon: 2}, backends: [{url: %q}]}
`, engine, trust, backend.URL), server.Options{Log: zap.New(core)})
				require.Eventually(t, func() bool { return srv.Router().Snapshot().Regions[0].Eligible() },
					5*time.Second, 5*time.Millisecond, "the backend passed a probe")
				req, err := http.NewRequest(http.MethodPost, "http://"+srv.ProxyAddr().String()+"/ride", strings.NewReader("12345"))
				require.NoError(t, err)
				req.Header.Set("X-Request-Id", "trip-42")
				req.Header.Set("User-Agent", "movr-app/2.1")
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				_ = resp.Body.Close()
				require.Equal(t, http.StatusOK, resp.StatusCode)

				var line observer.LoggedEntry
				require.Eventually(t, func() bool {
					lines := logs.FilterMessage("request").FilterField(zap.String("path", "/ride")).All()
					if len(lines) == 1 {
						line = lines[0]
					}
					return len(lines) == 1
				}, 2*time.Second, 5*time.Millisecond)
				f := line.ContextMap()
				mu.Lock()
				got := seen[len(seen)-1]
				mu.Unlock()
				if trusted {
					assert.Equal(t, "trip-42", f["request_id"])
					assert.Equal(t, "trip-42", got, "the backend gets the trusted proxy's ID")
				} else {
					assert.Regexp(t, regexp.MustCompile(`^[0-9a-f]{16}$`), f["request_id"], "an untrusted client's ID is replaced")
					assert.Equal(t, f["request_id"], got, "the backend gets the ID the access line has")
				}
				assert.Equal(t, "movr-app/2.1", f["user_agent"])
				assert.Equal(t, int64(5), f["bytes_in"], "the request body")
				assert.Equal(t, int64(len("hello, world")), f["bytes_out"], "the answer's body")
				assert.Contains(t, f, "duration_ms")
			})
		}
	}
}
