package merge

import (
	"cmp"
	"encoding/binary"
	"hash/maphash"
	"math"
	"math/big"
	"math/bits"
	"slices"
	"sync"
	"unsafe"
)

// A Summary is what the base choice keeps of one version of a record: a
// hash of every subtree, canonical under JSON equality, arranged so that
// the distance between two summaries is found top-down, descending only
// where the hashes differ. It holds no text of the document.
//
// Layout. A value is a hash and a ref: 0 for a scalar (its size is 1), else
// the index plus one of its container. An object's members are stored
// sorted by the high 32 bits of their key's hash; each member holds
// mix(key hash, value hash), so an object's hash is the sum of its
// members' (key order never counts). An object of more than bucketSize
// members is indexed by a trie on those key bits, 4 bits a level, each
// node holding the sums of its 16 key ranges: two large objects that
// differ in a few keys are compared by descending only the unequal ranges.
// Arrays keep their elements' hashes in order, and, when long, the hashes
// of runs of chunkLen elements.
//
// Hashes are 64 bits, seeded at random per process: two summaries made by
// the same process compare; equal values always hash alike, and unequal
// values collide with probability about 2^-64 per comparison (no input can
// be written to collide without knowing the seed). Members are matched
// between objects by 32 bits of their key hash; two different keys that
// share them can make a distance off by one, never 0 for unequal
// documents.
type Summary struct {
	hash     uint64 // of the whole document
	ref      uint32 // the root's container plus one, 0 for a scalar
	conts    []container
	members  []smember
	elems    []uint64 // array elements' value hashes
	elemRefs []uint32 // and refs, in parallel
	tries    []trieNode
	chunks   []uint64
	// bigs are the raw hashes (of their bytes as written) of the
	// containers that are the value of a member of an object outside
	// arrays and span at least bigSpan bytes, by ref (ascending): see
	// Document.SummaryReusing.
	bigs []bigEntry
}

// bigEntry is the raw hash of a large container.
type bigEntry struct {
	raw uint64
	ref uint32
	len uint32 // of its bytes
}

// container is an object or an array of a summary.
type container struct {
	hash  uint64 // value hash
	size  uint32 // values in the subtree, this one included
	first uint32 // index of the first member or element
	info  uint32 // count<<1, | 1 for an object
	aux   uint32 // object: its trie node plus one, 0 for none; array: its first chunk hash
}

func (c *container) count() uint32  { return c.info >> 1 }
func (c *container) isObject() bool { return c.info&1 != 0 }

// smember is one member of an object.
type smember struct {
	mh  uint64 // mix(key hash, value hash)
	key uint32 // high 32 bits of the key hash; an object's members are sorted by it
	ref uint32 // the value's container plus one, 0 for a scalar
}

// trieNode splits the members of an object, or of one key range of it, by
// 4 more bits of their key hash.
type trieNode struct {
	hash  [16]uint64 // sum of the members' mh in each range
	start [17]uint32 // range c is members[start[c]:start[c+1]]
	child [16]uint32 // the node splitting range c further plus one, 0 for none
}

const (
	// bucketSize is the most members an object or a trie range has
	// without a trie node over it: they are compared by a merge walk.
	bucketSize = 32
	// trieLevels is how many 4-bit levels the 32 key bits allow.
	trieLevels = 8
	// chunkLen is the length of the runs of elements of a long array
	// whose hashes let a comparison skip an equal prefix.
	chunkLen = 64
	// bigSpan is the least length in bytes of a container whose raw hash
	// is kept, so that its summary can be copied rather than made again.
	bigSpan = 256
)

var (
	hashSeed = maphash.MakeSeed()
	// Per-process random tags separate the kinds of values.
	tagNull   = hashString("null")
	tagFalse  = hashString("false")
	tagTrue   = hashString("true")
	tagString = hashString("string")
	tagNumPos = hashString("+number")
	tagNumNeg = hashString("-number")
	tagBigExp = hashString("big exponent")
	tagZero   = hashString("0")
	tagObject = hashString("object")
	tagArray  = hashString("array")
	tagChunk  = hashString("chunk")
	hashNull  = mix(tagNull, tagNull)
	hashFalse = mix(tagFalse, tagFalse)
	hashTrue  = mix(tagTrue, tagTrue)
	hashZero  = mix(tagZero, tagNumPos)
)

func hashString(s string) uint64 { return maphash.String(hashSeed, s) }

// Secrets of hashBytes, random per process.
var (
	secret0 = hashString("secret 0")
	secret1 = hashString("secret 1")
	secret2 = hashString("secret 2")
)

