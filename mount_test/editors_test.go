package mount_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Single-shot edits, step by step, in which a writer rewrites a record from
// what it read a while ago, and another process changed another field of the
// record in between (issue 10). Each step is a separate process's system
// call, so the order is certain: on a plain directory the other change is
// lost every time; through mergefs never.

// editRecord is the record the edit tests start from.
func editRecord() []byte {
	b, _ := json.Marshal(map[string]any{"id": 0, "name": "Zoë Ünal", "editor": 0, "other": 0, "slow": 0, "pad": strings.Repeat("x", 600)})
	return b
}

// bumped returns text (a record) with field incremented, as a program that
// edits what it read would write it.
func bumped(t *testing.T, text []byte, field string) []byte {
	t.Helper()
	rec, err := decodeRecord(text)
	if err != nil {
		t.Fatalf("editing %q: %v", text, err)
	}
	n, _ := rec[field].(json.Number).Int64()
	rec[field] = n + 1
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// missing counts the increments of want (field -> count) that the backing
// record does not have.
func missing(t *testing.T, backing string, want map[string]int) int {
	t.Helper()
	rec, err := decodeRecord(readFile(t, backing))
	if err != nil {
		t.Fatalf("%s: %v", backing, err)
	}
	lost := 0
	for f, w := range want {
		n, _ := rec[f].(json.Number).Int64()
		lost += max(0, w-int(n))
	}
	return lost
}

// otherProcessBumps increments field of the record at path from a process of
// its own: it reads the record, then rewrites it (open 'w').
func otherProcessBumps(t *testing.T, s *session, path, field string) {
	t.Helper()
	fd := s.must(map[string]any{"op": "open", "path": path}).num("fd")
	text := s.must(map[string]any{"op": "read", "fd": fd}).str("data")
	s.must(map[string]any{"op": "close", "fd": fd})
	fd = s.must(map[string]any{"op": "open", "path": path, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
	s.must(map[string]any{"op": "write", "fd": fd, "data": string(bumped(t, []byte(text), field))})
	s.must(map[string]any{"op": "close", "fd": fd})
}

// editRounds is how many edits each single-shot test makes on each target.
const editRounds = 3

// runEdits runs edit editRounds times on a record in dir (backed by backing)
// and returns how many increments are missing at the end. edit makes one
// edit of field "editor" during which other has bumped "other".
func runEdits(t *testing.T, h *harness, dir, backing string, edit func(path string, other func())) int {
	t.Helper()
	path := filepath.Join(dir, "r.json")
	if err := os.WriteFile(path, editRecord(), 0o644); err != nil {
		t.Fatal(err)
	}
	other := h.startSession(t, "other", nil)
	for range editRounds {
		edit(path, func() { otherProcessBumps(t, other, path, "other") })
	}
	return missing(t, filepath.Join(backing, "r.json"), map[string]int{"editor": editRounds, "other": editRounds})
}

// editTargets runs edits on a plain directory (which must lose) and through
// the filesystem under test (which must not).
func editTargets(t *testing.T, edit func(h *harness) func(path string, other func())) {
	h := newHarness(t)
	control := h.path("control")
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountUnderTest(backing, mnt)

	c := runEdits(t, h, control, control, edit(h))
	t.Logf("plain directory: lost %d of %d increments", c, 2*editRounds)
	if c == 0 {
		t.Errorf("the plain directory lost nothing: the other process's change did not fall inside the edit")
	}
	h.needMount(t, mountErr)
	m := runEdits(t, h, mnt, backing, edit(h))
	t.Logf("mergefs: lost %d of %d increments", m, 2*editRounds)
	if m != 0 {
		t.Errorf("through mergefs %d of %d increments were lost", m, 2*editRounds)
	}
}

// TestVimWriteAfterOtherChange: an editor loads the record (open, read,
// close); another process changes another field; the editor writes the way
// vim does: open O_WRONLY without O_TRUNC, ftruncate, write, fsync, close.
func TestVimWriteAfterOtherChange(t *testing.T) {
	editTargets(t, func(h *harness) func(string, func()) {
		editor := h.startSession(t, "vim", nil)
		return func(path string, other func()) {
			fd := editor.must(map[string]any{"op": "open", "path": path}).num("fd")
			text := editor.must(map[string]any{"op": "read", "fd": fd}).str("data")
			editor.must(map[string]any{"op": "close", "fd": fd})
			other()
			fd = editor.must(map[string]any{"op": "open", "path": path, "flags": []string{"O_WRONLY"}}).num("fd")
			editor.must(map[string]any{"op": "ftruncate", "fd": fd, "size": 0})
			editor.must(map[string]any{"op": "write", "fd": fd, "data": string(bumped(t, []byte(text), "editor"))})
			editor.must(map[string]any{"op": "fsync", "fd": fd})
			editor.must(map[string]any{"op": "close", "fd": fd})
		}
	})
}

// TestCpRoundTrip: `cp r.json /tmp/x`, another process changes another
// field, the copy is edited, `cp /tmp/x r.json`, with the real cp.
func TestCpRoundTrip(t *testing.T) {
	cpPath, err := exec.LookPath("cp")
	if err != nil {
		skipOrFatal(t, "cp not found: %v", err)
	}
	editTargets(t, func(h *harness) func(string, func()) {
		scratch := filepath.Join(h.path("scratch"), "x.json")
		cp := func(src, dst string) {
			if _, errOut, err := h.run(t, clientTimeout, cpPath, src, dst); err != nil {
				t.Fatalf("cp %s %s: %v: %s", src, dst, err, errOut)
			}
		}
		return func(path string, other func()) {
			cp(path, scratch)
			other()
			edited := bumped(t, readFile(t, scratch), "editor")
			if err := os.WriteFile(scratch, edited, 0o644); err != nil {
				t.Fatal(err)
			}
			cp(scratch, path)
		}
	})
}
