package server

import (
	"net"
	"net/http"
	"strconv"

	"github.com/geoproxy/geoproxy/certs"
	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/proxy/nethttp"
)

// newCerts makes the TLS listener's certificates, once the listeners are
// bound: ACME answers TLS-ALPN-01 challenges on the TLS listener, and
// HTTP-01 on the plain one when that is served by net/http (the nethttp
// engine, or the redirects of tls.redirect_http).
func (s *Server) newCerts(cfg *config.Config) (certManager, error) {
	m, err := certs.New(s.certOptions(cfg))
	if err != nil {
		return nil, err
	}
	return &certFiles{Manager: m, s: s}, nil
}

// certOptions are the certificates' options for cfg.
func (s *Server) certOptions(cfg *config.Config) certs.Options {
	o := certs.Options{Pairs: cfg.TLS.Certificates, ACME: cfg.TLS.ACME, MinVersion: cfg.TLS.MinVersion,
		Log: s.log.Named("tls")}
	if cfg.TLS.ACME.Enabled() {
		o.TLSAddr = s.tlsEntry.ln.Addr().String()
		if cfg.TLS.RedirectHTTP || cfg.Engine == config.EngineNetHTTP {
			o.HTTPAddr = s.plain.ln.Addr().String()
		}
	}
	return o
}

// certFiles is a certs.Manager for a server's reloads.
type certFiles struct {
	*certs.Manager
	s *Server
}

// Update applies a reloaded configuration's tls block.
func (c *certFiles) Update(t config.TLS) error {
	cfg := *c.s.Config()
	cfg.TLS = t
	return c.Manager.Update(c.s.certOptions(&cfg))
}

// challenges answers ACME HTTP-01 challenges, when cfg has ACME on, and
// passes the rest to next; without ACME it is next. The certificates are
// made after the first generation's handlers, once the listeners are
// bound, hence the lookup at each request.
func (s *Server) challenges(cfg *config.Config, next http.Handler) http.Handler {
	if !cfg.TLS.ACME.Enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.certs != nil && s.certs.IsChallenge(r) {
			s.certs.HTTPChallenge(next).ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// buildTLS makes the generation's TLS side: the net/http server of the TLS
// listener (HTTP/2 and HTTP/1.1, by ALPN), over the nethttp engine's
// handler or, on the native engine, a handler of its own on the same
// request core; and, with tls.redirect_http, the plain listener's
// redirects.
func (s *Server) buildTLS(g *generation, opts nethttp.Options) {
	handler := g.handler
	if handler == nil {
		g.tlsHandler = nethttp.New(opts)
		handler = g.tlsHandler
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	g.tlsSrv = s.httpServer(g, handler, protocols)
	if g.cfg.TLS.RedirectHTTP {
		port := func() string { // the port bound, which ":0" picks
			if p := g.cfg.TLS.RedirectPort; p > 0 {
				return strconv.Itoa(p)
			}
			_, port, _ := net.SplitHostPort(s.TLSAddr().String())
			return port
		}
		protocols := new(http.Protocols)
		protocols.SetHTTP1(true)
		g.redirectSrv = s.httpServer(g, s.challenges(g.cfg, redirectHandler(port)), protocols)
	}
}
