package backing

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Reserved names. Everything starting with reservedPrefix belongs to the store, which leaves room for
// future files without another change to what the filesystem layer hides.
const (
	reservedPrefix = ".mergefs."
	lockFileName   = reservedPrefix + "lock"
	tempPrefix     = reservedPrefix + "tmp."
)

// IsReserved reports whether a directory entry name belongs to the store (lock file, temporaries);
// the filesystem layer hides these from workers.
func IsReserved(name string) bool {
	return strings.HasPrefix(name, reservedPrefix)
}

func isTempName(name string) bool {
	return strings.HasPrefix(name, tempPrefix)
}

// recordName is a validated, cleaned name relative to the root.
type recordName struct {
	clean string // "users/123.json"
	dir   string // "users", or "." at the root
	base  string // "123.json"
}

// parseName validates a slash-separated name relative to the root. The errors wrap errnos so that the
// filesystem layer can map them: EINVAL (malformed), EXDEV (escapes the root), EPERM (reserved name).
func parseName(name string) (recordName, error) {
	switch {
	case name == "":
		return recordName{}, fmt.Errorf("empty name: %w", unix.EINVAL)
	case strings.IndexByte(name, 0) >= 0:
		return recordName{}, fmt.Errorf("name contains a NUL byte: %w", unix.EINVAL)
	case path.IsAbs(name):
		return recordName{}, fmt.Errorf("absolute name, want one relative to the backing root: %w", unix.EXDEV)
	}
	clean := path.Clean(name)
	if clean == "." {
		return recordName{}, fmt.Errorf("name refers to the backing root itself: %w", unix.EINVAL)
	}
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return recordName{}, fmt.Errorf("name escapes the backing root: %w", unix.EXDEV)
	}
	for _, part := range strings.Split(clean, "/") {
		if IsReserved(part) {
			return recordName{}, fmt.Errorf("%q is reserved for the backing store: %w", part, unix.EPERM)
		}
	}
	return recordName{clean: clean, dir: path.Dir(clean), base: path.Base(clean)}, nil
}

// checkBase validates one directory entry name: the name of a record in a directory.
func checkBase(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%q is not a file name: %w", name, unix.EINVAL)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%q is not a single file name: %w", name, unix.EINVAL)
	case IsReserved(name):
		return fmt.Errorf("%q is reserved for the backing store: %w", name, unix.EPERM)
	}
	return nil
}

// openat2 can fail with EAGAIN when a rename or mount elsewhere races with a RESOLVE_BENEATH lookup;
// the kernel asks for a retry. Bound it so that a pathological rename storm becomes an error, not a spin.
const maxResolveRetries = 64

// openDir opens a directory below the root (dir as from parseName) without following any symlink.
func (s *Store) openDir(dir string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	var err error
	for range maxResolveRetries {
		var fd int
		fd, err = unix.Openat2(s.rootFD, dir, &how)
		if err == nil {
			return fd, nil
		}
		if err != unix.EINTR && err != unix.EAGAIN {
			break
		}
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("directory %q: a symbolic link on the way is refused: %w", dir, err)
	case errors.Is(err, unix.EXDEV):
		return -1, fmt.Errorf("directory %q escapes the backing root: %w", dir, err)
	case errors.Is(err, unix.ENOSYS):
		return -1, fmt.Errorf("openat2 is unavailable (Linux 5.6 or later needed to keep paths beneath the root): %w", err)
	}
	return -1, fmt.Errorf("open directory %q: %w", dir, err)
}

// openFile opens the final component name in dirfd. O_NOFOLLOW refuses a symlink; O_NONBLOCK keeps a
// FIFO put in place of a record from blocking the daemon (callers check that the file is regular).
func openFile(dirfd int, name string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, perm)
		switch {
		case err == nil:
			return fd, nil
		case err == unix.EINTR:
			continue
		case err == unix.ELOOP:
			return -1, fmt.Errorf("%q is a symbolic link, refused: %w", name, err)
		}
		return -1, err
	}
}
