package mount_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Users the multi-user tests act as: numeric ids with no account, no supplementary groups.
var (
	userA = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	userB = &syscall.Credential{Uid: 65533, Gid: 65533, Groups: []uint32{}}
)

// session is one client process (workers/session.py) running as one user, which keeps descriptors
// open between steps, so that a test can interleave what several users do.
type session struct {
	t     *testing.T
	h     *harness
	label string
	in    io.WriteCloser
	out   *bufio.Reader
	errs  *syncBuffer
	pid   int
	// end kills the session's process group and waits for it (also run when the test ends).
	end func()
}

// reply is session.py's answer to one command.
type reply map[string]any

// errno is the call's error, 0 if it succeeded.
func (r reply) errno() syscall.Errno {
	if e, ok := r["errno"].(float64); ok {
		return syscall.Errno(int(e))
	}
	return 0
}

func (r reply) num(key string) int64 {
	v, _ := r[key].(float64)
	return int64(v)
}

// ino is the inode number a stat reply carries (as a string: JSON numbers do not hold 64 bits).
func (r reply) ino() uint64 {
	n, _ := strconv.ParseUint(r.str("ino"), 10, 64)
	return n
}

func (r reply) str(key string) string {
	s, _ := r[key].(string)
	return s
}

func (r reply) String() string {
	if e := r.errno(); e != 0 {
		return e.Error()
	}
	b, _ := json.Marshal(map[string]any(r))
	return string(b)
}

// sessionScript copies session.py where every user can read it and returns an interpreter every
// user can run (the test's own may live under /root).
func (h *harness) sessionScript(t *testing.T) (python, script string) {
	t.Helper()
	if err := os.Chmod(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Written once per harness, and by rename from a file of its own: a session started just before
	// may still be reading it, and rewriting it in place (truncate, write) showed that one an empty
	// script, which exits at once without a word.
	script = filepath.Join(h.dir, "session.py")
	if _, err := os.Stat(script); errors.Is(err, fs.ErrNotExist) {
		src, err := os.ReadFile(filepath.Join(bins.workers, "session.py"))
		if err != nil {
			t.Fatal(err)
		}
		tmp, err := os.CreateTemp(h.dir, "session.py.*")
		if err != nil {
			t.Fatal(err)
		}
		_, werr := tmp.Write(src)
		if err := errors.Join(werr, tmp.Chmod(0o644), tmp.Close()); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp.Name(), script); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	sessionPython.once.Do(func() {
		sessionPython.candidates = []string{bins.python, "/usr/bin/python3", "/usr/local/bin/python3"}
		for _, py := range sessionPython.candidates {
			cmd := exec.Command(py, "-c", "import json, os")
			cmd.Dir = "/"
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: userA}
			if cmd.Run() == nil {
				sessionPython.path = py
				return
			}
		}
	})
	if sessionPython.path == "" {
		skipOrFatal(t, "no python3 that uid %d can run (tried %v)", userA.Uid, sessionPython.candidates)
	}
	return sessionPython.path, script
}

// sessionPython is the interpreter sessions run on, found once.
var sessionPython struct {
	once       sync.Once
	path       string
	candidates []string
}

// startSession starts a session as cred (nil: root). It is killed when the test ends.
func (h *harness) startSession(t *testing.T, label string, cred *syscall.Credential) *session {
	t.Helper()
	python, script := h.sessionScript(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, python, script)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.WaitDelay = 10 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &session{t: t, h: h, label: label, in: in, out: bufio.NewReader(out), errs: &syncBuffer{}}
	cmd.Stderr = s.errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.pid = cmd.Process.Pid
	var once sync.Once
	s.end = func() {
		once.Do(func() {
			in.Close()
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		})
	}
	t.Cleanup(s.end)
	return s
}

// do runs one command and returns its reply; a session that does not answer within clientTimeout
// gets the harness's FUSE connections aborted and fails the test.
func (s *session) do(cmd map[string]any) reply {
	s.t.Helper()
	return s.start(cmd).reply()
}

