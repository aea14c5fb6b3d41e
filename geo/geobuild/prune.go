package geobuild

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
)

// earthRadiusKm is the mean radius of the Earth.
const earthRadiusKm = 6371.0088

// point is a record prepared for distances: a unit vector and a country.
type point struct {
	x, y, z float64
	country uint16 // index into the build's country list
}

func unitVector(lat, lon float64) (x, y, z float64) {
	la, lo := lat*math.Pi/180, lon*math.Pi/180
	return math.Cos(la) * math.Cos(lo), math.Cos(la) * math.Sin(lo), math.Sin(la)
}

// pruner finds, for one address family, the set of networks that
// minimises
//
//	expected location error + alpha * search tree nodes
//
// over the subtrees of the binary trie of the source networks: each trie
// node either stays (and its children are solved the same way) or becomes
// one network with one record. The error of a network is the weighted sum,
// over the source networks it covers, of the distance from their location
// to its record's (infinite across a country border). Its record is the
// better of its children's. Collapsing a node also fills the gaps in it
// (addresses no source network covers).
type pruner struct {
	nets  []network // sorted, disjoint
	width int       // 32 or 128
	pts   []point   // by record
	w     []float64 // weight of each network; they sum to 1
	ps    []float64 // prefix sums of w
	cEnd  []int32   // cEnd[i]: last index of the run of nets[i]'s country
	alpha float64
	out   []network
}

func newPruner(nets []network, width int, pts []point, addressShare, alpha float64) *pruner {
	n := len(nets)
	p := &pruner{nets: nets, width: width, pts: pts, alpha: alpha,
		w: make([]float64, n), ps: make([]float64, n+1), cEnd: make([]int32, n)}
	total := 0.0
	for i := range nets {
		p.w[i] = math.Ldexp(1, width-int(nets[i].bits))
		total += p.w[i]
	}
	for i := range p.w {
		p.w[i] = addressShare*p.w[i]/total + (1-addressShare)/float64(n)
		p.ps[i+1] = p.ps[i] + p.w[i]
	}
	for i := n - 1; i >= 0; i-- {
		p.cEnd[i] = int32(i)
		if i < n-1 && pts[nets[i].rec].country == pts[nets[i+1].rec].country {
			p.cEnd[i] = p.cEnd[i+1]
		}
	}
	return p
}

// run solves the whole family and returns the chosen networks, in order,
// and the number of search tree nodes they need.
func (p *pruner) run() ([]network, int) {
	if len(p.nets) == 0 {
		return nil, 0
	}
	_, nodes, _ := p.solve(0, len(p.nets), 0, 0, 0)
	return p.out, nodes
}

// bit returns bit d (0 = most significant) of a network's address.
func (p *pruner) bit(n *network, d int) uint64 {
	switch {
	case p.width == 32:
		return n.lo >> (31 - d) & 1
	case d < 64:
		return n.hi >> (63 - d) & 1
	default:
		return n.lo >> (127 - d) & 1
	}
}

// withBit returns the prefix (hi, lo) with bit d set.
func (p *pruner) withBit(hi, lo uint64, d int) (uint64, uint64) {
	switch {
	case p.width == 32:
		return hi, lo | 1<<(31-d)
	case d < 64:
		return hi | 1<<(63-d), lo
	default:
		return hi, lo | 1<<(127-d)
	}
}

// dist is the distance in km between two records along the chord (within
// 2% of the great-circle distance below 2,000 km; cheap and monotonic).
func (p *pruner) dist(a, b int32) float64 {
	if a == b {
		return 0
	}
	pa, pb := &p.pts[a], &p.pts[b]
	dx, dy, dz := pa.x-pb.x, pa.y-pb.y, pa.z-pb.z
	return math.Sqrt(dx*dx+dy*dy+dz*dz) * earthRadiusKm
}

