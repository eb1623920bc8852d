package mount_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the unprivileged user the access tests act as.
const nobody = 65534

// probeResult is what `fsops.py probe` prints.
type probeResult struct {
	Exists bool
	Listed *bool
	Stat   *int
	Read   *int
	Data   *string
}

// tryWriteResult is what `fsops.py try-write` prints: the first step that failed.
type tryWriteResult struct {
	Step  *string
	Errno *int
}

func (r tryWriteResult) String() string {
	if r.Step == nil {
		return "ok"
	}
	return *r.Step + ": " + errnoString(r.Errno)
}

// client runs fsops.py as one user: root (the test's own python3) or an
// unprivileged uid, whose interpreter and script must be reachable by it.
type client struct {
	h      *harness
	python string
	script string
	cred   *syscall.Credential
}

func (h *harness) rootClient() client {
	return client{h: h, python: "python3", script: filepath.Join(bins.workers, "fsops.py")}
}

// unprivilegedClient prepares fsops.py to run as uid/gid nobody with no
// supplementary groups. The test's python3 may live under /root, which that
// user cannot reach, so the first interpreter that runs as it is used, and
// the script is copied into the (opened up) work directory.
func (h *harness) unprivilegedClient(t *testing.T) client {
	t.Helper()
	if err := os.Chmod(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(bins.workers, "fsops.py"))
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(h.dir, "fsops.py")
	if err := os.WriteFile(script, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cred := &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}
	var candidates []string
	if out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	candidates = append(candidates, "/usr/bin/python3", "/usr/local/bin/python3")
	for _, py := range candidates {
		cmd := exec.Command(py, "-c", "import json, os")
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if cmd.Run() == nil {
			return client{h: h, python: py, script: script, cred: cred}
		}
	}
	skipOrFatal(t, "no python3 that uid %d can run (tried %v)", nobody, candidates)
	return client{}
}

// run is harness.run with the client's credentials.
func (c client) run(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	argv := append([]string{c.python, c.script}, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	cmd.Cancel = func() error {
		t.Errorf("%q timed out after %v; killing it and aborting FUSE connections", strings.Join(argv, " "), clientTimeout)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		c.h.abortAll()
		return nil
	}
	cmd.WaitDelay = 15 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstderr:\n%s", strings.Join(argv, " "), err, tailLines(errOut.String(), 30))
	}
	return out.Bytes()
}

func (c client) probe(t *testing.T, path string) probeResult {
	t.Helper()
	out := c.run(t, "probe", path)
	var r probeResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("fsops probe: %v: %s", err, out)
	}
	return r
}

func (c client) tryWrite(t *testing.T, path, text string, extra ...string) tryWriteResult {
	t.Helper()
	out := c.run(t, append([]string{"try-write", path, text}, extra...)...)
	var r tryWriteResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("fsops try-write: %v: %s", err, out)
	}
	return r
}

func isErrno(e *int, want syscall.Errno) bool { return e != nil && syscall.Errno(*e) == want }

// ownerOf returns the backing file's uid, gid and permission bits.
func ownerOf(t *testing.T, path string) (uid, gid uint32, mode os.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return sys.Uid, sys.Gid, st.Mode().Perm()
}

