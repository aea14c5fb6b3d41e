package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// passiveRig is a store of one region's backends, all healthy, with a
// running Passive detector.
type passiveRig struct {
	store   *Store
	p       *Passive
	targets []Target
	events  *events
	logs    *observer.ObservedLogs
}

func newPassiveRig(t *testing.T, s PassiveSettings, n int) *passiveRig {
	t.Helper()
	store, err := NewStore()
	require.NoError(t, err)
	r := &passiveRig{store: store, events: newEvents()}
	var specs []BackendSpec
	for i := range n {
		id := "http://10.0.0." + string(rune('1'+i))
		u, _ := url.Parse(id)
		r.targets = append(r.targets, Target{ID: id, Region: "r", URL: u})
		specs = append(specs, BackendSpec{ID: id, Region: "r"})
	}
	require.NoError(t, store.Sync(specs))
	for _, tg := range r.targets {
		_, _, err := store.SetStatus(tg.ID, Healthy, "")
		require.NoError(t, err)
	}
	core, logs := observer.New(zap.InfoLevel)
	r.logs = logs
	r.p = NewPassive(store, s, r.targets, zap.New(core), r.events)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.p.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

func (r *passiveRig) ejected(t *testing.T, i int) bool {
	t.Helper()
	b, err := r.store.Backend(r.targets[i].ID)
	require.NoError(t, err)
	return b.Ejected
}

func (r *passiveRig) waitEjected(t *testing.T, i int) *Backend {
	t.Helper()
	require.Eventually(t, func() bool { return r.ejected(t, i) }, 5*time.Second, 5*time.Millisecond)
	b, _ := r.store.Backend(r.targets[i].ID)
	return b
}

func defaultPassive() PassiveSettings {
	return PassiveSettings{ErrorsInRow: 5, FailuresInRow: 5, Statuses: []int{500, 502, 503, 504},
		EjectionTime: 30 * time.Second, MaxEjectionTime: 5 * time.Minute, MaxEjected: 0.5}
}

func TestConsecutiveFailuresEject(t *testing.T) {
	r := newPassiveRig(t, defaultPassive(), 4)

	// Four errors then a success: the run is broken, nothing happens.
	for range 4 {
		r.p.Failed(0)
	}
	r.p.Answered(0, 200)
	for range 4 {
		r.p.Failed(0)
	}
	// A 404 is the app's answer, not the backend failing: it breaks runs.
	for range 4 {
		r.p.Answered(1, 500)
	}
	r.p.Answered(1, 404)
	for range 4 {
		r.p.Answered(1, 503)
	}
	time.Sleep(50 * time.Millisecond) // Run would have applied an ejection by now
	assert.False(t, r.ejected(t, 0))
	assert.False(t, r.ejected(t, 1))

	r.p.Failed(0) // the fifth in a row
	b := r.waitEjected(t, 0)
	assert.Equal(t, ReasonErrors, b.EjectReason)
	assert.Equal(t, 1, b.Ejections)
	assert.InDelta(t, 30*time.Second, b.EjectedUntil.Sub(b.EjectedAt), float64(time.Millisecond))
	assert.False(t, b.InService())

	r.p.Answered(1, 500)
	assert.Equal(t, Reason5xx, r.waitEjected(t, 1).EjectReason)

	assert.Equal(t, 1, r.events.count("ejected errors "+r.targets[0].ID))
	assert.Equal(t, 1, r.events.count("ejected 5xx "+r.targets[1].ID))
	logged := r.logs.FilterMessage("backend ejected").All()
	require.Len(t, logged, 2, "each ejection is logged once")
	assert.Equal(t, zap.WarnLevel, logged[0].Level)
}

func TestAtMostMaxEjectedOfARegion(t *testing.T) {
	s := defaultPassive()
	s.ErrorsInRow = 1
	r := newPassiveRig(t, s, 4) // 50% of 4: two at once
	r.p.Failed(0)
	r.waitEjected(t, 0)
	r.p.Failed(1)
	r.waitEjected(t, 1)
	r.p.Failed(2)
	time.Sleep(50 * time.Millisecond)
	assert.False(t, r.ejected(t, 2), "a third of four would pass max_ejected 50%")

	// One backend may always be ejected, even when the share rounds to none.
	s.MaxEjected = 0.1
	one := newPassiveRig(t, s, 2)
	one.p.Failed(0)
	one.waitEjected(t, 0)
	one.p.Failed(1)
	time.Sleep(50 * time.Millisecond)
	assert.False(t, one.ejected(t, 1))
}

func TestSuccessRateBelowTheFloorEjects(t *testing.T) {
	s := defaultPassive()
	s.FailuresInRow = 0 // only the rate
	s.BelowSuccess, s.Window, s.MinRequests = 0.5, 100*time.Millisecond, 20
	r := newPassiveRig(t, s, 3)
	// Backend 0 fails 2 of 3, never 5 in a row; backend 1 fails 1 of 3;
	// backend 2 fails every time but gets too few requests to judge.
	for i := range 60 {
		if i%3 == 0 {
			r.p.Answered(0, 200)
		} else {
			r.p.Answered(0, 500)
		}
		if i%3 == 0 {
			r.p.Answered(1, 500)
		} else {
			r.p.Answered(1, 200)
		}
	}
	for range 10 {
		r.p.Answered(2, 500)
	}
	assert.Equal(t, ReasonSuccessRate, r.waitEjected(t, 0).EjectReason)
	assert.False(t, r.ejected(t, 1))
	assert.False(t, r.ejected(t, 2))
}

func TestEjectionsGrowLongerAndAreCapped(t *testing.T) {
	store, err := NewStore()
	require.NoError(t, err)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	store.now = func() time.Time { return now }
	require.NoError(t, store.Sync([]BackendSpec{{ID: "a", Region: "r"}}))
	e := Ejection{ID: "a", Reason: "5xx", Base: 30 * time.Second, Max: 100 * time.Second, MaxShare: 1}
	var lengths []time.Duration
	for range 5 {
		b, ok, err := store.Eject(e)
		require.NoError(t, err)
		require.True(t, ok)
		lengths = append(lengths, b.EjectedUntil.Sub(b.EjectedAt))
		now = b.EjectedUntil
		_, returned, err := store.ReturnIfDue("a")
		require.NoError(t, err)
		require.True(t, returned)
		now = now.Add(time.Second)
	}
	assert.Equal(t, []time.Duration{30 * time.Second, 60 * time.Second, 90 * time.Second, 100 * time.Second, 100 * time.Second}, lengths)

	// A long good run: the count starts again.
	now = now.Add(time.Hour)
	b, _, err := store.Eject(e)
	require.NoError(t, err)
	assert.Equal(t, 1, b.Ejections)
	assert.Equal(t, 30*time.Second, b.EjectedUntil.Sub(b.EjectedAt))
	// Not due yet: it stays out even when it passes probes.
	_, returned, err := store.ReturnIfDue("a")
	require.NoError(t, err)
	assert.False(t, returned)
}

func TestEjectedBackendIsProbedAndReturnsWhenDueAndPassing(t *testing.T) {
	var healthy sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := healthy.Load("yes"); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	healthy.Store("yes", true)
	u, _ := url.Parse(srv.URL)
	tg := Target{ID: srv.URL, Region: "r", URL: u}
	h := start(t, fast(), tg)
	require.Equal(t, Healthy, h.events.next(t).to)

	// Ejected for 300ms while its probes still pass.
	_, ok, err := h.store.Eject(Ejection{ID: tg.ID, Reason: Reason5xx, Base: 300 * time.Millisecond, Max: time.Second, MaxShare: 1})
	require.NoError(t, err)
	require.True(t, ok)
	b, _ := h.store.Backend(tg.ID)
	assert.False(t, b.InService())
	require.Eventually(t, func() bool {
		b, _ := h.store.Backend(tg.ID)
		return b.InService()
	}, 5*time.Second, 5*time.Millisecond)
	b, _ = h.store.Backend(tg.ID)
	assert.False(t, b.ReturnedAt.Before(b.EjectedUntil), "back only once its time is over")
	assert.Equal(t, 1, h.events.count("returned "+tg.ID))
	assert.Len(t, h.logs.FilterMessage("backend returned").All(), 1)

	// Ejected again, now failing its probes: it stays out past its time.
	healthy.Delete("yes")
	_, ok, err = h.store.Eject(Ejection{ID: tg.ID, Reason: Reason5xx, Base: 100 * time.Millisecond, Max: time.Second, MaxShare: 1})
	require.NoError(t, err)
	require.True(t, ok)
	time.Sleep(400 * time.Millisecond)
	b, _ = h.store.Backend(tg.ID)
	assert.True(t, b.Ejected)
}

// An ejection refused for max_ejected is asked for again after as many
// failures once the region has room.
func TestARefusedEjectionIsAskedForAgain(t *testing.T) {
	s := defaultPassive()
	s.ErrorsInRow = 2
	r := newPassiveRig(t, s, 2) // 50% of 2: one at a time
	r.p.Failed(0)
	r.p.Failed(0)
	r.waitEjected(t, 0)
	r.p.Failed(1)
	r.p.Failed(1)
	time.Sleep(50 * time.Millisecond)
	require.False(t, r.ejected(t, 1), "refused: the other is out")

	// Backend 0 returns; backend 1 keeps failing: it is ejected now.
	r.store.now = func() time.Time { return time.Now().Add(time.Hour) } // its ejection is over
	_, returned, err := r.store.ReturnIfDue(r.targets[0].ID)
	require.NoError(t, err)
	require.True(t, returned)
	r.p.Failed(1)
	r.p.Failed(1)
	r.waitEjected(t, 1)
}
