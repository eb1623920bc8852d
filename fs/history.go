package fs

import (
	"bytes"
	"container/list"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/merge"
)

// version is one immutable content of a record, as mergefs served it to a reader or committed it.
// Handles and the history share it without copying.
type version struct {
	data []byte
	// seq orders versions by when mergefs first knew them (larger is newer).
	seq uint64
	// summary is made on first need (a commit choosing its base) and kept: merge.Summary, or nil
	// for content that is not a valid document (never a base).
	summary atomic.Pointer[summarized]
	// parsed is data parsed and validated, made on first need (the summary, a merge that has this
	// version as its base or theirs) and kept while the history holds the version: a commit does
	// not parse again what mergefs parsed before (docs/design.md, "The cost of a commit").
	parsed atomic.Pointer[parsedDoc]
	// parsing is held while data is parsed: a second caller (a commit taking as theirs the version
	// its committer is parsing) waits for that parse instead of making its own.
	parsing sync.Mutex
	// stored is the backing file known to hold exactly data (read from it at an open, or written by a
	// commit), nil if none: an open that finds that file unchanged need not read it again.
	stored atomic.Pointer[storedFile]

	// Guarded by history.mu: how many places of the history hold it, and what it is charged.
	refs    int
	charged int64
	// Guarded by history.mu, scratch of history.candidates: the call that last took the version
	// (its mark), and at which index. A map would cost more than the rest of a call with hundreds
	// of candidates (a process's reads of a record it keeps updating).
	mark uint64
	at   int
}

type summarized struct{ s *merge.Summary }

// storedFile is a backing file and the record identity it carries.
type storedFile struct {
	version  backing.Version
	identity backing.Identity
}

// known returns v as the store's backing.Known, nil if no file is known to hold it.
func (v *version) known() *backing.Known {
	f := v.stored.Load()
	if f == nil {
		return nil
	}
	return &backing.Known{Version: f.version, Identity: f.identity, Data: v.data}
}

// parsedDoc is a version's merge.Document, nil for content that is not a valid document.
type parsedDoc struct{ doc *merge.Document }

// parsedVersion returns a version of data whose parse (doc, valid with the limits of opts) and
// summary (if not nil) are already made: what a commit made of mine.
func parsedVersion(data []byte, doc *merge.Document, sum *merge.Summary) *version {
	v := &version{data: data}
	v.parsed.Store(&parsedDoc{doc: doc})
	if sum != nil {
		v.summary.Store(&summarized{s: sum})
	}
	return v
}

// document returns v's data parsed with the limits of opts, parsing it if it has not been, nil if
// it is not a valid document.
func (v *version) document(opts merge.Options, like *merge.Document) *merge.Document {
	if p := v.parsed.Load(); p != nil {
		return p.doc
	}
	v.parsing.Lock()
	defer v.parsing.Unlock()
	if p := v.parsed.Load(); p != nil {
		return p.doc
	}
	doc, err := merge.ParseDocumentLike(v.data, opts, like)
	if err != nil {
		doc = nil
	}
	// The history may drop the stored parse at any time (release): the parse made here is what
	// this caller gets.
	v.parsed.CompareAndSwap(nil, &parsedDoc{doc: doc})
	return doc
}

// summaryOf returns v's summary, making it (reusing hint's unchanged subtrees) if it has none.
func (v *version) summaryOf(opts merge.Options, hint *merge.Summary) *merge.Summary {
	if s := v.summary.Load(); s != nil {
		return s.s
	}
	var s *merge.Summary
	if doc := v.document(opts, nil); doc != nil {
		s = doc.SummaryReusing(hint)
	}
	v.summary.CompareAndSwap(nil, &summarized{s: s})
	return v.summary.Load().s
}

// Bounds of what the history keeps of one record (besides --read-memory and --read-age): the newest
// distinct versions served or committed by anyone, and per process the last versions it read, so
// that a slow request finds its own read however many versions others, or its own process's other
// requests (an event loop serving hundreds a second), made since.
const (
	maxRecent      = 32
	maxProcReads   = 512
	maxProcThreads = 64
)

// The memory bound covers what the history holds, not only the versions' bytes: a version costs its
// struct, bytes and summary; an entry (a record, a process, a thread) its structs and map slots.
const (
	versionBytes = 64
	recordBytes  = 256
	procBytes    = 192
	threadBytes  = 48
	seenBytes    = 40 // an entry of a list of versions read
)

