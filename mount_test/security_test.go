package mount_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The security tests act as unprivileged users (numeric uids 65534 and 65533) against a mount made
// with --allow-other by the root daemon, the way an attacker with a shell account would. Each checks
// that the attacker gets an error and that the victim's file, and a root-owned file outside the
// backing directory, keep their content, owner and mode. Each failed on the main they were written
// against (path-based operations as root, commits into whatever had the name).

// secureFixture mounts a backing directory with --allow-other and makes shared (mode perm) in it and a
// root-only file outside it. It returns the mount's path for shared, the backing path for shared, and
// the outside file.
func secureFixture(t *testing.T, perm os.FileMode) (h *harness, mshared, bshared, outside string) {
	h = newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt, "--allow-other")
	h.needMount(t, err)
	bshared = filepath.Join(backing, "shared")
	if err := os.Mkdir(bshared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bshared, perm); err != nil {
		t.Fatal(err)
	}
	outside = filepath.Join(h.path("outside"), "shadow")
	if err := os.WriteFile(outside, []byte("root:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h, filepath.Join(mnt, "shared"), bshared, outside
}

func expectUnchanged(t *testing.T, what, path string, want fileState) {
	t.Helper()
	if got := stateOf(t, path); got != want {
		t.Errorf("%s changed: %v, was %v", what, got, want)
	}
}

// TestStaleDescriptorCannotChmodAHostFile is attack 1: a descriptor on a file the attacker then removed,
// with a symlink to a root-owned file put at its name; fchmod through the old descriptor.
func TestStaleDescriptorCannotChmodAHostFile(t *testing.T) {
	for _, name := range []string{"evil.json", "evil.txt"} {
		t.Run(name, func(t *testing.T) {
			h, mshared, _, outside := secureFixture(t, 0o1777)
			before := stateOf(t, outside)
			a := h.startSession(t, "attacker", userA)
			p := filepath.Join(mshared, name)
			fd := a.must(map[string]any{"op": "open", "path": p, "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o644}).num("fd")
			a.must(map[string]any{"op": "write", "fd": fd, "data": `{"a":1}`})
			a.must(map[string]any{"op": "close", "fd": fd})
			fd = a.must(map[string]any{"op": "open", "path": p, "flags": []string{"O_RDONLY"}}).num("fd")
			a.must(map[string]any{"op": "unlink", "path": p})
			a.must(map[string]any{"op": "symlink", "target": outside, "path": p})
			r := a.do(map[string]any{"op": "fchmod", "fd": fd, "mode": 0o666})
			t.Logf("fchmod through the stale descriptor: %v", r)
			r = a.do(map[string]any{"op": "fchown", "fd": fd, "uid": 65534, "gid": 65534})
			t.Logf("fchown through the stale descriptor: %v", r)
			expectUnchanged(t, "the root-owned file outside the backing directory", outside, before)
		})
	}
}

// TestStaleDescriptorCannotReachAnotherUsersRecord is attack 2: a record the attacker removed while
// holding it open for writing, re-created by the victim as a private record; the attacker writes,
// closes, chmods and stats through the old descriptor.
func TestStaleDescriptorCannotReachAnotherUsersRecord(t *testing.T) {
	h, mshared, bshared, _ := secureFixture(t, 0o1777)
	a := h.startSession(t, "attacker", userA)
	b := h.startSession(t, "victim", userB)
	p := filepath.Join(mshared, "v.json")
	fd := a.must(map[string]any{"op": "open", "path": p, "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o644}).num("fd")
	a.must(map[string]any{"op": "write", "fd": fd, "data": `{"mine":1}`})
	a.must(map[string]any{"op": "close", "fd": fd})
	fd = a.must(map[string]any{"op": "open", "path": p, "flags": []string{"O_RDWR"}}).num("fd")
	a.must(map[string]any{"op": "unlink", "path": p})

	b.must(map[string]any{"op": "umask", "mask": 0o077})
	bfd := b.must(map[string]any{"op": "open", "path": p, "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o600}).num("fd")
	b.must(map[string]any{"op": "write", "fd": bfd, "data": `{"secret":"b's"}`})
	b.must(map[string]any{"op": "close", "fd": bfd})
	victim := filepath.Join(bshared, "v.json")
	before := stateOf(t, victim)
	if before.uid != userB.Uid || before.mode != 0o600 {
		t.Fatalf("victim's record is %v, want uid %d mode 0600", before, userB.Uid)
	}

	a.must(map[string]any{"op": "write", "fd": fd, "data": `{"evil":1}`})
	if r := a.do(map[string]any{"op": "close", "fd": fd}); r.errno() == 0 {
		t.Errorf("attacker's close committed into another record without an error")
	}
	expectUnchanged(t, "victim's record after the attacker's close", victim, before)

	fd = a.must(map[string]any{"op": "open", "path": filepath.Join(mshared, "own.json"), "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o644}).num("fd")
	a.must(map[string]any{"op": "write", "fd": fd, "data": `{}`})
	a.must(map[string]any{"op": "close", "fd": fd})
	fd = a.must(map[string]any{"op": "open", "path": filepath.Join(mshared, "own.json"), "flags": []string{"O_RDONLY"}}).num("fd")
	a.must(map[string]any{"op": "unlink", "path": filepath.Join(mshared, "own.json")})
	b.must(map[string]any{"op": "rename", "src": p, "dst": filepath.Join(mshared, "own.json")})
	victim = filepath.Join(bshared, "own.json")
	before = stateOf(t, victim)
	r := a.do(map[string]any{"op": "fchmod", "fd": fd, "mode": 0o644})
	t.Logf("fchmod through the stale descriptor: %v", r)
	expectUnchanged(t, "victim's record after the attacker's fchmod", victim, before)
	if st := a.do(map[string]any{"op": "fstat", "fd": fd}); st.errno() == 0 && uint32(st.num("uid")) == userB.Uid {
		t.Errorf("fstat of the attacker's stale descriptor reports the victim's record: %v", st)
	}
	if r := a.do(map[string]any{"op": "read", "fd": fd}); strings.Contains(r.str("data"), "secret") {
		t.Errorf("the attacker read the victim's record through its stale descriptor: %v", r)
	}
}

// TestRenameOntoARecordIsAWriteIntoIt is attack 3 and its variants: a rename onto a record needs the
// right to write it, keeps the record's owner and mode, and never moves content the renamer could
// not read into a file the renamer can.
func TestRenameOntoARecordIsAWriteIntoIt(t *testing.T) {
	h, mshared, bshared, _ := secureFixture(t, 0o777)
	a := h.startSession(t, "attacker", userA)
	b := h.startSession(t, "victim", userB)
	c := filepath.Join(mshared, "c.json")
	bfd := b.must(map[string]any{"op": "open", "path": c, "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o644}).num("fd")
	b.must(map[string]any{"op": "write", "fd": bfd, "data": `{"public":1}`})
	b.must(map[string]any{"op": "close", "fd": bfd})
	// The attacker reads the record while it is public: that version is its base.
	if r := a.must(map[string]any{"op": "cat", "path": c}); !strings.Contains(r.str("data"), "public") {
		t.Fatalf("attacker reading the public record: %v", r)
	}
	b.must(map[string]any{"op": "chmod", "path": c, "mode": 0o600})
	bfd = b.must(map[string]any{"op": "open", "path": c, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
	b.must(map[string]any{"op": "write", "fd": bfd, "data": `{"public":1,"secret":"b's"}`})
	b.must(map[string]any{"op": "close", "fd": bfd})
	record := filepath.Join(bshared, "c.json")
	before := stateOf(t, record)

	tmp := filepath.Join(mshared, "tmp.txt")
	fd := a.must(map[string]any{"op": "open", "path": tmp, "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o644}).num("fd")
	a.must(map[string]any{"op": "write", "fd": fd, "data": `{"x":1}`})
	a.must(map[string]any{"op": "close", "fd": fd})
	if r := a.do(map[string]any{"op": "rename", "src": tmp, "dst": c}); r.errno() != syscall.EACCES {
		t.Errorf("renaming onto another user's private record: %v, want EACCES", r)
	}
	expectUnchanged(t, "the private record after the refused rename", record, before)
	if _, err := os.Lstat(filepath.Join(bshared, "tmp.txt")); err != nil {
		t.Errorf("the refused rename's source is gone: %v", err)
	}

	// A record the renamer may write: the rename merges, and the record keeps its owner and mode.
	b.must(map[string]any{"op": "chmod", "path": c, "mode": 0o666})
	if r := a.do(map[string]any{"op": "rename", "src": tmp, "dst": c}); r.errno() != 0 {
		t.Fatalf("renaming onto a 0666 record: %v", r)
	}
	after := stateOf(t, record)
	if after.uid != userB.Uid || after.mode != 0o666 || !strings.Contains(after.data, `"x":1`) || !strings.Contains(after.data, "secret") {
		t.Errorf("record after a permitted rename onto it: %v; want the victim's, 0666, with both changes", after)
	}

	// A file the renamer cannot read, renamed onto the renamer's own record (it may: the directory
	// is 0777 and not sticky): its content must not land where the renamer can read it.
	b.must(map[string]any{"op": "umask", "mask": 0o077})
	priv := filepath.Join(mshared, "priv.txt")
	bfd = b.must(map[string]any{"op": "open", "path": priv, "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o600}).num("fd")
	b.must(map[string]any{"op": "write", "fd": bfd, "data": `{"leak":"b's private file"}`})
	b.must(map[string]any{"op": "close", "fd": bfd})
	own := filepath.Join(mshared, "own.json")
	fd = a.must(map[string]any{"op": "open", "path": own, "flags": []string{"O_WRONLY", "O_CREAT"}, "mode": 0o644}).num("fd")
	a.must(map[string]any{"op": "write", "fd": fd, "data": `{"own":1}`})
	a.must(map[string]any{"op": "close", "fd": fd})
	ownBefore := stateOf(t, filepath.Join(bshared, "own.json"))
	if r := a.do(map[string]any{"op": "rename", "src": priv, "dst": own}); r.errno() != syscall.EACCES {
		t.Errorf("renaming an unreadable file onto one's own record: %v, want EACCES", r)
	}
	expectUnchanged(t, "the renamer's record", filepath.Join(bshared, "own.json"), ownBefore)
}

// TestBackingDirectoryReplacedWhileMounted is attack 4: the store and the pass-through side both act
// on the descriptor of the directory that was mounted, so moving it away and putting another in its
// place changes nothing for the mount.
func TestBackingDirectoryReplacedWhileMounted(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt)
	h.needMount(t, err)
	root := h.startSession(t, "root", nil)
	r := filepath.Join(mnt, "r.json")
	root.put(r, `{"v":1}`)

	old := backing + ".old"
	if err := os.Rename(backing, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(backing, "r.json"), []byte(`{"v":"impostor"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := root.must(map[string]any{"op": "cat", "path": r}).str("data"); got != `{"v":1}` {
		t.Errorf("reading through the mount after the swap: %q, want the mounted directory's record", got)
	}
	fd := root.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
	root.must(map[string]any{"op": "write", "fd": fd, "data": `{"v":2}`})
	root.must(map[string]any{"op": "close", "fd": fd})
	fd = root.must(map[string]any{"op": "open", "path": filepath.Join(mnt, "new.txt"), "flags": []string{"O_WRONLY", "O_CREAT"}}).num("fd")
	root.must(map[string]any{"op": "close", "fd": fd})
	if got := string(readFile(t, filepath.Join(old, "r.json"))); !jsonEqual([]byte(got), []byte(`{"v":2}`)) {
		t.Errorf("the mounted directory's record after a commit: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(old, "new.txt")); err != nil {
		t.Errorf("a file created through the mount is not in the mounted directory: %v", err)
	}
	if got := string(readFile(t, filepath.Join(backing, "r.json"))); got != `{"v":"impostor"}` {
		t.Errorf("the directory now at the old path was written: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(backing, "new.txt")); err == nil {
		t.Errorf("a file created through the mount landed in the directory now at the old path")
	}
}

// TestCommitsKeepACLsAndExtendedAttributes is item 5: a commit replaces the record's file, and the new
// file carries every extended attribute of the old one, POSIX ACLs included, so that access stays as
// the owner set it; and the ACL is enforced through the mount.
func TestCommitsKeepACLsAndExtendedAttributes(t *testing.T) {
	needTools(t, "setfacl", "getfacl", "setfattr", "getfattr")
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountMergefs(backing, mnt, "--allow-other")
	h.needMount(t, err)
	record := filepath.Join(backing, "r.json")
	writeOwned(t, record, []byte(`{"v":0}`), 0o644, 0, 0)
	run(t, "setfacl", "-m", "u:65534:---,u:65533:rw", record)
	run(t, "setfattr", "-n", "user.origin", "-v", "import", record)
	aclBefore := run(t, "getfacl", "-c", "-n", record)

	root := h.startSession(t, "root", nil)
	a := h.startSession(t, "denied", userA)
	b := h.startSession(t, "granted", userB)
	for i, s := range []*session{root, b} {
		fd := s.must(map[string]any{"op": "open", "path": filepath.Join(mnt, "r.json"), "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
		s.must(map[string]any{"op": "write", "fd": fd, "data": `{"v":` + string(rune('1'+i)) + `}`})
		if r := s.do(map[string]any{"op": "close", "fd": fd}); r.errno() != 0 {
			t.Fatalf("%s committing: %v", s.label, r)
		}
	}
	if got := run(t, "getfacl", "-c", "-n", record); got != aclBefore {
		t.Errorf("ACL after commits:\n%s\nwant\n%s", got, aclBefore)
	}
	if got := run(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.origin", record); got != "import" {
		t.Errorf("user.origin after commits: %q", got)
	}
	if !jsonEqual(readFile(t, record), []byte(`{"v":2}`)) {
		t.Errorf("record after the commits: %s", readFile(t, record))
	}
	// The ACL denies uid 65534 although "other" may read: enforced through the mount.
	if r := a.do(map[string]any{"op": "cat", "path": filepath.Join(mnt, "r.json")}); r.errno() != syscall.EACCES {
		t.Errorf("user denied by the ACL reading through the mount: %v, want EACCES", r)
	}
	// The record's identity attribute is mergefs's own: not listed, not settable through the mount.
	if names := root.must(map[string]any{"op": "listxattr", "path": filepath.Join(mnt, "r.json")}); strings.Contains(names.String(), "mergefs") {
		t.Errorf("listxattr through the mount shows mergefs's own attribute: %v", names)
	}
	if r := root.do(map[string]any{"op": "setxattr", "path": filepath.Join(mnt, "r.json"), "name": "trusted.mergefs.id", "value": "x"}); r.errno() != syscall.EPERM {
		t.Errorf("setting mergefs's identity attribute through the mount: %v, want EPERM", r)
	}
	if got := root.must(map[string]any{"op": "getxattr", "path": filepath.Join(mnt, "r.json"), "name": "user.origin"}).str("value"); got != "import" {
		t.Errorf("user.origin through the mount: %q", got)
	}
}

// TestSymlinkSwappedUnderTheMount: a directory the kernel has looked up is replaced, in the backing
// directory, by a symlink to a root-only directory; creates, renames and chmods through the mount as
// a user then follow the symlink as that user (the kernel's doing) or fail, and never act as root.
func TestSymlinkSwappedUnderTheMount(t *testing.T) {
	h, mshared, bshared, outside := secureFixture(t, 0o1777)
	secretDir := filepath.Dir(outside)
	if err := os.Chmod(secretDir, 0o755); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, outside)
	a := h.startSession(t, "attacker", userA)
	d := filepath.Join(mshared, "d")
	a.must(map[string]any{"op": "mkdir", "path": d, "mode": 0o777})
	fd := a.must(map[string]any{"op": "open", "path": filepath.Join(d, "f.txt"), "flags": []string{"O_WRONLY", "O_CREAT"}}).num("fd")
	a.must(map[string]any{"op": "close", "fd": fd})
	a.must(map[string]any{"op": "stat", "path": filepath.Join(d, "f.txt")})
	// The swap happens behind the mount's back (in the backing directory).
	if err := os.Rename(filepath.Join(bshared, "d"), filepath.Join(bshared, "d.moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secretDir, filepath.Join(bshared, "d")); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []map[string]any{
		{"op": "open", "path": filepath.Join(d, "new.json"), "flags": []string{"O_WRONLY", "O_CREAT"}},
		{"op": "open", "path": filepath.Join(d, "new.txt"), "flags": []string{"O_WRONLY", "O_CREAT"}},
		{"op": "chmod", "path": filepath.Join(d, "shadow"), "mode": 0o666},
		{"op": "chmod", "path": filepath.Join(d, "f.txt"), "mode": 0o666},
		{"op": "rename", "src": filepath.Join(d, "shadow"), "dst": filepath.Join(mshared, "stolen")},
		{"op": "mkdir", "path": filepath.Join(d, "sub")},
		{"op": "symlink", "target": "/etc/passwd", "path": filepath.Join(d, "l")},
	} {
		r := a.do(cmd)
		t.Logf("%v: %v", cmd, r)
	}
	expectUnchanged(t, "the root-only file behind the swapped-in symlink", outside, before)
	entries, err := os.ReadDir(secretDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("the root-only directory behind the symlink now holds %v", entries)
	}
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFatal(t, "%s not found (Debian packages acl and attr): %v", tool, err)
		}
	}
}

// run runs a tool as root and returns its trimmed output.
func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
