package fs

import (
	"context"
	"errors"
	iofs "io/fs"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/internal/sysx"
)

// otherAttrTimeout is how long the kernel may cache attributes of anything that is not a record.
const otherAttrTimeout = time.Second

// recordAttrTimeout is how long the kernel may cache a record's attributes while every handle open on
// it has the record's own size (node.Getattr), so that everyone's stat is the same; the daemon
// invalidates them when a commit changes the record. Otherwise, and where other hosts may change
// records (--multi-host), it is zero: a record's size then depends on who asks.
const recordAttrTimeout = time.Second

var (
	_ gofs.NodeStatfser       = (*node)(nil)
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeStatxer        = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeLinker         = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeRmdirer        = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeGetxattrer     = (*node)(nil)
	_ gofs.NodeSetxattrer     = (*node)(nil)
	_ gofs.NodeRemovexattrer  = (*node)(nil)
	_ gofs.NodeListxattrer    = (*node)(nil)
)

// isRecord reports whether this node is a record now: a regular file that was a record when the
// kernel learned of it, under a name that matches the record patterns.
func (n *node) isRecord() bool {
	if n.recordID.Load() == 0 {
		return false
	}
	name, parent := n.Parent()
	if parent == nil {
		l := n.last.Load()
		if l == nil {
			return false
		}
		name = l.name
	}
	return n.fsys.isRecordName(name)
}

// isRegular reports whether the node is a regular file.
func (n *node) isRegular() bool {
	return n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFREG
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st unix.Statfs_t
	if err := unix.Fstatfs(n.fsys.rootFD, &st); err != nil {
		return errnoOf(err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize = uint32(st.Bsize), uint32(st.Frsize)
	out.NameLen = uint32(st.Namelen)
	return 0
}

// Lookup finds name in directory n. A regular file whose name matches the record patterns is a record:
// its node is its record identity (given one if it has none yet), and a record that shares its inode
// with other names (hard links made outside mergefs) first gets an inode of its own.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, syscall.ENOENT
	}
	dir, closeDir, errno := n.openDir()
	if errno != 0 {
		return nil, errno
	}
	defer closeDir()
	st, err := statx(dir.FD, name)
	if err != nil {
		if err == unix.ENOENT {
			if child := n.uncommittedChild(ctx, name); child != nil {
				return child.entry(ctx, out)
			}
		}
		return nil, errnoOf(err)
	}
	if st.fileType() == syscall.S_IFREG && n.fsys.isRecordName(name) {
		return n.lookupRecord(ctx, dir, name, out)
	}
	return n.register(ctx, dir, name, &st, out)
}

// register makes the node for a backing object that is not a record, found or made as name in dir.
func (n *node) register(ctx context.Context, dir backing.Dir, name string, st *stat, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	child := n.newChild(name, st, 0)
	if st.fileType() == syscall.S_IFLNK {
		target, err := readlinkat(dir.FD, name)
		if err != nil {
			return nil, staleIfGone(err)
		}
		child.target.Store(&target)
	}
	fillAttr(&out.Attr, &st.Stat_t)
	out.SetAttrTimeout(otherAttrTimeout)
	inode := n.NewInode(ctx, child, child.stableAttr(st.Mode))
	if existing, ok := inode.Operations().(*node); ok && existing != child && existing.target.Load() == nil {
		existing.target.Store(child.target.Load())
	}
	return inode, 0
}

