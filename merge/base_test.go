package merge

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// cand is a candidate for the table: flags "t" (the writing thread's last
// read) and "p" (the writing process's last read).
type cand struct {
	doc   string
	flags string
	seq   uint64
}

func TestChooseBase(t *testing.T) {
	mine := `{"a": 1, "b": 2, "c": 3, "d": 4}`
	cases := []struct {
		name  string
		cands []cand
		want  Choice
	}{
		{"none", nil, Choice{Index: -1, RunnerUpIndex: -1, RunnerUp: -1}},
		{"only", []cand{{`{"a": 1, "b": 2, "c": 3, "d": 0}`, "", 1}},
			Choice{Index: 0, Distance: 1, RunnerUpIndex: -1, RunnerUp: -1}},
		{"nearest wins over the flags", []cand{
			{`{"a": 0, "b": 0, "c": 3, "d": 4}`, "t", 1},
			{`{"a": 0, "b": 2, "c": 0, "d": 4}`, "p", 2},
			{`{"a": 1, "b": 2, "c": 3, "d": 0}`, "", 3},
		}, Choice{Index: 2, Distance: 1, RunnerUpIndex: 0, RunnerUp: 2, Ambiguous: true}},
		{"nearest, far runner-up", []cand{
			{`{"a": 0, "b": 0, "c": 0, "d": 4}`, "t", 1},
			{`{"a": 1, "b": 2, "c": 3, "d": 0}`, "", 3},
		}, Choice{Index: 1, Distance: 1, RunnerUpIndex: 0, RunnerUp: 3}},
		{"tie: the thread's last read", []cand{
			{`{"a": 0, "b": 2, "c": 3, "d": 4}`, "", 5},
			{`{"a": 1, "b": 0, "c": 3, "d": 4}`, "t", 1},
			{`{"a": 1, "b": 2, "c": 0, "d": 4}`, "p", 9},
		}, Choice{Index: 1, Distance: 1, RunnerUpIndex: 2, RunnerUp: 1, Ambiguous: true}},
		{"tie: the process's last read", []cand{
			{`{"a": 0, "b": 2, "c": 3, "d": 4}`, "", 9},
			{`{"a": 1, "b": 0, "c": 3, "d": 4}`, "p", 1},
			{`{"a": 1, "b": 0, "c": 0, "d": 4}`, "t", 10},
		}, Choice{Index: 1, Distance: 1, RunnerUpIndex: 0, RunnerUp: 1, Ambiguous: true}},
		{"tie: the newest", []cand{
			{`{"a": 0, "b": 2, "c": 3, "d": 4}`, "", 3},
			{`{"a": 1, "b": 0, "c": 3, "d": 4}`, "", 7},
			{`{"a": 1, "b": 2, "c": 0, "d": 4}`, "", 5},
		}, Choice{Index: 1, Distance: 1, RunnerUpIndex: 2, RunnerUp: 1, Ambiguous: true}},
		{"tie: the lowest index", []cand{
			{`{"a": 9, "b": 9, "c": 3, "d": 4}`, "", 7},
			{`{"a": 0, "b": 2, "c": 3, "d": 4}`, "", 7},
			{`{"a": 1, "b": 0, "c": 3, "d": 4}`, "", 7},
		}, Choice{Index: 1, Distance: 1, RunnerUpIndex: 2, RunnerUp: 1, Ambiguous: true}},
		{"runner-up within one: ambiguous", []cand{
			{`{"a": 0, "b": 0, "c": 3, "d": 4}`, "", 2},
			{`{"a": 0, "b": 0, "c": 0, "d": 4}`, "t", 1},
		}, Choice{Index: 0, Distance: 2, RunnerUpIndex: 1, RunnerUp: 3, Ambiguous: true}},
		{"runner-up two away: clear", []cand{
			{`{"a": 0, "b": 0, "c": 3, "d": 4}`, "", 2},
			{`{"a": 0, "b": 0, "c": 0, "d": 0}`, "t", 1},
		}, Choice{Index: 0, Distance: 2, RunnerUpIndex: 1, RunnerUp: 4}},
		{"JSON-equal candidates are one content", []cand{
			{`{"a": 1, "b": 2, "c": 3, "d": 0}`, "t", 1},
			{"{\"d\":0.0,\"c\":3e0,\"\\u0062\":2,\"a\":1}", "", 9},
			{`{"a": 1, "b": 2, "c": 3, "d": 0}`, "p", 4},
			{`{"a": 1, "b": 0, "c": 0, "d": 0}`, "", 10},
		}, Choice{Index: 0, Distance: 1, RunnerUpIndex: 3, RunnerUp: 3}},
		{"JSON-equal candidates: the runner-up is another content", []cand{
			{`{"a": 1, "b": 2, "c": 3, "d": 0}`, "", 1},
			{`{"a": 1, "b": 2, "c": 3, "d": 0.0}`, "", 9},
			{`{"a": 1, "b": 2, "c": 0, "d": 0}`, "", 8},
		}, Choice{Index: 1, Distance: 1, RunnerUpIndex: 2, RunnerUp: 2, Ambiguous: true}},
		{"mine restores an old version exactly", []cand{
			{mine, "", 1},
			{`{"a": 1, "b": 2, "c": 3, "d": 5}`, "t", 2},
		}, Choice{Index: 0, Distance: 0, RunnerUpIndex: 1, RunnerUp: 1, Ambiguous: true}},
		{"nil summaries are skipped", []cand{
			{"", "t", 9},
			{`{"a": 1, "b": 2, "c": 3, "d": 5}`, "", 2},
		}, Choice{Index: 1, Distance: 1, RunnerUpIndex: -1, RunnerUp: -1}},
	}
	ms := mustSummarize(t, mine)
	for _, tc := range cases {
		var cs []Candidate
		for _, c := range tc.cands {
			var s *Summary
			if c.doc != "" {
				s = mustSummarize(t, c.doc)
			}
			cs = append(cs, Candidate{Summary: s, ThreadLastRead: strings.Contains(c.flags, "t"),
				ProcessLastRead: strings.Contains(c.flags, "p"), Seq: c.seq})
		}
		if got := ChooseBase(ms, cs); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
		if got := chooseBaseBrute(ms, cs); got != tc.want {
			t.Errorf("%s: the brute force gives %+v, the table %+v", tc.name, got, tc.want)
		}
	}
}

