package merge

import (
	"math"
	"slices"
)

// Candidate is one version of a record that the writer of a commit may
// have read: a version served to a reader, the writing process's own last
// commit, or the record at the writing open.
type Candidate struct {
	Summary *Summary // nil: not a candidate (skipped)
	// ThreadLastRead: the version the writing thread last read.
	ThreadLastRead bool
	// ProcessLastRead: the version the writing process last read.
	ProcessLastRead bool
	// Seq orders the candidates by recency: a larger Seq is newer.
	Seq uint64
}

// Choice is the outcome of ChooseBase.
type Choice struct {
	// Index is the chosen candidate's index, -1 when there is none.
	Index int
	// Distance is Distance(mine, chosen).
	Distance int
	// RunnerUpIndex is the index of the nearest candidate whose content
	// differs from the chosen one's (-1 if all candidates have the chosen
	// content), and RunnerUp its distance to mine (-1 then).
	RunnerUpIndex int
	RunnerUp      int
	// Ambiguous: the runner-up is within one change of the chosen one
	// (RunnerUp <= Distance+1), so the choice rests on very little
	// evidence; count it and journal it.
	Ambiguous bool
}

// ChooseBase chooses the base of a commit: the candidate from which mine
// differs least (see Distance). Among candidates at the same distance it
// prefers the writing thread's last read, then the writing process's last
// read, then the newest (largest Seq), then the lowest index. Candidates
// with JSON-equal contents are one content: one is never the other's
// runner-up (no false ambiguity), and one equal to the chosen or the
// runner-up content so far is not compared again.
//
// It is a pure function of its arguments, and safe to call concurrently.
// Its cost is at most one Distance per candidate, each bounded by the
// runner-up's distance so far (candidates are tried in preference order,
// so the likely base first): with candidates that differ from mine in
// many places, most comparisons stop after a few differences, and once
// the runner-up is one change from mine, the others cost a comparison of
// hashes.
func ChooseBase(mine *Summary, candidates []Candidate) Choice {
	// The candidates in preference order. A process's reads can make
	// hundreds of candidates (docs/design.md, "The base of a commit").
	var orderBuf [64]ranked
	order := orderBuf[:0]
	if len(candidates) > len(orderBuf)/2 {
		order = make([]ranked, 0, len(candidates))
	}
	for i := range candidates {
		c := &candidates[i]
		if c.Summary == nil {
			continue
		}
		r := ranked{seq: c.Seq, i: i, hash: c.Summary.hash}
		if c.ThreadLastRead {
			r.flags |= 2
		}
		if c.ProcessLastRead {
			r.flags |= 1
		}
		order = append(order, r)
	}
	scratch := orderBuf[:] // unused by order if order was allocated
	if len(candidates) <= len(orderBuf)/2 {
		scratch = orderBuf[len(order):]
	}
	sortRanked(order, scratch)
	ch := Choice{Index: -1, RunnerUpIndex: -1, RunnerUp: -1}
	best, second := math.MaxInt, math.MaxInt
	var bestHash, secondHash uint64
	for k := range order {
		i, hash := order[k].i, order[k].hash
		if ch.Index >= 0 && hash == bestHash || ch.RunnerUpIndex >= 0 && hash == secondHash {
			// The content of a candidate tried before, which was
			// preferred: nothing changes.
			continue
		}
		if second <= 1 && hash != mine.hash {
			// Only a candidate equal to mine (distance 0) could still
			// change the choice or the runner-up; any other is at least
			// 1 from mine, not below second. With many candidates a step
			// apart (a process's reads of a counter), most are this.
			continue
		}
		limit := 0 // none
		if second < math.MaxInt {
			limit = second + 1
		}
		// A result past limit is past second: it changes nothing. So is
		// the result of a content equal to one tried before whose result
		// was past limit (limits only decrease); other equal contents are
		// skipped above.
		d := Distance(mine, candidates[i].Summary, limit)
		switch {
		case d < best:
			second, secondHash, ch.RunnerUpIndex = best, bestHash, ch.Index
			best, bestHash, ch.Index = d, hash, i
		case d < second:
			second, secondHash, ch.RunnerUpIndex = d, hash, i
		}
	}
	if ch.Index < 0 {
		return ch
	}
	ch.Distance = best
	if ch.RunnerUpIndex >= 0 {
		ch.RunnerUp = second
		ch.Ambiguous = second <= best+1
	}
	return ch
}

// ranked is a candidate's place in the order of preference.
type ranked struct {
	flags uint8 // 2: the thread's last read, 1: the process's
	seq   uint64
	i     int
	hash  uint64 // the candidate's Summary.hash, read while its order is made
}

func (r *ranked) before(o *ranked) bool {
	if r.flags != o.flags {
		return r.flags > o.flags
	}
	if r.seq != o.seq {
		return r.seq > o.seq
	}
	return r.i < o.i
}

// compareRanked orders by preference (before), for slices.SortFunc.
func compareRanked(a, b ranked) int {
	switch {
	case a.i == b.i:
		return 0
	case a.before(&b):
		return -1
	}
	return 1
}

// sortRanked sorts order into preference order (before), using buf as scratch if it is long enough.
// Candidates mostly come as a few runs already in that order (a process's reads newest first, then
// other processes' reads): those are merged, in linear time; many runs are sorted.
func sortRanked(order, buf []ranked) {
	runs := 1
	for k := 1; k < len(order); k++ {
		if order[k].before(&order[k-1]) {
			runs++
		}
	}
	switch {
	case runs == 1:
		return
	case runs > 8:
		slices.SortFunc(order, compareRanked)
		return
	}
	if len(buf) < len(order) {
		buf = make([]ranked, len(order))
	}
	src, dst := order, buf[:len(order)]
	for runs > 1 {
		// One pass merges each pair of neighbouring runs of src into dst.
		runs = 0
		for lo := 0; lo < len(src); {
			mid := runEnd(src, lo)
			hi := mid
			if mid < len(src) {
				hi = runEnd(src, mid)
			}
			mergeRuns(dst[lo:hi], src[lo:mid], src[mid:hi])
			lo = hi
			runs++
		}
		src, dst = dst, src
	}
	if &src[0] != &order[0] {
		copy(order, src)
	}
}

// runEnd is the end of the run of s in preference order that starts at lo.
func runEnd(s []ranked, lo int) int {
	k := lo + 1
	for k < len(s) && !s[k].before(&s[k-1]) {
		k++
	}
	return k
}

// mergeRuns merges a and b, each in preference order, into dst.
func mergeRuns(dst, a, b []ranked) {
	k := 0
	for len(a) > 0 && len(b) > 0 {
		if b[0].before(&a[0]) {
			dst[k], b = b[0], b[1:]
		} else {
			dst[k], a = a[0], a[1:]
		}
		k++
	}
	k += copy(dst[k:], a)
	copy(dst[k:], b)
}
