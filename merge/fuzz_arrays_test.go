package merge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
)

// fuzzOps turns fuzz bytes into an edit of a list: each pair of bytes is
// an operation (delete, insert a new element, replace with a new element,
// move) and a position. newElem makes the new elements, which no other
// element equals.
func fuzzOps(list []string, ops []byte, lo, hi int, newElem func() string) []string {
	out := slices.Clone(list)
	for i := 0; i+1 < len(ops); i += 2 {
		span := hi - lo
		if span < 0 {
			break
		}
		at := lo + int(ops[i+1])%(span+1)
		switch ops[i] % 4 {
		case 0:
			if at < hi {
				out = slices.Delete(out, at, at+1)
				hi--
			}
		case 1:
			out = slices.Insert(out, at, newElem())
			hi++
		case 2:
			if at < hi {
				out[at] = newElem()
			}
		case 3:
			if at < hi && span > 1 {
				to := lo + int(ops[i])/4%span
				e := out[at]
				out = slices.Delete(out, at, at+1)
				out = slices.Insert(out, to, e)
			}
		}
	}
	return out
}

func jsonList(list []string) string { return "[" + strings.Join(list, ",") + "]" }

// decodeList decodes the array under "l" of an object into its elements'
// compact JSON texts.
func decodeList(t *testing.T, doc []byte) []string {
	t.Helper()
	var v struct{ L []json.RawMessage }
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("merged document %q: %v", doc, err)
	}
	out := make([]string, len(v.L))
	for i, e := range v.L {
		var c bytes.Buffer
		if err := json.Compact(&c, e); err != nil {
			t.Fatal(err)
		}
		out[i] = c.String()
	}
	return out
}

