package merge

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// absent marks an input that does not exist (HasBase/HasTheirs false).
const absent = "\x00absent"

type mergeCase struct {
	name                 string
	base, mine, theirs   string
	want                 string   // exact bytes of Merged
	changed              int      // -1: do not check
	conflicts            []string // "path/joined/by/slash: reason" of each conflict, in order
	reject               bool
	wantErr              error // ErrRejected, or nil
	wantInputError       string
	wantInputErrorReason string
}

func inputs(base, mine, theirs string) Inputs {
	in := Inputs{Mine: []byte(mine)}
	if base != absent {
		in.Base, in.HasBase = []byte(base), true
	}
	if theirs != absent {
		in.Theirs, in.HasTheirs = []byte(theirs), true
	}
	return in
}

func conflictSummary(cs []Conflict) []string {
	var out []string
	for _, c := range cs {
		out = append(out, strings.Join(c.Path, "/")+": "+c.Reason)
	}
	return out
}

func runMergeCase(t *testing.T, tc mergeCase) Result {
	t.Helper()
	opts := Options{}
	if tc.reject {
		opts.Policy = Reject
	}
	res, err := Merge(inputs(tc.base, tc.mine, tc.theirs), opts)
	if tc.wantInputError != "" {
		var ie *InputError
		if !errors.As(err, &ie) {
			t.Fatalf("err = %v, want *InputError for %s", err, tc.wantInputError)
		}
		if ie.Input != tc.wantInputError || !strings.Contains(ie.Reason, tc.wantInputErrorReason) {
			t.Fatalf("err = %+v, want input %s, reason containing %q", ie, tc.wantInputError, tc.wantInputErrorReason)
		}
		return res
	}
	if !errors.Is(err, tc.wantErr) || (err != nil && tc.wantErr == nil) {
		t.Fatalf("err = %v, want %v", err, tc.wantErr)
	}
	if got := conflictSummary(res.Conflicts); !slices.Equal(got, tc.conflicts) {
		t.Errorf("conflicts = %q, want %q", got, tc.conflicts)
	}
	if tc.wantErr != nil {
		if res.Merged != nil {
			t.Errorf("rejected merge has Merged = %q", res.Merged)
		}
		return res
	}
	if string(res.Merged) != tc.want {
		t.Errorf("merged =\n%s\nwant\n%s", res.Merged, tc.want)
	}
	if tc.changed >= 0 && res.Changed != tc.changed {
		t.Errorf("changed = %d, want %d", res.Changed, tc.changed)
	}
	if (res.Changed == 0) != (tc.theirs != absent && string(res.Merged) == tc.theirs) {
		t.Errorf("changed = %d but merged identical to theirs is %v", res.Changed, string(res.Merged) == tc.theirs)
	}
	return res
}

