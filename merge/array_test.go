package merge

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// wrapL puts a JSON value under key "l" of an object.
func wrapL(v string) string { return `{"l":` + v + `}` }

func TestArraySequence(t *testing.T) {
	cases := []mergeCase{
		{name: "both append at the end: theirs first",
			base: `[1,2]`, mine: `[1,2,3]`, theirs: `[1,2,4]`, want: `[1,2,4,3]`},
		{name: "both insert at the start",
			base: `[1,2]`, mine: `["m",1,2]`, theirs: `["t",1,2]`, want: `["t","m",1,2]`},
		{name: "the same insertion on both sides is kept once",
			base: `[1]`, mine: `[1,2]`, theirs: `[1,2.0]`, want: `[1,2.0]`, changed: 0},
		{name: "insertions in common are kept once, the rest theirs first",
			base: `[1]`, mine: `[1,"a","c"]`, theirs: `[1,"a","b"]`, want: `[1,"a","b","c"]`},
		{name: "insertions around a common element",
			base: `[]`, mine: `["m1","x","m2"]`, theirs: `["t1","x","t2"]`, want: `["t1","m1","x","t2","m2"]`},
		{name: "delete vs untouched: deleted",
			base: `[1,2,3]`, mine: `[1,3]`, theirs: `[1,2,3,4]`, want: `[1,3,4]`},
		{name: "the same deletion on both sides",
			base: `[1,2,3]`, mine: `[1,3]`, theirs: `[1,3,4]`, want: `[1,3,4]`, changed: 0},
		{name: "changes to different elements both apply",
			base: `[1,2,3,4,5]`, mine: `[1,20,3,4,5]`, theirs: `[1,2,3,40,5]`, want: `[1,20,3,40,5]`},
		{name: "changes to adjacent elements both apply",
			base: `[1,2,3]`, mine: `[1,20,3]`, theirs: `[1,2,30]`, want: `[1,20,30]`},
		{name: "the same change on both sides",
			base: `[1,2,3]`, mine: `[1,5,3,9]`, theirs: `[1,5.0,3]`, want: `[1,5.0,3,9]`},
		{name: "the same element changed differently: writer wins",
			base: `[1,2,3]`, mine: `[1,5,3]`, theirs: `[1,6,3]`, want: `[1,5,3]`,
			conflicts: []string{"l/1: modified in both"}},
		{name: "the same element changed differently: reject",
			base: `[1,2,3]`, mine: `[1,5,3]`, theirs: `[1,6,3]`, reject: true, wantErr: ErrRejected,
			conflicts: []string{"l/1: modified in both"}},
		{name: "deleted in mine, changed in theirs",
			base: `[1,2,3]`, mine: `[1,3]`, theirs: `[1,9,3]`, want: `[1,3]`,
			conflicts: []string{"l/1: deleted in mine, modified in theirs"}},
		{name: "changed in mine, deleted in theirs",
			base: `[1,2,3]`, mine: `[1,9,3]`, theirs: `[1,3]`, want: `[1,9,3]`,
			conflicts: []string{"l/1: modified in mine, deleted in theirs"}},
		{name: "a run changed differently",
			base: `[1,2,3,4]`, mine: `[1,7,8,9,4]`, theirs: `[1,5,4]`, want: `[1,7,8,9,4]`,
			conflicts: []string{"l/1: elements modified in both"}},
		{name: "a run deleted in mine, changed in theirs",
			base: `[1,2,3,4]`, mine: `[1,4]`, theirs: `[1,2,"x",3,4]`, want: `[1,4]`,
			conflicts: []string{"l/1: elements deleted in mine, modified in theirs"}},
		{name: "an insertion at the end of a deleted run survives",
			base: `[1,2,3]`, mine: `[1,3]`, theirs: `[1,2,"x",3]`, want: `[1,"x",3]`},
		{name: "an insertion at the start of a deleted run survives",
			base: `[1,2,3]`, mine: `[1,3]`, theirs: `[1,"x",2,3]`, want: `[1,"x",3]`},
		{name: "mine inserts where theirs replaced the next element",
			base: `[1,2,3]`, mine: `[1,"m",2,3]`, theirs: `[1,20,3]`, want: `[1,"m",20,3]`},
		{name: "reorder on one side, append on the other",
			base: `[1,2,3]`, mine: `[3,1,2]`, theirs: `[1,2,3,4]`, want: `[3,1,2,4]`},
		{name: "reorder on one side, the other untouched: the reordered array",
			base: `{"l":[1,2,3],"n":0}`, mine: `{"l":[3,1,2],"n":0}`, theirs: `{"l":[1,2,3],"n":1}`,
			want: `{"l":[3,1,2],"n":1}`},
		{name: "empty base, both add",
			base: `[]`, mine: `[1]`, theirs: `[2]`, want: `[2,1]`},
		{name: "mine empties, theirs adds",
			base: `[1]`, mine: `[]`, theirs: `[1,2]`, want: `[2]`},
		{name: "both empty",
			base: `[1,2]`, mine: `[]`, theirs: `[]`, want: `[]`, changed: 0},
		{name: "theirs empty, mine adds",
			base: `[1]`, mine: `[1, 2]`, theirs: `[]`, want: `[2]`},
		{name: "duplicates: one deleted, one appended",
			base: `[1,1,1]`, mine: `[1,1]`, theirs: `[1,1,1,2]`, want: `[1,1,2]`},
		{name: "duplicates inserted on both sides",
			base: `[]`, mine: `[1,1]`, theirs: `[1]`, want: `[1,1]`},
		{name: "nested arrays merge by element",
			base: `[[1],[2]]`, mine: `[[1,3],[2]]`, theirs: `[[0,1],[2]]`, want: `[[0,1,3],[2]]`},
		{name: "objects without identity merge in place",
			base: `[{"a":1},{"b":1}]`, mine: `[{"a":2},{"b":1}]`, theirs: `[{"a":1},{"b":2}]`, want: `[{"a":2},{"b":2}]`},
		{name: "an object inside changed on both sides",
			base: `[{"a":1,"b":1}]`, mine: `[{"a":2,"b":1}]`, theirs: `[{"a":3,"b":1}]`, want: `[{"a":2,"b":1}]`,
			conflicts: []string{"l/0/a: modified in both"}},
		{name: "array replaced by a scalar in mine, changed in theirs",
			base: `[1]`, mine: `5`, theirs: `[1,2]`, want: `5`, conflicts: []string{"l: modified in both"}},
		{name: "numbers and strings compare as JSON values",
			base: `[1,"é"]`, mine: `[1.0,"\u00e9",3]`, theirs: `[1e0,"é",4]`, want: `[1e0,"é",4,3]`},
		{name: "added on both sides: a union",
			base: `{}`, mine: `{"l":[1,2]}`, theirs: `{"l":[2,3]}`, want: `{"l":[1,2,3]}`},
	}
	for _, tc := range cases {
		if !strings.HasPrefix(tc.base, "{") {
			tc.base, tc.mine, tc.theirs, tc.want = wrapL(tc.base), wrapL(tc.mine), wrapL(tc.theirs), wrapL(tc.want)
		}
		if tc.changed == 0 && tc.want != tc.theirs {
			tc.changed = -1
		}
		t.Run(tc.name, func(t *testing.T) { runMergeCase(t, tc) })
	}
}