func readlinkat(dirfd int, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		k, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return nil, err
		}
		if k < len(buf) {
			return buf[:k], nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

func (n *node) lookupRecord(ctx context.Context, dir backing.Dir, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	for attempt := 0; ; attempt++ {
		st, id, err := n.fsys.store.Identify(dir, name)
		if err != nil {
			return nil, errnoOf(err)
		}
		if st.Nlink > 1 && attempt == 0 {
			n.splitRecord(ctx, dir, name)
			continue
		}
		child := &node{fsys: n.fsys}
		child.recordID.Store(id.ID)
		child.last.Store(&place{parent: n, name: name})
		var replaced *versionNode
		if n.versionLookup(ctx, id.ID) {
			child.ver, replaced = n.fsys.versions.node(id.ID, &st)
		}
		inode := n.NewInode(ctx, child, child.stableAttr(syscall.S_IFREG))
		existing, _ := inode.Operations().(*node)
		if existing != nil && existing != child {
			existing.last.Store(&place{parent: n, name: name})
		}
		if child.ver != nil && existing != nil {
			child.ver.kernel.CompareAndSwap(nil, existing)
		}
		if replaced != nil {
			replaced.kernel.Load().invalidateAttrs()
		}
		fillAttr(&out.Attr, &st)
		out.Ino = id.ID
		out.SetAttrTimeout(0)
		return inode, 0
	}
}

// versionLookup reports whether a lookup of record id gives a version node: when reads are cached,
// unless the caller's thread is retrying an open that a version node answered ESTALE or the record
// is busy (versions.go).
func (n *node) versionLookup(ctx context.Context, id uint64) bool {
	vs := n.fsys.versions
	if vs == nil {
		return false
	}
	var tid uint32
	if fc, ok := fuseCaller(ctx); ok {
		tid = fc.Pid
	}
	return !vs.recordNode(id, tid)
}

// splitRecord gives a record with several hard links an inode of its own (backing.Store.Split) and
// logs that once per record.
func (n *node) splitRecord(ctx context.Context, dir backing.Dir, name string) {
	p, _ := n.relPath()
	record := joinPath(p, name)
	split, err := n.fsys.store.Split(ctx, dir, name)
	switch {
	case err != nil:
		n.fsys.log.Error("cannot give a hard-linked record an inode of its own", "record", record, "err", err)
	case split:
		if _, seen := n.fsys.linkWarned.LoadOrStore(record, struct{}{}); !seen {
			n.fsys.log.Warn("record had several hard links; it now has an inode of its own (records are known by name, and a commit replaces the file)", "record", record)
		}
	}
}

// uncommittedChild is the node of a record created by the caller's process and not committed yet, which
// only that process may see.
func (n *node) uncommittedChild(ctx context.Context, name string) *node {
	if !n.fsys.isRecordName(name) {
		return nil
	}
	child := n.childNode(name)
	if child == nil {
		return nil
	}
	p, _ := n.relPath()
	if h := n.fsys.ownHandle(joinPath(p, name), n.fsys.callerOf(ctx).proc); h != nil && h.fresh() {
		return child
	}
	return nil
}

// childNode is go-fuse's child of n by name, or nil.
func (n *node) childNode(name string) *node {
	ch := n.GetChild(name)
	if ch == nil {
		return nil
	}
	c, _ := ch.Operations().(*node)
	return c
}

// entry fills out for an existing child node and returns its inode.
func (n *node) entry(ctx context.Context, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	var a fuse.AttrOut
	if errno := n.Getattr(ctx, nil, &a); errno != 0 {
		return nil, errno
	}
	out.Attr = a.Attr
	out.SetAttrTimeout(a.Timeout())
	return n.EmbeddedInode(), 0
}

// Getattr of a record reports the caller's own view. The kernel names a handle only when it refreshes
// attributes for an open file itself (lseek to the end); then it is that handle's size, its snapshot
// plus its writes. Otherwise (stat, and fstat too: the kernel does not say which descriptor) it is the
// size of the caller process's most recently opened handle on the record, if it has one (Node's
// readFile reads exactly fstat's size of the descriptor it just opened), else the record's as an open
// would see it now. Anything else is the backing object's own attributes: through an open handle of
// it if there is one (a file removed while open has no name left to find it by).
//
// A record's attributes may be cached by the kernel (recordAttrTimeout) when the answer is the same
// for everyone: the record exists and every handle open on it has its size (docs/design.md, "Kernel
// caches").
func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if !n.isRecord() {
		if fd := handleFD(f); fd >= 0 {
			st, err := statx(fd, "")
			if err != nil {
				return errnoOf(err)
			}
			fillAttr(&out.Attr, &st.Stat_t)
		} else if errno := n.statSelf(&out.Attr); errno != 0 {
			return errno
		}
		out.SetTimeout(otherAttrTimeout)
		return 0
	}
	req := n.fsys.request(ctx)
	h, _ := f.(*recordHandle)
	if !req.namedFH {
		h = nil // go-fuse's stand-in (the node's first open handle), not the caller's
	}
	cacheable := n.fsys.cacheRecordAttrs
	if cacheable {
		// Before anything is looked at: a change made from now on invalidates what this answer
		// lets the kernel cache (invalidateAttrs).
		n.attrsCached.Store(true)
	}
	record := n.recordPath()
	if h == nil && n.fsys.hasOpen(record) {
		h = n.fsys.ownHandle(record, n.fsys.callerOf(ctx).proc)
	}
	st, errno := n.statRecord()
	if v := n.ver; v != nil {
		found := &st
		if errno != 0 {
			found = nil
		}
		if v.versionAttrs(found) {
			return n.versionGetattr(v, found, out)
		}
	}
	if n.fsys.versions != nil {
		// With version nodes the record has several kernel inodes: only a version node's own
		// attributes are cached, where every change to the record invalidates them.
		cacheable = false
	}
	switch {
	case errno == 0:
		fillAttr(&out.Attr, &st)
	case (errno == syscall.ENOENT || errno == syscall.ESTALE) && h != nil:
		fillNewRecordAttr(&out.Attr, h.create, 0, time.Now())
	case errno == syscall.ENOENT:
		// The kernel still caches the name (a create whose commit failed, a record removed by
		// another mount): ESTALE makes a path-based caller look it up again instead of failing.
		return syscall.ESTALE
	default:
		return errno
	}
	if h != nil {
		size := h.size()
		out.Size = uint64(size)
		out.Blocks = uint64(size+511) / 512
	}
	out.Ino = n.recordID.Load()
	if out.Ino != n.StableAttr().Ino {
		req.ino = out.Ino
		cacheable = false
	}
	// Only the record's own size may be cached, never a handle's: the handle found above may have
	// been released since (RELEASE comes after the close() that caused it), leaving handles that
	// all have the record's size, while this answer is still the released handle's.
	if cacheable && errno == 0 && int64(out.Size) == st.Size && n.fsys.uniform(record, st.Size) {
		if _, parent := n.Parent(); parent != nil {
			n.cachedKey.Store(&attrKey{ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim})
			out.SetTimeout(recordAttrTimeout)
			return 0
		}
	}
	out.SetTimeout(0)
	return 0
}

// attrKey is what a record's cached attributes were made from: its backing file's inode, size and
// times.
type attrKey struct {
	ino          uint64
	size         int64
	mtime, ctime unix.Timespec
}

// versionGetattr answers a GETATTR of a version node that may be cached: its version's attributes,
// whoever asks. The record's backing file (found, nil if none), if it is still that version, gives
// them, and the kernel may cache them until the record changes (FS.versionChanged); otherwise the
// version's attributes as the node took them, not cached.
func (n *node) versionGetattr(v *versionNode, found *unix.Stat_t, out *fuse.AttrOut) syscall.Errno {
	vst, key, _ := v.attrs()
	current := found != nil && contentKeyOf(found) == key
	if current {
		fillAttr(&out.Attr, found)
	} else {
		fillAttr(&out.Attr, &vst)
	}
	out.Ino = n.recordID.Load()
	out.SetTimeout(0)
	if _, parent := n.Parent(); current && parent != nil {
		n.cachedKey.Store(&attrKey{ino: found.Ino, size: found.Size, mtime: found.Mtim, ctime: found.Ctim})
		out.SetTimeout(recordAttrTimeout)
	}
	return 0
}

