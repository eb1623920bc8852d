package backing

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"time"

	"golang.org/x/sys/unix"
)

// Commit describes one atomic replacement of a record.
type Commit struct {
	// Merge gets theirs (the record's bytes now; exists=false if there is no record) and returns the
	// bytes to write. An error from Merge aborts the commit: nothing is written, the error is returned
	// (wrapped, errors.Is works). Merge runs under the record's lock: it must not commit to the store.
	Merge func(theirs []byte, exists bool) ([]byte, error)
	// Mode/Uid/Gid for a new record (an existing record keeps its own mode and owner). The mode is
	// applied as given (no umask; 0 means 0000); set-ID and sticky bits may be given as fs.ModeSetuid
	// etc. or as raw 0o7000 bits. Uid/Gid -1: as the kernel creates the file (the daemon's, or the
	// directory's group under a set-group-ID directory).
	Mode     fs.FileMode
	Uid, Gid int
	// Sync: fsync file and directory before returning (an application fsync), whatever the policy.
	Sync bool
	// Source, if set, names an existing file (relative path) that is being renamed onto name: the
	// merged bytes are written into Source in place (it keeps its inode, mode, owner), fsynced, then
	// Source is renamed over name -- all under name's lock (and Source's, which is taken too) -- so
	// kernel, FUSE inode tree and backing dir agree.
	Source string
}

// CommitResult describes a successful commit. On error only Wait is meaningful.
type CommitResult struct {
	Version   Version       // of the record after the commit
	Created   bool          // no record existed before
	Unchanged bool          // Merge returned bytes identical to theirs and the write was skipped (only when Source == "")
	Wait      time.Duration // time spent waiting for the record lock (for metrics)
}

// Commit takes the record's lock (in-process, then cross-process), reads theirs, calls Merge, writes a
// temporary file in the same directory (reserved name), sets mode and owner, fsyncs if asked or by
// policy, renames it over the record, and fsyncs the directory if asked or by policy.
//
// A ctx that ends while the commit waits for the in-process lock aborts it; once the lock is held, ctx
// is no longer consulted and the commit completes. An error after the rename (a failed directory fsync)
// means the record was replaced but its durability is not confirmed.
func (s *Store) Commit(ctx context.Context, name string, c Commit) (CommitResult, error) {
	res, err := s.commit(ctx, name, c)
	if err != nil {
		return CommitResult{Wait: res.Wait}, &fs.PathError{Op: "commit", Path: name, Err: err}
	}
	return res, nil
}

// ownership is what a replacement file must carry; -1 ids leave the file's own.
type ownership struct {
	mode     uint32
	uid, gid int
}