// solve handles the trie node of depth d and prefix (hi, lo) whose networks
// are nets[from:to]. It returns the node's optimal objective, the search
// tree nodes of the chosen shape, and the record the node would get if it
// were collapsed.
func (p *pruner) solve(from, to, d int, hi, lo uint64) (obj float64, nodes int, rep int32) {
	if to-from == 1 && int(p.nets[from].bits) == d {
		n := p.nets[from]
		p.out = append(p.out, n)
		return 0, 0, n.rec
	}
	mid := from + sort.Search(to-from, func(i int) bool { return p.bit(&p.nets[from+i], d) == 1 })
	mark := len(p.out)
	var objL, objR float64
	var nodesL, nodesR int
	repL, repR := int32(-1), int32(-1)
	if mid > from {
		objL, nodesL, repL = p.solve(from, mid, d+1, hi, lo)
	}
	if to > mid {
		h, l := p.withBit(hi, lo, d)
		objR, nodesR, repR = p.solve(mid, to, d+1, h, l)
	}
	keep := objL + objR + p.alpha
	nodes = 1 + nodesL + nodesR
	// Without collapsing, the heavier side's record stands for the node.
	rep = repL
	if rep < 0 || (repR >= 0 && p.ps[to]-p.ps[mid] > p.ps[mid]-p.ps[from]) {
		rep = repR
	}
	if int(p.cEnd[from]) < to-1 || (p.width == 128 && hi == 0 && lo == 0 && d <= 96) {
		// Several countries, or the node holds ::/96 (IPv4's place).
		return keep, nodes, rep
	}
	var costL, costR float64
	for k := from; k < to; k++ {
		r, w := p.nets[k].rec, p.w[k]
		if repL >= 0 {
			costL += w * p.dist(r, repL)
		}
		if repR >= 0 {
			costR += w * p.dist(r, repR)
		}
		if (repL < 0 || costL > keep) && (repR < 0 || costR > keep) {
			return keep, nodes, rep
		}
	}
	best, bestRep := math.Inf(1), int32(-1)
	if repL >= 0 {
		best, bestRep = costL, repL
	}
	if repR >= 0 && costR < best {
		best, bestRep = costR, repR
	}
	if best > keep {
		return keep, nodes, rep
	}
	p.out = append(p.out[:mark], network{hi: hi, lo: lo, bits: uint8(d), rec: bestRep})
	return best, 0, bestRep
}

// sortNetworks sorts networks by address and checks that they are
// disjoint.
func sortNetworks(nets []network, width int) error {
	slices.SortFunc(nets, func(a, b network) int {
		if c := cmp.Compare(a.hi, b.hi); c != 0 {
			return c
		}
		return cmp.Compare(a.lo, b.lo)
	})
	for i := 1; i < len(nets); i++ {
		lh, ll := lastAddr(nets[i-1], width)
		if nets[i].hi < lh || (nets[i].hi == lh && nets[i].lo <= ll) {
			return fmt.Errorf("%w: %s and %s", errOverlap, nets[i-1].prefix(width), nets[i].prefix(width))
		}
	}
	return nil
}

var errOverlap = errors.New("overlapping networks")

// lastAddr returns the last address of a network.
func lastAddr(n network, width int) (hi, lo uint64) {
	host := width - int(n.bits) // host bits
	switch {
	case host == 0:
		return n.hi, n.lo
	case host >= 64 && width == 128:
		return n.hi | (1<<(host-64) - 1), ^uint64(0)
	default:
		return n.hi, n.lo | (1<<host - 1)
	}
}

// prefix returns the network as a netip.Prefix.
func (n network) prefix(width int) netip.Prefix {
	if width == 32 {
		a := netip.AddrFrom4([4]byte{byte(n.lo >> 24), byte(n.lo >> 16), byte(n.lo >> 8), byte(n.lo)})
		return netip.PrefixFrom(a, int(n.bits))
	}
	var b [16]byte
	for i := range 8 {
		b[i], b[8+i] = byte(n.hi>>(56-8*i)), byte(n.lo>>(56-8*i))
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), int(n.bits))
}
