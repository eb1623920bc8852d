package merge

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// randDoc is a JSON value built to be edited and written in several ways.
type randDoc struct {
	text  string // a scalar or array, as written
	array bool   // an array of vals
	keys  []string
	vals  []*randDoc // nil for a scalar
}

func (d *randDoc) isObject() bool { return d.text == "" && !d.array }

func (d *randDoc) clone() *randDoc {
	c := &randDoc{text: d.text, array: d.array, keys: slices.Clone(d.keys)}
	for _, v := range d.vals {
		c.vals = append(c.vals, v.clone())
	}
	return c
}

// randKeys are few enough that objects share keys, many enough that objects
// grow past smallObject.
var randKeys = []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "A", "é", "a.b", "", `"q`}

var randScalars = []string{`1`, `1.0`, `10e-1`, `2`, `"x"`, `"\u0078"`, `"y"`, `null`, `true`, `false`, `[1, 2]`, `[1,2.0]`, `[]`, `{}`}

func randValue(rng *rand.Rand, depth int) *randDoc {
	if depth > 0 {
		switch rng.IntN(6) {
		case 0, 1:
			return randObject(rng, depth-1, rng.IntN(14))
		case 2:
			return randArray(rng, depth-1)
		}
	}
	return &randDoc{text: randScalars[rng.IntN(len(randScalars))]}
}

// randFresh is a counter for values no other value equals, so that the
// diffs of arrays of them have one longest common subsequence.
var randFresh int

func freshScalar(rng *rand.Rand) *randDoc {
	randFresh++
	if rng.IntN(2) == 0 {
		return &randDoc{text: fmt.Sprintf(`"s%d"`, randFresh)}
	}
	return &randDoc{text: fmt.Sprintf(`%d.0`, randFresh)}
}

// randElement is a new element for an array: keyed arrays get objects with
// a new id.
func randElement(rng *rand.Rand, depth int, keyed bool) *randDoc {
	if keyed {
		randFresh++
		e := randObject(rng, 0, rng.IntN(3))
		if i := slices.Index(e.keys, "id"); i >= 0 {
			e.keys = slices.Delete(e.keys, i, i+1)
			e.vals = slices.Delete(e.vals, i, i+1)
		}
		e.keys = append([]string{"id"}, e.keys...)
		e.vals = append([]*randDoc{{text: fmt.Sprint(randFresh)}}, e.vals...)
		return e
	}
	switch {
	case depth > 0 && rng.IntN(4) == 0:
		randFresh++
		e := randObject(rng, depth-1, 1+rng.IntN(3))
		if i := slices.Index(e.keys, "n"); i >= 0 {
			e.keys = slices.Delete(e.keys, i, i+1)
			e.vals = slices.Delete(e.vals, i, i+1)
		}
		e.keys = append(e.keys, "n")
		e.vals = append(e.vals, &randDoc{text: fmt.Sprint(randFresh)})
		return e
	case depth > 0 && rng.IntN(6) == 0:
		return randArray(rng, depth-1)
	}
	return freshScalar(rng)
}

// randArray is an array of distinct values, sometimes of objects with ids.
func randArray(rng *rand.Rand, depth int) *randDoc {
	d := &randDoc{array: true}
	keyed := rng.IntN(3) == 0
	for range rng.IntN(7) {
		d.vals = append(d.vals, randElement(rng, depth, keyed))
	}
	return d
}

// randEditArray deletes, inserts, replaces, edits in place and rarely
// moves elements of array d.
func randEditArray(rng *rand.Rand, d *randDoc, depth int) {
	keyed := len(d.vals) > 0 && d.vals[0].isObject() && len(d.vals[0].keys) > 0 && d.vals[0].keys[0] == "id"
	for i := 0; i < len(d.vals); i++ {
		switch rng.IntN(10) {
		case 0:
			d.vals = slices.Delete(d.vals, i, i+1)
			i--
		case 1:
			d.vals = slices.Insert(d.vals, i, randElement(rng, depth, keyed))
			i++
		case 2:
			if !keyed {
				d.vals[i] = randElement(rng, depth, false)
			}
		case 3, 4:
			switch e := d.vals[i]; {
			case e.isObject() && keyed:
				randEditKeyed(rng, e)
			case e.isObject():
				randEdit(rng, e, depth)
			case e.array:
				randEditArray(rng, e, depth-1)
			}
		case 5:
			if rng.IntN(3) == 0 && len(d.vals) > 1 {
				j := rng.IntN(len(d.vals))
				d.vals[i], d.vals[j] = d.vals[j], d.vals[i]
			}
		}
	}
	if rng.IntN(2) == 0 {
		d.vals = append(d.vals, randElement(rng, depth, keyed))
	}
}