func (s *Store) commit(ctx context.Context, name string, c Commit) (res CommitResult, err error) {
	if c.Merge == nil {
		return res, fmt.Errorf("no Merge callback: %w", unix.EINVAL)
	}
	rec, err := parseName(name)
	if err != nil {
		return res, err
	}
	slots := []int64{lockSlot(rec.clean)}
	var src recordName
	if c.Source != "" {
		if src, err = parseName(c.Source); err != nil {
			return res, fmt.Errorf("source %q: %w", c.Source, err)
		}
		if src.clean == rec.clean {
			return res, fmt.Errorf("source %q is the record itself: %w", c.Source, unix.EINVAL)
		}
		// A source that is itself a record must not be replaced by its own commit while we write it.
		slots = append(slots, lockSlot(src.clean))
	}
	if err := s.begin(); err != nil {
		return res, err
	}
	defer s.end()
	if err := ctx.Err(); err != nil {
		return res, err
	}

	start := time.Now()
	release, err := s.lockSlots(ctx, slots)
	res.Wait = time.Since(start)
	if err != nil {
		return res, err
	}
	defer release()
	// From here on ctx is not consulted: a commit that has started completes.

	dirfd, err := s.openDir(rec.dir)
	if err != nil {
		return res, err
	}
	defer closeFD(dirfd)
	theirs, err := readCurrent(dirfd, rec.base)
	if err != nil {
		return res, err
	}
	defer func() { closeFD(theirs.fd) }()

	srcDirFD, srcFD := -1, -1
	defer func() { closeFD(srcFD); closeFD(srcDirFD) }()
	if c.Source != "" {
		if srcDirFD, err = s.openDir(src.dir); err != nil {
			return res, fmt.Errorf("source: %w", err)
		}
		if srcFD, err = openFile(srcDirFD, src.base, unix.O_RDWR, 0); err != nil {
			return res, fmt.Errorf("source %q: %w", c.Source, err)
		}
		st, err := fstat(srcFD)
		if err == nil {
			err = requireRegular(&st)
		}
		if err != nil {
			return res, fmt.Errorf("source %q: %w", c.Source, err)
		}
	}

	merged, err := c.Merge(theirs.data, theirs.exists)
	if err != nil {
		return res, fmt.Errorf("merge: %w", err)
	}
	sync := c.Sync || s.fsyncMode == FsyncAlways
	res.Created = !theirs.exists
	unchanged := c.Source == "" && theirs.exists && bytes.Equal(merged, theirs.data)
	if !unchanged {
		// Not needed any more; and an NFS client would "silly-rename" a file it still has open when
		// it is renamed over, leaving a .nfsXXXX file behind until the close.
		closeFD(theirs.fd)
		theirs.fd = -1
	}

	if c.Source != "" {
		res.Version, err = s.replaceFromSource(srcDirFD, src, srcFD, dirfd, rec, merged, sync)
		return res, err
	}
	if unchanged {
		// Nothing to write; an fsync still has to make what is there durable.
		if sync {
			if err := s.fsync(theirs.fd); err != nil {
				return res, fmt.Errorf("fsync: %w", err)
			}
			if err := s.fsync(dirfd); err != nil {
				return res, fmt.Errorf("fsync directory: %w", err)
			}
		}
		res.Unchanged = true
		res.Version = versionOf(&theirs.st)
		return res, nil
	}

	own := ownership{mode: unixMode(c.Mode), uid: c.Uid, gid: c.Gid}
	if theirs.exists {
		own = ownership{mode: theirs.st.Mode & 0o7777, uid: int(theirs.st.Uid), gid: int(theirs.st.Gid)}
	}
	res.Version, err = s.replaceWithTemp(dirfd, rec.base, merged, own, sync)
	return res, err
}

// replaceWithTemp writes data to a new temporary file in dirfd and renames it over base.
func (s *Store) replaceWithTemp(dirfd int, base string, data []byte, own ownership, sync bool) (Version, error) {
	fd, tmp, err := s.createTemp(dirfd)
	if err != nil {
		return Version{}, err
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = unix.Unlinkat(dirfd, tmp, 0)
		}
		// Closing drops the temporary file's lock, now that recovery can no longer find it by name.
		closeFD(fd)
	}()

	if err := writeAllAt(fd, data); err != nil {
		return Version{}, fmt.Errorf("write temporary file: %w", err)
	}
	if err := s.setOwnership(fd, own); err != nil {
		return Version{}, err
	}
	if sync {
		if err := s.fsync(fd); err != nil {
			return Version{}, fmt.Errorf("fsync temporary file: %w", err)
		}
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, base); err != nil {
		return Version{}, fmt.Errorf("rename temporary file over %q: %w", base, err)
	}
	renamed = true
	if sync {
		if err := s.fsync(dirfd); err != nil {
			return Version{}, fmt.Errorf("fsync directory: %w", err)
		}
	}
	// After the rename: it changes the ctime on some filesystems, and Read must see the same version.
	st, err := fstat(fd)
	if err != nil {
		return Version{}, err
	}
	return versionOf(&st), nil
}

