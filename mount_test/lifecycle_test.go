package mount_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

// TestInPlaceMount: `mergefs mount DIR` serves DIR over itself, so workers
// keep their configured path; after SIGTERM the directory holds every
// update. The test process reads DIR only after the unmount.
func TestInPlaceMount(t *testing.T) {
	h := newHarness(t)
	dir := h.path("data")
	sc := scenario{pattern: "mix", mode: "lockstep", unit: "process", workers: 4, records: 2, iterations: iterations("lockstep"), size: 1 << 10}
	initScenario(t, h, sc, dir)
	initial := readRecords(t, dir, sc.records)

	d, err := h.startMergefs("", dir, true)
	h.needMount(t, err)
	sum := runWorkers(t, h, sc, []string{dir})
	h.stop(d)
	if t.Failed() {
		return
	}
	if _, mounted := mountAt(dir); mounted {
		t.Fatalf("%s still mounted after the daemon exited", dir)
	}
	o := verifyScenario(t, sc, dir, initial, sum)
	t.Logf("in place: %s", o)
	checkOutcome(t, sc, o)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	t.Logf("directory after unmount: %v", names)
}

// TestStaleMountCleared: after a daemon is killed (SIGKILL) its mount stays
// and answers ENOTCONN; a new `mergefs mount` on the same mountpoint detects
// and clears it, says so, and serves the records again.
func TestStaleMountCleared(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	first, err := h.mountMergefs(backing, mnt)
	h.needMount(t, err)
	record := sampleRecord(1, 1<<10)
	if r := h.clientWrite(t, filepath.Join(mnt, "r.json"), record); r.Close != nil {
		t.Fatalf("writing through the first daemon: %v", r)
	}
	h.kill(first)
	if _, ok := mountAt(mnt); !ok {
		t.Fatalf("no stale mount after SIGKILL of the daemon: the test cannot check anything")
	}
	_, stderr, err := h.run(t, clientTimeout, "python3", filepath.Join(bins.workers, "fsops.py"), "ls", mnt)
	if want := "[Errno 107]"; err == nil || !strings.Contains(string(stderr), want) {
		t.Errorf("listing the dead mount: %v, stderr %q; want %s (ENOTCONN)", err, tailLines(string(stderr), 1), want)
	}

	second, err := h.startMergefs(backing, mnt, false)
	h.needMount(t, err)
	if log := second.log.String(); !strings.Contains(strings.ToLower(log), "stale") {
		t.Errorf("the new daemon said nothing about the stale mount:\n%s", tailLines(log, 10))
	}
	var count int
	mounts, _ := mountinfo.Read()
	for _, m := range mounts {
		if m.Mountpoint == mnt {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d mounts at %s, want the new one only (the stale one cleared, not stacked)", count, mnt)
	}
	if got := h.clientRead(t, filepath.Join(mnt, "r.json")); !jsonEqual(got, record) {
		t.Errorf("record through the new daemon: %.60q", got)
	}
	var names []string
	if err := json.Unmarshal(h.python(t, clientTimeout, "fsops.py", "ls", mnt), &names); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, " ") != "r.json" {
		t.Errorf("through the new daemon the directory holds %v, want [r.json]", names)
	}
}

// checkOutcome holds an outcome read after unmounting to the same promises as
// checkMergefs, except for what needs the mount.
func checkOutcome(t *testing.T, sc scenario, o outcome) {
	t.Helper()
	if o.lost != 0 || o.extra != 0 {
		t.Errorf("lost %d and invented %d increments", o.lost, o.extra)
	}
	for _, d := range o.damaged {
		t.Errorf("damaged record: %s", d)
	}
	if o.sum.TornReads != 0 || o.sum.OSErrors != 0 {
		t.Errorf("workers saw %d torn reads and OS errors %v: %v", o.sum.TornReads, o.sum.Errnos, o.sum.OSErrSamples)
	}
}

// TestSignalRightAfterReady: the daemon says ready only once SIGTERM and
// SIGINT unmount it. The harness sends the signal from the goroutine that
// reads the daemon's stderr, the moment the ready line arrives; the daemon
// must still unmount, and exit 0.
func TestSignalRightAfterReady(t *testing.T) {
	h := newHarness(t)
	backing := h.path("backing")
	for i := range signalAtReadyRounds {
		sig := []syscall.Signal{syscall.SIGTERM, syscall.SIGINT}[i%2]
		mnt := h.path(fmt.Sprintf("mnt%d", i))
		d, err := h.launchMergefs(daemonSpec{signalAtReady: sig}, backing, mnt)
		h.needMount(t, err)
		select {
		case <-d.exited:
		case <-time.After(stopTimeout):
			t.Fatalf("round %d: mergefs still runs %v after %v at its ready line", i, stopTimeout, sig)
		}
		if d.waitErr != nil {
			t.Errorf("round %d: mergefs after %v at its ready line: %v (want exit 0):\n%s", i, sig, d.waitErr, d.log.tail(20))
		}
		if !strings.Contains(d.log.String(), "unmounting") {
			t.Errorf("round %d: mergefs did not log that it unmounts on %v:\n%s", i, sig, d.log.tail(20))
		}
		if m, ok := mountAt(mnt); ok {
			t.Errorf("round %d: a %s mount is left at %s after %v at the ready line", i, m.FSType, mnt, sig)
		}
		h.stop(d)
		if t.Failed() {
			return
		}
	}
}

// signalAtReadyRounds is how many daemons TestSignalRightAfterReady signals.
const signalAtReadyRounds = 8
