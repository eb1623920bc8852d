package mount_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	// fdLeakMargin is how many more descriptors than right after mounting a
	// daemon may hold once its clients are gone before we call it a leak.
	fdLeakMargin = 64
)

// skipOrFatal skips a test that cannot run here, except in CI
// (MERGEFS_REQUIRE_FUSE=1) where not running is a failure.
func skipOrFatal(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("MERGEFS_REQUIRE_FUSE") == "1" {
		t.Fatalf("MERGEFS_REQUIRE_FUSE=1 but: "+format, args...)
	}
	t.Skipf(format, args...)
}

// errNoFUSE marks a mount that cannot be attempted on this machine.
var errNoFUSE = errors.New("cannot mount FUSE here")

func fuseUnavailable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: mounting needs root (DirectMount, no fusermount)", errNoFUSE)
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", errNoFUSE, err)
	}
	f.Close()
	return nil
}

// needMount stops a test whose mount failed: a skip when FUSE is missing
// (a failure in CI), a failure otherwise; and a test whose mounts the harness
// already aborted after a hang.
func (h *harness) needMount(t *testing.T, err error) {
	t.Helper()
	if h.wasAborted() {
		t.Fatal("the harness aborted this test's FUSE connections after an earlier hang")
	}
	if errors.Is(err, errNoFUSE) {
		skipOrFatal(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func requirePython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		skipOrFatal(t, "python3 not found: %v", err)
	}
}

// harness owns one test's work directory, daemons and subprocesses, and
// guarantees that every mount it made is gone when the test ends.
type harness struct {
	t       *testing.T
	dir     string
	mu      sync.Mutex
	daemons []*daemon
	// aborted is set once the harness aborted FUSE connections because a
	// client hung; the daemons' exits after that are not judged.
	aborted bool
	// abortHooks free other FUSE mounts the test depends on (the Gluster
	// clients under mergefs) when a client hangs.
	abortHooks []func()
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	requirePython(t)
	// The work directory follows mountinfo.ClearStale's convention, so that
	// a later run clears what a crashed one left.
	dir, err := os.MkdirTemp("", mountinfo.WorkdirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	// A later run clears mounts under this directory only once this process is gone.
	if err := os.WriteFile(filepath.Join(dir, mountinfo.OwnerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir}
	// Registered first, so it runs after every daemon's cleanup.
	t.Cleanup(h.removeWorkdir)
	return h
}

// path returns a directory (created) under the test's work directory.
func (h *harness) path(elem ...string) string {
	p := filepath.Join(append([]string{h.dir}, elem...)...)
	if err := os.MkdirAll(p, 0o755); err != nil {
		h.t.Errorf("creating %s: %v", p, err)
	}
	return p
}

func (h *harness) removeWorkdir() {
	mounts, err := mountinfo.Read()
	if err != nil {
		h.t.Errorf("reading mountinfo: %v", err)
		return
	}
	if left := mountinfo.Under(mounts, h.dir); len(left) > 0 {
		// Never RemoveAll through a live mount: it would recurse into it.
		h.t.Errorf("mount still present at %s (%s) after cleanup; work dir %s kept", left[0].Mountpoint, left[0].FSType, h.dir)
		return
	}
	if err := os.RemoveAll(h.dir); err != nil {
		h.t.Errorf("removing work dir: %v", err)
	}
}

// daemon is one running filesystem process (mergefs or the reference loopback).
type daemon struct {
	kind       string
	backing    string
	mountpoint string
	cmd        *exec.Cmd
	log        *syncBuffer
	exited     chan struct{}
	waitErr    error
	fdBaseline int
	stateDir   string
	mountID    int // in /proc/self/mountinfo
	// stopSignal is what stop sends (SIGTERM unless set).
	stopSignal syscall.Signal
	// signalledAtReady is set when the harness signalled the daemon as it
	// said ready (daemonSpec.signalAtReady): its exit is expected, and must
	// be 0.
	signalledAtReady bool
	stopOnce         sync.Once
	// killed is set when the test killed the daemon on purpose.
	killed bool
}

type daemonSpec struct {
	kind   string // "mergefs" or "loopback"
	fstype string
	argv   []string
	ready  string
	// keepStale leaves a mount already at the mountpoint alone.
	keepStale bool
	// signalAtReady, if set, is sent by the goroutine that reads the daemon's
	// stderr the moment it sees the ready line; start then returns at once,
	// without checking the mount, which may already be going away.
	signalAtReady syscall.Signal
	// wrap is a command the daemon is run under (like prlimit ... --), which must exec it.
	wrap []string
}

// mountMergefs starts `mergefs mount` on backing at mountpoint with a private
// state directory, and waits until it says it is ready and the mount is
// visible. The daemon is stopped when the harness's test ends.
func (h *harness) mountMergefs(backing, mountpoint string, flags ...string) (*daemon, error) {
	return h.startMergefs(backing, mountpoint, true, flags...)
}

// startMergefs is mountMergefs with a choice: clearStale=false leaves a stale
// mount at mountpoint for mergefs itself to deal with. An empty backing
// mounts in place over mountpoint (`mergefs mount DIR`).
func (h *harness) startMergefs(backing, mountpoint string, clearStale bool, flags ...string) (*daemon, error) {
	return h.launchMergefs(daemonSpec{keepStale: !clearStale}, backing, mountpoint, flags...)
}

// launchMergefs starts `mergefs mount` as spec says; it fills in the rest of
// the spec.
func (h *harness) launchMergefs(spec daemonSpec, backing, mountpoint string, flags ...string) (*daemon, error) {
	if err := fuseUnavailable(); err != nil {
		return nil, err
	}
	if bins.mergefsErr != nil {
		return nil, fmt.Errorf("mergefs binary not available: %w", bins.mergefsErr)
	}
	state := h.path("state-" + filepath.Base(mountpoint))
	argv := append([]string{bins.mergefs, "mount", "--state-dir", state}, flags...)
	if backing != "" {
		argv = append(argv, backing)
	}
	argv = append(argv, mountpoint)
	spec.kind, spec.fstype, spec.argv, spec.ready = "mergefs", "fuse.mergefs", argv, "mergefs: ready"
	d, err := h.start(spec, backing, mountpoint)
	if d != nil {
		d.stateDir = state
	}
	return d, err
}

// mountUnderTest mounts mergefs, with the flags in MERGEFS_E2E_FLAGS too (scripts/test runs the
// workload tests again with --cache-reads=false), or with MERGEFS_E2E_TARGET=loopback the plain go-fuse
// loopback: a self-test of the harness, whose no-loss checks must then fail.
func (h *harness) mountUnderTest(backing, mountpoint string, flags ...string) (*daemon, error) {
	if os.Getenv("MERGEFS_E2E_TARGET") == "loopback" {
		h.t.Logf("MERGEFS_E2E_TARGET=loopback: the filesystem under test is go-fuse's loopback")
		return h.mountLoopback(backing, mountpoint)
	}
	if extra := strings.Fields(os.Getenv("MERGEFS_E2E_FLAGS")); len(extra) > 0 {
		if slices.Contains(flags, "--multi-host=on") && slices.Contains(extra, "--cache-reads") {
			// --cache-reads is refused with --multi-host: such a mount is tested as it is.
			h.t.Logf("MERGEFS_E2E_FLAGS not added to a --multi-host=on mount")
		} else {
			h.t.Logf("MERGEFS_E2E_FLAGS: mergefs mounted with %s", strings.Join(extra, " "))
			flags = append(flags, extra...)
		}
	}
	return h.mountMergefs(backing, mountpoint, flags...)
}

// mountLoopback mounts internal/loopback: go-fuse's loopback with mergefs's
// mount options.
func (h *harness) mountLoopback(backing, mountpoint string) (*daemon, error) {
	if err := fuseUnavailable(); err != nil {
		return nil, err
	}
	if bins.loopbackErr != nil {
		return nil, fmt.Errorf("loopback binary not available: %w", bins.loopbackErr)
	}
	argv := []string{bins.loopback, backing, mountpoint}
	return h.start(daemonSpec{kind: "loopback", fstype: "fuse.loopback", argv: argv, ready: "loopback: ready"}, backing, mountpoint)
}

func (h *harness) start(spec daemonSpec, backing, mountpoint string) (*daemon, error) {
	t := h.t
	if m, ok := mountAt(mountpoint); ok && !spec.keepStale {
		t.Logf("stale %s mount at %s: clearing it", m.FSType, mountpoint)
		detach(t, m)
	}
	argv := append(append([]string(nil), spec.wrap...), spec.argv...)
	d := &daemon{
		kind: spec.kind, backing: backing, mountpoint: mountpoint,
		cmd: exec.Command(argv[0], argv[1:]...), log: &syncBuffer{}, exited: make(chan struct{}),
		signalledAtReady: spec.signalAtReady != 0,
	}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	d.cmd.Stdout = d.log
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.kind, err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			d.log.WriteString(line + "\n")
			if !signalled && strings.Contains(line, spec.ready) {
				signalled = true
				if spec.signalAtReady != 0 {
					d.cmd.Process.Signal(spec.signalAtReady)
				}
				close(ready)
			}
		}
		io.Copy(io.Discard, stderr)
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()

	h.mu.Lock()
	h.daemons = append(h.daemons, d)
	h.mu.Unlock()
	t.Cleanup(func() { h.stop(d) })

	select {
	case <-ready:
	case <-d.exited:
		return nil, fmt.Errorf("%s exited before it was ready (%v):\n%s", spec.kind, d.waitErr, d.log.tail(40))
	case <-time.After(readyTimeout):
		return nil, fmt.Errorf("%s not ready after %v:\n%s", spec.kind, readyTimeout, d.log.tail(40))
	}
	if spec.signalAtReady != 0 {
		return d, nil
	}
	m, ok := mountAt(mountpoint)
	// With keepStale the entry could still be the stale mount (mount ids are
	// reused, so they cannot tell); the caller checks with a client.
	if !ok {
		return nil, fmt.Errorf("%s said ready but it has not mounted %s:\n%s", spec.kind, mountpoint, d.log.tail(40))
	}
	if m.FSType != spec.fstype {
		return nil, fmt.Errorf("%s mounted with type %q, want %q", spec.kind, m.FSType, spec.fstype)
	}
	d.mountID = m.ID
	d.fdBaseline = countFDs(d.cmd.Process.Pid)
	return d, nil
}

// stop ends a daemon the way an operator would (SIGTERM), and escalates to
// aborting the FUSE connection and a lazy unmount when it hangs, so that a
// broken filesystem fails the test instead of wedging CI.
func (h *harness) stop(d *daemon) {
	d.stopOnce.Do(func() { h.stopDaemon(d) })
}

// kill SIGKILLs a daemon, as a crash would, and waits for it to die; its
// mount stays behind (ENOTCONN).
func (h *harness) kill(d *daemon) {
	d.killed = true
	select {
	case <-d.exited: // reaped: its id may name another process by now
	default:
		syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		h.t.Errorf("%s daemon survives SIGKILL", d.kind)
	}
}

func (h *harness) stopDaemon(d *daemon) {
	t := h.t
	pid := d.cmd.Process.Pid
	select {
	case <-d.exited:
		if d.signalledAtReady {
			if d.waitErr != nil && !h.wasAborted() {
				t.Errorf("%s daemon signalled at its ready line: %v (want exit 0):\n%s", d.kind, d.waitErr, d.log.tail(40))
			}
			break
		}
		if h.wasAborted() || d.killed {
			break
		}
		t.Errorf("%s daemon exited on its own before the test ended (%v):\n%s", d.kind, d.waitErr, d.log.tail(40))
	default:
		if n := countFDs(pid); n >= 0 && d.fdBaseline >= 0 && !h.wasAborted() {
			t.Logf("%s daemon descriptors: %d after mount, %d at the end", d.kind, d.fdBaseline, n)
			if n > d.fdBaseline+fdLeakMargin {
				t.Errorf("%s daemon holds %d descriptors at the end vs %d after mount: leak?", d.kind, n, d.fdBaseline)
			}
		}
		sig := d.stopSignal
		if sig == 0 {
			sig = syscall.SIGTERM
		}
		d.cmd.Process.Signal(sig)
		select {
		case <-d.exited:
			if d.waitErr != nil && !h.wasAborted() {
				t.Errorf("%s daemon after %v: %v (want exit 0):\n%s", d.kind, sig, d.waitErr, d.log.tail(40))
			}
		case <-time.After(stopTimeout):
			t.Errorf("%s daemon still running %v after SIGTERM: dumping its goroutines, aborting the FUSE connection", d.kind, stopTimeout)
			// SIGQUIT makes a Go program print every goroutine's stack and exit: the hang's evidence.
			syscall.Kill(pid, syscall.SIGQUIT)
			select {
			case <-d.exited:
			case <-time.After(5 * time.Second):
			}
			t.Logf("%s daemon goroutines at the hang:\n%s", d.kind, d.log.tail(400))
			if m, ok := mountAt(d.mountpoint); ok {
				abortConnection(t, m)
			}
			syscall.Kill(-pid, syscall.SIGKILL)
			select {
			case <-d.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("%s daemon pid %d survives SIGKILL", d.kind, pid)
			}
		}
	}
	// A daemon signalled at its ready line has no recorded mount id; its
	// mountpoint is its own, so whatever is mounted there is its mount.
	if m, ok := mountAt(d.mountpoint); ok && (m.ID == d.mountID || d.signalledAtReady) {
		if !h.wasAborted() && !d.killed {
			t.Errorf("%s mount left behind at %s after the daemon exited", d.kind, d.mountpoint)
		}
		detach(t, m)
	}
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:", "panic in FS handler"} {
		if strings.Contains(d.log.String(), bad) {
			t.Errorf("%s daemon log contains %q:\n%s", d.kind, bad, d.log.tail(80))
		}
	}
	if t.Failed() {
		t.Logf("%s daemon log (tail):\n%s", d.kind, d.log.tail(30))
	}
}

// abortAll frees processes stuck on any of this test's mounts.
func (h *harness) abortAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.aborted = true
	for _, d := range h.daemons {
		if m, ok := mountAt(d.mountpoint); ok {
			abortConnection(h.t, m)
		}
	}
	for _, hook := range h.abortHooks {
		hook()
	}
}

