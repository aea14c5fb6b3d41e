// Package certs provides the TLS certificates of geoproxy's proxy
// listener: certificate files chosen by the name the client asks for
// (SNI) and read again when they change on disk, and certificates
// obtained and renewed from an ACME certificate authority through
// certmagic.
//
// A handshake reads one immutable table through an atomic pointer and
// takes no lock; reloads and Update build a new table and swap it in, so
// connections already open keep the certificate they started with and
// new handshakes get the new one.
package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
)

// Options say where certificates come from and how the TLS listener
// speaks.
type Options struct {
	// Pairs are certificate and key files, chosen by SNI; the first is
	// the default, served when the client sends no server name or one no
	// certificate matches.
	Pairs []config.CertPair
	// ACME obtains and renews certificates for ACME.Domains; no domains
	// turns it off. Turning it on agrees to the CA's terms of service.
	// Until ACME has a certificate for a name, the name is served from
	// the files like any other.
	ACME config.ACME
	// MinVersion is the oldest TLS version accepted, tls.VersionTLS12 or
	// tls.VersionTLS13; 0 means tls.VersionTLS12. Together with the
	// Mozilla "intermediate" cipher suites for TLS 1.2.
	MinVersion uint16
	// HTTPAddr is the address geoproxy's plain listener is bound to (its
	// net.Listener's Addr), which answers HTTP-01 challenges through
	// HTTPChallenge; "" turns HTTP-01 off. The listener must be bound
	// before New or Update: certmagic then finds the port taken and never
	// opens a listener of its own.
	HTTPAddr string
	// TLSAddr is the address the TLS listener serving TLSConfig is bound
	// to, which answers TLS-ALPN-01 challenges; "" turns TLS-ALPN-01 off.
	// The same rule as for HTTPAddr applies.
	TLSAddr string
	// Log receives reload errors and ACME progress; nil discards them.
	// Update keeps the logger given to New.
	Log *zap.Logger
	// OnHandshakeError, if set, is called with a short reason when a
	// handshake gets no certificate: "no_certificate", or
	// "acme_challenge" for a TLS-ALPN-01 challenge that cannot be
	// answered. It runs on the handshake path and must be fast. Update
	// keeps the function given to New.
	OnHandshakeError func(reason string)

	// maintenance changes when ACME certificates are checked and
	// renewed; only tests set it.
	maintenance acmeMaintenance
}

// Handshake error reasons passed to Options.OnHandshakeError.
const (
	// ReasonNoCertificate means no certificate matched and there is no
	// default to serve.
	ReasonNoCertificate = "no_certificate"
	// ReasonACMEChallenge means a TLS-ALPN-01 challenge handshake found
	// no challenge in progress for its name.
	ReasonACMEChallenge = "acme_challenge"
)

// acmeTLS1 is the ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
const acmeTLS1 = "acme-tls/1"

// cipherSuites returns the TLS 1.2 suites of Mozilla's "intermediate"
// configuration that Go implements: ECDHE key exchange with AES-GCM or
// ChaCha20-Poly1305. TLS 1.3 suites are not configurable in Go and are
// all modern.
func cipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// Manager serves the certificates of the TLS listener and keeps them
// current.
type Manager struct {
	log     *zap.Logger
	onError func(reason string)
	state   atomic.Pointer[state]
	shared  atomic.Pointer[sharedConfig] // see TLSConfig

	// ctx ends when the Manager is closed; ACME work and the watcher
	// stop with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu serializes Update, file reloads and Close. The handshake path
	// does not take it.
	mu      sync.Mutex
	closed  bool
	watcher *fileWatcher
}

// state is what handshakes read. It is never modified once published.
type state struct {
	files   *table
	acme    *acmeManager // nil when ACME is off
	domains []string     // ACME domains, normalized; first is the default

	minVersion uint16
}

// isDomain reports whether name is one of the ACME domains.
func (s *state) isDomain(name string) bool {
	return name != "" && slices.Contains(s.domains, name)
}

