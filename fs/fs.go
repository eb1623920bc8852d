// Package fs is the FUSE side of mergefs: a loopback over a backing directory in which records (files
// whose names match the record patterns) are served as per-handle snapshots whose writes are buffered
// and merged into the current record at commit points. See docs/design.md for the contract.
//
// Everything the daemon does in the backing directory goes through descriptors beneath the store's
// root descriptor, never through a path string: a node is found again by its path from the root,
// resolved with openat2 (no symlinks, no escape), and then checked to be the object the node stands
// for (inode number and birth time, or a record's identity). Every pass-through operation runs with
// the caller's file-system credentials (sysx.AsUser), so the backing filesystem checks permissions
// as it would for the caller itself.
package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/internal/sysx"
	"github.com/mergefs/mergefs/merge"
)

// Config says how a mount behaves.
type Config struct {
	// Store is the backing directory: records are committed through it, and everything else is
	// reached relative to its root descriptor.
	Store *backing.Store

	// RecordPatterns are path.Match patterns on base names; default "*.json".
	RecordPatterns []string
	Merge          merge.Options
	// StateDir keeps rejected content (StateDir/rejected).
	StateDir string

	// ReadMemory and ReadAge bound the read versions kept to choose bases.
	ReadMemory int64
	ReadAge    time.Duration

	// Limits bound what one user, and the mount, can make the daemon hold (zero: unbounded).
	Limits Limits
	// Rejected bounds what is kept of refused content in StateDir/rejected.
	Rejected RejectedLimits

	// CacheReads lets plain reads of an unchanged record be served from the kernel's page cache,
	// through a kernel inode per version of the record (versions.go). Not with a store other hosts
	// write (Store.Fencing): the daemon would not see their commits.
	CacheReads bool

	Logger   *slog.Logger
	Observer event.Observer
}

// Defaults for the read-version bounds.
const (
	DefaultReadMemory = 64 << 20
	DefaultReadAge    = 5 * time.Minute
)

// FS is the state of one mount shared by all its nodes.
type FS struct {
	store     *backing.Store
	rootFD    int
	rootDev   uint64
	patterns  []string
	mergeOpts merge.Options
	rejected  *rejectedStore
	log       *slog.Logger
	observer  event.Observer

	callers *callerResolver
	history *history
	budget  *budget

	// requests carries what go-fuse's node API leaves out of a request, from rawFS to the node
	// method, keyed by the request's cancel channel: whether a GETATTR named a file handle, the
	// caller's umask of a create, a FLUSH's lock owner (see rawFS).
	requests sync.Map // <-chan struct{} -> *requestInfo

	mu   sync.Mutex
	open map[string][]*recordHandle // by record path at open

	// staleOpens remembers when each thread last had an OPEN answered with ESTALE (see staleOpen).
	staleOpens sync.Map // uint32 -> time.Time

	// limitLogged rate-limits the log lines of refusals by the limits (warnLimit).
	limitLogged sync.Map // limitLogKey -> time.Time

	// linkWarned remembers records found with several hard links, to log each once.
	linkWarned sync.Map // string -> struct{}

	// rules are the merge rules in force (nil: none); SetRules replaces them.
	rules atomic.Pointer[merge.Rules]

	// cacheRecordAttrs: the kernel may cache a record's attributes while they are the same for
	// everyone (node.Getattr): no other host changes records, so the daemon knows every change.
	cacheRecordAttrs bool
	// dirs keeps the directories of recent requests open (dirCache); nothing where cacheRecordAttrs
	// is off, for the same reason.
	dirs *dirCache
	// versions are the records' version nodes (Config.CacheReads; nil: off).
	versions *versions
	// locks are the mount's file locks, kept by the daemon where a record can have several kernel
	// inodes (with versions; nil: the kernel keeps them).
	locks *fileLocks

	counters counters
	now      func() time.Time
}

// CachesReads reports whether plain reads of records are served from the kernel's page cache
// (Config.CacheReads).
func (fsys *FS) CachesReads() bool { return fsys.versions != nil }

// SetRules replaces the merge rules for the commits that start from now on (nil: none).
func (fsys *FS) SetRules(r *merge.Rules) { fsys.rules.Store(r) }

