package reqcheck_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/geoproxy/geoproxy/proxy/reqcheck"
)

// Every spelling a backend could resolve to a dot segment is refused: plain,
// percent-encoded, with path parameters (servlet containers strip ";x"),
// or ended by a backslash or an encoded slash.
func TestDotSegmentSpellings(t *testing.T) {
	for path, refused := range map[string]bool{
		"/a/../b": true, "/a/./b": true, "/..": true, "/a/%2e%2E/b": true, "/a/.%2e": true,
		"/../admin": true, "/%2e%2e/admin": true, "/a/../../admin": true,
		"/..;/manager": true, "/..;x=1/m": true, "/%2e%2e;/m": true, "/..\\m": true, "/..%2fm": true, "/..%5Cm": true,
		"/a%2ebin": false, "/a.b": false, "/...": false, "/a/b?x=/../": false, "/.well-known/x": false,
		"/": false, "*": false, "/a;b/c": false, "/a%2fb": false,
	} {
		assert.Equal(t, refused, reqcheck.DotSegments(path), path)
		assert.Equal(t, refused, reqcheck.DotSegments([]byte(path)), path)
	}
}

func TestValidHost(t *testing.T) {
	for host, valid := range map[string]bool{
		"movr.example.com": true, "movr.example.com:8080": true, "127.0.0.1:80": true, "[::1]:8080": true,
		"[fe80::1%25eth0]": true, "under_score.example": true, "": true, "xn--bcher-kva.example": true,
		"a/b@c": false, "u:p@evil": false, "evil@x": false, "a b": false, "a\\b": false, "a?b": false,
		"a#b": false, "a\x00b": false, "a\tb": false, "ä.example": false, "a\"b": false,
	} {
		assert.Equal(t, valid, reqcheck.ValidHost(host), "%q", host)
		assert.Equal(t, valid, reqcheck.ValidHost([]byte(host)), "%q", host)
	}
}

func TestDropField(t *testing.T) {
	for name, dropped := range map[string]bool{
		"X_City": true, "X_Forwarded_For": true, "_": true, "X-City": false, "Accept": false,
	} {
		assert.Equal(t, dropped, reqcheck.DropField(name), name)
	}
}

func TestAsteriskAllowed(t *testing.T) {
	assert.True(t, reqcheck.AsteriskAllowed("OPTIONS"))
	assert.True(t, reqcheck.AsteriskAllowed([]byte("OPTIONS")))
	for _, m := range []string{"GET", "options", "OPTIONSX", "", "POST"} {
		assert.False(t, reqcheck.AsteriskAllowed(m), m)
	}
}

// The rules allocate nothing on the request path.
func TestRulesDoNotAllocate(t *testing.T) {
	target, host, name := []byte("/app/v1/rides/../x?q=1"), []byte("movr.example.com:443"), []byte("X-Forwarded-For")
	allocs := testing.AllocsPerRun(100, func() {
		_ = reqcheck.DotSegments(target)
		_ = reqcheck.ValidHost(host)
		_ = reqcheck.DropField(name)
		_ = reqcheck.AsteriskAllowed(name)
	})
	assert.Zero(t, allocs)
}
