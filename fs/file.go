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
