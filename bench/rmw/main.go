// Command rmw is the driver behind scripts/bench: it mounts a plain go-fuse
// loopback and mergefs (default, --fsync=always and --cache-reads=false) over scratch
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
	groups     []group
	targets    []string
	reads      int // plain reads per read-modify-write in the read-heavy rows
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
	var sizes, workers, targets, bigSizes, bigWorkers, readWorkers string
	var readSize int
	quick := false
	fl := flag.NewFlagSet("rmw", flag.ContinueOnError)
	fl.StringVar(&cfg.work, "work", "", "scratch `directory` (created; mounts and records go below it)")
	fl.StringVar(&cfg.mergefs, "mergefs", "", "mergefs `binary`")
	fl.StringVar(&cfg.loopback, "loopback", "", "loopback `binary`")
	fl.IntVar(&cfg.runs, "runs", 5, "runs of every cell; the median is reported")
	fl.DurationVar(&cfg.duration, "duration", 1500*time.Millisecond, "how long each cell runs")
	fl.StringVar(&sizes, "sizes", "300,4096,262144", "record `sizes` in bytes")
	fl.StringVar(&workers, "workers", "1,4,8", "worker `counts`; shared-record loads use those above 1")
	fl.StringVar(&bigSizes, "big-sizes", "1048576", "large record `sizes` in bytes, measured on distinct records only (empty: none)")
	fl.StringVar(&bigWorkers, "big-workers", "1,4", "worker `counts` for -big-sizes")
	fl.IntVar(&cfg.reads, "read-heavy", 9, "plain reads per read-modify-write in the read-heavy rows (0: no such rows)")
	fl.IntVar(&readSize, "read-heavy-size", 4096, "record `size` of the read-heavy rows")
	fl.StringVar(&readWorkers, "read-heavy-workers", "1,4", "worker `counts` of the read-heavy rows (distinct records)")
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
	if cfg.groups, err = makeGroups(sizes, workers, bigSizes, bigWorkers, cfg.reads, readSize, readWorkers); err != nil {
		fmt.Fprintf(os.Stderr, "rmw: %v\n", err)
		return 2
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
	cells := 0
	for _, g := range cfg.groups {
		cells += len(g.shapes) * len(b.targets) * cfg.runs
	}
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

// group is the loads measured on records of one size, with one set of mounts.
type group struct {
	size   int
	shapes []shape
}

// makeGroups lays out the table: every size of sizes with every worker count
// on distinct records and, above 1, on one shared record; the big sizes on
// distinct records only; and the read-heavy rows (distinct records, reads
// plain reads per read-modify-write) at readSize.
func makeGroups(sizes, workers, bigSizes, bigWorkers string, reads, readSize int, readWorkers string) ([]group, error) {
	var groups []group
	add := func(size int, sh shape) {
		for i := range groups {
			if groups[i].size == size {
				if !slices.Contains(groups[i].shapes, sh) {
					groups[i].shapes = append(groups[i].shapes, sh)
				}
				return
			}
		}
		groups = append(groups, group{size: size, shapes: []shape{sh}})
	}
	sz, err := parseInts(sizes)
	if err != nil {
		return nil, fmt.Errorf("-sizes: %w", err)
	}
	counts, err := parseInts(workers)
	if err != nil {
		return nil, fmt.Errorf("-workers: %w", err)
	}
	for _, size := range sz {
		for _, n := range counts {
			add(size, shape{workers: n})
		}
		for _, n := range counts {
			if n > 1 {
				add(size, shape{workers: n, shared: true})
			}
		}
	}
	if bigSizes != "" {
		big, err := parseInts(bigSizes)
		if err != nil {
			return nil, fmt.Errorf("-big-sizes: %w", err)
		}
		bigCounts, err := parseInts(bigWorkers)
		if err != nil {
			return nil, fmt.Errorf("-big-workers: %w", err)
		}
		for _, size := range big {
			for _, n := range bigCounts {
				add(size, shape{workers: n})
			}
		}
	}
	if reads > 0 {
		if readSize <= 0 {
			return nil, fmt.Errorf("-read-heavy-size %d is not a positive number", readSize)
		}
		readCounts, err := parseInts(readWorkers)
		if err != nil {
			return nil, fmt.Errorf("-read-heavy-workers: %w", err)
		}
		for _, n := range readCounts {
			add(readSize, shape{workers: n, reads: reads})
		}
	}
	if len(groups) == 0 {
		return nil, errors.New("nothing to measure")
	}
	return groups, nil
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
