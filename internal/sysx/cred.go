// Package sysx holds the careful system calls mergefs's root daemon makes on behalf of its callers:
// acting with a caller's file-system credentials on one OS thread, and reaching an object through a
// descriptor the daemon holds (/proc/self/fd/N) rather than through a path a user could redirect.
// Linux only.
package sysx

import (
	"fmt"
	"runtime"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cred is a caller's file-system identity: its fsuid, fsgid and supplementary groups.
type Cred struct {
	UID, GID uint32
	Groups   []uint32
}

// IsRoot reports whether acting as c is acting as the daemon itself (uid and gid 0), so that no switch
// is needed.
func (c *Cred) IsRoot() bool { return c == nil || (c.UID == 0 && c.GID == 0) }

func (c *Cred) String() string {
	if c == nil {
		return "daemon"
	}
	return fmt.Sprintf("%d:%d%v", c.UID, c.GID, c.Groups)
}

// AsUser runs fn on one OS thread whose fsuid, fsgid and supplementary groups are c's, so that the
// kernel checks every permission (modes, ACLs, the sticky bit, ownership of new files, set-group-ID
// directories) exactly as for the caller. A thread whose fsuid is not 0 loses the file-system
// capabilities (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER, CAP_MKNOD, ...); they come back when the
// daemon's identity is restored. nil or a root c runs fn as the daemon.
//
// The switch uses the raw per-thread system calls: Go's syscall.Setgroups and friends change every
// thread of the process. The thread stays locked to the goroutine while it has another identity, and
// the Go runtime never clones a locked thread's state into a new one.
func AsUser(c *Cred, fn func() error) error {
	if c.IsRoot() {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := setgroups(c.Groups); err != nil {
		return fmt.Errorf("setgroups for %v: %w", c, err)
	}
	setfsgid(c.GID)
	setfsuid(c.UID)
	defer restore()
	return fn()
}

// daemonGroups are the supplementary groups the daemon started with, which restore puts back.
var daemonGroups = func() []uint32 {
	gids, err := unix.Getgroups()
	if err != nil {
		panic(fmt.Sprintf("sysx: getgroups: %v", err))
	}
	groups := make([]uint32, len(gids))
	for i, g := range gids {
		groups[i] = uint32(g)
	}
	return groups
}()

// restore gives the thread the daemon's identity back. It cannot fail for a process whose real and
// effective ids are 0; if it ever did, the thread would keep serving requests with a user's identity,
// so the daemon stops instead.
func restore() {
	setfsuid(0)
	setfsgid(0)
	if err := setgroups(daemonGroups); err != nil {
		panic(fmt.Sprintf("sysx: cannot restore the daemon's groups: %v", err))
	}
	if uid := setfsuid(^uint32(0)); uid != 0 {
		panic(fmt.Sprintf("sysx: cannot restore the daemon's fsuid (still %d)", uid))
	}
}

// setfsuid sets the thread's fsuid and returns the previous one; ^0 only queries.
func setfsuid(uid uint32) uint32 {
	old, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	return uint32(old)
}

func setfsgid(gid uint32) uint32 {
	old, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
	return uint32(old)
}

func setgroups(groups []uint32) error {
	var p unsafe.Pointer
	if len(groups) > 0 {
		groups = slices.Clone(groups) // the kernel reads it; keep the caller's slice out of reach
		p = unsafe.Pointer(&groups[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(p), 0)
	runtime.KeepAlive(groups)
	if e != 0 {
		return e
	}
	return nil
}
