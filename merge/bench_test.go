package merge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// A benchmark record is written the way Python's json.dump writes by default
// (", " and ": " separators, non-ASCII escaped): sections of entries.
type benchEntry struct {
	count  int
	score  string
	active bool
	drop   bool
}

const entriesPerSection = 32

func benchDoc(entries []benchEntry, extra string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id": 12345, "name": "Ren\u00e9e Dupont", "email": "renee@example.com", `)
	for i, e := range entries {
		if i%entriesPerSection == 0 {
			if i > 0 {
				b.WriteString("}, ")
			}
			fmt.Fprintf(&b, `"section_%d": {`, i/entriesPerSection)
		} else {
			b.WriteString(", ")
		}
		if e.drop {
			fmt.Fprintf(&b, `"placeholder_%d": null`, i)
			continue
		}
		fmt.Fprintf(&b, `"entry_%d": {"title": "caf\u00e9 n\u00b0%d \"quoted\"", "count": %d, "score": %s, `+
			`"active": %t, "tags": ["a", "b", "c/d"], "meta": {"created": "2024-01-02T03:04:05Z", "by": null}}`,
			i, i, e.count, e.score, e.active)
	}
	b.WriteString("}")
	b.WriteString(extra)
	b.WriteString("}\n")
	return b.Bytes()
}

// benchInputs returns base, mine and theirs of about size bytes; mine
// changes one entry or one in eight (and adds and deletes a key), theirs
// changes another entry.
func benchInputs(size int, many bool) (base, mine, theirs []byte) {
	one := len(benchDoc(make([]benchEntry, 1), ""))
	perEntry := len(benchDoc(make([]benchEntry, 101), "")) - len(benchDoc(make([]benchEntry, 1), ""))
	n := max(1, 1+(size-one)*100/perEntry)
	entries := make([]benchEntry, n)
	for i := range entries {
		entries[i] = benchEntry{count: i * 7, score: strconv.Itoa(i%10) + ".5", active: i%2 == 0}
	}
	base = benchDoc(entries, "")
	mineEntries := append([]benchEntry(nil), entries...)
	extra := ""
	if many {
		for i := 0; i < n; i += 8 {
			mineEntries[i].count++
			mineEntries[i].score = "1.50e0" // a new value, or where base had 1.5 only a new spelling
		}
		mineEntries[n/2].drop = true
		extra = `, "added": {"k": [1, 2, 3]}`
	} else {
		mineEntries[0].count++
	}
	mine = benchDoc(mineEntries, extra)
	theirsEntries := append([]benchEntry(nil), entries...)
	theirsEntries[n-1].active = !theirsEntries[n-1].active
	theirs = benchDoc(theirsEntries, "")
	return base, mine, theirs
}

func TestBenchInputsMerge(t *testing.T) {
	for _, size := range []int{1 << 10, 64 << 10} {
		for _, many := range []bool{false, true} {
			base, mine, theirs := benchInputs(size, many)
			res, err := Merge(Inputs{Base: base, HasBase: true, Mine: mine, Theirs: theirs, HasTheirs: true}, Options{})
			if err != nil || len(res.Conflicts) > 0 || res.Changed == 0 {
				t.Fatalf("size %d many %v: err %v, changed %d, conflicts %d", size, many, err, res.Changed, len(res.Conflicts))
			}
			if got, want := encodingJSONMerge(base, mine, theirs), res.Merged; !jsonEqualBytes(t, got, want) {
				t.Fatalf("size %d many %v: encoding/json merge differs", size, many)
			}
		}
	}
}

func jsonEqualBytes(t *testing.T, a, b []byte) bool {
	eq, ok := oracleEqual(a, b)
	if !ok {
		t.Fatalf("oracle cannot judge")
	}
	return eq
}

// encodingJSONMerge is the straightforward way: decode all three, merge the
// values, encode the result.
func encodingJSONMerge(base, mine, theirs []byte) []byte {
	decode := func(data []byte) any {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			panic(err)
		}
		return v
	}
	merged, _, _ := modelMerge(decode(base), decode(mine), decode(theirs))
	return mustMarshal(merged)
}

