package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// geoproxy app runs one demo regional app, the one the compose file starts
// for each region: it answers with its region and the geo headers, passes
// its /health until told to fail, and stops cleanly on SIGTERM.
func TestApp(t *testing.T) {
	bin, err := buildBinary()
	require.NoError(t, err)
	addr := freePort(t)
	cmd, logs := startCmd(t, bin, "app", "-region", "europe-west", "-listen", addr)
	waitFor(t, logs, `"msg":"app serving","region":"europe-west"`)

	get := func(method, path string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+addr+path, nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("GET", "/orders", "X-City", "London", "X-Country", "GB", "X-Forwarded-For", "81.2.69.142")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, `region=europe-west instance=`+addr+` city="London" country="GB" location="" client=81.2.69.142 path=/orders`+"\n", body)
	code, _ = get("GET", "/health")
	assert.Equal(t, http.StatusOK, code)

	code, body = get("POST", "/fail")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "europe-west now fails")
	code, _ = get("GET", "/health")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = get("POST", "/recover")
	assert.Equal(t, http.StatusOK, code)
	code, _ = get("GET", "/health")
	assert.Equal(t, http.StatusOK, code)

	// What the compose file's healthcheck runs against it.
	code, out, errOut := runCLI("healthcheck", "-url", "http://"+addr+"/health")
	assert.Equal(t, 0, code, errOut)
	assert.True(t, strings.HasPrefix(out, "healthy: "), out)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	waitFor(t, logs, `"msg":"app stopped"`)
	require.NoError(t, cmd.Wait(), "exit status 0")
}

func TestAppFlags(t *testing.T) {
	code, _, errOut := runCLI("app")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "-region")
	code, _, errOut = runCLI("app", "-region", "us-east", "extra")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "-region")
	code, _, errOut = runCLI("app", "-region", "us-east", "-listen", "127.0.0.1:-1")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "cannot start")
}

// Listening on every interface (in a container), the app names itself by
// its host name, which compose and Kubernetes set to the container's.
func TestAppInstanceName(t *testing.T) {
	host, err := os.Hostname()
	require.NoError(t, err)
	assert.Equal(t, net.JoinHostPort(host, "8000"), instanceName(&net.TCPAddr{IP: net.IPv6unspecified, Port: 8000}))
	assert.Equal(t, net.JoinHostPort(host, "8000"), instanceName(&net.TCPAddr{IP: net.IPv4zero, Port: 8000}))
	assert.Equal(t, "127.0.0.1:8000", instanceName(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000}))
}
