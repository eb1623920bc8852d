package fs

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/sysx"
)

// identity is what a node stands for in the backing store: an inode (device, number and birth time,
// which tells a reused inode number apart) for directories and other files, or a record's identity
// (backing.Identity.ID) for records, whose inode changes at every commit.
type identity struct {
	dev, ino, gen uint64
}

// stat is the part of statx the filesystem uses.
type stat struct {
	unix.Stat_t
	dev uint64 // st_dev as a number
	gen uint64 // birth time in ns (1 where the filesystem has none), as go-fuse's loopback does
}

func (st *stat) identity() identity { return identity{dev: st.dev, ino: st.Ino, gen: st.gen} }

func (st *stat) fileType() uint32 { return st.Mode & syscall.S_IFMT }

// statx stats name in dirfd without following a symlink; an empty name stats dirfd itself. A stale
// handle (ESTALE from a network filesystem's client) is retried after a forced look-up.
func statx(dirfd int, name string) (stat, error) {
	var st stat
	err := sysx.RetryStale(dirfd, name, func() error {
		var err error
		st, err = statxOnce(dirfd, name)
		return err
	})
	return st, err
}

func statxOnce(dirfd int, name string) (stat, error) {
	st, birth, err := sysx.Statx(dirfd, name)
	if err != nil {
		return stat{}, err
	}
	return statOf(st, birth), nil
}

// statOf is a stat of st and the file's birth time (0: none kept).
func statOf(st unix.Stat_t, birth uint64) stat {
	return stat{Stat_t: st, dev: st.Dev, gen: genOf(birth)}
}

// genOf is a stat's gen for a birth time: 1 where the filesystem keeps none.
func genOf(birth uint64) uint64 {
	if birth == 0 {
		return 1
	}
	return birth
}

// fillAttr copies a backing stat into a FUSE attribute.
func fillAttr(a *fuse.Attr, st *unix.Stat_t) {
	a.Ino = st.Ino
	a.Size = uint64(st.Size)
	a.Blocks = uint64(st.Blocks)
	a.Atime, a.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	a.Mtime, a.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
	a.Ctime, a.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
	a.Mode = st.Mode
	a.Nlink = uint32(st.Nlink)
	a.Uid, a.Gid = st.Uid, st.Gid
	a.Rdev = uint32(st.Rdev)
	a.Blksize = uint32(st.Blksize)
}

// place is where a node was last seen: its parent and its name there.
type place struct {
	parent *node
	name   string
}

// node is one object of the mount. A directory, a symlink or a non-record file is its backing inode
// (ident); a record is its record identity (recordID), found by name in its directory.
type node struct {
	gofs.Inode
	fsys *FS
	id   identity
	// recordID is the identity of the record this node is, for a regular file that was a record when
	// it was looked up or created (0 otherwise). It changes when a file becomes a record by a rename,
	// or when a new record's first commit finds another creator's record at its name.
	recordID atomic.Uint64
	// last is where a record node was last seen. A rename onto a record detaches go-fuse's node for
	// it, yet a process that looked the name up just before still opens that node: it means the
	// record by that name (its identity is checked there).
	last atomic.Pointer[place]
	// target is a symlink's content, read when the node is made: a symlink never changes, and a
	// symlink renamed over or removed while the kernel follows it still has it.
	target atomic.Pointer[[]byte]
	// verifiedFile is the backing file a record node last found carrying its identity (checkRecord).
	verifiedFile atomic.Pointer[verifiedFile]
	// attrsCached: a GETATTR answer since the last invalidation may have let the kernel cache this
	// record node's attributes; cachedKey is what the last such answer was made from (nil: unknown).
	attrsCached atomic.Bool
	cachedKey   atomic.Pointer[attrKey]
	// ver is set on a record's version node (versions.go): a kernel inode for one version of it.
	ver *versionNode
}

var _ gofs.InodeEmbedder = (*node)(nil)

// newChild makes the node for a backing object found (or made) as name in n.
func (n *node) newChild(name string, st *stat, recordID uint64) *node {
	child := &node{fsys: n.fsys, id: st.identity()}
	if recordID != 0 {
		child.recordID.Store(recordID)
		child.last.Store(&place{parent: n, name: name})
	}
	return child
}

// stableAttr is the node's identity for go-fuse and the inode number the kernel sees: a record's id
// (stable across commits), else the backing inode number with the device mixed in as go-fuse's
// loopback does, so that a backing directory without submounts shows its own numbers.
func (n *node) stableAttr(mode uint32) gofs.StableAttr {
	if id := n.recordID.Load(); id != 0 {
		if n.ver != nil {
			return gofs.StableAttr{Mode: mode & syscall.S_IFMT, Ino: id, Gen: n.ver.gen}
		}
		return gofs.StableAttr{Mode: mode & syscall.S_IFMT, Ino: id, Gen: 1}
	}
	return gofs.StableAttr{Mode: mode & syscall.S_IFMT, Ino: n.fsys.inoOf(n.id.dev, n.id.ino), Gen: n.id.gen}
}

