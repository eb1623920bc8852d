package scripts_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

// workDir makes a work directory for a test that mounts, named and owned as
// mountinfo.ClearStale expects, so that a later run clears what a crashed
// one left. It is removed at the end unless something is still mounted in it.
func workDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", mountinfo.WorkdirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, mountinfo.OwnerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mounts, err := mountinfo.Read()
		if err != nil {
			t.Error(err)
			return
		}
		if left := mountinfo.Under(mounts, dir); len(left) > 0 {
			t.Errorf("mount left at %s; %s kept", left[0].Mountpoint, dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// mkdirs creates directories.
func mkdirs(t *testing.T, mode os.FileMode, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// liveDaemon is a `mergefs mount` started by a test.
type liveDaemon struct {
	cmd    *exec.Cmd
	mnt    string
	log    *lockedBuffer
	exited chan struct{}
	err    error
	// killed is set when the test killed the daemon on purpose: its mount
	// is left behind, stale, and is detached at the end without a complaint.
	killed bool
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startDaemon runs `[wrapper...] mergefs mount args...` for the mount at mnt
// and waits until it says it is ready. When the test ends it is stopped with
// SIGTERM (SIGKILL and a detached mount if it hangs): nothing stays mounted.
func startDaemon(t *testing.T, wrapper []string, mnt string, args ...string) *liveDaemon {
	t.Helper()
	needBinary(t)
	needFUSE(t)
	argv := append(append(append([]string{}, wrapper...), mergefsBin, "mount"), args...)
	d := &liveDaemon{cmd: exec.Command(argv[0], argv[1:]...), mnt: mnt, log: &lockedBuffer{}, exited: make(chan struct{})}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout = d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		said := false
		for sc.Scan() {
			d.log.Write([]byte(sc.Text() + "\n"))
			if !said && strings.HasPrefix(sc.Text(), "mergefs: ready") {
				said = true
				close(ready)
			}
		}
		io.Copy(io.Discard, stderr)
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() { d.stop(t) })
	select {
	case <-ready:
	case <-d.exited:
		t.Fatalf("mergefs exited before it was ready (%v):\n%s", d.err, d.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("mergefs not ready after 30s:\n%s", d.log)
	}
	if !mounted(mnt) {
		t.Fatalf("mergefs said ready but %s is not a mergefs mount:\n%s", mnt, d.log)
	}
	return d
}

func (d *liveDaemon) stop(t *testing.T) {
	select {
	case <-d.exited:
		if !d.killed {
			t.Errorf("mergefs exited before the test ended (%v)", d.err)
		}
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
			if d.err != nil {
				t.Errorf("mergefs after SIGTERM: %v\n%s", d.err, d.log)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("mergefs still running 30s after SIGTERM; killing it\n%s", d.log)
			if m, ok, _ := mountinfo.At(d.mnt); ok {
				mountinfo.Abort(m)
			}
			syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
	}
	if m, ok, _ := mountinfo.At(d.mnt); ok && m.FSType == "fuse.mergefs" {
		if !d.killed {
			t.Errorf("mount left at %s after the daemon exited", d.mnt)
		}
		mountinfo.AbortAndDetach(m)
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", d.log)
	}
}

// mergefsCmd runs the test binary (not as a daemon) and returns its stdout
// and stderr together.
func mergefsCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	needBinary(t)
	return runCmd(t, time.Minute, nil, mergefsBin, args...)
}

// systemdEscapePath is `systemd-escape --path p`.
func systemdEscapePath(t *testing.T, p string) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-escape"); err != nil {
		if inCI() {
			t.Fatalf("systemd-escape is missing in CI (.ci/run installs systemd): %v", err)
		}
		t.Skip(err)
	}
	out, err := exec.Command("systemd-escape", "--path", p).Output()
	if err != nil {
		t.Fatalf("systemd-escape --path %q: %v", p, err)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// removeStateDirs removes default state directories when the test ends,
// after its daemons (register it before starting them).
func removeStateDirs(t *testing.T, dirs ...string) {
	_, rootErr := os.Stat("/var/lib/mergefs")
	t.Cleanup(func() {
		// The test made /var/lib/mergefs: gone again if nothing else is in it.
		if rootErr != nil {
			defer os.Remove("/var/lib/mergefs")
		}
		for _, d := range dirs {
			if !strings.HasPrefix(d, "/var/lib/mergefs/") || strings.Contains(d[len("/var/lib/mergefs/"):], "/") {
				t.Errorf("not removing %s: not a default state directory", d)
				continue
			}
			if err := os.RemoveAll(d); err != nil {
				t.Error(err)
			}
		}
	})
}

// `mergefs version` and `mergefs --version` say the same, with the
// revision of this checkout (the test binary is built with
// scripts/version-ldflags, as install.sh builds it) and the Go version.
func TestVersion(t *testing.T) {
	out, err := mergefsCmd(t, "version")
	if err != nil {
		t.Fatalf("mergefs version: %v\n%s", err, out)
	}
	long, err := mergefsCmd(t, "--version")
	if err != nil || long != out {
		t.Errorf("mergefs --version: %v\n%s\nwant the same as mergefs version:\n%s", err, long, out)
	}
	goVersion, err := runCmd(t, time.Minute, nil, "go", "env", "GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "\n  go        "+strings.TrimSpace(goVersion)+" ") {
		t.Errorf("no Go version %s in:\n%s", goVersion, out)
	}
	rev, err := runCmd(t, time.Minute, nil, "git", "-C", moduleRoot, "rev-parse", "HEAD")
	if err != nil {
		if inCI() {
			t.Fatalf("git rev-parse HEAD in CI: %v %s", err, rev)
		}
		t.Skipf("not a git checkout here (%v): the revision cannot be checked", err)
	}
	if !strings.Contains(out, "\n  revision  "+strings.TrimSpace(rev)) {
		t.Errorf("mergefs version does not name revision %s:\n%s", strings.TrimSpace(rev), out)
	}
}

// Two mounts at two mountpoints start with no flags: each gets its own state
// directory, /var/lib/mergefs/ and its mountpoint escaped exactly as
// systemd-escape --path does (spaces, dashes, non-ASCII), created 0700, and
// `mergefs status MOUNTPOINT` finds each daemon there.
func TestTwoMountsWithoutFlags(t *testing.T) {
	needBinary(t)
	needFUSE(t)
	w := workDir(t)
	mnts := []string{filepath.Join(w, "my data-1"), filepath.Join(w, "dönnées.2")}
	backs := []string{filepath.Join(w, "b1"), filepath.Join(w, "b2")}
	mkdirs(t, 0o755, append(mnts, backs...)...)
	var states []string
	for _, m := range mnts {
		states = append(states, "/var/lib/mergefs/"+systemdEscapePath(t, m))
	}
	for _, s := range states {
		if _, err := os.Lstat(s); err == nil {
			t.Fatalf("%s exists before the test", s)
		}
	}
	removeStateDirs(t, states...)
	for i := range mnts {
		startDaemon(t, nil, mnts[i], backs[i], mnts[i])
	}
	for i, m := range mnts {
		st, err := os.Stat(states[i])
		if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
			t.Errorf("state directory %s: %v, %v; want a 0700 directory", states[i], st, err)
		}
		if _, err := os.Stat(filepath.Join(states[i], "mergefs.sock")); err != nil {
			t.Errorf("no status socket in %s: %v", states[i], err)
		}
		if out, err := runCmd(t, 20*time.Second, nil, "sh", "-c", `echo '{"n":1}' > "$0"`, filepath.Join(m, "r.json")); err != nil {
			t.Fatalf("write through %s: %v %s", m, err, out)
		}
		out, err := mergefsCmd(t, "status", m)
		if err != nil || !strings.Contains(out, "mergefs at "+m+" (backing "+backs[i]+")") {
			t.Errorf("mergefs status %s: %v\n%s", m, err, out)
		}
		if !regexp.MustCompile(`(?m)^  commits +1  `).MatchString(out) {
			t.Errorf("mergefs status %s: want 1 commit:\n%s", m, out)
		}
	}
}

// kill SIGKILLs the daemon, as a crash would; its mount stays, stale.
func (d *liveDaemon) kill(t *testing.T) {
	d.killed = true
	syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("mergefs survives SIGKILL")
	}
}
