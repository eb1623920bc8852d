package backing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

// Commit describes one atomic replacement of a record.
type Commit struct {
	// Merge gets theirs (the record's bytes now; exists=false if there is no record) and returns the
	// bytes to write. An error from Merge aborts the commit: nothing is written, the error is returned
	// (wrapped, errors.Is works). Merge runs under the record's lock: it must not commit to the store.
	Merge func(theirs []byte, exists bool) ([]byte, error)
	// Expect is the ID of the record the writer opened. If the name now holds another record, or none,
	// the record was deleted (and perhaps re-created) since: the commit fails with ErrRecordChanged and
	// nothing is written. 0 means the writer's record is new: a record found at the name was made by
	// another creator meanwhile, and the commit merges into it (and reports its identity).
	Expect uint64
	// NewID is the ID a record created by this commit gets (0: a fresh one).
	NewID uint64
	// Writer is whose permission the commit needs: to write the record as it is now (mode, owner,
	// ACL, as the kernel checks an open for writing), or, for a new record, to create it in its
	// directory, which it is then created as (owner, group of a set-group-ID directory, inherited
	// default ACL). nil: the daemon itself, no check.
	Writer *sysx.Cred
	// Mode of a record this commit creates. It is applied as given: the daemon runs with umask 0, and
	// a mode from the kernel already has the caller's umask applied. Set-ID and sticky bits may be
	// given as fs.ModeSetuid etc. or as raw 0o7000 bits.
	Mode fs.FileMode
	// Sync: fsync file and directory before returning (an application fsync), whatever the policy.
	Sync bool
	// Source, if set, is a file being renamed onto the record (the write-a-temporary-then-rename
	// pattern). A rename onto a record is a write into it: the merged bytes go into a new file that
	// keeps the record's identity, owner, mode and extended attributes, and then the source is removed
	// (as Writer, who must be allowed to remove it). Onto a name with no record, the source itself is
	// renamed into place (as Writer) and becomes the record.
	Source *Source
	// Known, if not nil, is what the committer believes the record holds: when the record's file is
	// that one, unchanged (see ReadKnown), theirs is known's data and is not read again. Not used
	// where commits check fences (another host's client may show an older file).
	Known *Known
	// Committed, if not nil, is called with the result of a commit that wrote the record, while the
	// record's lock is still held: the next commit, which may take the lock as soon as it is
	// released, then finds what Committed recorded (mergefs's own note of the record's content).
	// It must not use the store. Of a group of commits made in one replacement (see CommitAt), only
	// the last one that changed the record is called: the record holds what its Merge returned.
	Committed func(CommitResult)

	// split, set by Split: rewrite a record whose inode has other names, under a new identity.
	split *bool
}

// Source is the file a rename commit takes its content from.
type Source struct {
	// Dir is the source's directory; nil means Name is a path relative to the root.
	Dir  *Dir
	Name string
	// Ino, if not 0, is the inode the renamer's node refers to: a different file at Name fails the
	// commit with ErrRecordChanged.
	Ino uint64
	// Data is the source's content as the renamer's merge saw it (mine). If the source's current
	// content differs, it changed after the merge was prepared, and the commit fails with
	// ErrRecordChanged. nil: not checked.
	Data []byte
}

// CommitResult describes a successful commit. On error only Wait is meaningful.
type CommitResult struct {
	Version   Version       // of the record after the commit
	Birth     uint64        // birth time of the record's file after a write, ns (0: not known)
	Identity  Identity      // of the record after the commit
	Created   bool          // no record existed before
	Unchanged bool          // Merge returned bytes identical to theirs and the write was skipped
	Grouped   bool          // made in one replacement with other commits (see CommitAt)
	Wait      time.Duration // time spent waiting for the record lock (for metrics)
}

// ErrRecordChanged reports that the record a writer opened is no longer at its name: it was removed
// or replaced by another record since. Nothing was written.
var ErrRecordChanged = fmt.Errorf("the record was removed or replaced since the writer opened it: %w", unix.ESTALE)