func TestMergeRules(t *testing.T) {
	cases := []mergeCase{
		{name: "mine is base: theirs byte for byte",
			base: `{"a":1}`, mine: `{"a":1}`, theirs: "{ \"a\" : 2 ,\"b\":[ 1 ]}\n",
			want: "{ \"a\" : 2 ,\"b\":[ 1 ]}\n", changed: 0},
		{name: "mine JSON-equal to base: reordered, reformatted, other number and string spellings",
			base:   `{"a":1,"b":"é","c":[100,{"x":null}],"d":"a/b"}`,
			mine:   "{\n \"d\": \"a\\/b\", \"c\": [1e2, {\"x\": null}],\n \"b\": \"\\u00e9\", \"a\": 1.0\n}",
			theirs: `{"a":2,"b":"x","c":[],"d":"y"}`, want: `{"a":2,"b":"x","c":[],"d":"y"}`, changed: 0},
		{name: "disjoint changes are both kept",
			base: `{"a":1,"b":1}`, mine: `{"a":2,"b":1}`, theirs: `{"a":1,"b":3}`,
			want: `{"a":2,"b":3}`, changed: 1},
		{name: "many changes in one pass",
			base: `{"a":1,"b":1,"c":1,"d":{"e":1,"f":1}}`, mine: `{"a":2,"b":1,"d":{"e":2,"f":1,"g":3},"h":4}`,
			theirs: `{"d":{"f":9,"e":1},"c":1,"b":7,"a":1}`,
			want:   `{"d":{"f":9,"e":2,"g":3},"b":7,"a":2,"h":4}`, changed: 5},
		{name: "same key modified in both: writer wins",
			base: `{"a":1,"b":1}`, mine: `{"a":2,"b":1}`, theirs: `{"a":3,"b":1}`,
			want: `{"a":2,"b":1}`, changed: 1, conflicts: []string{"a: modified in both"}},
		{name: "same key modified in both: reject",
			base: `{"a":1,"b":1}`, mine: `{"a":2,"b":1}`, theirs: `{"a":3,"b":1}`, reject: true,
			wantErr: ErrRejected, conflicts: []string{"a: modified in both"}},
		{name: "reject without conflicts merges",
			base: `{"a":1,"b":1}`, mine: `{"a":2,"b":1}`, theirs: `{"a":1,"b":3}`, reject: true,
			want: `{"a":2,"b":3}`, changed: 1},
		{name: "same change on both sides is no conflict",
			base: `{"a":1}`, mine: `{"a":2}`, theirs: `{"a":2.0}`, want: `{"a":2.0}`, changed: 0},
		{name: "mine deletes, theirs modified",
			base: `{"a":1,"b":1}`, mine: `{"b":1}`, theirs: `{"a":5,"b":1}`,
			want: `{"b":1}`, changed: 1, conflicts: []string{"a: deleted in mine, modified in theirs"}},
		{name: "mine modifies, theirs deleted",
			base: `{"a":1,"b":1}`, mine: `{"a":2,"b":1}`, theirs: `{"b":1}`,
			want: `{"b":1,"a":2}`, changed: 1, conflicts: []string{"a: modified in mine, deleted in theirs"}},
		{name: "deleted on both sides",
			base: `{"a":1,"b":1}`, mine: `{"b":1}`, theirs: `{"b":2}`, want: `{"b":2}`, changed: 0},
		{name: "mine deletes an unchanged key",
			base: `{"a":1,"b":1}`, mine: `{"b":1}`, theirs: `{"a":1.0,"b":2}`, want: `{"b":2}`, changed: 1},
		{name: "object replaced by scalar in theirs, edited inside in mine",
			base: `{"o":{"x":1}}`, mine: `{"o":{"x":2}}`, theirs: `{"o":7}`,
			want: `{"o":{"x":2}}`, changed: 1, conflicts: []string{"o: modified in both"}},
		{name: "object replaced by scalar in mine, edited inside in theirs",
			base: `{"o":{"x":1}}`, mine: `{"o":7}`, theirs: `{"o":{"x":2}}`,
			want: `{"o":7}`, changed: 1, conflicts: []string{"o: modified in both"}},
		{name: "object replaced by scalar in mine, untouched in theirs",
			base: `{"o":{"x":1}}`, mine: `{"o":[7]}`, theirs: `{"o":{ "x" : 1 },"p":1}`,
			want: `{"o":[7],"p":1}`, changed: 1},
		{name: "nested objects merge recursively",
			base: `{"o":{"p":{"x":1,"y":1}}}`, mine: `{"o":{"p":{"x":2,"y":1}}}`, theirs: `{"o":{"p":{"x":1,"y":3},"q":1}}`,
			want: `{"o":{"p":{"x":2,"y":3},"q":1}}`, changed: 1},
		{name: "nested conflict has the full path",
			base: `{"o":{"p":{"x":1}}}`, mine: `{"o":{"p":{"x":2}}}`, theirs: `{"o":{"p":{"x":3}}}`,
			want: `{"o":{"p":{"x":2}}}`, changed: 1, conflicts: []string{"o/p/x: modified in both"}},
		{name: "array changed in mine only: mine's array",
			base: `{"l":[1,2],"n":0}`, mine: `{"l":[1,2,3],"n":0}`, theirs: `{"l":[1,2],"n":1}`,
			want: `{"l":[1,2,3],"n":1}`, changed: 1},
		{name: "arrays changed on both sides merge by element",
			base: `{"l":[1,2]}`, mine: `{"l":[1,2,3]}`, theirs: `{"l":[0,1,2]}`,
			want: `{"l":[0,1,2,3]}`, changed: 1},
		{name: "objects inside arrays merge in place",
			base: `{"l":[{"a":1,"b":1}]}`, mine: `{"l":[{"a":2,"b":1}]}`, theirs: `{"l":[{"a":1,"b":2}]}`,
			want: `{"l":[{"a":2,"b":2}]}`, changed: 1},
		{name: "created parents",
			base: `{"a":1}`, mine: `{"a":1,"p":{"q":{"r":1}}}`, theirs: `{"a":1,"b":2}`,
			want: `{"a":1,"b":2,"p":{"q":{"r":1}}}`, changed: 1},
		{name: "no base, no record: mine",
			base: absent, mine: "{\"a\": 1}\n", theirs: absent, want: "{\"a\": 1}\n", changed: 1},
		{name: "no base, record exists: union",
			base: absent, mine: `{"a":1,"c":{"x":1}}`, theirs: `{"b":2,"c":{"y":2}}`,
			want: `{"b":2,"c":{"y":2,"x":1},"a":1}`, changed: 2},
		{name: "no base, both add the same key differently",
			base: absent, mine: `{"a":1}`, theirs: `{"a":2}`,
			want: `{"a":1}`, changed: 1, conflicts: []string{"a: added in both"}},
		{name: "no base, both add the same value",
			base: absent, mine: `{"a":1}`, theirs: `{"a":1.00}`, want: `{"a":1.00}`, changed: 0},
		{name: "no base, mine is {}",
			base: absent, mine: `{}`, theirs: `{"a":1}`, want: `{"a":1}`, changed: 0},
		{name: "no base, top level not objects",
			base: absent, mine: `[1]`, theirs: `[2]`, want: `[1]`, changed: 1, conflicts: []string{": added in both"}},
		{name: "key added on both sides as objects merges as a union",
			base: `{}`, mine: `{"o":{"a":1,"c":1}}`, theirs: `{"o":{"b":2,"c":1}}`,
			want: `{"o":{"b":2,"c":1,"a":1}}`, changed: 1},
		{name: "key added on both sides, one an empty object",
			base: `{}`, mine: `{"o":{}}`, theirs: `{"o":0}`,
			want: `{"o":{}}`, changed: 1, conflicts: []string{"o: added in both"}},
		{name: "key added on both sides, theirs an empty object",
			base: `{}`, mine: `{"o":1}`, theirs: `{"o":{}}`,
			want: `{"o":1}`, changed: 1, conflicts: []string{"o: added in both"}},
		{name: "record deleted, mine changed",
			base: `{"a":1}`, mine: `{"a":2}`, theirs: absent, want: `{"a":2}`, changed: 1,
			conflicts: []string{": modified in mine, record deleted"}},
		{name: "record deleted, mine unchanged",
			base: `{"a":1}`, mine: `{"a":1}`, theirs: absent, want: `{"a":1}`, changed: 1},
		{name: "top level scalar changed",
			base: `1`, mine: `2`, theirs: "1.0\n", want: "2\n", changed: 1},
		{name: "top level array unchanged in mine",
			base: `[1]`, mine: `[1]`, theirs: `[2]`, want: `[2]`, changed: 0},
		{name: "top level arrays changed on both sides",
			base: `[1]`, mine: `[3]`, theirs: `[2]`, want: `[3]`, changed: 1, conflicts: []string{": modified in both"}},
		{name: "top level changes from object to array",
			base: `{"a":1}`, mine: `[1]`, theirs: `{"a":1,"b":2}`, want: `[1]`, changed: 1,
			conflicts: []string{": modified in both"}},
		{name: "big integers compare exactly",
			base: `{"n":9007199254740993}`, mine: `{"n":9007199254740992}`, theirs: `{"n":9007199254740993,"x":1}`,
			want: `{"n":9007199254740992,"x":1}`, changed: 1},
		{name: "invalid theirs: mine whole, whole-document conflict",
			base: `{"a":1}`, mine: `{"a":2}`, theirs: `{"a":1`, want: `{"a":2}`, changed: 1,
			conflicts: []string{": theirs invalid: unexpected end of input, expected ',' or '}' in object"}},
		{name: "theirs with duplicate keys: mine whole",
			base: `{"a":1}`, mine: `{"a":1}`, theirs: `{"a":1,"a":2}`, want: `{"a":1}`, changed: 1,
			conflicts: []string{`: theirs invalid: duplicate key "a"`}},
		{name: "empty theirs (a torn record): mine whole",
			base: `{"a":1}`, mine: `{"a":1}`, theirs: ``, want: `{"a":1}`, changed: 1,
			conflicts: []string{": theirs invalid: empty document"}},
		{name: "invalid theirs with reject",
			base: `{"a":1}`, mine: `{"a":2}`, theirs: `nope`, reject: true, wantErr: ErrRejected,
			conflicts: []string{": theirs invalid: invalid literal, expected null"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runMergeCase(t, tc) })
	}
}