// randEditKeyed changes the members of a keyed element but its id.
func randEditKeyed(rng *rand.Rand, e *randDoc) {
	id := e.vals[0]
	rest := &randDoc{keys: e.keys[1:], vals: e.vals[1:]}
	randEdit(rng, rest, 0)
	rest.keys = slices.Clone(rest.keys)
	if i := slices.Index(rest.keys, "id"); i >= 0 {
		rest.keys = slices.Delete(rest.keys, i, i+1)
		rest.vals = slices.Delete(rest.vals, i, i+1)
	}
	e.keys = append([]string{"id"}, rest.keys...)
	e.vals = append([]*randDoc{id}, rest.vals...)
}

func randObject(rng *rand.Rand, depth, n int) *randDoc {
	d := &randDoc{}
	for _, i := range rng.Perm(len(randKeys))[:min(n, len(randKeys))] {
		d.keys = append(d.keys, randKeys[i])
		d.vals = append(d.vals, randValue(rng, depth))
	}
	return d
}

// randEdit changes some members of object d in place: new values, deleted
// and added keys, changes inside nested objects, and a new key order.
func randEdit(rng *rand.Rand, d *randDoc, depth int) {
	for i := 0; i < len(d.keys); i++ {
		switch rng.IntN(12) {
		case 0:
			d.vals[i] = randValue(rng, depth)
		case 1:
			d.keys = slices.Delete(d.keys, i, i+1)
			d.vals = slices.Delete(d.vals, i, i+1)
			i--
		case 2, 3:
			if d.vals[i].isObject() {
				randEdit(rng, d.vals[i], depth-1)
			} else if d.vals[i].array {
				randEditArray(rng, d.vals[i], depth-1)
			}
		}
	}
	for range rng.IntN(3) {
		if k := randKeys[rng.IntN(len(randKeys))]; !slices.Contains(d.keys, k) {
			d.keys = append(d.keys, k)
			d.vals = append(d.vals, randValue(rng, depth))
		}
	}
	if rng.IntN(4) == 0 {
		p := rng.Perm(len(d.keys))
		keys, vals := slices.Clone(d.keys), slices.Clone(d.vals)
		for i, j := range p {
			d.keys[i], d.vals[i] = keys[j], vals[j]
		}
	}
}

// write writes d compactly or indented, keys sometimes with escapes.
func (d *randDoc) write(rng *rand.Rand, b *strings.Builder, indent string) {
	if d.array {
		b.WriteString("[")
		inner := indent
		if indent != "" {
			inner += "  "
		}
		for i, v := range d.vals {
			if i > 0 {
				b.WriteString(",")
			}
			if indent != "" {
				b.WriteString("\n" + inner)
			} else if i > 0 && rng.IntN(2) == 0 {
				b.WriteString(" ")
			}
			v.write(rng, b, inner)
		}
		if indent != "" && len(d.vals) > 0 {
			b.WriteString("\n" + indent)
		}
		b.WriteString("]")
		return
	}
	if !d.isObject() {
		b.WriteString(d.text)
		return
	}
	b.WriteString("{")
	for i, k := range d.keys {
		if i > 0 {
			b.WriteString(",")
		}
		if indent != "" {
			b.WriteString("\n" + indent)
		}
		switch {
		case k == `"q`:
			b.WriteString(`"\"q"`)
		case k == "é" && rng.IntN(2) == 0:
			b.WriteString(`"\u00e9"`)
		case len(k) == 1 && rng.IntN(4) == 0:
			fmt.Fprintf(b, `"\u%04x"`, k[0])
		default:
			b.WriteString(`"` + k + `"`)
		}
		b.WriteString(": ")
		inner := indent
		if indent != "" {
			inner += "  "
		}
		d.vals[i].write(rng, b, inner)
	}
	b.WriteString("}")
}

