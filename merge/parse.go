package merge

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// kind is the JSON type of a value.
type kind uint8

const (
	kindNull kind = iota
	kindFalse
	kindTrue
	kindNumber
	kindString
	kindArray
	kindObject
)

// value is one JSON value of a parsed document.
type value struct {
	kind       kind
	escaped    bool  // string whose raw text contains backslash escapes
	keyEscaped bool  // the value of a member whose key contains escapes
	start      int32 // offset of the first byte of the value
	end        int32 // offset just past the last byte of the value
	first      int32 // object: index into tree.members and tree.sorted; array of a full tree: into tree.items
	count      int32 // object: number of members; array: number of elements
}

// member is one key/value pair of an object.
type member struct {
	keyStart int32 // offset of the key's opening quote
	keyEnd   int32 // offset just past the key's closing quote
	value    value
}

// tree is a validated document with the byte span of every member of every
// object outside arrays, which is what the merge walks first: the elements
// of an array are only looked at (parsed again, see elements and expand)
// when two arrays with different bytes are compared or merged.
//
// The members of one object are contiguous in document order; sorted holds,
// for the same range, the member indices ordered by decoded key, made
// when first needed (see order): most trees and objects never need it.
type tree struct {
	data    []byte
	root    value
	members []member
	// sorted is guarded by sortMu: a tree of a Document may be shared by
	// merges running at the same time.
	sortMu sync.Mutex
	sorted []int32
	items  []value // a tree made by elements: the top array's elements; a full tree: every array's
	// full: the tree holds every member and element of every object and
	// array under root (made by expand), the elements of each array
	// contiguous in items.
	full bool
	// standIn: the tree is not an input but stands in for a base that
	// does not have the position (see standIn).
	standIn bool
	// Decoded text of the keys that contain escapes, by keyStart. Members
	// stay small for the usual keys that have none.
	escapedKeys map[int32][]byte
	keyText     []byte // storage for escapedKeys
}

// key returns the decoded key of m.
func (t *tree) key(m *member) []byte {
	if m.value.keyEscaped {
		return t.escapedKeys[m.keyStart]
	}
	return t.data[m.keyStart+1 : m.keyEnd-1]
}

func (t *tree) raw(v *value) []byte {
	return t.data[v.start:v.end]
}

func (t *tree) addEscapedKey(keyStart int32, body []byte) {
	if t.escapedKeys == nil {
		t.escapedKeys = make(map[int32][]byte)
	}
	off := len(t.keyText)
	t.keyText = appendUnescaped(t.keyText, body)
	t.escapedKeys[keyStart] = t.keyText[off:len(t.keyText):len(t.keyText)]
}

// order returns the indices of the members of object v sorted by key.
func (t *tree) order(v *value) []int32 {
	t.sortMu.Lock()
	defer t.sortMu.Unlock()
	if t.sorted == nil {
		t.sorted = make([]int32, len(t.members))
		for i := range t.sorted {
			t.sorted[i] = -1 // not sorted yet
		}
	}
	o := t.sorted[v.first : v.first+v.count]
	if v.count > 0 && o[0] < 0 {
		for i := range o {
			o[i] = v.first + int32(i)
		}
		slices.SortFunc(o, func(a, b int32) int {
			return bytes.Compare(t.key(&t.members[a]), t.key(&t.members[b]))
		})
	}
	return o
}

// elements parses array v of t again and returns a tree whose items are the
// array's elements. t.data is already validated, so this cannot fail.
func (t *tree) elements(v *value) *tree {
	s := getScratch()
	defer s.release()
	p := newParser(t.data[v.start:v.end], maxDepthLimit, s)
	p.storeItems = true
	sub := p.t
	p.value(0, &sub.root)
	if p.err != nil {
		panic("merge: a validated array does not parse again: " + p.err.reason)
	}
	return sub
}

