// Command clearstale detaches the mounts that crashed end-to-end test runs
// left under $TMPDIR (mountinfo.ClearStale), for scripts/test. Mounts of runs
// still in progress are left alone. A mount it cannot clear is reported and
// does not stop the test run: the tests that meet it fail on their own.
package main

import (
	"fmt"
	"os"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

func main() {
	if err := mountinfo.ClearStale(os.TempDir(), os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "clearstale: %v\n", err)
	}
}
