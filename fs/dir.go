package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mergefs/mergefs/backing"
)

// hidingDir is a directory handle that leaves out the backing store's
// reserved entries (lock file, temporaries).
type hidingDir struct {
	inner gofs.FileHandle
}

var (
	_ gofs.FileReaddirenter = (*hidingDir)(nil)
	_ gofs.FileSeekdirer    = (*hidingDir)(nil)
	_ gofs.FileReleasedirer = (*hidingDir)(nil)
	_ gofs.FileFsyncdirer   = (*hidingDir)(nil)
)

func (d *hidingDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	r, ok := d.inner.(gofs.FileReaddirenter)
	if !ok {
		return nil, syscall.ENOTSUP
	}
	for {
		de, errno := r.Readdirent(ctx)
		if errno != 0 || de == nil || !backing.IsReserved(de.Name) {
			return de, errno
		}
	}
}

func (d *hidingDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.inner.(gofs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *hidingDir) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.inner.(gofs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (d *hidingDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if s, ok := d.inner.(gofs.FileFsyncdirer); ok {
		return s.Fsyncdir(ctx, flags)
	}
	return syscall.ENOTSUP
}

// hidingStream is the DirStream form of hidingDir.
type hidingStream struct {
	gofs.DirStream
	next    fuse.DirEntry
	pending bool
	errno   syscall.Errno
}

func (s *hidingStream) HasNext() bool {
	for !s.pending && s.errno == 0 && s.DirStream.HasNext() {
		e, errno := s.DirStream.Next()
		if errno != 0 {
			s.errno = errno
			return true
		}
		if !backing.IsReserved(e.Name) {
			s.next, s.pending = e, true
		}
	}
	return s.pending || s.errno != 0
}

func (s *hidingStream) Next() (fuse.DirEntry, syscall.Errno) {
	if s.errno != 0 {
		return fuse.DirEntry{}, s.errno
	}
	s.pending = false
	return s.next, 0
}
