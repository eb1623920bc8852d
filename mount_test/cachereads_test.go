package mount_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCachedReadsKeepTheirVersion: with --cache-reads, a plain read of a record goes through the
// kernel's page cache (a shared mmap of the descriptor works, which direct I/O refuses with ENODEV:
// TestMmapOfRecords),
// and everything a reader and a writer see stays as without it: a descriptor opened before a commit
// keeps reading its version, at its size, while the writer's rewrite, a truncate by path and a chmod
// made meanwhile (each of which a version node with a cached descriptor open must turn away to the
// record's own node) succeed, and stat and new opens show the record as it is now.
func TestCachedReadsKeepTheirVersion(t *testing.T) {
	h, d, r := cachedReadsMount(t)
	writer := h.startSession(t, "writer", nil)
	watcher := h.startSession(t, "watcher", nil)
	reader := h.startSession(t, "reader", nil)
	rewrite := func(content string) { // a read-modify-write
		t.Helper()
		writer.do(map[string]any{"op": "cat", "path": r})
		writer.rewrite(r, content)
	}
	openCached := func(want string) int64 {
		t.Helper()
		fd, got := reader.openCached(r)
		if got != want {
			t.Fatalf("read through a shared mmap: %q, want %q", got, want)
		}
		return fd
	}

	rewrite(`{"a":1}`)
	old := openCached(`{"a":1}`)
	rewrite(`{"a":1,"b":22}`) // a truncating open while a cached descriptor is open
	if got := watcher.must(map[string]any{"op": "cat", "path": r}).str("data"); got != `{"a":1,"b":22}` {
		t.Fatalf("a new open after the commit read %q", got)
	}
	if got := watcher.must(map[string]any{"op": "stat", "path": r}).num("size"); got != 14 {
		t.Errorf("stat right after the commit: size %d, want 14", got)
	}
	if got := reader.must(map[string]any{"op": "fstat", "fd": old}).num("size"); got != 7 {
		t.Errorf("fstat of a descriptor opened before the commit: size %d, want 7 (its version)", got)
	}
	if got := reader.must(map[string]any{"op": "read", "fd": old}).str("data"); got != `{"a":1}` {
		t.Errorf("read of a descriptor opened before the commit: %q, want its version", got)
	}

	// The writer was turned away to the record's other inode: for a second the record counts as
	// busy (lookups give that inode, uncached), and the kernel keeps the name for a second.
	settle := func() { time.Sleep(1500 * time.Millisecond) }
	settle()
	cur := openCached(`{"a":1,"b":22}`)
	// truncate(2) to the record's own size: a commit of the same content, made through the record's
	// node after the version node answered ESTALE.
	watcher.must(map[string]any{"op": "truncate", "path": r, "size": 14})
	watcher.must(map[string]any{"op": "chmod", "path": r, "mode": 0o600})
	if got := watcher.must(map[string]any{"op": "stat", "path": r}).num("mode"); got != 0o600 {
		t.Errorf("stat right after chmod: mode %#o, want 0600", got)
	}
	if got := reader.must(map[string]any{"op": "read", "fd": cur}).str("data"); got != `{"a":1,"b":22}` {
		t.Errorf("read of a cached descriptor after a truncate and a chmod by path: %q", got)
	}
	// A writer that opens the record while nobody reads it is served on the version node it finds,
	// and the next reader reads the new version from the page cache.
	for _, fd := range []int64{old, cur} {
		reader.must(map[string]any{"op": "close", "fd": fd})
	}
	settle() // the truncate was turned away too
	reader.must(map[string]any{"op": "close", "fd": openCached(`{"a":1,"b":22}`)})
	rewrite(`{"a":1,"b":22,"c":333}`)
	if got := reader.must(map[string]any{"op": "cat", "path": r}).str("data"); got != `{"a":1,"b":22,"c":333}` {
		t.Errorf("read after a rewrite with no reader open: %q", got)
	}
	reader.must(map[string]any{"op": "close", "fd": openCached(`{"a":1,"b":22,"c":333}`)})
	if got := watcher.must(map[string]any{"op": "stat", "path": r}); got.num("size") != 22 || got.num("mode") != 0o600 {
		t.Errorf("stat at the end: %v, want size 22 and mode 0600", got)
	}
	// Four cached opens; the rewrite and the truncate with a cached descriptor open turned away.
	cacheCounters(t, h, d, 4, 2)
}

