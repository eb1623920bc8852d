package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/mergefs/mergefs/internal/event"
	"hash/fnv"
	iofs "io/fs"
	"log/slog"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/merge"
)

type commitRequest struct {
	// target finds the record; record is its path, for logs and the journal.
	target recordTarget
	record string
	// expect is the identity of the record the writer opened (0: a new record), newID the identity a
	// record this commit creates gets (backing.Commit).
	expect, newID uint64
	writer        caller
	trigger       event.Trigger
	// bases are the candidates for the version the writer read (chooseBase).
	// With none, and no handle opened to write (a rename from a process that
	// read nothing), baseIsTheirs says the new content replaces the record.
	bases        []candidate
	baseIsTheirs bool
	mine         []byte
	sync         bool
	create       newRecord
	source       *backing.Source // rename commits: the file renamed onto record
	refused      string          // why writes were refused: the content is not what the writer meant
}

// logConflictLimit bounds the conflicting paths named in one log line; the
// journal has them all.
const logConflictLimit = 8

// commit merges req.mine into the record under the record's lock. final
// reports that retrying the same content cannot succeed (invalid content,
// rejected conflict, a record replaced since the writer opened it, no
// permission), as opposed to a failure of the backing store.
func (fsys *FS) commit(req commitRequest) (errno syscall.Errno, final bool) {
	errno, final, _, _ = fsys.commitResult(req)
	return errno, final
}

// commitResult is commit, with the store's result of a successful commit and the version of what
// the writer wrote (req.mine, with its parse kept) for the writer's history.
func (fsys *FS) commitResult(req commitRequest) (errno syscall.Errno, final bool, cr backing.CommitResult, wrote *version) {
	start := fsys.now()
	m := commitMerge{fsys: fsys, req: req, opts: fsys.mergeOpts}
	m.opts.Rules, m.opts.Record = fsys.rules.Load(), req.record
	var err error
	if req.refused != "" {
		// Writes were refused, so what is buffered is not what the writer
		// meant (a prefix, a hole): never a record.
		err = &merge.InputError{Input: "mine", Offset: -1, Reason: req.refused}
	} else if m.choice, err = fsys.chooseBase(req); err != nil {
		// mine is not a valid record: rejected below, before any lock.
	} else if loc, errno := req.target.locate(); errno != 0 {
		err = fmt.Errorf("the record's directory: %w", errno)
		if errno == syscall.ESTALE || errno == syscall.ENOENT {
			err = fmt.Errorf("%w (its directory is gone)", backing.ErrRecordChanged)
		}
	} else {
		// The record as mergefs last found or left it is not read again if its file is unchanged.
		var known *backing.Known
		if latest := fsys.history.latest(req.expect); latest != nil && req.expect != 0 {
			known = latest.known()
		}
		cr, err = fsys.store.CommitAt(context.Background(), loc.dir, loc.name, backing.Commit{
			Known:     known,
			Merge:     m.merge,
			Committed: m.committed,
			Expect:    req.expect,
			NewID:     req.newID,
			Writer:    req.writer.cred(),
			Mode:      iofs.FileMode(req.create.mode & 0o7777),
			Sync:      req.sync,
			Source:    req.source,
		})
		loc.close()
		if !cr.Unchanged {
			// Before the reply: the kernel must not give anyone the old record's attributes.
			req.target.changed(cr)
		}
	}
	choice, result := m.choice, m.result
	ev := event.Commit{
		Record:       req.record,
		Writer:       req.writer.public(),
		Trigger:      req.trigger,
		Base:         choice.from,
		BaseDistance: choice.distance,
		RunnerUp:     choice.runnerUp,
		Ambiguous:    choice.ambiguous,
		Candidates:   len(req.bases),
		Merged:       m.merged,
		Changed:      result.Changed,
		Conflicts:    result.Conflicts,
		RuleMerges:   result.Merges,
		Duration:     fsys.now().Sub(start),
		LockWait:     cr.Wait,
		Err:          err,
	}
	if choice.base == nil && req.baseIsTheirs {
		ev.Base = event.Fallback
	}
	errno, final = fsys.finishCommit(&ev, req, err, cr)
	fsys.observer.Commit(ev)
	if errno == 0 {
		wrote = m.wrote()
		if m.current != nil && m.current != wrote {
			// Parsed now, outside the lock, rather than by the next commit under it (its theirs,
			// when writers share the record); a commit that needs it meanwhile waits for this parse.
			fsys.documentOf(m.current, m.choice.mine)
		}
	}
	return errno, final, cr, wrote
}

