// Package journal records merge conflicts as JSON lines for operators: one
// line per conflicting key, written by a background goroutine so that the
// commit path only copies a few bounded values into a queue. The file is
// rotated by size and a bounded number of old files is kept.
//
// It is its own package because it owns a goroutine, a file and a rotation
// policy with their own failure modes, and is tested without FUSE or root.
package journal

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mergefs/mergefs/internal/event"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mergefs/mergefs/merge"
)

// Defaults for Options left zero.
const (
	DefaultMaxBytes      = 16 << 20
	DefaultKeep          = 5
	DefaultQueue         = 4096
	DefaultMaxValue      = 512
	DefaultMaxPerCommit  = 100
	defaultFlushInterval = time.Second
)

// Options bound the journal's size and the work done on the commit path.
type Options struct {
	// MaxBytes is the size past which the file is rotated (path.1, path.2...).
	MaxBytes int64
	// Keep is how many rotated files are kept; negative keeps none.
	Keep int
	// Queue is how many conflict lines may wait for the writer; beyond it
	// lines are dropped and counted, never waited for.
	Queue int
	// MaxValue bounds each of base, mine and theirs in a line, in bytes.
	MaxValue int
	// MaxPerCommit bounds the lines of one commit; the rest are counted as
	// dropped (each line says how many conflicts its commit had).
	MaxPerCommit int
	// Logger reports write errors and drops (from the writer goroutine).
	Logger *slog.Logger
}

// Entry is one line of the journal.
type Entry struct {
	Time time.Time `json:"time"`
	// Record is the record's path relative to the backing directory.
	Record string `json:"record"`
	// Key is the conflicting key as a JSON Pointer (RFC 6901); "" is the
	// whole document.
	Key    string `json:"key"`
	Reason string `json:"reason,omitempty"`
	// Strategy is the merge strategy that applied at the key, if a rule or an array merge decided it
	// (counter, max, min, set, keyed, sequence, atomic, reject).
	Strategy string `json:"strategy,omitempty"`
	// Base, Mine and Theirs are the JSON text of the key's value on each
	// side, nil where the key is absent, cut to Options.MaxValue bytes; the
	// matching *Bytes field gives the full size of a value that was cut.
	Base        *string `json:"base"`
	Mine        *string `json:"mine"`
	Theirs      *string `json:"theirs"`
	BaseBytes   int     `json:"base_bytes,omitempty"`
	MineBytes   int     `json:"mine_bytes,omitempty"`
	TheirsBytes int     `json:"theirs_bytes,omitempty"`
	Writer      Writer  `json:"writer"`
	Trigger     string  `json:"trigger"`
	// Outcome is the commit's: "committed" or "unchanged" (writer-wins took
	// mine's value), "conflict" (the reject policy refused the commit) or
	// "failed" (the backing store failed; the record is unchanged).
	Outcome string `json:"outcome"`
	// Conflicts is how many conflicting keys the commit had in all.
	Conflicts int `json:"conflicts"`
	// BaseFrom says where the commit's base came from (thread, process, own-commit,
	// other-process, handle, fallback, none), BaseDistance how many values the
	// written content differs from it in, RunnerUp the same for the nearest
	// other candidate (-1: none), and Ambiguous that RunnerUp was within one of
	// BaseDistance: the writer may have started from another version. A commit
	// with an ambiguous base and no conflict gets a line of its own, with an
	// empty key and reason "ambiguous base".
	BaseFrom     string `json:"base_from"`
	BaseDistance int    `json:"base_distance"`
	RunnerUp     int    `json:"runner_up"`
	Ambiguous    bool   `json:"ambiguous,omitempty"`
}

// Writer identifies the process whose commit met the conflict.
type Writer struct {
	PID  uint32 `json:"pid"`
	TID  uint32 `json:"tid"`
	UID  uint32 `json:"uid"`
	Comm string `json:"comm"`
}

// Stats count what the journal did with the conflicts it was given.
type Stats struct {
	Written     uint64 // lines written
	Dropped     uint64 // lines dropped: queue full, per-commit bound, or after Close
	WriteErrors uint64 // failed writes (the lines they held are lost)
	Rotations   uint64
}

