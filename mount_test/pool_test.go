package mount_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestRequestAcrossPoolThreadsUnderReject: in one process, a pool thread T1
// reads the record for a request that never writes; another request reads
// and rewrites it on T2; a third reads the new version on T2 and its write
// lands on T1 (workers/poolthreads.py). No other process writes, so nothing
// conflicts: with --on-conflict=reject the write must succeed. The base of
// that write is the version it was read from, not T1's older read, which is
// as close to the written content (only the writer's own field differs) but
// older.
func TestRequestAcrossPoolThreadsUnderReject(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountUnderTest(backing, mnt, "--on-conflict=reject")
	h.needMount(t, err)
	path := filepath.Join(mnt, "r.json")
	if err := os.WriteFile(path, []byte(`{"id": 1, "a": 0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := h.python(t, clientTimeout, "poolthreads.py", path)
	var r struct {
		Write  *int           `json:"write"`
		Record map[string]any `json:"record"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("poolthreads.py: %v: %s", err, out)
	}
	t.Logf("write: %s; record after: %v", errnoString(r.Write), r.Record)
	if r.Write != nil {
		t.Errorf("the write of a request whose read and write ran on different pool threads failed with %s: a conflict where there is none", errnoString(r.Write))
	}
	if r.Record["a"] != float64(2) {
		t.Errorf("record after both requests: %v, want a = 2", r.Record)
	}
}