// commitMerge is one commit's merge: what it chose and what it made.
type commitMerge struct {
	fsys   *FS
	req    commitRequest
	opts   merge.Options
	choice baseChoice
	result merge.Result
	merged bool   // a 3-way merge with a theirs that is not the base
	out    []byte // what the commit wrote
	// mine is the version of what the writer wrote (wrote), current what the record holds after
	// the commit (committed): mine, or the merged result.
	mine, current *version
}

// committed is backing.Commit.Committed: under the record's lock, the history learns what the
// record now holds, the next commit's theirs when writers share the record.
func (m *commitMerge) committed(cr backing.CommitResult) {
	current := m.wrote()
	if !bytes.Equal(m.out, m.req.mine) {
		current = &version{data: m.out}
	}
	current.stored.Store(&storedFile{version: cr.Version, identity: cr.Identity})
	m.fsys.history.setCurrent(cr.Identity.ID, current)
	m.current = current
}

// merge is backing.Commit.Merge: it runs under the record's lock, with theirs as the record is now.
// When theirs is the chosen base byte for byte (nobody committed since the writer read: the usual
// case) and mine changed it, the result is mine as written, already validated: no merge
// (docs/design.md, "The cost of a commit"). Otherwise mine, base and theirs merge, each parsed at most once: mine and the base by
// the base choice, theirs unless it is the version mergefs last found or left in the backing store.
func (m *commitMerge) merge(theirs []byte, exists bool) ([]byte, error) {
	fsys, req := m.fsys, m.req
	// An empty file is a name reserved by an exclusive create, not a
	// record: merging into it would report its emptiness as damage.
	if exists && len(theirs) == 0 {
		exists = false
	}
	if exists && m.choice.base != nil && m.choice.distance > 0 && bytes.Equal(m.choice.base.data, theirs) {
		// Mine differs from the base (a distance above 0 is never a hash collision: equal values
		// hash alike), which is still the record: the writer's content, as written, is the result.
		// A rewrite that changes no value merges below, and leaves the record as it is.
		m.result = merge.Result{Merged: req.mine, Changed: m.choice.distance}
		m.out = req.mine
		return req.mine, nil
	}
	in := merge.Inputs{Mine: req.mine, MineDoc: m.choice.mine, Theirs: theirs, HasTheirs: exists}
	switch {
	case m.choice.base != nil:
		in.Base, in.HasBase, in.BaseDoc = m.choice.base.data, true, m.choice.baseDoc
	case req.baseIsTheirs:
		in.Base, in.HasBase = theirs, exists
	}
	if exists && req.expect != 0 {
		if v := fsys.history.current(req.expect, theirs); v != nil {
			// Parsed under the lock unless its committer's parse (after its lock) came first.
			if doc := fsys.documentOf(v, m.choice.mine); doc != nil {
				in.Theirs, in.TheirsDoc = v.data, doc
			}
		}
	}
	m.merged = exists && (!in.HasBase || !bytes.Equal(in.Base, theirs))
	var err error
	m.result, err = merge.Merge(in, m.opts)
	if inputErr, ok := errors.AsType[*merge.InputError](err); ok && inputErr.Input == "base" {
		// The writer read a damaged record; without a usable base
		// the commit is a union with theirs.
		in.Base, in.HasBase = nil, false
		m.result, err = merge.Merge(in, m.opts)
	}
	if err != nil {
		return nil, err
	}
	m.out = m.result.Merged
	return m.result.Merged, nil
}

