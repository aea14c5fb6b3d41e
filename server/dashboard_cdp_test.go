//go:build unix

package server_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// This file drives a real headless Chromium through the DevTools protocol
// (CDP) over its websocket: a few commands, one at a time, with nothing
// beyond the standard library.

// browserTestsEnv set to 1 makes the browser tests fail, not skip, when
// Chromium is missing.
const browserTestsEnv = "GEOPROXY_BROWSER_TESTS"

// findChromium returns the browser to run, or skips the test.
func findChromium(t *testing.T) string {
	t.Helper()
	demanded := os.Getenv(browserTestsEnv) == "1"
	for _, name := range []string{os.Getenv("GEOPROXY_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if demanded {
		t.Fatalf("%s=1 but no Chromium was found (apt-get install -y chromium, or set GEOPROXY_CHROMIUM)", browserTestsEnv)
	}
	t.Skipf("Chromium is not installed (apt-get install -y chromium); %s=1 makes this a failure", browserTestsEnv)
	return ""
}

// browser is a headless Chromium with one page, driven over CDP.
type browser struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *tailBuffer
	waited chan struct{} // closed once stderr is drained
	ws     *wsConn
	nextID int
	// Seen while reading replies: every request the page sent, and every
	// uncaught JavaScript exception.
	mu         sync.Mutex
	requests   []string
	exceptions []string
}

