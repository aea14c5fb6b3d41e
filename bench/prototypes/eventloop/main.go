//go:build linux

// Command eventloop is a measuring prototype, not part of geoproxy: an
// nginx-style proxy on raw epoll (level-triggered), one event loop per core,
// each owning its client and backend sockets, blocking in epoll_wait without
// the Go scheduler. It forwards GET requests with a Content-Length answer to
// one backend and does nothing else: no routing, no validation, no timeouts.
// See README.md for what it measured and how.
//
//	eventloop LISTEN_PORT BACKEND_PORT   (both on 127.0.0.1)
package main

import (
	"bytes"
	"log"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

type side struct {
	fd    int
	in    []byte
	peer  *side // client <-> backend
	isCli bool
	busy  bool // client: waiting for backend answer
}

type loop struct {
	ep      int
	conns   map[int]*side
	idleBk  []*side
	backend syscall.Sockaddr
	events  []syscall.EpollEvent
}

func (l *loop) add(fd int, s *side) {
	syscall.SetNonblock(fd, true)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	l.conns[fd] = s
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, fd, &ev)
}

func (l *loop) closeSide(s *side) {
	syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, s.fd, nil)
	syscall.Close(s.fd)
	delete(l.conns, s.fd)
}

func (l *loop) getBackend() *side {
	if n := len(l.idleBk); n > 0 {
		b := l.idleBk[n-1]
		l.idleBk = l.idleBk[:n-1]
		return b
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil
	}
	if err := syscall.Connect(fd, l.backend); err != nil {
		syscall.Close(fd)
		return nil
	}
	b := &side{fd: fd, in: make([]byte, 0, 4096)}
	l.add(fd, b)
	return b
}

var crlf2 = []byte("\r\n\r\n")
var clKey = []byte("content-length:")

func contentLength(h []byte) int {
	for len(h) > 0 {
		i := bytes.IndexByte(h, '\n')
		if i < 0 {
			break
		}
		line := h[:i]
		h = h[i+1:]
		if len(line) > 15 && bytes.EqualFold(line[:15], clKey) {
			n, _ := strconv.Atoi(string(bytes.TrimSpace(line[15:])))
			return n
		}
	}
	return 0
}

func (l *loop) run(lnfd int) {
	runtime.LockOSThread()
	buf := make([]byte, 16384)
	out := make([]byte, 0, 4096)
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(l.ep), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 10, 0, 0)
		n := int(r)
		if e != 0 || n <= 0 {
			continue
		}
		for _, ev := range l.events[:n] {
			fd := int(ev.Fd)
			if fd == lnfd {
				for {
					cfd, _, err := syscall.Accept4(lnfd, syscall.SOCK_NONBLOCK)
					if err != nil {
						break
					}
					l.add(cfd, &side{fd: cfd, isCli: true, in: make([]byte, 0, 4096)})
				}
				continue
			}
			s := l.conns[fd]
			if s == nil {
				continue
			}
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
			m := int(r)
			var err error
			if e != 0 {
				m, err = -1, e
			}
			if m <= 0 {
				if err == syscall.EAGAIN {
					continue
				}
				if s.peer != nil {
					if !s.isCli {
						l.closeSide(s.peer) // its answer is lost
					}
					s.peer.peer = nil
				}
				if !s.isCli {
					for k, b := range l.idleBk {
						if b == s {
							l.idleBk = append(l.idleBk[:k], l.idleBk[k+1:]...)
							break
						}
					}
				}
				l.closeSide(s)
				continue
			}
			s.in = append(s.in, buf[:m]...)
			if s.isCli {
				if s.busy {
					continue
				}
				i := bytes.Index(s.in, crlf2)
				if i < 0 {
					continue
				}
				head := s.in[:i+2]
				b := l.getBackend()
				if b == nil {
					l.closeSide(s)
					continue
				}
				b.peer, s.peer, s.busy = s, b, true
				out = append(out[:0], head...)
				out = append(out, "X-Geo: x\r\n\r\n"...)
				s.in = s.in[:copy(s.in, s.in[i+4:])]
				syscall.RawSyscall(syscall.SYS_WRITE, uintptr(b.fd), uintptr(unsafe.Pointer(&out[0])), uintptr(len(out)))
			} else {
				i := bytes.Index(s.in, crlf2)
				if i < 0 {
					continue
				}
				cl := contentLength(s.in[:i])
				if len(s.in) < i+4+cl {
					continue
				}
				c := s.peer
				total := i + 4 + cl
				if c != nil {
					syscall.RawSyscall(syscall.SYS_WRITE, uintptr(c.fd), uintptr(unsafe.Pointer(&s.in[0])), uintptr(total))
					c.busy, c.peer = false, nil
				}
				s.in = s.in[:copy(s.in, s.in[total:])]
				s.peer = nil
				l.idleBk = append(l.idleBk, s)
			}
		}
	}
}

func main() {
	lnfd, _ := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
	syscall.SetsockoptInt(lnfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	syscall.SetsockoptInt(lnfd, syscall.SOL_SOCKET, 15 /* SO_REUSEPORT */, 1)
	port, _ := strconv.Atoi(os.Args[1])
	if err := syscall.Bind(lnfd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		log.Fatal(err)
	}
	syscall.Listen(lnfd, 4096)
	bport, _ := strconv.Atoi(os.Args[2])
	nloops := 2
	for i := 0; i < nloops; i++ {
		ep, _ := syscall.EpollCreate1(0)
		l := &loop{ep: ep, conns: map[int]*side{}, backend: &syscall.SockaddrInet4{Port: bport, Addr: [4]byte{127, 0, 0, 1}}, events: make([]syscall.EpollEvent, 256)}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | 1<<28 /* EPOLLEXCLUSIVE */, Fd: int32(lnfd)}
		syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, lnfd, &ev)
		if i == nloops-1 {
			l.run(lnfd)
		}
		go l.run(lnfd)
	}
}
