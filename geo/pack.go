package geo

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"

	"github.com/oschwald/maxminddb-golang/v2"
)

// packMagic starts every packed database (inside the gzip stream).
const packMagic = "geoproxy packed mmdb 1\n"

// Pack compresses a MaxMind DB file for embedding. Its search tree is
// rewritten as a stream of small integers: a record pointing to a child
// node becomes the distance from its parent (1 for most left children, as
// mmdbwriter writes nodes depth first), and a record pointing into the
// data section becomes the rank of that pointer among all of them by how
// often it occurs (so that the most common records take one byte).
// Everything after the tree is kept as it is, and the whole is gzipped:
// about half the size of the gzipped file. Unpack restores the exact input
// bytes.
//
// Layout of the gzipped stream: packMagic; uvarints: node count, record
// size (24, 28 or 32), number of distinct data records D, length of the
// rest of the file; D uvarints: the data records (record value minus node
// count), most frequent first; two uvarints per node, its left and right
// record: a node pointer r of node n as zigzag(r-n)<<1, a data record as
// its rank<<1|1; the rest of the file (the data section separator, the
// data section and the metadata).
func Pack(mmdb []byte) ([]byte, error) {
	r, err := maxminddb.OpenBytes(mmdb)
	if err != nil {
		return nil, fmt.Errorf("geo: pack: %w", err)
	}
	nodes, recSize := r.Metadata.NodeCount, r.Metadata.RecordSize
	if recSize != 24 && recSize != 28 && recSize != 32 {
		return nil, fmt.Errorf("geo: pack: unsupported record size %d", recSize)
	}
	treeSize := nodes * recSize / 4
	if treeSize > uint(len(mmdb)) {
		return nil, fmt.Errorf("geo: pack: search tree of %d nodes exceeds the file", nodes)
	}
	rest := mmdb[treeSize:]

	// Rank the data records by frequency (ties by value, for the same
	// output every time). A data record points into the rest of the file.
	counts := make([]int, len(rest))
	var dict []uint
	for n := range nodes {
		left, right := readNode(mmdb, n, recSize)
		for _, rec := range [2]uint{left, right} {
			if rec < nodes {
				continue
			}
			if rec-nodes >= uint(len(rest)) {
				return nil, fmt.Errorf("geo: pack: node %d: record %d points past the data section", n, rec)
			}
			if counts[rec-nodes] == 0 {
				dict = append(dict, rec)
			}
			counts[rec-nodes]++
		}
	}
	slices.SortFunc(dict, func(a, b uint) int {
		if c := cmp.Compare(counts[b-nodes], counts[a-nodes]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	rank := make([]uint32, len(rest))
	for i, rec := range dict {
		rank[rec-nodes] = uint32(i)
	}

	raw := make([]byte, 0, len(mmdb))
	raw = append(raw, packMagic...)
	for _, v := range []uint{nodes, recSize, uint(len(dict)), uint(len(rest))} {
		raw = binary.AppendUvarint(raw, uint64(v))
	}
	for _, rec := range dict {
		raw = binary.AppendUvarint(raw, uint64(rec-nodes))
	}
	for n := range nodes {
		left, right := readNode(mmdb, n, recSize)
		for _, rec := range [2]uint{left, right} {
			if rec < nodes {
				d := int64(rec) - int64(n)
				raw = binary.AppendUvarint(raw, uint64(d<<1^d>>63)<<1)
			} else {
				raw = binary.AppendUvarint(raw, uint64(rank[rec-nodes])<<1|1)
			}
		}
	}
	raw = append(raw, rest...)

	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("geo: pack: %w", err)
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, fmt.Errorf("geo: pack: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("geo: pack: %w", err)
	}
	return out.Bytes(), nil
}

// Unpack restores the MaxMind DB file that Pack compressed. It inflates in
// a goroutine and decodes behind it, so that on two cores the two overlap.
func Unpack(packed []byte) ([]byte, error) {
	in, err := startInflate(packed)
	if err != nil {
		return nil, fmt.Errorf("geo: unpack: %w", err)
	}
	b, err := unpack(&packReader{in: in})
	if err == nil {
		err = in.wait()
	}
	if err != nil {
		return nil, fmt.Errorf("geo: unpack: %w", err)
	}
	return b, nil
}

var errPackTruncated = errors.New("truncated or corrupt data")

// inflater gunzips into one buffer in the background. The buffer is sized
// from the gzip trailer; ready tells how much of it is written.
type inflater struct {
	buf    []byte
	ready  atomic.Int64  // bytes of buf written
	done   atomic.Bool   // set after err, once nothing more comes
	err    error         // inflating error, read after done
	notify chan struct{} // a token after progress; never blocks the writer
}

// inflateChunk is how much the inflater writes between two notices.
const inflateChunk = 256 << 10

func startInflate(gz []byte) (*inflater, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	size := 0
	if len(gz) >= 4 {
		size = int(binary.LittleEndian.Uint32(gz[len(gz)-4:]))
	}
	// Deflate expands at most about 1032 times: do not trust the trailer
	// beyond that.
	size = min(size, 1100*len(gz))
	f := &inflater{buf: make([]byte, size), notify: make(chan struct{}, 1)}
	go f.run(zr)
	return f, nil
}

// run inflates until the end of the stream; it never waits for the reader.
func (f *inflater) run(zr *gzip.Reader) {
	var err error
	n := 0
	for err == nil {
		if n == len(f.buf) {
			// Full: the stream must end here.
			var one [1]byte
			var k int
			if k, err = io.ReadFull(zr, one[:]); k > 0 {
				err = errors.New("longer than its gzip trailer says")
			}
			break
		}
		var k int
		k, err = zr.Read(f.buf[n:min(n+inflateChunk, len(f.buf))])
		n += k
		f.ready.Store(int64(n))
		f.signal()
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err == nil {
		err = zr.Close()
	}
	if err == nil && n != len(f.buf) {
		err = errPackTruncated
	}
	f.err = err
	f.done.Store(true)
	f.signal()
}

func (f *inflater) signal() {
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

// avail returns the written part of the buffer once it holds at least want
// bytes, or when nothing more comes (then end is true).
func (f *inflater) avail(want int) (b []byte, end bool) {
	for {
		done := f.done.Load() // before ready: all of it is written then
		n := int(f.ready.Load())
		if n >= want || done {
			return f.buf[:n], done
		}
		<-f.notify
	}
}

// wait returns the inflating error once it is over.
func (f *inflater) wait() error {
	f.avail(len(f.buf) + 1)
	return f.err
}

// packReader reads unsigned varints from the inflated stream.
type packReader struct {
	in  *inflater
	p   []byte // what is available
	pos int
	end bool // p is all there is
}

// need makes k more bytes available if the stream has them.
func (r *packReader) need(k int) {
	if len(r.p)-r.pos < k && !r.end {
		r.p, r.end = r.in.avail(r.pos + k)
	}
}

// next returns the next value; ok is false at a truncated value.
func (r *packReader) next() (uint64, bool) {
	r.need(binary.MaxVarintLen64)
	v, k := binary.Uvarint(r.p[r.pos:])
	if k <= 0 {
		return 0, false
	}
	r.pos += k
	return v, true
}

// unpack decodes the pack stream.
func unpack(r *packReader) ([]byte, error) {
	r.need(len(packMagic))
	if !bytes.HasPrefix(r.p, []byte(packMagic)) {
		return nil, errors.New("not a packed database")
	}
	r.pos = len(packMagic)
	var hdr [4]uint64
	for i := range hdr {
		v, ok := r.next()
		if !ok {
			return nil, errPackTruncated
		}
		hdr[i] = v
	}
	nodes, recSize, dictLen, restLen := hdr[0], hdr[1], hdr[2], hdr[3]
	if recSize != 24 && recSize != 28 && recSize != 32 {
		return nil, fmt.Errorf("unsupported record size %d", recSize)
	}
	// Every value takes at least one byte, which bounds the allocations.
	left := uint64(len(r.in.buf) - r.pos)
	if dictLen > left || nodes > left/2 || restLen > left {
		return nil, errPackTruncated
	}
	limit := uint64(1) << recSize
	dict := make([]uint64, dictLen)
	for i := range dict {
		v, ok := r.next()
		if !ok || v+nodes >= limit {
			return nil, fmt.Errorf("data record %d: %w", i, errPackTruncated)
		}
		dict[i] = v + nodes
	}
	treeSize := nodes * recSize / 4
	out := make([]byte, treeSize+restLen)
	const perNode = 2 * binary.MaxVarintLen64
	p, pos := r.p, r.pos
	for n := range nodes {
		if len(p)-pos < perNode && !r.end {
			r.pos = pos
			r.need(perNode)
			p = r.p
		}
		var rec [2]uint64
		for i := range rec {
			var v uint64
			if pos < len(p) && p[pos] < 0x80 {
				v = uint64(p[pos])
				pos++
			} else {
				var k int
				if v, k = binary.Uvarint(p[pos:]); k <= 0 {
					return nil, errPackTruncated
				}
				pos += k
			}
			if v&1 == 1 {
				if v>>1 >= dictLen {
					return nil, fmt.Errorf("node %d: record out of range", n)
				}
				rec[i] = dict[v>>1]
				continue
			}
			z := v >> 1
			rn := n + uint64(int64(z>>1)^-int64(z&1))
			if rn >= nodes { // also catches rn < 0, wrapped around
				return nil, fmt.Errorf("node %d: record out of range", n)
			}
			rec[i] = rn
		}
		if recSize == 24 {
			o := n * 6
			l, r := rec[0], rec[1]
			b := out[o : o+6 : o+6]
			b[0], b[1], b[2] = byte(l>>16), byte(l>>8), byte(l)
			b[3], b[4], b[5] = byte(r>>16), byte(r>>8), byte(r)
			continue
		}
		writeNode(out, uint(n), uint(recSize), uint(rec[0]), uint(rec[1]))
	}
	r.pos = pos
	r.need(int(restLen) + 1) // everything: one byte more than should be there
	if uint64(len(r.p)-r.pos) != restLen {
		return nil, errPackTruncated
	}
	copy(out[treeSize:], r.p[r.pos:])
	return out, nil
}

// readNode returns the two records of node n.
func readNode(b []byte, n, recSize uint) (left, right uint) {
	switch recSize {
	case 24:
		o := n * 6
		left = uint(b[o])<<16 | uint(b[o+1])<<8 | uint(b[o+2])
		right = uint(b[o+3])<<16 | uint(b[o+4])<<8 | uint(b[o+5])
	case 28:
		o := n * 7
		left = uint(b[o+3]>>4)<<24 | uint(b[o])<<16 | uint(b[o+1])<<8 | uint(b[o+2])
		right = uint(b[o+3]&0x0f)<<24 | uint(b[o+4])<<16 | uint(b[o+5])<<8 | uint(b[o+6])
	default:
		o := n * 8
		left = uint(binary.BigEndian.Uint32(b[o:]))
		right = uint(binary.BigEndian.Uint32(b[o+4:]))
	}
	return left, right
}

// writeNode stores the two records of node n.
func writeNode(b []byte, n, recSize, left, right uint) {
	switch recSize {
	case 24:
		o := n * 6
		b[o], b[o+1], b[o+2] = byte(left>>16), byte(left>>8), byte(left)
		b[o+3], b[o+4], b[o+5] = byte(right>>16), byte(right>>8), byte(right)
	case 28:
		o := n * 7
		b[o], b[o+1], b[o+2] = byte(left>>16), byte(left>>8), byte(left)
		b[o+3] = byte(left>>24&0x0f)<<4 | byte(right>>24&0x0f)
		b[o+4], b[o+5], b[o+6] = byte(right>>16), byte(right>>8), byte(right)
	default:
		o := n * 8
		binary.BigEndian.PutUint32(b[o:], uint32(left))
		binary.BigEndian.PutUint32(b[o+4:], uint32(right))
	}
}