// wrote is the version of what the writer wrote, with the parse and summary the commit made of it.
func (m *commitMerge) wrote() *version {
	if m.mine == nil {
		if m.choice.mine == nil {
			m.mine = &version{data: m.req.mine}
		} else {
			m.mine = parsedVersion(m.req.mine, m.choice.mine, m.choice.mineSum)
		}
	}
	return m.mine
}

// errNoRecord aborts a sync of a record that does not exist.
var errNoRecord = errors.New("no record to sync")

func isInputError(err error) bool {
	_, ok := errors.AsType[*merge.InputError](err)
	return ok
}

// syncRecord makes the record as it is durable: a commit that writes
// nothing, which the store still fsyncs when asked to.
func (fsys *FS) syncRecord(target recordTarget, record string) syscall.Errno {
	loc, errno := target.locate()
	if errno != 0 {
		return errno
	}
	defer loc.close()
	_, err := fsys.store.CommitAt(context.Background(), loc.dir, loc.name, backing.Commit{
		Merge: func(theirs []byte, exists bool) ([]byte, error) {
			if !exists {
				return nil, errNoRecord
			}
			return theirs, nil
		},
		Sync: true,
	})
	if err == nil || errors.Is(err, errNoRecord) {
		return 0
	}
	fsys.log.Error("fsync of a record failed", "record", record, "err", err)
	return errnoOf(err)
}

// finishCommit counts and logs a commit and maps its error to an errno.
func (fsys *FS) finishCommit(ev *event.Commit, req commitRequest, err error, cr backing.CommitResult) (syscall.Errno, bool) {
	// The commit's logger is made only when something is logged: most commits log nothing.
	log := func() *slog.Logger {
		return fsys.log.With("record", req.record, "pid", ev.Writer.PID, "comm", ev.Writer.Comm, "uid", ev.Writer.UID, "trigger", req.trigger)
	}
	fsys.counters.conflicts.Add(uint64(len(ev.Conflicts)))
	if err == nil || !isInputError(err) {
		fsys.counters.bases[ev.Base].Add(1)
		if ev.Ambiguous {
			fsys.counters.ambiguous.Add(1)
		}
	}
	if ev.Base == event.Fallback {
		fsys.counters.fallbacks.Add(1)
		log().Info("no read of this record is known for the writer; base is the record at the writing open", "base", ev.Base)
	}

	if inputErr, ok := errors.AsType[*merge.InputError](err); ok {
		ev.Outcome = event.Invalid
		fsys.counters.rejected.Add(1)
		saved := fsys.saveRejected(req)
		log().Error("commit rejected: content is not a valid JSON record; the record is unchanged",
			"input", inputErr.Input, "reason", inputErr.Reason, "saved", saved)
		return syscall.EIO, true
	}
	if errors.Is(err, backing.ErrRecordChanged) {
		ev.Outcome = event.RecordChanged
		fsys.counters.rejected.Add(1)
		saved := fsys.saveRejected(req)
		log().Error("commit refused: the record was removed or replaced since the writer opened it; nothing written",
			"err", err, "saved", saved)
		return syscall.EIO, true
	}
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		ev.Outcome = event.Denied
		fsys.counters.rejected.Add(1)
		saved := fsys.saveRejected(req)
		log().Warn("commit refused: the writer may not write the record as it is now; nothing written",
			"err", err, "saved", saved)
		return errnoOf(err), true
	}
	if errors.Is(err, merge.ErrRejected) {
		ev.Outcome = event.Conflict
		fsys.counters.rejected.Add(1)
		log().Warn("commit rejected by the reject policy: conflicting changes; the record is unchanged",
			conflictAttrs(ev.Conflicts)...)
		return syscall.EIO, true
	}
	if err != nil {
		ev.Outcome = event.Failed
		fsys.counters.failed.Add(1)
		log().Error("commit failed in the backing store", "err", err)
		if errno, ok := errors.AsType[syscall.Errno](err); ok && errno != 0 {
			return errno, false
		}
		return syscall.EIO, false
	}

	if len(ev.Conflicts) > 0 {
		log().Warn("conflicting changes resolved: the writer's values were taken", conflictAttrs(ev.Conflicts)...)
	}
	if cr.Unchanged {
		ev.Outcome = event.Unchanged
		fsys.counters.unchanged.Add(1)
	} else {
		ev.Outcome = event.Committed
		fsys.counters.commits.Add(1)
	}
	if ev.Merged {
		fsys.counters.merges.Add(1)
	}
	if cr.Grouped {
		fsys.counters.grouped.Add(1)
	}
	for s, n := range ev.RuleMerges {
		if c := fsys.counters.ruleMerges[s]; c != nil {
			c.Add(uint64(n))
		}
	}
	if fsys.log.Enabled(context.Background(), slog.LevelDebug) {
		log().Debug("commit", "outcome", ev.Outcome, "base", ev.Base, "base_distance", ev.BaseDistance,
			"runner_up", ev.RunnerUp, "ambiguous", ev.Ambiguous, "candidates", ev.Candidates,
			"merged", ev.Merged, "changed", ev.Changed, "lock_wait", cr.Wait, "duration", ev.Duration)
	}
	return 0, false
}

