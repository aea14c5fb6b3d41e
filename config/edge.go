package config

import (
	"crypto/tls"
	"net/url"
	"time"
)

// TLS configures TLS termination on the proxy (key "tls").
type TLS struct {
	// Listen is the host:port of the TLS listener (key "tls.listen").
	// Default "": no TLS listener. When set, certificates or acme.domains
	// (or both) are required.
	Listen string
	// Certificates are PEM certificate chains and keys read from files
	// (key "tls.certificates", each {cert, key}), chosen by the name the
	// client asks for (SNI); the first is the default. Changed files are
	// read again while geoproxy runs. Default none.
	Certificates []CertPair
	// ACME obtains and renews certificates automatically (key
	// "tls.acme"). Default off.
	ACME ACME
	// RedirectHTTP makes the plain listener (key "listen") answer every
	// request with 308 to https, except ACME HTTP-01 challenges (key
	// "tls.redirect_http"). Default false: it proxies as usual.
	RedirectHTTP bool
	// RedirectPort is the port redirects name (key "tls.redirect_port"),
	// for when clients reach the TLS listener on another port than it
	// listens on (a container's 8443 published as 443). Default 0: the
	// TLS listener's port; 443 is left out of the URL.
	RedirectPort int
	// MinVersion is the oldest TLS version accepted (key
	// "tls.min_version", "1.2" or "1.3"). Default "1.2".
	MinVersion uint16
}

// Enabled reports whether a TLS listener is configured.
func (t TLS) Enabled() bool { return t.Listen != "" }

// CertPair is a certificate chain file and its key file.
type CertPair struct {
	// Cert is a PEM file: the certificate, then its intermediates (key
	// "cert"). Required.
	Cert string
	// Key is the PEM private key of the certificate (key "key").
	// Required.
	Key string
}

// ACME configures automatic certificates from an ACME certificate
// authority such as Let's Encrypt.
type ACME struct {
	// Domains are the names certificates are obtained for (key
	// "tls.acme.domains"). Default none: ACME off.
	Domains []string
	// Email is the contact address given to the CA (key "tls.acme.email").
	// Default "".
	Email string
	// CA is the directory URL of the CA (key "tls.acme.ca"). Default "":
	// Let's Encrypt's production directory.
	CA string
	// CARoot is a PEM file of roots to trust the CA's own HTTPS
	// certificate by, for a private CA (key "tls.acme.ca_root"). Default
	// "": the system's roots.
	CARoot string
	// Storage is the directory where accounts, certificates and keys are
	// kept across restarts (key "tls.acme.storage"). Default
	// "/var/lib/geoproxy/acme".
	Storage string
}

// Enabled reports whether ACME is configured.
func (a ACME) Enabled() bool { return len(a.Domains) > 0 }

const defaultACMEStorage = "/var/lib/geoproxy/acme"

type rawTLS struct {
	Listen       scalar                  `yaml:"listen"`
	Certificates opt[[]opt[rawCertPair]] `yaml:"certificates"`
	ACME         opt[rawACME]            `yaml:"acme"`
	RedirectHTTP scalar                  `yaml:"redirect_http"`
	RedirectPort scalar                  `yaml:"redirect_port"`
	MinVersion   scalar                  `yaml:"min_version"`
}

type rawCertPair struct {
	Cert scalar `yaml:"cert"`
	Key  scalar `yaml:"key"`
}

type rawACME struct {
	Domains opt[[]scalar] `yaml:"domains"`
	Email   scalar        `yaml:"email"`
	CA      scalar        `yaml:"ca"`
	CARoot  scalar        `yaml:"ca_root"`
	Storage scalar        `yaml:"storage"`
}

func (c *checker) tls(p fieldPath, o opt[rawTLS]) TLS {
	raw, _ := composite(c, p, o)
	t := TLS{
		Listen:       c.str(p.key("listen"), raw.Listen, ""),
		RedirectHTTP: c.bool(p.key("redirect_http"), raw.RedirectHTTP, false),
		RedirectPort: c.int(p.key("redirect_port"), raw.RedirectPort, 0),
	}
	if t.RedirectPort < 0 || t.RedirectPort > 65535 {
		c.errorf(p.key("redirect_port"), "must be 1 to 65535 (or 0: the TLS listener's), got %d", t.RedirectPort)
	}
	switch v := c.str(p.key("min_version"), raw.MinVersion, "1.2"); v {
	case "1.2":
		t.MinVersion = tls.VersionTLS12
	case "1.3":
		t.MinVersion = tls.VersionTLS13
	default:
		c.errorf(p.key("min_version"), `must be "1.2" or "1.3", got %q`, v)
	}
	cp := p.key("certificates")
	if list, ok := composite(c, cp, raw.Certificates); ok {
		for i, o := range list {
			ip := cp.idx(i)
			pair, ok := composite(c, ip, o)
			if !ok {
				if !o.wrong {
					c.errorf(ip, "expected a mapping {cert, key}")
				}
				continue
			}
			cert := c.str(ip.key("cert"), pair.Cert, "")
			key := c.str(ip.key("key"), pair.Key, "")
			switch {
			case cert == "":
				c.errorf(ip.key("cert"), "required: the PEM certificate file")
			case key == "":
				c.errorf(ip.key("key"), "required: the PEM key file")
			default:
				if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
					c.errorf(ip, "cannot use the certificate: %v", err)
				}
				t.Certificates = append(t.Certificates, CertPair{Cert: cert, Key: key})
			}
		}
	}
	ap := p.key("acme")
	if acme, ok := composite(c, ap, raw.ACME); ok {
		domains, _ := c.strings(ap.key("domains"), acme.Domains)
		t.ACME = ACME{
			Domains: domains,
			Email:   c.str(ap.key("email"), acme.Email, ""),
			CA:      c.str(ap.key("ca"), acme.CA, ""),
			CARoot:  c.str(ap.key("ca_root"), acme.CARoot, ""),
			Storage: c.str(ap.key("storage"), acme.Storage, defaultACMEStorage),
		}
	}
	return t
}

