package h1

import (
	"net"
	"sync"
)

// bodyChunk is the size of the pieces a request body is held in.
const bodyChunk = 16 << 10

// body is a request body held in memory, in chunks of bodyChunk bytes: a
// body of up to bodyChunk bytes (the common case) is one chunk, and a
// growing body takes another chunk rather than being copied into a larger
// buffer. So what a body holds is exactly what the memory budget counts,
// and its growth leaves no garbage behind; chunks go back to the engine's
// pool when the request ends.
type body struct {
	chunks [][]byte // every one bodyChunk long but the last
}

// size returns the body's length.
func (b *body) size() int {
	n := 0
	for _, c := range b.chunks {
		n += len(c)
	}
	return n
}

// room returns the free space after the body's last byte; empty when the
// last chunk is full (or there is none).
func (b *body) room() []byte {
	if len(b.chunks) == 0 {
		return nil
	}
	last := b.chunks[len(b.chunks)-1]
	return last[len(last):cap(last)]
}

// wrote extends the body by n bytes written into room.
func (b *body) wrote(n int) {
	last := &b.chunks[len(b.chunks)-1]
	*last = (*last)[:len(*last)+n]
}

// append adds p, taking chunks from a as needed; false when a cannot give
// one (the memory budget is spent).
func (b *body) append(p []byte, a chunker) bool {
	for len(p) > 0 {
		room := b.room()
		if len(room) == 0 {
			if !b.grow(a) {
				return false
			}
			room = b.room()
		}
		n := copy(room, p)
		b.wrote(n)
		p = p[n:]
	}
	return true
}

// grow adds an empty chunk; false when a cannot give one.
func (b *body) grow(a chunker) bool {
	var c []byte
	if a == nil {
		c = make([]byte, 0, bodyChunk)
	} else if c = a.chunk(); c == nil {
		return false
	}
	b.chunks = append(b.chunks, c)
	return true
}

// buffers returns the chunks to write, for writev.
func (b *body) buffers() net.Buffers {
	return append(net.Buffers(nil), b.chunks...)
}

// chunker gives a body its chunks.
type chunker interface {
	// chunk returns an empty chunk of capacity bodyChunk, or nil when the
	// memory budget cannot give one.
	chunk() []byte
}

// chunkPool keeps the chunks of bodies that ended, for the next ones: as
// many as the memory budget holds, at most, so that a flood of uploads
// reuses the same memory instead of leaving garbage for the collector
// (which would let the process grow to twice what is live before it
// collects). trim lets half of them go at each call, so that the memory
// goes back when the flood has passed.
type chunkPool struct {
	mu   sync.Mutex
	free [][]byte
	max  int
}

func (cp *chunkPool) get() []byte {
	cp.mu.Lock()
	if n := len(cp.free); n > 0 {
		c := cp.free[n-1]
		cp.free[n-1] = nil
		cp.free = cp.free[:n-1]
		cp.mu.Unlock()
		return c[:0]
	}
	cp.mu.Unlock()
	return make([]byte, 0, bodyChunk)
}

func (cp *chunkPool) put(c []byte) {
	if cap(c) != bodyChunk {
		return
	}
	cp.mu.Lock()
	if len(cp.free) < cp.max {
		cp.free = append(cp.free, c)
	}
	cp.mu.Unlock()
}

// trim lets half of the free chunks go.
func (cp *chunkPool) trim() {
	cp.mu.Lock()
	keep := len(cp.free) / 2
	clear(cp.free[keep:])
	cp.free = cp.free[:keep]
	cp.mu.Unlock()
}

// chunk takes a chunk for the request's body, within the memory budget.
func (c *conn) chunk() []byte {
	if !c.hold(&c.held.body, c.held.body+bodyChunk) {
		return nil
	}
	return c.e.chunks.get()
}

// dropBody gives the body's chunks back, and their budget.
func (c *conn) dropBody() {
	for i, ch := range c.body.chunks {
		c.e.chunks.put(ch)
		c.body.chunks[i] = nil
	}
	c.body.chunks = c.body.chunks[:0]
	c.hold(&c.held.body, 0)
}
