package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/backing"
)

// otherAttrTimeout is how long the kernel may cache attributes of anything
// that is not a record. Records get zero: their size depends on who asks.
const otherAttrTimeout = time.Second

// node is a loopback node that serves records through recordHandle and
// hides the backing store's reserved files.
type node struct {
	*gofs.LoopbackNode
	fsys *FS
	// lastPath is where the node was last seen in the tree. A rename over
	// a record detaches the old record's node, yet a process that looked
	// the name up just before still opens that node: it means the record
	// by that name, which is where its commit must go.
	lastPath atomic.Pointer[string]
}

var (
	_ gofs.NodeWrapChilder    = (*node)(nil)
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeReaddirer      = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeStatxer        = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeLinker         = (*node)(nil)
)

func (n *node) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*gofs.LoopbackNode), fsys: n.fsys}
}

// relPath is the node's path relative to the backing root: its place in
// the tree, or where it was last seen if it has been detached.
func (n *node) relPath() string {
	if n.IsRoot() {
		return ""
	}
	if _, parent := n.Parent(); parent == nil {
		if last := n.lastPath.Load(); last != nil {
			return *last
		}
	}
	p := n.Path(n.Root())
	if strings.HasPrefix(p, orphanPrefix) {
		// Detached while the path was walked (a rename in flight).
		if last := n.lastPath.Load(); last != nil {
			return *last
		}
		return p
	}
	if last := n.lastPath.Load(); last == nil || *last != p {
		n.lastPath.Store(&p)
	}
	return p
}

// orphanPrefix starts the placeholder path go-fuse's Inode.Path gives a
// node that has no way up to the root.
const orphanPrefix = ".go-fuse."

// backingPath is the node's path in the backing directory.
func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.relPath())
}

func (n *node) childPath(name string) string {
	return path.Join(n.relPath(), name)
}

// isRecord reports whether this node is a record now: a regular file whose
// current name matches the record patterns.
func (n *node) isRecord() bool {
	if n.IsRoot() || n.StableAttr().Mode&syscall.S_IFMT != syscall.S_IFREG {
		return false
	}
	name, parent := n.Parent()
	if parent == nil {
		last := n.lastPath.Load()
		if last == nil {
			return false
		}
		name = path.Base(*last)
	}
	return n.fsys.isRecordName(name)
}

// remember notes where a record node was seen, so that it can still be
// found as that record after it is detached.
func (n *node) remember(child *gofs.Inode, name string) {
	if c, ok := child.Operations().(*node); ok && n.fsys.isRecordName(name) {
		p := n.childPath(name)
		c.lastPath.Store(&p)
	}
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, syscall.ENOENT
	}
	child, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno != 0 {
		return nil, errno
	}
	if out.Attr.Mode&syscall.S_IFMT == syscall.S_IFREG && n.fsys.isRecordName(name) {
		n.remember(child, name)
		out.SetAttrTimeout(0)
	} else {
		out.SetAttrTimeout(otherAttrTimeout)
	}
	return child, 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &hidingDir{inner: fh}, fuseFlags, 0
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ds, errno := n.LoopbackNode.Readdir(ctx)
	if errno != 0 {
		return nil, errno
	}
	return &hidingStream{DirStream: ds}, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if !n.isRecord() {
		return n.LoopbackNode.Open(ctx, flags)
	}
	record := n.relPath()
	c := n.fsys.callerOf(ctx)
	current, _, err := n.fsys.store.Read(record)
	exists := err == nil
	if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		n.fsys.log.Error("cannot read record at open", "record", record,
			"pid", c.proc.pid, "comm", c.comm, "uid", c.uid, "err", err)
		return nil, 0, errnoOf(err)
	}
	if !exists && n.fsys.ownHandle(record, c.proc) == nil {
		// Only the creating process knows a record it has not committed.
		// Anyone else reached a name the kernel still caches (a create
		// whose commit failed, a record removed by another mount): ESTALE
		// makes the kernel look the name up again, and an O_CREAT open
		// then creates it.
		return nil, 0, syscall.ESTALE
	}
	h := n.fsys.openRecordHandle(record, flags, c, current, exists, n.newRecordAttrs(c, 0o644))
	return h, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) newRecordAttrs(c caller, mode uint32) newRecord {
	return newRecord{mode: mode & 0o7777, uid: int(c.uid), gid: int(c.gid)}
}

