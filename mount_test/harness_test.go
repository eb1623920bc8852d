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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// workdirPrefix matches what scripts/test clears after a crashed run.
	workdirPrefix   = "mergefs-e2e-"
	readyTimeout    = 30 * time.Second
	stopTimeout     = 30 * time.Second
	fuseConnections = "/sys/fs/fuse/connections"
	ownerFile       = "owner.pid"
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
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	requirePython(t)
	dir, err := os.MkdirTemp("", workdirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	// A later run clears mounts under this directory only once this process is gone.
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
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
	mounts, err := readMountinfo()
	if err != nil {
		h.t.Errorf("reading mountinfo: %v", err)
		return
	}
	for _, m := range mounts {
		if within(m.mountpoint, h.dir) {
			// Never RemoveAll through a live mount: it would recurse into it.
			h.t.Errorf("mount still present at %s (%s) after cleanup; work dir %s kept", m.mountpoint, m.fstype, h.dir)
			return
		}
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
	stopOnce   sync.Once
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
	spec := daemonSpec{kind: "mergefs", fstype: "fuse.mergefs", argv: argv, ready: "mergefs: ready", keepStale: !clearStale}
	d, err := h.start(spec, backing, mountpoint)
	if d != nil {
		d.stateDir = state
	}
	return d, err
}

// mountUnderTest mounts mergefs, or with MERGEFS_E2E_TARGET=loopback the plain
// go-fuse loopback: a self-test of the harness, whose no-loss checks must then
// fail.
func (h *harness) mountUnderTest(backing, mountpoint string, flags ...string) (*daemon, error) {
	if os.Getenv("MERGEFS_E2E_TARGET") == "loopback" {
		h.t.Logf("MERGEFS_E2E_TARGET=loopback: the filesystem under test is go-fuse's loopback")
		return h.mountLoopback(backing, mountpoint, "-atomic-o-trunc")
	}
	return h.mountMergefs(backing, mountpoint, flags...)
}

func (h *harness) mountLoopback(backing, mountpoint string, flags ...string) (*daemon, error) {
	if err := fuseUnavailable(); err != nil {
		return nil, err
	}
	if bins.loopbackErr != nil {
		return nil, fmt.Errorf("loopback binary not available: %w", bins.loopbackErr)
	}
	argv := append([]string{bins.loopback}, flags...)
	argv = append(argv, backing, mountpoint)
	return h.start(daemonSpec{kind: "loopback", fstype: "fuse.loopback", argv: argv, ready: "loopback: ready"}, backing, mountpoint)
}

func (h *harness) start(spec daemonSpec, backing, mountpoint string) (*daemon, error) {
	t := h.t
	if m, ok := mountAt(mountpoint); ok && !spec.keepStale {
		t.Logf("stale %s mount at %s: clearing it", m.fstype, mountpoint)
		detach(t, m)
	}
	d := &daemon{
		kind: spec.kind, backing: backing, mountpoint: mountpoint,
		cmd: exec.Command(spec.argv[0], spec.argv[1:]...), log: &syncBuffer{}, exited: make(chan struct{}),
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
	m, ok := mountAt(mountpoint)
	// With keepStale the entry could still be the stale mount (mount ids are
	// reused, so they cannot tell); the caller checks with a client.
	if !ok {
		return nil, fmt.Errorf("%s said ready but it has not mounted %s:\n%s", spec.kind, mountpoint, d.log.tail(40))
	}
	if m.fstype != spec.fstype {
		return nil, fmt.Errorf("%s mounted with type %q, want %q", spec.kind, m.fstype, spec.fstype)
	}
	d.mountID = m.id
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
	syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
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
	if m, ok := mountAt(d.mountpoint); ok && m.id == d.mountID {
		if !h.wasAborted() && !d.killed {
			t.Errorf("%s mount left behind at %s after the daemon exited", d.kind, d.mountpoint)
		}
		detach(t, m)
	}
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
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
}

func (h *harness) wasAborted() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.aborted
}

// run executes a client process with a deadline. A client that hangs (on a
// wedged mount) gets its FUSE connections aborted so the test can fail.
func (h *harness) run(t *testing.T, timeout time.Duration, argv ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
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
	argv := append([]string{"python3", filepath.Join(bins.workers, script)}, args...)
	out, errOut, err := h.run(t, timeout, argv...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s", script, strings.Join(args, " "), err, tailLines(string(errOut), 30))
	}
	return out
}

// --- /proc/self/mountinfo ---------------------------------------------------------------------

type mountEntry struct {
	id         int
	devMinor   int
	mountpoint string
	fstype     string
}

func readMountinfo() ([]mountEntry, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for line := range strings.Lines(string(data)) {
		pre, post, ok := strings.Cut(strings.TrimSpace(line), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 1 {
			continue
		}
		_, minor, _ := strings.Cut(f[2], ":")
		n, _ := strconv.Atoi(minor)
		id, _ := strconv.Atoi(f[0])
		out = append(out, mountEntry{id: id, devMinor: n, mountpoint: unescapeMountinfo(f[4]), fstype: g[0]})
	}
	return out, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, ...).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func mountAt(mountpoint string) (mountEntry, bool) {
	mounts, err := readMountinfo()
	if err != nil {
		return mountEntry{}, false
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].mountpoint == mountpoint {
			return mounts[i], true
		}
	}
	return mountEntry{}, false
}

func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// abortConnection aborts a FUSE connection through fusectl, which frees every
// process blocked on it; mounting fusectl first if nobody has.
func abortConnection(t *testing.T, m mountEntry) {
	if !strings.HasPrefix(m.fstype, "fuse") {
		return
	}
	if _, err := os.Stat(filepath.Join(fuseConnections, strconv.Itoa(m.devMinor))); err != nil {
		if err := syscall.Mount("none", fuseConnections, "fusectl", 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
			t.Logf("mounting fusectl: %v", err)
		}
	}
	abort := filepath.Join(fuseConnections, strconv.Itoa(m.devMinor), "abort")
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		t.Logf("aborting FUSE connection %d (%s): %v", m.devMinor, m.mountpoint, err)
	}
}

