package h1

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bothPaths runs a test with event loops and with a goroutine per
// connection.
func bothPaths(t *testing.T, test func(t *testing.T, loops int)) {
	for _, loops := range []int{1, -1} {
		t.Run(fmt.Sprintf("loops=%d", loops), func(t *testing.T) {
			t.Parallel()
			test(t, loops)
		})
	}
}

func count(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

// The idle, head and body timeouts each bound their own wait: the idle
// one closes without an answer, the others answer 408 and are counted.
func TestClientTimeoutsApart(t *testing.T) {
	const idle, head, body = 900 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond
	bothPaths(t, func(t *testing.T, loops int) {
		p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, loops: loops,
			idleTimeout: idle, headTimeout: head, bodyTimeout: body})
		silent, dialed := p.dial(t), time.Now()

		slow := p.dial(t)
		start := time.Now()
		slow.send("GET / HTTP/1.1\r\nHost: pro")
		r := slow.read("GET")
		assert.Equal(t, 408, r.status)
		assert.InDelta(t, float64(head), float64(time.Since(start)), float64(150*time.Millisecond))
		slow.expectClosed(time.Second)

		// The next request's first bytes came with the last one: the
		// head timeout runs from its answer.
		piped := p.dial(t)
		piped.send(get("/one") + "GET /two HTTP/1.1\r\nHo")
		assert.Equal(t, 200, piped.read("GET").status)
		start = time.Now()
		assert.Equal(t, 408, piped.read("GET").status)
		assert.Less(t, time.Since(start), idle-200*time.Millisecond)

		up := p.dial(t)
		start = time.Now()
		up.send("POST / HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\n\r\nab")
		assert.Equal(t, 408, up.read("POST").status)
		assert.InDelta(t, float64(body), float64(time.Since(start)), float64(150*time.Millisecond))

		silent.expectClosed(2 * time.Second)
		assert.GreaterOrEqual(t, time.Since(dialed), idle-100*time.Millisecond)

		assert.Equal(t, 2.0, count(t, p.e.limitHits.HeadTimeout))
		assert.Equal(t, 1.0, count(t, p.e.limitHits.BodyTimeout))
	})
}

// ClientTimeout stands for each timeout left zero.
func TestClientTimeoutIsEachTimeoutLeftZero(t *testing.T) {
	e := newProxy(t, proxyOpts{handlers: []handler{okHandler}, clientTimeout: time.Second, headTimeout: time.Minute}).e
	assert.Equal(t, time.Second, e.idleTimeout)
	assert.Equal(t, time.Minute, e.headTimeout)
	assert.Equal(t, time.Second, e.bodyTimeout)
	e = newProxy(t, proxyOpts{handlers: []handler{okHandler}}).e
	assert.Equal(t, DefaultClientTimeout, e.idleTimeout)
	assert.Equal(t, DefaultClientTimeout, e.headTimeout)
	assert.Equal(t, DefaultClientTimeout, e.bodyTimeout)
	assert.Equal(t, DefaultMaxHeaderBytes, e.maxHead)

	assert.Equal(t, 5*time.Second, Timeout(5*time.Second, DefaultClientTimeout))
	assert.Equal(t, 5*time.Second, Timeout(5*time.Second, 0))
	assert.Equal(t, 300*time.Millisecond, Timeout(5*time.Second, 300*time.Millisecond))
}

// MaxHeaderBytes bounds request heads to the byte, below the first read
// buffer and far above the default; the memory a long head took is given
// back.
func TestMaxHeaderBytesOption(t *testing.T) {
	for _, limit := range []int{1 << 10, 64 << 10} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			bothPaths(t, func(t *testing.T, loops int) {
				p := newProxy(t, proxyOpts{handlers: []handler{okHandler}, loops: loops, maxHeaderBytes: limit})
				head := func(n int) string {
					h := "GET / HTTP/1.1\r\nHost: proxy.test\r\nX-Big: "
					return h + strings.Repeat("a", n-len(h)-4) + "\r\n\r\n"
				}
				c := p.dial(t)
				c.send(head(limit))
				assert.Equal(t, 200, c.read("GET").status)
				c.send(head(limit - 1))
				assert.Equal(t, 200, c.read("GET").status)

				c = p.dial(t)
				c.send(head(limit + 1))
				r := c.read("GET")
				assert.Equal(t, 431, r.status)
				assert.Equal(t, "geoproxy: message head too large\n", string(r.body))
				assert.Equal(t, 1.0, count(t, p.e.limitHits.HeaderBytes))
				assert.Eventually(t, func() bool {
					used, _, _ := p.e.RequestMemory()
					return used == 0
				}, 2*time.Second, 10*time.Millisecond, "the grown buffers' memory is back")
			})
		})
	}
}
