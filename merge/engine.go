package merge

import (
	"bytes"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
)

// edit replaces theirs' bytes [start, end) with text.
type edit struct {
	start, end int32
	text       []byte
}

// merger walks base, mine and theirs together and records the edits that
// carry mine's changes into theirs. Nothing is copied until splice.
type merger struct {
	mine, theirs *tree
	empty        *tree // {} standing in for the base of keys added on both sides
	edits        []edit
	changed      int
	conflicts    []Conflict
	path         []step // from the top-level value down
	deleted      []bool // scratch, one per member of the object being finished
	// Stacks, one region per object being merged: hash tables of base's and
	// theirs' objects, and which of base's members mine has.
	slots    []int32
	baseSeen []bool
	seed     maphash.Seed
	seeded   bool

	rules    []*Rule // the rules for this record, first match first
	maxRule  int     // the most steps of any of rules
	merges   map[Strategy]int
	emptyArr *tree // [] standing in for the base of arrays added on both sides
	// arrayCost bounds one array's element diff; arrayBudget is what is
	// left of the whole merge's (see Options.MaxArrayCost).
	arrayCost   int
	arrayBudget int64
	// mayCancel: edits were recorded that can together leave theirs as
	// it was (an element deleted and the same bytes inserted in its place).
	mayCancel bool
}

// step is one step of merger.path: an object member's decoded key, or an
// array element's index.
type step struct {
	key   []byte
	index int32 // >= 0: an array element; -1: an object member
}

// push and pop move m.path down to a member or element and back.
func (m *merger) pushKey(key []byte) { m.path = append(m.path, step{key: key, index: -1}) }
func (m *merger) pushIndex(i int32)  { m.path = append(m.path, step{index: i}) }
func (m *merger) pop()               { m.path = m.path[:len(m.path)-1] }

// value merges one position where all three sides have a value and mine
// differs from base; bt is the tree that holds b.
func (m *merger) value(bt *tree, b, mv, t *value) {
	if m.rules != nil {
		if r := m.lookup(); r != nil {
			m.valueRule(r, bt, b, mv, t)
			return
		}
	}
	m.valueDefault(bt, b, mv, t)
}

// valueDefault is value without rules.
func (m *merger) valueDefault(bt *tree, b, mv, t *value) {
	if b.kind == kindObject && mv.kind == kindObject && t.kind == kindObject {
		m.object(bt, b, mv, t)
		return
	}
	if b.kind == kindArray && mv.kind == kindArray && t.kind == kindArray {
		m.array(bt, b, mv, t, "", "")
		return
	}
	m.atomic(bt, b, mv, t, "")
}

// atomic merges a position as one value: mine's, unless theirs changed it
// too, to something else, which is a conflict.
func (m *merger) atomic(bt *tree, b, mv, t *value, strategy Strategy) {
	if equal(m.mine, mv, m.theirs, t) {
		return // the same change on both sides
	}
	if !equal(bt, b, m.theirs, t) {
		reason := reasonBoth
		if bt.standIn {
			reason = reasonAddedBoth
		}
		m.conflict(reason, strategy, bt, b, mv, t)
	}
	m.replace(t, mv)
}

