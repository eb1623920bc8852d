package mount_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mergefs/mergefs/internal/bytesize"
)

// workerTimeout bounds one run of the Python driver.
const workerTimeout = 3 * time.Minute

// scenario is one legacy-worker load, run by workers/rmw.py.
type scenario struct {
	pattern    string // rw, rplus, replace, mkstemp, pathlib, fsync, mix
	mode       string // lockstep or free
	unit       string // process or thread
	workers    int
	records    int
	iterations int
	size       int // bytes per record
	nested     bool
	// sharedField makes every write also set "last", a genuine conflict.
	sharedField bool
	retry       bool
	pollers     int
}

func (s scenario) name() string {
	n := fmt.Sprintf("%s/%s/%s/w%d/%s", s.pattern, s.mode, s.unit, s.workers, bytesize.Label(s.size))
	if s.nested {
		n += "/nested"
	}
	if s.sharedField {
		n += "/conflicting"
	}
	return n
}

func (s scenario) args(dirs []string) []string {
	a := []string{
		"--dir", strings.Join(dirs, ","), "--pattern", s.pattern, "--mode", s.mode, "--unit", s.unit,
		"--workers", strconv.Itoa(s.workers), "--records", strconv.Itoa(s.records),
		"--iterations", strconv.Itoa(s.iterations), "--size", strconv.Itoa(s.size),
		"--pollers", strconv.Itoa(s.pollers),
	}
	if s.nested {
		a = append(a, "--nested")
	}
	if s.sharedField {
		a = append(a, "--shared-field")
	}
	if s.retry {
		a = append(a, "--retry")
	}
	return a
}

// rmwSummary is what workers/rmw.py prints.
type rmwSummary struct {
	Attempts      int                       `json:"attempts"`
	Commits       int                       `json:"commits"`
	Lost          int                       `json:"lost"`
	Extra         int                       `json:"extra"`
	TornReads     int                       `json:"torn_reads"`
	TornEmpty     int                       `json:"torn_empty"`
	Unreadable    int                       `json:"unreadable"`
	OSErrors      int                       `json:"oserrors"`
	Errnos        map[string]int            `json:"errnos"`
	Retries       int                       `json:"retries"`
	GaveUp        int                       `json:"gave_up"`
	BarrierBroken int                       `json:"barrier_broken"`
	WorkerErrors  []string                  `json:"worker_errors"`
	OSErrSamples  []string                  `json:"oserror_samples"`
	CorruptFinal  []string                  `json:"corrupt_final"`
	Expected      map[string]map[string]int `json:"expected"`
	Pollers       pollStats                 `json:"pollers"`
	Elapsed       float64                   `json:"elapsed"`
}

type pollStats struct {
	Reads    int      `json:"reads"`
	OK       int      `json:"ok"`
	Empty    int      `json:"empty"`
	Partial  int      `json:"partial"`
	Invalid  int      `json:"invalid"`
	OSErrors int      `json:"oserrors"`
	Samples  []string `json:"samples"`
}

func (p pollStats) bad() int { return p.Empty + p.Partial + p.Invalid }

// outcome is one scenario on one target, as checked from the backing directory.
type outcome struct {
	sum rmwSummary
	// lost and extra are computed by the test from the backing files, not
	// taken from the driver: increments missing, and increments that appear
	// without a successful write.
	lost, extra int
	// damaged lists records that are no longer valid, or whose other fields
	// changed.
	damaged []string
}

func (o outcome) String() string {
	s := fmt.Sprintf("lost %d/%d", o.lost, o.sum.Commits)
	if o.extra > 0 {
		s += fmt.Sprintf(" extra %d", o.extra)
	}
	if o.sum.TornReads > 0 {
		s += fmt.Sprintf(" torn %d", o.sum.TornReads)
	}
	if len(o.damaged) > 0 {
		s += fmt.Sprintf(" damaged %d", len(o.damaged))
	}
	if o.sum.OSErrors > 0 {
		s += fmt.Sprintf(" oserr %v", o.sum.Errnos)
	}
	if o.sum.Pollers.Reads > 0 {
		s += fmt.Sprintf(" poll-bad %d/%d", o.sum.Pollers.bad(), o.sum.Pollers.Reads)
	}
	return s
}