// dropVersion makes the kernel drop the attributes of this version node it may cache, before the
// node shows another version (versionNode.release). Its pages need no call: the kernel drops an
// inode's pages at every open not answered FOPEN_KEEP_CACHE, and the first open of a version on a
// node never is (openReader). The drop used to invalidate the pages too, which cost every
// read-modify-write cycle a notification and the GETATTR it caused (docs/design.md, "Kernel caches").
func (n *node) dropVersion() {
	n.invalidateAttrs()
	n.cachedKey.Store(nil)
}

// renewVersion makes the kernel look the record's name up again at its next use, after a commit by
// close through the record's own node (a writer sent there by a version node's ESTALE): the lookup
// gives a version node again, whose reads the page cache may keep.
// Only from a FLUSH: the kernel locks the directory to drop the name, so never from a request that
// holds that lock (a rename onto a record commits too).
func (n *node) renewVersion() {
	if n.fsys.versions == nil || n.ver != nil || n.fsys.versions.isBusy(n.recordID.Load()) {
		// A version node shows the new version itself once its writer's handle is released; a
		// busy record stays on its own node until its lookups give version nodes again.
		return
	}
	name, parent := n.Parent()
	if parent == nil {
		l := n.last.Load()
		if l == nil {
			return
		}
		name, parent = l.name, l.parent.EmbeddedInode()
	}
	parent.NotifyEntry(name)
}

// metadataChanged tells the record's version nodes that its mode, owner or times changed through
// mergefs: the same version, with new attributes (a new modification time included).
func (n *node) metadataChanged() {
	vs := n.fsys.versions
	if vs == nil {
		return
	}
	id := n.recordID.Load()
	if st, errno := n.statRecord(); errno == 0 {
		if n.ver != nil {
			n.ver.touched(&st)
		}
		if cur := vs.currentNode(id); cur != nil && cur.ver != nil {
			cur.ver.touched(&st)
		}
	}
	n.fsys.versionChanged(id)
}

// versionChanged makes the kernel drop the attributes of record id's current version node: the
// record was committed, or its metadata changed.
func (fsys *FS) versionChanged(id uint64) {
	if fsys.versions == nil {
		return
	}
	fsys.versions.currentNode(id).invalidateAttrs()
}

// invalidateAttrs makes the kernel drop the attributes of this node it may cache, if an answer since
// the last invalidation let it (node.Getattr). Only attributes: no lock is taken in the kernel, so it
// may be called while serving any request.
func (n *node) invalidateAttrs() {
	if n == nil || !n.attrsCached.Swap(false) {
		return
	}
	n.cachedKey.Store(nil)
	n.NotifyContent(-1, 0)
}

// changed is recordTarget.changed: the record was committed.
func (n *node) changed(cr backing.CommitResult) {
	n.invalidateAttrs()
	n.fsys.versionChanged(n.recordID.Load())
	n.committedFile(cr)
}

// committedFile remembers the file a commit of this record left as verified (it wrote the identity
// there itself): the GETATTR that follows a commit is then a stat of the name, not a check of the
// identity attribute. Another commit, here or elsewhere, may have replaced the file since; its key
// (a new inode, a new change time) does not match then, and the identity is read as before.
func (n *node) committedFile(cr backing.CommitResult) {
	if cr.Unchanged || cr.Version.Ino == 0 {
		return
	}
	key := fileKey{dev: cr.Version.Dev, ino: cr.Version.Ino, gen: genOf(cr.Birth),
		ctime: unix.NsecToTimespec(cr.Version.Ctime)}
	n.verifiedFile.Store(&verifiedFile{key: key, id: cr.Identity.ID})
}

// opened checks the attributes the kernel may cache for this record node against the backing file an
// open found (st): another daemon, or a process writing the backing directory, may have changed the
// record since; the kernel must not then give the opener the size of the old one.
func (n *node) opened(st *unix.Stat_t) {
	if !n.attrsCached.Load() {
		return
	}
	if k := n.cachedKey.Load(); k == nil || *k != (attrKey{ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}) {
		n.invalidateAttrs()
	}
}

// handleFD is the backing descriptor of an open pass-through file or directory, or -1.
func handleFD(f gofs.FileHandle) int {
	switch h := f.(type) {
	case *passthroughFile:
		return h.fd
	case *dirHandle:
		return h.fd
	}
	return -1
}

// statSelf stats the node's own object.
func (n *node) statSelf(a *fuse.Attr) syscall.Errno {
	fd, closeFD, errno := n.openPath()
	if errno != 0 {
		return errno
	}
	defer closeFD()
	st, err := statx(fd, "")
	if err != nil {
		return errnoOf(err)
	}
	fillAttr(a, &st.Stat_t)
	return 0
}

// errOtherRecord: the name holds something else than the node's record.
var errOtherRecord = errors.New("the name holds another record, or no record")

// openOwnRecord opens name in dirfd with O_PATH and checks that it is a regular file carrying this
// node's record identity (errOtherRecord if not). A stale handle of a network filesystem's client, at
// the open or at the identity's read, is retried after a forced look-up.
func (n *node) openOwnRecord(dirfd int, name string) (int, error) {
	fd := -1
	err := sysx.RetryStale(dirfd, name, func() error {
		var err error
		if fd, err = sysx.Openat(dirfd, name, unix.O_PATH, 0); err != nil {
			return err
		}
		if err = n.checkRecord(fd); err != nil {
			sysx.Close(fd)
			fd = -1
		}
		return err
	})
	return fd, err
}

// ownRecordErrno is the errno of openOwnRecord's error for a path-based call: another record at the
// name makes the kernel look it up again (ESTALE), as does no file at all.
func ownRecordErrno(err error) syscall.Errno {
	if err == errOtherRecord {
		return syscall.ESTALE
	}
	return staleIfGone(err)
}

