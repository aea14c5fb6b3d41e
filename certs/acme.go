package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// acmeKey holds the ACME settings that need a new certmagic
// configuration when they change.
type acmeKey struct {
	CA, CARoot, Email, Storage string
	HTTPAddr, TLSAddr          string
	Maintenance                acmeMaintenance
}

func acmeKeyOf(o Options) acmeKey {
	return acmeKey{
		CA: o.ACME.CA, CARoot: o.ACME.CARoot, Email: o.ACME.Email, Storage: o.ACME.Storage,
		HTTPAddr: o.HTTPAddr, TLSAddr: o.TLSAddr,
		Maintenance: o.maintenance,
	}
}

// acmeMaintenance changes when certmagic's maintenance checks and
// renews certificates, so that tests can renew certificates that are
// valid for seconds. The zero value keeps certmagic's schedule, which
// production uses: a check every 10 minutes, renewal once a third of
// the lifetime is left or earlier when the CA's renewal information
// (ARI) says so.
type acmeMaintenance struct {
	// renewCheckInterval is how often the certificates are checked
	// (certmagic.CacheOptions.RenewCheckInterval); 0: 10 minutes.
	// certmagic also renews at once when less than five intervals of
	// validity are left.
	renewCheckInterval time.Duration
	// renewalWindowRatio is the share of a certificate's lifetime left
	// when it is renewed (certmagic.Config.RenewalWindowRatio); 0: 1/3.
	renewalWindowRatio float64
}

// acmeManager is one certmagic configuration with a certificate cache
// of its own, so that Managers in one process share no certificates or
// maintenance.
type acmeManager struct {
	key           acmeKey
	cache         *certmagic.Cache
	cfg           *certmagic.Config
	issuer        *certmagic.ACMEIssuer
	httpChallenge bool
	tlsALPN       bool

	ctx      context.Context // cancelled by stop; ACME work runs under it
	cancel   context.CancelFunc
	stopOnce sync.Once
}

// newACMEManager sets up certmagic for o. Certificates are managed once
// the caller calls ManageAsync.
func newACMEManager(parent context.Context, o Options, log *zap.Logger) (*acmeManager, error) {
	a := o.ACME
	if a.Storage == "" {
		return nil, errors.New("certs: acme: storage directory is required")
	}
	if o.HTTPAddr == "" && o.TLSAddr == "" {
		return nil, errors.New("certs: acme: no challenge can be answered: give the plain listener's address (HTTP-01) or the TLS listener's (TLS-ALPN-01)")
	}
	tmpl := certmagic.ACMEIssuer{
		CA:                      a.CA,
		Email:                   a.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    o.HTTPAddr == "",
		DisableTLSALPNChallenge: o.TLSAddr == "",
		Logger:                  log,
	}
	if tmpl.CA == "" {
		tmpl.CA = certmagic.LetsEncryptProductionCA
	}
	// certmagic opens a challenge listener on ListenHost and the
	// alternate port unless that port is taken; pointing both challenges
	// at geoproxy's own bound listeners makes it use them instead.
	var httpHost, tlsHost string
	var err error
	if o.HTTPAddr != "" {
		if httpHost, tmpl.AltHTTPPort, err = boundAddr(o.HTTPAddr); err != nil {
			return nil, fmt.Errorf("certs: acme: plain listener address (HTTP-01): %w", err)
		}
	}
	if o.TLSAddr != "" {
		if tlsHost, tmpl.AltTLSALPNPort, err = boundAddr(o.TLSAddr); err != nil {
			return nil, fmt.Errorf("certs: acme: TLS listener address (TLS-ALPN-01): %w", err)
		}
	}
	switch {
	case o.HTTPAddr == "":
		tmpl.ListenHost = tlsHost
	case o.TLSAddr == "" || httpHost == tlsHost:
		tmpl.ListenHost = httpHost
	default:
		return nil, fmt.Errorf("certs: acme: the plain listener (%s) and the TLS listener (%s) must listen on the same host", o.HTTPAddr, o.TLSAddr)
	}
	if a.CARoot != "" {
		pem, err := os.ReadFile(a.CARoot)
		if err != nil {
			return nil, fmt.Errorf("certs: acme: reading CA root %s: %w", a.CARoot, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("certs: acme: CA root %s: no PEM certificate found", a.CARoot)
		}
		tmpl.TrustedRoots = pool
	}

	m := &acmeManager{
		key:           acmeKeyOf(o),
		httpChallenge: o.HTTPAddr != "",
		tlsALPN:       o.TLSAddr != "",
	}
	var cfgp atomic.Pointer[certmagic.Config]
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			if c := cfgp.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("certs: acme: configuration not ready")
		},
		RenewCheckInterval: o.maintenance.renewCheckInterval,
		Logger:             log,
	})
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: a.Storage},
		// A certificate is renewed at the time ACME Renewal Information
		// (ARI) from the CA suggests, or at the latest with
		// RenewalWindowRatio of its lifetime left: ARI can bring a
		// renewal forward, never put it off. ARI stays on (DisableARI
		// false): renewals name the certificate they replace, which
		// Let's Encrypt exempts from its rate limits.
		RenewalWindowRatio: o.maintenance.renewalWindowRatio,
		// OCSP stapling is on: responses are fetched for certificates
		// that name a responder, cached in Storage, and refreshed by
		// the cache's maintenance. Setting HTTPProxy makes certmagic
		// use a client with a 30 s timeout instead of
		// http.DefaultClient, which has none, so a silent responder
		// cannot hold up maintenance (and Close) forever.
		OCSP: certmagic.OCSPConfig{
			DisableStapling: false,
			HTTPProxy:       http.ProxyFromEnvironment,
		},
		Logger: log,
		// Not nil, so that certmagic does not make a default issuer.
		Issuers: []certmagic.Issuer{},
	})
	m.issuer = certmagic.NewACMEIssuer(m.cfg, tmpl)
	m.cfg.Issuers = []certmagic.Issuer{m.issuer}
	cfgp.Store(m.cfg)
	m.ctx, m.cancel = context.WithCancel(parent)
	return m, nil
}

// boundAddr splits a listener's address and checks that something
// listens there, so certmagic never binds the port itself.
func boundAddr(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err = strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%s: not a port number", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		_ = ln.Close()
		return "", 0, fmt.Errorf("nothing listens on %s; bind the listener first", addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return "", 0, fmt.Errorf("checking that %s is bound: %w", addr, err)
	}
	return host, port, nil
}

// certificate returns certmagic's certificate for name, or nil when it
// has none (yet).
func (m *acmeManager) certificate(hello *tls.ClientHelloInfo, name string) *tls.Certificate {
	h := hello
	if normalizeName(hello.ServerName) != name {
		c := *hello
		c.ServerName = name
		h = &c
	}
	c, err := m.cfg.GetCertificate(h)
	if err != nil || c == nil || len(c.Certificate) == 0 {
		return nil
	}
	return c
}

// stop cancels ACME work and ends the cache's maintenance.
func (m *acmeManager) stop() {
	m.stopOnce.Do(func() {
		m.cancel()
		m.cache.Stop()
	})
}