// Commit is CommitAt for a record named by its slash-separated path relative to the root.
func (s *Store) Commit(ctx context.Context, name string, c Commit) (CommitResult, error) {
	rec, err := parseName(name)
	if err != nil {
		return CommitResult{}, &fs.PathError{Op: "commit", Path: name, Err: err}
	}
	dir, err := s.OpenDir(rec.dir)
	if err != nil {
		return CommitResult{}, &fs.PathError{Op: "commit", Path: name, Err: err}
	}
	defer sysx.Close(dir.FD)
	return s.CommitAt(ctx, dir, rec.base, c)
}

// CommitAt takes the record's lock (in-process, then cross-process), reads theirs, checks the record's
// identity and the writer's permission, calls Merge, writes a temporary file in the same directory
// (reserved name) with the record's identity, owner, mode and extended attributes, fsyncs if asked or
// by policy, renames it over the record, and fsyncs the directory if asked or by policy.
//
// Commits onto an existing record (Expect set, no Source) that wait for its lock while another commit
// holds it are made together by the next holder, in the order they came: each Merge gets what the
// ones before it returned, and one temporary file replaces the record for all of them (group.go).
// Each gets its own error; those that succeed share the result (one Version, one Identity: the
// generation counts replacements, not commits).
//
// A ctx that ends while the commit waits for the in-process lock aborts it, unless the holder of the
// lock took it over already: it is then made, and its result returned. Once the lock is held, ctx
// is no longer consulted and the commit completes. An error after the rename (a failed directory fsync)
// means the record was replaced but its durability is not confirmed.
func (s *Store) CommitAt(ctx context.Context, dir Dir, name string, c Commit) (CommitResult, error) {
	res, err := s.commit(ctx, dir, name, c)
	if err != nil {
		return CommitResult{Wait: res.Wait}, &fs.PathError{Op: "commit", Path: name, Err: err}
	}
	return res, nil
}

// ownership is what a replacement file must carry.
type ownership struct {
	mode     uint32
	uid, gid uint32
}

// maxCreateRaces bounds how often a new record's commit starts again because a record appeared at its
// name between the read and the rename (only a writer that bypasses mergefs can do that).
const maxCreateRaces = 3

func (s *Store) commit(ctx context.Context, dir Dir, name string, c Commit) (res CommitResult, err error) {
	if c.Merge == nil {
		return res, fmt.Errorf("no Merge callback: %w", unix.EINVAL)
	}
	if err := checkBase(name); err != nil {
		return res, err
	}
	refs := []RecordRef{{Dir: dir, Name: name}}
	var src *openSource
	if c.Source != nil {
		if src, err = s.openSourceDir(c.Source); err != nil {
			return res, err
		}
		defer src.close()
		if src.dir.Ino == dir.Ino && src.name == name {
			return res, fmt.Errorf("source %q is the record itself: %w", name, unix.EINVAL)
		}
		// A source that is itself a record must not be replaced by its own commit meanwhile.
		refs = append(refs, RecordRef{Dir: src.dir, Name: src.name})
	}
	if err := s.begin(); err != nil {
		return res, err
	}
	defer s.end()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	slots := make([]int64, len(refs))
	for i, r := range refs {
		slots[i] = lockSlot(r.Dir.Ino, r.Name)
	}
	// A commit onto an existing record may be taken over by the commit holding the lock
	// (group.go): it then waits for that one to finish it rather than for the lock.
	var me *waiter
	var takenOver <-chan struct{}
	var key groupKey
	if src == nil && c.split == nil && c.Expect != 0 {
		if key, err = groupKeyOf(dir, name, c.Expect); err != nil {
			return res, err
		}
		me = s.groups.join(key, c)
		takenOver = me.done
	}
	start := time.Now()
	release, err := s.lockSlots(ctx, slots, takenOver)
	res.Wait = time.Since(start)
	if err != nil {
		if me != nil && (err == errTakenOver || !s.groups.leave(key, me)) {
			<-me.done
			return me.result(res.Wait)
		}
		return res, err
	}
	var batch []*waiter
	if me != nil {
		if batch = s.groups.take(key, me); batch == nil {
			// Taken over between the lock's release and this commit's taking it.
			release()
			<-me.done
			return me.result(res.Wait)
		}
	}
	// The file a commit replaced is closed after the lock is released (deferred calls run last
	// first): see commitLocked.
	replaced := -1
	defer func() { sysx.Close(replaced) }()
	defer release()
	// From here on ctx is not consulted: a commit that has started completes.

	var read fence
	if len(batch) > 1 {
		var left Identity
		var wrote bool
		read, left, wrote = s.commitGroupLocked(dir, name, batch, &replaced)
		if wrote && s.Fencing() {
			if err := s.fenceCommit(slots[0], name, left, read); err != nil {
				for _, w := range batch {
					if w.err == nil {
						w.err = err
					}
				}
			}
		}
		// Before the lock goes: the others need not take it to learn that they are done.
		for _, w := range batch[1:] {
			close(w.done)
		}
		return me.result(res.Wait)
	}
	for attempt := 0; ; attempt++ {
		wait := res.Wait
		res, read, err = s.commitLocked(dir, name, c, src, &replaced)
		res.Wait = wait
		if err != errCreateRace || attempt == maxCreateRaces {
			break
		}
	}
	if err == nil && !res.Unchanged && c.Committed != nil {
		c.Committed(res)
	}
	if err != nil || !s.Fencing() {
		return res, err
	}
	if err := s.fenceCommit(slots[0], name, res.Identity, read); err != nil {
		return res, err
	}
	if src != nil {
		if err := s.writeFence(lockSlot(src.dir.Ino, src.name), fence{state: fenceGone}); err != nil {
			return res, err
		}
	}
	return res, nil
}

