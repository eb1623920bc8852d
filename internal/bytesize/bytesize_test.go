package bytesize

import "testing"

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{
		"0":          0,
		"1":          1,
		"65536":      65536,
		"64KiB":      64 << 10,
		"64KB":       64 << 10,
		"64K":        64 << 10,
		"16MiB":      16 << 20,
		"16MB":       16 << 20,
		"16M":        16 << 20,
		"2GiB":       2 << 30,
		"2GB":        2 << 30,
		"2G":         2 << 30,
		" 16 MiB ":   16 << 20,
		"4294967296": 1 << 32,
		"4194304GiB": 1 << 52,
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		"", " ", "MiB", "-1", "-1KiB", "1.5MiB", "16 Mi", "16TiB", "16kib", "0x10", "1e6",
		"16MiBx", "MiB16", "1 6",
		// Past 2^62 bytes, and with a suffix past 2^62 bytes once multiplied.
		"9223372036854775807", "4294967297GiB",
	} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, got)
		}
	}
}

func TestLabel(t *testing.T) {
	for n, want := range map[int]string{
		0: "0B", 300: "300B", 1 << 10: "1KB", 1500: "1500B", 64 << 10: "64KB", 1 << 20: "1MB", 3 << 20: "3MB", (1 << 20) + (1 << 10): "1025KB",
	} {
		if got := Label(n); got != want {
			t.Errorf("Label(%d) = %q, want %q", n, got, want)
		}
		if n%(1<<10) == 0 && n > 0 {
			if back, err := Parse(want); err != nil || back != int64(n) {
				t.Errorf("Parse(Label(%d)) = %d, %v", n, back, err)
			}
		}
	}
}