// TestCachedReadIsAReadOfItsVersion: a reader whose read of a record came from the page cache (another
// reader's read had filled it; no READ reached the daemon) still read that version, and its
// read-modify-write merges from it: another process's change committed in between is kept (a base
// of the record as the truncating open found it would undo that change).
func TestCachedReadIsAReadOfItsVersion(t *testing.T) {
	h, d, r := cachedReadsMount(t)
	a := h.startSession(t, "a", nil)
	b := h.startSession(t, "b", nil)
	b.put(r, `{"x": 0, "y": 0}`)
	read := func(s *session) string {
		t.Helper()
		fd, data := s.openCached(r)
		s.must(map[string]any{"op": "close", "fd": fd})
		return data
	}
	write := func(s *session, content string) { s.rewrite(r, content) }
	read(b) // fills the page cache
	if got := read(a); got != `{"x": 0, "y": 0}` {
		t.Fatalf("a read %q", got)
	}
	read(b)
	write(b, `{"x": 1, "y": 0}`)
	write(a, `{"x": 0, "y": 1}`)
	if got := b.must(map[string]any{"op": "cat", "path": r}).str("data"); got != `{"x": 1, "y": 1}` {
		t.Errorf("after both read-modify-writes the record is %q, want both changes", got)
	}
	// Both rewrites took as base the writing thread's own read, a's from its cached open: no READ of
	// a's reached the daemon, so the open recorded it.
	out, errOut, err := h.run(t, clientTimeout, bins.mergefs, "status", "--state-dir", d.stateDir)
	if err != nil {
		t.Fatalf("mergefs status: %v: %s", err, errOut)
	}
	if m := regexp.MustCompile(`(?m)^  bases from +(.*)$`).FindStringSubmatch(string(out)); m == nil || !strings.Contains(m[1], "thread=2") {
		t.Errorf("bases of the two rewrites: %q, want both from the writing thread's read (thread=2)\n%s", m, out)
	}
}

// cachedReadsMount mounts mergefs with --cache-reads and returns its daemon and the path of a
// record in it.
func cachedReadsMount(t *testing.T) (*harness, *daemon, string) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	d, err := h.mountMergefs(backing, mnt, "--cache-reads")
	h.needMount(t, err)
	return h, d, filepath.Join(mnt, "r.json")
}

// cacheCounters checks the daemon's counts of cached opens (at least minCached: the ones the test
// checked, besides other reads that were cached) and of opens turned away from them.
func cacheCounters(t *testing.T, h *harness, d *daemon, minCached, retries int) {
	t.Helper()
	c := h.waitNoOpenRecords(t, d)
	if c["cached opens"] < minCached || c["cache retries"] != retries {
		t.Errorf("mergefs status: %d cached opens, %d cache retries; want at least %d and %d",
			c["cached opens"], c["cache retries"], minCached, retries)
	}
}

// openCached opens path read-only and reads it through a shared mapping, which only a descriptor
// that reads from the page cache allows (direct I/O gives ENODEV); it returns the descriptor and
// what it read. The first open of a version is not cached: that one is closed unread, and the
// record opened again.
func (s *session) openCached(path string) (int64, string) {
	s.t.Helper()
	for attempt := 0; ; attempt++ {
		fd := s.must(map[string]any{"op": "open", "path": path, "flags": []string{"O_RDONLY"}}).num("fd")
		got := s.do(map[string]any{"op": "mmap", "fd": fd, "shared": true, "write": false})
		if got.errno() == 0 {
			return fd, got.str("data")
		}
		s.must(map[string]any{"op": "close", "fd": fd})
		if got.errno() != syscall.ENODEV || attempt > 0 {
			s.t.Fatalf("%s: shared mmap of a read-only descriptor: %v (the read is not from the page cache)", s.label, got)
		}
	}
}

