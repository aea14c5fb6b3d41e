package core

import (
	"encoding/binary"
	"math"
	"net/netip"
	"sync"
	"time"
)

// MsgClientRate is the answer to a client over its request rate.
const MsgClientRate = "geoproxy: too many requests from this client; try again later"

// Bounds of the per-client rate limit's state.
const (
	// rateShards is how many locks the clients' buckets are spread over.
	rateShards = 16
	// rateClients caps the clients whose buckets are kept, in all.
	rateClients = 1 << 16
	// rateScan is how many buckets a full shard looks at to make room.
	rateScan = 16
)

// clientRate limits each client's requests to a rate, with a burst: a
// token bucket per client address kept as one number, the time its bucket
// will be full again (GCRA, the generic cell rate algorithm). A bucket
// whose time has passed is full, which is what an absent one is too, so
// a bucket may be dropped then without changing any answer. The buckets
// are kept in shards of bounded maps: a full shard makes room for a new
// client by dropping the full buckets among a few it looks at, or else the
// one of those nearest to full, so a flood of new (spoofed) addresses
// costs bounded memory and bounded work per request, and at worst gives
// some clients a fresh burst early.
type clientRate struct {
	interval  int64     // nanoseconds a request costs
	tolerance int64     // how far ahead of now a bucket may run: (burst-1)*interval
	base      time.Time // the zero of the bucket times
	perShard  int       // buckets a shard keeps at most
	shards    [rateShards]rateShard
}

type rateShard struct {
	mu   sync.Mutex
	full map[[16]byte]int64 // when each client's bucket is full again (ns from base)
	_    [48]byte           // keep shards' locks off one cache line
}

// newClientRate returns a limit of perSecond requests per client, burst at
// once; nil when perSecond is not positive.
func newClientRate(perSecond float64, burst, clients int) *clientRate {
	if !(perSecond > 0) {
		return nil
	}
	interval := int64(math.Min(float64(time.Second)/perSecond, math.MaxInt64/4))
	interval = max(interval, 1)
	burst = max(burst, 1)
	r := &clientRate{
		interval:  interval,
		tolerance: int64(math.Min(float64(burst-1)*float64(interval), math.MaxInt64/4)),
		base:      time.Now(),
		perShard:  max(1, clients/rateShards),
	}
	for i := range r.shards {
		r.shards[i].full = make(map[[16]byte]int64)
	}
	return r
}

// rateKey is the bucket of a client address: its own for IPv4, its /64
// for IPv6 (one subscriber's usual allocation).
func rateKey(a netip.Addr) [16]byte {
	a = a.Unmap()
	k := a.As16()
	if a.Is6() {
		clear(k[8:])
	}
	return k
}

// allow takes a request of client at now from its bucket; when the bucket
// is empty it takes nothing and returns how long until it holds one.
func (r *clientRate) allow(client netip.Addr, now time.Time) (bool, time.Duration) {
	k := rateKey(client)
	h := binary.BigEndian.Uint64(k[:8])*0x9e3779b97f4a7c15 ^ binary.BigEndian.Uint64(k[8:])*0xbf58476d1ce4e5b9
	s := &r.shards[(h^h>>32)%rateShards]
	t := now.Sub(r.base).Nanoseconds()
	s.mu.Lock()
	full, known := s.full[k]
	if full < t {
		full = t
	}
	if ahead := full - t; ahead > r.tolerance {
		s.mu.Unlock()
		return false, time.Duration(ahead - r.tolerance)
	}
	if !known && len(s.full) >= r.perShard {
		s.makeRoom(t)
	}
	s.full[k] = full + r.interval
	s.mu.Unlock()
	return true, 0
}

// makeRoom drops, among rateScan buckets, those full at t; when none is,
// the one nearest to full.
func (s *rateShard) makeRoom(t int64) {
	var nearest [16]byte
	nearestAt, seen, dropped := int64(math.MaxInt64), 0, false
	for k, full := range s.full {
		if full <= t {
			delete(s.full, k)
			dropped = true
		} else if full < nearestAt {
			nearest, nearestAt = k, full
		}
		if seen++; seen >= rateScan {
			break
		}
	}
	if !dropped {
		delete(s.full, nearest)
	}
}

// size returns the buckets kept (tests).
func (r *clientRate) size() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.full)
		s.mu.Unlock()
	}
	return n
}

// retryAfter is a wait in whole seconds, rounded up, at least one: the
// value of a Retry-After field.
func retryAfter(wait time.Duration) int {
	return int(max(1, (wait+time.Second-1)/time.Second))
}
