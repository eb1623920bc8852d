package fs

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/event"
)

// recordHandle is one open handle on a record: the record as it was at open
// plus this handle's own writes, which reach the backing store only at a
// commit point (FLUSH from a process that wrote, fsync).
type recordHandle struct {
	fsys *FS
	// target finds the record in the backing store at commit time (its node).
	target recordTarget
	// record is the record's path at open, for read tracking and logs.
	record string
	append bool
	// ver is the version node the handle was opened on (nil: none), cached whether it reads
	// through the kernel's page cache (versions.go).
	ver    *versionNode
	cached bool
	opener caller
	create newRecord

	mu sync.Mutex
	// view is what this handle reads. It is immutable while unwritten: a
	// version shared with the read tracker. The first write takes a private
	// copy into content.
	view    *version
	content []byte
	written bool // content, not view, holds the handle's data
	// length is len(data()), set under mu, read without it (stat of the record: node.Getattr).
	length atomic.Int64
	// refused says why a write was refused since the last commit (past the size limit, or the
	// budget): what is buffered is then not what the writer meant, and the commit fails.
	refused string
	// charged is what content's capacity is charged to the opener's budget; view is charged as a
	// snapshot while it is not nil.
	charged int64
	dirty   bool // not yet committed
	// atOpen is the record as this handle opened it (or last committed it): a candidate for the
	// base of its commit, of the kind atOpenFrom (Handle without O_TRUNC, else Fallback).
	atOpen     *version
	atOpenFrom event.Base
	writers    map[procKey]struct{} // processes that wrote since the last commit
	readers    map[uint32]struct{}  // threads already remembered as readers of view
	lastTID    uint32               // last writing thread and its process, to skip /proc
	lastProc   procKey
	// expect is the identity of the record this handle is on (backing.Commit.Expect); 0 while the
	// handle's record is new and not committed yet.
	expect uint64
}

// recordTarget is where a handle's record is: its node, or in tests a fixed place.
type recordTarget interface {
	// locate opens the record's directory and names the record in it.
	locate() (location, syscall.Errno)
	// newID is the identity a new record gets at its first commit.
	newID() uint64
	// adopt notes the identity the record has after a commit (another creator's, for a new record).
	adopt(id uint64)
	// changed notes that a commit changed the record: what the kernel caches of it is stale, and the
	// file the commit left carries the record's identity.
	changed(cr backing.CommitResult)
}

func (n *node) newID() uint64 { return n.recordID.Load() }

func (n *node) adopt(id uint64) { n.recordID.Store(id) }

// fixedPlace is a record target that is one name in one directory.
type fixedPlace struct {
	dir  backing.Dir
	name string
	path string
	id   uint64
}

func (f *fixedPlace) locate() (location, syscall.Errno) {
	return location{dir: f.dir, name: f.name, close: func() {}}, 0
}

func (f *fixedPlace) newID() uint64 { return f.id }

func (f *fixedPlace) adopt(id uint64) { f.id = id }

func (f *fixedPlace) changed(backing.CommitResult) {}

// newRecord is the mode and owner a commit gives a record it creates.
type newRecord struct {
	mode     uint32
	uid, gid uint32
}

var (
	_ gofs.FileReader   = (*recordHandle)(nil)
	_ gofs.FileWriter   = (*recordHandle)(nil)
	_ gofs.FileFlusher  = (*recordHandle)(nil)
	_ gofs.FileFsyncer  = (*recordHandle)(nil)
	_ gofs.FileReleaser = (*recordHandle)(nil)
)

// openRecordHandle opens a handle on the record current (exists: it is there; expect: its identity,
// 0 for a new record). The base of the handle's commits is chosen at each commit, from what was
// written (FS.chooseBase).
//
// The snapshot counts against the opener's budget: past it the open fails with ENOMEM.
func (fsys *FS) openRecordHandle(target recordTarget, record string, expect uint64, flags uint32, c caller, current []byte, exists bool, create newRecord) (*recordHandle, syscall.Errno) {
	var view *version
	if exists {
		view = fsys.history.share(expect, current)
	}
	return fsys.openRecordView(target, record, expect, flags, c, view, create)
}

// snapshotView is the version an open of record id that found sn serves: known itself when the store
// found known's file unchanged (reused: nothing was read), else the version shared by every open of
// what was read, now known to be in sn's file.
func (fsys *FS) snapshotView(id uint64, sn *backing.Snapshot, reused bool, known *version) *version {
	if reused {
		return known
	}
	v := fsys.history.share(id, sn.Data)
	v.stored.Store(&storedFile{version: sn.Version(), identity: sn.Identity})
	return v
}

