package merge

import (
	"slices"
)

// This file is a model of the merge rules (DESIGN.md §2 and the package
// comment), written directly on values decoded by encoding/json, without
// the engine's parser, hashing, diff or splicing: a longest common
// subsequence by dynamic programming instead of Myers, groups of changes
// joined pairwise instead of swept, arrays rebuilt as values instead of
// edited in place.

// modelMerge returns the merged value and the number of conflicts. judged
// is false when the model cannot say what the engine must produce: a diff
// of two arrays has more than one longest common subsequence (any is
// right), or arrays are too large for the model.
func modelMerge(base, mine, theirs any) (merged any, conflicts int, judged bool) {
	md := &model{}
	if bm, ok := base.(map[string]any); ok {
		if mm, ok := mine.(map[string]any); ok {
			if tm, ok := theirs.(map[string]any); ok {
				return md.object(bm, mm, tm), md.conflicts, !md.unjudged
			}
		}
	}
	// A top level that is not an object is one value, arrays too.
	merged = theirs
	if !oracleValuesEqual(base, mine) && !oracleValuesEqual(mine, theirs) {
		if !oracleValuesEqual(base, theirs) {
			md.conflicts++
		}
		merged = mine
	}
	return merged, md.conflicts, !md.unjudged
}

type model struct {
	conflicts int
	unjudged  bool
}

// value merges a position that all three have.
func (md *model) value(b, m, t any) any {
	if oracleValuesEqual(b, m) {
		return t
	}
	bm, okb := b.(map[string]any)
	mm, okm := m.(map[string]any)
	tm, okt := t.(map[string]any)
	if okb && okm && okt {
		return md.object(bm, mm, tm)
	}
	ba, okb := b.([]any)
	ma, okm := m.([]any)
	ta, okt := t.([]any)
	if okb && okm && okt {
		return md.array(ba, ma, ta)
	}
	if oracleValuesEqual(m, t) {
		return t
	}
	if !oracleValuesEqual(b, t) {
		md.conflicts++
	}
	return m
}

// added merges a key or element that mine and theirs both added.
func (md *model) added(m, t any) any {
	_, mObj := m.(map[string]any)
	_, tObj := t.(map[string]any)
	if mObj && tObj {
		return md.value(map[string]any{}, m, t)
	}
	_, mArr := m.([]any)
	_, tArr := t.([]any)
	if mArr && tArr {
		return md.value([]any{}, m, t)
	}
	if !oracleValuesEqual(m, t) {
		md.conflicts++
		return m
	}
	return t
}

func (md *model) object(bm, mm, tm map[string]any) any {
	out := make(map[string]any, len(tm))
	for k, v := range tm {
		out[k] = v
	}
	keys := map[string]bool{}
	for k := range bm {
		keys[k] = true
	}
	for k := range mm {
		keys[k] = true
	}
	for k := range keys {
		bv, inB := bm[k]
		mv, inM := mm[k]
		tv, inT := tm[k]
		switch {
		case inB && inM && inT:
			out[k] = md.value(bv, mv, tv)
		case inB && inM: // theirs deleted
			if !oracleValuesEqual(bv, mv) {
				md.conflicts++
				out[k] = mv
			}
		case inB: // mine deleted
			if inT && !oracleValuesEqual(bv, tv) {
				md.conflicts++
			}
			delete(out, k)
		case inT: // added in mine and in theirs
			out[k] = md.added(mv, tv)
		default:
			out[k] = mv
		}
	}
	return out
}

// array merges arrays where mine differs from base.
func (md *model) array(b, m, t []any) any {
	if oracleValuesEqual(b, t) {
		return m
	}
	if oracleValuesEqual(m, t) {
		return t
	}
	if len(b)+len(m)+len(t) > 1000 {
		md.unjudged = true
		return m
	}
	if key, ok := modelIdentity(b, m, t); ok {
		return md.keyed(key, b, m, t)
	}
	return md.sequence(b, m, t)
}

// modelIdentity returns the identity member of the elements, if they all
// are objects with one of id, _id, uuid, key (the first they all have),
// scalar and unique in each array.
func modelIdentity(arrays ...[]any) (string, bool) {
	n := 0
	for _, a := range arrays {
		for _, e := range a {
			if _, ok := e.(map[string]any); !ok {
				return "", false
			}
			n++
		}
	}
	if n == 0 {
		return "", false
	}
	for _, key := range []string{"id", "_id", "uuid", "key"} {
		every := true
		for _, a := range arrays {
			for _, e := range a {
				if _, ok := e.(map[string]any)[key]; !ok {
					every = false
				}
			}
		}
		if !every {
			continue
		}
		for _, a := range arrays {
			for i, e := range a {
				id := e.(map[string]any)[key]
				switch id.(type) {
				case map[string]any, []any:
					return "", false
				}
				for _, f := range a[:i] {
					if oracleValuesEqual(id, f.(map[string]any)[key]) {
						return "", false
					}
				}
			}
		}
		return key, true
	}
	return "", false
}

