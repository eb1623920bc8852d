package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

// daemonProc is a running `mergefs mount` process, as its command line says.
type daemonProc struct {
	pid      int
	backing  string // absolute, as the daemon resolved it
	mount    string
	stateDir string // its --state-dir, or the default for its mountpoint
	// explicitStateDir is set when the daemon was given --state-dir.
	explicitStateDir bool
	multiHost        string // its --multi-host
}

// findDaemons lists the `mergefs mount` processes that /proc shows, by their
// command lines (relative paths resolved against their working directories).
func findDaemons(proc string) []daemonProc {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil
	}
	var out []daemonProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if d, ok := readDaemon(proc, pid); ok {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// readDaemon reads one process's command line and says whether it is a
// `mergefs mount` and what it serves.
func readDaemon(proc string, pid int) (daemonProc, bool) {
	// The daemon runs as root: a user's process that calls itself
	// "mergefs mount --state-dir ..." must not lead status or doctor (run
	// as root) to a state directory of that user's.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(proc, strconv.Itoa(pid)), &st); err != nil || st.Uid != 0 {
		return daemonProc{}, false
	}
	argv := procArgv(proc, pid)
	if len(argv) < 3 || filepath.Base(argv[0]) != "mergefs" || argv[1] != "mount" {
		return daemonProc{}, false
	}
	var cfg mountConfig
	fl := mountFlags(&cfg, io.Discard)
	if fl.Parse(argv[2:]) != nil || fl.NArg() < 1 || fl.NArg() > 2 {
		return daemonProc{}, false
	}
	cwd, err := os.Readlink(filepath.Join(proc, strconv.Itoa(pid), "cwd"))
	if err != nil {
		return daemonProc{}, false
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(cwd, p)
	}
	d := daemonProc{pid: pid, backing: abs(fl.Arg(0)), mount: abs(fl.Arg(fl.NArg() - 1)), multiHost: cfg.multiHost}
	if cfg.stateDir != "" {
		d.stateDir, d.explicitStateDir = abs(cfg.stateDir), true
	} else {
		d.stateDir = defaultStateDir(d.mount)
	}
	return d, true
}

// mergefsMounts returns the fuse.mergefs mounts in mounts, each mountpoint
// once (the topmost mount there).
func mergefsMounts(mounts []mountinfo.Mount) []mountinfo.Mount {
	var out []mountinfo.Mount
	seen := map[string]bool{}
	for _, m := range mounts {
		if m.FSType != "fuse.mergefs" || seen[m.Mountpoint] {
			continue
		}
		if top, ok := mountinfo.Topmost(mounts, m.Mountpoint); ok && top.FSType == "fuse.mergefs" {
			seen[m.Mountpoint] = true
			out = append(out, top)
		}
	}
	return out
}

// stateDirFor says which state directory the mount at mountpoint (absolute,
// clean) uses: the one its daemon's command line names, else the default.
func stateDirFor(mountpoint string, daemons []daemonProc) (dir, from string) {
	for _, d := range daemons {
		if d.mount == mountpoint {
			if d.explicitStateDir {
				return d.stateDir, fmt.Sprintf("--state-dir of daemon pid %d", d.pid)
			}
			return d.stateDir, "the default for the mountpoint"
		}
	}
	return defaultStateDir(mountpoint), "the default for the mountpoint"
}

// pickMount chooses the mountpoint `status` and `doctor` look at without an
// argument: the one mergefs mount there is.
func pickMount(mounts []mountinfo.Mount) (string, error) {
	ours := mergefsMounts(mounts)
	switch len(ours) {
	case 0:
		return "", errors.New("no mergefs mount here: give its MOUNTPOINT or --state-dir")
	case 1:
		return ours[0].Mountpoint, nil
	}
	var names []string
	for _, m := range ours {
		names = append(names, m.Mountpoint)
	}
	return "", fmt.Errorf("%d mergefs mounts here (%s): say which MOUNTPOINT", len(ours), strings.Join(names, ", "))
}

// socketPeer connects to a daemon's status socket and returns the pid of the
// process that answers (SO_PEERCRED): the daemon serving that state
// directory.
func socketPeer(stateDir string) (int, error) {
	conn, err := net.Dial("unix", filepath.Join(stateDir, statusSocketName))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return int(cred.Pid), nil
}

// procArgv reads a process's command line.
func procArgv(proc string, pid int) []string {
	raw, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil
	}
	return strings.Split(string(bytes.TrimSuffix(raw, []byte{0})), "\x00")
}
