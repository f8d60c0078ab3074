package storage

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"math/bits"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// keyKind is what a key column holds: longs (Iceberg int or long) or
// strings. Keys of one kind compare by value whatever their Arrow width.
type keyKind int

const (
	kindInt keyKind = iota + 1
	kindStr
)

func (k keyKind) String() string {
	if k == kindInt {
		return "long"
	}
	return "string"
}

func keyKindOf(dt arrow.DataType) (keyKind, error) {
	switch dt.ID() {
	case arrow.INT64, arrow.INT32:
		return kindInt, nil
	case arrow.STRING, arrow.LARGE_STRING:
		return kindStr, nil
	}
	return 0, fmt.Errorf("key column of type %s: want long, int or string", dt)
}

// KeyColumn reads row i of a key column as a long (Ints) or as a string
// (Strs; it points into the Arrow buffer: copy it to keep it). Exactly one
// of them is set. Arr is the column, for its nulls.
type KeyColumn struct {
	Arr  arrow.Array
	Ints func(int) int64
	Strs func(int) string
}

// NewKeyColumn reads a long, int or string column as keys.
func NewKeyColumn(col arrow.Array) (KeyColumn, error) {
	k := KeyColumn{Arr: col}
	switch c := col.(type) {
	case *array.Int64:
		k.Ints = c.Value
	case *array.Int32:
		k.Ints = func(i int) int64 { return int64(c.Value(i)) }
	case *array.String:
		k.Strs = c.Value
	case *array.LargeString:
		k.Strs = c.Value
	default:
		return k, fmt.Errorf("key column of type %s: want long, int or string", col.DataType())
	}
	return k, nil
}

// keyCol is a KeyColumn of the kind the join expects.
type keyCol struct{ KeyColumn }

