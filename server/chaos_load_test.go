package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/geoproxy/geoproxy/server"
)

// chaosResult is what one client saw of one GET.
type chaosResult struct {
	at     time.Time
	took   time.Duration
	code   int
	region string // X-Geoproxy-Region
	err    string
}

func (r chaosResult) failed() bool { return r.err != "" || r.code < 200 || r.code > 299 }

// chaosClient is one client of the steady load: its own source address on
// loopback (geoip.overrides place it near its region), its own kept-alive
// connection, one GET at a time.
type chaosClient struct {
	region  string // the region nearest to it
	ip      netip.Addr
	tr      *http.Transport
	results []chaosResult // its goroutine's until the load stops
	home    atomic.Int64  // answers from its own region
	homeAt  atomic.Int64  // when the last of them came, in Unix nanoseconds
}

// chaosLoad is the steady load: every client sends a GET every pace (or
// as soon as the last answer came, when slower), until stopped or after
// chaosMaxRequests requests.
type chaosLoad struct {
	clients []*chaosClient
	sent    atomic.Int64
	stopCh  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

const (
	// chaosMaxRequests bounds each client's loop.
	chaosMaxRequests = 200000
	// chaosClientTimeout bounds one GET, beyond the proxy's
	// request_timeout (3 s).
	chaosClientTimeout = 5 * time.Second
)

// chaosClientIP is the address of client i of the region with the given
// subnet: 127.0.<subnet>.<i+1>.
func chaosClientIP(subnet byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 0, subnet, byte(i + 1)})
}

func startChaosLoad(url string, perRegion int, pace time.Duration) *chaosLoad {
	l := &chaosLoad{stopCh: make(chan struct{})}
	for _, r := range chaosRegions {
		for i := range perRegion {
			ip := chaosClientIP(r.subnet, i)
			d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))}
			c := &chaosClient{region: r.name, ip: ip, tr: &http.Transport{
				Proxy:               nil,
				DialContext:         d.DialContext,
				MaxIdleConnsPerHost: 1,
				DisableCompression:  true,
			}}
			l.clients = append(l.clients, c)
		}
	}
	for _, c := range l.clients {
		l.wg.Go(func() { c.run(url, pace, l.stopCh, &l.sent) })
	}
	return l
}

func (c *chaosClient) run(url string, pace time.Duration, stop <-chan struct{}, sent *atomic.Int64) {
	client := &http.Client{Transport: c.tr, Timeout: chaosClientTimeout}
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for range chaosMaxRequests {
		select {
		case <-stop:
			return
		default:
		}
		r := chaosResult{at: time.Now()}
		resp, err := client.Get(url)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			r.code = resp.StatusCode
			r.region = resp.Header.Get("X-Geoproxy-Region")
		}
		r.took = time.Since(r.at)
		if err != nil {
			r.err = err.Error()
		}
		c.results = append(c.results, r)
		sent.Add(1)
		if !r.failed() && r.region == c.region {
			c.home.Add(1)
			c.homeAt.Store(time.Now().UnixNano())
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// stop ends the load and waits for every client (each has at most one
// GET in flight, bounded by chaosClientTimeout).
func (l *chaosLoad) stop() {
	l.once.Do(func() {
		close(l.stopCh)
		l.wg.Wait()
		for _, c := range l.clients {
			c.tr.CloseIdleConnections()
		}
	})
}

// results returns every client's results; only after stop.
func (l *chaosLoad) results() []chaosResult {
	var all []chaosResult
	for _, c := range l.clients {
		all = append(all, c.results...)
	}
	return all
}

// chaosObs is what the watcher saw of the proxy at one moment.
type chaosObs struct {
	at time.Time
	// routed: the backend is in its region's routing snapshot (the
	// router's current view, read in process).
	routed map[string]bool
	// scraped: the admin listener was read for this observation, from
	// readAt on; the fields below are carried over from the last read
	// otherwise.
	scraped bool
	readAt  time.Time
	// status is the backend's status in /admin/status ("healthy",
	// "unhealthy", ...); ejected is an ejection shown there.
	status  map[string]string
	ejected map[string]bool
	// ejections: geoproxy_backend_ejections_total summed over reasons;
	// reasons by reason; upstreamErrors: geoproxy_upstream_errors_total.
	ejections      map[string]float64
	reasons        map[string]map[string]float64
	upstreamErrors map[string]float64
}

// chaosWatcher follows the proxy's view of its backends: the routing
// snapshot on every change (exact), and the admin listener's
// /admin/status and /metrics every chaosScrapeEvery.
type chaosWatcher struct {
	srv    *server.Server
	admin  string
	client *http.Client

	mu     sync.Mutex
	obs    []chaosObs
	errs   int
	stopCh chan struct{}
	once   sync.Once
	done   chan struct{}
}

const (
	chaosScrapeEvery = 50 * time.Millisecond
	chaosMaxObs      = 100000
)

func startChaosWatcher(srv *server.Server) *chaosWatcher {
	w := &chaosWatcher{
		srv: srv, admin: "http://" + srv.AdminAddr().String(),
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2}},
		stopCh: make(chan struct{}), done: make(chan struct{}),
	}
	go w.run()
	return w
}

