package h1

import (
	"errors"
	"sync/atomic"
)

// errMemory: a request needs memory the engine's budget no longer has
// (503 with Retry-After, and the connection closed).
var errMemory = errors.New("too many requests held at once; try again later")

// budget is the memory the engine may hold for clients' requests at once
// (Options.RequestMemory): request bodies, kept so that a failed attempt can
// be repeated, and read buffers grown past their first size for long heads,
// chunk lines and pipelined requests. A connection takes from it before it
// grows such a buffer and gives back when it lets go of one; a connection
// that cannot take is refused. So however many clients send slowly, or send
// large bodies at once, what they make the engine hold stays under the
// limit.
type budget struct {
	limit   int64
	used    atomic.Int64
	refused atomic.Int64 // requests refused for want of memory
}

// take reserves n bytes, or reports false and reserves nothing.
func (b *budget) take(n int64) bool {
	if b.used.Add(n) <= b.limit {
		return true
	}
	b.used.Add(-n)
	return false
}

// give returns n bytes.
func (b *budget) give(n int64) { b.used.Add(-n) }

// holdings are what one connection has taken from the budget, by buffer.
type holdings struct {
	in     int64 // a loop's read buffer, grown (c.in)
	reader int64 // the goroutine's read buffer, grown (c.br)
	body   int64 // the request body's chunks (c.body)
}

// hold makes what the connection holds for one buffer n bytes, taking or
// giving back the difference; false (nothing changed) when the budget
// cannot give it.
func (c *conn) hold(field *int64, n int64) bool {
	d := n - *field
	switch {
	case d > 0:
		if !c.e.mem.take(d) {
			c.e.mem.refused.Add(1)
			return false
		}
	case d < 0:
		c.e.mem.give(-d)
	}
	*field = n
	return true
}

// releaseAll gives back everything the connection holds; it is closing.
func (c *conn) releaseAll() {
	c.hold(&c.held.in, 0)
	c.hold(&c.held.reader, 0)
	c.hold(&c.held.body, 0)
	if c.closed != nil {
		c.closed()
		c.closed = nil
	}
}

// RequestMemory reports the memory the engine holds for requests now, its
// limit, and how many requests it has refused for want of it.
func (e *Engine) RequestMemory() (used, limit, refused int64) {
	return e.mem.used.Load(), e.mem.limit, e.mem.refused.Load()
}
