package backing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
)

// IdentityXattr is the extended attribute that carries a record's identity from version to version. It
// is in the trusted namespace, which only a process with CAP_SYS_ADMIN can read or write, so no user can
// forge or copy one onto a file of theirs; the filesystem layer hides it from its callers.
const IdentityXattr = "trusted.mergefs.id"

// The first byte of the attribute's value is the format of what follows: identityVersion, the id and
// the generation; identityVersionSized, those and the size of the content committed with them, which
// a read on a network filesystem checks against what it got (a client's cache can show a new file
// with an older size: see readOpened).
const (
	identityVersion      = 1
	identityVersionSized = 2
	identityLen          = 1 + 8 + 8
	identitySizedLen     = identityLen + 8
)

// Identity is what IdentityXattr says of a record.
//
// ID names the record for as long as its name exists: every commit copies it to the file that replaces
// the record, so that a handle opened on one record can tell that a file at the same name is another
// record (deleted and re-created meanwhile), and so that the record keeps one inode number at the
// mount (the filesystem reports ID as st_ino). IDs are random with the top bit set: backing inode
// numbers, which the filesystem reports for everything else, practically never have it.
//
// Gen counts the commits of the record; each commit writes Gen+1 into the new file.
type Identity struct {
	ID  uint64
	Gen uint64
}

// NewID returns a fresh random record id (top bit set, never all ones).
func NewID() uint64 {
	for {
		id := rand.Uint64() | 1<<63
		if id != ^uint64(0) {
			return id
		}
	}
}

func (id Identity) encode() []byte { return id.encodeSized(-1) }

// encodeSized encodes the identity with the size of the content it goes with (size < 0: unknown).
func (id Identity) encodeSized(size int64) []byte {
	b := make([]byte, identityLen, identitySizedLen)
	b[0] = identityVersion
	binary.LittleEndian.PutUint64(b[1:], id.ID)
	binary.LittleEndian.PutUint64(b[9:], id.Gen)
	if size >= 0 {
		b[0] = identityVersionSized
		b = binary.LittleEndian.AppendUint64(b, uint64(size))
	}
	return b
}

func decodeIdentity(b []byte) (Identity, error) {
	id, _, err := decodeSizedIdentity(b)
	return id, err
}

// decodeSizedIdentity decodes the attribute and the content size it records (-1: none).
func decodeSizedIdentity(b []byte) (Identity, int64, error) {
	size := int64(-1)
	switch {
	case len(b) == identityLen && b[0] == identityVersion:
	case len(b) == identitySizedLen && b[0] == identityVersionSized && int64(binary.LittleEndian.Uint64(b[17:])) >= 0:
		size = int64(binary.LittleEndian.Uint64(b[17:]))
	default:
		return Identity{}, -1, fmt.Errorf("malformed %s attribute (%d bytes): %w", IdentityXattr, len(b), unix.EINVAL)
	}
	id := Identity{ID: binary.LittleEndian.Uint64(b[1:]), Gen: binary.LittleEndian.Uint64(b[9:])}
	if id.ID&(1<<63) == 0 {
		return Identity{}, -1, fmt.Errorf("malformed %s attribute (id %#x): %w", IdentityXattr, id.ID, unix.EINVAL)
	}
	return id, size, nil
}

// readIdentity reads the identity of the open record fd; ok is false if it has none.
func readIdentity(fd int) (id Identity, size int64, ok bool, err error) {
	b, err := sysx.Fgetxattr(fd, IdentityXattr)
	if err == unix.ENODATA {
		return Identity{}, -1, false, nil
	}
	if err != nil {
		return Identity{}, -1, false, fmt.Errorf("read %s: %w", IdentityXattr, err)
	}
	id, size, err = decodeSizedIdentity(b)
	return id, size, err == nil, err
}

// ReadIdentity reads the identity of the file at path; a file without one gives ENODATA. With nofollow
// a final symlink is not followed; without it, it is (a sysx.ProcPath is a /proc magic link, which
// must be followed to reach its file).
func ReadIdentity(path string, nofollow bool) (Identity, error) {
	b, err := sysx.Getxattr(path, IdentityXattr, nofollow)
	if err != nil {
		return Identity{}, err
	}
	return decodeIdentity(b)
}

// ensureIdentity returns the identity of the open record fd, giving it a new one if it has none. The new
// one is set with XATTR_CREATE: of two daemons (or a lookup and a commit) that stamp the same file at
// once, the first wins and the other reads what it wrote.
// The size it returns is the one recorded with the identity (-1: none, as for a record mergefs did not
// write).
func ensureIdentity(fd int) (Identity, int64, error) {
	for range 3 {
		id, size, ok, err := readIdentity(fd)
		if err != nil || ok {
			return id, size, err
		}
		id = Identity{ID: NewID()}
		err = unix.Fsetxattr(fd, IdentityXattr, id.encode(), unix.XATTR_CREATE)
		if err == nil {
			return id, -1, nil
		}
		if err != unix.EEXIST {
			return Identity{}, -1, fmt.Errorf("set %s: %w", IdentityXattr, err)
		}
	}
	return Identity{}, -1, fmt.Errorf("set %s: the attribute keeps changing: %w", IdentityXattr, unix.EAGAIN)
}

// writeIdentity sets the identity of the file fd, whose content is size bytes.
func writeIdentity(fd int, id Identity, size int64) error {
	if err := unix.Fsetxattr(fd, IdentityXattr, id.encodeSized(size), 0); err != nil {
		return fmt.Errorf("set %s: %w", IdentityXattr, err)
	}
	return nil
}

// checkIdentitySupport fails, with a clear error, on a backing filesystem that cannot keep record
// identities (trusted.* extended attributes): mergefs cannot then tell a record from one that was
// deleted and re-created at the same name. fd is the store's lock file.
func checkIdentitySupport(fd int) error {
	err := unix.Fsetxattr(fd, IdentityXattr, Identity{ID: 1 << 63}.encode(), 0)
	if err == nil {
		return nil
	}
	if sysx.NotSupported(err) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("the backing filesystem does not keep trusted.* extended attributes, which mergefs needs for record identities: %w", err)
	}
	return fmt.Errorf("set %s on the lock file: %w", IdentityXattr, err)
}
