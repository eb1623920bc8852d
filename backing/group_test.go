package backing

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

// groupFixture is a record r.json, {} and mode 0644, and a commit that holds its lock inside
// Merge until release is closed.
type groupFixture struct {
	t       *testing.T
	s       *Store
	dir     string
	id      Identity // the record's identity before the holder's commit
	slot    int64
	release chan struct{}
	held    chan error // the holder's result
}

func newGroupFixture(t *testing.T) *groupFixture {
	dir := t.TempDir()
	s := openStore(t, dir, FsyncOnRequest)
	f := &groupFixture{t: t, s: s, dir: dir, id: put(t, s, "r.json", `{}`).Identity,
		slot: lockSlot(s.rootIno, "r.json"), release: make(chan struct{}), held: make(chan error, 1)}
	entered := make(chan struct{})
	go func() {
		inc := incrementField("holder")
		_, err := s.Commit(context.Background(), "r.json", Commit{Expect: f.id.ID,
			Merge: func(theirs []byte, exists bool) ([]byte, error) {
				close(entered)
				<-f.release
				return inc(theirs, exists)
			}})
		f.held <- err
	}()
	receive(t, entered, "the holder inside Merge")
	return f
}

type groupResult struct {
	res CommitResult
	err error
}

// commit starts a commit that waits for the lock behind the holder (and the commits started
// before it), and returns its result once it has one.
func (f *groupFixture) commit(ctx context.Context, c Commit) <-chan groupResult {
	f.t.Helper()
	f.s.slots.mu.Lock()
	users := 0
	if e := f.s.slots.entries[f.slot]; e != nil {
		users = e.refs
	}
	f.s.slots.mu.Unlock()
	out := make(chan groupResult, 1)
	go func() {
		res, err := f.s.Commit(ctx, "r.json", c)
		out <- groupResult{res, err}
	}()
	waitForWaiters(f.t, f.s, f.slot, users+1)
	return out
}

func (f *groupFixture) record() map[string]int {
	f.t.Helper()
	var counts map[string]int
	if err := json.Unmarshal([]byte(readFile(f.t, filepath.Join(f.dir, "r.json"))), &counts); err != nil {
		f.t.Fatal(err)
	}
	return counts
}

