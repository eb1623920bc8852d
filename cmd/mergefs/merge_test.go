package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mergeFiles writes the given contents (nil: no file) and runs
// "mergefs merge [flags] BASE MINE THEIRS" through the command dispatcher.
func mergeFiles(t *testing.T, flags []string, base, mine, theirs *string) (code int, stdout, stderr string, paths [3]string) {
	t.Helper()
	dir := t.TempDir()
	for i, content := range []*string{base, mine, theirs} {
		paths[i] = filepath.Join(dir, []string{"base.json", "mine.json", "theirs.json"}[i])
		if content != nil {
			if err := os.WriteFile(paths[i], []byte(*content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var out, errOut bytes.Buffer
	args := append(append([]string{"merge"}, flags...), paths[:]...)
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String(), paths
}

func str(s string) *string { return &s }

// conflictLines decodes stderr as one JSON object per line.
func conflictLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stderr line is not JSON: %q", l)
		}
		lines = append(lines, m)
	}
	return lines
}

func TestMergeCommandClean(t *testing.T) {
	code, out, errOut, _ := mergeFiles(t, nil,
		str(`{"a": 1, "b": 1}`), str(`{"a": 2, "b": 1}`), str("{\n  \"a\": 1,\n  \"b\": 3\n}\n"))
	if code != 0 || out != "{\n  \"a\": 2,\n  \"b\": 3\n}\n" || errOut != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMergeCommandTrickyKey(t *testing.T) {
	code, out, errOut, _ := mergeFiles(t, nil,
		str(`{"\u0041.b":1,"#":{"@this":1}}`), str(`{"A.b":2,"#":{"@this":1,":x":[]}}`), str(`{"#":{"@this":0},"A\u002eb":1}`))
	if code != 0 || out != `{"#":{"@this":0,":x":[]},"A\u002eb":2}` || errOut != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMergeCommandConflicts(t *testing.T) {
	base, mine, theirs := str(`{"a":{"x":1},"d":1}`), str(`{"a":{"x":2}}`), str(`{"a":{"x":3},"d":2}`)

	code, out, errOut, _ := mergeFiles(t, nil, base, mine, theirs)
	if code != 1 || out != `{"a":{"x":2}}` {
		t.Fatalf("writer-wins: code %d, stdout %q", code, out)
	}
	lines := conflictLines(t, errOut)
	if len(lines) != 2 {
		t.Fatalf("want 2 conflict lines, got %q", errOut)
	}
	first, _ := json.Marshal(lines[0])
	if want := `{"base":1,"mine":2,"path":["a","x"],"reason":"modified in both","theirs":3}`; string(first) != want {
		t.Errorf("conflict line %s, want %s", first, want)
	}
	if _, ok := lines[1]["mine"]; ok || lines[1]["reason"] != "deleted in mine, modified in theirs" {
		t.Errorf("modify/delete conflict line %v: mine should be left out", lines[1])
	}

	code, out, errOut, _ = mergeFiles(t, []string{"--on-conflict", "reject"}, base, mine, theirs)
	if code != 1 || out != "" || len(conflictLines(t, errOut)) != 2 {
		t.Fatalf("reject: code %d, stdout %q, stderr %q", code, out, errOut)
	}

	code, out, _, _ = mergeFiles(t, []string{"--on-conflict=reject"}, str(`{"a":1}`), str(`{"a":2}`), str(`{"a":1}`))
	if code != 0 || out != `{"a":2}` {
		t.Fatalf("reject without conflict: code %d, stdout %q", code, out)
	}
}

func TestMergeCommandMissingFiles(t *testing.T) {
	code, out, errOut, _ := mergeFiles(t, nil, nil, str(`{"a":1}`), str(`{"b":2}`))
	if code != 0 || out != `{"b":2,"a":1}` || errOut != "" {
		t.Fatalf("no BASE: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut, _ = mergeFiles(t, nil, nil, str("[1]\n"), nil)
	if code != 0 || out != "[1]\n" || errOut != "" {
		t.Fatalf("no BASE, no THEIRS: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut, paths := mergeFiles(t, nil, str(`{}`), nil, str(`{}`))
	if code != 2 || out != "" || !strings.Contains(errOut, paths[1]) || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("no MINE: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMergeCommandInvalidInput(t *testing.T) {
	code, out, errOut, paths := mergeFiles(t, nil, str(`{}`), str(`{"a":1,}`), str(`{}`))
	want := "mergefs merge: " + paths[1] + ": invalid mine document: trailing comma in object (at byte 7)\n"
	if code != 2 || out != "" || errOut != want {
		t.Fatalf("invalid MINE: code %d, stdout %q, stderr %q, want %q", code, out, errOut, want)
	}
	code, out, errOut, paths = mergeFiles(t, nil, str(`{"a":NaN}`), str(`{}`), str(`{}`))
	if code != 2 || out != "" || !strings.HasPrefix(errOut, "mergefs merge: "+paths[0]+": invalid base document") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("invalid BASE: code %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A damaged THEIRS is replaced by MINE and reported as a conflict.
	code, out, errOut, _ = mergeFiles(t, nil, str(`{"a":1}`), str(`{"a":2}`), str(`{"a":1}{"a":1}`))
	lines := conflictLines(t, errOut)
	if code != 1 || out != `{"a":2}` || len(lines) != 1 || lines[0]["theirs"] != `{"a":1}{"a":1}` ||
		!strings.HasPrefix(lines[0]["reason"].(string), "theirs invalid: extra data") {
		t.Fatalf("invalid THEIRS: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMergeCommandLimits(t *testing.T) {
	code, _, errOut, paths := mergeFiles(t, []string{"--max-size", "10"}, nil, str(`{"a":"0123456789"}`), nil)
	if code != 2 || !strings.Contains(errOut, paths[1]) || !strings.Contains(errOut, "max size 10") {
		t.Fatalf("--max-size: code %d, stderr %q", code, errOut)
	}
	code, _, errOut, _ = mergeFiles(t, []string{"--max-depth=2"}, nil, str(`[[[]]]`), nil)
	if code != 2 || !strings.Contains(errOut, "max depth 2") {
		t.Fatalf("--max-depth: code %d, stderr %q", code, errOut)
	}
	code, out, _, _ := mergeFiles(t, []string{"--max-depth=3"}, nil, str(`[[[]]]`), nil)
	if code != 0 || out != `[[[]]]` {
		t.Fatalf("--max-depth at the limit: code %d, stdout %q", code, out)
	}
}

func TestMergeCommandUsage(t *testing.T) {
	for _, args := range [][]string{{"merge", "--help"}, {"merge", "-h"}, {"help", "merge"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 || !strings.Contains(out.String(), "Usage: mergefs merge") ||
			!strings.Contains(out.String(), "-on-conflict") || !strings.Contains(out.String(), "-rules") || errOut.Len() != 0 {
			t.Errorf("%v: code %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
	for _, args := range [][]string{
		{"merge"}, {"merge", "a", "b"}, {"merge", "a", "b", "c", "d"}, {"merge", "--bogus", "a", "b", "c"},
		{"merge", "--on-conflict", "theirs-wins", "a", "b", "c"}, {"merge", "--max-size", "-1", "a", "b", "c"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 || out.Len() != 0 || errOut.Len() == 0 {
			t.Errorf("%v: code %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
}

func TestMergeCommandArrays(t *testing.T) {
	code, out, errOut, _ := mergeFiles(t, nil,
		str(`{"tags": ["a"], "lines": [{"id": 1, "qty": 1}]}`),
		str(`{"tags": ["a", "m"], "lines": [{"id": 1, "qty": 2}]}`),
		str(`{"tags": ["a", "t"], "lines": [{"id": 1, "qty": 1}, {"id": 2, "qty": 1}]}`))
	if want := `{"tags": ["a", "t", "m"], "lines": [{"id": 1, "qty": 2}, {"id": 2, "qty": 1}]}`; code != 0 || out != want || errOut != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut, _ = mergeFiles(t, nil, str(`{"l":[1,2,3]}`), str(`{"l":[1,5,3]}`), str(`{"l":[1,6,3]}`))
	lines := conflictLines(t, errOut)
	if code != 1 || out != `{"l":[1,5,3]}` || len(lines) != 1 {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	line, _ := json.Marshal(lines[0])
	if want := `{"base":2,"mine":5,"path":["l",1],"reason":"modified in both","strategy":"sequence","theirs":6}`; string(line) != want {
		t.Errorf("conflict line %s, want %s", line, want)
	}
	// A key that looks like an index stays a string.
	_, _, errOut, _ = mergeFiles(t, nil, str(`{"1":{"2":1}}`), str(`{"1":{"2":2}}`), str(`{"1":{"2":3}}`))
	if !strings.Contains(errOut, `"path":["1","2"]`) {
		t.Errorf("keys that look like indices: %q", errOut)
	}
}

// mergeWithRules writes the rules and the three files under
// dir/users/, and runs "mergefs merge --rules" from dir with relative
// paths.
func mergeWithRules(t *testing.T, rules, base, mine, theirs string, flags ...string) (code int, stdout, stderr string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "users"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"rules.json": rules, "users/base.json": base, "users/mine.json": mine, "users/1.json": theirs} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	var out, errOut bytes.Buffer
	args := append(append([]string{"merge", "--rules", "rules.json"}, flags...), "users/base.json", "users/mine.json", "./users/1.json")
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestMergeCommandRules(t *testing.T) {
	rules := `{"rules": [
		{"records": "users/*.json", "path": "/login_count", "strategy": "counter"},
		{"path": "/tags", "strategy": "set"},
		{"path": "/balance", "strategy": "reject"}
	]}`
	code, out, errOut := mergeWithRules(t, rules,
		`{"login_count": 5, "tags": ["a", "b"], "balance": 10}`,
		`{"login_count": 6, "tags": ["a", "c"], "balance": 10}`,
		`{"login_count": 7, "tags": ["b", "a", "d"], "balance": 10}`)
	if want := `{"login_count": 8, "tags": ["a", "d", "c"], "balance": 10}`; code != 0 || out != want || errOut != "" {
		t.Fatalf("code %d, stdout %q, stderr %q, want %q", code, out, errOut, want)
	}
	// The records glob does not match other records.
	rules2 := `{"rules": [{"records": "teams/*.json", "path": "/login_count", "strategy": "counter"}]}`
	code, out, errOut = mergeWithRules(t, rules2, `{"login_count": 5}`, `{"login_count": 6}`, `{"login_count": 7}`)
	if code != 1 || out != `{"login_count": 6}` || !strings.Contains(errOut, `"reason":"modified in both"`) {
		t.Fatalf("other record: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A counter that is not a number conflicts and names the strategy.
	code, out, errOut = mergeWithRules(t, rules, `{"login_count": 5}`, `{"login_count": "6"}`, `{"login_count": 7}`)
	if code != 1 || out != `{"login_count": "6"}` || !strings.Contains(errOut, `"reason":"counter: not a number","strategy":"counter"`) {
		t.Fatalf("counter type mismatch: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	// reject fails the merge even under writer-wins.
	code, out, errOut = mergeWithRules(t, rules, `{"balance": 10}`, `{"balance": 5}`, `{"balance": 7}`)
	if code != 1 || out != "" || !strings.Contains(errOut, `"strategy":"reject"`) {
		t.Fatalf("reject rule: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMergeCommandBadRules(t *testing.T) {
	code, out, errOut := mergeWithRules(t, `{"rules": [{"path": "/a", "strategy": "sum"}]}`, `{}`, `{}`, `{}`)
	if code != 2 || out != "" || !strings.HasPrefix(errOut, `mergefs merge: --rules rules.json: rules[0].strategy: unknown strategy "sum"`) ||
		strings.Count(errOut, "\n") != 1 {
		t.Fatalf("bad rules: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	var o, e bytes.Buffer
	if code := run([]string{"merge", "--rules", filepath.Join(t.TempDir(), "none.json"), "a", "b", "c"}, &o, &e); code != 2 ||
		!strings.Contains(e.String(), "none.json") {
		t.Fatalf("missing rules file: code %d, stderr %q", code, e.String())
	}
}