// expand parses the value v of t again into a full tree: the same data,
// with every member and element under v stored. t.data is already
// validated, so this cannot fail. A full tree expands to itself.
func (t *tree) expand(v *value) *tree {
	if t.full {
		return t
	}
	seg := t.data[v.start:v.end]
	n := min(bytes.Count(seg, []byte{':'}), len(seg)/5)
	// Every element but the last of each array is followed by a comma.
	items := min(bytes.Count(seg, []byte{','})+1, len(seg)/2)
	nt := &tree{data: t.data, members: make([]member, 0, n), full: true, items: make([]value, 0, items)}
	s := getScratch()
	defer s.release()
	p := &parser{t: nt, data: t.data, pos: int(v.start), maxDepth: maxDepthLimit, store: true, full: true,
		arena: nt.members[:n], stackTop: n, scratch: s, itemStack: make([]value, 0, items)}
	p.value(0, &nt.root)
	if p.err != nil {
		panic("merge: a validated value does not parse again: " + p.err.reason)
	}
	return nt
}

// arrayItems returns the elements of array v of t and the tree that holds
// them.
func (t *tree) arrayItems(v *value) ([]value, *tree) {
	if t.full {
		return t.items[v.first : v.first+v.count], t
	}
	sub := t.elements(v)
	return sub.items, sub
}

// syntaxError is a parse failure; the caller turns it into an *InputError.
type syntaxError struct {
	reason string
	offset int
}

// parser is a validating recursive-descent JSON parser. Recursion is bounded
// by maxDepth, which is checked before descending.
type parser struct {
	t        *tree
	data     []byte
	pos      int
	maxDepth int
	err      *syntaxError
	// store says whether the members of the object being parsed go into the
	// tree; inside arrays they do not (they are only checked).
	store bool
	// storeItems says whether the elements of the top array go into
	// tree.items (a tree made by elements).
	storeItems bool
	// full says that every member and every element is stored (a tree
	// made by expand); itemStack holds the elements of the arrays still
	// open.
	full      bool
	itemStack []value
	// arena is t.members up to its capacity. Finished objects' members
	// are appended at its start (t.members); the members of the objects
	// still open are pushed on a stack at its end, arena[stackTop:], last
	// pushed first. Every member is in one place or the other, so both fit
	// in an arena sized for all the members of the document.
	arena    []member
	stackTop int
	// like, when not nil, is a validated tree (with the same maxDepth) that
	// the document may repeat large values of byte for byte at the same key
	// path (see parseLike); likeObj is like's object at the path of the next
	// object to parse, nil for none.
	like     *tree
	likeObj  *value
	reuseMin int
	*scratch
}

// scratch is the parser's working memory, reused across the documents of
// one merge.
type scratch struct {
	// keySlots is an open-addressed hash set of the keys of the object
	// being checked for duplicates, reused from object to object.
	keySlots []keySlot
}

// scratches keeps parsers' working memory between documents: a large
// object's key set is as large as its members, and allocating and zeroing
// it for every document would cost a quarter of a parse.
var scratches = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratches.Get().(*scratch) }

// release returns s to the pool, without a key set too large to keep.
func (s *scratch) release() {
	if cap(s.keySlots) > 1<<20 {
		s.keySlots = nil
	}
	scratches.Put(s)
}

// keySlot is one slot of scratch.keySlots.
type keySlot struct {
	member int32  // index of the member in the stack slice, plus one; 0: empty
	tag    uint32 // high bits of the key's hash, compared before the keys
}

// parse validates data as exactly one JSON document (RFC 8259, UTF-8,
// no duplicate keys) and returns its tree.
func parse(data []byte, maxDepth int) (*tree, *syntaxError) {
	s := getScratch()
	defer s.release()
	return parseWith(data, maxDepth, s)
}

