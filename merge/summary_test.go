package merge

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func mustSummarize(t testing.TB, s string) *Summary {
	t.Helper()
	sum, err := Summarize([]byte(s), Options{})
	if err != nil {
		t.Fatalf("summarize %q: %v", s, err)
	}
	return sum
}

// equalityCases are pairs the package's equality judges (the table of
// TestEqual and more): a summary must judge them alike.
var equalityCases = []struct {
	a, b string
	eq   bool
}{
	{`1`, `1.0`, true}, {`1e2`, `100`, true}, {`100`, `1E+2`, true}, {`0.5`, `5e-1`, true},
	{`-0`, `0`, true}, {`0.0e5`, `-0.000`, true}, {`120`, `1.2e2`, true}, {`0.00120`, `1.2e-3`, true},
	{`9007199254740993`, `9007199254740992`, false}, {`1`, `-1`, false}, {`1e400`, `1e401`, false},
	{`1e400`, `10e399`, true}, {`1e99999999999999999999`, `1e99999999999999999998`, false},
	{`1e99999999999999999999`, `10e99999999999999999998`, true}, {`1e-99999999999999999999`, `0.1e-99999999999999999998`, true},
	{`123456789012345678901234567890`, `1.23456789012345678901234567890e29`, true},
	// An exponent of 18 digits against the same value written with 19.
	{`1e100000000000000000`, `10e99999999999999999`, true},
	{`1e1000000000000000000`, `0.1e1000000000000000001`, true},
	{`1e1000000000000000000`, `1e1000000000000000001`, false},
	{`12.5`, `125e-1`, true}, {`12.5`, `1.25`, false}, {`-12.5`, `12.5`, false}, {`0.1`, `1`, false},
	{`"é"`, `"\u00e9"`, true}, {`"\u00E9"`, `"\u00e9"`, true}, {`"a/b"`, `"a\/b"`, true},
	{`"\ud83d\ude00"`, `"😀"`, true}, {`"\ud800"`, `"\ufffd"`, false}, {`"\ud800"`, `"\uD800"`, true},
	{`"\ud800\u0041"`, `"\ud800A"`, true}, {`"a"`, `"b"`, false}, {`"1"`, `1`, false},
	{`{"a":1,"b":[1,2]}`, `{ "b" : [ 1 , 2.0 ] , "a" : 1 }`, true}, {`{"a":1}`, `{"a":1,"b":1}`, false},
	{`{"a":1,"b":2}`, `{"a":1,"c":2}`, false}, {`[1,2]`, `[2,1]`, false}, {`[]`, `{}`, false},
	{`[{"a":1,"b":[1,{"c":"é"}]}]`, `[ {"b":[1.0,{"c":"\u00e9"}],"a":1} ]`, true},
	{`[[{"a":1}],[]]`, `[[{"a":2}],[]]`, false}, {`{"l":[[1],[{"k":[]}]]}`, `{"l":[[1],[{"k":[ ]}]]}`, true},
	{`null`, `false`, false}, {`true`, `true`, true}, {`{"\u0041":{}}`, `{"A":{}}`, true},
	{`{"a":{"b":1}}`, `{"b":{"a":1}}`, false}, {`{"a":"b"}`, `{"b":"a"}`, false},
	{`[[]]`, `[{}]`, false}, {`[null]`, `[]`, false}, {`{"":null}`, `{}`, false}, {`""`, `null`, false},
}

func TestSummaryEquality(t *testing.T) {
	for _, tc := range equalityCases {
		a, b := mustSummarize(t, tc.a), mustSummarize(t, tc.b)
		if eq := equalDocs(mustParse(t, tc.a), mustParse(t, tc.b)); eq != tc.eq {
			t.Fatalf("the table says equal(%s, %s) = %v, the package's equality %v", tc.a, tc.b, tc.eq, eq)
		}
		d, d2 := Distance(a, b, 0), Distance(b, a, 0)
		if (d == 0) != tc.eq || d != d2 || a.Equal(b) != tc.eq {
			t.Errorf("Distance(%s, %s) = %d, reverse %d, Equal %v; JSON-equal: %v", tc.a, tc.b, d, d2, a.Equal(b), tc.eq)
		}
	}
}