// tailBuffer keeps the last lines Chromium wrote, for failure messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *tailBuffer) add(l string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, l)
	if len(b.lines) > 40 {
		b.lines = b.lines[len(b.lines)-40:]
	}
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// launchBrowser starts Chromium headless with a width×height window and
// connects to its page; the browser is stopped when the test ends.
func launchBrowser(t *testing.T, chromium string, width, height int) *browser {
	t.Helper()
	profile := t.TempDir()
	cmd := exec.Command(chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--user-data-dir="+profile, "--no-first-run", "--no-default-browser-check",
		"--disable-extensions", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
		"--force-device-scale-factor=1", fmt.Sprintf("--window-size=%d,%d", width, height),
		"about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers stop with it
	cmd.Env = append(os.Environ(), "TZ=UTC")
	pipe, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	b := &browser{t: t, cmd: cmd, stderr: &tailBuffer{}, waited: make(chan struct{})}
	endpoint := make(chan string, 1)
	go func() {
		defer close(b.waited)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			b.stderr.add(line)
			if _, ws, ok := strings.Cut(line, "DevTools listening on "); ok {
				select {
				case endpoint <- strings.TrimSpace(ws):
				default:
				}
			}
		}
	}()
	t.Cleanup(b.stop)
	var ws string
	select {
	case ws = <-endpoint:
	case <-b.waited:
		t.Fatalf("chromium exited before listening:\n%s", b.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("chromium did not start within 30s:\n%s", b.stderr)
	}
	u, err := url.Parse(ws)
	require.NoError(t, err)
	page := pageTarget(t, u.Host)
	b.ws, err = dialWebsocket(page)
	require.NoError(t, err, "connect to the page's DevTools websocket")
	b.call("Page.enable", nil, nil)
	b.call("Runtime.enable", nil, nil)
	b.call("Network.enable", nil, nil)
	b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
	return b
}

// pageTarget returns the websocket address of the browser's first page.
func pageTarget(t *testing.T, host string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var targets []struct {
			Type string `json:"type"`
			WS   string `json:"webSocketDebuggerUrl"`
		}
		resp, err := client.Get("http://" + host + "/json/list")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WS != "" {
				return tg.WS
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page target in chromium's /json/list: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills the browser (nothing of its profile is kept) and waits for
// every one of its processes.
func (b *browser) stop() {
	if b.ws != nil {
		_ = b.ws.conn.Close()
	}
	pgid := b.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-b.waited
	_ = b.cmd.Wait()
	// Its helper processes may outlive it by a moment: wait until the
	// group is gone, so the profile directory can be removed.
	for i := 0; i < 100 && groupAlive(pgid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// groupAlive reports whether a process of group pgid still runs (not a
// zombie waiting to be reaped), as far as /proc tells.
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

// call sends a CDP command and decodes its result into out (if not nil).
func (b *browser) call(method string, params any, out any) {
	b.t.Helper()
	if err := b.callErr(method, params, out); err != nil {
		b.t.Fatalf("%s: %v\nchromium:\n%s", method, err, b.stderr)
	}
}

func (b *browser) callErr(method string, params any, out any) error {
	b.nextID++
	id := b.nextID
	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return err
	}
	if err := b.ws.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return err
	}
	if err := b.ws.send(msg); err != nil {
		return err
	}
	for {
		data, err := b.ws.receive()
		if err != nil {
			return err
		}
		var reply struct {
			ID     int             `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &reply); err != nil {
			return fmt.Errorf("bad CDP message %q: %w", data, err)
		}
		if reply.Method != "" {
			b.event(reply.Method, reply.Params)
			continue
		}
		if reply.ID != id {
			continue
		}
		if reply.Error != nil {
			return errors.New(reply.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(reply.Result, out)
		}
		return nil
	}
}

// event records the requests the page makes and its uncaught exceptions.
func (b *browser) event(method string, params json.RawMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch method {
	case "Network.requestWillBeSent":
		var p struct {
			Request struct {
				URL string `json:"url"`
			} `json:"request"`
		}
		if json.Unmarshal(params, &p) == nil {
			b.requests = append(b.requests, p.Request.URL)
		}
	case "Runtime.exceptionThrown":
		var p struct {
			Details struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		if json.Unmarshal(params, &p) == nil {
			b.exceptions = append(b.exceptions, p.Details.Text+" "+p.Details.Exception.Description)
		}
	}
}

// seen returns the requests and exceptions seen so far.
func (b *browser) seen() (requests, exceptions []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...), append([]string(nil), b.exceptions...)
}

func (b *browser) navigate(u string) {
	b.t.Helper()
	var res struct {
		ErrorText string `json:"errorText"`
	}
	b.call("Page.navigate", map[string]any{"url": u}, &res)
	require.Empty(b.t, res.ErrorText, "navigate to %s", u)
}

// eval evaluates a JavaScript expression in the page and decodes its value
// into out (if not nil).
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if res.Exception != nil {
		b.t.Fatalf("evaluate: %s %s", res.Exception.Text, res.Exception.Exception.Description)
	}
	if out != nil {
		require.NoError(b.t, json.Unmarshal(res.Result.Value, out))
	}
}

// screenshot captures the whole page as a PNG.
func (b *browser) screenshot(width int) []byte {
	b.t.Helper()
	var height int
	b.eval(`Math.ceil(document.documentElement.scrollHeight)`, &height)
	var res struct {
		Data string `json:"data"`
	}
	b.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}, &res)
	raw, err := base64.StdEncoding.DecodeString(res.Data)
	require.NoError(b.t, err)
	_, err = png.DecodeConfig(bytes.NewReader(raw))
	require.NoError(b.t, err, "a PNG")
	return raw
}

// saveScreenshot writes a screenshot into the directory named by
// GEOPROXY_DASHBOARD_SCREENSHOTS (relative to this package), if set, in
// 256 colours.
func saveScreenshot(t *testing.T, name string, shot []byte) {
	t.Helper()
	dir := os.Getenv("GEOPROXY_DASHBOARD_SCREENSHOTS")
	if dir == "" {
		return
	}
	img, err := png.Decode(bytes.NewReader(shot))
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&out, paletted(img)))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, out.Bytes(), 0o644))
	t.Logf("screenshot %s (%d KB)", p, out.Len()/1024)
}

// paletted maps a screenshot to 256 colours: a page is mostly flat
// colours. The palette takes the most frequent colours first, skipping
// any within a few steps of one already taken (anti-aliased shades of
// it), so that a small patch of a colour of its own (a legend's dot) gets
// in; every other colour goes to the nearest.
func paletted(img image.Image) *image.Paletted {
	r := img.Bounds()
	count := map[color.RGBA]int{}
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			count[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	colors := make([]color.RGBA, 0, len(count))
	for c := range count {
		colors = append(colors, c)
	}
	key := func(c color.RGBA) uint32 { return uint32(c.R)<<24 | uint32(c.G)<<16 | uint32(c.B)<<8 | uint32(c.A) }
	sort.Slice(colors, func(i, j int) bool {
		if count[colors[i]] != count[colors[j]] {
			return count[colors[i]] > count[colors[j]]
		}
		return key(colors[i]) < key(colors[j])
	})
	near := func(a, b color.RGBA) bool {
		d := func(x, y uint8) bool { return int(x)-int(y) <= 3 && int(y)-int(x) <= 3 }
		return d(a.R, b.R) && d(a.G, b.G) && d(a.B, b.B) && d(a.A, b.A)
	}
	pal := make(color.Palette, 0, 256)
	taken := []color.RGBA{}
next:
	for _, c := range colors {
		if len(pal) == 256 {
			break
		}
		for _, t := range taken {
			if near(c, t) {
				continue next
			}
		}
		taken = append(taken, c)
		pal = append(pal, c)
	}
	out := image.NewPaletted(r, pal)
	nearest := map[color.RGBA]uint8{}
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			i, ok := nearest[c]
			if !ok {
				i = uint8(pal.Index(c))
				nearest[c] = i
			}
			out.SetColorIndex(x, y, i)
		}
	}
	return out
}

// wsConn is a client websocket connection (RFC 6455), enough for CDP:
// text messages, fragmented or not, and pings.
type wsConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialWebsocket(addr string) (*wsConn, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	k := base64.StdEncoding.EncodeToString(key)
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", u.RequestURI(), u.Host, k)
	if err != nil {
		conn.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	resp.Body.Close()
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	return &wsConn{conn: conn, r: r}, nil
}

// send writes one masked frame with opcode 1 (text), or op if given.
func (c *wsConn) send(payload []byte, op ...byte) error {
	opcode := byte(1)
	if len(op) > 0 {
		opcode = op[0]
	}
	hdr := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := make([]byte, 4)
	_, _ = rand.Read(mask)
	hdr = append(hdr, mask...)
	masked := make([]byte, len(payload))
	for i, v := range payload {
		masked[i] = v ^ mask[i%4]
	}
	_, err := c.conn.Write(append(hdr, masked...))
	return err
}

// receive returns the next text or binary message, answering pings.
func (c *wsConn) receive() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var x [2]byte
			if _, err := io.ReadFull(c.r, x[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(x[:]))
		case 127:
			var x [8]byte
			if _, err := io.ReadFull(c.r, x[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(x[:])
		}
		var mask []byte
		if h[1]&0x80 != 0 {
			mask = make([]byte, 4)
			if _, err := io.ReadFull(c.r, mask); err != nil {
				return nil, err
			}
		}
		if n > 64<<20 {
			return nil, fmt.Errorf("websocket frame of %d bytes", n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return nil, err
		}
		if mask != nil {
			for i := range payload {
				payload[i] ^= mask[i%4]
			}
		}
		switch op {
		case 8:
			return nil, errors.New("websocket closed by chromium")
		case 9:
			if err := c.send(payload, 10); err != nil {
				return nil, err
			}
			continue
		case 10:
			continue
		}
		msg = append(msg, payload...)
		if fin {
			return msg, nil
		}
	}
}
