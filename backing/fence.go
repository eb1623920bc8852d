package backing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

// The lock file, shared by every daemon on the backing directory, has one block per lock slot. The
// slot's record lock is an OFD write lock on the block's first byte; the block holds the slot's fence:
// what the last change made under that lock left at the record's name (its identity and generation, or
// that it is gone). A network filesystem's client may show a daemon an older version of a record than
// another host's last commit, even under the lock (GlusterFS does, with its default options: its
// metadata cache and open-behind keep a replaced file's name for about a second). The fence, read
// with O_DIRECT from a file too large for client-side caching, is always the latest; a commit checks
// that the record it read under the lock carries the fence's generation, and reads again after
// forcing the client to look the name up if not (docs/design.md, "Several hosts").
const (
	fenceBlock = 4096
	// lockFileSize is the lock file's (sparse) size: a block per slot. Also far above what a
	// network filesystem's client caches whole (GlusterFS quick-read: at most 1000 KB).
	lockFileSize = lockSlotCount * fenceBlock
	// lockProtocol is written on the lock file (lockProtocolXattr) by the first daemon and checked
	// by every other: daemons of another protocol on one backing directory would not exclude each
	// other.
	lockProtocol      = "mergefs lock file v3: 65536 slots of 4096 bytes; lock on a slot's first byte, fence in the rest; record identities with committed sizes"
	lockProtocolXattr = "trusted.mergefs.lock"
)

// fenceMagic starts a fence that has been written.
const fenceMagic = 0x3165636e6566666d // "mffence1" little-endian

// Fence states.
const (
	fenceUnknown = iota // never written (or unreadable): nothing to check against
	fencePresent        // the record with id was left at generation gen
	fenceGone           // the name was left without a record
)

type fence struct {
	state   uint8
	id, gen uint64
}

// checkLockProtocol records the lock file's protocol, or checks that another daemon recorded the same.
func checkLockProtocol(fd int) error {
	err := unix.Fsetxattr(fd, lockProtocolXattr, []byte(lockProtocol), unix.XATTR_CREATE)
	if err == nil {
		return nil
	}
	if err != unix.EEXIST {
		return fmt.Errorf("set %s: %w", lockProtocolXattr, err)
	}
	got, err := sysx.Fgetxattr(fd, lockProtocolXattr)
	if err != nil {
		return fmt.Errorf("read %s: %w", lockProtocolXattr, err)
	}
	if string(got) != lockProtocol {
		return fmt.Errorf("the lock file was made by a mergefs with another locking protocol (%q); daemons of different protocols on one backing directory would not exclude each other: %w", got, unix.EPROTO)
	}
	return nil
}

// networkFilesystems are the statfs types of backing filesystems whose clients may cache what
// another host changed: commits check fences there. FUSE covers GlusterFS, sshfs and friends.
var networkFilesystems = map[int64]string{
	0x6969:     "NFS",
	0x65735546: "FUSE",
	0xFF534D42: "CIFS",
	0xFE534D42: "SMB2",
	0x00c36400: "Ceph",
	0x47504653: "GPFS",
	0x0bd00bd0: "Lustre",
	0x6b414653: "AFS",
}

// FenceMode says whether commits check fences.
type FenceMode int

const (
	FenceAuto FenceMode = iota // on a network filesystem (statfs type)
	FenceOn
	FenceOff
)

// openFence decides whether the store checks fences and opens the lock file for them: O_DIRECT, so
// that reads bypass every cache, and O_DSYNC, so that a write is on the server before the lock is
// released (a client's write-behind ignores O_DIRECT alone).
func (s *Store) openFence(mode FenceMode) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(s.rootFD, &sfs); err != nil {
		return err
	}
	kind, network := networkFilesystems[int64(sfs.Type)]
	s.network = network
	switch mode {
	case FenceOff:
		return nil
	case FenceAuto:
		if !network {
			return nil
		}
	}
	fd, err := sysx.Reopen(s.lockFD, unix.O_RDWR|unix.O_DIRECT|unix.O_DSYNC)
	if err == unix.EINVAL {
		// No O_DIRECT here: synchronous writes still reach the server before the unlock.
		s.log.Warn("backing: the backing filesystem has no O_DIRECT; fences are read through its cache", "type", kind)
		fd, err = sysx.Reopen(s.lockFD, unix.O_RDWR|unix.O_DSYNC)
	}
	if err != nil {
		return fmt.Errorf("open the lock file for fences: %w", err)
	}
	s.fenceFD = fd
	s.fenceBuf = alignedBlock()
	s.log.Info("backing: commits check fences (a network filesystem's client may show an older record)", "type", kind)
	return nil
}