func BenchmarkMerge(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"1KB", 1 << 10}, {"64KB", 64 << 10}, {"1MB", 1 << 20}} {
		for _, change := range []string{"one", "many"} {
			base, mine, theirs := benchInputs(size.bytes, change == "many")
			total := int64(len(base) + len(mine) + len(theirs))
			in := Inputs{Base: base, HasBase: true, Mine: mine, Theirs: theirs, HasTheirs: true}
			prefix := size.name + "/" + change + "/"
			b.Run(prefix+"gjson.ValidBytes", func(b *testing.B) {
				b.SetBytes(total)
				for b.Loop() {
					if !gjson.ValidBytes(base) || !gjson.ValidBytes(mine) || !gjson.ValidBytes(theirs) {
						b.Fatal("invalid")
					}
				}
			})
			b.Run(prefix+"merge", func(b *testing.B) {
				b.SetBytes(total)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Merge(in, Options{}); err != nil {
						b.Fatal(err)
					}
				}
			})
			// The machine is shared and noisy: timing both in the same
			// iterations gives a ratio that contention affects alike.
			b.Run(prefix+"ratio", func(b *testing.B) {
				var valid, merged time.Duration
				for b.Loop() {
					t0 := time.Now()
					if !gjson.ValidBytes(base) || !gjson.ValidBytes(mine) || !gjson.ValidBytes(theirs) {
						b.Fatal("invalid")
					}
					t1 := time.Now()
					if _, err := Merge(in, Options{}); err != nil {
						b.Fatal(err)
					}
					merged += time.Since(t1)
					valid += t1.Sub(t0)
				}
				b.ReportMetric(float64(merged)/float64(valid), "x-ValidBytes")
			})
			b.Run(prefix+"encoding-json", func(b *testing.B) {
				b.SetBytes(total)
				b.ReportAllocs()
				for b.Loop() {
					encodingJSONMerge(base, mine, theirs)
				}
			})
		}
	}
}

func BenchmarkParse(b *testing.B) {
	docs := map[string][]byte{"profile-256KB": profileRecord(256<<10, [4]int{}, -1)}
	for _, size := range []int{1 << 10, 64 << 10} {
		docs[strconv.Itoa(size)], _, _ = benchInputs(size, false)
	}
	for _, name := range slices.Sorted(maps.Keys(docs)) {
		doc := docs[name]
		b.Run(name+"/gjson", func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				gjson.ValidBytes(doc)
			}
		})
		b.Run(name+"/parse", func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				parse(doc, DefaultMaxDepth)
			}
		})
	}
}

// profileRecord is a record laid out like the end-to-end benchmark's
// (bench/rmw): fixed-width counters w0..w3, some escaped non-ASCII text, and
// a "profile" object of 48-byte fields filling it to about size bytes
// (256 KB: about 5,400 keys). counters gives the value of each counter;
// the profile field numbered changed (if any) has a different value.
func profileRecord(size int, counters [4]int, changed int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id": 7, "name": "Zo\u00eb \u00dcnal", "score": 1.5, "tags": ["a", "b"], `)
	for i, c := range counters {
		fmt.Fprintf(&b, `"w%d": "%010d", `, i, c)
	}
	b.WriteString(`"profile": {`)
	const field = 48
	for i := 0; size-b.Len() > 2*field; i++ {
		// Keys f0, f1, ..., f10, ... as bench/rmw writes them: not in
		// byte order, which matters to anything that sorts keys.
		key := fmt.Sprintf(`"f%d": "`, i)
		b.WriteString(key)
		fill := byte('x')
		if i == changed {
			fill = 'y'
		}
		b.Write(bytes.Repeat([]byte{fill}, field-len(key)-3))
		b.WriteString(`", `)
	}
	b.WriteString(`"pad": ""}}`)
	return b.Bytes()
}

