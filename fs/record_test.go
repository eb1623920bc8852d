package fs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/merge"
)

// These tests drive record handles directly, without a kernel: each request
// carries the thread id a FUSE request would, and tasks are real threads and
// processes so that /proc resolution runs as in a mount.

type testFS struct {
	*FS
	dir   string
	state string
}

func newTestFS(t *testing.T, policy merge.Policy) *testFS {
	t.Helper()
	dir := t.TempDir()
	store, err := backing.Open(dir, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	state := t.TempDir()
	fsys, _, err := New(Config{Store: store, StateDir: state, Merge: merge.Options{Policy: policy}})
	if err != nil {
		t.Fatal(err)
	}
	return &testFS{FS: fsys, dir: dir, state: state}
}

func (f *testFS) put(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *testFS) get(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s is not valid JSON: %v: %q", name, err, data)
	}
	return m
}

// task is a thread or process issuing requests.
type task uint32

func (tk task) ctx() context.Context {
	return fuse.NewContext(context.Background(), &fuse.Caller{Pid: uint32(tk)})
}

func self() task { return task(os.Getpid()) }

// place is the record name at the backing root, as a handle's target.
func (f *testFS) place(name string) *fixedPlace {
	return &fixedPlace{dir: backing.Dir{FD: f.rootFD, Ino: f.rootIno()}, name: name, path: name, id: backing.NewID()}
}

func (f *FS) rootIno() uint64 {
	st, err := statx(f.rootFD, "")
	if err != nil {
		panic(err)
	}
	return st.Ino
}

// open opens record name at the backing root as a FUSE OPEN from tk would.
func (f *testFS) open(t testing.TB, tk task, name string, flags uint32) *recordHandle {
	t.Helper()
	target := f.place(name)
	sn, err := f.store.ReadAt(target.dir, name, nil)
	exists := err == nil
	var expect uint64
	if exists {
		expect = sn.Identity.ID
	}
	c := f.callerOf(tk.ctx())
	h, errno := f.openRecordHandle(target, name, expect, flags, c, sn.Data, exists, newRecord{mode: 0o644})
	if errno != 0 {
		t.Fatalf("open %s: %v", name, errno)
	}
	return h
}

