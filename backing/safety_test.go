package backing

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

const secret = `{"secret":true}`

// escapeFixture is a backing root next to a directory outside it that holds a record-like file.
func escapeFixture(t *testing.T) (root, outside string) {
	base := t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret.json"), []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, outside
}

// checkOutsideUntouched fails if anything in outside differs from what escapeFixture put there.
func checkOutsideUntouched(t *testing.T, outside string) {
	t.Helper()
	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "secret.json" {
		t.Errorf("outside the root now holds %v", entries)
	}
	if got := readFile(t, filepath.Join(outside, "secret.json")); got != secret {
		t.Errorf("file outside the root now holds %q", got)
	}
}

func mustNotMerge(t *testing.T) Commit {
	return Commit{Mode: 0o644, Merge: func(theirs []byte, exists bool) ([]byte, error) {
		t.Errorf("Merge called (theirs %q, exists %v)", theirs, exists)
		return []byte(`{"written":true}`), nil
	}}
}

func TestSymlinksOutOfTheRootAreRefused(t *testing.T) {
	root, outside := escapeFixture(t)
	s := openStore(t, root, FsyncOnRequest)
	links := map[string]string{
		"abs.json": filepath.Join(outside, "secret.json"),
		"rel.json": "../outside/secret.json",
		"dirlink":  outside,
		"dirrel":   "../outside",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"abs.json", "rel.json", "dirlink/secret.json", "dirrel/secret.json", "dirlink/new.json"} {
		if data, _, err := s.Read(name); !errors.Is(err, unix.ELOOP) {
			t.Errorf("Read(%q) = %q, %v; want ELOOP", name, data, err)
		}
		if _, err := s.Commit(context.Background(), name, mustNotMerge(t)); !errors.Is(err, unix.ELOOP) {
			t.Errorf("Commit(%q) = %v, want ELOOP", name, err)
		}
	}
	// As a rename source, a symlink is refused too, and the record stays as it was.
	put(t, s, "r.json", `{"r":1}`)
	c := mustNotMerge(t)
	c.Source = &Source{Name: "abs.json"}
	if _, err := s.Commit(context.Background(), "r.json", c); !errors.Is(err, unix.ELOOP) {
		t.Errorf("Commit with a symlink source = %v, want ELOOP", err)
	}
	if got := readFile(t, filepath.Join(root, "r.json")); got != `{"r":1}` {
		t.Errorf("record = %q", got)
	}
	for name := range links {
		if fi, err := os.Lstat(filepath.Join(root, name)); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("%s is no longer the symlink: %v %v", name, fi, err)
		}
	}
	for _, name := range []string{"../outside/secret.json", "dirlink/../../outside/secret.json", filepath.Join(outside, "secret.json")} {
		if _, _, err := s.Read(name); !errors.Is(err, unix.EXDEV) {
			t.Errorf("Read(%q) = %v, want EXDEV", name, err)
		}
		if _, err := s.Commit(context.Background(), name, mustNotMerge(t)); !errors.Is(err, unix.EXDEV) {
			t.Errorf("Commit(%q) = %v, want EXDEV", name, err)
		}
	}
	checkOutsideUntouched(t, outside)
}