// fenceCommit records in the record's fence what a commit left (left, read at fence read), before
// the lock goes: the next commit, on any host, must read at least this generation.
func (s *Store) fenceCommit(slot int64, name string, left Identity, read fence) error {
	f := fence{state: fencePresent, id: left.ID, gen: left.Gen}
	if f == read {
		return nil
	}
	if err := s.writeFence(slot, f); err != nil {
		s.log.Error("backing: committed, but cannot record the commit in the lock file; another host may merge onto an older version", "record", name, "err", err)
		return err
	}
	return nil
}

// errCreateRace: a record appeared at the name of a record being created.
var errCreateRace = fmt.Errorf("a record appeared at the name while it was created: %w", unix.EEXIST)

// commitLocked is one attempt of a commit, under the record's lock (see install for replaced).
func (s *Store) commitLocked(dir Dir, name string, c Commit, src *openSource, replaced *int) (res CommitResult, read fence, err error) {
	theirs, read, err := s.readFenced(dir, name, lockSlot(dir.Ino, name), c.Known)
	if err != nil {
		return res, read, err
	}
	defer func() { sysx.Close(theirs.fd) }()
	if err := checkExpected(theirs, c.Expect); err != nil {
		return res, read, err
	}
	if theirs.exists {
		if err := checkWritable(theirs.fd, c.Writer); err != nil {
			return res, read, err
		}
	}
	if src != nil {
		if err := src.verify(c.Source, c.Writer); err != nil {
			return res, read, err
		}
	}

	merged, err := c.Merge(theirs.data, theirs.exists)
	if err != nil {
		return res, read, fmt.Errorf("merge: %w", err)
	}
	sync := c.Sync || s.fsyncMode == FsyncAlways
	res.Created = !theirs.exists
	splitting := c.split != nil && theirs.exists && theirs.st.Nlink > 1

	switch {
	case theirs.exists && bytes.Equal(merged, theirs.data) && src == nil && !splitting:
		// Nothing to write; an fsync still has to make what is there durable.
		if sync {
			if err := s.fsync(theirs.fd); err != nil {
				return res, read, fmt.Errorf("fsync: %w", err)
			}
			if err := s.fsync(dir.FD); err != nil {
				return res, read, fmt.Errorf("fsync directory: %w", err)
			}
		}
		res.Unchanged = true
		res.Version, res.Identity = versionOf(&theirs.st), theirs.id
		return res, read, nil

	case !theirs.exists && src != nil && bytes.Equal(merged, src.data):
		// Onto a name with no record: the source itself becomes the record.
		res.Identity = Identity{ID: newID(c.NewID), Gen: 1}
		res.Version, err = s.renameSourceIntoPlace(src, dir, name, res.Identity, c.Writer, sync)
		return res, read, err
	}

	if theirs.exists {
		res.Identity = Identity{ID: theirs.id.ID, Gen: theirs.id.Gen + 1}
		if splitting {
			res.Identity.ID = NewID()
			*c.split = true
		}
	} else {
		res.Identity = Identity{ID: newID(c.NewID), Gen: 1}
	}
	var afterRename func() error
	if src != nil {
		afterRename = func() error { return src.remove(c.Writer, sync && src.dir.Ino != dir.Ino, s) }
	}
	res.Version, res.Birth, err = s.install(dir, name, &theirs, installing{data: merged, id: res.Identity,
		mode: unixMode(c.Mode), creator: c.Writer, sync: sync}, replaced, afterRename)
	return res, read, err
}

