package mount_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const clientTimeout = 30 * time.Second

// writeResult is what `fsops.py write` prints: the errno of each step, nil if it succeeded.
type writeResult struct {
	Open, Write, Fsync, Close *int
}

func errnoString(e *int) string {
	if e == nil {
		return "ok"
	}
	return syscall.Errno(*e).Error()
}

func (r writeResult) String() string {
	return fmt.Sprintf("open %s, write %s, fsync %s, close %s", errnoString(r.Open), errnoString(r.Write), errnoString(r.Fsync), errnoString(r.Close))
}

// clientWrite writes data to path from a separate process the way a legacy worker does.
func (h *harness) clientWrite(t *testing.T, path string, data []byte, extra ...string) writeResult {
	t.Helper()
	df, err := os.CreateTemp(h.dir, "data-")
	if err != nil {
		t.Fatal(err)
	}
	df.Write(data)
	df.Close()
	out := h.python(t, clientTimeout, "fsops.py", append([]string{"write", path, df.Name()}, extra...)...)
	var r writeResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("fsops write: %v: %s", err, out)
	}
	return r
}

func (h *harness) clientRead(t *testing.T, path string) []byte {
	t.Helper()
	return h.python(t, clientTimeout, "fsops.py", "cat", path)
}

func (h *harness) dataFile(t *testing.T, data []byte) string {
	t.Helper()
	df, err := os.CreateTemp(h.dir, "data-")
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	if _, err := df.Write(data); err != nil {
		t.Fatal(err)
	}
	return df.Name()
}

// startClient starts a long-lived client and waits for it to print want.
func (h *harness) startClient(t *testing.T, wait time.Duration, want string, argv ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 10 * time.Second
	stdin, _ := cmd.StdinPipe()
	stdoutPipe, _ := cmd.StdoutPipe()
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A client the test waited for is reaped: its id may name another process group by now.
		if cmd.ProcessState == nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
	})
	stdout := bufio.NewReader(stdoutPipe)
	line := make(chan string, 1)
	go func() {
		s, _ := stdout.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != want {
			t.Fatalf("%v printed %q, want %q; stderr:\n%s", argv, s, want, stderr.String())
		}
	case <-time.After(wait):
		h.abortAll()
		t.Fatalf("%v did not print %q within %v (FUSE connections aborted); stderr:\n%s", argv, want, wait, stderr.String())
	}
	return cmd, stdin, stdout
}

// sampleRecord is a valid record of about size bytes whose first bytes depend on version.
func sampleRecord(version, size int) []byte {
	rec := map[string]any{"id": version, "name": "Zoë", "counter": version, "pad": ""}
	b, _ := json.Marshal(rec)
	rec["pad"] = strings.Repeat("y", max(0, size-len(b)))
	b, _ = json.Marshal(rec)
	return b
}