// New checks cfg and returns the filesystem and its root node.
func New(cfg Config) (*FS, gofs.InodeEmbedder, error) {
	if cfg.Store == nil {
		return nil, nil, errors.New("mergefs: a backing store is required")
	}
	patterns := cfg.RecordPatterns
	if len(patterns) == 0 {
		patterns = []string{"*.json"}
	}
	for _, p := range patterns {
		if strings.Contains(p, "/") {
			return nil, nil, fmt.Errorf("record pattern %q: patterns match base names and cannot contain '/'", p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, nil, fmt.Errorf("record pattern %q: %w", p, err)
		}
	}
	if cfg.ReadMemory == 0 {
		cfg.ReadMemory = DefaultReadMemory
	}
	if cfg.ReadAge == 0 {
		cfg.ReadAge = DefaultReadAge
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	observer := cfg.Observer
	if observer == nil {
		observer = event.Discard{}
	}
	rootFD := cfg.Store.RootFD()
	st, err := statx(rootFD, "")
	if err != nil {
		return nil, nil, fmt.Errorf("backing directory: %w", err)
	}
	fsys := &FS{
		store:     cfg.Store,
		rootFD:    rootFD,
		rootDev:   st.dev,
		patterns:  patterns,
		mergeOpts: cfg.Merge,
		log:       logger,
		observer:  observer,
		callers:   newCallerResolver("/proc"),
		open:      make(map[string][]*recordHandle),
		now:       time.Now,
	}
	if cfg.StateDir != "" {
		fsys.rejected = &rejectedStore{dir: path.Join(cfg.StateDir, "rejected"), limits: cfg.Rejected}
	}
	fsys.history = newHistory(cfg.ReadMemory, cfg.ReadAge, fsys.now)
	fsys.budget = newBudget(cfg.Limits)
	fsys.counters.ruleMerges = make(map[merge.Strategy]*atomic.Uint64)
	for _, s := range merge.Strategies() {
		fsys.counters.ruleMerges[s] = new(atomic.Uint64)
	}
	fsys.rules.Store(cfg.Merge.Rules)
	fsys.cacheRecordAttrs = !cfg.Store.Fencing()
	var dirTTL time.Duration
	if fsys.cacheRecordAttrs {
		dirTTL = dirCacheTTL
	}
	fsys.dirs = newDirCache(dirTTL, fsys.now)
	if cfg.CacheReads {
		if !fsys.cacheRecordAttrs {
			return nil, nil, errors.New("mergefs: cached reads need a backing store that no other host writes")
		}
		fsys.versions = newVersions(fsys.now)
		fsys.locks = newFileLocks()
	}
	root := &node{fsys: fsys, id: st.identity()}
	return fsys, root, nil
}

// MountOptions returns the go-fuse options a mergefs mount needs; fsName is shown as the source in
// /proc/mounts.
func MountOptions(fsName string, allowOther bool) *gofs.Options {
	entry := time.Second
	return &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            fsName,
			Name:              "mergefs",
			DirectMountStrict: true,
			// READ and WRITE requests of up to 1 MiB (the kernel's most)
			// instead of go-fuse's 128 KiB: a record of 256 KiB is read
			// in two requests, not four, and written in one.
			MaxWrite:   1 << 20,
			AllowOther: allowOther,
			// The daemon runs as root: let the kernel check the caller
			// against the modes and owners it reports.
			Options: []string{"default_permissions"},
			// O_TRUNC must reach OPEN; otherwise the kernel truncates
			// the backing record by a handle-less SETATTR first.
			// DONT_MASK: the caller's umask arrives beside the mode,
			// unapplied (see EnableAcl).
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_DONT_MASK,
			// A passthrough handle on a file later renamed onto a
			// record would bypass the snapshot and give EIO.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
			// The kernel enforces POSIX ACLs (read through getxattr) as
			// well as modes; it then leaves the umask to the filesystem,
			// which applies it unless a default ACL decides the mode.
			EnableAcl: true,
		},
		EntryTimeout: &entry,
		// AttrTimeout stays nil: nodes set their own, zero for records
		// (sizes depend on the caller), a second for everything else.
		// A file of mode 0 has mode 0, not go-fuse's 0644.
		NullPermissions: true,
	}
}

// Mount serves fsys's root at mountpoint and returns once the mount is live.
func (fsys *FS) Mount(mountpoint string, root gofs.InodeEmbedder, opts *gofs.Options) (*fuse.Server, error) {
	if r, ok := root.(*node); ok {
		attr := r.stableAttr(syscall.S_IFDIR)
		opts.RootStableAttr = &attr
	}
	opts.EnableLocks = fsys.locks != nil
	raw := &rawFS{RawFileSystem: gofs.NewNodeFS(root, opts), fsys: fsys}
	server, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, err
	}
	return server, nil
}

// rawFS is go-fuse's node filesystem with what its node API leaves out carried to the node methods
// (FS.requests): whether a GETATTR named a file handle (FUSE_GETATTR_FH), which go-fuse hides by
// passing the node's first open handle either way; the caller's umask at a create, which the
// filesystem applies itself once the kernel enforces ACLs; and the lock owner of a FLUSH, whose
// POSIX locks the close ends (locks.go).
type rawFS struct {
	fuse.RawFileSystem
	fsys *FS
}