// openRecordView is openRecordHandle with the snapshot's version (nil: no record).
func (fsys *FS) openRecordView(target recordTarget, record string, expect uint64, flags uint32, c caller, view *version, create newRecord) (*recordHandle, syscall.Errno) {
	exists := view != nil
	var current []byte
	if exists {
		current = view.data
	}
	h := &recordHandle{
		fsys:    fsys,
		target:  target,
		record:  record,
		expect:  expect,
		append:  flags&syscall.O_APPEND != 0,
		opener:  c,
		create:  create,
		writers: make(map[procKey]struct{}),
		readers: make(map[uint32]struct{}),
	}
	if exists {
		if errno := fsys.budget.holdSnapshot(c.uid, view, false); errno != 0 {
			fsys.warnLimit("snapshots", c, "record open refused (ENOMEM): the user's or the mount's budget for record content is used up (--max-buffered)",
				"record", record, "size", len(current), "limit", limitName(errno))
			return nil, syscall.ENOMEM
		}
		h.view = view
		h.atOpen, h.atOpenFrom = h.view, event.Handle
	}
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if writable && flags&syscall.O_TRUNC != 0 {
		h.atOpenFrom = event.Fallback
		// A rewrite is usually about as long as what was read: one
		// allocation instead of growing by doubling under the writes.
		hint := min(len(current), fsys.maxRecordSize())
		if fsys.budget.charge(c.uid, int64(hint), false) != 0 {
			hint = 0
		}
		h.charged = int64(hint)
		h.content = make([]byte, 0, hint)
		// The truncation alone makes no writer: a shell's "> r.json"
		// dup2()s (a FLUSH) before it writes, and closing a rewrite that
		// wrote nothing leaves the record as it is rather than empty.
		h.written, h.dirty = true, true
	}
	h.lastTID, h.lastProc = c.thread.pid, c.proc
	h.length.Store(int64(len(h.data())))
	fsys.addOpen(h)
	return h, 0
}

// data is what the handle reads now; call with h.mu held.
func (h *recordHandle) data() []byte {
	if h.written {
		return h.content
	}
	if h.view == nil {
		return nil
	}
	return h.view.data
}

func (h *recordHandle) size() int64 {
	return h.length.Load()
}

// fresh reports whether the handle's record is new and not committed yet.
func (h *recordHandle) fresh() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.expect == 0
}

func (h *recordHandle) isDirty() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dirty
}

func (h *recordHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.written && h.view != nil {
		h.rememberReader(ctx)
	}
	data := h.data()
	if off >= int64(len(data)) {
		return fuse.ReadResultData(nil), 0
	}
	if !h.written {
		// A view is immutable (the first write copies it), so the reply
		// can be sent from it directly.
		end := min(off+int64(len(dest)), int64(len(data)))
		return replyBytes(data[off:end]), 0
	}
	// Copy: a later write may change content in place while the reply is
	// still being sent.
	n := copy(dest, data[off:])
	return replyBytes(dest[:n]), 0
}

// replyBytes is a READ reply of b: go-fuse writes it to the kernel with the reply's header in one
// writev. Its ReadResultData would first be tried for a splice, which bytes in memory cannot take:
// three system calls lost per READ (the header written into a pipe, drained, the pipe checked).
func replyBytes(b []byte) fuse.ReadResult { return fuse.ReadResultVector([][]byte{b}) }

// rememberReader records that the reading thread (and its process) saw
// h.view, once per thread per handle.
func (h *recordHandle) rememberReader(ctx context.Context) {
	fc, ok := fuse.FromContext(ctx)
	if !ok {
		return
	}
	if _, seen := h.readers[fc.Pid]; seen {
		return
	}
	h.readers[fc.Pid] = struct{}{}
	c := h.fsys.callerOf(ctx)
	h.fsys.history.read(h.expect, c.thread, c.proc, h.view)
}

// rememberOpener records that the opening thread saw h.view: a cached handle's reads are served by
// the kernel's page cache, which READs reach only for pages not cached yet.
func (h *recordHandle) rememberOpener(c caller) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.readers[c.thread.pid] = struct{}{}
	h.fsys.history.read(h.expect, c.thread, c.proc, h.view)
}

func (h *recordHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.append {
		off = int64(len(h.data()))
	}
	end := off + int64(len(data))
	if off < 0 || end > int64(h.fsys.maxRecordSize()) {
		h.refuse(ctx, syscall.EFBIG)
		return 0, syscall.EFBIG
	}
	if errno := h.setLen(max(int(end), len(h.data()))); errno != 0 {
		h.refuse(ctx, errno)
		return 0, errno
	}
	copy(h.content[off:], data)
	h.markWriter(ctx)
	return uint32(len(data)), 0
}