func TestArrayKeyed(t *testing.T) {
	cases := []mergeCase{
		{name: "both add elements: theirs first",
			base: `[{"id":1}]`, mine: `[{"id":1},{"id":2}]`, theirs: `[{"id":1},{"id":3}]`,
			want: `[{"id":1},{"id":3},{"id":2}]`},
		{name: "different fields of one element",
			base: `[{"id":1,"a":0,"b":0}]`, mine: `[{"id":1,"a":1,"b":0}]`, theirs: `[{"id":1,"a":0,"b":1}]`,
			want: `[{"id":1,"a":1,"b":1}]`},
		{name: "one field changed differently",
			base: `[{"id":1,"a":0}]`, mine: `[{"id":1,"a":1}]`, theirs: `[{"id":1,"a":2},{"id":2}]`,
			want: `[{"id":1,"a":1},{"id":2}]`, conflicts: []string{"l/0/a: modified in both"}},
		{name: "theirs reordered, mine changed an element: theirs' order",
			base:   `[{"id":1,"v":0},{"id":2,"v":0}]`,
			mine:   `[{"id":1,"v":1},{"id":2,"v":0}]`,
			theirs: `[{"id":2,"v":0},{"id":1,"v":0}]`,
			want:   `[{"id":2,"v":0},{"id":1,"v":1}]`},
		{name: "mine reordered, theirs changed an element: theirs' order",
			base:   `[{"id":1,"v":0},{"id":2,"v":0}]`,
			mine:   `[{"id":2,"v":0},{"id":1,"v":0}]`,
			theirs: `[{"id":1,"v":0},{"id":2,"v":3}]`,
			want:   `[{"id":1,"v":0},{"id":2,"v":3}]`, changed: 0},
		{name: "deleted in mine, changed in theirs",
			base: `[{"id":1,"v":0},{"id":2}]`, mine: `[{"id":2}]`, theirs: `[{"id":1,"v":5},{"id":2}]`,
			want: `[{"id":2}]`, conflicts: []string{"l/0: deleted in mine, modified in theirs"}},
		{name: "changed in mine, deleted in theirs: kept where mine has it",
			base: `[{"id":1,"v":0},{"id":2}]`, mine: `[{"id":1,"v":5},{"id":2}]`, theirs: `[{"id":2}]`,
			want: `[{"id":1,"v":5},{"id":2}]`, conflicts: []string{"l/0: modified in mine, deleted in theirs"}},
		{name: "deleted in mine, untouched in theirs",
			base: `[{"id":1},{"id":2}]`, mine: `[{"id":2}]`, theirs: `[{"id":1},{"id":2},{"id":3}]`,
			want: `[{"id":2},{"id":3}]`},
		{name: "deleted on both sides",
			base: `[{"id":1},{"id":2}]`, mine: `[{"id":2},{"id":4}]`, theirs: `[{"id":2},{"id":3}]`,
			want: `[{"id":2},{"id":3},{"id":4}]`},
		{name: "insertions after their predecessor, theirs first",
			base:   `[{"id":1},{"id":9}]`,
			mine:   `[{"id":1},{"id":2},{"id":9},{"id":10}]`,
			theirs: `[{"id":0},{"id":1},{"id":3},{"id":9}]`,
			want:   `[{"id":0},{"id":1},{"id":3},{"id":2},{"id":9},{"id":10}]`},
		{name: "insertion whose predecessor theirs deleted goes after an earlier one",
			base:   `[{"id":1},{"id":2},{"id":3}]`,
			mine:   `[{"id":1},{"id":2},{"id":"new"},{"id":3}]`,
			theirs: `[{"id":1},{"id":3},{"id":4}]`,
			want:   `[{"id":1},{"id":"new"},{"id":3},{"id":4}]`},
		{name: "added on both sides with one id: a union",
			base: `[]`, mine: `[{"id":1,"a":1}]`, theirs: `[{"id":1,"b":2}]`, want: `[{"id":1,"b":2,"a":1}]`},
		{name: "ids compare as JSON values",
			base:   `[{"id":1,"v":0},{"id":"a"}]`,
			mine:   `[{"id":1.0,"v":1},{"id":"\u0061"},{"id":2}]`,
			theirs: `[{"id":"a"},{"id":1e0,"v":0}]`,
			want:   `[{"id":"a"},{"id":2},{"id":1e0,"v":1}]`},
		{name: "_id when not every element has id",
			base:   `[{"_id":"a","id":1},{"_id":"b"}]`,
			mine:   `[{"_id":"a","id":1,"x":1},{"_id":"b"}]`,
			theirs: `[{"_id":"b"},{"_id":"a","id":1}]`,
			want:   `[{"_id":"b"},{"_id":"a","id":1,"x":1}]`},
		{name: "uuid and key",
			base:   `[{"uuid":"u1","key":1},{"uuid":"u2","key":1}]`,
			mine:   `[{"uuid":"u1","key":1},{"uuid":"u2","key":1},{"uuid":"u3","key":1}]`,
			theirs: `[{"uuid":"u2","key":1},{"uuid":"u1","key":1}]`,
			want:   `[{"uuid":"u2","key":1},{"uuid":"u3","key":1},{"uuid":"u1","key":1}]`},
		{name: "nested arrays inside keyed elements",
			base:   `[{"id":1,"tags":["a"]},{"id":2,"tags":[]}]`,
			mine:   `[{"id":1,"tags":["a","b"]},{"id":2,"tags":[]}]`,
			theirs: `[{"id":2,"tags":[]},{"id":1,"tags":["a","c"]}]`,
			want:   `[{"id":2,"tags":[]},{"id":1,"tags":["a","c","b"]}]`},
		{name: "non-unique ids: a sequence",
			base:   `[{"id":1,"v":0},{"id":1,"v":1}]`,
			mine:   `[{"id":1,"v":0},{"id":1,"v":1},{"id":2}]`,
			theirs: `[{"id":1,"v":1}]`,
			want:   `[{"id":1,"v":1},{"id":2}]`},
		{name: "a key missing from one element: a sequence",
			base:   `[{"id":1},{"x":2}]`,
			mine:   `[{"id":1},{"x":2},{"id":3}]`,
			theirs: `[{"x":2},{"id":1}]`,
			want:   `[{"x":2},{"id":1},{"id":3}]`},
		{name: "an id that is not a scalar: a sequence",
			base:   `[{"id":[1]},{"id":[2]}]`,
			mine:   `[{"id":[1]},{"id":[2]},{"id":[3]}]`,
			theirs: `[{"id":[2]},{"id":[1]}]`,
			want:   `[{"id":[2]},{"id":[1]},{"id":[3]}]`},
		{name: "one element that is not an object: a sequence",
			base:   `[{"id":1},2]`,
			mine:   `[{"id":1,"v":1},2]`,
			theirs: `[{"id":1},2,3]`,
			want:   `[{"id":1,"v":1},2,3]`},
	}
	for _, tc := range cases {
		tc.base, tc.mine, tc.theirs, tc.want = wrapL(tc.base), wrapL(tc.mine), wrapL(tc.theirs), wrapL(tc.want)
		if tc.changed == 0 && tc.want != tc.theirs {
			tc.changed = -1
		}
		t.Run(tc.name, func(t *testing.T) { runMergeCase(t, tc) })
	}
}

