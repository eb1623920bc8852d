package backing

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mergefs/mergefs/internal/sysx"
)

// Tests that need several OS processes re-execute the test binary with childEnv set to a mode; the
// child runs that mode instead of the tests. Goroutines would not do: the point is the cross-process lock.
const childEnv = "MERGEFS_BACKING_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", mode, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(mode string) error {
	dir := os.Getenv("CHILD_DIR")
	opts := Options{}
	if mode == "churn" {
		opts.Fsync = FsyncAlways // keeps temporary files around long enough for kills to land on them
	}
	s, err := Open(dir, opts)
	if err != nil {
		return err
	}
	defer s.Close()
	switch mode {
	case "increment":
		return childIncrement(s)
	case "churn":
		return childChurn(s)
	case "holdtemp":
		return childHoldTemp(s)
	}
	return fmt.Errorf("unknown mode")
}

// childIncrement commits COUNT increments of FIELD in counter.json, starting when stdin says go.
func childIncrement(s *Store) error {
	count, err := strconv.Atoi(os.Getenv("CHILD_COUNT"))
	if err != nil {
		return err
	}
	if os.Getenv("CHILD_UNLOCKED") == "1" {
		s.skipInProcessLock, s.skipFileLock = true, true
	}
	fmt.Println("ready")
	if _, err := os.Stdin.Read(make([]byte, 1)); err != nil {
		return err
	}
	merge := incrementField(os.Getenv("CHILD_FIELD"))
	for range count {
		if _, err := s.Commit(context.Background(), "counter.json", Commit{Merge: merge, Mode: 0o644}); err != nil {
			return err
		}
	}
	return nil
}

// childChurn commits churnRecord(n+1) over churnRecord(n) until it is killed.
func childChurn(s *Store) error {
	for i := 0; ; i++ {
		_, err := s.Commit(context.Background(), "d/churn.json", Commit{Merge: func(theirs []byte, exists bool) ([]byte, error) {
			n := 0
			if exists {
				// Only the number: a full parse would make the merge, not the write, the slow part.
				var err error
				if n, err = churnVersion(theirs); err != nil {
					return nil, err
				}
			}
			return churnRecord(n + 1), nil
		}})
		if err != nil {
			return err
		}
		if i == 0 {
			fmt.Println("ready")
		}
	}
}

const churnPrefix = `{"n": `

func churnRecord(n int) []byte {
	// Large enough that writing and fsyncing it takes a while, different sizes so a torn or mixed
	// file cannot pass for a whole one.
	return fmt.Appendf(nil, "%s%d, \"pad\": \"%s\"}\n", churnPrefix, n, strings.Repeat("x", 32<<10+n%997))
}

func churnVersion(b []byte) (int, error) {
	rest, ok := strings.CutPrefix(string(b[:min(len(b), 32)]), churnPrefix)
	digits, _, found := strings.Cut(rest, ",")
	if !ok || !found {
		return 0, fmt.Errorf("not a churn record: %.32q", b)
	}
	return strconv.Atoi(digits)
}

func parseChurnRecord(b []byte) (int, error) {
	var rec struct{ N int }
	if err := json.Unmarshal(b, &rec); err != nil {
		return 0, fmt.Errorf("record is not valid JSON (%d bytes): %w", len(b), err)
	}
	if want := churnRecord(rec.N); string(b) != string(want) {
		return 0, fmt.Errorf("record n=%d is not exactly version %d (%d bytes, want %d)", rec.N, rec.N, len(b), len(want))
	}
	return rec.N, nil
}

// childHoldTemp creates a temporary file the way a commit does, prints its name, and holds it (and
// its lock) until stdin closes.
func childHoldTemp(s *Store) error {
	dir, err := s.OpenDir(".")
	if err != nil {
		return err
	}
	defer sysx.Close(dir.FD)
	fd, name, _, err := s.createTemp(dir.FD, 0o600, nil)
	if err != nil {
		return err
	}
	defer sysx.Close(fd)
	if err := writeAllAt(fd, []byte(`{"half": "writ`)); err != nil {
		return err
	}
	fmt.Println(name)
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

func incrementField(field string) func([]byte, bool) ([]byte, error) {
	return func(theirs []byte, exists bool) ([]byte, error) {
		counts := map[string]int{}
		if exists {
			if err := json.Unmarshal(theirs, &counts); err != nil {
				return nil, err
			}
		}
		counts[field]++
		return json.Marshal(counts)
	}
}

// child is a running child process with its stdout as lines.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startChild(t *testing.T, mode string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + mode}, env...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	})
	return c
}

// line waits for the child's next output line; a child that dies or hangs fails the test.
func (c *child) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("child exited before saying anything: %v", c.cmd.Wait())
		}
		return l
	case <-time.After(60 * time.Second):
		t.Fatal("child said nothing for 60 s")
	}
	return ""
}

func (c *child) wait(t *testing.T) {
	t.Helper()
	for range c.lines {
	}
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}