// chooseBaseBrute is ChooseBase's specification, computed by brute force:
// every distance in full, the preference order as one sort.
func chooseBaseBrute(mine *Summary, cands []Candidate) Choice {
	type entry struct {
		i, d int
	}
	var es []entry
	for i, c := range cands {
		if c.Summary != nil {
			es = append(es, entry{i, Distance(mine, c.Summary, 0)})
		}
	}
	pref := func(a, b entry) int {
		ca, cb := cands[a.i], cands[b.i]
		if ca.ThreadLastRead != cb.ThreadLastRead {
			return boolFirst(ca.ThreadLastRead)
		}
		if ca.ProcessLastRead != cb.ProcessLastRead {
			return boolFirst(ca.ProcessLastRead)
		}
		if c := cmp.Compare(cb.Seq, ca.Seq); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	}
	byDistance := func(a, b entry) int {
		if c := cmp.Compare(a.d, b.d); c != 0 {
			return c
		}
		return pref(a, b)
	}
	ch := Choice{Index: -1, RunnerUpIndex: -1, RunnerUp: -1}
	if len(es) == 0 {
		return ch
	}
	slices.SortFunc(es, byDistance)
	ch.Index, ch.Distance = es[0].i, es[0].d
	chosen := cands[es[0].i].Summary
	for _, e := range es {
		if Distance(chosen, cands[e.i].Summary, 0) != 0 {
			ch.RunnerUpIndex, ch.RunnerUp = e.i, e.d
			ch.Ambiguous = e.d <= ch.Distance+1
			break
		}
	}
	return ch
}

