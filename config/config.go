// Package config reads the geoproxy YAML configuration file into an immutable
// Config.
//
// Loading has three steps. Parse decodes the YAML strictly: an unknown key is
// an error. Provision converts every value to its Go type, applies the
// defaults and compiles what the hot path needs (CIDRs to netip.Prefix,
// backend URLs, header templates). Validate checks ranges and the relations
// between values (duplicates, timeout below interval, ...). Every problem
// found is reported, each with the file, line, column and field path, as an
// Errors value.
//
// A key given an empty value ("key:" or "key: null") is treated as if it were
// absent, so it takes its default. testdata/full.yaml documents every key.
package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// Config is a loaded, validated configuration. It is shared by the whole
// process and must not be modified once returned by Load or Parse.
type Config struct {
	// File is the path the configuration was read from.
	File string

	// Listen is the host:port of the proxy listener (key "listen").
	// Default "127.0.0.1:8080". An empty host (":8080") listens on all
	// interfaces; port 0 picks a free port.
	Listen string

	// Admin configures the admin listener (key "admin").
	Admin Admin

	// GeoIP configures how clients are located (key "geoip").
	GeoIP GeoIP

	// HealthCheck configures the active health probes sent to every backend
	// (key "health_check").
	HealthCheck HealthCheck

	// Proxy configures request forwarding (key "proxy").
	Proxy Proxy

	// Limits bound what one client, and all of them together, may make the
	// proxy hold (key "limits").
	Limits Limits

	// TLS configures TLS termination: certificates from files or ACME,
	// HTTP/2, and the plain listener's redirect (key "tls"). Default off.
	TLS TLS

	// ProxyProtocol makes both proxy listeners read a PROXY protocol
	// header (v1 or v2) from peers in geoip.trusted_proxies, whose
	// address it carries becomes the client's (key "proxy_protocol").
	// A peer elsewhere that sends one is refused. Default false.
	ProxyProtocol bool

	// Shutdown configures how the process stops (key "shutdown").
	Shutdown Shutdown

	// Resilience configures passive health, retry budgets and timeouts,
	// failback, degraded regions and what happens when every region is
	// down (key "resilience").
	Resilience Resilience

	// AccessLog turns the access log on: one line per request
	// (key "access_log"). Default true.
	AccessLog bool

	// Engine is the HTTP engine of the proxy listener (key "engine"):
	// "native" (default), geoproxy's own HTTP/1.1 engine, which buffers
	// request bodies (up to 32 MiB) and streams responses; or
	// "nethttp", Go's net/http, which also serves HTTP/2 over cleartext (h2c)
	// and streams request bodies of any size. Both route, retry and report
	// alike.
	Engine string

	// Regions lists the regions, in file order (key "regions"). At least one
	// is required; at most MaxRegions.
	Regions []Region

	// Affinity keeps clients of the regions it names on the region and
	// backend that served them, with a cookie (key "affinity"). Default
	// off.
	Affinity Affinity

	// Rules steer the clients they match: data residency and preferred
	// regions (key "rules"). Tried in file order; the first that matches
	// a client applies. Default none: every client goes by distance.
	Rules []Rule
}

// Admin configures the admin listener, which serves metrics, health, status
// and lookup endpoints.
type Admin struct {
	// Pprof serves Go's profiler at /debug/pprof/ on the admin listener
	// (key "admin.pprof"). Default false.
	Pprof bool

	// Listen is the host:port of the admin listener (key "admin.listen").
	// Default "127.0.0.1:9090". It must differ from the proxy's listen
	// address (unless both use port 0).
	Listen string

	// TokenFile is a file holding the bearer token that every admin
	// request changing something must carry (key "admin.token_file");
	// surrounding whitespace is ignored. Default "": none.
	TokenFile string

	// TokenEnv names an environment variable holding that token instead
	// (key "admin.token_env"). Default "": none.
	TokenEnv string

	// ProtectReads asks for the token on every /admin/* endpoint, reads
	// included (key "admin.protect_reads"). Default false: /metrics,
	// /healthz, /readyz and the dashboard stay open.
	ProtectReads bool
}

// LatLon is a point on Earth in decimal degrees.
type LatLon struct {
	// Lat is the latitude in degrees, -90 to 90 (key "lat"). Required.
	Lat float64
	// Lon is the longitude in degrees, -180 to 180 (key "lon"). Required.
	Lon float64
}

