package merge

import (
	"hash/maphash"
	"strconv"
)

// interner numbers JSON values by equality: equal values (see equal) get
// the same class, different values different classes. A value's class is
// found through a hash that equal values share (numbers by decimal value,
// strings decoded, object members in any order), then checked with equal,
// so that a hash collision can never make two values the same. Values
// must be in full trees (see expand).
type interner struct {
	seed  maphash.Seed
	heads map[uint64]int32 // hash -> first class with it
	reps  []classRep
	buf   []byte // scratch for decoded strings and numbers
}

type classRep struct {
	t    *tree
	v    *value
	hash uint64
	next int32 // next class with the same hash; -1: none
}

func newInterner(seed maphash.Seed, n int) *interner {
	return &interner{seed: seed, heads: make(map[uint64]int32, n), reps: make([]classRep, 0, n)}
}

// class returns the class of value v of t.
func (in *interner) class(t *tree, v *value) int32 {
	h := in.hash(t, v)
	head, ok := in.heads[h]
	if ok {
		for c := head; c >= 0; c = in.reps[c].next {
			r := &in.reps[c]
			if equal(r.t, r.v, t, v) {
				return c
			}
		}
	} else {
		head = -1
	}
	c := int32(len(in.reps))
	in.reps = append(in.reps, classRep{t: t, v: v, hash: h, next: head})
	in.heads[h] = c
	return c
}

// classes returns the classes of items of t.
func (in *interner) classes(t *tree, items []value) []int32 {
	out := make([]int32, len(items))
	for i := range items {
		out[i] = in.class(t, &items[i])
	}
	return out
}

func mix(a, b uint64) uint64 {
	h := (a ^ b) * 0x9E3779B97F4A7C15
	h ^= h >> 31
	h *= 0xD6E8FEB86659FD93
	h ^= h >> 32
	return h
}

// Distinct starting points for the hashes of each kind.
const (
	hashNull uint64 = 0x6a09e667f3bcc908 + iota
	hashFalse
	hashTrue
	hashNumber
	hashString
	hashArray
	hashObject
	hashZero
)

// hash returns a hash of v that every value equal to it shares.
func (in *interner) hash(t *tree, v *value) uint64 {
	switch v.kind {
	case kindNull:
		return hashNull
	case kindFalse:
		return hashFalse
	case kindTrue:
		return hashTrue
	case kindNumber:
		d := parseDecimal(t.raw(v))
		if d.zero() {
			return hashZero
		}
		b := in.buf[:0]
		if d.neg {
			b = append(b, '-')
		}
		b = append(b, d.intPart...)
		b = append(b, d.fracPart...)
		b = append(b, 'e')
		if len(d.expDigits) <= 17 {
			var e int64
			for _, c := range d.expDigits {
				e = e*10 + int64(c-'0')
			}
			if d.expNeg {
				e = -e
			}
			b = strconv.AppendInt(b, e+d.shift, 10)
		} else {
			b = append(b, d.exponent()...)
		}
		in.buf = b
		return mix(hashNumber, maphash.Bytes(in.seed, b))
	case kindString:
		body := t.data[v.start+1 : v.end-1]
		if v.escaped {
			in.buf = appendUnescaped(in.buf[:0], body)
			body = in.buf
		}
		return mix(hashString, maphash.Bytes(in.seed, body))
	case kindArray:
		items, it := t.arrayItems(v)
		h := mix(hashArray, uint64(len(items)))
		for i := range items {
			h = mix(h, in.hash(it, &items[i]))
		}
		return h
	default: // object: members in any order
		var sum uint64
		for i := v.first; i < v.first+v.count; i++ {
			mb := &t.members[i]
			k := maphash.Bytes(in.seed, t.key(mb))
			sum += mix(k, in.hash(t, &mb.value))
		}
		return mix(hashObject, sum+uint64(v.count))
	}
}
