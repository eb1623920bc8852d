package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

// daemon is a FUSE server process (mergefs or the loopback) serving one mount.
type daemon struct {
	name     string
	mount    string
	logPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	stopping bool
}

const (
	mountTimeout = 20 * time.Second
	stopTimeout  = 15 * time.Second
)

// startDaemon runs argv and waits until its mount appears. The daemon gets
// its own process group, so a Ctrl-C in the terminal reaches only the
// driver, which then stops workers before daemons; and SIGTERM if the
// driver dies, which makes it unmount.
func startDaemon(name string, argv []string, env []string, mountpoint, logPath string) (*daemon, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, mount: mountpoint, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	deadline := time.Now().Add(mountTimeout)
	for {
		if _, ok := fuseMountAt(mountpoint); ok {
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("%s exited before mounting (%v): %s", name, d.waitErr, tail(logPath, 10))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("%s did not mount %s within %v: %s", name, mountpoint, mountTimeout, tail(logPath, 10))
		}
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// stop unmounts and ends the daemon; whatever happens, the mount is gone
// afterwards (aborted and detached if the daemon does not cooperate).
func (d *daemon) stop() error {
	if d.stopping {
		return nil
	}
	d.stopping = true
	d.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		err = fmt.Errorf("%s did not exit within %v after SIGTERM; killed", d.name, stopTimeout)
		if m, ok := fuseMountAt(d.mount); ok {
			mountinfo.Abort(m)
		}
		d.cmd.Process.Kill()
		<-d.exited
	}
	for range 10 {
		m, ok := fuseMountAt(d.mount)
		if !ok {
			break
		}
		mountinfo.Abort(m)
		if derr := mountinfo.Detach(d.mount); derr != nil && err == nil {
			err = fmt.Errorf("%s: %w", d.name, derr)
		}
	}
	return err
}

// alive reports whether the daemon still runs.
func (d *daemon) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// resetPeakMemory starts a new VmHWM measurement period (clear_refs 5
// resets the peak resident set size to the current one).
func resetPeakMemory(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// procStatusKB reads a "Key:   123 kB" line of /proc/<pid>/status.
func procStatusKB(pid int, key string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		rest, ok := strings.CutPrefix(line, key+":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			break
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

// fuseMountAt returns the topmost mount at dir if it is a FUSE mount.
func fuseMountAt(dir string) (mountinfo.Mount, bool) {
	m, ok, err := mountinfo.At(dir)
	return m, err == nil && ok && m.IsFUSE()
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// mountsUnder lists FUSE mounts at or below dir, deepest first.
func mountsUnder(dir string) []mountinfo.Mount {
	mounts, _ := mountinfo.Read()
	var out []mountinfo.Mount
	for _, m := range mountinfo.Under(mounts, dir) {
		if m.IsFUSE() {
			out = append(out, m)
		}
	}
	return out
}

// scanLine reads one line from a worker's stdout.
func scanLine(sc *bufio.Scanner) (string, error) {
	if sc.Scan() {
		return sc.Text(), nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("unexpected end of output")
}
