package locks

import (
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	rd = unix.F_RDLCK
	wr = unix.F_WRLCK
	un = unix.F_UNLCK
)

var file1 = Key{File: 1}

func lk(owner uint64, typ uint32, start, end uint64) Lock {
	return Lock{Owner: owner, Pid: uint32(100 + owner), Type: typ, Start: start, End: end}
}

func TestPosixRanges(t *testing.T) {
	var tb Table
	if tb.TryLock(file1, lk(1, wr, 0, 99)) != nil {
		t.Fatal("first lock refused")
	}
	if tb.TryLock(file1, lk(2, rd, 50, 60)) == nil {
		t.Fatal("a read lock inside another owner's write lock was granted")
	}
	if tb.TryLock(file1, lk(2, wr, 100, MaxOffset)) != nil {
		t.Fatal("a lock next to another owner's was refused")
	}
	// Owner 1 unlocks the middle: its lock splits in two, and owner 2 fits in between.
	tb.TryLock(file1, lk(1, un, 40, 59))
	if tb.TryLock(file1, lk(2, rd, 45, 50)) != nil {
		t.Fatal("a lock in the unlocked middle was refused")
	}
	c, ok := tb.Conflict(file1, lk(3, rd, 60, 60))
	if !ok || c.Owner != 1 || c.Start != 60 || c.End != 99 || c.Pid != 101 {
		t.Fatalf("conflict with byte 60: %+v %v, want owner 1's 60-99", c, ok)
	}
	// An owner's own locks never conflict with its request: a write lock over its own read lock
	// and another owner's nothing turns it exclusive there.
	if tb.TryLock(file1, lk(2, wr, 40, 59)) != nil {
		t.Fatal("owner 2 could not turn its own read lock exclusive")
	}
	// Read locks share.
	var tr Table
	for o := uint64(1); o <= 3; o++ {
		if tr.TryLock(file1, lk(o, rd, 0, MaxOffset)) != nil {
			t.Fatalf("read lock %d refused", o)
		}
	}
	if tr.TryLock(file1, lk(1, wr, 0, 0)) == nil {
		t.Fatal("turning a shared lock exclusive while others share it succeeded")
	}
	if got := tr.Held(file1); len(got) != 3 || got[0].Type != rd {
		t.Fatalf("a refused upgrade changed the owner's lock: %+v", got)
	}
}

func TestOwnLocksMerge(t *testing.T) {
	var tb Table
	tb.TryLock(file1, lk(1, rd, 0, 9))
	tb.TryLock(file1, lk(1, rd, 10, 19))
	tb.TryLock(file1, lk(1, rd, 30, 39))
	tb.TryLock(file1, lk(1, rd, 15, 31))
	if got, want := tb.Held(file1), []Lock{lk(1, rd, 0, 39)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("held %+v, want %+v", got, want)
	}
}

func TestFlockConversionGivesUpFirst(t *testing.T) {
	var tb Table
	fl := Key{File: 1, Flock: true}
	whole := func(owner uint64, typ uint32) Lock { return lk(owner, typ, 0, MaxOffset) }
	tb.TryLock(fl, whole(1, rd))
	tb.TryLock(fl, whole(2, rd))
	if tb.TryLock(fl, whole(1, wr)) == nil {
		t.Fatal("flock upgrade granted while another holder shares the file")
	}
	if got := tb.Held(fl); len(got) != 1 || got[0].Owner != 2 {
		t.Fatalf("after a failed upgrade owner 1 should hold nothing (flock(2)): %+v", got)
	}
	// flock and POSIX locks of one file do not see each other.
	if tb.TryLock(file1, whole(3, wr)) != nil {
		t.Fatal("a POSIX lock was refused because of a flock lock")
	}
}

func TestUnlockForgetsFiles(t *testing.T) {
	var tb Table
	for f := uint64(1); f <= 10; f++ {
		tb.TryLock(Key{File: f}, lk(7, wr, 0, MaxOffset))
		tb.TryLock(Key{File: f, Flock: true}, lk(8, rd, 0, MaxOffset))
	}
	tb.TryLock(Key{File: 1}, lk(7, un, 0, MaxOffset))
	for f := uint64(2); f <= 10; f++ {
		tb.Unlock(Key{File: f}, 7)
		tb.Unlock(Key{File: f, Flock: true}, 8)
	}
	tb.Unlock(Key{File: 1, Flock: true}, 8)
	tb.TryLock(Key{File: 11}, lk(1, un, 0, 5))
	if files, owners := tb.Size(); files != 0 || owners != 0 || tb.UserLocks(0) != 0 {
		t.Fatalf("%d files and %d owners kept with no locks", files, owners)
	}
}

