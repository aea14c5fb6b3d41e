package clientip

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestResolve(t *testing.T) {
	r := NewResolver([]netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("10.0.0.0/8"),
	})
	cases := []struct {
		name      string
		peer      string
		forwarded []string
		xff       []string
		want      string
	}{
		{"untrusted peer, no header", "203.0.113.9", nil, nil, "203.0.113.9"},
		{"untrusted peer's XFF is ignored", "203.0.113.9", nil, []string{"81.2.69.142"}, "203.0.113.9"},
		{"untrusted peer's Forwarded is ignored", "203.0.113.9", []string{"for=81.2.69.142"}, nil, "203.0.113.9"},
		{"trusted peer, no header", "127.0.0.1", nil, nil, "127.0.0.1"},
		{"trusted peer, XFF single", "127.0.0.1", nil, []string{"81.2.69.142"}, "81.2.69.142"},
		{"rightmost untrusted wins over spoofed left", "127.0.0.1", nil, []string{"1.1.1.1, 81.2.69.142"}, "81.2.69.142"},
		{"trusted hops are skipped", "127.0.0.1", nil, []string{"81.2.69.142, 10.1.2.3, 10.0.0.1"}, "81.2.69.142"},
		{"several header lines read right to left", "127.0.0.1", nil, []string{"81.2.69.142", "10.1.2.3"}, "81.2.69.142"},
		{"all hops trusted gives leftmost", "127.0.0.1", nil, []string{"10.9.9.9, 10.1.1.1"}, "10.9.9.9"},
		{"port in XFF", "127.0.0.1", nil, []string{"81.2.69.142:5555"}, "81.2.69.142"},
		{"bracketed IPv6 with port", "127.0.0.1", nil, []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"bracketed IPv6", "127.0.0.1", nil, []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"IPv6 peer trusted", "::1", nil, []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv4-mapped peer is trusted", "::ffff:127.0.0.1", nil, []string{"81.2.69.142"}, "81.2.69.142"},
		{"malformed entry stops at the last trusted hop", "127.0.0.1", nil, []string{"81.2.69.142, garbage, 10.0.0.5"}, "10.0.0.5"},
		{"malformed header gives the peer", "127.0.0.1", nil, []string{"not an ip"}, "127.0.0.1"},
		{"empty entries are skipped", "127.0.0.1", nil, []string{" , 81.2.69.142, "}, "81.2.69.142"},
		{"Forwarded for=", "127.0.0.1", []string{"for=81.2.69.142;proto=https"}, nil, "81.2.69.142"},
		{"Forwarded quoted IPv6 with port", "127.0.0.1", []string{`for="[2001:db8:cafe::17]:4711"`}, nil, "2001:db8:cafe::17"},
		{"Forwarded wins over XFF", "127.0.0.1", []string{"for=81.2.69.142"}, []string{"1.1.1.1"}, "81.2.69.142"},
		{"Forwarded list, rightmost untrusted", "127.0.0.1", []string{"for=1.1.1.1, for=81.2.69.142;by=10.0.0.1, for=10.0.0.2"}, nil, "81.2.69.142"},
		{"Forwarded unknown stops", "127.0.0.1", []string{"for=unknown"}, nil, "127.0.0.1"},
		{"Forwarded obfuscated stops", "127.0.0.1", []string{"for=_hidden, for=10.0.0.3"}, nil, "10.0.0.3"},
		{"Forwarded without for stops", "127.0.0.1", []string{"proto=https"}, nil, "127.0.0.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := r.Resolve(netip.MustParseAddr(c.peer), c.forwarded, c.xff)
			assert.Equal(t, netip.MustParseAddr(c.want), got)
		})
	}
}

func TestZeroResolverTrustsNobody(t *testing.T) {
	var r Resolver
	got := r.Resolve(netip.MustParseAddr("127.0.0.1"), nil, []string{"81.2.69.142"})
	assert.Equal(t, netip.MustParseAddr("127.0.0.1"), got)
}

func TestResolveDoesNotAllocate(t *testing.T) {
	r := NewResolver([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	peer := netip.MustParseAddr("127.0.0.1")
	xff := []string{"1.1.1.1, 81.2.69.142, 127.0.0.2"}
	allocs := testing.AllocsPerRun(100, func() { r.Resolve(peer, nil, xff) })
	assert.Zero(t, allocs)
}

func FuzzResolve(f *testing.F) {
	f.Add("for=81.2.69.142", "1.1.1.1, 2001:db8::1")
	f.Add(`for="[::1]:80";by=x`, "[::1")
	r := NewResolver([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")})
	peer := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, fwd, xff string) {
		got := r.Resolve(peer, nil, []string{xff})
		if !got.IsValid() {
			t.Fatalf("invalid address for XFF %q", xff)
		}
		got = r.Resolve(peer, []string{fwd}, nil)
		if !got.IsValid() {
			t.Fatalf("invalid address for Forwarded %q", fwd)
		}
	})
}

func BenchmarkResolve(b *testing.B) {
	r := NewResolver([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	peer := netip.MustParseAddr("127.0.0.1")
	xff := []string{"81.2.69.142"}
	b.ReportAllocs()
	for b.Loop() {
		r.Resolve(peer, nil, xff)
	}
}
