package fs

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
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
	got, err := parseTgid([]byte("Name:\tpython3\nUmask:\t0022\nState:\tS\nTgid:\t777\nNgid:\t0\nPid:\t778\n"))
	if err != nil || got != 777 {
		t.Fatalf("got %d, %v", got, err)
	}
	if _, err := parseTgid([]byte("Name:\tx\n")); err == nil {
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
