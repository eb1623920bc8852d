package backing

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

func TestIdentityIsStampedOnceAndCarriedForward(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	path := filepath.Join(dir, "r.json")
	// A record made outside mergefs has no identity until the store first reads it.
	if err := os.WriteFile(path, []byte(`{"v":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(path, IdentityXattr, nil); err != unix.ENODATA {
		t.Fatalf("fresh file has an identity already: %v", err)
	}
	rootDir := Dir{FD: s.rootFD, Ino: s.rootIno}
	first, err := s.ReadAt(rootDir, "r.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Identity.ID&(1<<63) == 0 || first.Identity.Gen != 0 {
		t.Fatalf("stamped identity %+v, want a top-bit id at generation 0", first.Identity)
	}
	again, err := s.ReadAt(rootDir, "r.json", nil)
	if err != nil || again.Identity != first.Identity {
		t.Fatalf("second read: %+v, %v; want the same identity %+v", again.Identity, err, first.Identity)
	}
	for gen := uint64(1); gen <= 3; gen++ {
		res, err := s.CommitAt(context.Background(), rootDir, "r.json", Commit{Expect: first.Identity.ID,
			Merge: func([]byte, bool) ([]byte, error) { return []byte(`{"v":` + string(rune('0'+gen)) + `}`), nil }})
		if err != nil {
			t.Fatal(err)
		}
		if want := (Identity{ID: first.Identity.ID, Gen: gen}); res.Identity != want || identityOf(t, path) != want {
			t.Errorf("commit %d: result %+v, file %+v, want %+v", gen, res.Identity, identityOf(t, path), want)
		}
	}
}

func TestCommitToARecordReplacedSinceOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	put(t, s, "r.json", `{"v":1}`)
	path := filepath.Join(dir, "r.json")
	opened := identityOf(t, path).ID

	// Deleted and re-created at the same name by someone else: another record.
	os.Remove(path)
	if err := os.WriteFile(path, []byte(`{"other":"owner"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := s.Commit(context.Background(), "r.json", Commit{Expect: opened, Merge: mustNotMerge(t).Merge})
	if !errors.Is(err, ErrRecordChanged) || !errors.Is(err, unix.ESTALE) {
		t.Errorf("commit into a re-created record: %v, want ErrRecordChanged (ESTALE)", err)
	}
	if got := readFile(t, path); got != `{"other":"owner"}` {
		t.Errorf("re-created record now %q", got)
	}
	// Deleted and gone: the commit does not bring it back.
	os.Remove(path)
	_, err = s.Commit(context.Background(), "r.json", Commit{Expect: opened, Merge: mustNotMerge(t).Merge})
	if !errors.Is(err, ErrRecordChanged) {
		t.Errorf("commit into a deleted record: %v, want ErrRecordChanged", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the deleted record came back: %v", err)
	}
	// A writer whose record is new (Expect 0) merges with a record another creator made meanwhile.
	put(t, s, "r.json", `{"first":"creator"}`)
	made := identityOf(t, path).ID
	res, err := s.Commit(context.Background(), "r.json", Commit{NewID: NewID(), Merge: func(theirs []byte, exists bool) ([]byte, error) {
		if !exists {
			t.Error("second creator does not see the first one's record")
		}
		return []byte(`{"first":"creator","second":"creator"}`), nil
	}})
	if err != nil || res.Identity.ID != made {
		t.Errorf("second creator's commit: %+v, %v; want the first creator's identity %#x", res.Identity, err, made)
	}
}

// user is an unprivileged identity for permission tests.
var user = &sysx.Cred{UID: 4321, GID: 4321}

func TestCommitChecksTheWritersPermissionNow(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, FsyncOnRequest)
	put(t, s, "r.json", `{"v":1}`)
	path := filepath.Join(dir, "r.json")
	write := func(c Commit) error {
		c.Merge = func([]byte, bool) ([]byte, error) { return []byte(`{"v":2}`), nil }
		_, err := s.Commit(context.Background(), "r.json", c)
		return err
	}
	// Root's 0644 record: the user may not write it.
	if err := write(Commit{Writer: user}); !errors.Is(err, unix.EACCES) {
		t.Errorf("user writing root's 0644 record: %v, want EACCES", err)
	}
	// An ACL entry for the user lets it write; the kernel evaluates it.
	setfacl(t, "-m", "u:4321:rw", path)
	if err := write(Commit{Writer: user}); err != nil {
		t.Errorf("user writing with an ACL entry: %v", err)
	}
	// The owner made it read-only after the writer opened it: refused now.
	setfacl(t, "-b", path)
	if err := os.Chown(path, 4321, 4321); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := write(Commit{Writer: user}); !errors.Is(err, unix.EACCES) {
		t.Errorf("owner writing its 0444 record: %v, want EACCES", err)
	}
	if got := readFile(t, path); got != `{"v":2}` {
		t.Errorf("record = %q, want the one permitted commit's", got)
	}
	// A new record for the user in a directory it may not write: refused, nothing left behind.
	_, err := s.Commit(context.Background(), "new.json", Commit{Writer: user, Mode: 0o644,
		Merge: func([]byte, bool) ([]byte, error) { return []byte(`{}`), nil }})
	if !errors.Is(err, unix.EACCES) {
		t.Errorf("user creating a record in a 0755 root directory: %v, want EACCES", err)
	}
	if left := tempFiles(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestCommitKeepsExtendedAttributesAndACL(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	put(t, s, "r.json", `{"v":1}`)
	path := filepath.Join(dir, "r.json")
	setfacl(t, "-m", "u:4321:r,g:4321:-", path)
	if err := unix.Setxattr(path, "user.origin", []byte("import"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(path, "trusted.label", []byte{0, 1, 2}, 0); err != nil {
		t.Fatal(err)
	}
	// The directory's default ACL must not add to what the record had.
	setfacl(t, "-d", "-m", "u:999:rwx", dir)
	aclBefore := getfacl(t, path)
	modeBefore := stat(t, path).Mode
	put(t, s, "r.json", `{"v":2}`)
	if got := getfacl(t, path); got != aclBefore {
		t.Errorf("ACL after a commit:\n%s\nwant\n%s", got, aclBefore)
	}
	if m := stat(t, path).Mode; m != modeBefore {
		t.Errorf("mode %#o after a commit, want %#o", m, modeBefore)
	}
	for name, want := range map[string]string{"user.origin": "import", "trusted.label": "\x00\x01\x02"} {
		b := make([]byte, 64)
		n, err := unix.Getxattr(path, name, b)
		if err != nil || string(b[:n]) != want {
			t.Errorf("%s after a commit: %q, %v; want %q", name, b[:max(n, 0)], err, want)
		}
	}
}

func TestSplitGivesAHardLinkedRecordItsOwnInode(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	put(t, s, "a.json", `{"shared":1}`)
	a, b := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	if err := os.Link(a, b); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(a, 0o604); err != nil {
		t.Fatal(err)
	}
	idA := identityOf(t, a)
	rootDir := Dir{FD: s.rootFD, Ino: s.rootIno}
	split, err := s.Split(context.Background(), rootDir, "b.json")
	if err != nil || !split {
		t.Fatalf("Split = %v, %v", split, err)
	}
	sa, sb := stat(t, a), stat(t, b)
	if sa.Ino == sb.Ino || sa.Nlink != 1 || sb.Nlink != 1 {
		t.Errorf("after the split: inodes %d and %d, links %d and %d", sa.Ino, sb.Ino, sa.Nlink, sb.Nlink)
	}
	if sb.Mode != sa.Mode || readFile(t, b) != `{"shared":1}` {
		t.Errorf("the split copy: mode %#o content %q, want %#o and the shared content", sb.Mode, readFile(t, b), sa.Mode)
	}
	if ib := identityOf(t, b); ib.ID == idA.ID || identityOf(t, a) != idA {
		t.Errorf("identities after the split: a %+v (was %+v), b %+v", identityOf(t, a), idA, ib)
	}
	if split, err := s.Split(context.Background(), rootDir, "a.json"); err != nil || split {
		t.Errorf("Split of a record with one link = %v, %v; want nothing to do", split, err)
	}
}

func setfacl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("setfacl", args...).CombinedOutput(); err != nil {
		t.Fatalf("setfacl %s: %v: %s (Debian package acl)", strings.Join(args, " "), err, out)
	}
}

func getfacl(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("getfacl", "-c", "-n", path).CombinedOutput()
	if err != nil {
		t.Fatalf("getfacl %s: %v: %s", path, err, out)
	}
	return string(out)
}