func modelFind(a []any, key string, id any) int {
	for i, e := range a {
		if oracleValuesEqual(e.(map[string]any)[key], id) {
			return i
		}
	}
	return -1
}

func (md *model) keyed(key string, b, m, t []any) any {
	out := make([][]any, len(t)+1) // out[k+1]: theirs' element k (if kept), then what follows it
	var start []any                // what goes before theirs' first element
	for k, te := range t {
		id := te.(map[string]any)[key]
		bi, mi := modelFind(b, key, id), modelFind(m, key, id)
		switch {
		case bi >= 0 && mi >= 0:
			out[k+1] = append(out[k+1], md.value(b[bi], m[mi], te))
		case bi >= 0: // deleted in mine
			if !oracleValuesEqual(b[bi], te) {
				md.conflicts++
			}
		case mi >= 0:
			out[k+1] = append(out[k+1], md.added(m[mi], te))
		default:
			out[k+1] = append(out[k+1], te)
		}
	}
	anchor := -1
	for _, me := range m {
		id := me.(map[string]any)[key]
		if k := modelFind(t, key, id); k >= 0 {
			anchor = k
			continue
		}
		if bi := modelFind(b, key, id); bi >= 0 {
			if oracleValuesEqual(b[bi], me) {
				continue
			}
			md.conflicts++
		}
		after := anchor
		for after+1 < len(t) {
			nid := t[after+1].(map[string]any)[key]
			if modelFind(b, key, nid) >= 0 || modelFind(m, key, nid) >= 0 {
				break
			}
			after++
		}
		if after < 0 {
			start = append(start, me)
		} else {
			out[after+1] = append(out[after+1], me)
		}
	}
	merged := append([]any{}, start...)
	for _, part := range out[1:] {
		merged = append(merged, part...)
	}
	return merged
}

// modelHunk is base[bs:be] replaced by other[os:oe], from side 0 (mine) or
// 1 (theirs).
type modelHunk struct {
	side           int
	bs, be, os, oe int
}

func (md *model) sequence(b, m, t []any) any {
	hm, okm := modelDiff(b, m)
	ht, okt := modelDiff(b, t)
	if !okm || !okt {
		md.unjudged = true
		return m
	}
	for i := range ht {
		ht[i].side = 1
	}
	all := append(append([]modelHunk{}, hm...), ht...)
	// Join hunks of different sides that touch the same place, pairwise,
	// into groups (union-find).
	parent := make([]int, len(all))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		if parent[i] != i {
			parent[i] = find(parent[i])
		}
		return parent[i]
	}
	for i := range all {
		for j := range all {
			if all[i].side == 0 && all[j].side == 1 && modelTouch(all[i], all[j]) {
				parent[find(i)] = find(j)
			}
		}
	}
	type group struct{ S, E, MS, ME, TS, TE, mine, theirs int }
	groups := map[int]*group{}
	for i, h := range all {
		g := groups[find(i)]
		if g == nil {
			g = &group{S: h.bs, E: h.be}
			groups[find(i)] = g
		}
		g.S, g.E = min(g.S, h.bs), max(g.E, h.be)
		if h.side == 0 {
			g.mine++
		} else {
			g.theirs++
		}
	}
	// A group's regions in mine and theirs: base positions moved by the
	// side's hunks before the group, then by the group's.
	list := make([]*group, 0, len(groups))
	for root, g := range groups {
		var before, inside [2]int
		for i, h := range all {
			d := (h.oe - h.os) - (h.be - h.bs)
			if find(i) == root {
				inside[h.side] += d
			} else if h.bs < g.S || (h.bs == g.S && h.bs == h.be && g.S < g.E) {
				before[h.side] += d
			}
		}
		g.MS, g.TS = g.S+before[0], g.S+before[1]
		g.ME, g.TE = g.MS+(g.E-g.S)+inside[0], g.TS+(g.E-g.S)+inside[1]
		list = append(list, g)
	}
	slices.SortFunc(list, func(x, y *group) int {
		if x.S != y.S {
			return x.S - y.S
		}
		return (x.E - x.S) - (y.E - y.S) // an insertion before a range at the same point
	})
	var out []any
	tpos := 0
	for _, g := range list {
		out = append(out, t[tpos:g.TS]...)
		tpos = g.TE
		mr, tr, br := m[g.MS:g.ME], t[g.TS:g.TE], b[g.S:g.E]
		switch {
		case g.theirs == 0:
			out = append(out, mr...)
		case g.mine == 0:
			out = append(out, tr...)
		case g.S == g.E:
			u, ok := modelUnion(tr, mr)
			if !ok {
				md.unjudged = true
			}
			out = append(out, u...)
		case len(br) == len(mr) && len(br) == len(tr):
			for p := range br {
				switch {
				case oracleValuesEqual(br[p], mr[p]):
					out = append(out, tr[p])
				case oracleValuesEqual(br[p], tr[p]):
					out = append(out, mr[p])
				default:
					out = append(out, md.value(br[p], mr[p], tr[p]))
				}
			}
		case oracleValuesEqual(mr, tr):
			out = append(out, tr...)
		default:
			md.conflicts++
			out = append(out, mr...)
		}
	}
	return append(out, t[tpos:]...)
}