// hashBytes hashes b: inline for up to 48 bytes (most keys and values;
// a call to maphash costs more than the hashing), else with maphash. Which
// way depends only on the length, so equal bytes hash alike.
func hashBytes(b []byte) uint64 {
	n := len(b)
	if n > 48 {
		return maphash.Bytes(hashSeed, b)
	}
	// wyhash's reads and multiply-folds, keyed by the secrets.
	seed := secret0
	for len(b) > 16 {
		seed = mix(binary.LittleEndian.Uint64(b)^secret1, binary.LittleEndian.Uint64(b[8:])^seed)
		b = b[16:]
	}
	var x, y uint64
	switch m := len(b); {
	case m >= 8:
		x, y = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[m-8:])
	case m >= 4:
		x, y = uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[m-4:]))
	case m > 0:
		x = uint64(b[0])<<16 | uint64(b[m>>1])<<8 | uint64(b[m-1])
	}
	return mix(secret1^uint64(n), mix(x^secret1, y^seed))
}

// mix combines two hashes (wyhash's multiply-fold).
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a^0xa0761d6478bd642f, b^0xe7037ed1a0b428db)
	return hi ^ lo
}

// Summarize validates data as one JSON document, with the limits of opts
// (MaxSize, MaxDepth, as Merge applies them to its inputs), and returns its
// summary. An invalid document is an *InputError whose Input is
// "document".
func Summarize(data []byte, opts Options) (*Summary, error) {
	d, err := ParseDocument(data, opts)
	if err != nil {
		return nil, err
	}
	return d.Summary(), nil
}

// Document is one validated JSON document, parsed once: a commit parses
// mine once for both the base choice (its Summary) and the merge
// (Inputs.MineDoc), and keeps the Documents of versions it knows for later
// merges (Inputs.BaseDoc, Inputs.TheirsDoc). It refers to data, which must
// not change. A Document is safe for concurrent use.
type Document struct {
	t                 *tree
	maxSize, maxDepth int // the limits it was validated with
}

// ParseDocument validates data as one JSON document with the limits of
// opts. An invalid document is an *InputError whose Input is "document".
func ParseDocument(data []byte, opts Options) (*Document, error) {
	return ParseDocumentLike(data, opts, nil)
}

// ParseDocumentLike is ParseDocument, faster where data repeats large
// values of like (a document parsed with the same limits: the version the
// writer probably read) byte for byte at the same key path: those values
// are known to be valid, and their parse is taken from like's. The result,
// and any error, is what ParseDocument gives. like may be nil.
func ParseDocumentLike(data []byte, opts Options, like *Document) (*Document, error) {
	maxSize, maxDepth, err := limits(opts)
	if err != nil {
		return nil, err
	}
	var lt *tree
	if like != nil && like.maxSize == maxSize && like.maxDepth == maxDepth {
		lt = like.t
	}
	s := getScratch()
	defer s.release()
	t, err := loadLike("document", data, maxSize, maxDepth, s, lt)
	if err != nil {
		return nil, err
	}
	return &Document{t: t, maxSize: maxSize, maxDepth: maxDepth}, nil
}

// Bytes returns the approximate memory d holds besides the document's
// text, to charge against a memory budget.
func (d *Document) Bytes() int {
	t := d.t
	n := int(unsafe.Sizeof(*d)) + int(unsafe.Sizeof(*t)) +
		cap(t.members)*int(unsafe.Sizeof(member{})) + cap(t.items)*int(unsafe.Sizeof(value{})) +
		cap(t.members)*4 + // tree.sorted, if made
		cap(t.keyText) + len(t.escapedKeys)*48
	return n
}

// Summary returns the summary of d, made without parsing d again.
func (d *Document) Summary() *Summary {
	return summarizeTree(d.t, nil)
}

// SummaryReusing returns the same summary as Summary (equal hashes, equal
// distances to any other), made faster where d shares large subtrees byte
// for byte with the document of prev: their summaries are copied from
// prev instead of being made again. prev is typically a version the
// writer probably read (its thread's or process's last read, or the
// newest): a writer rewrites the parts it did not change as they were.
// prev may be nil; it must be a summary made by this process.
//
// Subtrees are reused when they are the value of a member of an object
// (outside arrays) at the same key path in both, are at least bigSpan
// bytes long, and have equal raw hashes (64 bits, seeded per process:
// byte-equal but for a collision). Other parts cost what Summary costs.
func (d *Document) SummaryReusing(prev *Summary) *Summary {
	return summarizeTree(d.t, prev)
}

// Equal reports whether the documents of s and o are JSON-equal (up to a
// 64-bit hash collision, see Summary).
func (s *Summary) Equal(o *Summary) bool {
	return s.hash == o.hash
}

// Hash returns the hash of the whole document: equal documents have equal
// hashes within one process (it is seeded per process and must not be
// stored).
func (s *Summary) Hash() uint64 { return s.hash }

