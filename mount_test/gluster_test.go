package mount_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// glusterWorkerTimeout bounds one run of the Python driver on the Gluster
// bed (a lockstep run takes a few seconds).
const glusterWorkerTimeout = 90 * time.Second

// glusterScenarios are issue 11's load: 3 legacy workers on each of two
// hosts, each incrementing its own field of 2 shared records by rewriting
// the whole record: read it, then open(path, "w") and write it back (rw),
// or any of rmw.py's ways, renames onto the record included (mix); with
// readers polling the records through both hosts in one of them.
func glusterScenarios() []scenario {
	return []scenario{
		{pattern: "rw", mode: "lockstep", unit: "process", workers: 6, records: 2, iterations: 20, size: 1 << 10},
		{pattern: "rw", mode: "free", unit: "process", workers: 6, records: 2, iterations: 30, size: 1 << 10, pollers: 2},
		{pattern: "mix", mode: "free", unit: "process", workers: 6, records: 2, iterations: 20, size: 1 << 10},
	}
}

// TestGlusterTwoHosts (issue 11): two hosts share a GlusterFS volume
// (default volume options), each with its own mergefs daemon over its own
// Gluster client mount. Workers on both lose no update and get no error
// (no ESTALE, no EIO), both daemons commit, and each commit is a write that
// a worker saw succeed. A record created through one host is there for the
// other. The control, the same workers straight on the two Gluster mounts,
// loses updates. Lost updates are counted on the brick. See
// gluster_bed_test.go for the bed.
func TestGlusterTwoHosts(t *testing.T) {
	start := time.Now()
	// Registered first: runs last, after the bed is gone.
	t.Cleanup(func() { t.Logf("TestGlusterTwoHosts took %v in all", time.Since(start).Round(time.Millisecond)) })
	h := newHarness(t)
	bed := startGlusterBed(t, h, 2)
	volume := func(sub string) place {
		return place{dirs: []string{filepath.Join(bed.mounts[0], sub), filepath.Join(bed.mounts[1], sub)}, backing: filepath.Join(bed.brick, sub)}
	}

	// One mergefs daemon per host, each over its own Gluster client and
	// with its own state directory.
	hostA, hostB := h.path("hostA"), h.path("hostB")
	dA, errA := h.mountMergefs(bed.mounts[0], hostA)
	h.needMount(t, errA)
	dB, errB := h.mountMergefs(bed.mounts[1], hostB)
	h.needMount(t, errB)
	daemons := []*daemon{dA, dB}
	through := place{dirs: []string{hostA, hostB}, backing: bed.brick}

	for i, sc := range glusterScenarios() {
		if sc.pattern != "rw" {
			continue // the rewrite pattern is the field report's; enough to show the loss
		}
		t.Run("control/"+sc.name(), func(t *testing.T) {
			at := volume(fmt.Sprintf("c%02d", i))
			o := runGlusterScenario(t, h, sc, at.dirs[0], at)
			t.Logf("control, workers straight on the two Gluster mounts: %s (%.2fs)", o, o.sum.Elapsed)
			if sc.mode == "lockstep" && o.lost == 0 {
				t.Errorf("the control lost no update in lockstep (%s): the scenario does not collide, or the check cannot see a loss", o)
			}
		})
	}
	for i, sc := range glusterScenarios() {
		t.Run("mergefs/"+sc.name(), func(t *testing.T) {
			sub := fmt.Sprintf("s%02d", i)
			at := through.sub(sub)
			before := []map[string]int{commitCounters(t, dA), commitCounters(t, dB)}
			// The records exist on the volume before (mergefs gives them
			// their identity when it first meets them); creating records
			// through mergefs is mergefs/create's.
			o := runGlusterScenario(t, h, sc, volume(sub).dirs[0], at)
			t.Logf("two mergefs daemons over two Gluster clients: %s (%.2fs)", o, o.sum.Elapsed)
			if o.lost != 0 || o.extra != 0 {
				// Which counters, read again a while later: a loss that
				// stays is not a write still on its way to the brick.
				time.Sleep(2 * time.Second)
				t.Logf("counters that differ on the brick 2 s later: %s", counterDiff(t, sc, at.backing, o.sum))
			}
			checkMergefs(t, h, sc, at, o)
			if sc.pollers > 0 && o.sum.Pollers.Reads+o.sum.Pollers.OSErrors < 20 {
				t.Errorf("pollers tried only %d reads during the run: they check nothing", o.sum.Pollers.Reads+o.sum.Pollers.OSErrors)
			}
			// Progress of each daemon, from its counters.
			wrote := successesPerMount(sc, o.sum, len(daemons))
			for j, d := range daemons {
				after := commitCounters(t, d)
				delta := func(k string) int { return after[k] - before[j][k] }
				t.Logf("daemon %c: commits +%d, merges +%d, failed +%d, rejected +%d; its workers' successful writes %d",
					'A'+j, delta("commits"), delta("merges"), delta("failed"), delta("rejected"), wrote[j])
				if delta("commits") == 0 {
					t.Errorf("daemon %c committed nothing: starved", 'A'+j)
				}
				// Every write is a commit of a changed record, and each
				// commit is one write that succeeded.
				if delta("commits") != wrote[j] {
					t.Errorf("daemon %c made %d commits, but its workers saw %d writes succeed", 'A'+j, delta("commits"), wrote[j])
				}
				if delta("failed") != 0 || delta("rejected") != 0 {
					t.Errorf("daemon %c: %d commits failed and %d were rejected", 'A'+j, delta("failed"), delta("rejected"))
				}
			}
		})
	}

	// A record created through one host is there for the other.
	t.Run("mergefs/create", func(t *testing.T) {
		h.python(t, glusterWorkerTimeout, "fsops.py", "mkdir", filepath.Join(hostA, "new"))
		for j, host := range []string{hostA, hostB} {
			other := []string{hostB, hostA}[j]
			name := fmt.Sprintf("new%d.json", j)
			text := fmt.Sprintf(`{"created by": "host %c"}`, 'A'+j)
			var res tryWriteResult
			out := h.python(t, glusterWorkerTimeout, "fsops.py", "try-write", filepath.Join(host, "new", name), text, "--json")
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("fsops try-write: %v: %s", err, out)
			}
			if res.Step != nil {
				t.Errorf("creating %s through host %c: %s", name, 'A'+j, res)
				continue
			}
			got := h.python(t, glusterWorkerTimeout, "fsops.py", "cat", filepath.Join(other, "new", name))
			if !jsonEqual(got, []byte(text)) {
				t.Errorf("%s created through host %c reads %q through host %c", name, 'A'+j, got, 'A'+(1-j))
			}
			settleRecordFiles(t, filepath.Join(bed.brick, "new"), []string{name})
			if data, err := os.ReadFile(filepath.Join(bed.brick, "new", name)); err != nil || !jsonEqual(data, []byte(text)) {
				t.Errorf("%s created through host %c is %q on the brick (%v)", name, 'A'+j, data, err)
			}
		}
	})
}