// installing is what install writes: the bytes, the identity, whether to fsync, and for a new
// record its mode and creator.
type installing struct {
	data    []byte
	id      Identity
	mode    uint32
	creator *sysx.Cred
	sync    bool
}

// install writes a new version of the record name in dir into a temporary file and renames it
// into place: over theirs, whose mode, owner and extended attributes it takes, or, if there is no
// record, onto a free name (errCreateRace if a record appeared there), as in.creator with in.mode.
// afterRename, if not nil, runs after the rename (before a statx: it may change the ctime).
//
// On a local filesystem, the descriptor of the file the commit renamed over is handed to *replaced
// instead of being closed: the last close of a removed file frees it (on ext4, about half a
// millisecond even for a 4 KB file), which need not hold the record's lock (docs/design.md, "The
// cost of a commit").
func (s *Store) install(dir Dir, name string, theirs *current, in installing, replaced *int, afterRename func() error) (Version, uint64, error) {
	var (
		tmpFD int
		tmp   string
		tmpSt unix.Stat_t
		err   error
	)
	if theirs.exists {
		tmpFD, tmp, tmpSt, err = s.createTemp(dir.FD, 0o600, nil)
	} else {
		tmpFD, tmp, tmpSt, err = s.createTemp(dir.FD, in.mode, in.creator)
	}
	if err != nil {
		return Version{}, 0, err
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = unix.Unlinkat(dir.FD, tmp, 0)
		}
		// Closing drops the temporary file's lock, now that recovery can no longer find it by name.
		sysx.Close(tmpFD)
	}()
	if err := writeAllAt(tmpFD, in.data); err != nil {
		return Version{}, 0, fmt.Errorf("write temporary file: %w", err)
	}
	if theirs.exists {
		own := ownership{mode: theirs.st.Mode & 0o7777, uid: theirs.st.Uid, gid: theirs.st.Gid}
		if err := s.setOwnership(tmpFD, &tmpSt, own); err != nil {
			return Version{}, 0, err
		}
		if err := copyXattrs(theirs.fd, tmpFD); err != nil {
			return Version{}, 0, err
		}
	}
	if err := writeIdentity(tmpFD, in.id, int64(len(in.data))); err != nil {
		return Version{}, 0, err
	}
	// On a network filesystem the content must be on the server before the name shows it: a client
	// with write-behind (GlusterFS's) may otherwise show other hosts the new name with no bytes yet.
	if in.sync || s.Fencing() {
		if err := s.fsync(tmpFD); err != nil {
			return Version{}, 0, fmt.Errorf("fsync temporary file: %w", err)
		}
	}
	if theirs.exists {
		// An NFS client would "silly-rename" a file it still has open when it is renamed over,
		// leaving a .nfsXXXX file behind until the close: on network filesystems it is closed first.
		if s.Fencing() {
			sysx.Close(theirs.fd)
		} else {
			*replaced = theirs.fd
		}
		theirs.fd = -1
		err = renameat2(dir.FD, tmp, dir.FD, name, 0)
	} else {
		err = renameNoReplace(dir.FD, tmp, dir.FD, name)
		if err == unix.EEXIST {
			return Version{}, 0, errCreateRace
		}
	}
	if err != nil {
		return Version{}, 0, fmt.Errorf("rename temporary file over %q: %w", name, err)
	}
	renamed = true
	if in.sync {
		if err := s.fsync(dir.FD); err != nil {
			return Version{}, 0, fmt.Errorf("fsync directory: %w", err)
		}
	}
	if afterRename != nil {
		if err := afterRename(); err != nil {
			return Version{}, 0, err
		}
	}
	// After the rename: it changes the ctime on some filesystems, and Read must see the same version.
	st, birth, err := sysx.Statx(tmpFD, "")
	if err != nil {
		return Version{}, 0, err
	}
	return versionOf(&st), birth, nil
}