func readAll(t *testing.T, tk task, h *recordHandle) string {
	t.Helper()
	buf := make([]byte, 1<<16)
	res, errno := h.Read(tk.ctx(), buf, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	data, _ := res.Bytes(buf)
	return string(data)
}

func write(t *testing.T, tk task, h *recordHandle, s string, off int64) {
	t.Helper()
	if _, errno := h.Write(tk.ctx(), []byte(s), off); errno != 0 {
		t.Fatal(errno)
	}
}

func closeHandle(tk task, h *recordHandle) syscall.Errno {
	errno := h.Flush(tk.ctx())
	h.Release(context.Background())
	return errno
}

func TestLockstepRewritesOfDifferentFieldsBothSurvive(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	procA, procB := self(), task(startSleeper(t))

	// Both read, then both rewrite whole records with O_TRUNC.
	ra, rb := f.open(t, procA, "r.json", syscall.O_RDONLY), f.open(t, procB, "r.json", syscall.O_RDONLY)
	readAll(t, procA, ra)
	readAll(t, procB, rb)
	closeHandle(procA, ra)
	closeHandle(procB, rb)

	wa := f.open(t, procA, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	wb := f.open(t, procB, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, procA, wa, `{"a":1,"b":0}`, 0)
	write(t, procB, wb, `{"a":0,"b":1}`, 0)
	if errno := closeHandle(procA, wa); errno != 0 {
		t.Fatal(errno)
	}
	if errno := closeHandle(procB, wb); errno != 0 {
		t.Fatal(errno)
	}
	got := f.get(t, "r.json")
	if got["a"] != 1.0 || got["b"] != 1.0 {
		t.Fatalf("record = %v, want both increments", got)
	}
	if st := f.Stats(); st.Merges != 1 || st.Commits != 2 || st.BaseFallbacks != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestThreadsOfOneProcessKeepTheirOwnBases(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	t1, t2 := self(), task(otherThread(t))

	r1, r2 := f.open(t, t1, "r.json", syscall.O_RDONLY), f.open(t, t2, "r.json", syscall.O_RDONLY)
	readAll(t, t1, r1)
	readAll(t, t2, r2)
	w1 := f.open(t, t1, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, t1, w1, `{"a":1,"b":0}`, 0)
	closeHandle(t1, w1)
	// Thread 2 read before thread 1's commit: its base is still v0, so its
	// unchanged "a" keeps thread 1's value.
	w2 := f.open(t, t2, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, t2, w2, `{"a":0,"b":1}`, 0)
	closeHandle(t2, w2)
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 1.0 {
		t.Fatalf("record = %v, want both increments", got)
	}
}

func TestReadOnAnotherThreadIsTheProcessBase(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	reader, writer := self(), task(otherThread(t))
	r := f.open(t, reader, "r.json", syscall.O_RDONLY)
	readAll(t, reader, r)
	closeHandle(reader, r)

	f.put(t, "r.json", `{"a":0,"b":5}`) // another writer, outside this process
	w := f.open(t, writer, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, writer, w, `{"a":1,"b":0}`, 0)
	closeHandle(writer, w)
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 5.0 {
		t.Fatalf("record = %v, want a=1 from the writer and b=5 kept", got)
	}
	if f.Stats().BaseFallbacks != 0 {
		t.Fatal("the process's read was not used as base")
	}
}

func TestNoReadFallsBackToRecordAtOpen(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	w := f.open(t, self(), "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	f.put(t, "r.json", `{"a":0,"b":7}`)
	write(t, self(), w, `{"a":1,"b":0}`, 0)
	closeHandle(self(), w)
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 7.0 {
		t.Fatalf("record = %v, want a=1, b=7", got)
	}
	if f.Stats().BaseFallbacks != 1 {
		t.Fatalf("fallback not counted: %+v", f.Stats())
	}
}

func TestReadWriteHandleBaseIsContentAtOpen(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	h := f.open(t, self(), "r.json", syscall.O_RDWR)
	if got := readAll(t, self(), h); got != `{"a":0,"b":0}` {
		t.Fatalf("snapshot %q", got)
	}
	f.put(t, "r.json", `{"a":0,"b":9}`)
	if got := readAll(t, self(), h); got != `{"a":0,"b":0}` {
		t.Fatalf("handle saw another writer's commit: %q", got)
	}
	write(t, self(), h, `{"a":1,"b":0}`, 0)
	if got := readAll(t, self(), h); got != `{"a":1,"b":0}` {
		t.Fatalf("read-your-writes: %q", got)
	}
	closeHandle(self(), h)
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 9.0 {
		t.Fatalf("record = %v", got)
	}
}

func TestFlushFromProcessThatDidNotWriteCommitsNothing(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0}`)
	parent, child := self(), task(startSleeper(t))
	h := f.open(t, parent, "r.json", syscall.O_RDWR)
	readAll(t, parent, h)
	write(t, parent, h, `{"a":1}   `, 0)
	// A forked child closing its inherited descriptor.
	if errno := h.Flush(child.ctx()); errno != 0 {
		t.Fatal(errno)
	}
	if got := f.get(t, "r.json"); got["a"] != 0.0 {
		t.Fatalf("child's close committed: %v", got)
	}
	if errno := h.Flush(parent.ctx()); errno != 0 {
		t.Fatal(errno)
	}
	if got := f.get(t, "r.json"); got["a"] != 1.0 {
		t.Fatalf("writer's close did not commit: %v", got)
	}
}

func TestReleaseWithoutFlushCommitsNothing(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0}`)
	h := f.open(t, self(), "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, self(), h, `{"a":1}`, 0)
	h.Release(context.Background())
	if got := f.get(t, "r.json"); got["a"] != 0.0 {
		t.Fatalf("release committed: %v", got)
	}
	if st := f.Stats(); st.Commits != 0 || st.OpenRecords != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInvalidContentIsRejectedAndSaved(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0}`)
	for _, bad := range []string{"", `{"a":`, `{"a":1} x`, `{"a":NaN}`} {
		h := f.open(t, self(), "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
		if bad == "" {
			h.truncate(self().ctx(), 0) // an explicit ftruncate counts as a write
		} else {
			write(t, self(), h, bad, 0)
		}
		if errno := closeHandle(self(), h); errno != syscall.EIO {
			t.Errorf("%q: close gave %v, want EIO", bad, errno)
		}
		if got := f.get(t, "r.json"); got["a"] != 0.0 {
			t.Fatalf("%q changed the record: %v", bad, got)
		}
	}
	saved, err := os.ReadDir(filepath.Join(f.state, "rejected"))
	if err != nil || len(saved) != 4 {
		t.Fatalf("rejected files: %v, %v", saved, err)
	}
	if st := f.Stats(); st.Rejected != 4 || st.Commits != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRejectPolicyFailsConflictingClose(t *testing.T) {
	f := newTestFS(t, merge.Reject)
	f.put(t, "r.json", `{"a":0}`)
	h := f.open(t, self(), "r.json", syscall.O_RDWR)
	readAll(t, self(), h)
	f.put(t, "r.json", `{"a":5}`)
	write(t, self(), h, `{"a":1}`, 0)
	if errno := closeHandle(self(), h); errno != syscall.EIO {
		t.Fatalf("conflicting close gave %v, want EIO", errno)
	}
	if got := f.get(t, "r.json"); got["a"] != 5.0 {
		t.Fatalf("rejected commit wrote: %v", got)
	}
}

func TestAppendTruncateAndSparseWrites(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0}`)
	h := f.open(t, self(), "r.json", syscall.O_RDWR|syscall.O_APPEND)
	write(t, self(), h, "  ", 0) // O_APPEND ignores the offset
	if got := readAll(t, self(), h); got != `{"a":0}  ` {
		t.Fatalf("append: %q", got)
	}
	if errno := h.truncate(self().ctx(), 3); errno != 0 {
		t.Fatal(errno)
	}
	if errno := h.truncate(self().ctx(), 5); errno != 0 {
		t.Fatal(errno)
	}
	if got := readAll(t, self(), h); got != "{\"a\x00\x00" {
		t.Fatalf("truncate then extend: %q", got)
	}
	h.append = false
	write(t, self(), h, "x", 8)
	if got := readAll(t, self(), h); got != "{\"a\x00\x00\x00\x00\x00x" {
		t.Fatalf("sparse write: %q", got)
	}
	if h.size() != 9 {
		t.Fatalf("size %d", h.size())
	}
	h.Release(context.Background())
}

func TestNewRecordWrittenWhole(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	h := f.open(t, self(), "new.json", syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC)
	if _, err := os.Stat(filepath.Join(f.dir, "new.json")); !os.IsNotExist(err) {
		t.Fatalf("record exists before its first commit: %v", err)
	}
	write(t, self(), h, `{"n":1}`, 0)
	if errno := closeHandle(self(), h); errno != 0 {
		t.Fatal(errno)
	}
	if got := f.get(t, "new.json"); got["n"] != 1.0 {
		t.Fatalf("new record = %v", got)
	}
}

func TestCommitMakesTheWrittenContentTheWritersBase(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	r := f.open(t, self(), "r.json", syscall.O_RDONLY)
	readAll(t, self(), r)
	closeHandle(self(), r)
	w := f.open(t, self(), "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, self(), w, `{"a":1,"b":0}`, 0)
	closeHandle(self(), w)
	f.put(t, "r.json", `{"a":1,"b":3}`)
	// A second rewrite without reading again builds on what it wrote.
	w = f.open(t, self(), "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, self(), w, `{"a":2,"b":0}`, 0)
	closeHandle(self(), w)
	if got := f.get(t, "r.json"); got["a"] != 2.0 || got["b"] != 3.0 {
		t.Fatalf("record = %v, want a=2 b=3", got)
	}
}

func TestReadReplyIsNotChangedByALaterWrite(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":1}`)
	tk := self()
	h := f.open(t, tk, "r.json", syscall.O_RDWR)
	buf := make([]byte, 64)
	res, errno := h.Read(tk.ctx(), buf, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	// The reply may still be in flight when the next request arrives.
	write(t, tk, h, `{"a":2}`, 0)
	got, _ := res.Bytes(make([]byte, 64))
	if string(got) != `{"a":1}` {
		t.Fatalf("reply changed to %q by a later write", got)
	}
	res, _ = h.Read(tk.ctx(), buf, 0)
	got, _ = res.Bytes(make([]byte, 64))
	write(t, tk, h, `{"a":3}`, 0)
	if string(got) != `{"a":2}` {
		t.Fatalf("reply of a written handle changed to %q by a later write", got)
	}
	closeHandle(tk, h)
}

// Record READ replies are bytes in memory: go-fuse must write them with the reply's header in one
// writev (a ReadResult with Slices), not first try them for a splice, which costs three system calls
// per READ and cannot succeed.
func TestReadRepliesAreVectored(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":1}`)
	tk := self()
	h := f.open(t, tk, "r.json", syscall.O_RDWR)
	defer closeHandle(tk, h)
	type vectored interface {
		Slices() ([][]byte, fuse.Status)
	}
	// Unwritten, the reply is the version read; written, a copy of the handle's content.
	for i, want := range []string{`{"a":1}`, `{"a":2}`} {
		if i == 1 {
			write(t, tk, h, want, 0)
		}
		res, errno := h.Read(tk.ctx(), make([]byte, 64), 0)
		if errno != 0 {
			t.Fatal(errno)
		}
		v, ok := res.(vectored)
		if !ok {
			t.Fatalf("read %d: the reply is a %T, which go-fuse tries to splice", i, res)
		}
		if slices, st := v.Slices(); !st.Ok() || len(slices) != 1 || string(slices[0]) != want {
			t.Fatalf("read %d: reply %q, %v; want %s", i, slices, st, want)
		}
	}
}

func TestOpensOfAnUnchangedRecordShareOneVersion(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":1}`)
	procA, procB := self(), task(startSleeper(t))
	ha := f.open(t, procA, "r.json", syscall.O_RDONLY)
	readAll(t, procA, ha)
	hb := f.open(t, procB, "r.json", syscall.O_RDONLY)
	if hb.view != ha.view {
		t.Fatal("a second open of an unchanged record keeps its own copy")
	}
	f.put(t, "r.json", `{"a":2}`)
	hc := f.open(t, procB, "r.json", syscall.O_RDONLY)
	if hc.view == ha.view || readAll(t, procB, hc) != `{"a":2}` {
		t.Fatal("an open after a change got the old version")
	}
	for _, h := range []*recordHandle{ha, hb, hc} {
		closeHandle(procA, h)
	}
}

func TestWritePastSizeLimitFailsTheCommit(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.mergeOpts.MaxSize = 32
	f.put(t, "r.json", `{"a":0}`)
	h := f.open(t, self(), "r.json", syscall.O_RDWR)
	readAll(t, self(), h)
	if _, errno := h.Write(self().ctx(), []byte(`{"a":"`+strings.Repeat("x", 40)+`"}`), 0); errno != syscall.EFBIG {
		t.Fatalf("oversized write gave %v, want EFBIG", errno)
	}
	if errno := h.Fsync(self().ctx(), 0); errno != syscall.EIO {
		t.Fatalf("fsync after a refused write gave %v, want EIO", errno)
	}
	if got := f.get(t, "r.json"); got["a"] != 0.0 {
		t.Fatalf("record changed: %v", got)
	}
	if errno := closeHandle(self(), h); errno != 0 {
		t.Fatalf("close after the failed fsync reported again: %v", errno)
	}
	if saved, _ := os.ReadDir(filepath.Join(f.state, "rejected")); len(saved) != 1 {
		t.Fatalf("rejected files: %v", saved)
	}
}

func TestRewriteClosedWithoutWritingLeavesRecord(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0}`)
	// A shell's "> r.json" dup2()s the descriptor before writing: that
	// FLUSH must neither commit an empty record nor fail.
	h := f.open(t, self(), "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	if errno := h.Flush(self().ctx()); errno != 0 {
		t.Fatalf("flush before any write: %v", errno)
	}
	write(t, self(), h, `{"a":1}`, 0)
	if errno := closeHandle(self(), h); errno != 0 {
		t.Fatal(errno)
	}
	if got := f.get(t, "r.json"); got["a"] != 1.0 {
		t.Fatalf("record = %v", got)
	}
	h = f.open(t, self(), "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	if errno := closeHandle(self(), h); errno != 0 {
		t.Fatalf("close without a write: %v", errno)
	}
	if got := f.get(t, "r.json"); got["a"] != 1.0 {
		t.Fatalf("record = %v", got)
	}
	if st := f.Stats(); st.Rejected != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFsyncOfCleanHandleSyncsWithoutWriting(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0}`)
	before, err := os.Stat(filepath.Join(f.dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	h := f.open(t, self(), "r.json", syscall.O_RDONLY)
	syncs := f.store.Fsyncs()
	if errno := h.Fsync(self().ctx(), 0); errno != 0 {
		t.Fatalf("fsync of a clean handle: %v", errno)
	}
	// The record as it is must be made durable: the file and its directory.
	if got := f.store.Fsyncs() - syncs; got != 2 {
		t.Errorf("fsync of a clean handle made %d fsync calls, want 2 (the record and its directory)", got)
	}
	after, err := os.Stat(filepath.Join(f.dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("fsync of a clean handle rewrote the record")
	}
	closeHandle(self(), h)
	g := f.open(t, self(), "gone.json", syscall.O_WRONLY|syscall.O_CREAT)
	if errno := g.Fsync(self().ctx(), 0); errno != 0 {
		t.Fatalf("fsync of a record not yet created: %v", errno)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "gone.json")); !os.IsNotExist(err) {
		t.Fatalf("fsync created the record: %v", err)
	}
	g.Release(context.Background())
}
