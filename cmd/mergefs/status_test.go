package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mergefs/mergefs/backing"
	mergefs "github.com/mergefs/mergefs/fs"
	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/journal"
	"github.com/mergefs/mergefs/merge"
)

var fakeStats = mergefs.Stats{
	Commits: 1234, Unchanged: 5, Merges: 234, Grouped: 57, Conflicts: 7, Rejected: 3, Failed: 2,
	BaseFallbacks: 11, OpenRecords: 4, ReadVersions: 17, ReadBytes: 36045, ReadsEvicted: 9,
	CachedOpens: 812, CacheRetries: 6, FileLocks: 3, LockWaiters: 1,
}

// fakeMetrics is the daemon's real exporter fed with known numbers.
func fakeMetrics(t *testing.T) *metrics {
	t.Helper()
	m := newMetrics()
	err := m.register(func() mergefs.Stats { return fakeStats },
		func() journal.Stats { return journal.Stats{Written: 6, Dropped: 1} },
		"/srv/backing", "/srv/data", false, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		m.Commit(event.Commit{Outcome: event.Committed, Duration: time.Millisecond, LockWait: time.Duration(i) * time.Microsecond})
	}
	m.Commit(event.Commit{Outcome: event.Invalid, Duration: 3 * time.Second})
	return m
}

func serveUnix(t *testing.T, socket string, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// statusRows parses the "  name   number  note" rows of mergefs status.
func statusRows(t *testing.T, out string) map[string]int64 {
	t.Helper()
	rows := map[string]int64{}
	re := regexp.MustCompile(`^  (\S+(?: \S+)*)\s{2,}(\d+)  `)
	for _, line := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[2], 10, 64)
			rows[m[1]] = n
		}
	}
	return rows
}

func checkStatusOutput(t *testing.T, out string) {
	t.Helper()
	want := map[string]int64{
		"commits": 1234, "unchanged": 5, "merges": 234, "grouped": 57, "conflicts": 7, "rejected": 3, "failed": 2,
		"base fallbacks": 11, "open records": 4, "read versions": 17, "cached opens": 812, "cache retries": 6, "file locks": 3,
	}
	got := statusRows(t, out)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %d, want %d\n%s", k, got[k], v, out)
		}
	}
	for _, s := range []string{
		"mergefs at /srv/data (backing /srv/backing)",
		"journaled 6, not journaled 1",
		"35.2 KiB of 64.0 MiB, 9 evicted",
		// 100 commits of 1ms and one of 3s: the p99 is the 1ms bucket's bound,
		// the mean is pulled up by the slow one.
		"commit time     mean 30.69ms, p99 <= 1.95ms over 101 commits",
		// The daemon's own build, from mergefs_build_info.
		"  version         " + readBuildInfo().Version + ", revision " + readBuildInfo().revisionLabel() + ", " + runtime.Version() + "\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestStatusOverStateDirSocket(t *testing.T) {
	dir := t.TempDir()
	m := fakeMetrics(t)
	serveUnix(t, filepath.Join(dir, statusSocketName), promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	var stdout, stderr bytes.Buffer
	if rc := runStatus([]string{"--state-dir", dir}, &stdout, &stderr); rc != 0 {
		t.Fatalf("rc %d: %s", rc, stderr.String())
	}
	checkStatusOutput(t, stdout.String())
}

func TestStatusOverMetricsAddress(t *testing.T) {
	m := fakeMetrics(t)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, addr := range []string{strings.TrimPrefix(srv.URL, "http://"), srv.URL, srv.URL + "/metrics"} {
		var stdout, stderr bytes.Buffer
		if rc := runStatus([]string{"--metrics", addr}, &stdout, &stderr); rc != 0 {
			t.Fatalf("--metrics %s: rc %d: %s", addr, rc, stderr.String())
		}
		checkStatusOutput(t, stdout.String())
	}
}

func TestStatusErrors(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		rc := runStatus(args, &stdout, &stderr)
		return rc, stderr.String()
	}
	if rc, msg := run("--state-dir", dir); rc != 1 || !strings.Contains(msg, "no mergefs daemon serves state directory") {
		t.Errorf("no socket: rc %d, %q", rc, msg)
	}

	// A socket left by a daemon that died: nobody listens.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, statusSocketName), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if rc, msg := run("--state-dir", dir); rc != 1 || !strings.Contains(msg, "is gone") {
		t.Errorf("stale socket: rc %d, %q", rc, msg)
	}

	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "# TYPE something_else counter\nsomething_else 1\n")
	}))
	defer other.Close()
	if rc, msg := run("--metrics", other.URL); rc != 1 || !strings.Contains(msg, "no mergefs metrics") {
		t.Errorf("not mergefs: rc %d, %q", rc, msg)
	}
	for _, args := range [][]string{{"a", "b"}, {"--state-dir", dir, "a"}, {"--metrics", "127.0.0.1:1", "a"}} {
		if rc, _ := run(args...); rc != 2 {
			t.Errorf("%v: rc %d, want 2", args, rc)
		}
	}
	// A mountpoint whose daemon is not running: its default state directory is named.
	if rc, msg := run(filepath.Join(dir, "srv", "data")); rc != 1 || !strings.Contains(msg, "no mergefs daemon serves state directory "+defaultStateDir(filepath.Join(dir, "srv", "data"))) {
		t.Errorf("mountpoint without a daemon: rc %d, %q", rc, msg)
	}
	var stdout, stderr bytes.Buffer
	if rc := runStatus([]string{"--help"}, &stdout, &stderr); rc != 0 || !strings.Contains(stdout.String(), "mergefs status --metrics ADDR") || stderr.Len() != 0 {
		t.Errorf("--help: rc %d, stdout %q, stderr %q; want usage once, on stdout", rc, stdout.String(), stderr.String())
	}
}

func silentLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The daemon side without FUSE: a real fs.FS (not mounted) behind
// startOperations. Commits observed through it reach the journal and the
// metrics; status reads them over the socket; the notifications go out; and
// close releases everything.
func TestOperationsLifecycle(t *testing.T) {
	stateDir := t.TempDir()
	notifyAddr, recv := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	t.Setenv("NOTIFY_SOCKET", notifyAddr)

	ops, err := startOperations(stateDir, "127.0.0.1:0", silentLogger())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			ops.close()
		}
	}()
	if _, err := startOperations(stateDir, "", silentLogger()); err == nil || !strings.Contains(err.Error(), "in use by another mergefs daemon (pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second daemon on one state directory: %v", err)
	}

	backingDir := t.TempDir()
	store, err := backing.Open(backingDir, backing.Options{Logger: silentLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	fsys, _, err := mergefs.New(mergefs.Config{Store: store, Logger: silentLogger(), Observer: ops.observer()})
	if err != nil {
		t.Fatal(err)
	}
	ops.mounted(fsys, backingDir, "/mnt/x", true, 1<<20)
	if got := recv(); !strings.HasPrefix(got, "READY=1\n") {
		t.Errorf("after mounted: %q, want READY=1", got)
	}

	ops.observer().Commit(event.Commit{
		Record: "u/1.json", Outcome: event.Committed, Duration: time.Millisecond,
		Writer:    event.Writer{PID: 7, Comm: "worker"},
		Conflicts: []merge.Conflict{{Path: []string{"a"}, Base: []byte("1"), Mine: []byte("2"), Theirs: []byte("3")}},
	})
	var stdout, stderr bytes.Buffer
	if rc := runStatus([]string{"--state-dir", stateDir}, &stdout, &stderr); rc != 0 {
		t.Fatalf("status: rc %d: %s", rc, stderr.String())
	}
	if !strings.Contains(stdout.String(), "mergefs at /mnt/x (in place)") || !strings.Contains(stdout.String(), "over 1 commits") {
		t.Errorf("status output:\n%s", stdout.String())
	}
	var tcp string
	for _, ln := range ops.listeners {
		if ln.Addr().Network() == "tcp" {
			tcp = ln.Addr().String()
		}
	}
	resp, err := http.Get("http://" + tcp + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(metricCommitSeconds+`_count{outcome="committed"} 1`)) {
		t.Errorf("--metrics endpoint lacks the commit:\n%s", body)
	}

	ops.stopping("unmounting on terminated")
	if got := recv(); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Errorf("after stopping: %q, want STOPPING=1", got)
	}
	ops.close()
	closed = true

	// The journal was flushed on close, the socket is gone, the state
	// directory is free for the next daemon.
	data, err := os.ReadFile(filepath.Join(stateDir, journalName))
	if err != nil || !bytes.Contains(data, []byte(`"record":"u/1.json","key":"/a"`)) {
		t.Errorf("journal after close: %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, statusSocketName)); !os.IsNotExist(err) {
		t.Errorf("status socket still there after close: %v", err)
	}
	again, err := startOperations(stateDir, "", silentLogger())
	if err != nil {
		t.Fatalf("state directory not released: %v", err)
	}
	again.close()
}

func TestStartOperationsPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := startOperations(t.TempDir(), ln.Addr().String(), silentLogger()); err == nil || !strings.Contains(err.Error(), "--metrics") {
		t.Errorf("taken port: %v, want a --metrics error before mounting", err)
	}
}