// TestKilledWriterLeavesRecordIntact: a worker killed (SIGKILL) after writing
// half a record through an open handle leaves the record as it was.
func TestKilledWriterLeavesRecordIntact(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	control := h.path("control")
	d, mountErr := h.mountUnderTest(backing, mnt)

	old := sampleRecord(1, 8<<10)
	var list strings.Builder
	list.WriteString(`{"new":true,"list":[0`)
	for i := 1; list.Len() < 9<<10; i++ {
		fmt.Fprintf(&list, ",%d", i)
	}
	list.WriteString("]}")
	listRecord := []byte(list.String())
	splice := append([]byte(`{"new":true,`), sampleRecord(2, 8<<10)[1:]...)

	cases := []struct {
		name, mode string
		next       []byte
	}{
		// Half of a record: not valid JSON, with or without the old tail behind it.
		{"w", "w", listRecord},
		{"rplus", "r+", listRecord},
		// Half of the new record over the old one's tail happens to be valid JSON
		// (both cut inside the padding string): neither old nor new content.
		{"rplus-valid-splice", "r+", splice},
	}
	for _, c := range cases {
		mode, next := c.mode, c.next
		half := next[:len(next)/2]
		t.Run(c.name, func(t *testing.T) {
			name := "killed-" + c.name + ".json"
			killMidWrite := func(t *testing.T, dir string) {
				cmd, _, _ := h.startClient(t, clientTimeout, "ready", "python3", filepath.Join(bins.workers, "fsops.py"),
					"half-write", filepath.Join(dir, name), h.dataFile(t, half), "--mode", mode)
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				cmd.Wait()
			}

			if err := os.WriteFile(filepath.Join(control, name), old, 0o644); err != nil {
				t.Fatal(err)
			}
			killMidWrite(t, control)
			got, _ := os.ReadFile(filepath.Join(control, name))
			t.Logf("control: after the kill the record is %d bytes (was %d), valid JSON: %v", len(got), len(old), json.Valid(got))
			if bytes.Equal(got, old) {
				t.Errorf("control: the killed writer left the plain file unchanged; the test does not write")
			}

			h.needMount(t, mountErr)
			if r := h.clientWrite(t, filepath.Join(mnt, name), old); r.Close != nil || r.Write != nil || r.Open != nil {
				t.Fatalf("creating the record through the mount: %v", r)
			}
			if got := readFile(t, filepath.Join(backing, name)); !jsonEqual(got, old) {
				t.Fatalf("record in the backing store after creation: %.80q", got)
			}
			before := readFile(t, filepath.Join(backing, name))
			// The kernel closes the dead process's descriptors (FLUSH, then
			// RELEASE): judge the record once the daemon has no handle open.
			// The loopback (MERGEFS_E2E_TARGET=loopback) has no such state.
			if d.kind == "mergefs" {
				was := h.waitNoOpenRecords(t, d)
				killMidWrite(t, mnt)
				now := h.waitNoOpenRecords(t, d)
				// Its content is neither committed nor rejected: mergefs sees
				// the fatal signal and drops it.
				for _, counter := range []string{"commits", "rejected", "failed"} {
					if now[counter] != was[counter] {
						t.Errorf("mergefs counted %d %s for a writer killed mid-write, want none", now[counter]-was[counter], counter)
					}
				}
			} else {
				killMidWrite(t, mnt)
			}
			if got := readFile(t, filepath.Join(backing, name)); !bytes.Equal(got, before) {
				t.Errorf("backing record changed by a writer killed mid-write: %d bytes, valid %v, head %.60q", len(got), json.Valid(got), got)
			}
			if got := h.clientRead(t, filepath.Join(mnt, name)); !bytes.Equal(got, before) {
				t.Errorf("record through the mount after the kill: %d bytes, head %.60q", len(got), got)
			}
			// The dead writer must not leave a lock or stale handle state behind.
			if r := h.clientWrite(t, filepath.Join(mnt, name), next); r.Close != nil || r.Write != nil {
				t.Errorf("writing after the kill: %v", r)
			} else if got := readFile(t, filepath.Join(backing, name)); !jsonEqual(got, next) {
				t.Errorf("after a full rewrite the record is %.80q", got)
			}
		})
	}
}

