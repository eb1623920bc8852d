package fs

import (
	"sync"
	"testing"
	"time"

	"github.com/mergefs/mergefs/backing"
)

// fakeDirs is a dirCache over made-up descriptors, with a clock the test moves and a record of what
// it closed and what is in use: a descriptor closed while a request uses it, or closed twice, fails.
type fakeDirs struct {
	*dirCache
	t      *testing.T
	mu     sync.Mutex
	clock  time.Time
	inUse  map[int]int
	closed map[int]int
}

func newFakeDirs(t *testing.T, ttl time.Duration, max int) *fakeDirs {
	f := &fakeDirs{t: t, clock: time.Unix(1000, 0), inUse: map[int]int{}, closed: map[int]int{}}
	f.dirCache = newDirCache(ttl, f.now)
	f.dirCache.max = max
	f.dirCache.close = f.closeFD
	t.Cleanup(func() {
		f.dirCache.mu.Lock()
		defer f.dirCache.mu.Unlock()
		if f.sweeps != nil {
			f.sweeps.Stop()
		}
	})
	return f
}

func (f *fakeDirs) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clock
}

func (f *fakeDirs) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock = f.clock.Add(d)
}

func (f *fakeDirs) closeFD(fd int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inUse[fd] > 0 {
		f.t.Errorf("descriptor %d closed while %d requests use it", fd, f.inUse[fd])
	}
	f.closed[fd]++
	if f.closed[fd] > 1 {
		f.t.Errorf("descriptor %d closed %d times", fd, f.closed[fd])
	}
}

func (f *fakeDirs) isClosed(fd int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed[fd] > 0
}

// use marks the directory as in use by a request until the returned function ends it.
func (f *fakeDirs) use(dir backing.Dir, done func()) func() {
	f.mu.Lock()
	f.inUse[dir.FD]++
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.inUse[dir.FD]--
		f.mu.Unlock()
		done()
	}
}

func TestDirCacheKeepsADirectoryForItsTTL(t *testing.T) {
	f := newFakeDirs(t, time.Second, 4)
	n := &node{}
	if _, _, ok := f.get(n); ok {
		t.Fatal("an empty cache gave a directory")
	}
	first := f.use(backing.Dir{FD: 10, Ino: 7}, f.put(n, backing.Dir{FD: 10, Ino: 7}))
	dir, done, ok := f.get(n)
	if !ok || dir.FD != 10 || dir.Ino != 7 {
		t.Fatalf("within its TTL: %+v, %v", dir, ok)
	}
	second := f.use(dir, done)
	first()
	if f.isClosed(10) {
		t.Fatal("closed while cached")
	}
	f.advance(time.Second)
	if _, _, ok := f.get(n); ok {
		t.Fatal("an expired directory was given")
	}
	if f.isClosed(10) {
		t.Fatal("closed while a request still uses it")
	}
	second()
	if !f.isClosed(10) {
		t.Fatal("expired and unused, but not closed")
	}
	// The next open replaces it.
	f.use(backing.Dir{FD: 11}, f.put(n, backing.Dir{FD: 11}))()
	if dir, done, ok := f.get(n); !ok || dir.FD != 11 {
		t.Fatalf("after a new open: %+v, %v", dir, ok)
	} else {
		done()
	}
}

func TestDirCacheReplacesForgetsAndSweeps(t *testing.T) {
	f := newFakeDirs(t, time.Second, 4)
	a, b := &node{}, &node{}
	f.put(a, backing.Dir{FD: 20})()
	f.put(a, backing.Dir{FD: 21})() // opened again (another request raced): the older goes
	if !f.isClosed(20) || f.isClosed(21) {
		t.Fatal("a replaced directory stays open, or the new one was closed")
	}
	dir, done, _ := f.get(a)
	end := f.use(dir, done)
	f.forget(a) // the node no longer stands for it (removed, detached)
	if f.isClosed(21) {
		t.Fatal("forgotten directory closed while in use")
	}
	end()
	if !f.isClosed(21) {
		t.Fatal("forgotten and unused, but not closed")
	}
	f.put(b, backing.Dir{FD: 22})()
	f.advance(2 * time.Second)
	f.sweep() // what the timer does for an idle daemon
	if !f.isClosed(22) {
		t.Fatal("an expired directory stays open after a sweep")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.entries) != 0 {
		t.Fatalf("%d entries left after the sweep", len(f.entries))
	}
}

func TestDirCacheIsBounded(t *testing.T) {
	f := newFakeDirs(t, time.Second, 2)
	nodes := []*node{{}, {}, {}}
	for i, n := range nodes {
		f.put(n, backing.Dir{FD: 30 + i})()
	}
	if f.isClosed(30) || f.isClosed(31) || !f.isClosed(32) {
		t.Fatal("a full cache should keep what it has and close the directory it had no room for")
	}
	// Expired entries make room.
	f.advance(time.Second)
	f.put(nodes[2], backing.Dir{FD: 33})()
	if !f.isClosed(30) || !f.isClosed(31) || f.isClosed(33) {
		t.Fatal("expired entries were not dropped for a new one")
	}
}

func TestDirCacheOffCachesNothing(t *testing.T) {
	f := newFakeDirs(t, 0, 4)
	n := &node{}
	f.put(n, backing.Dir{FD: 40})()
	if !f.isClosed(40) {
		t.Fatal("with no TTL, a directory must be closed when its request ends")
	}
	if _, _, ok := f.get(n); ok {
		t.Fatal("with no TTL, a directory was given from the cache")
	}
}

// Requests on several directories at once, the clock moving and entries expiring, swept and
// forgotten meanwhile: every descriptor is closed exactly once, never while in use (run with -race).
func TestDirCacheConcurrentUse(t *testing.T) {
	f := newFakeDirs(t, 10*time.Millisecond, 3)
	nodes := []*node{{}, {}, {}, {}, {}}
	var next sync.Mutex
	fd := 100
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				n := nodes[(w+i)%len(nodes)]
				dir, done, ok := f.get(n)
				if !ok {
					next.Lock()
					fd++
					dir = backing.Dir{FD: fd}
					next.Unlock()
					done = f.put(n, dir)
				}
				end := f.use(dir, done)
				switch i % 7 {
				case 0:
					f.advance(time.Millisecond)
				case 3:
					f.forget(nodes[(w+i+1)%len(nodes)])
				case 5:
					f.sweep()
				}
				end()
			}
		}()
	}
	wg.Wait()
	f.advance(time.Second)
	f.sweep()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 101; i <= fd; i++ {
		if f.closed[i] != 1 {
			t.Errorf("descriptor %d closed %d times, want once", i, f.closed[i])
		}
	}
}