// Fencing reports whether commits check fences.
func (s *Store) Fencing() bool { return s.fenceFD >= 0 }

// alignedBlock returns a fenceBlock-sized buffer aligned for O_DIRECT.
func alignedBlock() []byte {
	buf := make([]byte, 2*fenceBlock)
	off := fenceBlock - int(uintptr(unsafe.Pointer(&buf[0]))%fenceBlock)
	if off == fenceBlock {
		off = 0
	}
	return buf[off : off+fenceBlock]
}

// readFence reads the fence of slot. The caller holds the slot's lock, and so the fence buffer (one
// per store: the in-process lock of a slot is held by one goroutine, but several slots' holders may
// read at once, so the buffer is taken under fenceMu).
func (s *Store) readFence(slot int64) (fence, error) {
	s.fenceMu.Lock()
	defer s.fenceMu.Unlock()
	buf := s.fenceBuf
	for {
		n, err := unix.Pread(s.fenceFD, buf, slot*fenceBlock)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fence{}, fmt.Errorf("read fence: %w", err)
		}
		if n < 25 || binary.LittleEndian.Uint64(buf) != fenceMagic {
			return fence{}, nil
		}
		return fence{state: buf[8], id: binary.LittleEndian.Uint64(buf[9:]), gen: binary.LittleEndian.Uint64(buf[17:])}, nil
	}
}

// writeFence writes the fence of slot (the caller holds the slot's lock).
func (s *Store) writeFence(slot int64, f fence) error {
	s.fenceMu.Lock()
	defer s.fenceMu.Unlock()
	buf := s.fenceBuf
	clear(buf)
	binary.LittleEndian.PutUint64(buf, fenceMagic)
	buf[8] = f.state
	binary.LittleEndian.PutUint64(buf[9:], f.id)
	binary.LittleEndian.PutUint64(buf[17:], f.gen)
	for {
		_, err := unix.Pwrite(s.fenceFD, buf, slot*fenceBlock)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write fence: %w", err)
		}
		return nil
	}
}

// fenceOf is the fence a record as read leaves.
func fenceOf(cur current) fence {
	if !cur.exists {
		return fence{state: fenceGone}
	}
	return fence{state: fencePresent, id: cur.id.ID, gen: cur.id.Gen}
}

// ErrStaleView reports that the backing filesystem kept showing an older version of a record than
// the fence says exists, after every refresh: nothing was written.
var ErrStaleView = errors.New("the backing filesystem keeps showing an older version of the record than another daemon committed")

// maxFenceAttempts bounds the reads of a record under its lock before a commit gives up (ErrStaleView).
const maxFenceAttempts = 5

// staleRetryDelay is the wait before the last attempts: the caches of a network filesystem's client
// (GlusterFS's metadata cache and quick-read, the kernel's FUSE entry and attribute timeouts) keep a
// name for a second.
const staleRetryDelay = 1100 * time.Millisecond

// readFenced reads the record name in dir under its lock (slot) and, when fences are checked, reads it
// again until it is at least as new as the fence says, forcing the client to look the name up between
// attempts. A missing record is believed only where the fence agrees, or after a forced refresh.
func (s *Store) readFenced(dir Dir, name string, slot int64, known *Known) (current, fence, error) {
	if s.fenceFD < 0 {
		cur, err := s.readStale(dir.FD, name, known)
		return cur, fence{}, err
	}
	f, err := s.readFence(slot)
	if err != nil {
		return current{}, f, err
	}
	var lastErr error
	for attempt := range maxFenceAttempts {
		cur, err := s.readLocked(dir.FD, name)
		_, short := errors.AsType[*staleSizeError](err)
		switch {
		case short && attempt == maxFenceAttempts-1 && fresh(cur, f, attempt):
			// Past every cache's timeout, the file still is not of its committed size: it was
			// changed outside mergefs, and this is what it holds.
			s.log.Warn("backing: a record's size differs from the one committed with its identity; changed outside mergefs?", "record", name, "err", err)
			return cur, f, nil
		case short:
			sysx.Close(cur.fd)
			lastErr = err
		case err == nil && fresh(cur, f, attempt):
			return cur, f, nil
		case err == nil:
			sysx.Close(cur.fd)
			lastErr = fmt.Errorf("read generation %d (id %#x), the fence says %d (id %#x)", cur.id.Gen, cur.id.ID, f.gen, f.id)
		case isStale(err):
			lastErr = err
		default:
			return current{}, f, err
		}
		s.refreshName(dir, name, attempt)
	}
	return current{}, f, fmt.Errorf("%w (%d attempts; last: %v): %w", ErrStaleView, maxFenceAttempts, lastErr, unix.EIO)
}

