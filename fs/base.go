package fs

import (
	"errors"

	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/merge"
)

// baseChoice is the base a commit merges from, and how it was chosen.
type baseChoice struct {
	base      *version // nil: none (a new record, or no candidate is a valid document)
	from      event.Base
	distance  int
	runnerUp  int // -1: no other content
	ambiguous bool
	// mine is the commit's content parsed (validated), and mineSum its summary (nil when there was
	// no candidate); baseDoc is base parsed. The merge and the history reuse them.
	mine    *merge.Document
	mineSum *merge.Summary
	baseDoc *merge.Document
}

// chooseBase validates mine (taking what it repeats of the version the writer most likely read
// from that version's parse) and chooses, among the commit's candidates, the version mine differs
// least from (merge.ChooseBase: changed values under JSON equality; ties go to the writing thread's
// last read, then the process's, then the newest). Summaries of candidates are made once per
// version and kept with it. An invalid mine is an *merge.InputError for "mine".
func (fsys *FS) chooseBase(req commitRequest) (baseChoice, error) {
	none := baseChoice{runnerUp: -1}
	// The version the writer most likely read (its thread's last read, else the first candidate):
	// what mine repeats of it is not scanned again.
	var like *merge.Document
	for _, c := range req.bases {
		if c.threadLast {
			like = fsys.documentOf(c.v, nil)
			break
		}
	}
	if like == nil && len(req.bases) > 0 {
		like = fsys.documentOf(req.bases[0].v, nil)
	}
	doc, err := merge.ParseDocumentLike(req.mine, fsys.mergeOpts, like)
	if err != nil {
		if inputErr, ok := errors.AsType[*merge.InputError](err); ok {
			inputErr.Input = "mine"
		}
		return none, err
	}
	none.mine = doc
	if len(req.bases) == 0 {
		return none, nil
	}
	cands := make([]merge.Candidate, len(req.bases))
	var hint, prev *merge.Summary
	for i, c := range req.bases {
		made := c.v.summary.Load() == nil
		s := c.v.summaryOf(fsys.mergeOpts, prev)
		if made {
			fsys.history.recharge(c.v)
		}
		if s != nil {
			prev = s
			if hint == nil || c.threadLast {
				hint = s
			}
		}
		cands[i] = merge.Candidate{Summary: s, ThreadLastRead: c.threadLast, ProcessLastRead: c.procLast, Seq: c.v.seq}
	}
	none.mineSum = doc.SummaryReusing(hint)
	ch := merge.ChooseBase(none.mineSum, cands)
	if ch.Index < 0 {
		return none, nil
	}
	chosen := req.bases[ch.Index]
	return baseChoice{base: chosen.v, from: chosen.from, distance: ch.Distance, runnerUp: ch.RunnerUp, ambiguous: ch.Ambiguous,
		mine: doc, mineSum: none.mineSum, baseDoc: fsys.documentOf(chosen.v, doc)}, nil
}

// documentOf returns v parsed (nil if it is not a valid document), parsing it once, and charges the
// parse to the history that holds v. like, if not nil, is a document v probably repeats large parts
// of (merge.ParseDocumentLike): the parse is the same, made faster.
func (fsys *FS) documentOf(v *version, like *merge.Document) *merge.Document {
	made := v.parsed.Load() == nil
	doc := v.document(fsys.mergeOpts, like)
	if made {
		fsys.history.recharge(v)
	}
	return doc
}