// Journal is an fs.Observer that journals conflicts. Commit never blocks on
// the file; Close drains the queue.
type Journal struct {
	path string
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu     sync.RWMutex // closed and sends on queue vs Close
	closed bool
	queue  chan []Entry
	done   chan struct{}

	written, dropped, writeErrors, rotations atomic.Uint64
	// pending counts queued lines: the channel counts sends, and one send
	// carries all the lines of a commit.
	pending atomic.Int64

	// Owned by the writer goroutine.
	file          *os.File
	buf           *bufio.Writer
	size          int64
	droppedLogged uint64
	failing       bool
}

// Open opens (appends to) the journal at path and starts its writer.
func Open(path string, opts Options) (*Journal, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Keep == 0 {
		opts.Keep = DefaultKeep
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.MaxValue <= 0 {
		opts.MaxValue = DefaultMaxValue
	}
	if opts.MaxPerCommit <= 0 {
		opts.MaxPerCommit = DefaultMaxPerCommit
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	j := &Journal{
		path:  path,
		opts:  opts,
		log:   logger,
		now:   time.Now,
		queue: make(chan []Entry, opts.Queue),
		done:  make(chan struct{}),
	}
	if err := j.openFile(); err != nil {
		return nil, err
	}
	go j.run()
	return j, nil
}

// Path is the journal file's path.
func (j *Journal) Path() string { return j.path }

// Stats returns the journal's counters.
func (j *Journal) Stats() Stats {
	return Stats{
		Written:     j.written.Load(),
		Dropped:     j.dropped.Load(),
		WriteErrors: j.writeErrors.Load(),
		Rotations:   j.rotations.Load(),
	}
}

// Commit queues one line per conflict of ev, or one line for a commit whose
// base was ambiguous. The values are copied (cut to MaxValue) because the
// event's slices belong to the commit path.
func (j *Journal) Commit(ev event.Commit) {
	conflicts := ev.Conflicts
	if len(conflicts) == 0 && ev.Ambiguous {
		conflicts = []merge.Conflict{{Reason: "ambiguous base"}}
	}
	if len(conflicts) == 0 {
		return
	}
	n := min(len(conflicts), j.opts.MaxPerCommit)
	if over := len(conflicts) - n; over > 0 {
		j.dropped.Add(uint64(over))
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		j.dropped.Add(uint64(n))
		return
	}
	if j.pending.Add(int64(n)) > int64(j.opts.Queue) {
		j.pending.Add(-int64(n))
		j.dropped.Add(uint64(n))
		return
	}
	entries := make([]Entry, n)
	now := j.now().UTC()
	for i, c := range conflicts[:n] {
		entries[i] = j.entry(now, ev, c)
	}
	select {
	case j.queue <- entries:
	default:
		j.pending.Add(-int64(n))
		j.dropped.Add(uint64(n))
	}
}

func (j *Journal) entry(now time.Time, ev event.Commit, c merge.Conflict) Entry {
	e := Entry{
		Time:         now,
		Record:       ev.Record,
		Key:          pointer(c.Path),
		Reason:       c.Reason,
		Strategy:     string(c.Strategy),
		Writer:       Writer{PID: ev.Writer.PID, TID: ev.Writer.TID, UID: ev.Writer.UID, Comm: ev.Writer.Comm},
		Trigger:      ev.Trigger.String(),
		Outcome:      string(ev.Outcome),
		Conflicts:    len(ev.Conflicts),
		BaseFrom:     ev.Base.String(),
		BaseDistance: ev.BaseDistance,
		RunnerUp:     ev.RunnerUp,
		Ambiguous:    ev.Ambiguous,
	}
	e.Base, e.BaseBytes = j.cut(c.Base)
	e.Mine, e.MineBytes = j.cut(c.Mine)
	e.Theirs, e.TheirsBytes = j.cut(c.Theirs)
	return e
}

// cut copies a value, keeping at most MaxValue bytes without splitting a
// UTF-8 sequence; full is the original size when the value was cut.
func (j *Journal) cut(v []byte) (s *string, full int) {
	if v == nil {
		return nil, 0
	}
	if len(v) <= j.opts.MaxValue {
		t := string(v)
		return &t, 0
	}
	end := j.opts.MaxValue
	for end > 0 && !utf8.RuneStart(v[end]) {
		end--
	}
	t := string(v[:end])
	return &t, len(v)
}

// pointer renders a key path as a JSON Pointer.
func pointer(path []string) string {
	var b strings.Builder
	for _, k := range path {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(k))
	}
	return b.String()
}

// Close writes what is queued, flushes and closes the file. Commits after
// Close are counted as dropped.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		<-j.done
		return nil
	}
	j.closed = true
	close(j.queue)
	j.mu.Unlock()
	<-j.done
	if j.file == nil {
		return nil
	}
	err := j.buf.Flush()
	if cerr := j.file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	return nil
}

