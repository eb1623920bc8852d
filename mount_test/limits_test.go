package mount_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The limit tests act as unprivileged users against a mount made with --allow-other, the way a user
// of the host trying to exhaust the root daemon would (issue 13). Each failed on the main it was
// written against: nothing bounded buffers, snapshots, descriptors or rejected/.

// limitsFixture mounts a world-writable backing directory with --allow-other and flags.
func limitsFixture(t *testing.T, spec daemonSpec, flags ...string) (h *harness, d *daemon, mnt, backing string) {
	h = newHarness(t)
	backing, mnt = h.path("backing"), h.path("mnt")
	if err := os.Chmod(backing, 0o1777); err != nil {
		t.Fatal(err)
	}
	d, err := h.launchMergefs(spec, backing, mnt, append([]string{"--allow-other"}, flags...)...)
	h.needMount(t, err)
	return h, d, mnt, backing
}

// procStatus reads a field (in kB) of /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// One user filling buffers stops at its share (EDQUOT) and two at the mount's budget (ENOSPC); the
// close after a refused write fails with EIO and writes nothing; meanwhile a third user's small
// commits work, and once the handles are closed the budget is free again.
func TestBufferBudgetStopsAUserNotTheOthers(t *testing.T) {
	const mib = 1 << 20
	h, d, mnt, backing := limitsFixture(t, daemonSpec{},
		"--max-buffered=5MiB", "--max-buffered-per-user=4MiB", "--max-record-size=4MiB")
	a := h.startSession(t, "hog", userA)
	b := h.startSession(t, "second", userB)
	c := h.startSession(t, "bystander", nil)
	smallCommit := func(name string) {
		t.Helper()
		p := filepath.Join(mnt, name)
		fd := c.must(map[string]any{"op": "open", "path": p, "flags": []string{"O_WRONLY", "O_CREAT", "O_TRUNC"}}).num("fd")
		c.must(map[string]any{"op": "write", "fd": fd, "data": `{"ok":true}`})
		c.must(map[string]any{"op": "close", "fd": fd})
		if got, err := os.ReadFile(filepath.Join(backing, name)); err != nil || string(got) != `{"ok":true}` {
			t.Errorf("bystander's commit of %s: backing holds %q (%v)", name, got, err)
		}
	}

	// userA: 1 MiB per handle, never closed, until refused.
	var fds []int64
	var refusedA syscall.Errno
	for i := range 10 {
		fd := a.must(map[string]any{"op": "open", "path": filepath.Join(mnt, fmt.Sprintf("a%d.json", i)),
			"flags": []string{"O_RDWR", "O_CREAT"}}).num("fd")
		if r := a.do(map[string]any{"op": "fill", "fd": fd, "size": mib}); r.errno() != 0 {
			refusedA = r.errno()
			if r := a.do(map[string]any{"op": "close", "fd": fd}); r.errno() != syscall.EIO {
				t.Errorf("close after a refused write: %v, want EIO", r)
			}
			if _, err := os.Stat(filepath.Join(backing, fmt.Sprintf("a%d.json", i))); err == nil {
				t.Errorf("a%d.json exists in the backing directory after its writes were refused", i)
			}
			break
		}
		fds = append(fds, fd)
	}
	t.Logf("userA buffered %d MiB, then: %v", len(fds), refusedA)
	if refusedA != syscall.EDQUOT {
		t.Errorf("userA's writes past its share: %v, want EDQUOT", refusedA)
	}
	if len(fds) > 4 {
		t.Errorf("userA buffered %d MiB with a 4 MiB share", len(fds))
	}
	smallCommit("c1.json")

	// userB: 3 MiB more takes the mount past 5 MiB (userA holds at least 3).
	fd := b.must(map[string]any{"op": "open", "path": filepath.Join(mnt, "b.json"), "flags": []string{"O_RDWR", "O_CREAT"}}).num("fd")
	if r := b.do(map[string]any{"op": "fill", "fd": fd, "size": 3 * mib}); r.errno() != syscall.ENOSPC {
		t.Errorf("userB's write past the mount's budget: %v, want ENOSPC", r)
	}
	if r := b.do(map[string]any{"op": "close", "fd": fd}); r.errno() != syscall.EIO {
		t.Errorf("userB's close after a refused write: %v, want EIO", r)
	}
	if _, err := os.Stat(filepath.Join(backing, "b.json")); err == nil {
		t.Errorf("b.json exists in the backing directory after its writes were refused")
	}
	smallCommit("c2.json")
	if out, _, err := h.run(t, clientTimeout, bins.mergefs, "status", "--state-dir", d.stateDir); err != nil || !strings.Contains(string(out), "write=") {
		t.Errorf("mergefs status shows no write refusals (%v):\n%s", err, out)
	}

	// The hog's handles are not commits yet (they are closed without fuss: 1 MiB of "x" is no JSON).
	for _, fd := range fds {
		a.do(map[string]any{"op": "close", "fd": fd})
	}
	h.waitNoOpenRecords(t, d)
	fd = b.must(map[string]any{"op": "open", "path": filepath.Join(mnt, "b.json"), "flags": []string{"O_RDWR", "O_CREAT"}}).num("fd")
	if r := b.do(map[string]any{"op": "fill", "fd": fd, "size": 3 * mib}); r.errno() != 0 {
		t.Errorf("userB's 3 MiB once userA's handles are closed: %v", r)
	}
	b.do(map[string]any{"op": "close", "fd": fd})
}