func (c *checker) validateTLS(p fieldPath, t *TLS, cfg *Config) {
	if t.Listen == "" {
		if len(t.Certificates) > 0 || t.ACME.Enabled() || t.RedirectHTTP {
			c.errorf(p.key("listen"), "required when certificates, acme or redirect_http is set: the TLS listener's address, such as :443")
		}
		return
	}
	c.validateListen(p.key("listen"), t.Listen)
	if t.Listen == cfg.Listen && !hasPortZero(t.Listen) {
		c.errorf(p.key("listen"), "same address as listen (%s); the TLS listener needs its own", t.Listen)
	}
	if t.Listen == cfg.Admin.Listen && !hasPortZero(t.Listen) {
		c.errorf(p.key("listen"), "same address as admin.listen (%s)", t.Listen)
	}
	if len(t.Certificates) == 0 && !t.ACME.Enabled() && !c.hasErrorWithin(p.key("certificates")) {
		c.errorf(p, "give certificates or acme.domains: a TLS listener needs a certificate")
	}
	ap := p.key("acme")
	for i, d := range t.ACME.Domains {
		if !validDomain(d) {
			c.errorf(ap.key("domains").idx(i), "%q is not a DNS name (a wildcard needs the DNS challenge, which geoproxy does not do)", d)
		}
	}
	if t.ACME.CA != "" {
		if u, err := url.Parse(t.ACME.CA); err != nil || u.Scheme != "https" || u.Host == "" {
			c.errorf(ap.key("ca"), "must be the https URL of an ACME directory, got %q", t.ACME.CA)
		}
	}
}

// validDomain reports whether d is a DNS name certificates can be asked
// for with the HTTP-01 or TLS-ALPN-01 challenges.
func validDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(d); i++ {
		switch ch := d[i]; {
		case ch == '.':
			if label == 0 {
				return false
			}
			label = 0
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '-':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0
}

func hasPortZero(addr string) bool { return len(addr) >= 2 && addr[len(addr)-2:] == ":0" }

// Defaults of the client limits: the values the engines had before they
// were configurable.
const (
	defaultClientTimeout  = 60 * time.Second
	defaultMaxHeaderBytes = 16 << 10
)

// clientLimits reads the client limits of the limits block into l.
func (c *checker) clientLimits(p fieldPath, raw rawLimits, l *Limits) {
	l.HeadTimeout = c.duration(p.key("head_timeout"), raw.HeadTimeout, defaultClientTimeout)
	l.BodyTimeout = c.duration(p.key("body_timeout"), raw.BodyTimeout, defaultClientTimeout)
	l.IdleTimeout = c.duration(p.key("idle_timeout"), raw.IdleTimeout, defaultClientTimeout)
	l.MaxHeaderBytes = int(c.size(p.key("max_header_bytes"), raw.MaxHeaderBytes, defaultMaxHeaderBytes))
	l.MaxConnections = c.int(p.key("max_connections"), raw.MaxConnections, 0)
	l.MaxConnectionsPerClient = c.int(p.key("max_connections_per_client"), raw.MaxConnectionsPerClient, 0)
	l.RequestsPerSecondPerClient = c.int(p.key("requests_per_second_per_client"), raw.RequestsPerSecondPerClient, 0)
	l.BurstPerClient = c.int(p.key("burst_per_client"), raw.BurstPerClient, max(1, l.RequestsPerSecondPerClient))
}

func (c *checker) validateClientLimits(p fieldPath, l *Limits) {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"head_timeout", l.HeadTimeout}, {"body_timeout", l.BodyTimeout}, {"idle_timeout", l.IdleTimeout}} {
		if d.v < 100*time.Millisecond || d.v > time.Hour {
			c.errorf(p.key(d.key), "must be 100ms to 1h, got %s", d.v)
		}
	}
	if n := l.MaxHeaderBytes; n < 1<<10 || n > 1<<20 {
		c.errorf(p.key("max_header_bytes"), "must be 1KiB to 1MiB, got %d bytes", n)
	}
	for _, n := range []struct {
		key string
		v   int
	}{{"max_connections", l.MaxConnections}, {"max_connections_per_client", l.MaxConnectionsPerClient},
		{"requests_per_second_per_client", l.RequestsPerSecondPerClient}} {
		if n.v < 0 {
			c.errorf(p.key(n.key), "must be 0 (unlimited) or more, got %d", n.v)
		}
	}
	if l.BurstPerClient < 1 {
		c.errorf(p.key("burst_per_client"), "must be at least 1, got %d", l.BurstPerClient)
	}
}
