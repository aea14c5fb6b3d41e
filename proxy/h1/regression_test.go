package h1

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/route"
)

// transportTo returns a Transport to the backend at u.
func transportTo(t *testing.T, u *url.URL, headerTimeout time.Duration) *Transport {
	t.Helper()
	tr := NewTransport(TransportOptions{
		Backends:              []*route.Backend{{ID: u.String(), URL: u, Weight: 1}},
		DialTimeout:           time.Second,
		ResponseHeaderTimeout: headerTimeout,
		WriteTimeout:          5 * time.Second,
	})
	t.Cleanup(tr.Close)
	return tr
}

// A client that goes away after its answer's head came, whose small body
// was already read with the head, must not leave its cancellation on the
// pooled connection: the next request on it, another client's, must be
// served. With proxy.response_header_timeout 0 (long polls) nothing moves
// the read deadline the cancellation set in the past.
func TestTransportCancelledClientPoisonsThePooledConnection(t *testing.T) {
	be := newBackend(t, okHandler)
	t.Cleanup(be.close)
	tr := transportTo(t, be.url, 0)

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, be.url.String()+"/first", nil)
	require.NoError(t, err)
	res, err := tr.RoundTrip(req)
	require.NoError(t, err)
	cancel()                          // the first client goes away
	time.Sleep(50 * time.Millisecond) // its cancellation has run
	body, err := io.ReadAll(res.Body) // the body came with the head: it ends cleanly
	require.NoError(t, err, "precondition: the first body was read with its head")
	assert.Equal(t, "ok GET /first HTTP/1.1", string(body))
	require.NoError(t, res.Body.Close())

	req, err = http.NewRequest(http.MethodGet, be.url.String()+"/second", nil)
	require.NoError(t, err)
	res, err = tr.RoundTrip(req)
	require.NoError(t, err, "another client's request fails on the connection the first one left")
	body, _ = io.ReadAll(res.Body)
	_ = res.Body.Close()
	assert.Equal(t, "ok GET /second HTTP/1.1", string(body))
}

// stallingBackend accepts connections, reads request heads, and then
// neither reads the body nor answers until the test ends.
func stallingBackend(t *testing.T) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u, err := url.Parse("http://" + ln.Addr().String())
	require.NoError(t, err)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, nc := range conns {
				_ = nc.Close()
			}
		}()
		for {
			nc, err := ln.Accept()
			if err != nil {
				<-quit
				return
			}
			conns = append(conns, nc)
			go func() {
				br := bufio.NewReader(nc)
				for {
					l, err := br.ReadString('\n')
					if err != nil || l == "\r\n" {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		close(quit)
		_ = ln.Close()
		<-done
	})
	return u
}

// zeros reads zero bytes for ever.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A client that goes away while its body is being written to a backend
// that stopped reading ends the exchange at once: the cancellation must not
// be undone by the response header timeout armed after the failed write.
func TestTransportCancelDuringBodyWriteIsNotUndone(t *testing.T) {
	u := stallingBackend(t)
	tr := transportTo(t, u, 3*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String()+"/upload",
		io.NopCloser(io.LimitReader(zeros{}, 256<<20)))
	require.NoError(t, err)
	req.ContentLength = 256 << 20
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err = tr.RoundTrip(req)
	took := time.Since(start)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Less(t, took, time.Second, "the exchange outlived its client by %v", took-200*time.Millisecond)
}

// An answer framed by Transfer-Encoding must not keep a Content-Length
// field: Go's server would send it to the client as the length of the
// decoded body, and cut the body there.
func TestTransportDropsContentLengthOfAChunkedAnswer(t *testing.T) {
	be := newBackend(t, answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	t.Cleanup(be.close)
	tr := transportTo(t, be.url, time.Second)
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(be.url) },
		Transport: tr,
	}
	front := httptest.NewServer(rp)
	t.Cleanup(front.Close)
	res, err := http.Get(front.URL + "/x")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	assert.Equal(t, "hello", string(body), "Content-Length: %q", res.Header.Get("Content-Length"))
}

// A grown read buffer is counted in the memory budget; a handoff to a
// goroutine that fails (the process is out of file descriptors, as under a
// connection flood) closes the connection and must give that memory back.
func TestFailedHandoffGivesItsBudgetBack(t *testing.T) {
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, loops: 1, requestMemory: 1 << 20})
	c := p.dial(t)
	// A head of 10 KiB so far: the loop's buffer grows to 16 KiB.
	c.send("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Pad: " + strings.Repeat("p", 10<<10))
	waitMemory(t, p, 16<<10)

	// Use every file descriptor the process may have.
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	low := lim
	low.Cur = uint64(len(ents) + 32)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))
	var fill []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		fill = append(fill, f)
	}
	restore := func() {
		for _, f := range fill {
			_ = f.Close()
		}
		fill = nil
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	defer restore()

	// The head ends: a chunked request goes to a goroutine, which needs a
	// descriptor the process cannot have.
	c.send("\r\n\r\n")
	c.expectClosed(2 * time.Second)
	restore()

	used, _, _ := p.e.RequestMemory()
	deadline := time.Now().Add(time.Second)
	for used != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		used, _, _ = p.e.RequestMemory()
	}
	assert.Zero(t, used, "the closed connection still holds its read buffer's budget")
}

// An upload's body is needed only until an answer is chosen; while the
// answer streams (as long as the backend and a slowly reading client
// like) it must not keep holding the memory budget, or a few such
// clients refuse every other upload with 503.
func TestStreamedAnswerDoesNotPinTheUploadsBudget(t *testing.T) {
	streaming := func(nc net.Conn, r *bReq) bool {
		if !strings.Contains(r.line, "/stream") {
			return okHandler(nc, r)
		}
		_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
		<-r.quit
		return false
	}
	p := newProxy(t, proxyOpts{handlers: []handler{streaming}, requestMemory: 1 << 20})
	const size = 600 << 10
	up := func(path string) *client {
		c := p.dial(t)
		c.send(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", path, size))
		go func() { _, _ = c.nc.Write(bytes.Repeat([]byte("u"), size)) }()
		return c
	}
	first := up("/stream")
	line, err := first.br.ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, line, "200", "the stream has begun")
	time.Sleep(100 * time.Millisecond)
	used, _, _ := p.e.RequestMemory()
	t.Logf("held while the answer streams: %d bytes", used)

	second := up("/plain")
	r := second.read("POST")
	assert.Equal(t, http.StatusOK, r.status, "a second upload while the first answer streams: %s%s", r.head, r.body)
}

// The memory comes back as soon as a request ends (README, "Memory"): a
// keep-alive connection that once carried a chunked request holds nothing
// from the budget while it idles.
func TestIdleConnectionHoldsNoBudget(t *testing.T) {
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, loops: -1, requestMemory: 1 << 20})
	c := p.dial(t)
	c.send("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	require.Equal(t, http.StatusOK, c.read("POST").status)
	time.Sleep(100 * time.Millisecond)
	used, _, _ := p.e.RequestMemory()
	assert.Zero(t, used, "an idle keep-alive connection holds budget")
}
