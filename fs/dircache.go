package fs

import (
	"sync"
	"time"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/sysx"
)

// dirCache keeps the backing directories of recently used directory nodes open for a short while,
// so that requests to records in a subdirectory do not each open the directory beneath the root and
// check it (openat2, a statx and a close, six times per read-modify-write of a record: about 7% of
// the daemon's CPU on reads). A descriptor is used for dirCacheTTL after the open that checked it;
// then the next request opens and checks the directory again. Where other hosts may change the
// backing directory, nothing is cached (docs/design.md, section 5).
//
// Each entry counts its users: the cache holds one reference while the entry is current, each
// request one while it uses the descriptor, and the descriptor is closed when the last one goes, so
// that no request ever uses a descriptor closed (and its number reused) under it.
type dirCache struct {
	ttl   time.Duration // 0: nothing is cached
	max   int
	now   func() time.Time
	close func(fd int)

	mu      sync.Mutex
	entries map[*node]*cachedDir
	sweeps  *time.Timer // pending while entries are cached: an idle daemon closes them too
}

type cachedDir struct {
	dir   backing.Dir
	until time.Time
	refs  int // guarded by dirCache.mu
}

// dirCacheTTL is how long a directory found beneath the root at its path is taken to be there: a
// rename or removal of it outside the mount (through the mount, the node follows it) is seen by the
// next open after that. The kernel itself keeps names for a second (the entry timeout).
const dirCacheTTL = 100 * time.Millisecond

// dirCacheMax bounds the descriptors held: directories in use at once, not the tree.
const dirCacheMax = 256

func newDirCache(ttl time.Duration, now func() time.Time) *dirCache {
	return &dirCache{ttl: ttl, max: dirCacheMax, now: now, close: sysx.Close, entries: make(map[*node]*cachedDir)}
}

// get returns n's directory if it is cached and current, with the function that ends its use.
func (c *dirCache) get(n *node) (backing.Dir, func(), bool) {
	if c.ttl <= 0 {
		return backing.Dir{}, nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[n]
	if e == nil {
		return backing.Dir{}, nil, false
	}
	if !c.now().Before(e.until) {
		c.dropLocked(n, e)
		return backing.Dir{}, nil, false
	}
	e.refs++
	return e.dir, func() { c.release(e) }, true
}

// put takes over dir, just opened and checked as n's directory, and returns the function that ends
// the caller's use of it: the cache keeps it for others if it has room.
func (c *dirCache) put(n *node, dir backing.Dir) func() {
	e := &cachedDir{dir: dir, until: c.now().Add(c.ttl), refs: 1}
	if c.ttl > 0 {
		c.mu.Lock()
		if old := c.entries[n]; old != nil {
			c.dropLocked(n, old)
		}
		if len(c.entries) >= c.max {
			now := c.now()
			for k, old := range c.entries {
				if !now.Before(old.until) {
					c.dropLocked(k, old)
				}
			}
		}
		if len(c.entries) < c.max {
			c.entries[n] = e
			e.refs++
			if c.sweeps == nil {
				c.sweeps = time.AfterFunc(c.ttl, c.sweep)
			}
		}
		c.mu.Unlock()
	}
	return func() { c.release(e) }
}

// sweep drops the entries that expired, and comes back while any are left.
func (c *dirCache) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for n, e := range c.entries {
		if !now.Before(e.until) {
			c.dropLocked(n, e)
		}
	}
	c.sweeps = nil
	if len(c.entries) > 0 {
		c.sweeps = time.AfterFunc(c.ttl, c.sweep)
	}
}

// forget drops n's directory, if cached: n no longer stands for it.
func (c *dirCache) forget(n *node) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[n]; e != nil {
		c.dropLocked(n, e)
	}
}

// dropLocked removes e, n's entry, from the cache, closing it unless a request still uses it.
func (c *dirCache) dropLocked(n *node, e *cachedDir) {
	delete(c.entries, n)
	c.unrefLocked(e)
}

func (c *dirCache) release(e *cachedDir) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unrefLocked(e)
}

func (c *dirCache) unrefLocked(e *cachedDir) {
	e.refs--
	if e.refs == 0 {
		c.close(e.dir.FD)
	}
}
