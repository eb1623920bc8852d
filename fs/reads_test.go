package fs

import (
	"github.com/mergefs/mergefs/internal/event"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestReadTrackerThreadBeforeProcess(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	tr := newReadTracker(1<<20, time.Minute, clock.now)
	proc := procKey{pid: 10, start: 1}
	t1, t2 := procKey{pid: 11, start: 2}, procKey{pid: 12, start: 3}
	v1, v2 := &version{data: []byte(`{"v":1}`)}, &version{data: []byte(`{"v":2}`)}

	tr.remember("r.json", t1, proc, v1)
	tr.remember("r.json", t2, proc, v2)

	if got, from := tr.lookup("r.json", t1, proc); got != v1 || from != event.Thread {
		t.Errorf("thread 1: got %v from %v, want its own read v1 from thread", got, from)
	}
	other := procKey{pid: 13, start: 4}
	if got, from := tr.lookup("r.json", other, proc); got != v2 || from != event.Process {
		t.Errorf("thread without reads: got %v from %v, want the process's last read v2", got, from)
	}
	if got, from := tr.lookup("r.json", other, procKey{pid: 99}); got != nil || from != event.NoBase {
		t.Errorf("unknown process: got %v from %v, want nothing", got, from)
	}
	if got, _ := tr.lookup("other.json", t1, proc); got != nil {
		t.Errorf("other record: got %v, want nothing", got)
	}
}

func TestReadTrackerPidReuseDoesNotMatch(t *testing.T) {
	tr := newReadTracker(1<<20, time.Minute, time.Now)
	old := procKey{pid: 42, start: 100}
	tr.remember("r.json", old, old, &version{data: []byte(`{}`)})
	reused := procKey{pid: 42, start: 200}
	if got, _ := tr.lookup("r.json", reused, reused); got != nil {
		t.Fatalf("a new process with a reused pid inherited a read version")
	}
}

func TestReadTrackerExpiresByAge(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	tr := newReadTracker(1<<20, time.Minute, clock.now)
	p := procKey{pid: 1, start: 1}
	tr.remember("r.json", p, p, &version{data: []byte(`{}`)})
	clock.t = clock.t.Add(59 * time.Second)
	if got, _ := tr.lookup("r.json", p, p); got == nil {
		t.Fatal("version expired before its age")
	}
	clock.t = clock.t.Add(2 * time.Second)
	if got, _ := tr.lookup("r.json", p, p); got != nil {
		t.Fatal("version kept past its age")
	}
	if st := tr.stats(); st.Entries != 0 || st.Bytes != 0 || st.Evicted == 0 {
		t.Fatalf("after expiry: %+v", st)
	}
}

func TestReadTrackerMemoryBoundCountsSharedVersionsOnce(t *testing.T) {
	big := &version{data: make([]byte, 40)}
	entry := entryCost(readKey{record: "a.json"})
	// Room for a.json read by a thread and its process (two entries), and
	// b.json read by a single-threaded process (one entry).
	bound := 2*versionCost(big) + 3*entry
	tr := newReadTracker(bound, time.Hour, time.Now)
	p := procKey{pid: 1, start: 1}
	// One version remembered by a thread and its process counts once.
	tr.remember("a.json", procKey{pid: 2, start: 2}, p, big)
	if st, want := tr.stats(), versionCost(big)+2*entry; st.Bytes != want || st.Entries != 2 {
		t.Fatalf("shared version: %+v, want %d bytes in 2 entries", st, want)
	}
	tr.remember("b.json", p, p, &version{data: make([]byte, 40)})
	if st := tr.stats(); st.Bytes != bound || st.Evicted != 0 {
		t.Fatalf("at the bound: %+v, want %d bytes and nothing evicted", st, bound)
	}
	tr.remember("c.json", p, p, &version{data: make([]byte, 40)})
	st := tr.stats()
	if st.Bytes > bound {
		t.Fatalf("bytes %d exceed the bound %d", st.Bytes, bound)
	}
	if got, _ := tr.lookup("a.json", procKey{pid: 2, start: 2}, p); got != nil {
		t.Fatal("the oldest version survived past the memory bound")
	}
	if got, _ := tr.lookup("c.json", p, p); got == nil {
		t.Fatal("the newest version was evicted")
	}
}

func TestReadTrackerIgnoresVersionsLargerThanBound(t *testing.T) {
	fits := &version{data: make([]byte, 10)}
	bound := versionCost(fits) + 2*entryCost(readKey{record: "r.json"})
	tr := newReadTracker(bound, time.Hour, time.Now)
	p := procKey{pid: 1, start: 1}
	tr.remember("r.json", p, p, &version{data: make([]byte, 11)})
	if st := tr.stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("oversized version tracked: %+v", st)
	}
	tr.remember("r.json", p, p, fits)
	if st := tr.stats(); st.Entries != 1 {
		t.Fatalf("a version within the bound was not tracked: %+v", st)
	}
}

