package h1

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/route"
)

// newTransport returns a Transport to one raw backend, and the backend.
func newTransport(t *testing.T, h handler) (*Transport, *backend) {
	t.Helper()
	be := newBackend(t, h)
	t.Cleanup(be.close)
	tr := NewTransport(TransportOptions{
		Backends:              []*route.Backend{{ID: be.url.String(), URL: be.url, Weight: 1}},
		DialTimeout:           time.Second,
		ResponseHeaderTimeout: time.Second,
		WriteTimeout:          time.Second,
	})
	t.Cleanup(tr.Close)
	return tr, be
}

// roundTrip sends a request through tr and reads the whole answer.
func roundTrip(t *testing.T, tr *Transport, be *backend, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, be.url.String()+path, body)
	require.NoError(t, err)
	res, err := tr.RoundTrip(req)
	require.NoError(t, err)
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	return res, string(b)
}

// Late bytes after an answer, on a connection idle in the pool, never
// become the next answer: the connection is peeked at and replaced.
func TestTransportNeverReadsStrayBytesAsAnAnswer(t *testing.T) {
	for name, first := range map[string]string{
		"HEAD with a body":    "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
		"204 with a body":     "HTTP/1.1 204 No Content\r\n\r\n",
		"past Content-Length": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	} {
		t.Run(name, func(t *testing.T) {
			var n atomic.Int32
			wrote := make(chan struct{})
			tr, be := newTransport(t, func(nc net.Conn, r *bReq) bool {
				if n.Add(1) > 1 {
					return okHandler(nc, r)
				}
				_, _ = io.WriteString(nc, first)
				time.Sleep(20 * time.Millisecond)
				_, err := io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
				close(wrote)
				return err == nil
			})
			method := http.MethodGet
			if strings.HasPrefix(name, "HEAD") {
				method = http.MethodHead
			}
			roundTrip(t, tr, be, method, "/first", nil)
			<-wrote
			time.Sleep(10 * time.Millisecond)
			res, body := roundTrip(t, tr, be, http.MethodGet, "/second", nil)
			assert.Equal(t, http.StatusOK, res.StatusCode)
			assert.Equal(t, "ok GET /second HTTP/1.1", body)
			assert.Equal(t, int32(2), be.conns.Load(), "the dirty connection was replaced")
		})
	}
}

// A clean connection is reused; one the backend closed meanwhile is
// replaced without the request failing.
func TestTransportReusesCleanConnectionsAndRedialsClosedOnes(t *testing.T) {
	tr, be := newTransport(t, func(nc net.Conn, r *bReq) bool {
		okHandler(nc, r)
		return strings.Contains(r.line, "/k ") // close after the others, without saying so
	})
	for i := range 3 {
		res, body := roundTrip(t, tr, be, http.MethodGet, "/k", nil)
		require.Equal(t, http.StatusOK, res.StatusCode, "request %d", i)
		assert.Equal(t, "ok GET /k HTTP/1.1", body)
	}
	assert.Equal(t, int32(1), be.conns.Load())
	roundTrip(t, tr, be, http.MethodGet, "/last-on-it", nil)
	time.Sleep(20 * time.Millisecond) // the FIN arrives
	res, body := roundTrip(t, tr, be, http.MethodPost, "/form", strings.NewReader("a=1"))
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "ok POST /form HTTP/1.1", body)
	if !assert.Equal(t, int32(2), be.conns.Load()) {
		for len(be.reqs) > 0 {
			r := <-be.reqs
			t.Logf("%s on connection %d", r.line, r.conn)
		}
	}
}

// Request bodies go with their length, or chunked when it is unknown;
// the answer's framing is read as sent, trailers included.
func TestTransportFraming(t *testing.T) {
	tr, be := newTransport(t, func(nc net.Conn, r *bReq) bool {
		switch {
		case strings.Contains(r.line, "/chunked"):
			_, err := io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
				"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Sum: 42\r\nContent-Length: 9\r\n\r\n")
			return err == nil
		case strings.Contains(r.line, "/until-close"):
			_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\n\r\nall of it")
			return false
		}
		te, _ := r.get("Transfer-Encoding")
		cl, _ := r.get("Content-Length")
		body := "te=" + te + " cl=" + cl + " body=" + string(r.body)
		_, err := io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+body)
		return err == nil
	})
	_, body := roundTrip(t, tr, be, http.MethodPost, "/len", strings.NewReader("hello"))
	assert.Equal(t, "te= cl=5 body=hello", body)
	_, body = roundTrip(t, tr, be, http.MethodPost, "/unknown", io.MultiReader(strings.NewReader("hel"), strings.NewReader("lo")))
	assert.Equal(t, "te=chunked cl= body=hello", body)
	_, body = roundTrip(t, tr, be, http.MethodPost, "/empty", nil)
	assert.Equal(t, "te= cl=0 body=", body)

	res, body := roundTrip(t, tr, be, http.MethodGet, "/chunked", nil)
	assert.Equal(t, "abcde", body)
	assert.Equal(t, []string{"chunked"}, res.TransferEncoding)
	assert.Equal(t, "42", res.Trailer.Get("X-Sum"))
	assert.Empty(t, res.Trailer.Get("Content-Length"), "framing fields are no trailers")

	res, body = roundTrip(t, tr, be, http.MethodGet, "/until-close", nil)
	assert.Equal(t, "all of it", body)
	assert.True(t, res.Close)
}

// A backend that never answers costs the response header timeout, and a
// client that goes away ends the wait at once.
func TestTransportTimeoutsAndCancellation(t *testing.T) {
	tr, be := newTransport(t, func(_ net.Conn, r *bReq) bool {
		<-r.quit
		return false
	})
	start := time.Now()
	req, err := http.NewRequest(http.MethodGet, be.url.String()+"/hang", nil)
	require.NoError(t, err)
	_, err = tr.RoundTrip(req)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	assert.Less(t, time.Since(start), 3*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, be.url.String()+"/hang", nil)
	require.NoError(t, err)
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	_, err = tr.RoundTrip(req)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), 500*time.Millisecond)
}

// A request for a host the Transport was not made for is refused.
func TestTransportRefusesUnknownBackends(t *testing.T) {
	tr, _ := newTransport(t, okHandler)
	u, _ := url.Parse("http://127.0.0.1:1/x")
	_, err := tr.RoundTrip(&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}})
	assert.True(t, errors.Is(err, errUnknownBackend), "%v", err)
}

func itoa(n int) string { return strconv.Itoa(n) }
