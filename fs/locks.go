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
//   - every lock taken through a handle at its RELEASE (the last close of the open file): flock and
//     OFD locks, and POSIX locks taken through a read-only record handle, which gets no FLUSH.
// RELEASE ends only the locks taken through its handle: it comes after the close that caused it has
// returned, and by then the process may have taken new locks through another descriptor.

var (
	_ gofs.NodeGetlker  = (*node)(nil)
	_ gofs.NodeSetlker  = (*node)(nil)
	_ gofs.NodeSetlkwer = (*node)(nil)
	_ gofs.NodeFlusher  = (*node)(nil)
	_ gofs.NodeReleaser = (*node)(nil)
)

// fileLocks is the daemon's lock table and the handles locks were taken through.
type fileLocks struct {
	table locks.Table
	mu    sync.Mutex
	// handles numbers the handles that took locks (locks.Lock.Via), until their RELEASE.
	handles map[gofs.FileHandle]uint64
	last    uint64
}

// maxLocksPerUser bounds the locks one user holds on the mount (more get ENOLCK): each is a range
// the daemon keeps in memory, about 60 bytes. The kernel, when it keeps them, bounds them by
// kernel memory only; databases take a few locks per file.
const maxLocksPerUser = 1 << 16

func newFileLocks() *fileLocks {
	l := &fileLocks{handles: make(map[gofs.FileHandle]uint64)}
	l.table.MaxPerUser = maxLocksPerUser
	return l
}

// via is f's number, given at its first lock.
func (l *fileLocks) via(f gofs.FileHandle) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.handles[f]
	if !ok {
		l.last++
		id = l.last
		l.handles[f] = id
	}
	return id
}

// released forgets f and returns its number, if it took locks.
func (l *fileLocks) released(f gofs.FileHandle) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.handles[f]
	delete(l.handles, f)
	return id, ok
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
	if want.Type != unix.F_UNLCK && f != nil {
		want.Via = l.via(f)
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
		if id, ok := l.released(f); ok {
			l.table.UnlockVia(n.lockKey(0), id)
			l.table.UnlockVia(n.lockKey(fuse.FUSE_LK_FLOCK), id)
		}
	}
	if r, ok := f.(gofs.FileReleaser); ok {
		return r.Release(ctx)
	}
	return 0
}
