package mount_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

// A GlusterFS test bed: one glusterd bound to a private 127.x address, a
// one-brick volume with default options, mounted by two glusterfs client
// processes that stand in for two hosts (docs: /work/notes/gluster.md, whose
// bed-ns.sh this follows).
//
// Everything lives under the test's work directory: glusterd's working,
// run and log directories, its CLI socket, the brick, the client mounts and
// their logs. glusterd and the brick process it spawns run in private PID
// and mount namespaces (`unshare --pid --fork --kill-child --mount`):
//   - /var/run/gluster, /var/lib/glusterd and /var/log/glusterfs are empty
//     tmpfs there, so nothing the packages own is written to (the CLI runs in
//     a mount namespace like it: it creates
//     /var/lib/glusterd/geo-replication otherwise);
//   - gsyncd is hidden from glusterd (a copy of the package's libexec
//     directory without it is bound over the original), which then skips
//     about 2 s of geo-replication set-up ("module not installed");
//   - one SIGKILL of the namespace's first process (glusterd itself) makes
//     the kernel kill and reap every process of the namespace, and unshare
//     dies with the test process (Pdeathsig) and takes the namespace with it
//     (--kill-child), so even a test binary killed by `go test -timeout`
//     leaves no Gluster server behind.
//
// The clients run in the test's namespaces (their mounts must be visible to
// mergefs and the workers), in the foreground (-N), as the test's children,
// with Pdeathsig. Their forked helpers linger as zombies until the client
// exits and are then re-parented to the test process, which is a child
// subreaper while the bed is up and reaps them at once.

const (
	glusterVolume = "mfs"
	// glusterStepTimeout bounds each step of setting up and tearing down.
	glusterStepTimeout = 30 * time.Second
)

type glusterPrograms struct {
	glusterd, glusterfsd, glusterfs, gluster, unshare string
}

// findGluster locates the programs the bed needs. The Gluster daemons live
// in /usr/sbin, which a non-login PATH may lack.
func findGluster() (glusterPrograms, error) {
	look := func(name string) (string, error) {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
			p := filepath.Join(dir, name)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s not found", name)
	}
	var p glusterPrograms
	var missing []string
	for _, x := range []struct {
		dst  *string
		name string
	}{
		{&p.glusterd, "glusterd"}, {&p.glusterfsd, "glusterfsd"}, {&p.glusterfs, "glusterfs"},
		{&p.gluster, "gluster"}, {&p.unshare, "unshare"},
	} {
		path, err := look(x.name)
		if err != nil {
			missing = append(missing, x.name)
		}
		*x.dst = path
	}
	if len(missing) > 0 {
		return p, fmt.Errorf("missing %s (Debian: glusterfs-server, glusterfs-client, util-linux)", strings.Join(missing, ", "))
	}
	return p, nil
}

// glusterLibexec returns the directory that holds gsyncd, or "" when the
// geo-replication helper is not installed.
func glusterLibexec() string {
	for _, pattern := range []string{"/usr/lib/*/glusterfs/gsyncd", "/usr/libexec/glusterfs/gsyncd", "/usr/lib/glusterfs/gsyncd", "/usr/lib64/glusterfs/gsyncd"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return filepath.Dir(m[0])
		}
	}
	return ""
}

type glusterBed struct {
	t    *testing.T
	h    *harness
	prog glusterPrograms
	dir  string
	ip   string
	// brick is the brick directory on the local filesystem: the ground
	// truth of what the volume holds.
	brick string
	// mounts are the client mountpoints, one per simulated host.
	mounts []string

	server     *exec.Cmd // unshare, parent of the namespace
	serverOut  *syncBuffer
	serverDone chan struct{}
	// nsInit is the host pid of the namespace's first process (glusterd).
	nsInit  int
	clients []*glusterClient

	subreaper bool
}

type glusterClient struct {
	mountpoint string
	cmd        *exec.Cmd
	out        *syncBuffer
	done       chan struct{}
}