func TestUnlockVia(t *testing.T) {
	var tb Table
	via := func(l Lock, v uint64) Lock { l.Via = v; return l }
	a, b := via(lk(1, rd, 0, 9), 10), via(lk(2, rd, 5, 20), 20) // taken through open files 10 and 20
	c := via(lk(1, rd, 10, 40), 11)                             // owner 1 again, through file 11
	for _, l := range []Lock{a, b, c} {
		tb.TryLock(file1, l)
	}
	if got := tb.Held(file1); len(got) != 3 {
		t.Fatalf("an owner's touching locks through two open files were merged: %+v", got)
	}
	done := make(chan error, 1)
	go func() { done <- tb.Lock(context.Background(), file1, via(lk(4, wr, 0, 4), 40)) }()
	tb.UnlockVia(file1, 10)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := tb.Held(file1), []Lock{b, c, via(lk(4, wr, 0, 4), 40)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("held %+v, want %+v", got, want)
	}
	// An owner's new lock over its old one through another file replaces it: ending the old file
	// leaves it.
	tb.TryLock(file1, via(lk(1, wr, 30, 40), 12))
	tb.UnlockVia(file1, 11)
	if got, want := tb.Held(file1), []Lock{b, via(lk(4, wr, 0, 4), 40), via(lk(1, wr, 30, 40), 12)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("held %+v, want %+v", got, want)
	}
}

