package mount_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Everything that is not a merge behaves as on the backing filesystem, and records behave like files
// in everything but their merge semantics. Each test here failed on the main it was written against.

// TestLongPathsNearPathMax: the daemon resolves every name relative to a directory descriptor, so a
// path that is valid at the mount is valid whatever the backing directory's own path adds to it (the
// backing path here is 250 bytes longer than the mount's).
func TestLongPathsNearPathMax(t *testing.T) {
	h := newHarness(t)
	backing := h.path(strings.Repeat("b", 250))
	mnt := h.path("m")
	_, err := h.mountMergefs(backing, mnt)
	h.needMount(t, err)
	s := h.startSession(t, "root", nil)

	// Components of 200 bytes until the path is within 100 bytes of PATH_MAX (4096).
	dir := mnt
	for len(dir)+201 < 4096-100 {
		dir = filepath.Join(dir, strings.Repeat("d", 200))
		s.must(map[string]any{"op": "mkdir", "path": dir, "mode": 0o755})
	}
	t.Logf("deepest directory: %d bytes at the mount, %d in the backing directory", len(dir), len(dir)-len(mnt)+len(backing))
	file := filepath.Join(dir, "file.txt")
	s.put(file, "deep")
	s.must(map[string]any{"op": "chmod", "path": file, "mode": 0o600})
	s.must(map[string]any{"op": "rename", "src": file, "dst": filepath.Join(dir, "moved.txt")})
	if got := s.must(map[string]any{"op": "cat", "path": filepath.Join(dir, "moved.txt")}).str("data"); got != "deep" {
		t.Errorf("deep file reads %q", got)
	}
	record := filepath.Join(dir, "r.json")
	for i := range 2 {
		fd := s.must(map[string]any{"op": "open", "path": record, "flags": []string{"O_WRONLY", "O_CREAT", "O_TRUNC"}}).num("fd")
		s.must(map[string]any{"op": "write", "fd": fd, "data": fmt.Sprintf(`{"i":%d}`, i)})
		if r := s.do(map[string]any{"op": "close", "fd": fd}); r.errno() != 0 {
			t.Fatalf("committing a deep record: %v", r)
		}
	}
	if got := s.must(map[string]any{"op": "cat", "path": record}).str("data"); !jsonEqual([]byte(got), []byte(`{"i":1}`)) {
		t.Errorf("deep record reads %q", got)
	}
	s.must(map[string]any{"op": "unlink", "path": record})
	s.must(map[string]any{"op": "unlink", "path": filepath.Join(dir, "moved.txt")})
}

// TestCreateModesAreExactlyAsAsked: the daemon creates with exactly the mode the caller's mode and
// umask give (not the daemon's own umask on top), a mode of 0 is 0, and a directory's default ACL
// decides the mode of what is made in it, as on the backing filesystem.
func TestCreateModesAreExactlyAsAsked(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt, "--allow-other")
	h.needMount(t, err)
	if err := os.Chmod(backing, 0o777); err != nil {
		t.Fatal(err)
	}
	a := h.startSession(t, "user", userA)
	check := func(name string, want os.FileMode) {
		t.Helper()
		st := a.must(map[string]any{"op": "lstat", "path": filepath.Join(mnt, name)})
		if got := os.FileMode(st.num("mode")); got != want.Perm() {
			t.Errorf("%s through the mount: mode %v, want %v", name, got, want)
		}
		if _, _, got := ownerOf(t, filepath.Join(backing, name)); got != want.Perm() {
			t.Errorf("%s in the backing directory: mode %v, want %v", name, got, want.Perm())
		}
	}
	create := func(name string, mode int, data string) {
		t.Helper()
		fd := a.must(map[string]any{"op": "open", "path": filepath.Join(mnt, name), "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": mode}).num("fd")
		if data != "" {
			a.must(map[string]any{"op": "write", "fd": fd, "data": data})
		}
		if r := a.do(map[string]any{"op": "close", "fd": fd}); r.errno() != 0 {
			t.Fatalf("closing %s: %v", name, r)
		}
	}
	a.must(map[string]any{"op": "umask", "mask": 0})
	create("all.txt", 0o777, "")
	create("all.json", 0o666, "{}")
	a.must(map[string]any{"op": "mkdir", "path": filepath.Join(mnt, "d"), "mode": 0o777})
	create("zero.txt", 0, "")
	create("zero.json", 0, "{}")
	check("all.txt", 0o777)
	check("all.json", 0o666)
	check("d", 0o777)
	check("zero.txt", 0)
	check("zero.json", 0)

	a.must(map[string]any{"op": "umask", "mask": 0o027})
	create("masked.txt", 0o666, "")
	create("masked.json", 0o666, "{}")
	a.must(map[string]any{"op": "mkdir", "path": filepath.Join(mnt, "md"), "mode": 0o777})
	check("masked.txt", 0o640)
	check("masked.json", 0o640)
	check("md", 0o750)

	// With a default ACL on the directory, the umask does not apply: the ACL decides.
	needTools(t, "setfacl")
	acl := filepath.Join(backing, "acl")
	if err := os.Mkdir(acl, 0o777); err != nil {
		t.Fatal(err)
	}
	run(t, "setfacl", "-m", "u::rwx,g::rwx,o::rwx", "-d", "-m", "u::rwx,g::rwx,o::rwx", acl)
	create("acl/inherits.txt", 0o666, "")
	check("acl/inherits.txt", 0o666)
}

