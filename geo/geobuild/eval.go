package geobuild

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/geoproxy/geoproxy/geo"
)

// Region is a place traffic can be sent to.
type Region struct {
	Name     string
	Lat, Lon float64
}

// Layout is a set of regions; a client goes to the nearest.
type Layout struct {
	Name    string
	Regions []Region
}

// Layouts returns the two region layouts of the evaluation: three regions
// (the demo's) and six.
func Layouts() []Layout {
	three := []Region{
		{"us-east", 33.84, -81.16},
		{"us-west", 45.59, -121.18},
		{"europe-west", 50.45, 3.82},
	}
	six := append(slices.Clone(three),
		Region{"asia-northeast", 35.68, 139.69},
		Region{"asia-southeast", 1.35, 103.82},
		Region{"southamerica-east", -23.55, -46.63},
	)
	return []Layout{{"3 regions", three}, {"6 regions", six}}
}

// SampleOptions say how many addresses Draw picks.
type SampleOptions struct {
	// IPv4 and IPv6 are the sizes of the random-address sets (defaults
	// 200,000 and 100,000; negative: none).
	IPv4, IPv6 int
	// NetworkIPv4 and NetworkIPv6 are the sizes of the random-network sets
	// (defaults as IPv4 and IPv6; negative: none).
	NetworkIPv4, NetworkIPv6 int
	// Seed makes the draw reproducible.
	Seed uint64
}

func (o SampleOptions) withDefaults() SampleOptions {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.IPv4, 200_000)
	def(&o.IPv6, 100_000)
	def(&o.NetworkIPv4, o.IPv4)
	def(&o.NetworkIPv6, o.IPv6)
	return o
}

// Sample is an address and where the reference database puts it.
type Sample struct {
	Addr  netip.Addr
	Truth geo.Location
}

// SampleSet is a named set of samples.
type SampleSet struct {
	Name    string
	US      int // samples the reference puts in the US
	Samples []Sample
}