// requestInfo is what rawFS carries for one request, both ways.
type requestInfo struct {
	namedFH bool   // GETATTR: the kernel named a file handle
	umask   uint32 // CREATE, MKDIR, MKNOD: the caller's umask
	// ino, set by Getattr, is the inode number to report instead of go-fuse's for the node: a
	// record's, for a node that became that record (a file renamed onto it) and keeps its own
	// number in go-fuse until the kernel looks the name up again.
	ino uint64
	// lockOwner is a FLUSH's lock owner: the closing process's file table.
	lockOwner uint64
}

func (r *rawFS) with(cancel <-chan struct{}, info *requestInfo, fn func() fuse.Status) fuse.Status {
	r.fsys.requests.Store(cancel, info)
	defer r.fsys.requests.Delete(cancel)
	return fn()
}

func (r *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	info := &requestInfo{namedFH: in.Flags()&fuse.FUSE_GETATTR_FH != 0}
	st := r.with(cancel, info, func() fuse.Status {
		return r.RawFileSystem.GetAttr(cancel, in, out)
	})
	if info.ino != 0 {
		out.Ino = info.ino
	}
	return st
}

func (r *rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return r.with(cancel, &requestInfo{umask: in.Umask}, func() fuse.Status {
		return r.RawFileSystem.Create(cancel, in, name, out)
	})
}

func (r *rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return r.with(cancel, &requestInfo{umask: in.Umask}, func() fuse.Status {
		return r.RawFileSystem.Mkdir(cancel, in, name, out)
	})
}

func (r *rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return r.with(cancel, &requestInfo{umask: in.Umask}, func() fuse.Status {
		return r.RawFileSystem.Mknod(cancel, in, name, out)
	})
}

func (r *rawFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if r.fsys.locks == nil {
		return r.RawFileSystem.Flush(cancel, in)
	}
	return r.with(cancel, &requestInfo{lockOwner: in.LockOwner}, func() fuse.Status {
		return r.RawFileSystem.Flush(cancel, in)
	})
}

// request returns what rawFS carries for the request behind ctx (an unused one if nothing).
func (fsys *FS) request(ctx context.Context) *requestInfo {
	if fc, ok := ctx.(*fuse.Context); ok {
		if info, ok := fsys.requests.Load(fc.Cancel); ok {
			return info.(*requestInfo)
		}
	}
	return &requestInfo{}
}

// createMode is the mode a file made in dir gets: the caller's mode less its umask, unless dir has a
// default ACL, which then decides (as the backing filesystem does when asked for the full mode).
func (fsys *FS) createMode(ctx context.Context, dirfd int, mode uint32) uint32 {
	umask := fsys.request(ctx).umask
	if umask == 0 {
		return mode
	}
	if _, err := sysx.Getxattr(sysx.ProcPath(dirfd), "system.posix_acl_default", false); err == nil {
		return mode
	}
	return mode &^ (umask & 0o777)
}