// checkRecord checks that fd (O_PATH) is a regular file carrying this node's record identity.
func (n *node) checkRecord(fd int) error {
	// Not retried here: a stale descriptor stays stale; openOwnRecord opens the name again.
	st, err := statxOnce(fd, "")
	if err != nil {
		return err
	}
	if st.fileType() != syscall.S_IFREG {
		return errOtherRecord
	}
	if n.verified(&st) {
		return nil
	}
	id, err := backing.ReadIdentity(sysx.ProcPath(fd), false)
	switch {
	case sysx.IsStale(err):
		return err
	case err != nil || id.ID != n.recordID.Load():
		return errOtherRecord
	}
	n.verifiedFile.Store(&verifiedFile{key: keyOf(&st), id: id.ID})
	return nil
}

// fileKey tells a backing file apart from every other file that has or had its name: device, inode
// number, birth time (which tells a reused inode number apart) and change time, which every change of
// its extended attributes (the record identity among them) moves.
type fileKey struct {
	dev, ino, gen uint64
	ctime         unix.Timespec
}

func keyOf(st *stat) fileKey {
	return fileKey{dev: st.dev, ino: st.Ino, gen: st.gen, ctime: st.Ctim}
}

// verifiedFile is the backing file a record node last found carrying its identity.
type verifiedFile struct {
	key fileKey
	id  uint64
}

// verified reports whether st is the backing file this node last found carrying its record identity,
// unchanged since: its identity need not be read again.
func (n *node) verified(st *stat) bool {
	v := n.verifiedFile.Load()
	return v != nil && v.key == keyOf(st) && v.id == n.recordID.Load()
}

// statRecord stats the record this node is: ESTALE if the name now holds another record, ENOENT if it
// holds none. The backing file found last is known by its stat alone; another is opened and its
// identity read.
func (n *node) statRecord() (unix.Stat_t, syscall.Errno) {
	loc, errno := n.locate()
	if errno != 0 {
		return unix.Stat_t{}, errno
	}
	defer loc.close()
	if st, err := statx(loc.dir.FD, loc.name); err == nil && st.fileType() == syscall.S_IFREG && n.verified(&st) {
		return st.Stat_t, 0
	}
	fd, err := n.openOwnRecord(loc.dir.FD, loc.name)
	if err == errOtherRecord {
		return unix.Stat_t{}, syscall.ESTALE
	}
	if err != nil {
		return unix.Stat_t{}, errnoOf(err)
	}
	defer sysx.Close(fd)
	st, err := sysx.Fstatat(fd, "")
	if err != nil {
		return unix.Stat_t{}, errnoOf(err)
	}
	return st, 0
}

func fillNewRecordAttr(a *fuse.Attr, attrs newRecord, size uint64, now time.Time) {
	a.Mode = syscall.S_IFREG | attrs.mode
	a.Nlink = 1
	a.Uid, a.Gid = attrs.uid, attrs.gid
	a.Size = size
	a.Blksize = 4096
	a.SetTimes(&now, &now, &now)
}