// onAbort adds a hook that abortAll runs after aborting the daemons' mounts.
func (h *harness) onAbort(hook func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.abortHooks = append(h.abortHooks, hook)
}

func (h *harness) wasAborted() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.aborted
}

// run executes a client process with a deadline. A client that hangs (on a
// wedged mount) gets its FUSE connections aborted so the test can fail.
func (h *harness) run(t *testing.T, timeout time.Duration, argv ...string) (stdout, stderr []byte, err error) {
	return h.runEnv(t, timeout, nil, argv...)
}

// runEnv is run with variables added to the client's environment.
func (h *harness) runEnv(t *testing.T, timeout time.Duration, env []string, argv ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		t.Errorf("%q timed out after %v; killing it and aborting FUSE connections", strings.Join(argv, " "), timeout)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		h.abortAll()
		return nil
	}
	cmd.WaitDelay = 15 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.Bytes(), errOut.Bytes(), err
}

// python runs a worker script from mount_test/workers and fails the test if it
// does not exit 0.
func (h *harness) python(t *testing.T, timeout time.Duration, script string, args ...string) []byte {
	t.Helper()
	argv := append([]string{bins.python, filepath.Join(bins.workers, script)}, args...)
	out, errOut, err := h.run(t, timeout, argv...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s", script, strings.Join(args, " "), err, tailLines(string(errOut), 30))
	}
	return out
}

