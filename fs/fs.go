// Package fs is the FUSE side of mergefs: a loopback over a backing directory
// in which records (files whose names match the record patterns) are served
// as per-handle snapshots whose writes are buffered and merged into the
// current record at commit points. See DESIGN.md §2 for the contract.
package fs

import (
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
	"github.com/mergefs/mergefs/merge"
)

// Config says how a mount behaves. Store and BackingPath name the same
// directory: the store commits records, the loopback serves everything else.
type Config struct {
	Store *backing.Store
	// BackingPath reaches the backing directory for the loopback. For an
	// in-place mount it is /proc/self/fd/N of a descriptor opened before the
	// mount, since the directory's own path then leads back into the mount.
	BackingPath string

	// RecordPatterns are path.Match patterns on base names; default "*.json".
	RecordPatterns []string
	Merge          merge.Options
	// StateDir keeps rejected content (StateDir/rejected).
	StateDir string

	// ReadMemory and ReadAge bound the read versions kept to choose bases.
	ReadMemory int64
	ReadAge    time.Duration

	Logger   *slog.Logger
	Observer Observer
}

// Defaults for the read-version bounds.
const (
	DefaultReadMemory = 64 << 20
	DefaultReadAge    = 5 * time.Minute
)

// FS is the state of one mount shared by all its nodes.
type FS struct {
	store       *backing.Store
	patterns    []string
	mergeOpts   merge.Options
	rejectedDir string
	log         *slog.Logger
	observer    Observer

	callers *callerResolver
	reads   *readTracker

	mu   sync.Mutex
	open map[string][]*recordHandle // by record path at open

	counters counters
	now      func() time.Time
}

// New checks cfg and returns the filesystem and its root node.
func New(cfg Config) (*FS, gofs.InodeEmbedder, error) {
	if cfg.Store == nil || cfg.BackingPath == "" {
		return nil, nil, errors.New("mergefs: a backing store and path are required")
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
		observer = nopObserver{}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(cfg.BackingPath, &st); err != nil {
		return nil, nil, fmt.Errorf("backing directory %s: %w", cfg.BackingPath, err)
	}
	fsys := &FS{
		store:     cfg.Store,
		patterns:  patterns,
		mergeOpts: cfg.Merge,
		log:       logger,
		observer:  observer,
		callers:   newCallerResolver("/proc"),
		open:      make(map[string][]*recordHandle),
		now:       time.Now,
	}
	if cfg.StateDir != "" {
		fsys.rejectedDir = path.Join(cfg.StateDir, "rejected")
	}
	fsys.reads = newReadTracker(cfg.ReadMemory, cfg.ReadAge, fsys.now)

	rootData := &gofs.LoopbackRoot{Path: cfg.BackingPath, Dev: uint64(st.Dev)}
	root := &node{LoopbackNode: &gofs.LoopbackNode{RootData: rootData}, fsys: fsys}
	rootData.RootNode = root
	return fsys, root, nil
}

// MountOptions returns the go-fuse options a mergefs mount needs; fsName is
// shown as the source in /proc/mounts.
func MountOptions(fsName string, allowOther bool) *gofs.Options {
	entry := time.Second
	return &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            fsName,
			Name:              "mergefs",
			DirectMountStrict: true,
			AllowOther:        allowOther,
			// The daemon runs as root: let the kernel check the caller
			// against the modes and owners it reports.
			Options: []string{"default_permissions"},
			// O_TRUNC must reach OPEN; otherwise the kernel truncates
			// the backing record by a handle-less SETATTR first.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
			// A passthrough handle on a file later renamed onto a
			// record would bypass the snapshot and give EIO.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
		EntryTimeout: &entry,
		// AttrTimeout stays nil: nodes set their own, zero for records
		// (sizes depend on the caller), a second for everything else.
	}
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
	Commits        uint64 // commits that reached the backing store
	Unchanged      uint64 // commits whose content equalled the record
	Merges         uint64 // commits whose record had changed since their base
	Conflicts      uint64 // conflicting keys resolved or rejected by policy
	Rejected       uint64 // commits refused: bad content or reject policy
	Failed         uint64 // commits that failed in the backing store
	BaseFallbacks  uint64 // bases taken from the writing open (nothing read)
	OpenRecords    int    // record handles open now
	ReadVersions   int    // read versions tracked
	ReadBytes      int64  // memory charged to read tracking: distinct versions and entries
	ReadsEvicted   uint64 // tracked versions dropped by age or memory
	RecoveredFiles int    // temporary files removed at start
}

type counters struct {
	commits, unchanged, merges, conflicts, rejected, failed, fallbacks atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (fsys *FS) Stats() Stats {
	rs := fsys.reads.stats()
	fsys.mu.Lock()
	openRecords := 0
	for _, hs := range fsys.open {
		openRecords += len(hs)
	}
	fsys.mu.Unlock()
	return Stats{
		Commits:        fsys.counters.commits.Load(),
		Unchanged:      fsys.counters.unchanged.Load(),
		Merges:         fsys.counters.merges.Load(),
		Conflicts:      fsys.counters.conflicts.Load(),
		Rejected:       fsys.counters.rejected.Load(),
		Failed:         fsys.counters.failed.Load(),
		BaseFallbacks:  fsys.counters.fallbacks.Load(),
		OpenRecords:    openRecords,
		ReadVersions:   rs.Entries,
		ReadBytes:      rs.Bytes,
		ReadsEvicted:   rs.Evicted,
		RecoveredFiles: fsys.store.Recovered(),
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

// ownHandle finds a handle on record opened by the caller's process, dirty
// ones first: what stat should report to that caller. Handles are examined
// after fsys.mu is released: a handle's lock is held through its commit,
// which may wait for another daemon, and fsys.mu guards every open.
func (fsys *FS) ownHandle(record string, proc procKey) *recordHandle {
	fsys.mu.Lock()
	var own []*recordHandle
	for _, h := range fsys.open[record] {
		if h.opener.proc == proc {
			own = append(own, h)
		}
	}
	fsys.mu.Unlock()
	for _, h := range own {
		if h.isDirty() {
			return h
		}
	}
	if len(own) > 0 {
		return own[0]
	}
	return nil
}

func (fsys *FS) hasOpen(record string) bool {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return len(fsys.open[record]) > 0
}
