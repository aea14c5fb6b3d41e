package certs

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"

	"github.com/geoproxy/geoproxy/config"
)

// Reloads are polled for at most pollCount*pollEvery: the debounce is
// 200ms, the rest is slack for a loaded machine.
const (
	pollCount = 100
	pollEvery = 50 * time.Millisecond
)

// openConn keeps a TLS connection to srv and round-trips lines on it
// until ctx ends; the result reports the first failure and how many
// round trips succeeded.
type openConn struct {
	conn  *tls.Conn
	done  chan struct{}
	err   error
	trips int
}

func keepConnBusy(ctx context.Context, t *testing.T, addr string, cfg *tls.Config) *openConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	require.NoError(t, err)
	oc := &openConn{conn: c, done: make(chan struct{})}
	go func() {
		defer close(oc.done)
		r := bufio.NewReader(c)
		for i := 0; ctx.Err() == nil; i++ {
			msg := fmt.Sprintf("ping %d\n", i)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				oc.err = err
				return
			}
			got, err := r.ReadString('\n')
			if err != nil || got != msg {
				oc.err = fmt.Errorf("round trip %d: got %q, %v", i, got, err)
				return
			}
			oc.trips++
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return oc
}

func (oc *openConn) stop(cancel context.CancelFunc) {
	cancel()
	<-oc.done
	oc.conn.Close()
}

func TestReloadReplacedFile(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	key := newKey(t)
	cert1, sn1 := ca.issue(t, key, "a.example.com")
	pair := config.CertPair{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "a.key")}
	require.NoError(t, os.WriteFile(pair.Cert, cert1, 0o600))
	require.NoError(t, os.WriteFile(pair.Key, keyPEM(t, key), 0o600))

	log, logs := testLogger()
	m, err := New(Options{Pairs: []config.CertPair{pair}, Log: log})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	// One configuration for the listener's life, as http.Server keeps:
	// reloads reach it through GetCertificate.
	cfg := m.TLSConfig()
	srv := serveTLS(t, listen(t), func() *tls.Config { return cfg })
	served := func() int64 { return servedSerial(t, srv.addr, "a.example.com", ca.pool) }
	require.Equal(t, sn1, served())

	ctx, cancel := context.WithCancel(context.Background())
	oc := keepConnBusy(ctx, t, srv.addr, clientConfig("a.example.com", ca.pool))
	defer oc.stop(cancel)

	// A new certificate replaces the file by rename.
	cert2, sn2 := ca.issue(t, key, "a.example.com")
	replaceFile(t, pair.Cert, cert2)
	eventually(t, pollCount, pollEvery, "new certificate served", func() bool { return served() == sn2 })

	// A half-written file is refused, the error names the file, and the
	// certificate in service stays.
	errs := logs.FilterLevelExact(zapcore.ErrorLevel).Len()
	cert3, _ := ca.issue(t, key, "a.example.com")
	replaceFile(t, pair.Cert, cert3[:len(cert3)/2])
	eventually(t, pollCount, pollEvery, "error logged for the half-written file", func() bool {
		return logs.FilterLevelExact(zapcore.ErrorLevel).Len() > errs
	})
	assert.True(t, logged(logs, pair.Cert), "the error names %s", pair.Cert)
	assert.Equal(t, sn2, served())

	// A certificate that does not match the key is refused too.
	errs = logs.FilterLevelExact(zapcore.ErrorLevel).Len()
	other, _ := ca.issue(t, newKey(t), "a.example.com")
	replaceFile(t, pair.Cert, other)
	eventually(t, pollCount, pollEvery, "error logged for the mismatched key", func() bool {
		return logs.FilterLevelExact(zapcore.ErrorLevel).Len() > errs
	})
	assert.Equal(t, sn2, served())

	// A later good write is taken.
	cert4, sn4 := ca.issue(t, key, "a.example.com")
	replaceFile(t, pair.Cert, cert4)
	eventually(t, pollCount, pollEvery, "good certificate served after bad ones", func() bool { return served() == sn4 })

	// A new key and certificate, renamed one after the other, are taken
	// once both are in place.
	key5 := newKey(t)
	cert5, sn5 := ca.issue(t, key5, "a.example.com")
	replaceFile(t, pair.Key, keyPEM(t, key5))
	replaceFile(t, pair.Cert, cert5)
	eventually(t, pollCount, pollEvery, "new key and certificate served", func() bool { return served() == sn5 })

	// The connection opened before the first reload kept working all
	// along, with the certificate it started with.
	oc.stop(cancel)
	require.NoError(t, oc.err)
	assert.Greater(t, oc.trips, 10)
	assert.Equal(t, sn1, oc.conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64())
}

