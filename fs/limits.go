package fs

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits bound what the daemon holds for the users of a mount, mount-wide and per user, so that one
// user (with --allow-other, any user of the host) cannot exhaust it for the others.
type Limits struct {
	// MaxBuffered bounds the record content held for open record handles: their snapshots (a version
	// held by several handles of one user counts once for that user) and their buffered writes.
	// MaxBufferedPerUser is one user's share of it.
	MaxBuffered, MaxBufferedPerUser int64
	// MaxOpen bounds the descriptors the daemon holds for open files and directories that are not
	// records; MaxOpenPerUser is one user's share. 0: no bound.
	MaxOpen, MaxOpenPerUser int
}

// budget accounts for what Limits bound.
type budget struct {
	limits Limits

	mu          sync.Mutex
	bytes       int64
	bytesByUID  map[uint32]int64
	snapshots   map[snapshotKey]int // handles of a user holding a version
	files       int
	filesByUID  map[uint32]int
	peakBytes   int64
	refusedBuf  atomic.Uint64 // writes refused: buffers past the budget
	refusedSnap atomic.Uint64 // opens refused: snapshots past the budget
	refusedFile atomic.Uint64 // opens refused: descriptors past the limit
}

type snapshotKey struct {
	uid uint32
	v   *version
}

func newBudget(l Limits) *budget {
	return &budget{limits: l, bytesByUID: make(map[uint32]int64), snapshots: make(map[snapshotKey]int),
		filesByUID: make(map[uint32]int)}
}

// charge reserves n bytes for uid: EDQUOT past the user's share, ENOSPC past the mount-wide budget
// (nothing is reserved then). force reserves whatever the bounds (content already held that changes
// form, a commit's result becoming the handle's snapshot).
func (b *budget) charge(uid uint32, n int64, force bool) syscall.Errno {
	if n <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !force {
		if b.limits.MaxBufferedPerUser > 0 && b.bytesByUID[uid]+n > b.limits.MaxBufferedPerUser {
			return syscall.EDQUOT
		}
		if b.limits.MaxBuffered > 0 && b.bytes+n > b.limits.MaxBuffered {
			return syscall.ENOSPC
		}
	}
	b.bytes += n
	b.bytesByUID[uid] += n
	b.peakBytes = max(b.peakBytes, b.bytes)
	return 0
}

func (b *budget) release(uid uint32, n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.releaseLocked(uid, n)
}

func (b *budget) releaseLocked(uid uint32, n int64) {
	b.bytes -= n
	if left := b.bytesByUID[uid] - n; left > 0 {
		b.bytesByUID[uid] = left
	} else {
		delete(b.bytesByUID, uid)
	}
}

// holdSnapshot charges uid for a handle holding v, once per user and version.
func (b *budget) holdSnapshot(uid uint32, v *version, force bool) syscall.Errno {
	if v == nil {
		return 0
	}
	b.mu.Lock()
	k := snapshotKey{uid, v}
	if b.snapshots[k] > 0 {
		b.snapshots[k]++
		b.mu.Unlock()
		return 0
	}
	b.mu.Unlock()
	if errno := b.charge(uid, int64(len(v.data)), force); errno != 0 {
		b.refusedSnap.Add(1)
		return errno
	}
	b.mu.Lock()
	if b.snapshots[k]++; b.snapshots[k] > 1 {
		// Another handle of the user took it meanwhile: it is charged once.
		b.releaseLocked(uid, int64(len(v.data)))
	}
	b.mu.Unlock()
	return 0
}

func (b *budget) dropSnapshot(uid uint32, v *version) {
	if v == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	k := snapshotKey{uid, v}
	if b.snapshots[k]--; b.snapshots[k] <= 0 {
		delete(b.snapshots, k)
		b.releaseLocked(uid, int64(len(v.data)))
	}
}

// openFile counts a descriptor held for uid: EMFILE past the user's share or the mount's limit.
func (b *budget) openFile(uid uint32) syscall.Errno {
	b.mu.Lock()
	defer b.mu.Unlock()
	if (b.limits.MaxOpenPerUser > 0 && b.filesByUID[uid] >= b.limits.MaxOpenPerUser) ||
		(b.limits.MaxOpen > 0 && b.files >= b.limits.MaxOpen) {
		b.refusedFile.Add(1)
		return syscall.EMFILE
	}
	b.files++
	b.filesByUID[uid]++
	return 0
}

func (b *budget) closeFile(uid uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.files--
	if b.filesByUID[uid]--; b.filesByUID[uid] <= 0 {
		delete(b.filesByUID, uid)
	}
}

// LimitStats are the current use of the limits and the refusals so far.
type LimitStats struct {
	Limits
	Buffered, PeakBuffered int64
	OpenFiles              int
	RefusedWrites          uint64 // writes refused with ENOSPC or EDQUOT
	RefusedSnapshots       uint64 // record opens refused with ENOMEM
	RefusedFiles           uint64 // opens refused with EMFILE
}

func (b *budget) stats() LimitStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return LimitStats{Limits: b.limits, Buffered: b.bytes, PeakBuffered: b.peakBytes, OpenFiles: b.files,
		RefusedWrites: b.refusedBuf.Load(), RefusedSnapshots: b.refusedSnap.Load(), RefusedFiles: b.refusedFile.Load()}
}

// holdFile counts a descriptor the daemon is about to hold for the caller; past the caller's share or
// the mount's limit the open fails with EMFILE.
func (fsys *FS) holdFile(c caller) syscall.Errno {
	errno := fsys.budget.openFile(c.uid)
	if errno != 0 {
		fsys.warnLimit("files", c, "open refused: the user's or the mount's share of the daemon's descriptors is used up (--max-open-per-user)")
	}
	return errno
}

// limitLogInterval is how often a refusal by one limit is logged per user at most: a user hitting a
// limit in a loop must not fill the log.
const limitLogInterval = time.Minute

type limitLogKey struct {
	kind string
	uid  uint32
}

// warnLimit logs a refusal by a limit, at most once per limitLogInterval per kind and user (the
// metrics count them all).
func (fsys *FS) warnLimit(kind string, c caller, msg string, args ...any) {
	now := fsys.now()
	k := limitLogKey{kind, c.uid}
	if last, ok := fsys.limitLogged.Load(k); ok && now.Sub(last.(time.Time)) < limitLogInterval {
		return
	}
	fsys.limitLogged.Store(k, now)
	fsys.log.Warn(msg, append([]any{"pid", c.proc.pid, "comm", c.comm, "uid", c.uid}, args...)...)
}

// limitName names the flag behind a budget refusal.
func limitName(errno syscall.Errno) string {
	if errno == syscall.EDQUOT {
		return "--max-buffered-per-user"
	}
	return "--max-buffered"
}