// runGlusterScenario creates the records in initDir, runs the workers in
// at and checks the result on the brick, the volume's ground truth: a
// Gluster client may still hold a write (write-behind, flush-behind) when
// close has returned, so the brick is read once it has stopped changing.
func runGlusterScenario(t *testing.T, h *harness, sc scenario, initDir string, at place) outcome {
	t.Helper()
	init := sc
	init.iterations = 0
	h.python(t, glusterWorkerTimeout, "rmw.py", append(init.args([]string{initDir}), "--init")...)
	settleRecords(t, at.backing, sc.records)
	initial := readRecords(t, at.backing, sc.records)
	out := h.python(t, glusterWorkerTimeout, "rmw.py", sc.args(at.dirs)...)
	var sum rmwSummary
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("rmw.py summary: %v\n%s", err, out)
	}
	settleRecords(t, at.backing, sc.records)
	return verifyScenario(t, sc, at.backing, initial, sum)
}

// settleRecords waits until a scenario's records in dir stay the same for
// a while.
func settleRecords(t *testing.T, dir string, n int) {
	t.Helper()
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("r%d.json", i))
	}
	settleRecordFiles(t, dir, names)
}

func settleRecordFiles(t *testing.T, dir string, names []string) {
	t.Helper()
	const quiet, limit = 300 * time.Millisecond, 10 * time.Second
	read := func() []byte {
		var all bytes.Buffer
		for _, name := range names {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				fmt.Fprintf(&all, "%v\x00", err)
			}
			all.Write(data)
			all.WriteByte(0)
		}
		return all.Bytes()
	}
	deadline := time.Now().Add(limit)
	last := read()
	for {
		time.Sleep(quiet)
		now := read()
		if bytes.Equal(now, last) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the records in %s still change %v after the workers ended", dir, limit)
		}
		last = now
	}
}

// successesPerMount counts the successful writes of the workers on each
// mount: rmw.py puts worker i on directory i % mounts.
func successesPerMount(sc scenario, sum rmwSummary, mounts int) []int {
	out := make([]int, mounts)
	for _, byWorker := range sum.Expected {
		for w := range sc.workers {
			out[w%mounts] += byWorker[fmt.Sprintf("w%d", w)]
		}
	}
	return out
}

// commitCounters reads a mergefs daemon's commit counters from its status
// socket, as `mergefs status` does (without a process per read: a daemon
// built with -race takes a second to print its status).
func commitCounters(t *testing.T, d *daemon) map[string]int {
	t.Helper()
	socket := filepath.Join(d.stateDir, "mergefs.sock")
	client := &http.Client{Timeout: clientTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", socket)
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://mergefs/metrics")
	if err != nil {
		t.Fatalf("metrics of the daemon at %s: %v", d.mountpoint, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics of the daemon at %s: %v", d.mountpoint, err)
	}
	out := map[string]int{}
	for key, name := range map[string]string{
		"commits": "mergefs_commits_total", "merges": "mergefs_merges_total",
		"failed": "mergefs_failed_commits_total", "rejected": "mergefs_rejected_commits_total",
	} {
		f := families[name]
		if f == nil || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetCounter() == nil {
			t.Fatalf("the daemon at %s has no single counter %s", d.mountpoint, name)
		}
		out[key] = int(f.GetMetric()[0].GetCounter().GetValue())
	}
	return out
}

// counterDiff lists the counters in dir's records that differ from what the
// workers' successful writes add up to.
func counterDiff(t *testing.T, sc scenario, dir string, sum rmwSummary) string {
	t.Helper()
	var diffs []string
	for i := range sc.records {
		name := fmt.Sprintf("r%d.json", i)
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		rec, err := decodeRecord(data)
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		got, _ := counters(rec, sc)
		for _, w := range counterKeys(sc) {
			if exp := sum.Expected[name][w]; got[w] != exp {
				wid, _ := strconv.Atoi(w[1:])
				// rmw.py puts worker i on the directory i % 2: host A or B.
				diffs = append(diffs, fmt.Sprintf("%s %s (host %c): %d written, %d there", name, w, 'A'+wid%2, exp, got[w]))
			}
		}
	}
	if len(diffs) == 0 {
		return "none"
	}
	return strings.Join(diffs, "; ")
}