// newParser returns a parser of data into a new tree whose member arena
// has room for every member data can hold. A member has a colon, and five
// bytes no other member has: its key's quotes, its colon, the first byte
// of its value and the ',' or '}' after it (the one member an error can
// leave without it is made up for by the '{' or '[' of the top value).
// Counting is far cheaper than growing the arena, and the size/5 bound
// keeps a long string of colons from making it huge.
func newParser(data []byte, maxDepth int, s *scratch) *parser {
	n := min(bytes.Count(data, []byte{':'}), len(data)/5)
	t := &tree{data: data, members: make([]member, 0, n)}
	return &parser{t: t, data: data, maxDepth: maxDepth, store: true, arena: t.members[:n], stackTop: n, scratch: s}
}

// parses counts the documents parseWith validated (see ParseCount).
var parses atomic.Int64

// ParseCount returns how many documents the package has parsed and
// validated (every input of Merge it was not given parsed, every
// ParseDocument and Summarize) since the process started. Tests use it
// to check that what was parsed once is not parsed again.
func ParseCount() int64 { return parses.Load() }

func parseWith(data []byte, maxDepth int, s *scratch) (*tree, *syntaxError) {
	return parseLike(data, maxDepth, s, nil)
}

// reuseSpan is the least length in bytes of a value that parseLike takes
// from the tree it is given rather than scanning it: below it, comparing
// and copying costs about what scanning does.
const reuseSpan = 256

// parseLike is parseWith, given like, a tree validated with the same
// maxDepth (or nil): a value of the document at least reuseSpan bytes long
// (a string, an array or an object) that is byte for byte the value at the
// same key path in like (members matched by position and key) is not
// scanned again, and its members are copied from like's. Such a value is
// valid, and its parse would be like's: a JSON string, array or object ends
// where its bytes say, and at the same key path it has the same depth. The
// result, and any error, is what parseWith gives.
func parseLike(data []byte, maxDepth int, s *scratch, like *tree) (*tree, *syntaxError) {
	return parseLikeSpan(data, maxDepth, s, like, reuseSpan)
}

// parseLikeSpan is parseLike with another least span (tests take every value they can).
func parseLikeSpan(data []byte, maxDepth int, s *scratch, like *tree, minSpan int) (*tree, *syntaxError) {
	parses.Add(1)
	p := newParser(data, maxDepth, s)
	p.reuseMin = minSpan
	if like != nil && !like.full && !like.standIn && like.root.kind == kindObject {
		p.like, p.likeObj = like, &like.root
	}
	t := p.t
	p.skipSpace()
	if p.pos == len(data) {
		if len(data) == 0 {
			return nil, &syntaxError{"empty document", 0}
		}
		return nil, &syntaxError{"document is only whitespace", p.pos}
	}
	if len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		return nil, &syntaxError{"byte order mark before the document", 0}
	}
	p.value(0, &t.root)
	if p.err != nil {
		return nil, p.err
	}
	p.skipSpace()
	if p.pos != len(data) {
		return nil, &syntaxError{"extra data after the document", p.pos}
	}
	return t, nil
}

func (p *parser) fail(offset int, format string, args ...any) {
	if p.err == nil {
		p.err = &syntaxError{fmt.Sprintf(format, args...), offset}
	}
}

// skipSpace is small enough to be inlined: most calls find no whitespace
// at all.
func (p *parser) skipSpace() {
	if p.pos < len(p.data) && p.data[p.pos] > ' ' {
		return
	}
	p.pos = skipSpaceFrom(p.data, p.pos)
}

func skipSpaceFrom(data []byte, i int) int {
	for i < len(data) && isSpace[data[i]] {
		i++
	}
	return i
}

var isSpace = [256]bool{' ': true, '\t': true, '\n': true, '\r': true}