func detach(t *testing.T, m mountEntry) {
	abortConnection(t, m)
	if err := syscall.Unmount(m.mountpoint, syscall.MNT_DETACH); err != nil {
		t.Logf("umount -l %s: %v", m.mountpoint, err)
	}
}

// clearStaleMounts removes mounts that a crashed earlier run left under the
// temp directory; a test run must not start on top of them.
func clearStaleMounts(w io.Writer) {
	mounts, err := readMountinfo()
	if err != nil {
		return
	}
	tmp := filepath.Join(os.TempDir(), workdirPrefix)
	for i := len(mounts) - 1; i >= 0; i-- {
		m := mounts[i]
		if !strings.HasPrefix(m.mountpoint, tmp) || ownerAlive(m.mountpoint) {
			continue
		}
		fmt.Fprintf(w, "mount_test: clearing stale %s mount at %s\n", m.fstype, m.mountpoint)
		if strings.HasPrefix(m.fstype, "fuse") {
			os.WriteFile(filepath.Join(fuseConnections, strconv.Itoa(m.devMinor), "abort"), []byte("1"), 0)
		}
		syscall.Unmount(m.mountpoint, syscall.MNT_DETACH)
	}
}

// ownerAlive reports whether the test process that made the work directory
// holding mountpoint is still running (another `go test` may be using it).
func ownerAlive(mountpoint string) bool {
	rel, err := filepath.Rel(os.TempDir(), mountpoint)
	if err != nil {
		return false
	}
	workdir := filepath.Join(os.TempDir(), strings.Split(rel, string(filepath.Separator))[0])
	data, err := os.ReadFile(filepath.Join(workdir, ownerFile))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid == os.Getpid() {
		return false
	}
	return syscall.Kill(pid, 0) == nil
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
