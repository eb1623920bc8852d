package merge

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func mustRules(t *testing.T, text string) *Rules {
	t.Helper()
	r, err := ParseRules([]byte(text))
	if err != nil {
		t.Fatalf("ParseRules: %v", err)
	}
	return r
}

func TestParseRules(t *testing.T) {
	r := mustRules(t, `{"rules": [
		{"records": "users/*.json", "path": "/login_count", "strategy": "counter"},
		{"path": "/stats/*/hits", "strategy": "counter"},
		{"path": "/tags", "strategy": "set"},
		{"path": "/cart/items", "strategy": "keyed", "key": "sku"},
		{"path": "/last_seen", "strategy": "max"},
		{"path": "/a~1b/~0", "strategy": "min"},
		{"path": "", "strategy": "atomic"},
		{"path": "/history", "strategy": "sequence"},
		{"path": "/balance", "strategy": "reject"}
	]}`)
	list := r.List()
	if len(list) != 9 || list[0].Records != "users/*.json" || list[3].Key != "sku" || list[5].Path != "/a~1b/~0" {
		t.Fatalf("parsed %+v", list)
	}
	for _, tc := range []struct {
		record, pointer string
		want            Strategy
		found           bool
	}{
		{"users/1.json", "/login_count", StrategyCounter, true},
		{"teams/1.json", "/login_count", "", false},
		{"users/sub/1.json", "/login_count", "", false},
		{"x.json", "/stats/day/hits", StrategyCounter, true},
		{"x.json", "/stats/3/hits", StrategyCounter, true},
		{"x.json", "/stats/hits", "", false},
		{"x.json", "/stats/a/b/hits", "", false},
		{"x.json", "/cart/items", StrategyKeyed, true},
		{"x.json", "/a~1b/~0", StrategyMin, true},
		{"x.json", "/a/b/~", "", false},
		{"x.json", "", StrategyAtomic, true},
		{"x.json", "/tags/0", "", false},
	} {
		rule, ok := r.Match(tc.record, tc.pointer)
		if ok != tc.found || rule.Strategy != tc.want {
			t.Errorf("Match(%q, %q) = %q, %v; want %q, %v", tc.record, tc.pointer, rule.Strategy, ok, tc.want, tc.found)
		}
	}
	// The first matching rule wins.
	r = mustRules(t, `{"rules":[{"path":"/a/*","strategy":"max"},{"path":"/a/b","strategy":"min"},{"path":"/a/b","strategy":"counter"}]}`)
	if rule, _ := r.Match("r.json", "/a/b"); rule.Strategy != StrategyMax {
		t.Errorf("first match: %q", rule.Strategy)
	}
	if r := mustRules(t, `{"rules":[]}`); len(r.List()) != 0 {
		t.Error("empty rules")
	}
}

func TestParseRulesErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{``, "rules: not valid JSON: empty document"},
		{`{"rules":[],"rules":[]}`, `rules: not valid JSON: duplicate key "rules"`},
		{`[]`, `rules: want an object {"rules": [...]}`},
		{`{}`, `rules: missing field "rules"`},
		{`{"rules":{}}`, `rules: "rules" must be an array of rules`},
		{`{"rules":null}`, `rules: "rules" must be an array of rules`},
		{`{"rules":[],"rule":[]}`, `rules: unknown field "rule"`},
		{`{"rules":[1]}`, "rules[0]: a rule must be an object"},
		{`{"rules":[{"path":"/a","strategy":"max"},{"path":"/a","strategy":"maximum"}]}`, `rules[1].strategy: unknown strategy "maximum" (want one of counter, max, min, set, keyed, sequence, atomic, reject)`},
		{`{"rules":[{"path":"/a"}]}`, "rules[0].strategy: missing"},
		{`{"rules":[{"strategy":"max"}]}`, "rules[0].path: missing"},
		{`{"rules":[{"path":"a","strategy":"max"}]}`, `rules[0].path: "a" is not a JSON Pointer`},
		{`{"rules":[{"path":"/a~2","strategy":"max"}]}`, `rules[0].path: "/a~2": '~' must be followed by 0 or 1`},
		{`{"rules":[{"path":5,"strategy":"max"}]}`, "rules[0].path: must be a string"},
		{`{"rules":[{"path":"/a","strategy":"max","records":"["}]}`, `rules[0].records: bad glob "["`},
		{`{"rules":[{"path":"/a","strategy":"keyed"}]}`, `rules[0].key: strategy "keyed" needs a non-empty key`},
		{`{"rules":[{"path":"/a","strategy":"keyed","key":""}]}`, `rules[0].key: strategy "keyed" needs a non-empty key`},
		{`{"rules":[{"path":"/a","strategy":"set","key":"id"}]}`, `rules[0].key: only strategy "keyed" takes a key, not "set"`},
		{`{"rules":[{"path":"/a","strategy":"set","comment":"x"}]}`, `rules[0]: unknown field "comment"`},
	} {
		_, err := ParseRules([]byte(tc.text))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.text, err, tc.want)
		}
	}
}

