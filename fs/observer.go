package fs

import (
	"time"

	"github.com/mergefs/mergefs/merge"
)

// Outcome is how a commit ended.
type Outcome string

// Commit outcomes.
const (
	OutcomeCommitted Outcome = "committed" // written to the backing store
	OutcomeUnchanged Outcome = "unchanged" // nothing to write: the record already had this content
	OutcomeInvalid   Outcome = "invalid"   // content is not one valid JSON document within the limits
	OutcomeConflict  Outcome = "conflict"  // refused by the reject policy
	OutcomeFailed    Outcome = "failed"    // the backing store failed
	// OutcomeRecordChanged: refused, the record was removed or replaced since the writer opened it.
	OutcomeRecordChanged Outcome = "record-changed"
	// OutcomeDenied: refused, the writer may not write the record as it is now.
	OutcomeDenied Outcome = "denied"
)

// Writer identifies the process behind a commit.
type Writer struct {
	PID  uint32 // process (thread group) id
	TID  uint32 // thread id of the committing request
	UID  uint32
	Comm string
}

// CommitEvent describes one commit attempt.
type CommitEvent struct {
	Record    string
	Writer    Writer
	Trigger   string // "close", "fsync", "rename", "truncate"
	Base      string // how the base was chosen: handle, thread, process, fallback, none
	Outcome   Outcome
	Merged    bool // the record had changed since the writer's base
	Changed   int  // key-level changes applied
	Conflicts []merge.Conflict
	Duration  time.Duration
	LockWait  time.Duration
	Err       error
}

// Observer receives commit events (metrics, the conflict journal). Called on
// the commit path after the commit: it must be quick and must not block.
type Observer interface {
	Commit(CommitEvent)
}

type nopObserver struct{}

func (nopObserver) Commit(CommitEvent) {}
