package backing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// staleClient makes a store read records as a network filesystem's client with stale caches would:
// the first stale reads of a name return the version as it was before the last commit (kept by the
// test), until the client has been made to look the name up refreshes times.
type staleClient struct {
	s         *Store
	old       map[string]current // what the stale cache shows per name
	stale     int                // reads that still return the old version
	refreshes int
}

func (c *staleClient) install(s *Store) {
	c.s = s
	s.readLocked = func(dirfd int, name string) (current, error) {
		if old, ok := c.old[name]; ok && c.stale > 0 {
			c.stale--
			if old.fd >= 0 {
				// A duplicate: the commit closes what it reads.
				fd, err := unix.Dup(old.fd)
				if err != nil {
					return current{}, err
				}
				old.fd = fd
			}
			return old, nil
		}
		return s.readCurrent(dirfd, name)
	}
	s.refreshName = func(Dir, string, int) { c.refreshes++ }
}

// remember keeps the record name as it is now, as the stale cache will show it later.
func (c *staleClient) remember(t *testing.T, name string) {
	t.Helper()
	cur, err := c.s.readCurrent(c.s.rootFD, name)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(cur.fd)
	cur.fd = -1 // a stale version a fenced commit must never take: its descriptor would be unusable
	if c.old == nil {
		c.old = make(map[string]current)
	}
	c.old[name] = cur
}