// replaceFromSource writes data into the source file in place, fsyncs it, and renames it over the
// record. If the daemon dies before the rename, the source holds the merged bytes and the record is
// untouched.
func (s *Store) replaceFromSource(srcDirFD int, src recordName, srcFD, dirfd int, rec recordName, data []byte, sync bool) (Version, error) {
	if err := writeAllAt(srcFD, data); err != nil {
		return Version{}, fmt.Errorf("write source %q: %w", src.clean, err)
	}
	if err := ftruncate(srcFD, int64(len(data))); err != nil {
		return Version{}, fmt.Errorf("truncate source %q: %w", src.clean, err)
	}
	if err := s.fsync(srcFD); err != nil {
		return Version{}, fmt.Errorf("fsync source %q: %w", src.clean, err)
	}
	if err := unix.Renameat(srcDirFD, src.base, dirfd, rec.base); err != nil {
		return Version{}, fmt.Errorf("rename source %q over %q: %w", src.clean, rec.clean, err)
	}
	if sync {
		if err := s.fsync(dirfd); err != nil {
			return Version{}, fmt.Errorf("fsync directory: %w", err)
		}
		if src.dir != rec.dir {
			if err := s.fsync(srcDirFD); err != nil {
				return Version{}, fmt.Errorf("fsync source directory: %w", err)
			}
		}
	}
	st, err := fstat(srcFD)
	if err != nil {
		return Version{}, err
	}
	return versionOf(&st), nil
}

// maxTempAttempts bounds retries when a name collides or recovery claims a fresh temporary file.
const maxTempAttempts = 8

// createTemp creates a temporary file in dirfd and returns it write-locked (see the package comment).
func (s *Store) createTemp(dirfd int) (fd int, name string, err error) {
	for range maxTempAttempts {
		name = fmt.Sprintf("%s%016x", tempPrefix, rand.Uint64())
		fd, err = openFile(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return -1, "", fmt.Errorf("create temporary file: %w", err)
		}
		err = ofdLock(fd, unix.F_WRLCK, 0, 0, false)
		if err == nil {
			// Recovery in another process may have locked and removed the file between our create
			// and our lock; then the name is gone or is no longer this file.
			same, serr := sameFile(dirfd, name, fd)
			if same {
				return fd, name, nil
			}
			closeFD(fd)
			if serr != nil && serr != unix.ENOENT {
				return -1, "", fmt.Errorf("check temporary file: %w", serr)
			}
			continue
		}
		closeFD(fd)
		// The name is ours alone (random, O_EXCL), so removing it by name cannot hit another file.
		_ = unix.Unlinkat(dirfd, name, 0)
		if err != unix.EAGAIN && err != unix.EACCES {
			return -1, "", fmt.Errorf("lock temporary file: %w", err)
		}
	}
	return -1, "", fmt.Errorf("create temporary file: gave up after %d attempts (name collisions or concurrent recovery): %w", maxTempAttempts, unix.EAGAIN)
}

func sameFile(dirfd int, name string, fd int) (bool, error) {
	var byName unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &byName, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, err
	}
	byFD, err := fstat(fd)
	if err != nil {
		return false, err
	}
	return byName.Dev == byFD.Dev && byName.Ino == byFD.Ino, nil
}

// setOwnership gives fd the mode and owner of own. A daemon that is not root cannot give a file away;
// it then logs and keeps its own ownership rather than refuse every commit to another user's record.
func (s *Store) setOwnership(fd int, own ownership) error {
	st, err := fstat(fd)
	if err != nil {
		return err
	}
	uid, gid := -1, -1
	if own.uid >= 0 && uint32(own.uid) != st.Uid {
		uid = own.uid
	}
	if own.gid >= 0 && uint32(own.gid) != st.Gid {
		gid = own.gid
	}
	if uid != -1 || gid != -1 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			if err != unix.EPERM || unix.Geteuid() == 0 {
				return fmt.Errorf("chown temporary file to %d:%d: %w", own.uid, own.gid, err)
			}
			s.log.Warn("backing: cannot keep the record's owner without root", "uid", own.uid, "gid", own.gid, "err", err)
		}
	}
	// After chown, which clears the set-user-ID and set-group-ID bits.
	if err := unix.Fchmod(fd, own.mode); err != nil {
		return fmt.Errorf("chmod temporary file to %#o: %w", own.mode, err)
	}
	return nil
}
