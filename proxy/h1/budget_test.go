package h1

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitMemory waits (at most 5 s) until the engine holds want bytes for
// requests.
func waitMemory(t *testing.T, p *proxy, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		used, _, _ := p.e.RequestMemory()
		if used == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine holds %d bytes for requests, want %d", used, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Uploads that stall halfway hold their bodies; once they hold the whole
// budget, the next upload is refused with 503 and Retry-After instead of
// growing the proxy, while a request without a body is still served. When
// the stalled clients go, their memory comes back and uploads pass again.
func TestUploadsBeyondTheMemoryBudgetGet503(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, requestMemory: 1 << 20})
	const body = 600 << 10
	var stalled []*client
	for range 2 {
		c := p.dial(t)
		c.send(fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", body) + strings.Repeat("a", body/2))
		stalled = append(stalled, c)
	}
	// Each has taken at least 300 KiB; together they leave too little for
	// a third.
	deadline := time.Now().Add(5 * time.Second)
	for used, _, _ := p.e.RequestMemory(); used < 600<<10; used, _, _ = p.e.RequestMemory() {
		require.True(t, time.Now().Before(deadline), "the stalled uploads hold %d bytes", used)
		time.Sleep(5 * time.Millisecond)
	}
	third := p.dial(t)
	third.send(fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", body))
	go func() { _, _ = io.WriteString(third.nc, strings.Repeat("b", body)) }()
	r := third.read("POST")
	assert.Equal(t, http.StatusServiceUnavailable, r.status, "%s%s", r.head, r.body)
	assert.Contains(t, r.head, "Retry-After: 1")
	_, _, refused := p.e.RequestMemory()
	assert.Positive(t, refused)

	g := p.dial(t)
	g.send(get("/small"))
	assert.Equal(t, http.StatusOK, g.read("GET").status, "a request without a body needs no budget")

	for _, c := range stalled {
		_ = c.nc.Close()
	}
	waitMemory(t, p, 0)
	c := p.dial(t)
	c.send(fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", body, strings.Repeat("c", body)))
	r = c.read("POST")
	assert.Equal(t, http.StatusOK, r.status, "%s%s", r.head, r.body)
	g.send(get("/again")) // the budget is back where it was once every body is done
	require.Equal(t, http.StatusOK, g.read("GET").status)
	_ = c.nc.Close()
	_ = g.nc.Close()
	_ = third.nc.Close()
	waitMemory(t, p, 0)
}

// Slow clients sending long heads hold grown read buffers: the budget
// bounds them too. Heads that fit the first buffer (the common case) need
// nothing from it and are served throughout.
func TestSlowLongHeadsAreBoundedByTheBudget(t *testing.T) {
	t.Parallel()
	p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, requestMemory: 1 << 20})
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		wg       sync.WaitGroup
	)
	partial := "GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 12<<10)
	conns := make([]net.Conn, 0, 150)
	for range 150 {
		nc, err := net.Dial("tcp", p.addr)
		require.NoError(t, err)
		conns = append(conns, nc)
		require.NoError(t, nc.SetDeadline(time.Now().Add(ioTimeout)))
		_, err = io.WriteString(nc, partial)
		require.NoError(t, err)
	}
	// 150 heads of 12 KiB need more than 1 MiB: some are refused at once.
	for _, nc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 12)
			if n, _ := io.ReadFull(nc, buf); n == 12 {
				var code int
				_, _ = fmt.Sscanf(string(buf[9:12]), "%d", &code)
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	used, limit, _ := p.e.RequestMemory()
	assert.LessOrEqual(t, used, limit)
	assert.Positive(t, statuses[http.StatusServiceUnavailable], "statuses: %v", statuses)
	assert.Len(t, statuses, 1, "only 503s, no other answer: %v", statuses)

	c := p.dial(t)
	c.send(get("/normal"))
	assert.Equal(t, http.StatusOK, c.read("GET").status)
	for _, nc := range conns {
		_ = nc.Close()
	}
	_ = c.nc.Close()
	waitMemory(t, p, 0)
}

// A body grows chunk by chunk, never copied; what it holds is what the
// budget counts, and it all comes back when the request ends.
func TestBodyChunksAreCountedExactly(t *testing.T) {
	e := &Engine{}
	e.mem.limit = 3 * bodyChunk
	c := &conn{e: e, work: newWork().(*work)}
	data := []byte(strings.Repeat("0123456789abcdef", (2*bodyChunk+100)/16+1))[:2*bodyChunk+100]
	require.True(t, c.body.append(data, c))
	assert.Equal(t, len(data), c.body.size())
	assert.Len(t, c.body.chunks, 3)
	used, _, _ := e.RequestMemory()
	assert.Equal(t, int64(3*bodyChunk), used)
	var got []byte
	for _, b := range c.body.buffers() {
		got = append(got, b...)
	}
	assert.Equal(t, data, got)
	assert.False(t, c.body.append(make([]byte, bodyChunk), c), "a fourth chunk is over the budget")
	c.dropBody()
	used, _, refused := e.RequestMemory()
	assert.Zero(t, used)
	assert.Equal(t, int64(1), refused)
	assert.Zero(t, c.body.size())
}