// Create of a record does not create the backing file: the record comes
// into being at its first commit, so no reader sees it empty. An exclusive
// create (mkstemp) reserves the name with an empty file, which is what its
// caller relies on; commits treat an empty file as no record.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, nil, 0, syscall.EPERM
	}
	if !n.fsys.isRecordName(name) {
		child, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
		if errno == 0 {
			out.SetAttrTimeout(otherAttrTimeout)
		}
		return child, fh, fuseFlags, errno
	}
	if flags&syscall.O_EXCL != 0 {
		return n.createExclusiveRecord(ctx, name, flags, mode, out)
	}

	record := n.childPath(name)
	current, _, err := n.fsys.store.Read(record)
	exists := err == nil
	if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return nil, nil, 0, errnoOf(err)
	}
	c := n.fsys.callerOf(ctx)
	attrs := n.newRecordAttrs(c, mode)
	if exists {
		var st syscall.Stat_t
		if err := syscall.Lstat(path.Join(n.RootData.Path, record), &st); err != nil {
			return nil, nil, 0, gofs.ToErrno(err)
		}
		out.FromStat(&st)
	} else {
		fillNewRecordAttr(&out.Attr, attrs, 0, time.Now())
	}
	h := n.fsys.openRecordHandle(record, flags, c, current, exists, attrs)
	if h.written {
		out.Attr.Size = uint64(len(h.content))
	}
	// Ino 0: an automatic inode number. Every commit gives the backing
	// record a new inode anyway; records are known by path.
	child := n.NewInode(ctx, &gofs.LoopbackNode{RootData: n.RootData}, gofs.StableAttr{Mode: syscall.S_IFREG})
	n.remember(child, name)
	out.SetAttrTimeout(0)
	return child, h, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) createExclusiveRecord(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	// Let the loopback create the empty file with the caller's owner,
	// then serve it as a record.
	child, fh, _, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if r, ok := fh.(gofs.FileReleaser); ok {
		r.Release(ctx)
	}
	n.remember(child, name)
	c := n.fsys.callerOf(ctx)
	h := n.fsys.openRecordHandle(n.childPath(name), flags&^syscall.O_TRUNC, c, nil, false, n.newRecordAttrs(c, mode))
	out.SetAttrTimeout(0)
	return child, h, fuse.FOPEN_DIRECT_IO, 0
}

func fillNewRecordAttr(a *fuse.Attr, attrs newRecord, size uint64, now time.Time) {
	a.Mode = syscall.S_IFREG | attrs.mode
	a.Nlink = 1
	a.Uid, a.Gid = uint32(attrs.uid), uint32(attrs.gid)
	a.Size = size
	a.Blksize = 4096
	a.SetTimes(&now, &now, &now)
}

// Getattr of a record reports the caller's own view: the size of its own
// open handle (dirty first), else the backing file. The bridge may pass
// another process's handle here, so f is not trusted.
func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if !n.isRecord() {
		if errno := n.LoopbackNode.Getattr(ctx, f, out); errno != 0 {
			return errno
		}
		out.SetTimeout(otherAttrTimeout)
		return 0
	}
	record := n.relPath()
	var own *recordHandle
	if n.fsys.hasOpen(record) {
		own = n.fsys.ownHandle(record, n.fsys.callerOf(ctx).proc)
	}
	var st syscall.Stat_t
	err := syscall.Lstat(filepath.Join(n.RootData.Path, record), &st)
	switch {
	case err == nil:
		out.FromStat(&st)
	case err == syscall.ENOENT && own != nil:
		fillNewRecordAttr(&out.Attr, own.create, 0, time.Now())
	case err == syscall.ENOENT:
		// The kernel still caches the name (see Open): ESTALE makes a
		// path-based caller look it up again instead of failing.
		return syscall.ESTALE
	default:
		return gofs.ToErrno(err)
	}
	if own != nil {
		size := own.size()
		out.Size = uint64(size)
		out.Blocks = uint64(size+511) / 512
	}
	out.SetTimeout(0)
	return 0
}

// Statx would bypass Getattr's per-caller sizes; ENOSYS makes the kernel
// fall back to GETATTR for the whole mount.
func (n *node) Statx(ctx context.Context, f gofs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if !n.isRecord() {
		if errno := n.LoopbackNode.Setattr(ctx, f, in, out); errno != 0 {
			return errno
		}
		out.SetTimeout(otherAttrTimeout)
		return 0
	}
	if err := setBackingAttrs(n.backingPath(), in); err != nil && !(err == syscall.ENOENT && f != nil) {
		return gofs.ToErrno(err)
	}
	if size, hasSize := in.GetSize(); hasSize {
		var errno syscall.Errno
		if h, ok := f.(*recordHandle); ok {
			errno = h.truncate(ctx, size)
		} else {
			errno = n.truncateRecord(ctx, size)
		}
		if errno != 0 {
			return errno
		}
	}
	return n.Getattr(ctx, f, out)
}

