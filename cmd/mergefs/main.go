// Command mergefs mounts a FUSE filesystem that turns whole-record JSON
// read-modify-write into field-level 3-way merges, and offers the merge engine
// on the command line.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `mergefs: a FUSE filesystem that ends lost updates to JSON records.

Usage:
  mergefs mount [flags] BACKING MOUNTPOINT   serve BACKING at MOUNTPOINT
  mergefs mount [flags] DIR                  mount in place over DIR
  mergefs merge [flags] BASE MINE THEIRS     3-way merge of three JSON files
  mergefs status [flags] [MOUNTPOINT]        counters of a running mount
  mergefs doctor [flags] [MOUNTPOINT...]     check a deployment, say what to fix
  mergefs version                            version, revision and Go version
  mergefs help [COMMAND]                     show help for a command

Run 'mergefs COMMAND --help' for the flags of a command.
`

type command struct {
	run func(args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"mount":   {run: runMount},
		"merge":   {run: runMerge},
		"status":  {run: runStatus},
		"version": {run: runVersion},
		"doctor":  {run: runDoctor},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	case "--version", "-version":
		name = "version"
	case "help":
		if len(rest) == 0 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		name, rest = rest[0], []string{"--help"}
	}
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "mergefs: unknown command %q\n\n%s", name, usage)
		return 2
	}
	return cmd.run(rest, stdout, stderr)
}