// history remembers, per record (by identity), the versions of it that mergefs served to readers
// and committed: the candidates for a commit's base (docs/design.md, "The base of a commit"). It is
// bounded by age (--read-age) and memory (--read-memory); the least recently used records go first.
type history struct {
	maxBytes int64
	maxAge   time.Duration
	now      func() time.Time

	mu      sync.Mutex
	records map[uint64]*recordReads
	lru     list.List // of *recordReads, least recently touched first
	bytes   int64
	seq     uint64
	evicted uint64 // records dropped, and versions read dropped from the newest record
	marks   uint64 // calls of candidates so far (version.mark)
}

type recordReads struct {
	id uint64
	// current is the record's content as mergefs last found it in the backing store (at an open)
	// or left it there (a commit): usually what the next open reads and the next commit merges
	// into (theirs), so its parse is kept for that commit.
	current *version
	recent  []seen // newest last
	procs   map[procKey]*procReads
	touched time.Time
	elem    *list.Element
	cost    int64 // entries charged (record, processes, threads)
}

type procReads struct {
	reads     []seen // newest last
	threads   map[procKey]seen
	committed seen // what this process last wrote (not the merged result); v nil if nothing
	touched   time.Time
}

// seen is a version and when it was served, or committed: a version a process committed is known
// (the next reader shares it) but is a base candidate for other processes only once served to one.
type seen struct {
	v         *version
	at        time.Time
	committed bool
}

func newHistory(maxBytes int64, maxAge time.Duration, now func() time.Time) *history {
	return &history{maxBytes: maxBytes, maxAge: maxAge, now: now, records: make(map[uint64]*recordReads)}
}

// share returns the record's current or newest known version if it holds exactly data, else a new
// version of data: a hundred processes reading an unchanged record then hold one copy of it, not a
// hundred. The version becomes the record's current one.
func (h *history) share(id uint64, data []byte) *version {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.records[id]
	if r != nil {
		if r.current != nil && bytes.Equal(r.current.data, data) {
			return r.current
		}
		if len(r.recent) > 0 {
			if v := r.recent[len(r.recent)-1].v; bytes.Equal(v.data, data) {
				h.setCurrentLocked(r, v)
				return v
			}
		}
	}
	h.seq++
	v := &version{data: data, seq: h.seq}
	if r != nil {
		h.setCurrentLocked(r, v)
		h.expire(h.now())
	}
	return v
}

// latest returns the version of record id that mergefs last found or left in the backing store, nil
// if it knows none.
func (h *history) latest(id uint64) *version {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.records[id]; r != nil {
		return r.current
	}
	return nil
}

// current returns the version of record id that mergefs last found or left in the backing store if
// it holds exactly data, else nil.
func (h *history) current(id uint64, data []byte) *version {
	h.mu.Lock()
	var v *version
	if r := h.records[id]; r != nil {
		v = r.current
	}
	h.mu.Unlock()
	if v == nil || !bytes.Equal(v.data, data) {
		return nil
	}
	return v
}

// setCurrent records that record id holds v now in the backing store (a commit left it there).
func (h *history) setCurrent(id uint64, v *version) {
	if id == 0 || v == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	h.number(v)
	h.setCurrentLocked(h.record(id, now), v)
	h.expire(now)
}

// setCurrentLocked makes v the current version of r; one too large for the memory bound is not
// kept (nor is the one it replaces, which is no longer current).
func (h *history) setCurrentLocked(r *recordReads, v *version) {
	if r.current == v {
		return
	}
	if r.current != nil {
		h.release(r.current)
		r.current = nil
	}
	if h.cost(v)+recordBytes > h.maxBytes {
		return
	}
	h.hold(v)
	r.current = v
}

// read records that thread (of proc) was served v of record id.
func (h *history) read(id uint64, thread, proc procKey, v *version) {
	h.note(id, thread, proc, v, false)
}

// committed records that thread (of proc) committed v, what it wrote, to record id: it knows that
// content, and others will read it next.
func (h *history) committed(id uint64, thread, proc procKey, v *version) {
	h.note(id, thread, proc, v, true)
}

// number gives v its place in the order of versions mergefs knew, if it has none. h.mu is held.
func (h *history) number(v *version) {
	if v.seq == 0 {
		h.seq++
		v.seq = h.seq
	}
}

