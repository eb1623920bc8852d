// Package merge is a 3-way merge of JSON documents on bytes.
//
// A writer read base, wrote mine, and the record is now theirs: Merge applies
// only what changed from base to mine onto theirs. "Changed" means not
// JSON-equal: numbers compare by exact decimal value, strings after
// unescaping, and key order and whitespace never count. A change on one side
// only is always taken as it is. Untouched bytes of theirs are kept exactly;
// edits are spliced into theirs in one pass, and what is added takes the
// layout of its neighbours in theirs.
//
// Objects merge key by key, recursively: a key added, deleted or set in mine
// is added, deleted or set in theirs. The same key changed differently on
// both sides (set and set, set and deleted) is a conflict.
//
// Arrays merge by element. An array that one side left as it was becomes the
// other side's, exactly. When both changed it:
//
//   - By default the elements merge as a 3-way diff (diff3 at element
//     granularity, elements compared under JSON equality): each side's
//     changes are the hunks of a shortest edit script from base (Myers);
//     changes of one side that touch no change of the other apply as they
//     are; where both sides insert at the same place, both insertions are
//     kept, theirs first, and what both inserted (their longest common
//     subsequence) once; a region that both changed element for element
//     merges element by element, objects and arrays recursively; any
//     other region changed on both sides (differently) is a conflict. An
//     insertion at either end of a region the other side replaced does not
//     touch it: [1,2,3] becoming [1,3] and [1,2,"x",3] gives [1,"x",3].
//   - When every element, in all three versions, is an object with a scalar
//     member under the same key, unique within each array (the first of
//     "id", "_id", "uuid" and "key" that every element has), the elements
//     merge by that identity: one present in all three merges as an object;
//     one deleted on one side is deleted, unless the other changed it (a
//     conflict); one added on both sides merges as a union. The order is
//     theirs', with each element that mine adds after the element that
//     precedes it in mine (and after those that theirs added there).
//   - An element diff that would take more than Options.MaxArrayCost steps,
//     or find more than 1024 differences, makes the array one value again,
//     reported as a conflict (strategy atomic) that says why, so that a
//     100,000-element array costs a few parses of it however it changed.
//
// Arrays added by both sides merge as if both had started from []. A top-level
// value that is not an object (array or scalar) is one value.
//
// Rules (ParseRules, Options.Rules) choose another strategy for matching
// positions of matching records: counter, max, min, set, keyed (by a named
// key), sequence, atomic or reject; see Strategy. A rule-resolved merge is
// not a conflict and is counted in Result.Merges; a value that does not fit
// the strategy (a counter that is not a number) is a conflict.
//
// A conflict (see Conflict) is resolved by the policy: WriterWins takes
// mine's side, Reject refuses the merge. A conflict at a position whose
// rule is reject refuses it under either policy.
//
// Every input is validated by the package's own parser (RFC 8259, UTF-8,
// no duplicate keys, bounded size and depth) before anything walks it, so
// no input can exhaust the stack.
package merge

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Policy says how a conflict is resolved.
type Policy int

const (
	// WriterWins resolves every conflict by taking mine's value.
	WriterWins Policy = iota
	// Reject produces no merged document when there is any conflict;
	// Merge then returns ErrRejected.
	Reject
)

// ParsePolicy parses "writer-wins" or "reject".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "writer-wins":
		return WriterWins, nil
	case "reject":
		return Reject, nil
	}
	return 0, fmt.Errorf("unknown conflict policy %q (want writer-wins or reject)", s)
}

