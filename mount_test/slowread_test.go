package mount_test

import (
	"os"
	"path/filepath"
	"testing"
)

// busyRounds is how many versions of the record the slow request's own
// process reads, and another process commits, between the slow request's
// read and its write: more than mergefs keeps of one process's reads (4) and
// of one record's recent versions (16).
const busyRounds = 24

// TestSlowReadInBusyProcess: one process (a server) reads the record for a
// slow request; while that request waits, another process commits the record
// again and again, and the server reads each new version for its other
// requests; then the slow request writes what it read plus its own change.
// Step by step, so the order is certain. The slow request must find its own
// read as its base however many versions its process read since (issue 10:
// "a slow request ... must still find its own read").
func TestSlowReadInBusyProcess(t *testing.T) {
	h := newHarness(t)
	control := h.path("control")
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountUnderTest(backing, mnt)

	run := func(dir, backingDir string) int {
		path := filepath.Join(dir, "r.json")
		if err := os.WriteFile(path, editRecord(), 0o644); err != nil {
			t.Fatal(err)
		}
		server := h.startSession(t, "server", nil)
		other := h.startSession(t, "other", nil)
		read := func() string {
			fd := server.must(map[string]any{"op": "open", "path": path}).num("fd")
			defer server.must(map[string]any{"op": "close", "fd": fd})
			return server.must(map[string]any{"op": "read", "fd": fd}).str("data")
		}
		slow := read()
		for range busyRounds {
			otherProcessBumps(t, other, path, "other")
			read()
		}
		fd := server.must(map[string]any{"op": "open", "path": path, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
		server.must(map[string]any{"op": "write", "fd": fd, "data": string(bumped(t, []byte(slow), "slow"))})
		server.must(map[string]any{"op": "close", "fd": fd})
		return missing(t, filepath.Join(backingDir, "r.json"), map[string]int{"other": busyRounds, "slow": 1})
	}

	c := run(control, control)
	t.Logf("plain directory: lost %d of %d increments", c, busyRounds+1)
	if c == 0 {
		t.Errorf("the plain directory lost nothing")
	}
	h.needMount(t, mountErr)
	m := run(mnt, backing)
	t.Logf("mergefs: lost %d of %d increments", m, busyRounds+1)
	if m != 0 {
		t.Errorf("through mergefs %d of %d increments were lost: the slow request's base was not its own read", m, busyRounds+1)
	}
}