func newID(id uint64) uint64 {
	if id != 0 {
		return id
	}
	return NewID()
}

// checkExpected holds a commit to the record its writer opened (see Commit.Expect).
func checkExpected(theirs current, expect uint64) error {
	switch {
	case expect == 0:
		return nil
	case !theirs.exists:
		return fmt.Errorf("no record at the name: %w", ErrRecordChanged)
	case theirs.id.ID != expect:
		return fmt.Errorf("another record (id %#x, not %#x) at the name: %w", theirs.id.ID, expect, ErrRecordChanged)
	}
	return nil
}

// checkWritable checks, with the writer's credentials, that the open record fd may be opened for
// writing now (mode, owner, ACL, read-only filesystem): as the kernel would check an open.
func checkWritable(fd int, w *sysx.Cred) error {
	if w.IsRoot() {
		return nil
	}
	err := sysx.AsUser(w, func() error {
		return unix.Faccessat2(fd, "", unix.W_OK, unix.AT_EACCESS|unix.AT_EMPTY_PATH)
	})
	if err != nil {
		return fmt.Errorf("writer %v may not write the record: %w", w, err)
	}
	return nil
}

// renameSourceIntoPlace gives the source the record's identity and renames it onto the free name, as
// the writer.
func (s *Store) renameSourceIntoPlace(src *openSource, dir Dir, name string, id Identity, w *sysx.Cred, sync bool) (Version, error) {
	if err := writeIdentity(src.fd, id, int64(len(src.data))); err != nil {
		return Version{}, err
	}
	if sync || s.Fencing() {
		if err := s.fsync(src.fd); err != nil {
			return Version{}, fmt.Errorf("fsync source: %w", err)
		}
	}
	err := sysx.AsUser(w, func() error {
		return renameNoReplace(src.dir.FD, src.name, dir.FD, name)
	})
	if err == unix.EEXIST {
		return Version{}, errCreateRace
	}
	if err != nil {
		return Version{}, fmt.Errorf("rename source %q onto %q: %w", src.name, name, err)
	}
	if sync {
		if err := s.fsync(dir.FD); err != nil {
			return Version{}, fmt.Errorf("fsync directory: %w", err)
		}
		if src.dir.Ino != dir.Ino {
			if err := s.fsync(src.dir.FD); err != nil {
				return Version{}, fmt.Errorf("fsync source directory: %w", err)
			}
		}
	}
	st, err := sysx.Fstat(src.fd)
	if err != nil {
		return Version{}, err
	}
	return versionOf(&st), nil
}

// openSource is a commit's Source with its directory open.
type openSource struct {
	dir     Dir
	ownsDir bool
	name    string
	fd      int // the source file, opened under the lock by verify
	data    []byte
}

