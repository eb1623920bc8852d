package merge

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
)

func mustParse(t testing.TB, s string) *tree {
	t.Helper()
	tr, err := parse([]byte(s), DefaultMaxDepth)
	if err != nil {
		t.Fatalf("parse %q: %s at %d", s, err.reason, err.offset)
	}
	return tr
}

func TestEqual(t *testing.T) {
	cases := []struct {
		a, b string
		eq   bool
	}{
		{`1`, `1.0`, true}, {`1e2`, `100`, true}, {`100`, `1E+2`, true}, {`0.5`, `5e-1`, true},
		{`-0`, `0`, true}, {`0.0e5`, `-0.000`, true}, {`120`, `1.2e2`, true}, {`0.00120`, `1.2e-3`, true},
		{`9007199254740993`, `9007199254740992`, false}, {`1`, `-1`, false}, {`1e400`, `1e401`, false},
		{`1e400`, `10e399`, true}, {`1e99999999999999999999`, `1e99999999999999999998`, false},
		{`1e99999999999999999999`, `10e99999999999999999998`, true}, {`1e-99999999999999999999`, `0.1e-99999999999999999998`, true},
		{`123456789012345678901234567890`, `1.23456789012345678901234567890e29`, true},
		{`"é"`, `"\u00e9"`, true}, {`"\u00E9"`, `"\u00e9"`, true}, {`"a/b"`, `"a\/b"`, true},
		{`"\ud83d\ude00"`, `"😀"`, true}, {`"\ud800"`, `"\ufffd"`, false}, {`"\ud800"`, `"\uD800"`, true},
		{`"\ud800\u0041"`, `"\ud800A"`, true}, {`"a"`, `"b"`, false}, {`"1"`, `1`, false},
		{`{"a":1,"b":[1,2]}`, `{ "b" : [ 1 , 2.0 ] , "a" : 1 }`, true}, {`{"a":1}`, `{"a":1,"b":1}`, false},
		{`{"a":1,"b":2}`, `{"a":1,"c":2}`, false}, {`[1,2]`, `[2,1]`, false}, {`[]`, `{}`, false},
		{`[{"a":1,"b":[1,{"c":"é"}]}]`, `[ {"b":[1.0,{"c":"\u00e9"}],"a":1} ]`, true},
		{`[[{"a":1}],[]]`, `[[{"a":2}],[]]`, false}, {`{"l":[[1],[{"k":[]}]]}`, `{"l":[[1],[{"k":[ ]}]]}`, true},
		{`null`, `false`, false}, {`true`, `true`, true}, {`{"\u0041":{}}`, `{"A":{}}`, true},
	}
	for _, tc := range cases {
		if got := equalDocs(mustParse(t, tc.a), mustParse(t, tc.b)); got != tc.eq {
			t.Errorf("equal(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.eq)
		}
		if eq, ok := oracleEqual([]byte(tc.a), []byte(tc.b)); ok && eq != tc.eq {
			t.Errorf("oracle says equal(%s, %s) = %v, the table %v", tc.a, tc.b, eq, tc.eq)
		}
	}
}

// TestEqualAgainstEncodingJSON checks equal against encoding/json decoding
// on random values written in random but equivalent spellings, and on
// random pairs of different values.
func TestEqualAgainstEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	judged, equalPairs := 0, 0
	for range 3000 {
		v := randomValue(rng, 0)
		a := spell(rng, v)
		b := spell(rng, v)
		if rng.IntN(2) == 0 {
			b = spell(rng, mutate(rng, v))
		}
		got := equalDocs(mustParse(t, a), mustParse(t, b))
		want, ok := oracleEqual([]byte(a), []byte(b))
		if !ok {
			continue
		}
		judged++
		if want {
			equalPairs++
		}
		if got != want {
			t.Fatalf("equal(%s, %s) = %v, encoding/json says %v", a, b, got, want)
		}
	}
	t.Logf("%d judged, %d equal", judged, equalPairs)
	if judged < 2000 || equalPairs < judged/3 || equalPairs > judged*9/10 {
		t.Fatalf("weak sample: %d judged, %d equal", judged, equalPairs)
	}
}

// A random value is nil, bool, number (decimal text), string, []any or
// map[string]any.
type number string

