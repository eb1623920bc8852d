package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RejectedLimits bound what is kept of refused content in StateDir/rejected, so that a user who
// keeps committing invalid content cannot fill the disk under the state directory.
type RejectedLimits struct {
	// MaxTotal bounds the bytes kept in all; the oldest files go first. 0: no bound.
	MaxTotal int64
	// MaxFile bounds what is kept of one refused content: its first MaxFile bytes, with its full
	// size in the file's name. 0: no bound.
	MaxFile int64
}

// rejectedStore keeps refused content in one directory within RejectedLimits.
type rejectedStore struct {
	dir    string
	limits RejectedLimits

	mu     sync.Mutex
	loaded bool
	files  []keptFile // oldest first (names start with the time)
	total  int64
	// dropped counts refused contents not kept, or removed later, for the bounds.
	dropped, droppedBytes uint64
}

type keptFile struct {
	name string
	size int64
}

// load lists what earlier runs kept, once.
func (r *rejectedStore) load() {
	if r.loaded {
		return
	}
	r.loaded = true
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			r.files = append(r.files, keptFile{name: e.Name(), size: info.Size()})
			r.total += info.Size()
		}
	}
	slices.SortFunc(r.files, func(a, b keptFile) int { return strings.Compare(a.name, b.name) })
}

// save keeps data, refused content of record written by pid at t, and returns where, or why not. The
// state directory is root's alone (mergefs mount makes it so), so a path in it cannot be redirected
// by a user; a name that exists, or is a symlink, is never written through.
func (r *rejectedStore) save(t time.Time, pid uint32, record string, data []byte) string {
	if r == nil {
		return "not saved: no state directory"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return fmt.Sprintf("not saved: %v", err)
	}
	r.load()
	name := rejectedName(t, pid, record)
	kept := data
	if r.limits.MaxFile > 0 && int64(len(kept)) > r.limits.MaxFile {
		kept = kept[:r.limits.MaxFile]
		name += fmt.Sprintf(".first-%d-of-%d-bytes", len(kept), len(data))
	}
	if r.limits.MaxTotal > 0 && int64(len(kept)) > r.limits.MaxTotal {
		r.dropped++
		r.droppedBytes += uint64(len(data))
		return fmt.Sprintf("not saved: %d bytes is more than --rejected-max", len(kept))
	}
	for r.limits.MaxTotal > 0 && r.total+int64(len(kept)) > r.limits.MaxTotal && len(r.files) > 0 {
		old := r.files[0]
		r.files = r.files[1:]
		r.total -= old.size
		if err := os.Remove(filepath.Join(r.dir, old.name)); err == nil || os.IsNotExist(err) {
			r.dropped++
			r.droppedBytes += uint64(old.size)
		}
	}
	dst := filepath.Join(r.dir, name)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err == nil {
		_, err = f.Write(kept)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Sprintf("not saved: %v", err)
	}
	r.files = append(r.files, keptFile{name: name, size: int64(len(kept))})
	r.total += int64(len(kept))
	return dst
}

// RejectedStats are what rejected/ holds and what its bounds dropped.
type RejectedStats struct {
	RejectedLimits
	Files                 int
	Bytes                 int64
	Dropped, DroppedBytes uint64
}

func (r *rejectedStore) stats() RejectedStats {
	if r == nil {
		return RejectedStats{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return RejectedStats{RejectedLimits: r.limits, Files: len(r.files), Bytes: r.total, Dropped: r.dropped, DroppedBytes: r.droppedBytes}
}
