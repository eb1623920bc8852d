package main

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261128093543-b1168ba10f41"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "b1168ba10f4192599f5c5c285a5763cafd202182"},
			{Key: "vcs.time", Value: "2026-11-28T09:35:43Z"}, {Key: "vcs.modified", Value: "true"}}}
	unstamped := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}
	for _, c := range []struct {
		name      string
		bi        *debug.BuildInfo
		ldflags   [3]string // vcsRevision, vcsTime, vcsModified
		label     string
		short     string
		want, not []string
	}{
		{name: "go's stamp", bi: stamped, label: "b1168ba10f4192599f5c5c285a5763cafd202182-modified",
			short: "v0.0.0-20261128093543-b1168ba10f41 b1168ba10f41-modified go1.26.8",
			want: []string{"mergefs v0.0.0-20261128093543-b1168ba10f41\n", "revision  b1168ba10f4192599f5c5c285a5763cafd202182, with changes not committed\n",
				"committed 2026-11-28T09:35:43Z\n", "go        go1.26.8 "}},
		// Go's stamp wins over the linker's.
		{name: "both", bi: stamped, ldflags: [3]string{"0123456789abcdef", "2020-01-01T00:00:00Z", "false"},
			label: "b1168ba10f4192599f5c5c285a5763cafd202182-modified", not: []string{"0123456789abcdef"}},
		{name: "scripts/version-ldflags", bi: unstamped, ldflags: [3]string{"0123456789abcdef0123", "2020-01-01T00:00:00Z", "false"},
			label: "0123456789abcdef0123", short: "(devel) 0123456789ab go1.26.8",
			want: []string{"mergefs (devel): built from a source tree", "revision  0123456789abcdef0123\n", "committed 2020-01-01T00:00:00Z\n"}},
		// Without either, nothing is made up.
		{name: "neither", bi: unstamped, label: "unknown", short: "(devel) unknown go1.26.8",
			want: []string{"revision  unknown: built without version control information", "committed unknown\n"}},
		{name: "no build info", bi: nil, label: "unknown", want: []string{"mergefs unknown\n", "go        " + runtime.Version()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			vcsRevision, vcsTime, vcsModified = c.ldflags[0], c.ldflags[1], c.ldflags[2]
			defer func() { vcsRevision, vcsTime, vcsModified = "", "", "" }()
			b := buildInfoFrom(c.bi, c.bi != nil)
			if got := b.revisionLabel(); got != c.label {
				t.Errorf("revision label %q, want %q", got, c.label)
			}
			if c.short != "" && b.short() != c.short {
				t.Errorf("short %q, want %q", b.short(), c.short)
			}
			var out bytes.Buffer
			b.write(&out)
			for _, s := range c.want {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range c.not {
				if strings.Contains(out.String(), s) {
					t.Errorf("output has %q:\n%s", s, out.String())
				}
			}
		})
	}
}

func TestVersionCommand(t *testing.T) {
	var want bytes.Buffer
	readBuildInfo().write(&want)
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var out, errOut bytes.Buffer
		if rc := run(args, &out, &errOut); rc != 0 || out.String() != want.String() || errOut.Len() != 0 {
			t.Errorf("%v: rc %d, stdout %q, stderr %q; want %q", args, rc, out.String(), errOut.String(), want.String())
		}
	}
	var out, errOut bytes.Buffer
	if rc := run([]string{"version", "extra"}, &out, &errOut); rc != 2 || out.Len() != 0 {
		t.Errorf("version extra: rc %d, stdout %q", rc, out.String())
	}
	if !strings.Contains(want.String(), "go        "+runtime.Version()) {
		t.Errorf("no Go version:\n%s", want.String())
	}
}