// Size returns the number of values in the document: every scalar, object
// and array, at any depth: its distance to a scalar of another value.
// Distance(a, b) is at most a.Size()+b.Size()-1.
func (s *Summary) Size() int {
	if s.ref == 0 {
		return 1
	}
	return int(s.conts[s.ref-1].size)
}

// Bytes returns the approximate memory the summary holds, to charge
// against a memory budget: its own struct and its slices' backing arrays.
func (s *Summary) Bytes() int {
	return int(unsafe.Sizeof(*s)) +
		cap(s.conts)*int(unsafe.Sizeof(container{})) +
		cap(s.members)*int(unsafe.Sizeof(smember{})) +
		cap(s.elems)*8 + cap(s.elemRefs)*4 +
		cap(s.tries)*int(unsafe.Sizeof(trieNode{})) +
		cap(s.chunks)*8 +
		cap(s.bigs)*int(unsafe.Sizeof(bigEntry{}))
}

// summarizer builds a Summary into reusable scratch slices, then copies
// it out once into exactly sized ones.
type summarizer struct {
	data   []byte
	prev   *Summary // the summary to reuse subtrees of, or nil
	out    Summary
	buf    []byte // unescaped strings, digits
	mstack []smember
	estack []uint64
	rstack []uint32
	sortTo []smember
	counts []uint32
}

var summarizers = sync.Pool{New: func() any { return new(summarizer) }}

// summarizeTree returns the summary of a validated tree. Objects outside
// arrays are read from the tree; arrays, which the tree keeps as spans,
// are scanned from the (validated) bytes.
func summarizeTree(t *tree, prev *Summary) *Summary {
	z := summarizers.Get().(*summarizer)
	z.data, z.prev = t.data, prev
	o := &z.out
	o.conts, o.members, o.elems, o.elemRefs, o.tries, o.chunks, o.bigs =
		o.conts[:0], o.members[:0], o.elems[:0], o.elemRefs[:0], o.tries[:0], o.chunks[:0], o.bigs[:0]
	var prevRoot uint32
	if prev != nil {
		prevRoot = prev.ref
	}
	h, ref, _ := z.treeValue(t, &t.root, prevRoot)
	s := &Summary{hash: h, ref: ref}
	// One allocation for all of it: the slices' types hold no pointers.
	arena := make([]uint64, words8(o.conts)+words8(o.members)+words8(o.elems)+words8(o.elemRefs)+
		words8(o.tries)+words8(o.chunks)+words8(o.bigs))
	arena, s.conts = carve(arena, o.conts)
	arena, s.members = carve(arena, o.members)
	arena, s.elems = carve(arena, o.elems)
	arena, s.elemRefs = carve(arena, o.elemRefs)
	arena, s.tries = carve(arena, o.tries)
	arena, s.chunks = carve(arena, o.chunks)
	_, s.bigs = carve(arena, o.bigs)
	z.data, z.prev = nil, nil
	if cap(z.buf) > 1<<16 {
		z.buf = nil
	}
	summarizers.Put(z)
	return s
}

// rawHash is the hash of a value's bytes as written.
func rawHash(b []byte) uint64 {
	return maphash.Bytes(hashSeed, b)
}

// big returns the raw hash entry of container ref of s, nil if none.
func (s *Summary) big(ref uint32) *bigEntry {
	i, ok := slices.BinarySearchFunc(s.bigs, ref, func(e bigEntry, ref uint32) int { return cmp.Compare(e.ref, ref) })
	if !ok {
		return nil
	}
	return &s.bigs[i]
}

// member returns the ref of the value of the only member of object c of s
// whose key has the 32 bits key, 0 if there is none or more than one.
func (s *Summary) member(c uint32, key uint32) uint32 {
	oc := &s.conts[c-1]
	ms := s.members[oc.first : oc.first+oc.count()]
	i, ok := slices.BinarySearchFunc(ms, key, func(m smember, key uint32) int { return cmp.Compare(m.key, key) })
	if !ok || i+1 < len(ms) && ms[i+1].key == key {
		return 0
	}
	return ms[i].ref
}

// words8 returns the number of 8-byte words that hold x.
func words8[T any](x []T) int {
	var zero T
	return (len(x)*int(unsafe.Sizeof(zero)) + 7) / 8
}

// carve copies x to the start of arena, which has room for it, and
// returns the rest of arena and the copy (nil if x is empty). T must hold
// no pointers and need no more than 8-byte alignment.
func carve[T any](arena []uint64, x []T) ([]uint64, []T) {
	if len(x) == 0 {
		return arena, nil
	}
	n := words8(x)
	c := unsafe.Slice((*T)(unsafe.Pointer(&arena[0])), len(x))
	copy(c, x)
	return arena[n:], c
}

