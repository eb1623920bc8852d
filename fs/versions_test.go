package fs

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func fileStat(ino uint64, size int64) *unix.Stat_t {
	return &unix.Stat_t{Ino: ino, Size: size, Mtim: unix.Timespec{Sec: int64(ino)}}
}

// A version node caches readers of its own version only; while they are open, anything that would
// show the kernel another size through the node is turned away (stale), and once they are gone it is
// served directly and the node is not cached until its last handle is released. Then its pages are
// dropped, once, and it shows whatever version is found next.
func TestVersionNodeOpens(t *testing.T) {
	vs := newVersions(time.Now)
	v1, st2 := fileStat(1, 10), fileStat(2, 20)
	v, replaced := vs.node(7, v1)
	if replaced != nil || v.gen == 1 {
		t.Fatalf("first node: gen %d, replaced %v (generation 1 is the record's own node)", v.gen, replaced)
	}
	drops := 0
	drop := func() {
		if v.open != 0 {
			t.Errorf("pages dropped with %d handles open", v.open)
		}
		drops++
	}

	if got := v.openReader(v1, 0); got != openDirect {
		t.Fatalf("first reader of the node's version: %v, want direct", got)
	}
	if got := v.openReader(v1, 0); got != openCached {
		t.Fatalf("second reader of the node's version: %v, want cached", got)
	}
	v.release(false, drop)
	if got := v.openReader(st2, 0); got != openStale {
		t.Errorf("reader of another version while a cached handle is open: %v, want stale", got)
	}
	if got := v.openReader(nil, 0); got != openStale {
		t.Errorf("reader of a removed record while a cached handle is open: %v, want stale", got)
	}
	if got := v.openOther(0); got != openStale {
		t.Errorf("writer while a cached handle is open: %v, want stale", got)
	}
	if !v.versionAttrs(st2) {
		t.Errorf("attributes of a node with a cached handle open are not its version's")
	}
	v.release(true, drop)
	if drops != 0 {
		t.Fatalf("pages dropped when the only cached handle closed; nothing else was served")
	}

	if got := v.openOther(0); got != openDirect {
		t.Fatalf("writer with no cached handle open: %v, want direct", got)
	}
	if got := v.openReader(v1, 0); got != openDirect {
		t.Errorf("reader while a writer is open: %v, want direct (not cached)", got)
	}
	if v.versionAttrs(v1) {
		t.Errorf("a node a writer is open on answers its version's attributes")
	}
	if n, _ := vs.node(7, v1); n == v {
		t.Errorf("a lookup was given a node that a writer is open on")
	}
	v.release(false, drop)
	if drops != 0 {
		t.Fatalf("pages dropped with a handle still open")
	}
	v.release(false, drop)
	if drops != 1 {
		t.Fatalf("pages dropped %d times at the last release, want once", drops)
	}
	// The writer's commit made version 2: the node shows it at its next open, cached from its second.
	if got := v.openReader(st2, 0); got != openDirect {
		t.Errorf("first reader after the node's last release: %v, want direct", got)
	}
	if st, key, known := v.attrs(); !known || key != contentKeyOf(st2) || st.Size != 20 {
		t.Errorf("node after its release shows %+v (known %v), want version 2", key, known)
	}
	if got := v.openReader(st2, 0); got != openCached {
		t.Errorf("second reader after the node's last release: %v, want cached (of the version it finds)", got)
	}
	v.release(true, drop)
	v.release(false, drop)
	if drops != 1 {
		t.Errorf("pages dropped again after serving only its version")
	}
}

// A node whose version is no longer the record's, with no cached handle open, answers GETATTR as
// the record's own node would and caches nobody until its release.
func TestVersionNodeAttrsAfterAChange(t *testing.T) {
	vs := newVersions(time.Now)
	v, _ := vs.node(7, fileStat(1, 10))
	if !v.versionAttrs(fileStat(1, 10)) {
		t.Fatalf("attributes of an unchanged version are not the version's")
	}
	if v.versionAttrs(fileStat(2, 20)) {
		t.Fatalf("attributes after the record changed, no handle open, are the old version's")
	}
	if got := v.openReader(fileStat(2, 20), 0); got != openDirect {
		t.Errorf("reader of the new version on the old version's node: %v, want direct", got)
	}
	n, replaced := vs.node(7, fileStat(2, 20))
	if n == v || replaced != v {
		t.Errorf("lookup of the new version: node %p (old %p), replaced %p", n, v, replaced)
	}
	if again, _ := vs.node(7, fileStat(2, 20)); again != n {
		t.Errorf("a second lookup of the same version made another node")
	}
}

