package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// healthcheck exits 0 on a 2xx answer and 1 on anything else, and says why
// on one line, as a container's HEALTHCHECK shows it.
func TestHealthcheck(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = io.WriteString(w, "ok\n")
		case "/draining":
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case "/slow":
			<-release
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	defer close(release)

	code, out, errOut := runCLI("healthcheck", "-url", srv.URL+"/readyz")
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "healthy: GET "+srv.URL+"/readyz: 200 OK: ok\n", out)
	assert.Empty(t, errOut)

	code, _, _ = runCLI("healthcheck", "-url", srv.URL+"/empty")
	assert.Equal(t, 0, code, "any 2xx passes")

	code, out, errOut = runCLI("healthcheck", "-url", srv.URL+"/draining")
	assert.Equal(t, 1, code)
	assert.Empty(t, out)
	assert.Equal(t, "unhealthy: GET "+srv.URL+"/draining: 503 Service Unavailable: draining\n", errOut)

	code, _, errOut = runCLI("healthcheck", "-url", srv.URL+"/moved")
	assert.Equal(t, 1, code, "a redirect is not followed")
	assert.Contains(t, errOut, "302 Found")

	start := time.Now()
	code, _, errOut = runCLI("healthcheck", "-url", srv.URL+"/slow", "-timeout", "200ms")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "Client.Timeout exceeded")
	assert.Less(t, time.Since(start), 5*time.Second)

	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	code, _, errOut = runCLI("healthcheck", "-url", closed.URL+"/readyz")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "connection refused")

	for _, args := range [][]string{
		{"-url", "127.0.0.1:9090/readyz"},
		{"-url", "ftp://127.0.0.1/"},
		{"-timeout", "0s"},
		{"http://127.0.0.1:9090/readyz"},
	} {
		code, _, errOut = runCLI(append([]string{"healthcheck"}, args...)...)
		assert.Equal(t, 2, code, args)
		assert.NotEmpty(t, errOut, args)
	}
}

// Without -url it checks the admin listener's /readyz on 127.0.0.1:9090, as
// the Dockerfile's HEALTHCHECK relies on.
func TestHealthcheckDefaultURL(t *testing.T) {
	code, _, errOut := runCLI("healthcheck", "-h")
	require.Equal(t, 0, code)
	assert.Contains(t, errOut, `"http://127.0.0.1:9090/readyz"`)
}
