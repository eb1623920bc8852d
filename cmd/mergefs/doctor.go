package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

const doctorUsage = `Usage:
  mergefs doctor [flags] [MOUNTPOINT...]

Checks a mergefs deployment and explains each finding with what to do. For
each mount (every mergefs mount here without MOUNTPOINT) it finds the daemon
serving it and checks: that the mount is live (not left stale by a dead
daemon); the daemon's version against this binary's; the backing
filesystem's type and what mergefs needs of it (trusted.* attributes,
byte-range locks across hosts, O_DIRECT; for GlusterFS the volume options
found to matter, read with the gluster CLI when it is installed, and the acl
mount option); the daemon's descriptor limit; the state directory (root's,
mode 0700); and, for --allow-other mounts, world-writable directories
without the sticky bit in the backing directory.

Exits 0 when nothing is wrong, 1 when something is (notes do not count), 2
when it cannot run. Needs root to see the daemon.

Flags:
`

// Severities of a finding. Only problems make doctor exit 1.
const (
	sevOK      = "ok"
	sevNote    = "note"
	sevProblem = "problem"
)

// finding is one checked fact about a deployment: what was found and, unless
// it is fine, what to do.
type finding struct {
	Check    string `json:"check"`
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Fix      string `json:"fix,omitempty"`
}

// mountReport is what doctor found about one mount.
type mountReport struct {
	Mountpoint string    `json:"mountpoint"`
	Backing    string    `json:"backing,omitempty"`
	StateDir   string    `json:"state_dir,omitempty"`
	DaemonPID  int       `json:"daemon_pid,omitempty"`
	Findings   []finding `json:"findings"`
}

func (r *mountReport) add(check, sev, summary, fix string) {
	r.Findings = append(r.Findings, finding{Check: check, Severity: sev, Summary: summary, Fix: fix})
}

// doctorReport is the whole answer, as --json prints it.
type doctorReport struct {
	Doctor   buildInfo     `json:"doctor"`
	Mounts   []mountReport `json:"mounts"`
	Problems int           `json:"problems"`
	Notes    int           `json:"notes"`
}

// doctorOptions are doctor's flags and the places it looks (changed by tests).
type doctorOptions struct {
	stateDir     string
	minOpenFiles uint64
	walkDepth    int
	walkEntries  int
	proc         string
	gluster      string
	timeout      time.Duration
	// multiHost is the daemon's --multi-host, if its command line was found.
	multiHost string
}

