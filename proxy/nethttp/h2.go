package nethttp

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/geoproxy/geoproxy/proxy/h1"
	"github.com/geoproxy/geoproxy/route"
)

// backends forwards each attempt to its backend: over the native engine's
// HTTP/1.1 pools, or, for a backend that speaks HTTP/2 (h2c or h2), over
// Go's HTTP/2 client, which carries what gRPC needs (trailers, streams in
// both directions at once).
type backends struct {
	h1 *h1.Transport
	h2 map[*route.Backend]*http.Transport
	// headerTimeout bounds the wait for an attempt's answer head.
	headerTimeout func(*http.Request) time.Duration
}

func newBackends(h1t *h1.Transport, all []*route.Backend, dialTimeout time.Duration, headerTimeout func(*http.Request) time.Duration) *backends {
	b := &backends{h1: h1t, h2: map[*route.Backend]*http.Transport{}, headerTimeout: headerTimeout}
	for _, be := range all {
		if !be.HTTP2 {
			continue
		}
		protocols := new(http.Protocols)
		protocols.SetHTTP2(true)
		protocols.SetUnencryptedHTTP2(true)
		tr := &http.Transport{
			Proxy:               nil, // the backend itself, never an environment's proxy
			DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     be.TLS.Clone(),
			Protocols:           protocols,
			IdleConnTimeout:     backendIdle,
			MaxIdleConnsPerHost: 16,
		}
		b.h2[be] = tr
	}
	return b
}

// backendIdle is how long an idle HTTP/2 backend connection is kept, as
// the native engine's pools keep theirs.
const backendIdle = 55 * time.Second

// RoundTrip sends the attempt of r to the backend it is for.
func (b *backends) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(b.h2) == 0 {
		return b.h1.RoundTrip(r)
	}
	st := r.Context().Value(stateKey{}).(*state)
	tr, ok := b.h2[st.backend]
	if !ok {
		return b.h1.RoundTrip(r)
	}
	// The head must come within the attempt's time; the body then streams
	// for as long as it takes (a gRPC stream can last hours).
	ctx, cancel := context.WithCancelCause(r.Context())
	var late *time.Timer
	if t := b.headerTimeout(r); t > 0 {
		late = time.AfterFunc(t, func() { cancel(errHeadTimeout) })
	}
	res, err := tr.RoundTrip(r.WithContext(ctx))
	if late != nil && !late.Stop() && err != nil {
		cancel(nil)
		return nil, errHeadTimeout
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	res.Body = &cancelOnClose{ReadCloser: res.Body, cancel: func() { cancel(nil) }}
	return res, nil
}

// Close closes the idle HTTP/2 backend connections.
func (b *backends) Close() {
	for _, tr := range b.h2 {
		tr.CloseIdleConnections()
	}
}

// errHeadTimeout is an attempt's error when its backend sent no answer head
// in time: a timeout, as the native engine's.
var errHeadTimeout error = headTimeout{}

type headTimeout struct{}

func (headTimeout) Error() string   { return "backend: no answer head in time" }
func (headTimeout) Timeout() bool   { return true }
func (headTimeout) Temporary() bool { return true }

// cancelOnClose ends an attempt's context once its answer body is closed.
type cancelOnClose struct {
	io.ReadCloser
	once   sync.Once
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.cancel)
	return err
}
