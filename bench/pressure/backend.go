//go:build linux

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// smallBody is the backend's answer to a GET, health checks included.
const smallBody = "hello, world\n"

// largePath is the path the backend answers with largeSize bytes.
const largePath = "/large"

// backend is the app behind the proxy, in this process on loopback: it
// answers GETs with smallBody, GET /large with a large body, and reads
// every POST body to its end before it answers with the byte count.
type backend struct {
	largeSize int64
	chunk     []byte // what /large is written from, 32 KiB at a time
	srv       *http.Server
	ln        net.Listener
	served    chan error
}

// startBackend listens on addr and serves until close.
func startBackend(addr string, largeSize int64) (*backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &backend{largeSize: largeSize, chunk: make([]byte, 32<<10), ln: ln, served: make(chan error, 1)}
	for i := range b.chunk {
		b.chunk[i] = 'x'
	}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { b.served <- b.srv.Serve(ln) }()
	return b, nil
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost || r.Method == http.MethodPut:
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return // the proxy gave up on the body: nobody to answer
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "received "+strconv.FormatInt(n, 10)+" bytes\n")
	case r.URL.Path == largePath:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(b.largeSize, 10))
		for left := b.largeSize; left > 0; {
			k := min(left, int64(len(b.chunk)))
			if _, err := w.Write(b.chunk[:k]); err != nil {
				return
			}
			left -= k
		}
	default:
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, smallBody)
	}
}

// close stops the backend and every connection it holds.
func (b *backend) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := b.srv.Shutdown(ctx)
	if err != nil {
		err = b.srv.Close()
	}
	if serr := <-b.served; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