// Entries are charged too: with small records they outweigh the data, and
// a bound on the data alone would not bound the memory.
func TestReadTrackerBoundCountsEntries(t *testing.T) {
	const bound = 1 << 20
	tr := newReadTracker(bound, time.Hour, time.Now)
	v := &version{data: []byte(`{}`)}
	for pid := range uint32(100000) {
		p := procKey{pid: pid, start: 1}
		tr.remember("r.json", p, p, v)
	}
	st := tr.stats()
	if st.Bytes > bound || st.Entries > bound/entryBytes {
		t.Fatalf("%d entries charged %d bytes, bound %d", st.Entries, st.Bytes, bound)
	}
	if st.Evicted == 0 {
		t.Fatal("100,000 readers of one tiny record fit in 1 MiB")
	}
}

func TestReadTrackerSharesEqualContent(t *testing.T) {
	tr := newReadTracker(1<<20, time.Hour, time.Now)
	p1, p2 := procKey{pid: 1, start: 1}, procKey{pid: 2, start: 1}
	first := tr.share("r.json", []byte(`{"a":1}`))
	tr.remember("r.json", p1, p1, first)
	if got := tr.share("r.json", []byte(`{"a":1}`)); got != first {
		t.Fatal("an open of unchanged content got its own copy")
	}
	if got := tr.share("r.json", []byte(`{"a":2}`)); got == first || string(got.data) != `{"a":2}` {
		t.Fatalf("changed content shared the old version: %q", got.data)
	}
	if got := tr.share("s.json", []byte(`{"a":1}`)); got == first {
		t.Fatal("another record shared the version")
	}
	second := tr.share("r.json", []byte(`{"a":2}`))
	tr.remember("r.json", p2, p2, second)
	if got := tr.share("r.json", []byte(`{"a":2}`)); got != second {
		t.Fatal("the latest remembered version is not shared")
	}
	before := tr.stats().Bytes
	tr.remember("r.json", p1, p1, second) // p1 reads the new version too
	if st := tr.stats(); st.Bytes != before-versionCost(first) {
		t.Fatalf("bytes %d after the old version's last reader moved on, want %d", st.Bytes, before-versionCost(first))
	}
	tr.forget("r.json")
	if got := tr.share("r.json", []byte(`{"a":2}`)); got == second {
		t.Fatal("a forgotten record's version is still shared")
	}
}

func TestReadTrackerForget(t *testing.T) {
	tr := newReadTracker(1<<20, time.Hour, time.Now)
	p := procKey{pid: 1, start: 1}
	kept := &version{data: []byte(`{}`)}
	tr.remember("r.json", p, p, &version{data: []byte(`{}`)})
	tr.remember("s.json", p, p, kept)
	tr.forget("r.json")
	if got, _ := tr.lookup("r.json", p, p); got != nil {
		t.Fatal("forgotten record still has a read version")
	}
	if got, _ := tr.lookup("s.json", p, p); got == nil {
		t.Fatal("forget dropped another record")
	}
	if st, want := tr.stats(), versionCost(kept)+entryCost(readKey{record: "s.json"}); st.Bytes != want {
		t.Fatalf("bytes after forget = %d, want %d", st.Bytes, want)
	}
}
