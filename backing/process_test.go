package backing

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// runIncrementers runs two processes, each committing count increments of its own field of one record
// through its own Store, and returns the total of the two fields.
func runIncrementers(t *testing.T, count int, unlocked bool) (total int) {
	t.Helper()
	dir := t.TempDir()
	flag := "0"
	if unlocked {
		flag = "1"
	}
	var children []*child
	for _, field := range []string{"a", "b"} {
		c := startChild(t, "increment", "CHILD_DIR="+dir, "CHILD_FIELD="+field,
			"CHILD_COUNT="+strconv.Itoa(count), "CHILD_UNLOCKED="+flag)
		children = append(children, c)
	}
	for _, c := range children {
		if l := c.line(t); l != "ready" {
			t.Fatalf("child said %q", l)
		}
	}
	for _, c := range children { // both start together
		if _, err := c.stdin.Write([]byte("g")); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range children {
		c.wait(t)
	}
	data, err := os.ReadFile(filepath.Join(dir, "counter.json"))
	if err != nil {
		t.Fatal(err)
	}
	var counts map[string]int
	if err := json.Unmarshal(data, &counts); err != nil {
		t.Fatalf("counter.json: %v: %q", err, data)
	}
	return counts["a"] + counts["b"]
}

func TestTwoProcessesLoseNoIncrement(t *testing.T) {
	const count = 300
	if got := runIncrementers(t, count, false); got != 2*count {
		t.Fatalf("with the lock: %d increments survived, want %d (%d lost)", got, 2*count, 2*count-got)
	}

	// Control: the same two processes without the lock must lose increments, or this test proves nothing.
	for attempt := 1; ; attempt++ {
		got := runIncrementers(t, count, true)
		lost := 2*count - got
		t.Logf("control without the lock, attempt %d: %d of %d increments lost", attempt, lost, 2*count)
		if lost > 0 {
			break
		}
		if attempt == 5 {
			t.Fatal("control never lost an increment: the test cannot tell a working lock from none")
		}
	}
}

func TestKilledCommitterLeavesWholeRecord(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(dir, "d", "churn.json")
	last, recovered := 0, 0
	for i := range 30 {
		c := startChild(t, "churn", "CHILD_DIR="+dir)
		if l := c.line(t); l != "ready" {
			t.Fatalf("child said %q", l)
		}
		time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond)
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = c.cmd.Wait()

		data, err := os.ReadFile(record)
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		n, err := parseChurnRecord(data)
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		if n <= last {
			t.Fatalf("iteration %d: record went from version %d to %d", i, last, n)
		}
		last = n

		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		recovered += s.Recovered()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if left := tempFiles(t, dir); len(left) > 0 {
			t.Fatalf("iteration %d: temporary files left after recovery: %v", i, left)
		}
	}
	t.Logf("30 kills: record reached version %d, recovery removed %d temporary files", last, recovered)
	if recovered == 0 {
		t.Fatal("no kill left a temporary file: recovery was never exercised")
	}
}

func TestRecoveryKeepsTempFileOfLiveWriter(t *testing.T) {
	dir := t.TempDir()
	c := startChild(t, "holdtemp", "CHILD_DIR="+dir)
	live := c.line(t)
	if !isTempName(live) {
		t.Fatalf("child said %q", live)
	}
	// A temporary file nobody holds, as a dead writer leaves it, in a subdirectory.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(dir, "sub", tempPrefix+"dead")
	if err := os.WriteFile(dead, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Recovered(); got != 1 {
		t.Errorf("Recovered() = %d with one dead and one live temporary file, want 1", got)
	}
	s.Close()
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("dead writer's temporary file still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, live)); err != nil {
		t.Fatalf("live writer's temporary file removed: %v", err)
	}

	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Recovered(); got != 1 {
		t.Errorf("Recovered() = %d after the writer died, want 1", got)
	}
	if left := tempFiles(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// tempFiles lists the store's temporary files under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if isTempName(d.Name()) {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