func TestDirectorySwappedForSymlinkDuringCommit(t *testing.T) {
	root, outside := escapeFixture(t)
	s := openStore(t, root, FsyncAlways)
	if err := os.Mkdir(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	put(t, s, "d/secret.json", `{"inside":1}`)
	_, err := s.Commit(context.Background(), "d/secret.json", Commit{Merge: func(theirs []byte, exists bool) ([]byte, error) {
		// Between resolving the directory and writing: swap it for a link out of the root.
		if err := os.Rename(filepath.Join(root, "d"), filepath.Join(root, "d.old")); err != nil {
			return nil, err
		}
		if err := os.Symlink(outside, filepath.Join(root, "d")); err != nil {
			return nil, err
		}
		return []byte(`{"inside":2}`), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkOutsideUntouched(t, outside)
	if got := readFile(t, filepath.Join(root, "d.old", "secret.json")); got != `{"inside":2}` {
		t.Errorf("the directory the commit resolved holds %q", got)
	}
	if _, err := s.Commit(context.Background(), "d/secret.json", mustNotMerge(t)); !errors.Is(err, unix.ELOOP) {
		t.Errorf("next commit through the symlink: %v, want ELOOP", err)
	}
	if left := tempFiles(t, root); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// requireRoot skips a test that needs root, except in CI, where it must run.
func requireRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("MERGEFS_REQUIRE_FUSE") == "1" {
		t.Fatal("this test needs root and CI requires it to run")
	}
	t.Skip("needs root")
}

func TestNewRecordGetsAskedModeAndOwner(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, FsyncOnRequest)
	// A record made for a writer is created as that writer.
	_, err := s.Commit(context.Background(), "r.json", Commit{Mode: 0o640 | fs.ModeSetgid, Writer: &sysx.Cred{UID: 1234, GID: 5678},
		Merge: func([]byte, bool) ([]byte, error) { return []byte(`{}`), nil }})
	if err != nil {
		t.Fatal(err)
	}
	st := stat(t, filepath.Join(dir, "r.json"))
	if st.Mode&0o7777 != 0o2640 || st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("new record: mode %#o owner %d:%d, want 02640 1234:5678", st.Mode&0o7777, st.Uid, st.Gid)
	}

	_, err = s.Commit(context.Background(), "daemons.json", Commit{Mode: 0o600,
		Merge: func([]byte, bool) ([]byte, error) { return []byte(`{}`), nil }})
	if err != nil {
		t.Fatal(err)
	}
	st = stat(t, filepath.Join(dir, "daemons.json"))
	if st.Mode&0o7777 != 0o600 || st.Uid != uint32(os.Geteuid()) || st.Gid != uint32(os.Getegid()) {
		t.Errorf("new record without a writer: mode %#o owner %d:%d, want 0600 and the daemon's", st.Mode&0o7777, st.Uid, st.Gid)
	}

	// Mode as the filesystem layer passes it: raw Unix bits in an fs.FileMode. Mode 0 is 0000.
	for name, mode := range map[string]fs.FileMode{"raw.json": 0o4751, "sticky.json": 0o1644, "zero.json": 0} {
		_, err = s.Commit(context.Background(), name, Commit{Mode: mode,
			Merge: func([]byte, bool) ([]byte, error) { return []byte(`{}`), nil }})
		if err != nil {
			t.Fatal(err)
		}
		if st = stat(t, filepath.Join(dir, name)); st.Mode&0o7777 != uint32(mode) {
			t.Errorf("%s: mode %#o, want %#o", name, st.Mode&0o7777, uint32(mode))
		}
	}
}

func TestExistingRecordKeepsModeAndOwner(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	path := filepath.Join(dir, "r.json")
	put(t, s, "r.json", `{"v":0}`)
	if err := os.Chown(path, 1234, 4321); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o604); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		before := stat(t, path)
		content := `{"v":` + strconv.Itoa(i) + `}`
		// The asked mode and owner are for new records only.
		res, err := s.Commit(context.Background(), "r.json", Commit{Mode: 0o666,
			Merge: func([]byte, bool) ([]byte, error) { return []byte(content), nil }})
		if err != nil {
			t.Fatal(err)
		}
		after := stat(t, path)
		if res.Created || after.Ino == before.Ino {
			t.Fatalf("commit %d did not replace the record: %+v", i, res)
		}
		if after.Mode&0o7777 != 0o604 || after.Uid != 1234 || after.Gid != 4321 {
			t.Errorf("commit %d: mode %#o owner %d:%d, want 0604 1234:4321", i, after.Mode&0o7777, after.Uid, after.Gid)
		}
		if got := readFile(t, path); got != content {
			t.Errorf("commit %d: record %q", i, got)
		}
	}
}

