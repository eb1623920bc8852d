package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/merge"
)

// mountCfg parses mount arguments as runMount does.
func mountCfg(t *testing.T, args ...string) mountConfig {
	t.Helper()
	var cfg mountConfig
	fl := mountFlags(&cfg, io.Discard)
	if err := parseMountFlags(fl, &cfg, args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return cfg
}

func TestCacheReadsDefault(t *testing.T) {
	for _, c := range []struct {
		args          []string
		local, fenced bool // cached reads over a local store, over one other hosts write
	}{
		{nil, true, false},
		{[]string{"--cache-reads=false"}, false, false},
		{[]string{"--cache-reads"}, true, true}, // asked for: a fenced store is then refused (fs.New)
		{[]string{"--cache-reads=true", "--multi-host=on"}, true, true},
	} {
		cfg := mountCfg(t, c.args...)
		if got := cfg.cachesReads(false); got != c.local {
			t.Errorf("%v over a local store: cached reads %v, want %v", c.args, got, c.local)
		}
		if got := cfg.cachesReads(true); got != c.fenced {
			t.Errorf("%v over a fenced store: cached reads %v, want %v", c.args, got, c.fenced)
		}
	}
}

func TestMountUsage(t *testing.T) {
	for _, args := range [][]string{{"mount", "--help"}, {"mount", "-h"}, {"help", "mount"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 || !strings.Contains(out.String(), "mergefs mount [flags] BACKING MOUNTPOINT") ||
			!strings.Contains(out.String(), "-read-age") || errOut.Len() != 0 {
			t.Errorf("%v: code %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
	for _, args := range [][]string{
		{"mount"}, {"mount", "a", "b", "c"}, {"mount", "--bogus", "a"}, {"mount", "--max-depth", "deep", "a"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 || out.Len() != 0 || errOut.Len() == 0 {
			t.Errorf("%v: code %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
}

func TestMountSettingsDefaults(t *testing.T) {
	set, err := parseMountSettings(mountCfg(t), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if set.policy != merge.WriterWins || set.fsync != backing.FsyncOnRequest || set.maxSize != 16<<20 || set.readMemory != 64<<20 || set.logger == nil {
		t.Errorf("defaults: %+v", set)
	}
	set, err = parseMountSettings(mountCfg(t, "--on-conflict=reject", "--fsync=always", "--max-record-size=1KiB",
		"--read-memory=2MiB", "--log-format=json", "--log-level=debug"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if set.policy != merge.Reject || set.fsync != backing.FsyncAlways || set.maxSize != 1<<10 || set.readMemory != 2<<20 {
		t.Errorf("settings: %+v", set)
	}
}

func TestMountSettingsLogger(t *testing.T) {
	var stderr bytes.Buffer
	set, err := parseMountSettings(mountCfg(t, "--log-format=json", "--log-level=warn"), &stderr)
	if err != nil {
		t.Fatal(err)
	}
	set.logger.Info("hidden")
	set.logger.Warn("shown")
	if got := stderr.String(); !strings.HasPrefix(got, `{"time":`) || strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown"`) {
		t.Errorf("log output %q, want one JSON line at warn", got)
	}
}

func TestMountSettingsRejected(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level=loud"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"--log-format=xml"}, `--log-format "xml": want text or json`},
		{[]string{"--on-conflict=theirs"}, `--on-conflict: `},
		{[]string{"--fsync=never"}, `--fsync "never": want on-request or always`},
		{[]string{"--max-record-size=1.5M"}, `--max-record-size: "1.5M" is not a size`},
		{[]string{"--read-memory=lots"}, `--read-memory: "lots" is not a size`},
		{[]string{"--max-depth=0"}, `--max-depth must be at least 1`},
		{[]string{"--read-age=0s"}, `--read-age must be positive`},
		{[]string{"--read-age=-1s"}, `--read-age must be positive`},
		// The first bad flag is the one reported.
		{[]string{"--read-age=0s", "--fsync=never"}, `--fsync "never"`},
	} {
		_, err := parseMountSettings(mountCfg(t, c.args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// mountDirsCfg is a config for resolveMountDirs: in place with one
// directory, else backing and mountpoint.
func mountDirsCfg(state string, dirs ...string) mountConfig {
	cfg := mountConfig{stateDir: state, backing: dirs[0], mount: dirs[0], inPlace: true}
	if len(dirs) == 2 {
		cfg.mount, cfg.inPlace = dirs[1], false
	}
	return cfg
}

func TestResolveMountDirs(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"b", "m", "full", "state"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "full", "r.json"), []byte(`{}`), 0o644)
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	logger, _ := newLogger("info", "text", io.Discard)

	// Relative paths are made absolute.
	t.Chdir(dir)
	got, err := resolveMountDirs(mountDirsCfg("state", "b", "m"), logger)
	if err != nil {
		t.Fatal(err)
	}
	if want := (mountDirs{backing: filepath.Join(dir, "b"), mount: filepath.Join(dir, "m"), state: filepath.Join(dir, "state")}); got != want {
		t.Errorf("resolveMountDirs = %+v, want %+v", got, want)
	}
	// In place, the directory need not be empty.
	if _, err := resolveMountDirs(mountDirsCfg("state", "full"), logger); err != nil {
		t.Errorf("in place over a directory with files: %v", err)
	}

	for _, c := range []struct {
		cfg  mountConfig
		want string
	}{
		{mountDirsCfg("state", "missing", "m"), "backing directory: stat " + filepath.Join(dir, "missing")},
		{mountDirsCfg("state", "file", "m"), "backing directory " + filepath.Join(dir, "file") + " is not a directory"},
		{mountDirsCfg("state", "missing"), "backing directory: stat"},
		{mountDirsCfg("state", "b", "missing"), "mountpoint: stat " + filepath.Join(dir, "missing")},
		{mountDirsCfg("state", "b", "file"), "mountpoint " + filepath.Join(dir, "file") + " is not a directory"},
		{mountDirsCfg("state", "b", "full"), "mountpoint " + filepath.Join(dir, "full") + " is not empty (to mount over a directory in place"},
		{mountDirsCfg("m/state", "b", "m"), "--state-dir " + filepath.Join(dir, "m", "state") + " is inside the mount " + filepath.Join(dir, "m")},
		{mountDirsCfg("m", "b", "m"), "--state-dir " + filepath.Join(dir, "m") + " is inside the mount"},
		{mountDirsCfg("full/.state", "full"), "is inside the mount " + filepath.Join(dir, "full")},
		// A sibling whose name starts like the mountpoint's is not inside it.
		{mountDirsCfg("m-state", "b", "m"), ""},
	} {
		_, err := resolveMountDirs(c.cfg, logger)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s %s, state %s: %v", c.cfg.backing, c.cfg.mount, c.cfg.stateDir, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s %s, state %s: %v, want an error with %q", c.cfg.backing, c.cfg.mount, c.cfg.stateDir, err, c.want)
		}
	}
}

func TestPrepareStateDir(t *testing.T) {
	dir := t.TempDir()
	logger, _ := newLogger("info", "text", io.Discard)
	state := filepath.Join(dir, "a", "b")
	ops, err := prepareStateDir(state, "", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer ops.close()
	if st, err := os.Stat(state); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v, %v; want mode 0700", st, err)
	}
	if _, err := prepareStateDir(state, "", logger); err == nil || !strings.Contains(err.Error(), "in use by another mergefs daemon") {
		t.Errorf("a second daemon on the same state directory: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	if _, err := prepareStateDir(filepath.Join(dir, "file", "state"), "", logger); err == nil || !strings.Contains(err.Error(), "state directory: mkdir") {
		t.Errorf("a state directory below a file: %v", err)
	}
}

func TestStateDirIsRootsAlone(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("MERGEFS_REQUIRE_FUSE") == "1" {
			t.Fatal("needs root, and CI requires it to run")
		}
		t.Skip("needs root")
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := t.TempDir()

	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := secureStateDir(open, quiet); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(open); st.Mode().Perm() != 0o700 {
		t.Errorf("a 0755 state directory is %v after mounting, want 0700", st.Mode().Perm())
	}

	fresh := filepath.Join(base, "a", "b")
	if err := secureStateDir(fresh, quiet); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(fresh); st.Mode().Perm() != 0o700 {
		t.Errorf("a new state directory is %v, want 0700", st.Mode().Perm())
	}

	users := filepath.Join(base, "users")
	if err := os.Mkdir(users, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(users, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := secureStateDir(users, quiet); err == nil || !strings.Contains(err.Error(), "not root") {
		t.Errorf("a state directory owned by a user: %v, want a refusal", err)
	}

	link := filepath.Join(base, "link")
	if err := os.Symlink(open, link); err != nil {
		t.Fatal(err)
	}
	if err := secureStateDir(link, quiet); err == nil {
		t.Errorf("a symlink as state directory was accepted")
	}
}

func TestDaemonProcs(t *testing.T) {
	for _, tc := range []struct {
		def  int
		env  string
		want int
	}{
		{2, "", 4},
		{1, "", 2},
		{16, "", 32},
		{0, "", 2},
		{2, "3", 0}, // the operator's GOMAXPROCS stands
	} {
		if got := daemonProcs(tc.def, tc.env); got != tc.want {
			t.Errorf("daemonProcs(%d, %q) = %d, want %d", tc.def, tc.env, got, tc.want)
		}
	}
}