func TestMergeLayout(t *testing.T) {
	indented := "{\n  \"a\": 1,\n  \"b\": {\n    \"x\": 1\n  },\n  \"c\": 3\n}\n"
	cases := []mergeCase{
		{name: "set keeps everything else",
			base: `{"a":1,"b":{"x":1},"c":3}`, mine: `{"a":1,"b":{"x":2},"c":3}`, theirs: indented,
			want: "{\n  \"a\": 1,\n  \"b\": {\n    \"x\": 2\n  },\n  \"c\": 3\n}\n"},
		{name: "added key indented like its neighbours, trailing newline kept",
			base: `{"a":1,"b":{"x":1},"c":3}`, mine: `{"a":1,"b":{"x":1,"y":[1, 2]},"c":3,"d":"new"}`, theirs: indented,
			want: "{\n  \"a\": 1,\n  \"b\": {\n    \"x\": 1,\n    \"y\": [1, 2]\n  },\n  \"c\": 3,\n  \"d\": \"new\"\n}\n"},
		{name: "delete first",
			base: `{"a":1,"b":{"x":1},"c":3}`, mine: `{"b":{"x":1},"c":3}`, theirs: indented,
			want: "{\n  \"b\": {\n    \"x\": 1\n  },\n  \"c\": 3\n}\n"},
		{name: "delete middle",
			base: `{"a":1,"b":{"x":1},"c":3}`, mine: `{"a":1,"c":3}`, theirs: indented,
			want: "{\n  \"a\": 1,\n  \"c\": 3\n}\n"},
		{name: "delete last",
			base: `{"a":1,"b":{"x":1},"c":3}`, mine: `{"a":1,"b":{"x":1}}`, theirs: indented,
			want: "{\n  \"a\": 1,\n  \"b\": {\n    \"x\": 1\n  }\n}\n"},
		{name: "delete first two and last, keep one",
			base: `{"a":1,"b":{"x":1},"c":3,"d":4}`, mine: `{"c":3}`, theirs: "{\n  \"a\": 1,\n  \"b\": {\n    \"x\": 1\n  },\n  \"c\": 3,\n  \"d\": 4\n}\n",
			want: "{\n  \"c\": 3\n}\n"},
		{name: "delete last and add",
			base: `{"a":1,"c":3}`, mine: `{"a":1,"e":5}`, theirs: "{\"a\": 1, \"c\": 3}",
			want: "{\"a\": 1, \"e\": 5}"},
		{name: "delete all",
			base: `{"a":1,"b":{"x":1},"c":3}`, mine: `{}`, theirs: indented, want: "{}\n"},
		{name: "delete all and add: mine's layout",
			base: `{"a":1}`, mine: "{\n    \"z\": 26\n}", theirs: "{\n  \"a\": 1\n}\n", want: "{\n    \"z\": 26\n}\n"},
		{name: "add to empty object: mine's layout",
			base: `{"o":{}}`, mine: "{\"o\": { \"k\": 1, \"l\": 2 }}", theirs: "{\"o\":{},\"p\":1}\n", want: "{\"o\":{ \"k\": 1, \"l\": 2 },\"p\":1}\n"},
		{name: "escapes and number spellings in theirs survive",
			base: `{"a":1,"s":"é"}`, mine: `{"a":2,"s":"é"}`, theirs: "{\"s\":\"\\u00e9\",\"n\":1.50e0,\"a\":1}",
			want: "{\"s\":\"\\u00e9\",\"n\":1.50e0,\"a\":2}"},
		{name: "added keys keep mine's order and spelling",
			base: `{}`, mine: `{"z":1,"\u0061":2,"m":3}`, theirs: `{"x":0}`,
			want: `{"x":0,"z":1,"\u0061":2,"m":3}`},
		{name: "CRLF and tabs",
			base: `{"a":1,"b":2}`, mine: `{"a":1,"b":2,"c":3}`, theirs: "{\r\n\t\"a\" :\t1,\r\n\t\"b\" :\t2\r\n}\r\n",
			want: "{\r\n\t\"a\" :\t1,\r\n\t\"b\" :\t2,\r\n\t\"c\" :\t3\r\n}\r\n"},
	}
	for _, tc := range cases {
		tc.changed = -1
		t.Run(tc.name, func(t *testing.T) { runMergeCase(t, tc) })
	}
}

