package backing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

func testOptions(t *testing.T, fsync FsyncPolicy) Options {
	return Options{Fsync: fsync, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
}

func openStore(t *testing.T, dir string, fsync FsyncPolicy) *Store {
	t.Helper()
	s, err := Open(dir, testOptions(t, fsync))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// put commits content as the whole new record.
func put(t *testing.T, s *Store, name, content string) CommitResult {
	t.Helper()
	res, err := s.Commit(context.Background(), name, Commit{Mode: 0o644,
		Merge: func([]byte, bool) ([]byte, error) { return []byte(content), nil }})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stat(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// hangGuard turns a hang into a failure; it is not a timing assertion.
const hangGuard = 30 * time.Second

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangGuard):
		t.Fatalf("%s: nothing after %v", what, hangGuard)
	}
	var zero T
	return zero
}

// waitForWaiters waits until n goroutines hold or wait for the in-process lock of slot.
func waitForWaiters(t *testing.T, s *Store, slot int64, n int) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		s.slots.mu.Lock()
		refs := 0
		if e := s.slots.entries[slot]; e != nil {
			refs = e.refs
		}
		s.slots.mu.Unlock()
		if refs == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %d: %d lock users, want %d", slot, refs, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReadAndVersion(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	if _, _, err := s.Read("users/1.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing directory: %v, want fs.ErrNotExist", err)
	}
	os.Mkdir(filepath.Join(dir, "users"), 0o755)
	if _, _, err := s.Read("users/1.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing record: %v, want fs.ErrNotExist", err)
	}
	res := put(t, s, "users/1.json", `{"a":1}`)
	if !res.Created || res.Unchanged {
		t.Errorf("first commit: %+v, want Created", res)
	}
	data, v, err := s.Read("users/1.json")
	if err != nil || string(data) != `{"a":1}` {
		t.Fatalf("Read = %q, %v", data, err)
	}
	st := stat(t, filepath.Join(dir, "users/1.json"))
	if v != res.Version || v.Ino != st.Ino || v.Dev != st.Dev || v.Size != st.Size {
		t.Errorf("Read version %+v, commit version %+v, stat ino %d size %d", v, res.Version, st.Ino, st.Size)
	}
	res2 := put(t, s, "users/1.json", `{"a":2}`)
	if res2.Created || res2.Version == v {
		t.Errorf("second commit: %+v, want a new version, not Created", res2)
	}
	if _, v2, _ := s.Read("./users//1.json"); v2 != res2.Version {
		t.Errorf("Read of an unclean name: %+v, want %+v", v2, res2.Version)
	}
}

