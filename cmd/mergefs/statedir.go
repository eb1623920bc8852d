package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// stateRoot holds the mounts' state directories: each mount keeps its own
// (the conflict journal, rejected content, the status socket) in
// stateRoot/<its mountpoint, escaped>, unless --state-dir says otherwise.
const stateRoot = "/var/lib/mergefs"

// defaultStateDir is the state directory of a mount at mountpoint (absolute
// and clean) without --state-dir: /var/lib/mergefs/srv-data for /srv/data.
// It is the directory the systemd unit (StateDirectory=mergefs/%i, the
// instance being the escaped path) and the mount(8) helper use.
func defaultStateDir(mountpoint string) string {
	return filepath.Join(stateRoot, escapePath(mountpoint))
}

// escapePath escapes an absolute, clean path as `systemd-escape --path`
// does: "/" alone is "-"; otherwise the leading and trailing slashes go,
// each "/" becomes "-", and every byte but ASCII letters, digits, ":", "_"
// and "." (except a leading ".") becomes \xNN. So distinct paths get
// distinct names (a "-" in a name is \x2d), and a name never starts with ".".
func escapePath(p string) string {
	p = strings.Trim(filepath.Clean(p), "/")
	if p == "" {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0:
			fmt.Fprintf(&b, `\x%02x`, c)
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == ':', c == '_', c == '.':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}
