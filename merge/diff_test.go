package merge

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// lcsLength is the length of a longest common subsequence, by dynamic
// programming.
func lcsLength(a, b []int32) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for i := range a {
		for j := range b {
			cur[j+1] = max(prev[j+1], cur[j])
			if a[i] == b[j] {
				cur[j+1] = max(cur[j+1], prev[j]+1)
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// The hunks of diffClasses turn a into b, are in order and apart, and are
// a shortest edit script.
func TestDiffClasses(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for n := range 3000 {
		alphabet := 1 + rng.IntN(6)
		a := make([]int32, rng.IntN(30))
		for i := range a {
			a[i] = int32(rng.IntN(alphabet))
		}
		b := slices.Clone(a)
		for range rng.IntN(8) {
			switch i := rng.IntN(len(b) + 1); rng.IntN(3) {
			case 0:
				b = slices.Insert(b, i, int32(rng.IntN(alphabet+2)))
			case 1:
				if i < len(b) {
					b = slices.Delete(b, i, i+1)
				}
			default:
				if i < len(b) {
					b[i] = int32(rng.IntN(alphabet + 2))
				}
			}
		}
		hunks, _, ok := diffClasses(a, b, 1<<30, maxArrayEdits)
		if !ok {
			t.Fatalf("case %d: gave up", n)
		}
		var out []int32
		at, edits := int32(0), 0
		for i, h := range hunks {
			if h.as < at || (i > 0 && h.as == at) || h.ae < h.as || h.be < h.bs || (h.as == h.ae && h.bs == h.be) {
				t.Fatalf("case %d: hunks out of order, touching or empty: %v", n, hunks)
			}
			out = append(out, a[at:h.as]...)
			out = append(out, b[h.bs:h.be]...)
			at = h.ae
			edits += int(h.ae-h.as) + int(h.be-h.bs)
		}
		out = append(out, a[at:]...)
		if !slices.Equal(out, b) {
			t.Fatalf("case %d: %v with %v gives %v, not %v", n, a, hunks, out, b)
		}
		if want := len(a) + len(b) - 2*lcsLength(a, b); edits != want {
			t.Fatalf("case %d: %d edits, the shortest has %d: %v -> %v: %v", n, edits, want, a, b, hunks)
		}
		if lb := editsAtLeast(a, b); lb > edits || editsAtLeast(b, a) != lb {
			t.Fatalf("case %d: lower bound %d of %d edits: %v -> %v", n, lb, edits, a, b)
		}
	}
}

func TestDiffClassesBounds(t *testing.T) {
	a := make([]int32, 5000)
	b := make([]int32, 5000)
	for i := range a {
		a[i], b[i] = int32(i), int32(i)
		if i%2 == 0 {
			b[i] = -1
		}
	}
	if _, _, ok := diffClasses(a, b, 1<<40, maxArrayEdits); ok {
		t.Error("5000 differences: no fallback past maxArrayEdits")
	}
	if _, used, ok := diffClasses(a, b, 1000, 1<<20); ok || used > int64(1000+2*len(a)+1<<11) {
		t.Errorf("budget 1000: ok %v after %d steps", ok, used)
	}
	if h, _, ok := diffClasses(a, a, 0, 0); !ok || len(h) != 0 {
		t.Error("equal sequences need no budget")
	}
	if h, _, ok := diffClasses(a[:10], append(slices.Clone(a[:10]), 7), 0, 1); !ok || len(h) != 1 {
		t.Error("an append needs no budget")
	}
}