// place is where a scenario runs: the directories workers use, and the
// backing directory the test verifies.
type place struct {
	dirs    []string
	backing string
}

func (p place) sub(name string) place {
	q := place{backing: filepath.Join(p.backing, name)}
	for _, d := range p.dirs {
		q.dirs = append(q.dirs, filepath.Join(d, name))
	}
	return q
}

// runScenario creates the records through the first directory, snapshots them
// from the backing directory, runs the workers and checks the result there.
func runScenario(t *testing.T, h *harness, sc scenario, at place) outcome {
	t.Helper()
	initScenario(t, h, sc, at.dirs[0])
	initial := readRecords(t, at.backing, sc.records)
	sum := runWorkers(t, h, sc, at.dirs)
	return verifyScenario(t, sc, at.backing, initial, sum)
}

// initScenario creates the scenario's records in dir (through a client).
func initScenario(t *testing.T, h *harness, sc scenario, dir string) {
	t.Helper()
	init := sc
	init.iterations = 0
	h.python(t, workerTimeout, "rmw.py", append(init.args([]string{dir}), "--init")...)
}

func runWorkers(t *testing.T, h *harness, sc scenario, dirs []string) rmwSummary {
	t.Helper()
	out := h.python(t, workerTimeout, "rmw.py", sc.args(dirs)...)
	var sum rmwSummary
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("rmw.py summary: %v\n%s", err, out)
	}
	return sum
}

// verifyScenario checks the records in the backing directory against what
// the workers say they wrote and against the records as created.
func verifyScenario(t *testing.T, sc scenario, backingDir string, initial []record, sum rmwSummary) outcome {
	t.Helper()
	o := outcome{sum: sum}
	if len(o.sum.WorkerErrors) > 0 || o.sum.BarrierBroken > 0 {
		t.Errorf("worker errors (barrier broken %d): %s", o.sum.BarrierBroken, strings.Join(o.sum.WorkerErrors, "\n"))
	}
	if want := sc.workers * sc.iterations; o.sum.Attempts < want && o.sum.Unreadable == 0 {
		t.Errorf("only %d write attempts, want at least %d", o.sum.Attempts, want)
	}

	for i := range sc.records {
		name := fmt.Sprintf("r%d.json", i)
		data, err := os.ReadFile(filepath.Join(backingDir, name))
		if err != nil {
			o.damaged = append(o.damaged, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		rec, err := decodeRecord(data)
		if err != nil {
			o.damaged = append(o.damaged, fmt.Sprintf("%s: %v (len %d, head %.40q, tail %.40q)", name, err, len(data), data, data[max(0, len(data)-40):]))
		}
		for w := range o.sum.Expected[name] {
			if !slices.Contains(counterKeys(sc), w) {
				t.Errorf("%s: the driver expects a counter %q that the scenario does not have", name, w)
			}
		}
		got, stray := counters(rec, sc)
		for _, w := range counterKeys(sc) {
			exp, n := o.sum.Expected[name][w], got[w]
			o.lost += max(0, exp-n)
			o.extra += max(0, n-exp)
		}
		for _, k := range stray {
			o.damaged = append(o.damaged, fmt.Sprintf("%s: counters hold %q, which no worker writes", name, k))
		}
		if rec != nil && initial[i] != nil {
			if diff := otherFieldsDiffer(initial[i], rec, sc); diff != "" {
				o.damaged = append(o.damaged, fmt.Sprintf("%s: %s", name, diff))
			}
		}
	}
	return o
}

// checkMergefs holds a scenario run through mergefs to the promises.
func checkMergefs(t *testing.T, h *harness, sc scenario, at place, o outcome) {
	t.Helper()
	for _, broken := range brokenPromises(sc, o) {
		t.Errorf("through mergefs: %s", broken)
	}
	var names []string
	if err := json.Unmarshal(h.python(t, workerTimeout, "fsops.py", "ls", at.dirs[0]), &names); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range sc.records {
		want = append(want, fmt.Sprintf("r%d.json", i))
	}
	if !slices.Equal(names, want) {
		t.Errorf("directory through the mount holds %v, want only the records %v", names, want)
	}
}

// brokenPromises lists what an outcome shows against mergefs's promises:
// no update lost or invented, no record damaged, no torn read, no error.
func brokenPromises(sc scenario, o outcome) []string {
	var out []string
	if o.lost != 0 || o.extra != 0 {
		out = append(out, fmt.Sprintf("lost %d and invented %d increments (driver saw lost %d, extra %d)", o.lost, o.extra, o.sum.Lost, o.sum.Extra))
	}
	for _, d := range o.damaged {
		out = append(out, "damaged a record: "+d)
	}
	if o.sum.TornReads != 0 || o.sum.Unreadable != 0 {
		out = append(out, fmt.Sprintf("workers saw %d torn reads (%d empty), %d records unreadable", o.sum.TornReads, o.sum.TornEmpty, o.sum.Unreadable))
	}
	if !sc.retry && o.sum.OSErrors != 0 {
		out = append(out, fmt.Sprintf("workers got OS errors %v (writer-wins must not fail a write): %v", o.sum.Errnos, o.sum.OSErrSamples))
	}
	if p := o.sum.Pollers; p.bad() != 0 || p.OSErrors != 0 {
		out = append(out, fmt.Sprintf("pollers saw %d empty, %d partial, %d invalid, %d errors in %d reads: %v", p.Empty, p.Partial, p.Invalid, p.OSErrors, p.Reads, p.Samples))
	}
	return out
}

// checkControl makes sure a control run did what the scenario is there to
// show. Lockstep collides on every write, so a plain directory must lose.
func checkControl(t *testing.T, sc scenario, o outcome) {
	t.Helper()
	if sc.mode == "lockstep" && o.lost+o.extra+len(o.damaged)+o.sum.TornReads == 0 {
		t.Errorf("control on a plain directory lost nothing in lockstep: the scenario does not collide")
	}
}

type record = map[string]any

func decodeRecord(data []byte) (record, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var rec record
	if err := dec.Decode(&rec); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the record")
	}
	if rec == nil {
		return nil, fmt.Errorf("record is null")
	}
	return rec, nil
}

func readRecords(t *testing.T, dir string, n int) []record {
	t.Helper()
	recs := make([]record, n)
	for i := range n {
		data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("r%d.json", i)))
		if err != nil {
			t.Fatal(err)
		}
		if recs[i], err = decodeRecord(data); err != nil {
			t.Fatalf("initial r%d.json: %v", i, err)
		}
	}
	return recs
}