// Commits that wait for a record's lock while another holds it are made by the next holder, each
// Merge on what the ones before it made, with one replacement of the record for all of them.
func TestWaitingCommitsShareOneReplacement(t *testing.T) {
	f := newGroupFixture(t)
	var mu sync.Mutex
	var committed []string
	waiting := make([]<-chan groupResult, 3)
	for i, field := range []string{"a", "b", "c"} {
		waiting[i] = f.commit(context.Background(), Commit{Expect: f.id.ID, Merge: incrementField(field),
			Committed: func(CommitResult) {
				mu.Lock()
				defer mu.Unlock()
				committed = append(committed, field)
			}})
	}
	close(f.release)
	if err := receive(t, f.held, "the holder"); err != nil {
		t.Fatal(err)
	}
	var first CommitResult
	for i, w := range waiting {
		r := receive(t, w, "a waiting commit")
		if r.err != nil {
			t.Fatalf("waiting commit %d: %v", i, r.err)
		}
		if i == 0 {
			first = r.res
		}
		if !r.res.Grouped {
			t.Errorf("waiting commit %d: not reported as grouped", i)
		}
		if r.res.Identity != first.Identity || r.res.Version != first.Version || r.res.Unchanged {
			t.Errorf("waiting commit %d left %+v, the first %+v: want one replacement for all", i, r.res, first)
		}
	}
	if want := (Identity{ID: f.id.ID, Gen: f.id.Gen + 2}); first.Identity != want {
		t.Errorf("after the holder and the group: identity %+v, want %+v (two replacements)", first.Identity, want)
	}
	if got := f.record(); len(got) != 4 || got["holder"] != 1 || got["a"] != 1 || got["b"] != 1 || got["c"] != 1 {
		t.Errorf("record %v: want each commit's increment once", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(committed) != 1 || committed[0] != "c" {
		t.Errorf("Committed ran for %v: want only the group's last commit, whose content the record holds", committed)
	}
}

// A commit of a group that fails (its Merge, its expected identity, its writer's permission) fails
// alone: the others commit as they would have one after the other.
func TestGroupMemberFailsAlone(t *testing.T) {
	f := newGroupFixture(t)
	refused := errors.New("refused")
	ok1 := f.commit(context.Background(), Commit{Expect: f.id.ID, Merge: incrementField("a")})
	failing := f.commit(context.Background(), Commit{Expect: f.id.ID,
		Merge: func([]byte, bool) ([]byte, error) { return nil, refused }})
	denied := f.commit(context.Background(), Commit{Expect: f.id.ID, Merge: incrementField("denied"),
		Writer: &sysx.Cred{UID: 4321, GID: 4321}})
	ok2 := f.commit(context.Background(), Commit{Expect: f.id.ID, Merge: incrementField("b")})
	close(f.release)
	if err := receive(t, f.held, "the holder"); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, failing, "the failing commit"); !errors.Is(r.err, refused) {
		t.Errorf("failing Merge: %v, want %v", r.err, refused)
	}
	if r := receive(t, denied, "the denied commit"); !errors.Is(r.err, unix.EACCES) {
		t.Errorf("writer without permission: %v, want EACCES", r.err)
	}
	for _, w := range []<-chan groupResult{ok1, ok2} {
		if r := receive(t, w, "a commit of the group"); r.err != nil {
			t.Errorf("commit beside failing ones: %v", r.err)
		}
	}
	if got := f.record(); len(got) != 3 || got["holder"] != 1 || got["a"] != 1 || got["b"] != 1 {
		t.Errorf("record %v: want the holder's, a's and b's increments only", got)
	}
}

// A commit whose context ends after the holder of the lock took it over is made all the same, and
// says so: it must not report a failure for a change that is in the record.
func TestTakenOverCommitReportsItsOutcome(t *testing.T) {
	f := newGroupFixture(t)
	leaderIn, leaderGo := make(chan struct{}), make(chan struct{})
	inc := incrementField("leader")
	leader := f.commit(context.Background(), Commit{Expect: f.id.ID,
		Merge: func(theirs []byte, exists bool) ([]byte, error) {
			close(leaderIn)
			<-leaderGo
			return inc(theirs, exists)
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	taken := f.commit(ctx, Commit{Expect: f.id.ID, Merge: incrementField("taken")})
	close(f.release)
	if err := receive(t, f.held, "the holder"); err != nil {
		t.Fatal(err)
	}
	// The first waiter took the lock, and with it the second, whose context now ends.
	receive(t, leaderIn, "the next holder inside Merge")
	cancel()
	time.Sleep(20 * time.Millisecond) // time for the cancellation to reach the taken commit
	close(leaderGo)
	if r := receive(t, leader, "the next holder"); r.err != nil {
		t.Fatal(r.err)
	}
	if r := receive(t, taken, "the taken commit"); r.err != nil {
		t.Errorf("taken-over commit whose context ended: %v, but its change is made", r.err)
	}
	if got := f.record(); got["taken"] != 1 || got["leader"] != 1 {
		t.Errorf("record %v: want the leader's and the taken commit's increments", got)
	}
	if n := f.s.slots.len(); n != 0 {
		t.Errorf("%d lock entries left", n)
	}
}

// Two records never form a group, even with the same name, the same identity and the same
// directory inode number: as a directory on another filesystem mounted inside the root, whose
// owner controls inode numbers and identities, has them. Here the second directory claims the
// first one's inode number (which also puts both commits on one lock slot).
func TestGroupsKeepToTheirDirectory(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root, FsyncOnRequest)
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	id := put(t, s, "a/r.json", `{}`).Identity
	put(t, s, "b/r.json", `{}`)
	v, err := sysx.Getxattr(filepath.Join(root, "a/r.json"), IdentityXattr, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(root, "b/r.json"), IdentityXattr, v, 0); err != nil {
		t.Fatal(err)
	}
	a, err := s.OpenDir("a")
	if err != nil {
		t.Fatal(err)
	}
	defer sysx.Close(a.FD)
	b, err := s.OpenDir("b")
	if err != nil {
		t.Fatal(err)
	}
	defer sysx.Close(b.FD)
	b.Ino = a.Ino
	slot := lockSlot(a.Ino, "r.json")

	entered, release := make(chan struct{}), make(chan struct{})
	results := make(chan error, 3)
	inc := incrementField("holder")
	go func() {
		_, err := s.CommitAt(context.Background(), a, "r.json", Commit{Expect: id.ID,
			Merge: func(theirs []byte, exists bool) ([]byte, error) {
				close(entered)
				<-release
				return inc(theirs, exists)
			}})
		results <- err
	}()
	receive(t, entered, "the holder inside Merge")
	go func() {
		_, err := s.CommitAt(context.Background(), a, "r.json", Commit{Expect: id.ID, Merge: incrementField("a")})
		results <- err
	}()
	waitForWaiters(t, s, slot, 2)
	go func() {
		_, err := s.CommitAt(context.Background(), b, "r.json", Commit{Expect: id.ID, Merge: incrementField("b")})
		results <- err
	}()
	waitForWaiters(t, s, slot, 3)
	close(release)
	for range 3 {
		if err := receive(t, results, "a commit"); err != nil {
			t.Fatal(err)
		}
	}
	for d, want := range map[string]string{"a": `{"a":1,"holder":1}`, "b": `{"b":1}`} {
		if got := readFile(t, filepath.Join(root, d, "r.json")); got != want {
			t.Errorf("%s/r.json is %s, want %s", d, got, want)
		}
	}
}
