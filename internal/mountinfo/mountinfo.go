// Package mountinfo reads /proc/self/mountinfo (proc(5)) and frees hung FUSE
// mounts: the one parser that the daemon, the benchmark, the end-to-end
// harness and the scripts' tests share.
package mountinfo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one line of /proc/self/mountinfo. Paths are unescaped.
type Mount struct {
	ID, ParentID int
	// Major and Minor are the st_dev of the mount's files; for FUSE the
	// minor number names the connection under /sys/fs/fuse/connections.
	Major, Minor int
	Root         string // the mount's root within its filesystem
	Mountpoint   string
	Options      string   // per-mount options
	Optional     []string // optional fields, like "shared:1"
	FSType       string   // "fuse.mergefs", "ext4", ...
	Source       string
	SuperOptions string
}

// IsFUSE reports whether a FUSE server serves the mount (not fusectl).
func (m Mount) IsFUSE() bool {
	return m.FSType == "fuse" || m.FSType == "fuseblk" || strings.HasPrefix(m.FSType, "fuse.")
}

// Parse reads mountinfo lines, in the kernel's order.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		m, err := ParseLine(sc.Text())
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// ParseLine reads one line:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// (mount id, parent id, major:minor, root, mount point, options, optional
// fields up to "-", then filesystem type, source and superblock options).
func ParseLine(line string) (Mount, error) {
	fields := strings.Fields(line)
	bad := func(why string) (Mount, error) {
		return Mount{}, fmt.Errorf("mountinfo line %q: %s", line, why)
	}
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if len(fields) < 7 || sep < 0 || sep+1 >= len(fields) {
		return bad("too few fields")
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(fields[0]); err != nil {
		return bad("mount id")
	}
	if m.ParentID, err = strconv.Atoi(fields[1]); err != nil {
		return bad("parent id")
	}
	major, minor, ok := strings.Cut(fields[2], ":")
	if !ok {
		return bad("no major:minor")
	}
	if m.Major, err = strconv.Atoi(major); err != nil {
		return bad("major")
	}
	if m.Minor, err = strconv.Atoi(minor); err != nil {
		return bad("minor")
	}
	m.Root, m.Mountpoint, m.Options = Unescape(fields[3]), Unescape(fields[4]), fields[5]
	if sep > 6 {
		m.Optional = fields[6:sep]
	}
	post := fields[sep+1:]
	m.FSType = post[0]
	if len(post) > 1 {
		m.Source = Unescape(post[1])
	}
	if len(post) > 2 {
		m.SuperOptions = post[2]
	}
	return m, nil
}

// Unescape undoes the kernel's octal escapes in paths (\040 for a space,
// \011 tab, \012 newline, \134 backslash).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) && s[i+1] <= '3' {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// Read returns the mounts of this process's mount namespace.
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Topmost returns the mount that a path lookup of dir reaches: of the mounts
// whose mountpoint is dir, the one no other of them is mounted on.
func Topmost(mounts []Mount, dir string) (Mount, bool) {
	var at []Mount
	for _, m := range mounts {
		if m.Mountpoint == dir {
			at = append(at, m)
		}
	}
	for i := len(at) - 1; i >= 0; i-- {
		covered := false
		for _, other := range at {
			if other.ParentID == at[i].ID && other.ID != at[i].ID {
				covered = true
				break
			}
		}
		if !covered {
			return at[i], true
		}
	}
	return Mount{}, false
}

// At reads the mount table and returns the topmost mount at dir.
func At(dir string) (Mount, bool, error) {
	mounts, err := Read()
	if err != nil {
		return Mount{}, false, err
	}
	m, ok := Topmost(mounts, dir)
	return m, ok, nil
}

// Under returns the mounts at or below dir, deepest (last mounted) first: the
// order in which to detach them.
func Under(mounts []Mount, dir string) []Mount {
	var out []Mount
	for i := len(mounts) - 1; i >= 0; i-- {
		if Within(mounts[i].Mountpoint, dir) {
			out = append(out, mounts[i])
		}
	}
	return out
}

// Within reports whether path is dir or below it (both clean and absolute).
func Within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// FUSEConnections is where fusectl shows the FUSE connections.
const FUSEConnections = "/sys/fs/fuse/connections"

// Abort aborts the FUSE connection of m through fusectl, mounting fusectl
// first if nobody has: every process blocked on the mount then gets an error
// (ENOTCONN) instead of waiting for a daemon that will not answer. The mount
// itself stays until it is detached.
func Abort(m Mount) error {
	if !m.IsFUSE() {
		return fmt.Errorf("%s is not a FUSE mount (%s)", m.Mountpoint, m.FSType)
	}
	conn := filepath.Join(FUSEConnections, strconv.Itoa(m.Minor))
	if _, err := os.Stat(conn); errors.Is(err, os.ErrNotExist) {
		if err := unix.Mount("none", FUSEConnections, "fusectl", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount fusectl on %s: %w", FUSEConnections, err)
		}
	}
	if err := os.WriteFile(filepath.Join(conn, "abort"), []byte("1"), 0); err != nil {
		return fmt.Errorf("abort FUSE connection %d (%s): %w", m.Minor, m.Mountpoint, err)
	}
	return nil
}

// Detach unmounts dir lazily (umount -l): the mount leaves the namespace at
// once and goes away when its last user does.
func Detach(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("umount -l %s: %w", dir, err)
	}
	return nil
}

// AbortAndDetach frees a hung FUSE mount for good: it aborts the connection
// (if m is FUSE) and detaches the mount. Both are tried, and their errors
// joined.
func AbortAndDetach(m Mount) error {
	var abortErr error
	if m.IsFUSE() {
		abortErr = Abort(m)
	}
	return errors.Join(abortErr, Detach(m.Mountpoint))
}
