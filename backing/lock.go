package backing

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"io"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// lockSlotCount is the number of lock slots: records whose names hash to one slot merely serialise
// each other's commits. Each slot has a block of the lock file (fence.go); the last block ends at
// 256 MiB, within what 32-bit lock protocols (NLMv3 on old NFS servers) can express. It is part of the
// on-disk protocol: every daemon sharing a backing root must compute the same slot for the same record.
const lockSlotCount = 1 << 16

// lockSlot is the byte of the lock file that guards the record name in the directory whose inode number
// is dirIno: FNV-1a over the inode number (8 bytes, little-endian) and the name, modulo lockSlotCount.
// The directory's inode
// number, not its path, so that daemons agree even when one of them reached the directory by an older
// path (a directory renamed by another host).
func lockSlot(dirIno uint64, name string) int64 {
	h := fnv.New64a()
	var ino [8]byte
	binary.LittleEndian.PutUint64(ino[:], dirIno)
	h.Write(ino[:])
	h.Write([]byte(name))
	return int64(h.Sum64() % lockSlotCount)
}

// RecordRef names a record by its directory and name, for LockRecords.
type RecordRef struct {
	Dir  Dir
	Name string
}

// LockRecords takes the locks of the named records, as a commit does, for operations that change a
// record's name or metadata outside a commit (unlink, rename, chmod, an exclusive create): a commit
// that runs at the same time would otherwise resurrect a removed record or restore old metadata.
// The returned func releases them; it must be called exactly once.
func (s *Store) LockRecords(ctx context.Context, refs ...RecordRef) (unlock func(), err error) {
	slots := make([]int64, 0, len(refs))
	for _, r := range refs {
		if err := checkBase(r.Name); err != nil {
			return nil, err
		}
		slots = append(slots, lockSlot(r.Dir.Ino, r.Name))
	}
	if err := s.begin(); err != nil {
		return nil, err
	}
	release, err := s.lockSlots(ctx, slots, nil)
	if err != nil {
		s.end()
		return nil, err
	}
	return func() { release(); s.end() }, nil
}

// slotLocks is the in-process half of the record lock: one mutex per lock slot, created on first use
// and freed when its last user leaves, so idle records cost nothing. mu only guards the map.
type slotLocks struct {
	mu      sync.Mutex
	entries map[int64]*slotLock
}

type slotLock struct {
	refs int           // goroutines holding or waiting for this slot; guarded by slotLocks.mu
	held chan struct{} // a one-slot semaphore, so that waiting can be abandoned when ctx ends
}

func (l *slotLocks) lock(ctx context.Context, slot int64, takenOver <-chan struct{}) error {
	l.mu.Lock()
	if l.entries == nil {
		l.entries = make(map[int64]*slotLock)
	}
	e := l.entries[slot]
	if e == nil {
		e = &slotLock{held: make(chan struct{}, 1)}
		l.entries[slot] = e
	}
	e.refs++
	l.mu.Unlock()

	select {
	case e.held <- struct{}{}:
		return nil
	case <-ctx.Done():
		l.drop(slot, e)
		return ctx.Err()
	case <-takenOver:
		l.drop(slot, e)
		return errTakenOver
	}
}

func (l *slotLocks) unlock(slot int64) {
	l.mu.Lock()
	e := l.entries[slot]
	l.mu.Unlock()
	<-e.held
	l.drop(slot, e)
}

func (l *slotLocks) drop(slot int64, e *slotLock) {
	l.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(l.entries, slot)
	}
	l.mu.Unlock()
}

func (l *slotLocks) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// ofdLock takes (typ F_WRLCK or F_RDLCK) or releases (F_UNLCK) an OFD lock on [start, start+length) of
// fd; length 0 means to the end of the file and beyond. With wait it blocks until the lock is granted.
func ofdLock(fd int, typ int16, start, length int64, wait bool) error {
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: length}
	for {
		// Go installs its signal handlers with SA_RESTART, but a lock wait interrupted by a handler
		// without it (or a stop/continue) still returns EINTR.
		err := unix.FcntlFlock(uintptr(fd), cmd, &lk)
		if err != unix.EINTR {
			return err
		}
	}
}

// lockSlots takes the in-process and then the cross-process lock of every slot, in ascending slot
// order so that two commits locking two slots each (a rename between records) cannot deadlock, here or
// across processes. ctx can abort the wait for an in-process lock; the wait for the OFD lock is not
// interruptible, but at most one goroutine per slot and store is in it. The returned release func must
// be called exactly once.
//
// A commit that another may take over (group.go) gives takenOver: once it is closed, the wait for
// an in-process lock ends with errTakenOver.
func (s *Store) lockSlots(ctx context.Context, slots []int64, takenOver <-chan struct{}) (release func(), err error) {
	slots = slices.Clone(slots)
	slices.Sort(slots)
	slots = slices.Compact(slots) // an OFD unlock would drop a byte locked twice by one description

	var inProcess, crossProcess []int64
	release = func() {
		// OFD locks first: once the in-process lock is free, another goroutine of this store may take
		// the same byte through the same open file description, and a later unlock would drop its lock.
		for _, slot := range slices.Backward(crossProcess) {
			if err := ofdLock(s.lockFD, unix.F_UNLCK, slot*fenceBlock, 1, false); err != nil {
				s.log.Error("backing: release record lock", "slot", slot, "err", err)
			}
		}
		for _, slot := range slices.Backward(inProcess) {
			s.slots.unlock(slot)
		}
	}

	if !s.skipInProcessLock {
		for _, slot := range slots {
			if err := s.slots.lock(ctx, slot, takenOver); err != nil {
				release()
				return nil, err
			}
			inProcess = append(inProcess, slot)
		}
	}
	if err := ctx.Err(); err != nil {
		release()
		return nil, err
	}
	if !s.skipFileLock {
		for _, slot := range slots {
			if err := ofdLock(s.lockFD, unix.F_WRLCK, slot*fenceBlock, 1, true); err != nil {
				release()
				return nil, err
			}
			crossProcess = append(crossProcess, slot)
		}
	}
	return release, nil
}