// fresh reports whether cur is the record the fence f says is at the name. Where the fence cannot
// tell (never written, another record's, the name left empty but a record there now), cur is taken
// after one forced refresh.
func fresh(cur current, f fence, attempt int) bool {
	switch {
	case f.state == fencePresent && cur.exists && cur.id.ID == f.id:
		return cur.id.Gen >= f.gen
	case f.state == fenceGone && !cur.exists:
		return true
	}
	return attempt > 0
}

// refresh makes a network filesystem's client look name up again (it may have kept a replaced file
// for it): a forced statx, then a fresh listing of the directory, then waiting for its caches to
// expire.
func refresh(dir Dir, name string, attempt int) {
	switch attempt {
	case 0:
	case 1:
		if fd, err := sysx.Openat(dir.FD, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
			_, _ = readDirents(fd)
			sysx.Close(fd)
		}
	default:
		time.Sleep(staleRetryDelay)
	}
	var x unix.Statx_t
	_ = unix.Statx(dir.FD, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &x)
}

func isStale(err error) bool { return sysx.IsStale(err) }

// readStale reads the record name in dir, retrying where the backing filesystem answers ESTALE (a
// network filesystem's client holding a replaced file for the name) after forcing a fresh look-up.
func (s *Store) readStale(dirfd int, name string, known *Known) (current, error) {
	var cur current
	err := sysx.RetryStale(dirfd, name, func() error {
		if cur.fd > 0 {
			sysx.Close(cur.fd)
		}
		var err error
		if known != nil {
			cur, err = s.readKnown(dirfd, name, known)
		} else {
			cur, err = s.readLocked(dirfd, name)
		}
		return err
	})
	if _, short := errors.AsType[*staleSizeError](err); short {
		// Past every cache's timeout: changed outside mergefs, and this is what it holds.
		s.log.Warn("backing: a record's size differs from the one committed with its identity; changed outside mergefs?", "record", name, "err", err)
		return cur, nil
	}
	return cur, err
}

// readKnown is readCurrent, with known's data and identity for known's file, unchanged (see
// ReadKnown), instead of reading them again.
func (s *Store) readKnown(dirfd int, name string, known *Known) (current, error) {
	fd, err := openFile(dirfd, name, unix.O_RDONLY|unix.O_NOCTTY, 0)
	if err == unix.ENOENT {
		return current{fd: -1}, nil
	}
	if err != nil {
		return current{}, err
	}
	if st, ok := known.unchanged(fd); ok {
		return current{exists: true, fd: fd, st: st, id: known.Identity, data: known.Data}, nil
	}
	cur, err := s.readOpened(fd)
	if err != nil {
		sysx.Close(fd)
		return current{}, err
	}
	return cur, nil
}

// UpdateFences records, for each named record whose lock the caller holds, what is at its name now:
// after an unlink or rename of records outside a commit, so that the next commit on another host does
// not take a stale view for the latest one.
func (s *Store) UpdateFences(refs ...RecordRef) error {
	if s.fenceFD < 0 {
		return nil
	}
	for _, r := range refs {
		cur, err := s.readStale(r.Dir.FD, r.Name, nil)
		if err != nil && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		sysx.Close(cur.fd)
		if err := s.writeFence(lockSlot(r.Dir.Ino, r.Name), fenceOf(cur)); err != nil {
			return err
		}
	}
	return nil
}
