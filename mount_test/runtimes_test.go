package mount_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The runtime tests (issue 10): real clients of today's API servers, each in
// processes of its own, whose read and write of one request run on different
// OS threads (asyncio with aiofiles, thread pools, Node's libuv pool, Go's
// scheduler) or whose one thread interleaves requests; editors and tools that
// read in one process and write in another (vim's write, a cp round trip); a
// slow request. Each task owns one field of the shared records and increments
// it; mergefs must lose none of the increments, where a plain directory loses.

// groupTimeout bounds one run of a worker group.
const groupTimeout = 2 * time.Minute

// Worker programs.
const (
	rtPython       = "python"        // workers/runtimes.py on the python3 in PATH (bins.python)
	rtSystemPython = "system-python" // workers/runtimes.py on Debian's /usr/bin/python3 (python3-aiofiles)
	rtNode         = "node"          // workers/runtimes.js on Debian's nodejs
	rtGo           = "go"            // mount_test/internal/goworker
)

// rtWorker is a set of identical worker processes of one scenario.
type rtWorker struct {
	kind    string
	pattern string
	procs   int
	tasks   int // per process
	extra   []string
	// hold: each process's single request waits between its read and its
	// write until every other process has finished.
	hold bool
	// iterations and mode override the scenario's.
	iterations int
	mode       string
}

// rtScenario is one load: its workers run together on records r0.json ...
type rtScenario struct {
	name       string
	mode       string // lockstep or free (the workers' default)
	records    int
	iterations int
	size       int
	workers    []rtWorker
	// volatile fields change with every write and are not checked ("grow").
	volatile []string
	// collides: on a plain directory this scenario must lose (lockstep, or a
	// slow request that certainly overlaps).
	collides bool
}

func (sc rtScenario) fullName() string { return sc.name + "/" + sc.mode }

// fields lists the counter of every task: process k's task j owns "p<k>t<j>".
func (sc rtScenario) fields() []string {
	var out []string
	k := 0
	for _, w := range sc.workers {
		for range w.procs {
			for j := range w.tasks {
				out = append(out, fmt.Sprintf("p%dt%d", k, j))
			}
			k++
		}
	}
	return out
}

// rtOutcome is one scenario run on one target, checked from the backing files.
type rtOutcome struct {
	commits, lost, extra      int
	torn, unreadable, oserror int
	badReads, readsChecked    int
	fstatMismatch             int // reported, not judged: see workers/runtimes.js
	errors, damaged           []string
	samples                   []string
	// daemon counters over the run (mergefs only; -1 unknown)
	conflicts, ambiguous, fallbacks int
	elapsed                         time.Duration
}

func (o rtOutcome) String() string {
	s := fmt.Sprintf("lost %d/%d", o.lost, o.commits)
	if o.extra > 0 {
		s += fmt.Sprintf(" extra %d", o.extra)
	}
	if o.torn+o.unreadable > 0 {
		s += fmt.Sprintf(" torn %d", o.torn)
		if o.unreadable > 0 {
			s += fmt.Sprintf(" (%d gave up)", o.unreadable)
		}
	}
	if o.readsChecked > 0 {
		s += fmt.Sprintf(" bad-reads %d/%d", o.badReads, o.readsChecked)
	}
	if o.fstatMismatch > 0 {
		s += fmt.Sprintf(" (fstat-sized %d)", o.fstatMismatch)
	}
	if len(o.damaged) > 0 {
		s += fmt.Sprintf(" damaged %d", len(o.damaged))
	}
	if o.oserror > 0 {
		s += fmt.Sprintf(" oserr %d", o.oserror)
	}
	if len(o.errors) > 0 {
		s += fmt.Sprintf(" errors %d", len(o.errors))
	}
	// Every task changes only its own field: a conflict means a commit was
	// merged from another base than the version its writer read. Shown, not
	// judged: a base that differs from the read only in the writer's own
	// field (a tie) loses nothing under writer-wins.
	if o.conflicts > 0 {
		s += fmt.Sprintf(" conflicts %d", o.conflicts)
	}
	return s
}

