package main

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// The git revision of the source, for builds in which Go records none
// itself: scripts/version-ldflags sets these with -ldflags -X (GOFLAGS=-buildvcs=false
// and git worktrees leave Go's own stamp out). Go's stamp wins when present.
var (
	vcsRevision string
	vcsTime     string
	vcsModified string
)

// buildInfo is what a binary knows about its own build.
type buildInfo struct {
	// Version is the module's version: a release tag, a pseudo-version
	// derived from the commit, or "(devel)" for a build from a source tree
	// whose version Go did not derive.
	Version string `json:"version"`
	// Revision is the commit the binary was built from; empty if unknown.
	Revision string `json:"revision,omitempty"`
	// Time is the commit's time (RFC 3339, UTC); empty if unknown.
	Time string `json:"time,omitempty"`
	// Modified is "true" when the tree had changes not in Revision,
	// "false" when it had none, empty if unknown.
	Modified  string `json:"modified,omitempty"`
	GoVersion string `json:"go"`
	Platform  string `json:"platform"`
}

// readBuildInfo reads the running binary's build information.
func readBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	return buildInfoFrom(bi, ok)
}

func buildInfoFrom(bi *debug.BuildInfo, ok bool) buildInfo {
	info := buildInfo{Version: "(devel)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || bi == nil {
		info.Version = "unknown"
	} else {
		info.Version = cmp.Or(bi.Main.Version, info.Version)
		info.GoVersion = cmp.Or(bi.GoVersion, info.GoVersion)
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.time":
				info.Time = s.Value
			case "vcs.modified":
				info.Modified = s.Value
			}
		}
	}
	if info.Revision == "" && vcsRevision != "" {
		info.Revision, info.Time, info.Modified = vcsRevision, vcsTime, vcsModified
	}
	return info
}

// revisionLabel is the revision as a metric label: the commit, with
// "-modified" when the tree had changes, or "unknown".
func (b buildInfo) revisionLabel() string {
	switch {
	case b.Revision == "":
		return "unknown"
	case b.Modified == "true":
		return b.Revision + "-modified"
	}
	return b.Revision
}

// short is the build in one line: "(devel) b1168ba10f41-modified go1.26.8".
func (b buildInfo) short() string {
	rev := b.revisionLabel()
	if len(b.Revision) > 12 {
		rev = b.Revision[:12] + rev[len(b.Revision):]
	}
	return b.Version + " " + rev + " " + b.GoVersion
}

const noRevision = "unknown: built without version control information (GOFLAGS=-buildvcs=false, a git worktree, or a source tree without git); scripts/install.sh stamps it"

func (b buildInfo) write(w io.Writer) {
	switch b.Version {
	case "(devel)":
		fmt.Fprintf(w, "mergefs (devel): built from a source tree, not a tagged release\n")
	default:
		fmt.Fprintf(w, "mergefs %s\n", b.Version)
	}
	switch {
	case b.Revision == "":
		fmt.Fprintf(w, "  revision  %s\n", noRevision)
	case b.Modified == "true":
		fmt.Fprintf(w, "  revision  %s, with changes not committed\n", b.Revision)
	case b.Modified == "false":
		fmt.Fprintf(w, "  revision  %s\n", b.Revision)
	default:
		fmt.Fprintf(w, "  revision  %s (whether the tree had changes is unknown)\n", b.Revision)
	}
	fmt.Fprintf(w, "  committed %s\n", cmp.Or(b.Time, "unknown"))
	fmt.Fprintf(w, "  go        %s %s\n", b.GoVersion, b.Platform)
}

const versionUsage = `Usage:
  mergefs version
  mergefs --version

Prints the module version, the git revision and commit time the binary was
built from (or says they are unknown), and the Go version. 'mergefs status'
shows the running daemon's.
`

func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "--help" || args[0] == "-help" || args[0] == "-h") {
		fmt.Fprint(stdout, versionUsage)
		return 0
	}
	if len(args) != 0 {
		fmt.Fprintf(stderr, "mergefs version: no arguments expected\n\n%s", versionUsage)
		return 2
	}
	readBuildInfo().write(stdout)
	return 0
}