// counterKeys are the counters a scenario's records hold: workers/rmw.py
// gives worker i the field "w<i>".
func counterKeys(sc scenario) []string {
	keys := make([]string, sc.workers)
	for i := range keys {
		keys[i] = fmt.Sprintf("w%d", i)
	}
	return keys
}

// counters reads a record's counters: the fields counterKeys names, at the
// top level or under "counters" (nested). In nested mode, stray lists the
// other members of "counters"; at the top level, other fields are
// otherFieldsDiffer's to find. A counter that is not an integer is missing.
func counters(rec record, sc scenario) (got map[string]int, stray []string) {
	src := rec
	if sc.nested {
		src, _ = rec["counters"].(map[string]any)
		for k := range src {
			if !slices.Contains(counterKeys(sc), k) {
				stray = append(stray, k)
			}
		}
		slices.Sort(stray)
	}
	got = map[string]int{}
	for _, k := range counterKeys(sc) {
		if n, ok := src[k].(json.Number); ok {
			if i, err := n.Int64(); err == nil {
				got[k] = int(i)
			}
		}
	}
	return got, stray
}

// otherFieldsDiffer compares everything but the counters (and "last") with
// the record as created, by JSON value.
func otherFieldsDiffer(before, after record, sc scenario) string {
	strip := func(r record) record {
		c := record{}
		for k, v := range r {
			if k == "counters" || k == "last" || (!sc.nested && slices.Contains(counterKeys(sc), k)) {
				continue
			}
			c[k] = v
		}
		return c
	}
	b, a := strip(before), strip(after)
	if reflect.DeepEqual(b, a) {
		return ""
	}
	for k := range b {
		if !reflect.DeepEqual(b[k], a[k]) {
			return fmt.Sprintf("field %q changed: %.60v -> %.60v", k, b[k], a[k])
		}
	}
	var added []string
	for k := range a {
		if _, ok := b[k]; !ok {
			added = append(added, k)
		}
	}
	slices.Sort(added)
	return fmt.Sprintf("fields added: %q", added)
}