func (s *Store) openSourceDir(src *Source) (*openSource, error) {
	if src.Dir != nil {
		if err := checkBase(src.Name); err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		return &openSource{dir: *src.Dir, name: src.Name, fd: -1}, nil
	}
	rec, err := parseName(src.Name)
	if err != nil {
		return nil, fmt.Errorf("source %q: %w", src.Name, err)
	}
	dir, err := s.OpenDir(rec.dir)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return &openSource{dir: dir, ownsDir: true, name: rec.base, fd: -1}, nil
}

func (o *openSource) close() {
	sysx.Close(o.fd)
	if o.ownsDir {
		sysx.Close(o.dir.FD)
	}
}

// verify opens the source under the lock and checks that it is the file the renamer meant, with the
// content its merge used, and that the writer may remove it from its directory.
func (o *openSource) verify(want *Source, w *sysx.Cred) error {
	fd, err := openFile(o.dir.FD, o.name, unix.O_RDONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("source %q: %w", o.name, err)
	}
	o.fd = fd
	st, err := sysx.Fstat(fd)
	if err == nil {
		err = requireRegular(&st)
	}
	if err != nil {
		return fmt.Errorf("source %q: %w", o.name, err)
	}
	if want.Ino != 0 && st.Ino != want.Ino {
		return fmt.Errorf("source %q is another file now: %w", o.name, ErrRecordChanged)
	}
	limit := int64(-1)
	if want.Data != nil {
		limit = int64(len(want.Data))
	}
	data, err := sysx.ReadAll(fd, st.Size, limit)
	if want.Data != nil && (err != nil || !bytes.Equal(data, want.Data)) {
		return fmt.Errorf("source %q changed while it was renamed: %w", o.name, ErrRecordChanged)
	}
	if err != nil {
		return fmt.Errorf("source %q: %w", o.name, err)
	}
	o.data = data
	return checkRemovable(o.dir.FD, &st, w)
}

// checkRemovable checks, with fresh attributes, that the writer may remove the file st from dirfd:
// write and search permission on the directory, and in a sticky directory, owning the file or the
// directory.
func checkRemovable(dirfd int, st *unix.Stat_t, w *sysx.Cred) error {
	if w.IsRoot() {
		return nil
	}
	err := sysx.AsUser(w, func() error {
		return unix.Faccessat2(dirfd, "", unix.W_OK|unix.X_OK, unix.AT_EACCESS|unix.AT_EMPTY_PATH)
	})
	if err != nil {
		return fmt.Errorf("writer %v may not remove the source: %w", w, err)
	}
	dst, err := sysx.Fstatat(dirfd, "")
	if err != nil {
		return err
	}
	if dst.Mode&unix.S_ISVTX != 0 && w.UID != st.Uid && w.UID != dst.Uid {
		return fmt.Errorf("writer %v may not remove another user's source from a sticky directory: %w", w, unix.EPERM)
	}
	return nil
}

// remove unlinks the source, as the writer, after its content went into the record; sync fsyncs its
// directory.
func (o *openSource) remove(w *sysx.Cred, sync bool, s *Store) error {
	err := sysx.AsUser(w, func() error { return unix.Unlinkat(o.dir.FD, o.name, 0) })
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove source %q: %w", o.name, err)
	}
	if sync {
		if err := s.fsync(o.dir.FD); err != nil {
			return fmt.Errorf("fsync source directory: %w", err)
		}
	}
	return nil
}

