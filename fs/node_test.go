package fs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/merge"
)

// A record node remembers the backing file it last found carrying its identity, by device, inode,
// birth and change time, so that a GETATTR need not read the identity again; any change of the
// file's attributes (its identity among them) or another file at the name makes it read again.
func TestCheckRecordRemembersTheVerifiedFile(t *testing.T) {
	f, _, n, id := recordNodeFixture(t)
	check := func() (error, bool) {
		t.Helper()
		fd, err := unix.Openat(f.rootFD, "r.json", unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		errno := n.checkRecord(fd)
		st, err := statx(fd, "")
		if err != nil {
			t.Fatal(err)
		}
		return errno, n.verified(&st)
	}
	if err, ok := check(); err != nil || !ok {
		t.Fatalf("the record's own file: %v, remembered %v", err, ok)
	}
	// Another record's identity on the same file: its change time moves, so it is read again.
	other := backing.Identity{ID: backing.NewID(), Gen: 1}
	path := filepath.Join(f.dir, "r.json")
	if err := unix.Setxattr(path, backing.IdentityXattr, encodeIdentity(other), 0); err != nil {
		t.Fatal(err)
	}
	if err, ok := check(); err != errOtherRecord || ok {
		t.Fatalf("a file carrying another identity: %v, remembered %v; want errOtherRecord", err, ok)
	}
	// Another file at the name that carries the node's identity (the record's next version) is
	// checked and remembered in turn.
	if err := os.WriteFile(filepath.Join(f.dir, "next"), []byte(`{"a":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(f.dir, "next"), backing.IdentityXattr, encodeIdentity(id), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(f.dir, "next"), path); err != nil {
		t.Fatal(err)
	}
	if err, ok := check(); err != nil || !ok {
		t.Fatalf("the record's next version: %v, remembered %v", err, ok)
	}
}

// A commit leaves its record node knowing the file it wrote as the record's, so that the GETATTR after
// the commit is a stat of the name: the file's key must be the one a stat of it gives.
func TestCommitRemembersTheFileItLeft(t *testing.T) {
	f, dir, n, id := recordNodeFixture(t)
	stat := func() *stat {
		t.Helper()
		st, err := statx(f.rootFD, "r.json")
		if err != nil {
			t.Fatal(err)
		}
		return &st
	}
	if n.verified(stat()) {
		t.Fatal("a node that checked no file finds one verified")
	}
	cr, err := f.store.CommitAt(context.Background(), dir, "r.json", backing.Commit{
		Expect: id.ID,
		Merge:  func([]byte, bool) ([]byte, error) { return []byte(`{"a":2}`), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	n.changed(cr)
	if !n.verified(stat()) {
		t.Fatalf("the file the commit left is not remembered: result %+v, file %+v", cr, *stat())
	}
	// A change of the file since (here its attributes) makes the identity be read again.
	if err := unix.Setxattr(filepath.Join(f.dir, "r.json"), "user.x", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if n.verified(stat()) {
		t.Fatal("a file changed after the commit is still taken as verified")
	}
}

// recordNodeFixture is a record r.json at the backing root, and a node standing for it that has
// verified no file yet.
func recordNodeFixture(t *testing.T) (*testFS, backing.Dir, *node, backing.Identity) {
	t.Helper()
	f := newTestFS(t, 0)
	f.put(t, "r.json", `{"a":1}`)
	dir := backing.Dir{FD: f.rootFD, Ino: f.rootIno()}
	_, id, err := f.store.Identify(dir, "r.json")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{fsys: f.FS}
	n.recordID.Store(id.ID)
	return f, dir, n, id
}

// encodeIdentity is the identity attribute's value (backing's format: version 1, id, generation).
func encodeIdentity(id backing.Identity) []byte {
	b := make([]byte, 17)
	b[0] = 1
	for i := range 8 {
		b[1+i] = byte(id.ID >> (8 * i))
		b[9+i] = byte(id.Gen >> (8 * i))
	}
	return b
}

// Record handles use direct I/O; read-only ones, which never commit, are opened without FLUSH; a
// cached handle of a version node keeps the page cache.
func TestRecordOpenFlags(t *testing.T) {
	for _, c := range []struct {
		flags  uint32
		cached bool
		want   uint32
	}{
		{syscall.O_RDONLY, true, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH},
		{syscall.O_RDONLY, false, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH},
		{syscall.O_RDONLY | syscall.O_NONBLOCK, false, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH},
		{syscall.O_WRONLY | syscall.O_TRUNC, false, fuse.FOPEN_DIRECT_IO},
		{syscall.O_RDWR, false, fuse.FOPEN_DIRECT_IO},
		{syscall.O_WRONLY | syscall.O_APPEND, false, fuse.FOPEN_DIRECT_IO},
	} {
		if got := recordOpenFlags(c.flags, c.cached); got != c.want {
			t.Errorf("flags %#o: %#x, want %#x", c.flags, got, c.want)
		}
	}
}

// The kernel may cache a record's attributes only where they are the record's own (the same for
// everyone). A GETATTR from a process answers with the size of that process's most recently opened
// handle; if that handle is released while the GETATTR is served (RELEASE comes after close()
// returned), the handles left may all have the record's size, and the answer must still not be
// cached: it is the released handle's size, not the record's. Cached, every later stat, of any
// process, got that size for a second (Node's readFile then read a record cut short).
func TestGetattrNeverCachesAHandlesOwnSize(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	const record = `{"a":1}`
	f.put(t, "r.json", record)
	rootSt, err := statx(f.rootFD, "")
	if err != nil {
		t.Fatal(err)
	}
	raw := gofs.NewNodeFS(&node{fsys: f.FS, id: rootSt.identity()}, &gofs.Options{})
	caller := fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: uint32(os.Getpid())}
	var entry fuse.EntryOut
	if st := raw.Lookup(nil, &fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID, Caller: caller}, "r.json", &entry); !st.Ok() {
		t.Fatalf("lookup: %v", st)
	}
	getattr := func() fuse.AttrOut {
		var out fuse.AttrOut
		if st := raw.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: entry.NodeId, Caller: caller}}, &out); !st.Ok() {
			t.Fatalf("getattr: %v", st)
		}
		return out
	}
	if out := getattr(); out.Size != uint64(len(record)) || out.Timeout() == 0 {
		t.Fatalf("no handle open: size %d, timeout %v; want %d, cached", out.Size, out.Timeout(), len(record))
	}

	// This process keeps stating the record while it opens a handle, writes to it (another size than
	// the record's) and releases it.
	bad := make(chan string, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var out fuse.AttrOut
			st := raw.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: entry.NodeId, Caller: caller}}, &out)
			if st.Ok() && (out.Timeout() == 0 || out.Size == uint64(len(record))) {
				continue
			}
			bad <- fmt.Sprintf("GETATTR %d: %v, size %d may be cached for %v; the record has %d bytes", i, st, out.Size, out.Timeout(), len(record))
			return
		}
	}()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && len(bad) == 0 {
		h := f.open(t, self(), "r.json", syscall.O_RDWR)
		write(t, self(), h, " ", int64(len(record)))
		h.Release(context.Background())
	}
	close(stop)
	<-done
	select {
	case msg := <-bad:
		t.Fatal(msg)
	default:
	}
}
