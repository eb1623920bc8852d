package backing

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

// FsyncPolicy says when a commit makes the record durable.
type FsyncPolicy int

const (
	FsyncOnRequest FsyncPolicy = iota // fsync only when Commit.Sync is set (application fsync)
	FsyncAlways                       // fsync file + directory on every commit
)

// Options configure a Store.
type Options struct {
	Fsync  FsyncPolicy
	Logger *slog.Logger // nil: slog.Default()
	// MaxRecordSize bounds what Read, ReadAt and a commit read of a record (theirs, a rename source):
	// a larger file is refused with EFBIG without being read. 0: no bound.
	MaxRecordSize int64
	// MaxReading bounds the bytes of records being read at once (by Read, ReadAt and commits): past
	// it reads wait for others to end. 0: no bound.
	MaxReading int64
	// Fence says whether commits check the lock file's fences (fence.go): by default on a network
	// filesystem.
	Fence FenceMode
}

// Version identifies the content of a record well enough to tell that it changed.
type Version struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // ns
}

// Store is a backing directory. Its methods are safe for concurrent use.
type Store struct {
	rootFD    int
	rootIno   uint64
	lockFD    int
	fenceFD   int  // the lock file opened O_DIRECT|O_DSYNC, -1 when fences are not checked
	network   bool // the backing filesystem is a network filesystem's client (networkFilesystems)
	fenceMu   sync.Mutex
	fenceBuf  []byte // guarded by fenceMu
	fsyncMode FsyncPolicy
	maxSize   int64
	reading   *readGate
	log       *slog.Logger
	slots     slotLocks
	groups    groups // commits waiting for a record's lock (group.go)
	recovered int

	// Close waits for operations in flight; a counter rather than an RWMutex, so that a Merge callback
	// that calls back into the store gets an error during Close instead of a deadlock.
	mu       sync.Mutex
	idle     *sync.Cond
	inFlight int
	closed   bool

	fsyncs atomic.Int64 // fsync calls made, for tests of the policy

	// Test hooks: each removes one half of the record lock, to show that the tests notice.
	skipInProcessLock bool
	skipFileLock      bool
	// Test hooks for fences: how a commit reads a record under its lock, and how it makes the
	// client look a name up again (readCurrent and refresh unless a test fakes a stale client).
	readLocked  func(dirfd int, name string) (current, error)
	refreshName func(dir Dir, name string, attempt int)
}

// Open opens a store on a directory path. It runs temp-file recovery.
func Open(root string, opts Options) (*Store, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open backing store", Path: root, Err: err}
	}
	return open(fd, root, opts)
}

// OpenFD opens a store on an already-open directory descriptor (in-place mounting reaches the backing
// directory only through a descriptor opened before the mount). The store takes ownership of dirfd, also
// when OpenFD fails. The descriptor may be an O_PATH one. It runs temp-file recovery.
func OpenFD(dirfd int, opts Options) (*Store, error) {
	return open(dirfd, fmt.Sprintf("fd %d", dirfd), opts)
}

func open(rootFD int, label string, opts Options) (*Store, error) {
	st, err := sysx.Fstat(rootFD)
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		err = unix.ENOTDIR
	}
	if err != nil {
		sysx.Close(rootFD)
		return nil, &fs.PathError{Op: "open backing store", Path: label, Err: err}
	}
	s := &Store{rootFD: rootFD, rootIno: st.Ino, lockFD: -1, fenceFD: -1, fsyncMode: opts.Fsync, maxSize: opts.MaxRecordSize, reading: newReadGate(opts.MaxReading), log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.idle = sync.NewCond(&s.mu)
	s.readLocked, s.refreshName = s.readCurrent, refresh

	s.lockFD, err = openFile(rootFD, lockFileName, unix.O_RDWR|unix.O_CREAT, 0o600)
	if err == nil {
		if st, err = sysx.Fstat(s.lockFD); err == nil {
			err = requireRegular(&st)
		}
	}
	if err == nil {
		err = checkIdentitySupport(s.lockFD)
	}
	if err == nil {
		err = checkLockProtocol(s.lockFD)
	}
	if err == nil && st.Size < lockFileSize {
		err = unix.Ftruncate(s.lockFD, lockFileSize) // sparse: a block per slot
	}
	if err == nil {
		err = s.openFence(opts.Fence)
	}
	if err != nil {
		s.closeFDs()
		return nil, &fs.PathError{Op: "open lock file", Path: label + "/" + lockFileName, Err: err}
	}
	s.recovered, err = s.recoverTemps()
	if err != nil {
		s.closeFDs()
		return nil, &fs.PathError{Op: "recover temporary files", Path: label, Err: err}
	}
	if s.recovered > 0 {
		s.log.Info("backing: removed temporary files left by a dead writer", "root", label, "count", s.recovered)
	}
	return s, nil
}

