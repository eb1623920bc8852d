package backing

import (
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"

	"golang.org/x/sys/unix"
)

func versionOf(st *unix.Stat_t) Version {
	return Version{
		Dev:   st.Dev,
		Ino:   st.Ino,
		Size:  st.Size,
		Mtime: st.Mtim.Nano(),
		Ctime: st.Ctim.Nano(),
	}
}

func requireRegular(st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return nil
	case unix.S_IFDIR:
		return fmt.Errorf("not a regular file: %w", unix.EISDIR)
	}
	return fmt.Errorf("not a regular file (mode %#o): %w", st.Mode&unix.S_IFMT, unix.EINVAL)
}

// writeAllAt writes data at offset 0 of fd.
func writeAllAt(fd int, data []byte) error {
	var off int64
	for len(data) > 0 {
		n, err := unix.Pwrite(fd, data, off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return io.ErrShortWrite
		}
		data = data[n:]
		off += int64(n)
	}
	return nil
}

func (s *Store) fsync(fd int) error {
	s.fsyncs.Add(1)
	for {
		err := unix.Fsync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// unixMode converts permission and special bits of an fs.FileMode to a chmod argument. Raw Unix
// special bits (0o7000, as in os.FileMode(st_mode&0o7777)) are honoured too: fs.FileMode does not use
// those bits, so they cannot mean anything else.
func unixMode(m fs.FileMode) uint32 {
	mode := uint32(m.Perm()) | uint32(m)&0o7000
	if m&fs.ModeSetuid != 0 {
		mode |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		mode |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	return mode
}

type dirent struct {
	name string
	typ  uint8 // unix.DT_*
}

// readDirents lists a directory by descriptor. os.File.ReadDir cannot be used: for DT_UNKNOWN entries
// it falls back to lstat by path, and after an in-place mount the path leads into the mount itself.
func readDirents(dirfd int) ([]dirent, error) {
	var entries []dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(dirfd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return entries, nil
		}
		// struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
		for off := 0; off < n; {
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			typ := buf[off+18]
			name := buf[off+19 : off+reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			if s := string(name); s != "." && s != ".." {
				entries = append(entries, dirent{name: s, typ: typ})
			}
			off += reclen
		}
	}
}
