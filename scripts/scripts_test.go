// Package scripts_test checks what scripts/ gives operators, with the real
// binary: the install script, the systemd unit (systemd-analyze verify), the
// notify protocol of a real mount, and the mount(8) helper through mount(8)
// itself and /etc/fstab.
//
// Tests that mount need root and /dev/fuse: they skip without them, except
// with MERGEFS_REQUIRE_FUSE=1 (CI), where they fail. The mount helper runs in
// private mount and pid namespaces (unshare), so that mount(8) finds the
// helper without touching the host's /sbin or /etc/fstab, and so that every
// mount and process it made is gone when the namespace ends, whatever
// happens.
package scripts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mergefs/mergefs/internal/mountinfo"
	"github.com/mergefs/mergefs/internal/stamp"
)

var (
	moduleRoot string
	mergefsBin string
	buildErr   error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	moduleRoot = filepath.Dir(wd)
	dir, err := os.MkdirTemp("", "mergefs-scripts-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	mergefsBin = filepath.Join(dir, "mergefs")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{"build", "-o", mergefsBin}, stamp.BuildFlags(moduleRoot)...)
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/mergefs")...)
	cmd.Dir = moduleRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("go build ./cmd/mergefs: %w\n%s", err, out)
	}
	return m.Run()
}

func needBinary(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func inCI() bool { return os.Getenv("CI") != "" || os.Getenv("MERGEFS_REQUIRE_FUSE") == "1" }

// needFUSE stops a test that cannot mount here: a skip, or a failure in CI.
func needFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "mounting needs root"
	} else if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		why = err.Error()
	} else {
		f.Close()
	}
	if why == "" {
		return
	}
	if os.Getenv("MERGEFS_REQUIRE_FUSE") == "1" {
		t.Fatalf("MERGEFS_REQUIRE_FUSE=1 but: %s", why)
	}
	t.Skip(why)
}

// runCmd runs a command with a timeout, in its own process group, killed
// with its group on timeout.
func runCmd(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", name, timeout, err)
	}
	return out.String(), err
}

// installInto runs scripts/install.sh with DESTDIR=root and the test binary.
func installInto(t *testing.T, root string) string {
	t.Helper()
	out, err := runCmd(t, 2*time.Minute, []string{"DESTDIR=" + root, "MERGEFS_BIN=" + mergefsBin},
		filepath.Join(moduleRoot, "scripts", "install.sh"))
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	return out
}

func TestInstallIsIdempotent(t *testing.T) {
	needBinary(t)
	root := t.TempDir()
	first := installInto(t, root)
	files := map[string]os.FileMode{
		"/usr/local/bin/mergefs":                 0o755,
		"/etc/systemd/system/mergefs@.service":   0o644,
		"/sbin/mount.fuse.mergefs":               0o755,
		"/usr/local/share/doc/mergefs/README.md": 0o644,
	}
	for path, mode := range files {
		if !strings.Contains(first, "installed  "+path) {
			t.Errorf("first run did not install %s:\n%s", path, first)
		}
		st, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	want, _ := os.ReadFile(filepath.Join(moduleRoot, "scripts", "mount.fuse.mergefs"))
	if got, _ := os.ReadFile(filepath.Join(root, "sbin/mount.fuse.mergefs")); !bytes.Equal(got, want) {
		t.Errorf("installed helper differs from scripts/mount.fuse.mergefs")
	}

	second := installInto(t, root)
	if strings.Contains(second, "installed ") {
		t.Errorf("second run changed files:\n%s", second)
	}
	for path := range files {
		if !strings.Contains(second, "unchanged  "+path) {
			t.Errorf("second run did not report %s unchanged:\n%s", path, second)
		}
	}
	// A changed file is replaced, and nothing is left behind.
	os.WriteFile(filepath.Join(root, "sbin/mount.fuse.mergefs"), []byte("old"), 0o755)
	third := installInto(t, root)
	if !strings.Contains(third, "installed  /sbin/mount.fuse.mergefs") {
		t.Errorf("stale helper not replaced:\n%s", third)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "*/*.new.*"))
	deeper, _ := filepath.Glob(filepath.Join(root, "*/*/*/*.new.*"))
	if len(leftovers)+len(deeper) > 0 {
		t.Errorf("temporary files left: %v %v", leftovers, deeper)
	}
}

