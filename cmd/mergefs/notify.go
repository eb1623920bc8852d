package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// notifier speaks systemd's notify protocol (sd_notify(3)): one datagram of
// newline-separated VAR=value assignments to the unix socket named by
// $NOTIFY_SOCKET. It is implemented here because the protocol is one
// sendmsg; a library would add a dependency for nothing.
type notifier struct {
	// addr is the socket: a path, or an abstract name written with a
	// leading '@' (Go's net package maps '@' to the abstract namespace).
	addr string
}

// notifyTimeout bounds a send: the manager reads promptly, and a full socket
// buffer must not hold up mounting or shutting down.
const notifyTimeout = 2 * time.Second

// newNotifier returns a notifier for the value of $NOTIFY_SOCKET; an empty
// value (not started by systemd, or Type=simple) makes every send a no-op.
func newNotifier(socket string) (notifier, error) {
	switch {
	case socket == "":
		return notifier{}, nil
	case strings.HasPrefix(socket, "/"), strings.HasPrefix(socket, "@") && len(socket) > 1:
		return notifier{addr: socket}, nil
	}
	return notifier{}, fmt.Errorf("NOTIFY_SOCKET=%q: only unix socket paths and abstract names (@name) are supported", socket)
}

func (n notifier) enabled() bool { return n.addr != "" }

// send delivers one state message such as "READY=1\nSTATUS=serving".
func (n notifier) send(state string) error {
	if n.addr == "" {
		return nil
	}
	if state == "" {
		return errors.New("notify: empty state")
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", n.addr, err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(notifyTimeout)); err != nil {
		return fmt.Errorf("notify %s: %w", n.addr, err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", n.addr, err)
	}
	return nil
}

// ready tells the manager that the mount is usable; status is shown by
// `systemctl status`.
func (n notifier) ready(status string) error {
	return n.send("READY=1\nSTATUS=" + oneLine(status))
}

// stopping tells the manager that shutdown has begun.
func (n notifier) stopping(status string) error {
	return n.send("STOPPING=1\nSTATUS=" + oneLine(status))
}

// oneLine keeps a value from starting another assignment.
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}