func (h *history) note(id uint64, thread, proc procKey, v *version, wrote bool) {
	if id == 0 || v == nil || h.maxBytes <= 0 || h.cost(v)+recordBytes+procBytes+threadBytes+2*seenBytes > h.maxBytes {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	h.number(v)
	r := h.record(id, now)
	r.recent = h.pushSeen(r, r.recent, seen{v: v, at: now, committed: wrote}, maxRecent)
	p := r.procs[proc]
	if p == nil {
		p = &procReads{threads: make(map[procKey]seen)}
		r.procs[proc] = p
		h.charge(r, procBytes)
	}
	p.touched = now
	if wrote {
		h.hold(v)
		if p.committed.v != nil {
			h.release(p.committed.v)
		}
		p.committed = seen{v: v, at: now}
	} else {
		p.reads = h.pushSeen(r, p.reads, seen{v: v, at: now}, maxProcReads)
	}
	if old, ok := p.threads[thread]; ok {
		h.hold(v)
		h.release(old.v)
		p.threads[thread] = seen{v: v, at: now}
	} else if len(p.threads) < maxProcThreads {
		h.charge(r, threadBytes)
		h.hold(v)
		p.threads[thread] = seen{v: v, at: now}
	}
	h.expire(now)
}

// record returns the history of record id, made if new, as the most recently used.
func (h *history) record(id uint64, now time.Time) *recordReads {
	r := h.records[id]
	if r == nil {
		r = &recordReads{id: id, procs: make(map[procKey]*procReads)}
		r.elem = h.lru.PushBack(r)
		h.records[id] = r
		h.charge(r, recordBytes)
	} else {
		h.lru.MoveToBack(r.elem)
	}
	r.touched = now
	return r
}

// pushSeen adds s as the newest of list, a list of record r (moving v if it is there), keeping at
// most limit.
func (h *history) pushSeen(r *recordReads, list []seen, s seen, limit int) []seen {
	n := len(list)
	for i, x := range list {
		if x.v == s.v {
			// Served to a reader once, it stays read: a commit's note may come after a read of
			// what it committed.
			s.committed = s.committed && x.committed
			list = append(list[:i], list[i+1:]...)
			h.release(x.v)
			break
		}
	}
	if len(list) == limit {
		h.release(list[0].v)
		list = append(list[:0], list[1:]...)
	}
	h.hold(s.v)
	list = append(list, s)
	h.charge(r, int64(len(list)-n)*seenBytes)
	return list
}

// trimOldest drops the oldest entry of r's lists of versions read (the newest record is kept whole
// as long as it can be: a busy record alone past the memory bound loses its oldest reads first, not
// all of them). It reports whether there was one.
func (h *history) trimOldest(r *recordReads) bool {
	var oldest *[]seen
	for _, p := range r.procs {
		if len(p.reads) > 0 && (oldest == nil || p.reads[0].at.Before((*oldest)[0].at)) {
			oldest = &p.reads
		}
	}
	if len(r.recent) > 0 && (oldest == nil || r.recent[0].at.Before((*oldest)[0].at)) {
		oldest = &r.recent
	}
	if oldest == nil {
		return false
	}
	h.release((*oldest)[0].v)
	*oldest = append((*oldest)[:0], (*oldest)[1:]...)
	h.charge(r, -seenBytes)
	return true
}

func (h *history) cost(v *version) int64 {
	c := versionBytes + int64(cap(v.data))
	if s := v.summary.Load(); s != nil && s.s != nil {
		c += int64(s.s.Bytes())
	}
	if p := v.parsed.Load(); p != nil && p.doc != nil {
		c += int64(p.doc.Bytes())
	}
	return c
}

func (h *history) hold(v *version) {
	if v.refs == 0 {
		v.charged = h.cost(v)
		h.bytes += v.charged
	}
	v.refs++
}

func (h *history) release(v *version) {
	v.refs--
	if v.refs == 0 {
		h.bytes -= v.charged
		v.charged = 0
		// Its parse is only worth its memory while the history holds it (a handle may still hold
		// the version); the summary, smaller, stays.
		v.parsed.Store(nil)
	}
}

// recharge accounts for a summary or parse made after v was charged.
func (h *history) recharge(v *version) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v.refs > 0 {
		c := h.cost(v)
		h.bytes += c - v.charged
		v.charged = c
		h.expire(h.now())
	}
}

func (h *history) charge(r *recordReads, n int64) {
	r.cost += n
	h.bytes += n
}