// trickyKeys are keys that gjson/sjson paths give meaning to, or that need
// care when spliced. Each is given as it is written in the file (JSON string
// body) and as its decoded value.
var trickyKeys = []struct{ written, decoded string }{
	{`a.b`, "a.b"}, {`*`, "*"}, {`?x`, "?x"}, {`1`, "1"}, {`-1`, "-1"}, {``, ""},
	{`@this`, "@this"}, {`#`, "#"}, {`:x`, ":x"}, {`..a`, "..a"}, {`!true`, "!true"},
	{`[x]`, "[x]"}, {`{y}`, "{y}"}, {`a\\b`, `a\b`}, {`x|y`, "x|y"}, {`\"q`, `"q`},
	{`\"`, `"`}, {`a\nb`, "a\nb"}, {`é`, "é"}, {`\u00e9`, "é"}, {`日本`, "日本"},
	{`\ud83d\ude00`, "\U0001F600"}, {`\u0041`, "A"}, {`a\/b`, "a/b"}, {`0`, "0"},
	{`a b`, "a b"}, {`\t`, "\t"}, {`\u0000`, "\x00"},
}

func TestTrickyKeys(t *testing.T) {
	for _, k := range trickyKeys {
		w := `"` + k.written + `"`
		d := `"` + plainSpelling(k.decoded) + `"`
		cases := []mergeCase{
			{name: "set",
				base: `{` + w + `:1,"o":0}`, mine: `{` + w + `:2,"o":0}`, theirs: `{"o":1,` + d + `:1}`,
				want: `{"o":1,` + d + `:2}`, changed: 1},
			{name: "add",
				base: `{"o":0}`, mine: `{"o":0,` + w + `:1}`, theirs: `{"o":1}`,
				want: `{"o":1,` + w + `:1}`, changed: 1},
			{name: "delete",
				base: `{` + w + `:1,"o":0}`, mine: `{"o":0}`, theirs: `{` + d + `:1.0,"o":1}`,
				want: `{"o":1}`, changed: 1},
			{name: "nested",
				base: `{` + w + `:{` + w + `:1,"o":0}}`, mine: `{` + w + `:{` + w + `:2,"o":0}}`,
				theirs: `{` + d + `:{"o":1,` + d + `:1}}`,
				want:   `{` + d + `:{"o":1,` + d + `:2}}`, changed: 1},
			{name: "created parents",
				base: `{"o":0}`, mine: `{"o":0,` + w + `:{` + w + `:{"x":1}}}`, theirs: `{"o":1}`,
				want: `{"o":1,` + w + `:{` + w + `:{"x":1}}}`, changed: 1},
			{name: "conflict path",
				base: `{` + w + `:{"x":1}}`, mine: `{` + w + `:{"x":2}}`, theirs: `{` + d + `:{"x":3}}`,
				want: `{` + d + `:{"x":2}}`, changed: 1, conflicts: []string{k.decoded + "/x: modified in both"}},
			{name: "beside similar keys",
				base: `{"a":1,` + w + `:1,"b":1}`, mine: `{"a":1,` + w + `:2,"b":1}`, theirs: `{"b":1,"a":1,` + d + `:1}`,
				want: `{"b":1,"a":1,` + d + `:2}`, changed: 1},
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%s", k.written, tc.name), func(t *testing.T) {
				res := runMergeCase(t, tc)
				if eq, ok := oracleEqual(res.Merged, []byte(tc.want)); ok && !eq {
					t.Errorf("encoding/json disagrees: %s vs %s", res.Merged, tc.want)
				}
			})
		}
	}
}