// ruleCase is a merge of {"v": ...} values under one rule at /v.
type ruleCase struct {
	name               string
	rule               string // the strategy, or a whole rule object
	base, mine, theirs string
	want               string
	conflicts          []string // "path: reason (strategy)"
	err                error
	merges             map[Strategy]int
}

func runRuleCases(t *testing.T, cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rule := tc.rule
			if !strings.HasPrefix(rule, "{") {
				rule = `{"path":"/v","strategy":"` + rule + `"}`
			}
			rules := mustRules(t, `{"rules":[`+rule+`]}`)
			in := inputs(`{"v":`+tc.base+`}`, `{"v":`+tc.mine+`}`, `{"v":`+tc.theirs+`}`)
			if tc.base == absent {
				in = inputs(`{}`, `{"v":`+tc.mine+`}`, `{"v":`+tc.theirs+`}`)
			}
			res, err := Merge(in, Options{Rules: rules, Record: "r.json"})
			if !errors.Is(err, tc.err) || (err != nil && tc.err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			var got []string
			for _, c := range res.Conflicts {
				got = append(got, c.Pointer()+": "+c.Reason+" ("+string(c.Strategy)+")")
			}
			if !slices.Equal(got, tc.conflicts) {
				t.Errorf("conflicts %q, want %q", got, tc.conflicts)
			}
			if tc.err != nil {
				return
			}
			if want := `{"v":` + tc.want + `}`; string(res.Merged) != want {
				t.Errorf("merged %s, want %s", res.Merged, want)
			}
			if tc.merges != nil && !mapsEqual(res.Merges, tc.merges) {
				t.Errorf("merges %v, want %v", res.Merges, tc.merges)
			}
			if (res.Changed == 0) != (string(res.Merged) == `{"v":`+tc.theirs+`}`) {
				t.Errorf("changed %d, merged %s", res.Changed, res.Merged)
			}
		})
	}
}

func TestRuleCounter(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{name: "increments add up", rule: "counter", base: `10`, mine: `11`, theirs: `12`, want: `13`,
			merges: map[Strategy]int{StrategyCounter: 1}},
		{name: "the same increment on both sides counts twice", rule: "counter", base: `1`, mine: `2`, theirs: `2`, want: `3`},
		{name: "decrements", rule: "counter", base: `0`, mine: `-5`, theirs: `3`, want: `-2`},
		{name: "to zero", rule: "counter", base: `5`, mine: `0`, theirs: `10`, want: `5`},
		{name: "big integers exactly", rule: "counter", base: `9007199254740993`, mine: `9007199254740994`,
			theirs: `18014398509481986`, want: `18014398509481987`},
		{name: "past 64 bits", rule: "counter", base: `0`, mine: `99999999999999999999`, theirs: `1`, want: `100000000000000000000`},
		{name: "decimals exactly", rule: "counter", base: `0.1`, mine: `0.3`, theirs: `0.2`, want: `0.4`},
		{name: "decimals keep the most precise scale", rule: "counter", base: `1.50`, mine: `2.25`, theirs: `10`, want: `10.75`},
		{name: "exponents", rule: "counter", base: `1e2`, mine: `2e2`, theirs: `1.5e2`, want: `250`},
		{name: "small exponents", rule: "counter", base: `0`, mine: `1e-3`, theirs: `2E-3`, want: `0.003`},
		{name: "huge exponents stay in exponent form", rule: "counter", base: `1e300`, mine: `2e300`, theirs: `3e300`, want: `4e300`},
		{name: "numbers too far apart", rule: "counter", base: `0`, mine: `1e-99999`, theirs: `1e99999`, want: `1e-99999`,
			conflicts: []string{"/v: counter: numbers too far apart in magnitude to add exactly (counter)"}},
		{name: "one side only: taken as written", rule: "counter", base: `1`, mine: `1`, theirs: `2.50`, want: `2.50`},
		{name: "mine only", rule: "counter", base: `1`, mine: `5`, theirs: `1.0`, want: `5`},
		{name: "not a number: conflict", rule: "counter", base: `1`, mine: `"2"`, theirs: `3`, want: `"2"`,
			conflicts: []string{"/v: counter: not a number (counter)"}},
		{name: "not a number on one side only: taken", rule: "counter", base: `1`, mine: `null`, theirs: `1`, want: `null`},
		{name: "not a number with reject rule policy", rule: "counter", base: `1`, mine: `[]`, theirs: `2`, want: `[]`,
			conflicts: []string{"/v: counter: not a number (counter)"}},
		{name: "added on both sides: counted from 0", rule: "counter", base: absent, mine: `2`, theirs: `3`, want: `5`},
	})
}