func (p *parser) unexpected(what string) {
	if p.pos >= len(p.data) {
		p.fail(p.pos, "unexpected end of input, expected %s", what)
		return
	}
	p.fail(p.pos, "unexpected %s, expected %s", quoteByte(p.data[p.pos]), what)
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// value parses one value at p.pos (which must not be whitespace) into v.
// depth is the number of containers around it.
func (p *parser) value(depth int, v *value) {
	if p.pos >= len(p.data) {
		p.unexpected("a value")
		return
	}
	v.start = int32(p.pos)
	switch c := p.data[p.pos]; {
	case c == '"':
		v.kind = kindString
		v.escaped = p.str()
	case c == '{':
		v.kind = kindObject
		v.first, v.count = p.object(depth + 1)
	case c == '[':
		v.kind = kindArray
		if p.full {
			v.first, v.count = p.fullArray(depth + 1)
		} else {
			v.count = p.array(depth + 1)
		}
	case c == '-' || (c >= '0' && c <= '9'):
		v.kind = kindNumber
		p.number()
	case c == 't':
		v.kind = kindTrue
		p.literal("true")
	case c == 'f':
		v.kind = kindFalse
		p.literal("false")
	case c == 'n':
		v.kind = kindNull
		p.literal("null")
	default:
		p.unexpected("a value")
	}
	v.end = int32(p.pos)
}

func (p *parser) literal(word string) {
	if len(p.data)-p.pos >= len(word) && string(p.data[p.pos:p.pos+len(word)]) == word {
		p.pos += len(word)
		return
	}
	p.fail(p.pos, "invalid literal, expected %s", word)
}

// object parses an object and returns where its members are in the tree.
func (p *parser) object(depth int) (first, count int32) {
	if depth > p.maxDepth {
		p.fail(p.pos, "nesting deeper than max depth %d", p.maxDepth)
		return 0, 0
	}
	p.pos++ // '{'
	base := p.stackTop
	likeObj := p.likeObj
	p.likeObj = nil
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
	} else {
		for p.err == nil {
			if p.pos >= len(p.data) || p.data[p.pos] != '"' {
				if p.pos < len(p.data) && p.data[p.pos] == '}' && p.stackTop < base {
					p.fail(p.pos, "trailing comma in object")
				} else {
					p.unexpected("a string key")
				}
				break
			}
			m := member{keyStart: int32(p.pos)}
			keyEscaped := p.str()
			if p.err != nil {
				break
			}
			m.keyEnd = int32(p.pos)
			if keyEscaped {
				p.t.addEscapedKey(m.keyStart, p.data[m.keyStart+1:m.keyEnd-1])
			}
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != ':' {
				p.unexpected("':' after object key")
				break
			}
			p.pos++
			p.skipSpace()
			reused := false
			if likeObj != nil && p.store {
				reused = p.reuse(likeObj, int32(base-p.stackTop), &m)
			}
			if !reused {
				p.value(depth, &m.value)
				p.likeObj = nil
			}
			if p.err != nil {
				break
			}
			m.value.keyEscaped = keyEscaped
			if p.stackTop == len(p.t.members) {
				// Cannot happen (see newParser); an error, not a panic, if
				// that reasoning is ever wrong.
				p.fail(int(m.keyStart), "more members than the document has room for")
				break
			}
			p.stackTop--
			p.arena[p.stackTop] = m
			p.skipSpace()
			if p.pos < len(p.data) && p.data[p.pos] == ',' {
				p.pos++
				p.skipSpace()
				continue
			}
			if p.pos < len(p.data) && p.data[p.pos] == '}' {
				p.pos++
				break
			}
			p.unexpected("',' or '}' in object")
		}
	}
	stacked := p.arena[p.stackTop:base] // last member first
	p.stackTop = base                   // stacked stays valid until the next push
	if p.err != nil {
		return 0, 0
	}
	if dup := p.duplicate(stacked); dup >= 0 {
		p.fail(int(stacked[dup].keyStart), "duplicate key %q", p.t.key(&stacked[dup]))
		return 0, 0
	}
	n := int32(len(stacked))
	if !p.store {
		return 0, n
	}
	t := p.t
	first = int32(len(t.members))
	// Within the arena's capacity: len(t.members) <= base - n.
	t.members = t.members[:int(first+n)]
	members := t.members[first:]
	if int(first+n) <= base-int(n) {
		for i := range members {
			members[i] = stacked[len(stacked)-1-i]
		}
	} else {
		// Only for objects that close near the end of the document, where
		// the two overlap.
		slices.Reverse(stacked)
		copy(members, stacked)
	}
	return first, n
}

