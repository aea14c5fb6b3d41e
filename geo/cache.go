package geo

import "sync/atomic"

// cacheBits sets the size of the per-Database record cache: 1<<14 slots,
// 128 KiB of pointers. Country databases have about 250 distinct records,
// so they never miss once warm; city databases have many more and evict on
// collision. Compact databases (the embedded one) decode without
// allocating and do not use the cache.
const cacheBits = 14

// entry is one decoded record, immutable once published.
type entry struct {
	off    uintptr  // record offset in the data section: the cache key
	loc    Location // decoded record, coordinates completed from CountryPoint
	coords bool     // loc.Lat/Lon are real (from the record or a country point)
	found  bool     // the record names a country or has coordinates
}

// recordCache is a direct-mapped, lock-free cache of decoded records keyed by
// their offset. A slot holds the last entry stored into it; readers check the
// offset, so a collision is only a miss.
type recordCache [1 << cacheBits]atomic.Pointer[entry]

// slot returns the slot for a record offset (Fibonacci hashing: offsets are
// clustered small integers, the multiply spreads them over the table).
func (c *recordCache) slot(off uintptr) *atomic.Pointer[entry] {
	return &c[(uint64(off)*0x9E3779B97F4A7C15)>>(64-cacheBits)]
}
