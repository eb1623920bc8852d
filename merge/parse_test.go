package merge

import (
	"math/rand/v2"
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
