package backing

import (
	"path"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

// recoverTemps walks the backing tree and removes temporary files that no live writer holds, returning
// how many it removed. It never follows a symlink. A subdirectory it cannot open is logged and skipped:
// one unreadable directory must not keep the store from opening.
func (s *Store) recoverTemps() (int, error) {
	fd, err := s.openDir(".")
	if err != nil {
		return 0, err
	}
	return s.recoverDir(fd, ".")
}

// recoverDir takes ownership of dirfd.
func (s *Store) recoverDir(dirfd int, rel string) (int, error) {
	entries, err := readDirents(dirfd)
	if err != nil {
		sysx.Close(dirfd)
		return 0, err
	}
	removed := 0
	var subdirs []string
	for _, e := range entries {
		typ := e.typ
		if typ == unix.DT_UNKNOWN {
			var st unix.Stat_t
			if err := unix.Fstatat(dirfd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue // gone meanwhile
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				typ = unix.DT_DIR
			case unix.S_IFREG:
				typ = unix.DT_REG
			}
		}
		switch {
		case typ == unix.DT_DIR:
			subdirs = append(subdirs, e.name)
		case typ == unix.DT_REG && isTempName(e.name):
			ok, err := removeIfAbandoned(dirfd, e.name)
			if err != nil {
				s.log.Warn("backing: cannot check temporary file", "path", path.Join(rel, e.name), "err", err)
			}
			if ok {
				removed++
			}
		}
	}
	// Descend after the scan, so that only one descriptor per level is open at a time.
	for _, name := range subdirs {
		sub, err := openFile(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			s.log.Warn("backing: recovery skips a directory", "path", path.Join(rel, name), "err", err)
			continue
		}
		n, err := s.recoverDir(sub, path.Join(rel, name))
		removed += n
		if err != nil {
			s.log.Warn("backing: recovery skips a directory", "path", path.Join(rel, name), "err", err)
		}
	}
	sysx.Close(dirfd)
	return removed, nil
}

// removeIfAbandoned removes the temporary file name in dirfd if no live writer holds its lock. A
// writer keeps a write lock on its temporary file until it has renamed it; our read lock is granted only
// if there is no such writer (a dead process's locks are gone).
func removeIfAbandoned(dirfd int, name string) (bool, error) {
	fd, err := openFile(dirfd, name, unix.O_RDONLY, 0)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer sysx.Close(fd)
	switch err := ofdLock(fd, unix.F_RDLCK, 0, 0, false); err {
	case nil:
	case unix.EAGAIN, unix.EACCES:
		return false, nil // a live writer
	default:
		return false, err
	}
	// The name must still be the file we locked: the writer may have renamed it over its record and
	// closed it after our open (the file we hold is then a record).
	st, err := sysx.Fstat(fd)
	if err != nil {
		return false, err
	}
	same, err := sameFile(dirfd, name, &st)
	if err == unix.ENOENT || (err == nil && !same) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		if err == unix.ENOENT {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