// truncate sets the handle's size (ftruncate).
func (h *recordHandle) truncate(ctx context.Context, size uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if size > uint64(h.fsys.maxRecordSize()) {
		h.refuse(ctx, syscall.EFBIG)
		return syscall.EFBIG
	}
	if errno := h.setLen(int(size)); errno != 0 {
		h.refuse(ctx, errno)
		return errno
	}
	h.markWriter(ctx)
	return 0
}

// setLen gives the handle a private copy of its data, n bytes long; bytes
// past the old end read as zeros, as in a sparse file. Growing the copy is
// charged to the opener's budget: past it, nothing changes and the errno
// (EDQUOT, ENOSPC) says which bound.
func (h *recordHandle) setLen(n int) syscall.Errno {
	if !h.written {
		src := h.data()
		capacity := max(len(src), n)
		if errno := h.grow(int64(capacity)); errno != 0 {
			return errno
		}
		h.content = make([]byte, len(src), capacity)
		copy(h.content, src)
		h.written = true
	}
	defer func() { h.length.Store(int64(len(h.content))) }()
	old := len(h.content)
	if n <= old {
		h.content = h.content[:n]
		return 0
	}
	if n > cap(h.content) {
		capacity := max(n, 2*cap(h.content))
		if h.grow(int64(capacity)) != 0 {
			// Not the doubling, then: exactly what is needed.
			capacity = n
			if errno := h.grow(int64(capacity)); errno != 0 {
				return errno
			}
		}
		grown := make([]byte, old, capacity)
		copy(grown, h.content)
		h.content = grown
	}
	h.content = h.content[:n]
	clear(h.content[old:])
	return 0
}

// grow charges the opener's budget for content of capacity bytes.
func (h *recordHandle) grow(capacity int64) syscall.Errno {
	if capacity <= h.charged {
		return 0
	}
	if errno := h.fsys.budget.charge(h.opener.uid, capacity-h.charged, false); errno != 0 {
		return errno
	}
	h.charged = capacity
	return 0
}

// uncharge releases what content is charged, as it is dropped.
func (h *recordHandle) uncharge() {
	h.fsys.budget.release(h.opener.uid, h.charged)
	h.charged = 0
}

// refuse marks the handle's content as not what the writer meant (a write
// past the size limit or the budget was refused): its commit fails (EIO at
// close) instead of committing a prefix or silently nothing.
func (h *recordHandle) refuse(ctx context.Context, errno syscall.Errno) {
	if errno != syscall.EFBIG {
		h.fsys.budget.refusedBuf.Add(1)
		h.fsys.warnLimit("buffers", h.opener, "write to a record refused ("+errno.Error()+"): the user's or the mount's budget for record content is used up",
			"record", h.record, "limit", limitName(errno))
	}
	if h.refused == "" {
		switch errno {
		case syscall.EFBIG:
			h.refused = fmt.Sprintf("writes past the record size limit (%d bytes) were refused", h.fsys.maxRecordSize())
		case syscall.EDQUOT:
			h.refused = "writes past the user's share of the buffer budget (--max-buffered-per-user) were refused"
		default:
			h.refused = "writes past the mount's buffer budget (--max-buffered) were refused"
		}
	}
	h.markWriter(ctx)
}

func (h *recordHandle) markWriter(ctx context.Context) {
	h.dirty = true
	fc, ok := fuse.FromContext(ctx)
	if ok && fc.Pid == h.lastTID {
		h.writers[h.lastProc] = struct{}{}
		return
	}
	c := h.fsys.callerOf(ctx)
	h.lastTID, h.lastProc = c.thread.pid, c.proc
	h.writers[c.proc] = struct{}{}
}

// Flush is close(): commit only if the closing process wrote through this
// handle, so a forked child or an exec dropping inherited descriptors
// commits nothing.
func (h *recordHandle) Flush(ctx context.Context) syscall.Errno {
	errno, committed := h.flush(ctx)
	if n, ok := h.target.(*node); ok && committed {
		n.renewVersion()
	}
	return errno
}

func (h *recordHandle) flush(ctx context.Context) (errno syscall.Errno, committed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dirty {
		return 0, false
	}
	c, ok := h.flusher(ctx)
	if !ok {
		return 0, false
	}
	errno = h.commitLocked(c, event.Close, false)
	return errno, errno == 0
}

