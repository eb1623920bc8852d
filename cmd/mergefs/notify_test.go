package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listenNotify opens a datagram socket the way systemd does for
// $NOTIFY_SOCKET and returns its address and a function that reads the next
// message (failing the test after a timeout instead of hanging).
func listenNotify(t *testing.T, addr string) (string, func() string) {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return addr, func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification on %s: %v", addr, err)
		}
		return string(buf[:n])
	}
}

func TestNotifyPathSocket(t *testing.T) {
	addr, recv := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	n, err := newNotifier(addr)
	if err != nil || !n.enabled() {
		t.Fatalf("newNotifier(%q) = %v, %v", addr, n, err)
	}
	if err := n.ready("serving /a at /b"); err != nil {
		t.Fatal(err)
	}
	if got, want := recv(), "READY=1\nSTATUS=serving /a at /b"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := n.stopping("unmounting on terminated"); err != nil {
		t.Fatal(err)
	}
	if got, want := recv(), "STOPPING=1\nSTATUS=unmounting on terminated"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// systemd usually passes an abstract socket: "@" stands for the leading NUL.
func TestNotifyAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@mergefs-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	addr, recv := listenNotify(t, name)
	n, err := newNotifier(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ready("ok"); err != nil {
		t.Fatal(err)
	}
	if got := recv(); got != "READY=1\nSTATUS=ok" {
		t.Errorf("got %q", got)
	}
	// The name is abstract: nothing was created in the filesystem.
	if _, err := os.Stat(strings.TrimPrefix(name, "@")); err == nil {
		t.Errorf("a file named like the abstract socket exists")
	}
}

func TestNotifyStatusCannotInjectAssignments(t *testing.T) {
	addr, recv := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	n, _ := newNotifier(addr)
	if err := n.ready("/srv/a\nREADY=0\rX=1"); err != nil {
		t.Fatal(err)
	}
	got := recv()
	if lines := strings.Split(got, "\n"); len(lines) != 2 || lines[0] != "READY=1" {
		t.Errorf("message %q: want exactly READY=1 and one STATUS line", got)
	}
}

func TestNotifyDisabledAndBadSockets(t *testing.T) {
	n, err := newNotifier("")
	if err != nil || n.enabled() {
		t.Fatalf("empty NOTIFY_SOCKET: %v, enabled=%v; want a silent no-op", err, n.enabled())
	}
	if err := n.ready("x"); err != nil {
		t.Errorf("no-op notifier: %v", err)
	}
	for _, bad := range []string{"relative/sock", "@", "vsock:2:1234"} {
		if _, err := newNotifier(bad); err == nil {
			t.Errorf("newNotifier(%q): no error", bad)
		}
	}
	// A socket that is gone gives an error at once, not a hang.
	gone, _ := newNotifier(filepath.Join(t.TempDir(), "missing"))
	if err := gone.ready("x"); err == nil {
		t.Errorf("send to a missing socket succeeded")
	}
}