// isRecordName reports whether a base name matches the record patterns.
func (fsys *FS) isRecordName(name string) bool {
	if backing.IsReserved(name) {
		return false
	}
	for _, p := range fsys.patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// Stats are the mount's counters, for metrics and `mergefs status`.
type Stats struct {
	Commits       uint64 // commits that reached the backing store
	Unchanged     uint64 // commits whose content equalled the record
	Merges        uint64 // commits whose record had changed since their base
	Grouped       uint64 // commits made in one replacement with others (backing.CommitAt)
	Conflicts     uint64 // conflicting keys resolved or rejected by policy
	Rejected      uint64 // commits refused: bad content, reject policy, a record replaced since open
	Failed        uint64 // commits that failed in the backing store
	BaseFallbacks uint64 // bases taken from the writing open (nothing read)
	// Bases counts commits by where their base came from (event.Base); AmbiguousBases those whose
	// runner-up candidate was within one change of the chosen one.
	Bases          map[event.Base]uint64
	AmbiguousBases uint64
	// RuleMerges counts positions changed on both sides that a strategy merged without a conflict.
	RuleMerges     map[merge.Strategy]uint64
	OpenRecords    int    // record handles open now
	ReadVersions   int    // read versions held (a version held in several places counts for each)
	ReadBytes      int64  // memory charged to the read history: distinct versions, summaries, entries
	ReadsEvicted   uint64 // records whose read history was dropped by age or memory
	RecoveredFiles int    // temporary files removed at start
	// CachedOpens counts record opens that read from the kernel's page cache (Config.CacheReads);
	// CacheRetries opens and truncates a version node turned away (ESTALE: the kernel retried them
	// on the record's own node).
	CachedOpens, CacheRetries uint64
	// FileLocks are the flock and fcntl locks the daemon holds for processes (with cached reads),
	// LockWaiters the lock requests waiting for another's lock to go.
	FileLocks, LockWaiters int
	// Limits is the use of the limits and their refusals; RejectedDir what rejected/ holds.
	Limits      LimitStats
	RejectedDir RejectedStats
}

type counters struct {
	commits, unchanged, merges, grouped, conflicts, rejected, failed, fallbacks, ambiguous atomic.Uint64
	cachedOpens, cacheRetries                                                              atomic.Uint64
	bases                                                                                  [event.Fallback + 1]atomic.Uint64
	ruleMerges                                                                             map[merge.Strategy]*atomic.Uint64 // filled by New
}

// Stats returns a snapshot of the counters.
func (fsys *FS) Stats() Stats {
	rs := fsys.history.stats()
	fsys.mu.Lock()
	openRecords := 0
	for _, hs := range fsys.open {
		openRecords += len(hs)
	}
	fsys.mu.Unlock()
	ruleMerges := make(map[merge.Strategy]uint64, len(fsys.counters.ruleMerges))
	for s, n := range fsys.counters.ruleMerges {
		ruleMerges[s] = n.Load()
	}
	bases := make(map[event.Base]uint64, len(event.Bases))
	for _, b := range event.Bases {
		bases[b] = fsys.counters.bases[b].Load()
	}
	var fileLocks, lockWaiters int
	if fsys.locks != nil {
		fileLocks, lockWaiters = fsys.locks.table.Counts()
	}
	return Stats{
		FileLocks:      fileLocks,
		LockWaiters:    lockWaiters,
		Commits:        fsys.counters.commits.Load(),
		Unchanged:      fsys.counters.unchanged.Load(),
		Merges:         fsys.counters.merges.Load(),
		Grouped:        fsys.counters.grouped.Load(),
		Conflicts:      fsys.counters.conflicts.Load(),
		Rejected:       fsys.counters.rejected.Load(),
		Failed:         fsys.counters.failed.Load(),
		BaseFallbacks:  fsys.counters.fallbacks.Load(),
		CachedOpens:    fsys.counters.cachedOpens.Load(),
		CacheRetries:   fsys.counters.cacheRetries.Load(),
		Bases:          bases,
		AmbiguousBases: fsys.counters.ambiguous.Load(),
		RuleMerges:     ruleMerges,
		OpenRecords:    openRecords,
		ReadVersions:   rs.Versions,
		ReadBytes:      rs.Bytes,
		ReadsEvicted:   rs.Evicted,
		RecoveredFiles: fsys.store.Recovered(),
		Limits:         fsys.budget.stats(),
		RejectedDir:    fsys.rejected.stats(),
	}
}

func (fsys *FS) addOpen(h *recordHandle) {
	fsys.mu.Lock()
	fsys.open[h.record] = append(fsys.open[h.record], h)
	fsys.mu.Unlock()
}

func (fsys *FS) removeOpen(h *recordHandle) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	hs := fsys.open[h.record]
	for i, x := range hs {
		if x == h {
			hs = append(hs[:i], hs[i+1:]...)
			break
		}
	}
	if len(hs) == 0 {
		delete(fsys.open, h.record)
	} else {
		fsys.open[h.record] = hs
	}
}

// ownHandle finds the most recently opened handle on record of the caller's process: what stat
// should report to that caller (see node.Getattr).
func (fsys *FS) ownHandle(record string, proc procKey) *recordHandle {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	hs := fsys.open[record]
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].opener.proc == proc {
			return hs[i]
		}
	}
	return nil
}

// staleRetryWindow is how soon after an OPEN answered with ESTALE another stale OPEN from the same
// thread is taken for the kernel's one retry of that open.
const staleRetryWindow = 100 * time.Millisecond

// staleOpen answers an OPEN of a node that no longer names its file (it was renamed over or removed
// since the kernel looked it up). ESTALE makes the kernel look the name up again and retry the open
// once; if the retry is stale too (the name keeps changing), the file the caller named is gone:
// ENOENT, as for a path-based loopback.
func (fsys *FS) staleOpen(c caller, errno syscall.Errno) syscall.Errno {
	if errno != syscall.ESTALE {
		return errno
	}
	now := fsys.now()
	if last, ok := fsys.staleOpens.Swap(c.thread.pid, now); ok && now.Sub(last.(time.Time)) < staleRetryWindow {
		fsys.staleOpens.Delete(c.thread.pid)
		return syscall.ENOENT
	}
	return syscall.ESTALE
}

// uniform reports whether every handle open on record has size bytes: then every caller's stat of
// it is the same (node.Getattr).
func (fsys *FS) uniform(record string, size int64) bool {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	for _, h := range fsys.open[record] {
		if h.size() != size {
			return false
		}
	}
	return true
}

func (fsys *FS) hasOpen(record string) bool {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return len(fsys.open[record]) > 0
}

// cred is the caller's file-system identity, for sysx.AsUser.
func (c caller) cred() *sysx.Cred {
	return &sysx.Cred{UID: c.uid, GID: c.gid, Groups: c.groups}
}