func TestDistanceTable(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{`{"a":1}`, `{"a":2}`, 1},
		{`{"a":1,"b":2,"c":3}`, `{"c":3,"b":20,"a":10}`, 2},
		{`{"a":1}`, `{}`, 1},
		{`{"a":1}`, `{"b":1}`, 2},                       // one key gone, one added
		{`{"a":{"x":1,"y":[2,3]}}`, `{}`, 5},            // the object, x, the array, 2, 3
		{`{"a":{"x":1,"y":[2,3]}}`, `{"a":null}`, 5},    // the object and its 4 values become one scalar
		{`{"a":{"x":1,"y":[2,3]}}`, `{"a":{"x":1}}`, 3}, // y and its two elements
		{`{"a":{}}`, `{"a":[]}`, 1},
		{`{"a":{"x":1}}`, `{"a":[1]}`, 3}, // kind, x gone, element 0 added
		{`{}`, `{"x":1}`, 1},
		{`1`, `2`, 1}, {`1`, `"1"`, 1}, {`null`, `{"a":1}`, 2}, {`[1,2]`, `{"a":1}`, 4},
		{`{"n":9007199254740993}`, `{"n":9007199254740992}`, 1},
		{`{"n":1.0,"s":"\u00e9"}`, `{"s":"é","n":1}`, 0},
		// Arrays: a common prefix and suffix count nothing, the rest is
		// paired by position.
		{`[1,2,3]`, `[1,2,3,4]`, 1},
		{`[1,2,3]`, `[0,1,2,3]`, 1},
		{`[1,2,3]`, `[1,9,3]`, 1},
		{`[1,2,3]`, `[1,3]`, 1},
		{`[1,2,3]`, `[3,2,1]`, 2},
		{`[1,2,3]`, `[]`, 3},
		{`[1,[2,3],4]`, `[1,4]`, 3},
		{`[{"id":1,"v":1},{"id":2,"v":2}]`, `[{"id":1,"v":1},{"id":2,"v":3}]`, 1},
		{`[[1,2],[3]]`, `[[1,2,5],[3]]`, 1},
		{`[1,2]`, `[2,1,2]`, 1}, // prefix 0, suffix [1,2]: the 2 in front is the insertion
	}
	for _, tc := range cases {
		a, b := mustSummarize(t, tc.a), mustSummarize(t, tc.b)
		if got, rev := Distance(a, b, 0), Distance(b, a, 0); got != tc.want || rev != tc.want {
			t.Errorf("Distance(%s, %s) = %d, reverse %d, want %d", tc.a, tc.b, got, rev, tc.want)
		}
		va, _ := oracleDecode([]byte(tc.a))
		vb, _ := oracleDecode([]byte(tc.b))
		if m := modelDistance(va, vb, false); m != tc.want {
			t.Errorf("the model says %d for %s, %s, the table %d", m, tc.a, tc.b, tc.want)
		}
	}
}

// modelDistance is Distance's definition written on values decoded by
// encoding/json (UseNumber), with oracleValuesEqual as equality.
func modelDistance(a, b any, positional bool) int {
	if oracleValuesEqual(a, b) {
		return 0
	}
	switch a := a.(type) {
	case map[string]any:
		if b, ok := b.(map[string]any); ok {
			n := 0
			for k, va := range a {
				if vb, ok := b[k]; ok {
					n += modelDistance(va, vb, positional)
				} else {
					n += modelSize(va)
				}
			}
			for k, vb := range b {
				if _, ok := a[k]; !ok {
					n += modelSize(vb)
				}
			}
			return n
		}
	case []any:
		if b, ok := b.([]any); ok {
			m := min(len(a), len(b))
			p := 0
			for p < m && oracleValuesEqual(a[p], b[p]) {
				p++
			}
			s := 0
			if len(a) == len(b) || !positional {
				for s < m-p && oracleValuesEqual(a[len(a)-1-s], b[len(b)-1-s]) {
					s++
				}
			}
			n := 0
			for i := p; i < m-s; i++ {
				n += modelDistance(a[i], b[i], positional)
			}
			for _, x := range a[m-s : len(a)-s] {
				n += modelSize(x)
			}
			for _, x := range b[m-s : len(b)-s] {
				n += modelSize(x)
			}
			return n
		}
	}
	return modelSize(a) + modelSize(b) - 1
}

