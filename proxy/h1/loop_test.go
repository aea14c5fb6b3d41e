package h1

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mixedHandler answers by path: /small with a short Content-Length body,
// /chunked with a body in three chunks written apart, /big with a body
// larger than an event loop relays itself, /close with a short body and
// Connection: close, /echo with the length of the request body.
func mixedHandler(nc net.Conn, r *bReq) bool {
	path := strings.Fields(r.line)[1]
	var err error
	switch {
	case strings.HasPrefix(path, "/small"):
		body := "small " + path
		_, err = fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	case strings.HasPrefix(path, "/chunked"):
		if _, err = io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"); err != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
		if _, err = io.WriteString(nc, "1\r\n \r\n"); err != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
		_, err = io.WriteString(nc, "5\r\nworld\r\n0\r\n\r\n")
	case strings.HasPrefix(path, "/big"):
		body := strings.Repeat("b", 200<<10)
		_, err = fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	case strings.HasPrefix(path, "/close"):
		_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nclose")
		return false
	case strings.HasPrefix(path, "/echo"):
		body := strconv.Itoa(len(r.body))
		_, err = fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	default:
		_, err = io.WriteString(nc, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
	}
	return err == nil
}

// want is what the client must get for a path of mixedHandler.
func want(path string) string {
	switch {
	case strings.HasPrefix(path, "/small"):
		return "small " + path
	case strings.HasPrefix(path, "/chunked"):
		return "hello world"
	case strings.HasPrefix(path, "/big"):
		return strings.Repeat("b", 200<<10)
	case strings.HasPrefix(path, "/close"):
		return "close"
	}
	return ""
}

// With event loops, a keep-alive connection with small answers is served
// without a goroutine of its own, over one pooled backend connection.
func TestLoopsServeSmallAnswersThemselves(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{mixedHandler}, loops: 2})
	c := p.dial(t)
	for i := range 5 {
		path := "/small/" + strconv.Itoa(i)
		c.send(get(path))
		r := c.read("GET")
		require.Equal(t, 200, r.status)
		require.Equal(t, want(path), string(r.body))
		assert.Equal(t, "us-east", r.value("X-Geoproxy-Region"))
	}
	p.e.mu.Lock()
	goroutines := len(p.e.conns)
	p.e.mu.Unlock()
	assert.Zero(t, goroutines, "no connection was handed to a goroutine")
	assert.EqualValues(t, 1, p.backends[0].conns.Load())
}

// An answer a loop cannot relay itself (chunked, or too large) moves the
// connection to a goroutine in the middle of the response: the client sees
// one ordinary keep-alive connection throughout, pipelined or not.
func TestAnswersStreamedAfterLoopAnswers(t *testing.T) {
	t.Parallel()
	paths := []string{"/small/1", "/chunked", "/small/2", "/big", "/small/3", "/close"}
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			t.Parallel()
			p := newProxy(t, proxyOpts{handlers: []handler{mixedHandler}})
			c := p.dial(t)
			if pipelined {
				var all strings.Builder
				for _, path := range paths {
					all.WriteString(get(path))
				}
				c.send(all.String())
			}
			for _, path := range paths {
				if !pipelined {
					c.send(get(path))
				}
				r := c.read("GET")
				require.Equal(t, 200, r.status, path)
				require.Equal(t, want(path), string(r.body), path)
			}
			// The last answer said close, yet the client connection
			// stays: only the backend's ends.
			c.send(get("/small/4"))
			assert.Equal(t, want("/small/4"), string(c.read("GET").body))
		})
	}
}

// A client that sends its requests and then shuts down its writing side
// still gets every answer, then the connection closes.
func TestClientHalfCloseGetsItsAnswers(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{mixedHandler}})
	c := p.dial(t)
	c.send(get("/small/a") + get("/small/b"))
	require.NoError(t, c.nc.(*net.TCPConn).CloseWrite())
	assert.Equal(t, want("/small/a"), string(c.read("GET").body))
	assert.Equal(t, want("/small/b"), string(c.read("GET").body))
	c.expectClosed(time.Second)
}

// Many clients at once, each a keep-alive connection with a random mix of
// small, streamed, large and closing answers and request bodies: every
// answer is the right one, on the right connection, and nothing panics.
func TestMixedLoadOverManyConnections(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{mixedHandler}})
	mixedLoad(t, p.addr, 16, 40, []string{"/small", "/small", "/small", "/echo", "/chunked", "/big", "/close"}, 7, 1)
	assert.Zero(t, p.e.panics.Load())
}

