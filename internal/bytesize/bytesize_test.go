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