// broken lists what an outcome shows against mergefs's promises.
func (o rtOutcome) broken() []string {
	var out []string
	if o.lost != 0 || o.extra != 0 {
		out = append(out, fmt.Sprintf("lost %d and invented %d of %d increments", o.lost, o.extra, o.commits))
	}
	for _, d := range o.damaged {
		out = append(out, "damaged a record: "+d)
	}
	if o.torn != 0 || o.unreadable != 0 {
		out = append(out, fmt.Sprintf("workers saw %d torn reads (%d gave up)", o.torn, o.unreadable))
	}
	if o.badReads != 0 {
		out = append(out, fmt.Sprintf("%d of %d checked reads were wrong", o.badReads, o.readsChecked))
	}
	if o.oserror != 0 {
		out = append(out, fmt.Sprintf("workers got %d OS errors (writer-wins must not fail a write)", o.oserror))
	}
	if len(o.errors) != 0 {
		out = append(out, fmt.Sprintf("%d worker errors: %s", len(o.errors), strings.Join(o.errors, "\n")))
	}
	if len(out) > 0 && len(o.samples) > 0 {
		out = append(out, "samples: "+strings.Join(o.samples, "; "))
	}
	return out
}

// --- worker programs ----------------------------------------------------------------------------

var goWorker struct {
	once sync.Once
	path string
	err  error
}

// workerArgv returns the command that runs a worker of kind, or skips (fails
// in CI) the test when that runtime is missing.
func workerArgv(t *testing.T, kind string) []string {
	t.Helper()
	switch kind {
	case rtPython:
		return []string{bins.python, filepath.Join(bins.workers, "runtimes.py")}
	case rtSystemPython:
		// python3-aiofiles is Debian's: it is for Debian's python.
		const py = "/usr/bin/python3"
		if out, err := exec.Command(py, "-c", "import aiofiles").CombinedOutput(); err != nil {
			skipOrFatal(t, "%s cannot import aiofiles (apt-get install python3-aiofiles): %v: %s", py, err, out)
		}
		return []string{py, filepath.Join(bins.workers, "runtimes.py")}
	case rtNode:
		node, err := exec.LookPath("node")
		if err != nil {
			skipOrFatal(t, "node not found (apt-get install nodejs): %v", err)
		}
		return []string{node, filepath.Join(bins.workers, "runtimes.js")}
	case rtGo:
		goWorker.once.Do(func() {
			root, err := moduleRoot()
			if err != nil {
				goWorker.err = err
				return
			}
			goWorker.path = filepath.Join(bins.dir, "goworker")
			goWorker.err = goBuild(root, goWorker.path, "./mount_test/internal/goworker")
		})
		if goWorker.err != nil {
			t.Fatalf("building the Go worker: %v", goWorker.err)
		}
		return []string{goWorker.path}
	}
	t.Fatalf("unknown worker kind %q", kind)
	return nil
}

// groupOf makes the scenario's processes for records in dir.
func groupOf(t *testing.T, sc rtScenario, dir, scratch string) []groupProc {
	t.Helper()
	var procs []groupProc
	k := 0
	for _, w := range sc.workers {
		argv := workerArgv(t, w.kind)
		iterations, mode := sc.iterations, sc.mode
		if w.iterations > 0 {
			iterations = w.iterations
		}
		if w.mode != "" {
			mode = w.mode
		}
		for range w.procs {
			a := append(slices.Clone(argv),
				"--dir", dir, "--pattern", w.pattern, "--mode", mode,
				"--proc", strconv.Itoa(k), "--tasks", strconv.Itoa(w.tasks),
				"--records", strconv.Itoa(sc.records), "--iterations", strconv.Itoa(iterations),
				"--seed", strconv.Itoa(k+1))
			if w.pattern == "cp" {
				a = append(a, "--scratch", scratch)
			}
			if w.hold {
				a = append(a, "--slow", strconv.Itoa(w.tasks))
			}
			a = append(a, w.extra...)
			procs = append(procs, groupProc{label: fmt.Sprintf("p%d (%s %s)", k, w.kind, w.pattern), argv: a, hold: w.hold})
			k++
		}
	}
	return procs
}

