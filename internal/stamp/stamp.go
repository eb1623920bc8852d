// Package stamp gives the test harnesses the build flags that stamp a mergefs
// binary with the git revision of its source (scripts/version-ldflags), as
// scripts/install.sh, scripts/bench and scripts/demo.sh do: builds under
// GOFLAGS=-buildvcs=false or in a git worktree get no stamp from Go itself.
package stamp

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BuildFlags returns the `go build` flags that stamp a binary built from the
// module at root: -ldflags with the revision, or nothing when the revision
// cannot be had (no git, not a checkout). It never fails a build.
func BuildFlags(root string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "version-ldflags")).Output()
	if flags := strings.TrimSpace(string(out)); err == nil && flags != "" {
		return []string{"-ldflags", flags}
	}
	return nil
}