// Statx would bypass Getattr's per-caller sizes; ENOSYS makes the kernel fall back to GETATTR for
// the whole mount.
func (n *node) Statx(ctx context.Context, f gofs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

// Setattr changes mode, owner, times and size, as the caller, on the node's own object. On a record,
// metadata changes are made under the record's lock (a commit copies the record's metadata to the new
// version), and a size change is the handle's business, or by path a commit of the cut content.
func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	c := n.fsys.callerOf(ctx)
	if !n.isRecord() {
		pf, _ := f.(*passthroughFile)
		if errno := n.setattrOther(c, pf, in); errno != 0 {
			return errno
		}
		return n.Getattr(ctx, f, out)
	}
	if _, ok := in.GetSize(); ok && n.ver != nil {
		if n.ver.openOther(releaseWait) == openStale {
			// The new size would show through the pages of the version's cached handles.
			return n.staleVersion(c)
		}
		defer n.ver.release(false, n.dropVersion)
	}
	if errno := n.setRecordMetadata(ctx, c, in); errno != 0 {
		if !(errno == syscall.ESTALE && f != nil) {
			return errno
		}
	} else {
		n.metadataChanged()
	}
	if size, ok := in.GetSize(); ok {
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

func (n *node) setattrOther(c caller, pf *passthroughFile, in *fuse.SetAttrIn) syscall.Errno {
	fd, closeFD, errno := n.openPath()
	if errno != 0 && pf != nil {
		// A detached node that is still open: act on its own (orphan) inode, as a local filesystem does.
		fd, closeFD, errno = pf.fd, func() {}, 0
	}
	if errno != 0 {
		return errno
	}
	defer closeFD()
	if killsPrivileges(fd, in) {
		// The kernel clears set-user-ID and set-group-ID bits when someone other than the owner
		// writes or truncates a file, and asks the filesystem to do it with the writer's identity;
		// as the writer it would be refused.
		if err := unix.Fchmodat(unix.AT_FDCWD, sysx.ProcPath(fd), in.Mode&0o7777, 0); err != nil {
			return errnoOf(err)
		}
		in.Valid &^= fuse.FATTR_MODE
	}
	err := sysx.AsUser(c.cred(), func() error {
		if err := setMetadata(fd, in); err != nil {
			return err
		}
		size, ok := in.GetSize()
		if !ok {
			return nil
		}
		if pf != nil {
			return unix.Ftruncate(pf.fd, int64(size))
		}
		wfd, err := sysx.Reopen(fd, unix.O_WRONLY|unix.O_NONBLOCK)
		if err != nil {
			return err
		}
		defer sysx.Close(wfd)
		return unix.Ftruncate(wfd, int64(size))
	})
	return errnoOf(err)
}

// killsPrivileges reports whether in changes the mode of the object behind fd only by clearing its
// set-user-ID and set-group-ID bits: what the kernel asks for when a file's privileges must go.
func killsPrivileges(fd int, in *fuse.SetAttrIn) bool {
	mode, ok := in.GetMode()
	if !ok {
		return false
	}
	st, err := sysx.Fstatat(fd, "")
	if err != nil {
		return false
	}
	old, mode := st.Mode&0o7777, mode&0o7777
	removed := old &^ mode
	return removed != 0 && removed&^(unix.S_ISUID|unix.S_ISGID) == 0 && mode&^old == 0
}

// setMetadata applies mode, owner and times of in to the object behind fd (O_PATH), as the current
// thread's identity.
func setMetadata(fd int, in *fuse.SetAttrIn) error {
	if mode, ok := in.GetMode(); ok {
		if err := unix.Fchmodat(unix.AT_FDCWD, sysx.ProcPath(fd), mode&0o7777, 0); err != nil {
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
		if err := unix.Fchownat(fd, "", suid, sgid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
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
		ts[0] = timespec(in.Valid&fuse.FATTR_ATIME_NOW != 0, atime)
	}
	if mok {
		ts[1] = timespec(in.Valid&fuse.FATTR_MTIME_NOW != 0, mtime)
	}
	return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
}

func timespec(now bool, t time.Time) unix.Timespec {
	if now {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// setRecordMetadata applies mode, owner and times to the record as it is now, under its lock.
func (n *node) setRecordMetadata(ctx context.Context, c caller, in *fuse.SetAttrIn) syscall.Errno {
	_, mok := in.GetMode()
	_, uok := in.GetUID()
	_, gok := in.GetGID()
	_, aok := in.GetATime()
	_, tok := in.GetMTime()
	if !mok && !uok && !gok && !aok && !tok {
		return 0
	}
	loc, errno := n.locate()
	if errno != 0 {
		return errno
	}
	defer loc.close()
	unlock, err := n.fsys.store.LockRecords(ctx, backing.RecordRef{Dir: loc.dir, Name: loc.name})
	if err != nil {
		return errnoOf(err)
	}
	defer unlock()
	fd, err := n.openOwnRecord(loc.dir.FD, loc.name)
	if err != nil {
		return ownRecordErrno(err)
	}
	defer sysx.Close(fd)
	return errnoOf(sysx.AsUser(c.cred(), func() error { return setMetadata(fd, in) }))
}

// truncateRecord is truncate(2) by path: a commit of the record cut (or zero-extended) to size, which
// must still be a valid record.
func (n *node) truncateRecord(ctx context.Context, size uint64) syscall.Errno {
	loc, errno := n.locate()
	if errno != 0 {
		return errno
	}
	c := n.fsys.callerOf(ctx)
	sn, _, err := n.fsys.store.ReadKnown(loc.dir, loc.name, &backing.Access{Cred: c.cred(), Mode: unix.W_OK}, nil)
	loc.close()
	if err != nil {
		return errnoOf(err)
	}
	if sn.Identity.ID != n.recordID.Load() {
		return syscall.ESTALE
	}
	if size == uint64(len(sn.Data)) {
		return 0
	}
	if size > uint64(n.fsys.maxRecordSize()) {
		return syscall.EFBIG
	}
	mine := make([]byte, size)
	copy(mine, sn.Data)
	errno, _ = n.fsys.commit(commitRequest{
		target: n, record: n.recordPath(), expect: sn.Identity.ID, writer: c, trigger: event.Truncate,
		bases: []candidate{{v: &version{data: sn.Data}, from: event.Handle}}, mine: mine,
	})
	return errno
}

// openFlags are the OPEN flags passed on to the backing file; O_TRUNC is applied after the file is
// known to be the node's own.
const openFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | unix.O_DIRECT | unix.O_SYNC |
	unix.O_DSYNC | unix.O_NOATIME | unix.O_LARGEFILE

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.isRecord() {
		return n.openRecord(ctx, flags)
	}
	c := n.fsys.callerOf(ctx)
	loc, errno := n.locate()
	if errno != 0 {
		return nil, 0, n.fsys.staleOpen(c, errno)
	}
	defer loc.close()
	if errno := n.fsys.holdFile(c); errno != 0 {
		return nil, 0, errno
	}
	var fd int
	err := sysx.AsUser(c.cred(), func() error {
		var err error
		fd, err = openatStale(loc.dir.FD, loc.name, int(flags)&openFlags)
		return err
	})
	if err == nil {
		if st, serr := statx(fd, ""); serr != nil || st.identity() != n.id {
			sysx.Close(fd)
			err = syscall.ESTALE
		}
	}
	if err != nil {
		n.fsys.budget.closeFile(c.uid)
		return nil, 0, n.fsys.staleOpen(c, staleIfGone(err))
	}
	f := &passthroughFile{fd: fd, fsys: n.fsys, uid: c.uid}
	if flags&syscall.O_TRUNC != 0 {
		if err := unix.Ftruncate(fd, 0); err != nil {
			f.Release(ctx)
			return nil, 0, errnoOf(err)
		}
	}
	return f, 0, 0
}

func (n *node) openRecord(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	record := n.recordPath()
	c := n.fsys.callerOf(ctx)
	reader := flags&syscall.O_ACCMODE == syscall.O_RDONLY && flags&syscall.O_TRUNC == 0
	// On a version node the open is counted (versionNode.openReader, openOther) until the handle's
	// release, or until a failure below.
	v := n.ver
	counted, cached, opened := false, false, false
	switch {
	case v != nil && !reader:
		if v.openOther(releaseWait) == openStale {
			return nil, 0, n.staleVersion(c)
		}
		counted = true
	case v == nil && n.fsys.versions != nil:
		n.fsys.versions.done(n.recordID.Load(), c.thread.pid)
	}
	defer func() {
		if counted && !opened {
			v.release(cached, n.dropVersion)
		}
	}()
	loc, errno := n.locate()
	if errno != 0 {
		return nil, 0, errno
	}
	// The caller's permission is checked against the record as it is now, with the kernel's own rules
	// (mode, ACLs, groups), on top of the kernel's check against the attributes it had cached.
	// A record unchanged since mergefs last read or committed it is not read again.
	latest := n.fsys.history.latest(n.recordID.Load())
	var known *backing.Known
	if latest != nil {
		known = latest.known()
	}
	sn, reused, err := n.fsys.store.ReadKnown(loc.dir, loc.name, &backing.Access{Cred: c.cred(), Mode: accessMode(flags)}, known)
	loc.close()
	exists := err == nil
	switch {
	case exists && sn.Identity.ID != n.recordID.Load():
		// Another record has this name now: the kernel looks the name up again.
		return nil, 0, syscall.ESTALE
	case exists:
	case errors.Is(err, iofs.ErrNotExist):
		own := n.fsys.ownHandle(record, c.proc)
		if own == nil || !own.fresh() {
			// Only the creating process knows a record it has not committed. Anyone else reached a
			// name the kernel still caches (a create whose commit failed, a record removed by another
			// mount): ESTALE makes the kernel look the name up again, and an O_CREAT open then creates it.
			return nil, 0, syscall.ESTALE
		}
	default:
		n.fsys.log.Error("cannot read record at open", "record", record,
			"pid", c.proc.pid, "comm", c.comm, "uid", c.uid, "err", err)
		return nil, 0, errnoOf(err)
	}
	if v != nil && reader {
		var found *unix.Stat_t
		if exists {
			found = &sn.Stat
		}
		switch v.openReader(found, releaseWait) {
		case openStale:
			return nil, 0, n.staleVersion(c)
		case openCached:
			cached = true
		}
		counted = true
	}
	var expect uint64
	var view *version
	if exists {
		expect = sn.Identity.ID
		if !cached {
			n.opened(&sn.Stat)
		}
		view = n.fsys.snapshotView(expect, &sn, reused, latest)
	}
	h, errno := n.fsys.openRecordView(n, record, expect, flags, c, view, n.newRecordAttrs(c, 0o644))
	if errno != 0 {
		return nil, 0, errno
	}
	if counted {
		h.ver, h.cached = v, cached
	}
	if cached {
		n.fsys.counters.cachedOpens.Add(1)
		if view != nil {
			// Its reads from the page cache never reach the daemon: the opener read the version.
			h.rememberOpener(c)
		}
	}
	opened = true
	return h, recordOpenFlags(flags, cached), 0
}

// staleVersion answers an open of a version node that it cannot serve: ESTALE, and the thread's
// lookups of the record give the record's own node for the kernel's retry of the open (versions.go).
func (n *node) staleVersion(c caller) syscall.Errno {
	n.fsys.counters.cacheRetries.Add(1)
	n.fsys.versions.pend(n.recordID.Load(), c.thread.pid)
	return syscall.ESTALE
}

// recordOpenFlags are the FOPEN flags of a record handle opened with flags: direct I/O, so that the
// kernel's page cache, which is per inode, never shows one handle another's snapshot; and for a
// read-only handle, which never commits, no FLUSH at its closes (the kernel skips the round trip).
// A cached handle of a version node (versions.go) reads through the page cache and keeps it.
func recordOpenFlags(flags uint32, cached bool) uint32 {
	switch {
	case cached:
		return fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	case flags&syscall.O_ACCMODE == syscall.O_RDONLY:
		return fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH
	}
	return fuse.FOPEN_DIRECT_IO
}

// accessMode is the access(2) mode an open with flags needs.
func accessMode(flags uint32) uint32 {
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		return unix.R_OK
	case syscall.O_WRONLY:
		return unix.W_OK
	}
	return unix.R_OK | unix.W_OK
}

func (n *node) newRecordAttrs(c caller, mode uint32) newRecord {
	return newRecord{mode: mode & 0o7777, uid: c.uid, gid: c.gid}
}

// Create of a record does not create the backing file: the record comes into being at its first
// commit, so no reader sees it empty. An exclusive create (mkstemp) reserves the name with an empty
// file, which is what its caller relies on; commits treat an empty file as no record.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, nil, 0, syscall.EPERM
	}
	dir, closeDir, errno := n.openDir()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer closeDir()
	c := n.fsys.callerOf(ctx)
	mode = n.fsys.createMode(ctx, dir.FD, mode)
	if !n.fsys.isRecordName(name) {
		return n.createOther(ctx, dir, name, c, flags, mode, out)
	}
	if flags&syscall.O_EXCL != 0 {
		return n.createExclusiveRecord(ctx, dir, name, c, flags, mode, out)
	}
	p, _ := n.relPath()
	record := joinPath(p, name)
	sn, err := n.fsys.store.ReadAt(dir, name, &backing.Access{Cred: c.cred(), Mode: accessMode(flags)})
	exists := err == nil
	if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return nil, nil, 0, errnoOf(err)
	}
	child := &node{fsys: n.fsys}
	var expect uint64
	if exists {
		// Created by someone else since the kernel looked: this is an open of that record.
		expect = sn.Identity.ID
		child.recordID.Store(expect)
		fillAttr(&out.Attr, &sn.Stat)
	} else {
		child.recordID.Store(backing.NewID())
		fillNewRecordAttr(&out.Attr, n.newRecordAttrs(c, mode), 0, time.Now())
	}
	child.last.Store(&place{parent: n, name: name})
	inode := n.NewInode(ctx, child, child.stableAttr(syscall.S_IFREG))
	target := inode.Operations().(*node)
	target.last.Store(&place{parent: n, name: name})
	if exists {
		target.opened(&sn.Stat)
	}
	h, errno := n.fsys.openRecordHandle(target, record, expect, flags, c, sn.Data, exists, n.newRecordAttrs(c, mode))
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if h.written {
		out.Attr.Size = uint64(len(h.content))
	}
	out.Ino = target.recordID.Load()
	out.SetAttrTimeout(0)
	return inode, h, recordOpenFlags(flags, false), 0
}

func (n *node) createOther(ctx context.Context, dir backing.Dir, name string, c caller, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.fsys.holdFile(c); errno != 0 {
		return nil, nil, 0, errno
	}
	var fd int
	err := sysx.AsUser(c.cred(), func() error {
		var err error
		fd, err = sysx.Openat(dir.FD, name, int(flags)&(openFlags|unix.O_TRUNC|unix.O_EXCL)|unix.O_CREAT, mode)
		return err
	})
	if err != nil {
		n.fsys.budget.closeFile(c.uid)
		return nil, nil, 0, errnoOf(err)
	}
	f := &passthroughFile{fd: fd, fsys: n.fsys, uid: c.uid}
	st, err := statx(fd, "")
	if err != nil {
		f.Release(ctx)
		return nil, nil, 0, errnoOf(err)
	}
	inode, errno := n.register(ctx, dir, name, &st, out)
	if errno != 0 {
		f.Release(ctx)
		return nil, nil, 0, errno
	}
	return inode, f, 0, 0
}

func (n *node) createExclusiveRecord(ctx context.Context, dir backing.Dir, name string, c caller, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	id, st, err := n.fsys.store.Reserve(ctx, dir, name, mode, c.cred())
	if err != nil {
		return nil, nil, 0, errnoOf(err)
	}
	child := &node{fsys: n.fsys}
	child.recordID.Store(id.ID)
	child.last.Store(&place{parent: n, name: name})
	inode := n.NewInode(ctx, child, child.stableAttr(syscall.S_IFREG))
	p, _ := n.relPath()
	h, errno := n.fsys.openRecordHandle(inode.Operations().(*node), joinPath(p, name), id.ID, flags&^syscall.O_TRUNC, c, nil, false, n.newRecordAttrs(c, mode))
	if errno != 0 {
		return nil, nil, 0, errno
	}
	fillAttr(&out.Attr, &st)
	out.Ino = id.ID
	out.SetAttrTimeout(0)
	return inode, h, fuse.FOPEN_DIRECT_IO, 0
}

// made registers a node for the object name just made in dir.
func (n *node) made(ctx context.Context, dir backing.Dir, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	st, err := statx(dir.FD, name)
	if err != nil {
		return nil, errnoOf(err)
	}
	return n.register(ctx, dir, name, &st, out)
}

// inDir runs make in directory n as the caller and registers what it made as name.
func (n *node) inDir(ctx context.Context, name string, out *fuse.EntryOut, make func(ctx context.Context, dirfd int) error) (*gofs.Inode, syscall.Errno) {
	if backing.IsReserved(name) {
		return nil, syscall.EPERM
	}
	dir, closeDir, errno := n.openDir()
	if errno != 0 {
		return nil, errno
	}
	defer closeDir()
	if err := sysx.AsUser(n.fsys.callerOf(ctx).cred(), func() error { return make(ctx, dir.FD) }); err != nil {
		return nil, errnoOf(err)
	}
	return n.made(ctx, dir, name, out)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.inDir(ctx, name, out, func(ctx context.Context, dirfd int) error {
		return unix.Mkdirat(dirfd, name, n.fsys.createMode(ctx, dirfd, mode))
	})
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.inDir(ctx, name, out, func(ctx context.Context, dirfd int) error {
		return unix.Mknodat(dirfd, name, n.fsys.createMode(ctx, dirfd, mode), int(rdev))
	})
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.inDir(ctx, name, out, func(ctx context.Context, dirfd int) error { return unix.Symlinkat(target, dirfd, name) })
}

// Link refuses a record on either side: records are known by name, and a commit replaces the file
// under one name, so a link would silently stop being one at the first write.
func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	src, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if src.isRecord() || (src.isRegular() && n.fsys.isRecordName(name)) {
		c := n.fsys.callerOf(ctx)
		n.fsys.log.Warn("hard link to or as a record refused (EPERM): records are known by name",
			"name", name, "record", src.recordPath(), "pid", c.proc.pid, "comm", c.comm, "uid", c.uid)
		return nil, syscall.EPERM
	}
	fd, closeFD, errno := src.openPath()
	if errno != 0 {
		return nil, errno
	}
	defer closeFD()
	return n.inDir(ctx, name, out, func(ctx context.Context, dirfd int) error {
		return unix.Linkat(unix.AT_FDCWD, sysx.ProcPath(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
	})
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if t := n.target.Load(); t != nil {
		return *t, 0
	}
	fd, closeFD, errno := n.openPath()
	if errno != 0 {
		return nil, errno
	}
	defer closeFD()
	t, err := readlinkat(fd, "")
	return t, errnoOf(err)
}

// Unlink removes name as the caller; a record under its lock, so that a commit in flight cannot bring
// it back.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if backing.IsReserved(name) {
		return syscall.ENOENT
	}
	dir, closeDir, errno := n.openDir()
	if errno != 0 {
		return errno
	}
	defer closeDir()
	if n.fsys.isRecordName(name) {
		unlock, err := n.fsys.store.LockRecords(ctx, backing.RecordRef{Dir: dir, Name: name})
		if err != nil {
			return errnoOf(err)
		}
		defer unlock()
	}
	c := n.fsys.callerOf(ctx)
	if err := sysx.AsUser(c.cred(), func() error { return unix.Unlinkat(dir.FD, name, 0) }); err != nil {
		return errnoOf(err)
	}
	if n.fsys.isRecordName(name) {
		if err := n.fsys.store.UpdateFences(backing.RecordRef{Dir: dir, Name: name}); err != nil {
			n.fsys.log.Error("record removed, but cannot record it in the lock file", "record", name, "err", err)
		}
	}
	if child := n.childNode(name); child != nil {
		n.fsys.history.forget(child.recordID.Load())
	}
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if backing.IsReserved(name) {
		return syscall.ENOENT
	}
	dir, closeDir, errno := n.openDir()
	if errno != 0 {
		return errno
	}
	defer closeDir()
	c := n.fsys.callerOf(ctx)
	return errnoOf(sysx.AsUser(c.cred(), func() error { return unix.Unlinkat(dir.FD, name, unix.AT_REMOVEDIR) }))
}