// GeoIP configures client location.
type GeoIP struct {
	// Database is the path of a MaxMind GeoIP2/GeoLite2 or DB-IP .mmdb file,
	// City or Country edition (key "geoip.database"). Default "": use the
	// database embedded in the binary. A relative path is relative to the
	// working directory.
	Database string

	// TrustedProxies lists the networks whose Forwarded and X-Forwarded-For
	// headers are believed when finding the client address
	// (key "geoip.trusted_proxies"). Entries are CIDRs ("10.0.0.0/8") or bare
	// addresses (taken as /32 or /128); they are stored masked. Default none:
	// the TCP peer is always the client.
	TrustedProxies []netip.Prefix

	// DefaultLocation is where a client is assumed to be when it cannot be
	// located (private address, not in the database)
	// (key "geoip.default_location"). Default: the location of the first
	// region.
	DefaultLocation LatLon

	// Overrides map client networks to fixed locations; they win over the
	// database (key "geoip.overrides"). Default none. A network may appear
	// only once; when networks nest, the longest prefix is meant to win.
	Overrides []Override

	// EdgeHeaders are the client-location headers of a CDN or load
	// balancer in front, believed only from TrustedProxies peers (key
	// "geoip.edge_headers"): a list of "cloudflare", "cloudfront", "gcp",
	// or {country: HEADER, lat_lon: HEADER}. Precedence: an override, then
	// the edge's headers, then the database. Default none.
	EdgeHeaders EdgeHeaders
}

// Override places every client address in Prefix at Location.
type Override struct {
	// Prefix is the client network, masked (key "cidr"). A bare address is
	// taken as /32 or /128. Required.
	Prefix netip.Prefix
	// Location is where those clients are (key "location"). Required.
	Location OverrideLocation
}

// OverrideLocation is the location given to the clients of an Override.
type OverrideLocation struct {
	// Lat is the latitude in degrees, -90 to 90 (key "lat"). Required.
	Lat float64
	// Lon is the longitude in degrees, -180 to 180 (key "lon"). Required.
	Lon float64
	// Country is the ISO 3166-1 alpha-2 country code, upper case
	// (key "country"; written in any case). Optional.
	Country string
	// Subdivision is the state or province, free text such as "WA"
	// (key "subdivision"). Optional.
	Subdivision string
	// City is the city name (key "city"). Optional.
	City string
	// Continent is the continent code, one of AF AN AS EU NA OC SA, upper
	// case (key "continent"; written in any case). Optional.
	Continent string
}

// HealthCheck configures the active probes: each backend gets a GET of Path
// every Interval, and changes state after a run of consecutive results.
type HealthCheck struct {
	// Path is the URL path probed on each backend, joined to the backend's
	// base path (key "health_check.path"). Default "/health". It must start
	// with "/".
	Path string
	// Interval is the time between two probes of a backend
	// (key "health_check.interval", a Go duration such as "2s"). Default 2s.
	// Must be positive.
	Interval time.Duration
	// Timeout bounds one probe (key "health_check.timeout"). Default 1s. Must
	// be positive and below Interval.
	Timeout time.Duration
	// HealthyThreshold is the number of consecutive successful probes that
	// mark a backend healthy (key "health_check.healthy_threshold").
	// Default 2. At least 1.
	HealthyThreshold int
	// UnhealthyThreshold is the number of consecutive failed probes that mark
	// a backend unhealthy (key "health_check.unhealthy_threshold").
	// Default 2. At least 1.
	UnhealthyThreshold int
}