func writeOwned(t *testing.T, path string, data []byte, mode os.FileMode, uid, gid int) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// TestOwnershipAndPermissions: with --allow-other the kernel checks modes
// (default_permissions), records and other files a user creates belong to
// that user, and a commit keeps an existing record's mode and owner.
func TestOwnershipAndPermissions(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountMergefs(backing, mnt, "--allow-other")
	h.needMount(t, mountErr)
	user := h.unprivilegedClient(t)
	root := h.rootClient()

	shared := filepath.Join(backing, "shared")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	private := []byte(`{"secret":"s3cr3t"}`)
	public := []byte(`{"visible":true,"n":1}`)
	writeOwned(t, filepath.Join(shared, "private.json"), private, 0o600, 0, 0)
	writeOwned(t, filepath.Join(shared, "public.json"), public, 0o644, 0, 0)
	mshared := filepath.Join(mnt, "shared")

	if r := user.probe(t, filepath.Join(mshared, "private.json")); !isErrno(r.Read, syscall.EACCES) || r.Data != nil {
		t.Errorf("uid %d reading a 0600 root record: read %s, data %v; want EACCES", nobody, errnoString(r.Read), r.Data)
	}
	if r := user.probe(t, filepath.Join(mshared, "public.json")); r.Read != nil || r.Data == nil || *r.Data != string(public) {
		t.Errorf("uid %d reading a 0644 root record: read %s, data %v; want %s", nobody, errnoString(r.Read), r.Data, public)
	}
	if r := user.tryWrite(t, filepath.Join(mshared, "public.json"), `{"visible":false}`, "--json"); !isErrno(r.Errno, syscall.EACCES) || deref(r.Step) != "open" {
		t.Errorf("uid %d writing a 0644 root record: %v; want open: EACCES", nobody, r)
	}
	if got := readFile(t, filepath.Join(shared, "public.json")); !bytes.Equal(got, public) {
		t.Errorf("a refused write changed the record: %s", got)
	}

	// Created with umask 027, so a mode the daemon made up (0644, 0666) shows.
	created := map[string]string{"new.json": `{"created_by":"nobody"}`, "new.txt": "plain text\n"}
	for name, text := range created {
		args := []string{"--umask", "027"}
		if strings.HasSuffix(name, ".json") {
			args = append(args, "--json")
		}
		if r := user.tryWrite(t, filepath.Join(mshared, name), text, args...); r.Step != nil {
			t.Errorf("uid %d creating %s in a 0777 directory: %v", nobody, name, r)
			continue
		}
		uid, gid, mode := ownerOf(t, filepath.Join(shared, name))
		if uid != nobody || gid != nobody {
			t.Errorf("%s created by uid %d is owned by %d:%d in the backing store", name, nobody, uid, gid)
		}
		if mode != 0o640 {
			t.Errorf("%s created with umask 027 has mode %v in the backing store, want -rw-r-----", name, mode)
		}
		if got := readFile(t, filepath.Join(shared, name)); !jsonEqual(got, []byte(text)) && string(got) != text {
			t.Errorf("%s in the backing store: %q, want %q", name, got, text)
		}
	}

	// A commit replaces the backing file: the replacement must carry the old one's mode and owner.
	pub := filepath.Join(shared, "public.json")
	if err := os.Chown(pub, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pub, 0o640); err != nil {
		t.Fatal(err)
	}
	rewritten := `{"visible":true,"n":2,"by":"root"}`
	if r := root.tryWrite(t, filepath.Join(mshared, "public.json"), rewritten, "--json"); r.Step != nil {
		t.Fatalf("root rewriting public.json through the mount: %v", r)
	}
	if got := readFile(t, pub); !jsonEqual(got, []byte(rewritten)) {
		t.Errorf("public.json after root's rewrite: %s, want %s", got, rewritten)
	}
	if uid, gid, mode := ownerOf(t, pub); uid != nobody || gid != nobody || mode != 0o640 {
		t.Errorf("public.json after root's rewrite: owner %d:%d mode %v, want %d:%d -rw-r-----", uid, gid, mode, nobody, nobody)
	}
	// Its owner can now read it, and the rest of the world cannot: root's commit
	// kept the owner in the kernel's view as well.
	if r := user.probe(t, filepath.Join(mshared, "public.json")); r.Read != nil || r.Data == nil || !jsonEqual([]byte(*r.Data), []byte(rewritten)) {
		t.Errorf("owner uid %d reading its 0640 record: read %s, data %v", nobody, errnoString(r.Read), r.Data)
	}

	// Control: without --allow-other the kernel lets no other user into the
	// mount at all, readable record or not.
	plainMnt := h.path("mnt-no-allow-other")
	_, mountErr = h.mountMergefs(backing, plainMnt)
	h.needMount(t, mountErr)
	for _, name := range []string{"private.json", "new.json"} {
		r := user.probe(t, filepath.Join(plainMnt, "shared", name))
		if r.Read == nil || r.Data != nil {
			t.Errorf("without --allow-other uid %d read %s through the mount: %v", nobody, name, r.Data)
		} else {
			t.Logf("without --allow-other, uid %d reading %s: %s", nobody, name, errnoString(r.Read))
		}
	}
}