// withValidFD gives a remembered version a descriptor (of the record's directory's lock file: any
// regular file will do for what a commit does with theirs' descriptor), for the control, where stale
// versions are merged onto.
func withValidFD(t *testing.T, s *Store, cur current) current {
	t.Helper()
	fd, err := unix.Openat(s.rootFD, lockFileName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	cur.fd = fd
	return cur
}

func fencedStore(t *testing.T, dir string) *Store {
	t.Helper()
	opts := testOptions(t, FsyncOnRequest)
	opts.Fence = FenceOn
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if !s.Fencing() {
		t.Fatal("FenceOn did not turn fences on")
	}
	return s
}

// increment is a commit that adds one to "n" of what it reads.
func increment(t *testing.T, s *Store, name string) error {
	t.Helper()
	_, err := s.Commit(context.Background(), name, Commit{Mode: 0o644, Merge: incrementField("n")})
	return err
}

func TestFencedCommitReadsAgainUntilItSeesTheLatestVersion(t *testing.T) {
	dir := t.TempDir()
	s := fencedStore(t, dir)
	put(t, s, "r.json", `{"n":0}`)
	c := &staleClient{}
	c.install(s)
	for i := 0; i < 10; i++ {
		c.remember(t, "r.json")
		if err := increment(t, s, "r.json"); err != nil {
			t.Fatal(err)
		}
		// The next commit's first reads see the version before this commit, as another host's
		// client would, until it has refreshed the name.
		c.stale = 1 + i%3
		if err := increment(t, s, "r.json"); err != nil {
			t.Fatal(err)
		}
		if c.stale != 0 {
			t.Fatalf("the commit did not read through the stale cache (%d stale reads left)", c.stale)
		}
	}
	if got := readFile(t, filepath.Join(dir, "r.json")); got != `{"n":20}` {
		t.Errorf("record after 20 increments through a stale client: %s", got)
	}
	if c.refreshes == 0 {
		t.Error("no refresh was asked for")
	}

	// A control: without fences the stale reads are merged onto, and increments are lost.
	dir2 := t.TempDir()
	s2 := openStore(t, dir2, FsyncOnRequest)
	put(t, s2, "r.json", `{"n":0}`)
	c2 := &staleClient{}
	c2.install(s2)
	for i := 0; i < 10; i++ {
		c2.remember(t, "r.json")
		if err := increment(t, s2, "r.json"); err != nil {
			t.Fatal(err)
		}
		c2.old["r.json"] = withValidFD(t, s2, c2.old["r.json"])
		c2.stale = 1
		if err := increment(t, s2, "r.json"); err != nil {
			t.Fatal(err)
		}
	}
	if got := readFile(t, filepath.Join(dir2, "r.json")); got == `{"n":20}` {
		t.Errorf("control without fences lost nothing (%s): the stale client fakes nothing", got)
	}
}

func TestFencedCommitGivesUpOnAViewThatStaysStale(t *testing.T) {
	dir := t.TempDir()
	s := fencedStore(t, dir)
	put(t, s, "r.json", `{"n":0}`)
	c := &staleClient{}
	c.install(s)
	c.remember(t, "r.json")
	if err := increment(t, s, "r.json"); err != nil {
		t.Fatal(err)
	}
	c.stale = maxFenceAttempts
	err := increment(t, s, "r.json")
	if !errors.Is(err, ErrStaleView) || !errors.Is(err, unix.EIO) {
		t.Fatalf("commit on a view that stays stale: %v, want ErrStaleView (EIO)", err)
	}
	if c.refreshes != maxFenceAttempts {
		t.Errorf("%d refreshes, want %d", c.refreshes, maxFenceAttempts)
	}
	if got := readFile(t, filepath.Join(dir, "r.json")); got != `{"n":1}` {
		t.Errorf("record after the refused commit: %s, want it unchanged", got)
	}
}

// A missing record is believed only where the fence says the name was left empty; a record the
// fence says exists but the client does not show is looked up again.
func TestFencedCommitDoesNotBelieveAMissingRecord(t *testing.T) {
	dir := t.TempDir()
	s := fencedStore(t, dir)
	put(t, s, "r.json", `{"n":5}`)
	c := &staleClient{old: map[string]current{"r.json": {fd: -1}}}
	c.install(s)
	c.stale = 2 // the client shows no record twice
	if err := increment(t, s, "r.json"); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "r.json")); got != `{"n":6}` {
		t.Errorf("record: %s, want the increment on the existing record", got)
	}
	// After an unlink under the lock and UpdateFences, the name's fence says it is gone.
	rootDir := Dir{FD: s.rootFD, Ino: s.rootIno}
	unlock, err := s.LockRecords(context.Background(), RecordRef{Dir: rootDir, Name: "r.json"})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "r.json"))
	if err := s.UpdateFences(RecordRef{Dir: rootDir, Name: "r.json"}); err != nil {
		t.Fatal(err)
	}
	unlock()
	if f, _ := s.readFence(lockSlot(s.rootIno, "r.json")); f.state != fenceGone {
		t.Errorf("fence after the unlink: %+v, want gone", f)
	}
	before := c.refreshes
	if err := increment(t, s, "r.json"); err != nil {
		t.Fatal(err)
	}
	if c.refreshes != before {
		t.Errorf("a missing record the fence agrees with was refreshed %d times", c.refreshes-before)
	}
}