func (p Policy) String() string {
	switch p {
	case WriterWins:
		return "writer-wins"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

const (
	// DefaultMaxSize is the largest input document accepted when
	// Options.MaxSize is 0.
	DefaultMaxSize = 16 << 20
	// DefaultMaxDepth is the deepest nesting accepted when Options.MaxDepth
	// is 0. Python's json module cannot encode or decode much deeper than
	// this (its recursion limit is 1000), so no document a Python worker
	// writes is refused; the stack a merge uses stays small.
	DefaultMaxDepth = 1000
	// maxDepthLimit bounds Options.MaxDepth: parsing, comparing and merging
	// recurse once per level.
	maxDepthLimit = 100_000
)

// DefaultMaxArrayCost is the bound on the work of one array's element
// diff when Options.MaxArrayCost is 0: about 30 ms on a 2 GHz core.
const DefaultMaxArrayCost = 1 << 22

// Options configure Merge. The zero value is writer-wins with the default
// limits and no rules.
type Options struct {
	Policy   Policy
	MaxSize  int // largest input document in bytes; 0 means DefaultMaxSize
	MaxDepth int // deepest nesting of arrays and objects; 0 means DefaultMaxDepth
	// Rules, when not nil, choose the strategy at matching positions of
	// the record named Record (its path relative to the mount, matched
	// against each rule's records glob).
	Rules  *Rules
	Record string
	// MaxArrayCost bounds the work of the element diff of one array (steps
	// of the diff, about (n+m)·d for n and m elements and d differences);
	// past it, or past 1024 differences, the array is merged as one value
	// and a conflict says why. The whole merge gets four times this
	// budget for all its arrays. 0 means DefaultMaxArrayCost; negative
	// merges arrays as one value (as before arrays merged by element),
	// but where a rule says set or keyed.
	MaxArrayCost int
}

// Inputs are the three versions of a record.
type Inputs struct {
	Base      []byte
	HasBase   bool // false: the writer read nothing (new record or unknown base)
	Mine      []byte
	Theirs    []byte
	HasTheirs bool // false: no record exists now

	// MineDoc, BaseDoc and TheirsDoc, when not nil, are Mine, Base and
	// Theirs already parsed (ParseDocument with the MaxSize and MaxDepth
	// that Merge applies), so that Merge does not parse them again. A
	// Document stands for its input only if it was parsed from the same
	// bytes (the same slice, or equal bytes) with the same limits;
	// otherwise Merge parses the input as it would without it. Merge
	// does not change a Document, and Documents may be shared by merges
	// that run at the same time.
	MineDoc, BaseDoc, TheirsDoc *Document
}

// Conflict is one position changed differently in mine and in theirs, or a
// whole-document clash.
type Conflict struct {
	// Path is the position from the top-level value: object keys
	// (unescaped) and array indices (in decimal); empty for a
	// whole-document conflict. An index is the element's position in
	// theirs, or in mine for an element that theirs does not have.
	Path []string
	// ArrayIndex marks the steps of Path that are array indices: Path[i]
	// is an index where ArrayIndex[i] is true. nil when no step is.
	ArrayIndex []bool
	// Base, Mine and Theirs are the raw values as found in each input, nil
	// where the key or element is absent. For a "theirs invalid" conflict
	// Theirs is the whole invalid input, which is not JSON. For a run of
	// array elements (a Reason that starts with "elements") each is a JSON
	// array of the elements of the run on that side, and Path names the
	// run's first index in theirs.
	Base, Mine, Theirs []byte
	Reason             string
	// Strategy is the strategy that applied at Path: the rule's where a
	// rule matches; StrategySequence or StrategyKeyed where the element
	// merge of an array decided (an element or a run changed on both
	// sides, deleted on one and changed on the other); StrategyAtomic for
	// an array too large to merge by element; empty for object members
	// without a rule.
	Strategy Strategy
}

// IsIndex reports whether Path[i] is an array index.
func (c *Conflict) IsIndex(i int) bool {
	return i < len(c.ArrayIndex) && c.ArrayIndex[i]
}

// Pointer returns Path as a JSON Pointer (RFC 6901); "" for the whole
// document. Keys and indices are written alike, as the RFC does: the
// document tells them apart.
func (c *Conflict) Pointer() string {
	var b strings.Builder
	for _, k := range c.Path {
		b.WriteByte('/')
		for i := 0; i < len(k); i++ {
			switch k[i] {
			case '~':
				b.WriteString("~0")
			case '/':
				b.WriteString("~1")
			default:
				b.WriteByte(k[i])
			}
		}
	}
	return b.String()
}

// Result is the outcome of a merge. Merged and the byte slices in Conflicts
// never share memory with the inputs.
type Result struct {
	Merged []byte // the document to write; nil when rejected
	// Changed counts the changes applied from base->mine onto theirs (a
	// member or element set, added or deleted, a value computed by a
	// rule); 0 means Merged is byte-identical to theirs.
	Changed   int
	Conflicts []Conflict
	// Merges counts, per strategy, the positions that both mine and theirs
	// changed and that the strategy merged without any conflict: arrays
	// merged by element (StrategySequence, StrategyKeyed) and values
	// merged by a rule. Plain object members are not counted. nil when
	// there are none.
	Merges map[Strategy]int
}

// ErrRejected is returned with policy Reject when there are conflicts, and
// with any policy when a conflict is at a position whose rule is
// StrategyReject; Result.Conflicts lists them.
var ErrRejected = errors.New("merge rejected: conflicting changes")

// InputError says which input is not one valid JSON document and why.
type InputError struct {
	Input  string // "base", "mine" or "theirs"
	Reason string
	Offset int // byte offset of the problem; -1 if unknown
}

func (e *InputError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("invalid %s document: %s", e.Input, e.Reason)
	}
	return fmt.Sprintf("invalid %s document: %s (at byte %d)", e.Input, e.Reason, e.Offset)
}

// Reasons used in Conflict.Reason.
const (
	reasonBoth          = "modified in both"
	reasonAddedBoth     = "added in both"
	reasonMineDeleted   = "deleted in mine, modified in theirs"
	reasonTheirsDeleted = "modified in mine, deleted in theirs"
	reasonRecordDeleted = "modified in mine, record deleted"
	reasonTheirsInvalid = "theirs invalid: "
	// Runs of array elements (see Conflict).
	reasonRunBoth          = "elements modified in both"
	reasonRunMineDeleted   = "elements deleted in mine, modified in theirs"
	reasonRunTheirsDeleted = "elements modified in mine, deleted in theirs"
)

// Merge applies the changes from in.Base to in.Mine onto in.Theirs.
//
// An invalid mine or base is an *InputError. An invalid theirs (damaged
// outside the writer's control) makes mine the result, reported as a
// whole-document conflict. Without theirs (the record is gone) mine is the
// result, reported as a conflict if mine changed base. Without base, base
// is taken as {}: a union of mine and theirs. A key added on both sides
// with different values conflicts unless both values are objects, which
// merge as a union. With policy Reject, any conflict gives a nil Merged and
// ErrRejected, and the Result still lists the conflicts.
func Merge(in Inputs, opts Options) (Result, error) {
	maxSize, maxDepth, err := limits(opts)
	if err != nil {
		return Result{}, err
	}
	s := getScratch()
	defer s.release()
	mine, err := loadDoc("mine", in.Mine, in.MineDoc, maxSize, maxDepth, s)
	if err != nil {
		return Result{}, err
	}
	var base *tree
	if in.HasBase {
		if bytes.Equal(in.Base, in.Mine) {
			base = mine
		} else if base, err = loadDoc("base", in.Base, in.BaseDoc, maxSize, maxDepth, s); err != nil {
			return Result{}, err
		}
	}
	if !in.HasTheirs {
		res := Result{Merged: bytes.Clone(in.Mine), Changed: 1}
		if base != nil && !equal(base, &base.root, mine, &mine.root) {
			res.Conflicts = []Conflict{{
				Base: bytes.Clone(in.Base), Mine: bytes.Clone(in.Mine),
				Reason: reasonRecordDeleted,
			}}
		}
		return finish(res, opts.Policy)
	}
	// Usually nobody else committed since the writer read, so theirs is
	// base byte for byte: its tree is already validated and built.
	var theirs *tree
	switch {
	case base != nil && bytes.Equal(in.Theirs, in.Base):
		theirs = base
	case bytes.Equal(in.Theirs, in.Mine):
		theirs = mine
	default:
		theirs, err = loadDoc("theirs", in.Theirs, in.TheirsDoc, maxSize, maxDepth, s)
	}
	if err != nil {
		var ie *InputError
		errors.As(err, &ie)
		c := Conflict{Mine: bytes.Clone(in.Mine), Theirs: bytes.Clone(in.Theirs), Reason: reasonTheirsInvalid + ie.Reason}
		if base != nil {
			c.Base = bytes.Clone(in.Base)
		}
		return finish(Result{Merged: bytes.Clone(in.Mine), Changed: 1, Conflicts: []Conflict{c}}, opts.Policy)
	}
	return finish(mergeDocuments(base, mine, theirs, opts), opts.Policy)
}

func limits(opts Options) (maxSize, maxDepth int, err error) {
	maxSize, maxDepth = opts.MaxSize, opts.MaxDepth
	if maxSize == 0 {
		maxSize = DefaultMaxSize
	}
	if maxDepth == 0 {
		maxDepth = DefaultMaxDepth
	}
	if opts.Policy != WriterWins && opts.Policy != Reject {
		return 0, 0, fmt.Errorf("merge: unknown policy %v", opts.Policy)
	}
	if maxSize < 0 || maxSize > math.MaxInt32 {
		return 0, 0, fmt.Errorf("merge: MaxSize %d out of range 0..%d", opts.MaxSize, math.MaxInt32)
	}
	if maxDepth < 0 || maxDepth > maxDepthLimit {
		return 0, 0, fmt.Errorf("merge: MaxDepth %d out of range 0..%d", opts.MaxDepth, maxDepthLimit)
	}
	return maxSize, maxDepth, nil
}

func load(name string, data []byte, maxSize, maxDepth int, s *scratch) (*tree, error) {
	return loadLike(name, data, maxSize, maxDepth, s, nil)
}

// loadLike is load, taking large values data repeats from like (see parseLike).
func loadLike(name string, data []byte, maxSize, maxDepth int, s *scratch, like *tree) (*tree, error) {
	if len(data) > maxSize {
		return nil, &InputError{Input: name, Reason: fmt.Sprintf("%d bytes, larger than max size %d", len(data), maxSize), Offset: maxSize}
	}
	t, serr := parseLike(data, maxDepth, s, like)
	if serr != nil {
		return nil, &InputError{Input: name, Reason: serr.reason, Offset: serr.offset}
	}
	return t, nil
}

// loadDoc is load, with the tree of d instead of a parse when d was parsed
// from data (or from equal bytes) with the same limits.
func loadDoc(name string, data []byte, d *Document, maxSize, maxDepth int, s *scratch) (*tree, error) {
	if d != nil && d.maxSize == maxSize && d.maxDepth == maxDepth && sameBytes(d.t.data, data) {
		return d.t, nil
	}
	return load(name, data, maxSize, maxDepth, s)
}

// sameBytes reports whether a and b hold the same bytes, at once when they
// are the same slice.
func sameBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0] || bytes.Equal(a, b)
}

