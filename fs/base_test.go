package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/merge"
)

// rmw is one whole-record read-modify-write's two halves, as a request does them: read (a handle
// opened, read and closed), then later write (a handle opened O_TRUNC, written, closed).
func (f *testFS) readRecord(t *testing.T, tk task) string {
	t.Helper()
	h := f.open(t, tk, "r.json", syscall.O_RDONLY)
	defer closeHandle(tk, h)
	return readAll(t, tk, h)
}

func (f *testFS) writeRecord(t *testing.T, tk task, content string) {
	t.Helper()
	h := f.open(t, tk, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, tk, h, content, 0)
	if errno := closeHandle(tk, h); errno != 0 {
		t.Fatalf("close: %v", errno)
	}
}

// One thread interleaves two requests (an event loop): request A reads, request B reads, B writes,
// then A writes what it built from its own read. Its base is the version A's content came from, not
// the thread's last read (B's commit, which A's write would otherwise revert).
func TestBaseOfInterleavedRequestsOnOneThread(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	loop := self()
	f.readRecord(t, loop)                   // request A reads {"a":0,"b":0}
	f.readRecord(t, loop)                   // request B reads the same
	f.writeRecord(t, loop, `{"a":0,"b":1}`) // B writes
	f.readRecord(t, loop)                   // the loop reads again (another request)
	f.writeRecord(t, loop, `{"a":1,"b":0}`) // A writes from its old read
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 1.0 {
		t.Fatalf("record = %v, want both requests' changes", got)
	}
}

// A thread pool: the read of request A happens on thread 1, its write on thread 2, which meanwhile
// served request B (read and written). Both survive.
func TestBaseAcrossThreadsOfAPool(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	t1, t2 := self(), task(otherThread(t))
	f.readRecord(t, t1)                   // A's read on thread 1
	f.readRecord(t, t2)                   // B's read on thread 2
	f.writeRecord(t, t2, `{"a":0,"b":1}`) // B's write on thread 2
	f.writeRecord(t, t2, `{"a":1,"b":0}`) // A's write lands on thread 2
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 1.0 {
		t.Fatalf("record = %v, want both requests' changes", got)
	}
	if st := f.Stats(); st.Bases[event.Process] == 0 {
		t.Errorf("A's base was not the process's read: bases %v", st.Bases)
	}
}

// A tool pipeline (cp r.json /tmp/x; edit; cp /tmp/x r.json): one process reads, another writes. The
// record changed meanwhile; the change survives the round trip.
func TestBaseReadByAnotherProcess(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0,"c":0}`)
	reader, writer := self(), task(startSleeper(t))
	f.readRecord(t, reader)
	f.put(t, "r.json", `{"a":0,"b":5,"c":0}`) // a change by someone else meanwhile
	f.readRecord(t, task(startSleeper(t)))    // which a third process reads
	f.writeRecord(t, writer, `{"a":1,"b":0,"c":0}`)
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 5.0 {
		t.Fatalf("record = %v, want a=1 from the copy and b=5 kept", got)
	}
	if st := f.Stats(); st.Bases[event.OtherProcess] != 1 || st.BaseFallbacks != 0 {
		t.Errorf("bases %v, fallbacks %d; want the other process's read", st.Bases, st.BaseFallbacks)
	}
}

// An editor (vim) reads the record, another process changes it, then the editor opens it for
// writing without O_TRUNC, truncates it and writes: its base is what it read, not the record at
// its writing open.
func TestBaseOfAnEditorsWrite(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	editor := self()
	f.readRecord(t, editor)
	f.put(t, "r.json", `{"a":0,"b":3}`)
	h := f.open(t, editor, "r.json", syscall.O_WRONLY)
	if errno := h.truncate(editor.ctx(), 0); errno != 0 {
		t.Fatal(errno)
	}
	write(t, editor, h, `{"a":1,"b":0}`, 0)
	if errno := h.Fsync(editor.ctx(), 0); errno != 0 {
		t.Fatal(errno)
	}
	closeHandle(editor, h)
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 3.0 {
		t.Fatalf("record = %v, want a=1 from the editor and b=3 kept", got)
	}
}

// A slow request reads, others commit many versions, then it writes: its own read is still there.
func TestSlowRequestFindsItsOwnRead(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"slow":0,"fast":0}`)
	slow, fast := self(), task(startSleeper(t))
	f.readRecord(t, slow)
	for i := 1; i <= 3*maxRecent; i++ {
		f.readRecord(t, fast)
		f.writeRecord(t, fast, `{"slow":0,"fast":`+strconv.Itoa(i)+`}`)
	}
	f.writeRecord(t, slow, `{"slow":1,"fast":0}`)
	if got := f.get(t, "r.json"); got["slow"] != 1.0 || got["fast"] != float64(3*maxRecent) {
		t.Fatalf("record = %v, want slow=1 and fast=%d", got, 3*maxRecent)
	}
}

// A commit whose next-best candidate is within one change of the chosen one is counted as ambiguous.
func TestAmbiguousBaseIsCounted(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a":0,"b":0}`)
	w, other := self(), task(startSleeper(t))
	f.readRecord(t, w)
	f.put(t, "r.json", `{"a":0,"b":1}`)
	f.readRecord(t, other)
	// One change from the writer's read, two from the other read: ambiguous.
	f.writeRecord(t, w, `{"a":1,"b":0}`)
	if st := f.Stats(); st.AmbiguousBases != 1 {
		t.Fatalf("ambiguous bases %d, want 1", st.AmbiguousBases)
	}
	if got := f.get(t, "r.json"); got["a"] != 1.0 || got["b"] != 1.0 {
		t.Fatalf("record = %v", got)
	}
}