// startGlusterBed sets up the bed with n client mounts, or skips the test
// when the Gluster packages are missing (fails with MERGEFS_REQUIRE_FUSE=1).
// Everything is torn down when the test ends, also when it fails.
func startGlusterBed(t *testing.T, h *harness, n int) *glusterBed {
	t.Helper()
	prog, err := findGluster()
	if err != nil {
		skipOrFatal(t, "GlusterFS test bed: %v", err)
	}
	if err := fuseUnavailable(); err != nil {
		skipOrFatal(t, "GlusterFS test bed: %v", err)
	}
	start := time.Now()
	b := &glusterBed{t: t, h: h, prog: prog, dir: h.path("gluster"), serverDone: make(chan struct{})}
	b.brick = filepath.Join(b.dir, "brick")
	for _, sub := range []string{"gd", "run", "log", "brick"} {
		if err := os.MkdirAll(filepath.Join(b.dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(b.close)
	h.onAbort(b.abortClients)

	// While the bed is up, orphans of this test (the clients' forked
	// helpers) come back to the test process, which reaps them in close.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Logf("PR_SET_CHILD_SUBREAPER: %v (zombies are left to init)", err)
	} else {
		b.subreaper = true
	}

	if b.ip, err = freeLoopbackIP(); err != nil {
		t.Fatal(err)
	}
	var steps []string
	step := func(what string) {
		steps = append(steps, fmt.Sprintf("%s %v", what, time.Since(start).Round(time.Millisecond)))
	}
	if err := b.startServer(); err != nil {
		t.Fatalf("GlusterFS test bed: %v", err)
	}
	step("glusterd answers")
	if _, err := b.cli("volume", "create", glusterVolume, b.ip+":"+b.brick, "force"); err != nil {
		t.Fatalf("GlusterFS test bed: %v", err)
	}
	step("created")
	if _, err := b.cli("volume", "start", glusterVolume); err != nil {
		t.Fatalf("GlusterFS test bed: %v", err)
	}
	step("started")
	for i := range n {
		if err := b.startClient(filepath.Join(b.dir, fmt.Sprintf("m%d", i+1)), i+1); err != nil {
			t.Fatalf("GlusterFS test bed: %v", err)
		}
	}
	step("mounted")
	b.checkShared()
	step("checked")
	t.Logf("GlusterFS bed up (%s): glusterd on %s, volume %s (brick %s, default options), client mounts %v",
		strings.Join(steps, ", "), b.ip, glusterVolume, b.brick, b.mounts)
	return b
}

// freeLoopbackIP picks a random 127.x address other than 127.0.0.1 and the
// bed script's 127.1.1.x on which glusterd's port is free: several beds
// (other test runs, other worktrees) can run at once. The Gluster CLI
// refuses 127.0.0.1 as a brick host.
func freeLoopbackIP() (string, error) {
	for range 50 {
		ip := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), rand.IntN(256), 1+rand.IntN(254))
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "24007"))
		if err != nil {
			continue
		}
		l.Close()
		return ip, nil
	}
	return "", errors.New("glusterd's port 24007 is taken on every 127.x address tried (a glusterd listening on all addresses?)")
}

// hidePackageDirs mounts empty tmpfs over the directories the Gluster
// packages own, in a private mount namespace.
//
// It first detaches the FUSE mounts the namespace copied from the host: a
// copy keeps a FUSE connection alive as long as the namespace lives, so that
// another test's daemon could not finish its unmount meanwhile.
const hidePackageDirs = `
awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) ~ /^fuse/) print $5; break }}' /proc/self/mountinfo |
	sort -r | while read -r m; do umount -l "$(printf '%b' "$m")" 2>/dev/null || true; done
for d in /var/run/gluster /var/lib/glusterd /var/log/glusterfs; do
	if [ -d "$d" ]; then mount -t tmpfs mergefs-gluster-bed "$d"; fi
done
`

