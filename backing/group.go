package backing

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mergefs/mergefs/internal/sysx"
)

// Group commits (docs/design.md, "Group commits"): commits to one record that wait for its
// lock while another holds it are taken over by the next holder, which merges each one's changes
// in turn (each Merge gets what the ones before it made) and replaces the record once for all of
// them. Writers that share a record then pay one temporary file, one rename and one read of the
// record per group instead of per commit. Only commits onto an existing record, without a Source,
// are grouped; the others take the lock themselves.

// maxGroup bounds how many waiting commits one holder of a record's lock takes over.
const maxGroup = 32

// errTakenOver ends a grouped commit's wait for the lock: another commit did its work.
var errTakenOver = errors.New("commit taken over by the holder of the record's lock")

// groupKey is a record's directory (as the kernel names the one its descriptor holds) and name,
// and the identity the commit expects there. Commits of two records never share one: not even
// where a directory's inode number and a record's identity repeat in a filesystem mounted inside
// the root, whose owner controls both (the identity is the inode number the mount shows).
type groupKey struct {
	dev, ino uint64
	name     string
	id       uint64
}

func groupKeyOf(dir Dir, name string, id uint64) (groupKey, error) {
	st, err := sysx.Fstat(dir.FD)
	if err != nil {
		return groupKey{}, fmt.Errorf("stat the record's directory: %w", err)
	}
	return groupKey{dev: st.Dev, ino: st.Ino, name: name, id: id}, nil
}

// waiter is a commit waiting for its record's lock.
type waiter struct {
	c     Commit
	taken bool          // by the lock's holder; guarded by groups.mu
	done  chan struct{} // closed by the holder that took it, once res and err are final
	res   CommitResult
	err   error
}

// groups are the commits waiting for each record's lock, oldest first.
type groups struct {
	mu      sync.Mutex
	waiting map[groupKey][]*waiter
}

// join queues a commit before it waits for the lock.
func (g *groups) join(k groupKey, c Commit) *waiter {
	w := &waiter{c: c, done: make(chan struct{})}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting == nil {
		g.waiting = make(map[groupKey][]*waiter)
	}
	g.waiting[k] = append(g.waiting[k], w)
	return w
}

// leave takes w out of the queue after it stopped waiting (its context ended); false if a holder
// of the lock took it first, which then finishes it (w.done).
func (g *groups) leave(k groupKey, w *waiter) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.taken {
		return false
	}
	g.remove(k, w)
	return true
}

func (g *groups) remove(k groupKey, w *waiter) {
	q := g.waiting[k]
	for i, o := range q {
		if o == w {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(g.waiting, k)
	} else {
		g.waiting[k] = q
	}
}

// take is called by me once it holds the lock: it returns me and the commits waiting behind it
// (at most maxGroup in all, oldest first), now taken over by me. If me was itself taken over
// meanwhile, it returns nil: me is done (or being done by the holder that took it).
func (g *groups) take(k groupKey, me *waiter) []*waiter {
	g.mu.Lock()
	defer g.mu.Unlock()
	if me.taken {
		return nil
	}
	g.remove(k, me)
	me.taken = true
	batch := []*waiter{me}
	q := g.waiting[k]
	n := min(len(q), maxGroup-1)
	for _, w := range q[:n] {
		w.taken = true
		batch = append(batch, w)
	}
	if n == len(q) {
		delete(g.waiting, k)
	} else {
		g.waiting[k] = append([]*waiter(nil), q[n:]...)
	}
	return batch
}

// result is w's outcome once done, with its own wait for the lock.
func (w *waiter) result(wait time.Duration) (CommitResult, error) {
	res := w.res
	res.Wait = wait
	return res, w.err
}

// commitGroupLocked commits batch, commits onto the existing record name in dir, with one
// replacement of the record, under its lock. Each waiter gets its own outcome: one whose identity
// or permission check or Merge fails is left out and the others go on, as they would have one
// after the other. It returns the fence the record was read at, the identity it has after the
// group, and whether the group wrote it.
func (s *Store) commitGroupLocked(dir Dir, name string, batch []*waiter, replaced *int) (read fence, left Identity, wrote bool) {
	failAll := func(err error) {
		for _, w := range batch {
			if w.err == nil {
				w.err = err
			}
		}
	}
	theirs, read, err := s.readFenced(dir, name, lockSlot(dir.Ino, name), batch[0].c.Known)
	if err != nil {
		failAll(err)
		return read, Identity{}, false
	}
	defer func() { sysx.Close(theirs.fd) }()
	data, sync := theirs.data, s.fsyncMode == FsyncAlways
	var last *waiter // the last commit that changed data
	for _, w := range batch {
		if w.err = checkExpected(theirs, w.c.Expect); w.err != nil {
			continue
		}
		if w.err = checkWritable(theirs.fd, w.c.Writer); w.err != nil {
			continue
		}
		merged, err := w.c.Merge(data, true)
		if err != nil {
			w.err = fmt.Errorf("merge: %w", err)
			continue
		}
		sync = sync || w.c.Sync
		if bytes.Equal(merged, data) {
			w.res.Unchanged = true
			continue
		}
		data, last = merged, w
	}
	ver, birth, id := versionOf(&theirs.st), uint64(0), theirs.id
	if last == nil {
		// Nothing to write; an fsync still has to make what is there durable.
		if sync {
			if err := s.fsync(theirs.fd); err != nil {
				failAll(fmt.Errorf("fsync: %w", err))
			} else if err := s.fsync(dir.FD); err != nil {
				failAll(fmt.Errorf("fsync directory: %w", err))
			}
		}
	} else {
		id = Identity{ID: theirs.id.ID, Gen: theirs.id.Gen + 1}
		ver, birth, err = s.install(dir, name, &theirs, installing{data: data, id: id, sync: sync}, replaced, nil)
		if err != nil {
			failAll(err)
			return read, theirs.id, false
		}
	}
	for _, w := range batch {
		if w.err == nil {
			w.res.Version, w.res.Birth, w.res.Identity, w.res.Grouped = ver, birth, id, true
		}
	}
	if last != nil && last.c.Committed != nil {
		last.c.Committed(last.res)
	}
	return read, id, last != nil
}
