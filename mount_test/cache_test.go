package mount_test

import (
	"path/filepath"
	"testing"
)

// TestRecordAttributesFollowCommits: the kernel may cache a record's attributes while they are the
// same for every caller. A commit invalidates them before close() returns: a stat right after sees
// the new record, while a process that still has the old version open sees that version's size in
// fstat of its descriptor, and a writer its own content's size. An open through another mount of the
// same backing directory (a second daemon, whose commits this daemon does not see) still finds the
// size of what it opened.
// With --cache-reads too (version nodes answer GETATTR with their version's attributes).
func TestRecordAttributesFollowCommits(t *testing.T) {
	forCacheModes(t, testRecordAttributesFollowCommits)
}

// forCacheModes runs test with --cache-reads (the default) and without.
func forCacheModes(t *testing.T, test func(t *testing.T, flags ...string)) {
	t.Run("cache-reads", func(t *testing.T) { test(t, "--cache-reads") })
	t.Run("no-cache-reads", func(t *testing.T) { test(t, "--cache-reads=false") })
}

func testRecordAttributesFollowCommits(t *testing.T, flags ...string) {
	h := newHarness(t)
	backing, mnt, mnt2 := h.path("backing"), h.path("mnt"), h.path("mnt2")
	_, err := h.mountMergefs(backing, mnt, flags...)
	h.needMount(t, err)
	_, err = h.mountMergefs(backing, mnt2, flags...)
	h.needMount(t, err)
	writer := h.startSession(t, "writer", nil)
	watcher := h.startSession(t, "watcher", nil)
	reader := h.startSession(t, "reader", nil)
	r, r2 := filepath.Join(mnt, "r.json"), filepath.Join(mnt2, "r.json")
	rewrite := func(path, content string) { // a read-modify-write
		t.Helper()
		writer.do(map[string]any{"op": "cat", "path": path})
		fd := writer.must(map[string]any{"op": "open", "path": path, "flags": []string{"O_WRONLY", "O_CREAT", "O_TRUNC"}}).num("fd")
		writer.must(map[string]any{"op": "write", "fd": fd, "data": content})
		writer.must(map[string]any{"op": "close", "fd": fd})
	}
	statSize := func(path string) int64 {
		t.Helper()
		return watcher.must(map[string]any{"op": "stat", "path": path}).num("size")
	}

	rewrite(r, `{"a":1}`)
	for range 3 { // the later ones may come from the kernel's cache
		if got := statSize(r); got != 7 {
			t.Fatalf("stat of the new record: size %d, want 7", got)
		}
	}
	old := reader.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_RDONLY"}}).num("fd")
	if got := reader.must(map[string]any{"op": "fstat", "fd": old}).num("size"); got != 7 {
		t.Fatalf("fstat of a reader's descriptor: size %d, want 7", got)
	}
	rewrite(r, `{"a":1,"b":22}`)
	if got := statSize(r); got != 14 {
		t.Errorf("stat right after a commit: size %d, want 14 (the new record)", got)
	}
	if got := reader.must(map[string]any{"op": "fstat", "fd": old}).num("size"); got != 7 {
		t.Errorf("fstat of a descriptor opened before the commit: size %d, want 7 (its version)", got)
	}
	if got := reader.must(map[string]any{"op": "read", "fd": old}).str("data"); got != `{"a":1}` {
		t.Errorf("read of a descriptor opened before the commit: %q", got)
	}
	reader.must(map[string]any{"op": "close", "fd": old})

	// A writer's descriptor reports its own content, the others the record.
	statSize(r)
	writer.must(map[string]any{"op": "cat", "path": r})
	fd := writer.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
	if got := writer.must(map[string]any{"op": "fstat", "fd": fd}).num("size"); got != 0 {
		t.Errorf("fstat of a truncating writer's descriptor: size %d, want 0", got)
	}
	if got := statSize(r); got != 14 {
		t.Errorf("stat by another process during a rewrite: size %d, want 14", got)
	}
	writer.must(map[string]any{"op": "write", "fd": fd, "data": `{"a":1,"b":22,"d":4}`})
	if got := writer.must(map[string]any{"op": "fstat", "fd": fd}).num("size"); got != 20 {
		t.Errorf("fstat of a writer's descriptor after its write: size %d, want 20", got)
	}
	writer.must(map[string]any{"op": "close", "fd": fd})
	if got := statSize(r); got != 20 {
		t.Errorf("stat right after the rewrite's commit: size %d, want 20", got)
	}

	// Through the other mount: this mount's daemon does not see that commit, but an open here
	// finds it, and fstat of the new descriptor gives its size.
	statSize(r)
	rewrite(r2, `{"a":1,"b":22,"d":4,"c":333}`)
	fd = reader.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_RDONLY"}}).num("fd")
	if got := reader.must(map[string]any{"op": "fstat", "fd": fd}).num("size"); got != 28 {
		t.Errorf("fstat after an open of a record committed through another mount: size %d, want 28", got)
	}
	if got := reader.must(map[string]any{"op": "read", "fd": fd}).str("data"); got != `{"a":1,"b":22,"d":4,"c":333}` {
		t.Errorf("read after an open of a record committed through another mount: %q", got)
	}
	reader.must(map[string]any{"op": "close", "fd": fd})

	// A commit that merges changes the record's size while the kernel caches it: a rewrite of the
	// same length is under way when another mount adds a member; the merge keeps both.
	writer.must(map[string]any{"op": "cat", "path": r})
	fd = writer.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
	writer.must(map[string]any{"op": "write", "fd": fd, "data": `{"a":2,"b":22,"d":4,"c":333}`})
	if got := statSize(r); got != 28 {
		t.Fatalf("stat during a rewrite of the same length: size %d, want 28", got)
	}
	other := h.startSession(t, "other", nil)
	other.must(map[string]any{"op": "cat", "path": r2})
	fd2 := other.must(map[string]any{"op": "open", "path": r2, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
	other.must(map[string]any{"op": "write", "fd": fd2, "data": `{"a":1,"b":22,"d":4,"c":333,"e":5}`})
	other.must(map[string]any{"op": "close", "fd": fd2})
	writer.must(map[string]any{"op": "close", "fd": fd})
	if got := statSize(r); got != 34 {
		t.Errorf("stat right after a merging commit: size %d, want 34", got)
	}

	// A file renamed onto a record merges into it: the name's attributes are the record's at once.
	tmp := filepath.Join(mnt, "tmp.txt")
	writer.must(map[string]any{"op": "cat", "path": r})
	other.must(map[string]any{"op": "cat", "path": r2})
	fd2 = other.must(map[string]any{"op": "open", "path": r2, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
	other.must(map[string]any{"op": "write", "fd": fd2, "data": `{"a":2,"b":22,"d":4,"c":333,"e":66}`})
	other.must(map[string]any{"op": "close", "fd": fd2})
	fd = writer.must(map[string]any{"op": "open", "path": tmp, "flags": []string{"O_WRONLY", "O_CREAT"}}).num("fd")
	writer.must(map[string]any{"op": "write", "fd": fd, "data": `{"a":3,"b":22,"d":4,"c":333,"e":5}`})
	writer.must(map[string]any{"op": "close", "fd": fd})
	if got := statSize(tmp); got != 34 {
		t.Fatalf("stat of the file to rename: size %d, want 34", got)
	}
	writer.must(map[string]any{"op": "rename", "src": tmp, "dst": r})
	if got := statSize(r); got != 35 {
		t.Errorf("stat right after a rename onto the record: size %d, want 35", got)
	}
	if got := watcher.must(map[string]any{"op": "cat", "path": r}).str("data"); got != `{"a":3,"b":22,"d":4,"c":333,"e":66}` {
		t.Errorf("record after the rename: %q", got)
	}
}

// TestRecordModeFollowsACLChanges: an access ACL set on a record through the mount changes its mode
// (the group bits show the mask); a stat right after shows it, whatever the kernel cached before.
// With --cache-reads too.
func TestRecordModeFollowsACLChanges(t *testing.T) {
	needTools(t, "setfacl")
	forCacheModes(t, testRecordModeFollowsACLChanges)
}

func testRecordModeFollowsACLChanges(t *testing.T, flags ...string) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt, flags...)
	h.needMount(t, err)
	s := h.startSession(t, "root", nil)
	r := filepath.Join(mnt, "r.json")
	fd := s.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o640}).num("fd")
	s.must(map[string]any{"op": "write", "fd": fd, "data": `{"a":1}`})
	s.must(map[string]any{"op": "close", "fd": fd})
	for range 2 {
		if got := s.must(map[string]any{"op": "stat", "path": r}).num("mode") & 0o777; got != 0o640 {
			t.Fatalf("mode %#o, want 0640", got)
		}
	}
	run(t, "setfacl", "-m", "u:nobody:rw,m::rw", r)
	if got := s.must(map[string]any{"op": "stat", "path": r}).num("mode") & 0o777; got != 0o660 {
		t.Errorf("mode right after setfacl: %#o, want 0660 (the mask)", got)
	}
}