// plainSpelling writes s as a JSON string body with as few escapes as
// possible, so that theirs spells a key differently from mine.
func plainSpelling(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestInvalidMine(t *testing.T) {
	cases := []struct{ mine, reason string }{
		{``, "empty document"},
		{" \n", "document is only whitespace"},
		{`{"a":1`, "unexpected end of input"},
		{`{"a":1}x`, "extra data after the document"},
		{`{"a":1}{"a":1}`, "extra data after the document"},
		{`{"a":1} // note`, "extra data after the document"},
		{`{"a":NaN}`, "unexpected 'N', expected a value"},
		{`{"a":-Infinity}`, "unexpected 'I', expected a digit"},
		{`{"a":1,}`, "trailing comma in object"},
		{`{"a":[1,]}`, "trailing comma in array"},
		{`{"a":1,"\u0061":2}`, `duplicate key "a"`},
		{`{"o":{"x":1,"y":2,"x":3}}`, `duplicate key "x"`},
		{"{\"a\":\"x\ny\"}", "control character"},
		{`{"a":"\x"}`, "invalid escape"},
		{`{"a":"\u12g4"}`, "invalid \\u escape"},
		{"{\"a\":\"\xff\"}", "invalid UTF-8"},
		{"{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8"}, // a surrogate encoded in UTF-8
		{"\xef\xbb\xbf{}", "byte order mark"},
		{`{"a":01}`, "expected ',' or '}' in object"},
		{`{"a":1.}`, "digit after the decimal point"},
		{`{"a":1e}`, "digit in the exponent"},
		{`{a:1}`, "expected a string key"},
		{`{"a" 1}`, "expected ':' after object key"},
		{`{'a':1}`, "expected a string key"},
		{`{"a":tru}`, "invalid literal, expected true"},
		{`{"a":{"b":{"c":{}}}}`, "nesting deeper than max depth 3"},
	}
	for _, tc := range cases {
		t.Run(tc.mine, func(t *testing.T) {
			_, err := Merge(inputs(`{}`, tc.mine, `{}`), Options{MaxDepth: 3})
			var ie *InputError
			if !errors.As(err, &ie) || ie.Input != "mine" {
				t.Fatalf("err = %v, want an *InputError for mine", err)
			}
			if !strings.Contains(ie.Reason, tc.reason) {
				t.Errorf("reason = %q, want it to contain %q", ie.Reason, tc.reason)
			}
			if ie.Offset < 0 || ie.Offset > len(tc.mine) {
				t.Errorf("offset %d outside the input", ie.Offset)
			}
		})
	}
}

func TestInputErrorOffsetAndMessage(t *testing.T) {
	_, err := Merge(inputs(`{}`, `{"a": [1, 2,]}`, `{}`), Options{})
	var ie *InputError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v", err)
	}
	if ie.Offset != 12 {
		t.Errorf("offset = %d, want 12 (the ']' after the trailing comma)", ie.Offset)
	}
	if got, want := err.Error(), "invalid mine document: trailing comma in array (at byte 12)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestInvalidBase(t *testing.T) {
	for _, base := range []string{``, `{"a":1,}`, `{"a":1,"a":1}`, `[[[[1]]]]`} {
		_, err := Merge(inputs(base, `{"a":1}`, `{"a":1}`), Options{MaxDepth: 3})
		var ie *InputError
		if !errors.As(err, &ie) || ie.Input != "base" {
			t.Errorf("base %q: err = %v, want an *InputError for base", base, err)
		}
		// theirs identical to a damaged base is not taken as validated
		_, err = Merge(inputs(base, `{"a":1}`, base), Options{MaxDepth: 3})
		if !errors.As(err, &ie) || ie.Input != "base" {
			t.Errorf("base = theirs = %q: err = %v, want an *InputError for base", base, err)
		}
	}
}

