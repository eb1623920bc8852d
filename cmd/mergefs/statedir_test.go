package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

// escapeCases are paths whose escaping differs in every way systemd-escape
// --path has: dashes, spaces, dots (leading and inner), non-ASCII, slashes
// doubled and trailing, backslashes, control bytes, the root.
var escapeCases = []struct{ path, want string }{
	{"/srv/data", "srv-data"},
	{"/srv/my-data", `srv-my\x2ddata`},
	{"/srv/my data", `srv-my\x20data`},
	{"/srv/.hidden/x.y", `srv-.hidden-x.y`},
	{"/.dot", `\x2edot`},
	{"/srv/héllo/wörld", `srv-h\xc3\xa9llo-w\xc3\xb6rld`},
	{"/srv//data/", "srv-data"},
	{`/a\b`, `a\x5cb`},
	{"/tab\there", `tab\x09here`},
	{"/x:y_z", "x:y_z"},
	{"/srv/data-1/ü-2", `srv-data\x2d1-\xc3\xbc\x2d2`},
	{"/", "-"},
}

func TestEscapePath(t *testing.T) {
	for _, c := range escapeCases {
		if got := escapePath(c.path); got != c.want {
			t.Errorf("escapePath(%q) = %q, want %q", c.path, got, c.want)
		}
	}
	if got := defaultStateDir("/srv/my-data"); got != `/var/lib/mergefs/srv-my\x2ddata` {
		t.Errorf("defaultStateDir = %q", got)
	}
}

// The escaping is systemd-escape --path's, byte for byte: the unit's
// StateDirectory=mergefs/%i is then the same directory as the command's
// default.
func TestEscapePathMatchesSystemd(t *testing.T) {
	tool, err := exec.LookPath("systemd-escape")
	if err != nil {
		if os.Getenv("MERGEFS_REQUIRE_FUSE") == "1" || os.Getenv("CI") != "" {
			t.Fatalf("systemd-escape is missing in CI (.ci/run installs systemd): %v", err)
		}
		t.Skip(err)
	}
	for _, c := range escapeCases {
		out, err := exec.Command(tool, "--path", c.path).Output()
		if err != nil {
			t.Errorf("systemd-escape --path %q: %v", c.path, err)
			continue
		}
		if want := strings.TrimSuffix(string(out), "\n"); escapePath(c.path) != want {
			t.Errorf("escapePath(%q) = %q, systemd-escape --path says %q", c.path, escapePath(c.path), want)
		}
	}
}

func TestResolveMountDirsDefaultStateDir(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"b", "m-1"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logger := silentLogger()
	got, err := resolveMountDirs(mountDirsCfg("", filepath.Join(dir, "b"), filepath.Join(dir, "m-1")), logger)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/var/lib/mergefs/" + escapePath(dir) + `-m\x2d1`; got.state != want {
		t.Errorf("state directory %q, want %q", got.state, want)
	}
	// In place: the directory's own.
	got, err = resolveMountDirs(mountDirsCfg("", filepath.Join(dir, "b")), logger)
	if err != nil || got.state != defaultStateDir(filepath.Join(dir, "b")) {
		t.Errorf("in place: %q, %v", got.state, err)
	}
	// A mountpoint whose escaped name cannot be a file name.
	long := filepath.Join(dir, strings.Repeat("a-", 90))
	if err := os.Mkdir(long, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveMountDirs(mountDirsCfg("", long), logger); err == nil || !strings.Contains(err.Error(), "give --state-dir") {
		t.Errorf("a mountpoint with a too long escaped name: %v", err)
	}
}

func TestPickMountAndStateDirFor(t *testing.T) {
	mounts, err := mountinfo.Parse(strings.NewReader(`1 0 8:1 / / rw - ext4 /dev/sda1 rw
30 1 0:40 / /srv/a rw - fuse.mergefs /srv/a rw,user_id=0
31 1 0:41 / /srv/b-1 rw - fuse.mergefs /srv/back rw,user_id=0
32 1 0:42 / /srv/c rw - fuse.loopback /srv/c rw
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pickMount(mounts); err == nil || !strings.Contains(err.Error(), "2 mergefs mounts here (/srv/a, /srv/b-1)") {
		t.Errorf("two mounts: %v", err)
	}
	if got, err := pickMount(mounts[:2]); got != "/srv/a" || err != nil {
		t.Errorf("one mount: %q, %v", got, err)
	}
	if _, err := pickMount(mounts[:1]); err == nil || !strings.Contains(err.Error(), "no mergefs mount") {
		t.Errorf("no mount: %v", err)
	}

	daemons := []daemonProc{
		{pid: 10, mount: "/srv/a", stateDir: "/etc/state", explicitStateDir: true},
		{pid: 11, mount: "/srv/b-1", stateDir: defaultStateDir("/srv/b-1")},
	}
	for _, c := range []struct{ mountpoint, want string }{
		{"/srv/a", "/etc/state"},
		{"/srv/b-1", `/var/lib/mergefs/srv-b\x2d1`},
		{"/srv/none", "/var/lib/mergefs/srv-none"},
	} {
		if got, _ := stateDirFor(c.mountpoint, daemons); got != c.want {
			t.Errorf("stateDirFor(%s) = %s, want %s", c.mountpoint, got, c.want)
		}
	}
}

// findDaemons reads command lines as the daemon parses them, relative paths
// against the process's working directory.
func TestFindDaemons(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root's processes count as daemons: the stand-in /proc must be root's")
	}
	proc := t.TempDir()
	write := func(pid, cwd string, argv ...string) {
		dir := filepath.Join(proc, pid)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644)
		os.Symlink(cwd, filepath.Join(dir, "cwd"))
	}
	write("100", "/srv", "/usr/local/bin/mergefs", "mount", "--state-dir=st", "--on-conflict", "reject", "b", "m")
	write("200", "/", "mergefs", "mount", "/srv/data")
	write("300", "/", "/usr/bin/python3", "mount", "/x")
	write("400", "/", "/usr/local/bin/mergefs", "status")
	write("500", "/", "/usr/local/bin/mergefs", "mount", "--bogus", "/x")
	write("self", "/", "mergefs", "mount", "/y")
	// A user's process posing as a daemon, to lead root's status or doctor
	// to a state directory of its own.
	write("600", "/", "/home/u/mergefs", "mount", "--state-dir=/home/u/state", "/srv/data")
	if err := os.Chown(filepath.Join(proc, "600"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	got := findDaemons(proc)
	want := []daemonProc{
		{pid: 100, backing: "/srv/b", mount: "/srv/m", stateDir: "/srv/st", explicitStateDir: true, multiHost: "auto"},
		{pid: 200, backing: "/srv/data", mount: "/srv/data", stateDir: "/var/lib/mergefs/srv-data", multiHost: "auto"},
	}
	if len(got) != len(want) {
		t.Fatalf("findDaemons = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("daemon %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
