package proxyheader

import "golang.org/x/sys/unix"

// peerEnded reports whether the peer has shut down its side (or the
// connection failed), without waiting.
func peerEnded(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}