func conflictAttrs(conflicts []merge.Conflict) []any {
	paths := make([]string, 0, min(len(conflicts), logConflictLimit))
	for _, c := range conflicts[:min(len(conflicts), logConflictLimit)] {
		paths = append(paths, "/"+strings.Join(c.Path, "/"))
	}
	return []any{"conflicts", len(conflicts), "paths", paths}
}

// saveRejected keeps refused content for inspection (within the rejected/ bounds) and returns where,
// or why it could not.
func (fsys *FS) saveRejected(req commitRequest) string {
	return fsys.rejected.save(fsys.now(), req.writer.proc.pid, req.record, req.mine)
}

// maxRejectedRecordName bounds the record's part of a rejected file's name, so that the whole name
// stays within NAME_MAX (255) however long the record's path.
const maxRejectedRecordName = 200

// rejectedName is the file name rejected content of record, written by pid at t, is saved under:
// the time, the pid and the record's path with '/', '%' and control bytes escaped as %XX, cut to
// maxRejectedRecordName bytes with a hash of the whole path appended where it was cut.
func rejectedName(t time.Time, pid uint32, record string) string {
	var b strings.Builder
	for i := 0; i < len(record); i++ {
		c := record[i]
		if c == '/' || c == '%' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	escaped := b.String()
	if len(escaped) > maxRejectedRecordName {
		h := fnv.New32a()
		h.Write([]byte(record))
		cut := maxRejectedRecordName - 9
		for cut > 0 && !utf8.RuneStart(escaped[cut]) {
			cut--
		}
		escaped = fmt.Sprintf("%s~%08x", escaped[:cut], h.Sum32())
	}
	return fmt.Sprintf("%s-%d-%s", t.UTC().Format("20060102T150405.000000000Z"), pid, escaped)
}

func (c caller) public() event.Writer {
	return event.Writer{PID: c.proc.pid, TID: c.thread.pid, UID: c.uid, Comm: c.comm}
}

// callerOf identifies the task behind a request. If /proc cannot say (it
// always can for a task blocked in a request), the thread stands for its own
// process: that task then matches no other reader or writer.
func (fsys *FS) callerOf(ctx context.Context) caller {
	fc, ok := fuseCaller(ctx)
	if !ok {
		return caller{}
	}
	// Pid 0: the caller is in a pid namespace the daemon cannot see.
	if fc.Pid == 0 {
		return caller{uid: fc.Uid, gid: fc.Gid}
	}
	c, err := fsys.callers.resolve(fc.Pid, fc.Uid, fc.Gid)
	if err != nil {
		fsys.log.Debug("cannot identify caller; treating its thread as its own process", "tid", fc.Pid, "err", err)
		key := procKey{pid: fc.Pid}
		return caller{thread: key, proc: key, uid: fc.Uid, gid: fc.Gid}
	}
	return c
}

func (fsys *FS) maxRecordSize() int {
	if fsys.mergeOpts.MaxSize > 0 {
		return fsys.mergeOpts.MaxSize
	}
	return merge.DefaultMaxSize
}
