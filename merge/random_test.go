package merge

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// randDoc is a JSON value built to be edited and written in several ways.
type randDoc struct {
	text string // a scalar or array, as written
	keys []string
	vals []*randDoc // nil for a scalar or array
}

func (d *randDoc) isObject() bool { return d.text == "" }

func (d *randDoc) clone() *randDoc {
	c := &randDoc{text: d.text, keys: slices.Clone(d.keys)}
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
	if depth > 0 && rng.IntN(3) == 0 {
		return randObject(rng, depth-1, rng.IntN(14))
	}
	return &randDoc{text: randScalars[rng.IntN(len(randScalars))]}
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

// Merges of objects large enough to be indexed by hash, with keys in
// different orders and spellings on the three sides, agree with the model
// merge on decoded values, and list their conflicts in key order.
func TestRandomMerges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	conflicts := 0
	for n := range 600 {
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
		if !ok || !oracleValuesEqual(got, want) || len(res.Conflicts) != wantConflicts {
			t.Fatalf("case %d: merged %s with %d conflicts, the model says %s with %d\nbase %s\nmine %s\ntheirs %s",
				n, res.Merged, len(res.Conflicts), mustMarshal(want), wantConflicts, in.Base, in.Mine, in.Theirs)
		}
		if !slices.IsSortedFunc(res.Conflicts, func(a, b Conflict) int { return slices.Compare(a.Path, b.Path) }) {
			t.Fatalf("case %d: conflicts not in key order: %q", n, conflictSummary(res.Conflicts))
		}
		conflicts += len(res.Conflicts)
	}
	if conflicts < 200 {
		t.Errorf("only %d conflicts in all cases: the generator does not test their order", conflicts)
	}
}