// Recovered is the number of temporary files removed at open.
func (s *Store) Recovered() int { return s.recovered }

// Fsyncs is the number of fsync calls the store has made (files and directories), for metrics and
// for tests that must see durability asked for.
func (s *Store) Fsyncs() int64 { return s.fsyncs.Load() }

// RootFD is the descriptor of the backing directory. Everything the filesystem does in the backing
// store is relative to it; it stays the store's, valid until Close.
func (s *Store) RootFD() int { return s.rootFD }

// MaxRecordSize is the bound on what the store reads of a record (0: none).
func (s *Store) MaxRecordSize() int64 { return s.maxSize }

// Close waits for operations in flight, then releases the store's descriptors (and with them its
// locks). Later operations fail with os.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return os.ErrClosed
	}
	s.closed = true
	for s.inFlight > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
	s.closeFDs()
	return nil
}

func (s *Store) closeFDs() {
	sysx.Close(s.fenceFD)
	s.fenceFD = -1
	if s.lockFD >= 0 {
		sysx.Close(s.lockFD)
		s.lockFD = -1
	}
	sysx.Close(s.rootFD)
	s.rootFD = -1
}

func (s *Store) begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	s.inFlight++
	return nil
}

func (s *Store) end() {
	s.mu.Lock()
	s.inFlight--
	if s.inFlight == 0 {
		s.idle.Broadcast()
	}
	s.mu.Unlock()
}

// Dir is a directory of the backing store as a descriptor (O_PATH or readable) and the inode number
// that names it in lock slots: a record's lock slot is derived from its directory's inode number and
// its own name, which every daemon sharing the store sees alike, however the directory was reached.
type Dir struct {
	FD  int
	Ino uint64
}

// OpenDir opens a directory below the root by its slash-separated relative path ("." for the root)
// without following any symlink. The caller closes Dir.FD.
func (s *Store) OpenDir(rel string) (Dir, error) {
	fd, err := s.OpenDirFD(rel)
	if err != nil {
		return Dir{FD: -1}, err
	}
	st, err := sysx.Fstat(fd)
	if err != nil {
		sysx.Close(fd)
		return Dir{FD: -1}, err
	}
	return Dir{FD: fd, Ino: st.Ino}, nil
}

// OpenDirFD is OpenDir for a caller that stats the directory itself (to check it is the one it
// knows): the descriptor alone, one system call fewer. The caller closes it.
func (s *Store) OpenDirFD(rel string) (int, error) {
	if err := s.begin(); err != nil {
		return -1, err
	}
	defer s.end()
	return s.openDir(rel)
}

// Snapshot is a record as read: its bytes, the stat of the file they came from, and its identity.
type Snapshot struct {
	Data     []byte
	Stat     unix.Stat_t
	Identity Identity
}

// Version is the snapshot's file version.
func (sn *Snapshot) Version() Version { return versionOf(&sn.Stat) }