// --- the matrix ---------------------------------------------------------------------------------

var patterns = []string{"rw", "rplus", "replace", "mkstemp", "pathlib", "fsync", "mix"}

func iterations(mode string) int {
	switch {
	case testing.Short() && mode == "lockstep":
		return 8
	case testing.Short():
		return 20
	case mode == "lockstep":
		return 25
	}
	return 60
}

func patternScenarios() []scenario {
	var out []scenario
	for _, p := range patterns {
		for _, mode := range []string{"lockstep", "free"} {
			out = append(out, scenario{pattern: p, mode: mode, unit: "process", workers: 4, records: 2, iterations: iterations(mode), size: 1 << 10})
		}
	}
	return out
}

// dimensionScenarios vary one thing at a time around the pattern matrix:
// threads, worker count, nesting and record size.
func dimensionScenarios() []scenario {
	base := scenario{pattern: "mix", mode: "lockstep", unit: "process", workers: 4, records: 2, iterations: iterations("lockstep"), size: 1 << 10}
	with := func(f func(*scenario)) scenario { s := base; f(&s); return s }
	var out []scenario
	for _, p := range patterns {
		out = append(out, with(func(s *scenario) { s.pattern, s.unit = p, "thread" }))
	}
	out = append(out,
		with(func(s *scenario) { s.unit, s.mode, s.iterations = "thread", "free", iterations("free") }),
		with(func(s *scenario) { s.workers = 2 }),
		with(func(s *scenario) { s.workers, s.mode, s.iterations = 2, "free", iterations("free") }),
		with(func(s *scenario) { s.workers, s.records = 8, 1 }),
		with(func(s *scenario) { s.workers, s.mode, s.iterations = 8, "free", iterations("free") }),
		with(func(s *scenario) { s.workers, s.unit = 8, "thread" }),
		with(func(s *scenario) { s.nested = true }),
		with(func(s *scenario) { s.nested, s.mode, s.iterations = true, "free", iterations("free") }),
		with(func(s *scenario) { s.nested, s.pattern, s.unit = true, "rplus", "thread" }),
		// Writer-wins with a genuinely conflicting field: counters still complete.
		with(func(s *scenario) { s.sharedField = true }),
		with(func(s *scenario) { s.size = 16 << 10 }),
		with(func(s *scenario) { s.size, s.mode, s.iterations = 64<<10, "free", iterations("free")/2 }),
		with(func(s *scenario) { s.size, s.records, s.iterations = 256<<10, 1, iterations("lockstep")/2 }),
		with(func(s *scenario) { s.size, s.records, s.iterations = 1<<20, 1, max(3, iterations("lockstep")/4) }),
		with(func(s *scenario) {
			s.size, s.records, s.iterations, s.nested = 1<<20, 1, max(3, iterations("lockstep")/4), true
		}),
	)
	return out
}

type tableRow struct {
	scenario         string
	control, mergefs string
}

// runMatrix runs each scenario on a plain directory (the control) and then
// through one mergefs mount, each in its own subdirectory.
func runMatrix(t *testing.T, scenarios []scenario) {
	h := newHarness(t)
	control := place{dirs: []string{h.path("control")}, backing: h.path("control")}
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountUnderTest(backing, mnt)
	through := place{dirs: []string{mnt}, backing: backing}

	var rows []tableRow
	for i, sc := range scenarios {
		row := tableRow{scenario: sc.name(), control: "-", mergefs: "-"}
		t.Run(sc.name(), func(t *testing.T) {
			sub := fmt.Sprintf("s%02d", i)
			c := runScenario(t, h, sc, control.sub(sub))
			row.control = c.String()
			checkControl(t, sc, c)
			t.Logf("control: %s", c)

			h.needMount(t, mountErr)
			m := runScenario(t, h, sc, through.sub(sub))
			row.mergefs = m.String()
			t.Logf("mergefs: %s (%.2fs)", m, m.sum.Elapsed)
			checkMergefs(t, h, sc, through.sub(sub), m)
		})
		rows = append(rows, row)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-40s | %-42s | %s\n", "scenario", "plain directory (control)", "mergefs")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-40s | %-42s | %s\n", r.scenario, r.control, r.mergefs)
	}
	t.Logf("lost updates per scenario (lost/successful writes):\n%s", b.String())
}