func runDoctor(args []string, stdout, stderr io.Writer) int {
	opts := doctorOptions{proc: "/proc", gluster: "gluster"}
	fl := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fl.SetOutput(stderr)
	asJSON := fl.Bool("json", false, "print the findings as JSON")
	fl.StringVar(&opts.stateDir, "state-dir", "", "state `directory` of the mount, if it was started with --state-dir and its daemon is not running (default: the daemon's, else the default for the mountpoint)")
	fl.Uint64Var(&opts.minOpenFiles, "min-open-files", 65536, "the descriptor limit (`N`) a daemon should have: every file open through the mount holds one")
	fl.IntVar(&opts.walkDepth, "walk-depth", 8, "how deep (`levels`) to look for world-writable directories without the sticky bit")
	fl.IntVar(&opts.walkEntries, "walk-entries", 100000, "how many `entries` of the backing directory to look at, at most")
	fl.DurationVar(&opts.timeout, "timeout", 10*time.Second, "give up on a mount, daemon or command that does not answer within this `duration`")
	fl.Usage = func() {}
	if err := fl.Parse(args); err != nil {
		w, code := stderr, 2
		if errors.Is(err, flag.ErrHelp) {
			w, code = stdout, 0
		}
		fmt.Fprint(w, doctorUsage)
		fl.SetOutput(w)
		fl.PrintDefaults()
		return code
	}
	if opts.stateDir != "" && fl.NArg() != 1 {
		fmt.Fprintln(stderr, "mergefs doctor: --state-dir needs exactly one MOUNTPOINT")
		return 2
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		fmt.Fprintf(stderr, "mergefs doctor: %v\n", err)
		return 2
	}
	targets := fl.Args()
	report := doctorReport{Doctor: readBuildInfo()}
	if len(targets) == 0 {
		for _, m := range mergefsMounts(mounts) {
			targets = append(targets, m.Mountpoint)
		}
		if len(targets) == 0 {
			r := mountReport{}
			r.add("mount", sevProblem, "no mergefs mount here", "start one: systemctl start \"mergefs@$(systemd-escape --path /srv/data).service\", or mergefs mount DIR")
			report.Mounts = append(report.Mounts, r)
		}
	}
	daemons := findDaemons(opts.proc)
	for _, target := range targets {
		abs, err := filepath.Abs(target)
		if err != nil {
			fmt.Fprintf(stderr, "mergefs doctor: %v\n", err)
			return 2
		}
		report.Mounts = append(report.Mounts, checkMount(abs, mounts, daemons, opts))
	}
	for _, m := range report.Mounts {
		for _, f := range m.Findings {
			switch f.Severity {
			case sevProblem:
				report.Problems++
			case sevNote:
				report.Notes++
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(report)
	} else {
		report.write(stdout)
	}
	if report.Problems > 0 {
		return 1
	}
	return 0
}

func (rep doctorReport) write(w io.Writer) {
	for i, m := range rep.Mounts {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if m.Mountpoint != "" {
			fmt.Fprintf(w, "%s", m.Mountpoint)
			if m.Backing != "" {
				fmt.Fprintf(w, ": backing %s", m.Backing)
			}
			if m.DaemonPID != 0 {
				fmt.Fprintf(w, ", daemon pid %d", m.DaemonPID)
			}
			if m.StateDir != "" {
				fmt.Fprintf(w, ", state directory %s", m.StateDir)
			}
			fmt.Fprintln(w)
		}
		for _, f := range m.Findings {
			label := map[string]string{sevOK: "ok", sevNote: "note", sevProblem: "PROBLEM"}[f.Severity]
			fmt.Fprintf(w, "  %-8s %s: %s\n", label, f.Check, f.Summary)
			if f.Fix != "" {
				fmt.Fprintf(w, "  %-8s what to do: %s\n", "", f.Fix)
			}
		}
	}
	plural := func(n int, s string) string {
		if n == 1 {
			return "1 " + s
		}
		return strconv.Itoa(n) + " " + s + "s"
	}
	fmt.Fprintf(w, "\n%s, %s.\n", plural(rep.Problems, "problem"), plural(rep.Notes, "note"))
}

// checkMount runs every check on the mount at mountpoint (absolute).
func checkMount(mountpoint string, mounts []mountinfo.Mount, daemons []daemonProc, opts doctorOptions) mountReport {
	r := mountReport{Mountpoint: mountpoint}
	m, ok := mountinfo.Topmost(mounts, mountpoint)
	switch {
	case !ok:
		r.add("mount", sevProblem, "nothing is mounted here",
			"start mergefs: systemctl start \"mergefs@$(systemd-escape --path "+mountpoint+").service\", or mergefs mount "+mountpoint)
		return r
	case m.FSType != "fuse.mergefs":
		r.add("mount", sevProblem, fmt.Sprintf("the mount here is %s, not mergefs", m.FSType),
			"if mergefs should serve this path, see why it is not running (journalctl -u \"mergefs@$(systemd-escape --path "+mountpoint+")\")")
		return r
	}
	r.Backing = m.Source
	inPlace := m.Source == m.Mountpoint
	if inPlace {
		r.Backing += " (in place)"
	}

	// The state directory and the daemon: the daemon's own command line
	// names its state directory; the status socket there names the daemon.
	var from string
	if opts.stateDir != "" {
		r.StateDir, from = filepath.Clean(opts.stateDir), "--state-dir"
	} else {
		r.StateDir, from = stateDirFor(mountpoint, daemons)
	}
	if pid, err := socketPeer(r.StateDir); err == nil {
		r.DaemonPID = pid
	} else {
		for _, d := range daemons {
			if d.mount == mountpoint {
				r.DaemonPID = d.pid
			}
		}
	}

	live := checkLive(&r, mountpoint, opts.timeout)
	switch {
	case r.DaemonPID == 0 && live:
		r.add("daemon", sevProblem, fmt.Sprintf("no mergefs daemon answers on %s (the state directory is %s) and none in /proc serves this mount", filepath.Join(r.StateDir, statusSocketName), from),
			"if the mount was started with --state-dir, run mergefs doctor --state-dir DIR "+mountpoint)
	case r.DaemonPID != 0:
		checkVersion(&r, opts.timeout)
		checkDescriptors(&r, opts)
	}
	checkStateDir(&r, from)

	for _, d := range daemons {
		if d.pid == r.DaemonPID {
			opts.multiHost = d.multiHost
		}
	}
	backing := backingPath(r.DaemonPID, m.Source, inPlace, opts.proc)
	if backing == "" {
		r.add("backing", sevNote, "the backing directory cannot be reached without its daemon (an in-place mount covers it)", "run doctor again once the daemon runs")
		return r
	}
	checkBacking(&r, backing, mounts, opts)
	if hasOption(m.SuperOptions, "allow_other") || hasOption(m.Options, "allow_other") {
		checkSticky(&r, backing, opts)
	} else {
		r.add("allow-other", sevOK, "without --allow-other only root uses the mount", "")
	}
	return r
}

func hasOption(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

// checkLive asks the mount for its statfs: a dead daemon leaves a mount that
// gives ENOTCONN, a hung one never answers.
func checkLive(r *mountReport, mountpoint string, timeout time.Duration) bool {
	done := make(chan error, 1)
	// statfs always reaches the daemon; a stat may be answered from the
	// kernel's cache even after the daemon died.
	go func() {
		var st unix.Statfs_t
		done <- unix.Statfs(mountpoint, &st)
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		r.add("mount", sevProblem, fmt.Sprintf("the mount does not answer within %v: the daemon hangs", timeout),
			"kill -QUIT the daemon (its log gets every goroutine's stack), then restart it; processes stuck in state D are freed by writing 1 to /sys/fs/fuse/connections/N/abort (README, Troubleshooting)")
		return false
	}
	switch {
	case err == nil:
		r.add("mount", sevOK, "live mergefs mount (it answers)", "")
		return true
	case errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED):
		r.add("mount", sevProblem, "stale mount: its daemon is gone and every access fails with ENOTCONN (Transport endpoint is not connected)",
			"umount -l "+r.Mountpoint+" and start mergefs again (under systemd, Restart=on-failure does it; the new daemon clears the stale mount)")
	default:
		r.add("mount", sevProblem, fmt.Sprintf("stat of the mountpoint fails: %v", err), "see the daemon's log")
	}
	return false
}

// checkVersion compares the daemon's build (mergefs_build_info) with this
// binary's.
func checkVersion(r *mountReport, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	mf, err := fetchMetrics(ctx, r.StateDir, "")
	if err != nil {
		r.add("version", sevProblem, fmt.Sprintf("the daemon's metrics cannot be read: %v", err), "see the daemon's log")
		return
	}
	info := first(mf[metricBuildInfo])
	if info == nil {
		r.add("version", sevProblem, "the daemon does not say its version: it is older than this binary", "restart it to run the installed binary")
		return
	}
	labels := map[string]string{}
	for _, l := range info.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	r.addVersion(labels, readBuildInfo())
}

func (r *mountReport) addVersion(daemon map[string]string, self buildInfo) {
	theirs := fmt.Sprintf("%s, revision %s, %s", daemon["version"], daemon["revision"], daemon["goversion"])
	ours := fmt.Sprintf("%s, revision %s, %s", self.Version, self.revisionLabel(), self.GoVersion)
	switch {
	case theirs != ours:
		r.add("version", sevProblem, fmt.Sprintf("the daemon runs %s; this binary is %s", theirs, ours),
			"if this binary is the installed one, restart the daemon to run it (systemctl restart \"mergefs@$(systemd-escape --path "+r.Mountpoint+")\")")
	case daemon["revision"] == "unknown":
		r.add("version", sevNote, "the daemon runs this binary's build, "+ours+", whose revision is unknown", "build with scripts/install.sh to stamp the revision")
	default:
		r.add("version", sevOK, "the daemon runs this binary's build, "+ours, "")
	}
}

// checkDescriptors compares the daemon's descriptor limit with what a busy
// mount needs, and with what it holds now.
func checkDescriptors(r *mountReport, opts doctorOptions) {
	dir := filepath.Join(opts.proc, strconv.Itoa(r.DaemonPID))
	data, err := os.ReadFile(filepath.Join(dir, "limits"))
	if err != nil {
		r.add("descriptors", sevNote, fmt.Sprintf("cannot read the daemon's limits: %v", err), "")
		return
	}
	soft, hard, ok := parseNofile(string(data))
	if !ok {
		r.add("descriptors", sevNote, "no \"Max open files\" line in the daemon's limits", "")
		return
	}
	used := -1
	if fds, err := os.ReadDir(filepath.Join(dir, "fd")); err == nil {
		used = len(fds)
	}
	r.descriptorFinding(soft, hard, used, opts.minOpenFiles)
}

func (r *mountReport) descriptorFinding(soft, hard uint64, used int, want uint64) {
	limit := fmt.Sprintf("soft %s, hard %s", nofileString(soft), nofileString(hard))
	fix := fmt.Sprintf("raise it: LimitNOFILE=%d in the unit (systemctl edit mergefs@...), or ulimit -n / prlimit --nofile before mergefs mount; then restart the daemon", max(want, 1<<20))
	switch {
	case soft < want:
		r.add("descriptors", sevProblem, fmt.Sprintf("the daemon may hold %d descriptors (%s; %d in use): every file open through the mount holds one, so a few busy workers reach it and every user's opens then fail with EMFILE; at least %d is expected", soft, limit, used, want), fix)
	case used >= 0 && uint64(used) > soft/10*8:
		r.add("descriptors", sevProblem, fmt.Sprintf("the daemon holds %d descriptors of its limit of %d (%s)", used, soft, limit), fix)
	default:
		r.add("descriptors", sevOK, fmt.Sprintf("the daemon may hold %s descriptors (%s; %d in use)", nofileString(soft), limit, used), "")
	}
}

func nofileString(n uint64) string {
	if n == ^uint64(0) {
		return "unlimited"
	}
	return strconv.FormatUint(n, 10)
}

// parseNofile reads the "Max open files" line of /proc/PID/limits.
func parseNofile(limits string) (soft, hard uint64, ok bool) {
	for _, line := range strings.Split(limits, "\n") {
		if !strings.HasPrefix(line, "Max open files") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
		if len(f) < 2 {
			return 0, 0, false
		}
		parse := func(s string) (uint64, bool) {
			if s == "unlimited" {
				return ^uint64(0), true
			}
			n, err := strconv.ParseUint(s, 10, 64)
			return n, err == nil
		}
		var ok1, ok2 bool
		soft, ok1 = parse(f[0])
		hard, ok2 = parse(f[1])
		return soft, hard, ok1 && ok2
	}
	return 0, 0, false
}

// checkStateDir: a directory (not a symlink) owned by root, mode 0700. It
// holds every user's rejected content and the conflict journal.
func checkStateDir(r *mountReport, from string) {
	var st unix.Stat_t
	if err := unix.Lstat(r.StateDir, &st); err != nil {
		r.add("state-dir", sevProblem, fmt.Sprintf("state directory %s (%s): %v", r.StateDir, from, err),
			"if the mount was started with --state-dir, run mergefs doctor --state-dir DIR "+r.Mountpoint)
		return
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		r.add("state-dir", sevProblem, fmt.Sprintf("state directory %s is not a directory (a symlink?)", r.StateDir),
			"remove it and restart the daemon, which makes a directory 0700")
	case st.Uid != 0:
		r.add("state-dir", sevProblem, fmt.Sprintf("state directory %s belongs to uid %d, not root: that user can read every user's rejected content and replace what mergefs keeps there", r.StateDir, st.Uid),
			"chown root:root "+r.StateDir+" && chmod 0700 "+r.StateDir)
	case st.Mode&0o077 != 0:
		r.add("state-dir", sevProblem, fmt.Sprintf("state directory %s has mode %#o: other users can read the rejected content of every user's records and the conflict journal", r.StateDir, st.Mode&0o7777),
			"chmod 0700 "+r.StateDir+" (mergefs makes it 0700 at start: something changed it since)")
	default:
		r.add("state-dir", sevOK, fmt.Sprintf("state directory %s is root's, mode %#o", r.StateDir, st.Mode&0o7777), "")
	}
}

// backingPath is a path that reaches the backing directory itself: the
// daemon's own descriptor of it (/proc/PID/fd/N, which an in-place mount does
// not cover), or the source path of a mount that is not in place.
func backingPath(pid int, source string, inPlace bool, proc string) string {
	if pid != 0 {
		dir := filepath.Join(proc, strconv.Itoa(pid), "fd")
		if entries, err := os.ReadDir(dir); err == nil {
			for _, e := range entries {
				p := filepath.Join(dir, e.Name())
				if target, err := os.Readlink(p); err == nil && target == source {
					if st, err := os.Stat(p); err == nil && st.IsDir() {
						return p
					}
				}
			}
		}
	}
	if inPlace {
		return ""
	}
	return source
}

// mountOf finds the mount that holds the backing directory: the one with its
// device number, at the deepest mountpoint.
func mountOf(path string, mounts []mountinfo.Mount) (mountinfo.Mount, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return mountinfo.Mount{}, false
	}
	var best mountinfo.Mount
	found := false
	for _, m := range mounts {
		if uint32(m.Major) == unix.Major(st.Dev) && uint32(m.Minor) == unix.Minor(st.Dev) {
			if !found || len(m.Mountpoint) > len(best.Mountpoint) {
				best, found = m, true
			}
		}
	}
	return best, found
}

var localFilesystems = map[string]bool{
	"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true, "tmpfs": true, "f2fs": true,
	"zfs": true, "bcachefs": true, "jfs": true, "reiserfs": true,
}

// checkBacking says what the backing filesystem is and what mergefs needs of
// it, and probes what it can without writing: trusted.* attributes and
// O_DIRECT.
func checkBacking(r *mountReport, backing string, mounts []mountinfo.Mount, opts doctorOptions) {
	m, ok := mountOf(backing, mounts)
	if !ok {
		r.add("backing", sevNote, "the backing directory's filesystem is not in this mount namespace's table", "")
	} else {
		backingFindings(r, m, opts)
	}
	// A trusted.* attribute nobody set: ENODATA if the filesystem keeps
	// them, ENOTSUP if not.
	if _, err := unix.Getxattr(backing, "trusted.mergefs.doctor", nil); errors.Is(err, unix.ENOTSUP) {
		r.add("xattrs", sevProblem, "the backing filesystem does not keep trusted.* extended attributes: records lose their identity (mergefs refuses to mount on it)",
			"use a filesystem that keeps them (ext4, xfs, btrfs, tmpfs; GlusterFS and CephFS for root)")
	}
	lock := filepath.Join(backing, ".mergefs.lock")
	if fd, err := unix.Open(lock, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
	} else if errors.Is(err, unix.EINVAL) {
		r.add("o-direct", sevNote, "the backing filesystem refuses O_DIRECT: programs that open files through the mount with O_DIRECT get EINVAL", "")
	}
}

// backingFindings explains the backing filesystem's type.
func backingFindings(r *mountReport, m mountinfo.Mount, opts doctorOptions) {
	network := m.FSType == "nfs" || m.FSType == "nfs4" || m.FSType == "cifs" || m.FSType == "smb3" || m.FSType == "ceph" ||
		(strings.HasPrefix(m.FSType, "fuse.") && m.FSType != "fuse.mergefs")
	if network && opts.multiHost == "off" {
		r.add("multi-host", sevProblem, "the daemon runs with --multi-host=off on a network filesystem: its commits do not check that they read the version another host committed last, so updates from several hosts can be lost",
			"remove --multi-host=off (auto turns it on for network filesystems) and restart the daemon, unless only this host ever uses the directory")
	}
	where := fmt.Sprintf("%s (%s at %s)", m.FSType, m.Source, m.Mountpoint)
	switch {
	case localFilesystems[m.FSType]:
		r.add("backing", sevOK, "local filesystem "+where+": one host; it keeps trusted.* attributes, and the per-record locks are this host's", "")
	case m.FSType == "nfs" || m.FSType == "nfs4":
		all := m.Options + "," + m.SuperOptions
		if hasOption(all, "nolock") || hasOption(all, "local_lock=posix") || hasOption(all, "local_lock=all") {
			r.add("backing", sevProblem, "NFS "+where+" keeps byte-range locks on this host (nolock or local_lock=): daemons on two hosts sharing the directory would not exclude each other and lose updates",
				"mount it without nolock and with local_lock=none (the default), unless only this host ever uses the directory")
		} else {
			r.add("backing", sevNote, "NFS "+where+": byte-range locks go to the server (NLM or NFSv4), so daemons on several hosts exclude each other; NFS keeps only user.* extended attributes (NFSv4.2), not the trusted.* ones mergefs needs for records' identities", "")
		}
	case m.FSType == "fuse.glusterfs":
		r.add("backing", sevNote, "GlusterFS "+where+": byte-range locks reach every client through the bricks (the locks translator), root's trusted.* attributes are kept, and O_DIRECT passes through", "")
		checkGluster(r, m, opts)
	case m.FSType == "ceph" || m.FSType == "fuse.ceph-fuse" || m.FSType == "fuse.ceph":
		r.add("backing", sevNote, "CephFS "+where+": byte-range locks are coordinated by the MDS across clients; trusted.* attributes need a client that lets root set them; not tested with mergefs here", "")
	case m.FSType == "cifs" || m.FSType == "smb3":
		r.add("backing", sevProblem, "SMB "+where+": neither trusted.* attributes nor POSIX byte-range locks across clients can be relied on", "put the records on a local filesystem, NFS, GlusterFS or CephFS")
	default:
		r.add("backing", sevNote, "filesystem "+where+" is not one mergefs was tested on: it needs trusted.* extended attributes, atomic rename, and (if several hosts share it) POSIX byte-range locks that reach every host", "")
	}
}

// glusterOptions are the volume options found to matter to mergefs across
// several clients (issue 11): stale reads of a record just renamed by
// another client, and ESTALE.
var glusterOptions = []string{"performance.open-behind", "performance.stat-prefetch", "performance.quick-read"}

// checkGluster reads the volume's options with the gluster CLI and the
// client's mount options from its command line.
func checkGluster(r *mountReport, m mountinfo.Mount, opts doctorOptions) {
	host, volume := glusterVolume(m.Source)
	if volume == "" {
		r.add("gluster", sevNote, fmt.Sprintf("cannot tell the volume from the mount source %q", m.Source), "")
	} else if values, err := glusterGet(opts.gluster, host, volume, opts.timeout); err != nil {
		r.add("gluster", sevNote, fmt.Sprintf("volume %s's options could not be read (%v)", volume, err),
			fmt.Sprintf("on a Gluster server: gluster volume get %s all | grep -E 'open-behind|stat-prefetch|quick-read'", volume))
	} else {
		var on, parts []string
		for _, o := range glusterOptions {
			v := values[o]
			if v == "" {
				v = "not reported"
			}
			parts = append(parts, o+"="+v)
			if v == "on" {
				on = append(on, o)
			}
		}
		if len(on) == 0 {
			r.add("gluster", sevOK, "volume "+volume+": "+strings.Join(parts, ", "), "")
		} else {
			r.add("gluster", sevNote, "volume "+volume+": "+strings.Join(parts, ", ")+". mergefs works with these defaults; they are the client caches found to matter when daemons on several hosts commit to one record (a read of the version another client just renamed into place, ESTALE)",
				"if commits from several hosts fail or retry often: gluster volume set "+volume+" "+on[0]+" off (and likewise the others)")
		}
	}
	if argv, ok := glusterClient(opts.proc, m.Mountpoint); ok {
		hasACL := false
		for _, a := range argv {
			if a == "--acl" {
				hasACL = true
			}
		}
		if hasACL {
			r.add("gluster-acl", sevOK, "the Gluster client runs with --acl: POSIX ACLs on records are enforced and kept", "")
		} else {
			r.add("gluster-acl", sevNote, "the Gluster client at "+m.Mountpoint+" runs without acl: POSIX ACLs set on records are neither enforced nor reliably kept",
				"if records carry ACLs, mount the volume with -o acl (fstab: defaults,_netdev,acl)")
		}
	}
}

// glusterVolume splits a Gluster mount source, "server:/volume" or
// "server:volume" (a subdirectory may follow the volume).
func glusterVolume(source string) (host, volume string) {
	host, vol, ok := strings.Cut(source, ":")
	if !ok {
		return "", ""
	}
	vol = strings.TrimPrefix(vol, "/")
	vol, _, _ = strings.Cut(vol, "/")
	return host, vol
}

// glusterGet runs `gluster volume get VOLUME all`, through the local glusterd
// and else the mount's server, and returns the options it prints.
func glusterGet(cli, host, volume string, timeout time.Duration) (map[string]string, error) {
	path, err := lookPath(cli)
	if err != nil {
		return nil, fmt.Errorf("no gluster CLI on this host")
	}
	var lastErr error
	for _, extra := range [][]string{nil, {"--remote-host=" + host}} {
		if extra != nil && host == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		args := append(append([]string{"--mode=script"}, extra...), "volume", "get", volume, "all")
		out, err := execOutput(ctx, path, args...)
		cancel()
		if err != nil {
			lastErr = fmt.Errorf("gluster %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out))
			continue
		}
		values := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && strings.Contains(f[0], ".") {
				values[f[0]] = f[1]
			}
		}
		if len(values) == 0 {
			lastErr = fmt.Errorf("gluster %s printed no options", strings.Join(args, " "))
			continue
		}
		return values, nil
	}
	return nil, lastErr
}

// lookPath and execOutput run the gluster CLI.
func lookPath(name string) (string, error) { return exec.LookPath(name) }

func execOutput(ctx context.Context, path string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	return string(out), err
}

// glusterClient finds the glusterfs client process serving the Gluster mount
// at mountpoint, and its command line.
func glusterClient(proc, mountpoint string) ([]string, bool) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv := procArgv(proc, pid)
		if len(argv) > 1 && filepath.Base(argv[0]) == "glusterfs" && argv[len(argv)-1] == mountpoint {
			return argv, true
		}
	}
	return nil, false
}