// setBackingAttrs applies mode, owner and times of a record to the backing
// file; its size is the handle's business.
func setBackingAttrs(p string, in *fuse.SetAttrIn) error {
	if mode, ok := in.GetMode(); ok {
		if err := syscall.Chmod(p, mode&0o7777); err != nil {
			return err
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		suid, sgid := -1, -1
		if uok {
			suid = int(uid)
		}
		if gok {
			sgid = int(gid)
		}
		if err := unix.Fchownat(unix.AT_FDCWD, p, suid, sgid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	atime, aok := in.GetATime()
	mtime, mok := in.GetMTime()
	if !aok && !mok {
		return nil
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if aok {
		ts[0] = unix.NsecToTimespec(atime.UnixNano())
	}
	if mok {
		ts[1] = unix.NsecToTimespec(mtime.UnixNano())
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// truncateRecord is truncate(2) by path: a commit of the record cut (or
// zero-extended) to size, which must still be a valid record.
func (n *node) truncateRecord(ctx context.Context, size uint64) syscall.Errno {
	record := n.relPath()
	current, _, err := n.fsys.store.Read(record)
	if err != nil {
		return errnoOf(err)
	}
	if size == uint64(len(current)) {
		return 0
	}
	if size > uint64(n.fsys.maxRecordSize()) {
		return syscall.EFBIG
	}
	mine := make([]byte, size)
	copy(mine, current)
	c := n.fsys.callerOf(ctx)
	errno, _ := n.fsys.commit(commitRequest{
		record: record, writer: c, trigger: "truncate",
		base: &version{data: current}, baseFrom: baseHandle, mine: mine,
	})
	return errno
}

// Rename onto a record name merges the source's content into the record
// (the replace-by-rename pattern of legacy workers); other renames pass
// through.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if backing.IsReserved(name) || backing.IsReserved(newName) {
		return syscall.EPERM
	}
	dstDir, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	src := n.childPath(name)
	dst := dstDir.childPath(newName)
	child := n.GetChild(name)
	var errno syscall.Errno
	if flags == 0 && n.fsys.isRecordName(newName) && child != nil &&
		child.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFREG {
		errno = n.renameOntoRecord(ctx, src, dst)
	} else if errno = n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); errno == 0 {
		n.fsys.reads.forget(src)
	}
	if errno == 0 && child != nil && flags&unix.RENAME_EXCHANGE == 0 {
		// The moved node may be detached by the next rename onto the
		// same name before anything asks for its path.
		if moved, ok := child.Operations().(*node); ok {
			moved.lastPath.Store(&dst)
		}
	}
	return errno
}

func (n *node) renameOntoRecord(ctx context.Context, src, dst string) syscall.Errno {
	mine, _, err := n.fsys.store.Read(src)
	if err != nil {
		return errnoOf(err)
	}
	c := n.fsys.callerOf(ctx)
	base, from := n.fsys.reads.lookup(dst, c.thread, c.proc)
	errno, _ := n.fsys.commit(commitRequest{
		record: dst, writer: c, trigger: "rename",
		base: base, baseFrom: from, baseIsTheirs: base == nil,
		mine: mine, sync: true, source: src,
		create: n.newRecordAttrs(c, 0o644),
	})
	if errno != 0 {
		return errno
	}
	n.fsys.reads.forget(src)
	n.fsys.reads.remember(dst, c.thread, c.proc, &version{data: mine})
	return 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if backing.IsReserved(name) {
		return syscall.ENOENT
	}
	errno := n.LoopbackNode.Unlink(ctx, name)
	if errno == 0 {
		n.fsys.reads.forget(n.childPath(name))
	}
	return errno
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, syscall.EPERM
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, syscall.EPERM
	}
	return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, syscall.EPERM
	}
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, syscall.EPERM
	}
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func errnoOf(err error) syscall.Errno {
	if errno, ok := errors.AsType[syscall.Errno](err); ok && errno != 0 {
		return errno
	}
	return syscall.EIO
}

func fuseCaller(ctx context.Context) (*fuse.Caller, bool) {
	return fuse.FromContext(ctx)
}