// expire drops records not touched within maxAge, then the least recently used ones until within
// maxBytes; the last record left loses its oldest reads first.
func (h *history) expire(now time.Time) {
	for front := h.lru.Front(); front != nil; front = h.lru.Front() {
		r := front.Value.(*recordReads)
		if now.Sub(r.touched) <= h.maxAge && h.bytes <= h.maxBytes {
			break
		}
		if now.Sub(r.touched) <= h.maxAge && front == h.lru.Back() && h.trimOldest(r) {
			h.evicted++
			continue
		}
		h.drop(r)
		h.evicted++
	}
}

func (h *history) drop(r *recordReads) {
	h.lru.Remove(r.elem)
	delete(h.records, r.id)
	if r.current != nil {
		h.release(r.current)
	}
	for _, s := range r.recent {
		h.release(s.v)
	}
	for _, p := range r.procs {
		for _, s := range p.reads {
			h.release(s.v)
		}
		for _, s := range p.threads {
			h.release(s.v)
		}
		if p.committed.v != nil {
			h.release(p.committed.v)
		}
	}
	h.bytes -= r.cost
}

// forget drops what anyone read of record id: after an unlink an old read must not become the base
// of an unrelated record (identities are not reused, so this only frees memory early).
func (h *history) forget(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.records[id]; r != nil {
		h.drop(r)
	}
}

// candidate is a version a commit's base may be.
type candidate struct {
	v          *version
	from       event.Base
	threadLast bool // the writing thread's last read
	procLast   bool // the writing process's last read (or write)
}

// candidates are the versions of record id that the writing thread's base may be: what any process
// was served within maxAge (the newest few, and the writing process's own last few), and what the
// writing process last committed. atOpen is the record as the writing handle opened it (nil if it
// did not exist), a candidate too, except that a truncating handle's (from Fallback) is one only
// when there is no other.
func (h *history) candidates(id uint64, thread, proc procKey, atOpen *version, from event.Base) []candidate {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.records[id]
	size := 1
	if r != nil {
		size += len(r.recent) + 2
		if p := r.procs[proc]; p != nil {
			size += len(p.reads)
		}
	}
	out := make([]candidate, 0, size)
	h.marks++
	mark := h.marks
	add := func(v *version, from event.Base) *candidate {
		if v.mark == mark {
			return &out[v.at]
		}
		v.mark, v.at = mark, len(out)
		out = append(out, candidate{v: v, from: from})
		return &out[len(out)-1]
	}
	if r != nil {
		now := h.now()
		fresh := func(s seen) bool { return s.v != nil && now.Sub(s.at) <= h.maxAge }
		if p := r.procs[proc]; p != nil {
			var last *version
			if n := len(p.reads); n > 0 && fresh(p.reads[n-1]) {
				last = p.reads[n-1].v
			}
			if fresh(p.committed) && (last == nil || p.committed.v.seq > last.seq) {
				last = p.committed.v
			}
			if s := p.threads[thread]; fresh(s) {
				add(s.v, event.Thread).threadLast = true
			}
			if fresh(p.committed) {
				add(p.committed.v, event.OwnCommit)
			}
			for i := len(p.reads) - 1; i >= 0; i-- {
				if fresh(p.reads[i]) {
					add(p.reads[i].v, event.Process)
				}
			}
			if last != nil {
				add(last, event.Process).procLast = true
			}
		}
		for i := len(r.recent) - 1; i >= 0; i-- {
			// Another process's commit nobody read is not what this writer started from (two
			// writers making one change alike would otherwise each look derived from the other).
			if fresh(r.recent[i]) && !r.recent[i].committed {
				add(r.recent[i].v, event.OtherProcess)
			}
		}
	}
	// The record at the open of a handle that truncated it was served to nobody by that open: the
	// writer can have derived its content from it only by reading it, which makes it a candidate
	// above. So it is the fallback, for a writer that read nothing known. Taken as a candidate
	// beside the reads, it wins wrongly whenever others appended to a list since the writer's read:
	// replacing their new element by the writer's differs less than adding it.
	if atOpen != nil && (from != event.Fallback || len(out) == 0) {
		add(atOpen, from)
	}
	return out
}

type historyStats struct {
	Records  int
	Versions int // version references held (a version held by several entries counts for each)
	Bytes    int64
	Evicted  uint64
}

func (h *history) stats() historyStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := historyStats{Records: len(h.records), Bytes: h.bytes, Evicted: h.evicted}
	for _, r := range h.records {
		st.Versions += len(r.recent)
		for _, p := range r.procs {
			st.Versions += len(p.reads)
		}
	}
	return st
}