// renameNoReplace renames without replacing what newname may be (EEXIST then). Where the filesystem
// has no RENAME_NOREPLACE (GlusterFS's FUSE client answers EINVAL), it checks that newname is free
// and renames: the caller holds the record's lock, which every mergefs daemon takes before it
// creates the name, so only a process writing the backing directory directly could slip in between.
func renameNoReplace(olddir int, oldname string, newdir int, newname string) error {
	err := renameNoReplaceFlag(olddir, oldname, newdir, newname, unix.RENAME_NOREPLACE)
	if err != unix.EINVAL && err != unix.ENOSYS && err != unix.EOPNOTSUPP {
		return err
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(newdir, newname, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		return unix.EEXIST
	case err != unix.ENOENT:
		return err
	}
	return renameat2(olddir, oldname, newdir, newname, 0)
}

// renameNoReplaceFlag is renameat2, replaced in tests by one that has no RENAME_NOREPLACE.
var renameNoReplaceFlag = renameat2

func renameat2(olddir int, oldname string, newdir int, newname string, flags uint) error {
	for {
		err := unix.Renameat2(olddir, oldname, newdir, newname, flags)
		if err != unix.EINTR {
			return err
		}
	}
}

// maxTempAttempts bounds retries when a name collides or recovery claims a fresh temporary file.
const maxTempAttempts = 8

// createTemp creates a temporary file in dirfd with mode, as w, and returns it write-locked (see the
// package comment), with its stat as created (its owner; its mode before exactMode).
func (s *Store) createTemp(dirfd int, mode uint32, w *sysx.Cred) (fd int, name string, st unix.Stat_t, err error) {
	for range maxTempAttempts {
		name = fmt.Sprintf("%s%016x", tempPrefix, rand.Uint64())
		err = sysx.AsUser(w, func() error {
			var err error
			fd, err = openFile(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, mode)
			return err
		})
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return -1, "", st, fmt.Errorf("create temporary file: %w", err)
		}
		err = ofdLock(fd, unix.F_WRLCK, 0, 0, false)
		if err == nil {
			if st, err = sysx.Fstat(fd); err == nil {
				err = exactMode(dirfd, fd, &st, mode, w)
			}
			if err != nil {
				sysx.Close(fd)
				_ = unix.Unlinkat(dirfd, name, 0)
				return -1, "", st, err
			}
			// Recovery in another process may have locked and removed the file between our create
			// and our lock; then the name is gone or is no longer this file.
			same, serr := sameFile(dirfd, name, &st)
			if same {
				return fd, name, st, nil
			}
			sysx.Close(fd)
			if serr != nil && serr != unix.ENOENT {
				return -1, "", st, fmt.Errorf("check temporary file: %w", serr)
			}
			continue
		}
		sysx.Close(fd)
		// The name is ours alone (random, O_EXCL), so removing it by name cannot hit another file.
		_ = unix.Unlinkat(dirfd, name, 0)
		if err != unix.EAGAIN && err != unix.EACCES {
			return -1, "", st, fmt.Errorf("lock temporary file: %w", err)
		}
	}
	return -1, "", st, fmt.Errorf("create temporary file: gave up after %d attempts (name collisions or concurrent recovery): %w", maxTempAttempts, unix.EAGAIN)
}

// exactMode gives a file just created in dirfd (fd, whose stat as created is st) the mode asked for,
// where the process umask took bits away; not where the directory's default ACL decided the mode,
// which is how the kernel creates files there. As w, so that the kernel drops a set-group-ID bit w
// may not set, as it does at a create.
func exactMode(dirfd, fd int, st *unix.Stat_t, mode uint32, w *sysx.Cred) error {
	if st.Mode&0o7777 == mode {
		return nil
	}
	if _, err := sysx.Getxattr(sysx.ProcPath(dirfd), "system.posix_acl_default", false); err == nil {
		return nil
	}
	return sysx.AsUser(w, func() error { return unix.Fchmod(fd, mode) })
}

// sameFile reports whether name in dirfd is the file whose stat is byFD.
func sameFile(dirfd int, name string, byFD *unix.Stat_t) (bool, error) {
	byName, err := sysx.Fstatat(dirfd, name)
	if err != nil {
		return false, err
	}
	return byName.Dev == byFD.Dev && byName.Ino == byFD.Ino, nil
}

// setOwnership gives fd, whose owner is st's, the mode and owner of own.
func (s *Store) setOwnership(fd int, st *unix.Stat_t, own ownership) error {
	if own.uid != st.Uid || own.gid != st.Gid {
		if err := unix.Fchown(fd, int(own.uid), int(own.gid)); err != nil {
			return fmt.Errorf("chown temporary file to %d:%d: %w", own.uid, own.gid, err)
		}
	}
	// After chown, which clears the set-user-ID and set-group-ID bits.
	if err := unix.Fchmod(fd, own.mode); err != nil {
		return fmt.Errorf("chmod temporary file to %#o: %w", own.mode, err)
	}
	return nil
}

