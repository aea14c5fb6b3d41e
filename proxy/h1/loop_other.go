//go:build !linux

package h1

import "net"

// Event loops are built on epoll: elsewhere, every connection gets a
// goroutine.

type loop struct{}

type loopState struct{ lp *loop }

func loopsFor(Options, int) int { return 0 }

func (e *Engine) startLoops() {}

func (e *Engine) toLoop(net.Conn) bool { return false }

func (e *Engine) signalLoops(bool) {}