// serverScript runs as the first process of the namespace: it hides what
// the packages own behind tmpfs, hides gsyncd, and becomes glusterd.
const serverScript = hidePackageDirs + `
bed=$1 ip=$2 lib=$3 glusterd=$4
if [ -n "$lib" ]; then
	mkdir "$bed/libexec"
	mount -t tmpfs mergefs-gluster-bed "$bed/libexec"
	for e in "$lib"/*; do
		n=${e##*/}
		if [ "$n" = gsyncd ]; then continue; fi
		if [ -d "$e" ]; then mkdir "$bed/libexec/$n"; else : >"$bed/libexec/$n"; fi
		mount --bind "$e" "$bed/libexec/$n"
	done
	mount --rbind "$bed/libexec" "$lib"
fi
exec "$glusterd" -N \
	--xlator-option management.working-directory="$bed/gd" \
	--xlator-option management.run-directory="$bed/run" \
	--xlator-option management.logging-directory="$bed/log" \
	--xlator-option management.glusterd-sockfile="$bed/gd/gd.sock" \
	--xlator-option management.transport.socket.bind-address="$ip" \
	--log-file="$bed/log/glusterd.log"
`

func (b *glusterBed) startServer() error {
	b.serverOut = &syncBuffer{}
	cmd := exec.Command(b.prog.unshare, "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc",
		"sh", "-ec", serverScript, "sh", b.dir, b.ip, glusterLibexec(), b.prog.glusterd)
	// Pdeathsig: unshare dies with the test process, and --kill-child then
	// takes the namespace with it. (Pdeathsig follows the creating thread;
	// Go only ends threads that exit locked, which this test never does.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = b.serverOut, b.serverOut
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting glusterd: %w", err)
	}
	b.server = cmd
	go func() {
		cmd.Wait()
		close(b.serverDone)
	}()

	deadline := time.Now().Add(glusterStepTimeout)
	for b.nsInit == 0 {
		if pid := firstChild(cmd.Process.Pid); pid > 0 {
			b.nsInit = pid
			break
		}
		if err := b.serverGone(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("unshare started no namespace in %v", glusterStepTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The CLI is slow to start and to give up on a glusterd that does not
	// listen yet: wait for the socket first.
	sock := filepath.Join(b.dir, "gd", "gd.sock")
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if err := b.serverGone(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("glusterd does not listen on %s after %v\nglusterd.log:\n%s", sock, glusterStepTimeout, b.logTail("glusterd.log", 20))
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		_, err := b.cli("volume", "list")
		if err == nil {
			return nil
		}
		if err := b.serverGone(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("glusterd does not answer after %v: %v\nglusterd.log:\n%s", glusterStepTimeout, err, b.logTail("glusterd.log", 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serverGone reports glusterd's namespace ending before its time.
func (b *glusterBed) serverGone() error {
	select {
	case <-b.serverDone:
		return fmt.Errorf("glusterd exited (%v): %s\nglusterd.log:\n%s", b.server.ProcessState, b.serverOut, b.logTail("glusterd.log", 20))
	default:
		return nil
	}
}

// firstChild returns the first child of a process, or 0.
func firstChild(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0
	}
	child, _ := strconv.Atoi(fields[0])
	return child
}

// cli runs the Gluster CLI against the bed's glusterd, in a mount
// namespace of its own with the packages' directories hidden: it creates
// /var/lib/glusterd/geo-replication otherwise. (Not in glusterd's: the CLI
// crashes with the /proc of glusterd's PID namespace.)
func (b *glusterBed) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), glusterStepTimeout)
	defer cancel()
	argv := append([]string{"--mount", "--propagation", "private", "sh", "-ec", hidePackageDirs + `exec "$@"`, "sh",
		b.prog.gluster, "--mode=script",
		"--glusterd-sock=" + filepath.Join(b.dir, "gd", "gd.sock"), "--log-file=" + filepath.Join(b.dir, "log", "cli.log")}, args...)
	cmd := exec.CommandContext(ctx, b.prog.unshare, argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("gluster %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// startClient mounts the volume at mountpoint with a glusterfs client
// process of its own, with POSIX ACLs (mergefs copies them at every
// commit: without `acl`, Gluster lists system.posix_acl_access but refuses
// to get or set it).
func (b *glusterBed) startClient(mountpoint string, i int) error {
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return err
	}
	c := &glusterClient{mountpoint: mountpoint, out: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(b.prog.glusterfs, "-N", "--acl", "--process-name=fuse",
		"--volfile-server="+b.ip, "--volfile-id="+glusterVolume,
		"--log-file="+filepath.Join(b.dir, "log", fmt.Sprintf("client%d.log", i)), mountpoint)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("starting the glusterfs client: %w", err)
	}
	b.clients = append(b.clients, c)
	go func() {
		c.cmd.Wait()
		close(c.done)
	}()
	deadline := time.Now().Add(glusterStepTimeout)
	for {
		if m, ok := mountAt(mountpoint); ok && m.FSType == "fuse.glusterfs" {
			b.mounts = append(b.mounts, mountpoint)
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("glusterfs client for %s exited (%v): %s\nlog:\n%s", mountpoint, c.cmd.ProcessState, c.out, b.logTail(fmt.Sprintf("client%d.log", i), 20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("glusterfs client has not mounted %s after %v", mountpoint, glusterStepTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkShared makes sure the mounts are one volume: a file written through
// the first is read through every other and is on the brick.
func (b *glusterBed) checkShared() {
	t := b.t
	t.Helper()
	const name, text = "bed-check.txt", "one volume"
	script := `printf %s "$1" >"$2/$3" && shift 3 && for m in "$@"; do cat "$m/bed-check.txt"; echo; done`
	argv := append([]string{"sh", "-c", script, "sh", text, b.mounts[0], name}, b.mounts...)
	out, errOut, err := b.h.run(t, glusterStepTimeout, argv...)
	if err != nil {
		t.Fatalf("GlusterFS test bed: writing through %s and reading through every mount: %v: %s", b.mounts[0], err, errOut)
	}
	if want := strings.Repeat(text+"\n", len(b.mounts)); string(out) != want {
		t.Fatalf("GlusterFS test bed: the mounts read %q, want %q", out, want)
	}
	if data, err := os.ReadFile(filepath.Join(b.brick, name)); err != nil || string(data) != text {
		t.Fatalf("GlusterFS test bed: on the brick: %q, %v", data, err)
	}
	if _, errOut, err := b.h.run(t, glusterStepTimeout, "rm", filepath.Join(b.mounts[0], name)); err != nil {
		t.Fatalf("GlusterFS test bed: removing the check file: %v: %s", err, errOut)
	}
}

func (b *glusterBed) logTail(name string, n int) string {
	data, err := os.ReadFile(filepath.Join(b.dir, "log", name))
	if err != nil {
		return err.Error()
	}
	return tailLines(string(data), n)
}

// abortClients frees processes stuck on a Gluster mount (the harness calls
// it when a client times out).
func (b *glusterBed) abortClients() {
	for _, c := range b.clients {
		if m, ok := mountAt(c.mountpoint); ok && m.FSType == "fuse.glusterfs" {
			abortConnection(b.t, m)
		}
	}
}

// close tears the bed down: unmounts the clients (which makes them exit),
// kills the namespace (glusterd, the brick), reaps, checks that nothing
// is left, and removes the bed's directory.
func (b *glusterBed) close() {
	t := b.t
	if t.Failed() {
		// The logs go with the bed: keep their ends in the test's output.
		for i := range b.clients {
			name := fmt.Sprintf("client%d.log", i+1)
			t.Logf("GlusterFS %s (tail):\n%s", name, b.logTail(name, 15))
		}
	}
	start := time.Now()
	for _, c := range b.clients {
		b.stopClient(c)
	}
	clientsDown := time.Since(start)
	b.stopServer()
	serverDown := time.Since(start)
	b.reapOrphans()
	if b.subreaper {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
			t.Errorf("clearing PR_SET_CHILD_SUBREAPER: %v", err)
		}
	}
	for _, p := range processesNaming(b.dir) {
		t.Errorf("left behind by the GlusterFS bed: pid %d: %s; killing it", p.pid, p.cmdline)
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Errorf("reading mountinfo: %v", err)
		return
	}
	if left := mountinfo.Under(mounts, b.dir); len(left) > 0 {
		t.Errorf("mount left behind by the GlusterFS bed at %s (%s); not removing %s", left[0].Mountpoint, left[0].FSType, b.dir)
		return
	}
	if err := os.RemoveAll(b.dir); err != nil {
		t.Errorf("removing the GlusterFS bed: %v", err)
	}
	t.Logf("GlusterFS bed down (clients %v, server %v, all %v)", clientsDown.Round(time.Millisecond), serverDown.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

func (b *glusterBed) stopClient(c *glusterClient) {
	t := b.t
	if m, ok := mountAt(c.mountpoint); ok && m.FSType == "fuse.glusterfs" {
		if err := unix.Unmount(c.mountpoint, 0); err != nil {
			t.Logf("umount %s: %v; aborting its connection and detaching it", c.mountpoint, err)
			detach(t, m)
		}
	}
	select {
	case <-c.done:
	case <-time.After(glusterStepTimeout):
		t.Errorf("glusterfs client of %s still runs %v after its unmount; killing it", c.mountpoint, glusterStepTimeout)
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-c.done:
		case <-time.After(glusterStepTimeout):
			t.Errorf("glusterfs client pid %d survives SIGKILL", c.cmd.Process.Pid)
		}
	}
	// A client that died before the unmount leaves a dead mount behind.
	if m, ok := mountAt(c.mountpoint); ok && m.FSType == "fuse.glusterfs" {
		t.Errorf("glusterfs client of %s exited (%v) but its mount stays; detaching it", c.mountpoint, c.cmd.ProcessState)
		detach(t, m)
	}
}

func (b *glusterBed) stopServer() {
	t := b.t
	if b.server == nil {
		return
	}
	select {
	case <-b.serverDone:
		t.Errorf("glusterd's namespace ended before the test did (%v): %s\nglusterd.log:\n%s", b.server.ProcessState, b.serverOut, b.logTail("glusterd.log", 20))
		return
	default:
	}
	// SIGKILL: glusterd and glusterfsd spend about 2 s each in their
	// SIGTERM clean-up, and nothing here needs a clean exit. The kernel
	// kills (and reaps) every process of a PID namespace whose first
	// process dies. unshare is alive, so nsInit is its unreaped child: the
	// pid cannot have been reused.
	if b.nsInit > 0 {
		syscall.Kill(b.nsInit, syscall.SIGKILL)
	} else {
		syscall.Kill(b.server.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-b.serverDone:
	case <-time.After(glusterStepTimeout):
		t.Errorf("glusterd's namespace still runs %v after SIGKILL; killing unshare", glusterStepTimeout)
		syscall.Kill(-b.server.Process.Pid, syscall.SIGKILL)
		select {
		case <-b.serverDone:
		case <-time.After(glusterStepTimeout):
			t.Errorf("unshare pid %d survives SIGKILL", b.server.Process.Pid)
		}
	}
}

// reapOrphans reaps the Gluster zombies re-parented to the test process
// (a subreaper while the bed is up).
func (b *glusterBed) reapOrphans() {
	self := os.Getpid()
	for _, p := range processes() {
		if p.ppid == self && p.state == "Z" && strings.HasPrefix(p.comm, "gluster") {
			var ws unix.WaitStatus
			unix.Wait4(p.pid, &ws, unix.WNOHANG, nil)
		}
	}
}

type procInfo struct {
	pid, ppid   int
	comm, state string
	cmdline     string
}

// processes lists the processes of this PID namespace from /proc.
func processes() []procInfo {
	entries, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		lp, rp := strings.IndexByte(string(stat), '('), strings.LastIndexByte(string(stat), ')')
		if lp < 0 || rp < lp {
			continue
		}
		rest := strings.Fields(string(stat[rp+1:]))
		if len(rest) < 2 {
			continue
		}
		p := procInfo{pid: pid, comm: string(stat[lp+1 : rp]), state: rest[0]}
		p.ppid, _ = strconv.Atoi(rest[1])
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			p.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
		out = append(out, p)
	}
	return out
}

// processesNaming lists the processes whose command line names dir, but
// not this one.
func processesNaming(dir string) []procInfo {
	var out []procInfo
	for _, p := range processes() {
		if p.pid != os.Getpid() && strings.Contains(p.cmdline, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}