// FuzzArrayInsertions edits one array on both sides and checks what must
// hold whatever the diff: the result is valid JSON; every element that
// only mine inserted is there (writer-wins takes mine's side of any
// conflict); every element that only theirs inserted is there unless the
// merge reported a conflict (theirs' insertion inside a run that mine
// replaced); nothing comes from nowhere. Base elements repeat (few
// values), so only inserted elements, which are unique, are checked one
// by one.
func FuzzArrayInsertions(f *testing.F) {
	f.Add([]byte{1, 2, 3}, []byte{1, 3}, []byte{1, 0}, false)
	f.Add([]byte{1, 1, 1}, []byte{0, 0, 1, 2}, []byte{0, 2, 1, 3}, false)
	f.Add([]byte{}, []byte{1, 0, 1, 0}, []byte{1, 0}, true)
	f.Add([]byte{5, 6, 7, 8}, []byte{0, 1, 0, 1}, []byte{1, 2, 2, 1}, true)
	f.Add([]byte{9, 8, 7, 6, 5}, []byte{3, 4, 1, 1}, []byte{3, 0, 2, 3}, false)
	f.Fuzz(func(t *testing.T, baseBytes, mineOps, theirsOps []byte, indent bool) {
		if len(baseBytes) > 64 || len(mineOps) > 64 || len(theirsOps) > 64 {
			return
		}
		var base []string
		for _, b := range baseBytes {
			base = append(base, fmt.Sprint(b%8)) // few values: duplicates
		}
		n := 0
		fresh := func(prefix string) func() string {
			return func() string { n++; return fmt.Sprintf(`"%s%d"`, prefix, n) }
		}
		mine := fuzzOps(base, mineOps, 0, len(base), fresh("m"))
		theirs := fuzzOps(base, theirsOps, 0, len(base), fresh("t"))
		theirsDoc := wrapL(jsonList(theirs))
		if indent {
			theirsDoc = "{\n  \"l\": [\n    " + strings.Join(theirs, ",\n    ") + "\n  ]\n}\n"
		}
		res, err := Merge(inputs(wrapL(jsonList(base)), wrapL(jsonList(mine)), theirsDoc), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(res.Merged) {
			t.Fatalf("invalid output %q", res.Merged)
		}
		got := decodeList(t, res.Merged)
		for _, e := range mine {
			if strings.HasPrefix(e, `"m`) && !slices.Contains(got, e) {
				t.Fatalf("mine's new %s lost: base %v mine %v theirs %v merged %v", e, base, mine, theirs, got)
			}
		}
		if len(res.Conflicts) == 0 {
			for _, e := range theirs {
				if strings.HasPrefix(e, `"t`) && !slices.Contains(got, e) {
					t.Fatalf("theirs' new %s lost without a conflict: base %v mine %v theirs %v merged %v", e, base, mine, theirs, got)
				}
			}
		}
		for _, e := range got {
			if !strings.HasPrefix(e, `"`) && !slices.Contains(base, e) {
				t.Fatalf("merged has %s from nowhere", e)
			}
			if strings.HasPrefix(e, `"`) && !slices.Contains(mine, e) && !slices.Contains(theirs, e) {
				t.Fatalf("merged has %s from nowhere", e)
			}
		}
		if (res.Changed == 0) != (string(res.Merged) == theirsDoc) {
			t.Fatalf("changed %d", res.Changed)
		}
	})
}

// FuzzArrayCommute edits two disjoint parts of an array of distinct
// elements, one on each side, with an element between them that neither
// touches: the merge has no conflict, is both edits, and is the same
// whichever side commits first. With keyed, the elements are objects with
// ids (a replaced element is a new id).
func FuzzArrayCommute(f *testing.F) {
	f.Add(uint8(6), []byte{1, 0, 0, 1}, []byte{1, 2, 2, 0}, false)
	f.Add(uint8(9), []byte{3, 1, 2, 2}, []byte{0, 0, 1, 3}, true)
	f.Add(uint8(2), []byte{1, 0}, []byte{1, 1}, false)
	f.Fuzz(func(t *testing.T, size uint8, xOps, yOps []byte, keyed bool) {
		if len(xOps) > 64 || len(yOps) > 64 {
			return
		}
		elem := func(i int) string { return fmt.Sprint(i) }
		if keyed {
			elem = func(i int) string { return fmt.Sprintf(`{"id":%d,"v":0}`, i) }
		}
		k := int(size) % 20
		var base []string
		for i := range 2*k + 1 {
			base = append(base, elem(i))
		}
		n := 1000
		fresh := func() string {
			n++
			return elem(n)
		}
		x := fuzzOps(base, xOps, 0, k, fresh)           // before the middle element
		guard := slices.Index(x, elem(k))               // the middle element, untouched
		y := fuzzOps(base, yOps, k+1, len(base), fresh) // after it
		gy := slices.Index(y, elem(k))
		both := append(slices.Clone(x[:guard+1]), y[gy+1:]...)
		if keyed {
			// A move on one side is not a change the keyed merge keeps
			// when the other side changed the array: theirs' order wins.
			if hasMove(base, x) || hasMove(base, y) {
				return
			}
		}
		b, xd, yd := wrapL(jsonList(base)), wrapL(jsonList(x)), wrapL(jsonList(y))
		r1, err1 := Merge(inputs(b, xd, yd), Options{})
		r2, err2 := Merge(inputs(b, yd, xd), Options{})
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if len(r1.Conflicts)+len(r2.Conflicts) > 0 {
			t.Fatalf("disjoint edits conflict: %q %q\nbase %v\nx %v\ny %v", conflictSummary(r1.Conflicts), conflictSummary(r2.Conflicts), base, x, y)
		}
		g1, g2 := decodeList(t, r1.Merged), decodeList(t, r2.Merged)
		if !slices.Equal(g1, both) || !slices.Equal(g2, both) {
			t.Fatalf("base %v\nx %v\ny %v\nmerged %v and %v, want %v", base, x, y, g1, g2, both)
		}
	})
}

// hasMove reports whether the elements of base that edited keeps are in
// another order.
func hasMove(base, edited []string) bool {
	last := -1
	for _, e := range edited {
		if i := slices.Index(base, e); i >= 0 {
			if i < last {
				return true
			}
			last = i
		}
	}
	return false
}

var setRules = func() *Rules {
	r, err := ParseRules([]byte(`{"rules":[{"path":"/l","strategy":"set"},{"path":"/n","strategy":"counter"}]}`))
	if err != nil {
		panic(err)
	}
	return r
}()

// FuzzSet merges arrays under a set rule: the result, as a set, is
// exactly base with both sides' additions, without both sides' removals;
// when both sides changed the set, it is theirs' elements that mine did
// not remove, in theirs' order, then mine's additions that theirs lacks.
func FuzzSet(f *testing.F) {
	f.Add([]byte{1, 2, 3}, []byte{1, 3, 4}, []byte{2, 3, 5})
	f.Add([]byte{1, 1}, []byte{1, 1, 2, 2}, []byte{})
	f.Add([]byte{}, []byte{7}, []byte{7, 7})
	f.Fuzz(func(t *testing.T, bb, mb, tb []byte) {
		if len(bb) > 100 || len(mb) > 100 || len(tb) > 100 {
			return
		}
		list := func(bs []byte) []string {
			var out []string
			for _, b := range bs {
				out = append(out, fmt.Sprint(b%16))
			}
			return out
		}
		base, mine, theirs := list(bb), list(mb), list(tb)
		res, err := Merge(inputs(wrapL(jsonList(base)), wrapL(jsonList(mine)), wrapL(jsonList(theirs))), Options{Rules: setRules})
		if err != nil || len(res.Conflicts) > 0 {
			t.Fatalf("err %v, conflicts %q", err, conflictSummary(res.Conflicts))
		}
		got := decodeList(t, res.Merged)
		in := func(l []string, e string) bool { return slices.Contains(l, e) }
		want := map[string]bool{}
		for _, l := range [][]string{base, mine, theirs} {
			for _, e := range l {
				want[e] = true
			}
		}
		for e := range want {
			if in(base, e) && (!in(mine, e) || !in(theirs, e)) {
				delete(want, e)
			}
		}
		gotSet := map[string]bool{}
		for _, e := range got {
			gotSet[e] = true
		}
		if !mapsEqual(gotSet, want) {
			t.Fatalf("base %v mine %v theirs %v: merged %v, want the set %v", base, mine, theirs, got, want)
		}
		if slices.Equal(base, mine) || slices.Equal(base, theirs) || slices.Equal(mine, theirs) {
			return
		}
		var order []string
		for _, e := range theirs {
			if !in(base, e) || in(mine, e) {
				order = append(order, e)
			}
		}
		for _, e := range mine {
			if !in(base, e) && !in(order, e) {
				order = append(order, e)
			}
		}
		if !slices.Equal(got, order) {
			t.Fatalf("base %v mine %v theirs %v: merged %v, want %v", base, mine, theirs, got, order)
		}
	})
}

// FuzzCounter merges numbers under a counter rule: the result is theirs +
// mine - base, exactly (checked with big.Rat), when both changed it, the
// changed side's number when one did.
func FuzzCounter(f *testing.F) {
	for _, s := range [][3]string{{"1", "2", "3"}, {"0.1", "0.25", "-3"}, {"1e2", "1.5e2", "99999999999999999999"},
		{"-0", "0.0", "1E-3"}, {"10", "10.0", "7"}, {"1e-400", "1", "2"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, b, m, th string) {
		for _, s := range []string{b, m, th} {
			tr, err := parse([]byte(s), 1)
			if err != nil || tr.root.kind != kindNumber || tr.root.start != 0 || int(tr.root.end) != len(s) || hugeExponent.MatchString(s) {
				return
			}
		}
		res, err := Merge(inputs(`{"n":`+b+`}`, `{"n":`+m+`}`, `{"n":`+th+`}`), Options{Rules: setRules})
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ N json.Number }
		if err := json.Unmarshal(res.Merged, &got); err != nil {
			t.Fatalf("merged %q: %v", res.Merged, err)
		}
		rat := func(s string) *big.Rat {
			r, ok := new(big.Rat).SetString(s)
			if !ok {
				t.Fatalf("big.Rat cannot read %q", s)
			}
			return r
		}
		rb, rm, rt, rg := rat(b), rat(m), rat(th), rat(string(got.N))
		want := new(big.Rat).Add(rt, new(big.Rat).Sub(rm, rb))
		if len(res.Conflicts) > 0 {
			if len(res.Conflicts) != 1 || !strings.Contains(res.Conflicts[0].Reason, "too far apart") {
				t.Fatalf("conflicts %q", conflictSummary(res.Conflicts))
			}
			return
		}
		if rg.Cmp(want) != 0 {
			t.Fatalf("%s + (%s - %s) = %s, merged %s", th, m, b, want.RatString(), got.N)
		}
		if rb.Cmp(rm) == 0 && string(got.N) != th {
			t.Fatalf("mine unchanged: merged %s, theirs %s", got.N, th)
		}
		if rb.Cmp(rm) != 0 && rb.Cmp(rt) == 0 && string(got.N) != m {
			t.Fatalf("theirs unchanged: merged %s, mine %s", got.N, m)
		}
	})
}
