package server

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/config"
	"github.com/geoproxy/geoproxy/health"
)

// adminToken reads the admin bearer token cfg names, or "" when none.
func adminToken(cfg *config.Config) (string, error) {
	a := cfg.Admin
	switch {
	case a.TokenFile != "":
		data, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return "", fmt.Errorf("admin.token_file: %w", err)
		}
		tok := strings.TrimSpace(string(data))
		if tok == "" {
			return "", fmt.Errorf("admin.token_file: %s is empty", a.TokenFile)
		}
		return tok, nil
	case a.TokenEnv != "":
		tok := strings.TrimSpace(os.Getenv(a.TokenEnv))
		if tok == "" {
			return "", fmt.Errorf("admin.token_env: the environment variable %s is not set or empty", a.TokenEnv)
		}
		return tok, nil
	}
	return "", nil
}

// guard asks for the generation's admin token, when there is one, on
// requests that change something (and on every /admin/* request with
// admin.protect_reads).
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := s.gen.Load()
		changes := r.Method != http.MethodGet && r.Method != http.MethodHead
		read := g.cfg.Admin.ProtectReads && (strings.HasPrefix(r.URL.Path, "/admin/") || strings.HasPrefix(r.URL.Path, "/debug/"))
		if g.token != "" && (changes || read) {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(g.token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="geoproxy admin"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a valid bearer token is required (admin.token_file or admin.token_env)"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// OverrideResult is the JSON answer of the runtime admin API.
type OverrideResult struct {
	Target string `json:"target"`
	Kind   string `json:"override,omitempty"`
	Weight int    `json:"weight,omitempty"`
}

// SetOverride drains, disables or enables a region or backend, or sets a
// backend's weight, at once and without a reload; the override is kept
// across reloads while its target exists. kind is health.Drain,
// health.Disable, "enable", or "weight".
func (s *Server) SetOverride(kind, region, backend string, weight int) (OverrideResult, error) {
	g := s.gen.Load()
	var target string
	switch {
	case region != "" && backend != "":
		return OverrideResult{}, fmt.Errorf("give region or backend, not both")
	case region != "":
		if kind == "weight" {
			return OverrideResult{}, fmt.Errorf("weight is set per backend")
		}
		found := false
		for _, r := range g.cfg.Regions {
			found = found || r.Name == region
		}
		if !found {
			return OverrideResult{}, fmt.Errorf("no region %q", region)
		}
		target = health.RegionTarget(region)
	case backend != "":
		found := false
		for _, b := range g.backends {
			found = found || b.ID == backend
		}
		if !found {
			return OverrideResult{}, fmt.Errorf("no backend %q (give its URL as in the config, as /admin/status lists it)", backend)
		}
		target = health.BackendTarget(backend)
	default:
		return OverrideResult{}, fmt.Errorf("give ?region=NAME or ?backend=URL")
	}
	var (
		o   *health.Override
		err error
	)
	switch kind {
	case health.Drain, health.Disable:
		o, err = s.store.SetOverride(target, kind, 0, true)
	case "enable":
		o, err = s.store.SetOverride(target, "", 0, false)
	case "weight":
		if weight < 1 || weight > 1000 {
			return OverrideResult{}, fmt.Errorf("weight must be 1 to 1000, got %d", weight)
		}
		o, err = s.store.SetOverride(target, "", weight, true)
	}
	if err != nil {
		return OverrideResult{}, err
	}
	res := OverrideResult{Target: target}
	if o != nil {
		res.Kind, res.Weight = o.Kind, o.Weight
	}
	s.log.Warn("admin override", zap.String("action", kind), zap.String("target", target),
		zap.String("override", res.Kind), zap.Int("weight", res.Weight))
	return res, nil
}

// overrideHandler serves POST /admin/{drain,disable,enable,weight}.
func (s *Server) overrideHandler(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		weight := 0
		if kind == "weight" {
			n, err := strconv.Atoi(q.Get("weight"))
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "weight: want a whole number 1 to 1000"})
				return
			}
			weight = n
		}
		res, err := s.SetOverride(kind, q.Get("region"), q.Get("backend"), weight)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// pruneOverrides drops the overrides of regions and backends g does not
// have (a reload removed them).
func (s *Server) pruneOverrides(g *generation) error {
	keep := map[string]bool{}
	for _, r := range g.cfg.Regions {
		keep[health.RegionTarget(r.Name)] = true
	}
	for _, b := range g.backends {
		keep[health.BackendTarget(b.ID)] = true
	}
	return s.store.PruneOverrides(keep)
}
