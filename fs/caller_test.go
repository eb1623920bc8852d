package fs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseStatCommWithSpacesAndParens(t *testing.T) {
	line := []byte("4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200 18446744073709551615\n")
	start, comm, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if start != 987654 || comm != "my (odd) prog" {
		t.Fatalf("got start %d comm %q", start, comm)
	}
	if _, _, err := parseStat([]byte("12 (x) S 1 2")); err == nil {
		t.Fatal("short line accepted")
	}
}

func TestParseTgid(t *testing.T) {
	got, err := parseStatus([]byte("Name:\tpython3\nUmask:\t0022\nState:\tS\nTgid:\t777\nNgid:\t0\nPid:\t778\n"))
	if err != nil || got.tgid != 777 {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := parseStatus([]byte("Name:\tx\n")); err == nil {
		t.Fatal("status without Tgid accepted")
	}
}

func TestResolveThreadsOfOneProcess(t *testing.T) {
	r := newCallerResolver("/proc")
	pid := uint32(os.Getpid())
	main, err := r.resolve(pid, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if main.proc.pid != pid || main.thread.pid != pid {
		t.Fatalf("main thread: %+v", main)
	}
	tid := otherThread(t)
	c, err := r.resolve(tid, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.proc != main.proc || c.thread == main.thread {
		t.Fatalf("thread %d of this process resolved to %+v, main %+v", tid, c, main)
	}
}

func TestResolveDistinguishesProcesses(t *testing.T) {
	r := newCallerResolver("/proc")
	child := startSleeper(t)
	c, err := r.resolve(child, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := r.resolve(uint32(os.Getpid()), 0, 0)
	if c.proc == self.proc || c.proc.pid != child || c.comm != "sleep" {
		t.Fatalf("child resolved to %+v (self %+v)", c, self)
	}
}

// otherThread returns a thread id of this process other than the main one.
func otherThread(t *testing.T) uint32 {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var tid uint32
		if _, err := fmt.Sscan(e.Name(), &tid); err == nil && tid != uint32(os.Getpid()) {
			return tid
		}
	}
	t.Fatal("no second thread")
	return 0
}

// startSleeper starts another process and returns its pid; it is killed at
// the end of the test.
func startSleeper(t *testing.T) uint32 {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return uint32(cmd.Process.Pid)
}

// fakeTask writes /proc/<pid>/stat and status under root for a task of
// process tgid started at start.
func fakeTask(t *testing.T, root string, pid, tgid uint32, start uint64, comm string) {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprint(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := fmt.Sprintf("%d (%s) S 1 %d %d 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000 200\n", pid, comm, tgid, tgid, start)
	status := fmt.Sprintf("Name:\t%s\nTgid:\t%d\nPid:\t%d\n", comm, tgid, pid)
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The resolver's recheck rests on this: a /proc file opened for a task fails to read once the task
// has exited, so it can never describe a later task given the same id.
func TestProcFileOfExitedTaskFailsToRead(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f, err := openProc(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, err := readStatusFile(f); err != nil || st.tgid != uint32(cmd.Process.Pid) {
		t.Fatalf("live task: %+v, %v", st, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if st, err := readStatusFile(f); err == nil {
		t.Fatalf("the status of an exited task read as %+v", st)
	}
}

func TestResolveForgetsAnExitedTask(t *testing.T) {
	now := time.Now()
	r := newCallerResolver("/proc")
	r.now = func() time.Time { return now }
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	first, err := r.resolve(pid, 0, 0)
	if err != nil || first.comm != "sleep" {
		t.Fatalf("first resolve: %+v, %v", first, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	now = now.Add(callerRecheck / 2)
	if c, err := r.resolve(pid, 0, 0); err != nil || c.thread != first.thread {
		t.Fatalf("within the window: %+v, %v; want the cached %+v", c, err, first)
	}
	now = now.Add(callerRecheck)
	// The id names no task now (or, if already reused, another one).
	if c, err := r.resolve(pid, 0, 0); err == nil && c.thread == first.thread {
		t.Fatalf("after the window an exited task still resolved: %+v", c)
	}
	if c, ok := r.peek(pid); ok && c.thread == first.thread {
		t.Fatalf("the exited task is still cached: %+v", c)
	}
}

func TestResolveDropsIdleThreads(t *testing.T) {
	now := time.Now()
	r := newCallerResolver("/proc")
	r.now = func() time.Time { return now }
	pid := uint32(os.Getpid())
	if _, err := r.resolve(pid, 0, 0); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	cached, ok := r.cache[pid]
	r.mu.Unlock()
	if !ok {
		t.Fatal("not cached")
	}
	r.dropIdle()
	if _, ok := r.peek(pid); !ok {
		t.Fatal("dropped before it was idle")
	}
	now = now.Add(callerIdle)
	r.dropIdle()
	if _, ok := r.peek(pid); ok {
		t.Fatal("an idle thread is still cached")
	}
	if _, err := cached.status.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("the idle thread's status file is still open: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sweep != nil {
		t.Fatal("the sweep still runs for an empty table")
	}
}

func TestResolveRefreshesGroupsAtEachCheck(t *testing.T) {
	root := t.TempDir()
	now := time.Unix(1000, 0)
	r := newCallerResolver(root)
	r.now = func() time.Time { return now }
	fakeTask(t, root, 300, 301, 7, "worker")
	fakeTask(t, root, 301, 301, 6, "worker")
	setGroups(t, root, 300, "10 20")
	first, err := r.resolve(300, 0, 0)
	if err != nil || first.proc != (procKey{pid: 301, start: 6}) || !slices.Equal(first.groups, []uint32{10, 20}) {
		t.Fatalf("first resolve: %+v, %v", first, err)
	}
	// The same thread dropped a group (setgroups): the daemon acts with the
	// groups of the last check, at most callerRecheck old.
	setGroups(t, root, 300, "10")
	now = now.Add(callerRecheck / 2)
	if c, _ := r.resolve(300, 0, 0); !slices.Equal(c.groups, []uint32{10, 20}) {
		t.Fatalf("within the window: groups %v, want the cached ones", c.groups)
	}
	now = now.Add(2 * callerRecheck)
	c, err := r.resolve(300, 1, 2)
	if err != nil || c.proc != first.proc || c.uid != 1 || c.gid != 2 || !slices.Equal(c.groups, []uint32{10}) {
		t.Fatalf("after the window: %+v, %v; want groups [10]", c, err)
	}
}

// setGroups adds a Groups line to a fake task's status.
func setGroups(t *testing.T, root string, pid uint32, groups string) {
	t.Helper()
	p := filepath.Join(root, fmt.Sprint(pid), "status")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !strings.HasPrefix(line, "Groups:") {
			kept = append(kept, line)
		}
	}
	kept = append(kept, "Groups:\t"+groups)
	if err := os.WriteFile(p, []byte(strings.Join(kept, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseStatusSignals(t *testing.T) {
	status := func(pnd, shd, blk, ign, cgt string) []byte {
		return []byte("Name:\tpython3\nTgid:\t77\nPid:\t78\nSigQ:\t0/1\nSigPnd:\t" + pnd +
			"\nShdPnd:\t" + shd + "\nSigBlk:\t" + blk + "\nSigIgn:\t" + ign + "\nSigCgt:\t" + cgt + "\n")
	}
	const zero = "0000000000000000"
	for _, tc := range []struct {
		name                    string
		pnd, shd, blk, ign, cgt string
		dying                   bool
	}{
		{"running", zero, zero, zero, "0000000001001006", "0000000180000002", false},
		{"SIGKILL (seen on kill -9)", zero, "0000000000000100", zero, "0000000001001006", zero, true},
		{"uncaught SIGTERM (seen)", zero, "0000000000004000", zero, "0000000001001006", "0000000100000000", true},
		{"caught SIGTERM", zero, "0000000000004000", zero, zero, "0000000000004000", false},
		{"blocked SIGTERM", zero, "0000000000004000", "0000000000004000", zero, zero, false},
		{"ignored SIGPIPE", "0000000000001000", zero, zero, "0000000000001000", zero, false},
		{"SIGCHLD pending", zero, "0000000000010000", zero, zero, zero, false},
	} {
		st, err := parseStatus(status(tc.pnd, tc.shd, tc.blk, tc.ign, tc.cgt))
		if err != nil {
			t.Fatal(err)
		}
		if st.tgid != 77 || st.name != "python3" {
			t.Fatalf("%s: parsed %+v", tc.name, st)
		}
		if st.dying() != tc.dying {
			t.Errorf("%s: dying=%v, want %v", tc.name, st.dying(), tc.dying)
		}
	}
}
