// Package demo runs geoproxy in front of three demo regional app servers on
// loopback, so that everything can be tried on one machine with nothing to
// set up.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/server"
)

// Region is one demo region and where it is.
type Region struct {
	Name     string
	Lat, Lon float64
}

// Regions returns the demo's regions, as in the MovR demo.
func Regions() []Region {
	return []Region{
		{"us-east", 33.84, -81.16},
		{"us-west", 45.59, -121.18},
		{"europe-west", 50.45, 3.82},
	}
}

// Client is an example client of the demo.
type Client struct {
	City, Country string
	Addr          string
	Region        string // where it goes while every region is healthy
}

// Clients returns the demo's example clients: real addresses that the
// embedded database and the full DB-IP City Lite data both place in these
// cities (a University of Washington and a New York University network).
func Clients() []Client {
	return []Client{
		{"London", "GB", "81.2.69.142", "europe-west"},
		{"Seattle", "US", "128.95.1.1", "us-west"},
		{"New York", "US", "128.122.0.1", "us-east"},
	}
}

// Options configure the demo.
type Options struct {
	// Listen and Admin are the proxy's and the admin listener's addresses.
	Listen, Admin string
	// AppHost is the host the apps listen on; AppPort the first app's port
	// (the others follow); 0 picks free ports.
	AppHost string
	AppPort int
	// Interval between health probes.
	Interval time.Duration
	Log      *zap.Logger
	Version  string
	// Out receives the instructions.
	Out io.Writer
	// Started, if set, is called once everything is serving.
	Started func(*Demo)
}

// Demo is a running demo.
type Demo struct {
	Server *server.Server
	Apps   []*App
	Config *config.Config
}

// App is one demo regional app instance.
type App struct {
	Region string
	Addr   string
	failed atomic.Bool
	srv    *http.Server
	ln     net.Listener
}

// Fail makes the app fail its health checks (and answer 503).
func (a *App) Fail() { a.failed.Store(true) }

// Recover makes the app healthy again.
func (a *App) Recover() { a.failed.Store(false) }

// ServeHTTP answers like a regional instance of the app.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/health":
		if a.failed.Load() {
			http.Error(w, "failing (demo)", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
		return
	case "/fail":
		if r.Method == http.MethodPost {
			a.Fail()
			_, _ = fmt.Fprintf(w, "%s now fails its health checks\n", a.Region)
			return
		}
	case "/recover":
		if r.Method == http.MethodPost {
			a.Recover()
			_, _ = fmt.Fprintf(w, "%s is healthy again\n", a.Region)
			return
		}
	}
	if a.failed.Load() {
		http.Error(w, "failing (demo)", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintf(w, "region=%s instance=%s city=%q country=%q location=%q client=%s path=%s\n",
		a.Region, a.Addr, r.Header.Get("X-City"), r.Header.Get("X-Country"), r.Header.Get("X-Location"),
		r.Header.Get("X-Forwarded-For"), r.URL.Path)
}

// Run starts the apps and the proxy, prints how to try them, and serves
// until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	d := &Demo{}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		for _, a := range d.Apps {
			_ = a.srv.Close()
		}
	}()
	for i, r := range Regions() {
		port := 0
		if o.AppPort != 0 {
			port = o.AppPort + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(o.AppHost, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("demo: start %s app: %w", r.Name, err)
		}
		a := &App{Region: r.Name, Addr: ln.Addr().String(), ln: ln}
		a.srv = &http.Server{Handler: a, ReadHeaderTimeout: 5 * time.Second}
		d.Apps = append(d.Apps, a)
		wg.Go(func() {
			if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.Log.Error("demo app stopped", zap.String("region", a.Region), zap.Error(err))
			}
		})
	}

	cfg, err := config.Parse("demo.yaml", []byte(Config(o, d.Apps)))
	if err != nil {
		return fmt.Errorf("demo: built-in config: %w", err)
	}
	d.Config = cfg
	srv, err := server.New(server.Options{Config: cfg, Log: o.Log, Version: o.Version})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.Server = srv
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	printHelp(o.Out, d)
	if o.Started != nil {
		o.Started(d)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// Config returns the demo's configuration for the given apps.
func Config(o Options, apps []*App) string {
	s := fmt.Sprintf(`listen: %s
admin:
  listen: %s
geoip:
  database: ""
  trusted_proxies: [127.0.0.0/8, "::1/128"]
  default_location: {lat: 40.71, lon: -74.01}
proxy:
  request_headers:
    X-City: "{city}"
    X-Country: "{country}"
    X-Location: "{lat},{lon}"
    X-Geoproxy-Nearest-Region: "{nearest_region}"
health_check:
  path: /health
  interval: %s
  timeout: %s
  healthy_threshold: 2
  unhealthy_threshold: 2
regions:
`, o.Listen, o.Admin, o.Interval, min(500*time.Millisecond, o.Interval/2))
	for i, r := range Regions() {
		s += fmt.Sprintf("  - name: %s\n    location: {lat: %v, lon: %v}\n    backends:\n      - url: http://%s\n",
			r.Name, r.Lat, r.Lon, apps[i].Addr)
	}
	return s
}

func printHelp(w io.Writer, d *Demo) {
	p := d.Server.ProxyAddr().String()
	a := d.Server.AdminAddr().String()
	app := func(region string) string {
		for _, x := range d.Apps {
			if x.Region == region {
				return x.Addr
			}
		}
		return ""
	}
	_, _ = fmt.Fprintf(w, `
geoproxy demo: three regional apps behind geoproxy
  us-east      http://%s
  us-west      http://%s
  europe-west  http://%s
  proxy        http://%s
  dashboard    http://%s/   (metrics at /metrics)

Clients from three places (X-Forwarded-For is trusted from loopback):
  curl -H 'X-Forwarded-For: 81.2.69.142'  http://%[4]s/    # London   -> europe-west
  curl -H 'X-Forwarded-For: 128.95.1.1'   http://%[4]s/    # Seattle  -> us-west
  curl -H 'X-Forwarded-For: 128.122.0.1'  http://%[4]s/    # New York -> us-east
  curl -i -H 'X-Forwarded-For: 81.2.69.142' http://%[4]s/  # the X-Geoproxy-Region response header

Where would a client go, and why:
  curl 'http://%[5]s/admin/lookup?ip=81.2.69.142'

Make europe-west fail its health checks; London moves to the next-nearest region:
  curl -X POST http://%[3]s/fail
  curl -H 'X-Forwarded-For: 81.2.69.142'  http://%[4]s/    # -> us-east (after 2 failed probes)
  curl -X POST http://%[3]s/recover                          # back to europe-west after 2 passes

Ctrl-C stops the demo.
`, app("us-east"), app("us-west"), app("europe-west"), p, a)
}
