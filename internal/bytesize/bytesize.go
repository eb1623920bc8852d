// Package bytesize reads byte counts as mergefs's flags take them
// (--max-record-size, --read-memory): the one parser for the command and the
// benchmark that passes such values on.
package bytesize

import (
	"fmt"
	"strconv"
	"strings"
)

// Parse reads a byte count: a plain number or one with a KiB, MiB or GiB
// suffix (K, M, G and KB, MB, GB are taken as the same powers of two).
// Spaces around the number and before the suffix are allowed.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (like 65536, 64KiB or 16MiB)", s)
	}
	return n * mult, nil
}

// units lists longer suffixes first, so "MiB" is not read as "B".
var units = []struct {
	suffix string
	mult   int64
}{
	{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
	{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10},
}

// Label names a size briefly, for tables and test names: "16MB" and "4KB"
// for whole mebibytes and kibibytes (which Parse reads back), else "300B".
func Label(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