func TestRuleMaxMin(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{name: "max: mine greater", rule: "max", base: `1`, mine: `5`, theirs: `3`, want: `5`,
			merges: map[Strategy]int{StrategyMax: 1}},
		{name: "max: theirs greater", rule: "max", base: `1`, mine: `2`, theirs: `3`, want: `3`},
		{name: "max: equal values, theirs' spelling", rule: "max", base: `1`, mine: `2`, theirs: `2.0`, want: `2.0`},
		{name: "max: exact beyond float", rule: "max", base: `0`, mine: `9007199254740993`, theirs: `9007199254740992`, want: `9007199254740993`},
		{name: "max: exponents and negatives", rule: "max", base: `0`, mine: `-1e-5`, theirs: `-2e-6`, want: `-2e-6`},
		{name: "max: decimals", rule: "max", base: `0`, mine: `0.125`, theirs: `0.12`, want: `0.125`},
		{name: "max: ISO-8601 timestamps", rule: "max", base: `"2024-01-01T00:00:00Z"`,
			mine: `"2024-03-01T10:00:00Z"`, theirs: `"2024-02-29T23:59:59Z"`, want: `"2024-03-01T10:00:00Z"`},
		{name: "max: strings decoded", rule: "max", base: `"a"`, mine: `"\u00e9"`, theirs: `"z"`, want: `"\u00e9"`},
		{name: "min", rule: "min", base: `5`, mine: `3`, theirs: `4`, want: `3`, merges: map[Strategy]int{StrategyMin: 1}},
		{name: "min: theirs lesser", rule: "min", base: `5`, mine: `3`, theirs: `-1`, want: `-1`},
		{name: "min: one side only", rule: "min", base: `5`, mine: `5`, theirs: `9`, want: `9`},
		{name: "max: mixed types conflict", rule: "max", base: `1`, mine: `"2"`, theirs: `3`, want: `"2"`,
			conflicts: []string{"/v: max: not two numbers or two strings (max)"}},
		{name: "max: added on both sides", rule: "max", base: absent, mine: `2`, theirs: `3`, want: `3`},
	})
}