func TestMaxPerUser(t *testing.T) {
	tb := Table{MaxPerUser: 6}
	user := func(l Lock, uid uint32) Lock { l.Uid = uid; return l }
	// Owners 1 and 2 of user 7 lock every other byte, on two files.
	n := 0
	for b := uint64(0); ; b += 2 {
		err := tb.TryLock(Key{File: b % 4}, user(lk(1+b%3, rd, b, b), 7))
		if err == ErrTooMany {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 5 || tb.UserLocks(7) != 5 {
		t.Fatalf("user 7 got %d locks (counted %d) before ErrTooMany; want 5 (a request may add 2: granted up to 4 held)", n, tb.UserLocks(7))
	}
	// Another user is not affected; an unlock that splits a lock is refused at the bound too.
	if err := tb.TryLock(file1, user(lk(9, wr, 100, 200), 8)); err != nil {
		t.Fatal(err)
	}
	// At the bound a whole lock can still be given up (the bound must not keep a process from
	// unlocking), and it makes room again.
	if err := tb.TryLock(Key{File: 0}, user(lk(1, un, 0, 0), 7)); err != nil {
		t.Fatalf("unlock at the bound: %v", err)
	}
	if got := tb.UserLocks(7); got != 4 {
		t.Fatalf("user 7 holds %d locks after giving one up, want 4", got)
	}
	// An unlock that splits a lock needs room for one more.
	small := Table{MaxPerUser: 3}
	for _, l := range []Lock{lk(1, rd, 0, 9), lk(1, rd, 20, 29), lk(1, un, 4, 5)} {
		if err := small.TryLock(file1, l); err != nil {
			t.Fatalf("%+v: %v", l, err)
		}
	}
	if err := small.TryLock(file1, lk(1, un, 22, 23)); err != ErrTooMany {
		t.Fatalf("an unlock splitting a lock past the bound: %v, want ErrTooMany", err)
	}
	if err := small.TryLock(file1, lk(1, un, 20, 29)); err != nil || small.UserLocks(0) != 2 {
		t.Fatalf("a whole unlock at the bound: %v, %d locks left", err, small.UserLocks(0))
	}
	// Unlocking by owner frees the user's count, whatever user the request names.
	for f := uint64(0); f < 4; f++ {
		for o := uint64(1); o <= 3; o++ {
			tb.Unlock(Key{File: f}, o)
		}
	}
	if got := tb.UserLocks(7); got != 0 {
		t.Fatalf("user 7 holds %d locks after unlocking all", got)
	}
	if err := tb.TryLock(Key{File: 0}, user(lk(1, rd, 0, 0), 7)); err != nil {
		t.Fatal(err)
	}
}

func TestLockWaits(t *testing.T) {
	var tb Table
	tb.TryLock(file1, lk(1, wr, 0, 10))
	done := make(chan error, 1)
	go func() { done <- tb.Lock(context.Background(), file1, lk(2, wr, 5, 5)) }()
	select {
	case err := <-done:
		t.Fatalf("Lock returned %v while the range was held", err)
	case <-time.After(20 * time.Millisecond):
	}
	if held, waiting := tb.Counts(); held != 1 || waiting != 1 {
		t.Errorf("counts while one request waits: %d held, %d waiting", held, waiting)
	}
	tb.TryLock(file1, lk(1, un, 0, 4)) // still conflicts
	select {
	case err := <-done:
		t.Fatalf("Lock returned %v while byte 5 was held", err)
	case <-time.After(20 * time.Millisecond):
	}
	tb.Unlock(file1, 1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := tb.Held(file1); len(got) != 1 || got[0].Owner != 2 {
		t.Fatalf("held %+v", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- tb.Lock(ctx, file1, lk(3, rd, 0, MaxOffset)) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("a cancelled wait returned %v", err)
	}
	if got := tb.Held(file1); len(got) != 1 {
		t.Fatalf("a cancelled wait left %+v", got)
	}
	if held, waiting := tb.Counts(); held != 1 || waiting != 0 {
		t.Errorf("counts after the waits: %d held, %d waiting", held, waiting)
	}
}

// held is what the model keeps of one owner's lock of one byte.
type held struct {
	typ uint32
	via uint64
}

// TestAgainstByteModel drives the table with random requests over a small file and checks every
// answer and the held locks against a model that keeps each byte's holders (and the open file each
// took it through, whose close ends it).
func TestAgainstByteModel(t *testing.T) {
	const size = 24 // bytes modelled; MaxOffset stands for "to the end" and maps to the last one
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var tb Table
		model := make([]map[uint64]held, size) // byte -> owner -> type and open file
		for i := range model {
			model[i] = map[uint64]held{}
		}
		for step := 0; step < 60; step++ {
			owner := uint64(1 + rng.IntN(3))
			via := uint64(1 + rng.IntN(2))
			if rng.IntN(8) == 0 { // the open file via closes: its locks end
				tb.UnlockVia(file1, via)
				for b := range model {
					for o, h := range model[b] {
						if h.via == via {
							delete(model[b], o)
						}
					}
				}
				continue
			}
			typ := []uint32{rd, wr, un}[rng.IntN(3)]
			start := uint64(rng.IntN(size - 1))
			end := start + uint64(rng.IntN(size-1-int(start)))
			req := lk(owner, typ, start, end)
			req.Via = via
			if end == size-2 && rng.IntN(2) == 0 {
				req.End, end = MaxOffset, size-1
			}
			free := true
			for b := start; b <= end && typ != un; b++ {
				for o, h := range model[b] {
					if o != owner && (h.typ == wr || typ == wr) {
						free = false
					}
				}
			}
			if _, c := tb.Conflict(file1, req); c == free && typ != un {
				t.Fatalf("round %d step %d: Conflict(%+v) = %v, model free %v", round, step, req, c, free)
			}
			if got := tb.TryLock(file1, req) == nil; got != free {
				t.Fatalf("round %d step %d: TryLock(%+v) = %v, model %v", round, step, req, got, free)
			}
			if free {
				for b := start; b <= end; b++ {
					if typ == un {
						delete(model[b], owner)
					} else {
						model[b][owner] = held{typ, via}
					}
				}
			}
			seen := make([]map[uint64]held, size)
			for i := range seen {
				seen[i] = map[uint64]held{}
			}
			for _, l := range tb.Held(file1) {
				e := min(l.End, size-1)
				for b := l.Start; b <= e; b++ {
					if _, dup := seen[b][l.Owner]; dup {
						t.Fatalf("round %d step %d: owner %d holds byte %d twice: %+v", round, step, l.Owner, b, tb.Held(file1))
					}
					seen[b][l.Owner] = held{l.Type, l.Via}
				}
				if (l.End == MaxOffset) != (l.End >= size-1) {
					t.Fatalf("round %d step %d: lock %+v lost or gained 'to the end'", round, step, l)
				}
			}
			if n := tb.UserLocks(0); n != len(tb.Held(file1)) {
				t.Fatalf("round %d step %d: user holds %d locks by the count, %d in the table", round, step, n, len(tb.Held(file1)))
			}
			if !reflect.DeepEqual(seen, model) {
				t.Fatalf("round %d step %d: held %+v, model %v", round, step, tb.Held(file1), model)
			}
		}
	}
}
