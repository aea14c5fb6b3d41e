package server_test

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A chaosFault is what a chaos backend does to the traffic it gets; its
// /health always answers 200 while it listens.
type chaosFault int32

const (
	faultNone  chaosFault = iota
	faultHang             // take the request, never answer it (until the fault ends)
	fault500              // answer 500
	faultReset            // reset every third connection (SetLinger(0), Close) once its request arrived
)

// chaosBackend is one instance of the app: a real HTTP server on a fixed
// loopback address that can be killed (listener and connections closed)
// and started again on the same address. It records when each proxied
// request (anything but /health) reached it.
type chaosBackend struct {
	region string
	addr   string // host:port, the same across restarts
	url    string

	fault atomic.Int32 // a chaosFault

	mu       sync.Mutex
	srv      *http.Server  // nil while killed
	hang     chan struct{} // closed to let hanging requests go
	accepted int           // connections accepted while resetting
	resets   int           // connections reset
	arrivals []time.Time   // proxied requests, in order of arrival
	probes   int

	wg     sync.WaitGroup // serving loops and resetters
	active atomic.Int64   // proxied requests being handled
}

// newChaosBackend starts a backend on a free loopback port.
func newChaosBackend(region string) (*chaosBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &chaosBackend{region: region, addr: ln.Addr().String(), hang: make(chan struct{})}
	b.url = "http://" + b.addr
	b.serve(ln)
	return b, nil
}

var discardLog = log.New(io.Discard, "", 0)

func (b *chaosBackend) serve(ln net.Listener) {
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	wl := &chaosListener{Listener: ln, b: b}
	b.wg.Go(func() { _ = srv.Serve(wl) })
}

// kill closes the listener and every open connection at once: new
// connections are refused, requests in flight lose their connection.
func (b *chaosBackend) kill() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// revive listens again on the same address (a port just closed can be
// taken back at once: Go listens with SO_REUSEADDR); it retries for up to
// two seconds should the port still be held.
func (b *chaosBackend) revive() error {
	b.mu.Lock()
	up := b.srv != nil
	b.mu.Unlock()
	if up {
		return nil
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		ln, err := net.Listen("tcp", b.addr)
		if err == nil {
			b.serve(ln)
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// setFault changes what the backend does from now on; ending a hang lets
// the requests that were hanging get their answer.
func (b *chaosBackend) setFault(f chaosFault) {
	old := chaosFault(b.fault.Swap(int32(f)))
	b.mu.Lock()
	defer b.mu.Unlock()
	if old == faultHang && f != faultHang {
		close(b.hang)
		b.hang = make(chan struct{})
	}
	if f == faultReset && old != faultReset {
		b.accepted = 0
	}
}

// close ends the backend for good and waits (up to 5 s) for its
// goroutines: the serving loops, the resetters and the handlers.
func (b *chaosBackend) close() {
	b.setFault(faultNone)
	b.kill()
	b.wg.Wait()
	waitUntil(5*time.Second, func() bool { return b.active.Load() == 0 })
}

func (b *chaosBackend) arrived(at time.Time) {
	b.mu.Lock()
	b.arrivals = append(b.arrivals, at)
	b.mu.Unlock()
}

// arrivalsSince returns the arrival times from t on.
func (b *chaosBackend) arrivalsSince(t time.Time) []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []time.Time
	for i := len(b.arrivals) - 1; i >= 0 && !b.arrivals[i].Before(t); i-- {
		out = append(out, b.arrivals[i])
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func (b *chaosBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" {
		b.mu.Lock()
		b.probes++
		b.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
		return
	}
	b.active.Add(1)
	defer b.active.Add(-1)
	b.arrived(time.Now())
	_, _ = io.Copy(io.Discard, r.Body)
	switch chaosFault(b.fault.Load()) {
	case faultHang:
		b.mu.Lock()
		hang := b.hang
		b.mu.Unlock()
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		}
	case fault500:
		http.Error(w, b.region+" failed", http.StatusInternalServerError)
		return
	case faultReset:
		// One request per connection, so that new connections keep coming
		// and every third of them is reset.
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("X-Backend", b.url)
	_, _ = io.WriteString(w, b.region)
}

// chaosListener resets every third connection it accepts while its
// backend's fault is faultReset: it waits for the request's first bytes
// (so that the proxy has sent it), then closes with SO_LINGER 0 (RST).
type chaosListener struct {
	net.Listener
	b *chaosBackend
}

func (l *chaosListener) Accept() (net.Conn, error) {
	for range 1 << 20 {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if chaosFault(l.b.fault.Load()) != faultReset {
			return nc, nil
		}
		l.b.mu.Lock()
		l.b.accepted++
		reset := l.b.accepted%3 == 0
		l.b.mu.Unlock()
		if !reset {
			return nc, nil
		}
		l.b.wg.Go(func() { l.b.reset(nc) })
	}
	return nil, errors.New("chaos listener: too many connections reset")
}

func (b *chaosBackend) reset(nc net.Conn) {
	_ = nc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 512)
	n, _ := nc.Read(buf)
	if n > 0 && !bytes.HasPrefix(buf[:n], []byte("GET /health ")) {
		b.arrived(time.Now())
	}
	b.mu.Lock()
	b.resets++
	b.mu.Unlock()
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}
