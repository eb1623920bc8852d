package merge

import (
	"cmp"
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
// with JSON-equal contents are one content: their distance is computed
// once, and one can never be the other's runner-up.
//
// It is a pure function of its arguments, and safe to call concurrently.
// Its cost is one Distance per distinct content, each bounded by the
// second-best distance found so far (candidates are tried in preference
// order, so the likely base first).
func ChooseBase(mine *Summary, candidates []Candidate) Choice {
	var orderBuf [64]int
	order := orderBuf[:0]
	for i := range candidates {
		if candidates[i].Summary != nil {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(i, j int) int {
		ci, cj := &candidates[i], &candidates[j]
		if ci.ThreadLastRead != cj.ThreadLastRead {
			return boolFirst(ci.ThreadLastRead)
		}
		if ci.ProcessLastRead != cj.ProcessLastRead {
			return boolFirst(ci.ProcessLastRead)
		}
		if c := cmp.Compare(cj.Seq, ci.Seq); c != 0 {
			return c
		}
		return cmp.Compare(i, j)
	})
	ch := Choice{Index: -1, RunnerUpIndex: -1, RunnerUp: -1}
	best, second := math.MaxInt, math.MaxInt
	var seenBuf [64]uint64 // hashes of the contents already compared
	seen := seenBuf[:0]
	for _, i := range order {
		s := candidates[i].Summary
		if slices.Contains(seen, s.hash) {
			// The same content as a candidate tried before, which was
			// preferred: nothing changes.
			continue
		}
		seen = append(seen, s.hash)
		limit := 0 // none
		if second < math.MaxInt {
			limit = second + 1
		}
		d := Distance(mine, s, limit)
		switch {
		case d < best:
			second, ch.RunnerUpIndex = best, ch.Index
			best, ch.Index = d, i
		case d < second:
			second, ch.RunnerUpIndex = d, i
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

// boolFirst orders true before false.
func boolFirst(b bool) int {
	if b {
		return -1
	}
	return 1
}