// --- records ------------------------------------------------------------------------------------

// rtRecord is record i as created: its counters at 0 and other fields that
// no worker touches, about size bytes.
func rtRecord(i int, fields []string, size int) []byte {
	rec := map[string]any{"id": i, "name": "Zoë Ünal", "score": 1.5, "tags": []string{"a", "b"}, "pad": ""}
	for _, f := range fields {
		rec[f] = 0
	}
	b, _ := json.Marshal(rec)
	rec["pad"] = strings.Repeat("x", max(0, size-len(b)))
	b, _ = json.Marshal(rec)
	return b
}

// runRuntimeScenario creates the records through dir, runs the workers on
// them and checks the backing files.
func runRuntimeScenario(t *testing.T, h *harness, sc rtScenario, dir, backing string, d *daemon) rtOutcome {
	t.Helper()
	fields := sc.fields()
	for i := range sc.records {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("r%d.json", i)), rtRecord(i, fields, sc.size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	initial := readRecords(t, backing, sc.records)
	before := daemonCounters(t, d)
	start := time.Now()
	results := h.runGroup(t, groupTimeout, groupOf(t, sc, dir, h.path("scratch", filepath.Base(filepath.Dir(dir)), filepath.Base(dir))))
	o := rtOutcome{elapsed: time.Since(start), conflicts: -1, ambiguous: -1, fallbacks: -1}
	if after := daemonCounters(t, d); before != nil && after != nil {
		o.conflicts = after[metricConflicts] - before[metricConflicts]
		o.ambiguous = after[metricAmbiguous] - before[metricAmbiguous]
		o.fallbacks = after[metricFallbacks] - before[metricFallbacks]
	}

	expected := map[string]map[string]int{}
	for _, r := range results {
		o.torn += r.Torn
		o.unreadable += r.Unreadable
		o.oserror += r.OSErrors
		o.badReads += r.BadReads
		o.readsChecked += r.ReadsChecked
		o.fstatMismatch += r.FstatMismatch
		o.errors = append(o.errors, r.Errors...)
		o.samples = append(o.samples, r.Samples...)
		if !r.reported || r.exit != nil {
			o.errors = append(o.errors, fmt.Sprintf("a worker exited with %v (results reported: %v)", r.exit, r.reported))
		}
		for rec, fs := range r.Commits {
			if expected[rec] == nil {
				expected[rec] = map[string]int{}
			}
			for f, n := range fs {
				expected[rec][f] += n
				o.commits += n
			}
		}
	}
	for rec := range expected {
		for f := range expected[rec] {
			if !slices.Contains(fields, f) {
				o.errors = append(o.errors, fmt.Sprintf("%s: workers report commits of %q, a field the scenario has not", rec, f))
			}
		}
	}
	for i := range sc.records {
		name := fmt.Sprintf("r%d.json", i)
		data, err := os.ReadFile(filepath.Join(backing, name))
		var rec record
		if err == nil {
			rec, err = decodeRecord(data)
		}
		if err != nil {
			o.damaged = append(o.damaged, fmt.Sprintf("%s: %v", name, err))
			for _, n := range expected[name] {
				o.lost += n
			}
			continue
		}
		for _, f := range fields {
			exp, got := expected[name][f], 0
			if n, ok := rec[f].(json.Number); ok {
				if v, err := n.Int64(); err == nil {
					got = int(v)
				}
			}
			o.lost += max(0, exp-got)
			o.extra += max(0, got-exp)
		}
		for _, k := range slices.Sorted(maps.Keys(rec)) {
			if slices.Contains(fields, k) || slices.Contains(sc.volatile, k) {
				continue
			}
			if want, ok := initial[i][k]; !ok {
				o.damaged = append(o.damaged, fmt.Sprintf("%s: field %q added", name, k))
			} else if !reflect.DeepEqual(want, rec[k]) {
				o.damaged = append(o.damaged, fmt.Sprintf("%s: field %q changed: %.60v -> %.60v", name, k, want, rec[k]))
			}
		}
		for k := range initial[i] {
			if _, ok := rec[k]; !ok {
				o.damaged = append(o.damaged, fmt.Sprintf("%s: field %q removed", name, k))
			}
		}
	}
	return o
}

// daemonCounters reads a mergefs daemon's counters from the metrics it
// serves on its state directory's socket (what `mergefs status` reads, without
// starting a process); nil for anything else.
func daemonCounters(t *testing.T, d *daemon) map[string]int {
	t.Helper()
	if d == nil || d.kind != "mergefs" {
		return nil
	}
	// One connection per call, closed after it: an idle connection would be
	// a descriptor the daemon still holds at the end (the harness counts
	// them) and a client its shutdown may wait for.
	client := &http.Client{Timeout: clientTimeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(d.stateDir, "mergefs.sock"))
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://mergefs/metrics")
	if err != nil {
		t.Fatalf("reading mergefs's metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("reading mergefs's metrics: %v %s", err, resp.Status)
	}
	counters := map[string]int{}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			counters[name] = int(v)
		}
	}
	for _, want := range []string{metricConflicts, metricAmbiguous, metricFallbacks} {
		if _, ok := counters[want]; !ok {
			// An older binary (MERGEFS_BINARY): counters unknown.
			t.Logf("mergefs's metrics have no %s", want)
			return nil
		}
	}
	return counters
}

