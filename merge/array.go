package merge

import (
	"bytes"
	"cmp"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
)

// identityKeys are the members that give the elements of an array an
// identity, in order of preference.
var identityKeys = [][]byte{[]byte("id"), []byte("_id"), []byte("uuid"), []byte("key")}

// insert is an element of mine's that a merged array gains.
type insert struct {
	after int32  // index of the element of theirs it follows (one kept); -1: at the start
	v     *value // the element, in m.mine
}

// arraySides are three arrays being merged by element: their items (in
// full trees) and the class of each item, found when first needed (-1:
// not yet).
type arraySides struct {
	bt, mt, tt *tree
	b, mv, t   *value
	bi, mi, ti []value
	B, M, T    []int32
	in         *interner
}

// Sides, for classes.
const (
	sideBase = iota
	sideMine
	sideTheirs
)

// classes returns the classes of the elements [lo, hi) of one side.
func (s *arraySides) classes(side int, lo, hi int32) []int32 {
	cls, t, items := s.B, s.bt, s.bi
	switch side {
	case sideMine:
		cls, t, items = s.M, s.mt, s.mi
	case sideTheirs:
		cls, t, items = s.T, s.tt, s.ti
	}
	for i := lo; i < hi; i++ {
		if cls[i] < 0 {
			cls[i] = s.in.class(t, &items[i])
		}
	}
	return cls[lo:hi]
}

func (s *arraySides) cb(i int32) int32 { return s.classes(sideBase, i, i+1)[0] }
func (s *arraySides) cm(i int32) int32 { return s.classes(sideMine, i, i+1)[0] }
func (s *arraySides) ct(i int32) int32 { return s.classes(sideTheirs, i, i+1)[0] }

// array merges arrays b (in bt), mv (mine) and t (theirs), where mine
// differs from base. strategy is "" (the default: by identity when every
// element has one, else as a sequence), StrategySequence, StrategyKeyed
// (by key) or StrategySet.
func (m *merger) array(bt *tree, b, mv, t *value, strategy Strategy, key string) {
	switch {
	case bt.standIn && mv.count == 0:
		return // nothing added
	case bytes.Equal(bt.raw(b), m.mine.raw(mv)):
		return // unchanged by mine
	case bytes.Equal(bt.raw(b), m.theirs.raw(t)):
		m.replace(t, mv) // theirs left it as it was: mine's, exactly
		return
	}
	// Work in full trees of the three arrays, which hold every element
	// and member under them: comparing them costs no parsing again.
	bt, b = expandValue(bt, b)
	mineTree, theirsTree := m.mine, m.theirs
	m.mine, mv = expandValue(m.mine, mv)
	m.theirs, t = expandValue(m.theirs, t)
	defer func() { m.mine, m.theirs = mineTree, theirsTree }()
	switch {
	case !bt.standIn && equal(bt, b, m.mine, mv):
		return
	case !bt.standIn && equal(bt, b, m.theirs, t):
		m.replace(t, mv)
		return
	case equal(m.mine, mv, m.theirs, t):
		return // the same change on both sides
	case m.arrayCost < 0 && (strategy == "" || strategy == StrategySequence):
		m.atomic(bt, b, mv, t, strategy)
		return
	}

	if !m.seeded {
		m.seed, m.seeded = maphash.MakeSeed(), true
	}
	s := &arraySides{bt: bt, mt: m.mine, tt: m.theirs, b: b, mv: mv, t: t}
	s.bi, _ = bt.arrayItems(b)
	s.mi, _ = m.mine.arrayItems(mv)
	s.ti, _ = m.theirs.arrayItems(t)
	s.in = newInterner(m.seed)
	unknown := func(n int) []int32 {
		c := make([]int32, n)
		for i := range c {
			c[i] = -1
		}
		return c
	}
	s.B, s.M, s.T = unknown(len(s.bi)), unknown(len(s.mi)), unknown(len(s.ti))

	before := len(m.conflicts)
	switch strategy {
	case StrategySet:
		m.setMerge(s)
		m.merged(StrategySet, before)
		return
	case StrategyKeyed:
		pre, suf := s.commonEnds()
		ids, ok := s.identities([]byte(key), pre, suf)
		if !ok {
			m.conflict(fmt.Sprintf("keyed: not every element is an object with a unique scalar %q", key),
				StrategyKeyed, bt, b, mv, t)
			m.replace(t, mv)
			return
		}
		m.keyedMerge(s, ids)
		m.merged(StrategyKeyed, before)
		return
	case "":
		if ids, ok := s.identity(); ok {
			m.keyedMerge(s, ids)
			m.merged(StrategyKeyed, before)
			return
		}
	}
	if reason := m.sequenceMerge(s); reason != "" {
		// Too large to merge by element: one value.
		m.conflict(reasonBoth+" (too large to merge by element: "+reason+")", StrategyAtomic, bt, b, mv, t)
		m.replace(t, mv)
		return
	}
	m.merged(StrategySequence, before)
}