func modelSize(v any) int {
	n := 1
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			n += modelSize(x)
		}
	case []any:
		for _, x := range v {
			n += modelSize(x)
		}
	}
	return n
}

// recordValue is a random record: objects of up to many keys (past
// bucketSize, so that their tries are built and compared), long arrays
// (past 2*chunkLen), nesting.
func recordValue(rng *rand.Rand, depth int) any {
	switch r := rng.IntN(10); {
	case depth < 3 && r < 3:
		n := rng.IntN(6)
		if depth == 0 && rng.IntN(2) == 0 {
			n = rng.IntN(700)
		}
		m := make(map[string]any, n)
		for i := range n {
			m[fmt.Sprintf("k%d", i*3+rng.IntN(3))] = recordValue(rng, depth+1)
		}
		return m
	case depth < 3 && r < 5:
		n := rng.IntN(5)
		if depth == 0 && rng.IntN(2) == 0 {
			n = rng.IntN(300)
		}
		l := make([]any, n)
		for i := range l {
			l[i] = recordValue(rng, depth+1)
		}
		return l
	}
	return sanitize(randomValue(rng, 4))
}

// editValue returns v with about n random changes anywhere in it: values
// replaced, keys added and deleted, array elements inserted, deleted and
// changed. v is not modified.
func editValue(rng *rand.Rand, v any, n int) any {
	for range n {
		v = editOnce(rng, v)
	}
	return sanitize(v)
}

// sanitize returns v without the integer 0 (which respellNumber can write
// as 00e-1) and numbers with a leading zero (which mutate can make).
func sanitize(v any) any {
	switch x := v.(type) {
	case number:
		if d := strings.TrimPrefix(string(x), "-"); d[0] == '0' && (len(d) == 1 || d[1] >= '0' && d[1] <= '9') {
			return number("7")
		}
	case map[string]any:
		for k, e := range x {
			x[k] = sanitize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = sanitize(e)
		}
	}
	return v
}

func editOnce(rng *rand.Rand, v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v)+1)
		for k, x := range v {
			m[k] = x
		}
		keys := sortedKeys(m)
		switch r := rng.IntN(10); {
		case len(keys) > 0 && r < 6:
			k := keys[rng.IntN(len(keys))]
			m[k] = editOnce(rng, m[k])
		case len(keys) > 0 && r < 8:
			delete(m, keys[rng.IntN(len(keys))])
		default:
			m[randomString(rng)+"+"] = randomValue(rng, 3)
		}
		return m
	case []any:
		l := append([]any(nil), v...)
		i := rng.IntN(len(l) + 1)
		switch r := rng.IntN(10); {
		case i < len(l) && r < 5:
			l[i] = editOnce(rng, l[i])
		case i < len(l) && r < 7:
			l = append(l[:i], l[i+1:]...)
		default:
			l = append(l[:i], append([]any{randomValue(rng, 3)}, l[i:]...)...)
		}
		return l
	}
	return mutate(rng, v)
}

