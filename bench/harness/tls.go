//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The cases: the same targets measured over plain HTTP/1.1 (wrk), HTTP/1.1 over TLS (wrk
// with an https URL) and HTTP/2 over TLS (h2load).
const (
	casePlain = "plain"
	caseHTTPS = "https"
	caseH2    = "h2"
)

var allCases = []string{casePlain, caseHTTPS, caseH2}

// tlsCapable: the targets that get a TLS listener. direct is the backend, which speaks
// plain HTTP only.
func tlsCapable(name string) bool { return name != "direct" }

// certFiles is the one certificate every target's TLS listener serves.
type certFiles struct {
	cert, key string // PEM certificate and PKCS #8 key, for nginx, Caddy and geoproxy
	pem       string // both in one file, for HAProxy's "crt"
	leaf      *x509.Certificate
}

// pool trusts the certificate, and nothing else.
func (c *certFiles) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.leaf)
	return p
}

// writeCert makes a self-signed ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost,
// valid from an hour ago for a week, and writes it with its key into dir.
func writeCert(dir string) (*certFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "geoproxy bench", Organization: []string{"geoproxy bench"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	c := &certFiles{
		cert: filepath.Join(dir, "proxy.crt"),
		key:  filepath.Join(dir, "proxy.key"),
		pem:  filepath.Join(dir, "proxy.pem"),
		leaf: leaf,
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{c.cert, certPEM, 0o644}, {c.key, keyPEM, 0o600}, {c.pem, append(append([]byte{}, certPEM...), keyPEM...), 0o600}} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// checkTLS is check over TLS: the target must present the bench's certificate (verified
// against it, for 127.0.0.1) and answer as over plain HTTP; with h2 it must also speak
// HTTP/2 by ALPN. It retries for at most timeout while the listener refuses connections.
func checkTLS(ctx context.Context, t *target, cert *certFiles, h2 bool, timeout time.Duration) error {
	tr := &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: cert.pool(), ServerName: "127.0.0.1"}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	deadline := time.Now().Add(timeout)
	for {
		err := checkTLSOnce(ctx, client, t, cert, false)
		if err == nil && h2 {
			tr2 := &http.Transport{Proxy: nil, ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: cert.pool(), ServerName: "127.0.0.1"}}
			err = checkTLSOnce(ctx, &http.Client{Timeout: 2 * time.Second, Transport: tr2}, t, cert, true)
			tr2.CloseIdleConnections()
		}
		if err == nil || !errors.Is(err, errRefused) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var errRefused = errors.New("connection refused")

func checkTLSOnce(ctx context.Context, client *http.Client, t *target, cert *certFiles, h2 bool) error {
	for _, c := range clients {
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+t.tlsAddr()+"/", nil)
		req.Header.Set("X-Forwarded-For", c.addr)
		resp, err := client.Do(req)
		if err != nil {
			if strings.Contains(err.Error(), "connection refused") {
				return fmt.Errorf("%w: %v", errRefused, err)
			}
			return err
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		proto := "HTTP/1.1"
		if h2 {
			proto = "HTTP/2.0"
		}
		switch {
		case resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || !resp.TLS.PeerCertificates[0].Equal(cert.leaf):
			return errors.New("the TLS listener does not present the bench's certificate")
		case resp.Proto != proto:
			return fmt.Errorf("GET / over TLS answered in %s; want %s", resp.Proto, proto)
		case resp.StatusCode != 200 || string(body) != backendBody:
			return fmt.Errorf("GET / over TLS (X-Forwarded-For: %s): status %d, body %q; want 200 and %q", c.addr, resp.StatusCode, body, backendBody)
		case strings.HasPrefix(t.name, "geoproxy") && resp.Header.Get("X-Geoproxy-Region") != t.regions[c.addr]:
			return fmt.Errorf("GET / over TLS (X-Forwarded-For: %s): served by region %q, over plain HTTP by %q",
				c.addr, resp.Header.Get("X-Geoproxy-Region"), t.regions[c.addr])
		}
	}
	return nil
}

// h2Result is what one h2load run reports.
type h2Result struct {
	Requests  int64 // done in the measured time
	Succeeded int64
	Failed    int64 // failed + errored + timeout
	Non2xx    int64
	RPS       float64
	Mean      time.Duration // mean time for request
	Max       time.Duration

	LoadCPU time.Duration // h2load's own CPU time
	Other   float64       // CPU used meanwhile by other processes on the machine, in cores
}

func (r h2Result) errors() int64 { return r.Failed + r.Non2xx }

// runH2load runs h2load closed-loop against url for d: threads threads, conns connections,
// streams requests in flight on each, every request with the same X-Forwarded-For (h2load
// sends the same headers on every request).
func runH2load(ctx context.Context, url string, threads, conns, streams int, xff string, d time.Duration) (h2Result, error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+20*time.Second)
	defer cancel()
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-m", strconv.Itoa(streams),
		"-D", strconv.Itoa(secs), "-H", "X-Forwarded-For: " + xff, url}
	cmd := exec.CommandContext(ctx, "h2load", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return h2Result{}, fmt.Errorf("h2load %s: %v\n%s", strings.Join(args, " "), err, indent(string(out)))
	}
	r, err := parseH2load(string(out))
	r.LoadCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if err != nil {
		return r, fmt.Errorf("h2load %s: %v; its output:\n%s", strings.Join(args, " "), err, indent(string(out)))
	}
	if r.Succeeded == 0 {
		return r, fmt.Errorf("h2load %s: no request succeeded; its output:\n%s", strings.Join(args, " "), indent(string(out)))
	}
	return r, nil
}