func expandValue(t *tree, v *value) (*tree, *value) {
	if t.full {
		return t, v
	}
	nt := t.expand(v)
	return nt, &nt.root
}

// memberValue returns the value of the member of object v of t whose
// decoded key is key, or nil.
func memberValue(t *tree, v *value, key []byte) *value {
	for i := v.first; i < v.first+v.count; i++ {
		if bytes.Equal(t.key(&t.members[i]), key) {
			return &t.members[i].value
		}
	}
	return nil
}

// identity finds the identity member that every element of the three
// arrays has (the first of identityKeys that they all have) and returns
// the class of each element's identity; ok is false when there is no such
// member, or its values are not scalars unique within each array.
func (s *arraySides) identity() (ids [3][]int32, ok bool) {
	if len(s.bi)+len(s.mi)+len(s.ti) == 0 {
		return ids, false
	}
	pre, suf := s.commonEnds()
	for _, key := range identityKeys {
		every := true
		for side, items := range [3][]value{s.bi, s.mi, s.ti} {
			t := [3]*tree{s.bt, s.mt, s.tt}[side]
			for i := range items {
				if side != sideBase && (i < pre || i >= len(items)-suf) {
					continue // as in base
				}
				if items[i].kind != kindObject {
					return ids, false
				}
				if every && memberValue(t, &items[i], key) == nil {
					every = false
				}
			}
		}
		if every {
			return s.identities(key, pre, suf)
		}
	}
	return ids, false
}

// commonEnds returns how many elements the three arrays have alike, byte
// for byte, at the start and at the end (not overlapping).
func (s *arraySides) commonEnds() (pre, suf int) {
	n := min(len(s.bi), len(s.mi), len(s.ti))
	same := func(i, j, k int) bool {
		b := s.bt.raw(&s.bi[i])
		return bytes.Equal(b, s.mt.raw(&s.mi[j])) && bytes.Equal(b, s.tt.raw(&s.ti[k]))
	}
	for pre < n && same(pre, pre, pre) {
		pre++
	}
	for suf < n-pre && same(len(s.bi)-1-suf, len(s.mi)-1-suf, len(s.ti)-1-suf) {
		suf++
	}
	return pre, suf
}

// identities returns the class of the value of member key of every
// element of the three arrays; ok is false unless every element is an
// object with that member, a scalar, unique within its array. The first
// pre and the last suf elements of mine and theirs are base's, byte for
// byte: their identities are base's.
func (s *arraySides) identities(key []byte, pre, suf int) (ids [3][]int32, ok bool) {
	var seen []int32 // class -> 1 + the side that last had it
	mark := func(c int32, side int) bool {
		for int(c) >= len(seen) {
			seen = append(seen, 0)
		}
		if seen[c] == int32(side)+1 {
			return false // not unique
		}
		seen[c] = int32(side) + 1
		return true
	}
	nb := len(s.bi)
	for side, items := range [3][]value{s.bi, s.mi, s.ti} {
		t := [3]*tree{s.bt, s.mt, s.tt}[side]
		n := len(items)
		ids[side] = make([]int32, n)
		for i := range items {
			var c int32
			switch {
			case side != sideBase && i < pre:
				c = ids[sideBase][i]
			case side != sideBase && i >= n-suf:
				c = ids[sideBase][nb-(n-i)]
			default:
				if items[i].kind != kindObject {
					return ids, false
				}
				id := memberValue(t, &items[i], key)
				if id == nil || id.kind == kindObject || id.kind == kindArray {
					return ids, false
				}
				c = s.in.class(t, id)
			}
			if !mark(c, side) {
				return ids, false
			}
			ids[side][i] = c
		}
	}
	return ids, true
}