// Pending lookups: a thread that a version node answered ESTALE gets the record's own node until it
// opened it, or for pendingFor; everyone does while the record is busy (busyFor).
func TestVersionsPending(t *testing.T) {
	now := time.Unix(1000, 0)
	vs := newVersions(func() time.Time { return now })
	vs.pend(7, 100)
	if !vs.recordNode(7, 100) || !vs.recordNode(7, 101) || vs.recordNode(8, 100) {
		t.Fatalf("record 7 is not busy for every thread, or record 8 is")
	}
	now = now.Add(busyFor + time.Millisecond)
	if !vs.recordNode(7, 100) || vs.recordNode(7, 101) || vs.isBusy(7) {
		t.Fatalf("after %v, the record node is not exactly for thread 100 (pending)", busyFor)
	}
	vs.done(7, 100)
	if vs.recordNode(7, 100) {
		t.Errorf("still pending after the thread opened the record's node")
	}
	vs.pend(7, 100)
	now = now.Add(pendingFor + time.Millisecond)
	if vs.recordNode(7, 100) {
		t.Errorf("still pending after %v", pendingFor)
	}
}

// Many opens and releases at once: pages are dropped only with no handle open, cached opens are only
// of the node's version, and every count returns to zero.
func TestVersionNodeConcurrent(t *testing.T) {
	vs := newVersions(time.Now)
	v, _ := vs.node(7, fileStat(1, 10))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				st := fileStat(uint64(1+(g+i)%3), 10)
				var mode openMode
				if (g+i)%5 == 0 {
					mode = v.openOther(0)
				} else {
					mode = v.openReader(st, 0)
				}
				if mode == openStale {
					continue
				}
				if mode == openCached {
					if _, key, _ := v.attrs(); key != contentKeyOf(st) {
						t.Errorf("cached open of version %d on a node showing %+v", st.Ino, key)
					}
				}
				v.release(mode == openCached, func() {
					if v.open != 0 || v.cached != 0 {
						t.Errorf("pages dropped with %d handles (%d cached) open", v.open, v.cached)
					}
				})
			}
		}()
	}
	wg.Wait()
	if v.open != 0 || v.cached != 0 {
		t.Errorf("counts after every release: %d open, %d cached", v.open, v.cached)
	}
}

// A metadata change through mergefs (utimes) keeps the version: the node takes the new modification
// time, and its cached handles stay its version's.
func TestVersionNodeTouched(t *testing.T) {
	v, st := cachedVersion(t)
	touched := *st
	touched.Mtim.Sec += 100
	v.touched(&touched)
	if !v.versionAttrs(&touched) {
		t.Errorf("after utimes the node's version is not the record's")
	}
	if got := v.openReader(&touched, 0); got != openCached {
		t.Errorf("reader after utimes: %v, want cached", got)
	}
	other := *fileStat(2, 10)
	v.touched(&other)
	if _, key, _ := v.attrs(); key != contentKeyOf(&touched) {
		t.Errorf("another file's attributes were taken as the version's: %+v", key)
	}
}

// An open that cannot be served while a cached handle is open waits a little for its release, which
// the kernel sends after close() returned: a process that just closed its reading descriptor and
// opens to write is not turned away.
func TestVersionNodeWaitsForReleases(t *testing.T) {
	v, _ := cachedVersion(t)
	go func() {
		time.Sleep(time.Millisecond)
		v.release(true, func() {})
	}()
	if got := v.openOther(time.Minute); got != openDirect {
		t.Errorf("writer while a cached handle is being released: %v, want direct", got)
	}
	v.release(false, func() {})
}

// cachedVersion is a version node of a record with one cached handle open, and its version.
func cachedVersion(t *testing.T) (*versionNode, *unix.Stat_t) {
	t.Helper()
	st := fileStat(1, 10)
	v, _ := newVersions(time.Now).node(7, st)
	if v.openReader(st, 0) != openDirect {
		t.Fatal("first reader cached")
	}
	v.release(false, func() { t.Fatal("pages dropped after a direct read of the node's version") })
	if v.openReader(st, 0) != openCached {
		t.Fatal("second reader not cached")
	}
	return v, st
}
