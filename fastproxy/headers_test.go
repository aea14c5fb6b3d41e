package fastproxy

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/valyala/fasthttp"
)

func TestConnectionTokens(t *testing.T) {
	assert.Nil(t, connectionTokens(nil))
	assert.Equal(t, []string{"X-Secret", "X-Other"},
		connectionTokens([]byte(" close, X-Secret ,keep-alive,, X-Other, Upgrade")))
}

func TestIsUpgrade(t *testing.T) {
	var req fasthttp.Request
	req.Header.Set("Upgrade", "websocket")
	assert.False(t, isUpgrade(&req), "Upgrade without Connection: upgrade is not an upgrade")
	req.Header.Set("Connection", "keep-alive, Upgrade")
	assert.True(t, isUpgrade(&req))
}

func TestHeaderBit(t *testing.T) {
	assert.Equal(t, bitXFF, headerBit([]byte("X-Forwarded-For")))
	assert.Equal(t, bitHop, headerBit([]byte("Proxy-Authorization")))
	assert.Zero(t, headerBit([]byte("X-City")))
}

func TestCleanRequestAndResponse(t *testing.T) {
	var req fasthttp.Request
	req.Header.Set("Connection", "X-Drop")
	req.Header.Set("X-Drop", "1")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic x")
	req.Header.Set("X-Keep", "1")
	cleanRequest(&req.Header)
	assert.Empty(t, req.Header.Peek("X-Drop"))
	assert.Empty(t, req.Header.Peek("Keep-Alive"))
	assert.Empty(t, req.Header.Peek("Proxy-Authorization"))
	assert.Equal(t, "1", string(req.Header.Peek("X-Keep")))

	var resp fasthttp.Response
	resp.Header.Set("Connection", "X-Drop")
	resp.Header.Set("X-Drop", "1")
	resp.Header.Set("Trailer", "X-T")
	resp.Header.Set("X-Keep", "1")
	cleanResponse(&resp.Header)
	assert.Empty(t, resp.Header.Peek("X-Drop"))
	assert.Empty(t, resp.Header.Peek("Trailer"))
	assert.Equal(t, "1", string(resp.Header.Peek("X-Keep")))
	assert.False(t, resp.Header.ConnectionClose())
}
