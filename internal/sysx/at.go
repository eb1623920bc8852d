package sysx

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ProcPath names the object behind descriptor fd: opening, chmod-ing or reading the extended attributes
// of /proc/self/fd/N acts on exactly that object (a "magic link"), whatever now sits at its old name.
// It works for O_PATH descriptors, on which fchmod and fgetxattr fail with EBADF.
func ProcPath(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}

// ProcChild names the entry name in the directory behind dirfd, without following it if it is a
// symlink when used with the l* calls (lgetxattr and friends): the way to reach a symlink's own
// extended attributes relative to a directory descriptor.
func ProcChild(dirfd int, name string) string {
	return ProcPath(dirfd) + "/" + name
}

// Close closes fd, ignoring negative descriptors. Linux releases the descriptor even when close reports
// EINTR; retrying could close a descriptor reused meanwhile.
func Close(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

// Fstat is fstat(2), retried on EINTR.
func Fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	for {
		err := unix.Fstat(fd, &st)
		if err != unix.EINTR {
			return st, err
		}
	}
}

// Statx is statx(2) of name in dirfd without following a final symlink (an empty name: dirfd itself,
// which works for O_PATH descriptors), retried on EINTR: the attributes as fstatat(2) reports them,
// and the birth time in ns since the epoch (0 where the filesystem keeps none).
func Statx(dirfd int, name string) (st unix.Stat_t, birth uint64, err error) {
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var x unix.Statx_t
	for {
		err = unix.Statx(dirfd, name, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return st, 0, err
		}
	}
	if x.Mask&unix.STATX_BTIME != 0 && (x.Btime.Sec != 0 || x.Btime.Nsec != 0) {
		birth = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
	}
	st = unix.Stat_t{
		Dev: unix.Mkdev(x.Dev_major, x.Dev_minor), Ino: x.Ino, Nlink: uint64(x.Nlink), Mode: uint32(x.Mode),
		Uid: x.Uid, Gid: x.Gid, Rdev: unix.Mkdev(x.Rdev_major, x.Rdev_minor), Size: int64(x.Size),
		Blksize: int64(x.Blksize), Blocks: int64(x.Blocks),
		Atim: unix.Timespec{Sec: x.Atime.Sec, Nsec: int64(x.Atime.Nsec)},
		Mtim: unix.Timespec{Sec: x.Mtime.Sec, Nsec: int64(x.Mtime.Nsec)},
		Ctim: unix.Timespec{Sec: x.Ctime.Sec, Nsec: int64(x.Ctime.Nsec)},
	}
	return st, birth, nil
}

// Fstatat is fstatat(2) without following a final symlink, retried on EINTR. An empty name stats dirfd
// itself (AT_EMPTY_PATH), which works for O_PATH descriptors.
func Fstatat(dirfd int, name string) (unix.Stat_t, error) {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var st unix.Stat_t
	for {
		err := unix.Fstatat(dirfd, name, &st, flags)
		if err != unix.EINTR {
			return st, err
		}
	}
}

// Openat opens name in dirfd, never following a symlink there (ELOOP), close-on-exec. Retried on EINTR.
func Openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// Reopen opens the object behind fd (an O_PATH descriptor, say) anew with flags. The kernel checks the
// current thread's permissions against it, as for an open by name.
func Reopen(fd int, flags int) (int, error) {
	for {
		nfd, err := unix.Open(ProcPath(fd), flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return nfd, err
		}
	}
}

// The maximum size of an extended attribute value and of a list of names (XATTR_SIZE_MAX, XATTR_LIST_MAX).
const (
	XattrSizeMax = 64 << 10
	XattrListMax = 64 << 10
)

// Getxattr reads attribute name of the object at path (a ProcPath, usually) whole, without following a
// final symlink when nofollow is set.
func Getxattr(path, name string, nofollow bool) ([]byte, error) {
	get := unix.Getxattr
	if nofollow {
		get = unix.Lgetxattr
	}
	return readXattr(func(buf []byte) (int, error) { return get(path, name, buf) })
}

// Fgetxattr reads attribute name of the open file fd whole.
func Fgetxattr(fd int, name string) ([]byte, error) {
	return readXattr(func(buf []byte) (int, error) { return unix.Fgetxattr(fd, name, buf) })
}

// readXattr calls get with a buffer until the value fits (ERANGE: a larger one) or it fails.
func readXattr(get func(buf []byte) (int, error)) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := get(buf)
		switch {
		case err == nil:
			return buf[:n], nil
		case err == unix.ERANGE && len(buf) < XattrSizeMax:
			buf = make([]byte, XattrSizeMax)
		case err == unix.EINTR:
		default:
			return nil, err
		}
	}
}

// Flistxattr lists the attribute names of the open file fd.
func Flistxattr(fd int) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Flistxattr(fd, buf)
		switch {
		case err == nil:
			return splitNames(buf[:n]), nil
		case err == unix.ERANGE && len(buf) < XattrListMax:
			buf = make([]byte, XattrListMax)
		case err == unix.EINTR:
		default:
			return nil, err
		}
	}
}

func splitNames(buf []byte) []string {
	var names []string
	start := 0
	for i, c := range buf {
		if c == 0 {
			if i > start {
				names = append(names, string(buf[start:i]))
			}
			start = i + 1
		}
	}
	return names
}

// NotSupported reports whether err says that a file system or object does not support an operation
// (extended attributes on a symlink, say).
func NotSupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// ReadAll reads fd from its current offset to EOF; sizeHint (from fstat) sizes the first buffer. More
// than limit bytes (a file that grew after its fstat) gives EFBIG; a negative limit means none.
func ReadAll(fd int, sizeHint, limit int64) ([]byte, error) {
	capacity := max(sizeHint+1, 512)
	if limit >= 0 {
		capacity = min(capacity, limit+1)
	}
	buf := make([]byte, 0, capacity)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, err
		case n == 0:
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if limit >= 0 && int64(len(buf)) > limit {
			return nil, fmt.Errorf("file grew past %d bytes while it was read: %w", limit, unix.EFBIG)
		}
	}
}

// IsStale reports whether err says that a network filesystem's client holds a file handle its server
// no longer knows (ESTALE, or EBADFD from some clients): the name must be looked up again.
func IsStale(err error) bool {
	return errors.Is(err, unix.ESTALE) || errors.Is(err, unix.EBADFD)
}

// staleDelays are RetryStale's waits after its first two retries: a GlusterFS client keeps answering
// ESTALE for a name replaced on another host until its caches time out (about a second by default).
var staleDelays = []time.Duration{0, 0, 20 * time.Millisecond, 80 * time.Millisecond, 300 * time.Millisecond, 1200 * time.Millisecond}

// RetryStale runs fn, and again while it fails with a stale handle (IsStale), after making the
// client look name up in dirfd afresh: a statx with AT_STATX_FORCE_SYNC, then also a listing of the
// directory, then waits growing to about 1.6 s in all. ESTALE from the backing filesystem is the
// daemon's business, never its callers'.
func RetryStale(dirfd int, name string, fn func() error) error {
	err := fn()
	for i := 0; i < len(staleDelays) && IsStale(err); i++ {
		time.Sleep(staleDelays[i])
		if i >= 1 {
			listDir(dirfd)
		}
		var x unix.Statx_t
		_ = unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &x)
		err = fn()
	}
	return err
}

// listDir reads the directory dirfd (a fresh descriptor of it) to its end, for what a network
// filesystem's client learns from a listing.
func listDir(dirfd int) {
	fd, err := Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return
	}
	defer Close(fd)
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
	}
}
