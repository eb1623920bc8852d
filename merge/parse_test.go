package merge

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func skipPlainOneByOne(data []byte, i int) int {
	for i < len(data) && plainString[data[i]] {
		i++
	}
	return i
}

// skipPlain reads words; it must stop exactly where a byte-by-byte scan
// does, for every byte value at every position of a word, and when a
// borrow from one stopping byte could mark a later one.
func TestSkipPlain(t *testing.T) {
	buf := make([]byte, 20)
	for n := range len(buf) + 1 {
		for at := range n {
			for c := range 256 {
				for i := range buf {
					buf[i] = 'x'
				}
				buf[at] = byte(c)
				data := buf[:n]
				for start := 0; start <= at; start += 3 {
					if got, want := skipPlain(data, start), skipPlainOneByOne(data, start); got != want {
						t.Fatalf("byte 0x%02x at %d of %d, from %d: %d, want %d", c, at, n, start, got, want)
					}
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{'a', '"', '\\', 0x00, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff}
	for range 100_000 {
		data := make([]byte, rng.IntN(24))
		for i := range data {
			data[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if got, want := skipPlain(data, 0), skipPlainOneByOne(data, 0); got != want {
			t.Fatalf("%q: %d, want %d", data, got, want)
		}
	}
}

// The member arena is sized from the document (see newParser); documents
// packed as tightly as JSON allows, and every prefix of them, must fit.
func TestMemberArenaBound(t *testing.T) {
	docs := []string{`{"":0}`, `{"":{}}`, `[{"":0},{"":0},{"":[]}]`, `{"":{"":{"":{"":{"":1}}}}}`}
	var wide, deep strings.Builder
	wide.WriteString(`{`)
	deep.WriteString(`[`)
	for i := range 40 {
		if i > 0 {
			wide.WriteString(`,`)
		}
		fmt.Fprintf(&wide, `"%c":{"":0}`, 'A'+i)
		deep.WriteString(`{"":[`)
	}
	docs = append(docs, wide.String()+`}`, deep.String())
	for _, doc := range docs {
		for n := range len(doc) + 1 {
			if _, err := parse([]byte(doc[:n]), 1000); err != nil && strings.Contains(err.reason, "room for") {
				t.Fatalf("%q: %s", doc[:n], err.reason)
			}
		}
	}
}