// The counters daemonCounters reads (cmd/mergefs/metrics.go).
const (
	metricConflicts = "mergefs_conflicts_total"
	metricAmbiguous = "mergefs_ambiguous_bases_total"
	metricFallbacks = "mergefs_base_fallbacks_total"
)

// --- the scenarios ------------------------------------------------------------------------------

func rtIterations(mode string) int {
	switch {
	case testing.Short() && mode == "lockstep":
		return 4
	case testing.Short():
		return 8
	case mode == "lockstep":
		return 6
	}
	return 12
}

// runtimeScenarios are the loads of issue 10, each lockstep (collisions
// certain: every task reads, barrier, every task writes) and free-running.
func runtimeScenarios() []rtScenario {
	each := func(name string, workers ...rtWorker) []rtScenario {
		var out []rtScenario
		for _, mode := range []string{"lockstep", "free"} {
			out = append(out, rtScenario{name: name, mode: mode, records: 2, iterations: rtIterations(mode), size: 1 << 10,
				workers: workers, collides: mode == "lockstep"})
		}
		return out
	}
	var out []rtScenario
	out = append(out, each("python-aiofiles", rtWorker{kind: rtSystemPython, pattern: "aiofiles", procs: 3, tasks: 6})...)
	out = append(out, each("python-asyncio-await", rtWorker{kind: rtPython, pattern: "asleep", procs: 3, tasks: 6})...)
	out = append(out, each("python-threadpool", rtWorker{kind: rtPython, pattern: "pool", procs: 3, tasks: 4, extra: []string{"--pool", "6"}})...)
	out = append(out, each("node-promises", rtWorker{kind: rtNode, pattern: "promises", procs: 3, tasks: 4})...)
	out = append(out, each("node-sync-await", rtWorker{kind: rtNode, pattern: "sync", procs: 3, tasks: 4})...)
	out = append(out, each("go-writefile", rtWorker{kind: rtGo, pattern: "writefile", procs: 3, tasks: 6})...)
	out = append(out, each("go-rename", rtWorker{kind: rtGo, pattern: "rename", procs: 3, tasks: 6})...)
	out = append(out, each("python-interleaved", rtWorker{kind: rtPython, pattern: "interleave", procs: 3, tasks: 2})...)
	// Editors save one after the other: each opens the record for writing
	// after the others' saves changed it.
	out = append(out, each("vim-write", rtWorker{kind: rtPython, pattern: "vim", procs: 4, tasks: 1, extra: []string{"--stagger-ms", "20"}})...)
	out = append(out, each("cp-round-trip", rtWorker{kind: rtPython, pattern: "cp", procs: 4, tasks: 1})...)
	// Every runtime at once on the same records (lockstep only).
	out = append(out, each("all-together",
		rtWorker{kind: rtSystemPython, pattern: "aiofiles", procs: 1, tasks: 4},
		rtWorker{kind: rtPython, pattern: "pool", procs: 1, tasks: 3},
		rtWorker{kind: rtPython, pattern: "interleave", procs: 1, tasks: 2},
		rtWorker{kind: rtNode, pattern: "promises", procs: 1, tasks: 3},
		rtWorker{kind: rtGo, pattern: "rename", procs: 1, tasks: 3},
		rtWorker{kind: rtPython, pattern: "cp", procs: 1, tasks: 1},
	)[:1]...)

	// A slow request reads record 0, then waits while others commit hundreds
	// of versions of it, then writes.
	// In its own process it waits until the other processes are done; as one
	// coroutine of an asyncio server, until the server's other requests are.
	fast := rtIterations("free") * 5 // 2 processes x 2 goroutines: 240 versions
	out = append(out,
		rtScenario{name: "slow-request", mode: "free", records: 1, iterations: fast, size: 1 << 10, collides: true,
			workers: []rtWorker{
				{kind: rtPython, pattern: "rw", procs: 1, tasks: 1, hold: true},
				{kind: rtGo, pattern: "writefile", procs: 2, tasks: 2},
			}},
		rtScenario{name: "slow-request-same-process", mode: "free", records: 1, iterations: fast, size: 1 << 10, collides: true,
			workers: []rtWorker{
				{kind: rtPython, pattern: "asleep", procs: 1, tasks: 4, extra: []string{"--slow", "1"}},
				{kind: rtGo, pattern: "writefile", procs: 1, tasks: 2},
			}},
	)

	// Node's readFile while the same process holds an older descriptor on
	// the record, which another process rewrites (to another size) in
	// between: readFile returns the whole new record, the old descriptor its
	// snapshot.
	out = append(out, rtScenario{name: "node-readfile-older-descriptor", mode: "lockstep", records: 1, iterations: rtIterations("free"), size: 1 << 10,
		volatile: []string{"grow"}, collides: true,
		workers: []rtWorker{
			{kind: rtNode, pattern: "fstat", procs: 2, tasks: 3},
			{kind: rtPython, pattern: "rw", procs: 1, tasks: 1, extra: []string{"--grow"}},
		}})
	return out
}

