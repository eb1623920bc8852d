package merge

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// choiceWorkload is a commit under contention on a record laid out like
// the end-to-end benchmark's (profileRecord: counters w0..w3 and a profile
// of short fields f0, f1, ...): 32 successive versions, each with one or
// two counters incremented; the writer read the version readBack before
// the newest and incremented its own counter.
type choiceWorkload struct {
	cands  []Candidate
	mine   []byte
	in     Inputs // the merge of that commit: base = the version read, theirs = the newest
	chosen int    // the candidate the writer read
}

// workloadRecord is profileRecord(size, counters, -1), or with nested,
// the counters written into the profile fields f1..f4 instead (the
// top-level ones staying 0).
func workloadRecord(size int, counters [4]int, nested bool) []byte {
	if !nested {
		return profileRecord(size, counters, -1)
	}
	doc := profileRecord(size, [4]int{}, -1)
	for i, c := range counters {
		at := bytes.Index(doc, []byte(fmt.Sprintf(`"f%d": "`, i+1))) + len(`"f1": "`)
		copy(doc[at:], fmt.Sprintf("%010d", c))
	}
	return doc
}

func newChoiceWorkload(size, n, readBack int, nested bool) *choiceWorkload {
	rng := rand.New(rand.NewPCG(1, uint64(size)))
	var counters [4]int
	history := make([][4]int, n)
	docs := make([][]byte, n)
	w := &choiceWorkload{}
	for i := range docs {
		for range 1 + rng.IntN(2) {
			counters[rng.IntN(4)]++
		}
		history[i] = counters
		docs[i] = workloadRecord(size, counters, nested)
		s, err := Summarize(docs[i], Options{})
		if err != nil {
			panic(err)
		}
		w.cands = append(w.cands, Candidate{Summary: s, Seq: uint64(i)})
	}
	w.chosen = n - 1 - readBack
	read := docs[w.chosen]
	w.cands[w.chosen].ProcessLastRead = true
	mineCounters := history[w.chosen]
	mineCounters[0]++
	w.mine = workloadRecord(size, mineCounters, nested)
	w.in = Inputs{Base: read, HasBase: true, Mine: w.mine, Theirs: docs[n-1], HasTheirs: true}
	return w
}

func TestChoiceWorkload(t *testing.T) {
	for _, size := range []int{4 << 10, 256 << 10} {
		for _, nested := range []bool{false, true} {
			testChoiceWorkload(t, size, nested)
		}
	}
}

func testChoiceWorkload(t *testing.T, size int, nested bool) {
	w := newChoiceWorkload(size, 32, 4, nested)
	mine, err := Summarize(w.mine, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ch := ChooseBase(mine, w.cands)
	if ch.Index != w.chosen || ch.Distance != 1 {
		t.Fatalf("%d bytes: chose %+v, the writer read candidate %d", size, ch, w.chosen)
	}
	res, err := Merge(w.in, Options{})
	if err != nil || len(res.Conflicts) > 0 || res.Changed != 1 {
		t.Fatalf("%d bytes: merge %v, %d conflicts, %d changed", size, err, len(res.Conflicts), res.Changed)
	}
	t.Logf("%d bytes, nested %v: %+v; summary %d bytes", len(w.mine), nested, ch, mine.Bytes())
}

// threadCPU returns the CPU time of the calling OS thread: unlike the
// wall clock, it does not count the time other processes of this shared
// machine hold the CPU (it does not count the garbage collector's
// background work either).
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}

// ratio runs f and base alternately, in batches of batch calls, and
// reports f's cost in percent of base's, by the wall clock and by the
// thread's CPU time.
func ratio(b *testing.B, batch int, f, base func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var fWall, baseWall, fCPU, baseCPU time.Duration
	for b.Loop() {
		w0, c0 := time.Now(), threadCPU()
		for range batch {
			f()
		}
		w1, c1 := time.Now(), threadCPU()
		for range batch {
			base()
		}
		w2, c2 := time.Now(), threadCPU()
		fWall += w1.Sub(w0)
		baseWall += w2.Sub(w1)
		fCPU += c1 - c0
		baseCPU += c2 - c1
	}
	b.ReportMetric(100*float64(fWall)/float64(baseWall), "%wall")
	b.ReportMetric(100*float64(fCPU)/float64(baseCPU), "%cpu")
}

