package mount_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listsRecord is what workers/lists.py leaves: 4 workers x 15 rounds each append to items, add a
// keyed element to lines, and add their number + 1 to hits.
type listsRecord struct {
	Hits  int      `json:"hits"`
	Items []string `json:"items"`
	Lines []struct {
		ID  string `json:"id"`
		Qty int    `json:"qty"`
	} `json:"lines"`
}

const listsWorkers, listsRounds = 4, 15

// runLists runs the lockstep workers on dir/r.json and returns what the record holds, and what of
// it was lost: items, lines and counter increments (the counter's missing amount).
func runLists(t *testing.T, h *harness, dir, backing string) (rec listsRecord, lostItems, lostLines, lostHits int) {
	t.Helper()
	out := h.python(t, 5*time.Minute, "lists.py", filepath.Join(dir, "r.json"), fmt.Sprint(listsWorkers), fmt.Sprint(listsRounds))
	var sum struct {
		Errors  []string
		Corrupt bool
	}
	if err := json.Unmarshal(out, &sum); err != nil || len(sum.Errors) > 0 {
		t.Fatalf("lists.py: %v %v\n%s", err, sum.Errors, out)
	}
	data, err := os.ReadFile(filepath.Join(backing, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rec); err != nil || sum.Corrupt {
		// Everything is lost; only the control may get here.
		t.Logf("r.json is damaged (workers saw it corrupt: %v): %v: %.200q", sum.Corrupt, err, data)
		return listsRecord{}, listsWorkers * listsRounds, listsWorkers * listsRounds, listsRounds * listsWorkers * (listsWorkers + 1) / 2
	}
	items, lines := map[string]bool{}, map[string]bool{}
	for _, it := range rec.Items {
		items[it] = true
	}
	for _, l := range rec.Lines {
		lines[l.ID] = true
	}
	wantHits := 0
	for k := range listsWorkers {
		wantHits += (k + 1) * listsRounds
		for r := range listsRounds {
			id := fmt.Sprintf("w%d-%d", k, r)
			if !items[id] {
				lostItems++
			}
			if !lines[id] {
				lostLines++
			}
		}
	}
	if len(rec.Items) != len(items) || len(rec.Lines) != len(lines) {
		t.Errorf("duplicates: %d items (%d distinct), %d lines (%d distinct)", len(rec.Items), len(items), len(rec.Lines), len(lines))
	}
	return rec, lostItems, lostLines, wantHits - rec.Hits
}

// journaledKeys counts the conflict journal's lines by key.
func journaledKeys(t *testing.T, stateDir string) map[string]int {
	t.Helper()
	keys := map[string]int{}
	f, err := os.Open(filepath.Join(stateDir, "conflicts.jsonl"))
	if os.IsNotExist(err) {
		return keys
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		var e struct{ Key string }
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("journal line %q: %v", sc.Text(), err)
		}
		keys[e.Key]++
	}
	return keys
}

// Python workers in lockstep appending to a list, adding keyed elements and bumping a counter lose
// nothing through a mount with a counter rule; without the rule the lists still merge and the
// counter conflicts, journaled. On a plain directory the same workers lose most of it (the control:
// the test can fail).
func TestListsAndCountersThroughTheMount(t *testing.T) {
	requirePython(t)
	h := newHarness(t)

	control := h.path("control")
	_, items, lines, hits := runLists(t, h, control, control)
	t.Logf("plain directory: lost %d items, %d lines, %d of the counter", items, lines, hits)
	if items+lines+hits == 0 {
		t.Errorf("the control lost nothing: the workers do not collide")
	}

	rules := filepath.Join(h.dir, "rules.json")
	if err := os.WriteFile(rules, []byte(`{"rules":[{"records":"*.json","path":"/hits","strategy":"counter"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, withRule := range []bool{true, false} {
		name := map[bool]string{true: "counter rule", false: "no rules"}[withRule]
		t.Run(name, func(t *testing.T) {
			backing, mnt := h.path("backing-"+fmt.Sprint(withRule)), h.path("mnt-"+fmt.Sprint(withRule))
			var flags []string
			if withRule {
				flags = append(flags, "--rules", rules)
			}
			d, err := h.mountUnderTest(backing, mnt, flags...)
			h.needMount(t, err)
			rec, items, lines, hits := runLists(t, h, mnt, backing)
			h.waitNoOpenRecords(t, d)
			keys := journaledKeys(t, d.stateDir)
			t.Logf("%s: lost %d items, %d lines, %d of the counter (hits %d); journaled %v", name, items, lines, hits, rec.Hits, keys)
			if items != 0 || lines != 0 {
				t.Errorf("lost %d items and %d lines", items, lines)
			}
			if withRule && hits != 0 {
				t.Errorf("with a counter rule the counter lost %d", hits)
			}
			if withRule && keys["/hits"] != 0 {
				t.Errorf("with a counter rule /hits was journaled %d times", keys["/hits"])
			}
			if !withRule && keys["/hits"] == 0 {
				t.Errorf("without a rule the counter's concurrent changes were not journaled as conflicts")
			}
			for k, n := range keys {
				if k != "/hits" {
					t.Errorf("%d conflicts journaled at %q: concurrent list additions must merge", n, k)
				}
			}
			if withRule {
				out, _, err := h.run(t, clientTimeout, bins.mergefs, "status", "--state-dir", d.stateDir)
				if err != nil || !strings.Contains(string(out), "counter=") {
					t.Errorf("mergefs status shows no counter merges (%v):\n%s", err, out)
				}
			}
		})
	}
}