// object merges three objects key by key: mine's members in document
// order, then the members of base that mine deleted. Each key's member on
// the other sides is found through an index (see objectIndex), so that a
// large object costs time linear in its size. Conflicts are put in key
// order afterwards, the order of a walk in key order.
func (m *merger) object(bt *tree, b, mv, t *value) {
	firstConflict := len(m.conflicts)
	slotsMark, seenMark := len(m.slots), len(m.baseSeen)
	bIndex, tIndex := objectIndex{t: bt, v: b}, objectIndex{t: m.theirs, v: t}
	m.baseSeen = slices.Grow(m.baseSeen, int(b.count))[:seenMark+int(b.count)]
	clear(m.baseSeen[seenMark:])
	var deleted, added []int32
	for mIdx := mv.first; mIdx < mv.first+mv.count; mIdx++ {
		mm := &m.mine.members[mIdx]
		key := m.mine.key(mm)
		var bm *member
		if i := m.find(&bIndex, key, mIdx-mv.first); i >= 0 {
			bm = &bt.members[i]
			m.baseSeen[seenMark+int(i-b.first)] = true
		}
		m.pushKey(key)
		m.member(bt, bm, mm, mIdx, &tIndex, mIdx-mv.first, &deleted, &added)
		m.pop()
	}
	for bIdx := b.first; bIdx < b.first+b.count; bIdx++ {
		if !m.baseSeen[seenMark+int(bIdx-b.first)] {
			bm := &bt.members[bIdx]
			m.pushKey(bt.key(bm))
			m.member(bt, bm, nil, -1, &tIndex, bIdx-b.first, &deleted, &added)
			m.pop()
		}
	}
	m.slots, m.baseSeen = m.slots[:slotsMark], m.baseSeen[:seenMark]
	if len(m.conflicts)-firstConflict > 1 {
		// Every conflict found here is below one of the members, so
		// ordering by the member's key orders them by path.
		d := len(m.path)
		slices.SortStableFunc(m.conflicts[firstConflict:], func(a, b Conflict) int {
			return strings.Compare(a.Path[d], b.Path[d])
		})
	}
	if len(deleted) > 0 || len(added) > 0 {
		slices.Sort(added)
		m.restructure(mv, t, deleted, added)
	}
}

// member merges the key at the end of m.path: bm and mm are its members in
// base and mine (nil where absent), mIdx is mm's index, tIndex finds
// theirs', where it is likely at tGuess. It appends theirs members to
// delete to deleted and mine members to add to added.
func (m *merger) member(bt *tree, bm, mm *member, mIdx int32, tIndex *objectIndex, tGuess int32, deleted, added *[]int32) {
	if bm != nil && mm != nil && bytes.Equal(bt.raw(&bm.value), m.mine.raw(&mm.value)) {
		return // the usual case: untouched, theirs' value stands
	}
	var tm *member
	tIdx := m.find(tIndex, m.path[len(m.path)-1].key, tGuess)
	if tIdx >= 0 {
		tm = &m.theirs.members[tIdx]
	}
	var r *Rule
	if m.rules != nil {
		r = m.lookup()
	}
	switch {
	case bm != nil && mm != nil: // in base and mine, changed bytes
		if tm != nil && r != nil {
			m.valueRule(r, bt, &bm.value, &mm.value, &tm.value)
			return
		}
		if tm != nil && bm.value.kind == mm.value.kind && bm.value.kind == tm.value.kind {
			// Merging finds any change inside; comparing first would walk
			// the same members twice (and parse arrays again).
			switch bm.value.kind {
			case kindObject:
				m.object(bt, &bm.value, &mm.value, &tm.value)
				return
			case kindArray:
				m.array(bt, &bm.value, &mm.value, &tm.value, "", "")
				return
			}
		}
		if equal(bt, &bm.value, m.mine, &mm.value) {
			return // unchanged by mine: theirs' value stands
		}
		if tm == nil {
			m.conflict(reasonTheirsDeleted, r.strategy(), bt, &bm.value, &mm.value, nil)
			*added = append(*added, mIdx)
			m.changed++
			return
		}
		m.valueDefault(bt, &bm.value, &mm.value, &tm.value)
	case bm != nil: // deleted in mine
		if tm == nil {
			return // deleted on both sides
		}
		if !equal(bt, &bm.value, m.theirs, &tm.value) {
			m.conflict(reasonMineDeleted, r.strategy(), bt, &bm.value, nil, &tm.value)
		}
		*deleted = append(*deleted, tIdx)
		m.changed++
	default: // added in mine
		if tm == nil {
			*added = append(*added, mIdx)
			m.changed++
			return
		}
		m.addedBoth(r, &mm.value, &tm.value)
	}
}

// addedBoth merges a position that mine and theirs both added, as if both
// had started from an empty value: objects and arrays merge as a union,
// counters add up (see valueRule).
func (m *merger) addedBoth(r *Rule, mv, t *value) {
	if r != nil {
		m.valueRule(r, m.empty, &m.empty.root, mv, t)
		return
	}
	switch {
	case mv.kind == kindObject && t.kind == kindObject:
		m.object(m.empty, &m.empty.root, mv, t) // a union, as if both had started from {}
	case mv.kind == kindArray && t.kind == kindArray:
		ea := m.emptyArray()
		m.array(ea, &ea.root, mv, t, "", "")
	case !equal(m.mine, mv, m.theirs, t):
		m.conflict(reasonAddedBoth, "", m.empty, nil, mv, t)
		m.replace(t, mv)
	}
}