// flusher identifies the task closing the handle and reports whether it
// belongs to a process that wrote through it and is not being killed. It
// reads only /proc/<tid>/status: an execve that closes close-on-exec
// descriptors sends FLUSH while /proc/<tid>/stat waits for that execve.
// A process is matched by pid alone here; to hold this descriptor a
// recycled pid would have to have inherited it, after the writer's own
// close had already committed.
func (h *recordHandle) flusher(ctx context.Context) (caller, bool) {
	fc, ok := fuseCaller(ctx)
	if !ok {
		return caller{}, false
	}
	var status taskStatus
	if fc.Pid != 0 {
		var err error
		if status, err = h.fsys.callers.status(fc.Pid); err != nil {
			h.fsys.log.Warn("cannot identify a closing task; nothing committed", "record", h.record, "tid", fc.Pid, "err", err)
			return caller{}, false
		}
	}
	var writer procKey
	found := false
	for w := range h.writers {
		if w.pid == status.tgid {
			writer, found = w, true
			break
		}
	}
	if !found {
		return caller{}, false
	}
	c, cached := h.fsys.callers.peek(fc.Pid)
	if !cached || c.proc != writer {
		c = caller{thread: procKey{pid: fc.Pid}, proc: writer, comm: status.name}
	}
	c.uid, c.gid, c.groups = fc.Uid, fc.Gid, status.groups
	if status.dying() {
		h.fsys.log.Warn("writer was killed before closing; its uncommitted writes are dropped",
			"record", h.record, "pid", c.proc.pid, "comm", c.comm, "uid", c.uid)
		h.dirty = false
		clear(h.writers)
		return caller{}, false
	}
	return c, true
}

// Fsync commits whatever is buffered, durably, whoever asks.
func (h *recordHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dirty {
		// What this handle committed earlier (at a close of a dup'ed
		// descriptor, say) may not be on stable storage yet.
		return h.fsys.syncRecord(h.target, h.record)
	}
	return h.commitLocked(h.fsys.callerOf(ctx), event.Fsync, true)
}

// Release never commits: a handle whose last close sent no FLUSH belonged
// to a process that was killed, and its half-written content is dropped.
func (h *recordHandle) Release(ctx context.Context) syscall.Errno {
	h.fsys.removeOpen(h)
	if h.ver != nil {
		n, _ := h.target.(*node)
		h.ver.release(h.cached, n.dropVersion)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.uncharge()
	h.fsys.budget.dropSnapshot(h.opener.uid, h.view)
	switch {
	case h.dirty && len(h.writers) == 0:
		h.fsys.log.Warn("record opened for rewriting (O_TRUNC) and closed without a write; the record is unchanged",
			"record", h.record, "pid", h.opener.proc.pid, "comm", h.opener.comm, "uid", h.opener.uid)
	case h.dirty:
		h.fsys.log.Debug("dropped uncommitted writes", "record", h.record,
			"pid", h.opener.proc.pid, "comm", h.opener.comm, "uid", h.opener.uid)
	}
	return 0
}

// commitLocked merges the handle's content into the record. On success the
// committed content becomes the handle's view, a candidate for its next
// commit's base, and what the writer now believes the record to be.
func (h *recordHandle) commitLocked(c caller, trigger event.Trigger, sync bool) syscall.Errno {
	mine := h.data()
	if mine == nil {
		mine = []byte{}
	}
	errno, final, res, committed := h.fsys.commitResult(commitRequest{
		target:  h.target,
		record:  h.record,
		expect:  h.expect,
		newID:   h.target.newID(),
		writer:  c,
		trigger: trigger,
		bases:   h.fsys.history.candidates(h.expect, c.thread, c.proc, h.atOpen, h.atOpenFrom),
		mine:    mine,
		sync:    sync,
		create:  h.create,
		refused: h.refused,
	})
	if errno != 0 && !final {
		return errno
	}
	h.dirty, h.refused = false, ""
	clear(h.writers)
	if errno != 0 {
		return errno
	}
	if h.expect != res.Identity.ID {
		h.expect = res.Identity.ID
		h.target.adopt(res.Identity.ID)
	}
	// The content the handle held becomes its snapshot: charged as one now.
	h.fsys.budget.holdSnapshot(h.opener.uid, committed, true)
	h.fsys.budget.dropSnapshot(h.opener.uid, h.view)
	h.uncharge()
	h.view, h.content, h.written = committed, nil, false
	h.length.Store(int64(len(committed.data)))
	h.atOpen, h.atOpenFrom = committed, event.OwnCommit
	clear(h.readers)
	h.fsys.history.committed(h.expect, c.thread, c.proc, committed)
	return 0
}