func TestRuleSet(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{name: "additions from both sides", rule: "set", base: `["a"]`, mine: `["a","b"]`, theirs: `["a","c"]`, want: `["a","c","b"]`,
			merges: map[Strategy]int{StrategySet: 1}},
		{name: "removals from both sides", rule: "set", base: `["a","b","c"]`, mine: `["a","c"]`, theirs: `["b","c"]`, want: `["c"]`},
		{name: "mine removes what theirs moved", rule: "set", base: `["a","b","c"]`, mine: `["a","c","d"]`, theirs: `["c","b","a"]`, want: `["c","a","d"]`},
		{name: "the same addition once", rule: "set", base: `[]`, mine: `["x",1]`, theirs: `["x",1.0]`, want: `["x",1.0]`},
		{name: "duplicates added once", rule: "set", base: `[]`, mine: `["x","x","y"]`, theirs: `["z"]`, want: `["z","x","y"]`},
		{name: "values of any kind", rule: "set", base: `[{"a":1}]`, mine: `[{"a":1},[1]]`, theirs: `[{"a":1.0},null]`, want: `[{"a":1.0},null,[1]]`},
		{name: "theirs' duplicates stay", rule: "set", base: `["a"]`, mine: `["a","b"]`, theirs: `["a","a","c"]`, want: `["a","a","c","b"]`},
		{name: "removal of a duplicated value removes every copy", rule: "set", base: `["a","b"]`, mine: `["b"]`, theirs: `["a","b","a"]`, want: `["b"]`},
		{name: "mine reorders only: theirs' order", rule: "set", base: `[1,2]`, mine: `[2,1]`, theirs: `[1,2,3]`, want: `[1,2,3]`},
		{name: "not an array", rule: "set", base: `[1]`, mine: `{"a":1}`, theirs: `[2]`, want: `{"a":1}`,
			conflicts: []string{"/v: set: not an array (set)"}},
		{name: "added on both sides: a union", rule: "set", base: absent, mine: `[1,2]`, theirs: `[2,3]`, want: `[2,3,1]`},
		{name: "on ids: still a set of values", rule: "set", base: `[{"id":1}]`, mine: `[{"id":1},{"id":2}]`,
			theirs: `[{"id":1,"x":1}]`, want: `[{"id":1,"x":1},{"id":2}]`},
	})
}

func TestRuleKeyedSequenceAtomicReject(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{name: "keyed by a named key", rule: `{"path":"/v","strategy":"keyed","key":"sku"}`,
			base:   `[{"sku":"a","qty":1}]`,
			mine:   `[{"sku":"a","qty":2},{"sku":"b","qty":1}]`,
			theirs: `[{"sku":"c","qty":1},{"sku":"a","qty":1,"note":"x"}]`,
			want:   `[{"sku":"c","qty":1},{"sku":"a","qty":2,"note":"x"},{"sku":"b","qty":1}]`,
			merges: map[Strategy]int{StrategyKeyed: 1}},
		{name: "keyed: elements without the key conflict", rule: `{"path":"/v","strategy":"keyed","key":"sku"}`,
			base: `[{"sku":"a"}]`, mine: `[{"sku":"a"},{"id":2}]`, theirs: `[{"sku":"a"},{"sku":"c"}]`,
			want:      `[{"sku":"a"},{"id":2}]`,
			conflicts: []string{`/v: keyed: not every element is an object with a unique scalar "sku" (keyed)`}},
		{name: "keyed: duplicate keys conflict", rule: `{"path":"/v","strategy":"keyed","key":"sku"}`,
			base: `[{"sku":"a"}]`, mine: `[{"sku":"a"},{"sku":"a"}]`, theirs: `[{"sku":"a"},{"sku":"c"}]`,
			want:      `[{"sku":"a"},{"sku":"a"}]`,
			conflicts: []string{`/v: keyed: not every element is an object with a unique scalar "sku" (keyed)`}},
		{name: "sequence even with ids", rule: "sequence",
			base: `[{"id":1,"v":0}]`, mine: `[{"id":1,"v":0},{"id":2}]`, theirs: `[{"id":1,"v":1}]`,
			want: `[{"id":1,"v":1},{"id":2}]`, merges: map[Strategy]int{StrategySequence: 1}},
		{name: "sequence: a conflict names the strategy", rule: "sequence",
			base: `[1,2]`, mine: `[1,3]`, theirs: `[1,4]`, want: `[1,3]`,
			conflicts: []string{"/v/1: modified in both (sequence)"}},
		{name: "atomic array", rule: "atomic", base: `[1]`, mine: `[1,2]`, theirs: `[1,3]`, want: `[1,2]`,
			conflicts: []string{"/v: modified in both (atomic)"}},
		{name: "atomic object", rule: "atomic", base: `{"a":1,"b":1}`, mine: `{"a":2,"b":1}`, theirs: `{"a":1,"b":2}`,
			want: `{"a":2,"b":1}`, conflicts: []string{"/v: modified in both (atomic)"}},
		{name: "atomic: the same change", rule: "atomic", base: `[1]`, mine: `[1,2]`, theirs: `[1,2.0]`, want: `[1,2.0]`},
		{name: "atomic: one side only", rule: "atomic", base: `{"a":1}`, mine: `{"a":1}`, theirs: `{"a":2}`, want: `{"a":2}`},
		{name: "reject: concurrent changes fail the merge under writer-wins", rule: "reject",
			base: `100`, mine: `90`, theirs: `90`, err: ErrRejected,
			conflicts: []string{"/v: modified in both (reject)"}},
		{name: "reject: a change on one side merges", rule: "reject", base: `100`, mine: `90`, theirs: `100`, want: `90`},
		{name: "reject: inside an object", rule: "reject", base: `{"a":1,"b":1}`, mine: `{"a":2,"b":1}`, theirs: `{"a":1,"b":2}`,
			err: ErrRejected, conflicts: []string{"/v: modified in both (reject)"}},
	})
}

