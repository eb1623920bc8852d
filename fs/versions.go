package fs

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Version nodes let plain reads of a record be served from the kernel's page cache (Config.CacheReads;
// docs/design.md, "Kernel caches"). The page cache and the size the kernel reads up to are per kernel
// inode, so an inode whose pages are cached must only ever show one version: a version node is a
// kernel inode for one version of a record (its backing file) at a time, given to a lookup of the
// record's name. Read-only handles opened on it while that version is still the record's are cached
// (FOPEN_KEEP_CACHE, no direct I/O): their pages and its size are that version's. Anything that could
// show the kernel another size or other content through the node (a writer, a truncate, an open
// after a commit) is served as on the record's own node, with direct I/O, once no cached handle is
// open on it; while one is, it is answered ESTALE, and the kernel's retry of that open looks the name
// up again, which then gives the record's own node (versions.recordNode).

// versionNode is a kernel inode for one version of a record at a time.
type versionNode struct {
	gen uint64 // go-fuse's generation of the node: the inode number is the record's identity
	// kernel is the node go-fuse keeps for it (lookups make a node each time; the first one stays).
	kernel atomic.Pointer[node]

	mu sync.Mutex
	// key is the version the node shows (its backing file), st its attributes; unknown until an
	// open or a GETATTR finds the record with no handle open on the node.
	key   contentKey
	st    unix.Stat_t
	known bool
	// cacheable is false once the node served anything else than its version to readers (a
	// writer, a truncate, another version): no handle on it is cached then, and when the last
	// handle is closed its pages are dropped and it shows the version found next (release).
	cacheable bool
	// seen is the version last opened on the node: the first open of a version is served directly
	// (openReader).
	seen   contentKey
	open   int // handles open on the node
	cached int // of which cached
}

// openMode is how an open of a version node is served.
type openMode int

const (
	openDirect openMode = iota // as on the record's own node: direct I/O
	openCached                 // from the page cache: the node's version, unchanged
	openStale                  // ESTALE: the kernel looks the name up again and retries once
)

// openReader decides a read-only open that found the record's backing file with attributes st (nil:
// none): cached if the node may be cached and st is its version (or it shows none yet), from the
// version's second open on; otherwise direct, unless cached handles are open (the opener's content
// or size would show through their pages) past wait, then stale. A cached or direct open counts
// until release. The first open of a version is direct and leaves the node cacheable (it reads the
// same version): a read-modify-write reads each version once, and filling the page cache with it
// only to drop it at the write costs a copy and an invalidation (a 1 MB cycle ran about 15% slower
// cached than direct). A version read a second time is worth caching.
func (v *versionNode) openReader(st *unix.Stat_t, wait time.Duration) openMode {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.adopt(st)
	if v.cacheable && st != nil && contentKeyOf(st) == v.key {
		v.open++
		if v.seen != v.key {
			v.seen = v.key
			return openDirect
		}
		v.cached++
		return openCached
	}
	if !v.waitUncached(wait) {
		return openStale
	}
	v.cacheable = false
	v.open++
	return openDirect
}

// openOther decides an open to write, or a truncate: it changes the size the kernel keeps for the
// node, so it waits for no cached handle to be open (stale until then), and the node is not cached
// again before its release.
func (v *versionNode) openOther(wait time.Duration) openMode {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.waitUncached(wait) {
		return openStale
	}
	v.cacheable = false
	v.open++
	return openDirect
}

// releaseWait is how long an open that cannot be served while cached handles are open waits for
// their releases: the kernel sends RELEASE after close() has returned, so a process that closed
// its last reading descriptor and opens the record to write may come first.
const releaseWait = 2 * time.Millisecond

// waitUncached waits up to wait for no cached handle to be open, and reports whether none is; call
// with v.mu held.
func (v *versionNode) waitUncached(wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for v.cached > 0 && time.Now().Before(deadline) {
		v.mu.Unlock()
		time.Sleep(50 * time.Microsecond)
		v.mu.Lock()
	}
	return v.cached == 0
}

// adopt makes a node that shows no version yet show st's; call with v.mu held.
func (v *versionNode) adopt(st *unix.Stat_t) {
	if !v.known && v.cacheable && st != nil {
		v.key, v.st, v.known = contentKeyOf(st), *st, true
	}
}

// release ends an open counted by openReader or openOther. When the last handle of a node that
// stopped being cached closes, drop (which makes the kernel drop the node's attributes; its pages
// go at the next version's first open, never cached) runs, under the node's lock so that no open
// comes in between, and the node shows the version found next: it is cached again.
func (v *versionNode) release(cached bool, drop func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.open--
	if cached {
		v.cached--
	}
	if v.open == 0 && !v.cacheable {
		drop()
		v.cacheable, v.known = true, false
	}
}

// versionAttrs reports whether the node's attributes are its version's own (the answer to any
// GETATTR of it, whoever asks): while it may be cached, the kernel must never be told another size
// for it. st is the record's backing file now (nil: none). A node whose version is no longer the
// record's, with no cached handle open, is not cached again before its next release.
func (v *versionNode) versionAttrs(st *unix.Stat_t) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.adopt(st)
	if !v.cacheable {
		return false
	}
	if v.cached == 0 && (st == nil || contentKeyOf(st) != v.key) {
		v.cacheable = false
		return false
	}
	return true
}

