package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateDirIsRootsAlone(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("MERGEFS_REQUIRE_FUSE") == "1" {
			t.Fatal("needs root, and CI requires it to run")
		}
		t.Skip("needs root")
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := t.TempDir()

	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := prepareStateDir(open, quiet); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(open); st.Mode().Perm() != 0o700 {
		t.Errorf("a 0755 state directory is %v after mounting, want 0700", st.Mode().Perm())
	}

	fresh := filepath.Join(base, "a", "b")
	if err := prepareStateDir(fresh, quiet); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(fresh); st.Mode().Perm() != 0o700 {
		t.Errorf("a new state directory is %v, want 0700", st.Mode().Perm())
	}

	users := filepath.Join(base, "users")
	if err := os.Mkdir(users, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(users, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := prepareStateDir(users, quiet); err == nil || !strings.Contains(err.Error(), "not root") {
		t.Errorf("a state directory owned by a user: %v, want a refusal", err)
	}

	link := filepath.Join(base, "link")
	if err := os.Symlink(open, link); err != nil {
		t.Fatal(err)
	}
	if err := prepareStateDir(link, quiet); err == nil {
		t.Errorf("a symlink as state directory was accepted")
	}
}