func TestArrayLayout(t *testing.T) {
	// theirs appended 4 (so that both sides changed the array), laid out
	// like this.
	indented := "{\n  \"l\": [\n    1,\n    2,\n    3,\n    4\n  ]\n}\n"
	cases := []mergeCase{
		{name: "append on both sides",
			base: `{"l":[1,2,3]}`, mine: `{"l":[1,2,3,5]}`, theirs: indented,
			want: "{\n  \"l\": [\n    1,\n    2,\n    3,\n    4,\n    5\n  ]\n}\n"},
		{name: "delete the first",
			base: `{"l":[1,2,3]}`, mine: `{"l":[2,3]}`, theirs: indented,
			want: "{\n  \"l\": [\n    2,\n    3,\n    4\n  ]\n}\n"},
		{name: "delete the first two",
			base: `{"l":[1,2,3]}`, mine: `{"l":[3]}`, theirs: indented,
			want: "{\n  \"l\": [\n    3,\n    4\n  ]\n}\n"},
		{name: "delete the middle",
			base: `{"l":[1,2,3]}`, mine: `{"l":[1,3]}`, theirs: indented,
			want: "{\n  \"l\": [\n    1,\n    3,\n    4\n  ]\n}\n"},
		{name: "delete all of base",
			base: `{"l":[1,2,3]}`, mine: `{"l":[]}`, theirs: indented,
			want: "{\n  \"l\": [\n    4\n  ]\n}\n"},
		{name: "delete the last, theirs deleted the one after",
			base: `{"l":[1,2,3,4]}`, mine: `{"l":[1,2,4]}`, theirs: "{\n  \"l\": [\n    1,\n    2,\n    3\n  ]\n}\n",
			want: "{\n  \"l\": [\n    1,\n    2\n  ]\n}\n"},
		{name: "delete everything",
			base: `{"l":[1,2,3,4]}`, mine: `{"l":[4]}`, theirs: "{\n  \"l\": [\n    1,\n    2,\n    3\n  ]\n}\n",
			want: "{\n  \"l\": []\n}\n"},
		{name: "replace the middle",
			base: `{"l":[1,2,3]}`, mine: `{"l":[1,{"x": 1},3]}`, theirs: indented,
			want: "{\n  \"l\": [\n    1,\n    {\"x\": 1},\n    3,\n    4\n  ]\n}\n"},
		{name: "insert at the start and in the middle",
			base: `{"l":[1,2,3],"n":0}`, mine: `{"l":[0,1,1.5,2,3],"n":0}`, theirs: "{\"l\": [1, 2, 3, 4], \"n\": 1}",
			want: "{\"l\": [0, 1, 1.5, 2, 3, 4], \"n\": 1}"},
		{name: "one element of theirs, indented: its indentation",
			base: `{"l":[]}`, mine: `{"l":[2,3]}`, theirs: "{\"l\": [\n  1\n]}",
			want: "{\"l\": [\n  1,\n  2,\n  3\n]}"},
		{name: "one element of theirs, compact: mine's separator",
			base: `{"l":[]}`, mine: `{"l":[2, 3]}`, theirs: `{"l":[1]}`,
			want: `{"l":[1, 2, 3]}`},
		{name: "theirs empty: mine's layout",
			base: `{"l":[1]}`, mine: "{\"l\":[\n  1,\n  2,\n  3\n]}", theirs: `{"l":[],"n":0}`,
			want: "{\"l\":[\n  2,\n  3\n],\"n\":0}"},
		{name: "theirs replaced all, mine inserted",
			base: `{"l":[1,2]}`, mine: `{"l":[1,2,3]}`, theirs: "{\"l\": [ 7 ]}",
			want: "{\"l\": [ 7, 3 ]}"},
		{name: "CRLF and tabs",
			base: `{"l":[1,2]}`, mine: `{"l":[1,2,3]}`, theirs: "{\r\n\t\"l\": [\r\n\t\t1,\r\n\t\t2,\r\n\t\t4\r\n\t]\r\n}\r\n",
			want: "{\r\n\t\"l\": [\r\n\t\t1,\r\n\t\t2,\r\n\t\t4,\r\n\t\t3\r\n\t]\r\n}\r\n"},
		{name: "keyed: element edited in place, one deleted, one added after theirs' new one",
			base:   `{"l":[{"id":1,"v":0},{"id":2},{"id":3}]}`,
			mine:   `{"l":[{"id":1,"v":1},{"id":3},{"id":4}]}`,
			theirs: "{\n  \"l\": [\n    {\n      \"id\": 1,\n      \"v\": 0\n    },\n    {\n      \"id\": 2\n    },\n    {\n      \"id\": 3\n    },\n    {\n      \"id\": 5\n    }\n  ]\n}\n",
			want:   "{\n  \"l\": [\n    {\n      \"id\": 1,\n      \"v\": 1\n    },\n    {\n      \"id\": 3\n    },\n    {\n      \"id\": 5\n    },\n    {\"id\":4}\n  ]\n}\n"},
		{name: "theirs unchanged: mine's array, exactly",
			base: `{"l":[1,2,3],"n":0}`, mine: `{"l":[1, 3],"n":0}`, theirs: "{\"l\": [\n 1,\n 2,\n 3\n], \"n\": 1}",
			want: "{\"l\": [1, 3], \"n\": 1}"},
	}
	for _, tc := range cases {
		tc.changed = -1
		t.Run(tc.name, func(t *testing.T) { runMergeCase(t, tc) })
	}
}