// checkSticky looks, below the backing directory of an --allow-other mount,
// for world-writable directories without the sticky bit: there any user can
// remove or replace another user's records.
func checkSticky(r *mountReport, backing string, opts doctorOptions) {
	bad, total, seen, complete := stickyWalk(backing, opts.walkDepth, opts.walkEntries)
	scope := fmt.Sprintf("%d entries of the backing directory", seen)
	if !complete {
		scope = fmt.Sprintf("the first %d entries of the backing directory (to depth %d; --walk-entries, --walk-depth)", seen, opts.walkDepth)
	}
	if total == 0 {
		r.add("allow-other", sevOK, "--allow-other: no world-writable directory without the sticky bit in "+scope, "")
		return
	}
	list := strings.Join(bad, ", ")
	if total > len(bad) {
		list += fmt.Sprintf(" and %d more", total-len(bad))
	}
	r.add("allow-other", sevProblem,
		fmt.Sprintf("--allow-other, and %d world-writable directories without the sticky bit in %s: %s. Any user of the mount can remove or rename another user's records there", total, scope, list),
		"chmod +t each of them (as /tmp is), or take away the write permission for others (chmod o-w)")
}

// stickyWalk walks dir to depth levels and at most limit entries, and
// returns (up to 10 of) the world-writable directories without the sticky
// bit, relative to dir ("." for dir), how many there are, how many entries it
// saw, and whether it saw them all. It walks by descriptors, each directory
// opened relative to its parent without following symlinks, so that a user
// who swaps a directory for a symlink cannot lead it elsewhere.
func stickyWalk(dir string, depth, limit int) (bad []string, total, seen int, complete bool) {
	complete = true
	var walk func(fd int, rel string, level int)
	walk = func(fd int, rel string, level int) {
		f := os.NewFile(uintptr(fd), rel)
		defer f.Close()
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil {
			return
		}
		if st.Mode&0o002 != 0 && st.Mode&unix.S_ISVTX == 0 {
			total++
			if len(bad) < 10 {
				bad = append(bad, rel)
			}
		}
		if level >= depth {
			if names, _ := f.Readdirnames(1); len(names) > 0 {
				complete = false
			}
			return
		}
		for {
			if seen >= limit {
				complete = false
				return
			}
			names, err := f.Readdirnames(min(256, limit-seen))
			sort.Strings(names)
			for _, name := range names {
				if seen >= limit {
					complete = false
					return
				}
				seen++
				if strings.HasPrefix(name, ".mergefs.") {
					continue
				}
				child, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
				if err != nil {
					continue // not a directory, a symlink, gone, or unreadable
				}
				walk(child, filepath.Join(rel, name), level+1)
			}
			if err != nil || len(names) == 0 {
				return
			}
		}
	}
	// The root may be a /proc/PID/fd/N link to the backing directory: followed.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, 0, false
	}
	walk(fd, ".", 0)
	return bad, total, seen, complete
}
