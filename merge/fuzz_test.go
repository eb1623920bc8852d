package merge

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const fuzzMaxDepth = 64

// Fuzz input flags for FuzzMerge.
const (
	fuzzHasBase   = 1
	fuzzHasTheirs = 2
	fuzzReject    = 4
)

func addMergeSeeds(f *testing.F) {
	seeds := [][3]string{
		{`{"a":1,"b":2}`, `{"a":1,"b":3}`, "{\n  \"a\": 5,\n  \"b\": 2\n}\n"},
		{`{"a":1,"o":{"x":1}}`, `{"a":1,"o":{"x":2},"n":[1]}`, `{"o":{"y":1,"x":1},"a":2}`},
		{`{"a":1,"b":2,"c":3}`, `{"b":2}`, `{"a":1,"b":2,"c":4}`},
		{`{"\u0041":1,"a.b":{"*":1}}`, `{"A":2,"a.b":{"*":1,"#":[]}}`, `{"a.b":{"*":1},"A":1}`},
		{`[1,2]`, `[1,2,3]`, `[1,2]`},
		{`1`, `1.0`, `"x"`},
		{`{}`, `{"k":{"k":{"k":null}}}`, `{}`},
		{`{"n":9007199254740993}`, `{"n":9007199254740992}`, `{"n":1e2}`},
		{`{"s":"\ud800"}`, `{"s":"\ufffd"}`, `{"s":"\uD800"}`},
		{`{"a":1}`, `{"a":1}`, `{"a":1,"a":2}`},
		{`{"a":1}`, `{"a":[1,]}`, `{"a":1}`},
		// Objects past smallObject members, keys in other orders: found by
		// position where they line up, else through the hash index.
		{`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":{"x":1,"y":2,"z":3,"u":4,"v":5,"w":6,"s":7,"t":8,"r":9}}`,
			`{"b":2,"a":0,"c":3,"e":5,"\u0064":4,"g":7,"h":8,"i":{"y":2,"x":0,"z":3,"u":4,"v":5,"w":6,"t":8,"r":9,"q":1},"j":1}`,
			`{"i":{"x":1,"y":2,"z":3,"u":4,"v":5,"w":6,"s":7,"t":8,"r":9},"h":8,"g":7,"f":6,"e":5,"d":4,"c":3,"b":2,"a":1.0}`},
	}
	// Arrays: both sides insert, delete and change elements, of scalars,
	// objects with and without ids, nested arrays.
	seeds = append(seeds, [][3]string{
		{`{"l":[1,2,3]}`, `{"l":[1,5,3,4]}`, `{"l":[0,1,2,3,6]}`},
		{`{"l":[1,2,3]}`, `{"l":[1,3]}`, "{\"l\": [\n  1,\n  9,\n  3\n]}"},
		{`{"l":[{"id":1,"a":0},{"id":2}]}`, `{"l":[{"id":1,"a":1},{"id":3}]}`, `{"l":[{"id":2,"b":1},{"id":1,"a":0},{"id":4}]}`},
		{`{"l":[{"_id":"x","v":[1]}]}`, `{"l":[{"_id":"x","v":[1,2]}]}`, `{"l":[{"_id":"x","v":[0,1]},{"_id":"y"}]}`},
		{`{"l":[[1],[2]]}`, `{"l":[[1,3],[2]]}`, `{"l":[[0,1],[2],[]]}`},
		{`{"l":[{"a":1},{"b":1}]}`, `{"l":[{"a":2},{"b":1}]}`, `{"l":[{"a":1},{"b":2}]}`},
		{`{"l":[1,1,1]}`, `{"l":[1,1]}`, `{"l":[1,1,1,1]}`},
		{`{}`, `{"l":["a","b"]}`, `{"l":["b","c"]}`},
		{`{"l":[{"id":1},{"id":1}]}`, `{"l":[{"id":1},{"id":1},{"id":2}]}`, `{"l":[{"id":1}]}`},
	}...)
	for _, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]), []byte(s[2]), uint8(fuzzHasBase|fuzzHasTheirs))
	}
	f.Add([]byte(nil), []byte(`{"a":1}`), []byte(`{"b":2}`), uint8(fuzzHasTheirs))
	f.Add([]byte(`{"a":1}`), []byte(`{"a":2}`), []byte(nil), uint8(fuzzHasBase|fuzzReject))
	f.Add([]byte(`{"a":1}`), []byte(`{"a":2}`), []byte(`{"a":3}`), uint8(fuzzHasBase|fuzzHasTheirs|fuzzReject))
}