func TestRenameOntoRecordIsAWriteIntoIt(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	put(t, s, "r.json", `{"a":1,"b":1}`)
	record := filepath.Join(dir, "r.json")
	if err := os.Chmod(record, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(record, "user.keep", []byte("me"), 0); err != nil {
		t.Fatal(err)
	}
	_, before, err := s.Read("r.json")
	if err != nil {
		t.Fatal(err)
	}
	id := identityOf(t, record)
	os.Mkdir(filepath.Join(dir, "tmp"), 0o755)
	src := filepath.Join(dir, "tmp", "worker.tmp")
	mine := []byte(`{"a":1,"b":2,"a long tail that the merged bytes are shorter than":0}`)
	if err := os.WriteFile(src, mine, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(src, 0o666); err != nil {
		t.Fatal(err)
	}
	res, err := s.Commit(context.Background(), "r.json", Commit{Source: &Source{Name: "tmp/worker.tmp", Ino: stat(t, src).Ino, Data: mine}, Mode: 0o644,
		Merge: func(theirs []byte, exists bool) ([]byte, error) {
			if !exists || string(theirs) != `{"a":1,"b":1}` {
				t.Errorf("theirs = %q, %v", theirs, exists)
			}
			return []byte(`{"a":1,"b":2}`), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Created || res.Unchanged {
		t.Errorf("result %+v", res)
	}
	// The record keeps what it had: mode, extended attributes, identity; only the content changed.
	st := stat(t, record)
	if st.Mode&0o7777 != 0o640 {
		t.Errorf("record mode %#o, want its own 0640 (not the source's 0666)", st.Mode&0o7777)
	}
	if v, err := unix.Getxattr(record, "user.keep", make([]byte, 8)); err != nil || v != 2 {
		t.Errorf("record lost its user.keep attribute: %d, %v", v, err)
	}
	if got := identityOf(t, record); got.ID != id.ID || got.Gen != id.Gen+1 || res.Identity != got {
		t.Errorf("identity %+v after the commit (result %+v), want id %#x generation %d", got, res.Identity, id.ID, id.Gen+1)
	}
	if got := readFile(t, record); got != `{"a":1,"b":2}` {
		t.Errorf("record = %q", got)
	}
	if _, err := os.Lstat(src); !os.IsNotExist(err) {
		t.Errorf("source still there: %v", err)
	}
	if _, v, _ := s.Read("r.json"); v != res.Version || v.Ino == before.Ino {
		t.Errorf("Read version %+v, commit version %+v, version before %+v", v, res.Version, before)
	}

	// Onto a name with no record yet, the source itself becomes the record, with an identity.
	newSrc := filepath.Join(dir, "new.tmp")
	os.WriteFile(newSrc, []byte(`{"n":1}`), 0o600)
	srcIno := stat(t, newSrc).Ino
	res, err = s.Commit(context.Background(), "new.json", Commit{Source: &Source{Name: "new.tmp", Data: []byte(`{"n":1}`)}, NewID: 1<<63 | 7,
		Merge: func(theirs []byte, exists bool) ([]byte, error) {
			if exists {
				t.Errorf("theirs %q exists", theirs)
			}
			return []byte(`{"n":1}`), nil
		}})
	if err != nil || !res.Created {
		t.Fatalf("rename onto a new name: %+v, %v", res, err)
	}
	if st := stat(t, filepath.Join(dir, "new.json")); st.Ino != srcIno || st.Mode&0o7777 != 0o600 {
		t.Errorf("new record: inode %d mode %#o, want the source's %d 0600", st.Ino, st.Mode&0o7777, srcIno)
	}
	if got := identityOf(t, filepath.Join(dir, "new.json")); got != (Identity{ID: 1<<63 | 7, Gen: 1}) {
		t.Errorf("new record's identity %+v", got)
	}

	if _, err := s.Commit(context.Background(), "r.json", Commit{Source: &Source{Name: "gone.tmp"}, Merge: mustNotMerge(t).Merge}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing source: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Commit(context.Background(), "r.json", Commit{Source: &Source{Name: "./r.json"}, Merge: mustNotMerge(t).Merge}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("source is the record: %v, want EINVAL", err)
	}
	// A source that changed since the renamer read it, or is another file now, is refused.
	os.WriteFile(src, []byte(`{"changed":1}`), 0o644)
	if _, err := s.Commit(context.Background(), "r.json", Commit{Source: &Source{Name: "tmp/worker.tmp", Data: mine}, Merge: mustNotMerge(t).Merge}); !errors.Is(err, ErrRecordChanged) {
		t.Errorf("changed source: %v, want ErrRecordChanged", err)
	}
	if _, err := s.Commit(context.Background(), "r.json", Commit{Source: &Source{Name: "tmp/worker.tmp", Ino: srcIno}, Merge: mustNotMerge(t).Merge}); !errors.Is(err, ErrRecordChanged) {
		t.Errorf("replaced source: %v, want ErrRecordChanged", err)
	}
	if got := readFile(t, record); got != `{"a":1,"b":2}` {
		t.Errorf("record = %q after failed commits", got)
	}
}

// identityOf reads a file's identity attribute by path.
func identityOf(t *testing.T, path string) Identity {
	t.Helper()
	b := make([]byte, 64)
	n, err := unix.Getxattr(path, IdentityXattr, b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	id, err := decodeIdentity(b[:n])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFsyncPolicy(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	content := func(s string) func([]byte, bool) ([]byte, error) {
		return func([]byte, bool) ([]byte, error) { return []byte(s), nil }
	}
	for _, tc := range []struct {
		name   string
		policy FsyncPolicy
		commit Commit
		want   int64 // fsync calls: file, directory, source directory
	}{
		{"on request, none asked", FsyncOnRequest, Commit{Merge: content(`{"v":2}`)}, 0},
		{"on request, asked", FsyncOnRequest, Commit{Sync: true, Merge: content(`{"v":2}`)}, 2},
		{"always", FsyncAlways, Commit{Merge: content(`{"v":2}`)}, 2},
		{"unchanged, none asked", FsyncOnRequest, Commit{Merge: content(`{"v":1}`)}, 0},
		{"unchanged, asked", FsyncOnRequest, Commit{Sync: true, Merge: content(`{"v":1}`)}, 2},
		{"unchanged, always", FsyncAlways, Commit{Merge: content(`{"v":1}`)}, 2},
		{"source, none asked", FsyncOnRequest, Commit{Source: &Source{Name: "src.tmp"}, Merge: content(`{"v":2}`)}, 0},
		{"source, asked", FsyncOnRequest, Commit{Source: &Source{Name: "src.tmp"}, Sync: true, Merge: content(`{"v":2}`)}, 2},
		{"source in another directory, always", FsyncAlways, Commit{Source: &Source{Name: "sub/src.tmp"}, Merge: content(`{"v":2}`)}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(dir, testOptions(t, tc.policy))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := os.WriteFile(filepath.Join(dir, "r.json"), []byte(`{"v":1}`), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.commit.Source != nil {
				if err := os.WriteFile(filepath.Join(dir, tc.commit.Source.Name), []byte(`{}`), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := s.fsyncs.Load()
			if _, err := s.Commit(context.Background(), "r.json", tc.commit); err != nil {
				t.Fatal(err)
			}
			if got := s.fsyncs.Load() - before; got != tc.want {
				t.Errorf("%d fsync calls, want %d", got, tc.want)
			}
		})
	}
}

func TestOpenFD(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, tempPrefix+"dead"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// An O_PATH descriptor, as taken before an in-place mount.
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenFD(fd, testOptions(t, FsyncAlways))
	if err != nil {
		t.Fatal(err)
	}
	if s.Recovered() != 1 {
		t.Errorf("Recovered() = %d, want 1", s.Recovered())
	}
	put(t, s, "r.json", `{"fd":1}`)
	if data, _, err := s.Read("r.json"); err != nil || string(data) != `{"fd":1}` {
		t.Errorf("Read = %q, %v", data, err)
	}
	s.Close()
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("Close left the store's descriptor open: %v", err)
	}

	// A root given as a path through /proc/self/fd.
	held, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	s = openStore(t, "/proc/self/fd/"+strconv.Itoa(int(held.Fd())), FsyncOnRequest)
	if data, _, err := s.Read("r.json"); err != nil || string(data) != `{"fd":1}` {
		t.Errorf("Read through /proc/self/fd = %q, %v", data, err)
	}

	// Not a directory: refused, and the descriptor is the store's to close.
	fd, err = unix.Open(filepath.Join(dir, "r.json"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFD(fd, Options{}); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("OpenFD on a file: %v, want ENOTDIR", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("failed OpenFD left the descriptor open: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing"), Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open on a missing directory: %v", err)
	}
}

func TestLockFileIsNotFollowed(t *testing.T) {
	root, outside := escapeFixture(t)
	if err := os.Symlink(filepath.Join(outside, "secret.json"), filepath.Join(root, lockFileName)); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(root, Options{}); !errors.Is(err, unix.ELOOP) {
		if s != nil {
			s.Close()
		}
		t.Errorf("Open with a symlinked lock file: %v, want ELOOP", err)
	}
	checkOutsideUntouched(t, outside)
}

func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestNoDescriptorLeak(t *testing.T) {
	root, outside := escapeFixture(t)
	os.Symlink(filepath.Join(outside, "secret.json"), filepath.Join(root, "link.json"))
	os.Mkdir(filepath.Join(root, "d"), 0o755)
	ok := func(s string) func([]byte, bool) ([]byte, error) {
		return func([]byte, bool) ([]byte, error) { return []byte(s), nil }
	}
	errMerge := errors.New("no")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	// Every path, successful or not, once per round.
	round := func() {
		os.WriteFile(filepath.Join(root, "d", tempPrefix+"dead"), nil, 0o600)
		s, err := Open(root, testOptions(t, FsyncAlways))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		s.Commit(ctx, "d/r.json", Commit{Merge: ok(`{"a":1}`)})
		s.Commit(ctx, "d/r.json", Commit{Merge: ok(`{"a":2}`)})
		s.Commit(ctx, "d/r.json", Commit{Sync: true, Merge: ok(`{"a":2}`)})
		s.Commit(ctx, "d/r.json", Commit{Merge: func([]byte, bool) ([]byte, error) { return nil, errMerge }})
		s.Commit(ctx, "link.json", Commit{Merge: ok(`{}`)})
		s.Commit(ctx, "missing/r.json", Commit{Merge: ok(`{}`)})
		s.Commit(cancelled, "d/r.json", Commit{Merge: ok(`{}`)})
		os.WriteFile(filepath.Join(root, "src.tmp"), []byte(`{}`), 0o644)
		s.Commit(ctx, "d/r.json", Commit{Source: &Source{Name: "src.tmp"}, Merge: ok(`{"a":3}`)})
		s.Commit(ctx, "d/r.json", Commit{Source: &Source{Name: "src.tmp"}, Merge: ok(`{"a":3}`)})
		s.Read("d/r.json")
		s.Read("d/none.json")
		s.Read("link.json")
		s.Read("../outside/secret.json")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	round() // warm up anything the runtime opens lazily
	before := countFDs(t)
	for range 3 {
		round()
	}
	if after := countFDs(t); after != before {
		t.Errorf("%d descriptors open before, %d after three rounds", before, after)
	}
	checkOutsideUntouched(t, outside)
}
