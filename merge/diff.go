package merge

// hunk is one change of a diff: a[as:ae] became b[bs:be]. Hunks of one
// diff are in order and separated by at least one element that both
// sequences keep.
type hunk struct {
	as, ae, bs, be int32
}

// diffClasses returns the hunks that turn a into b with the fewest
// insertions and deletions (Myers' O((n+m)·d) algorithm, after stripping
// the common prefix and suffix). ok is false when the diff would take more
// than budget steps or more than maxEdits edits; used is the steps spent
// either way.
func diffClasses(a, b []int32, budget int64, maxEdits int) (hunks []hunk, used int64, ok bool) {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	used = int64(pre + suf)
	a, b = a[pre:len(a)-suf], b[pre:len(b)-suf]
	switch {
	case len(a) == 0 && len(b) == 0:
		return nil, used, true
	case len(a) == 0 || len(b) == 0:
		if len(a)+len(b) > maxEdits {
			return nil, used, false
		}
		return []hunk{{int32(pre), int32(pre + len(a)), int32(pre), int32(pre + len(b))}}, used, true
	}
	if len(a)+len(b) > maxEdits && editsAtLeast(a, b) > maxEdits {
		// Hopeless (most elements changed): say so without searching.
		return nil, used + int64(len(a)+len(b)), false
	}
	matches, steps, ok := myers(a, b, budget-used, maxEdits)
	used += steps
	if !ok {
		return nil, used, false
	}
	// The hunks are the gaps between the runs of matches.
	var x, y int32
	for _, r := range matches {
		if r.x > x || r.y > y {
			hunks = append(hunks, hunk{int32(pre) + x, int32(pre) + r.x, int32(pre) + y, int32(pre) + r.y})
		}
		x, y = r.x+r.n, r.y+r.n
	}
	if int(x) < len(a) || int(y) < len(b) {
		hunks = append(hunks, hunk{int32(pre) + x, int32(pre + len(a)), int32(pre) + y, int32(pre + len(b))})
	}
	return hunks, used, true
}

// editsAtLeast is a lower bound of the edits from a to b: the elements
// that one has more often than the other must be inserted or deleted.
// Classes are small non-negative numbers (see interner).
func editsAtLeast(a, b []int32) int {
	top := int32(0)
	for _, c := range a {
		if c < 0 {
			return 0
		}
		top = max(top, c)
	}
	counts := make([]int32, top+1)
	for _, c := range a {
		counts[c]++
	}
	common := 0
	for _, c := range b {
		if c >= 0 && c <= top && counts[c] > 0 {
			counts[c]--
			common++
		}
	}
	return len(a) + len(b) - 2*common
}

// run is a run of n matching elements at a[x:] and b[y:].
type run struct{ x, y, n int32 }

// myers returns the runs of matches of a shortest edit script from a to
// b, in order, each of at least one element. It keeps the furthest point
// reached on each diagonal after each round d, which costs (d+1)² int32s
// of memory in all, and gives up past maxEdits rounds or budget steps (a
// step is one diagonal visited or one element compared).
func myers(a, b []int32, budget int64, maxEdits int) (runs []run, steps int64, ok bool) {
	n, m := len(a), len(b)
	maxD := min(n+m, maxEdits)
	off := maxD + 1
	v := make([]int32, 2*maxD+3)
	var trace []int32 // round d's v[-d..d] at trace[d*d:]
	for d := 0; d <= maxD; d++ {
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = int(v[off+k+1]) // down: an insertion from b
			} else {
				x = int(v[off+k-1]) + 1 // right: a deletion from a
			}
			y := x - k
			start := x
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			steps += int64(1 + x - start)
			v[off+k] = int32(x)
			if x >= n && y >= m {
				return backtrack(trace, d, n, m), steps, true
			}
		}
		if steps > budget {
			return nil, steps, false
		}
		trace = append(trace, v[off-d:off+d+1]...)
	}
	return nil, steps, false
}

// backtrack walks the trace of rounds 0..d-1 back from (n, m) and returns
// the runs of matches in order.
func backtrack(trace []int32, d, n, m int) []run {
	var runs []run
	x, y := n, m
	for ; d > 0; d-- {
		prev := trace[(d-1)*(d-1) : d*d] // round d-1: v[-(d-1)..d-1]
		at := func(k int) int { return int(prev[k+d-1]) }
		k := x - y
		var pk int
		if k == -d || (k != d && at(k-1) < at(k+1)) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := at(pk)
		py := px - pk
		// The edit leads from (px, py) to (mx, my); a snake from there to (x, y).
		mx, my := px, py+1
		if pk == k-1 {
			mx, my = px+1, py
		}
		if x > mx {
			runs = append(runs, run{int32(mx), int32(my), int32(x - mx)})
		}
		x, y = px, py
	}
	if x > 0 {
		runs = append(runs, run{0, 0, int32(x)})
	}
	for i, j := 0, len(runs)-1; i < j; i, j = i+1, j-1 {
		runs[i], runs[j] = runs[j], runs[i]
	}
	return runs
}

// maxArrayEdits bounds the differences (insertions plus deletions) of one
// element diff, whatever the cost bound: the diff keeps a trace whose size
// grows with their square.
const maxArrayEdits = 1024
