package fs

import (
	"syscall"
	"testing"

	"github.com/mergefs/mergefs/merge"
)

// lockstepIncrement has two processes read the record, then one write hits+1 and the other hits+2, each
// with an element appended to items; it returns the record after both commits.
func lockstepIncrement(t *testing.T, f *testFS, name string) map[string]any {
	t.Helper()
	f.put(t, name, `{"hits":5,"items":["a"]}`)
	procA, procB := self(), task(startSleeper(t))
	ra, rb := f.open(t, procA, name, syscall.O_RDONLY), f.open(t, procB, name, syscall.O_RDONLY)
	readAll(t, procA, ra)
	readAll(t, procB, rb)
	closeHandle(procA, ra)
	closeHandle(procB, rb)
	wa := f.open(t, procA, name, syscall.O_WRONLY|syscall.O_TRUNC)
	wb := f.open(t, procB, name, syscall.O_WRONLY|syscall.O_TRUNC)
	write(t, procA, wa, `{"hits":6,"items":["a","x"]}`, 0)
	write(t, procB, wb, `{"hits":7,"items":["a","y"]}`, 0)
	if errno := closeHandle(procA, wa); errno != 0 {
		t.Fatal(errno)
	}
	if errno := closeHandle(procB, wb); errno != 0 {
		t.Fatal(errno)
	}
	return f.get(t, name)
}

// Commits use the rules in force when they start, as SetRules leaves them; without a rule the counter
// conflicts, while array appends merge by element either way.
func TestRulesInForceDecideCommits(t *testing.T) {
	f := newTestFS(t, merge.WriterWins)
	got := lockstepIncrement(t, f, "r1.json")
	if got["hits"] != 7.0 || len(got["items"].([]any)) != 3 {
		t.Fatalf("without rules: %v, want hits 7 (a conflict, writer wins) and both appends; stats %+v", got, f.Stats())
	}
	if st := f.Stats(); st.Conflicts != 1 || st.RuleMerges[merge.StrategyCounter] != 0 {
		t.Fatalf("without rules: stats %+v", st)
	}

	rules, err := merge.ParseRules([]byte(`{"rules":[{"records":"*.json","path":"/hits","strategy":"counter"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	f.SetRules(rules)
	got = lockstepIncrement(t, f, "r2.json")
	if got["hits"] != 8.0 || len(got["items"].([]any)) != 3 {
		t.Fatalf("with a counter rule: %v, want hits 8 and both appends", got)
	}
	st := f.Stats()
	if st.Conflicts != 1 || st.RuleMerges[merge.StrategyCounter] != 1 || st.RuleMerges[merge.StrategySequence] != 2 {
		t.Fatalf("with a counter rule: stats %+v", st)
	}

	f.SetRules(nil)
	if got = lockstepIncrement(t, f, "r3.json"); got["hits"] != 7.0 {
		t.Fatalf("rules removed: %v, want hits 7", got)
	}
}