// statusRow is a counter row of `mergefs status`: "  open records   0  ...".
var statusRow = regexp.MustCompile(`(?m)^  ([a-z][a-z ]*[a-z])\s+(\d+)  `)

// status reads a mergefs daemon's counters (commits, open records, ...)
// through `mergefs status` on its state directory, as an operator would.
func (h *harness) status(t *testing.T, d *daemon) map[string]int {
	t.Helper()
	out, errOut, err := h.run(t, clientTimeout, bins.mergefs, "status", "--state-dir", d.stateDir)
	if err != nil {
		t.Fatalf("mergefs status: %v: %s", err, errOut)
	}
	counters := map[string]int{}
	for _, m := range statusRow.FindAllStringSubmatch(string(out), -1) {
		counters[m[1]], _ = strconv.Atoi(m[2])
	}
	if _, ok := counters["open records"]; !ok {
		t.Fatalf("no open records row in mergefs status:\n%s", out)
	}
	return counters
}

// waitNoOpenRecords waits until a mergefs daemon has no record handle open,
// that is until the kernel has delivered the RELEASE of every handle, and
// returns its counters then.
func (h *harness) waitNoOpenRecords(t *testing.T, d *daemon) map[string]int {
	t.Helper()
	return h.waitOpenRecords(t, d, 0)
}

