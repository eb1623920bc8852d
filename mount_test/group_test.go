package mount_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// groupProc is one worker process of a group that the test coordinates: it
// prints "B" on stdout when it reaches a barrier and waits there for "G" on
// stdin, and prints "R <json>" with its results at the end.
type groupProc struct {
	label string
	argv  []string
	// hold: this process's barrier arrivals are released only once every
	// other process has finished (a slow request waiting for the others).
	hold bool
}

// groupResult is one process's "R" line and how it ended.
type groupResult struct {
	Commits      map[string]map[string]int `json:"commits"`
	Attempts     int                       `json:"attempts"`
	Torn         int                       `json:"torn"`
	Unreadable   int                       `json:"unreadable"`
	OSErrors     int                       `json:"oserrors"`
	BadReads     int                       `json:"bad_reads"`
	ReadsChecked int                       `json:"reads_checked"`
	// FstatMismatch counts reads of an older descriptor sized by its fstat
	// that did not return its snapshot (Node's FileHandle.readFile).
	FstatMismatch int      `json:"fstat_mismatch"`
	Errors        []string `json:"errors"`
	Samples       []string `json:"samples"`
	Elapsed       float64  `json:"elapsed"`

	reported bool   // an "R" line came
	exit     error  // cmd.Wait's error
	stderr   string // its tail
}

// runGroup starts the processes together and runs the barriers between them:
// once every running process that does not hold has arrived, each is sent
// "G"; a holding process is released once all the others have finished. A
// group that is not done within timeout is killed, the harness's FUSE
// connections are aborted, and the test fails.
func (h *harness) runGroup(t *testing.T, timeout time.Duration, procs []groupProc) []groupResult {
	t.Helper()
	type event struct {
		i    int
		line string
		eof  bool
	}
	events := make(chan event)
	quit := make(chan struct{})
	defer close(quit)

	cmds := make([]*exec.Cmd, len(procs))
	stdins := make([]io.WriteCloser, len(procs))
	stderrs := make([]*syncBuffer, len(procs))
	results := make([]groupResult, len(procs))
	waited := make([]bool, len(procs))
	// Only groups of processes not yet waited for: a reaped process's id may name another process
	// group by now (pid_max can be as low as 32768), another test's client or daemon.
	killAll := func() {
		for i, cmd := range cmds {
			if cmd != nil && cmd.Process != nil && !waited[i] {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		}
	}
	defer func() {
		killAll()
		for i, cmd := range cmds {
			if cmd != nil && !waited[i] {
				cmd.Wait()
			}
		}
	}()
	for i, p := range procs {
		cmd := exec.Command(p.argv[0], p.argv[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.WaitDelay = 10 * time.Second
		stderrs[i] = &syncBuffer{}
		cmd.Stderr = stderrs[i]
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: starting %v: %v", p.label, p.argv, err)
		}
		cmds[i], stdins[i] = cmd, in
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				select {
				case events <- event{i: i, line: sc.Text()}:
				case <-quit:
					return
				}
			}
			select {
			case events <- event{i: i, eof: true}:
			case <-quit:
			}
		}()
	}

	waiting := make([]bool, len(procs))
	done := make([]bool, len(procs))
	release := func() {
		othersDone, allArrived, anyArrived := true, true, false
		for i, p := range procs {
			if p.hold || done[i] {
				continue
			}
			othersDone = false
			allArrived = allArrived && waiting[i]
			anyArrived = anyArrived || waiting[i]
		}
		for i, p := range procs {
			if !waiting[i] || (p.hold && !othersDone) || (!p.hold && !(allArrived && anyArrived)) {
				continue
			}
			waiting[i] = false
			io.WriteString(stdins[i], "G\n")
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for left := len(procs); left > 0; {
		select {
		case ev := <-events:
			p := procs[ev.i]
			switch {
			case ev.eof:
				done[ev.i], left = true, left-1
				stdins[ev.i].Close()
				results[ev.i].exit = cmds[ev.i].Wait()
				waited[ev.i] = true
				results[ev.i].stderr = tailLines(stderrs[ev.i].String(), 20)
				release()
			case ev.line == "B":
				waiting[ev.i] = true
				release()
			case strings.HasPrefix(ev.line, "R "):
				if err := json.Unmarshal([]byte(ev.line[2:]), &results[ev.i]); err != nil {
					t.Errorf("%s: result line: %v: %.200s", p.label, err, ev.line)
				}
				results[ev.i].reported = true
			default:
				t.Logf("%s: %s", p.label, ev.line)
			}
		case <-deadline.C:
			var stuck []string
			for i, p := range procs {
				if !done[i] {
					stuck = append(stuck, fmt.Sprintf("%s (at a barrier: %v; stderr: %s)", p.label, waiting[i], tailLines(stderrs[i].String(), 5)))
				}
			}
			killAll()
			h.abortAll()
			t.Fatalf("worker group not done after %v; killed, FUSE connections aborted; still running: %s", timeout, strings.Join(stuck, "; "))
		}
	}
	for i, r := range results {
		if r.exit != nil || !r.reported {
			t.Errorf("%s %s: %v, reported results: %v; stderr:\n%s", procs[i].label, strings.Join(procs[i].argv, " "), r.exit, r.reported, r.stderr)
		}
	}
	return results
}