// BenchmarkMergeProfile is mergefs's commit of one counter change to a
// record of many short fields: theirs is base (nobody else committed since
// the writer read) or has another counter changed. In nested-change, mine
// changes a profile field instead, so the merge descends into the profile.
func BenchmarkMergeProfile(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"4KB", 4 << 10}, {"256KB", 256 << 10}} {
		base := profileRecord(size.bytes, [4]int{}, -1)
		for _, variant := range []string{"theirs=base", "theirs-changed", "nested-change"} {
			mine := profileRecord(size.bytes, [4]int{1, 0, 0, 0}, -1)
			theirs := base
			switch variant {
			case "theirs-changed":
				theirs = profileRecord(size.bytes, [4]int{0, 1, 0, 0}, -1)
			case "nested-change":
				mine = profileRecord(size.bytes, [4]int{}, 30)
				theirs = profileRecord(size.bytes, [4]int{0, 1, 0, 0}, -1)
			}
			total := int64(len(base) + len(mine) + len(theirs))
			in := Inputs{Base: base, HasBase: true, Mine: mine, Theirs: bytes.Clone(theirs), HasTheirs: true}
			prefix := size.name + "/" + variant + "/"
			b.Run(prefix+"gjson.ValidBytes", func(b *testing.B) {
				b.SetBytes(total)
				for b.Loop() {
					if !gjson.ValidBytes(base) || !gjson.ValidBytes(mine) || !gjson.ValidBytes(theirs) {
						b.Fatal("invalid")
					}
				}
			})
			b.Run(prefix+"merge", func(b *testing.B) {
				b.SetBytes(total)
				b.ReportAllocs()
				for b.Loop() {
					if res, err := Merge(in, Options{}); err != nil || res.Changed != 1 {
						b.Fatal(err, res.Changed)
					}
				}
			})
			b.Run(prefix+"ratio", func(b *testing.B) {
				var valid, merged time.Duration
				for b.Loop() {
					t0 := time.Now()
					if !gjson.ValidBytes(base) || !gjson.ValidBytes(mine) || !gjson.ValidBytes(theirs) {
						b.Fatal("invalid")
					}
					t1 := time.Now()
					if _, err := Merge(in, Options{}); err != nil {
						b.Fatal(err)
					}
					merged += time.Since(t1)
					valid += t1.Sub(t0)
				}
				b.ReportMetric(float64(merged)/float64(valid), "x-ValidBytes")
			})
		}
	}
}

func TestProfileRecordMerge(t *testing.T) {
	base := profileRecord(256<<10, [4]int{}, -1)
	if n := bytes.Count(base, []byte(`": "`)); n < 5000 || n > 6000 {
		t.Fatalf("256 KB record has %d fields, want about 5,400", n)
	}
	mine := profileRecord(256<<10, [4]int{1, 0, 0, 0}, -1)
	theirs := profileRecord(256<<10, [4]int{0, 1, 0, 0}, -1)
	want := profileRecord(256<<10, [4]int{1, 1, 0, 0}, -1)
	res, err := Merge(Inputs{Base: base, HasBase: true, Mine: profileRecord(256<<10, [4]int{}, 30), Theirs: theirs, HasTheirs: true}, Options{})
	if err != nil || len(res.Conflicts) > 0 || res.Changed != 1 || !bytes.Equal(res.Merged, profileRecord(256<<10, [4]int{0, 1, 0, 0}, 30)) {
		t.Fatalf("nested change: err %v, changed %d, conflicts %d", err, res.Changed, len(res.Conflicts))
	}
	for _, th := range [][]byte{base, theirs} {
		res, err := Merge(Inputs{Base: base, HasBase: true, Mine: mine, Theirs: th, HasTheirs: true}, Options{})
		if err != nil || len(res.Conflicts) > 0 || res.Changed != 1 {
			t.Fatalf("err %v, changed %d, conflicts %d", err, res.Changed, len(res.Conflicts))
		}
		if exp := want; bytes.Equal(th, base) {
			exp = mine
			if !bytes.Equal(res.Merged, exp) {
				t.Fatalf("theirs == base: merged is not mine")
			}
		} else if !bytes.Equal(res.Merged, exp) {
			t.Fatalf("merged is not both counters changed")
		}
	}
}

