package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mergefs/mergefs/merge"
)

func TestLoadRulesErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"rules":[{"path":"/n","strategy":"sum"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		filepath.Join(dir, "missing.json"): "no such file",
		bad:                                `unknown strategy "sum"`,
	} {
		if _, err := loadRules(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("loadRules(%s) = %v, want an error with %q", file, err, want)
		}
	}
	if r, err := loadRules(""); r != nil || err != nil {
		t.Errorf(`loadRules("") = %v, %v; want no rules`, r, err)
	}
}

// SIGHUP re-reads the rules; an invalid file keeps the rules in force.
func TestSighupReloadsRules(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rules.json")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan *merge.Rules, 1)
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	stop := reloadRulesOnHangup(file, func(r *merge.Rules) { got <- r }, logger)
	defer stop()
	hangup := func() {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	write(`{"rules":[{"path":"/n","strategy":"counter"},{"path":"/tags","strategy":"set"}]}`)
	hangup()
	select {
	case r := <-got:
		if n := len(r.List()); n != 2 {
			t.Fatalf("reloaded %d rules, want 2", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no reload after SIGHUP; log:\n%s", logs.String())
	}

	write(`{"rules":[{"path":"/n","strategy":"sum"}]}`)
	hangup()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "rules not reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged for an invalid file; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case r := <-got:
		t.Fatalf("an invalid file replaced the rules: %v", r.List())
	default:
	}
}

// lockedBuffer is a log destination the test reads while the reloading goroutine writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