// Distance agrees with the model on random records and random edits of
// them, written in random spellings; 0 exactly when the package's
// equality says equal.
func TestDistanceAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	judged, zero := 0, 0
	for i := range 300 {
		v := recordValue(rng, 0)
		w := v
		if i%5 != 0 {
			w = editValue(rng, v, 1+rng.IntN(6))
		}
		a, b := spell(rng, v), spell(rng, w)
		sa, sb := mustSummarize(t, a), mustSummarize(t, b)
		d := Distance(sa, sb, 0)
		if d != Distance(sb, sa, 0) || Distance(sa, sa, 0) != 0 {
			t.Fatalf("not symmetric or not 0 on itself:\n%s\n%s", a, b)
		}
		if eq := equalDocs(mustParse(t, a), mustParse(t, b)); eq != (d == 0) {
			t.Fatalf("Distance %d, equal %v:\n%s\n%s", d, eq, a, b)
		}
		ma, oka := oracleDecode([]byte(a))
		mb, okb := oracleDecode([]byte(b))
		if !oka || !okb {
			continue
		}
		judged++
		if d == 0 {
			zero++
		}
		if want := modelDistance(ma, mb, false); d != want {
			t.Fatalf("Distance = %d, the model says %d:\n%s\n%s", d, want, a, b)
		}
		if got, want := distance(sa, sb, 1<<62, true), modelDistance(ma, mb, true); got != want {
			t.Fatalf("positional distance = %d, the model says %d:\n%s\n%s", got, want, a, b)
		}
		for _, limit := range []int{1, 2, d / 2, d, d + 1} {
			got := Distance(sa, sb, limit)
			if limit > 0 && (d < limit && got != d || d >= limit && (got < limit || got > d)) {
				t.Fatalf("Distance with limit %d = %d, without %d", limit, got, d)
			}
		}
	}
	t.Logf("%d judged, %d equal", judged, zero)
	if judged < 250 || zero < judged/10 || zero > judged/2 {
		t.Fatalf("weak sample: %d judged, %d equal", judged, zero)
	}
}

// The triangle inequality holds for the positional distance, a metric.
func TestDistanceTriangle(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200 {
		v := recordValue(rng, 0)
		w := editValue(rng, v, rng.IntN(5))
		x := editValue(rng, v, rng.IntN(5))
		if rng.IntN(3) == 0 {
			x = editValue(rng, w, rng.IntN(5))
		}
		a, b, c := mustSummarize(t, spell(rng, v)), mustSummarize(t, spell(rng, w)), mustSummarize(t, spell(rng, x))
		ab, bc, ac := distance(a, b, 1<<62, true), distance(b, c, 1<<62, true), distance(a, c, 1<<62, true)
		if ac > ab+bc || ab > ac+bc || bc > ab+ac {
			t.Fatalf("triangle: %d %d %d", ab, bc, ac)
		}
	}
}

// A value summarized from the tree (objects outside arrays) and from the
// bytes (inside arrays) hashes alike.
func TestSummaryTreeAndScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for range 300 {
		v := recordValue(rng, 1)
		a := spell(rng, v)
		b := spell(rng, v)
		top := mustSummarize(t, a)
		inArray := mustSummarize(t, "[ "+b+" ]")
		if firstElem(inArray) != top.hash {
			t.Fatalf("%s at the top and %s in an array hash differently", a, b)
		}
		inObject := mustSummarize(t, `{"k": `+b+`}`)
		if o := mustSummarize(t, `{"k": `+a+`}`); inObject.hash != o.hash {
			t.Fatalf("%s and %s in an object hash differently", a, b)
		}
		if o := mustSummarize(t, `[{"k": `+a+`}]`); inObject.hash != firstElem(o) {
			t.Fatalf("{\"k\": %s} at the top and in an array hash differently", a)
		}
	}
}

// firstElem returns the hash of the first element of the top array of s.
func firstElem(s *Summary) uint64 {
	return s.elems[s.conts[s.ref-1].first]
}

// flatRecord is an object of n short fields f0..fn-1 (f<changed> with
// another value), keys in the order given by perm (nil: in order).
func flatRecord(n int, changed map[int]string, perm []int) string {
	var b strings.Builder
	b.WriteString("{")
	for j := range n {
		i := j
		if perm != nil {
			i = perm[j]
		}
		if j > 0 {
			b.WriteString(", ")
		}
		v, ok := changed[i]
		if !ok {
			v = fmt.Sprintf(`"value %d"`, i)
		}
		fmt.Fprintf(&b, `"f%d": %s`, i, v)
	}
	b.WriteString("}")
	return b.String()
}

