// Package locks is a table of advisory file locks as a FUSE daemon keeps them when the kernel hands
// it the locks of its files (FUSE_POSIX_LOCKS, FUSE_FLOCK_LOCKS): POSIX record locks (fcntl, lockf)
// of a lock owner over a byte range, and whole-file flock locks, each under a file's key.
//
// The kernel names the owner of every request: for POSIX locks the process's file table, for OFD
// and flock locks the open file. The table only knows owners; when an owner's locks end (a close,
// a release) is the caller's business (Table.Unlock).
package locks

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// MaxOffset is the end of a lock that reaches to the end of the file, however long it grows.
const MaxOffset = 1<<63 - 1

// Lock is one lock an owner holds, or asks for.
type Lock struct {
	Owner uint64
	Pid   uint32 // the process that took it, reported to F_GETLK
	// Type is unix.F_RDLCK (shared) or unix.F_WRLCK (exclusive); unix.F_UNLCK in a request
	// unlocks the range.
	Type       uint32
	Start, End uint64 // bytes Start to End, both included
	// Uid is the user who asks; an owner's locks count against the user of its first lock
	// (Table.MaxPerUser).
	Uid uint32
	// Via names the open file the lock was taken through (UnlockVia); an owner's locks taken
	// through different open files are kept apart, though they never conflict.
	Via uint64
}

// Errors of TryLock and Lock.
var (
	ErrConflict = errors.New("locks: another owner holds a conflicting lock")
	ErrTooMany  = errors.New("locks: the user holds too many locks")
)

func (l Lock) overlaps(o Lock) bool { return l.Start <= o.End && o.Start <= l.End }

// conflicts reports whether l and o cannot both be held: another owner's overlapping lock where
// either is exclusive.
func (l Lock) conflicts(o Lock) bool {
	return l.Owner != o.Owner && l.overlaps(o) && (l.Type == unix.F_WRLCK || o.Type == unix.F_WRLCK)
}

// Key names one file's locks of one kind: flock locks and POSIX locks do not see each other (as on
// Linux).
type Key struct {
	File  uint64
	Flock bool
}

// Table holds the locks of many files. The zero value is empty and ready.
type Table struct {
	// MaxPerUser bounds the locks one user's owners hold in the table (0: no bound): every lock
	// is a range kept in memory, and a request can split one into three. An unlock that splits
	// nothing is never refused. Set it before use.
	MaxPerUser int

	mu      sync.Mutex
	waiting int // requests in Lock waiting for a conflicting lock to go
	files   map[Key]*file
	owners  map[uint64]*owner
	users   map[uint32]int // locks held, by user
}

// owner is what the table counts of one lock owner.
type owner struct {
	uid   uint32
	locks int
}

// file is the locks held on one key. changed is closed (and replaced) whenever a lock is given up
// or narrowed, which wakes the waiters to try again.
type file struct {
	locks   []Lock
	changed chan struct{}
}

// Conflict returns a lock another owner holds that keeps want from being granted.
func (t *Table) Conflict(k Key, want Lock) (Lock, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.files[k]; f != nil {
		for _, l := range f.locks {
			if l.conflicts(want) {
				return l, true
			}
		}
	}
	return Lock{}, false
}

// TryLock applies want (a lock, or an unlock of its range) unless another owner's lock conflicts
// (ErrConflict), or the request could take the user past MaxPerUser (ErrTooMany). A POSIX request
// replaces the owner's own locks over its range (a shared lock turns exclusive there, or back) all
// at once. A flock request first gives up the owner's lock, so a conversion that has to wait or
// fails leaves it with none (as flock(2) does).
func (t *Table) TryLock(k Key, want Lock) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.try(k, want)
}

// Lock is TryLock that waits while other owners' locks conflict, until ctx is done; it returns
// ctx.Err() then.
func (t *Table) Lock(ctx context.Context, k Key, want Lock) error {
	for {
		t.mu.Lock()
		if err := t.try(k, want); err != ErrConflict {
			t.mu.Unlock()
			return err
		}
		changed := t.files[k].changed // try failed on a conflict: the file has locks
		t.waiting++
		t.mu.Unlock()
		var err error
		select {
		case <-changed:
		case <-ctx.Done():
			err = ctx.Err()
		}
		t.mu.Lock()
		t.waiting--
		t.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// Unlock gives up every lock owner holds on k.
func (t *Table) Unlock(k Key, owner uint64) {
	t.drop(k, func(l Lock) bool { return l.Owner == owner })
}

// UnlockVia gives up every lock on k taken through via (Lock.Via), whoever owns it.
func (t *Table) UnlockVia(k Key, via uint64) {
	t.drop(k, func(l Lock) bool { return l.Via == via })
}

// drop removes the locks on k that gone reports, and wakes the waiters if any went.
func (t *Table) drop(k Key, gone func(Lock) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.files[k]
	if f == nil {
		return
	}
	n := 0
	for _, l := range f.locks {
		if gone(l) {
			t.account(l.Owner, 0, -1)
			continue
		}
		f.locks[n] = l
		n++
	}
	released := n != len(f.locks)
	clear(f.locks[n:])
	f.locks = f.locks[:n]
	t.settle(k, f, released)
}

// Held returns a copy of the locks held on k, for tests and status.
func (t *Table) Held(k Key) []Lock {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.files[k]; f != nil {
		return append([]Lock(nil), f.locks...)
	}
	return nil
}

// Size is how many keys have locks, and how many owners hold them: the table's size.
func (t *Table) Size() (files, owners int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.files), len(t.owners)
}

// Counts are how many locks the table holds, and how many requests wait in Lock.
func (t *Table) Counts() (held, waiting int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.users {
		held += n
	}
	return held, t.waiting
}

// UserLocks is how many locks the owners of user uid hold.
func (t *Table) UserLocks(uid uint32) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.users[uid]
}