// Conflicts in arrays name the index and the strategy, and say which
// steps of the path are indices.
func TestArrayConflictPath(t *testing.T) {
	res, err := Merge(inputs(`{"0":[{"a":[1,2]}]}`, `{"0":[{"a":[1,3]}]}`, `{"0":[{"a":[1,4]}]}`), Options{})
	if err != nil || len(res.Conflicts) != 1 {
		t.Fatalf("err %v, conflicts %v", err, conflictSummary(res.Conflicts))
	}
	c := res.Conflicts[0]
	if !slices.Equal(c.Path, []string{"0", "0", "a", "1"}) || !slices.Equal(c.ArrayIndex, []bool{false, true, false, true}) ||
		c.IsIndex(0) || !c.IsIndex(1) || c.IsIndex(2) || !c.IsIndex(3) || c.IsIndex(4) {
		t.Errorf("path %q, indices %v", c.Path, c.ArrayIndex)
	}
	if c.Pointer() != "/0/0/a/1" || c.Strategy != StrategySequence || string(c.Base) != "2" || string(c.Mine) != "3" || string(c.Theirs) != "4" {
		t.Errorf("conflict %+v", c)
	}
	// A run: values are arrays of the run's elements.
	res, _ = Merge(inputs(`{"l":[1,2,3,4]}`, `{"l":[1,7,8,9,4]}`, `{"l":[0,1,5,4]}`), Options{})
	if len(res.Conflicts) != 1 {
		t.Fatalf("conflicts %v", conflictSummary(res.Conflicts))
	}
	c = res.Conflicts[0]
	if c.Pointer() != "/l/2" || c.Strategy != StrategySequence || string(c.Base) != "[2,3]" || string(c.Mine) != "[7,8,9]" ||
		string(c.Theirs) != "[5]" || c.Reason != "elements modified in both" {
		t.Errorf("run conflict %+v", c)
	}
	// Keyed: the index in theirs, or in mine for an element theirs deleted.
	res, _ = Merge(inputs(`{"l":[{"id":1},{"id":2,"v":0},{"id":3,"v":0}]}`, `{"l":[{"id":1},{"id":2,"v":1}]}`,
		`{"l":[{"id":0},{"id":1},{"id":3,"v":1}]}`), Options{})
	if got := conflictSummary(res.Conflicts); !slices.Equal(got, []string{"l/1: modified in mine, deleted in theirs",
		"l/2: deleted in mine, modified in theirs"}) {
		t.Errorf("keyed conflicts %q", got)
	}
	for _, c := range res.Conflicts {
		if c.Strategy != StrategyKeyed {
			t.Errorf("strategy %q", c.Strategy)
		}
	}
	if (&Conflict{Path: []string{"a/b", "~c"}}).Pointer() != "/a~1b/~0c" || (&Conflict{}).Pointer() != "" {
		t.Error("Pointer does not escape")
	}
}