// Rules inside arrays (by wildcard), at the top level, for some records
// only, and conflicts next to them.
func TestRulesAtDepth(t *testing.T) {
	rules := mustRules(t, `{"rules":[
		{"path":"/lines/*/qty","strategy":"counter"},
		{"path":"/stats/*/hits","strategy":"counter"},
		{"records":"users/*.json","path":"/n","strategy":"counter"},
		{"path":"/gone","strategy":"counter"}
	]}`)
	base := `{"lines":[{"id":"a","qty":1},{"id":"b","qty":1}],"stats":{"x":{"hits":1},"y":{"hits":5}},"n":1,"gone":1}`
	mine := `{"lines":[{"id":"a","qty":2},{"id":"b","qty":1},{"id":"c","qty":1}],"stats":{"x":{"hits":2},"y":{"hits":5}},"n":2,"gone":2}`
	theirs := `{"lines":[{"id":"b","qty":1},{"id":"a","qty":3}],"stats":{"x":{"hits":4},"y":{"hits":5}},"n":3}`
	res, err := Merge(inputs(base, mine, theirs), Options{Rules: rules, Record: "users/1.json"})
	want := `{"lines":[{"id":"b","qty":1},{"id":"c","qty":1},{"id":"a","qty":4}],"stats":{"x":{"hits":5},"y":{"hits":5}},"n":4,"gone":2}`
	if err != nil || string(res.Merged) != want {
		t.Fatalf("err %v, merged %s\nwant %s", err, res.Merged, want)
	}
	if got := conflictSummary(res.Conflicts); !slices.Equal(got, []string{"gone: modified in mine, deleted in theirs"}) || res.Conflicts[0].Strategy != StrategyCounter {
		t.Errorf("conflicts %q", got)
	}
	if want := map[Strategy]int{StrategyCounter: 3, StrategyKeyed: 1}; !mapsEqual(res.Merges, want) {
		t.Errorf("merges %v, want %v", res.Merges, want)
	}
	// Another record: /n is not a counter there.
	res, _ = Merge(inputs(base, mine, theirs), Options{Rules: rules, Record: "teams/1.json"})
	if got := conflictSummary(res.Conflicts); !slices.Contains(got, "n: modified in both") {
		t.Errorf("record without the rule: conflicts %q", got)
	}
	// Counters at positions of an array without identities.
	rules = mustRules(t, `{"rules":[{"path":"/hits/*","strategy":"counter"}]}`)
	res, err = Merge(inputs(`{"hits":[1,2,3]}`, `{"hits":[1,3,3]}`, `{"hits":[1,4,3]}`), Options{Rules: rules})
	if err != nil || string(res.Merged) != `{"hits":[1,5,3]}` || len(res.Conflicts) != 0 || res.Merges[StrategyCounter] != 1 {
		t.Errorf("counter in a sequence: %v %s %q %v", err, res.Merged, conflictSummary(res.Conflicts), res.Merges)
	}
	// The whole document (a top-level array) under a rule.
	rules = mustRules(t, `{"rules":[{"path":"","strategy":"set"}]}`)
	res, err = Merge(inputs(`[1]`, `[1,2]`, `[1,3]`), Options{Rules: rules})
	if err != nil || string(res.Merged) != `[1,3,2]` || len(res.Conflicts) != 0 {
		t.Errorf("top-level set: %v %s %q", err, res.Merged, conflictSummary(res.Conflicts))
	}
	// Two creators of a counter record.
	rules = mustRules(t, `{"rules":[{"path":"","strategy":"counter"}]}`)
	res, err = Merge(inputs(absent, `2`, `3`), Options{Rules: rules})
	if err != nil || string(res.Merged) != `5` {
		t.Errorf("top-level counter without base: %v %s", err, res.Merged)
	}
}