func (m *merger) emptyArray() *tree {
	if m.emptyArr == nil {
		m.emptyArr = standIn("[]", kindArray)
	}
	return m.emptyArr
}

// objectIndex finds the members of one object by decoded key. Most
// lookups find the key at the position the caller guesses (the same
// position as on another side: the sides usually list the same keys in the
// same order); the others scan a small object, or look up a larger one in
// an open-addressed hash table made on first need in merger.slots (member
// index within the object plus one; 0: empty).
type objectIndex struct {
	t     *tree
	v     *value
	slots int // offset of the table in merger.slots plus one; 0: none yet
	mask  uint64
}

// smallObject is the most members an object has to be scanned rather than
// hashed.
const smallObject = 8

// find returns the index in the tree's members of the member with key, or
// -1. guess is where in the object it probably is. A table it makes stays
// in m.slots until the caller truncates m.slots again.
func (m *merger) find(ix *objectIndex, key []byte, guess int32) int32 {
	t, v := ix.t, ix.v
	if guess >= 0 && guess < v.count && bytes.Equal(t.key(&t.members[v.first+guess]), key) {
		return v.first + guess
	}
	if v.count <= smallObject {
		for i := v.first; i < v.first+v.count; i++ {
			if bytes.Equal(t.key(&t.members[i]), key) {
				return i
			}
		}
		return -1
	}
	if ix.slots == 0 {
		m.makeTable(ix)
	}
	table := m.slots[ix.slots-1 : ix.slots+int(ix.mask)]
	for j := maphash.Bytes(m.seed, key) & ix.mask; table[j] != 0; j = (j + 1) & ix.mask {
		if i := v.first + table[j] - 1; bytes.Equal(t.key(&t.members[i]), key) {
			return i
		}
	}
	return -1
}

func (m *merger) makeTable(ix *objectIndex) {
	if !m.seeded {
		m.seed, m.seeded = maphash.MakeSeed(), true
	}
	t, v := ix.t, ix.v
	size := 16
	for size < 2*int(v.count) {
		size <<= 1
	}
	at := len(m.slots)
	ix.slots, ix.mask = at+1, uint64(size-1)
	m.slots = slices.Grow(m.slots, size)[:at+size]
	table := m.slots[at:]
	clear(table)
	for i := range v.count {
		j := maphash.Bytes(m.seed, t.key(&t.members[v.first+i])) & ix.mask
		for table[j] != 0 { // keys are unique: validated
			j = (j + 1) & ix.mask
		}
		table[j] = i + 1
	}
}

// restructure records the edits that delete and add members of theirs'
// object t. deleted are theirs member indices, added mine member indices in
// mine's order.
func (m *merger) restructure(mv, tn *value, deleted, added []int32) {
	th := m.theirs
	if int(tn.count) == len(deleted) {
		// Nothing of theirs is left to take the layout from: use mine's.
		m.edits = append(m.edits, edit{start: tn.start + 1, end: tn.end - 1, text: m.mineLayout(mv, added)})
		return
	}
	members := th.members[tn.first : tn.first+tn.count]
	m.deleted = slices.Grow(m.deleted[:0], len(members))[:len(members)]
	clear(m.deleted)
	for _, d := range deleted {
		m.deleted[d-tn.first] = true
	}
	kept := 0
	for m.deleted[kept] {
		kept++
	}
	if kept > 0 {
		// A leading run goes with the separators after it, so that the first
		// kept member moves to where the first member was.
		m.edits = append(m.edits, edit{start: members[0].keyStart, end: members[kept].keyStart})
	}
	for i := kept + 1; i < len(members); i++ {
		if m.deleted[i] {
			// Any other member goes with the separator before it.
			m.edits = append(m.edits, edit{start: members[i-1].value.end, end: members[i].value.end})
		}
	}
	if len(added) == 0 {
		return
	}
	// New members go after the last one, spaced like it.
	last := &members[len(members)-1]
	indent := th.data[spaceBefore(th.data, last.keyStart):last.keyStart]
	sep := th.data[last.keyEnd:last.value.start]
	var text []byte
	for _, a := range added {
		mm := &m.mine.members[a]
		text = append(text, ',')
		text = append(text, indent...)
		text = append(text, m.mine.data[mm.keyStart:mm.keyEnd]...)
		text = append(text, sep...)
		text = append(text, m.mine.raw(&mm.value)...)
	}
	at := last.value.end
	m.edits = append(m.edits, edit{start: at, end: at, text: text})
}

