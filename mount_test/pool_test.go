package mount_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestRequestAcrossPoolThreadsUnderReject: in one process, a pool thread T1
// reads the record for a request that never writes; another request reads
// and rewrites it on T2 (a: 0 -> 1); a third reads the new version on T2 and
// its write (a: 1 -> 2) lands on T1 (workers/poolthreads.py). The written
// content is one change from both T1's older read and the version it came
// from, and ties go to the writing thread's read (docs/design.md, "The base
// of a commit"): for a server that handles each request on one thread that is
// the right base, and a wrong one only costs a conflict, never a silent loss.
// So with writer-wins the record ends at a = 2 (the writer's value), and with
// reject the write may fail with EIO, and the worker's retry (read, write)
// then succeeds: nothing is lost either way.
func TestRequestAcrossPoolThreadsUnderReject(t *testing.T) {
	for _, policy := range []string{"reject", "writer-wins"} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t)
			backing, mnt := h.path("backing"), h.path("mnt")
			_, err := h.mountUnderTest(backing, mnt, "--on-conflict="+policy)
			h.needMount(t, err)
			path := filepath.Join(mnt, "r.json")
			if err := os.WriteFile(path, []byte(`{"id": 1, "a": 0}`), 0o644); err != nil {
				t.Fatal(err)
			}
			out := h.python(t, clientTimeout, "poolthreads.py", path)
			var r struct {
				Write  *int           `json:"write"`
				Retry  *int           `json:"retry"`
				Record map[string]any `json:"record"`
			}
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("poolthreads.py: %v: %s", err, out)
			}
			t.Logf("write: %s; retry: %s; record after: %v", errnoString(r.Write), errnoString(r.Retry), r.Record)
			switch {
			case r.Write != nil && (policy != "reject" || *r.Write != 5):
				t.Errorf("the write failed with %s", errnoString(r.Write))
			case r.Retry != nil:
				t.Errorf("the retry after a refused write failed with %s", errnoString(r.Retry))
			}
			if r.Record["a"] != float64(2) {
				t.Errorf("record after both requests: %v, want a = 2", r.Record)
			}
		})
	}
}