func (j *Journal) run() {
	defer close(j.done)
	ticker := time.NewTicker(defaultFlushInterval)
	defer ticker.Stop()
	for {
		select {
		case entries, ok := <-j.queue:
			if !ok {
				j.reportDrops()
				return
			}
			j.pending.Add(-int64(len(entries)))
			for _, e := range entries {
				j.write(e)
			}
			// Flush when the queue is idle: lines reach the file within
			// a moment, and a burst costs one write.
			if len(j.queue) == 0 {
				j.flush()
			}
		case <-ticker.C:
			j.flush()
			j.reportDrops()
		}
	}
}

func (j *Journal) write(e Entry) {
	line, err := json.Marshal(e)
	if err != nil {
		j.writeErrors.Add(1)
		j.log.Error("journal: cannot encode a conflict", "record", e.Record, "err", err)
		return
	}
	line = append(line, '\n')
	if j.file != nil && j.size > 0 && j.size+int64(len(line)) > j.opts.MaxBytes {
		j.rotate()
	}
	if j.file == nil {
		// A failed write closed the file; try again with each line.
		if err := j.openFile(); err != nil {
			j.failed(err)
			return
		}
	}
	if _, err := j.buf.Write(line); err != nil {
		j.failed(err)
		return
	}
	j.size += int64(len(line))
	j.written.Add(1)
	j.recovered()
}

func (j *Journal) flush() {
	if j.file == nil || j.buf.Buffered() == 0 {
		return
	}
	if err := j.buf.Flush(); err != nil {
		j.failed(err)
	}
}

// rotate moves path to path.1, path.1 to path.2 and so on, dropping the
// oldest, and starts a new file. If the live file cannot be moved, it keeps
// appending to it and tries again after another MaxBytes, so that no
// conflict is lost for want of a rename and no line retries it.
func (j *Journal) rotate() {
	if j.file != nil {
		if err := j.buf.Flush(); err != nil {
			j.failed(err)
		}
		if j.file != nil {
			j.file.Close()
			j.file = nil
		}
	}
	keep := max(j.opts.Keep, 0)
	if err := os.Remove(j.rotated(keep + 1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		j.log.Warn("journal: cannot remove an old journal", "path", j.rotated(keep+1), "err", err)
	}
	for i := keep; i >= 1; i-- {
		if err := os.Rename(j.rotated(i-1), j.rotated(i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			j.log.Warn("journal: cannot rotate", "path", j.rotated(i-1), "err", err)
		}
	}
	if keep == 0 {
		if err := os.Remove(j.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			j.log.Warn("journal: cannot remove the full journal", "path", j.path, "err", err)
		}
	}
	j.rotations.Add(1)
	if err := j.openFile(); err != nil {
		j.failed(err)
		return
	}
	if j.size >= j.opts.MaxBytes {
		j.size = 0
	}
}

// rotated names the i-th old file; 0 is the live one.
func (j *Journal) rotated(i int) string {
	if i == 0 {
		return j.path
	}
	return fmt.Sprintf("%s.%d", j.path, i)
}

func (j *Journal) openFile() error {
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	j.file, j.size = f, st.Size()
	if j.buf == nil {
		j.buf = bufio.NewWriterSize(f, 64<<10)
	} else {
		j.buf.Reset(f)
	}
	return nil
}

// failed counts a write error, logs the first of a run of them and closes
// the file: a bufio.Writer keeps its first error for good, so the next line
// starts afresh.
func (j *Journal) failed(err error) {
	j.writeErrors.Add(1)
	if !j.failing {
		j.failing = true
		j.log.Error("journal: cannot write conflicts; they are still logged", "path", j.path, "err", err)
	}
	if j.file != nil {
		j.file.Close()
		j.file = nil
	}
}

func (j *Journal) recovered() {
	if j.failing {
		j.failing = false
		j.log.Info("journal: writing conflicts again", "path", j.path)
	}
}

func (j *Journal) reportDrops() {
	if d := j.dropped.Load(); d != j.droppedLogged {
		j.log.Warn("journal: conflicts not journaled (queue full or too many in one commit); they are still counted and logged",
			"dropped", d-j.droppedLogged, "dropped_total", d)
		j.droppedLogged = d
	}
}
