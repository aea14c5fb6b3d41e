package route

// Pick chooses a healthy backend of the region by weighted
// power-of-two-choices least-in-flight: two backends are drawn at random in
// proportion to their weights, and the one with fewer requests in flight per
// unit of weight wins (the first drawn on a tie, so an idle region splits
// traffic by weight). It is load-aware without shared counters: a slow
// backend accumulates in-flight requests and loses draws until it catches up.
//
// rnd supplies uniform random numbers (math/rand/v2's Uint64 in production).
// Backends in tried are skipped (a retry goes to another backend); Pick
// returns nil when no healthy backend is left.
func (r *Region) Pick(rnd func() uint64, tried []*Backend) *Backend {
	n := len(r.Healthy)
	switch {
	case n == 0:
		return nil
	case len(tried) > 0:
		return r.leastLoaded(tried)
	case n == 1:
		return r.Healthy[0]
	}
	total := uint64(r.cumWeight[n-1])
	i := r.draw(rnd() % total)
	j := r.draw(rnd() % total)
	if j == i {
		// Draw the second among the others: shift by a random non-zero
		// step so every other backend can come up.
		j = (i + 1 + int(rnd()%uint64(n-1))) % n
	}
	if lessLoaded(r.Healthy[j], r.weight[j], r.Healthy[i], r.weight[i]) {
		return r.Healthy[j]
	}
	return r.Healthy[i]
}

// draw maps a point in [0, total weight) to a backend index.
func (r *Region) draw(x uint64) int {
	lo, hi := 0, len(r.cumWeight)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if uint64(r.cumWeight[mid]) > x {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// leastLoaded returns the untried backend with the fewest requests in flight
// per unit of weight, or nil.
func (r *Region) leastLoaded(tried []*Backend) *Backend {
	best := -1
outer:
	for i, b := range r.Healthy {
		for _, t := range tried {
			if t == b {
				continue outer
			}
		}
		if best < 0 || lessLoaded(b, r.weight[i], r.Healthy[best], r.weight[best]) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	return r.Healthy[best]
}

// lessLoaded reports whether a, of weight wa, has strictly fewer requests in
// flight per unit of weight than b, of weight wb.
func lessLoaded(a *Backend, wa int64, b *Backend, wb int64) bool {
	return a.InFlight()*wb < b.InFlight()*wa
}