func (d *randDoc) encode(rng *rand.Rand) []byte {
	var b strings.Builder
	indent := ""
	if rng.IntN(2) == 0 {
		indent = "  "
	}
	d.write(rng, &b, indent)
	return []byte(b.String())
}

// randMergeInputs returns a random base and independent random edits of it
// as mine and theirs.
func randMergeInputs(rng *rand.Rand) Inputs {
	base := randObject(rng, 2, 4+rng.IntN(len(randKeys)))
	mine, theirs := base.clone(), base.clone()
	randEdit(rng, mine, 2)
	if rng.IntN(4) > 0 {
		randEdit(rng, theirs, 2)
	}
	in := Inputs{Base: base.encode(rng), HasBase: rng.IntN(10) > 0, Mine: mine.encode(rng), Theirs: theirs.encode(rng), HasTheirs: true}
	if !in.HasBase {
		in.Base = nil
	}
	return in
}

// raceEnabled is set when the race detector is on, which makes the long
// random tests ten times slower.
var raceEnabled bool

// Merges of objects large enough to be indexed by hash, with keys in
// different orders and spellings on the three sides, and arrays of
// distinct values and of keyed objects edited on both sides, agree with
// the model merge on decoded values, and list their conflicts in path
// order.
func TestRandomMerges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	conflicts, judgedCases, arrayMerges := 0, 0, 0
	cases := 2000
	if raceEnabled || testing.Short() {
		cases = 400
	}
	for n := range cases {
		in := randMergeInputs(rng)
		res, err := Merge(in, Options{})
		if err != nil {
			t.Fatalf("case %d: %v\n%s\n%s\n%s", n, err, in.Base, in.Mine, in.Theirs)
		}
		var bv any = map[string]any{}
		if in.HasBase {
			bv, _ = oracleDecode(in.Base)
		}
		mv, _ := oracleDecode(in.Mine)
		tv, _ := oracleDecode(in.Theirs)
		got, ok := oracleDecode(res.Merged)
		want, wantConflicts, judged := modelMerge(bv, mv, tv)
		if !judged {
			continue
		}
		judgedCases++
		arrayMerges += res.Merges[StrategySequence] + res.Merges[StrategyKeyed]
		if !ok || !oracleValuesEqual(got, want) || len(res.Conflicts) != wantConflicts {
			t.Fatalf("case %d: merged %s with %d conflicts, the model says %s with %d\nbase %s\nmine %s\ntheirs %s",
				n, res.Merged, len(res.Conflicts), mustMarshal(want), wantConflicts, in.Base, in.Mine, in.Theirs)
		}
		if !slices.IsSortedFunc(res.Conflicts, comparePaths) {
			t.Fatalf("case %d: conflicts not in key order: %q", n, conflictSummary(res.Conflicts))
		}
		conflicts += len(res.Conflicts)
	}
	t.Logf("%d cases judged, %d conflicts, %d arrays merged by element", judgedCases, conflicts, arrayMerges)
	if conflicts < cases/2 {
		t.Errorf("only %d conflicts in all cases: the generator does not test their order", conflicts)
	}
	if judgedCases < cases*95/100 || arrayMerges < cases/15 {
		t.Errorf("weak sample: %d cases judged, %d arrays merged by element", judgedCases, arrayMerges)
	}
}

// comparePaths orders conflicts by path: keys by bytes, indices by number.
func comparePaths(a, b Conflict) int {
	for i := 0; i < len(a.Path) && i < len(b.Path); i++ {
		if a.Path[i] == b.Path[i] {
			continue
		}
		if a.IsIndex(i) && b.IsIndex(i) {
			x, _ := strconv.Atoi(a.Path[i])
			y, _ := strconv.Atoi(b.Path[i])
			return x - y
		}
		return strings.Compare(a.Path[i], b.Path[i])
	}
	return len(a.Path) - len(b.Path)
}