func (fsys *FS) inoOf(dev, ino uint64) uint64 {
	swapped := dev<<32 | dev>>32
	root := fsys.rootDev<<32 | fsys.rootDev>>32
	return swapped ^ root ^ ino
}

// orphanPrefix starts the placeholder path go-fuse's Inode.Path gives a node with no way up to the root.
const orphanPrefix = ".go-fuse."

// relPath is the node's path relative to the backing root ("" for the root), and false for a node
// detached from the tree (removed, or renamed over).
func (n *node) relPath() (string, bool) {
	if n.IsRoot() {
		return "", true
	}
	if _, parent := n.Parent(); parent == nil {
		return "", false
	}
	p := n.Path(n.Root())
	if strings.HasPrefix(p, orphanPrefix) {
		return "", false
	}
	return p, true
}

// recordPath is a record node's path for read tracking and logs: where it is, or was last seen.
func (n *node) recordPath() string {
	if p, ok := n.relPath(); ok {
		return p
	}
	if l := n.last.Load(); l != nil {
		if pp, ok := l.parent.relPath(); ok {
			return joinPath(pp, l.name)
		}
	}
	return ""
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// openDir opens directory node n itself and checks that it is still the directory n stands for. The
// returned func closes it.
func (n *node) openDir() (backing.Dir, func(), syscall.Errno) {
	if n.IsRoot() {
		return backing.Dir{FD: n.fsys.rootFD, Ino: n.id.ino}, func() {}, 0
	}
	p, ok := n.relPath()
	if !ok {
		n.fsys.dirs.forget(n)
		return backing.Dir{}, nil, syscall.ESTALE
	}
	if dir, done, ok := n.fsys.dirs.get(n); ok {
		return dir, done, 0
	}
	fd, err := n.fsys.store.OpenDirFD(p)
	if err != nil {
		return backing.Dir{}, nil, staleIfGone(err)
	}
	st, err := statx(fd, "")
	if err != nil || st.identity() != n.id {
		sysx.Close(fd)
		return backing.Dir{}, nil, syscall.ESTALE
	}
	dir := backing.Dir{FD: fd, Ino: st.Ino}
	return dir, n.fsys.dirs.put(n, dir), 0
}

// location is where a node's object is: its directory, open, and its name in it.
type location struct {
	dir   backing.Dir
	name  string
	close func()
}

// locate opens the directory holding n. A detached node has no location (ESTALE), except a record
// node, which means the record at the place it was last seen.
func (n *node) locate() (location, syscall.Errno) {
	name, parent := n.Parent()
	var pn *node
	if parent != nil {
		pn, _ = parent.Operations().(*node)
	} else if l := n.last.Load(); l != nil && n.recordID.Load() != 0 {
		pn, name = l.parent, l.name
	}
	if pn == nil {
		return location{}, syscall.ESTALE
	}
	dir, closeDir, errno := pn.openDir()
	if errno != 0 {
		return location{}, errno
	}
	return location{dir: dir, name: name, close: closeDir}, 0
}

// openPath opens the node's own object with O_PATH and checks that it is the object the node stands
// for (not whatever now has its name). Not for records, whose inode changes at every commit.
func (n *node) openPath() (int, func(), syscall.Errno) {
	if n.IsRoot() {
		return n.fsys.rootFD, func() {}, 0
	}
	loc, errno := n.locate()
	if errno != 0 {
		return -1, nil, errno
	}
	defer loc.close()
	fd, err := openatStale(loc.dir.FD, loc.name, unix.O_PATH)
	if err != nil {
		return -1, nil, staleIfGone(err)
	}
	st, err := statx(fd, "")
	if err != nil || st.identity() != n.id {
		sysx.Close(fd)
		return -1, nil, syscall.ESTALE
	}
	return fd, func() { sysx.Close(fd) }, 0
}

// staleIfGone turns "no such file" for a node the kernel still knows into ESTALE, which makes the
// kernel look the name up again instead of failing a path-based call.
func staleIfGone(err error) syscall.Errno {
	errno := errnoOf(err)
	if errno == syscall.ENOENT || errno == syscall.ENOTDIR || errno == syscall.ELOOP {
		return syscall.ESTALE
	}
	return errno
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errno, ok := errors.AsType[syscall.Errno](err); ok && errno != 0 {
		return errno
	}
	return syscall.EIO
}

func fuseCaller(ctx context.Context) (*fuse.Caller, bool) {
	return fuse.FromContext(ctx)
}

// openatStale is sysx.Openat, retried after a forced look-up where the backing filesystem answers with a
// stale handle.
func openatStale(dirfd int, name string, flags int) (int, error) {
	fd := -1
	err := sysx.RetryStale(dirfd, name, func() error {
		var err error
		fd, err = sysx.Openat(dirfd, name, flags, 0)
		return err
	})
	return fd, err
}
