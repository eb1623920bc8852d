// Command rmw is the driver behind scripts/bench: it mounts a plain go-fuse
// loopback and mergefs (default and --fsync=always) over scratch
// directories, runs legacy read-modify-write workers (separate processes:
// this binary in worker mode) against them and against a plain directory,
// with and without flock, and prints one table. With -memory it measures the
// daemon's memory while many processes read many records instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

type config struct {
	work       string
	mergefs    string
	loopback   string
	runs       int
	duration   time.Duration
	sizes      []int
	shapes     []shape
	targets    []string
	profileDir string
	compare    string
	unpinned   bool

	memory     bool
	memRecords int
	memReaders int
	memSize    int
	readMemory string
}

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "worker":
			err = runWorker(os.Args[2:])
		case "reader":
			err = runReader(os.Args[2:])
		case "hog":
			err = runHog(os.Args[2:])
		default:
			os.Exit(runDriver(os.Args[1:]))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(runDriver(nil))
}

func runDriver(args []string) int {
	var cfg config
	var sizes, workers, targets string
	quick := false
	fl := flag.NewFlagSet("rmw", flag.ContinueOnError)
	fl.StringVar(&cfg.work, "work", "", "scratch `directory` (created; mounts and records go below it)")
	fl.StringVar(&cfg.mergefs, "mergefs", "", "mergefs `binary`")
	fl.StringVar(&cfg.loopback, "loopback", "", "loopback `binary`")
	fl.IntVar(&cfg.runs, "runs", 3, "runs of every cell; the median is reported")
	fl.DurationVar(&cfg.duration, "duration", 1500*time.Millisecond, "how long each cell runs")
	fl.StringVar(&sizes, "sizes", "300,4096,262144", "record `sizes` in bytes")
	fl.StringVar(&workers, "workers", "1,4,8", "worker `counts`; shared-record loads use those above 1")
	fl.StringVar(&targets, "targets", strings.Join(targetNames, ","), "`filesystems` to measure")
	fl.BoolVar(&quick, "quick", false, "one run of 0.5s cells: a rough table in about a minute")
	fl.StringVar(&cfg.profileDir, "cpuprofile-dir", "", "write a CPU profile of every mergefs daemon into `dir`")
	fl.StringVar(&cfg.compare, "compare", "", "also measure this other mergefs `binary` (target mergefs-before), to see what a change bought")
	fl.BoolVar(&cfg.unpinned, "unpinned-workers", false, "let workers' system calls move between OS threads (as Go, Node.js's libuv pool, or a thread pool do) instead of one thread as Python")
	fl.BoolVar(&cfg.memory, "memory", false, "measure daemon memory with many readers instead")
	fl.IntVar(&cfg.memRecords, "memory-records", 10000, "records in the memory test")
	fl.IntVar(&cfg.memReaders, "memory-readers", 100, "reader processes in the memory test; each reads every record")
	fl.IntVar(&cfg.memSize, "memory-size", 1024, "record size in bytes in the memory test")
	fl.StringVar(&cfg.readMemory, "read-memory", "64MiB", "mergefs --read-memory in the memory test")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if cfg.work == "" || cfg.mergefs == "" || (cfg.loopback == "" && !cfg.memory) {
		fmt.Fprintln(os.Stderr, "rmw: -work, -mergefs and -loopback are required (scripts/bench sets them)")
		return 2
	}
	if quick {
		cfg.runs, cfg.duration = 1, 500*time.Millisecond
	}
	var err error
	if cfg.sizes, err = parseInts(sizes); err != nil {
		fmt.Fprintf(os.Stderr, "rmw: -sizes: %v\n", err)
		return 2
	}
	counts, err := parseInts(workers)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rmw: -workers: %v\n", err)
		return 2
	}
	for _, n := range counts {
		cfg.shapes = append(cfg.shapes, shape{workers: n})
	}
	for _, n := range counts {
		if n > 1 {
			cfg.shapes = append(cfg.shapes, shape{workers: n, shared: true})
		}
	}
	cfg.targets = strings.Split(targets, ",")
	if cfg.compare != "" {
		cfg.targets = append(cfg.targets, "mergefs-before")
	}
	for _, name := range cfg.targets {
		if !slices.Contains(targetNames, name) && name != "mergefs-before" {
			fmt.Fprintf(os.Stderr, "rmw: unknown target %q (want some of %s)\n", name, strings.Join(targetNames, ","))
			return 2
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "rmw: must run as root (FUSE mounts without fusermount)")
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if cfg.work, err = filepath.Abs(cfg.work); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if cfg.memory {
		if err = runBudget(ctx, cfg, self); err == nil {
			err = runMemory(ctx, cfg, self)
		}
	} else {
		err = runMatrix(ctx, cfg, self)
	}
	// Whatever happened, nothing stays mounted below the scratch directory.
	for _, m := range mountsUnder(cfg.work) {
		fmt.Fprintf(os.Stderr, "rmw: clearing leftover mount %s\n", m.Mountpoint)
		mountinfo.AbortAndDetach(m)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "rmw: interrupted; mounts and processes cleaned up")
			return 130
		}
		fmt.Fprintf(os.Stderr, "rmw: %v\n", err)
		return 1
	}
	return 0
}

func runMatrix(ctx context.Context, cfg config, self string) error {
	b := &bench{cfg: cfg, self: self}
	for _, t := range newTargets(cfg.work, cfg.compare) {
		if slices.Contains(cfg.targets, t.name) {
			b.targets = append(b.targets, t)
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.work, "plain"), 0o755); err != nil {
		return err
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return err
		}
	}
	m := describeMachine()
	cells := len(cfg.sizes) * len(cfg.shapes) * len(b.targets) * cfg.runs
	fmt.Fprintf(os.Stderr, "rmw: %d cells of %v (about %v)\n", cells, cfg.duration,
		(time.Duration(cells) * (cfg.duration + 150*time.Millisecond)).Round(time.Second))
	start := time.Now()
	err := b.runAll(ctx)
	if err != nil {
		return err
	}
	m.loadEnd = loadAverage()
	printTable(os.Stdout, b, m, time.Since(start))
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}
