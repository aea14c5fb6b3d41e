package server

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/health"
	"github.com/geoproxy/geoproxy/route"
)

//go:embed dashboard.html
var dashboardHTML []byte

// Status is the JSON document of /admin/status.
type Status struct {
	Version       string         `json:"version"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Config        ConfigStatus   `json:"config"`
	GeoIP         GeoIPStatus    `json:"geoip"`
	Regions       []RegionStatus `json:"regions"`
}

// ConfigStatus describes the configuration in force and the last reload.
type ConfigStatus struct {
	File       string    `json:"file"`
	Generation int64     `json:"generation"`
	Hash       string    `json:"hash"`
	LoadedAt   time.Time `json:"loaded_at"`
	// LastReload is the last reload's result (a refused one included),
	// absent before any.
	LastReload *ReloadResult `json:"last_reload,omitempty"`
}

// GeoIPStatus describes the geo database in use.
type GeoIPStatus struct {
	Name         string    `json:"name"`
	Kind         string    `json:"kind"`
	DatabaseType string    `json:"database_type"`
	BuildTime    time.Time `json:"build_time"`
	Attribution  string    `json:"attribution,omitempty"`
	// Source names the data a derived database (the embedded one) was built
	// from; SourceBuildTime is when the geolocation data was built (the
	// source's build time, else BuildTime); Modified says how a derived
	// database changed its source's data.
	Source          string    `json:"source,omitempty"`
	SourceBuildTime time.Time `json:"source_build_time"`
	Modified        string    `json:"modified,omitempty"`
}

// RegionStatus is one region in /admin/status.
type RegionStatus struct {
	Name string  `json:"name"`
	Lat  float64 `json:"lat"`
	Lon  float64 `json:"lon"`
	Up   bool    `json:"up"`
	// State is "up", "degraded" (too little of it is healthy: it passes
	// part of its clients on), "held" (back from failover, held back or
	// ramping up), "down", or "panic" (every region is down and this one
	// is tried with all its backends).
	State   string `json:"state"`
	Healthy int    `json:"healthy"`
	// HealthyShare is the healthy backends' share of the region's weight.
	HealthyShare float64 `json:"healthy_share"`
	// ClientShare is the share of its clients the region takes now.
	ClientShare float64 `json:"client_share"`
	// HeldUntil is when a region back from failover takes clients again.
	HeldUntil *time.Time `json:"held_until,omitempty"`
	// Override is an operator's "drain" or "disable" of the whole region,
	// since OverrideSince.
	Override      string          `json:"override,omitempty"`
	OverrideSince *time.Time      `json:"override_since,omitempty"`
	Backends      []BackendStatus `json:"backends"`
}

// BackendStatus is one backend in /admin/status.
type BackendStatus struct {
	URL    string `json:"url"`
	Weight int    `json:"weight"`
	// Status is "healthy", "unhealthy", "unknown" (not probed yet) or
	// "ejected" (passive health took it out for failing real requests).
	Status string `json:"status"`
	// Since is when it entered that status.
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
	// EjectedUntil is when an ejected backend may return (at its next
	// passing probe); Ejections counts its ejections in a row.
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
	Ejections    int        `json:"ejections,omitempty"`
	InFlight     int64      `json:"in_flight"`
	// Override is an operator's "drain" or "disable" (of the backend or
	// its region), since OverrideSince; Status then says "draining"
	// (while requests are in flight), "drained" or "disabled".
	Override      string     `json:"override,omitempty"`
	OverrideSince *time.Time `json:"override_since,omitempty"`
	// WeightOverride is the weight an operator set, replacing Weight.
	WeightOverride int `json:"weight_override,omitempty"`
}

// Status reports the current regions, backends and their health.
func (s *Server) Status() Status {
	g := s.gen.Load()
	info := g.locator.Database().Info()
	st := Status{
		Version:       s.version,
		UptimeSeconds: time.Since(s.started).Seconds(),
		Config: ConfigStatus{File: g.cfg.File, Generation: g.id, Hash: g.hash, LoadedAt: g.loadedAt,
			LastReload: s.LastReload()},
		GeoIP: GeoIPStatus{Name: info.Name, Kind: info.Kind, DatabaseType: info.DatabaseType,
			BuildTime: info.BuildTime, Attribution: info.Attribution,
			Source: info.Source, SourceBuildTime: info.SourceBuildTime, Modified: info.Modified},
	}
	snap := g.router.Snapshot()
	overrides, _ := s.store.Overrides(nil)
	for i := range snap.Regions {
		r := &snap.Regions[i]
		rs := RegionStatus{Name: r.Name, Lat: r.Location.Lat, Lon: r.Location.Lon,
			Up: r.Eligible() && !snap.Panic, Healthy: len(r.Healthy), HealthyShare: r.HealthyShare,
			ClientShare: float64(r.Share) / route.FullShare}
		switch {
		case snap.Panic:
			rs.State, rs.Healthy, rs.ClientShare = "panic", 0, 1
		case !r.Eligible():
			rs.State, rs.ClientShare = "down", 0
		case r.Held() || r.Ramp < 1:
			rs.State = "held"
		case r.Degraded:
			rs.State = "degraded"
		default:
			rs.State = "up"
		}
		if r.Held() {
			until := r.HeldUntil
			rs.HeldUntil = &until
		}
		if o := overrides[health.RegionTarget(r.Name)]; o != nil && o.Kind != "" {
			since := o.Since
			rs.Override, rs.OverrideSince = o.Kind, &since
			rs.State = map[string]string{health.Drain: "draining", health.Disable: "disabled"}[o.Kind]
		}
		for _, b := range r.Backends {
			bs := BackendStatus{URL: b.ID, Weight: b.Weight, Status: "unknown", InFlight: b.InFlight()}
			if row, err := s.store.Backend(b.ID); err == nil {
				bs.Status, bs.Since, bs.Reason = row.Status.String(), row.Since, row.Reason
				if row.Ejected {
					until := row.EjectedUntil
					bs.Status, bs.Since, bs.Reason = "ejected", row.EjectedAt, "passive health: "+row.EjectReason
					bs.EjectedUntil, bs.Ejections = &until, row.Ejections
				}
			}
			o, weight := health.Effective(overrides, r.Name, b.ID)
			bs.WeightOverride = weight
			if o != nil {
				since := o.Since
				bs.Override, bs.OverrideSince, bs.Since = o.Kind, &since, o.Since
				switch {
				case o.Kind == health.Disable:
					bs.Status = "disabled"
				case bs.InFlight > 0:
					bs.Status = "draining"
				default:
					bs.Status = "drained"
				}
			}
			rs.Backends = append(rs.Backends, bs)
		}
		st.Regions = append(st.Regions, rs)
	}
	return st
}

// Ready reports whether the proxy is serving and some region can take
// traffic, with a reason when not.
func (s *Server) Ready() (bool, string) {
	select {
	case <-s.ready:
	default:
		return false, "starting"
	}
	if s.draining.Load() {
		return false, "draining"
	}
	snap := s.snapshot()
	if snap.Panic {
		return true, "panic: every region is down; requests go to every backend of their nearest region"
	}
	for i := range snap.Regions {
		if snap.Regions[i].Eligible() {
			return true, "ok"
		}
	}
	return false, "no healthy region"
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(s.log.Named("metrics")),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		plainText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := s.Ready()
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		plainText(w, code, why)
	})
	mux.HandleFunc("POST /admin/reload", func(w http.ResponseWriter, r *http.Request) {
		res := s.Reload()
		code := http.StatusOK
		if !res.OK {
			code = http.StatusUnprocessableEntity
		}
		writeJSON(w, code, res)
	})
	mux.HandleFunc("GET /admin/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.HandleFunc("GET /admin/traffic", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"flows": s.gen.Load().bal.Traffic()})
	})
	mux.HandleFunc("POST /admin/drain", s.overrideHandler(health.Drain))
	mux.HandleFunc("POST /admin/disable", s.overrideHandler(health.Disable))
	mux.HandleFunc("POST /admin/enable", s.overrideHandler("enable"))
	mux.HandleFunc("POST /admin/weight", s.overrideHandler("weight"))
	mux.HandleFunc("GET /admin/lookup", func(w http.ResponseWriter, r *http.Request) {
		raw := r.URL.Query().Get("ip")
		addr, err := netip.ParseAddr(raw)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "ip: not an IP address: " + raw})
			return
		}
		writeJSON(w, http.StatusOK, s.Explain(addr.Unmap()))
	})
	if s.gen.Load().cfg.Admin.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
		_, _ = w.Write(dashboardHTML)
	})
	return s.guard(mux)
}

func plainText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