// TestRecordInodeNumbersAreStable: a record has one inode number from its creation on, across
// commits and renames onto it, never another live file's, so that cp, find -inum and friends work.
func TestRecordInodeNumbersAreStable(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt)
	h.needMount(t, err)
	s := h.startSession(t, "root", nil)
	w := h.startSession(t, "other writer", nil)
	a := filepath.Join(mnt, "a.json")

	fd := s.must(map[string]any{"op": "open", "path": a, "flags": []string{"O_WRONLY", "O_CREAT"}}).num("fd")
	s.must(map[string]any{"op": "write", "fd": fd, "data": `{"v":0}`})
	ino := s.must(map[string]any{"op": "fstat", "fd": fd}).ino()
	s.must(map[string]any{"op": "close", "fd": fd})
	inos := []uint64{ino, s.must(map[string]any{"op": "stat", "path": a}).ino()}
	for i := 1; i <= 5; i++ {
		sess := []*session{s, w}[i%2]
		fd := sess.must(map[string]any{"op": "open", "path": a, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
		sess.must(map[string]any{"op": "write", "fd": fd, "data": fmt.Sprintf(`{"v":%d}`, i)})
		sess.must(map[string]any{"op": "close", "fd": fd})
		inos = append(inos, s.must(map[string]any{"op": "stat", "path": a}).ino())
		// Files made meanwhile reuse the inode numbers the commits freed.
		fd = sess.must(map[string]any{"op": "open", "path": filepath.Join(mnt, fmt.Sprintf("f%d.txt", i)), "flags": []string{"O_WRONLY", "O_CREAT"}}).num("fd")
		sess.must(map[string]any{"op": "close", "fd": fd})
	}
	tmp := filepath.Join(mnt, "tmp.txt")
	w.put(tmp, `{"v":"renamed"}`)
	w.must(map[string]any{"op": "rename", "src": tmp, "dst": a})
	inos = append(inos, s.must(map[string]any{"op": "stat", "path": a}).ino())
	for i, got := range inos {
		if got != ino {
			t.Errorf("inode number of a.json at step %d: %d, want %d throughout (all: %v)", i, got, ino, inos)
			break
		}
	}
	// No other live file has its number.
	entries, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "a.json" {
			continue
		}
		if other := s.must(map[string]any{"op": "stat", "path": filepath.Join(mnt, e.Name())}).ino(); other == ino {
			t.Errorf("%s has a.json's inode number %d", e.Name(), ino)
		}
	}
	out, err := exec.Command("find", mnt, "-inum", fmt.Sprint(ino)).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != a {
		t.Errorf("find -inum %d: %q, %v; want only %s", ino, out, err, a)
	}
	if out, err := exec.Command("cp", a, filepath.Join(mnt, "b.json")).CombinedOutput(); err != nil {
		t.Errorf("cp a.json b.json: %v: %s", err, out)
	}
	if got := s.must(map[string]any{"op": "stat", "path": filepath.Join(mnt, "b.json")}).ino(); got == ino {
		t.Errorf("the copy has the original's inode number")
	}
}