// sequenceMerge merges the arrays of s as a 3-way diff of their elements
// (see the package comment). It returns why it could not, or "".
func (m *merger) sequenceMerge(s *arraySides) string {
	dm, why := s.diff(m, sideMine, s.mt, s.mi)
	if why != "" {
		return why
	}
	dt, why := s.diff(m, sideTheirs, s.tt, s.ti)
	if why != "" {
		return why
	}
	m.sequenceHunks(s, dm, dt)
	return ""
}

// diff returns the hunks that turn base's elements into side's, or why
// it gave up, spending m's budget. The elements that both have alike, byte
// for byte, at the start and at the end (usually nearly all) are left out
// before any is classified.
func (s *arraySides) diff(m *merger, side int, t *tree, items []value) ([]hunk, string) {
	nb, n := len(s.bi), len(items)
	same := func(i, j int) bool { return bytes.Equal(s.bt.raw(&s.bi[i]), t.raw(&items[j])) }
	pre := 0
	for pre < nb && pre < n && same(pre, pre) {
		pre++
	}
	suf := 0
	for suf < nb-pre && suf < n-pre && same(nb-1-suf, n-1-suf) {
		suf++
	}
	limit := min(int64(m.arrayCost), m.arrayBudget)
	hunks, used, ok := diffClasses(s.classes(sideBase, int32(pre), int32(nb-suf)),
		s.classes(side, int32(pre), int32(n-suf)), limit, maxArrayEdits)
	m.arrayBudget -= used
	switch {
	case !ok && used > limit:
		return nil, fmt.Sprintf("%d and %d elements, the diff took more than %d steps", nb, n, limit)
	case !ok:
		return nil, fmt.Sprintf("%d and %d elements, more than %d differences", nb, n, maxArrayEdits)
	}
	for i := range hunks {
		h := &hunks[i]
		h.as, h.ae, h.bs, h.be = h.as+int32(pre), h.ae+int32(pre), h.bs+int32(pre), h.be+int32(pre)
	}
	return hunks, ""
}

// hunksInteract reports whether two changes to base, one from each side,
// touch the same place: their ranges overlap, they insert at the same
// point, or one inserts strictly inside the range the other replaces. An
// insertion at either end of the other side's range does not interact: it
// goes before or after it.
func hunksInteract(h1, h2 hunk) bool {
	e1, e2 := h1.as == h1.ae, h2.as == h2.ae
	switch {
	case e1 && e2:
		return h1.as == h2.as
	case e1:
		return h2.as < h1.as && h1.as < h2.ae
	case e2:
		return h1.as < h2.as && h2.as < h1.ae
	}
	return h1.as < h2.ae && h2.as < h1.ae
}

// hunkFirst reports whether h1 comes before h2 in the merged order: it
// starts earlier, or at the same point as an insertion before a range.
func hunkFirst(h1, h2 hunk) bool {
	if h1.as != h2.as {
		return h1.as < h2.as
	}
	return h1.as == h1.ae || h2.as != h2.ae
}

// seqOut builds the merged array of a sequence merge: theirs' elements in
// order, each kept or deleted, and mine's insertions between them.
type seqOut struct {
	kept     []bool
	ins      []insert
	next     int32 // the next element of theirs not yet placed
	lastKept int32 // the last element of theirs placed and kept; -1: none
}

// keepTo keeps theirs' elements up to k.
func (o *seqOut) keepTo(k int32) {
	for ; o.next < k; o.next++ {
		if o.kept[o.next] {
			o.lastKept = o.next
		}
	}
}

