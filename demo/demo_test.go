package demo

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// syncBuffer is a bytes.Buffer safe for the demo goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemoWalkthrough follows the instructions the demo prints.
func TestDemoWalkthrough(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *Demo, 1)
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", AppHost: "127.0.0.1",
			Interval: 50 * time.Millisecond, Log: zap.NewNop(), Version: "test", Out: out,
			Started: func(d *Demo) { started <- d },
		})
	}()
	var d *Demo
	select {
	case d = <-started:
	case err := <-done:
		t.Fatalf("demo stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not start")
	}
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	proxy := "http://" + d.Server.ProxyAddr().String()
	text := out.String()
	assert.Contains(t, text, "curl -H 'X-Forwarded-For: 81.2.69.142'  "+proxy+"/")
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	get := func(xff string) string {
		req, err := http.NewRequest(http.MethodGet, proxy+"/", nil)
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		return string(b)
	}
	assert.Contains(t, get("81.2.69.142"), "region=europe-west")
	assert.Contains(t, get("81.2.69.142"), `country="GB"`)
	assert.Contains(t, get("198.51.100.7"), `region=us-west`)
	assert.Contains(t, get("198.51.100.7"), `city="Seattle"`)
	assert.Contains(t, get("203.0.113.7"), `region=us-east`)

	var eu *App
	for _, a := range d.Apps {
		if a.Region == "europe-west" {
			eu = a
		}
	}
	require.NotNil(t, eu)
	post := func(path string) {
		resp, err := client.Post("http://"+eu.Addr+path, "text/plain", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	post("/fail")
	require.Eventually(t, func() bool { return strings.Contains(get("81.2.69.142"), "region=us-east") },
		5*time.Second, 20*time.Millisecond, "London fails over to us-east")
	post("/recover")
	require.Eventually(t, func() bool { return strings.Contains(get("81.2.69.142"), "region=europe-west") },
		5*time.Second, 20*time.Millisecond, "London comes back to europe-west")
}
