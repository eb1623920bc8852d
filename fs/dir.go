package fs

import (
	"context"
	"encoding/binary"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/sysx"
)

// dirHandle is an open directory: the backing directory opened as the caller, listed with getdents.
// It leaves out the backing store's reserved entries (lock file, temporaries) and reports a record's
// identity as its inode number, as stat does.
type dirHandle struct {
	fsys *FS
	fd   int
	uid  uint32 // the opener, whose descriptors the budget counts
	buf  []byte
	// pending entries of buf[off:n]
	off, n int
	err    syscall.Errno
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	dir, closeDir, errno := n.openDir()
	if errno != 0 {
		return nil, 0, errno
	}
	defer closeDir()
	c := n.fsys.callerOf(ctx)
	if errno := n.fsys.holdFile(c); errno != 0 {
		return nil, 0, errno
	}
	// Reopened through /proc, not as "." in it: reading a directory takes read permission on it, and
	// a lookup of "." would take search permission as well.
	var fd int
	err := sysx.AsUser(c.cred(), func() error {
		var err error
		fd, err = sysx.Reopen(dir.FD, unix.O_RDONLY|unix.O_DIRECTORY)
		return err
	})
	if err != nil {
		n.fsys.budget.closeFile(c.uid)
		return nil, 0, errnoOf(err)
	}
	return &dirHandle{fsys: n.fsys, fd: fd, uid: c.uid, buf: make([]byte, 16<<10)}, 0, 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	for {
		if d.off >= d.n {
			n, err := unix.Getdents(d.fd, d.buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return nil, errnoOf(err)
			}
			if n <= 0 {
				return nil, 0
			}
			d.off, d.n = 0, n
		}
		// struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
		rec := d.buf[d.off:d.n]
		ino := binary.NativeEndian.Uint64(rec[0:])
		off := binary.NativeEndian.Uint64(rec[8:])
		reclen := int(binary.NativeEndian.Uint16(rec[16:]))
		typ := rec[18]
		name := rec[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		d.off += reclen
		s := string(name)
		if backing.IsReserved(s) {
			continue
		}
		e := &fuse.DirEntry{Name: s, Ino: ino, Off: off, Mode: uint32(typ) << 12}
		if (typ == unix.DT_REG || typ == unix.DT_UNKNOWN) && d.fsys.isRecordName(s) {
			if id, err := backing.ReadIdentity(sysx.ProcChild(d.fd, s), true); err == nil {
				e.Ino = id.ID
			}
		}
		return e, 0
	}
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.off, d.n = 0, 0
	_, err := unix.Seek(d.fd, int64(off), 0)
	return errnoOf(err)
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return errnoOf(unix.Fsync(d.fd))
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	sysx.Close(d.fd)
	d.fsys.budget.closeFile(d.uid)
}