func randomValue(rng *rand.Rand, depth int) any {
	n := 7
	if depth > 3 {
		n = 5
	}
	switch rng.IntN(n) {
	case 0:
		return nil
	case 1:
		return rng.IntN(2) == 0
	case 2:
		return randomNumber(rng)
	case 3, 4:
		return randomString(rng)
	case 5:
		l := make([]any, rng.IntN(4))
		for i := range l {
			l[i] = randomValue(rng, depth+1)
		}
		return l
	default:
		m := map[string]any{}
		for range rng.IntN(5) {
			m[randomString(rng)] = randomValue(rng, depth+1)
		}
		return m
	}
}

func randomNumber(rng *rand.Rand) number {
	switch rng.IntN(4) {
	case 0:
		return number(strconv.Itoa(rng.IntN(2000) - 1000))
	case 1:
		return number("9007199254740" + strconv.Itoa(990+rng.IntN(10)))
	case 2:
		return number(fmt.Sprintf("%d.%03d", rng.IntN(100), rng.IntN(1000)))
	default:
		return number(fmt.Sprintf("%de%d", rng.IntN(50), rng.IntN(40)-20))
	}
}

var stringAlphabet = []string{"a", "b", "A", ".", "*", "\\", `"`, "/", "é", "日", "😀", "\n", "\t", "\x01", " ", "#", ":", "@"}

func randomString(rng *rand.Rand) string {
	var b strings.Builder
	for range rng.IntN(4) {
		b.WriteString(stringAlphabet[rng.IntN(len(stringAlphabet))])
	}
	return b.String()
}

// mutate returns a value that is usually, not always, different from v.
func mutate(rng *rand.Rand, v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = x
		}
		keys := sortedKeys(m)
		switch {
		case len(keys) > 0 && rng.IntN(2) == 0:
			k := keys[rng.IntN(len(keys))]
			m[k] = mutate(rng, m[k])
		case len(keys) > 0 && rng.IntN(2) == 0:
			delete(m, keys[rng.IntN(len(keys))])
		default:
			m[randomString(rng)] = randomValue(rng, 3)
		}
		return m
	case []any:
		l := append([]any(nil), v...)
		if len(l) > 0 && rng.IntN(2) == 0 {
			i := rng.IntN(len(l))
			l[i] = mutate(rng, l[i])
			return l
		}
		return append(l, randomValue(rng, 3))
	case number:
		if rng.IntN(2) == 0 {
			return number(string(v) + "1")
		}
		return randomNumber(rng)
	}
	return randomValue(rng, 3)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// spell writes v as JSON with random whitespace, key order, number and
// string spellings.
func spell(rng *rand.Rand, v any) string {
	var b strings.Builder
	spellTo(&b, rng, v)
	return b.String()
}

func space(rng *rand.Rand) string {
	return []string{"", "", " ", "\n  ", "\t"}[rng.IntN(5)]
}

func spellTo(b *strings.Builder, rng *rand.Rand, v any) {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case number:
		b.WriteString(respellNumber(rng, string(v)))
	case string:
		spellString(b, rng, v)
	case []any:
		b.WriteString("[" + space(rng))
		for i, x := range v {
			if i > 0 {
				b.WriteString("," + space(rng))
			}
			spellTo(b, rng, x)
		}
		b.WriteString(space(rng) + "]")
	case map[string]any:
		keys := sortedKeys(v)
		rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		b.WriteString("{" + space(rng))
		for i, k := range keys {
			if i > 0 {
				b.WriteString("," + space(rng))
			}
			spellString(b, rng, k)
			b.WriteString(space(rng) + ":" + space(rng))
			spellTo(b, rng, v[k])
		}
		b.WriteString(space(rng) + "}")
	}
}

// respellNumber writes the same decimal value differently.
func respellNumber(rng *rand.Rand, s string) string {
	switch rng.IntN(4) {
	case 0:
		if !strings.ContainsAny(s, ".eE") {
			return s + ".0"
		}
	case 1:
		if !strings.ContainsAny(s, "eE") {
			return s + "e0"
		}
	case 2:
		if i := strings.IndexAny(s, "eE"); i < 0 && !strings.Contains(s, ".") {
			return s + "0e-1"
		}
	}
	return s
}

func spellString(b *strings.Builder, rng *rand.Rand, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || rng.IntN(4) == 0:
			if r > 0xFFFF {
				r1, r2 := 0xD800+((r-0x10000)>>10), 0xDC00+((r-0x10000)&0x3FF)
				fmt.Fprintf(b, `\u%04x\u%04X`, r1, r2)
			} else if r == '/' && rng.IntN(2) == 0 {
				b.WriteString(`\/`)
			} else {
				fmt.Fprintf(b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}
