// Package mount_test drives the real mergefs binary end to end: it mounts it
// (DirectMount, as root, /dev/fuse), runs unmodified-style Python legacy
// workers against the mount as separate processes, and checks that no update
// is lost and no reader ever sees a torn record. Every scenario also runs on a
// plain directory as a control, which shows the loss mergefs exists to prevent.
// The runtime tests (runtimes_test.go, issue 10) do the same with workers on
// event loops, thread pools and goroutines: Python asyncio with aiofiles,
// Node, a Go program (internal/goworker, built by the test), editors and cp.
//
// Needs root, /dev/fuse and python3; the runtime tests also node and Debian's
// python3-aiofiles (for /usr/bin/python3). TestGlusterTwoHosts also needs
// GlusterFS (Debian: glusterfs-server, glusterfs-client) and util-linux's
// unshare. Without them the tests skip, unless MERGEFS_REQUIRE_FUSE=1 (CI),
// where they fail. Environment:
//
//	MERGEFS_DAEMON_RACE=1      build the daemon with -race
//	MERGEFS_BINARY=path        test a prebuilt binary instead of building one
//	MERGEFS_E2E_TARGET=loopback  put go-fuse's loopback where mergefs goes: a
//	                           self-test of the harness, whose checks must fail
//
// -short cuts the iteration counts. The per-scenario table of lost updates
// (plain directory vs mergefs) is logged by TestLegacyWorkerPatterns,
// TestLegacyWorkerDimensions and TestRuntimeWorkers (go test -v -run
// 'TestLegacyWorker|TestRuntimeWorkers').
package mount_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mergefs/mergefs/internal/mountinfo"
	"github.com/mergefs/mergefs/internal/stamp"
)

// binaries are built once per `go test` run by TestMain and never change after.
type binaries struct {
	mergefs, loopback string
	// buildErr is set when mergefs did not build; tests that need it fail with it.
	mergefsErr, loopbackErr error
	workers                 string // directory of the Python workers
	dir                     string // where the binaries are; workers built on demand go here too
	// python is the python3 in PATH as its own executable: a version
	// manager's shim in PATH can take seconds to start on a loaded machine.
	python string
}

var bins binaries

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Getenv(posixCaseEnv) != "" {
		// A child process of checkStillFails: it runs one posixtest case
		// on a mount the parent made, and needs nothing else.
		return m.Run()
	}
	if err := mountinfo.ClearStale(os.TempDir(), os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "mount_test: %v\n", err)
	}

	dir, err := os.MkdirTemp("", "mergefs-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "mount_test: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.dir = dir

	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mount_test: %v\n", err)
		return 1
	}
	bins.workers = filepath.Join(root, "mount_test", "workers")
	bins.python = pythonExecutable()

	// The daemon says which revision it is (mergefs version, mergefs_build_info).
	daemonFlags := stamp.BuildFlags(root)
	if os.Getenv("MERGEFS_DAEMON_RACE") == "1" {
		daemonFlags = append(daemonFlags, "-race")
	}
	if prebuilt := os.Getenv("MERGEFS_BINARY"); prebuilt != "" {
		bins.mergefs = prebuilt
		fmt.Fprintf(os.Stderr, "mount_test: MERGEFS_BINARY=%s: testing that binary, not building one\n", prebuilt)
	} else {
		bins.mergefs = filepath.Join(dir, "mergefs")
		bins.mergefsErr = goBuild(root, bins.mergefs, "./cmd/mergefs", daemonFlags...)
	}
	bins.loopback = filepath.Join(dir, "loopback")
	bins.loopbackErr = goBuild(root, bins.loopback, "./internal/loopback")
	return m.Run()
}

// pythonExecutable returns the executable of the python3 in PATH, or
// "python3" if it cannot tell.
func pythonExecutable() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "-c", "import sys; print(sys.executable)").Output()
	if py := strings.TrimSpace(string(out)); err == nil && filepath.IsAbs(py) {
		return py
	}
	return "python3"
}

func moduleRoot() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

func goBuild(root, out, pkg string, flags ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = root
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, output.String())
	}
	return nil
}