// rewrite replaces path's content as json.dump(d, open(path, "w")) does.
func (s *session) rewrite(path, content string) {
	s.t.Helper()
	fd := s.must(map[string]any{"op": "open", "path": path, "flags": []string{"O_WRONLY", "O_CREAT", "O_TRUNC"}}).num("fd")
	s.must(map[string]any{"op": "write", "fd": fd, "data": content})
	s.must(map[string]any{"op": "close", "fd": fd})
}

// TestCachedReaderMappingSurvivesAWriter: a cached reader's shared mapping keeps showing its version
// while a writer holds the record open with O_TRUNC. The kernel keeps one size per inode and sets it
// to 0 at a truncating open: were the writer given the reader's inode, touching the mapping would be
// past that size, and the reader would die of SIGBUS. It is given the record's other inode.
func TestCachedReaderMappingSurvivesAWriter(t *testing.T) {
	h, d, r := cachedReadsMount(t)
	reader := h.startSession(t, "reader", nil)
	writer := h.startSession(t, "writer", nil)
	writer.rewrite(r, `{"a":1,"b":22}`)
	fd, _ := reader.openCached(r)
	m := reader.must(map[string]any{"op": "maphold", "fd": fd}).num("map")
	w := writer.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_WRONLY", "O_TRUNC"}}).num("fd")
	writer.must(map[string]any{"op": "fstat", "fd": w})
	if got := reader.do(map[string]any{"op": "mapread", "map": m}); got.str("data") != `{"a":1,"b":22}` {
		t.Fatalf("reader's mapping while a writer has the record open with O_TRUNC: %v (session: %s)", got, reader.exitStatus())
	}
	writer.must(map[string]any{"op": "write", "fd": w, "data": `{"a":1}`})
	writer.must(map[string]any{"op": "close", "fd": w})
	if got := reader.do(map[string]any{"op": "mapread", "map": m}); got.str("data") != `{"a":1,"b":22}` {
		t.Errorf("reader's mapping after the writer's commit: %v (session: %s)", got, reader.exitStatus())
	}
	reader.must(map[string]any{"op": "close", "fd": fd})
	reader.must(map[string]any{"op": "munmap", "map": m})
	cacheCounters(t, h, d, 1, 1)
}

// TestPrivateMappingOfADirectReadIsNotShownAsTheNextVersion: a private mapping of a record read
// directly fills the page cache of the record's inode with that version, also after a writer opened
// the record (the kernel drops the inode's pages at that open, and a touch of the mapping brings them
// back). Once the writer committed another version of the same size and the mapping is gone, cached
// reads must show the new version, not those pages: the node's first open of it is not cached, and
// the kernel drops the pages at that open.
func TestPrivateMappingOfADirectReadIsNotShownAsTheNextVersion(t *testing.T) {
	h, d, r := cachedReadsMount(t)
	reader := h.startSession(t, "reader", nil)
	writer := h.startSession(t, "writer", nil)
	writer.rewrite(r, `{"a":1,"b":2}`)
	fd := reader.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_RDONLY"}}).num("fd")
	m := reader.must(map[string]any{"op": "maphold", "fd": fd, "private": true}).num("map")
	w := writer.must(map[string]any{"op": "open", "path": r, "flags": []string{"O_WRONLY"}}).num("fd")
	if got := reader.must(map[string]any{"op": "mapread", "map": m}).str("data"); got != `{"a":1,"b":2}` {
		t.Fatalf("private mapping of the first version: %q", got)
	}
	writer.must(map[string]any{"op": "write", "fd": w, "data": `{"a":3,"b":4}`})
	writer.must(map[string]any{"op": "close", "fd": w})
	reader.must(map[string]any{"op": "munmap", "map": m})
	reader.must(map[string]any{"op": "close", "fd": fd})
	for i := range 2 {
		cfd, got := reader.openCached(r)
		reader.must(map[string]any{"op": "close", "fd": cfd})
		if got != `{"a":3,"b":4}` {
			t.Fatalf("cached read %d after the commit shows %q, want the committed version", i, got)
		}
	}
	cacheCounters(t, h, d, 2, 0)
}