// TestRuntimeWorkers runs each scenario on a plain directory (the control,
// which must lose where collisions are certain) and through mergefs (which
// must lose nothing), and logs the table of lost updates.
func TestRuntimeWorkers(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	d, mountErr := h.mountUnderTest(backing, mnt)

	type row struct{ name, control, mergefs string }
	var rows []row
	for i, sc := range runtimeScenarios() {
		r := row{name: sc.fullName(), control: "-", mergefs: "-"}
		t.Run(sc.fullName(), func(t *testing.T) {
			sub := fmt.Sprintf("s%02d", i)
			control := h.path("control", sub)
			c := runRuntimeScenario(t, h, sc, control, control, nil)
			r.control = c.String()
			t.Logf("control: %s (%.1fs)", c, c.elapsed.Seconds())
			if sc.collides && c.lost+c.extra+len(c.damaged)+c.torn+c.badReads == 0 {
				t.Errorf("control on a plain directory lost nothing: the scenario does not collide")
			}
			if len(c.errors) > 0 {
				t.Errorf("control: worker errors: %s", strings.Join(c.errors, "\n"))
			}

			h.needMount(t, mountErr)
			dir := filepath.Join(mnt, sub)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			m := runRuntimeScenario(t, h, sc, dir, filepath.Join(backing, sub), d)
			r.mergefs = m.String()
			t.Logf("mergefs: %s (%.1fs; ambiguous bases %d, base fallbacks %d)", m, m.elapsed.Seconds(), m.ambiguous, m.fallbacks)
			for _, b := range m.broken() {
				t.Errorf("through mergefs: %s", b)
			}
		})
		rows = append(rows, r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-40s | %-40s | %s\n", "scenario", "plain directory (control)", "mergefs")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-40s | %-40s | %s\n", r.name, r.control, r.mergefs)
	}
	t.Logf("lost updates per scenario (lost/successful writes):\n%s", b.String())
}
