package fs

import (
	"context"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/sysx"
)

// Extended attributes are read and changed as the caller, on the node's own object (a record as it is
// now, under its lock when changed: a commit copies every attribute to the record's next version).
// mergefs's own attributes (the record identity) are neither shown nor changeable through the mount.

// ownXattr reports whether name is one of mergefs's own attributes.
func ownXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.mergefs.")
}

// xattrTarget opens the node's object for an attribute call (O_PATH, checked) and returns its /proc
// path; lock takes the record lock for a change. Symlinks have no attributes mergefs reaches.
func (n *node) xattrTarget(ctx context.Context, lock bool) (string, func(), syscall.Errno) {
	if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return "", nil, syscall.ENOTSUP
	}
	if !n.isRecord() {
		fd, closeFD, errno := n.openPath()
		if errno != 0 {
			return "", nil, errno
		}
		return sysx.ProcPath(fd), closeFD, 0
	}
	loc, errno := n.locate()
	if errno != 0 {
		return "", nil, errno
	}
	unlock := func() {}
	if lock {
		u, err := n.fsys.store.LockRecords(ctx, backing.RecordRef{Dir: loc.dir, Name: loc.name})
		if err != nil {
			loc.close()
			return "", nil, errnoOf(err)
		}
		unlock = u
	}
	fd, err := n.openOwnRecord(loc.dir.FD, loc.name)
	if err != nil {
		unlock()
		loc.close()
		return "", nil, ownRecordErrno(err)
	}
	return sysx.ProcPath(fd), func() { sysx.Close(fd); unlock(); loc.close() }, 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if ownXattr(attr) {
		return 0, syscall.ENODATA
	}
	p, done, errno := n.xattrTarget(ctx, false)
	if errno == syscall.ENOTSUP {
		return 0, syscall.ENODATA
	}
	if errno != 0 {
		return 0, errno
	}
	defer done()
	var size int
	err := sysx.AsUser(n.fsys.callerOf(ctx).cred(), func() error {
		var err error
		size, err = unix.Getxattr(p, attr, dest)
		return err
	})
	return uint32(max(size, 0)), errnoOf(err)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	p, done, errno := n.xattrTarget(ctx, false)
	if errno == syscall.ENOTSUP {
		return 0, 0
	}
	if errno != 0 {
		return 0, errno
	}
	defer done()
	buf := make([]byte, sysx.XattrListMax)
	var size int
	err := sysx.AsUser(n.fsys.callerOf(ctx).cred(), func() error {
		var err error
		size, err = unix.Listxattr(p, buf)
		return err
	})
	if err != nil {
		return 0, errnoOf(err)
	}
	var list []byte
	for _, name := range strings.Split(string(buf[:size]), "\x00") {
		if name != "" && !ownXattr(name) {
			list = append(append(list, name...), 0)
		}
	}
	if len(dest) == 0 {
		return uint32(len(list)), 0
	}
	if len(list) > len(dest) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if ownXattr(attr) {
		return syscall.EPERM
	}
	p, done, errno := n.xattrTarget(ctx, true)
	if errno == syscall.ENOTSUP {
		return syscall.EPERM
	}
	if errno != 0 {
		return errno
	}
	defer done()
	errno = errnoOf(sysx.AsUser(n.fsys.callerOf(ctx).cred(), func() error {
		return unix.Setxattr(p, attr, data, int(flags))
	}))
	if errno == 0 {
		// An ACL changes the mode the kernel may cache for the record's version node.
		n.fsys.versionChanged(n.recordID.Load())
	}
	return errno
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if ownXattr(attr) {
		return syscall.EPERM
	}
	p, done, errno := n.xattrTarget(ctx, true)
	if errno == syscall.ENOTSUP {
		return syscall.ENODATA
	}
	if errno != 0 {
		return errno
	}
	defer done()
	errno = errnoOf(sysx.AsUser(n.fsys.callerOf(ctx).cred(), func() error {
		return unix.Removexattr(p, attr)
	}))
	if errno == 0 {
		// An ACL changes the mode the kernel may cache for the record's version node.
		n.fsys.versionChanged(n.recordID.Load())
	}
	return errno
}