// mixedLoad runs clients keep-alive connections to addr at once, each
// sending each requests for paths drawn at random (seeded by seed and the
// client), in batches of 1 to maxBatch pipelined requests, and checks
// every answer against mixedHandler's: "/small" gets a suffix of its own,
// "/echo" becomes a POST with a random body.
func mixedLoad(t *testing.T, addr string, clients, each int, paths []string, seed uint64, maxBatch int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			errs <- func() error {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					return err
				}
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReaderSize(nc, 64<<10)
				rng := rand.New(rand.NewPCG(uint64(i), seed))
				for j := 0; j < each; {
					batch := 1 + rng.IntN(maxBatch) // pipelined when more than one
					var reqs strings.Builder
					var methods, wants []string
					for range min(batch, each-j) {
						path := paths[rng.IntN(len(paths))]
						if path == "/small" {
							path += "/" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
						}
						req, method, wantBody := get(path), "GET", want(path)
						if path == "/echo" {
							n := rng.IntN(12 << 10)
							req = "POST /echo HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n" + strings.Repeat("p", n)
							method, wantBody = "POST", strconv.Itoa(n)
						}
						reqs.WriteString(req)
						methods, wants = append(methods, method), append(wants, wantBody)
						j++
					}
					if _, err := io.WriteString(nc, reqs.String()); err != nil {
						return fmt.Errorf("client %d request %d: %w", i, j, err)
					}
					for k, method := range methods {
						r, err := readResponse(br, method)
						if err != nil {
							return fmt.Errorf("client %d request %d: %w", i, j-len(methods)+k, err)
						}
						if r.status != 200 || string(r.body) != wants[k] {
							return fmt.Errorf("client %d request %d: status %d, body %.40q", i, j-len(methods)+k, r.status, r.body)
						}
					}
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// slowThenMixed holds paths with /slow for 200 ms, then answers as mixedHandler.
func slowThenMixed(nc net.Conn, r *bReq) bool {
	if strings.Contains(r.line, "/slow") {
		time.Sleep(200 * time.Millisecond)
	}
	return mixedHandler(nc, r)
}

// pipelineBeyondABuffer returns more than a read buffer of pipelined GETs,
// and how many.
func pipelineBeyondABuffer() (string, int) {
	var b strings.Builder
	n := 0
	for b.Len() < 2*initialRead {
		b.WriteString(get("/small/" + strings.Repeat("x", 40)))
		n++
	}
	return b.String(), n
}

// A client whose pipelined requests overflow the read buffer while an
// earlier one is with the backend, and which then shuts down its side,
// gets every answer and a closed connection at once, not after the client
// timeout; a partial request at the end gets 400 at once, not 408 later.
func TestClientEndSeenAfterAFullBuffer(t *testing.T) {
	t.Parallel()
	for _, partial := range []bool{false, true} {
		t.Run(fmt.Sprintf("partial=%v", partial), func(t *testing.T) {
			t.Parallel()
			p := newProxy(t, proxyOpts{handlers: []handler{slowThenMixed}, clientTimeout: 4 * time.Second})
			c := p.dial(t)
			c.send(get("/small/slow"))
			time.Sleep(50 * time.Millisecond) // the request is with the backend
			reqs, n := pipelineBeyondABuffer()
			if partial {
				reqs += "GET /partial HTTP/1.1\r\nHost: x\r\n"
			}
			c.send(reqs)
			require.NoError(t, c.nc.(*net.TCPConn).CloseWrite())
			start := time.Now()
			for range n + 1 {
				require.Equal(t, 200, c.read("GET").status)
			}
			if partial {
				r := c.read("GET")
				assert.Equal(t, 400, r.status, r.head)
			}
			c.expectClosed(6 * time.Second)
			assert.Less(t, time.Since(start), 2*time.Second, "the connection lingered until the client timeout")
		})
	}
}

// A response head over maxResponseHead is a bad answer (502) however fast it
// arrives, as on a goroutine.
func TestResponseHeadOverTheLimitIs502(t *testing.T) {
	t.Parallel()
	big := func(nc net.Conn, _ *bReq) bool {
		_, err := fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 2\r\n\r\nok", strings.Repeat("a", 20<<10))
		return err == nil
	}
	p := newProxy(t, proxyOpts{handlers: []handler{big}})
	c := p.dial(t)
	c.send(get("/x"))
	assert.Equal(t, 502, c.read("GET").status)
}

// A graceful Shutdown under keep-alive load closes connections whose
// events may still be in a loop's batch: every client gets whole answers
// up to the end, and the engine never panics.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	for i := range 5 {
		p := newProxy(t, proxyOpts{handlers: []handler{mixedHandler}})
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc, err := net.Dial("tcp", p.addr)
				if err != nil {
					return
				}
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(nc)
				for {
					if _, err := io.WriteString(nc, get("/small/x")); err != nil {
						return
					}
					r, err := readResponse(br, "GET")
					if err != nil {
						return // closed by the shutdown, between answers
					}
					if r.status != 200 || string(r.body) != want("/small/x") {
						t.Errorf("status %d, body %q", r.status, r.body)
						return
					}
				}
			}()
		}
		time.Sleep(100 * time.Millisecond)
		p.shutdown(t, 2*time.Second)
		wg.Wait()
		require.Zero(t, p.e.panics.Load(), "shutdown %d", i)
	}
}