// call is a command sent to a session whose reply has not been read yet.
type call struct {
	s    *session
	cmd  []byte
	line chan string
	got  *string
}

// start sends one command and returns without waiting for its answer: for a command that blocks
// until another session acts.
func (s *session) start(cmd map[string]any) *call {
	s.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := fmt.Fprintf(s.in, "%s\n", b); err != nil {
		s.t.Fatalf("%s: sending %s: %v\n%s", s.label, b, err, s.errs.String())
	}
	c := &call{s: s, cmd: b, line: make(chan string, 1)}
	go func() {
		l, _ := s.out.ReadString('\n')
		c.line <- l
	}()
	return c
}

// answeredWithin reports whether the session answered within d.
func (c *call) answeredWithin(d time.Duration) bool {
	if c.got != nil {
		return true
	}
	select {
	case l := <-c.line:
		c.got = &l
		return true
	case <-time.After(d):
		return false
	}
}

// reply waits for the answer, as do does.
func (c *call) reply() reply {
	s := c.s
	s.t.Helper()
	if !c.answeredWithin(clientTimeout) {
		s.h.abortAll()
		s.t.Fatalf("%s: %s did not answer within %v: FUSE connections aborted", s.label, c.cmd, clientTimeout)
	}
	var r reply
	if err := json.Unmarshal([]byte(*c.got), &r); err != nil {
		s.t.Fatalf("%s: %s answered %q: %v (process: %s)\nstderr:\n%s", s.label, c.cmd, *c.got, err, s.exitStatus(), s.errs.String())
	}
	return r
}

// exitStatus says how the session's process ended, waiting for it up to a few seconds, without
// reaping it (end still does): for a session that stopped answering, whether it exited (and how) or
// was killed, and by which signal.
func (s *session) exitStatus() string {
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, s.pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
			return fmt.Sprintf("waitid: %v", err)
		}
		if info.Signo != 0 { // SIGCHLD: it ended; a zombie's stat ends with its wait status
			how := map[int32]string{1: "exited", 2: "killed", 3: "dumped core"}[info.Code]
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
			fields := strings.Fields(string(stat))
			status := "?"
			if len(fields) > 0 {
				if n, err := strconv.Atoi(fields[len(fields)-1]); err == nil {
					ws := syscall.WaitStatus(n)
					if ws.Signaled() {
						status = "signal " + ws.Signal().String()
					} else {
						status = fmt.Sprintf("exit status %d", ws.ExitStatus())
					}
				}
			}
			return fmt.Sprintf("pid %d %s (%s)", s.pid, how, status)
		}
	}
	return fmt.Sprintf("pid %d still running", s.pid)
}

// put writes data into path (opened O_WRONLY|O_CREAT, written from offset 0, closed); each step has
// to succeed.
func (s *session) put(path, data string) {
	s.t.Helper()
	fd := s.must(map[string]any{"op": "open", "path": path, "flags": []string{"O_WRONLY", "O_CREAT"}}).num("fd")
	s.must(map[string]any{"op": "write", "fd": fd, "data": data})
	s.must(map[string]any{"op": "close", "fd": fd})
}

// must runs a command that has to succeed.
func (s *session) must(cmd map[string]any) reply {
	s.t.Helper()
	r := s.do(cmd)
	if r.errno() != 0 {
		s.t.Fatalf("%s: %v failed: %v", s.label, cmd, r.errno())
	}
	return r
}

// fileState is a backing file's owner, mode and content, for before/after comparisons.
type fileState struct {
	uid, gid uint32
	mode     os.FileMode
	data     string
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	uid, gid, mode := ownerOf(t, path)
	return fileState{uid: uid, gid: gid, mode: mode, data: string(readFile(t, path))}
}

func (f fileState) String() string {
	return fmt.Sprintf("%d:%d %v %q", f.uid, f.gid, f.mode, f.data)
}
