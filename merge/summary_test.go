package merge

import (
	"errors"
	"fmt"
	"math/rand/v2"
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