// Rename onto a record name is a write into that record (the replace-by-rename pattern of legacy
// workers): its content is merged into the record, which keeps its identity, owner, mode and
// extended attributes. Other renames pass through, as the caller; a record's name changes under its
// lock.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if backing.IsReserved(name) || backing.IsReserved(newName) {
		return syscall.EPERM
	}
	dstNode, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	srcDir, closeSrc, errno := n.openDir()
	if errno != 0 {
		return errno
	}
	defer closeSrc()
	dstDir, closeDst, errno := dstNode.openDir()
	if errno != 0 {
		return errno
	}
	defer closeDst()
	child := n.childNode(name)
	c := n.fsys.callerOf(ctx)

	if flags&unix.RENAME_EXCHANGE == 0 && n.fsys.isRecordName(newName) {
		st, err := statx(srcDir.FD, name)
		if err != nil {
			return errnoOf(err)
		}
		if st.fileType() == syscall.S_IFREG {
			var srcID uint64
			if child != nil {
				srcID = child.recordID.Load()
			}
			errno := n.renameOntoRecord(ctx, c, srcDir, name, &st, dstNode, dstDir, newName, flags, child)
			if errno == 0 && srcID != 0 {
				// The source record is gone: merged into the destination, or now that record.
				if child == nil || child.recordID.Load() != srcID {
					n.fsys.history.forget(srcID)
				}
			}
			return errno
		}
	}

	var refs []backing.RecordRef
	if n.fsys.isRecordName(name) {
		refs = append(refs, backing.RecordRef{Dir: srcDir, Name: name})
	}
	if n.fsys.isRecordName(newName) {
		refs = append(refs, backing.RecordRef{Dir: dstDir, Name: newName})
	}
	if len(refs) > 0 {
		unlock, err := n.fsys.store.LockRecords(ctx, refs...)
		if err != nil {
			return errnoOf(err)
		}
		defer unlock()
	}
	err := sysx.AsUser(c.cred(), func() error {
		return unix.Renameat2(srcDir.FD, name, dstDir.FD, newName, uint(flags))
	})
	if err != nil {
		return errnoOf(err)
	}
	if err := n.fsys.store.UpdateFences(refs...); err != nil {
		n.fsys.log.Error("records renamed, but cannot record it in the lock file", "from", name, "to", newName, "err", err)
	}
	// A record renamed keeps its identity, and with it what was read of it.
	if flags&unix.RENAME_EXCHANGE != 0 {
		if other := dstNode.childNode(newName); other != nil {
			other.moved(n, name)
		}
	}
	if child != nil {
		child.moved(dstNode, newName)
	}
	return 0
}