// verifyRoot is an installed tree that systemd-analyze can verify: the
// system's own units (for sysinit.target and friends) plus ours.
func verifyRoot(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if inCI() {
			t.Fatalf("systemd-analyze is missing in CI (.ci/run installs systemd): %v", err)
		}
		t.Skipf("systemd-analyze not installed: %v", err)
	}
	needBinary(t)
	root := t.TempDir()
	installInto(t, root)
	systemUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(systemUnits); err != nil {
		systemUnits = "/lib/systemd/system"
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(t, time.Minute, nil, "cp", "-r", systemUnits, filepath.Join(root, "usr/lib/systemd/system")); err != nil {
		t.Fatalf("copy system units: %v\n%s", err, out)
	}
	// The unit's ExecReload runs the system's /bin/kill.
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(t, time.Minute, nil, "cp", "/bin/kill", filepath.Join(root, "bin/kill")); err != nil {
		t.Fatalf("copy /bin/kill: %v\n%s", err, out)
	}
	return root
}

// verify runs systemd-analyze verify on units of root; any output counts as
// a problem, since unknown keys and bad values are only warnings to it.
func verify(t *testing.T, root string, units ...string) (string, error) {
	t.Helper()
	args := append([]string{"verify", "--root=" + root, "--man=no", "--generators=no"}, units...)
	out, err := runCmd(t, time.Minute, nil, "systemd-analyze", args...)
	if err == nil && strings.TrimSpace(out) != "" {
		err = fmt.Errorf("systemd-analyze printed warnings")
	}
	return out, err
}

const workerUnit = `[Unit]
Description=API worker using /srv/data through mergefs
BindsTo=mergefs@srv-data.service
After=mergefs@srv-data.service

[Service]
ExecStart=/usr/local/bin/mergefs --help

[Install]
WantedBy=multi-user.target
`

func TestUnitVerifies(t *testing.T) {
	root := verifyRoot(t)
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/api-worker.service"), []byte(workerUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	instance, err := runCmd(t, 10*time.Second, nil, "systemd-escape", "--path", "--template=mergefs@.service", "/srv/data")
	if err != nil {
		t.Fatalf("systemd-escape: %v %s", err, instance)
	}
	instance = strings.TrimSpace(instance)
	if instance != "mergefs@srv-data.service" {
		t.Fatalf("instance %q", instance)
	}
	if out, err := verify(t, root, instance, "api-worker.service"); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The check can fail: a misspelt setting, and an ExecStart binary that
	// is not installed.
	unit := filepath.Join(root, "etc/systemd/system/mergefs@.service")
	good, _ := os.ReadFile(unit)
	os.WriteFile(unit, bytes.Replace(good, []byte("Type=notify"), []byte("Type=notfy"), 1), 0o644)
	if out, err := verify(t, root, instance); err == nil {
		t.Errorf("a unit with Type=notfy verified clean:\n%s", out)
	}
	os.WriteFile(unit, good, 0o644)
	os.Remove(filepath.Join(root, "usr/local/bin/mergefs"))
	if out, err := verify(t, root, instance); err == nil || !strings.Contains(out, "/usr/local/bin/mergefs") {
		t.Errorf("missing binary not reported: %v\n%s", err, out)
	}
}

func TestUnitSettings(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(moduleRoot, "scripts", "mergefs@.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, line := range []string{
		"Type=notify",
		"Restart=on-failure",
		"RequiresMountsFor=%f",
		"ExecStart=/usr/local/bin/mergefs mount --state-dir=${STATE_DIRECTORY} $MERGEFS_OPTS %f",
	} {
		if !strings.Contains(unit, "\n"+line+"\n") {
			t.Errorf("unit lacks %q", line)
		}
	}
	// Any of these would put the mount in a private namespace, invisible to
	// the workers.
	for _, key := range []string{"PrivateTmp=", "ProtectSystem=", "PrivateMounts=", "ProtectHome=", "PrivateDevices="} {
		if strings.Contains(unit, "\n"+key) {
			t.Errorf("unit sets %s", key)
		}
	}
}

