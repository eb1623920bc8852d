package mount_test

import (
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestFileLocks: fcntl and flock locks on a record exclude each other between processes as on a
// local file. With cached reads (the default) a reader from the page cache and a writer turned
// away from it are on two kernel inodes of the record, so the daemon keeps the locks (the kernel's
// own would not see each other: the writer's lock would be granted). With --cache-reads=false the
// kernel keeps them: the same steps check that both agree.
func TestFileLocks(t *testing.T) { forCacheModes(t, testFileLocks) }

func testFileLocks(t *testing.T, flags ...string) {
	h := newHarness(t)
	mnt := h.path("mnt")
	d, err := h.mountMergefs(h.path("backing"), mnt, flags...)
	h.needMount(t, err)
	r := filepath.Join(mnt, "r.json")
	reader := h.startSession(t, "reader", nil)
	writer := h.startSession(t, "writer", nil)
	writer.put(r, `{"a":1}`)
	open := func(s *session, flag string) int64 {
		t.Helper()
		return s.must(map[string]any{"op": "open", "path": r, "flags": []string{flag}}).num("fd")
	}
	lock := func(s *session, fd int64, typ string, extra ...any) reply {
		t.Helper()
		cmd := map[string]any{"op": "lock", "fd": fd, "type": typ}
		for i := 0; i+1 < len(extra); i += 2 {
			cmd[extra[i].(string)] = extra[i+1]
		}
		return s.do(cmd)
	}
	refused := func(what string, got reply) {
		t.Helper()
		if e := got.errno(); e != syscall.EAGAIN && e != syscall.EACCES {
			t.Errorf("%s: %v, want EAGAIN (a conflicting lock is held)", what, got)
		}
	}

	cached := !slices.Contains(flags, "--cache-reads=false")
	var rfd int64
	if !cached {
		rfd = open(reader, "O_RDONLY")
	} else {
		rfd, _ = reader.openCached(r) // from the page cache, on a version node
	}
	if got := lock(reader, rfd, "r"); got.errno() != 0 {
		t.Fatalf("reader's read lock: %v", got)
	}
	wfd := open(writer, "O_RDWR")
	refused("a write lock while another process holds a read lock", lock(writer, wfd, "w"))
	if got := writer.must(map[string]any{"op": "getlk", "fd": wfd, "type": "w"}); got.str("type") != "r" || got.num("pid") != int64(reader.pid) {
		t.Errorf("F_GETLK: %v, want the reader's read lock (pid %d)", got, reader.pid)
	}
	// flock locks exclude each other, and do not see fcntl locks.
	writer.must(map[string]any{"op": "flock", "fd": wfd, "how": "ex", "nb": true})
	if got := reader.do(map[string]any{"op": "flock", "fd": rfd, "how": "sh", "nb": true}); got.errno() != syscall.EWOULDBLOCK {
		t.Errorf("flock(LOCK_SH|LOCK_NB) while another process holds LOCK_EX: %v, want EWOULDBLOCK", got)
	}
	writer.must(map[string]any{"op": "flock", "fd": wfd, "how": "un"})
	reader.must(map[string]any{"op": "flock", "fd": rfd, "how": "sh", "nb": true})

	// F_SETLKW waits until the reader's close ends its lock.
	waiting := writer.start(map[string]any{"op": "lock", "fd": wfd, "type": "w", "wait": true})
	if waiting.answeredWithin(300 * time.Millisecond) {
		t.Fatalf("F_SETLKW returned %v while the reader held a read lock", waiting.reply())
	}
	if cached { // the daemon's table: the reader's fcntl and flock locks
		if got := h.status(t, d)["file locks"]; got != 2 {
			t.Errorf("mergefs status: %d file locks, want 2", got)
		}
	}
	reader.must(map[string]any{"op": "close", "fd": rfd})
	if got := waiting.reply(); got.errno() != 0 {
		t.Fatalf("F_SETLKW after the reader closed: %v", got)
	}
	if got := writer.do(map[string]any{"op": "flock", "fd": wfd, "how": "ex", "nb": true}); got.errno() != 0 {
		t.Fatalf("flock(LOCK_EX|LOCK_NB) after the reader closed its descriptor with LOCK_SH: %v", got)
	}
	writer.must(map[string]any{"op": "flock", "fd": wfd, "how": "un"})

	// Under its lock the writer rewrites the record; a reader waiting for a lock is interrupted by
	// a signal (EINTR), and gets it once the writer's close has committed and unlocked.
	writer.must(map[string]any{"op": "write", "fd": wfd, "data": `{"a":2}`})
	rfd = open(reader, "O_RDONLY")
	if got := lock(reader, rfd, "r", "wait", true, "interrupt_after", 0.3); got.errno() != syscall.EINTR {
		t.Errorf("F_SETLKW interrupted by a signal: %v, want EINTR", got)
	}
	writer.must(map[string]any{"op": "close", "fd": wfd})
	reader.must(map[string]any{"op": "close", "fd": rfd})
	rfd = open(reader, "O_RDONLY")
	if got := lock(reader, rfd, "r"); got.errno() != 0 {
		t.Fatalf("read lock after the writer closed: %v", got)
	}
	if got := reader.must(map[string]any{"op": "read", "fd": rfd}).str("data"); got != `{"a":2}` {
		t.Errorf("read under the lock: %q, want the writer's commit", got)
	}
	reader.must(map[string]any{"op": "lock", "fd": rfd, "type": "u"})

	// A close of any of a process's descriptors of the file ends its fcntl locks: of a writable one
	// (FLUSH names the process), and without cached reads of a read-only one (with them, the
	// kernel sends the daemon no FLUSH for it: README, Limitations).
	fd1 := open(writer, "O_RDWR")
	others := []string{"O_RDWR"}
	if !cached {
		others = append(others, "O_RDONLY")
	}
	for _, other := range others {
		writer.must(map[string]any{"op": "lock", "fd": fd1, "type": "w"})
		refused("a read lock while another process holds a write lock", lock(reader, rfd, "r"))
		writer.must(map[string]any{"op": "close", "fd": open(writer, other)})
		if got := lock(reader, rfd, "r"); got.errno() != 0 {
			t.Fatalf("read lock after the writer closed another descriptor of the file (%s): %v", other, got)
		}
		reader.must(map[string]any{"op": "lock", "fd": rfd, "type": "u"})
	}

	// A lock taken after a close outlives the release of the closed descriptor's open file, which
	// a forked child held until it exited: the release ends only what was taken through it.
	fdr := open(writer, "O_RDONLY")
	writer.must(map[string]any{"op": "lock", "fd": fdr, "type": "r"})
	child := writer.must(map[string]any{"op": "fork"}).num("child")
	writer.must(map[string]any{"op": "close", "fd": fdr})
	writer.must(map[string]any{"op": "lock", "fd": fd1, "type": "w"})
	openNow := h.status(t, d)["open records"]
	writer.must(map[string]any{"op": "reap", "child": child})
	h.waitOpenRecords(t, d, openNow-1) // the child's exit released fdr's open file
	refused("a read lock after the release of an open file the lock holder closed earlier", lock(reader, rfd, "r"))
	writer.must(map[string]any{"op": "lock", "fd": fd1, "type": "u"})

	// Locks belong to the file, not to a version of it: a commit by a third process keeps them.
	writer.must(map[string]any{"op": "lock", "fd": fd1, "type": "w", "start": 2, "len": 3})
	h.startSession(t, "third", nil).rewrite(r, `{"a":2,"b":3}`)
	refused("a lock over another's range after a commit", lock(reader, rfd, "r", "start", 4, "len", 1))
	if got := lock(reader, rfd, "r", "start", 5, "len", 0); got.errno() != 0 {
		t.Errorf("a lock past another's range: %v", got)
	}
}
