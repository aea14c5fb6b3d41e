package h1

import (
	"io"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/route"
)

// tunnel sends an upgrade request to a backend of pool p on a connection
// of its own; on 101 it passes the answer on and copies bytes both ways
// until either side closes. Any other answer is relayed as a response.
func (c *conn) tunnel(p *pool, region *route.Region) (status int, sent bool, err error) {
	bc, err := c.dial(p)
	if err != nil {
		return 0, false, err
	}
	c.inUse.Store(bc)
	defer func() {
		if r := recover(); r != nil {
			_ = bc.nc.Close()
			panic(r)
		}
		c.inUse.Store(nil)
	}()
	c.out = c.appendRequest(c.out[:0], p, region, true)
	if _, err = c.exchange(bc); err != nil {
		_ = bc.nc.Close()
		return 0, false, err
	}
	if c.resp.status != http.StatusSwitchingProtocols {
		c.wantsEnd = true
		return c.relay(p, bc, region, b2s(c.req.method), false)
	}
	// 101: the head goes as it came (Connection and Upgrade included).
	rs := &c.resp
	out := append(c.out[:0], "HTTP/1.1 101 "...)
	out = append(out, rs.reason...)
	out = append(out, "\r\n"...)
	for _, f := range rs.fields {
		if c.e.opts.RegionHeader != "" && equalFold2(f.name, c.e.opts.RegionHeader) {
			continue
		}
		out = appendField(out, f.name, f.value)
	}
	if c.e.opts.RegionHeader != "" {
		out = append(out, c.e.opts.RegionHeader...)
		out = append(out, ": "...)
		out = append(out, region.Name...)
		out = append(out, "\r\n"...)
	}
	c.out = append(out, "\r\n"...)
	if !c.e.track(bc.nc) {
		_ = bc.nc.Close()
		return 0, false, errShuttingDown
	}
	defer c.e.untrack(bc.nc)
	defer bc.nc.Close()
	c.now = time.Now() // the backend may have taken a while to switch
	c.dropBody()       // switched: the body will not be sent again
	if err := c.flush(); err != nil {
		return status, true, err
	}
	c.wantsEnd = true
	// A tunnel lives as long as both sides want: no deadlines.
	_ = c.nc.SetDeadline(time.Time{})
	_ = bc.nc.SetDeadline(time.Time{})
	c.e.wg.Add(1)
	done := make(chan struct{})
	t := c.e.idleTimeout
	go func() {
		defer c.e.wg.Done()
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				c.e.panics.Add(1)
				c.e.log.Error("panic in a tunnel; it was closed", zap.Any("panic", r), zap.StackSkip("stack", 1))
				_ = c.nc.Close()
				_ = bc.nc.Close()
			}
		}()
		pump(bc.nc, c.br, t) // the client's bytes, buffered ones first
		// The client is done sending: the backend has the idle timeout
		// to finish, rather than forever.
		closeWrite(bc.nc)
		_ = bc.nc.SetReadDeadline(time.Now().Add(t))
	}()
	p.be.Acquire()
	pump(c.nc, bc.br, t)
	p.be.Release()
	_ = c.nc.Close()
	<-done
	return http.StatusSwitchingProtocols, true, nil
}

// pump copies a tunnel's bytes from src to dst until either fails. Reading
// may wait as long as it takes (a quiet WebSocket), but each write must
// finish within t: a side that stops reading is given up on.
func pump(dst net.Conn, src io.Reader, t time.Duration) {
	buf := make([]byte, 32<<10)
	var armed time.Time
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if now := time.Now(); now.Sub(armed) > t/4 {
				_ = dst.SetWriteDeadline(now.Add(t))
				armed = now
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func closeWrite(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