// Read returns the record's current bytes and version. name is a slash-separated path relative to the
// root ("users/123.json"). A missing record gives an error satisfying errors.Is(err, fs.ErrNotExist).
// Read takes no lock: commits replace records by rename, so a reader always sees a whole version.
func (s *Store) Read(name string) ([]byte, Version, error) {
	rec, err := parseName(name)
	if err != nil {
		return nil, Version{}, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	dir, err := s.OpenDir(rec.dir)
	if err != nil {
		return nil, Version{}, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	defer sysx.Close(dir.FD)
	sn, err := s.ReadAt(dir, rec.base, nil)
	if err != nil {
		return nil, Version{}, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return sn.Data, sn.Version(), nil
}

// Access is a permission check a read makes before it reads: as Cred, access(2) Mode (R_OK, W_OK).
type Access struct {
	Cred *sysx.Cred
	Mode uint32
}

// check checks a on the open file fd with the kernel's rules (mode, owner, ACL, read-only mount).
func (a *Access) check(fd int) error {
	if a == nil || a.Cred.IsRoot() {
		return nil
	}
	return sysx.AsUser(a.Cred, func() error {
		return unix.Faccessat2(fd, "", a.Mode, unix.AT_EACCESS|unix.AT_EMPTY_PATH)
	})
}

// ReadAt reads the record name in dir whole, with its identity (stamping one on a record that has
// none), after checking access if it is not nil. A missing record gives ENOENT; a file larger than the
// store's MaxRecordSize gives EFBIG without being read; anything but a regular file is refused.
func (s *Store) ReadAt(dir Dir, name string, access *Access) (Snapshot, error) {
	sn, _, err := s.readAt(dir, name, access, false, nil)
	return sn, err
}

// Known is a record's content as its reader last read or wrote it, and the file it was in.
type Known struct {
	Version  Version
	Identity Identity
	Data     []byte
}

// unchanged reports whether fd is known's file, unchanged (see ReadKnown), with its stat.
func (k *Known) unchanged(fd int) (unix.Stat_t, bool) {
	st, err := sysx.Fstat(fd)
	return st, err == nil && k.is(&st)
}

// is reports whether st is the stat of known's file, unchanged.
func (k *Known) is(st *unix.Stat_t) bool {
	return versionOf(st) == k.Version && requireRegular(st) == nil
}

// ReadKnown is ReadAt of a name the caller has just seen holding a record (an open of a looked-up
// name): on a network filesystem, whose client may briefly not find a name that another host renamed
// a new version onto, a missing record is looked up again, as for ESTALE, before it is believed.
// When the file it finds is known's (the same device, inode, size, modification and change time), it
// returns known's data and identity without reading them again, and reused says so: a record's file
// is never changed in place by a commit (a new file replaces it), and a change of the file's content
// or of its attributes (the identity among them) moves its times. known may be nil.
//
// On a local filesystem, for a reader whose access needs no check, a stat of the name that finds
// known's file is enough: nothing is read from the file, so it need not be opened (two system calls
// fewer at every open of an unchanged record). A network filesystem's client may answer a stat from
// its attribute cache, but an open revalidates; a check of access must be made on the file found, so
// both open it.
func (s *Store) ReadKnown(dir Dir, name string, access *Access, known *Known) (sn Snapshot, reused bool, err error) {
	return s.readAt(dir, name, access, s.Fencing(), known)
}

// errNotFoundYet stands for ENOENT while ReadKnown looks a name up again.
var errNotFoundYet = fmt.Errorf("no record at the name yet: %w", unix.ESTALE)

func (s *Store) readAt(dir Dir, name string, access *Access, seen bool, known *Known) (sn Snapshot, reused bool, err error) {
	if err := checkBase(name); err != nil {
		return Snapshot{}, false, err
	}
	if err := s.begin(); err != nil {
		return Snapshot{}, false, err
	}
	defer s.end()
	if known != nil && !s.network && (access == nil || access.Cred.IsRoot()) {
		if st, err := sysx.Fstatat(dir.FD, name); err == nil && known.is(&st) {
			return Snapshot{Data: known.Data, Stat: st, Identity: known.Identity}, true, nil
		}
	}
	var short Snapshot
	err = sysx.RetryStale(dir.FD, name, func() error {
		fd, err := openFile(dir.FD, name, unix.O_RDONLY|unix.O_NOCTTY, 0)
		if err == unix.ENOENT && seen {
			return errNotFoundYet
		}
		if err != nil {
			return err
		}
		defer sysx.Close(fd)
		if err := access.check(fd); err != nil {
			return err
		}
		if known != nil {
			if st, ok := known.unchanged(fd); ok {
				sn, reused = Snapshot{Data: known.Data, Stat: st, Identity: known.Identity}, true
				return nil
			}
		}
		cur, err := s.readOpened(fd)
		if _, ok := errors.AsType[*staleSizeError](err); ok {
			short = Snapshot{Data: cur.data, Stat: cur.st, Identity: cur.id}
		}
		if err != nil {
			return err
		}
		sn, reused = Snapshot{Data: cur.data, Stat: cur.st, Identity: cur.id}, false
		return nil
	})
	if err == errNotFoundYet {
		return Snapshot{}, false, unix.ENOENT
	}
	if e, ok := errors.AsType[*staleSizeError](err); ok {
		// Past every cache's timeout: the file really is of that size (written outside mergefs).
		s.log.Warn("backing: a record's size differs from the one committed with its identity; changed outside mergefs?", "record", name, "size", e.got, "committed", e.want)
		return short, false, nil
	}
	return sn, reused, err
}

// Identify returns the stat and identity of the record name in dir (giving it an identity if it has
// none), without reading it. Anything but a regular file is refused.
func (s *Store) Identify(dir Dir, name string) (unix.Stat_t, Identity, error) {
	if err := checkBase(name); err != nil {
		return unix.Stat_t{}, Identity{}, err
	}
	if err := s.begin(); err != nil {
		return unix.Stat_t{}, Identity{}, err
	}
	defer s.end()
	var (
		st unix.Stat_t
		id Identity
	)
	err := sysx.RetryStale(dir.FD, name, func() error {
		fd, err := openFile(dir.FD, name, unix.O_RDONLY|unix.O_NOCTTY, 0)
		if err != nil {
			return err
		}
		defer sysx.Close(fd)
		if st, err = sysx.Fstat(fd); err == nil {
			err = requireRegular(&st)
		}
		if err != nil {
			return err
		}
		id, _, err = ensureIdentity(fd)
		return err
	})
	return st, id, err
}

// current is a record as read under its parent directory; fd stays open (-1 when !exists).
type current struct {
	exists bool
	fd     int
	st     unix.Stat_t
	id     Identity
	data   []byte
}

// readCurrent opens and reads the record base in dirfd. A record without an identity gets one
// (stamped with XATTR_CREATE, so that every reader and commit agrees on the first one made). With a
// *staleSizeError, cur is what was read and cur.fd is open: the caller reads again or takes it.
func (s *Store) readCurrent(dirfd int, base string) (current, error) {
	fd, err := openFile(dirfd, base, unix.O_RDONLY|unix.O_NOCTTY, 0)
	if err == unix.ENOENT {
		return current{fd: -1}, nil
	}
	if err != nil {
		return current{}, err
	}
	cur, err := s.readOpened(fd)
	if _, ok := errors.AsType[*staleSizeError](err); ok {
		return cur, err // the caller decides, and closes cur.fd
	}
	if err != nil {
		sysx.Close(fd)
		return current{}, err
	}
	return cur, nil
}

// staleSizeError: the content read of a record is not the size committed with its identity. A
// network filesystem's client can show a new file with an older size (GlusterFS's, after listing the
// directory while the file was being written on another host), so the read looks short or empty:
// the name must be looked up again (it unwraps to ESTALE).
type staleSizeError struct{ got, want int64 }

func (e *staleSizeError) Error() string {
	return fmt.Sprintf("read %d bytes of a record committed with %d", e.got, e.want)
}

func (e *staleSizeError) Unwrap() error { return unix.ESTALE }

// readOpened reads the open record fd whole, with its identity. Where fences are checked (a network
// filesystem), content not of the size committed with the identity is a *staleSizeError, with cur
// filled in as read.
func (s *Store) readOpened(fd int) (current, error) {
	st, err := sysx.Fstat(fd)
	if err == nil {
		err = requireRegular(&st)
	}
	if err == nil && s.maxSize > 0 && st.Size > s.maxSize {
		err = fmt.Errorf("record of %d bytes is larger than the limit of %d: %w", st.Size, s.maxSize, unix.EFBIG)
	}
	if err != nil {
		return current{}, err
	}
	id, size, err := ensureIdentity(fd)
	if err != nil {
		return current{}, err
	}
	limit := s.maxSize
	if limit <= 0 {
		limit = -1
	}
	s.reading.enter(st.Size)
	data, err := sysx.ReadAll(fd, st.Size, limit)
	s.reading.leave(st.Size)
	if err != nil {
		return current{}, err
	}
	cur := current{exists: true, fd: fd, st: st, id: id, data: data}
	if s.Fencing() && size >= 0 && int64(len(data)) != size {
		return cur, &staleSizeError{got: int64(len(data)), want: size}
	}
	return cur, nil
}
