package journal

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/mergefs/mergefs/internal/event"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mergefs/mergefs/merge"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func commitEvent(record string, conflicts ...merge.Conflict) event.Commit {
	return event.Commit{
		Record:    record,
		Writer:    event.Writer{PID: 42, TID: 43, UID: 1000, Comm: "python3"},
		Trigger:   event.Close,
		Outcome:   event.Committed,
		Conflicts: conflicts,
	}
}

func readLines(t *testing.T, path string) []Entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e Entry
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%s: line %q: %v", path, sc.Text(), err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func str(p *string) string {
	if p == nil {
		return "<absent>"
	}
	return *p
}

func TestOneLinePerConflict(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conflicts.jsonl")
	j, err := Open(path, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	fixed := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	j.now = func() time.Time { return fixed }

	j.Commit(commitEvent("users/1.json")) // no conflict: no line
	j.Commit(commitEvent("users/1.json",
		merge.Conflict{Path: []string{"profile", "a/b~c"}, Base: []byte(`1`), Mine: []byte(`2`), Theirs: []byte(`3`)},
		merge.Conflict{Path: []string{"gone"}, Base: []byte(`"x"`), Mine: nil, Theirs: []byte(`"y"`)},
		merge.Conflict{Path: nil, Reason: "top level", Base: []byte(`[1]`), Mine: []byte(`[2]`), Theirs: []byte(`{}`)},
	))
	ev := commitEvent("users/2.json", merge.Conflict{Path: []string{"n"}, Base: []byte(`0`), Mine: []byte(`1`), Theirs: []byte(`2`)})
	ev.Outcome = event.Conflict
	ev.Trigger = event.Fsync
	j.Commit(ev)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	lines := readLines(t, path)
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4 (one per conflict): %+v", len(lines), lines)
	}
	want := []struct{ record, key, base, mine, theirs, outcome, trigger string }{
		{"users/1.json", "/profile/a~1b~0c", "1", "2", "3", "committed", "close"},
		{"users/1.json", "/gone", `"x"`, "<absent>", `"y"`, "committed", "close"},
		{"users/1.json", "", "[1]", "[2]", "{}", "committed", "close"},
		{"users/2.json", "/n", "0", "1", "2", "conflict", "fsync"},
	}
	for i, w := range want {
		e := lines[i]
		got := []string{e.Record, e.Key, str(e.Base), str(e.Mine), str(e.Theirs), e.Outcome, e.Trigger}
		exp := []string{w.record, w.key, w.base, w.mine, w.theirs, w.outcome, w.trigger}
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("line %d: got %q, want %q", i, got, exp)
		}
		if e.Writer != (Writer{PID: 42, TID: 43, UID: 1000, Comm: "python3"}) {
			t.Errorf("line %d: writer %+v", i, e.Writer)
		}
		if !e.Time.Equal(fixed) {
			t.Errorf("line %d: time %v, want %v", i, e.Time, fixed)
		}
	}
	if lines[0].Conflicts != 3 || lines[3].Conflicts != 1 {
		t.Errorf("conflicts per commit: %d and %d, want 3 and 1", lines[0].Conflicts, lines[3].Conflicts)
	}
	if lines[2].Reason != "top level" {
		t.Errorf("reason %q", lines[2].Reason)
	}
	if st := j.Stats(); st.Written != 4 || st.Dropped != 0 || st.WriteErrors != 0 {
		t.Errorf("stats %+v, want 4 written", st)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("journal mode %v, want 0600 (values are user data)", info.Mode().Perm())
	}
}

func TestValuesAreCutAndCopied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conflicts.jsonl")
	j, err := Open(path, Options{MaxValue: 10, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	long := []byte(`"ééééééééé"`) // 20 bytes; byte 10 is inside an 'é'
	mine := []byte(`"short"`)
	j.Commit(commitEvent("r.json", merge.Conflict{Path: []string{"k"}, Base: long, Mine: mine, Theirs: []byte(`1`)}))
	// The commit path reuses its buffers: the journal must have copied.
	copy(mine, `"XXXXX"`)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("%d lines", len(lines))
	}
	e := lines[0]
	if got := str(e.Base); got != `"éééé` || e.BaseBytes != len(long) {
		t.Errorf("base %q (%d bytes), want the first whole runes within 10 bytes and the full size %d", got, e.BaseBytes, len(long))
	}
	if got := str(e.Mine); got != `"short"` || e.MineBytes != 0 {
		t.Errorf("mine %q (bytes %d): want the value at Commit time, uncut", got, e.MineBytes)
	}
}

func TestPerCommitBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conflicts.jsonl")
	j, err := Open(path, Options{MaxPerCommit: 3, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var cs []merge.Conflict
	for i := range 10 {
		cs = append(cs, merge.Conflict{Path: []string{fmt.Sprint(i)}, Base: []byte("0"), Mine: []byte("1"), Theirs: []byte("2")})
	}
	j.Commit(commitEvent("r.json", cs...))
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 3 || lines[0].Conflicts != 10 {
		t.Fatalf("got %d lines (conflicts %v), want 3 lines saying the commit had 10", len(lines), lines)
	}
	if st := j.Stats(); st.Written != 3 || st.Dropped != 7 {
		t.Errorf("stats %+v, want 3 written, 7 dropped", st)
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "conflicts.jsonl")
	const maxBytes = 2000
	j, err := Open(path, Options{MaxBytes: maxBytes, Keep: 2, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		j.Commit(commitEvent(fmt.Sprintf("r%03d.json", i), merge.Conflict{Path: []string{"k"}, Base: []byte("0"), Mine: []byte("1"), Theirs: []byte("2")}))
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	st := j.Stats()
	if st.Written != n || st.Dropped != 0 || st.Rotations == 0 {
		t.Fatalf("stats %+v, want %d written, none dropped, some rotations", st, n)
	}
	names, _ := filepath.Glob(path + "*")
	want := []string{path, path + ".1", path + ".2"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("files %v, want %v (Keep=2)", names, want)
	}
	// Oldest first: .2, .1, live. Lines must be the newest ones, in order,
	// with no gap, and no file past the bound.
	var records []string
	for _, p := range []string{path + ".2", path + ".1", path} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() > maxBytes {
			t.Errorf("%s has %d bytes, over the %d bound", p, info.Size(), maxBytes)
		}
		for _, e := range readLines(t, p) {
			records = append(records, e.Record)
		}
	}
	if len(records) == 0 || records[len(records)-1] != fmt.Sprintf("r%03d.json", n-1) {
		t.Fatalf("newest line missing: %v", records)
	}
	first := n - len(records)
	for i, r := range records {
		if want := fmt.Sprintf("r%03d.json", first+i); r != want {
			t.Fatalf("line %d is %s, want %s: rotation lost or reordered lines", i, r, want)
		}
	}

	// Reopening appends to the live file.
	before := len(readLines(t, path))
	j2, err := Open(path, Options{MaxBytes: maxBytes, Keep: 2, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	j2.Commit(commitEvent("again.json", merge.Conflict{Path: []string{"k"}, Base: []byte("0"), Mine: []byte("1"), Theirs: []byte("2")}))
	if err := j2.Close(); err != nil {
		t.Fatal(err)
	}
	if after := readLines(t, path); len(after) != before+1 && len(after) != 1 {
		t.Errorf("reopened journal has %d lines, want %d (appended) or 1 (rotated)", len(after), before+1)
	}
}

func TestKeepNone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conflicts.jsonl")
	j, err := Open(path, Options{MaxBytes: 500, Keep: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		j.Commit(commitEvent(fmt.Sprintf("r%d.json", i), merge.Conflict{Path: []string{"k"}, Mine: []byte("1")}))
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(path + "*")
	if len(names) != 1 {
		t.Errorf("files %v, want only the live journal", names)
	}
}

// A journal whose file does not drain (here a pipe nobody reads) must not
// hold up commits: they drop lines and count them, and nothing is lost from
// the count once the reader catches up.
func TestCommitNeverWaitsForTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "conflicts.jsonl")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	reader, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	j, err := Open(path, Options{Queue: 64, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	big := []byte(`"` + strings.Repeat("x", 400) + `"`)
	const commits = 5000
	for i := range commits {
		j.Commit(commitEvent(fmt.Sprintf("r%d.json", i), merge.Conflict{Path: []string{"k"}, Base: big, Mine: big, Theirs: big}))
	}
	// 5000 lines of about 1.6 KB are 8 MB: far more than the pipe (64 KiB),
	// the writer's buffer and a queue of 64 lines hold.
	if d := j.Stats().Dropped; d == 0 {
		t.Fatalf("no line dropped while the file was blocked: Commit must have waited")
	}

	drained := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, reader)
		drained <- n
	}()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	st := j.Stats()
	if st.Written+st.Dropped != commits {
		t.Errorf("written %d + dropped %d != %d lines given", st.Written, st.Dropped, commits)
	}
	// Close closed the writing end: the reader sees EOF.
	if n := <-drained; n == 0 {
		t.Errorf("reader got nothing")
	}
}

func TestCommitAfterCloseAndConcurrentClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conflicts.jsonl")
	j, err := Open(path, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	c := merge.Conflict{Path: []string{"k"}, Mine: []byte("1")}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				j.Commit(commitEvent("r.json", c))
			}
		})
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	st := j.Stats()
	if st.Written+st.Dropped != 8*200 {
		t.Errorf("written %d + dropped %d != 1600", st.Written, st.Dropped)
	}
	if got := uint64(len(readLines(t, path))); got != st.Written {
		t.Errorf("file has %d lines, stats say %d written", got, st.Written)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "journal") {
		t.Errorf("Open of a directory: %v, want a journal error", err)
	}
}

func TestAmbiguousBaseGetsALineOfItsOwn(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(filepath.Join(dir, "conflicts.jsonl"), Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ev := commitEvent("users/3.json")
	ev.Base, ev.BaseDistance, ev.RunnerUp, ev.Ambiguous = event.Process, 1, 2, true
	j.Commit(ev)
	ev = commitEvent("users/4.json", merge.Conflict{Path: []string{"n"}, Base: []byte(`0`), Mine: []byte(`1`), Theirs: []byte(`2`)})
	ev.Base, ev.BaseDistance, ev.RunnerUp = event.Thread, 1, 5
	j.Commit(ev)
	j.Close()
	lines := readLines(t, filepath.Join(dir, "conflicts.jsonl"))
	if len(lines) != 2 {
		t.Fatalf("%d lines, want the ambiguous commit's and the conflict's", len(lines))
	}
	a, c := lines[0], lines[1]
	if a.Record != "users/3.json" || a.Key != "" || a.Reason != "ambiguous base" || !a.Ambiguous || a.Conflicts != 0 ||
		a.BaseFrom != "process" || a.BaseDistance != 1 || a.RunnerUp != 2 {
		t.Errorf("ambiguous line: %+v", a)
	}
	if c.Ambiguous || c.BaseFrom != "thread" || c.BaseDistance != 1 || c.RunnerUp != 5 || c.Conflicts != 1 {
		t.Errorf("conflict line: %+v", c)
	}
}
