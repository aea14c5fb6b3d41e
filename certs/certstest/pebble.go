// Package certstest runs Let's Encrypt's Pebble, an ACME certificate
// authority, inside a test process, with the DNS server and OCSP
// responder it needs, for tests of ACME certificates on loopback.
//
// Only tests import it.
package certstest

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/acme"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ocsp"
)

// Challenge types, as ValidatedBy returns them.
const (
	// ChallengeHTTP01 is the HTTP-01 challenge, answered over plain HTTP.
	ChallengeHTTP01 = acme.ChallengeHTTP01
	// ChallengeTLSALPN01 is the TLS-ALPN-01 challenge, answered by a TLS
	// handshake negotiating acme-tls/1.
	ChallengeTLSALPN01 = acme.ChallengeTLSALPN01
)

// PortsWait bounds how long an ACME request waits for SetChallengePorts
// before it is answered 503.
const PortsWait = 20 * time.Second

// MinCertValidity is the shortest Options.CertValidity: below it, the
// renewal window Pebble suggests through ACME Renewal Information (from
// issuance to expiry, in whole seconds) is too short for ACME clients to
// accept.
const MinCertValidity = 3 * time.Second

// Options configure StartPebble.
type Options struct {
	// Log receives Pebble's log; nil discards it.
	Log *log.Logger
	// CertValidity is how long the certificates Pebble issues are valid,
	// a whole number of seconds and at least MinCertValidity; 0 means
	// Pebble's default of 90 days. A certificate's NotAfter is its
	// NotBefore (the time of issuance) plus CertValidity less one second.
	CertValidity time.Duration
}

// Pebble is a Pebble ACME CA running in the test process, whose VA finds
// every DNS name at 127.0.0.1.
type Pebble struct {
	// DirectoryURL is the ACME directory, served over HTTPS.
	DirectoryURL string
	// HTTPSRoot is a PEM file holding the certificate DirectoryURL is
	// served with, to trust as the CA's root (tls.acme.ca_root).
	HTTPSRoot string
	// Roots holds the root of the certificates Pebble issues.
	Roots *x509.CertPool
	// Issuer signs the certificates Pebble issues and the OCSP responses.
	Issuer *x509.Certificate

	t         testing.TB
	log       *log.Logger
	store     *db.MemoryStore
	authority *ca.CAImpl
	dnsAddr   string
	srv       *httptest.Server // ACME
	ocsp      *httptest.Server
	dns       *dns.Server
	dnsDone   chan struct{}
	refuser   *refuser

	portsSet  bool          // SetChallengePorts was called (test goroutine only)
	ready     chan struct{} // closed once front and validator are set
	closing   chan struct{} // closed by Close
	front     http.Handler
	validator *va.VAImpl
	closeOnce sync.Once

	ocspRequests atomic.Int32
}

// StartPebble starts Pebble's CA, its DNS server and an OCSP responder
// signing "good" answers, until the test ends, with ACME requests
// waiting for SetChallengePorts and Pebble's environment set for the
// whole test (validate at once, reject no nonce, reuse no
// authorization), so t and its parents must not be parallel.
func StartPebble(t testing.TB, o Options) *Pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	if v := o.CertValidity; v != 0 && (v < MinCertValidity || v%time.Second != 0) {
		t.Fatalf("certstest: CertValidity %v: must be a whole number of seconds, at least %v", v, MinCertValidity)
	}
	p := &Pebble{
		t:       t,
		log:     o.Log,
		store:   db.NewMemoryStore(),
		ready:   make(chan struct{}),
		closing: make(chan struct{}),
	}
	if p.log == nil {
		p.log = log.New(io.Discard, "", 0)
	}
	quiet := log.New(io.Discard, "", 0)
	t.Cleanup(p.Close)

	p.startDNS()
	p.refuser = startRefuser(t)

	ocspLn := listen(t)
	p.authority = ca.New(p.log, p.store, "http://"+ocspLn.Addr().String()+"/", "rsa", 0, 1,
		map[string]ca.Profile{"default": {
			Description:    "default profile",
			ValidityPeriod: uint64(o.CertValidity / time.Second), // 0: Pebble's default
		}})
	p.Roots = x509.NewCertPool()
	p.Roots.AddCert(p.authority.GetRootCert(0).Cert)
	p.Issuer = p.authority.GetIntermediateCert(0).Cert
	issuerKey := p.authority.GetIntermediateKey(0)
	if issuerKey == nil {
		_ = ocspLn.Close()
		t.Fatal("certstest: Pebble has no intermediate key")
	}

	p.ocsp = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.ocspRequests.Add(1)
		p.answerOCSP(w, r, issuerKey)
	}))
	_ = p.ocsp.Listener.Close()
	p.ocsp.Listener = ocspLn
	p.ocsp.Config.ErrorLog = quiet
	p.ocsp.Start()

	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serveACME))
	p.srv.Config.ErrorLog = quiet
	p.srv.StartTLS()
	p.DirectoryURL = p.srv.URL + wfe.DirectoryPath

	p.HTTPSRoot = filepath.Join(t.TempDir(), "pebble-https-root.pem")
	root := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(p.HTTPSRoot, root, 0o600); err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return p
}