// touched takes new attributes of the node's version after a metadata change through mergefs (a new
// modification time from utimes is the same version).
func (v *versionNode) touched(st *unix.Stat_t) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.known && v.key.ino == st.Ino && v.key.size == st.Size {
		if v.seen == v.key {
			v.seen = contentKeyOf(st)
		}
		v.key, v.st = contentKeyOf(st), *st
	}
}

// attrs are the node's version's attributes and key; known is false if it shows none.
func (v *versionNode) attrs() (st unix.Stat_t, key contentKey, known bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.st, v.key, v.known
}

// contentKey tells versions of a record apart: a commit writes a new file, and a change made in place
// outside mergefs changes the modification time or the size. (Metadata changes only change the
// change time: they are the same version, with new attributes.)
type contentKey struct {
	ino   uint64
	size  int64
	mtime unix.Timespec
}

func contentKeyOf(st *unix.Stat_t) contentKey {
	return contentKey{ino: st.Ino, size: st.Size, mtime: st.Mtim}
}

// versions is the registry of version nodes: each record's current one, and the threads whose open
// was answered ESTALE by a version node.
type versions struct {
	mu      sync.Mutex
	gen     uint64
	current map[uint64]*versionNode  // by record identity
	pending map[pendingKey]time.Time // until when
	// busy are records whose version node answered ESTALE lately: a writer came while readers had
	// the record open. Lookups give the record's own node until then, for everyone: on a record
	// that is written while it is read, each ESTALE costs the kernel a lookup and an open more
	// than it saves.
	busy map[uint64]time.Time
	now  func() time.Time
}

type pendingKey struct {
	id  uint64
	tid uint32
}

// pendingFor is how long a thread's lookups of a record give the record's own node after a version
// node answered its open ESTALE: the kernel's retry of the open (a lookup and an open) comes well
// within it, and then opens the record's node, which never answers ESTALE for a version.
const pendingFor = 5 * time.Second

// busyFor is how long a record stays busy after its version node last answered ESTALE.
const busyFor = time.Second

// maxVersionRecords bounds the records whose current version node is remembered; past it, those
// without cached handles are forgotten (their next lookup makes a new node).
const maxVersionRecords = 1 << 16

func newVersions(now func() time.Time) *versions {
	return &versions{current: make(map[uint64]*versionNode), pending: make(map[pendingKey]time.Time),
		busy: make(map[uint64]time.Time), now: now}
}

// node returns the version node a lookup of record id, whose backing file has st, gives: the current
// one if it may be cached and shows that file or none yet, else a new one, which becomes current;
// replaced is the one it replaces (nil if none), whose attributes the kernel may still cache.
func (vs *versions) node(id uint64, st *unix.Stat_t) (v, replaced *versionNode) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if old := vs.current[id]; old != nil {
		old.mu.Lock()
		old.adopt(st)
		reuse := old.cacheable && old.key == contentKeyOf(st)
		old.mu.Unlock()
		if reuse {
			return old, nil
		}
		replaced = old
	}
	if len(vs.current) >= maxVersionRecords {
		for rid, v := range vs.current {
			v.mu.Lock()
			if v.open == 0 {
				delete(vs.current, rid)
			}
			v.mu.Unlock()
		}
	}
	// Generation 1 is the record's own node (node.stableAttr).
	vs.gen++
	v = &versionNode{gen: vs.gen + 1, key: contentKeyOf(st), st: *st, known: true, cacheable: true}
	vs.current[id] = v
	return v, replaced
}

// currentNode is the kernel node of record id's current version node, or nil.
func (vs *versions) currentNode(id uint64) *node {
	vs.mu.Lock()
	v := vs.current[id]
	vs.mu.Unlock()
	if v == nil {
		return nil
	}
	return v.kernel.Load()
}

// pend makes the lookups of record id by thread tid give the record's own node for a while, and the
// record busy.
func (vs *versions) pend(id uint64, tid uint32) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	now := vs.now()
	if len(vs.pending) >= maxVersionRecords {
		for k, until := range vs.pending {
			if now.After(until) {
				delete(vs.pending, k)
			}
		}
	}
	if len(vs.busy) >= maxVersionRecords {
		for k, until := range vs.busy {
			if now.After(until) {
				delete(vs.busy, k)
			}
		}
	}
	vs.pending[pendingKey{id, tid}] = now.Add(pendingFor)
	vs.busy[id] = now.Add(busyFor)
}

// recordNode reports whether thread tid's lookups of record id give the record's own node: it is
// retrying an open a version node answered ESTALE, or the record is busy.
func (vs *versions) recordNode(id uint64, tid uint32) bool {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	now := vs.now()
	if until, ok := vs.busy[id]; ok {
		if now.Before(until) {
			return true
		}
		delete(vs.busy, id)
	}
	k := pendingKey{id, tid}
	until, ok := vs.pending[k]
	if ok && now.After(until) {
		delete(vs.pending, k)
		return false
	}
	return ok
}

// isBusy reports whether record id is busy (pend).
func (vs *versions) isBusy(id uint64) bool {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	until, ok := vs.busy[id]
	return ok && vs.now().Before(until)
}

// done ends thread tid's pending lookups of record id: it opened the record's own node.
func (vs *versions) done(id uint64, tid uint32) {
	vs.mu.Lock()
	delete(vs.pending, pendingKey{id, tid})
	vs.mu.Unlock()
}