func (w *chaosWatcher) run() {
	defer close(w.done)
	tick := time.NewTicker(chaosScrapeEvery)
	defer tick.Stop()
	last := chaosObs{status: map[string]string{}, ejected: map[string]bool{}, ejections: map[string]float64{},
		reasons: map[string]map[string]float64{}, upstreamErrors: map[string]float64{}}
	scrape := true
	for range chaosMaxObs {
		changed := w.srv.Router().Changed()
		o := last
		o.scraped = false
		if scrape {
			read := last
			read.readAt = time.Now()
			if err := w.scrape(&read); err != nil {
				w.mu.Lock()
				w.errs++
				w.mu.Unlock()
			} else {
				read.scraped = true
				last, o = read, read
			}
		}
		o.routed = w.routed()
		o.at = time.Now()
		w.mu.Lock()
		w.obs = append(w.obs, o)
		w.mu.Unlock()
		select {
		case <-w.stopCh:
			return
		case <-changed:
			scrape = false
		case <-tick.C:
			scrape = true
		}
	}
}

func (w *chaosWatcher) routed() map[string]bool {
	snap := w.srv.Router().Snapshot()
	m := map[string]bool{}
	for i := range snap.Regions {
		for _, b := range snap.Regions[i].Healthy {
			m[b.ID] = true
		}
	}
	return m
}

// scrape reads /admin/status and /metrics into o.
func (w *chaosWatcher) scrape(o *chaosObs) error {
	body, err := w.get("/admin/status")
	if err != nil {
		return err
	}
	var st struct {
		Regions []struct {
			Backends []map[string]any `json:"backends"`
		} `json:"regions"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("/admin/status: %w", err)
	}
	o.status, o.ejected = map[string]string{}, map[string]bool{}
	now := time.Now()
	for _, r := range st.Regions {
		for _, b := range r.Backends {
			url, _ := b["url"].(string)
			status, _ := b["status"].(string)
			o.status[url] = status
			o.ejected[url] = backendShownEjected(b, status, now)
		}
	}
	body, err = w.get("/metrics")
	if err != nil {
		return err
	}
	text := string(body)
	o.ejections, o.reasons = map[string]float64{}, map[string]map[string]float64{}
	for _, s := range parseSeries(text, "geoproxy_backend_ejections_total") {
		be := s.labels["backend"]
		o.ejections[be] += s.value
		if o.reasons[be] == nil {
			o.reasons[be] = map[string]float64{}
		}
		o.reasons[be][s.labels["reason"]] += s.value
	}
	o.upstreamErrors = map[string]float64{}
	for _, s := range parseSeries(text, "geoproxy_upstream_errors_total") {
		o.upstreamErrors[s.labels["backend"]] += s.value
	}
	return nil
}

// backendShownEjected reads an ejection in a backend of /admin/status,
// whichever way it is shown: a status "ejected", "ejected": true, or an
// "ejected_until" in the future.
func backendShownEjected(b map[string]any, status string, now time.Time) bool {
	if status == "ejected" {
		return true
	}
	if v, ok := b["ejected"].(bool); ok && v {
		return true
	}
	if s, ok := b["ejected_until"].(string); ok && s != "" {
		if until, err := time.Parse(time.RFC3339Nano, s); err == nil && until.After(now) {
			return true
		}
	}
	return false
}

func (w *chaosWatcher) get(path string) ([]byte, error) {
	resp, err := w.client.Get(w.admin + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: status %d", path, resp.StatusCode)
	}
	return body, err
}

func (w *chaosWatcher) stop() {
	w.once.Do(func() {
		close(w.stopCh)
		<-w.done
		w.client.CloseIdleConnections()
	})
}

// observations returns what was seen so far.
func (w *chaosWatcher) observations() []chaosObs {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]chaosObs(nil), w.obs...)
}

// latest returns the last observation.
func (w *chaosWatcher) latest() (chaosObs, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.obs) == 0 {
		return chaosObs{}, false
	}
	return w.obs[len(w.obs)-1], true
}

// chaosSeries is one sample of the Prometheus text format.
type chaosSeries struct {
	labels map[string]string
	value  float64
}

// parseSeries returns the samples of one metric in a Prometheus text
// exposition.
func parseSeries(text, name string) []chaosSeries {
	var out []chaosSeries
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		s := chaosSeries{labels: map[string]string{}}
		if rest[0] == '{' {
			var ok bool
			if rest, ok = parseLabels(rest[1:], s.labels); !ok {
				continue
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// parseLabels reads `k="v",...}` into m and returns what follows the
// closing brace.
func parseLabels(s string, m map[string]string) (string, bool) {
	for range 64 {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return s[1:], true
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || len(s) < eq+2 || s[eq+1] != '"' {
			return "", false
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var v strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(s[i])
				}
				continue
			}
			v.WriteByte(s[i])
		}
		if i == len(s) {
			return "", false
		}
		m[key] = v.String()
		s = s[i+1:]
	}
	return "", false
}

// waitUntil polls cond every 10 ms until it holds or d has passed, and
// reports whether it held.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