// ReadKnown does not read again a record whose file is the one known (as committed, or as read):
// it returns the known bytes; any other file, or the same file changed, is read.
func TestReadKnownReusesAnUnchangedFile(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	res := put(t, s, "r.json", `{"a":1}`)
	root, err := s.OpenDir(".")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root.FD)
	marked := []byte(`{"a":1}`) // a copy: reuse returns these very bytes
	known := &Known{Version: res.Version, Identity: res.Identity, Data: marked}
	read := func(label string, wantReused bool, want string) Snapshot {
		t.Helper()
		sn, reused, err := s.ReadKnown(root, "r.json", nil, known)
		if err != nil || reused != wantReused || string(sn.Data) != want {
			t.Fatalf("%s: %q reused %v (%v), want %q reused %v", label, sn.Data, reused, err, want, wantReused)
		}
		if reused && &sn.Data[0] != &marked[0] {
			t.Fatalf("%s: reused, but not the known bytes", label)
		}
		if sn.Identity != res.Identity {
			t.Fatalf("%s: identity %+v, want %+v", label, sn.Identity, res.Identity)
		}
		return sn
	}
	read("the committed file", true, `{"a":1}`)
	if sn, reused, err := s.ReadKnown(root, "r.json", nil, nil); err != nil || reused || string(sn.Data) != `{"a":1}` {
		t.Fatalf("nothing known: %q reused %v (%v)", sn.Data, reused, err)
	}
	// The known file is found by a stat of the name, never through a symlink to it.
	if err := os.Symlink("r.json", filepath.Join(dir, "link.json")); err != nil {
		t.Fatal(err)
	}
	if sn, reused, err := s.ReadKnown(root, "link.json", nil, known); err == nil || reused {
		t.Fatalf("a symlink to the known file: %q reused %v (%v), want an error", sn.Data, reused, err)
	}
	// A reader whose access is checked is checked on the file, known or not.
	if os.Geteuid() == 0 {
		if err := os.Chmod(filepath.Join(dir, "r.json"), 0o600); err != nil {
			t.Fatal(err)
		}
		other := &Access{Cred: &sysx.Cred{UID: 65534, GID: 65534}, Mode: unix.R_OK}
		if sn, reused, err := s.ReadKnown(root, "r.json", other, known); !errors.Is(err, unix.EACCES) || reused {
			t.Fatalf("a reader who may not read the known file: %q reused %v (%v), want EACCES", sn.Data, reused, err)
		}
		if err := os.Chmod(filepath.Join(dir, "r.json"), 0o644); err != nil {
			t.Fatal(err)
		}
		known.Version = statVersion(t, filepath.Join(dir, "r.json"))
		if sn, reused, err := s.ReadKnown(root, "r.json", other, known); err != nil || !reused || string(sn.Data) != `{"a":1}` {
			t.Fatalf("a reader who may read the known file: %q reused %v (%v)", sn.Data, reused, err)
		}
	}

	// Changed in place (not by a commit): same size, new times.
	path := filepath.Join(dir, "r.json")
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(path, []byte(`{"a":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	sn := read("the file written in place", false, `{"a":2}`)
	marked = sn.Data
	known.Version, known.Data = sn.Version(), marked
	read("the file as read", true, `{"a":2}`)

	// Its attributes changed: the change time moves.
	time.Sleep(10 * time.Millisecond)
	if err := unix.Setxattr(path, "user.note", []byte("x"), 0); err != nil && err != unix.ENOTSUP {
		t.Fatal(err)
	} else if err == nil {
		read("the file with a new attribute", false, `{"a":2}`)
	}

	// Replaced by a commit.
	res2 := put(t, s, "r.json", `{"a":3}`)
	if sn, reused, err := s.ReadKnown(root, "r.json", nil, known); err != nil || reused || string(sn.Data) != `{"a":3}` || sn.Identity.Gen != res2.Identity.Gen {
		t.Fatalf("after a commit: %q reused %v (%v), identity %+v", sn.Data, reused, err, sn.Identity)
	}
}

// A commit given the record as its committer knows it (Commit.Known) merges into those bytes when
// the record's file is that one, unchanged, and reads the file otherwise.
func TestCommitTakesTheirsFromKnown(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	res := put(t, s, "r.json", `{"a":1}`)
	marked := []byte(`{"a":1}`)
	known := &Known{Version: res.Version, Identity: res.Identity, Data: marked}
	commit := func(content string) (theirs []byte, res CommitResult) {
		t.Helper()
		res, err := s.Commit(context.Background(), "r.json", Commit{Known: known, Expect: known.Identity.ID,
			Merge: func(th []byte, exists bool) ([]byte, error) {
				theirs = th
				return []byte(content), nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		return theirs, res
	}
	theirs, _ := commit(`{"a":2}`)
	if string(theirs) != `{"a":1}` || &theirs[0] != &marked[0] {
		t.Fatalf("theirs %q: not the known bytes", theirs)
	}
	// The record is now another file: read.
	theirs, _ = commit(`{"a":3}`)
	if string(theirs) != `{"a":2}` || &theirs[0] == &marked[0] {
		t.Fatalf("theirs %q after another commit, want the file's", theirs)
	}
	if got := readFile(t, filepath.Join(dir, "r.json")); got != `{"a":3}` {
		t.Fatalf("record %q", got)
	}
}

func TestReadRefusesNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	os.Mkdir(filepath.Join(dir, "d.json"), 0o755)
	if err := unix.Mkfifo(filepath.Join(dir, "f.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Read("d.json"); !errors.Is(err, unix.EISDIR) {
		t.Errorf("directory: %v, want EISDIR", err)
	}
	// A FIFO must neither block the daemon nor be taken for a record.
	if _, _, err := s.Read("f.json"); !errors.Is(err, unix.EINVAL) {
		t.Errorf("FIFO: %v, want EINVAL", err)
	}
	called := false
	_, err := s.Commit(context.Background(), "f.json", Commit{Merge: func([]byte, bool) ([]byte, error) {
		called = true
		return nil, nil
	}})
	if !errors.Is(err, unix.EINVAL) || called {
		t.Errorf("commit over a FIFO: %v (merge called: %v), want EINVAL before merging", err, called)
	}
}

func TestNamesAndReservedNames(t *testing.T) {
	for name, want := range map[string]bool{
		".mergefs.lock": true, ".mergefs.tmp.0123": true, ".mergefs.anything": true,
		"mergefs.lock": false, ".mergefs": false, "a.json": false, "x.mergefs.tmp.1": false,
	} {
		if got := IsReserved(name); got != want {
			t.Errorf("IsReserved(%q) = %v, want %v", name, got, want)
		}
	}
	s := openStore(t, t.TempDir(), FsyncOnRequest)
	for name, want := range map[string]error{
		"":                      unix.EINVAL,
		".":                     unix.EINVAL,
		"a/..":                  unix.EINVAL,
		"a\x00b":                unix.EINVAL,
		"/etc/passwd":           unix.EXDEV,
		"..":                    unix.EXDEV,
		"../x.json":             unix.EXDEV,
		"a/../../x.json":        unix.EXDEV,
		".mergefs.lock":         unix.EPERM,
		"d/.mergefs.tmp.1/x":    unix.EPERM,
		"sub/.mergefs.tmp.1234": unix.EPERM,
	} {
		if _, _, err := s.Read(name); !errors.Is(err, want) {
			t.Errorf("Read(%q) = %v, want %v", name, err, want)
		}
		_, err := s.Commit(context.Background(), name, Commit{Merge: func([]byte, bool) ([]byte, error) {
			t.Errorf("Commit(%q) called Merge", name)
			return nil, nil
		}})
		if !errors.Is(err, want) {
			t.Errorf("Commit(%q) = %v, want %v", name, err, want)
		}
	}
}

func TestUnchangedSkipsTheWrite(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	before := put(t, s, "r.json", `{"a":1}`)
	res, err := s.Commit(context.Background(), "r.json", Commit{Merge: func(theirs []byte, exists bool) ([]byte, error) {
		return bytes.Clone(theirs), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Unchanged || res.Created || res.Version != before.Version {
		t.Errorf("identical bytes: %+v, want Unchanged with version %+v", res, before.Version)
	}
	if st := stat(t, filepath.Join(dir, "r.json")); st.Ino != before.Version.Ino {
		t.Errorf("record was replaced (inode %d, was %d)", st.Ino, before.Version.Ino)
	}
	// Same bytes for a record that does not exist yet is a creation, not a no-op.
	res = put(t, s, "empty.json", "")
	if res.Unchanged || !res.Created {
		t.Errorf("new empty record: %+v, want Created", res)
	}
}

func TestMergeErrorWritesNothing(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncAlways)
	before := put(t, s, "r.json", `{"a":1}`)
	errBad := errors.New("bad input")
	_, err := s.Commit(context.Background(), "r.json", Commit{Merge: func([]byte, bool) ([]byte, error) {
		return []byte("{garbage"), errBad
	}})
	if !errors.Is(err, errBad) {
		t.Fatalf("err = %v, want it to wrap the merge error", err)
	}
	if got := readFile(t, filepath.Join(dir, "r.json")); got != `{"a":1}` {
		t.Errorf("record = %q after a failed merge", got)
	}
	if st := stat(t, filepath.Join(dir, "r.json")); st.Ino != before.Version.Ino {
		t.Error("record replaced after a failed merge")
	}
	if left := tempFiles(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if _, err := s.Commit(context.Background(), "r.json", Commit{}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("no Merge: %v, want EINVAL", err)
	}
}

func TestCommitsToDifferentRecordsRunInParallel(t *testing.T) {
	s := openStore(t, t.TempDir(), FsyncOnRequest)
	if lockSlot(s.rootIno, "a.json") == lockSlot(s.rootIno, "b.json") {
		t.Fatal("test records share a lock slot")
	}
	entered := make(chan string, 2)
	release := make(chan struct{})
	errs := make(chan error, 2)
	for _, name := range []string{"a.json", "b.json"} {
		go func() {
			_, err := s.Commit(context.Background(), name, Commit{Merge: func([]byte, bool) ([]byte, error) {
				entered <- name
				<-release // neither leaves Merge before both are inside it
				return []byte(`{}`), nil
			}})
			errs <- err
		}()
	}
	receive(t, entered, "first commit inside Merge")
	receive(t, entered, "second commit inside Merge while the first is still there (a global lock?)")
	close(release)
	for range 2 {
		if err := receive(t, errs, "commit result"); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.slots.len(); n != 0 {
		t.Errorf("%d lock entries left for idle records", n)
	}
}

func TestCommitsToOneRecordAreSerialised(t *testing.T) {
	s := openStore(t, t.TempDir(), FsyncOnRequest)
	slot := lockSlot(s.rootIno, "r.json")
	entered := make(chan int, 2)
	release := make(chan struct{})
	errs := make(chan error, 2)
	commit := func(i int) {
		_, err := s.Commit(context.Background(), "r.json", Commit{Merge: func([]byte, bool) ([]byte, error) {
			entered <- i
			<-release
			return []byte(`{}`), nil
		}})
		errs <- err
	}
	go commit(1)
	receive(t, entered, "first commit inside Merge")
	go commit(2)
	waitForWaiters(t, s, slot, 2) // the second commit is now waiting for the lock
	select {
	case <-entered:
		t.Fatal("two commits to one record inside Merge at once")
	default:
	}
	release <- struct{}{}
	if got := receive(t, entered, "second commit inside Merge after the first left"); got != 2 {
		t.Fatalf("entered %d", got)
	}
	close(release)
	for range 2 {
		if err := receive(t, errs, "commit result"); err != nil {
			t.Fatal(err)
		}
	}
}

// Committed runs for a commit that wrote the record, before the record's lock is released (a commit
// that starts then sees what it recorded), and for no other.
func TestCommittedRunsUnderTheLock(t *testing.T) {
	s := openStore(t, t.TempDir(), FsyncOnRequest)
	put(t, s, "r.json", `{"a": 1}`)
	var calls []CommitResult
	commit := func(content string) CommitResult {
		t.Helper()
		res, err := s.Commit(context.Background(), "r.json", Commit{
			Merge: func([]byte, bool) ([]byte, error) { return []byte(content), nil },
			Committed: func(cr CommitResult) {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				if unlock, err := s.LockRecords(ctx, RecordRef{Dir: Dir{FD: s.rootFD, Ino: s.rootIno}, Name: "r.json"}); err == nil {
					unlock()
					t.Error("Committed ran after the record's lock was released")
				}
				calls = append(calls, cr)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := commit(`{"a": 2}`)
	if len(calls) != 1 || calls[0].Identity != res.Identity || calls[0].Version != res.Version {
		t.Fatalf("Committed got %+v, want one call with %+v", calls, res)
	}
	commit(`{"a": 2}`) // nothing to write
	if len(calls) != 1 {
		t.Errorf("Committed ran for a commit that left the record as it was")
	}
	_, err := s.Commit(context.Background(), "r.json", Commit{
		Merge:     func([]byte, bool) ([]byte, error) { return nil, errors.New("refused") },
		Committed: func(CommitResult) { t.Error("Committed ran for a failed commit") },
	})
	if err == nil {
		t.Error("a failing Merge committed")
	}
}

// incrementConcurrently runs goroutines committing increments of their own field of one record through
// one store, and returns how many increments were lost.
func incrementConcurrently(t *testing.T, s *Store, dir, name string, goroutines, count int) (lost int) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			merge := incrementField(fmt.Sprint("g", g))
			for range count {
				if _, err := s.Commit(context.Background(), name, Commit{Merge: merge}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	var counts map[string]int
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, name))), &counts); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	return goroutines*count - total
}

func TestGoroutinesOfOneStoreLoseNoIncrement(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	if lost := incrementConcurrently(t, s, dir, "r.json", 4, 150); lost != 0 {
		t.Fatalf("%d increments lost", lost)
	}
	if n := s.slots.len(); n != 0 {
		t.Errorf("%d lock entries left for idle records", n)
	}

	// Control: the OFD lock alone does not exclude goroutines that share its open file description.
	s.skipInProcessLock = true
	for attempt := 1; ; attempt++ {
		lost := incrementConcurrently(t, s, dir, fmt.Sprint("control", attempt, ".json"), 4, 150)
		t.Logf("control with the OFD lock only, attempt %d: %d of 600 increments lost", attempt, lost)
		if lost > 0 {
			break
		}
		if attempt == 5 {
			t.Fatal("control never lost an increment: the test cannot tell the in-process lock from none")
		}
	}
}

// collidingNames finds two record names in one lock slot.
func collidingNames(t *testing.T, dirIno uint64) (string, string) {
	seen := make(map[int64]string)
	for i := range 1 << 20 {
		name := fmt.Sprintf("r%d.json", i)
		slot := lockSlot(dirIno, name)
		if other, ok := seen[slot]; ok {
			return other, name
		}
		seen[slot] = name
	}
	t.Fatal("no two names share a lock slot")
	return "", ""
}

func TestRecordsSharingALockSlot(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	a, b := collidingNames(t, s.rootIno)
	var wg sync.WaitGroup
	lost := make([]int, 2)
	for i, name := range []string{a, b} {
		wg.Go(func() { lost[i] = incrementConcurrently(t, s, dir, name, 2, 50) })
	}
	wg.Wait()
	if lost[0] != 0 || lost[1] != 0 {
		t.Fatalf("lost increments on %s, %s: %v", a, b, lost)
	}
	// A rename between them locks their one slot once (locking it twice through one open file
	// description and unlocking once would leave it unlocked, and a second in-process lock would hang).
	res, err := s.Commit(context.Background(), b, Commit{Source: &Source{Name: a}, Merge: func(theirs []byte, exists bool) ([]byte, error) {
		return []byte(`{"renamed":true}`), nil
	}})
	if err != nil || res.Created {
		t.Fatalf("rename %s over %s: %+v, %v", a, b, res, err)
	}
	if got := readFile(t, filepath.Join(dir, b)); got != `{"renamed":true}` {
		t.Errorf("%s = %q", b, got)
	}
	if n := s.slots.len(); n != 0 {
		t.Errorf("%d lock entries left for idle records", n)
	}
}

func TestCancelledContext(t *testing.T) {
	s := openStore(t, t.TempDir(), FsyncOnRequest)
	noMerge := Commit{Merge: func([]byte, bool) ([]byte, error) {
		t.Error("Merge called for a cancelled commit")
		return nil, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Commit(ctx, "r.json", noMerge); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before the lock: %v", err)
	}

	// Cancelled while waiting for the lock another commit holds.
	entered := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := s.Commit(context.Background(), "r.json", Commit{Merge: func([]byte, bool) ([]byte, error) {
			close(entered)
			<-release
			return []byte(`{}`), nil
		}})
		done <- err
	}()
	receive(t, entered, "holder inside Merge")
	ctx, cancel = context.WithCancel(context.Background())
	waiter := make(chan error)
	go func() {
		_, err := s.Commit(ctx, "r.json", noMerge)
		waiter <- err
	}()
	waitForWaiters(t, s, lockSlot(s.rootIno, "r.json"), 2)
	cancel()
	if err := receive(t, waiter, "cancelled waiter"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled while waiting: %v", err)
	}
	close(release)
	if err := receive(t, done, "holder"); err != nil {
		t.Fatal(err)
	}
	if n := s.slots.len(); n != 0 {
		t.Errorf("%d lock entries left after a cancelled wait", n)
	}
}

// closeBlockedFor is how long Close must stay blocked while a commit is in
// flight; without the wait it returns within microseconds.
const closeBlockedFor = 100 * time.Millisecond

func TestCloseWaitsForCommitsInFlight(t *testing.T) {
	s, err := Open(t.TempDir(), testOptions(t, FsyncOnRequest))
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	releaseCommit := sync.OnceFunc(func() { close(release) })
	defer releaseCommit()
	var readErr error
	done := make(chan error)
	go func() {
		_, err := s.Commit(context.Background(), "r.json", Commit{Merge: func([]byte, bool) ([]byte, error) {
			close(entered)
			<-release
			_, _, readErr = s.Read("other.json") // during Close: an error, not a deadlock
			return []byte(`{}`), nil
		}})
		done <- err
	}()
	receive(t, entered, "commit inside Merge")
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for {
		s.mu.Lock()
		closing := s.closed
		s.mu.Unlock()
		if closing {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// Close has begun, and the commit is still inside Merge: Close must wait.
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a commit was in flight", err)
	case <-time.After(closeBlockedFor):
	}
	releaseCommit()
	if err := receive(t, done, "commit in flight"); err != nil {
		t.Errorf("commit in flight during Close: %v", err)
	}
	if err := receive(t, closed, "Close"); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(readErr, os.ErrClosed) {
		t.Errorf("Read during Close: %v, want os.ErrClosed", readErr)
	}
	if _, _, err := s.Read("r.json"); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := s.Commit(context.Background(), "r.json", Commit{Merge: func([]byte, bool) ([]byte, error) { return nil, nil }}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Commit after Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// The slot of a record is part of the on-disk protocol between daemons (and versions of mergefs) that
// share a backing root: a changed hash would let two of them commit one record at once. The values
// are FNV-1a 64 of the directory's inode number (8 bytes, little-endian) and the name, modulo 2^16,
// computed independently (in Python).
func TestLockSlotIsStable(t *testing.T) {
	for _, tc := range []struct {
		dirIno uint64
		name   string
		want   int64
	}{{12345, "123.json", 63896}, {2, "a.json", 28134}} {
		if got := lockSlot(tc.dirIno, tc.name); got != tc.want {
			t.Errorf("lockSlot(%d, %q) = %d, want %d", tc.dirIno, tc.name, got, tc.want)
		}
	}
}

// Where the filesystem has no RENAME_NOREPLACE (GlusterFS's FUSE client answers EINVAL), records
// are still created, and a name taken meanwhile is still not replaced.
func TestCreateWithoutRenameNoReplace(t *testing.T) {
	renameNoReplaceFlag = func(olddir int, oldname string, newdir int, newname string, flags uint) error {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return unix.EINVAL
		}
		return renameat2(olddir, oldname, newdir, newname, flags)
	}
	t.Cleanup(func() { renameNoReplaceFlag = renameat2 })
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	put(t, s, "new.json", `{"a":1}`)
	if got := readFile(t, filepath.Join(dir, "new.json")); got != `{"a":1}` {
		t.Fatalf("created record holds %q", got)
	}
	// The helper itself: an existing name is EEXIST, a free one is renamed onto.
	if err := os.WriteFile(filepath.Join(dir, "src"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	if err := renameNoReplace(root, "src", root, "new.json"); err != unix.EEXIST {
		t.Fatalf("rename onto an existing name: %v, want EEXIST", err)
	}
	if got := readFile(t, filepath.Join(dir, "new.json")); got != `{"a":1}` {
		t.Fatalf("the existing name was replaced: %q", got)
	}
	if err := renameNoReplace(root, "src", root, "free"); err != nil {
		t.Fatalf("rename onto a free name: %v", err)
	}
}

// statVersion is the version of the file at path, as the store sees it.
func statVersion(t *testing.T, path string) Version {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return versionOf(&st)
}