// copyXattrs gives dst exactly the extended attributes of src (POSIX ACLs, security labels, user and
// trusted attributes), except the identity, which the commit writes itself. Attributes dst got on its
// own (an ACL inherited from the directory's default ACL) and src lacks are removed. Run after
// setOwnership: an access ACL sets the group bits of the mode.
func copyXattrs(src, dst int) error {
	names, err := sysx.Flistxattr(src)
	if err != nil && !sysx.NotSupported(err) {
		return fmt.Errorf("list extended attributes of the record: %w", err)
	}
	have, err := sysx.Flistxattr(dst)
	if err != nil && !sysx.NotSupported(err) {
		return fmt.Errorf("list extended attributes of the temporary file: %w", err)
	}
	for _, n := range have {
		if n != IdentityXattr && !slices.Contains(names, n) {
			if err := unix.Fremovexattr(dst, n); err != nil && err != unix.ENODATA {
				return fmt.Errorf("remove extended attribute %q from the temporary file: %w", n, err)
			}
		}
	}
	for _, n := range names {
		if n == IdentityXattr {
			continue
		}
		v, err := sysx.Fgetxattr(src, n)
		if err == unix.ENODATA {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("read extended attribute %q of the record: %w", n, err)
		}
		if err := unix.Fsetxattr(dst, n, v, 0); err != nil {
			return fmt.Errorf("copy extended attribute %q to the new version of the record: %w", n, err)
		}
	}
	return nil
}

// Split gives the record name in dir an inode of its own if it shares one with other names (hard links
// made outside mergefs): a copy with the same content, owner, mode and extended attributes and a new
// identity is renamed over the name. Records are known by name; a shared inode would make two names
// one record. It reports whether it split.
func (s *Store) Split(ctx context.Context, dir Dir, name string) (bool, error) {
	split := false
	_, err := s.CommitAt(ctx, dir, name, Commit{
		Merge: func(theirs []byte, exists bool) ([]byte, error) {
			if !exists {
				return nil, errNoRecord
			}
			return theirs, nil
		},
		split: &split,
	})
	if errors.Is(err, errNoRecord) {
		return false, nil
	}
	return split, err
}

var errNoRecord = errors.New("no record")

// Reserve creates the record name in dir empty, exclusively (O_EXCL), as w with mode, and gives it a new
// identity: what an exclusive create of a record (mkstemp) relies on. Commits take an empty record for
// no record. It fails with EEXIST if the name exists.
func (s *Store) Reserve(ctx context.Context, dir Dir, name string, mode uint32, w *sysx.Cred) (Identity, unix.Stat_t, error) {
	unlock, err := s.LockRecords(ctx, RecordRef{Dir: dir, Name: name})
	if err != nil {
		return Identity{}, unix.Stat_t{}, err
	}
	defer unlock()
	var fd int
	err = sysx.AsUser(w, func() error {
		var err error
		fd, err = openFile(dir.FD, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, mode)
		return err
	})
	if err != nil {
		return Identity{}, unix.Stat_t{}, err
	}
	defer sysx.Close(fd)
	id := Identity{ID: NewID()}
	created, err := sysx.Fstat(fd)
	if err == nil {
		err = exactMode(dir.FD, fd, &created, mode, w)
	}
	if err != nil {
		return Identity{}, unix.Stat_t{}, err
	}
	if err := writeIdentity(fd, id, 0); err != nil {
		_ = unix.Unlinkat(dir.FD, name, 0)
		return Identity{}, unix.Stat_t{}, err
	}
	if s.Fencing() {
		if err := s.writeFence(lockSlot(dir.Ino, name), fence{state: fencePresent, id: id.ID}); err != nil {
			return Identity{}, unix.Stat_t{}, err
		}
	}
	st, err := sysx.Fstat(fd)
	return id, st, err
}
