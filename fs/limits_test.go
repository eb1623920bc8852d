package fs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mergefs/mergefs/merge"
)

func TestBudgetBoundsPerUserAndMountWide(t *testing.T) {
	b := newBudget(Limits{MaxBuffered: 100, MaxBufferedPerUser: 60})
	if errno := b.charge(1, 50, false); errno != 0 {
		t.Fatal(errno)
	}
	if errno := b.charge(1, 20, false); errno != syscall.EDQUOT {
		t.Errorf("past the user's share: %v, want EDQUOT", errno)
	}
	if errno := b.charge(2, 51, false); errno != syscall.ENOSPC {
		t.Errorf("past the mount's budget: %v, want ENOSPC", errno)
	}
	if errno := b.charge(2, 51, true); errno != 0 {
		t.Errorf("forced: %v", errno)
	}
	b.release(2, 51)
	b.release(1, 50)
	// A version held by several handles of one user counts once; by two users, twice.
	v := &version{data: make([]byte, 40)}
	for range 3 {
		if errno := b.holdSnapshot(1, v, false); errno != 0 {
			t.Fatal(errno)
		}
	}
	if st := b.stats(); st.Buffered != 40 {
		t.Errorf("three handles of one user on one version: %d bytes, want 40", st.Buffered)
	}
	if errno := b.holdSnapshot(2, v, false); errno != 0 || b.stats().Buffered != 80 {
		t.Errorf("another user: %v, %d bytes", errno, b.stats().Buffered)
	}
	if errno := b.holdSnapshot(2, &version{data: make([]byte, 40)}, false); errno != syscall.EDQUOT {
		t.Errorf("past the user's share: %v, want EDQUOT", errno)
	}
	if errno := b.holdSnapshot(3, &version{data: make([]byte, 40)}, false); errno != syscall.ENOSPC {
		t.Errorf("past the budget: %v, want ENOSPC", errno)
	}
	for range 3 {
		b.dropSnapshot(1, v)
	}
	b.dropSnapshot(2, v)
	if st := b.stats(); st.Buffered != 0 || st.RefusedSnapshots != 2 {
		t.Errorf("after the drops: %+v", st)
	}

	f := newBudget(Limits{MaxOpen: 3, MaxOpenPerUser: 2})
	for _, want := range []syscall.Errno{0, 0, syscall.EMFILE} {
		if got := f.openFile(1); got != want {
			t.Errorf("user 1 open: %v, want %v", got, want)
		}
	}
	if got := f.openFile(2); got != 0 {
		t.Errorf("user 2's first open: %v", got)
	}
	if got := f.openFile(2); got != syscall.EMFILE {
		t.Errorf("past the mount's limit: %v, want EMFILE", got)
	}
	f.closeFile(1)
	if got := f.openFile(2); got != 0 {
		t.Errorf("after a close: %v", got)
	}
}

// A handle whose buffered writes would go past the user's share gets EDQUOT at once, its close fails
// (EIO) and nothing is written; small commits go on.
func TestWritesPastTheBudgetAreRefused(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.budget = newBudget(Limits{MaxBuffered: 1 << 20, MaxBufferedPerUser: 64 << 10})
	f.put(t, "r.json", `{"a":0}`)
	me := self()
	h := f.open(t, me, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	big := `{"pad":"` + strings.Repeat("x", 100<<10) + `"}`
	if _, errno := h.Write(me.ctx(), []byte(big), 0); errno != syscall.EDQUOT {
		t.Fatalf("a 100 KiB write against a 64 KiB share: %v, want EDQUOT", errno)
	}
	if errno := closeHandle(me, h); errno != syscall.EIO {
		t.Errorf("close after a refused write: %v, want EIO", errno)
	}
	if got := f.get(t, "r.json"); got["a"] != 0.0 || got["pad"] != nil {
		t.Errorf("record after the refused write: %v", got)
	}
	if st := f.Stats(); st.Limits.Buffered != 0 || st.Limits.RefusedWrites != 1 {
		t.Errorf("after the close: %+v", st.Limits)
	}
	h = f.open(t, me, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, me, h, `{"a":1}`, 0)
	if errno := closeHandle(me, h); errno != 0 {
		t.Fatalf("a small commit: %v", errno)
	}
	if st := f.Stats(); st.Limits.Buffered != 0 {
		t.Errorf("after a small commit and its release: %d bytes still charged", st.Limits.Buffered)
	}
}

func TestRejectedContentIsBounded(t *testing.T) {
	dir := t.TempDir()
	r := &rejectedStore{dir: filepath.Join(dir, "rejected"), limits: RejectedLimits{MaxTotal: 1000, MaxFile: 300}}
	at := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	for i := range 10 {
		if got := r.save(at.Add(time.Duration(i)*time.Second), 7, "r.json", make([]byte, 250)); strings.HasPrefix(got, "not saved") {
			t.Fatal(got)
		}
	}
	st := r.stats()
	if st.Bytes > 1000 || st.Files != 4 || st.Dropped != 6 {
		t.Errorf("after 10 saves of 250 bytes within 1000: %+v", st)
	}
	entries, _ := os.ReadDir(r.dir)
	if len(entries) != 4 || !strings.HasPrefix(entries[0].Name(), "20261128T090006") {
		t.Errorf("kept %d files, oldest %s; want the newest 4", len(entries), entries[0].Name())
	}
	got := r.save(at.Add(time.Minute), 7, "big.json", make([]byte, 5000))
	if !strings.HasSuffix(got, ".first-300-of-5000-bytes") {
		t.Errorf("a large content was saved as %s", got)
	}
	if info, err := os.Stat(got); err != nil || info.Size() != 300 {
		t.Errorf("saved %v, %v; want 300 bytes", info, err)
	}
	// A fresh store (a restart) finds what the last run kept and keeps to the bound.
	r2 := &rejectedStore{dir: r.dir, limits: RejectedLimits{MaxTotal: 600}}
	r2.save(at.Add(time.Hour), 7, "r.json", make([]byte, 250))
	if st := r2.stats(); st.Bytes > 600 {
		t.Errorf("after a restart: %+v", st)
	}
}
