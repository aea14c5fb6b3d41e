package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSchemaIsValid(t *testing.T) {
	require.NoError(t, Schema().Validate())
}

// scripted is a backend whose /health answers with a status the test sets.
type scripted struct {
	srv    *httptest.Server
	status atomic.Int32
	delay  atomic.Int64 // nanoseconds
	probes atomic.Int32
	// failNext makes that many probes fail before status applies again.
	failNext atomic.Int32
}

func newScripted(t *testing.T, status int) *scripted {
	s := &scripted{}
	s.status.Store(int32(status))
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		s.probes.Add(1)
		if d := time.Duration(s.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if s.failNext.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(int(s.status.Load()))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scripted) target(t *testing.T, region string) Target {
	u, err := url.Parse(s.srv.URL)
	require.NoError(t, err)
	return Target{ID: s.srv.URL, Region: region, URL: u}
}

// events is an Observer that reports on channels.
type events struct {
	mu      sync.Mutex
	probes  map[string]int
	changes chan change
}

type change struct {
	id       string
	from, to Status
	probes   int // probes of this backend when the change happened
}

func newEvents() *events {
	return &events{probes: map[string]int{}, changes: make(chan change, 64)}
}

func (e *events) Probed(t Target, ok bool, took time.Duration) {
	e.mu.Lock()
	e.probes[t.ID]++
	e.mu.Unlock()
}

func (e *events) Changed(t Target, from, to Status) {
	e.mu.Lock()
	n := e.probes[t.ID]
	e.mu.Unlock()
	e.changes <- change{id: t.ID, from: from, to: to, probes: n}
}

func (e *events) Ejected(t Target, reason string) {
	e.mu.Lock()
	e.probes["ejected "+reason+" "+t.ID]++
	e.mu.Unlock()
}

func (e *events) Returned(t Target) {
	e.mu.Lock()
	e.probes["returned "+t.ID]++
	e.mu.Unlock()
}

func (e *events) count(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.probes[key]
}

func (e *events) next(t *testing.T) change {
	t.Helper()
	select {
	case c := <-e.changes:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no health change within 5s")
		return change{}
	}
}

type harness struct {
	store  *Store
	events *events
	logs   *observer.ObservedLogs
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, s Settings, targets ...Target) *harness {
	t.Helper()
	store, err := NewStore()
	require.NoError(t, err)
	var specs []BackendSpec
	for _, tg := range targets {
		specs = append(specs, BackendSpec{ID: tg.ID, Region: tg.Region})
	}
	require.NoError(t, store.Sync(specs))
	core, logs := observer.New(zap.InfoLevel)
	h := &harness{store: store, events: newEvents(), logs: logs, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	c := NewChecker(store, s, zap.New(core), h.events)
	go func() {
		c.Run(ctx, targets)
		close(h.done)
	}()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

func fast() Settings {
	return Settings{Path: "/health", Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond,
		HealthyThreshold: 2, UnhealthyThreshold: 3}
}

func TestFirstProbeAtOnceSettlesUnknown(t *testing.T) {
	up := newScripted(t, http.StatusOK)
	down := newScripted(t, http.StatusServiceUnavailable)
	s := fast()
	s.Interval = time.Hour // only the first probe can happen during the test
	h := start(t, s, up.target(t, "r1"), down.target(t, "r1"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, h.store.WaitSettled(ctx))

	b, err := h.store.Backend(up.srv.URL)
	require.NoError(t, err)
	assert.Equal(t, Healthy, b.Status)
	b, err = h.store.Backend(down.srv.URL)
	require.NoError(t, err)
	assert.Equal(t, Unhealthy, b.Status)
	assert.Contains(t, b.Reason, "status 503")
}

func TestThresholds(t *testing.T) {
	be := newScripted(t, http.StatusOK)
	h := start(t, fast(), be.target(t, "r1"))

	c := h.events.next(t)
	assert.Equal(t, change{id: be.srv.URL, from: Unknown, to: Healthy, probes: 1}, c)

	// Three failures in a row are needed to go down.
	be.status.Store(http.StatusInternalServerError)
	c = h.events.next(t)
	assert.Equal(t, Unhealthy, c.to)
	assert.Equal(t, 1+3, c.probes, "went down after exactly unhealthy_threshold failures")

	// Two passes in a row are needed to come back.
	be.status.Store(http.StatusOK)
	c = h.events.next(t)
	assert.Equal(t, Healthy, c.to)
	assert.Equal(t, 1+3+2, c.probes, "came back after exactly healthy_threshold passes")

	// Each change is logged once.
	assert.Equal(t, 3, h.logs.FilterMessage("backend health changed").Len())
}

func TestOneLostProbeDoesNotFlip(t *testing.T) {
	be := newScripted(t, http.StatusOK)
	h := start(t, fast(), be.target(t, "r1"))
	require.Equal(t, Healthy, h.events.next(t).to)

	// Fail exactly two probes (below the threshold of three), then pass.
	before := be.probes.Load()
	be.failNext.Store(2)
	deadline := time.After(5 * time.Second)
	for be.probes.Load() < before+6 {
		select {
		case c := <-h.events.changes:
			t.Fatalf("unexpected change %+v", c)
		case <-deadline:
			t.Fatal("probes stopped")
		case <-time.After(10 * time.Millisecond):
		}
	}
	b, err := h.store.Backend(be.srv.URL)
	require.NoError(t, err)
	assert.Equal(t, Healthy, b.Status)
}

func TestSlowBackendTimesOut(t *testing.T) {
	be := newScripted(t, http.StatusOK)
	be.delay.Store(int64(time.Second))
	s := fast()
	s.Timeout = 50 * time.Millisecond
	h := start(t, s, be.target(t, "r1"))
	c := h.events.next(t)
	assert.Equal(t, Unhealthy, c.to)
	b, err := h.store.Backend(be.srv.URL)
	require.NoError(t, err)
	assert.Contains(t, b.Reason, "deadline exceeded")
}

func TestRefusedConnectionIsUnhealthy(t *testing.T) {
	be := newScripted(t, http.StatusOK)
	tg := be.target(t, "r1")
	be.srv.Close()
	h := start(t, fast(), tg)
	assert.Equal(t, Unhealthy, h.events.next(t).to)
}

func TestStopEndsEveryProbe(t *testing.T) {
	be := newScripted(t, http.StatusOK)
	be.delay.Store(int64(time.Second)) // a probe is in flight when we stop
	s := fast()
	s.Timeout = 10 * time.Second
	h := start(t, s, be.target(t, "r1"))
	require.Eventually(t, func() bool { return be.probes.Load() > 0 }, 5*time.Second, 5*time.Millisecond)
	stopped := make(chan struct{})
	go func() { h.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// goleak in TestMain checks nothing is left running.
}

func TestSyncKeepsHealthAndRemovesStale(t *testing.T) {
	store, err := NewStore()
	require.NoError(t, err)
	require.NoError(t, store.Sync([]BackendSpec{
		{ID: "http://a1", Region: "a"}, {ID: "http://a2", Region: "a"}, {ID: "http://b1", Region: "b"},
	}))
	_, changed, err := store.SetStatus("http://a1", Healthy, "")
	require.NoError(t, err)
	assert.True(t, changed)
	_, changed, err = store.SetStatus("http://a1", Healthy, "")
	require.NoError(t, err)
	assert.False(t, changed, "same status again is not a change")

	ws := memdb.NewWatchSet()
	_, err = store.Backends(ws)
	require.NoError(t, err)

	// a1 stays (healthy), a2 goes, b1 moves region (restarts unknown), c1 is new.
	require.NoError(t, store.Sync([]BackendSpec{
		{ID: "http://a1", Region: "a"}, {ID: "http://b1", Region: "c"}, {ID: "http://c1", Region: "c"},
	}))
	assert.False(t, ws.Watch(time.After(time.Second)), "watchers hear about the change")

	all, err := store.Backends(nil)
	require.NoError(t, err)
	got := map[string]Status{}
	for _, b := range all {
		got[b.ID+"@"+b.Region] = b.Status
	}
	assert.Equal(t, map[string]Status{"http://a1@a": Healthy, "http://b1@c": Unknown, "http://c1@c": Unknown}, got)

	inC, err := store.InRegion("c")
	require.NoError(t, err)
	assert.Len(t, inC, 2)
	healthy, err := store.WithStatus(Healthy)
	require.NoError(t, err)
	require.Len(t, healthy, 1)
	assert.Equal(t, "http://a1", healthy[0].ID)

	_, _, err = store.SetStatus("http://gone", Healthy, "")
	assert.ErrorIs(t, err, ErrNoBackend)
}

func TestWaitSettledHonoursContext(t *testing.T) {
	store, err := NewStore()
	require.NoError(t, err)
	require.NoError(t, store.Sync([]BackendSpec{{ID: "x", Region: "r"}}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, store.WaitSettled(ctx), context.DeadlineExceeded)
}