// TestReservedFilesHidden: the store's lock file and temporaries exist in
// the backing directory but cannot be seen, opened or created through the mount.
func TestReservedFilesHidden(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountUnderTest(backing, mnt)
	h.needMount(t, mountErr)
	c := h.rootClient()

	for _, p := range []string{"a.json", "b.json", "sub/c.json"} {
		h.python(t, clientTimeout, "fsops.py", "mkdir", filepath.Dir(filepath.Join(mnt, p)))
		for i := range 2 {
			if r := c.tryWrite(t, filepath.Join(mnt, p), fmt.Sprintf(`{"i":%d}`, i), "--json"); r.Step != nil {
				t.Fatalf("writing %s through the mount: %v", p, r)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(backing, ".mergefs.lock")); err != nil {
		t.Fatalf("the backing store has no lock file after commits, so this test checks nothing: %v", err)
	}

	for _, dir := range []string{mnt, filepath.Join(mnt, "sub")} {
		var names []string
		if err := json.Unmarshal(h.python(t, clientTimeout, "fsops.py", "ls", dir), &names); err != nil {
			t.Fatal(err)
		}
		if len(names) == 0 {
			t.Errorf("listing %s through the mount is empty", dir)
		}
		for _, n := range names {
			if strings.HasPrefix(n, ".mergefs.") {
				t.Errorf("listing %s through the mount shows reserved entry %q (all: %v)", dir, n, names)
			}
		}
	}

	if r := c.probe(t, filepath.Join(mnt, ".mergefs.lock")); r.Exists || !isErrno(r.Stat, syscall.ENOENT) || !isErrno(r.Read, syscall.ENOENT) {
		t.Errorf(".mergefs.lock through the mount: exists %v, stat %s, open %s; want ENOENT", r.Exists, errnoString(r.Stat), errnoString(r.Read))
	}
	for _, p := range []string{".mergefs.tmp.x", "sub/.mergefs.tmp.x", ".mergefs.tmp.x.json"} {
		if r := c.tryWrite(t, filepath.Join(mnt, p), "{}"); !isErrno(r.Errno, syscall.EPERM) || deref(r.Step) != "open" {
			t.Errorf("creating %s through the mount: %v; want open: EPERM", p, r)
		}
		if _, err := os.Lstat(filepath.Join(backing, p)); err == nil {
			t.Errorf("%s appeared in the backing store", p)
		}
	}
}

// TestNewRecordInvisibleUntilCommit: a record being created does not exist
// for anyone else until its writer closes it, and then it is whole.
func TestNewRecordInvisibleUntilCommit(t *testing.T) {
	h := newHarness(t)
	backing, mnt := h.path("backing"), h.path("mnt")
	_, mountErr := h.mountUnderTest(backing, mnt)
	h.needMount(t, mountErr)
	c := h.rootClient()

	doc := string(sampleRecord(7, 4<<10))
	path := filepath.Join(mnt, "fresh.json")
	cmd, stdin, stdout := h.startClient(t, clientTimeout, "written", "python3", filepath.Join(bins.workers, "fsops.py"), "write-wait", path, doc)

	r := c.probe(t, path)
	if r.Exists || r.Data != nil || !isErrno(r.Read, syscall.ENOENT) {
		t.Errorf("fresh.json while its creator holds it open: exists %v, stat %s, open %s, %d bytes read; want ENOENT",
			r.Exists, errnoString(r.Stat), errnoString(r.Read), len(deref(r.Data)))
	}
	if r.Listed != nil && *r.Listed {
		t.Errorf("fresh.json is listed in its directory before its creator closed it")
	}
	if _, err := os.Lstat(filepath.Join(backing, "fresh.json")); err == nil {
		t.Errorf("fresh.json is in the backing store before its creator closed it")
	}

	if _, err := stdin.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stdout)
	line := string(rest)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("write-wait: %v (%s)", err, line)
	}
	var closed struct{ Close *int }
	if err := json.Unmarshal([]byte(line), &closed); err != nil || closed.Close != nil {
		t.Fatalf("closing fresh.json: %s (%v)", line, err)
	}

	r = c.probe(t, path)
	if !r.Exists || r.Read != nil || r.Data == nil || !jsonEqual([]byte(*r.Data), []byte(doc)) {
		t.Errorf("fresh.json after its creator closed it: exists %v, open %s, %d bytes, want the %d-byte document",
			r.Exists, errnoString(r.Read), len(deref(r.Data)), len(doc))
	}
}
