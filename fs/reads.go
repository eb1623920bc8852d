package fs

import (
	"bytes"
	"container/list"
	"github.com/mergefs/mergefs/internal/event"
	"sync"
	"time"
)

// version is one immutable content of a record as some handle saw it. Handles
// and the read tracker share it without copying.
type version struct {
	data []byte
	refs int // read-tracker entries pointing here; guarded by readTracker.mu
}

type readKey struct {
	record string
	reader procKey
}

type readEntry struct {
	key  readKey
	v    *version
	seen time.Time
	elem *list.Element
}

// The memory bound covers what tracking holds, not only the versions'
// bytes: with small records the entries outweigh the data. An entry costs
// its struct, list element and map slot (182 bytes each with 200,000
// entries, measured with Go 1.26) plus its record name; a version its
// struct plus its bytes.
const (
	entryBytes   = 200
	versionBytes = 32
)

func entryCost(k readKey) int64 { return entryBytes + int64(len(k.record)) }

func versionCost(v *version) int64 { return versionBytes + int64(cap(v.data)) }

// readTracker remembers, per thread and per process, the version of each
// record it last read, for a bounded time and within a bounded amount of
// memory. A version is counted once however many readers share it, and
// opens that find the content of the record's latest tracked version share
// that version instead of keeping a copy.
type readTracker struct {
	maxBytes int64
	maxAge   time.Duration
	now      func() time.Time

	mu      sync.Mutex
	entries map[readKey]*readEntry
	lru     list.List // of *readEntry, oldest first
	bytes   int64
	evicted uint64
	// latest is, per record, the version most recently remembered while
	// any entry holds it.
	latest map[string]*version
}

func newReadTracker(maxBytes int64, maxAge time.Duration, now func() time.Time) *readTracker {
	return &readTracker{maxBytes: maxBytes, maxAge: maxAge, now: now,
		entries: make(map[readKey]*readEntry), latest: make(map[string]*version)}
}

// share returns the record's latest tracked version if it holds exactly
// data, else a new version of data. A hundred processes reading an
// unchanged record then hold one copy of it, not a hundred.
func (t *readTracker) share(record string, data []byte) *version {
	t.mu.Lock()
	v := t.latest[record]
	t.mu.Unlock()
	if v != nil && bytes.Equal(v.data, data) {
		return v
	}
	return &version{data: data}
}

// remember records that thread (and its process) now knows record at v.
func (t *readTracker) remember(record string, thread, proc procKey, v *version) {
	if v == nil || t.maxBytes <= 0 || versionCost(v)+2*entryCost(readKey{record: record}) > t.maxBytes {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.set(readKey{record, thread}, v, now)
	t.set(readKey{record, proc}, v, now)
	t.latest[record] = v
	t.expire(now)
}

func (t *readTracker) set(k readKey, v *version, now time.Time) {
	if e, ok := t.entries[k]; ok {
		t.hold(v)
		t.release(k.record, e.v)
		e.v, e.seen = v, now
		t.lru.MoveToBack(e.elem)
		return
	}
	e := &readEntry{key: k, v: v, seen: now}
	e.elem = t.lru.PushBack(e)
	t.entries[k] = e
	t.bytes += entryCost(k)
	t.hold(v)
}

func (t *readTracker) hold(v *version) {
	if v.refs == 0 {
		t.bytes += versionCost(v)
	}
	v.refs++
}

func (t *readTracker) release(record string, v *version) {
	v.refs--
	if v.refs == 0 {
		t.bytes -= versionCost(v)
		if t.latest[record] == v {
			delete(t.latest, record)
		}
	}
}

// expire drops entries past their age, then the oldest until within bytes.
func (t *readTracker) expire(now time.Time) {
	for front := t.lru.Front(); front != nil; front = t.lru.Front() {
		e := front.Value.(*readEntry)
		if now.Sub(e.seen) <= t.maxAge && t.bytes <= t.maxBytes {
			return
		}
		t.drop(e)
		t.evicted++
	}
}

func (t *readTracker) drop(e *readEntry) {
	t.lru.Remove(e.elem)
	delete(t.entries, e.key)
	t.bytes -= entryCost(e.key)
	t.release(e.key.record, e.v)
}

// lookup returns the version the thread last read of record, else the one
// its process last read.
func (t *readTracker) lookup(record string, thread, proc procKey) (*version, event.Base) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(t.now())
	if e, ok := t.entries[readKey{record, thread}]; ok {
		return e.v, event.Thread
	}
	if e, ok := t.entries[readKey{record, proc}]; ok {
		return e.v, event.Process
	}
	return nil, event.NoBase
}

// forget drops what anyone read of record: after an unlink or a rename away,
// an old read must not become the base of an unrelated new record.
func (t *readTracker) forget(record string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, e := range t.entries {
		if k.record == record {
			t.drop(e)
		}
	}
}

type trackerStats struct {
	Entries int
	Bytes   int64
	Evicted uint64
}

func (t *readTracker) stats() trackerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return trackerStats{Entries: len(t.entries), Bytes: t.bytes, Evicted: t.evicted}
}