// theirs is parsed once when it is base or mine byte for byte; the merge
// comes out as if parsed on its own.
func TestTheirsIdenticalToAnInput(t *testing.T) {
	base := "{\n  \"a\": 1, \"o\": {\"x\": 1, \"y\": [1]}, \"d\": 0\n}\n"
	mine := `{"a":2,"o":{"x":1,"y":[1,2],"z":true},"n":null}`
	res, err := Merge(inputs(base, mine, base), Options{})
	if want := "{\n  \"a\": 2, \"o\": {\"x\": 1, \"y\": [1,2], \"z\": true}, \"n\": null\n}\n"; err != nil ||
		string(res.Merged) != want || res.Changed != 5 || len(res.Conflicts) != 0 {
		t.Errorf("theirs = base: %v, changed %d, %q\nwant %q", err, res.Changed, res.Merged, want)
	}
	res, err = Merge(inputs(base, mine, mine), Options{})
	if err != nil || string(res.Merged) != mine || res.Changed != 0 || len(res.Conflicts) != 0 {
		t.Errorf("theirs = mine: %v, changed %d, %q", err, res.Changed, res.Merged)
	}
}

func TestLimits(t *testing.T) {
	depth := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	if _, err := Merge(inputs(absent, depth(5), absent), Options{MaxDepth: 5}); err != nil {
		t.Errorf("depth 5 with MaxDepth 5: %v", err)
	}
	if _, err := Merge(inputs(absent, depth(6), absent), Options{MaxDepth: 5}); err == nil {
		t.Error("depth 6 with MaxDepth 5 accepted")
	}
	if _, err := Merge(inputs(absent, depth(DefaultMaxDepth), absent), Options{}); err != nil {
		t.Errorf("depth %d with the default limit: %v", DefaultMaxDepth, err)
	}
	if _, err := Merge(inputs(absent, depth(DefaultMaxDepth+1), absent), Options{}); err == nil {
		t.Error("depth past the default limit accepted")
	}
	// Far past any limit, and unbalanced: must fail cleanly, not overflow the stack.
	deep := strings.Repeat(`{"a":[`, 1<<20)
	if _, err := Merge(inputs(absent, deep, absent), Options{MaxSize: len(deep)}); err == nil {
		t.Error("deep document accepted")
	}
	if res, err := Merge(inputs(`{}`, `{}`, deep), Options{MaxSize: len(deep)}); err != nil || len(res.Conflicts) != 1 {
		t.Errorf("deep theirs: err = %v, conflicts = %v", err, conflictSummary(res.Conflicts))
	}

	doc := `{"a":"` + strings.Repeat("x", 100) + `"}`
	if _, err := Merge(inputs(absent, doc, absent), Options{MaxSize: len(doc)}); err != nil {
		t.Errorf("document of exactly MaxSize: %v", err)
	}
	_, err := Merge(inputs(absent, doc, absent), Options{MaxSize: len(doc) - 1})
	var ie *InputError
	if !errors.As(err, &ie) || ie.Input != "mine" || !strings.Contains(ie.Reason, "max size") {
		t.Errorf("document past MaxSize: err = %v", err)
	}

	for _, opts := range []Options{{MaxSize: -1}, {MaxDepth: -1}, {MaxDepth: maxDepthLimit + 1}, {Policy: 7}} {
		if _, err := Merge(inputs(absent, `{}`, absent), opts); err == nil {
			t.Errorf("options %+v accepted", opts)
		}
	}
}