// modelTouch is whether a hunk of mine and one of theirs touch the same
// place of base: overlapping ranges, insertions at one point, or an
// insertion strictly inside the other's range.
func modelTouch(x, y modelHunk) bool {
	switch {
	case x.bs == x.be && y.bs == y.be:
		return x.bs == y.bs
	case x.bs == x.be:
		return y.bs < x.bs && x.bs < y.be
	case y.bs == y.be:
		return x.bs < y.bs && y.bs < x.be
	}
	return max(x.bs, y.bs) < min(x.be, y.be)
}

// modelDiff returns the hunks of the alignment of a and b on a longest
// common subsequence, or false when there is more than one.
func modelDiff(a, b []any) ([]modelHunk, bool) {
	pairs, ok := modelLCS(a, b)
	var hs []modelHunk
	i, j := 0, 0
	for _, p := range append(pairs, [2]int{len(a), len(b)}) {
		if p[0] > i || p[1] > j {
			hs = append(hs, modelHunk{bs: i, be: p[0], os: j, oe: p[1]})
		}
		i, j = p[0]+1, p[1]+1
	}
	return hs, ok
}

// modelLCS returns the matched pairs of a longest common subsequence of a
// and b; ok is false when greedy walks from the front and from the back,
// preferring either sequence, do not all find the same pairs.
func modelLCS(a, b []any) ([][2]int, bool) {
	n, m := len(a), len(b)
	eq := make([][]bool, n)
	for i := range eq {
		eq[i] = make([]bool, m)
		for j := range eq[i] {
			eq[i][j] = oracleValuesEqual(a[i], b[j])
		}
	}
	suf := make([][]int, n+1) // suf[i][j]: LCS of a[i:], b[j:]
	pre := make([][]int, n+1) // pre[i][j]: LCS of a[:i], b[:j]
	for i := range suf {
		suf[i], pre[i] = make([]int, m+1), make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			suf[i][j] = max(suf[i+1][j], suf[i][j+1])
			if eq[i][j] {
				suf[i][j] = max(suf[i][j], 1+suf[i+1][j+1])
			}
		}
	}
	for i := 1; i <= n; i++ {
		for j := 1; j <= m; j++ {
			pre[i][j] = max(pre[i-1][j], pre[i][j-1])
			if eq[i-1][j-1] {
				pre[i][j] = max(pre[i][j], 1+pre[i-1][j-1])
			}
		}
	}
	front := func(preferA bool) [][2]int {
		var out [][2]int
		i, j := 0, 0
		for i < n && j < m {
			switch {
			case eq[i][j] && suf[i][j] == 1+suf[i+1][j+1]:
				out = append(out, [2]int{i, j})
				i, j = i+1, j+1
			case preferA && suf[i+1][j] == suf[i][j], !preferA && suf[i][j+1] != suf[i][j]:
				i++
			default:
				j++
			}
		}
		return out
	}
	back := func(preferA bool) [][2]int {
		var out [][2]int
		i, j := n, m
		for i > 0 && j > 0 {
			switch {
			case eq[i-1][j-1] && pre[i][j] == 1+pre[i-1][j-1]:
				out = append(out, [2]int{i - 1, j - 1})
				i, j = i-1, j-1
			case preferA && pre[i-1][j] == pre[i][j], !preferA && pre[i][j-1] != pre[i][j]:
				i--
			default:
				j--
			}
		}
		slices.Reverse(out)
		return out
	}
	f := front(true)
	ok := slices.Equal(f, front(false)) && slices.Equal(f, back(true)) && slices.Equal(f, back(false))
	return f, ok
}

// modelUnion merges two insertions at one place: the common elements once,
// and in each gap theirs' then mine's.
func modelUnion(t, m []any) ([]any, bool) {
	pairs, ok := modelLCS(t, m)
	var out []any
	i, j := 0, 0
	for _, p := range append(pairs, [2]int{len(t), len(m)}) {
		out = append(out, t[i:p[0]]...)
		out = append(out, m[j:p[1]]...)
		if p[0] < len(t) {
			out = append(out, t[p[0]])
		}
		i, j = p[0]+1, p[1]+1
	}
	return out, ok
}