var (
	reH2Finished = regexp.MustCompile(`^finished in [0-9.]+\w+, ([0-9.]+) req/s`)
	reH2Requests = regexp.MustCompile(`^requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reH2Status   = regexp.MustCompile(`^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
	reH2Time     = regexp.MustCompile(`^time for request:\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)`)
)

// parseH2load reads the summary h2load (nghttp2 1.4x and later) prints.
func parseH2load(out string) (h2Result, error) {
	var r h2Result
	var haveFin, haveReq, haveTime bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := reH2Finished.FindStringSubmatch(line); m != nil {
			r.RPS, _ = strconv.ParseFloat(m[1], 64)
			haveFin = true
		} else if m := reH2Requests.FindStringSubmatch(line); m != nil {
			n := make([]int64, 5)
			for i := range n {
				n[i], _ = strconv.ParseInt(m[i+1], 10, 64)
			}
			r.Requests, r.Succeeded, r.Failed = n[0], n[1], n[2]+n[3]+n[4]
			haveReq = true
		} else if m := reH2Status.FindStringSubmatch(line); m != nil {
			for _, s := range m[2:] {
				n, _ := strconv.ParseInt(s, 10, 64)
				r.Non2xx += n
			}
		} else if m := reH2Time.FindStringSubmatch(line); m != nil {
			var err error
			if r.Max, err = parseWrkDuration(m[3], m[4]); err != nil {
				return r, err
			}
			if r.Mean, err = parseWrkDuration(m[5], m[6]); err != nil {
				return r, err
			}
			haveTime = true
		}
	}
	var missing []string
	if !haveFin {
		missing = append(missing, `"finished in T, N req/s"`)
	}
	if !haveReq {
		missing = append(missing, `"requests: N total"`)
	}
	if !haveTime {
		missing = append(missing, `"time for request"`)
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("cannot read h2load's output: no %s", strings.Join(missing, ", "))
	}
	return r, nil
}

// negotiated is the TLS version, cipher suite and key exchange that OpenSSL's default client,
// which is what wrk uses, gets from addr ("" if openssl is not installed or fails).
func negotiated(ctx context.Context, addr string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "openssl", "s_client", "-brief", "-connect", addr, "-servername", "127.0.0.1").CombinedOutput()
	if err != nil {
		return ""
	}
	var version, suite, kx string
	for line := range strings.Lines(string(out)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Protocol version":
			version = v
		case "Ciphersuite":
			suite = v
		case "Server Temp Key", "Peer Temp Key":
			kx, _, _ = strings.Cut(v, ",")
		}
	}
	if version == "" || suite == "" {
		return ""
	}
	return strings.TrimSpace(version + " " + suite + " " + kx)
}

// cpuProfile takes geoproxy's CPU profile from its admin listener (admin.pprof) for d while
// load runs, started at the same time and a second longer, and writes it to path.
func cpuProfile(ctx context.Context, admin string, d time.Duration, load func(time.Duration) error, path string) error {
	secs := max(int(d/time.Second), 1)
	type result struct {
		data []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		client := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second, Transport: &http.Transport{Proxy: nil}}
		defer client.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, secs), nil)
		resp, err := client.Do(req)
		if err != nil {
			got <- result{nil, err}
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET /debug/pprof/profile: status %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
		}
		got <- result{data, err}
	}()
	lerr := load(time.Duration(secs+1) * time.Second)
	r := <-got
	if lerr != nil {
		return lerr
	}
	if r.err != nil {
		return r.err
	}
	return os.WriteFile(path, r.data, 0o644)
}