// Draw picks sample addresses that the reference databases (the full
// DB-IP City Lite files, opened with geo.Open) locate:
//
//   - "IPv4 addresses": uniform over the IPv4 addresses the reference
//     resolves (random 32-bit numbers, kept when resolved);
//   - "IPv6 addresses": the same over 2000::/3. DB-IP maps unallocated
//     IPv6 space in large blocks (2200::/7 and others to one Swiss town),
//     so most of these addresses are in blocks no client uses;
//   - "IPv4 networks" and "IPv6 networks": a random source network, each
//     equally likely, then a random address in it; this weighs the small
//     networks in which DB-IP records most of its detail.
//
// The network sets need src (the same files, loaded); with src nil they
// are left out.
func Draw(ref4, ref6 *geo.Database, src *Source, o SampleOptions) ([]SampleSet, error) {
	o = o.withDefaults()
	rng := rand.New(rand.NewPCG(o.Seed, 0x67656f70726f7879))
	var sets []SampleSet
	add := func(name string, n int, ref *geo.Database, gen func() netip.Addr) error {
		if n <= 0 || ref == nil {
			return nil
		}
		set := SampleSet{Name: name, Samples: make([]Sample, 0, n)}
		for tries := 0; len(set.Samples) < n; tries++ {
			if tries > 100*n+1000 {
				return fmt.Errorf("geobuild: draw %s: the reference resolves too few addresses", name)
			}
			a := gen()
			loc, found, err := ref.Lookup(a)
			if err != nil {
				return fmt.Errorf("geobuild: draw %s: %w", name, err)
			}
			if !found || loc.Country == "" {
				continue
			}
			if loc.Country == "US" {
				set.US++
			}
			set.Samples = append(set.Samples, Sample{Addr: a, Truth: loc})
		}
		sets = append(sets, set)
		return nil
	}
	random4 := func() netip.Addr {
		v := rng.Uint32()
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	random6 := func() netip.Addr {
		hi := rng.Uint64()&^(7<<61) | 1<<61 // 2000::/3
		return addr6(hi, rng.Uint64())
	}
	inNetwork := func(nets []network, width int) func() netip.Addr {
		return func() netip.Addr {
			n := nets[rng.IntN(len(nets))]
			host := width - int(n.bits)
			hi, lo := rng.Uint64(), rng.Uint64()
			if width == 32 {
				lo = n.lo | lo&(1<<host-1)
				return netip.AddrFrom4([4]byte{byte(lo >> 24), byte(lo >> 16), byte(lo >> 8), byte(lo)})
			}
			switch {
			case host >= 64:
				hi = n.hi | hi&(1<<(host-64)-1)
			default:
				hi, lo = n.hi, n.lo|lo&(1<<host-1)
			}
			return addr6(hi, lo)
		}
	}
	errs := []error{
		add("IPv4 addresses", o.IPv4, ref4, random4),
		add("IPv6 addresses", o.IPv6, ref6, random6),
	}
	if src != nil {
		if len(src.v4) > 0 {
			errs = append(errs, add("IPv4 networks", o.NetworkIPv4, ref4, inNetwork(src.v4, 32)))
		}
		if len(src.v6) > 0 {
			errs = append(errs, add("IPv6 networks", o.NetworkIPv6, ref6, inNetwork(src.v6, 128)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return sets, nil
}

func addr6(hi, lo uint64) netip.Addr {
	var b [16]byte
	for i := range 8 {
		b[i], b[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
	}
	return netip.AddrFrom16(b)
}

// Score is how a database does on one sample set.
type Score struct {
	Set     string
	Samples int
	US      int // samples the reference puts in the US
	// Found is the share of samples the database locates.
	Found float64
	// Agree[i] is the share of samples for which the database and the
	// reference pick the same nearest region of layout i; AgreeUS[i] the
	// same among US samples. A sample the database does not locate
	// disagrees.
	Agree, AgreeUS []float64
	// Country is the share of samples with the reference's country code.
	Country float64
	// MedianKm and P95Km are the distance between the database's and the
	// reference's points (samples the database locates).
	MedianKm, P95Km float64
	// Baseline[i] and BaselineUS[i] are Agree and AgreeUS for a
	// country-level database: every client at its country's reference
	// point (geo.CountryPoint).
	Baseline, BaselineUS []float64
}

// Evaluate scores db on each sample set for each layout.
func Evaluate(db *geo.Database, sets []SampleSet, layouts []Layout) ([]Score, error) {
	var scores []Score
	for _, set := range sets {
		sc := Score{Set: set.Name, Samples: len(set.Samples), US: set.US,
			Agree: make([]float64, len(layouts)), AgreeUS: make([]float64, len(layouts)),
			Baseline: make([]float64, len(layouts)), BaselineUS: make([]float64, len(layouts))}
		dists := make([]float64, 0, len(set.Samples))
		var found, country int
		for _, s := range set.Samples {
			loc, ok, err := db.Lookup(s.Addr)
			if err != nil {
				return nil, fmt.Errorf("geobuild: evaluate %s: %w", set.Name, err)
			}
			us := s.Truth.Country == "US"
			cLat, cLon, _, cOK := geo.CountryPoint(s.Truth.Country)
			for i, l := range layouts {
				want := nearest(l.Regions, s.Truth.Lat, s.Truth.Lon)
				if ok && nearest(l.Regions, loc.Lat, loc.Lon) == want {
					sc.Agree[i]++
					if us {
						sc.AgreeUS[i]++
					}
				}
				if cOK && nearest(l.Regions, cLat, cLon) == want {
					sc.Baseline[i]++
					if us {
						sc.BaselineUS[i]++
					}
				}
			}
			if !ok {
				continue
			}
			found++
			if loc.Country == s.Truth.Country {
				country++
			}
			dists = append(dists, HaversineKm(loc.Lat, loc.Lon, s.Truth.Lat, s.Truth.Lon))
		}
		n := float64(len(set.Samples))
		sc.Found, sc.Country = float64(found)/n, float64(country)/n
		for i := range layouts {
			sc.Agree[i] /= n
			sc.Baseline[i] /= n
			if set.US > 0 {
				sc.AgreeUS[i] /= float64(set.US)
				sc.BaselineUS[i] /= float64(set.US)
			}
		}
		slices.Sort(dists)
		sc.MedianKm, sc.P95Km = quantile(dists, 0.5), quantile(dists, 0.95)
		scores = append(scores, sc)
	}
	return scores, nil
}

// nearest returns the index of the region nearest to lat/lon.
func nearest(regions []Region, lat, lon float64) int {
	best, bestD := 0, math.Inf(1)
	for i, r := range regions {
		if d := HaversineKm(lat, lon, r.Lat, r.Lon); d < bestD {
			best, bestD = i, d
		}
	}
	return best
}

// quantile returns the q-quantile of sorted values (nearest rank), 0 for
// none.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// HaversineKm is the great-circle distance in km between two points given
// in degrees.
func HaversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat, dLon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Min(1, math.Sqrt(a)))
}