// BenchmarkBaseChoice measures the base choice of one commit with 32
// candidates (the counters top-level, or in -nested, inside the profile:
// then nothing can be reused and every distance descends into the
// profile) against the merge of the same commit, in the same loop (the
// machine is shared and noisy: a ratio measured in the same loop is what
// contention affects alike), in percent of the merge:
//
//   - standalone: Summarize(mine), which parses mine, + ChooseBase;
//   - shared-parse: Document.Summary of a mine already parsed (the parse
//     the merge needs anyway, once the merge takes a parsed mine) +
//     ChooseBase;
//   - shared-parse-reuse: the same with Document.SummaryReusing(the
//     newest candidate): the profile, unchanged, is copied;
//   - choose: ChooseBase alone (the 32 distances).
func BenchmarkBaseChoice(b *testing.B) {
	for _, size := range []struct {
		name   string
		bytes  int
		batch  int
		nested bool
	}{{"4KB", 4 << 10, 20, false}, {"256KB", 256 << 10, 1, false}, {"4KB-nested", 4 << 10, 20, true}, {"256KB-nested", 256 << 10, 1, true}} {
		w := newChoiceWorkload(size.bytes, 32, 4, size.nested)
		doc, err := ParseDocument(w.mine, Options{})
		if err != nil {
			b.Fatal(err)
		}
		mineSum := doc.Summary()
		newest := w.cands[len(w.cands)-1].Summary
		merge := func() {
			if _, err := Merge(w.in, Options{}); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(size.name+"/merge", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				merge()
			}
		})
		variants := []struct {
			name   string
			choose func() Choice
		}{
			{"standalone", func() Choice {
				s, err := Summarize(w.mine, Options{})
				if err != nil {
					b.Fatal(err)
				}
				return ChooseBase(s, w.cands)
			}},
			{"shared-parse", func() Choice { return ChooseBase(doc.Summary(), w.cands) }},
			{"shared-parse-reuse", func() Choice { return ChooseBase(doc.SummaryReusing(newest), w.cands) }},
			{"choose", func() Choice { return ChooseBase(mineSum, w.cands) }},
		}
		for _, v := range variants {
			choose := func() {
				if ch := v.choose(); ch.Index != w.chosen {
					b.Fatal(ch)
				}
			}
			b.Run(size.name+"/"+v.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					choose()
				}
			})
			b.Run(size.name+"/"+v.name+"-ratio", func(b *testing.B) {
				ratio(b, size.batch, choose, merge)
			})
		}
	}
}

// BenchmarkSummarize measures Summarize, and Document.Summary of a parsed
// document, against the package's validating parse alone.
func BenchmarkSummarize(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"300B", 300}, {"4KB", 4 << 10}, {"256KB", 256 << 10}, {"1MB", 1 << 20}} {
		data := profileRecord(size.bytes, [4]int{}, -1)
		doc, err := ParseDocument(data, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(size.name+"/parse", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parse(data, DefaultMaxDepth); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(size.name+"/summarize", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Summarize(data, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(size.name+"/summary-of-parsed", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				doc.Summary()
			}
		})
		b.Run(size.name+"/summarize-ratio", func(b *testing.B) {
			ratio(b, 1, func() {
				if _, err := Summarize(data, Options{}); err != nil {
					b.Fatal(err)
				}
			}, func() {
				if _, err := parse(data, DefaultMaxDepth); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run(size.name+"/summary-of-parsed-ratio", func(b *testing.B) {
			ratio(b, 1, func() { doc.Summary() }, func() {
				if _, err := parse(data, DefaultMaxDepth); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkParseLike is the parse of a commit's mine given the version its writer read (one counter
// changed), and its summary given that version's: what a commit of a large record does to mine.
// "scan" is the plain parse, for comparison.
func BenchmarkParseLike(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"4KB", 4 << 10}, {"256KB", 256 << 10}, {"1MB", 1 << 20}} {
		read, err := ParseDocument(profileRecord(size.bytes, [4]int{}, -1), Options{})
		if err != nil {
			b.Fatal(err)
		}
		readSum := read.Summary()
		mine := profileRecord(size.bytes, [4]int{1}, -1)
		doc, err := ParseDocumentLike(mine, Options{}, read)
		if err != nil {
			b.Fatal(err)
		}
		runBytes(b, size.name+"/scan", len(mine), func() error {
			_, err := ParseDocument(mine, Options{})
			return err
		})
		runBytes(b, size.name+"/like", len(mine), func() error {
			_, err := ParseDocumentLike(mine, Options{}, read)
			return err
		})
		runBytes(b, size.name+"/summary-reusing", len(mine), func() error {
			doc.SummaryReusing(readSum)
			return nil
		})
	}
}

// runBytes runs fn as the sub-benchmark name, over n bytes a call.
func runBytes(b *testing.B, name string, n int, fn func() error) {
	b.Run(name, func(b *testing.B) {
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for b.Loop() {
			if err := fn(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