func TestLegacyWorkerPatterns(t *testing.T) { runMatrix(t, patternScenarios()) }

func TestLegacyWorkerDimensions(t *testing.T) { runMatrix(t, dimensionScenarios()) }

// TestVerifyScenarioFindsInventedCounters checks the check itself, without a
// mount: a record that gained a counter no worker writes ("w7" with 4
// workers), at the top level or under "counters", is reported, as are a
// lost and an invented increment.
func TestVerifyScenarioFindsInventedCounters(t *testing.T) {
	for _, nested := range []bool{false, true} {
		sc := scenario{workers: 4, records: 1, iterations: 1, nested: nested}
		sum := rmwSummary{Attempts: 4, Commits: 4, Expected: map[string]map[string]int{"r0.json": {"w0": 1, "w1": 1, "w2": 1, "w3": 1}}}
		counters := func(extra string) string {
			return `{"w0": 1, "w1": 1, "w2": 1, "w3": 1` + extra + `}`
		}
		rec := func(extra string) []byte {
			if nested {
				return []byte(`{"id": 0, "counters": ` + counters(extra) + `}`)
			}
			return []byte(strings.TrimSuffix(counters(extra), "}") + `, "id": 0}`)
		}
		initial, _ := decodeRecord([]byte(strings.ReplaceAll(string(rec("")), `": 1`, `": 0`)))
		check := func(data []byte) outcome {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "r0.json"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			return verifyScenario(t, sc, dir, []record{initial}, sum)
		}
		if o := check(rec("")); o.lost != 0 || o.extra != 0 || len(o.damaged) != 0 {
			t.Errorf("nested=%v: the expected record gives %s %v", nested, o, o.damaged)
		}
		if o := check(rec(`, "w7": 1`)); len(o.damaged) == 0 {
			t.Errorf("nested=%v: an invented counter w7 passed: %s", nested, o)
		} else {
			t.Logf("nested=%v, invented w7: %v", nested, o.damaged)
		}
		if o := check([]byte(strings.Replace(string(rec("")), `"w2": 1`, `"w2": 0`, 1))); o.lost != 1 {
			t.Errorf("nested=%v: a lost increment gives %s", nested, o)
		}
		if o := check([]byte(strings.Replace(string(rec("")), `"w2": 1`, `"w2": 2`, 1))); o.extra != 1 {
			t.Errorf("nested=%v: an invented increment gives %s", nested, o)
		}
	}
}

// TestHarnessFailsOnLoopback checks that the harness can fail: one lockstep
// scenario on go-fuse's plain loopback (mounted as mergefs would be, through
// the same harness) must lose updates, and the checks that hold mergefs to
// its promises must say so.
func TestHarnessFailsOnLoopback(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, err := h.mountLoopback(backing, mnt)
	h.needMount(t, err)
	sc := scenario{pattern: "mix", mode: "lockstep", unit: "process", workers: 4, records: 2, iterations: iterations("lockstep"), size: 1 << 10}
	o := runScenario(t, h, sc, place{dirs: []string{mnt}, backing: backing})
	broken := brokenPromises(sc, o)
	t.Logf("loopback: %s; the checks report:\n%s", o, strings.Join(broken, "\n"))
	if o.lost == 0 {
		t.Errorf("the plain loopback lost no update in lockstep (%s): the scenario does not collide, or the harness cannot see a loss", o)
	}
	if len(broken) == 0 {
		t.Errorf("the checks found nothing wrong with the plain loopback")
	}
}