// treeValue summarizes value v of t; size is the number of values in it.
// pc is the container of z.prev at the same key path, 0 for none.
func (z *summarizer) treeValue(t *tree, v *value, pc uint32) (h uint64, ref, size uint32) {
	switch v.kind {
	case kindObject:
		if pc != 0 && !z.prev.conts[pc-1].isObject() {
			pc = 0
		}
		mark := len(z.mstack)
		size = 1
		for i := v.first; i < v.first+v.count; i++ {
			m := &t.members[i]
			kh := hashBytes(t.key(m))
			var vh uint64
			var vref, vsize uint32
			if mv := &m.value; mv.kind >= kindArray {
				vh, vref, vsize = z.member(t, mv, pc, uint32(kh>>32))
			} else {
				vh, vsize = z.scalar(mv.kind, t.data[mv.start:mv.end], mv.escaped), 1
			}
			size += vsize
			z.mstack = append(z.mstack, smember{mh: mix(kh, vh), key: uint32(kh >> 32), ref: vref})
		}
		h, ref = z.finishObject(mark, size)
		return h, ref, size
	case kindArray:
		h, ref, size, _ = z.scanArray(int(v.start))
		return h, ref, size
	}
	return z.scalar(v.kind, t.data[v.start:v.end], v.escaped), 0, 1
}

// member summarizes container v, the value of a member with key bits key
// of an object whose container in z.prev is pc (0: none): copied from
// z.prev when it has the same bytes there.
func (z *summarizer) member(t *tree, v *value, pc uint32, key uint32) (h uint64, ref, size uint32) {
	if v.end-v.start < bigSpan {
		if v.kind == kindObject {
			return z.treeValue(t, v, 0)
		}
		h, ref, size, _ = z.scanArray(int(v.start))
		return h, ref, size
	}
	span := t.data[v.start:v.end]
	raw := rawHash(span)
	var prev uint32
	same := false
	if pc != 0 {
		if prev = z.prev.member(pc, key); prev != 0 {
			e := z.prev.big(prev)
			same = e != nil && e.len == uint32(len(span)) && e.raw == raw
		}
	}
	switch {
	case same:
		h, ref, size = z.copy(prev)
	case v.kind == kindObject:
		h, ref, size = z.treeValue(t, v, prev)
	default:
		h, ref, size, _ = z.scanArray(int(v.start))
	}
	if n := len(z.out.bigs); n == 0 || z.out.bigs[n-1].ref != ref { // copy may have added it
		z.out.bigs = append(z.out.bigs, bigEntry{raw: raw, ref: ref, len: uint32(len(span))})
	}
	return h, ref, size
}

// copy copies container c of z.prev, and all it holds, into z.out.
func (z *summarizer) copy(c uint32) (h uint64, ref, size uint32) {
	p, o := z.prev, &z.out
	pc := p.conts[c-1]
	n := pc.count()
	first := uint32(0)
	var aux uint32
	if pc.isObject() {
		first = uint32(len(o.members))
		o.members = append(o.members, p.members[pc.first:pc.first+n]...)
		for i := first; i < first+n; i++ {
			if r := o.members[i].ref; r != 0 {
				_, o.members[i].ref, _ = z.copy(r)
			}
		}
		if n > bucketSize {
			aux = z.copyTrie(pc.aux, first-pc.first)
		}
	} else {
		first = uint32(len(o.elems))
		o.elems = append(o.elems, p.elems[pc.first:pc.first+n]...)
		o.elemRefs = append(o.elemRefs, p.elemRefs[pc.first:pc.first+n]...)
		for i := first; i < first+n; i++ {
			if r := o.elemRefs[i]; r != 0 {
				_, o.elemRefs[i], _ = z.copy(r)
			}
		}
		aux = uint32(len(o.chunks))
		if n >= 2*chunkLen {
			o.chunks = append(o.chunks, p.chunks[pc.aux:pc.aux+n/chunkLen]...)
		}
	}
	o.conts = append(o.conts, container{hash: pc.hash, size: pc.size, first: first, info: pc.info, aux: aux})
	ref = uint32(len(o.conts))
	if e := p.big(c); e != nil {
		o.bigs = append(o.bigs, bigEntry{raw: e.raw, ref: ref, len: e.len})
	}
	return pc.hash, ref, pc.size
}

// scalar returns the hash of a scalar value of kind k written as raw.
func (z *summarizer) scalar(k kind, raw []byte, escaped bool) uint64 {
	switch k {
	case kindNull:
		return hashNull
	case kindFalse:
		return hashFalse
	case kindTrue:
		return hashTrue
	case kindString:
		body := raw[1 : len(raw)-1]
		if escaped {
			z.buf = appendUnescaped(z.buf[:0], body)
			body = z.buf
		}
		return mix(hashBytes(body), tagString)
	}
	return z.number(raw)
}