// TestInvalidJSONRejected: content that is not one valid JSON document (or is
// past the limits) gets EIO at close (or fsync), changes nothing, and is kept
// under state-dir/rejected.
func TestInvalidJSONRejected(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	const maxSize, maxDepth = 64 << 10, 32
	d, mountErr := h.mountUnderTest(backing, mnt, "--max-record-size", fmt.Sprint(maxSize), "--max-depth", fmt.Sprint(maxDepth))
	h.needMount(t, mountErr)

	valid := sampleRecord(7, 2<<10)
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	cases := []struct {
		name  string
		data  []byte
		flags []string
		// earlyEFBIG: write() may already fail with EFBIG (then the whole content
		// never reaches the daemon, so it cannot be kept under rejected/).
		earlyEFBIG bool
		// noWrite: the handle was opened O_TRUNC and closed without a write.
		// mergefs leaves the record as it was and close() succeeds, with a
		// warning (fs/record.go): a shell's "> r.json" FLUSHes before it writes.
		noWrite bool
	}{
		{"garbage", []byte("{not json"), nil, false, false},
		{"truncated", valid[:len(valid)/2], nil, false, false},
		{"trailing-garbage", append(append([]byte{}, valid...), " x"...), nil, false, false},
		{"two-documents", []byte(`{"a":1}{"a":2}`), nil, false, false},
		{"nan", []byte(`{"a": NaN}`), nil, false, false},
		{"empty", nil, nil, false, true},
		{"empty-ftruncate", nil, []string{"--mode", "r+"}, false, false},
		{"too-deep", []byte(`{"a":` + deep + `}`), nil, false, false},
		{"too-big", sampleRecord(8, maxSize+1024), nil, true, false},
		{"garbage-fsync", []byte("{not json either"), []string{"--fsync"}, false, false},
		{"garbage-rplus", []byte("{still not json"), []string{"--mode", "r+"}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := "bad-" + c.name + ".json"
			if r := h.clientWrite(t, filepath.Join(mnt, name), valid); r.Close != nil {
				t.Fatalf("creating %s: %v", name, r)
			}
			before := readFile(t, filepath.Join(backing, name))
			logBefore := len(d.log.String())

			r := h.clientWrite(t, filepath.Join(mnt, name), c.data, c.flags...)
			early := c.earlyEFBIG && r.Write != nil && *r.Write == int(syscall.EFBIG)
			if early {
				t.Logf("write() failed early with EFBIG (the content never reached the daemon, so close gives EIO and nothing is kept under rejected/): %v", r)
				r.Write = nil
			}
			if c.noWrite {
				if r.Close != nil || r.Open != nil {
					t.Errorf("got %v; want close to succeed and leave the record", r)
				}
			}
			step, failedWith := "close", r.Close
			if slices.Contains(c.flags, "--fsync") {
				step, failedWith = "fsync", r.Fsync
				if r.Close != nil && *r.Close != int(syscall.EIO) {
					t.Errorf("close after a failed fsync: %v", r)
				}
			}
			if !c.noWrite && (failedWith == nil || *failedWith != int(syscall.EIO) || r.Open != nil || r.Write != nil) {
				t.Errorf("got %v; want EIO at %s and nothing else failing", r, step)
			}
			if got := readFile(t, filepath.Join(backing, name)); !bytes.Equal(got, before) {
				t.Errorf("rejected write changed the record: now %d bytes %.60q", len(got), got)
			}
			if got := h.clientRead(t, filepath.Join(mnt, name)); !bytes.Equal(got, before) {
				t.Errorf("through the mount the record reads %d bytes %.60q", len(got), got)
			}
			if len(c.data) > 0 && !early && !rejectedHolds(t, filepath.Join(d.stateDir, "rejected"), c.data) {
				t.Errorf("the rejected %d bytes are not under %s/rejected", len(c.data), d.stateDir)
			}
			if newLog := d.log.String()[logBefore:]; !strings.Contains(newLog, name) {
				t.Errorf("no log line names %s; new log output:\n%s", name, tailLines(newLog, 10))
			}
		})
	}

	t.Run("new-record", func(t *testing.T) {
		// Not promised precisely by the design (does a rejected create leave a file?): reported.
		r := h.clientWrite(t, filepath.Join(mnt, "bad-new.json"), []byte("{nope"))
		st, err := os.Stat(filepath.Join(backing, "bad-new.json"))
		t.Logf("creating a record with invalid content: %v; backing file: %v %v", r, fileSize(st), err)
		if r.Close == nil || *r.Close != int(syscall.EIO) {
			t.Errorf("creating a record with invalid content: %v, want EIO at close", r)
		}
		if err == nil && st.Size() > 0 {
			t.Errorf("invalid content of a new record reached the backing store (%d bytes)", st.Size())
		}
	})
}

func fileSize(st os.FileInfo) string {
	if st == nil {
		return "absent"
	}
	return fmt.Sprintf("%d bytes", st.Size())
}