func TestFenceRecordsEachCommit(t *testing.T) {
	dir := t.TempDir()
	s := fencedStore(t, dir)
	res := put(t, s, "r.json", `{"n":0}`)
	for i := 0; i < 3; i++ {
		f, err := s.readFence(lockSlot(s.rootIno, "r.json"))
		if err != nil {
			t.Fatal(err)
		}
		if f.state != fencePresent || f.id != res.Identity.ID || f.gen != res.Identity.Gen {
			t.Fatalf("fence %+v after commit %d, want identity %+v", f, i, res.Identity)
		}
		res = put(t, s, "r.json", `{"n":`+string(rune('1'+i))+`}`)
	}
	if st, err := os.Stat(filepath.Join(dir, lockFileName)); err != nil || st.Size() != lockFileSize {
		t.Errorf("lock file size %v (%v), want %d", st.Size(), err, lockFileSize)
	}
	// Another protocol's lock file is refused.
	other := t.TempDir()
	lf := filepath.Join(other, lockFileName)
	if err := os.WriteFile(lf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(lf, lockProtocolXattr, []byte("mergefs lock file v1"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(other, testOptions(t, FsyncOnRequest)); !errors.Is(err, unix.EPROTO) {
		t.Errorf("a lock file of another protocol: %v, want EPROTO", err)
	}
}

// A client may show a new file with an older size (GlusterFS's, after listing the directory while
// the file was written on another host): the read is short or empty although the generation is the
// latest. Such a read is not merged onto: it is read again, as the size committed with the identity
// says.
func TestFencedCommitReadsAgainAShortRead(t *testing.T) {
	dir := t.TempDir()
	s := fencedStore(t, dir)
	put(t, s, "r.json", `{"n":7,"m":3}`)
	short, refreshes := 2, 0
	s.readLocked = func(dirfd int, name string) (current, error) {
		cur, err := s.readCurrent(dirfd, name)
		if err == nil && short > 0 {
			short--
			cur.data = cur.data[:0]
			return cur, &staleSizeError{got: 0, want: int64(len(`{"n":7,"m":3}`))}
		}
		return cur, err
	}
	s.refreshName = func(Dir, string, int) { refreshes++ }
	if err := increment(t, s, "r.json"); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "r.json")); got != `{"m":3,"n":8}` {
		t.Errorf("record after an increment through two short reads: %s", got)
	}
	if short != 0 || refreshes != 2 {
		t.Errorf("short reads left %d, refreshes %d; want 0 and 2", short, refreshes)
	}
}

// A record changed outside mergefs keeps a size that differs from its identity's for good: once
// every cache had time to expire, it is taken as it is, by readers and commits.
func TestRecordChangedOutsideMergefsIsTakenAsItIs(t *testing.T) {
	dir := t.TempDir()
	s := fencedStore(t, dir)
	put(t, s, "r.json", `{"n":1}`)
	// Rewritten in place (same inode, same identity attribute) by something else.
	if err := os.WriteFile(filepath.Join(dir, "r.json"), []byte(`{"n":41, "e":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cur, err := s.readCurrent(s.rootFD, "r.json")
	if e, ok := errors.AsType[*staleSizeError](err); !ok || e.got != 15 || e.want != 7 {
		t.Fatalf("read of a record not of its committed size: %v, want a stale size error (15 of 7 bytes)", err)
	}
	unix.Close(cur.fd)
	s.refreshName = func(Dir, string, int) {}
	if err := increment(t, s, "r.json"); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "r.json")); got != `{"e":1,"n":42}` {
		t.Errorf("record after an increment of an edited record: %s", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "r.json"), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	sn, err := s.ReadAt(Dir{FD: s.rootFD, Ino: s.rootIno}, "r.json", nil)
	if err != nil || string(sn.Data) != `{}` {
		t.Errorf("read of an edited record: %q, %v", sn.Data, err)
	}
}

// On a network filesystem a name just looked up may briefly be missing for the client (another host
// renamed a new version onto it): ReadKnown looks it up again before it believes the record gone.
func TestReadKnownLooksAMissingNameUpAgain(t *testing.T) {
	dir := t.TempDir()
	s := fencedStore(t, dir)
	root := Dir{FD: s.rootFD, Ino: s.rootIno}
	go func() {
		time.Sleep(50 * time.Millisecond)
		os.WriteFile(filepath.Join(dir, "late.json"), []byte(`{"a":1}`), 0o644)
	}()
	sn, _, err := s.ReadKnown(root, "late.json", nil, nil)
	if err != nil || string(sn.Data) != `{"a":1}` {
		t.Fatalf("ReadKnown of a name that shows up 50ms later: %q, %v", sn.Data, err)
	}
	if _, _, err := s.ReadKnown(root, "never.json", nil, nil); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("ReadKnown of a name that never shows up: %v, want ENOENT", err)
	}
	if _, err := s.ReadAt(root, "never2.json", nil); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("ReadAt of a missing name: %v, want ENOENT", err)
	}
}
