package backing

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
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
	lockFD    int
	fsyncMode FsyncPolicy
	log       *slog.Logger
	slots     slotLocks
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
	st, err := fstat(rootFD)
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		err = unix.ENOTDIR
	}
	if err != nil {
		closeFD(rootFD)
		return nil, &fs.PathError{Op: "open backing store", Path: label, Err: err}
	}
	s := &Store{rootFD: rootFD, lockFD: -1, fsyncMode: opts.Fsync, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.idle = sync.NewCond(&s.mu)

	s.lockFD, err = openFile(rootFD, lockFileName, unix.O_RDWR|unix.O_CREAT, 0o600)
	if err == nil {
		if st, err = fstat(s.lockFD); err == nil {
			err = requireRegular(&st)
		}
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
	if s.lockFD >= 0 {
		closeFD(s.lockFD)
		s.lockFD = -1
	}
	closeFD(s.rootFD)
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

// Read returns the record's current bytes and version. name is a slash-separated path relative to the
// root ("users/123.json"). A missing record gives an error satisfying errors.Is(err, fs.ErrNotExist).
// Read takes no lock: commits replace records by rename, so a reader always sees a whole version.
func (s *Store) Read(name string) ([]byte, Version, error) {
	data, v, err := s.read(name)
	if err != nil {
		return nil, Version{}, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return data, v, nil
}

func (s *Store) read(name string) ([]byte, Version, error) {
	rec, err := parseName(name)
	if err != nil {
		return nil, Version{}, err
	}
	if err := s.begin(); err != nil {
		return nil, Version{}, err
	}
	defer s.end()
	dirfd, err := s.openDir(rec.dir)
	if err != nil {
		return nil, Version{}, err
	}
	defer closeFD(dirfd)
	cur, err := readCurrent(dirfd, rec.base)
	if err != nil {
		return nil, Version{}, err
	}
	defer closeFD(cur.fd)
	if !cur.exists {
		return nil, Version{}, unix.ENOENT
	}
	return cur.data, versionOf(&cur.st), nil
}

// current is a record as read under its parent directory; fd stays open (-1 when !exists).
type current struct {
	exists bool
	fd     int
	st     unix.Stat_t
	data   []byte
}

func readCurrent(dirfd int, base string) (current, error) {
	fd, err := openFile(dirfd, base, unix.O_RDONLY, 0)
	if err == unix.ENOENT {
		return current{fd: -1}, nil
	}
	if err != nil {
		return current{}, err
	}
	st, err := fstat(fd)
	if err == nil {
		err = requireRegular(&st)
	}
	var data []byte
	if err == nil {
		data, err = readAll(fd, st.Size)
	}
	if err != nil {
		closeFD(fd)
		return current{}, err
	}
	return current{exists: true, fd: fd, st: st, data: data}, nil
}