// FuzzMerge checks Merge on arbitrary inputs against its invariants and
// against a model merge on values decoded by encoding/json.
func FuzzMerge(f *testing.F) {
	addMergeSeeds(f)
	f.Fuzz(func(t *testing.T, base, mine, theirs []byte, flags uint8) {
		in := Inputs{Base: base, HasBase: flags&fuzzHasBase != 0, Mine: mine, Theirs: theirs, HasTheirs: flags&fuzzHasTheirs != 0}
		opts := Options{MaxDepth: fuzzMaxDepth}
		if flags&fuzzReject != 0 {
			opts.Policy = Reject
		}
		res, err := Merge(in, opts)

		mineTree, mineErr := parse(mine, fuzzMaxDepth)
		var baseTree *tree
		var baseErr *syntaxError
		if in.HasBase {
			baseTree, baseErr = parse(base, fuzzMaxDepth)
		}
		var theirsTree *tree
		theirsOK := false
		if in.HasTheirs {
			var theirsErr *syntaxError
			theirsTree, theirsErr = parse(theirs, fuzzMaxDepth)
			theirsOK = theirsErr == nil
		}

		var ie *InputError
		switch {
		case mineErr != nil || baseErr != nil:
			want := "mine"
			if mineErr == nil {
				want = "base"
			}
			if !errors.As(err, &ie) || ie.Input != want {
				t.Fatalf("invalid %s: err = %v", want, err)
			}
			return
		case errors.As(err, &ie):
			t.Fatalf("valid mine and base, but %v", err)
		case errors.Is(err, ErrRejected):
			if opts.Policy != Reject || len(res.Conflicts) == 0 || res.Merged != nil {
				t.Fatalf("ErrRejected with policy %v, %d conflicts, merged %q", opts.Policy, len(res.Conflicts), res.Merged)
			}
			return
		case err != nil:
			t.Fatalf("unexpected error %v", err)
		}
		if opts.Policy == Reject && len(res.Conflicts) > 0 {
			t.Fatalf("policy reject let %d conflicts through", len(res.Conflicts))
		}

		// The output is one valid JSON document.
		mergedTree, perr := parse(res.Merged, fuzzMaxDepth)
		if perr != nil || !json.Valid(res.Merged) {
			t.Fatalf("merged output invalid (%v): %q", perr, res.Merged)
		}
		if (res.Changed == 0) != (in.HasTheirs && bytes.Equal(res.Merged, theirs)) {
			t.Fatalf("Changed = %d, merged identical to theirs: %v", res.Changed, bytes.Equal(res.Merged, theirs))
		}
		if !theirsOK {
			if !bytes.Equal(res.Merged, mine) {
				t.Fatalf("no usable theirs, but merged is not mine: %q", res.Merged)
			}
			return
		}
		if in.HasBase && equalDocs(baseTree, mineTree) && !bytes.Equal(res.Merged, theirs) {
			t.Fatalf("mine == base, but merged is not theirs byte for byte:\n%q\n%q", res.Merged, theirs)
		}
		if in.HasBase && equalDocs(baseTree, theirsTree) && !equalDocs(mergedTree, mineTree) {
			t.Fatalf("theirs == base, but merged is not mine: %q", res.Merged)
		}
		if equalDocs(mineTree, theirsTree) && !equalDocs(mergedTree, mineTree) {
			t.Fatalf("mine == theirs, but merged differs: %q", res.Merged)
		}

		// The model: the same rules on values decoded by encoding/json.
		var bv any = map[string]any{}
		if in.HasBase {
			var ok bool
			if bv, ok = oracleDecode(base); !ok {
				return
			}
		}
		mv, okm := oracleDecode(mine)
		tv, okt := oracleDecode(theirs)
		got, okg := oracleDecode(res.Merged)
		if !okm || !okt || !okg {
			return
		}
		want, conflicts, judged := modelMerge(bv, mv, tv)
		if !judged {
			return
		}
		if !oracleValuesEqual(got, want) {
			t.Fatalf("merged %s, the model says %s", res.Merged, mustMarshal(want))
		}
		if conflicts != len(res.Conflicts) {
			t.Fatalf("%d conflicts %q, the model says %d", len(res.Conflicts), conflictSummary(res.Conflicts), conflicts)
		}
	})
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzCommute checks that changes to disjoint top-level keys merge the same
// way whichever writer commits first. x and y are objects whose members are
// the changes (null: delete the key).
func FuzzCommute(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":2,"c":{"d":1}}`), []byte(`{"a":5}`), []byte(`{"c":{"e":[1]}}`))
	f.Add([]byte(`{"a":1,"b":2}`), []byte(`{"a":null,"z":1}`), []byte(`{"b":null,"y":{"\u0041":1}}`))
	f.Add([]byte("{\n  \"x\": 1.0,\n  \"é\": \"\\u00e9\"\n}\n"), []byte(`{"\u00e9":"e"}`), []byte(`{"x":1}`))
	f.Add([]byte(`{}`), []byte(`{"a.b":1}`), []byte(`{"a":{"b":1}}`))
	f.Add([]byte(`{"l":[1,2],"k":[{"id":1}]}`), []byte(`{"l":[1,2,3]}`), []byte(`{"k":[{"id":1},{"id":2}]}`))
	f.Fuzz(func(t *testing.T, base, x, y []byte) {
		if _, err := parse(base, fuzzMaxDepth); err != nil {
			return
		}
		if _, err := parse(x, fuzzMaxDepth); err != nil {
			return
		}
		if _, err := parse(y, fuzzMaxDepth); err != nil {
			return
		}
		bv, okb := oracleDecode(base)
		xv, okx := oracleDecode(x)
		yv, oky := oracleDecode(y)
		bm, okbm := bv.(map[string]any)
		xm, okxm := xv.(map[string]any)
		ym, okym := yv.(map[string]any)
		if !okb || !okx || !oky || !okbm || !okxm || !okym {
			return
		}
		for k := range xm {
			delete(ym, k) // disjoint
		}
		apply := func(doc, changes map[string]any) map[string]any {
			out := make(map[string]any, len(doc))
			for k, v := range doc {
				out[k] = v
			}
			for k, v := range changes {
				if v == nil {
					delete(out, k)
				} else {
					out[k] = v
				}
			}
			return out
		}
		mine1, mine2 := mustMarshal(apply(bm, xm)), mustMarshal(apply(bm, ym))
		both := apply(apply(bm, xm), ym)

		r1, err1 := Merge(Inputs{Base: base, HasBase: true, Mine: mine1, Theirs: mine2, HasTheirs: true}, Options{MaxDepth: fuzzMaxDepth + 1})
		r2, err2 := Merge(Inputs{Base: base, HasBase: true, Mine: mine2, Theirs: mine1, HasTheirs: true}, Options{MaxDepth: fuzzMaxDepth + 1})
		if err1 != nil || err2 != nil {
			t.Fatalf("errors: %v, %v", err1, err2)
		}
		if len(r1.Conflicts)+len(r2.Conflicts) > 0 {
			t.Fatalf("disjoint changes conflict: %q %q", conflictSummary(r1.Conflicts), conflictSummary(r2.Conflicts))
		}
		if !equalDocs(mustParse(t, string(r1.Merged)), mustParse(t, string(r2.Merged))) {
			t.Fatalf("merges differ by order:\n%s\n%s", r1.Merged, r2.Merged)
		}
		got, ok := oracleDecode(r1.Merged)
		if !ok || !oracleValuesEqual(got, both) {
			t.Fatalf("merged %s, want %s", r1.Merged, mustMarshal(both))
		}
	})
}

// FuzzEqual checks the parser against encoding/json.Valid and equal against
// encoding/json decoding.
func FuzzEqual(f *testing.F) {
	for _, s := range [][2]string{
		{`1`, `1.0`}, {`1e2`, `100`}, {`"\u00e9"`, `"é"`}, {`"a\/b"`, `"a/b"`}, {`{"a":[1,{}]}`, `{ "a" : [ 1e0 , { } ] }`},
		{`9007199254740993`, `9007199254740992`}, {`"\ud800"`, `"\ufffd"`}, {`{"a":1,"a":1}`, `{"a":1}`},
		{`[1,]`, `[1]`}, {`NaN`, `0`}, {"\xef\xbb\xbf1", "1"}, {`-0.0e-0`, `0`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ta := checkParseAgainstEncodingJSON(t, a)
		tb := checkParseAgainstEncodingJSON(t, b)
		if ta == nil || tb == nil {
			return
		}
		got := equalDocs(ta, tb)
		if got != equalDocs(tb, ta) || !equalDocs(ta, ta) {
			t.Fatalf("equal is not symmetric or not reflexive on %q, %q", a, b)
		}
		if want, ok := oracleEqual(a, b); ok && got != want {
			t.Fatalf("equal(%s, %s) = %v, encoding/json says %v", a, b, got, want)
		}
	})
}

// checkParseAgainstEncodingJSON returns the tree of data, or nil when the
// parser rejects it, in which case encoding/json must reject it too or the
// reason must be one that encoding/json does not check.
func checkParseAgainstEncodingJSON(t *testing.T, data []byte) *tree {
	tr, err := parse(data, fuzzMaxDepth)
	valid := json.Valid(data)
	if err == nil {
		if !valid {
			t.Fatalf("parser accepts %q, encoding/json does not", data)
		}
		return tr
	}
	if err.offset < 0 || err.offset > len(data) {
		t.Fatalf("error offset %d outside %q", err.offset, data)
	}
	if valid && !strings.HasPrefix(err.reason, "duplicate key") && err.reason != "invalid UTF-8 in string" &&
		!strings.HasPrefix(err.reason, "nesting deeper") {
		t.Fatalf("parser rejects %q (%s), encoding/json accepts it", data, err.reason)
	}
	return nil
}
