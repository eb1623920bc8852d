package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

// passthroughFile is an open file that is not a record: reads and writes go straight to the backing
// file, opened as the caller. Unlike go-fuse's LoopbackFile it passes no ioctl through (the daemon's
// capabilities would apply to it), and metadata changes go through the node's Setattr, as the caller.
type passthroughFile struct {
	fd   int
	fsys *FS
	uid  uint32 // the opener, whose descriptors the budget counts
}

var (
	_ gofs.FileReader    = (*passthroughFile)(nil)
	_ gofs.FileWriter    = (*passthroughFile)(nil)
	_ gofs.FileFlusher   = (*passthroughFile)(nil)
	_ gofs.FileFsyncer   = (*passthroughFile)(nil)
	_ gofs.FileReleaser  = (*passthroughFile)(nil)
	_ gofs.FileLseeker   = (*passthroughFile)(nil)
	_ gofs.FileAllocater = (*passthroughFile)(nil)
	_ gofs.FileGetlker   = (*passthroughFile)(nil)
	_ gofs.FileSetlker   = (*passthroughFile)(nil)
	_ gofs.FileSetlkwer  = (*passthroughFile)(nil)
)

func (f *passthroughFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultFd(uintptr(f.fd), off, len(dest)), 0
}

func (f *passthroughFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := unix.Pwrite(f.fd, data, off)
	return uint32(max(n, 0)), errnoOf(err)
}

// Flush is close(): a network filesystem below may flush its write-back cache on the close of a
// descriptor, so close a duplicate (the handle itself lives until Release).
func (f *passthroughFile) Flush(ctx context.Context) syscall.Errno {
	dup, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return errnoOf(err)
	}
	return errnoOf(unix.Close(dup))
}

func (f *passthroughFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if flags&1 != 0 { // FUSE_FSYNC_FDATASYNC
		return errnoOf(unix.Fdatasync(f.fd))
	}
	return errnoOf(unix.Fsync(f.fd))
}

func (f *passthroughFile) Release(ctx context.Context) syscall.Errno {
	sysx.Close(f.fd)
	f.fsys.budget.closeFile(f.uid)
	return 0
}

func (f *passthroughFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(f.fd, int64(off), int(whence))
	return uint64(n), errnoOf(err)
}

func (f *passthroughFile) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return errnoOf(unix.Fallocate(f.fd, mode, int64(off), int64(size)))
}

// Locks are open file description locks on the backing file (as go-fuse's loopback), and flock(2)
// locks for flock requests.
func (f *passthroughFile) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	err := syscall.FcntlFlock(uintptr(f.fd), unix.F_OFD_GETLK, &flk)
	out.FromFlockT(&flk)
	return errnoOf(err)
}

func (f *passthroughFile) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.setLock(lk, flags, false)
}

func (f *passthroughFile) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.setLock(lk, flags, true)
}

func (f *passthroughFile) setLock(lk *fuse.FileLock, flags uint32, wait bool) syscall.Errno {
	if flags&fuse.FUSE_LK_FLOCK != 0 {
		var op int
		switch lk.Typ {
		case syscall.F_RDLCK:
			op = syscall.LOCK_SH
		case syscall.F_WRLCK:
			op = syscall.LOCK_EX
		case syscall.F_UNLCK:
			op = syscall.LOCK_UN
		default:
			return syscall.EINVAL
		}
		if !wait {
			op |= syscall.LOCK_NB
		}
		return errnoOf(syscall.Flock(f.fd, op))
	}
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	return errnoOf(syscall.FcntlFlock(uintptr(f.fd), cmd, &flk))
}