// When nobody committed since the writer read (theirs is the chosen base byte for byte), the record
// becomes what the writer wrote, byte for byte: there is nothing to merge (docs/design.md, "The cost
// of a commit").
func TestCommitOntoItsBaseWritesMineAsWritten(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a": 1.0,  "b": [1, 2], "c": "\u00e9"}`)
	w := self()
	f.readRecord(t, w)
	want := `{"c":"é","b":[1,2],"a":2}`
	f.writeRecord(t, w, want)
	if got, err := os.ReadFile(filepath.Join(f.dir, "r.json")); err != nil || string(got) != want {
		t.Fatalf("record %q (%v), want %q", got, err, want)
	}
	if st := f.Stats(); st.Merges != 0 || st.Commits != 1 {
		t.Errorf("stats %+v, want one commit and no merge", st)
	}
}

// A commit parses only what mergefs has not parsed before: in steady read-modify-write, mine alone
// (the version read is what the process committed last, parsed then); a commit onto another
// process's commit parses mine (its base and theirs were each parsed once before), and then, after
// the lock, the merged record, which the next commit onto it takes as theirs.
func TestCommitsParseEachVersionOnce(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a": 0, "b": 0}`)
	a, b := self(), task(startSleeper(t))
	f.readRecord(t, a)
	f.writeRecord(t, a, `{"a": 1, "b": 0}`)
	for i := 2; i < 5; i++ {
		f.readRecord(t, a)
		before := merge.ParseCount()
		f.writeRecord(t, a, fmt.Sprintf(`{"a": %d, "b": 0}`, i))
		if n := merge.ParseCount() - before; n != 1 {
			t.Errorf("read-modify-write %d parsed %d documents, want 1 (mine)", i, n)
		}
	}
	f.readRecord(t, b) // {"a": 4, "b": 0}
	f.readRecord(t, a)
	f.writeRecord(t, a, `{"a": 10, "b": 0}`)
	before := merge.ParseCount()
	f.writeRecord(t, b, `{"a": 4, "b": 1}`) // merged onto a's commit
	if n := merge.ParseCount() - before; n != 2 {
		t.Errorf("a merging commit parsed %d documents, want 2 (mine, and the merged record after the lock)", n)
	}
	// The merged record, the next commit's theirs, was parsed after the lock, not under the next one.
	_, id, err := f.store.Identify(backing.Dir{FD: f.rootFD, Ino: f.rootIno()}, "r.json")
	if err != nil {
		t.Fatal(err)
	}
	if v := f.history.latest(id.ID); v == nil || v.parsed.Load() == nil || v.parsed.Load().doc == nil {
		t.Errorf("the merged record is not parsed after its commit: %v", v)
	}
	if got := f.get(t, "r.json"); got["a"] != 10.0 || got["b"] != 1.0 {
		t.Fatalf("record %v, want a=10 b=1", got)
	}
	if st := f.Stats(); st.Merges != 1 {
		t.Errorf("merges %d, want 1", st.Merges)
	}
}

// A rewrite that changes no value (whitespace, key order, number and string spelling) leaves the
// record as it is, byte for byte, also when nobody committed since the writer read.
func TestRewriteWithoutChangeLeavesTheRecord(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	const record = `{"a": 1.0,  "b": {"c": "\u00e9"}}`
	f.put(t, "r.json", record)
	w := self()
	f.readRecord(t, w)
	f.writeRecord(t, w, `{"b":{"c":"é"},"a":1}`)
	if got, err := os.ReadFile(filepath.Join(f.dir, "r.json")); err != nil || string(got) != record {
		t.Fatalf("record %q (%v), want it unchanged: %q", got, err, record)
	}
	if st := f.Stats(); st.Unchanged != 1 {
		t.Errorf("stats %+v, want one unchanged commit", st)
	}
}

// What a commit leaves in the backing store is known with its file: an open that finds that file
// unchanged serves the committed version without reading it (backing.Store.ReadKnown), and one that
// finds another file reads it and knows that one.
func TestCommittedVersionIsKnownByItsFile(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	f.put(t, "r.json", `{"a": 0}`)
	w := self()
	f.readRecord(t, w)
	f.writeRecord(t, w, `{"a": 1}`)
	h := f.open(t, w, "r.json", syscall.O_RDONLY)
	id := h.expect
	closeHandle(w, h)
	latest := f.history.latest(id)
	if latest == nil || latest.known() == nil || string(latest.data) != `{"a": 1}` {
		t.Fatalf("no version known with its file after the commit: %v", latest)
	}
	dir := backing.Dir{FD: f.rootFD, Ino: f.rootIno()}
	sn, reused, err := f.store.ReadKnown(dir, "r.json", nil, latest.known())
	if err != nil || !reused || f.snapshotView(id, &sn, reused, latest) != latest {
		t.Fatalf("open of the committed record: reused %v (%v)", reused, err)
	}
	time.Sleep(10 * time.Millisecond) // past a coarse clock tick: the write moves the file's times
	f.put(t, "r.json", `{"a": 2}`)    // another writer of the backing directory
	sn, reused, err = f.store.ReadKnown(dir, "r.json", nil, latest.known())
	if err != nil || reused || string(sn.Data) != `{"a": 2}` {
		t.Fatalf("open of a record written in place: %q reused %v (%v)", sn.Data, reused, err)
	}
	v := f.snapshotView(id, &sn, reused, latest)
	if sn2, reused, err := f.store.ReadKnown(dir, "r.json", nil, v.known()); err != nil || !reused || string(sn2.Data) != `{"a": 2}` {
		t.Fatalf("open of the record as read last: reused %v (%v)", reused, err)
	}
}