func TestArrayMergesCounted(t *testing.T) {
	res, err := Merge(inputs(`{"a":[1],"k":[{"id":1}],"o":{"x":1},"c":[1]}`,
		`{"a":[1,2],"k":[{"id":1},{"id":2}],"o":{"x":1,"y":1},"c":[5]}`,
		`{"a":[1,3],"k":[{"id":1},{"id":3}],"o":{"x":1,"z":1},"c":[6]}`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[Strategy]int{StrategySequence: 1, StrategyKeyed: 1}; !mapsEqual(res.Merges, want) {
		t.Errorf("merges %v, want %v (an array with a conflict inside is not counted)", res.Merges, want)
	}
	res, _ = Merge(inputs(`{"a":[1]}`, `{"a":[1,2]}`, `{"a":[1]}`), Options{})
	if res.Merges != nil {
		t.Errorf("a change on one side counted: %v", res.Merges)
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// bigArray is {"l":[...]} of n numbers from 0, with f applied to each
// index (f returns the text of the element, or "" to drop it), plus the
// extra elements at the end.
func bigArray(n int, f func(i int) string, extra ...string) []byte {
	var b strings.Builder
	b.WriteString(`{"l":[`)
	first := true
	add := func(s string) {
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString(s)
	}
	for i := range n {
		s := fmt.Sprint(i)
		if f != nil {
			s = f(i)
		}
		if s != "" {
			add(s)
		}
	}
	for _, e := range extra {
		add(e)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// A large array merges by element while the diff is small, and falls back
// to one value, reported as a conflict, when it is not.
func TestArraySizeBound(t *testing.T) {
	const n = 100_000
	base := bigArray(n, nil)
	oneChange := bigArray(n, func(i int) string {
		if i == n/2 {
			return "-1"
		}
		return fmt.Sprint(i)
	})
	appended := bigArray(n, nil, `"t"`)
	res, err := Merge(Inputs{Base: base, HasBase: true, Mine: oneChange, Theirs: appended, HasTheirs: true}, Options{})
	if want := bigArray(n, func(i int) string {
		if i == n/2 {
			return "-1"
		}
		return fmt.Sprint(i)
	}, `"t"`); err != nil || len(res.Conflicts) != 0 || string(res.Merged) != string(want) {
		t.Fatalf("one change vs append: err %v, conflicts %v", err, conflictSummary(res.Conflicts))
	}

	scattered := bigArray(n, func(i int) string {
		if i%50 == 0 {
			return fmt.Sprint(-i)
		}
		return fmt.Sprint(i)
	})
	res, err = Merge(Inputs{Base: base, HasBase: true, Mine: scattered, Theirs: appended, HasTheirs: true}, Options{})
	if err != nil || len(res.Conflicts) != 1 || string(res.Merged) != string(scattered) {
		t.Fatalf("scattered changes: err %v, conflicts %v", err, conflictSummary(res.Conflicts))
	}
	c := res.Conflicts[0]
	if c.Strategy != StrategyAtomic || !strings.Contains(c.Reason, "too large to merge by element") || c.Pointer() != "/l" {
		t.Errorf("fallback conflict: %s %q %q", c.Pointer(), c.Strategy, c.Reason)
	}
	_, err = Merge(Inputs{Base: base, HasBase: true, Mine: scattered, Theirs: appended, HasTheirs: true}, Options{Policy: Reject})
	if !errors.Is(err, ErrRejected) {
		t.Errorf("fallback with reject: %v", err)
	}

	// A small cost bound makes even few changes fall back; a negative one
	// merges every array as one value, as before arrays merged by element.
	small := Inputs{Base: []byte(`{"l":[1,2,3,4]}`), HasBase: true, Mine: []byte(`{"l":[1,5,3,4]}`),
		Theirs: []byte(`{"l":[1,2,3,6]}`), HasTheirs: true}
	res, _ = Merge(small, Options{MaxArrayCost: 1})
	if got := conflictSummary(res.Conflicts); len(got) != 1 || !strings.Contains(got[0], "too large") {
		t.Errorf("cost 1: %q", got)
	}
	res, _ = Merge(small, Options{MaxArrayCost: -1})
	if got := conflictSummary(res.Conflicts); !slices.Equal(got, []string{"l: modified in both"}) || string(res.Merged) != `{"l":[1,5,3,4]}` {
		t.Errorf("cost -1: %q %s", got, res.Merged)
	}
	res, _ = Merge(small, Options{})
	if len(res.Conflicts) != 0 || string(res.Merged) != `{"l":[1,5,3,6]}` {
		t.Errorf("default cost: %v %s", conflictSummary(res.Conflicts), res.Merged)
	}
}

// Top-level arrays stay one value (DESIGN.md §2).
func TestTopLevelArrayIsOneValue(t *testing.T) {
	runMergeCase(t, mergeCase{base: `[1,2]`, mine: `[1,2,3]`, theirs: `[0,1,2]`, want: `[1,2,3]`, changed: 1,
		conflicts: []string{": modified in both"}})
}