func (o *seqOut) deleteNext() {
	o.kept[o.next] = false
	o.next++
}

// sequenceHunks merges the arrays of s given the diffs base->mine (dm) and
// base->theirs (dt). Changes of one side that interact with none of the
// other's apply as they are; interacting changes form a group, merged
// as the package comment says.
func (m *merger) sequenceHunks(s *arraySides, dm, dt []hunk) {
	o := &seqOut{kept: make([]bool, len(s.ti)), lastKept: -1}
	for i := range o.kept {
		o.kept[i] = true
	}
	var dM, dT int32 // length changes of the hunks already merged, per side
	i, j := 0, 0
	for i < len(dm) || j < len(dt) {
		gi, gj := i, j // the group's hunks are dm[gi:i] and dt[gj:j]
		if j >= len(dt) || (i < len(dm) && hunkFirst(dm[i], dt[j])) {
			i++
		} else {
			j++
		}
		for {
			if i < len(dm) && j > gj && hunksInteract(dm[i], dt[j-1]) {
				i++
			} else if j < len(dt) && i > gi && hunksInteract(dt[j], dm[i-1]) {
				j++
			} else {
				break
			}
		}
		S, E := int32(1<<31-1), int32(0)
		for _, h := range dm[gi:i] {
			S, E = min(S, h.as), max(E, h.ae)
		}
		for _, h := range dt[gj:j] {
			S, E = min(S, h.as), max(E, h.ae)
		}
		MS, TS := S+dM, S+dT
		for _, h := range dm[gi:i] {
			dM += (h.be - h.bs) - (h.ae - h.as)
		}
		for _, h := range dt[gj:j] {
			dT += (h.be - h.bs) - (h.ae - h.as)
		}
		ME, TE := E+dM, E+dT
		o.keepTo(TS)
		switch {
		case j == gj: // mine alone changed this part
			m.takeMine(s, o, TS, TE, MS, ME)
		case i == gi: // theirs alone
			o.keepTo(TE)
		default:
			m.sequenceGroup(s, o, S, E, MS, ME, TS, TE)
		}
	}
	o.keepTo(int32(len(s.ti)))
	m.emitArray(s, o.kept, o.ins)
}

// takeMine puts mine[MS:ME] in the place of theirs[TS:TE]: element for
// element where both have one, then deleting or inserting the rest.
func (m *merger) takeMine(s *arraySides, o *seqOut, TS, TE, MS, ME int32) {
	n := min(TE-TS, ME-MS)
	for p := range n {
		o.keepTo(TS + p + 1)
		if s.ct(TS+p) != s.cm(MS+p) {
			m.replace(&s.ti[TS+p], &s.mi[MS+p])
		}
	}
	for range TE - TS - n {
		o.deleteNext()
		m.changed++
	}
	for q := MS + n; q < ME; q++ {
		o.ins = append(o.ins, insert{after: o.lastKept, v: &s.mi[q]})
		m.changed++
	}
}

// sequenceGroup merges a group of changes from both sides: base[S:E]
// became mine[MS:ME] and theirs[TS:TE].
func (m *merger) sequenceGroup(s *arraySides, o *seqOut, S, E, MS, ME, TS, TE int32) {
	switch {
	case S == E:
		// Both insert at one place: both insertions, theirs first, and
		// what both inserted once.
		m.unionInsert(s, o, MS, ME, TS, TE)
		return
	case E-S == ME-MS && E-S == TE-TS:
		// Changed in place on both sides: element by element.
		for p := range E - S {
			o.keepTo(TS + p + 1)
			switch {
			case s.cm(MS+p) == s.cb(S+p):
			case s.ct(TS+p) == s.cb(S+p):
				m.replace(&s.ti[TS+p], &s.mi[MS+p])
			default:
				m.pushIndex(TS + p)
				m.element(s.bt, &s.bi[S+p], &s.mi[MS+p], &s.ti[TS+p])
				m.pop()
			}
		}
		return
	case slices.Equal(s.classes(sideMine, MS, ME), s.classes(sideTheirs, TS, TE)):
		o.keepTo(TE) // the same change on both sides
		return
	}
	m.pushIndex(TS)
	if E-S == 1 && ME-MS <= 1 && TE-TS <= 1 {
		// One element, deleted on one side and changed on the other.
		if ME == MS {
			m.conflict(reasonMineDeleted, StrategySequence, s.bt, &s.bi[S], nil, &s.ti[TS])
		} else {
			m.conflict(reasonTheirsDeleted, StrategySequence, s.bt, &s.bi[S], &s.mi[MS], nil)
		}
	} else {
		reason := reasonRunBoth
		switch {
		case ME == MS:
			reason = reasonRunMineDeleted
		case TE == TS:
			reason = reasonRunTheirsDeleted
		}
		c := m.newConflict(reason, StrategySequence)
		c.Base = joinElements(s.bt, s.bi[S:E])
		c.Mine = joinElements(s.mt, s.mi[MS:ME])
		c.Theirs = joinElements(s.tt, s.ti[TS:TE])
		m.conflicts = append(m.conflicts, c)
	}
	m.pop()
	m.takeMine(s, o, TS, TE, MS, ME)
}