// standIn returns a tree holding only text: an empty object, an empty
// array or 0, standing in for the base of a position that mine and theirs
// both added.
func standIn(text string, k kind) *tree {
	return &tree{data: []byte(text), root: value{kind: k, end: int32(len(text))}, full: true, standIn: true}
}

func finish(res Result, policy Policy) (Result, error) {
	if len(res.Conflicts) == 0 {
		return res, nil
	}
	fatal := policy == Reject
	for i := range res.Conflicts {
		fatal = fatal || res.Conflicts[i].Strategy == StrategyReject
	}
	if fatal {
		return Result{Conflicts: res.Conflicts}, ErrRejected
	}
	return res, nil
}

// mergeDocuments merges valid documents; a nil base means the writer read
// nothing.
func mergeDocuments(base, mine, theirs *tree, opts Options) Result {
	m := &merger{mine: mine, theirs: theirs, empty: standIn("{}", kindObject)}
	m.arrayCost = opts.MaxArrayCost
	if m.arrayCost == 0 {
		m.arrayCost = DefaultMaxArrayCost
	}
	m.arrayBudget = 4 * int64(m.arrayCost)
	if opts.Rules != nil {
		m.setRules(opts.Rules.forRecord(opts.Record))
	}
	if base == nil {
		// Two creators: a union of both, as if both had started from {}.
		base = m.empty
	}
	if base == mine {
		return Result{Merged: bytes.Clone(theirs.data)} // the same bytes
	}
	if r := m.lookup(); r != nil {
		m.valueRule(r, base, &base.root, &mine.root, &theirs.root)
	} else if base.root.kind == kindObject && mine.root.kind == kindObject && theirs.root.kind == kindObject {
		m.object(base, &base.root, &mine.root, &theirs.root)
	} else if !equal(base, &base.root, mine, &mine.root) {
		// A top level that is not an object is one value (arrays too).
		m.atomic(base, &base.root, &mine.root, &theirs.root, "")
	}
	res := Result{Changed: m.changed, Conflicts: m.conflicts, Merges: m.merges}
	if len(m.edits) == 0 {
		res.Merged = bytes.Clone(theirs.data)
	} else {
		res.Merged = m.splice()
		if m.mayCancel && bytes.Equal(res.Merged, theirs.data) {
			// Changes that cancel out: an element deleted and the same
			// bytes inserted where it was.
			res.Changed = 0
		}
	}
	return res
}