// New loads the certificate files, starts watching them and, when
// ACME.Domains is set, starts managing ACME certificates in the
// background. Errors name the file or setting at fault.
func New(o Options) (*Manager, error) {
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{log: log, onError: o.OnHandshakeError, ctx: ctx, cancel: cancel}
	m.watcher = newFileWatcher(log)
	m.mu.Lock()
	err := m.apply(o)
	m.mu.Unlock()
	if err != nil {
		cancel()
		m.watcher.close()
		return nil, err
	}
	m.wg.Add(1)
	go m.watch()
	return m, nil
}

// TLSConfig returns a new server configuration for the TLS listener
// with the current settings: minimum version, cipher suites and ALPN
// protocols. Its GetCertificate picks the certificate at each handshake
// from the current certificates, so reloads need no new configuration;
// after Update changes the settings, call TLSConfig again (geoproxy's
// server calls it for every connection). It is the same configuration
// while the settings hold, so that TLS sessions resume across
// connections: the caller must not modify it (Clone it first).
func (m *Manager) TLSConfig() *tls.Config {
	st := m.state.Load()
	key := configKey{minVersion: st.minVersion, alpnChallenge: st.acme != nil && st.acme.tlsALPN}
	if c := m.shared.Load(); c != nil && c.key == key {
		return c.cfg
	}
	c := &sharedConfig{key: key, cfg: m.serverConfig(key.minVersion, key.alpnChallenge)}
	m.shared.Store(c)
	return c.cfg
}

// configKey is what a server configuration is built from.
type configKey struct {
	minVersion    uint16
	alpnChallenge bool
}

// sharedConfig is the server configuration TLSConfig gives every
// connection while its settings hold: one configuration, so that the
// session tickets it issues (its own keys) resume on the next connection.
type sharedConfig struct {
	key configKey
	cfg *tls.Config
}

// serverConfig builds a server configuration.
func (m *Manager) serverConfig(minVersion uint16, alpnChallenge bool) *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if alpnChallenge {
		protos = append(protos, acmeTLS1)
	}
	return &tls.Config{
		MinVersion:     minVersion,
		CipherSuites:   cipherSuites(),
		NextProtos:     protos,
		GetCertificate: m.getCertificate,
	}
}

// getCertificate picks the certificate of a handshake: a TLS-ALPN-01
// challenge certificate, ACME's certificate for an ACME domain, then
// the files by SNI, then the default.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	st := m.state.Load()
	if a := st.acme; a != nil && a.tlsALPN && isALPNChallenge(hello) {
		c, err := a.cfg.GetCertificate(hello)
		if err != nil {
			m.report(ReasonACMEChallenge)
			return nil, fmt.Errorf("certs: tls-alpn-01 challenge for %q: %w", hello.ServerName, err)
		}
		return c, nil
	}
	name := normalizeName(hello.ServerName)
	if st.acme != nil {
		acmeName := name
		if !st.isDomain(acmeName) && st.files.empty() {
			// Without files the first ACME domain is the default.
			acmeName = st.domains[0]
		}
		if st.isDomain(acmeName) {
			if c := st.acme.certificate(hello, acmeName); c != nil {
				return c, nil
			}
		}
	}
	if c := st.files.lookup(name, hello.Conn); c != nil {
		return c, nil
	}
	m.report(ReasonNoCertificate)
	return nil, fmt.Errorf("certs: no certificate for server name %q", hello.ServerName)
}

func (m *Manager) report(reason string) {
	if m.onError != nil {
		m.onError(reason)
	}
}

// isALPNChallenge reports whether hello is a TLS-ALPN-01 validation: a
// server name and acme-tls/1 as the only protocol (RFC 8737).
func isALPNChallenge(hello *tls.ClientHelloInfo) bool {
	return hello.ServerName != "" && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLS1
}

// HTTPChallenge returns a handler that answers the ACME HTTP-01
// challenges of this Manager (/.well-known/acme-challenge/...) and
// passes every other request to next.
func (m *Manager) HTTPChallenge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := m.challengeACME(r); a != nil && a.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// IsChallenge reports whether r is an HTTP-01 challenge request for one
// of this Manager's ACME domains, which HTTPChallenge answers.
func (m *Manager) IsChallenge(r *http.Request) bool {
	return m.challengeACME(r) != nil
}

