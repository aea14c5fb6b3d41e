package certs

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geoproxy/geoproxy/certs/certstest"
	"github.com/geoproxy/geoproxy/config"
)

// ignoreLockRefresh ignores certmagic's refreshers of released lock
// files, which end up to 5 s later; TestMain waits for them.
var ignoreLockRefresh = goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh")

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// Everything the tests started must have ended, including
		// certmagic's lock refreshers, which take up to 5 s.
		var err error
		for deadline := time.Now().Add(15 * time.Second); ; {
			if err = goleak.Find(certstest.LeakOptions()...); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkLeaks fails t if goroutines started during the test are left
// once its cleanups have run. Call it first so its cleanup runs last.
func checkLeaks(t *testing.T, extra ...goleak.Option) {
	t.Helper()
	opts := append(append([]goleak.Option{goleak.IgnoreCurrent()}, certstest.LeakOptions()...), extra...)
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

// testLogger records warnings and errors; with CERTS_TEST_LOG=1 it also
// prints everything to stderr.
func testLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.WarnLevel)
	if os.Getenv("CERTS_TEST_LOG") == "1" {
		core = zapcore.NewTee(core, zapcore.NewCore(
			zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
			zapcore.Lock(os.Stderr), zapcore.DebugLevel))
	}
	return zap.New(core), logs
}

// testCA issues certificates for the tests, for server authentication.
type testCA struct {
	*certstest.CA
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := certstest.NewCA(t, "geoproxy test CA")
	return &testCA{CA: ca, pool: ca.Pool}
}

func newKey(t *testing.T) *ecdsa.PrivateKey { return certstest.NewKey(t) }

func keyPEM(t *testing.T, key *ecdsa.PrivateKey) []byte { return certstest.KeyPEM(t, key) }

// issue signs a certificate for names (DNS names or IP addresses) with
// key and returns it as PEM and its serial number.
func (ca *testCA) issue(t *testing.T, key *ecdsa.PrivateKey, names ...string) ([]byte, int64) {
	t.Helper()
	return ca.Issue(t, key, x509.ExtKeyUsageServerAuth, names...)
}

// writePair writes a new certificate for names under dir/base.crt and
// dir/base.key and returns the pair and the certificate's serial.
func (ca *testCA) writePair(t *testing.T, dir, base string, names ...string) (config.CertPair, int64) {
	t.Helper()
	key := newKey(t)
	certPEM, sn := ca.issue(t, key, names...)
	p := config.CertPair{Cert: filepath.Join(dir, base+".crt"), Key: filepath.Join(dir, base+".key")}
	require.NoError(t, os.WriteFile(p.Cert, certPEM, 0o600))
	require.NoError(t, os.WriteFile(p.Key, keyPEM(t, key), 0o600))
	return p, sn
}

// replaceFile writes data to a temporary file in path's directory and
// renames it over path, as mv and deployment tools do.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// tlsServer accepts TLS connections, completes their handshake and
// echoes lines back. Connections that negotiated acme-tls/1 are closed
// after the handshake and counted.
type tlsServer struct {
	ln             net.Listener
	addr           string
	wg             sync.WaitGroup
	mu             sync.Mutex
	conns          map[net.Conn]struct{}
	alpnChallenges atomic.Int32
}

// listen binds a TCP listener on the loopback interface.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

// serveTLS serves on ln until the test ends, with a configuration from
// cfg for each connection, as geoproxy's server does.
func serveTLS(t *testing.T, ln net.Listener, cfg func() *tls.Config) *tlsServer {
	t.Helper()
	s := &tlsServer{ln: ln, addr: ln.Addr().String(), conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				s.handle(tls.Server(c, cfg()))
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *tlsServer) handle(c *tls.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	if c.ConnectionState().NegotiatedProtocol == acmeTLS1 {
		s.alpnChallenges.Add(1)
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := c.Write([]byte(line)); err != nil {
			return
		}
	}
}

func (s *tlsServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// handshake connects to addr with cfg and returns the connection state.
func handshake(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.ConnectionState(), nil
}

// servedSerial returns the serial number of the certificate served to a
// client asking for serverName ("" sends no SNI). The chain is verified
// against roots when serverName is not empty.
func servedSerial(t *testing.T, addr, serverName string, roots *x509.CertPool) int64 {
	t.Helper()
	cs, err := handshake(addr, clientConfig(serverName, roots))
	require.NoError(t, err)
	return cs.PeerCertificates[0].SerialNumber.Int64()
}

// clientConfig verifies the server's certificate for serverName against
// roots, or accepts any certificate when serverName is "" (no SNI is
// sent then).
func clientConfig(serverName string, roots *x509.CertPool) *tls.Config {
	if serverName == "" {
		return &tls.Config{InsecureSkipVerify: true}
	}
	return &tls.Config{ServerName: serverName, RootCAs: roots}
}

// eventually polls cond every interval, at most n times.
func eventually(t *testing.T, n int, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < n; i++ {
		if cond() {
			return
		}
		time.Sleep(interval)
	}
	t.Fatalf("%s: not within %s", what, time.Duration(n)*interval)
}

// logged reports whether an entry at error level mentions s.
func logged(logs *observer.ObservedLogs, s string) bool {
	for _, e := range logs.FilterLevelExact(zapcore.ErrorLevel).All() {
		if strings.Contains(e.Message, s) {
			return true
		}
		for _, f := range e.Context {
			if strings.Contains(f.String, s) {
				return true
			}
			if err, ok := f.Interface.(error); ok && strings.Contains(err.Error(), s) {
				return true
			}
		}
	}
	return false
}
