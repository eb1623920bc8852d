package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/locks"
)

// File locks (flock, fcntl, lockf). The kernel keeps them per kernel inode unless the filesystem
// takes them over. With cached reads a record can have several kernel inodes at once (versions.go:
// readers from the page cache on a version node, a writer turned away to the record's own node), so
// the daemon keeps the locks of the whole mount instead, in one table keyed by the inode number
// (a record's id, the same on all its inodes); docs/design.md, "File locks".
//
// The kernel asks for a lock with the owner it stands for: the process's file table for POSIX
// locks, the open file for flock and OFD locks. Those locks end, as the kernel would end them:
//   - an owner's POSIX locks on a file at each FLUSH of that file by the owner (a close(2) of any of
//     its descriptors of the file);
//   - every lock taken through a handle at its RELEASE (the last close of the open file: flock and
//     OFD locks, and POSIX locks taken through a read-only record handle, which gets no FLUSH);
//   - at the RELEASE of a read-only record handle, the POSIX locks of the process that opened it:
//     its close of that descriptor (a FLUSH the daemon did not get) ends them.

var (
	_ gofs.NodeGetlker  = (*node)(nil)
	_ gofs.NodeSetlker  = (*node)(nil)
	_ gofs.NodeSetlkwer = (*node)(nil)
	_ gofs.NodeFlusher  = (*node)(nil)
	_ gofs.NodeReleaser = (*node)(nil)
)

// fileLocks is the daemon's lock table and which handles locks were taken through.
type fileLocks struct {
	table locks.Table
	mu    sync.Mutex
	// through lists, per handle, the locks to end at its RELEASE.
	through map[gofs.FileHandle][]lockUse
}

type lockUse struct {
	key   locks.Key
	owner uint64
}

// maxLocksPerUser bounds the locks one user holds on the mount (more get ENOLCK): each is a range
// the daemon keeps in memory, about 50 bytes. The kernel, when it keeps them, bounds them by
// kernel memory only; databases take a few locks per file.
const maxLocksPerUser = 1 << 16

func newFileLocks() *fileLocks {
	l := &fileLocks{through: make(map[gofs.FileHandle][]lockUse)}
	l.table.MaxPerUser = maxLocksPerUser
	return l
}

// used records that owner locked k through f.
func (l *fileLocks) used(f gofs.FileHandle, k locks.Key, owner uint64) {
	if f == nil {
		return
	}
	u := lockUse{k, owner}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, have := range l.through[f] {
		if have == u {
			return
		}
	}
	l.through[f] = append(l.through[f], u)
}

// released ends the locks taken through f.
func (l *fileLocks) released(f gofs.FileHandle) {
	l.mu.Lock()
	uses := l.through[f]
	delete(l.through, f)
	l.mu.Unlock()
	for _, u := range uses {
		l.table.Unlock(u.key, u.owner)
	}
}

func (n *node) lockKey(flags uint32) locks.Key {
	return locks.Key{File: n.StableAttr().Ino, Flock: flags&fuse.FUSE_LK_FLOCK != 0}
}

func lockOf(ctx context.Context, owner uint64, lk *fuse.FileLock) (locks.Lock, syscall.Errno) {
	switch lk.Typ {
	case unix.F_RDLCK, unix.F_WRLCK, unix.F_UNLCK:
	default:
		return locks.Lock{}, syscall.EINVAL
	}
	if lk.Start > lk.End || lk.End > locks.MaxOffset {
		return locks.Lock{}, syscall.EINVAL
	}
	want := locks.Lock{Owner: owner, Pid: lk.Pid, Type: lk.Typ, Start: lk.Start, End: lk.End}
	if fc, ok := fuseCaller(ctx); ok {
		want.Uid = fc.Uid
	}
	return want, 0
}

// Getlk answers F_GETLK: a lock of another owner in the way of lk, else F_UNLCK.
func (n *node) Getlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	if n.fsys.locks == nil {
		return syscall.ENOTSUP
	}
	want, errno := lockOf(ctx, owner, lk)
	if errno != 0 {
		return errno
	}
	if c, ok := n.fsys.locks.table.Conflict(n.lockKey(flags), want); ok {
		*out = fuse.FileLock{Start: c.Start, End: c.End, Typ: c.Type, Pid: c.Pid}
		return 0
	}
	*out = fuse.FileLock{Start: lk.Start, End: lk.End, Typ: unix.F_UNLCK}
	return 0
}

// Setlk takes or gives up a lock without waiting for other owners (F_SETLK, LOCK_NB): EAGAIN if
// one holds a conflicting lock past releaseWait. The wait is for releases in flight: the kernel
// sends RELEASE, which ends flock locks, after the close(2) that meant it has returned.
func (n *node) Setlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return n.setlk(ctx, f, owner, lk, flags, false)
}

// Setlkw takes a lock, waiting while other owners hold conflicting ones (F_SETLKW, flock without
// LOCK_NB) until the caller is interrupted (EINTR). A cycle of waiters is not detected (no EDEADLK).
func (n *node) Setlkw(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return n.setlk(ctx, f, owner, lk, flags, true)
}

func (n *node) setlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, wait bool) syscall.Errno {
	l := n.fsys.locks
	if l == nil {
		return syscall.ENOTSUP
	}
	want, errno := lockOf(ctx, owner, lk)
	if errno != 0 {
		return errno
	}
	k := n.lockKey(flags)
	if want.Type != unix.F_UNLCK {
		l.used(f, k, owner)
	}
	err := l.table.TryLock(k, want)
	if err == locks.ErrConflict {
		waitFor, stop := ctx, func() {}
		if !wait {
			waitFor, stop = context.WithTimeout(ctx, releaseWait)
		}
		err = l.table.Lock(waitFor, k, want)
		stop()
		if err != nil && ctx.Err() != nil {
			return syscall.EINTR
		}
	}
	switch err {
	case nil:
		return 0
	case locks.ErrTooMany:
		n.fsys.warnLimit("locks", n.fsys.callerOf(ctx), "file lock refused (ENOLCK): the user holds too many", "limit", maxLocksPerUser)
		return syscall.ENOLCK
	}
	return syscall.EAGAIN
}

// Flush passes a close(2) on to the handle (a record's commit point) and then ends the closing
// owner's POSIX locks on the file, as a close of any of its descriptors of a file does.
func (n *node) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	var errno syscall.Errno
	if fl, ok := f.(gofs.FileFlusher); ok {
		errno = fl.Flush(ctx)
	}
	if l := n.fsys.locks; l != nil {
		if owner := n.fsys.request(ctx).lockOwner; owner != 0 {
			l.table.Unlock(n.lockKey(0), owner)
		}
	}
	return errno
}

// Release ends the locks taken through the handle and passes the release on to it.
func (n *node) Release(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	if l := n.fsys.locks; l != nil {
		l.released(f)
		if h, ok := f.(*recordHandle); ok && h.readOnly {
			n.closedWithoutFlush(l, h)
		}
	}
	if r, ok := f.(gofs.FileReleaser); ok {
		return r.Release(ctx)
	}
	return 0
}

// closedWithoutFlush ends the POSIX locks on n of the process that opened h, a handle that gets no
// FLUSH, at its RELEASE: the opener's close of it. (RELEASE names no task; were the descriptor
// shared with another process that closed it last, the opener's locks would end then, not at its
// own close.)
func (n *node) closedWithoutFlush(l *fileLocks, h *recordHandle) {
	if pid := h.opener.proc.pid; pid != 0 {
		l.table.UnlockProcess(n.lockKey(0), pid)
	}
}