// element merges an element of a sequence that both sides changed in
// place: by its rule, as an object or array, else as one value whose
// conflict is the sequence's.
func (m *merger) element(bt *tree, b, mv, t *value) {
	if m.rules != nil {
		if r := m.lookup(); r != nil {
			m.valueRule(r, bt, b, mv, t)
			return
		}
	}
	if b.kind == mv.kind && b.kind == t.kind && (b.kind == kindObject || b.kind == kindArray) {
		m.valueDefault(bt, b, mv, t)
		return
	}
	m.atomic(bt, b, mv, t, StrategySequence)
}

// joinElements writes items of t as a JSON array.
func joinElements(t *tree, items []value) []byte {
	out := []byte{'['}
	for i := range items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, t.raw(&items[i])...)
	}
	return append(out, ']')
}

// unionInsert merges two insertions at one place: the elements both
// inserted (a longest common subsequence) once, and between them theirs'
// own, then mine's.
func (m *merger) unionInsert(s *arraySides, o *seqOut, MS, ME, TS, TE int32) {
	limit := min(int64(m.arrayCost), m.arrayBudget)
	hunks, used, ok := diffClasses(s.classes(sideTheirs, TS, TE), s.classes(sideMine, MS, ME), limit, maxArrayEdits)
	m.arrayBudget -= used
	if !ok { // nothing in common, as far as this can tell
		hunks = []hunk{{0, TE - TS, 0, ME - MS}}
	}
	for _, h := range hunks {
		o.keepTo(TS + h.ae) // the common run before, then theirs' own
		for q := MS + h.bs; q < MS+h.be; q++ {
			o.ins = append(o.ins, insert{after: o.lastKept, v: &s.mi[q]})
			m.changed++
		}
	}
	o.keepTo(TE)
}

