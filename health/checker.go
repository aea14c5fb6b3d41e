package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Settings are the probe parameters shared by every backend.
type Settings struct {
	// Path is requested on each backend; a 2xx answer passes.
	Path string
	// Interval between probes of one backend (jittered by ±10%).
	Interval time.Duration
	// Timeout of one probe.
	Timeout time.Duration
	// HealthyThreshold is how many passes in a row make an unhealthy
	// backend healthy.
	HealthyThreshold int
	// UnhealthyThreshold is how many failures in a row make a healthy
	// backend unhealthy.
	UnhealthyThreshold int
}

// Target is one backend to probe.
type Target struct {
	ID     string
	Region string
	URL    *url.URL
	// TLS, for an https backend, is how to speak TLS to it; nil for the
	// defaults.
	TLS *tls.Config
	// HTTP2 says the backend speaks HTTP/2 (h2c for an http URL): its
	// probes do too.
	HTTP2 bool
}

// Observer learns about probes and state changes (metrics, in production).
type Observer interface {
	// Probed is called after every probe.
	Probed(t Target, ok bool, took time.Duration)
	// Changed is called once per state change.
	Changed(t Target, from, to Status)
	// Ejected is called once per ejection by passive health.
	Ejected(t Target, reason string)
	// Returned is called when an ejected backend returns.
	Returned(t Target)
}

// Checker probes backends and records their health in a Store.
type Checker struct {
	store    *Store
	settings Settings
	log      *zap.Logger
	obs      Observer
	client   *http.Client
}

// NewChecker returns a Checker writing to store. obs may be nil.
func NewChecker(store *Store, s Settings, log *zap.Logger, obs Observer) *Checker {
	transport := &http.Transport{
		Proxy:               nil, // probe the backend itself, never through an environment proxy
		DialContext:         (&net.Dialer{Timeout: s.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     2 * s.Interval,
	}
	return &Checker{
		store:    store,
		settings: s,
		log:      log.Named("health"),
		obs:      obs,
		client: &http.Client{
			Transport: transport,
			// A redirect is an answer: judge it by its status.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Run probes every target until ctx ends, then returns once every probe
// goroutine has stopped.
func (c *Checker) Run(ctx context.Context, targets []Target) {
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Go(func() { c.loop(ctx, t) })
	}
	wg.Wait()
	c.client.CloseIdleConnections()
}

// loop probes one target: at once, then every jittered interval.
func (c *Checker) loop(ctx context.Context, t Target) {
	var (
		state       = Unknown
		passes      int
		failures    int
		timer       = time.NewTimer(0)
		interval    = c.settings.Interval
		probeTarget = t.URL.JoinPath(c.settings.Path)
		client      = c.client
	)
	if t.TLS != nil || t.HTTP2 {
		// Its own client: its authorities, server name and certificate,
		// and its protocol.
		tr := c.client.Transport.(*http.Transport).Clone()
		if t.TLS != nil {
			tr.TLSClientConfig = t.TLS.Clone()
		}
		if t.HTTP2 {
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetHTTP2(true)
			tr.Protocols.SetUnencryptedHTTP2(true)
		}
		client = &http.Client{Transport: tr, CheckRedirect: c.client.CheckRedirect}
		defer tr.CloseIdleConnections()
	}
	defer timer.Stop()
	if b, err := c.store.Backend(t.ID); err == nil {
		state = b.Status // carried over from an earlier configuration
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		err := c.probe(ctx, client, probeTarget)
		if ctx.Err() != nil {
			return // shutting down: a cancelled probe says nothing of the backend
		}
		took := time.Since(start)
		if c.obs != nil {
			c.obs.Probed(t, err == nil, took)
		}
		next := state
		reason := ""
		if err == nil {
			passes, failures = passes+1, 0
			if state == Unknown || (state == Unhealthy && passes >= c.settings.HealthyThreshold) {
				next = Healthy
			}
		} else {
			passes, failures = 0, failures+1
			reason = err.Error()
			if state == Unknown || (state == Healthy && failures >= c.settings.UnhealthyThreshold) {
				next = Unhealthy
			}
			c.log.Debug("probe failed", zap.String("region", t.Region), zap.String("backend", t.ID), zap.Error(err))
		}
		if next != state {
			c.record(t, next, reason)
			state = next
		}
		if err == nil {
			c.returnIfDue(t)
		}
		// ±10% jitter keeps the probes of many proxies from lining up.
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(interval))
		timer.Reset(interval + jitter)
	}
}

// record stores a state change; it is logged and observed exactly once.
func (c *Checker) record(t Target, to Status, reason string) {
	prev, changed, err := c.store.SetStatus(t.ID, to, reason)
	if err != nil {
		c.log.Error("record health", zap.String("backend", t.ID), zap.Error(err))
		return
	}
	if !changed {
		return
	}
	fields := []zap.Field{
		zap.String("region", t.Region), zap.String("backend", t.ID),
		zap.Stringer("from", prev), zap.Stringer("to", to),
	}
	if reason != "" {
		fields = append(fields, zap.String("reason", reason))
	}
	c.log.Info("backend health changed", fields...)
	if c.obs != nil {
		c.obs.Changed(t, prev, to)
	}
}

// returnIfDue puts an ejected backend that passed a probe back into
// service once its ejection time is over.
func (c *Checker) returnIfDue(t Target) {
	b, returned, err := c.store.ReturnIfDue(t.ID)
	if err != nil {
		c.log.Error("return backend", zap.String("backend", t.ID), zap.Error(err))
		return
	}
	if !returned {
		return
	}
	c.log.Warn("backend returned", zap.String("region", t.Region), zap.String("backend", t.ID),
		zap.Duration("ejected_for", b.ReturnedAt.Sub(b.EjectedAt)))
	if c.obs != nil {
		c.obs.Returned(t)
	}
}

// probe sends one request; nil means the backend passed.
func (c *Checker) probe(ctx context.Context, client *http.Client, target *url.URL) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("probe panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("probe panicked: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, c.settings.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return fmt.Errorf("build probe: %w", err)
	}
	req.Header.Set("User-Agent", "geoproxy-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", target.Redacted(), err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("probe %s: status %d", target.Redacted(), resp.StatusCode)
	}
	return nil
}
