package merge

import (
	"bytes"
	"slices"
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
	path         [][]byte // decoded keys from the top-level object down
	deleted      []bool   // scratch, one per member of the object being finished
}

// value merges one position where all three sides have a value and mine
// differs from base; bt is the tree that holds b.
func (m *merger) value(bt *tree, b, mv, t *value) {
	if b.kind == kindObject && mv.kind == kindObject && t.kind == kindObject {
		m.object(bt, b, mv, t)
		return
	}
	if equal(m.mine, mv, m.theirs, t) {
		return // the same change on both sides
	}
	if !equal(bt, b, m.theirs, t) {
		reason := reasonBoth
		if bt == m.empty {
			reason = reasonAddedBoth
		}
		m.conflict(reason, bt, b, mv, t)
	}
	m.replace(t, mv)
}

// object merges three objects key by key. Members are visited in key order
// (tree.sorted), so one pass over each side finds every key's three values.
func (m *merger) object(bt *tree, b, mv, t *value) {
	nb, nm, nt := b.count, mv.count, t.count
	bOrder, mOrder, tOrder := bt.order(b), m.mine.order(mv), m.theirs.order(t)
	var deleted, added []int32
	var bi, mi, ti int32
	for bi < nb || mi < nm {
		var bm, mm, tm *member
		var mIdx, tIdx int32
		if bi < nb {
			bm = &bt.members[bOrder[bi]]
		}
		if mi < nm {
			mIdx = mOrder[mi]
			mm = &m.mine.members[mIdx]
		}
		if bm != nil && mm != nil {
			switch c := bytes.Compare(bt.key(bm), m.mine.key(mm)); {
			case c < 0:
				mm = nil
			case c > 0:
				bm = nil
			}
		}
		var key []byte
		if bm != nil {
			key = bt.key(bm)
			bi++
		}
		if mm != nil {
			key = m.mine.key(mm)
			mi++
		}
		for ; ti < nt; ti++ {
			tIdx = tOrder[ti]
			c := bytes.Compare(m.theirs.key(&m.theirs.members[tIdx]), key)
			if c == 0 {
				tm = &m.theirs.members[tIdx]
				ti++
			}
			if c >= 0 {
				break
			}
		}

		m.path = append(m.path, key)
		switch {
		case bm != nil && mm != nil: // in base and mine
			if bytes.Equal(bt.raw(&bm.value), m.mine.raw(&mm.value)) {
				break // the usual case: untouched, theirs' value stands
			}
			if tm != nil && bm.value.kind == kindObject && mm.value.kind == kindObject && tm.value.kind == kindObject {
				// Merging finds any change inside; comparing first would walk
				// the same members twice.
				m.object(bt, &bm.value, &mm.value, &tm.value)
				break
			}
			if equal(bt, &bm.value, m.mine, &mm.value) {
				break // unchanged by mine: theirs' value stands
			}
			if tm == nil {
				m.conflict(reasonTheirsDeleted, bt, &bm.value, &mm.value, nil)
				added = append(added, mIdx)
				m.changed++
				break
			}
			m.value(bt, &bm.value, &mm.value, &tm.value)
		case bm != nil: // deleted in mine
			if tm == nil {
				break // deleted on both sides
			}
			if !equal(bt, &bm.value, m.theirs, &tm.value) {
				m.conflict(reasonMineDeleted, bt, &bm.value, nil, &tm.value)
			}
			deleted = append(deleted, tIdx)
			m.changed++
		default: // added in mine
			if tm == nil {
				added = append(added, mIdx)
				m.changed++
				break
			}
			if mm.value.kind == kindObject && tm.value.kind == kindObject {
				m.object(m.empty, &m.empty.root, &mm.value, &tm.value) // a union, as if both had started from {}
			} else if !equal(m.mine, &mm.value, m.theirs, &tm.value) {
				m.conflict(reasonAddedBoth, m.empty, nil, &mm.value, &tm.value)
				m.replace(&tm.value, &mm.value)
			}
		}
		m.path = m.path[:len(m.path)-1]
	}
	if len(deleted) > 0 || len(added) > 0 {
		slices.Sort(added)
		m.restructure(mv, t, deleted, added)
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
func (m *merger) conflict(reason string, bt *tree, b, mv, t *value) {
	c := Conflict{Reason: reason, Path: make([]string, len(m.path))}
	for i, k := range m.path {
		c.Path[i] = string(k)
	}
	if b != nil && bt != m.empty {
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
