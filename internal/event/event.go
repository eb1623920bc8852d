// Package event holds what a commit reports to its observers (metrics, the conflict journal): the
// filesystem produces these values, the observers consume them, and neither depends on the other.
package event

import (
	"time"

	"github.com/mergefs/mergefs/merge"
)

// Outcome is how a commit ended.
type Outcome string

// Commit outcomes.
const (
	Committed Outcome = "committed" // written to the backing store
	Unchanged Outcome = "unchanged" // nothing to write: the record already had this content
	Invalid   Outcome = "invalid"   // content is not one valid JSON document within the limits
	Conflict  Outcome = "conflict"  // refused by the reject policy
	Failed    Outcome = "failed"    // the backing store failed
	// RecordChanged: refused, the record was removed or replaced since the writer opened it.
	RecordChanged Outcome = "record-changed"
	// Denied: refused, the writer may not write the record as it is now.
	Denied Outcome = "denied"
)

// Refused reports whether the outcome is a commit mergefs refused on purpose (as opposed to one that
// succeeded, or failed in the backing store).
func (o Outcome) Refused() bool {
	switch o {
	case Invalid, Conflict, RecordChanged, Denied:
		return true
	}
	return false
}

// Trigger is what made a commit happen.
type Trigger uint8

// Commit triggers.
const (
	Close    Trigger = iota + 1 // close() by a process that wrote
	Fsync                       // fsync or fdatasync
	Rename                      // a file renamed onto the record
	Truncate                    // truncate(2) by path
)

func (t Trigger) String() string {
	switch t {
	case Close:
		return "close"
	case Fsync:
		return "fsync"
	case Rename:
		return "rename"
	case Truncate:
		return "truncate"
	}
	return "unknown"
}

// Base says where a commit's base (the version the writer read) came from.
type Base uint8

// Where a base came from: the kind of the candidate chosen (docs/design.md, "The base of a commit").
const (
	NoBase       Base = iota // no candidate: a new record, or a union with the record
	Thread                   // what the writing thread last read
	Process                  // a version the writing process read
	OwnCommit                // what the writing process last committed
	OtherProcess             // a version another process read
	Handle                   // the content at open of the writing handle (opened without O_TRUNC)
	Fallback                 // the record at the writing open, which no one read: counted and logged
)

// Bases lists every Base, for metrics.
var Bases = []Base{NoBase, Thread, Process, OwnCommit, OtherProcess, Handle, Fallback}

func (b Base) String() string {
	switch b {
	case Thread:
		return "thread"
	case Process:
		return "process"
	case OwnCommit:
		return "own-commit"
	case OtherProcess:
		return "other-process"
	case Handle:
		return "handle"
	case Fallback:
		return "fallback"
	}
	return "none"
}

// Writer identifies the process behind a commit.
type Writer struct {
	PID  uint32 // process (thread group) id
	TID  uint32 // thread id of the committing request
	UID  uint32
	Comm string
}

// Commit describes one commit attempt.
type Commit struct {
	Record  string
	Writer  Writer
	Trigger Trigger
	Base    Base
	// BaseDistance is how many values mine differs from the chosen base in; RunnerUp the same for
	// the nearest candidate with other content (-1: none); Ambiguous that RunnerUp is within one of
	// BaseDistance. Candidates is how many versions were considered.
	BaseDistance, RunnerUp int
	Ambiguous              bool
	Candidates             int
	Outcome                Outcome
	Merged                 bool // the record had changed since the writer's base
	Changed                int  // key-level changes applied
	Conflicts              []merge.Conflict
	// RuleMerges counts positions both sides changed that a strategy merged without a conflict.
	RuleMerges map[merge.Strategy]int
	Duration   time.Duration
	LockWait   time.Duration
	Err        error
}

// Observer receives commit events. Called on the commit path after the commit: it must be quick and
// must not block.
type Observer interface {
	Commit(Commit)
}

// Discard is an Observer that drops every event.
type Discard struct{}

func (Discard) Commit(Commit) {}