// reuse takes the value of member m, whose key is parsed and whose value
// starts at p.pos, from like's object likeObj when the member at the same
// position there (index) has the same key and a value of at least
// reuseSpan bytes that the document repeats byte for byte: it sets
// m.value (with like's members copied for an object), moves p.pos past it
// and reports true. Otherwise, where both values are objects, the value's
// parse is given like's to take from (p.likeObj), and it reports false.
func (p *parser) reuse(likeObj *value, index int32, m *member) bool {
	like := p.like
	if index >= likeObj.count {
		return false
	}
	lm := &like.members[likeObj.first+index]
	if !bytes.Equal(like.data[lm.keyStart:lm.keyEnd], p.data[m.keyStart:m.keyEnd]) {
		return false
	}
	lv := &lm.value
	span := int(lv.end - lv.start)
	if lv.kind >= kindString && span >= p.reuseMin && p.pos+span <= len(p.data) &&
		bytes.Equal(p.data[p.pos:p.pos+span], like.data[lv.start:lv.end]) {
		v := *lv
		delta := int32(p.pos) - lv.start
		v.start += delta
		v.end += delta
		if v.kind == kindObject {
			first, ok := p.copyMembers(lv, delta)
			if !ok {
				return false
			}
			v.first = first
		}
		v.keyEscaped = false // set by the caller, for this member's key
		m.value = v
		p.pos += span
		return true
	}
	if lv.kind == kindObject && p.pos < len(p.data) && p.data[p.pos] == '{' {
		p.likeObj = lv
	}
	return false
}

// copyMembers appends to the tree the members of every object of like's
// object lv (its own and those of objects within it, outside arrays),
// moved by delta bytes, and returns the index of lv's own first member. The
// members of an object are stored when it ends, so those of lv and all
// objects within it are one run of like's members, ending with lv's own.
// ok is false (and nothing is changed) if the arena has no room, which the
// count of members a document can hold rules out (see newParser).
func (p *parser) copyMembers(lv *value, delta int32) (first int32, ok bool) {
	like, t := p.like, p.t
	lo, hi := like.subtreeStart(lv), lv.first+lv.count
	at := int32(len(t.members))
	if int(at+hi-lo) > p.stackTop {
		return 0, false
	}
	shift := at - lo
	t.members = t.members[:at+hi-lo]
	// One block copy, then the offsets moved in place: copying member by member
	// cost several times as much (BenchmarkParseLike).
	copied := t.members[at:]
	copy(copied, like.members[lo:hi])
	for i := range copied {
		m := &copied[i]
		m.keyStart += delta
		m.keyEnd += delta
		m.value.start += delta
		m.value.end += delta
		if m.value.kind == kindObject {
			m.value.first += shift
		}
		if m.value.keyEscaped {
			t.addEscapedKey(m.keyStart, p.data[m.keyStart+1:m.keyEnd-1])
		}
	}
	return lv.first + shift, true
}

// subtreeStart returns the index of the first member of the run that holds
// the members of object v and of every object within it (outside arrays).
func (t *tree) subtreeStart(v *value) int32 {
	lo := v.first
	for i := v.first; i < v.first+v.count; i++ {
		if mv := &t.members[i].value; mv.kind == kindObject && mv.count > 0 {
			lo = min(lo, t.subtreeStart(mv))
		}
	}
	return lo
}