// The daemon tells systemd READY=1 only once the mount is live, and
// STOPPING=1 when asked to stop; it exits 0 with the mount gone.
func TestMountNotifiesSystemd(t *testing.T) {
	needBinary(t)
	needFUSE(t)
	dir := t.TempDir()
	backingDir, mnt, state := filepath.Join(dir, "b"), filepath.Join(dir, "m"), filepath.Join(dir, "state")
	for _, d := range []string{backingDir, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sockName := fmt.Sprintf("@mergefs-scripts-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockName, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()

	cmd := exec.Command(mergefsBin, "mount", "--state-dir", state, backingDir, mnt)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockName)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if mounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})

	recv := func() string {
		buf := make([]byte, 4096)
		sock.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v\n%s", err, log.String())
		}
		return string(buf[:n])
	}
	msg := recv()
	if !strings.HasPrefix(msg, "READY=1\n") {
		t.Fatalf("first notification %q, want READY=1", msg)
	}
	if !mounted(mnt) {
		t.Fatalf("READY=1 before the mount is at %s", mnt)
	}
	// Usable: a client process writes a record through it.
	if out, err := runCmd(t, 20*time.Second, nil, "sh", "-c", `echo '{"a":1}' > "$0"`, filepath.Join(mnt, "r.json")); err != nil {
		t.Fatalf("write through the mount: %v %s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(backingDir, "r.json")); strings.TrimSpace(string(got)) != `{"a":1}` {
		t.Errorf("backing record %q", got)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if msg := recv(); !strings.HasPrefix(msg, "STOPPING=1\n") {
		t.Errorf("notification after SIGTERM %q, want STOPPING=1", msg)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("daemon exit: %v\n%s", err, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not exit after SIGTERM\n%s", log.String())
	}
	if mounted(mnt) {
		t.Errorf("still mounted after the daemon exited")
	}
}

// mounted reports whether the topmost mount at dir is mergefs.
func mounted(dir string) bool {
	m, ok, err := mountinfo.At(dir)
	return err == nil && ok && m.FSType == "fuse.mergefs"
}

// nsScript runs a bash script as root in new mount and pid namespaces in
// which mount(8) finds scripts/mount.fuse.mergefs as /sbin's helper. When the
// script ends (or times out) the kernel kills every process of the pid
// namespace and drops its mounts: nothing outlives the test.
func nsScript(t *testing.T, script string) string {
	t.Helper()
	needBinary(t)
	needFUSE(t)
	for _, tool := range []string{"unshare", "mount", "umount", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			if inCI() {
				t.Fatalf("%s missing: %v", tool, err)
			}
			t.Skipf("%s missing: %v", tool, err)
		}
	}
	work := t.TempDir()
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	prelude := `set -euo pipefail
fail() { echo "FAIL: $*"; exit 1; }
# The namespace starts with a copy of every mount of the host, and a copied FUSE mount keeps its
# connection alive for as long as the namespace lives: another test's daemon could not finish its
# unmount meanwhile. Detach them here first.
awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) ~ /^fuse/) print $5; break }}' /proc/self/mountinfo |
  sort -r | while read -r m; do umount -l "$(printf '%b' "$m")" 2>/dev/null || true; done
sbin=$(realpath /sbin)
mkdir -p "$W/helpers"
cp "$HELPER" "$W/helpers/mount.fuse.mergefs"
# mount(8) looks for /sbin/mount.fuse.mergefs: add it to this namespace's view of /sbin
# (or, without overlayfs, put a /sbin holding only the helper there: mount(8) is in /usr/bin).
if ! mount -t overlay overlay -o "lowerdir=$W/helpers:$sbin" "$sbin" 2>/dev/null; then
  mount -t tmpfs tmpfs "$sbin"
  cp "$HELPER" "$sbin/mount.fuse.mergefs"
fi
[ -x /sbin/mount.fuse.mergefs ] || fail "helper not in /sbin"
# same_json FILE JSON: the file holds that JSON value (a commit with nobody in between keeps the
# writer's formatting).
same_json() { python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.loads(sys.argv[2]))' "$1" "$2"; }
is_mounted() { [ "$(findmnt -n -o FSTYPE --mountpoint "$1" | tail -n1)" = fuse.mergefs ]; }
daemon_pid() { sed -n 's/.*daemon pid \([0-9]*\).*/\1/p' "$1" | tail -n1; }
# wait_gone PID: the daemon exits once unmounted.
wait_gone() { for _ in $(seq 200); do [ -d "/proc/$1" ] || return 0; sleep 0.05; done; fail "daemon $1 still running"; }
`
	out, err := runCmd(t, 3*time.Minute,
		[]string{"W=" + work, "HELPER=" + filepath.Join(moduleRoot, "scripts", "mount.fuse.mergefs"), "MERGEFS_BIN=" + mergefsBin},
		"unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
		"bash", "-c", prelude+script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

func TestMountHelperTwoDirectories(t *testing.T) {
	out := nsScript(t, `
mkdir "$W/b" "$W/m"
echo '{"a":0,"b":0}' > "$W/b/r.json"
mount -t fuse.mergefs -o 'records=*.json:*.rec,on-conflict=reject,log-level=debug' \
  -o "state-dir=$W/state,log=$W/m.log" "$W/b" "$W/m"
is_mounted "$W/m" || fail "not mounted after mount returned"
pid=$(daemon_pid "$W/m.log")
[ -n "$pid" ] || fail "no daemon pid in the log"

# Two processes read, then each writes its own field: both survive.
timeout 20 python3 - "$W/m/r.json" <<'EOF'
import json, subprocess, sys
p = sys.argv[1]
mine = json.load(open(p))
subprocess.run([sys.executable, "-c", "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d['b']=2; json.dump(d, open(p,'w'))", p], check=True)
mine["a"] = 1
with open(p, "w") as f:
    json.dump(mine, f)
EOF
same_json "$W/b/r.json" '{"a":1,"b":2}' || fail "merged record: $(cat "$W/b/r.json")"

# records=*.json:*.rec reached the daemon: x.rec is a record, and invalid JSON is refused.
# (python, not sh: a shell ignores the error of close.)
if timeout 20 python3 -c 'import sys
with open(sys.argv[1], "w") as f: f.write("not json")' "$W/m/x.rec" 2>/dev/null; then
  fail "invalid x.rec accepted"
fi
ls "$W/state/rejected/" | grep -q 'x.rec' || fail "rejected content not kept"
# on-conflict=reject reached the daemon: a conflicting write fails.
timeout 20 python3 - "$W/m/r.json" <<'EOF' || fail "reject policy not in effect"
import json, subprocess, sys
p = sys.argv[1]
mine = json.load(open(p))
subprocess.run([sys.executable, "-c", "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d['a']=10; json.dump(d, open(p,'w'))", p], check=True)
mine["a"] = 20
try:
    with open(p, "w") as f:
        json.dump(mine, f)
except OSError as e:
    sys.exit(0 if e.errno == 5 else 1)
sys.exit(1)
EOF
grep -q '"key":"/a"' "$W/state/conflicts.jsonl" || fail "conflict not journaled"
grep -q 'level=DEBUG' "$W/m.log" || fail "log-level=debug not passed"
"$MERGEFS_BIN" status --state-dir "$W/state" | grep -E '^  commits +3 ' || fail "status: $("$MERGEFS_BIN" status --state-dir "$W/state" 2>&1)"

umount "$W/m"
is_mounted "$W/m" && fail "still mounted"
wait_gone "$pid"
echo DONE
`)
	if !strings.Contains(out, "DONE") {
		t.Fatalf("script did not finish:\n%s", out)
	}
}

func TestMountHelperFstabInPlace(t *testing.T) {
	out := nsScript(t, `
mkdir "$W/data"
echo '{"n":1,"m":1}' > "$W/data/u.json"
printf '%s %s fuse.mergefs nofail,_netdev,x-systemd.after=network.target,state-dir=%s,log=%s 0 0\n' \
  "$W/data" "$W/data" "$W/state" "$W/data.log" > "$W/fstab"
mount --bind "$W/fstab" /etc/fstab
mount "$W/data"
is_mounted "$W/data" || fail "fstab mount: not mounted"
pid=$(daemon_pid "$W/data.log")
grep -q "mount --state-dir=$W/state $W/data\$" "$W/data.log" || fail "not the in-place form: $(grep starting "$W/data.log")"

timeout 20 python3 - "$W/data/u.json" <<'EOF'
import json, subprocess, sys
p = sys.argv[1]
mine = json.load(open(p))
subprocess.run([sys.executable, "-c", "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d['m']=2; json.dump(d, open(p,'w'))", p], check=True)
mine["n"] = 2
with open(p, "w") as f:
    json.dump(mine, f)
EOF
# A second mount of the same fstab entry is refused and leaves the first alone.
if mount "$W/data" 2>/dev/null; then fail "mounted twice"; fi
is_mounted "$W/data" || fail "first mount gone"

umount "$W/data"
wait_gone "$pid"
# Below the mount, the original directory holds the merged record.
same_json "$W/data/u.json" '{"n":2,"m":2}' || fail "record after unmount: $(cat "$W/data/u.json")"
echo DONE
`)
	if !strings.Contains(out, "DONE") {
		t.Fatalf("script did not finish:\n%s", out)
	}
}

// Without state-dir=, the helper leaves the state directory to mergefs
// mount's default, /var/lib/mergefs/<mountpoint as systemd-escape --path
// escapes it>, and logs to /var/log/mergefs/<the same>.log. The helper is
// run directly, as mount(8) runs it, not in a namespace of its own: a new
// mount namespace would hold a copy of every FUSE mount of the host (other
// tests' too) until it ends, and keep them from going away on unmount.
func TestMountHelperDefaultStateDir(t *testing.T) {
	needBinary(t)
	needFUSE(t)
	w := workDir(t)
	mnt := filepath.Join(w, "my data-é.1")
	mkdirs(t, 0o755, mnt)
	name := systemdEscapePath(t, mnt)
	state, logFile := "/var/lib/mergefs/"+name, "/var/log/mergefs/"+name+".log"
	for _, p := range []string{state, logFile} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists before the test", p)
		}
	}
	removeStateDirs(t, state)
	_, logRootErr := os.Stat("/var/log/mergefs")
	t.Cleanup(func() {
		os.Remove(logFile)
		if logRootErr != nil {
			os.Remove("/var/log/mergefs")
		}
	})
	// Whatever happens, the mount goes, and with it the daemon.
	t.Cleanup(func() {
		if m, ok, _ := mountinfo.At(mnt); ok && m.FSType == "fuse.mergefs" {
			t.Errorf("mount left at %s", mnt)
			mountinfo.AbortAndDetach(m)
		}
	})
	out, err := runCmd(t, time.Minute, []string{"MERGEFS_BIN=" + mergefsBin}, filepath.Join(moduleRoot, "scripts", "mount.fuse.mergefs"), mnt, mnt)
	if err != nil {
		t.Fatalf("mount.fuse.mergefs %s %s: %v\n%s", mnt, mnt, err, out)
	}
	if !mounted(mnt) {
		t.Fatalf("not mounted after the helper returned")
	}
	logged, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("no log at %s: %v", logFile, err)
	}
	if strings.Contains(string(logged), "--state-dir") {
		t.Errorf("the helper chose a state directory:\n%s", logged)
	}
	if _, err := os.Stat(filepath.Join(state, "mergefs.sock")); err != nil {
		t.Errorf("no status socket in %s: %v", state, err)
	}
	if out, err := mergefsCmd(t, "status", mnt); err != nil || !strings.Contains(out, "mergefs at "+mnt+" (in place)") {
		t.Errorf("mergefs status %s: %v\n%s", mnt, err, out)
	}
	pid := regexp.MustCompile(`daemon pid (\d+)`).FindStringSubmatch(string(logged))
	if out, err := runCmd(t, 30*time.Second, nil, "umount", mnt); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	if pid != nil {
		for i := 0; i < 200; i++ {
			if _, err := os.Stat("/proc/" + pid[1]); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("daemon %s still running after umount", pid[1])
	} else {
		t.Errorf("no daemon pid in the log:\n%s", logged)
	}
}

func TestMountHelperErrors(t *testing.T) {
	out := nsScript(t, `
mkdir "$W/b" "$W/m"
# An unknown option is refused before anything starts.
if mount -t fuse.mergefs -o bogus=1 "$W/b" "$W/m" 2>"$W/err"; then fail "bogus option accepted"; fi
grep -q "unknown option bogus=1" "$W/err" || fail "message: $(cat "$W/err")"
# ... unless sloppy (-s).
mount -s -t fuse.mergefs -o "bogus=1,state-dir=$W/s1,log=$W/s.log" "$W/b" "$W/m" 2>"$W/err" || fail "sloppy mount failed: $(cat "$W/err")"
is_mounted "$W/m" || fail "sloppy: not mounted"
pid=$(daemon_pid "$W/s.log")
umount "$W/m"
wait_gone "$pid"
# A daemon that fails before mounting makes mount fail with its reason, and leaves nothing.
if mount -t fuse.mergefs -o "state-dir=$W/m/inside,log=$W/f.log" "$W/b" "$W/m" 2>"$W/err"; then fail "bad state dir accepted"; fi
grep -q "inside the mount" "$W/err" || fail "daemon's reason not shown: $(cat "$W/err")"
is_mounted "$W/m" && fail "mounted anyway"
# mount -f (fake) starts nothing.
mount -f -t fuse.mergefs -o "state-dir=$W/s2,log=$W/fake.log" "$W/b" "$W/m"
is_mounted "$W/m" && fail "fake mount mounted"
[ ! -e "$W/fake.log" ] || fail "fake mount started a daemon"
echo DONE
`)
	if !strings.Contains(out, "DONE") {
		t.Fatalf("script did not finish:\n%s", out)
	}
}

// The README's flag list is `mergefs mount --help`'s, word for word.
func TestReadmeFlagsMatchHelp(t *testing.T) {
	needBinary(t)
	cmd := exec.Command(mergefsBin, "mount", "--help")
	help, err := cmd.Output()
	if err != nil {
		t.Fatalf("mergefs mount --help: %v", err)
	}
	i := bytes.Index(help, []byte("Flags:\n"))
	if i < 0 {
		t.Fatalf("no Flags: section in --help:\n%s", help)
	}
	flags := help[i:]
	readme, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, flags) {
		t.Errorf("README.md's flag list differs from `mergefs mount --help`; paste this into README.md:\n%s", flags)
	}
}