// Proxy configures how requests are forwarded.
type Proxy struct {
	// RequestHeaders are set on every proxied request, replacing any value
	// the client sent, sorted by canonical name
	// (key "proxy.request_headers", a mapping of header name to value
	// template; see Template). When the key is absent the default is
	//
	//	X-City: "{city}"
	//	X-Country: "{country}"
	//	X-Geoproxy-Nearest-Region: "{nearest_region}"
	//
	// When it is present, even as {}, exactly the given headers are set.
	// Hop-by-hop headers, Host and Content-Length cannot be set; two names
	// that differ only in case are a duplicate.
	RequestHeaders []Header

	// RegionHeader is the name of the response header that tells the client
	// which region served it, in canonical form (key "proxy.region_header").
	// Default "X-Geoproxy-Region"; "" turns it off (write the quotes: an
	// empty value means the default).
	RegionHeader string

	// MaxAttempts is the number of tries per request, across backends and
	// regions (key "proxy.max_attempts"). Default 3; 1 means no retry;
	// at most 10.
	MaxAttempts int

	// RetryOnStatus lists backend response statuses that count as a failed
	// attempt for idempotent requests without a body (GET, HEAD, OPTIONS,
	// TRACE, PUT, DELETE): the request is tried on the next backend or
	// region, within MaxAttempts, and the status reaches the client only
	// when no attempt is left (key "proxy.retry_on_status", a list of 5xx
	// codes). Default [502, 503, 504]; [] turns it off.
	RetryOnStatus []int

	// DialTimeout bounds connecting to a backend (key "proxy.dial_timeout",
	// a Go duration). Default 2s. Must be positive.
	DialTimeout time.Duration

	// ResponseHeaderTimeout bounds the wait for a backend's response headers
	// after the request is sent (key "proxy.response_header_timeout").
	// Default 60s; 0 means no limit.
	ResponseHeaderTimeout time.Duration

	// EventLoops is how many event loops the native engine serves
	// connections with (key "proxy.event_loops"), 1 to MaxEventLoops.
	// Default 0: automatic, one per CPU the process may use (GOMAXPROCS)
	// but one, and at least one, so that a CPU is left for everything else
	// (accepting, health checks, streamed answers, the admin listener).
	// -1 turns them off: every connection then gets a goroutine. Ignored
	// by the nethttp engine; when a backend speaks TLS, see
	// EventLoopsWithTLSBackends.
	EventLoops int

	// EventLoopsWithTLSBackends keeps the native engine's event loops when
	// some backends speak TLS (https URLs) (key
	// "proxy.event_loops_with_tls_backends"). Loops speak plain HTTP to
	// backends: they serve the requests whose attempts go to cleartext
	// backends, and a connection whose request has an attempt on an https
	// backend goes on to a goroutine of its own, for that request and the
	// next ones. Default true; false turns the loops off as soon as one
	// backend speaks TLS (every connection then gets a goroutine). Ignored
	// by the nethttp engine, and when no backend speaks TLS.
	EventLoopsWithTLSBackends bool
}

// MaxEventLoops is the largest proxy.event_loops accepted.
const MaxEventLoops = 256

// Shutdown configures the drain on SIGTERM or SIGINT.
type Shutdown struct {
	// DrainDelay is how long the proxy keeps accepting connections once
	// told to stop, with /readyz already failing, so that load balancers
	// and Kubernetes endpoints take it out of rotation first (key
	// "shutdown.drain_delay", a Go duration). Meanwhile every answer
	// carries "Connection: close". Then the listener closes, idle
	// connections are closed and requests in flight finish. Default 5s; 0
	// to 5m.
	DrainDelay time.Duration
}

// Limits bound the memory clients can make the proxy hold.
type Limits struct {
	// RequestMemory is the most memory, in bytes, the native engine holds
	// for clients' requests at once, across all connections: request
	// bodies (kept so that a failed attempt can be repeated) and read
	// buffers grown beyond their first 4 KiB (long heads, pipelined
	// requests, chunk lines) (key "limits.request_memory", a size such as
	// "128MiB" or a number of bytes). Default 128 MiB; at least 1 MiB and
	// at least max_request_body. A request that would need more is refused
	// with 503 and Retry-After, and its connection closed. The nethttp
	// engine streams bodies and needs no such budget.
	RequestMemory int64

	// MaxRequestBody is the largest request body accepted, in bytes, on
	// both engines (key "limits.max_request_body", a size). Default
	// 32 MiB; at least 1 KiB. Larger bodies get 413.
	MaxRequestBody int64

	// HeadTimeout is how long a client may take to send a request's head
	// once its first byte has come (key "limits.head_timeout"). Default
	// 60s. Beyond: 408 and the connection closed.
	HeadTimeout time.Duration
	// BodyTimeout is how long a client may take to send a request's body
	// once its head is in (key "limits.body_timeout"). Default 60s.
	// Beyond: 408 and the connection closed.
	BodyTimeout time.Duration
	// IdleTimeout is how long a connection may wait for its first and
	// each next request, and how long a client may take to read each part
	// of an answer (key "limits.idle_timeout"). Default 60s. Beyond, the
	// connection is closed.
	IdleTimeout time.Duration
	// MaxHeaderBytes is the largest request head, its request line
	// included (key "limits.max_header_bytes", a size). Default 16 KiB;
	// 1 KiB to 1 MiB. Beyond: 431.
	MaxHeaderBytes int
	// MaxConnections caps the client connections open on each proxy
	// listener (key "limits.max_connections"). Default 0: unlimited.
	// Beyond, a new connection is answered 503 with Retry-After and
	// closed.
	MaxConnections int
	// MaxConnectionsPerClient caps the connections one client address
	// may have open on each listener (key
	// "limits.max_connections_per_client"); an IPv6 client is its /64.
	// Default 0: unlimited. Beyond: 429 with Retry-After, and closed.
	MaxConnectionsPerClient int
	// RequestsPerSecondPerClient caps the requests one client address
	// (as located: through trusted proxies and the PROXY protocol) may
	// make per second, on average (key
	// "limits.requests_per_second_per_client"). Default 0: unlimited.
	// Beyond: 429 with Retry-After.
	RequestsPerSecondPerClient int
	// BurstPerClient is how many requests a client may make at once above
	// that rate (key "limits.burst_per_client"). Default: the rate, at
	// least 1.
	BurstPerClient int
}