// duplicate returns the index in stacked (an object's members, last
// first) of the first member in document order whose key an earlier member
// already has, or -1. Keys are compared decoded. Small objects are compared
// pairwise, larger ones through a hash set, so that the check stays linear
// in the number of members.
func (p *parser) duplicate(stacked []member) int {
	t := p.t
	n := len(stacked)
	if n <= 8 {
		for i := n - 2; i >= 0; i-- {
			ki := t.key(&stacked[i])
			for j := n - 1; j > i; j-- {
				if kj := t.key(&stacked[j]); len(kj) == len(ki) && bytes.Equal(kj, ki) {
					return i
				}
			}
		}
		return -1
	}
	size := 16
	for size < 2*n {
		size <<= 1
	}
	p.keySlots = slices.Grow(p.keySlots[:0], size)[:size]
	slots := p.keySlots
	clear(slots)
	mask := uint64(size - 1)
	for i := n - 1; i >= 0; i-- {
		key := t.key(&stacked[i])
		// Seeded at random per process (hashBytes): no document can be written to make keys
		// collide.
		h := hashBytes(key)
		tag := uint32(h >> 32)
		for j := h & mask; ; j = (j + 1) & mask {
			slot := &slots[j]
			if slot.member == 0 {
				*slot = keySlot{member: int32(i) + 1, tag: tag}
				break
			}
			if slot.tag == tag && bytes.Equal(t.key(&stacked[slot.member-1]), key) {
				return i
			}
		}
	}
	return -1
}

// array parses an array and returns the number of its elements.
func (p *parser) array(depth int) int32 {
	if depth > p.maxDepth {
		p.fail(p.pos, "nesting deeper than max depth %d", p.maxDepth)
		return 0
	}
	p.likeObj = nil
	storeItems := p.storeItems
	p.storeItems = false
	store := p.store
	p.store = storeItems
	defer func() { p.store = store }()
	p.pos++ // '['
	var n int32
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return 0
	}
	for p.err == nil {
		if p.pos < len(p.data) && p.data[p.pos] == ']' && n > 0 {
			p.fail(p.pos, "trailing comma in array")
			break
		}
		var v value
		p.value(depth, &v)
		if p.err != nil {
			break
		}
		if storeItems {
			p.t.items = append(p.t.items, v)
		}
		n++
		p.skipSpace()
		if p.pos < len(p.data) && p.data[p.pos] == ',' {
			p.pos++
			p.skipSpace()
			continue
		}
		if p.pos < len(p.data) && p.data[p.pos] == ']' {
			p.pos++
			break
		}
		p.unexpected("',' or ']' in array")
	}
	return n
}

// fullArray parses an array of a full tree and returns where its elements
// are in tree.items.
func (p *parser) fullArray(depth int) (first, count int32) {
	if depth > p.maxDepth {
		p.fail(p.pos, "nesting deeper than max depth %d", p.maxDepth)
		return 0, 0
	}
	p.pos++ // '['
	base := len(p.itemStack)
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return int32(len(p.t.items)), 0
	}
	for p.err == nil {
		if p.pos < len(p.data) && p.data[p.pos] == ']' && len(p.itemStack) > base {
			p.fail(p.pos, "trailing comma in array")
			break
		}
		var v value
		p.value(depth, &v)
		if p.err != nil {
			break
		}
		p.itemStack = append(p.itemStack, v)
		p.skipSpace()
		if p.pos < len(p.data) && p.data[p.pos] == ',' {
			p.pos++
			p.skipSpace()
			continue
		}
		if p.pos < len(p.data) && p.data[p.pos] == ']' {
			p.pos++
			break
		}
		p.unexpected("',' or ']' in array")
	}
	items := p.itemStack[base:]
	first = int32(len(p.t.items))
	p.t.items = append(p.t.items, items...)
	p.itemStack = p.itemStack[:base]
	return first, int32(len(items))
}