// The demo shows the problem on the plain directory and none through
// mergefs, and leaves nothing behind.
func TestDemo(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("python3"); err != nil {
		if inCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	out, err := runCmd(t, 5*time.Minute, []string{"DEMO_SECONDS=3"}, filepath.Join(moduleRoot, "scripts", "demo.sh"))
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	row := func(label string) (plain, merged int) {
		t.Helper()
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, label+" ") {
				if _, err := fmt.Sscan(strings.TrimPrefix(line, label), &plain, &merged); err != nil {
					t.Fatalf("row %q: %v", line, err)
				}
				return plain, merged
			}
		}
		t.Fatalf("no row %q in:\n%s", label, out)
		return 0, 0
	}
	attemptedPlain, attemptedMerged := row("updates attempted")
	lostPlain, lostMerged := row("updates lost")
	tornPlain, tornMerged := row("torn reads seen")
	errPlain, errMerged := row("failed requests (errors)")
	corruptPlain, corruptMerged := row("records corrupt at the end")
	if attemptedPlain == 0 || attemptedMerged == 0 {
		t.Errorf("no updates attempted:\n%s", out)
	}
	if lostMerged != 0 || tornMerged != 0 || errMerged != 0 || corruptMerged != 0 {
		t.Errorf("through mergefs: lost %d, torn %d, errors %d, corrupt %d; want none\n%s", lostMerged, tornMerged, errMerged, corruptMerged, out)
	}
	// The control: the plain directory shows the problem mergefs removes.
	if lostPlain+tornPlain+errPlain+corruptPlain == 0 {
		t.Errorf("the plain directory showed no loss, torn read or damage: the demo demonstrates nothing\n%s", out)
	}
	t.Logf("demo:\n%s", out)
	// Its own work directory, named in its output, is gone, with no mount
	// left in it (other runs may have demos of their own under $TMPDIR).
	m := regexp.MustCompile(`plain directory (\S+)/data`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the demo did not name its directory:\n%s", out)
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("demo left %s behind (%v)", m[1], err)
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, left := range mountinfo.Under(mounts, m[1]) {
		t.Errorf("demo left a mount behind at %s", left.Mountpoint)
	}
}