// Header is one request header to set, with its compiled value template.
type Header struct {
	// Name is the header name in canonical form (textproto.CanonicalMIMEHeaderKey).
	Name string
	// Template is the compiled value.
	Template Template
}

// Region is a group of backends at one place.
type Region struct {
	// Name identifies the region in headers, logs and metrics (key "name").
	// Required: lower-case letters, digits, ".", "_" and "-", starting with a
	// letter or digit; unique.
	Name string
	// Location is where the region's backends are; clients go to the nearest
	// healthy region (key "location"). Required.
	Location LatLon
	// Backends are the region's servers, in file order (key "backends"). At
	// least one is required.
	Backends []Backend
	// Bias grows (positive) or shrinks (negative) the region's catchment,
	// as Route 53's geoproximity bias (key "bias", -99 to 99): distances to
	// the region count as distance × (1 - bias/100). Default 0.
	Bias int
	// Capacity bounds the region's load (key "capacity"); default
	// unlimited.
	Capacity Capacity
}

// Backend is one server of a region.
type Backend struct {
	// URL is the backend's base URL (key "url"): absolute, http or https,
	// with a host, without query, fragment or credentials. A path is the
	// base path prefixed to every proxied request. It is stored normalised:
	// lower-case scheme and host, default port and trailing "/" removed.
	// Required; unique across all regions.
	URL *url.URL
	// Weight is the backend's share of its region's traffic relative to the
	// other backends of the region (key "weight"). Default 1; 1 to 1000.
	Weight int
	// TLS is how geoproxy speaks TLS to an https backend (key "tls", over
	// the region's "tls"). Default: the system's authorities, the URL's
	// host, no client certificate.
	TLS BackendTLS
	// Protocol is the HTTP version geoproxy speaks to the backend (key
	// "protocol", of the backend or of its region for all its backends):
	// "http1" (default), "h2c" (HTTP/2 without TLS, for an http URL, as
	// gRPC servers speak it) or "h2" (HTTP/2 over TLS, for an https URL).
	// HTTP/2 backends are reached from the nethttp engine and from the TLS
	// listener.
	Protocol string
}

// The backend protocols.
const (
	ProtocolHTTP1 = "http1"
	ProtocolH2C   = "h2c"
	ProtocolH2    = "h2"
)

// Engines of the proxy listener.
const (
	// EngineNative is geoproxy's own HTTP/1.1 engine (package h1).
	EngineNative = "native"
	// EngineNetHTTP is the net/http engine.
	EngineNetHTTP = "nethttp"
)

// Load reads and validates the file at path. A read error is returned
// wrapped, so errors.Is(err, fs.ErrNotExist) works; an invalid file gives
// Errors, as from Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse validates data; name is used in error messages (the file path).
// When the configuration is invalid the error is an Errors holding every
// problem found, in file order.
func Parse(name string, data []byte) (*Config, error) {
	return ParseChecked(name, data)
}

// A Check looks at what a valid file names outside itself, such as a
// database file that must open. It returns the problem and the dotted path
// of the field it is about ("geoip.database"), or nil.
type Check func(cfg *Config) (field string, err error)

// LoadChecked is Load, then checks: their problems are reported with the
// file's own, at the line of the field.
func LoadChecked(path string, checks ...Check) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseChecked(path, data, checks...)
}

// ParseChecked is Parse, then checks (see LoadChecked).
func ParseChecked(name string, data []byte, checks ...Check) (*Config, error) {
	c := newChecker(name)
	raw, ok := c.parse(data)
	if !ok {
		return nil, c.result()
	}
	cfg := c.provision(raw)
	c.validate(cfg)
	for _, check := range checks {
		if field, err := check(cfg); err != nil {
			var p fieldPath
			for k := range strings.SplitSeq(field, ".") {
				p = p.key(k)
			}
			c.errorf(p, "%v", err)
		}
	}
	if err := c.result(); err != nil {
		return nil, err
	}
	return cfg, nil
}