// try is TryLock with t.mu held.
func (t *Table) try(k Key, want Lock) error {
	if o := t.owners[want.Owner]; t.MaxPerUser > 0 {
		uid := want.Uid
		if o != nil {
			uid = o.uid
		}
		if t.users[uid]+t.growth(k, want) > t.MaxPerUser {
			return ErrTooMany
		}
	}
	f := t.files[k]
	if f == nil {
		if want.Type == unix.F_UNLCK {
			return nil
		}
		if t.files == nil {
			t.files = make(map[Key]*file)
		}
		f = &file{changed: make(chan struct{})}
		t.files[k] = f
	}
	own := ownLocks(f.locks, want.Owner)
	released := false // a lock was given up or weakened: waiters may get theirs now
	defer func() {
		t.account(want.Owner, want.Uid, ownLocks(f.locks, want.Owner)-own)
		t.settle(k, f, released)
	}()
	if k.Flock {
		n := replace(f.locks, want.Owner, Lock{Start: 0, End: MaxOffset}, nil)
		released = n != len(f.locks)
		clear(f.locks[n:])
		f.locks = f.locks[:n]
	}
	if want.Type != unix.F_UNLCK {
		for _, l := range f.locks {
			if l.conflicts(want) {
				return ErrConflict
			}
		}
	}
	var add []Lock
	if want.Type != unix.F_UNLCK {
		add = []Lock{want}
	}
	n := replace(f.locks, want.Owner, want, &add)
	released = released || n < len(f.locks)
	clear(f.locks[n:])
	f.locks = mergeOwn(append(f.locks[:n], add...), want.Owner)
	return nil
}

// growth is the most locks want can add to its owner's: two for a lock (splitting one of the
// owner's in three), one for an unlock that splits one in two, none for other unlocks, which are
// never refused.
func (t *Table) growth(k Key, want Lock) int {
	if want.Type != unix.F_UNLCK {
		return 2
	}
	if f := t.files[k]; f != nil {
		for _, l := range f.locks {
			if l.Owner == want.Owner && l.Start < want.Start && l.End > want.End {
				return 1
			}
		}
	}
	return 0
}

// account adds delta to owner's locks, and to its user's (uid for an owner new to the table).
func (t *Table) account(id uint64, uid uint32, delta int) {
	if delta == 0 {
		return
	}
	o := t.owners[id]
	if o == nil {
		if t.owners == nil {
			t.owners, t.users = make(map[uint64]*owner), make(map[uint32]int)
		}
		o = &owner{uid: uid}
		t.owners[id] = o
	}
	o.locks += delta
	t.users[o.uid] += delta
	if o.locks == 0 {
		delete(t.owners, id)
	}
	if t.users[o.uid] == 0 {
		delete(t.users, o.uid)
	}
}

func ownLocks(locks []Lock, owner uint64) int {
	n := 0
	for _, l := range locks {
		if l.Owner == owner {
			n++
		}
	}
	return n
}

// settle wakes f's waiters if released, and forgets f once it holds nothing.
func (t *Table) settle(k Key, f *file, released bool) {
	if released {
		close(f.changed)
		f.changed = make(chan struct{})
	}
	if len(f.locks) == 0 {
		delete(t.files, k)
	}
}

// replace removes owner's locks over r's range from locks, in place, and returns how many locks are
// left in front; the parts of those locks outside the range are appended to *rest (when rest is
// not nil, else they are dropped too).
func replace(locks []Lock, owner uint64, r Lock, rest *[]Lock) int {
	n := 0
	for _, l := range locks {
		if l.Owner != owner || !l.overlaps(r) {
			locks[n] = l
			n++
			continue
		}
		if rest == nil {
			continue
		}
		if l.Start < r.Start {
			left := l
			left.End = r.Start - 1
			*rest = append(*rest, left)
		}
		if l.End > r.End {
			right := l
			right.Start = r.End + 1
			*rest = append(*rest, right)
		}
	}
	return n
}

// mergeOwn joins owner's locks of one type, taken through one open file, that touch or overlap, as
// the kernel does, so that F_GETLK reports the range an owner really holds.
func mergeOwn(locks []Lock, owner uint64) []Lock {
	for i := 0; i < len(locks); i++ {
		if locks[i].Owner != owner {
			continue
		}
		for j := i + 1; j < len(locks); j++ {
			a, b := locks[i], locks[j]
			if b.Owner != owner || b.Type != a.Type || b.Via != a.Via || !touches(a, b) {
				continue
			}
			a.Start, a.End = min(a.Start, b.Start), max(a.End, b.End)
			locks[i] = a
			locks = append(locks[:j], locks[j+1:]...)
			j = i // a grew: look at the others again
		}
	}
	return locks
}

func touches(a, b Lock) bool {
	return a.overlaps(b) || (a.End != MaxOffset && a.End+1 == b.Start) || (b.End != MaxOffset && b.End+1 == a.Start)
}