func TestDistanceLargeObjects(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{bucketSize, bucketSize + 1, 100, 5400} {
		base := mustSummarize(t, flatRecord(n, nil, nil))
		if d := Distance(base, mustSummarize(t, flatRecord(n, nil, rng.Perm(n))), 0); d != 0 {
			t.Fatalf("%d keys in another order: distance %d", n, d)
		}
		for _, k := range []int{1, 2, 7, 40} {
			k = min(k, n)
			changed := map[int]string{}
			for len(changed) < k {
				changed[rng.IntN(n)] = `"new"`
			}
			other := mustSummarize(t, flatRecord(n, changed, rng.Perm(n)))
			if d := Distance(base, other, 0); d != k {
				t.Fatalf("%d keys, %d changed: distance %d", n, k, d)
			}
			if d := Distance(base, other, 3); d < min(3, k) || d > k {
				t.Fatalf("%d keys, %d changed, limit 3: distance %d", n, k, d)
			}
		}
		// Fewer keys: the missing ones count one each.
		if n > 10 {
			if d := Distance(base, mustSummarize(t, flatRecord(n-10, nil, nil)), 0); d != 10 {
				t.Fatalf("%d keys against %d: distance %d", n, n-10, d)
			}
		}
	}
}

func TestDistanceLongArrays(t *testing.T) {
	list := func(vals []int) string {
		var b strings.Builder
		b.WriteString(`{"log": [`)
		for i, v := range vals {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"n": %d}`, v)
		}
		b.WriteString("]}")
		return b.String()
	}
	vals := make([]int, 1000)
	for i := range vals {
		vals[i] = i
	}
	base := mustSummarize(t, list(vals))
	check := func(name string, other []int, want int) {
		t.Helper()
		if d := Distance(base, mustSummarize(t, list(other)), 0); d != want {
			t.Errorf("%s: distance %d, want %d", name, d, want)
		}
	}
	check("append", append(append([]int(nil), vals...), 1000), 2)
	check("prepend", append([]int{-1}, vals...), 2)
	check("insert", append(append(append([]int(nil), vals[:500]...), -1), vals[500:]...), 2)
	check("delete", append(append([]int(nil), vals[:300]...), vals[301:]...), 2)
	changed := append([]int(nil), vals...)
	changed[700] = -1
	changed[900] = -1
	check("change", changed, 2)
	check("truncate", vals[:990], 20)
}

func TestSummarizeErrors(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		opts Options
	}{
		{``, Options{}}, {` `, Options{}}, {`{`, Options{}}, {`{"a":1,"a":2}`, Options{}}, {`[1,]`, Options{}},
		{`NaN`, Options{}}, {"\"\xff\"", Options{}}, {`1 2`, Options{}}, {"\xef\xbb\xbf{}", Options{}},
		{`{"a":[[1]]}`, Options{MaxDepth: 2}}, {`[1,2,3]`, Options{MaxSize: 6}},
	} {
		_, err := Summarize([]byte(tc.doc), tc.opts)
		var ie *InputError
		if !errors.As(err, &ie) || ie.Input != "document" {
			t.Errorf("Summarize(%q, %+v) = %v, want an InputError", tc.doc, tc.opts, err)
		}
	}
	if _, err := Summarize([]byte(`{"a":[[1]]}`), Options{MaxDepth: 3}); err != nil {
		t.Errorf("depth 3: %v", err)
	}
	if _, err := Summarize([]byte(`{}`), Options{MaxDepth: -1}); err == nil || errors.As(err, new(*InputError)) {
		t.Errorf("bad options: %v", err)
	}
}

// The memory a summary holds stays within about 24 bytes per value for
// records of many short fields, and Bytes accounts for it.
func TestSummaryBytes(t *testing.T) {
	for _, size := range []int{300, 4 << 10, 256 << 10, 1 << 20} {
		doc := profileRecord(size, [4]int{}, -1)
		s := mustSummarize(t, string(doc))
		perValue := float64(s.Bytes()) / float64(s.Size())
		t.Logf("%d-byte record: %d values, summary %d bytes, %.1f bytes per value", len(doc), s.Size(), s.Bytes(), perValue)
		if size >= 4<<10 && perValue > 24 {
			t.Errorf("%d-byte record: %.1f bytes per value", size, perValue)
		}
	}
	base, _, _ := benchInputs(64<<10, false)
	s := mustSummarize(t, string(base))
	t.Logf("%d-byte nested record: %d values, summary %d bytes, %.1f bytes per value", len(base), s.Size(), s.Bytes(), float64(s.Bytes())/float64(s.Size()))
}

// checkSummary checks the invariants of a summary's layout: every ref in
// range, each object's members sorted by key and summing to its hash, its
// trie (if any) consistent with its members, sizes adding up, bigs sorted.
func checkSummary(t testing.TB, s *Summary) {
	t.Helper()
	var walk func(ref uint32) uint32
	walk = func(ref uint32) uint32 {
		if ref == 0 {
			return 1
		}
		if int(ref) > len(s.conts) {
			t.Fatalf("ref %d past %d containers", ref, len(s.conts))
		}
		c := &s.conts[ref-1]
		n := c.count()
		size := uint32(1)
		if c.isObject() {
			ms := s.members[c.first : c.first+n]
			var sum uint64
			for i := range ms {
				if i > 0 && ms[i-1].key > ms[i].key {
					t.Fatalf("members of container %d not sorted", ref)
				}
				sum += ms[i].mh
				size += walk(ms[i].ref)
			}
			if mix(sum, tagObject) != c.hash {
				t.Fatalf("container %d: hash is not its members'", ref)
			}
			if (n > bucketSize) != (c.aux != 0) {
				t.Fatalf("object of %d members with trie %d", n, c.aux)
			}
			if c.aux != 0 {
				checkTrie(t, s, c.aux, c.first, c.first+n, 0)
			}
		} else {
			h := tagArray
			for i := c.first; i < c.first+n; i++ {
				h = mix(h, s.elems[i])
				size += walk(s.elemRefs[i])
			}
			if mix(h, uint64(n)) != c.hash {
				t.Fatalf("container %d: hash is not its elements'", ref)
			}
			if n >= 2*chunkLen {
				for k := uint32(0); k < n/chunkLen; k++ {
					ch := tagChunk
					for _, e := range s.elems[c.first+k*chunkLen : c.first+(k+1)*chunkLen] {
						ch = mix(ch, e)
					}
					if s.chunks[c.aux+k] != ch {
						t.Fatalf("container %d: chunk %d", ref, k)
					}
				}
			}
		}
		if size != c.size {
			t.Fatalf("container %d: size %d, its values %d", ref, c.size, size)
		}
		return size
	}
	walk(s.ref)
	for i := 1; i < len(s.bigs); i++ {
		if s.bigs[i-1].ref >= s.bigs[i].ref {
			t.Fatalf("bigs not sorted")
		}
	}
}

func checkTrie(t testing.TB, s *Summary, node, lo, hi uint32, level uint) {
	t.Helper()
	n := &s.tries[node-1]
	if n.start[0] != lo || n.start[16] != hi {
		t.Fatalf("trie node %d covers [%d,%d), not [%d,%d)", node, n.start[0], n.start[16], lo, hi)
	}
	for c := range uint32(16) {
		var sum uint64
		for i := n.start[c]; i < n.start[c+1]; i++ {
			if (s.members[i].key>>(28-4*level))&15 != c {
				t.Fatalf("trie node %d: member %d in range %d", node, i, c)
			}
			sum += s.members[i].mh
		}
		if sum != n.hash[c] {
			t.Fatalf("trie node %d: range %d sum", node, c)
		}
		if n.child[c] != 0 {
			checkTrie(t, s, n.child[c], n.start[c], n.start[c+1], level+1)
		} else if n.start[c+1]-n.start[c] > bucketSize && level+1 < trieLevels {
			t.Fatalf("trie node %d: range %d of %d members without a node", node, c, n.start[c+1]-n.start[c])
		}
	}
}

// writeStable writes v the same way every time: keys sorted, strings
// escaped only where they must be, so that unchanged subtrees of two
// versions have the same bytes, as a serializer writes them.
func writeStable(b *strings.Builder, v any) {
	switch v := v.(type) {
	case map[string]any:
		b.WriteString("{")
		for i, k := range sortedKeys(v) {
			if i > 0 {
				b.WriteString(", ")
			}
			b.Write(mustMarshal(k))
			b.WriteString(": ")
			writeStable(b, v[k])
		}
		b.WriteString("}")
	case []any:
		b.WriteString("[")
		for i, x := range v {
			if i > 0 {
				b.WriteString(", ")
			}
			writeStable(b, x)
		}
		b.WriteString("]")
	case number:
		b.WriteString(string(v))
	default:
		b.Write(mustMarshal(v))
	}
}

func stable(v any) string {
	var b strings.Builder
	writeStable(&b, v)
	return b.String()
}

func mustDocument(t testing.TB, s string) *Document {
	t.Helper()
	d, err := ParseDocument([]byte(s), Options{})
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return d
}

// SummaryReusing gives the summary Summary gives, whatever it reuses, and
// chains: a summary made by reuse can be reused.
func TestSummaryReusing(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for i := range 300 {
		v := recordValue(rng, 0)
		w := editValue(rng, v, rng.IntN(4))
		x := editValue(rng, w, rng.IntN(4))
		a, b, c := stable(v), stable(w), stable(x)
		if i%4 == 0 {
			b = spell(rng, w) // other bytes: little or nothing to reuse
		}
		sa := mustSummarize(t, a)
		full := mustDocument(t, b).Summary()
		got := mustDocument(t, b).SummaryReusing(sa)
		checkSummary(t, full)
		checkSummary(t, got)
		if got.hash != full.hash || got.Size() != full.Size() || Distance(got, full, 0) != 0 {
			t.Fatalf("reusing %s\nfor %s: another summary", a, b)
		}
		if d1, d2 := Distance(full, sa, 0), Distance(got, sa, 0); d1 != d2 {
			t.Fatalf("distances %d and %d", d1, d2)
		}
		fullC := mustDocument(t, c).Summary()
		gotC := mustDocument(t, c).SummaryReusing(got)
		checkSummary(t, gotC)
		if gotC.hash != fullC.hash || Distance(gotC, got, 0) != Distance(fullC, full, 0) || Distance(gotC, sa, 0) != Distance(fullC, sa, 0) {
			t.Fatalf("chained reuse differs:\n%s\n%s\n%s", a, b, c)
		}
	}
}

// SummaryReusing does copy what it can: a summary whose large subtree
// was tampered with passes the damage on to a document that has that
// subtree byte for byte (and only then).
func TestSummaryReusingCopies(t *testing.T) {
	base := string(profileRecord(4<<10, [4]int{}, -1))
	prev := mustSummarize(t, base)
	tampered := *prev
	tampered.conts = slices.Clone(prev.conts)
	profile := 0
	for i := range tampered.conts {
		if tampered.conts[i].count() > tampered.conts[profile].count() {
			profile = i
		}
	}
	tampered.conts[profile].hash++
	mine := mustDocument(t, string(profileRecord(4<<10, [4]int{1}, -1)))
	if mine.SummaryReusing(&tampered).hash == mine.Summary().hash {
		t.Fatalf("the profile was not copied from the previous summary")
	}
	if d := Distance(mine.SummaryReusing(prev), mine.Summary(), 0); d != 0 {
		t.Fatalf("reuse of an intact summary: distance %d", d)
	}
	checkSummary(t, mine.SummaryReusing(prev))
	// A large object (its trie nodes copied), in an array, nested.
	big := flatRecord(2000, nil, nil)
	v1 := mustSummarize(t, `{"a": {"big": `+big+`, "list": [`+big+`, 1]}, "n": 1}`)
	v2 := mustDocument(t, `{"a": {"big": `+big+`, "list": [`+big+`, 1]}, "n": 2}`)
	r2 := v2.SummaryReusing(v1)
	checkSummary(t, r2)
	if f := v2.Summary(); f.hash != r2.hash || Distance(f, v1, 0) != 1 || Distance(r2, v1, 0) != 1 {
		t.Fatalf("reusing a large object: another summary")
	}
	other := mustDocument(t, string(profileRecord(4<<10, [4]int{1}, 3)))
	if other.SummaryReusing(&tampered).hash != other.Summary().hash {
		t.Fatalf("a changed profile was copied")
	}
}

// FuzzDistance checks Summarize, Distance, SummaryReusing and ChooseBase
// on arbitrary documents: Summarize accepts what the parser accepts;
// Distance is 0 on a document and itself, symmetric, 0 exactly when the
// package's equality says equal, equal to the model distance on values
// decoded by encoding/json, within its limit; the positional distance
// obeys the triangle inequality; a summary made by reuse is the same
// summary; ChooseBase agrees with the brute force.
func FuzzDistance(f *testing.F) {
	for _, tc := range equalityCases {
		f.Add([]byte(tc.a), []byte(tc.b), []byte(`{"a":[1,2,{"b":null}]}`))
	}
	f.Add([]byte(`{"a":{"x":1,"y":[2,3]},"b":"`+strings.Repeat("x", 300)+`"}`),
		[]byte(`{"a":{"x":1,"y":[2,3]},"b":"`+strings.Repeat("x", 300)+`","c":{}}`),
		[]byte(`{"b":"`+strings.Repeat("x", 300)+`","a":{"y":[2,3.0],"x":1e0}}`))
	f.Add([]byte(`[1,2,3,4]`), []byte(`[0,1,2,3,4]`), []byte(`[1,2,4]`))
	f.Add([]byte(flatRecord(40, nil, nil)), []byte(flatRecord(40, map[int]string{3: "1"}, nil)), []byte(flatRecord(39, nil, nil)))
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		opts := Options{MaxDepth: fuzzMaxDepth}
		var sums [3]*Summary
		var docs [3]*Document
		for i, data := range [][]byte{a, b, c} {
			d, err := ParseDocument(data, opts)
			_, perr := parse(data, fuzzMaxDepth)
			if (err == nil) != (perr == nil) {
				t.Fatalf("ParseDocument: %v, parse: %v", err, perr)
			}
			if err != nil {
				return
			}
			docs[i], sums[i] = d, d.Summary()
			checkSummary(t, sums[i])
		}
		sa, sb, sc := sums[0], sums[1], sums[2]
		d := Distance(sa, sb, 0)
		if Distance(sa, sa, 0) != 0 || Distance(sb, sa, 0) != d {
			t.Fatalf("not 0 on itself or not symmetric: %q %q", a, b)
		}
		if eq := equalDocs(docs[0].t, docs[1].t); eq != (d == 0) || eq != sa.Equal(sb) {
			t.Fatalf("Distance %d, Equal %v, the package's equality %v: %q %q", d, sa.Equal(sb), eq, a, b)
		}
		if d > sa.Size()+sb.Size()-1 {
			t.Fatalf("Distance %d past the sizes %d and %d", d, sa.Size(), sb.Size())
		}
		for _, limit := range []int{1, 2, d / 2, d, d + 1} {
			got := Distance(sa, sb, limit)
			if limit > 0 && (d < limit && got != d || d >= limit && (got < limit || got > d)) {
				t.Fatalf("Distance with limit %d = %d, without %d", limit, got, d)
			}
		}
		p := func(x, y *Summary) int { return distance(x, y, 1<<62, true) }
		if ab, bc, ac := p(sa, sb), p(sb, sc), p(sa, sc); ac > ab+bc || ab > ac+bc || bc > ab+ac {
			t.Fatalf("triangle: %d %d %d: %q %q %q", ab, bc, ac, a, b, c)
		}
		if va, ok := oracleDecode(a); ok {
			if vb, ok := oracleDecode(b); ok {
				if want := modelDistance(va, vb, false); d != want {
					t.Fatalf("Distance %d, the model %d: %q %q", d, want, a, b)
				}
				if got, want := p(sa, sb), modelDistance(va, vb, true); got != want {
					t.Fatalf("positional distance %d, the model %d: %q %q", got, want, a, b)
				}
			}
		}
		r := docs[1].SummaryReusing(sa)
		checkSummary(t, r)
		if r.hash != sb.hash || Distance(r, sa, 0) != d || Distance(r, sc, 0) != Distance(sb, sc, 0) {
			t.Fatalf("reuse gives another summary: %q %q", a, b)
		}
		cands := []Candidate{{Summary: sb, Seq: 1}, {Summary: sc, Seq: uint64(len(c) % 3), ThreadLastRead: len(c)%2 == 0}, {Summary: sb, Seq: 0, ProcessLastRead: true}}
		if got, want := ChooseBase(sa, cands), chooseBaseBrute(sa, cands); got != want {
			t.Fatalf("ChooseBase %+v, the brute force %+v", got, want)
		}
	})
}