// number returns the hash of a number lexeme, equal for numbers of the
// same decimal value (see numbersEqual): the hash of its significant
// digits, its exponent and its sign, zero being one value.
func (z *summarizer) number(raw []byte) uint64 {
	neg := raw[0] == '-'
	digits := raw
	if neg {
		digits = raw[1:]
	}
	plain := true
	for _, c := range digits {
		if c < '0' || c > '9' {
			plain = false
			break
		}
	}
	if plain { // an integer: no leading zeros but in 0 itself
		if digits[0] == '0' {
			return hashZero
		}
		exp := int64(len(digits))
		for digits[len(digits)-1] == '0' {
			digits = digits[:len(digits)-1]
		}
		return numberHash(neg, digits, exp)
	}
	d := parseDecimal(raw)
	if d.zero() {
		return hashZero
	}
	switch {
	case len(d.fracPart) == 0:
		digits = d.intPart
	case len(d.intPart) == 0:
		digits = d.fracPart
	default:
		z.buf = append(append(z.buf[:0], d.intPart...), d.fracPart...)
		digits = z.buf
	}
	// Exponents of up to 18 digits and the shift (at most the length of
	// the document) fit in an int64.
	if len(d.expDigits) <= 18 {
		var e int64
		for _, c := range d.expDigits {
			e = e*10 + int64(c-'0')
		}
		if d.expNeg {
			e = -e
		}
		return numberHash(neg, digits, e+d.shift)
	}
	e, _ := new(big.Int).SetString(string(d.expDigits), 10)
	if d.expNeg {
		e.Neg(e)
	}
	e.Add(e, big.NewInt(d.shift))
	if e.IsInt64() {
		return numberHash(neg, digits, e.Int64())
	}
	h := mix(hashBytes(digits), mix(hashString(e.String()), tagBigExp))
	if neg {
		return mix(h, tagNumNeg)
	}
	return mix(h, tagNumPos)
}

// numberHash is the hash of the number [-]0.DIGITS × 10^exp.
func numberHash(neg bool, digits []byte, exp int64) uint64 {
	h := mix(hashBytes(digits), uint64(exp))
	if neg {
		return mix(h, tagNumNeg)
	}
	return mix(h, tagNumPos)
}

// copyTrie copies trie node t of z.prev and those under it into z.out,
// their members moved by delta, and returns the copy's index plus one.
func (z *summarizer) copyTrie(t, delta uint32) uint32 {
	o := &z.out
	idx := len(o.tries)
	o.tries = append(o.tries, z.prev.tries[t-1])
	node := &o.tries[idx]
	for c := range node.start {
		node.start[c] += delta
	}
	for c := range 16 {
		if child := o.tries[idx].child[c]; child != 0 {
			o.tries[idx].child[c] = z.copyTrie(child, delta)
		}
	}
	return uint32(idx + 1)
}

// finishObject makes the container of the object whose members are
// z.mstack[mark:].
func (z *summarizer) finishObject(mark int, size uint32) (h uint64, ref uint32) {
	o := &z.out
	first := len(o.members)
	o.members = append(o.members, z.mstack[mark:]...)
	z.mstack = z.mstack[:mark]
	ms := o.members[first:]
	z.sortMembers(ms)
	var sum uint64
	for i := range ms {
		sum += ms[i].mh
	}
	var aux uint32
	if len(ms) > bucketSize {
		aux = z.buildTrie(uint32(first), uint32(len(o.members)), 0)
	}
	h = mix(sum, tagObject)
	o.conts = append(o.conts, container{hash: h, size: size, first: uint32(first), info: uint32(len(ms))<<1 | 1, aux: aux})
	return h, uint32(len(o.conts))
}

// sortMembers sorts ms by key: a counting sort by the top bits, then an
// insertion sort that only has to order members within a bucket.
func (z *summarizer) sortMembers(ms []smember) {
	n := len(ms)
	if n > 16 {
		b := min(bits.Len(uint(n)), 16)
		shift := 32 - b
		if cap(z.counts) < 1<<b+1 {
			z.counts = make([]uint32, 1<<b+1)
		}
		counts := z.counts[:1<<b+1]
		clear(counts)
		for i := range ms {
			counts[ms[i].key>>shift+1]++
		}
		for i := 1; i < len(counts); i++ {
			counts[i] += counts[i-1]
		}
		if cap(z.sortTo) < n {
			z.sortTo = make([]smember, n)
		}
		to := z.sortTo[:n]
		for i := range ms {
			k := ms[i].key >> shift
			to[counts[k]] = ms[i]
			counts[k]++
		}
		copy(ms, to)
	}
	for i := 1; i < n; i++ {
		m := ms[i]
		j := i
		for j > 0 && ms[j-1].key > m.key {
			ms[j] = ms[j-1]
			j--
		}
		ms[j] = m
	}
}