// plainString marks the bytes that end the fast path of string scanning.
var plainString = func() (tbl [256]bool) {
	for c := 0; c < 256; c++ {
		tbl[c] = c >= 0x20 && c < 0x80 && c != '"' && c != '\\'
	}
	return tbl
}()

// skipPlain returns the index of the first byte at or after i that is not
// plain string text (see plainString), or len(data). It looks at eight
// bytes at a time: strings in records are mostly long runs of plain text.
func skipPlain(data []byte, i int) int {
	for i+8 <= len(data) {
		if m := notPlain(binary.LittleEndian.Uint64(data[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	for i < len(data) && plainString[data[i]] {
		i++
	}
	return i
}

// notPlain returns x with the high bit of each of its bytes set where the
// byte is not plain string text: '"', '\\', below 0x20 or above 0x7f.
// Only the lowest marked byte is exact: a subtraction that borrows across
// a marked byte can also mark the byte above it.
func notPlain(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	return ((quote-ones)&^quote | (backslash-ones)&^backslash | (x-ones*0x20)&^x | x) & highs
}

// str scans a string starting at its opening quote and reports whether it
// contains escapes.
func (p *parser) str() (escaped bool) {
	data := p.data
	i := p.pos + 1
	for {
		i = skipPlain(data, i)
		if i >= len(data) {
			p.pos = i
			p.fail(i, "unexpected end of input in string")
			return escaped
		}
		switch c := data[i]; {
		case c == '"':
			p.pos = i + 1
			return escaped
		case c == '\\':
			escaped = true
			if i+1 >= len(data) {
				p.fail(i, "unexpected end of input in string escape")
				return escaped
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(data) {
					p.fail(i, "unexpected end of input in \\u escape")
					return escaped
				}
				for _, h := range data[i+2 : i+6] {
					if hexValue(h) < 0 {
						p.fail(i, "invalid \\u escape")
						return escaped
					}
				}
				i += 6
			default:
				p.fail(i, "invalid escape %s in string", quoteByte(data[i+1]))
				return escaped
			}
		case c < 0x20:
			p.fail(i, "control character %s in string", quoteByte(c))
			return escaped
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size <= 1 {
				p.fail(i, "invalid UTF-8 in string")
				return escaped
			}
			i += size
		}
	}
}

func (p *parser) number() {
	data := p.data
	i := p.pos
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	default:
		p.pos = i
		p.unexpected("a digit")
		return
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			p.pos = i
			p.unexpected("a digit after the decimal point")
			return
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			p.pos = i
			p.unexpected("a digit in the exponent")
			return
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	p.pos = i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func hexValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// appendUnescaped appends the decoded text of a validated string body (the
// bytes between the quotes). A lone UTF-16 surrogate from a \u escape is
// kept as its own code unit (WTF-8) rather than replaced, so that "\ud800"
// and "\ufffd" stay different, as they are in Python.
func appendUnescaped(dst, body []byte) []byte {
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			j := i + 1
			for j < len(body) && body[j] != '\\' {
				j++
			}
			dst = append(dst, body[i:j]...)
			i = j
			continue
		}
		switch body[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(body[i+2:])
			i += 6
			if r >= 0xD800 && r < 0xDC00 && i+6 <= len(body) && body[i] == '\\' && body[i+1] == 'u' {
				if lo := hex4(body[i+2:]); lo >= 0xDC00 && lo < 0xE000 {
					dst = utf8.AppendRune(dst, 0x10000+(r-0xD800)<<10+(lo-0xDC00))
					i += 6
					continue
				}
			}
			if r >= 0xD800 && r < 0xE000 {
				dst = append(dst, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
			} else {
				dst = utf8.AppendRune(dst, r)
			}
			continue
		default: // '"', '\\', '/'
			dst = append(dst, body[i+1])
		}
		i += 2
	}
	return dst
}

func hex4(b []byte) rune {
	return rune(hexValue(b[0])<<12 | hexValue(b[1])<<8 | hexValue(b[2])<<4 | hexValue(b[3]))
}