// TestHardLinksAndRecords: link(2) with a record on either side is refused (EPERM: a commit replaces
// the file under one name, so the link would silently stop being one); a record found with several
// links in the backing directory gets an inode of its own at its first lookup, so that no name ever
// reads another's content.
func TestHardLinksAndRecords(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	if err := os.WriteFile(filepath.Join(backing, "x.json"), []byte(`{"shared":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(backing, "x.json"), filepath.Join(backing, "y.json")); err != nil {
		t.Fatal(err)
	}
	d, err := h.mountMergefs(backing, mnt)
	h.needMount(t, err)
	s := h.startSession(t, "root", nil)
	put := func(name, data string) {
		t.Helper()
		fd := s.must(map[string]any{"op": "open", "path": filepath.Join(mnt, name), "flags": []string{"O_WRONLY", "O_CREAT", "O_TRUNC"}}).num("fd")
		s.must(map[string]any{"op": "write", "fd": fd, "data": data})
		if r := s.do(map[string]any{"op": "close", "fd": fd}); r.errno() != 0 {
			t.Fatalf("writing %s: %v", name, r)
		}
	}
	put("a.json", `{"a":1}`)
	put("plain.txt", "text")
	for _, l := range [][2]string{{"a.json", "c.json"}, {"a.json", "a.bak"}, {"plain.txt", "p.json"}} {
		if r := s.do(map[string]any{"op": "link", "src": filepath.Join(mnt, l[0]), "dst": filepath.Join(mnt, l[1])}); r.errno() != syscall.EPERM {
			t.Errorf("link %s %s: %v, want EPERM", l[0], l[1], r)
		}
		if _, err := os.Lstat(filepath.Join(backing, l[1])); err == nil {
			t.Errorf("%s exists after the refused link", l[1])
		}
	}
	if r := s.do(map[string]any{"op": "link", "src": filepath.Join(mnt, "plain.txt"), "dst": filepath.Join(mnt, "plain2.txt")}); r.errno() != 0 {
		t.Errorf("link between non-records: %v", r)
	}

	xi := s.must(map[string]any{"op": "stat", "path": filepath.Join(mnt, "x.json")})
	yi := s.must(map[string]any{"op": "stat", "path": filepath.Join(mnt, "y.json")})
	if xi.ino() == yi.ino() || xi.num("nlink") != 1 || yi.num("nlink") != 1 {
		t.Errorf("hard-linked records through the mount: inodes %d and %d, links %d and %d; want two records",
			xi.ino(), yi.ino(), xi.num("nlink"), yi.num("nlink"))
	}
	put("y.json", `{"shared":1,"y":2}`)
	if got := s.must(map[string]any{"op": "cat", "path": filepath.Join(mnt, "x.json")}).str("data"); got != `{"shared":1}` {
		t.Errorf("x.json after a write to y.json: %q", got)
	}
	if got := s.must(map[string]any{"op": "cat", "path": filepath.Join(mnt, "y.json")}).str("data"); !jsonEqual([]byte(got), []byte(`{"shared":1,"y":2}`)) {
		t.Errorf("y.json after its write: %q", got)
	}
	if !strings.Contains(d.log.String(), "several hard links") {
		t.Errorf("the daemon did not log the hard-linked record")
	}
}

// TestRenamePermissionsAsAnotherUser is pjdfstest's rename/21 as a test of its own: write permission on
// the directories is enough to move a file between them; moving someone else's directory may be
// refused (Linux needs write permission on it to update its ".."), but never succeeds partly.
func TestRenamePermissionsAsAnotherUser(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt, "--allow-other")
	h.needMount(t, err)
	root := h.startSession(t, "root", nil)
	a := h.startSession(t, "user", userA)
	root.must(map[string]any{"op": "umask", "mask": 0})
	for _, d := range []string{"n2", "n3"} {
		root.must(map[string]any{"op": "mkdir", "path": filepath.Join(mnt, d), "mode": 0o777})
	}
	root.must(map[string]any{"op": "mkdir", "path": filepath.Join(mnt, "n2", "sub"), "mode": 0o700})
	if r := a.do(map[string]any{"op": "rename", "src": filepath.Join(mnt, "n2", "sub"), "dst": filepath.Join(mnt, "n3", "sub")}); r.errno() != 0 && r.errno() != syscall.EACCES {
		t.Errorf("moving root's 0700 directory as a user: %v, want success or EACCES", r)
	}
	inN2, errN2 := os.Lstat(filepath.Join(backing, "n2", "sub"))
	inN3, errN3 := os.Lstat(filepath.Join(backing, "n3", "sub"))
	if (errN2 == nil) == (errN3 == nil) {
		t.Errorf("directory in n2: %v (%v), in n3: %v (%v); want exactly one", inN2 != nil, errN2, inN3 != nil, errN3)
	}
	fd := root.must(map[string]any{"op": "open", "path": filepath.Join(mnt, "n2", "f"), "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o644}).num("fd")
	root.must(map[string]any{"op": "close", "fd": fd})
	if r := a.do(map[string]any{"op": "rename", "src": filepath.Join(mnt, "n2", "f"), "dst": filepath.Join(mnt, "n3", "f")}); r.errno() != 0 {
		t.Errorf("moving root's file between 0777 directories as a user: %v", r)
	}
	if uid, _, _ := ownerOf(t, filepath.Join(backing, "n3", "f")); uid != 0 {
		t.Errorf("the moved file is owned by %d, want root still", uid)
	}
}

// TestTruncateByPathAndExclusiveCreateOfRecords: truncate(2) by path on a record commits the cut (or
// zero-extended) content, which must still be a valid record: cutting whitespace changes nothing,
// and cutting it to a prefix or extending it is refused with EIO and leaves the record; an O_EXCL create of an existing record name fails with EEXIST, and of a free one reserves
// the name until the creator's first commit.
func TestTruncateByPathAndExclusiveCreateOfRecords(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt)
	h.needMount(t, err)
	s := h.startSession(t, "root", nil)
	r := filepath.Join(mnt, "r.json")
	s.put(r, `{"a":1}   `)

	// Cutting trailing spaces leaves the same JSON: a commit with nothing to change.
	if res := s.do(map[string]any{"op": "truncate", "path": r, "size": 7}); res.errno() != 0 {
		t.Errorf("truncating trailing spaces away: %v", res)
	}
	for _, size := range []int{3, 0, 64} {
		if res := s.do(map[string]any{"op": "truncate", "path": r, "size": size}); res.errno() != syscall.EIO {
			t.Errorf("truncating the record to %d bytes: %v, want EIO (not a valid record)", size, res)
		}
	}
	if got := string(readFile(t, filepath.Join(backing, "r.json"))); got != `{"a":1}   ` {
		t.Errorf("record after truncates: %q, want it unchanged", got)
	}

	if res := s.do(map[string]any{"op": "open", "path": r, "flags": []string{"O_WRONLY", "O_CREAT", "O_EXCL"}}); res.errno() != syscall.EEXIST {
		t.Errorf("exclusive create of an existing record: %v, want EEXIST", res)
	}
	n := filepath.Join(mnt, "new.json")
	fd := s.must(map[string]any{"op": "open", "path": n, "flags": []string{"O_WRONLY", "O_CREAT", "O_EXCL"}, "mode": 0o600}).num("fd")
	if res := s.do(map[string]any{"op": "open", "path": n, "flags": []string{"O_WRONLY", "O_CREAT", "O_EXCL"}}); res.errno() != syscall.EEXIST {
		t.Errorf("second exclusive create of a reserved record: %v, want EEXIST", res)
	}
	s.must(map[string]any{"op": "write", "fd": fd, "data": `{"n":1}`})
	if res := s.do(map[string]any{"op": "close", "fd": fd}); res.errno() != 0 {
		t.Fatalf("committing the exclusively created record: %v", res)
	}
	if got := string(readFile(t, filepath.Join(backing, "new.json"))); got != `{"n":1}` {
		t.Errorf("exclusively created record: %q", got)
	}
	if _, _, mode := ownerOf(t, filepath.Join(backing, "new.json")); mode != 0o600 {
		t.Errorf("exclusively created record's mode %v, want 0600", mode)
	}
}

// TestMmapOfRecords: a record handle bypasses the page cache so that each handle keeps its own
// snapshot, so a shared mapping of a record fails with ENODEV, writable or not; a private mapping
// (copy-on-write, what read-only tools can use) works and shows the handle's snapshot. With cached
// reads, a read-only descriptor of an unchanged record reads through the page cache: it can be
// mapped shared (read-only).
func TestMmapOfRecords(t *testing.T) { forCacheModes(t, testMmapOfRecords) }

func testMmapOfRecords(t *testing.T, flags ...string) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt, flags...)
	h.needMount(t, err)
	cached := !slices.Contains(flags, "--cache-reads=false")
	s := h.startSession(t, "root", nil)
	r := filepath.Join(mnt, "r.json")
	s.put(r, `{"mapped":true}`)
	// A version's first open is not cached, its second is.
	s.must(map[string]any{"op": "close", "fd": s.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_RDONLY"}}).num("fd")})
	rd := s.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_RDONLY"}}).num("fd")
	rw := s.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_RDWR"}}).num("fd")
	if got := s.do(map[string]any{"op": "mmap", "fd": rd}); got.str("data") != `{"mapped":true}` {
		t.Errorf("private read-only mapping of a record: %v", got)
	}
	for _, tc := range []struct {
		fd     int64
		write  bool
		cached bool
	}{{rd, false, cached}, {rw, false, false}, {rw, true, false}} {
		got := s.do(map[string]any{"op": "mmap", "fd": tc.fd, "shared": true, "write": tc.write})
		if tc.cached && got.str("data") != `{"mapped":true}` {
			t.Errorf("shared read-only mapping of a cached read-only descriptor: %v", got)
		}
		if !tc.cached && got.errno() != syscall.ENODEV {
			t.Errorf("shared mapping (writable %v) of a record: %v, want ENODEV", tc.write, got)
		}
	}
	// Other files map as on the backing filesystem.
	p := filepath.Join(mnt, "plain.txt")
	fd := s.must(map[string]any{"op": "open", "path": p, "flags": []string{"O_RDWR", "O_CREAT"}}).num("fd")
	s.must(map[string]any{"op": "write", "fd": fd, "data": "plain"})
	if got := s.do(map[string]any{"op": "mmap", "fd": fd, "shared": true, "write": true}); got.str("data") != "plain" {
		t.Errorf("shared writable mapping of a plain file: %v", got)
	}
}
