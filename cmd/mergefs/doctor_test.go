package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

// only returns the findings of one check.
func (r mountReport) only(check string) []finding {
	var out []finding
	for _, f := range r.Findings {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

func wantFinding(t *testing.T, r mountReport, check, sev string, words ...string) {
	t.Helper()
	fs := r.only(check)
	if len(fs) != 1 {
		t.Fatalf("%d %s findings, want 1: %+v", len(fs), check, r.Findings)
	}
	if fs[0].Severity != sev {
		t.Errorf("%s: severity %s, want %s: %+v", check, fs[0].Severity, sev, fs[0])
	}
	for _, w := range words {
		if !strings.Contains(fs[0].Summary+" | "+fs[0].Fix, w) {
			t.Errorf("%s: %q lacks %q", check, fs[0].Summary+" | "+fs[0].Fix, w)
		}
	}
	if sev != sevOK && fs[0].Fix == "" && sev == sevProblem {
		t.Errorf("%s: a problem without what to do: %+v", check, fs[0])
	}
}

func TestParseNofile(t *testing.T) {
	limits := "Limit                     Soft Limit           Hard Limit           Units     \n" +
		"Max cpu time              unlimited            unlimited            seconds   \n" +
		"Max open files            1024                 524288               files     \n"
	if soft, hard, ok := parseNofile(limits); !ok || soft != 1024 || hard != 524288 {
		t.Errorf("parseNofile = %d %d %v", soft, hard, ok)
	}
	if soft, hard, ok := parseNofile("Max open files            unlimited            unlimited            files\n"); !ok || soft != ^uint64(0) || hard != soft {
		t.Errorf("unlimited: %d %d %v", soft, hard, ok)
	}
	if _, _, ok := parseNofile("Max processes 10 10 processes\n"); ok {
		t.Error("no open files line: ok")
	}
}

func TestDescriptorFinding(t *testing.T) {
	for _, c := range []struct {
		soft, hard uint64
		used       int
		sev        string
		words      []string
	}{
		{1024, 524288, 30, sevProblem, []string{"may hold 1024 descriptors", "soft 1024, hard 524288", "EMFILE", "LimitNOFILE=1048576"}},
		{256, 256, 20, sevProblem, []string{"may hold 256 descriptors"}},
		{65536, 65536, 60000, sevProblem, []string{"holds 60000 descriptors of its limit of 65536"}},
		{65536, 65536, 100, sevOK, []string{"65536"}},
		{^uint64(0), ^uint64(0), 100, sevOK, []string{"unlimited"}},
	} {
		var r mountReport
		r.descriptorFinding(c.soft, c.hard, c.used, 65536)
		wantFinding(t, r, "descriptors", c.sev, c.words...)
	}
}

func TestVersionFinding(t *testing.T) {
	self := buildInfo{Version: "(devel)", Revision: "abc", Modified: "false", GoVersion: "go1.26.8"}
	var r mountReport
	r.addVersion(map[string]string{"version": "(devel)", "revision": "abc", "goversion": "go1.26.8"}, self)
	wantFinding(t, r, "version", sevOK, "(devel), revision abc, go1.26.8")
	r = mountReport{Mountpoint: "/srv/data"}
	r.addVersion(map[string]string{"version": "(devel)", "revision": "0ld", "goversion": "go1.26.8"}, self)
	wantFinding(t, r, "version", sevProblem, "the daemon runs (devel), revision 0ld, go1.26.8; this binary is (devel), revision abc, go1.26.8", "systemctl restart")
	r = mountReport{}
	self.Revision = ""
	r.addVersion(map[string]string{"version": "(devel)", "revision": "unknown", "goversion": "go1.26.8"}, self)
	wantFinding(t, r, "version", sevNote, "revision is unknown")
}

func TestBackingFindings(t *testing.T) {
	for _, c := range []struct {
		line  string
		sev   string
		words []string
	}{
		{"1 0 8:1 / / rw - ext4 /dev/sda1 rw", sevOK, []string{"local filesystem ext4"}},
		{"1 0 0:50 / /srv rw - nfs4 host:/export rw,vers=4.2,local_lock=none", sevNote, []string{"NFS", "locks go to the server"}},
		{"1 0 0:50 / /srv rw - nfs host:/export rw,vers=3,nolock", sevProblem, []string{"keeps byte-range locks on this host", "without nolock"}},
		{"1 0 0:50 / /srv rw - nfs4 host:/export rw,local_lock=all", sevProblem, []string{"local_lock=none"}},
		{"1 0 0:50 / /srv rw - cifs //host/share rw", sevProblem, []string{"SMB"}},
		{"1 0 0:50 / /srv rw - ceph 10.0.0.1:/ rw", sevNote, []string{"CephFS", "MDS"}},
		{"1 0 0:50 / /srv rw - overlay overlay rw", sevNote, []string{"not one mergefs was tested on"}},
	} {
		m, err := mountinfo.ParseLine(c.line)
		if err != nil {
			t.Fatal(err)
		}
		var r mountReport
		backingFindings(&r, m, doctorOptions{proc: t.TempDir()})
		wantFinding(t, r, "backing", c.sev, c.words...)
	}
}

func TestMultiHostOff(t *testing.T) {
	nfs, _ := mountinfo.ParseLine("1 0 0:50 / /srv rw - nfs4 host:/export rw,vers=4.2")
	local, _ := mountinfo.ParseLine("1 0 8:1 / / rw - ext4 /dev/sda1 rw")
	var r mountReport
	backingFindings(&r, nfs, doctorOptions{multiHost: "off"})
	wantFinding(t, r, "multi-host", sevProblem, "--multi-host=off on a network filesystem")
	for _, c := range []struct {
		m    mountinfo.Mount
		mode string
	}{{nfs, "auto"}, {nfs, "on"}, {nfs, ""}, {local, "off"}} {
		r = mountReport{}
		backingFindings(&r, c.m, doctorOptions{multiHost: c.mode})
		if len(r.only("multi-host")) != 0 {
			t.Errorf("%s, --multi-host=%s: %+v", c.m.FSType, c.mode, r.Findings)
		}
	}
}

func TestGlusterVolume(t *testing.T) {
	for src, want := range map[string][2]string{
		"server:/vol": {"server", "vol"}, "server:vol": {"server", "vol"}, "127.0.0.1:/vol/sub/dir": {"127.0.0.1", "vol"}, "novolume": {"", ""},
	} {
		if h, v := glusterVolume(src); h != want[0] || v != want[1] {
			t.Errorf("glusterVolume(%q) = %q %q, want %q", src, h, v, want)
		}
	}
}

// The Gluster checks with a stand-in gluster CLI and a stand-in /proc.
func TestGlusterFindings(t *testing.T) {
	dir := t.TempDir()
	cli := filepath.Join(dir, "gluster")
	// Answers only through the server (the local glusterd is not there), as a
	// client-only host would.
	script := `#!/bin/sh
case "$*" in
*--remote-host=server*"volume get vol all") ;;
*) echo "Connection failed. Please check if gluster daemon is operational." >&2; exit 1 ;;
esac
cat <<'EOF'
Option                                  Value                                   
------                                  -----                                   
cluster.lookup-unhashed                 on                                      
performance.quick-read                  on                                      
performance.open-behind                 on                                      
performance.stat-prefetch               off                                     
EOF
`
	if err := os.WriteFile(cli, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	proc := filepath.Join(dir, "proc")
	os.MkdirAll(filepath.Join(proc, "42"), 0o755)
	os.WriteFile(filepath.Join(proc, "42", "cmdline"), []byte("/usr/sbin/glusterfs\x00--process-name\x00fuse\x00--volfile-server=server\x00--volfile-id=vol\x00/mnt/gluster\x00"), 0o644)
	m, _ := mountinfo.ParseLine("1 0 0:50 / /mnt/gluster rw - fuse.glusterfs server:/vol rw,user_id=0,allow_other")

	var r mountReport
	backingFindings(&r, m, doctorOptions{proc: proc, gluster: cli, timeout: 10e9})
	wantFinding(t, r, "backing", sevNote, "GlusterFS")
	wantFinding(t, r, "gluster", sevNote, "performance.open-behind=on", "performance.stat-prefetch=off", "performance.quick-read=on",
		"gluster volume set vol performance.open-behind off")
	wantFinding(t, r, "gluster-acl", sevNote, "without acl", "-o acl")

	// With --acl, and all three options off.
	os.WriteFile(filepath.Join(proc, "42", "cmdline"), []byte("/usr/sbin/glusterfs\x00--acl\x00--volfile-server=server\x00/mnt/gluster\x00"), 0o644)
	os.WriteFile(cli, []byte(strings.ReplaceAll(script, " on  ", " off ")), 0o755)
	r = mountReport{}
	backingFindings(&r, m, doctorOptions{proc: proc, gluster: cli, timeout: 10e9})
	wantFinding(t, r, "gluster", sevOK, "performance.open-behind=off")
	wantFinding(t, r, "gluster-acl", sevOK, "--acl")

	// No CLI: say where to look.
	r = mountReport{}
	backingFindings(&r, m, doctorOptions{proc: proc, gluster: filepath.Join(dir, "missing"), timeout: 10e9})
	wantFinding(t, r, "gluster", sevNote, "no gluster CLI", "gluster volume get vol all")
}

func TestStickyWalk(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("users/shared", 0o777)
	mk("users/tmp", 0o777|os.ModeSticky)
	mk("users/private", 0o700)
	mk("a/b/c/deep", 0o777)
	os.WriteFile(filepath.Join(root, "users", "r.json"), []byte("{}"), 0o666)
	// A symlink to a world-writable directory is not followed.
	mk("elsewhere", 0o755)
	mk("elsewhere/open", 0o777)
	os.Symlink(filepath.Join(root, "elsewhere", "open"), filepath.Join(root, "users", "link"))
	os.Chmod(filepath.Join(root, "elsewhere", "open"), 0o700)

	bad, total, seen, complete := stickyWalk(root, 8, 1000)
	if got := strings.Join(bad, " "); total != 2 || got != "a/b/c/deep users/shared" || !complete {
		t.Errorf("stickyWalk = %q, %d, %d seen, complete %v", got, total, seen, complete)
	}
	// Through a descriptor's /proc link, as doctor reaches an in-place
	// mount's backing directory through its daemon's descriptor.
	f, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if bad, total, _, _ := stickyWalk(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), 8, 1000); total != 2 || bad[1] != "users/shared" {
		t.Errorf("through /proc/self/fd: %v %d", bad, total)
	}
	// Bounded: too shallow to see a/b/c/deep.
	if bad, total, _, complete := stickyWalk(root, 2, 1000); total != 1 || bad[0] != "users/shared" || complete {
		t.Errorf("depth 2: %v %d complete %v", bad, total, complete)
	}
	if _, _, seen, complete := stickyWalk(root, 8, 3); seen != 3 || complete {
		t.Errorf("3 entries: saw %d, complete %v", seen, complete)
	}
	// The backing root itself counts.
	os.Chmod(root, 0o777)
	if bad, _, _, _ := stickyWalk(root, 8, 1000); len(bad) == 0 || bad[0] != "." {
		t.Errorf("a world-writable root: %v", bad)
	}
}

func TestCheckSticky(t *testing.T) {
	root := t.TempDir()
	for i := range 12 {
		p := filepath.Join(root, "d"+string(rune('a'+i)))
		os.Mkdir(p, 0o755)
		os.Chmod(p, 0o777)
	}
	var r mountReport
	checkSticky(&r, root, doctorOptions{walkDepth: 8, walkEntries: 1000})
	wantFinding(t, r, "allow-other", sevProblem, "12 world-writable directories without the sticky bit", "da, db", "and 2 more", "chmod +t")
}

func TestCheckStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	os.Mkdir(dir, 0o700)
	r := mountReport{StateDir: dir}
	checkStateDir(&r, "--state-dir")
	if os.Geteuid() == 0 {
		wantFinding(t, r, "state-dir", sevOK, "0700")
	} else {
		wantFinding(t, r, "state-dir", sevProblem, "not root")
	}
	os.Chmod(dir, 0o755)
	r = mountReport{StateDir: dir}
	checkStateDir(&r, "--state-dir")
	if os.Geteuid() == 0 {
		wantFinding(t, r, "state-dir", sevProblem, "mode 0755", "chmod 0700 "+dir)
	}
	r = mountReport{StateDir: dir + "-missing"}
	checkStateDir(&r, "--state-dir")
	wantFinding(t, r, "state-dir", sevProblem, "no such file", "--state-dir")
	os.Symlink(dir, dir+"-link")
	r = mountReport{StateDir: dir + "-link"}
	checkStateDir(&r, "--state-dir")
	wantFinding(t, r, "state-dir", sevProblem, "not a directory")
}

func TestDoctorCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if rc := run([]string{"doctor", dir}, &out, &errOut); rc != 1 || !strings.Contains(out.String(), "PROBLEM  mount: nothing is mounted here") ||
		!strings.Contains(out.String(), "1 problem, 0 notes.") {
		t.Errorf("doctor on a plain directory: rc %d\n%s%s", rc, out.String(), errOut.String())
	}
	out.Reset()
	if rc := run([]string{"doctor", "--json", dir}, &out, &errOut); rc != 1 {
		t.Errorf("--json: rc %d", rc)
	}
	var rep doctorReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Problems != 1 || len(rep.Mounts) != 1 || rep.Mounts[0].Mountpoint != dir ||
		rep.Mounts[0].Findings[0].Check != "mount" || rep.Doctor.GoVersion == "" {
		t.Errorf("--json: %v %+v\n%s", err, rep, out.String())
	}
	for _, args := range [][]string{{"doctor", "--state-dir", dir}, {"doctor", "--bogus"}} {
		out.Reset()
		if rc := run(args, &out, &errOut); rc != 2 {
			t.Errorf("%v: rc %d", args, rc)
		}
	}
	out.Reset()
	if rc := run([]string{"doctor", "--help"}, &out, &errOut); rc != 0 || !strings.Contains(out.String(), "mergefs doctor [flags] [MOUNTPOINT...]") {
		t.Errorf("--help: rc %d %s", rc, out.String())
	}
}
