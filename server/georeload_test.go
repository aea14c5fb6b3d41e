package server_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geoproxy/geoproxy/server"
)

// writeCountryDB writes a flat country database (the ip-location-db
// schema) that places 203.0.113.0/24 in country.
func writeCountryDB(t *testing.T, path, country string) {
	t.Helper()
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "country ipvAll", IncludeReservedNetworks: true, RecordSize: 24})
	require.NoError(t, err)
	_, network, err := net.ParseCIDR("203.0.113.0/24")
	require.NoError(t, err)
	require.NoError(t, w.Insert(network, mmdbtype.Map{"country_code": mmdbtype.String(country)}))
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	require.NoError(t, err)
	_, err = w.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Rename(tmp, path)) // as a deploy would: whole, at once
}

// countryOf asks the server where a client at addr is.
func countryOf(srv *server.Server, addr string) string {
	return srv.Explain(netip.MustParseAddr(addr)).Location.Country
}

// When geoip.database's file is replaced, the new data is used without a
// restart; a corrupt replacement is refused, counted, and the data in use
// stays; SIGHUP's reload (ReloadGeo) does the same on demand.
func TestGeoDatabaseReloadsWhenItsFileChanges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "country.mmdb")
	writeCountryDB(t, path, "GB")
	backend := newApp(t, "europe-west")
	srv := runYAML(t, fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
geoip: {database: %s}
health_check: {path: /health, interval: 1s, timeout: 500ms}
regions:
  - {name: europe-west, location: {lat: 50.45, lon: 3.82}, backends: [{url: "%s"}]}
`, path, backend.srv.URL), server.Options{Log: zaptest.NewLogger(t, zaptest.Level(zap.DPanicLevel))})
	reloads := func(result string) float64 {
		mfs, err := srv.Registry().Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() != "geoproxy_geoip_reloads_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
		return -1
	}
	require.Equal(t, "GB", countryOf(srv, "203.0.113.10"))
	assert.Zero(t, reloads("success"))

	writeCountryDB(t, path, "US")
	require.Eventually(t, func() bool { return countryOf(srv, "203.0.113.10") == "US" }, 5*time.Second, 20*time.Millisecond,
		"the replaced file is read")
	assert.Equal(t, float64(1), reloads("success"))

	// A truncated file: refused, counted; the data in use stays.
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path+".tmp", good[:len(good)/3], 0o600))
	require.NoError(t, os.Rename(path+".tmp", path))
	require.Eventually(t, func() bool { return reloads("failure") == 1 }, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, "US", countryOf(srv, "203.0.113.10"))

	// On demand (SIGHUP): the file is good again.
	writeCountryDB(t, path, "FR")
	require.NoError(t, srv.ReloadGeo())
	assert.Equal(t, "FR", countryOf(srv, "203.0.113.10"))
	require.NoError(t, os.Remove(path))
	assert.Error(t, srv.ReloadGeo(), "a missing file is refused")
	assert.Equal(t, "FR", countryOf(srv, "203.0.113.10"))
}