func newKeyCol(col arrow.Array, kind keyKind) (keyCol, error) {
	k, err := NewKeyColumn(col)
	if err != nil {
		return keyCol{}, err
	}
	got := kindStr
	if k.Ints != nil {
		got = kindInt
	}
	if got != kind {
		return keyCol{}, fmt.Errorf("key column of type %s: want %s keys", col.DataType(), kind)
	}
	return keyCol{k}, nil
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// keySet is an exact set of keys of one kind, compact enough to hold
// every key of a partition: a long takes 8 bytes (its mix64 image), a
// string 16 bytes plus its own; a directory on the top bits of the hashes
// (4 bytes per 2 keys) makes a lookup one or two cache misses. Add keys,
// seal, then look up.
type keySet struct {
	kind  keyKind
	seed  maphash.Seed
	hs    []uint64 // kindInt: the keys' images
	ents  []strEnt // kindStr: the keys' hashes and places in arena
	arena []byte
	dir   []uint32 // dir[b] is the first key whose hash has top bits b
	shift uint
}

type strEnt struct {
	h      uint64
	off, n uint32
}

const maxArena = 1<<32 - 1

func newKeySet(kind keyKind, seed maphash.Seed, keys, keyBytes int64) *keySet {
	s := &keySet{kind: kind, seed: seed}
	if kind == kindInt {
		s.hs = make([]uint64, 0, keys)
	} else {
		s.ents = make([]strEnt, 0, keys)
		s.arena = make([]byte, 0, keyBytes)
	}
	return s
}

func (s *keySet) len() int { return len(s.hs) + len(s.ents) }

func (s *keySet) addHash(h uint64) { s.hs = append(s.hs, h) }

func (s *keySet) addString(k string) error {
	if len(s.arena)+len(k) > maxArena {
		return fmt.Errorf("more than %d bytes of keys in one partition", maxArena)
	}
	s.ents = append(s.ents, strEnt{h: maphash.String(s.seed, k), off: uint32(len(s.arena)), n: uint32(len(k))})
	s.arena = append(s.arena, k...)
	return nil
}

func (s *keySet) addBytes(k []byte) error {
	if len(s.arena)+len(k) > maxArena {
		return fmt.Errorf("more than %d bytes of keys in one partition", maxArena)
	}
	s.ents = append(s.ents, strEnt{h: maphash.Bytes(s.seed, k), off: uint32(len(s.arena)), n: uint32(len(k))})
	s.arena = append(s.arena, k...)
	return nil
}

// entBytes is the memory of one key's entry, besides a string's bytes.
func (s *keySet) entBytes() int64 {
	if s.kind == kindInt {
		return 8
	}
	return 16
}

// sizeWith is the memory of the set with room for ents keys and arena
// bytes of strings, and the directory it will have.
func (s *keySet) sizeWith(ents, arena int) int64 {
	return int64(ents)*s.entBytes() + int64(arena) + dirBytes(ents)
}

// room makes space for one more key of klen bytes (0 for a long) without
// the set's memory passing budget, growing it by 2x down to 1.1x; false
// when even that does not fit.
func (s *keySet) room(klen int, budget int64) bool {
	n, ne := s.len(), cap(s.hs)+cap(s.ents)
	na, need := cap(s.arena), len(s.arena)+klen
	if n < ne && need <= na {
		return true
	}
	for _, f := range []float64{2, 1.5, 1.25, 1.1} {
		e, a := ne, na
		if n == ne {
			e = max(int(float64(ne)*f), n+64)
		}
		if need > na {
			a = max(int(float64(na)*f), need+1024)
		}
		if s.sizeWith(e, a) > budget {
			continue
		}
		if s.kind == kindInt {
			s.hs = regrow(s.hs, e)
		} else {
			s.ents, s.arena = regrow(s.ents, e), regrow(s.arena, a)
		}
		return true
	}
	return false
}

// regrow is s with capacity c exactly (append and slices.Grow may take
// twice what is asked).
func regrow[T any](s []T, c int) []T {
	if c == cap(s) {
		return s
	}
	out := make([]T, len(s), c)
	copy(out, s)
	return out
}

// dirBits is how many top bits of the hashes index the directory of n
// keys: about two keys a bucket, at most 2^24 buckets (partitioning uses
// the low 40 bits).
func dirBits(n int) uint {
	return min(uint(bits.Len(uint(n/2))), 24)
}

func dirBytes(n int) int64 { return 4 * (int64(1)<<dirBits(n) + 1) }

// setBytes is the memory a sealed set of n keys holding keyBytes bytes of
// strings takes.
func setBytes(kind keyKind, n, keyBytes int64) int64 {
	if kind == kindInt {
		return 8*n + dirBytes(int(n))
	}
	return 16*n + keyBytes + dirBytes(int(n))
}

// bytes is the memory the set holds now, with the directory it will have.
func (s *keySet) bytes() int64 {
	return int64(cap(s.hs))*8 + int64(cap(s.ents))*16 + int64(cap(s.arena)) + max(int64(cap(s.dir))*4, dirBytes(s.len()))
}

// seal sorts the keys by hash and builds the directory.
func (s *keySet) seal() {
	d := dirBits(s.len())
	s.shift = 64 - d // a shift by 64 gives 0: one bucket
	s.dir = make([]uint32, 1<<d+1)
	if s.kind == kindInt {
		slices.Sort(s.hs)
		for _, h := range s.hs {
			s.dir[(h>>s.shift)+1]++
		}
	} else {
		slices.SortFunc(s.ents, func(a, b strEnt) int { return cmp.Compare(a.h, b.h) })
		for _, e := range s.ents {
			s.dir[(e.h>>s.shift)+1]++
		}
	}
	for i := 1; i < len(s.dir); i++ {
		s.dir[i] += s.dir[i-1]
	}
}

// hasHash reports whether the long whose image is h is in the set.
func (s *keySet) hasHash(h uint64) bool {
	b := h >> s.shift
	for _, x := range s.hs[s.dir[b]:s.dir[b+1]] {
		if x == h {
			return true
		}
	}
	return false
}

// hasString reports whether string k, whose hash is h, is in the set.
func (s *keySet) hasString(h uint64, k string) bool {
	b := h >> s.shift
	for _, e := range s.ents[s.dir[b]:s.dir[b+1]] {
		if e.h == h && string(s.arena[e.off:e.off+e.n]) == k {
			return true
		}
	}
	return false
}

// rowSet is an exact set of row positions: a bitmap in pages of 2^16
// rows, allocated only where a row is set, so it holds at most one bit
// per row of the table and little when few rows are set.
type rowSet struct {
	pages [][]uint64
	n     int64
}

const pageBits = 16

func (r *rowSet) add(row int64) {
	p := int(row >> pageBits)
	if p >= len(r.pages) {
		r.pages = append(r.pages, make([][]uint64, p+1-len(r.pages))...)
	}
	if r.pages[p] == nil {
		r.pages[p] = make([]uint64, 1<<pageBits/64)
	}
	w, bit := (row&(1<<pageBits-1))>>6, uint64(1)<<(row&63)
	if r.pages[p][w]&bit == 0 {
		r.pages[p][w] |= bit
		r.n++
	}
}

func (r *rowSet) has(row int64) bool {
	p := int(row >> pageBits)
	if p >= len(r.pages) || r.pages[p] == nil {
		return false
	}
	return r.pages[p][(row&(1<<pageBits-1))>>6]&(uint64(1)<<(row&63)) != 0
}

// anyIn reports whether a row in [lo, hi) is in the set.
func (r *rowSet) anyIn(lo, hi int64) bool {
	for lo < hi {
		p := int(lo >> pageBits)
		if p >= len(r.pages) {
			return false
		}
		end := min(hi, int64(p+1)<<pageBits)
		if r.pages[p] == nil {
			lo = end
			continue
		}
		for ; lo < end; lo++ {
			if lo&63 == 0 && end-lo >= 64 {
				if r.pages[p][(lo&(1<<pageBits-1))>>6] != 0 {
					return true
				}
				lo += 63
				continue
			}
			if r.has(lo) {
				return true
			}
		}
	}
	return false
}

func (r *rowSet) bytes() int64 {
	n := int64(cap(r.pages)) * 24
	for _, p := range r.pages {
		n += int64(cap(p)) * 8
	}
	return n
}