// SetChallengePorts, called once from the test's goroutine (typically
// when the server under test has bound its listeners), makes Pebble's VA
// validate HTTP-01 challenges on httpPort and TLS-ALPN-01 challenges on
// tlsPort of 127.0.0.1, a port of 0 making that challenge fail at once
// (a listener of the harness closes its connections on accept).
func (p *Pebble) SetChallengePorts(httpPort, tlsPort int) {
	p.t.Helper()
	if p.portsSet {
		p.t.Fatal("certstest: SetChallengePorts called twice")
	}
	p.portsSet = true
	if httpPort <= 0 {
		httpPort = p.refuser.port
	}
	if tlsPort <= 0 {
		tlsPort = p.refuser.port
	}
	p.validator = va.New(p.log, httpPort, tlsPort, false, p.dnsAddr, p.store)
	front := wfe.New(p.log, p.store, p.validator, p.authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	p.front = front.Handler()
	close(p.ready)
}

// serveACME passes ACME requests to Pebble's WFE once it exists.
func (p *Pebble) serveACME(w http.ResponseWriter, r *http.Request) {
	wait := time.NewTimer(PortsWait)
	defer wait.Stop()
	select {
	case <-p.ready:
		p.front.ServeHTTP(w, r)
	case <-p.closing:
		http.Error(w, "certstest: Pebble is closed", http.StatusServiceUnavailable)
	case <-r.Context().Done():
	case <-wait.C:
		http.Error(w, "certstest: SetChallengePorts was not called", http.StatusServiceUnavailable)
	}
}

// ValidatedBy returns the types of the challenges (ChallengeHTTP01,
// ChallengeTLSALPN01) whose validation made Pebble issue cert, or nil
// until Pebble has recorded its order, just after issuing it.
func (p *Pebble) ValidatedBy(cert *x509.Certificate) []string {
	order, err := p.store.GetOrderByIssuedSerial(hex.EncodeToString(cert.SerialNumber.Bytes()))
	if err != nil {
		return nil
	}
	order.RLock()
	authzs := order.AuthorizationObjects
	order.RUnlock()
	var types []string
	for _, authz := range authzs {
		authz.RLock()
		chals := authz.Challenges
		authz.RUnlock()
		for _, c := range chals {
			c.RLock()
			if c.Status == acme.StatusValid {
				types = append(types, c.Type)
			}
			c.RUnlock()
		}
	}
	return types
}

// Replaced reports whether cert, which Pebble issued, has been replaced:
// a later order naming cert in its "replaces" field, as a client renewing
// with ACME Renewal Information (RFC 9773) sends, was completed. It is
// false until Pebble has recorded that order, just after issuing its
// certificate.
func (p *Pebble) Replaced(cert *x509.Certificate) bool {
	order, err := p.store.GetOrderByIssuedSerial(hex.EncodeToString(cert.SerialNumber.Bytes()))
	if err != nil {
		return false
	}
	order.RLock()
	defer order.RUnlock()
	return order.IsReplaced
}

// OCSPRequests returns how many requests the OCSP responder has had.
func (p *Pebble) OCSPRequests() int { return int(p.ocspRequests.Load()) }

// Close, called when the test ends or before (after the ACME clients of
// DirectoryURL have stopped), stops the CA, the OCSP responder and the
// DNS server (see LeakOptions for what outlives it).
func (p *Pebble) Close() {
	p.closeOnce.Do(func() {
		close(p.closing)
		if p.srv != nil {
			p.srv.Close() // waits for the WFE's handlers: no task is queued after
		}
		if p.ocsp != nil {
			p.ocsp.Close()
		}
		if p.refuser != nil {
			p.refuser.close()
		}
		if p.dns != nil {
			_ = p.dns.Shutdown()
			<-p.dnsDone
		}
	})
}

// LeakOptions are the goleak options for the goroutines that Pebble and
// certmagic keep for the life of the process by design, for tests that
// check that nothing else is left: Pebble's validation task loop (one per
// Pebble started), certmagic's rate limiters (one per CA directory and
// account) and its refreshers of released lock files (which end up to 5 s
// later).
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	}
}

// answerOCSP signs a "good" answer for the serial number asked about,
// valid for an hour or until the certificate expires if sooner.
func (p *Pebble) answerOCSP(w http.ResponseWriter, r *http.Request, key crypto.Signer) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := ocsp.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	next := now.Add(time.Hour)
	// An answer is not valid past the certificate it is about (certmagic
	// staples no such answer).
	if c := p.store.GetCertificateBySerial(req.SerialNumber); c != nil && c.Cert.NotAfter.Before(next) {
		next = c.Cert.NotAfter
	}
	resp, err := ocsp.CreateResponse(p.Issuer, p.Issuer, ocsp.Response{
		Status:       ocsp.Good,
		SerialNumber: req.SerialNumber,
		ThisUpdate:   now.Add(-time.Minute),
		NextUpdate:   next,
	}, key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(resp)
}

// startDNS answers A queries for every name with 127.0.0.1 over TCP,
// which is how Pebble's VA asks a custom resolver.
func (p *Pebble) startDNS() {
	ln := listen(p.t)
	p.dnsAddr = ln.Addr().String()
	p.dns = &dns.Server{
		Listener: ln,
		Net:      "tcp",
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			for _, q := range r.Question {
				if q.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
						A:   net.IPv4(127, 0, 0, 1),
					})
				}
			}
			_ = w.WriteMsg(m)
		}),
	}
	started := make(chan struct{})
	p.dns.NotifyStartedFunc = func() { close(started) }
	p.dnsDone = make(chan struct{})
	go func() {
		defer close(p.dnsDone)
		_ = p.dns.ActivateAndServe()
	}()
	select {
	case <-started:
	case <-p.dnsDone:
		p.dns = nil
		p.t.Fatal("certstest: the DNS server did not start")
	}
}

// refuser accepts connections and closes them at once: a port where a
// challenge fails without waiting.
type refuser struct {
	ln   net.Listener
	port int
	done chan struct{}
}

func startRefuser(t testing.TB) *refuser {
	ln := listen(t)
	r := &refuser{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return r
}

func (r *refuser) close() {
	_ = r.ln.Close()
	<-r.done
}

// listen binds a TCP listener on the loopback interface.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return ln
}