// waitOpenRecords waits until a mergefs daemon has at most n record handles open.
func (h *harness) waitOpenRecords(t *testing.T, d *daemon, n int) map[string]int {
	t.Helper()
	deadline := time.Now().Add(clientTimeout)
	for {
		counters := h.status(t, d)
		open := counters["open records"]
		if open <= n {
			return counters
		}
		if time.Now().After(deadline) {
			t.Fatalf("mergefs still has %d record handles open after %v, want at most %d", open, clientTimeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- /proc/self/mountinfo ---------------------------------------------------------------------

// mountAt returns the topmost mount at mountpoint.
func mountAt(mountpoint string) (mountinfo.Mount, bool) {
	m, ok, err := mountinfo.At(mountpoint)
	return m, ok && err == nil
}

// abortConnection aborts a FUSE connection, which frees every process
// blocked on it.
func abortConnection(t *testing.T, m mountinfo.Mount) {
	if !m.IsFUSE() {
		return
	}
	if err := mountinfo.Abort(m); err != nil {
		t.Log(err)
	}
}

// detach aborts a mount's FUSE connection and unmounts it lazily.
func detach(t *testing.T, m mountinfo.Mount) {
	if err := mountinfo.AbortAndDetach(m); err != nil {
		t.Log(err)
	}
}

func countFDs(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(entries)
}

// --- small helpers ------------------------------------------------------------------------------

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) tail(n int) string { return tailLines(b.String(), n) }

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
