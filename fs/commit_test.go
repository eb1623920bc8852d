package fs

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestRejectedNamesAreEscapedAndBounded(t *testing.T) {
	at := time.Date(2026, 11, 28, 9, 0, 0, 123, time.UTC)
	for _, tc := range []struct{ record, want string }{
		{"users/1.json", "20261128T090000.000000123Z-42-users%2F1.json"},
		{"a%2Fb.json", "20261128T090000.000000123Z-42-a%252Fb.json"},
		{"new\nline\x1b[31m.json", "20261128T090000.000000123Z-42-new%0Aline%1B[31m.json"},
		{"del\x7f.json", "20261128T090000.000000123Z-42-del%7F.json"},
	} {
		if got := rejectedName(at, 42, tc.record); got != tc.want {
			t.Errorf("rejectedName(%q) = %q, want %q", tc.record, got, tc.want)
		}
	}
	// Long paths: within NAME_MAX, valid UTF-8, distinct for paths that differ only past the cut.
	long := strings.Repeat("dir/", 200) + "é" + strings.Repeat("x", 300)
	a, b := rejectedName(at, 42, long+"a.json"), rejectedName(at, 42, long+"b.json")
	if len(a) > 255 || len(b) > 255 || !utf8.ValidString(a) {
		t.Errorf("long names: %d and %d bytes (valid UTF-8: %v)", len(a), len(b), utf8.ValidString(a))
	}
	if a == b {
		t.Errorf("two long paths that differ at the end share the name %q", a)
	}
	if strings.Contains(a, "/") {
		t.Errorf("name %q contains a slash", a)
	}
}