// keyedMerge merges the arrays of s by the identity of their elements
// (ids, per side): an element in all three merges as an object; deleted on
// one side, it is deleted, unless the other side changed it (a conflict);
// added on both sides, the two merge as a union. The order is theirs',
// with each element that mine adds after the element it follows in mine
// (and after the elements theirs added there).
func (m *merger) keyedMerge(s *arraySides, ids [3][]int32) {
	before := len(m.conflicts)
	nc := len(s.in.reps)
	pos := func(side []int32) []int32 {
		p := make([]int32, nc)
		for i := range p {
			p[i] = -1
		}
		for i, c := range side {
			p[c] = int32(i)
		}
		return p
	}
	posB, posM, posT := pos(ids[0]), pos(ids[1]), pos(ids[2])
	kept := make([]bool, len(s.ti))
	for k, id := range ids[2] {
		kept[k] = true
		bIdx, mIdx := posB[id], posM[id]
		switch {
		case bIdx >= 0 && mIdx >= 0:
			if !equal(s.mt, &s.mi[mIdx], s.bt, &s.bi[bIdx]) {
				m.pushIndex(int32(k))
				m.value(s.bt, &s.bi[bIdx], &s.mi[mIdx], &s.ti[k])
				m.pop()
			}
		case bIdx >= 0: // deleted in mine
			if !equal(s.tt, &s.ti[k], s.bt, &s.bi[bIdx]) {
				m.pushIndex(int32(k))
				m.conflict(reasonMineDeleted, StrategyKeyed, s.bt, &s.bi[bIdx], nil, &s.ti[k])
				m.pop()
			}
			kept[k] = false
			m.changed++
		case mIdx >= 0: // added on both sides
			if !equal(s.mt, &s.mi[mIdx], s.tt, &s.ti[k]) {
				m.pushIndex(int32(k))
				var r *Rule
				if m.rules != nil {
					r = m.lookup()
				}
				m.addedBoth(r, &s.mi[mIdx], &s.ti[k])
				m.pop()
			}
		}
	}
	// Where mine's additions go: after the element of theirs that precedes
	// them in mine, and after the elements that theirs added next to it.
	theirsNew := func(k int32) bool { id := ids[2][k]; return posB[id] < 0 && posM[id] < 0 }
	skipped := map[int32]int32{}
	anchor := int32(-1) // the last element of mine's seen that theirs has
	var ins []insert
	for j, id := range ids[1] {
		if k := posT[id]; k >= 0 {
			anchor = k
			continue
		}
		if bIdx := posB[id]; bIdx >= 0 { // deleted in theirs
			if equal(s.mt, &s.mi[j], s.bt, &s.bi[bIdx]) {
				continue
			}
			m.pushIndex(int32(j))
			m.conflict(reasonTheirsDeleted, StrategyKeyed, s.bt, &s.bi[bIdx], &s.mi[j], nil)
			m.pop()
		}
		after, ok := skipped[anchor]
		if !ok {
			after = anchor
			for after+1 < int32(len(s.ti)) && theirsNew(after+1) {
				after++
			}
			skipped[anchor] = after
		}
		ins = append(ins, insert{after: after, v: &s.mi[j]})
		m.changed++
	}
	if len(m.conflicts)-before > 1 {
		d := len(m.path)
		slices.SortStableFunc(m.conflicts[before:], func(a, b Conflict) int {
			return cmp.Or(cmp.Compare(len(a.Path[d]), len(b.Path[d])), strings.Compare(a.Path[d], b.Path[d]))
		})
	}
	m.emitArray(s, kept, ins)
}

// setMerge merges the arrays of s as sets of values: theirs without the
// values mine removed, then the values mine added that theirs lacks.
func (m *merger) setMerge(s *arraySides) {
	s.classes(sideBase, 0, int32(len(s.bi)))
	s.classes(sideMine, 0, int32(len(s.mi)))
	s.classes(sideTheirs, 0, int32(len(s.ti)))
	nc := len(s.in.reps)
	inB, inM, inT := make([]bool, nc), make([]bool, nc), make([]bool, nc)
	for _, c := range s.B {
		inB[c] = true
	}
	for _, c := range s.M {
		inM[c] = true
	}
	for _, c := range s.T {
		inT[c] = true
	}
	kept := make([]bool, len(s.ti))
	last := int32(-1)
	for k, c := range s.T {
		kept[k] = !inB[c] || inM[c]
		if kept[k] {
			last = int32(k)
		} else {
			m.changed++
		}
	}
	var ins []insert
	for j, c := range s.M {
		if !inB[c] && !inT[c] {
			inT[c] = true // once
			ins = append(ins, insert{after: last, v: &s.mi[j]})
			m.changed++
		}
	}
	m.emitArray(s, kept, ins)
}