// challengeACME returns the ACME manager that answers r, or nil when r
// is not an HTTP-01 challenge for one of the ACME domains.
func (m *Manager) challengeACME(r *http.Request) *acmeManager {
	st := m.state.Load()
	if st.acme == nil || !st.acme.httpChallenge || !certmagic.LooksLikeHTTPChallenge(r) {
		return nil
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !st.isDomain(normalizeName(host)) {
		return nil
	}
	return st.acme
}

// Update applies a new configuration: certificate files are read again
// (also those whose paths did not change) and ACME follows the new
// settings. On error nothing changes and the error names the file or
// setting at fault.
func (m *Manager) Update(o Options) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("certs: update: manager is closed")
	}
	return m.apply(o)
}

// Close stops watching the files and stops ACME management and
// maintenance. Handshakes still get the certificates last loaded.
// In-flight ACME requests are cancelled and end shortly after Close
// returns.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	st := m.state.Load()
	m.mu.Unlock()

	m.cancel()
	m.watcher.close()
	m.wg.Wait()
	if st.acme != nil {
		st.acme.stop()
	}
}

// apply validates o, loads its files and switches to it. m.mu is held.
func (m *Manager) apply(o Options) error {
	o, err := normalize(o)
	if err != nil {
		return err
	}
	files, err := loadTable(o.Pairs, m.log)
	if err != nil {
		return err
	}
	old := m.state.Load()
	var oldACME *acmeManager
	var oldDomains []string
	if old != nil {
		oldACME, oldDomains = old.acme, old.domains
	}

	var a *acmeManager
	var added []string
	if o.ACME.Enabled() {
		key := acmeKeyOf(o)
		// A running ACME manager is kept when only domains were added:
		// its certificates stay in memory. Anything else starts anew.
		if oldACME != nil && oldACME.key == key && containsAll(o.ACME.Domains, oldDomains) {
			a = oldACME
			for _, d := range o.ACME.Domains {
				if !slices.Contains(oldDomains, d) {
					added = append(added, d)
				}
			}
		} else {
			if a, err = newACMEManager(m.ctx, o, m.log.Named("acme")); err != nil {
				return err
			}
			added = o.ACME.Domains
		}
	}

	st := &state{files: files, acme: a, minVersion: o.MinVersion}
	if a != nil {
		st.domains = o.ACME.Domains
	}
	if len(added) > 0 {
		if err := a.cfg.ManageAsync(a.ctx, added); err != nil {
			if a != oldACME {
				a.stop()
			}
			return fmt.Errorf("certs: acme: managing %s: %w", strings.Join(added, ", "), err)
		}
	}
	m.state.Store(st)
	if oldACME != nil && oldACME != a {
		oldACME.stop()
	}
	m.watcher.sync(files)
	return nil
}

// normalize checks o and fills in defaults.
func normalize(o Options) (Options, error) {
	switch o.MinVersion {
	case 0:
		o.MinVersion = tls.VersionTLS12
	case tls.VersionTLS12, tls.VersionTLS13:
	default:
		return o, fmt.Errorf("certs: min version %#04x: must be TLS 1.2 or 1.3", o.MinVersion)
	}
	o.Pairs = slices.Clone(o.Pairs)
	for i, p := range o.Pairs {
		if p.Cert == "" || p.Key == "" {
			return o, fmt.Errorf("certs: certificate %d: both cert and key files are required", i+1)
		}
	}
	var domains []string
	for _, d := range o.ACME.Domains {
		n := normalizeName(d)
		if n == "" {
			return o, fmt.Errorf("certs: acme: empty domain name")
		}
		if !slices.Contains(domains, n) {
			domains = append(domains, n)
		}
	}
	o.ACME.Domains = domains
	if len(o.Pairs) == 0 && !o.ACME.Enabled() {
		return o, fmt.Errorf("certs: no certificates: give certificate files or acme domains")
	}
	return o, nil
}

// normalizeName lowercases a DNS name and drops a trailing dot.
func normalizeName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// containsAll reports whether every element of sub is in set.
func containsAll(set, sub []string) bool {
	for _, s := range sub {
		if !slices.Contains(set, s) {
			return false
		}
	}
	return true
}