// rejectedHolds reports whether some file under dir holds exactly data.
func rejectedHolds(t *testing.T, dir string, data []byte) bool {
	found := false
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || found {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Equal(b, data) {
			found = true
		}
		return nil
	})
	return found
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestForkedChildCommitsNothing: a FLUSH from a process that never wrote
// through the handle (a forked child exiting, an exec dropping the
// descriptor) commits nothing; the writer's own close does.
func TestForkedChildCommitsNothing(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountUnderTest(backing, mnt)

	for _, how := range []string{"fork-exit", "exec-cloexec", "exec-inherit"} {
		t.Run(how, func(t *testing.T) {
			h.needMount(t, mountErr)
			name := "forked-" + how + ".json"
			path := filepath.Join(mnt, name)
			old, next := sampleRecord(1, 1<<10), sampleRecord(2, 1<<10)
			if r := h.clientWrite(t, path, old); r.Close != nil {
				t.Fatalf("creating the record: %v", r)
			}
			before := readFile(t, filepath.Join(backing, name))
			cmd, stdin, stdout := h.startClient(t, 10*time.Second, "written", "python3", filepath.Join(bins.workers, "fsops.py"),
				"fork-child", path, h.dataFile(t, next), "--how", how)
			time.Sleep(100 * time.Millisecond)
			if got := readFile(t, filepath.Join(backing, name)); !bytes.Equal(got, before) {
				t.Errorf("the record changed before the writer closed (a child's FLUSH committed): %.60q", got)
			}
			io.WriteString(stdin, "close\n")
			rest, _ := io.ReadAll(stdout)
			cmd.Wait()
			var r struct{ Close *int }
			if err := json.Unmarshal(rest, &r); err != nil || r.Close != nil {
				t.Fatalf("writer's close: %s (%v)", rest, err)
			}
			if got := readFile(t, filepath.Join(backing, name)); !jsonEqual(got, next) {
				t.Errorf("after the writer's close the record is %.60q, want the new content", got)
			}
		})
	}
}

// TestRecordReplacedWhileOpen: a worker holds a record open ('r+') while
// another process replaces it by rename (os.replace); the worker's fstat,
// write, ftruncate and close, and a later open by path, must all work, and
// both changes must be in the record. With two mounts the replacer works
// through the second daemon, so the first kernel's cached dentry is stale.
func TestRecordReplacedWhileOpen(t *testing.T) {
	h := newHarness(t)
	control := h.path("control")
	backing, mntA, mntB := h.path("backing"), h.path("mntA"), h.path("mntB")
	_, errA := h.mountUnderTest(backing, mntA)
	_, errB := h.mountUnderTest(backing, mntB)

	type result struct {
		Errors map[string]string
		Final  *string
	}
	run := func(t *testing.T, dirs ...string) result {
		var r result
		out := h.python(t, clientTimeout, "replaced.py", dirs...)
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("replaced.py: %v: %s", err, out)
		}
		return r
	}
	want := []byte(`{"a":1,"b":1}`)

	c := run(t, control)
	t.Logf("control: errors %v, final %v", c.Errors, deref(c.Final))
	if c.Final == nil || jsonEqual([]byte(*c.Final), want) {
		t.Errorf("control kept both changes: the scenario does not lose anything on a plain directory")
	}

	for _, tc := range []struct {
		name string
		dirs func() []string
	}{
		{"one-mount", func() []string { return []string{filepath.Join(mntA, "one")} }},
		{"two-mounts", func() []string { return []string{filepath.Join(mntA, "two"), filepath.Join(mntB, "two")} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.needMount(t, errA)
			h.needMount(t, errB)
			sub := filepath.Base(tc.dirs()[0])
			h.python(t, clientTimeout, "fsops.py", "mkdir", tc.dirs()[0])
			r := run(t, tc.dirs()...)
			for step, e := range r.Errors {
				t.Errorf("%s failed: %s", step, e)
			}
			got := readFile(t, filepath.Join(backing, sub, "rec.json"))
			if !jsonEqual(got, want) {
				t.Errorf("record is %s, want both changes %s (read by path: %v)", got, want, deref(r.Final))
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