func TestPolicy(t *testing.T) {
	for _, p := range []Policy{WriterWins, Reject} {
		got, err := ParsePolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParsePolicy("theirs-wins"); err == nil {
		t.Error("unknown policy accepted")
	}
}

func TestConflictValues(t *testing.T) {
	res, err := Merge(inputs(`{"a":{"x": 1}}`, `{"a":{"x": 2 }}`, `{"a":{"x":3}}`), Options{})
	if err != nil || len(res.Conflicts) != 1 {
		t.Fatalf("err = %v, conflicts = %+v", err, res.Conflicts)
	}
	c := res.Conflicts[0]
	if !slices.Equal(c.Path, []string{"a", "x"}) || string(c.Base) != "1" || string(c.Mine) != "2" || string(c.Theirs) != "3" {
		t.Errorf("conflict = %+v", c)
	}
	res, _ = Merge(inputs(`{"a":1}`, `{}`, `{"a":2}`), Options{})
	if c := res.Conflicts[0]; string(c.Base) != "1" || c.Mine != nil || string(c.Theirs) != "2" {
		t.Errorf("modify/delete conflict = %+v", c)
	}
	res, _ = Merge(inputs(absent, `{"a":1}`, `{"a":2}`), Options{})
	if c := res.Conflicts[0]; c.Base != nil || string(c.Mine) != "1" || string(c.Theirs) != "2" {
		t.Errorf("added-in-both conflict = %+v", c)
	}
}

func TestResultDoesNotAliasInputs(t *testing.T) {
	in := inputs(`{"a":1}`, `{"a":1}`, `{"a":2}`)
	res, err := Merge(in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	in.Theirs[6] = '9'
	if string(res.Merged) != `{"a":2}` {
		t.Errorf("Merged changed with the input: %s", res.Merged)
	}
}

// Objects too large for the pairwise check go through a hash set: a
// duplicate written with escapes is still found, inside arrays too, and the
// one reported is the first repeat in document order.
func TestDuplicateKeyInLargeObject(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{`)
	for i := range 100 {
		fmt.Fprintf(&b, `"k%d":%d,`, i, i)
	}
	prefix := b.String()
	for _, tc := range []struct {
		name, doc, key string
		at             int
	}{
		{"escaped repeat", prefix + `"\u006b7":1,"k3":2}`, "k7", len(prefix)},
		{"in an array", `[` + prefix + `"x":1,"k99":2}]`, "k99", 1 + len(prefix) + len(`"x":1,`)},
		{"escaped first", `{"\u0041":0,` + prefix[1:] + `"A":1}`, "A", len(`{"\u0041":0,`) - 1 + len(prefix)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Merge(inputs(`{}`, tc.doc, `{}`), Options{})
			var ie *InputError
			if !errors.As(err, &ie) || ie.Input != "mine" {
				t.Fatalf("err = %v, want an *InputError for mine", err)
			}
			if want := fmt.Sprintf("duplicate key %q", tc.key); ie.Reason != want || ie.Offset != tc.at {
				t.Errorf("got %q at %d, want %q at %d", ie.Reason, ie.Offset, want, tc.at)
			}
		})
	}
	if _, err := Merge(inputs(`{}`, prefix+`"k100":0}`, `{}`), Options{}); err != nil {
		t.Errorf("distinct keys: %v", err)
	}
}

// A Document given for an input stands for it when it was parsed from the same bytes (or equal
// ones) with the limits Merge applies: Merge then parses nothing again, and the result is the same.
// Otherwise it is ignored: the input is parsed, and rejected, as without it.
func TestMergeUsesGivenDocuments(t *testing.T) {
	base := []byte(`{"a": 1, "b": {"x": [1, 2]}, "c": "k\u00e9"}`)
	mine := []byte(`{"a": 2, "b": {"x": [1, 2, 3]}, "c": "k\u00e9"}`)
	theirs := []byte(`{"a": 1, "b": {"x": [0, 1, 2]}, "c": "k\u00e9", "d": null}`)
	plain := Inputs{Base: base, HasBase: true, Mine: mine, Theirs: theirs, HasTheirs: true}
	want, err := Merge(plain, Options{})
	if err != nil {
		t.Fatal(err)
	}
	doc := func(data []byte, opts Options) *Document {
		t.Helper()
		d, err := ParseDocument(data, opts)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	same := func(label string, got Result, err error) {
		t.Helper()
		if err != nil || !bytes.Equal(got.Merged, want.Merged) || got.Changed != want.Changed || len(got.Conflicts) != len(want.Conflicts) {
			t.Errorf("%s: %q changed %d conflicts %d (%v), want %q changed %d", label, got.Merged, got.Changed, len(got.Conflicts), err, want.Merged, want.Changed)
		}
	}
	in := plain
	in.BaseDoc, in.MineDoc, in.TheirsDoc = doc(base, Options{}), doc(mine, Options{}), doc(theirs, Options{})
	before := ParseCount()
	got, err := Merge(in, Options{})
	if n := ParseCount() - before; n != 0 {
		t.Errorf("given all three documents, Merge parsed %d", n)
	}
	same("documents of the inputs", got, err)

	// Equal bytes in another slice: the same document.
	in.Theirs = bytes.Clone(theirs)
	before = ParseCount()
	got, err = Merge(in, Options{})
	if n := ParseCount() - before; n != 0 {
		t.Errorf("a document of equal bytes: Merge parsed %d", n)
	}
	same("document of equal bytes", got, err)

	// A document of other bytes is not the input's.
	in = plain
	in.TheirsDoc = doc(base, Options{})
	before = ParseCount()
	got, err = Merge(in, Options{})
	if n := ParseCount() - before; n != 3 {
		t.Errorf("a document of other bytes: Merge parsed %d, want 3", n)
	}
	same("document of other bytes", got, err)

	// A document validated with other limits is not used: mine past Merge's limits is rejected.
	in = plain
	in.MineDoc = doc(mine, Options{})
	if _, err := Merge(in, Options{MaxSize: 20}); !isInputError(err, "mine") {
		t.Errorf("mine past MaxSize given parsed with the default limits: %v, want an input error for mine", err)
	}
	in.MineDoc = doc(mine, Options{})
	if _, err := Merge(in, Options{MaxDepth: 2}); !isInputError(err, "mine") {
		t.Errorf("mine past MaxDepth given parsed with the default limits: %v, want an input error for mine", err)
	}
}

func isInputError(err error, input string) bool {
	var ie *InputError
	return errors.As(err, &ie) && ie.Input == input
}

// Merges that share Documents may run at the same time (the race detector checks).
func TestMergesShareDocumentsConcurrently(t *testing.T) {
	// Mine deletes o, which theirs has in another key order: comparing base's and theirs' sorts
	// their members (tree.order).
	base := []byte(`{"o": {"a": 1, "b": 2, "c": 3}, "n": 0}`)
	mine := []byte(`{"n": 1}`)
	theirs := []byte(`{"n": 0, "o": {"b": 2, "a": 1, "c": 3}, "t": true}`)
	var docs [3]*Document
	for i, data := range [][]byte{base, mine, theirs} {
		d, err := ParseDocument(data, Options{})
		if err != nil {
			t.Fatal(err)
		}
		docs[i] = d
	}
	in := Inputs{Base: base, HasBase: true, Mine: mine, Theirs: theirs, HasTheirs: true, BaseDoc: docs[0], MineDoc: docs[1], TheirsDoc: docs[2]}
	var wg sync.WaitGroup
	results := make([]Result, 8)
	for i := range results {
		wg.Go(func() {
			results[i], _ = Merge(in, Options{})
		})
	}
	wg.Wait()
	for _, r := range results {
		if string(r.Merged) != `{"n": 1, "t": true}` {
			t.Fatalf("merged %q", r.Merged)
		}
	}
}