// arrayRecord is {"id": 7, "items": [...]} with n elements: numbers, or
// objects with ids when keyed; change gives the text of element i (or ""
// to drop it) and extra elements go at the end.
func arrayRecord(n int, keyed bool, change func(i int) string, extra ...string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id": 7, "name": "Zo\u00eb", "items": [`)
	first := true
	add := func(s string) {
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString(s)
	}
	for i := range n {
		s := ""
		if change != nil {
			s = change(i)
		}
		if s == "" {
			s = strconv.Itoa(i * 3)
			if keyed {
				s = fmt.Sprintf(`{"id": %d, "sku": "s%d", "qty": 1}`, i, i)
			}
		} else if s == "-" {
			continue
		}
		add(s)
	}
	for _, e := range extra {
		add(e)
	}
	b.WriteString("]}\n")
	return b.Bytes()
}

// arrayBenchCases are merges of one large array changed on both sides.
func arrayBenchCases(n int) []struct {
	name                string
	base, mine, theirs  []byte
	conflicts, elements bool // want a (fallback) conflict; want the array merged by element
} {
	every := func(k, offset int, text func(i int) string) func(i int) string {
		return func(i int) string {
			if i%k == offset {
				return text(i)
			}
			return ""
		}
	}
	neg := func(i int) string { return strconv.Itoa(-i - 1) }
	type c = struct {
		name                string
		base, mine, theirs  []byte
		conflicts, elements bool
	}
	base := arrayRecord(n, false, nil)
	keyedBase := arrayRecord(n, true, nil)
	return []c{
		{"append", base, arrayRecord(n, false, nil, "-1"), arrayRecord(n, false, nil, "-2"), false, true},
		{"middle", base, arrayRecord(n, false, every(n, n/2, neg)), arrayRecord(n, false, nil, "-2"), false, true},
		{"scattered-100", base, arrayRecord(n, false, every(n/100, 0, neg)), arrayRecord(n, false, every(n/100, n/200, neg)), false, true},
		{"fallback", base, arrayRecord(n, false, every(max(1, n/2000), 0, neg)), arrayRecord(n, false, nil, "-2"), true, false},
		{"keyed-middle", keyedBase, arrayRecord(n, true, every(n, n/2, func(i int) string {
			return fmt.Sprintf(`{"id": %d, "sku": "s%d", "qty": 2}`, i, i)
		})), arrayRecord(n, true, nil, `{"id": -1, "sku": "new", "qty": 1}`), false, true},
	}
}

func TestArrayBenchCases(t *testing.T) {
	for _, tc := range arrayBenchCases(10_000) {
		res, err := Merge(Inputs{Base: tc.base, HasBase: true, Mine: tc.mine, Theirs: tc.theirs, HasTheirs: true}, Options{})
		if err != nil || (len(res.Conflicts) > 0) != tc.conflicts || (res.Merges[StrategySequence]+res.Merges[StrategyKeyed] > 0) != tc.elements {
			t.Errorf("%s: err %v, conflicts %q, merges %v", tc.name, err, conflictSummary(res.Conflicts), res.Merges)
		}
	}
}

// BenchmarkMergeArray merges records whose one large array both sides
// changed: appends on both sides, one change in the middle against an
// append, 100 scattered changes on each side, 2,000 changes (or all
// elements) against an append (past the diff bound: the array falls back
// to one value), and a keyed array of objects, one changed against an
// append.
func BenchmarkMergeArray(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		for _, tc := range arrayBenchCases(n) {
			in := Inputs{Base: tc.base, HasBase: true, Mine: tc.mine, Theirs: tc.theirs, HasTheirs: true}
			b.Run(fmt.Sprintf("%d/%s", n, tc.name), func(b *testing.B) {
				b.SetBytes(int64(len(tc.base) + len(tc.mine) + len(tc.theirs)))
				b.ReportAllocs()
				cpu0 := processCPU()
				for b.Loop() {
					if _, err := Merge(in, Options{}); err != nil {
						b.Fatal(err)
					}
				}
				// The machine is shared: CPU time says more than wall time.
				b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// processCPU is the CPU time the process has used (all threads, GC
// included), in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
