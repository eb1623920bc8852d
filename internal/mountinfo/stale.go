package mountinfo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The end-to-end tests (mount_test) mount below work directories
// $TMPDIR/mergefs-e2e-*, and scripts/demo.sh below $TMPDIR/mergefs-demo-*,
// each holding in OwnerFile the pid of the process that made it.
const (
	WorkdirPrefix     = "mergefs-e2e-"
	DemoWorkdirPrefix = "mergefs-demo-"
	OwnerFile         = "owner.pid"
)

// ClearStale detaches the mounts left in test work directories under tmpDir
// by test processes that are gone (a crashed or killed run), topmost first,
// aborting FUSE connections so that nothing keeps waiting on them, and says
// so on w. Mounts of a run still in progress (another worktree's, say) are
// left alone.
func ClearStale(tmpDir string, w io.Writer) error {
	mounts, err := Read()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range Under(mounts, tmpDir) {
		if !isWorkdirMount(tmpDir, m.Mountpoint) || ownerAlive(tmpDir, m.Mountpoint) {
			continue
		}
		fmt.Fprintf(w, "clearing stale %s mount at %s\n", m.FSType, m.Mountpoint)
		if err := AbortAndDetach(m); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("clearing stale mounts: %v", errs)
	}
	return nil
}

// workdir returns the work directory (the first component below tmpDir) that
// holds path.
func workdir(tmpDir, path string) string {
	rel, err := filepath.Rel(tmpDir, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return ""
	}
	return filepath.Join(tmpDir, strings.Split(rel, string(filepath.Separator))[0])
}

func isWorkdirMount(tmpDir, mountpoint string) bool {
	base := filepath.Base(workdir(tmpDir, mountpoint))
	return strings.HasPrefix(base, WorkdirPrefix) || strings.HasPrefix(base, DemoWorkdirPrefix)
}

// ownerAlive reports whether the test process that made the work directory
// holding mountpoint still runs.
func ownerAlive(tmpDir, mountpoint string) bool {
	data, err := os.ReadFile(filepath.Join(workdir(tmpDir, mountpoint), OwnerFile))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
