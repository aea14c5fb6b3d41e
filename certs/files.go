package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
)

// loaded is a certificate pair read from its files.
type loaded struct {
	pair config.CertPair
	sum  [sha256.Size]byte // of the cert and key file contents
	cert *tls.Certificate
}

// table indexes the loaded pairs by the names and addresses they are
// valid for. It is never modified once built.
type table struct {
	pairs    []*loaded // in configuration order; the first is the default
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // "*.example.com" under "example.com"
	ips      map[netip.Addr]*tls.Certificate
}

// loadTable reads every pair; the first error is returned.
func loadTable(pairs []config.CertPair, log *zap.Logger) (*table, error) {
	list := make([]*loaded, 0, len(pairs))
	for _, p := range pairs {
		l, err := loadPair(p, nil)
		if err != nil {
			return nil, err
		}
		warnExpired(l, log)
		list = append(list, l)
	}
	return buildTable(list), nil
}

// loadPair reads the files of p. When prev holds the same file contents
// it is returned as is.
func loadPair(p config.CertPair, prev *loaded) (*loaded, error) {
	certPEM, err := os.ReadFile(p.Cert)
	if err != nil {
		return nil, fmt.Errorf("certs: reading certificate %s: %w", p.Cert, err)
	}
	keyPEM, err := os.ReadFile(p.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: reading key %s: %w", p.Key, err)
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if prev != nil && prev.sum == sum {
		return prev, nil
	}

	chain, err := parseChain(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: certificate %s: %w", p.Cert, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: key %s for certificate %s: %w", p.Key, p.Cert, err)
	}
	cert.Leaf = chain[0]
	return &loaded{pair: p, sum: sum, cert: &cert}, nil
}

// parseChain parses the CERTIFICATE blocks of a PEM file.
func parseChain(data []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return chain, nil
}

func warnExpired(l *loaded, log *zap.Logger) {
	if leaf := l.cert.Leaf; time.Now().After(leaf.NotAfter) {
		log.Warn("certs: certificate has expired",
			zap.String("cert", l.pair.Cert), zap.Time("not_after", leaf.NotAfter))
	}
}

// buildTable indexes list. When several certificates claim a name, the
// earliest in the list wins.
func buildTable(list []*loaded) *table {
	t := &table{
		pairs:    list,
		exact:    make(map[string]*tls.Certificate),
		wildcard: make(map[string]*tls.Certificate),
		ips:      make(map[netip.Addr]*tls.Certificate),
	}
	add := func(m map[string]*tls.Certificate, k string, c *tls.Certificate) {
		if _, ok := m[k]; !ok {
			m[k] = c
		}
	}
	for _, l := range list {
		for _, name := range l.cert.Leaf.DNSNames {
			name = normalizeName(name)
			if parent, ok := strings.CutPrefix(name, "*."); ok {
				add(t.wildcard, parent, l.cert)
			} else {
				add(t.exact, name, l.cert)
			}
		}
		for _, ip := range l.cert.Leaf.IPAddresses {
			if a, ok := netip.AddrFromSlice(ip); ok {
				if _, dup := t.ips[a.Unmap()]; !dup {
					t.ips[a.Unmap()] = l.cert
				}
			}
		}
	}
	return t
}

func (t *table) empty() bool { return t == nil || len(t.pairs) == 0 }

// lookup returns the certificate for a normalized server name: an exact
// DNS name, then a wildcard for the name's parent, or for an IP address
// (as SNI, or the address the client connected to when it sent no SNI)
// a certificate with that IP. Otherwise it returns the default, or nil
// when there are no files.
func (t *table) lookup(name string, conn net.Conn) *tls.Certificate {
	if t.empty() {
		return nil
	}
	switch {
	case name == "":
		if conn != nil {
			if a, ok := conn.LocalAddr().(*net.TCPAddr); ok {
				if c := t.ips[a.AddrPort().Addr().Unmap()]; c != nil {
					return c
				}
			}
		}
	default:
		if ip, err := netip.ParseAddr(name); err == nil {
			if c := t.ips[ip.Unmap()]; c != nil {
				return c
			}
			break
		}
		if c := t.exact[name]; c != nil {
			return c
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if c := t.wildcard[name[i+1:]]; c != nil {
				return c
			}
		}
	}
	return t.pairs[0].cert
}
