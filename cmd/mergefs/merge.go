package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mergefs/mergefs/merge"
)

const mergeUsage = `Usage: mergefs merge [flags] BASE MINE THEIRS

3-way merge of JSON documents, as mergefs does on every commit: the changes
from BASE (the version a writer read) to MINE (what it wrote) are applied to
THEIRS (the record as it is now), key by key, and arrays element by element.
Untouched parts of THEIRS keep their bytes. The merged document goes to
stdout.

With --rules FILE, a rules file says how positions merge where JSON alone
cannot, for example
  {"rules": [{"records": "users/*.json", "path": "/login_count", "strategy": "counter"},
             {"path": "/tags", "strategy": "set"},
             {"path": "/cart/items", "strategy": "keyed", "key": "sku"}]}
(strategies: counter, max, min, set, keyed, sequence, atomic, reject).
THEIRS's path, as given (cleaned), is the record name that the rules'
"records" globs match.

A missing BASE file means the writer read nothing: MINE and THEIRS are merged
as a union. A missing THEIRS file means there is no record: MINE is the result.
An invalid THEIRS (damaged) is replaced by MINE and reported as a conflict.

Each conflict goes to stderr as one JSON line, for example
  {"path":["a","b"],"base":1,"mine":2,"theirs":3,"reason":"modified in both"}
  {"path":["items",2],"base":1,"mine":2,"theirs":3,"reason":"modified in both","strategy":"sequence"}
"path" lists object keys as strings and array indices as numbers (the
element's index in THEIRS, or in MINE for an element THEIRS no longer has).
"strategy" names the strategy that applied (a rule's, or sequence/keyed for
arrays merged by element, atomic for an array too large to merge by
element); it is left out for plain object members. A side where the key is
absent is left out; an invalid THEIRS is a string. For a reason that starts
with "elements", each side is the JSON array of the elements of the
conflicting run.

Exit status: 0 merged cleanly; 1 merged with conflicts resolved by the policy
(with --on-conflict reject, or a conflict where a rule says "reject": nothing
on stdout); 2 invalid BASE, MINE or rules file, or another error, with a
one-line message naming the file.

Flags:
`

// conflictLine is the JSON form of one conflict on stderr.
type conflictLine struct {
	Path     []any  `json:"path"` // keys as strings, array indices as numbers
	Base     any    `json:"base,omitempty"`
	Mine     any    `json:"mine,omitempty"`
	Theirs   any    `json:"theirs,omitempty"`
	Reason   string `json:"reason"`
	Strategy string `json:"strategy,omitempty"`
}

func runMerge(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("mergefs merge", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {} // errors get a one-line hint below; --help goes to stdout
	policyName := flags.String("on-conflict", merge.WriterWins.String(), "conflict policy: writer-wins (take MINE's value) or reject (exit 1, no output)")
	maxSize := flags.Int("max-size", merge.DefaultMaxSize, "largest input file in bytes")
	maxDepth := flags.Int("max-depth", merge.DefaultMaxDepth, "deepest nesting of arrays and objects")
	rulesFile := flags.String("rules", "", "rules file (JSON) saying which positions merge as counters, sets, keyed lists...")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, mergeUsage)
			flags.SetOutput(stdout)
			flags.PrintDefaults()
			return 0
		}
		fmt.Fprintln(stderr, "Run 'mergefs merge --help' for usage.")
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mergefs merge: "+format+"\n", a...)
		return 2
	}
	if flags.NArg() != 3 {
		return fail("want 3 files (BASE MINE THEIRS), got %d; run 'mergefs merge --help' for usage", flags.NArg())
	}
	policy, err := merge.ParsePolicy(*policyName)
	if err != nil {
		return fail("--on-conflict: %v", err)
	}
	if *maxSize <= 0 || *maxDepth <= 0 {
		return fail("--max-size and --max-depth must be positive")
	}
	paths := map[string]string{"base": flags.Arg(0), "mine": flags.Arg(1), "theirs": flags.Arg(2)}
	opts := merge.Options{Policy: policy, MaxSize: *maxSize, MaxDepth: *maxDepth}
	if *rulesFile != "" {
		data, err := os.ReadFile(*rulesFile)
		if err != nil {
			return fail("--rules: %v", err)
		}
		if opts.Rules, err = merge.ParseRules(data); err != nil {
			return fail("--rules %s: %v", *rulesFile, err)
		}
		opts.Record = filepath.ToSlash(filepath.Clean(paths["theirs"]))
	}

	var in merge.Inputs
	if in.Base, in.HasBase, err = readInput(paths["base"], *maxSize); err != nil {
		return fail("%v", err)
	}
	var mineExists bool
	if in.Mine, mineExists, err = readInput(paths["mine"], *maxSize); err != nil {
		return fail("%v", err)
	}
	if !mineExists {
		return fail("%s: MINE does not exist", paths["mine"])
	}
	if in.Theirs, in.HasTheirs, err = readInput(paths["theirs"], *maxSize); err != nil {
		return fail("%v", err)
	}

	res, err := merge.Merge(in, opts)
	var inputErr *merge.InputError
	switch {
	case errors.As(err, &inputErr):
		return fail("%s: %v", paths[inputErr.Input], inputErr)
	case err != nil && !errors.Is(err, merge.ErrRejected):
		return fail("%v", err)
	}
	if writeErr := writeConflicts(stderr, res.Conflicts); writeErr != nil {
		return fail("writing conflicts: %v", writeErr)
	}
	if err != nil { // rejected
		return 1
	}
	if _, err := stdout.Write(res.Merged); err != nil {
		return fail("writing the merged document: %v", err)
	}
	if len(res.Conflicts) > 0 {
		return 1
	}
	return 0
}

// readInput reads at most one byte past maxSize, so that the merge reports
// an oversized file without it being read whole. A missing file is not an
// error: exists is false.
func readInput(path string, maxSize int) (data []byte, exists bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err = io.ReadAll(io.LimitReader(f, int64(maxSize)+1))
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return data, true, nil
}

func writeConflicts(w io.Writer, conflicts []merge.Conflict) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, c := range conflicts {
		line := conflictLine{Path: []any{}, Base: jsonValue(c.Base), Mine: jsonValue(c.Mine), Theirs: jsonValue(c.Theirs),
			Reason: c.Reason, Strategy: string(c.Strategy)}
		for i, step := range c.Path {
			if c.IsIndex(i) {
				line.Path = append(line.Path, json.Number(step))
			} else {
				line.Path = append(line.Path, step)
			}
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

// jsonValue embeds a raw value as JSON; bytes that are not JSON (an invalid
// THEIRS) become a string, and an absent value nil.
func jsonValue(raw []byte) any {
	switch {
	case raw == nil:
		return nil
	case json.Valid(raw):
		return json.RawMessage(raw)
	default:
		return string(raw)
	}
}