// A record larger than --max-record-size is refused at open (EFBIG) without being read, and a rename
// of such a file onto a record is refused too; the daemon's peak memory stays far below the sizes.
func TestOversizedRecordsAreNotRead(t *testing.T) {
	const size = 256 << 20
	h, d, mnt, backing := limitsFixture(t, daemonSpec{}, "--max-record-size=1MiB")
	for _, name := range []string{"big.json", "big.txt"} {
		if err := os.WriteFile(filepath.Join(backing, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(filepath.Join(backing, name), size); err != nil { // sparse: no disk
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(backing, "small.json"), []byte(`{"keep":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The user's own files, so that the rename is allowed and only the size can refuse it.
	for _, name := range []string{"big.txt", "small.json"} {
		if err := os.Chown(filepath.Join(backing, name), int(userA.Uid), int(userA.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	pid := d.cmd.Process.Pid
	before := procStatus(t, pid, "VmHWM")
	a := h.startSession(t, "user", userA)
	for range 8 {
		if r := a.do(map[string]any{"op": "open", "path": filepath.Join(mnt, "big.json"), "flags": []string{"O_RDONLY"}}); r.errno() != syscall.EFBIG {
			t.Fatalf("open of a %d MiB record with a 1 MiB limit: %v, want EFBIG", size>>20, r)
		}
	}
	if r := a.do(map[string]any{"op": "rename", "src": filepath.Join(mnt, "big.txt"), "dst": filepath.Join(mnt, "small.json")}); r.errno() == 0 {
		t.Errorf("rename of a %d MiB file onto a record succeeded", size>>20)
	} else {
		t.Logf("rename of the big file onto a record: %v", r)
	}
	if got, _ := os.ReadFile(filepath.Join(backing, "small.json")); string(got) != `{"keep":1}` {
		t.Errorf("small.json after the refused rename: %q", got)
	}
	after := procStatus(t, pid, "VmHWM")
	t.Logf("daemon peak RSS %d MiB before, %d MiB after", before>>20, after>>20)
	if after-before > 64<<20 {
		t.Errorf("daemon's peak RSS grew by %d MiB refusing a %d MiB record", (after-before)>>20, size>>20)
	}
}

// One user opening files until refused gets EMFILE at its share of the daemon's descriptors, and
// another user's opens keep working. The daemon runs with a descriptor limit of 1024 (the usual
// default), which on the main this was written against the flood exhausted for everybody.
func TestDescriptorFloodStopsAtTheUser(t *testing.T) {
	needTools(t, "prlimit")
	h, d, mnt, backing := limitsFixture(t, daemonSpec{wrap: []string{"prlimit", "--nofile=1024:1024", "--"}})
	if err := os.WriteFile(filepath.Join(backing, "shared.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(mnt, "shared.txt")
	total, stopped := 0, syscall.Errno(0)
	var floods []*session
	// Each session process may hold 1024 descriptors itself.
	for i := 0; i < 3 && stopped == 0; i++ {
		s := h.startSession(t, fmt.Sprintf("flood%d", i), userA)
		floods = append(floods, s)
		r := s.must(map[string]any{"op": "flood", "path": p, "count": 900})
		total += int(r.num("opened"))
		stopped = syscall.Errno(r.num("stopped"))
	}
	t.Logf("userA opened %d descriptors, then: %v (daemon holds %d)", total, stopped, countFDs(d.cmd.Process.Pid))
	if stopped != syscall.EMFILE {
		t.Errorf("userA's flood ended with %v after %d opens, want EMFILE", stopped, total)
	}
	b := h.startSession(t, "other", userB)
	for i := range 20 {
		if r := b.do(map[string]any{"op": "flood", "path": p, "count": 1}); r.num("opened") != 1 {
			t.Fatalf("userB's open %d during userA's flood: %v", i, r)
		}
	}
	r := b.do(map[string]any{"op": "cat", "path": filepath.Join(mnt, "shared.txt")})
	if r.errno() != 0 || r.str("data") != "x" {
		t.Errorf("userB's read during userA's flood: %v", r)
	}
	// The flood's descriptors are released (asynchronously) once its processes are gone: the
	// harness's leak check at the end must not see them.
	for _, s := range append(floods, b) {
		s.end()
	}
	deadline := time.Now().Add(clientTimeout)
	for countFDs(d.cmd.Process.Pid) > d.fdBaseline+fdLeakMargin {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon still holds %d descriptors %v after the flood ended", countFDs(d.cmd.Process.Pid), clientTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Repeated rejected commits keep <state-dir>/rejected under --rejected-max, each file under
// --rejected-file-max, and the metric counts what was dropped.
func TestRejectedDirectoryIsBounded(t *testing.T) {
	const kib = 1 << 10
	h, d, mnt, _ := limitsFixture(t, daemonSpec{}, "--rejected-max=1MiB", "--rejected-file-max=256KiB")
	a := h.startSession(t, "user", userA)
	for i := range 20 {
		fd := a.must(map[string]any{"op": "open", "path": filepath.Join(mnt, fmt.Sprintf("r%d.json", i)), "flags": []string{"O_WRONLY", "O_CREAT"}}).num("fd")
		a.must(map[string]any{"op": "fill", "fd": fd, "size": 512 * kib})
		if r := a.do(map[string]any{"op": "close", "fd": fd}); r.errno() != syscall.EIO {
			t.Fatalf("close of invalid content: %v, want EIO", r)
		}
	}
	dir := filepath.Join(d.stateDir, "rejected")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		total += info.Size()
		if info.Size() > 256*kib {
			t.Errorf("%s holds %d bytes, past --rejected-file-max", e.Name(), info.Size())
		}
		if !strings.Contains(e.Name(), "of-524288-bytes") {
			t.Errorf("%s: the name does not give the full size (524288)", e.Name())
		}
	}
	t.Logf("rejected/ holds %d files, %d KiB", len(entries), total/kib)
	if total > 1<<20 || len(entries) == 0 {
		t.Errorf("rejected/ holds %d bytes in %d files, want 1..%d bytes", total, len(entries), 1<<20)
	}
	out, _, err := h.run(t, clientTimeout, bins.mergefs, "status", "--state-dir", d.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "dropped by its bounds") || strings.Contains(string(out), "(0 dropped by its bounds)") {
		t.Errorf("mergefs status shows nothing dropped from rejected/:\n%s", out)
	}
}