// emitArray records the edits that turn theirs' array s.t into the merged
// one: theirs' elements where kept (with whatever edits were recorded
// inside them), and the insertions, each after the kept element it names.
// Untouched stretches keep their bytes; new elements are separated like
// their neighbours.
func (m *merger) emitArray(s *arraySides, kept []bool, ins []insert) {
	if len(ins) == 0 && !slices.Contains(kept, false) {
		return
	}
	m.mayCancel = true
	slices.SortStableFunc(ins, func(a, b insert) int { return cmp.Compare(a.after, b.after) })
	data, ti := m.theirs.data, s.ti
	open, closing := s.t.start, s.t.end-1
	n := int32(len(ti))
	if n == 0 {
		// Nothing of theirs to take the layout from: mine's.
		mi := s.mi
		lead := m.mine.data[s.mv.start+1 : mi[0].start]
		trail := m.mine.data[mi[len(mi)-1].end : s.mv.end-1]
		m.edits = append(m.edits, edit{start: open + 1, end: closing, text: m.insertText(lead, ins, m.gap(s), trail)})
		return
	}
	lead, trail := data[open+1:ti[0].start], data[ti[n-1].end:closing]
	first := slices.Index(kept, true)
	if first < 0 {
		text := []byte{}
		if len(ins) > 0 {
			text = m.insertText(lead, ins, m.gap(s), trail)
		}
		m.edits = append(m.edits, edit{start: open + 1, end: closing, text: text})
		return
	}
	// Rewrite the stretch between each two kept elements (and before the
	// first, after the last) that lost elements or gains some.
	prev := int32(-1)
	at := 0
	for k := int32(first); ; k++ {
		for k < n && !kept[k] {
			k++
		}
		end := at
		for end < len(ins) && ins[end].after == prev {
			end++
		}
		group := ins[at:end]
		at = end
		if k-prev > 1 || len(group) > 0 {
			switch {
			case prev < 0: // before the first kept element
				g := m.gap(s)
				if k > 0 {
					g = data[ti[k-1].end:ti[k].start]
				}
				var text []byte
				for _, x := range group {
					text = append(text, m.mine.raw(x.v)...)
					text = append(text, g...)
				}
				m.edits = append(m.edits, edit{start: ti[0].start, end: ti[k].start, text: text})
			case k < n: // between two kept elements
				g := data[ti[prev].end:ti[prev+1].start]
				text := slices.Clone(g)
				for _, x := range group {
					text = append(text, m.mine.raw(x.v)...)
					text = append(text, g...)
				}
				m.edits = append(m.edits, edit{start: ti[prev].end, end: ti[k].start, text: text})
			default: // after the last kept element
				g := m.gap(s)
				if prev+1 < n {
					g = data[ti[prev].end:ti[prev+1].start]
				} else if prev > 0 {
					g = data[ti[prev-1].end:ti[prev].start]
				}
				var text []byte
				for _, x := range group {
					text = append(text, g...)
					text = append(text, m.mine.raw(x.v)...)
				}
				m.edits = append(m.edits, edit{start: ti[prev].end, end: ti[n-1].end, text: text})
			}
		}
		if k >= n {
			break
		}
		prev = k
	}
	if at != len(ins) {
		panic("merge: an insertion into an array follows no kept element")
	}
}

// insertText is lead, the inserted elements separated by g, then trail.
func (m *merger) insertText(lead []byte, ins []insert, g, trail []byte) []byte {
	text := slices.Clone(lead)
	for i, x := range ins {
		if i > 0 {
			text = append(text, g...)
		}
		text = append(text, m.mine.raw(x.v)...)
	}
	return append(text, trail...)
}

// gap returns the separator for new elements of theirs' array when theirs
// has no two elements to copy it from: theirs' own spacing inside the
// brackets, else mine's or base's separator, else the document's style.
func (m *merger) gap(s *arraySides) []byte {
	if len(s.ti) >= 2 {
		return m.theirs.data[s.ti[0].end:s.ti[1].start]
	}
	if len(s.ti) == 1 {
		if lead := m.theirs.data[s.t.start+1 : s.ti[0].start]; len(lead) > 0 {
			return append([]byte{','}, lead...)
		}
	}
	if len(s.mi) >= 2 {
		return m.mine.data[s.mi[0].end:s.mi[1].start]
	}
	if len(s.bi) >= 2 {
		return s.bt.data[s.bi[0].end:s.bi[1].start]
	}
	if bytes.Contains(m.theirs.data, []byte(", ")) {
		return []byte(", ")
	}
	return []byte(",")
}