// buildTrie returns the trie node (plus one) over the sorted members
// [lo, hi) of z.out.members, which share their top 4*level key bits.
func (z *summarizer) buildTrie(lo, hi uint32, level uint) uint32 {
	var node trieNode
	shift := 28 - 4*level
	ms := z.out.members
	i := lo
	for c := range uint32(16) {
		node.start[c] = i
		var h uint64
		for i < hi && (ms[i].key>>shift)&15 == c {
			h += ms[i].mh
			i++
		}
		node.hash[c] = h
	}
	node.start[16] = hi
	idx := len(z.out.tries)
	z.out.tries = append(z.out.tries, trieNode{})
	if level+1 < trieLevels {
		for c := range 16 {
			if node.start[c+1]-node.start[c] > bucketSize {
				node.child[c] = z.buildTrie(node.start[c], node.start[c+1], level+1)
			}
		}
	}
	z.out.tries[idx] = node
	return uint32(idx + 1)
}

// finishArray makes the container of the array whose elements are
// z.estack[mark:] and z.rstack[mark:].
func (z *summarizer) finishArray(mark int, size uint32) (h uint64, ref uint32) {
	o := &z.out
	first := len(o.elems)
	es := z.estack[mark:]
	o.elems = append(o.elems, es...)
	o.elemRefs = append(o.elemRefs, z.rstack[mark:]...)
	h = tagArray
	for _, e := range es {
		h = mix(h, e)
	}
	h = mix(h, uint64(len(es)))
	aux := uint32(len(o.chunks))
	if len(es) >= 2*chunkLen {
		for c := 0; c+chunkLen <= len(es); c += chunkLen {
			ch := tagChunk
			for _, e := range es[c : c+chunkLen] {
				ch = mix(ch, e)
			}
			o.chunks = append(o.chunks, ch)
		}
	}
	z.estack, z.rstack = z.estack[:mark], z.rstack[:mark]
	o.conts = append(o.conts, container{hash: h, size: size, first: uint32(first), info: uint32(len(es)) << 1, aux: aux})
	return h, uint32(len(o.conts))
}

// The scan functions read validated JSON text: they check nothing.

// scanValue summarizes the value at pos (not whitespace) and returns the
// offset just past it.
func (z *summarizer) scanValue(pos int) (h uint64, ref, size uint32, end int) {
	data := z.data
	switch c := data[pos]; c {
	case '"':
		end, escaped := stringEnd(data, pos)
		return z.scalar(kindString, data[pos:end], escaped), 0, 1, end
	case '{':
		return z.scanObject(pos)
	case '[':
		return z.scanArray(pos)
	case 'n':
		return hashNull, 0, 1, pos + 4
	case 't':
		return hashTrue, 0, 1, pos + 4
	case 'f':
		return hashFalse, 0, 1, pos + 5
	}
	end = pos + 1
	for end < len(data) && isNumberByte[data[end]] {
		end++
	}
	return z.number(data[pos:end]), 0, 1, end
}

var isNumberByte = [256]bool{
	'0': true, '1': true, '2': true, '3': true, '4': true, '5': true, '6': true, '7': true, '8': true, '9': true,
	'.': true, 'e': true, 'E': true, '+': true, '-': true,
}

// stringEnd returns the offset just past the string whose opening quote
// is at pos, and whether it contains escapes.
func stringEnd(data []byte, pos int) (end int, escaped bool) {
	i := pos + 1
	for {
		i = skipPlain(data, i)
		switch data[i] {
		case '"':
			return i + 1, escaped
		case '\\':
			escaped = true
			i += 2 // the rest of a \u escape is plain
		default: // a byte of a multi-byte UTF-8 sequence
			i++
		}
	}
}

func (z *summarizer) scanObject(pos int) (h uint64, ref, size uint32, end int) {
	data := z.data
	mark := len(z.mstack)
	size = 1
	pos = skipSpaceFrom(data, pos+1)
	if data[pos] != '}' {
		for {
			kend, escaped := stringEnd(data, pos)
			key := data[pos+1 : kend-1]
			if escaped {
				z.buf = appendUnescaped(z.buf[:0], key)
				key = z.buf
			}
			kh := hashBytes(key)
			pos = skipSpaceFrom(data, kend)
			pos = skipSpaceFrom(data, pos+1) // ':'
			vh, vref, vsize, vend := z.scanValue(pos)
			size += vsize
			z.mstack = append(z.mstack, smember{mh: mix(kh, vh), key: uint32(kh >> 32), ref: vref})
			pos = skipSpaceFrom(data, vend)
			if data[pos] == '}' {
				break
			}
			pos = skipSpaceFrom(data, pos+1) // ','
		}
	}
	h, ref = z.finishObject(mark, size)
	return h, ref, size, pos + 1
}

