package server_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDashboardIsSelfContained checks the page the admin listener embeds:
// everything inline (styles, script, map), no request but to its own
// admin listener, the geo data's credit, and a size that loads at once.
// TestDashboardInBrowser checks what it shows in a real browser.
func TestDashboardIsSelfContained(t *testing.T) {
	b, err := os.ReadFile("dashboard.html")
	require.NoError(t, err)
	page := string(b)
	assert.Less(t, len(b), 250<<10, "the page stays small")

	for _, bad := range []string{"<link", "<img", "<iframe", "<object", "<embed", "@import", "src=", "srcset", "new WebSocket", "EventSource", "XMLHttpRequest", "sendBeacon", "import("} {
		assert.False(t, strings.Contains(page, bad), "%s in the page: everything is inline; nothing is fetched but the admin endpoints", bad)
	}
	for _, u := range regexp.MustCompile(`url\(\s*([^)]*)\)`).FindAllStringSubmatch(page, -1) {
		assert.True(t, strings.HasPrefix(u[1], "#"), "%s: only references inside the page", u[0])
	}
	// Absolute addresses: only the licence links of the geo data's credit
	// (anchors, never loaded) and the SVG namespace.
	allowed := map[string]bool{"https://db-ip.com": true, "https://creativecommons.org/licenses/by/4.0/": true, "http://www.w3.org/2000/svg": true}
	for _, u := range regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"'<>)]*`).FindAllString(page, -1) {
		assert.True(t, allowed[u], "address in the page: %s", u)
	}
	// Every request goes through get() or fetch() with a path of its own
	// origin.
	calls := regexp.MustCompile(`(?:await get|fetch)\(\s*([^,)]+)`).FindAllStringSubmatch(page, -1)
	require.NotEmpty(t, calls)
	for _, c := range calls {
		arg := strings.TrimSpace(c[1])
		if arg == "path" { // get's own fetch
			continue
		}
		assert.Regexp(t, `^["'/]/?(admin/|metrics)`, arg, "request %s", c[0])
	}
	for _, want := range []string{"/admin/status", "/metrics", "/admin/traffic", "/admin/lookup?ip="} {
		assert.True(t, strings.Contains(page, `"`+want), "the page reads %s", want)
	}

	// The world map: country outlines with their codes and where their
	// clients' flows start.
	i, j := strings.Index(page, "<!-- worldmap:begin -->"), strings.Index(page, "<!-- worldmap:end -->")
	require.True(t, i > 0 && j > i, "the map block is there")
	paths := regexp.MustCompile(`<path data-cc="([A-Z]{2})" data-n="[^"]+" data-at="-?\d+\.\d,-?\d+\.\d" d="M[-0-9 lMz]+"/>`).FindAllStringSubmatch(page[i:j], -1)
	assert.Greater(t, len(paths), 150)
	codes := map[string]bool{}
	for _, p := range paths {
		codes[p[1]] = true
	}
	for _, cc := range []string{"GB", "US", "DE", "JP", "BR", "AU", "IN", "RU", "ZA", "FR", "CA", "CN"} {
		assert.True(t, codes[cc], "the map has %s", cc)
	}
	assert.Len(t, codes, len(paths), "one path per country")

	// The geo data's licence (DB-IP, CC BY 4.0) asks for the credit with a
	// link, and a note that the data was modified.
	for _, want := range []string{`"https://db-ip.com"`, "IP Geolocation by DB-IP", "CC BY 4.0", "the data was modified by geoproxy", "data of ${dataDate}"} {
		assert.True(t, strings.Contains(page, want), "the page has %s", want)
	}
}
