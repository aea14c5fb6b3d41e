package config

// BackendTLS configures how geoproxy speaks TLS to https backends (key
// "tls" of a region, for all its backends, or of a backend, which wins).
type BackendTLS struct {
	// CAFile is a PEM file of the certificate authorities that sign the
	// backends' certificates (key "ca_file"). Default "": the system's.
	CAFile string
	// ServerName is the name checked in the backend's certificate and sent
	// in SNI (key "server_name"). Default: the URL's host.
	ServerName string
	// CertFile and KeyFile are a PEM client certificate and its key,
	// presented to backends that ask for one (mutual TLS) (keys
	// "cert_file", "key_file"; give both or neither). Default none.
	CertFile, KeyFile string
}

// Set reports whether anything is configured.
func (t BackendTLS) Set() bool {
	return t.CAFile != "" || t.ServerName != "" || t.CertFile != "" || t.KeyFile != ""
}

type rawBackendTLS struct {
	CAFile     scalar `yaml:"ca_file"`
	ServerName scalar `yaml:"server_name"`
	CertFile   scalar `yaml:"cert_file"`
	KeyFile    scalar `yaml:"key_file"`
}

// backendTLS reads a tls block over def (the region's, for a backend).
func (c *checker) backendTLS(p fieldPath, o opt[rawBackendTLS], def BackendTLS) BackendTLS {
	raw, ok := composite(c, p, o)
	if !ok {
		return def
	}
	t := BackendTLS{
		CAFile:     c.str(p.key("ca_file"), raw.CAFile, def.CAFile),
		ServerName: c.str(p.key("server_name"), raw.ServerName, def.ServerName),
		CertFile:   c.str(p.key("cert_file"), raw.CertFile, def.CertFile),
		KeyFile:    c.str(p.key("key_file"), raw.KeyFile, def.KeyFile),
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		c.errorf(p, "give cert_file and key_file together")
	}
	return t
}