func (z *summarizer) scanArray(pos int) (h uint64, ref, size uint32, end int) {
	data := z.data
	mark := len(z.estack)
	size = 1
	pos = skipSpaceFrom(data, pos+1)
	if data[pos] != ']' {
		for {
			vh, vref, vsize, vend := z.scanValue(pos)
			size += vsize
			z.estack = append(z.estack, vh)
			z.rstack = append(z.rstack, vref)
			pos = skipSpaceFrom(data, vend)
			if data[pos] == ']' {
				break
			}
			pos = skipSpaceFrom(data, pos+1) // ','
		}
	}
	h, ref = z.finishArray(mark, size)
	return h, ref, size, pos + 1
}

// Distance returns the number of values that differ between the documents
// of a and b, or, once that count reaches limit, some number at least
// limit and at most the count (limit <= 0: no limit). It is symmetric, and
// 0 exactly when the documents are JSON-equal.
//
// The count is over values: every scalar, object and array at any depth.
// Two values at the same place (same key path from the top, or same array
// position, see below) count:
//   - 0 if they are JSON-equal;
//   - both objects: the sum over the keys of either: a key in both counts
//     the distance between its two values, a key in one only counts every
//     value of the subtree it holds (1 for a scalar, 4 for {"a":1,"b":[2]});
//   - both arrays: their common prefix and common suffix (of equal
//     elements) count 0, the rest of the elements is paired by position,
//     each pair counts its distance and each element without a pair counts
//     its subtree's values;
//   - otherwise (two different scalars, or values of different kinds):
//     the values of both subtrees minus one: 1 for two scalars, 1+n for a
//     scalar replaced by an object of n values inside.
//
// Without the array trimming this is the Hamming distance between the
// documents seen as maps from key paths to values (a container labelled
// only by its kind), so it is a metric: the triangle inequality holds for
// documents whose arrays at the same paths have equal lengths. The trimming
// makes one insertion or deletion in an array count as one element instead
// of shifting all that follow.
//
// The cost is in the number of differing subtrees, not in the size of the
// documents: equal subtrees, and equal key ranges of large objects, are
// skipped by their hashes; it is bounded by limit.
func Distance(a, b *Summary, limit int) int {
	if limit <= 0 {
		limit = math.MaxInt
	}
	return distance(a, b, limit, false)
}

// distance is Distance; positional pairs array elements by position only,
// without the suffix trimming (the metric, for tests).
func distance(a, b *Summary, limit int, positional bool) int {
	if a.hash == b.hash {
		return 0
	}
	d := differ{a: a, b: b, positional: positional}
	return d.values(a.ref, b.ref, limit)
}

// differ compares two summaries. Each method counts up to limit and
// returns as soon as the count reaches it.
type differ struct {
	a, b       *Summary
	positional bool
}

func size(s *Summary, ref uint32) int {
	if ref == 0 {
		return 1
	}
	return int(s.conts[ref-1].size)
}

// values compares two values whose hashes differ.
func (d *differ) values(ra, rb uint32, limit int) int {
	if ra != 0 && rb != 0 {
		ca, cb := &d.a.conts[ra-1], &d.b.conts[rb-1]
		if ca.isObject() == cb.isObject() {
			if ca.isObject() {
				return d.objects(ca, cb, limit)
			}
			return d.arrays(ca, cb, limit)
		}
	}
	return size(d.a, ra) + size(d.b, rb) - 1
}

func (d *differ) objects(ca, cb *container, limit int) int {
	if ca.aux != 0 && cb.aux != 0 {
		return d.tries(ca.aux, cb.aux, limit)
	}
	return d.members(d.a.members[ca.first:ca.first+ca.count()], d.b.members[cb.first:cb.first+cb.count()], limit)
}

// members compares two runs of members sorted by key.
func (d *differ) members(ma, mb []smember, limit int) int {
	if len(ma) != len(mb) || len(ma) == 0 {
		return d.walk(ma, mb, limit)
	}
	// Usually both have the same keys: pair the members by position (if
	// no two keys of a share their 32 bits), counting those that differ,
	// each of which counts at least 1.
	mb = mb[:len(ma)]
	n := 0
	prev := ^ma[0].key
	for i := range ma {
		x, y := &ma[i], &mb[i]
		if x.key != y.key || x.key == prev {
			return d.walk(ma, mb, limit)
		}
		prev = x.key
		if x.mh != y.mh {
			n++
		}
	}
	if n >= limit {
		return n
	}
	n = 0
	for i := range ma {
		if ma[i].mh != mb[i].mh {
			if n += d.memberPair(&ma[i], &mb[i], limit-n); n >= limit {
				break
			}
		}
	}
	return n
}