// TestReloadSymlinkSwap replaces the files the way Kubernetes updates a
// mounted secret: the files are symlinks through a "..data" symlink,
// which is swapped by rename to a new directory.
func TestReloadSymlinkSwap(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	writeVersion := func(v string) int64 {
		_, sn := ca.writePair(t, mkdir(t, filepath.Join(dir, v)), "tls", "a.example.com")
		return sn
	}
	sn1 := writeVersion("..v1")
	require.NoError(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
	require.NoError(t, os.Symlink(filepath.Join("..data", "tls.crt"), filepath.Join(dir, "tls.crt")))
	require.NoError(t, os.Symlink(filepath.Join("..data", "tls.key"), filepath.Join(dir, "tls.key")))
	pair := config.CertPair{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}

	m, err := New(Options{Pairs: []config.CertPair{pair}})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	srv := serveTLS(t, listen(t), m.TLSConfig)
	served := func() int64 { return servedSerial(t, srv.addr, "a.example.com", ca.pool) }
	require.Equal(t, sn1, served())

	swap := func(v string) {
		require.NoError(t, os.Symlink(v, filepath.Join(dir, "..data_tmp")))
		require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	}
	sn2 := writeVersion("..v2")
	swap("..v2")
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "..v1")))
	eventually(t, pollCount, pollEvery, "certificate of the swapped secret served", func() bool { return served() == sn2 })

	sn3 := writeVersion("..v3")
	swap("..v3")
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "..v2")))
	eventually(t, pollCount, pollEvery, "certificate of the second swap served", func() bool { return served() == sn3 })
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o700))
	return dir
}

func TestUpdate(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	pa, snA := ca.writePair(t, dir, "a", "a.example.com")
	pb, snB := ca.writePair(t, dir, "b", "b.example.com")

	m, err := New(Options{Pairs: []config.CertPair{pa}})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	srv := serveTLS(t, listen(t), m.TLSConfig)
	insecure := func(name string) int64 {
		cs, err := handshake(srv.addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		require.NoError(t, err)
		return cs.PeerCertificates[0].SerialNumber.Int64()
	}
	assert.Equal(t, snA, insecure("b.example.com"), "b is unknown yet: default")

	require.NoError(t, m.Update(Options{Pairs: []config.CertPair{pa, pb}}))
	assert.Equal(t, snB, servedSerial(t, srv.addr, "b.example.com", ca.pool))

	// A reload with a broken pair changes nothing.
	missing := config.CertPair{Cert: filepath.Join(dir, "missing.crt"), Key: pb.Key}
	err = m.Update(Options{Pairs: []config.CertPair{pb, missing}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), missing.Cert)
	assert.Equal(t, snA, insecure("x.example.com"), "a is still the default")
	assert.Equal(t, snB, servedSerial(t, srv.addr, "b.example.com", ca.pool))

	// Update reads the files again even when the watcher has not yet
	// noticed a change: the new certificate is served when Update
	// returns.
	key := newKey(t)
	certB2, snB2 := ca.issue(t, key, "b.example.com")
	require.NoError(t, os.WriteFile(pb.Key, keyPEM(t, key), 0o600))
	require.NoError(t, os.WriteFile(pb.Cert, certB2, 0o600))
	require.NoError(t, m.Update(Options{Pairs: []config.CertPair{pa, pb}}))
	assert.Equal(t, snB2, servedSerial(t, srv.addr, "b.example.com", ca.pool))

	// Removing a pair and moving the default to another directory,
	// which is then watched.
	dir2 := t.TempDir()
	pc, snC := ca.writePair(t, dir2, "c", "c.example.com")
	require.NoError(t, m.Update(Options{Pairs: []config.CertPair{pc}}))
	assert.Equal(t, snC, insecure("b.example.com"), "b was removed: default")
	keyC2 := newKey(t)
	certC2, snC2 := ca.issue(t, keyC2, "c.example.com")
	replaceFile(t, pc.Key, keyPEM(t, keyC2))
	replaceFile(t, pc.Cert, certC2)
	eventually(t, pollCount, pollEvery, "change in the new directory picked up", func() bool {
		return servedSerial(t, srv.addr, "c.example.com", ca.pool) == snC2
	})

	m.Close()
	require.Error(t, m.Update(Options{Pairs: []config.CertPair{pc}}), "update after close")
}
