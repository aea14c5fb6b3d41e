package demo

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/geo"
)

// syncBuffer is a bytes.Buffer safe for the demo goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemoWalkthrough follows the instructions the demo prints.
func TestDemoWalkthrough(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *Demo, 1)
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", AppHost: "127.0.0.1",
			Interval: 200 * time.Millisecond, Log: zap.NewNop(), Version: "test", Out: out,
			Started: func(d *Demo) { started <- d },
		})
	}()
	var d *Demo
	select {
	case d = <-started:
	case err := <-done:
		t.Fatalf("demo stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not start")
	}
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	// A first probe can time out on a loaded machine: start from every
	// region up, as a user reading the instructions would.
	require.Eventually(t, func() bool {
		snap := d.Server.Router().Snapshot()
		for i := range snap.Regions {
			if !snap.Regions[i].Eligible() {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "every demo region becomes healthy")

	proxy := "http://" + d.Server.ProxyAddr().String()
	text := out.String()
	assert.Contains(t, text, "curl -H 'X-Forwarded-For: 81.2.69.142'  "+proxy+"/")
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	get := func(xff string) string {
		req, err := http.NewRequest(http.MethodGet, proxy+"/", nil)
		require.NoError(t, err)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		return string(b)
	}
	// Real addresses, located by the embedded database.
	for _, c := range Clients() {
		assert.Contains(t, text, "curl -H 'X-Forwarded-For: "+c.Addr+"'", c.City)
		body := get(c.Addr)
		assert.Contains(t, body, "region="+c.Region+" ", c.City)
		assert.Contains(t, body, `country="`+c.Country+`"`, c.City)
		assert.Contains(t, body, `location="`, c.City)
		assert.Contains(t, body, "client="+c.Addr, c.City)
	}

	// The embedded data's credit, date and modification note, on every
	// admin surface that shows geo data.
	admin := "http://" + d.Server.AdminAddr().String()
	adminGet := func(path string) string {
		resp, err := client.Get(admin + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		return string(b)
	}
	status := adminGet("/admin/status")
	for _, want := range []string{`"kind": "compact-city"`, `"attribution": "IP Geolocation by DB-IP (https://db-ip.com)"`,
		`"source": "DB-IP IP to City Lite`, `"source_build_time": "20`, `"modified": "modified by geoproxy`} {
		assert.Contains(t, status, want)
	}
	page := adminGet("/")
	for _, want := range []string{`"https://db-ip.com"`, "IP Geolocation by DB-IP", "the data was modified", "data of ${dataDate}"} {
		assert.Contains(t, page, want)
	}
	metricsText := adminGet("/metrics")
	assert.Contains(t, metricsText, `geoproxy_geoip_database_info{database_type="geoproxy-city-compact",kind="compact-city",source="DB-IP IP to City Lite`)
	assert.Contains(t, metricsText, "geoproxy_geoip_source_build_timestamp_seconds ")

	var eu *App
	for _, a := range d.Apps {
		if a.Region == "europe-west" {
			eu = a
		}
	}
	require.NotNil(t, eu)
	post := func(path string) {
		resp, err := client.Post("http://"+eu.Addr+path, "text/plain", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	post("/fail")
	require.Eventually(t, func() bool { return strings.Contains(get("81.2.69.142"), "region=us-east") },
		5*time.Second, 20*time.Millisecond, "London fails over to us-east")
	post("/recover")
	require.Eventually(t, func() bool { return strings.Contains(get("81.2.69.142"), "region=europe-west") },
		5*time.Second, 20*time.Millisecond, "London comes back to europe-west")
}

// TestClientsAreWhereTheySay checks the example addresses against the
// embedded database: right country, within 50 km of the city.
func TestClientsAreWhereTheySay(t *testing.T) {
	db, err := geo.Open("")
	require.NoError(t, err)
	city := map[string][2]float64{"London": {51.507, -0.128}, "Seattle": {47.606, -122.332}, "New York": {40.713, -74.006}}
	for _, c := range Clients() {
		loc, found, err := db.Lookup(netip.MustParseAddr(c.Addr))
		require.NoError(t, err, c.City)
		require.True(t, found, c.City)
		assert.Equal(t, c.Country, loc.Country, c.City)
		want, ok := city[c.City]
		require.True(t, ok, c.City)
		const rad = math.Pi / 180
		d := 6371 * math.Acos(math.Min(1, math.Sin(want[0]*rad)*math.Sin(loc.Lat*rad)+
			math.Cos(want[0]*rad)*math.Cos(loc.Lat*rad)*math.Cos((want[1]-loc.Lon)*rad)))
		assert.Less(t, d, 50.0, "%s at %.2f, %.2f", c.City, loc.Lat, loc.Lon)
	}
}