// moved notes that n now has name in parent: a record node keeps finding its record there even if the
// next rename onto that name detaches it before anything asks for its path.
func (n *node) moved(parent *node, name string) {
	if n.recordID.Load() != 0 {
		n.last.Store(&place{parent: parent, name: name})
	}
}

func (n *node) renameOntoRecord(ctx context.Context, c caller, srcDir backing.Dir, name string, st *stat, dstNode *node, dstDir backing.Dir, newName string, flags uint32, child *node) syscall.Errno {
	// The renamer must be able to read what it renames: a file it cannot read (another user's, in a
	// shared directory) must not end up in a record it can.
	var mine []byte
	err := sysx.AsUser(c.cred(), func() error {
		fd, err := sysx.Openat(srcDir.FD, name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if err != nil {
			return err
		}
		defer sysx.Close(fd)
		fst, err := sysx.Fstat(fd)
		if err != nil {
			return err
		}
		if fst.Ino != st.Ino {
			return syscall.ESTALE
		}
		if fst.Size > int64(n.fsys.maxRecordSize()) {
			return syscall.EFBIG
		}
		mine, err = sysx.ReadAll(fd, fst.Size, int64(n.fsys.maxRecordSize()))
		return err
	})
	if err != nil {
		return errnoOf(err)
	}
	if flags&unix.RENAME_NOREPLACE != 0 {
		if _, err := statx(dstDir.FD, newName); err == nil {
			return syscall.EEXIST
		}
	}
	dstPath, _ := dstNode.relPath()
	record := joinPath(dstPath, newName)
	// The candidates for the base are the versions of the record there now that the renamer's
	// process and others read.
	var bases []candidate
	if _, id, err := n.fsys.store.Identify(dstDir, newName); err == nil {
		bases = n.fsys.history.candidates(id.ID, c.thread, c.proc, nil, event.NoBase)
	}
	errno, _, res, wrote := n.fsys.commitResult(commitRequest{
		target: &fixedPlace{dir: dstDir, name: newName, path: record}, record: record, writer: c, trigger: event.Rename,
		bases: bases, baseIsTheirs: len(bases) == 0, mine: mine, sync: true, newID: backing.NewID(),
		source: &backing.Source{Dir: &srcDir, Name: name, Ino: st.Ino, Data: mine},
		create: newRecord{mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid},
	})
	if errno != 0 {
		return errno
	}
	// The record changed: what the kernel caches of the node it had at newName, and of the renamed
	// node that now stands for the record, is stale.
	if old := dstNode.childNode(newName); old != nil && old != child {
		old.invalidateAttrs()
	}
	if child != nil {
		// Whatever it was (a temporary file's attributes are cached for otherAttrTimeout).
		child.attrsCached.Store(false)
		child.NotifyContent(-1, 0)
		// The kernel now believes the renamed node is at newName; it is the record there.
		child.recordID.Store(res.Identity.ID)
		child.last.Store(&place{parent: dstNode, name: newName})
		if child.StableAttr().Ino != res.Identity.ID {
			// Its inode number is the source's: make the kernel look the name up again, which finds
			// the record's own node. Asynchronously: the kernel holds the directory during RENAME.
			go dstNode.NotifyEntry(newName)
		}
	}
	n.fsys.history.committed(res.Identity.ID, c.thread, c.proc, wrote)
	return 0
}