// versions returns n successive versions of a record in which each of
// workers increments its own counters, one or two changes a version.
func versions(rng *rand.Rand, n, fields int) [][]int {
	cur := make([]int, fields)
	var out [][]int
	for range n {
		for range 1 + rng.IntN(2) {
			cur[rng.IntN(fields)]++
		}
		out = append(out, slices.Clone(cur))
	}
	return out
}

func counterRecord(vals []int, pad int) string {
	var b strings.Builder
	b.WriteString(`{"id": 7, "name": "Zo\u00eb", `)
	for i, v := range vals {
		fmt.Fprintf(&b, `"w%d": %d, `, i, v)
	}
	b.WriteString(`"profile": {`)
	for i := range pad {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"f%d": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"`, i)
	}
	b.WriteString("}}")
	return b.String()
}

// ChooseBase agrees with the brute force on random candidate sets: the
// chosen candidate's distance is minimal, the tie-breaks and the runner-up
// are as specified.
func TestChooseBaseProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	ambiguous := 0
	for n := range 400 {
		fields := 1 + rng.IntN(8)
		count := 1 + rng.IntN(40)
		if n%10 == 0 {
			count = 1 + rng.IntN(300) // a busy process's reads
		}
		vs := versions(rng, count, fields)
		pad := rng.IntN(3) * 40
		var cands []Candidate
		for i, v := range vs {
			if rng.IntN(4) == 0 {
				continue // not served to any reader
			}
			seq := uint64(i)
			if rng.IntN(8) == 0 {
				seq = uint64(rng.IntN(len(vs))) // equal recencies
			}
			cands = append(cands, Candidate{Summary: mustSummarize(t, counterRecord(v, pad)), Seq: seq})
			if rng.IntN(6) == 0 { // the same content served again
				cands = append(cands, Candidate{Summary: mustSummarize(t, counterRecord(v, pad)), Seq: seq + 1})
			}
		}
		if len(cands) > 0 {
			cands[rng.IntN(len(cands))].ThreadLastRead = rng.IntN(3) > 0
			cands[rng.IntN(len(cands))].ProcessLastRead = rng.IntN(3) > 0
		}
		// Mine: a version read, plus one or two increments, or none.
		mineVals := slices.Clone(vs[rng.IntN(len(vs))])
		for range rng.IntN(3) {
			mineVals[rng.IntN(fields)]++
		}
		mine := mustSummarize(t, counterRecord(mineVals, pad))
		got, want := ChooseBase(mine, cands), chooseBaseBrute(mine, cands)
		if got != want {
			t.Fatalf("case %d: got %+v, the brute force %+v", n, got, want)
		}
		if got.Ambiguous {
			ambiguous++
		}
	}
	t.Logf("%d of 400 ambiguous", ambiguous)
	if ambiguous < 40 || ambiguous > 360 {
		t.Fatalf("weak sample: %d of 400 ambiguous", ambiguous)
	}
}

// boolFirst orders true before false.
func boolFirst(b bool) int {
	if b {
		return -1
	}
	return 1
}

// sortRanked gives the order a full sort gives, whether the candidates come as one run in
// preference order, a few (merged), or many (sorted).
func TestSortRanked(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for n := range 500 {
		count := rng.IntN(300)
		runs := 1 + rng.IntN(12)
		var order []ranked
		for k := range runs {
			var run []ranked
			for range count / runs {
				r := ranked{seq: uint64(rng.IntN(1000)), i: len(order) + len(run)}
				if rng.IntN(20) == 0 {
					r.flags = uint8(1 + rng.IntN(3))
				}
				run = append(run, r)
			}
			if k%3 != 2 { // most runs come in preference order
				slices.SortFunc(run, compareRanked)
			}
			order = append(order, run...)
		}
		want := slices.Clone(order)
		slices.SortFunc(want, compareRanked)
		got := slices.Clone(order)
		sortRanked(got, make([]ranked, len(got)))
		if !slices.Equal(got, want) {
			t.Fatalf("case %d (%d candidates in %d runs): sortRanked gave %v, want %v", n, len(order), runs, got, want)
		}
	}
}