// mineLayout is the inside of an object holding only the added members,
// with the whitespace that mine has around them.
func (m *merger) mineLayout(mv *value, added []int32) []byte {
	mi := m.mine
	var text []byte
	for i, a := range added {
		mm := &mi.members[a]
		if i > 0 {
			text = append(text, ',')
		}
		text = append(text, mi.data[spaceBefore(mi.data, mm.keyStart):mm.keyStart]...)
		text = append(text, mi.data[mm.keyStart:mm.keyEnd]...)
		text = append(text, mi.data[mm.keyEnd:mm.value.start]...)
		text = append(text, mi.raw(&mm.value)...)
	}
	if len(added) > 0 {
		closing := mv.end - 1
		text = append(text, mi.data[spaceBefore(mi.data, closing):closing]...)
	}
	return text
}

// spaceBefore returns the start of the whitespace that ends at i.
func spaceBefore(data []byte, i int32) int32 {
	for i > 0 {
		switch data[i-1] {
		case ' ', '\t', '\n', '\r':
			i--
		default:
			return i
		}
	}
	return i
}

func (m *merger) replace(t, mv *value) {
	m.edits = append(m.edits, edit{start: t.start, end: t.end, text: m.mine.raw(mv)})
	m.changed++
}

// conflict records a conflict at m.path; nil marks a side without the key.
func (m *merger) conflict(reason string, strategy Strategy, bt *tree, b, mv, t *value) {
	c := m.newConflict(reason, strategy)
	if b != nil && !bt.standIn {
		c.Base = bytes.Clone(bt.raw(b))
	}
	if mv != nil {
		c.Mine = bytes.Clone(m.mine.raw(mv))
	}
	if t != nil {
		c.Theirs = bytes.Clone(m.theirs.raw(t))
	}
	m.conflicts = append(m.conflicts, c)
}

// newConflict returns a conflict at m.path without values.
func (m *merger) newConflict(reason string, strategy Strategy) Conflict {
	c := Conflict{Reason: reason, Strategy: strategy, Path: make([]string, len(m.path))}
	for i, s := range m.path {
		if s.index < 0 {
			c.Path[i] = string(s.key)
			continue
		}
		c.Path[i] = strconv.Itoa(int(s.index))
		if c.ArrayIndex == nil {
			c.ArrayIndex = make([]bool, len(m.path))
		}
		c.ArrayIndex[i] = true
	}
	return c
}

// merged counts a position that both sides changed and that strategy
// merged; conflictsBefore is len(m.conflicts) when it began.
func (m *merger) merged(strategy Strategy, conflictsBefore int) {
	if len(m.conflicts) > conflictsBefore {
		return
	}
	if m.merges == nil {
		m.merges = make(map[Strategy]int)
	}
	m.merges[strategy]++
}

// splice applies the edits to theirs in one copy.
func (m *merger) splice() []byte {
	slices.SortFunc(m.edits, func(a, b edit) int {
		if a.start != b.start {
			return int(a.start - b.start)
		}
		return int(a.end - b.end)
	})
	src := m.theirs.data
	size := len(src)
	for _, e := range m.edits {
		size += len(e.text) - int(e.end-e.start)
	}
	out := make([]byte, 0, size)
	var at int32
	for _, e := range m.edits {
		out = append(out, src[at:e.start]...)
		out = append(out, e.text...)
		at = e.end
	}
	return append(out, src[at:]...)
}