// tries compares two objects, or key ranges of them, through their trie
// nodes (of the same level), descending only where the sums differ.
func (d *differ) tries(ta, tb uint32, limit int) int {
	na, nb := &d.a.tries[ta-1], &d.b.tries[tb-1]
	n := 0
	for c := range 16 {
		if na.hash[c] != nb.hash[c] {
			n++ // each range that differs counts at least 1
		}
	}
	if n >= limit {
		return n
	}
	n = 0
	for c := range 16 {
		if na.hash[c] == nb.hash[c] {
			continue
		}
		if na.child[c] != 0 && nb.child[c] != 0 {
			n += d.tries(na.child[c], nb.child[c], limit-n)
		} else {
			n += d.members(d.a.members[na.start[c]:na.start[c+1]], d.b.members[nb.start[c]:nb.start[c+1]], limit-n)
		}
		if n >= limit {
			break
		}
	}
	return n
}

// walk compares two runs of members sorted by key.
func (d *differ) walk(ma, mb []smember, limit int) int {
	n := 0
	i, j := 0, 0
	for i < len(ma) && j < len(mb) {
		x, y := &ma[i], &mb[j]
		switch {
		case x.key == y.key:
			if x.mh == y.mh { // the usual case: the same member
				i, j = i+1, j+1
				continue
			}
			i2, j2 := i+1, j+1
			for i2 < len(ma) && ma[i2].key == x.key {
				i2++
			}
			for j2 < len(mb) && mb[j2].key == x.key {
				j2++
			}
			if i2-i == 1 && j2-j == 1 {
				n += d.memberPair(x, y, limit-n)
			} else {
				n += d.group(ma[i:i2], mb[j:j2])
			}
			i, j = i2, j2
		case x.key < y.key:
			n += size(d.a, x.ref)
			i++
		default:
			n += size(d.b, y.ref)
			j++
		}
		if n >= limit {
			return n
		}
	}
	for ; i < len(ma) && n < limit; i++ {
		n += size(d.a, ma[i].ref)
	}
	for ; j < len(mb) && n < limit; j++ {
		n += size(d.b, mb[j].ref)
	}
	return n
}

// memberPair compares two members whose keys share their 32 bits, so
// almost surely have the same key.
func (d *differ) memberPair(x, y *smember, limit int) int {
	if x.mh == y.mh {
		return 0
	}
	if x.ref != 0 && y.ref != 0 && d.a.conts[x.ref-1].hash == d.b.conts[y.ref-1].hash {
		// Equal values under different keys: a key removed, another added.
		return size(d.a, x.ref) + size(d.b, y.ref)
	}
	// Equal scalars under different keys would count 1 here rather than
	// 2; which is still not 0.
	return d.values(x.ref, y.ref, limit)
}

// group compares members of two objects whose keys share their 32 bits
// but are not one on each side (a 32-bit collision between keys of one
// object): members equal on both sides count 0, the others count their
// subtrees.
func (d *differ) group(ga, gb []smember) int {
	n := 0
	for i := range ga {
		found := false
		for j := range gb {
			found = found || gb[j].mh == ga[i].mh
		}
		if !found {
			n += size(d.a, ga[i].ref)
		}
	}
	for j := range gb {
		found := false
		for i := range ga {
			found = found || ga[i].mh == gb[j].mh
		}
		if !found {
			n += size(d.b, gb[j].ref)
		}
	}
	return n
}

func (d *differ) arrays(ca, cb *container, limit int) int {
	la, lb := int(ca.count()), int(cb.count())
	ea, eb := d.a.elems[ca.first:ca.first+uint32(la)], d.b.elems[cb.first:cb.first+uint32(lb)]
	ra, rb := d.a.elemRefs[ca.first:ca.first+uint32(la)], d.b.elemRefs[cb.first:cb.first+uint32(lb)]
	m := min(la, lb)
	p := 0
	if m >= 2*chunkLen { // both have chunk hashes: skip equal runs
		for p+chunkLen <= m && d.a.chunks[int(ca.aux)+p/chunkLen] == d.b.chunks[int(cb.aux)+p/chunkLen] {
			p += chunkLen
		}
	}
	for p < m && ea[p] == eb[p] {
		p++
	}
	s := 0
	if la == lb || !d.positional {
		for s < m-p && ea[la-1-s] == eb[lb-1-s] {
			s++
		}
	}
	n := 0
	for i := p; i < m-s && n < limit; i++ {
		if ea[i] != eb[i] {
			n += d.values(ra[i], rb[i], limit-n)
		}
	}
	for i := m - s; i < la-s && n < limit; i++ {
		n += size(d.a, ra[i])
	}
	for i := m - s; i < lb-s && n < limit; i++ {
		n += size(d.b, rb[i])
	}
	return n
}
