package fs

import (
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

	if got, from := tr.lookup("r.json", t1, proc); got != v1 || from != baseThread {
		t.Errorf("thread 1: got %v from %v, want its own read v1 from thread", got, from)
	}
	other := procKey{pid: 13, start: 4}
	if got, from := tr.lookup("r.json", other, proc); got != v2 || from != baseProcess {
		t.Errorf("thread without reads: got %v from %v, want the process's last read v2", got, from)
	}
	if got, from := tr.lookup("r.json", other, procKey{pid: 99}); got != nil || from != baseNone {
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
	tr := newReadTracker(100, time.Hour, time.Now)
	big := &version{data: make([]byte, 40)}
	p := procKey{pid: 1, start: 1}
	// One version remembered by a thread and its process counts once.
	tr.remember("a.json", procKey{pid: 2, start: 2}, p, big)
	if st := tr.stats(); st.Bytes != 40 || st.Entries != 2 {
		t.Fatalf("shared version: %+v, want 40 bytes in 2 entries", st)
	}
	tr.remember("b.json", p, p, &version{data: make([]byte, 40)})
	tr.remember("c.json", p, p, &version{data: make([]byte, 40)})
	st := tr.stats()
	if st.Bytes > 100 {
		t.Fatalf("bytes %d exceed the bound 100", st.Bytes)
	}
	if got, _ := tr.lookup("a.json", procKey{pid: 2, start: 2}, p); got != nil {
		t.Fatal("the oldest version survived past the memory bound")
	}
	if got, _ := tr.lookup("c.json", p, p); got == nil {
		t.Fatal("the newest version was evicted")
	}
}

func TestReadTrackerIgnoresVersionsLargerThanBound(t *testing.T) {
	tr := newReadTracker(10, time.Hour, time.Now)
	p := procKey{pid: 1, start: 1}
	tr.remember("r.json", p, p, &version{data: make([]byte, 11)})
	if st := tr.stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("oversized version tracked: %+v", st)
	}
}

func TestReadTrackerForget(t *testing.T) {
	tr := newReadTracker(1<<20, time.Hour, time.Now)
	p := procKey{pid: 1, start: 1}
	tr.remember("r.json", p, p, &version{data: []byte(`{}`)})
	tr.remember("s.json", p, p, &version{data: []byte(`{}`)})
	tr.forget("r.json")
	if got, _ := tr.lookup("r.json", p, p); got != nil {
		t.Fatal("forgotten record still has a read version")
	}
	if got, _ := tr.lookup("s.json", p, p); got == nil {
		t.Fatal("forget dropped another record")
	}
	if st := tr.stats(); st.Bytes != 2 {
		t.Fatalf("bytes after forget = %d, want 2", st.Bytes)
	}
}
