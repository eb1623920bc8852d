package mount_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestTwoDaemonsSameBacking: two mergefs daemons serve one backing directory
// (two hosts on one network filesystem); workers split across both mounts
// lose nothing. The daemons check fences (--multi-host=on), as on a network
// filesystem, so that path runs here too (the GlusterFS test runs it where
// it matters).
func TestTwoDaemonsSameBacking(t *testing.T) {
	h := newHarness(t)
	control := place{dirs: []string{h.path("control")}, backing: h.path("control")}
	backing, mntA, mntB := h.path("backing"), h.path("mntA"), h.path("mntB")
	_, errA := h.mountUnderTest(backing, mntA, "--multi-host=on")
	_, errB := h.mountUnderTest(backing, mntB, "--multi-host=on")
	through := place{dirs: []string{mntA, mntB}, backing: backing}

	for i, sc := range []scenario{
		{pattern: "mix", mode: "lockstep", unit: "process", workers: 4, records: 2, iterations: iterations("lockstep"), size: 1 << 10},
		{pattern: "mix", mode: "free", unit: "process", workers: 4, records: 2, iterations: iterations("free"), size: 1 << 10},
		{pattern: "rw", mode: "lockstep", unit: "thread", workers: 4, records: 1, iterations: iterations("lockstep"), size: 16 << 10, nested: true},
	} {
		t.Run(sc.name(), func(t *testing.T) {
			sub := fmt.Sprintf("s%02d", i)
			c := runScenario(t, h, sc, control.sub(sub))
			checkControl(t, sc, c)
			t.Logf("control: %s", c)

			h.needMount(t, errA)
			h.needMount(t, errB)
			m := runScenario(t, h, sc, through.sub(sub))
			t.Logf("two mergefs daemons: %s (%.2fs)", m, m.sum.Elapsed)
			checkMergefs(t, h, sc, through.sub(sub), m)
		})
	}
}

// TestPollersDuringWriteStorm: readers polling records while workers rewrite
// them never see an empty, partial or invalid record through mergefs. On a
// plain directory they do (reported, not asserted: it is timing).
func TestPollersDuringWriteStorm(t *testing.T) {
	h := newHarness(t)
	control := place{dirs: []string{h.path("control")}, backing: h.path("control")}
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountUnderTest(backing, mnt)
	through := place{dirs: []string{mnt}, backing: backing}

	for i, sc := range []scenario{
		{pattern: "rw", mode: "free", unit: "process", workers: 4, records: 2, iterations: iterations("free"), size: 64 << 10, pollers: 2},
		{pattern: "mix", mode: "free", unit: "thread", workers: 4, records: 2, iterations: iterations("free"), size: 8 << 10, pollers: 2},
	} {
		t.Run(sc.name(), func(t *testing.T) {
			sub := fmt.Sprintf("s%02d", i)
			c := runScenario(t, h, sc, control.sub(sub))
			p := c.sum.Pollers
			t.Logf("control: pollers read %d times: %d empty, %d partial, %d invalid; e.g. %s", p.Reads, p.Empty, p.Partial, p.Invalid, strings.Join(p.Samples, "; "))

			h.needMount(t, mountErr)
			m := runScenario(t, h, sc, through.sub(sub))
			p = m.sum.Pollers
			t.Logf("mergefs: pollers read %d times: %d empty, %d partial, %d invalid, %d errors", p.Reads, p.Empty, p.Partial, p.Invalid, p.OSErrors)
			if p.Reads < 20 {
				t.Errorf("pollers read only %d times during the storm: the test checks nothing", p.Reads)
			}
			checkMergefs(t, h, sc, through.sub(sub), m)
		})
	}
}

// TestRejectPolicy: with --on-conflict reject, a writer whose change collides
// with another's (every write also sets "last" to the writer's name) gets EIO
// at close/fsync/rename, re-reads, retries and succeeds; nothing is lost.
func TestRejectPolicy(t *testing.T) {
	h := newHarness(t)
	control := place{dirs: []string{h.path("control")}, backing: h.path("control")}
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountUnderTest(backing, mnt, "--on-conflict", "reject")
	through := place{dirs: []string{mnt}, backing: backing}

	for i, sc := range []scenario{
		// Two lockstep workers: in the first round both add "last" with different
		// values, so the second commit is a conflict whatever the order.
		{pattern: "rw", mode: "lockstep", unit: "process", workers: 2, records: 1, iterations: iterations("lockstep")},
		{pattern: "mix", mode: "lockstep", unit: "process", workers: 4, records: 2, iterations: iterations("lockstep")},
		{pattern: "mix", mode: "free", unit: "thread", workers: 4, records: 2, iterations: iterations("free")},
	} {
		sc.size, sc.sharedField, sc.retry = 1<<10, true, true
		t.Run(sc.name(), func(t *testing.T) {
			sub := fmt.Sprintf("s%02d", i)
			c := runScenario(t, h, sc, control.sub(sub))
			checkControl(t, sc, c)
			t.Logf("control: %s", c)

			h.needMount(t, mountErr)
			m := runScenario(t, h, sc, through.sub(sub))
			t.Logf("mergefs reject: %s, retries %d, gave up %d", m, m.sum.Retries, m.sum.GaveUp)
			checkMergefs(t, h, sc, through.sub(sub), m)
			if m.sum.GaveUp != 0 {
				t.Errorf("%d writes gave up after %d retries", m.sum.GaveUp, 200)
			}
			for errno, n := range m.sum.Errnos {
				if errno != "5" {
					t.Errorf("%d OS errors with errno %s (only EIO is a rejection): %v", n, errno, m.sum.OSErrSamples)
				}
			}
			if sc.mode == "lockstep" && m.sum.Errnos["5"] == 0 {
				t.Errorf("no write was rejected with EIO although lockstep writers set \"last\" to different values")
			}
		})
	}
}
