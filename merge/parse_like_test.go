package merge

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// sameTree reports how trees a and b (of the same data) differ: every member, root and decoded
// key alike; "" if not at all.
func sameTree(a, b *tree) string {
	if a.root != b.root {
		return fmt.Sprintf("root %+v, want %+v", a.root, b.root)
	}
	if len(a.members) != len(b.members) {
		return fmt.Sprintf("%d members, want %d", len(a.members), len(b.members))
	}
	for i := range a.members {
		ma, mb := &a.members[i], &b.members[i]
		if *ma != *mb {
			return fmt.Sprintf("member %d: %+v, want %+v", i, *ma, *mb)
		}
		if !bytes.Equal(a.key(ma), b.key(mb)) {
			return fmt.Sprintf("member %d: key %q, want %q", i, a.key(ma), b.key(mb))
		}
	}
	if len(a.escapedKeys) != len(b.escapedKeys) {
		return fmt.Sprintf("%d escaped keys, want %d", len(a.escapedKeys), len(b.escapedKeys))
	}
	return ""
}

// checkParseLike checks that data parses alike with and without like (taking every value of at
// least minSpan bytes it can): the same tree, or the same error.
func checkParseLike(t *testing.T, like, data []byte, maxDepth, minSpan int) {
	t.Helper()
	lt, lerr := parse(like, maxDepth)
	if lerr != nil {
		return
	}
	want, werr := parse(data, maxDepth)
	s := getScratch()
	got, gerr := parseLikeSpan(data, maxDepth, s, lt, minSpan)
	s.release()
	switch {
	case (werr == nil) != (gerr == nil):
		t.Fatalf("like %q, data %q: error %v, want %v", like, data, gerr, werr)
	case werr != nil:
		if *werr != *gerr {
			t.Fatalf("like %q, data %q: error %v, want %v", like, data, *gerr, *werr)
		}
	default:
		if d := sameTree(got, want); d != "" {
			t.Fatalf("like %q, data %q: %s", like, data, d)
		}
	}
}

// A document parsed taking values from a tree it repeats is the document parsed on its own, and
// an invalid one fails alike.
func TestParseLikeIsParse(t *testing.T) {
	big := strings.Repeat("x", 300)
	like := `{"a": 1, "s": "` + big + `", "o": {"p": {"q": [1, {"r": 2}], "\u00e9": "` + big + `"}, "e": {}, "t": 1}, "l": [{"a": 1}, "` + big + `"], "z": {"k": "v"}}`
	cases := []string{
		like,
		strings.Replace(like, `"a": 1`, `"a": 2`, 1),                             // a small change outside
		strings.Replace(like, `"t": 1`, `"t": 2`, 1),                             // inside the object taken
		strings.Replace(like, `"a": 1, `, ``, 1),                                 // members move
		strings.Replace(like, `"s"`, `"S"`, 1),                                   // another key
		strings.Replace(like, `{"a": 1, `, `{"a": 1, "n": null, `, 1),            // another member first
		strings.Replace(like, `"z": {"k": "v"}`, `"z": {"k": "v", "k": 1}`, 1),   // a duplicate after
		strings.Replace(like, `"z": {"k": "v"}}`, `"z": {"k": "v"}, "o": 1}`, 1), // a duplicate of a taken key
		strings.Replace(like, `"z": {"k": "v"}}`, `"z": {"k": "v"`, 1),           // truncated
		like + " x",
		"  " + like,
		`{"o": ` + like + `}`, // deeper
		`[` + like + `]`,
	}
	for _, data := range cases {
		for _, minSpan := range []int{1, 16, reuseSpan} {
			for _, depth := range []int{3, 4, 5, DefaultMaxDepth} {
				checkParseLike(t, []byte(like), []byte(data), depth, minSpan)
				checkParseLike(t, []byte(data), []byte(like), depth, minSpan)
			}
		}
	}
	// "b" is taken whole after an object that grew (or shrank): its members, and the index of the
	// members of the object within it, move.
	before := `{"a": {"x": 1}, "b": {"c": {"d": 1}, "e": "` + big + `"}}`
	after := strings.Replace(before, `{"x": 1}`, `{"x": 1, "y": 2}`, 1)
	for _, minSpan := range []int{1, reuseSpan} {
		checkParseLike(t, []byte(before), []byte(after), DefaultMaxDepth, minSpan)
		checkParseLike(t, []byte(after), []byte(before), DefaultMaxDepth, minSpan)
	}
}

// FuzzParseLike checks parseLike against parse on documents made from one another by a splice (a
// small change somewhere), taking every value it can.
func FuzzParseLike(f *testing.F) {
	f.Add([]byte(`{"a":1,"o":{"x":"abc","y":[1,{"z":2}]},"s":"\u00e9"}`), uint16(5), uint8(1), []byte(`2`))
	f.Add([]byte(`{"a":{"b":{"c":{}}},"d":"e"}`), uint16(12), uint8(0), []byte(`,"x":1`))
	f.Add([]byte(`{"\u0061":{"k":1},"a":{"k":1}}`), uint16(3), uint8(0), []byte(``))
	f.Fuzz(func(t *testing.T, like []byte, at uint16, cut uint8, insert []byte) {
		if len(like) > 1<<12 || len(insert) > 64 {
			return
		}
		i := min(int(at), len(like))
		j := min(i+int(cut), len(like))
		data := append(append(append([]byte(nil), like[:i]...), insert...), like[j:]...)
		for _, depth := range []int{2, fuzzMaxDepth} {
			checkParseLike(t, like, data, depth, 1)
		}
	})
}
