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
	seed maphash.Seed
	// slots is an open-addressed hash table of the classes: class+1, 0
	// for an empty slot; its size is a power of two, at least twice the
	// number of classes.
	slots []int32
	reps  []classRep
	buf   []byte // scratch for decoded strings and numbers
}

type classRep struct {
	t    *tree
	v    *value
	hash uint64
}

func newInterner(seed maphash.Seed) *interner {
	return &interner{seed: seed, slots: make([]int32, 64)}
}

// class returns the class of value v of t.
func (in *interner) class(t *tree, v *value) int32 {
	h := in.hash(t, v)
	mask := uint64(len(in.slots) - 1)
	j := h & mask
	for ; in.slots[j] != 0; j = (j + 1) & mask {
		c := in.slots[j] - 1
		if r := &in.reps[c]; r.hash == h && equal(r.t, r.v, t, v) {
			return c
		}
	}
	c := int32(len(in.reps))
	in.reps = append(in.reps, classRep{t: t, v: v, hash: h})
	in.slots[j] = c + 1
	if 2*len(in.reps) > len(in.slots) {
		in.grow()
	}
	return c
}

func (in *interner) grow() {
	in.slots = make([]int32, 2*len(in.slots))
	mask := uint64(len(in.slots) - 1)
	for c := range in.reps {
		j := in.reps[c].hash & mask
		for in.slots[j] != 0 {
			j = (j + 1) & mask
		}
		in.slots[j] = int32(c) + 1
	}
}

func mixClass(a, b uint64) uint64 {
	h := (a ^ b) * 0x9E3779B97F4A7C15
	h ^= h >> 31
	h *= 0xD6E8FEB86659FD93
	h ^= h >> 32
	return h
}

// Distinct starting points for the hashes of each kind.
const (
	classNull uint64 = 0x6a09e667f3bcc908 + iota
	classFalse
	classTrue
	classNumber
	classString
	classArray
	classObject
	classZero
)

// hash returns a hash of v that every value equal to it shares.
func (in *interner) hash(t *tree, v *value) uint64 {
	switch v.kind {
	case kindNull:
		return classNull
	case kindFalse:
		return classFalse
	case kindTrue:
		return classTrue
	case kindNumber:
		raw := t.raw(v)
		if h, ok := in.integerHash(raw); ok {
			return h
		}
		d := parseDecimal(raw)
		if d.zero() {
			return classZero
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
		return mixClass(classNumber, maphash.Bytes(in.seed, b))
	}
	return in.hashContainer(t, v)
}

// integerHash is hash for a number written as an integer (the usual
// case), without parsing it as a decimal: the same canonical form, digits
// without trailing zeros and the exponent of the first one.
func (in *interner) integerHash(raw []byte) (uint64, bool) {
	digits := raw
	if digits[0] == '-' {
		digits = digits[1:]
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	if digits[0] == '0' {
		return classZero, true // validated: "0" or "-0"
	}
	sig := len(digits)
	for digits[sig-1] == '0' {
		sig--
	}
	b := in.buf[:0]
	if raw[0] == '-' {
		b = append(b, '-')
	}
	b = append(b, digits[:sig]...)
	b = append(b, 'e')
	b = strconv.AppendInt(b, int64(len(digits)), 10)
	in.buf = b
	return mixClass(classNumber, maphash.Bytes(in.seed, b)), true
}

// hashContainer is hash for strings, arrays and objects.
func (in *interner) hashContainer(t *tree, v *value) uint64 {
	switch v.kind {
	case kindString:
		body := t.data[v.start+1 : v.end-1]
		if v.escaped {
			in.buf = appendUnescaped(in.buf[:0], body)
			body = in.buf
		}
		return mixClass(classString, maphash.Bytes(in.seed, body))
	case kindArray:
		items, it := t.arrayItems(v)
		h := mixClass(classArray, uint64(len(items)))
		for i := range items {
			h = mixClass(h, in.hash(it, &items[i]))
		}
		return h
	default: // object: members in any order
		var sum uint64
		for i := v.first; i < v.first+v.count; i++ {
			mb := &t.members[i]
			k := maphash.Bytes(in.seed, t.key(mb))
			sum += mixClass(k, in.hash(t, &mb.value))
		}
		return mixClass(classObject, sum+uint64(v.count))
	}
}
