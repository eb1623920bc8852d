package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/backing"
	mergefs "github.com/mergefs/mergefs/fs"
	"github.com/mergefs/mergefs/internal/bytesize"
	"github.com/mergefs/mergefs/internal/mountinfo"
	"github.com/mergefs/mergefs/merge"
)

const mountUsage = `Usage:
  mergefs mount [flags] BACKING MOUNTPOINT
  mergefs mount [flags] DIR

Serves the directory BACKING at MOUNTPOINT. Files whose names match the record
patterns are JSON records: each open handle sees a snapshot, its writes are
buffered, and on close (or fsync, or a rename onto the record) only the fields
the writer changed are merged into the current record, atomically, under a
per-record lock. Everything else passes through unchanged.

With one argument, mergefs mounts in place over DIR: workers keep their
configured path and mergefs reaches the original directory through a
descriptor opened before the mount.

Each mount keeps its conflict journal, rejected content and status socket
in a state directory of its own: without --state-dir, /var/lib/mergefs/ and
the mountpoint escaped as systemd-escape --path does (/var/lib/mergefs/srv-data
for /srv/data), the directory the systemd unit and the mount(8) helper use.
So mounts at different mountpoints need no flags.

Runs in the foreground; SIGINT or SIGTERM unmounts (lazily if the mount is
busy) and exits 0 once every pending commit is done. Needs root.

Flags:
`

type mountConfig struct {
	records        string
	onConflict     string
	fsync          string
	multiHost      string
	stateDir       string
	allowOther     bool
	maxRecordSize  string
	maxDepth       int
	readMemory     string
	readAge        time.Duration
	logLevel       string
	logFormat      string
	debugFUSE      bool
	cacheReads     bool
	cacheReadsSet  bool // given on the command line, rather than the default
	metricsAddr    string
	backing, mount string
	inPlace        bool
	limits         limitFlags
	rules          string
}

func mountFlags(cfg *mountConfig, stderr io.Writer) *flag.FlagSet {
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&cfg.records, "records", "*.json", "comma-separated `patterns` for record file names (matched against base names)")
	fl.StringVar(&cfg.onConflict, "on-conflict", "writer-wins", "conflict `policy`: writer-wins (take the writer's value, log it) or reject (close/fsync fail with EIO)")
	fl.StringVar(&cfg.fsync, "fsync", "on-request", "`when` to fsync commits: on-request (when the application calls fsync) or always")
	fl.StringVar(&cfg.multiHost, "multi-host", "auto", "`mode`: on makes every commit check, under the record's lock, that it read the version another host committed last (network filesystem clients cache); auto: on for NFS, FUSE (GlusterFS), CIFS, Ceph, off for local filesystems; or off")
	fl.StringVar(&cfg.stateDir, "state-dir", "", "`directory` for rejected content (rejected/), the conflict journal (conflicts.jsonl) and the status socket; one per mount, not inside it (default /var/lib/mergefs/ and the mountpoint escaped as by systemd-escape --path: /var/lib/mergefs/srv-data for /srv/data)")
	fl.BoolVar(&cfg.allowOther, "allow-other", false, "let users other than root use the mount (the kernel checks file modes)")
	fl.StringVar(&cfg.maxRecordSize, "max-record-size", "16MiB", "largest record `size` accepted (bytes, or with KiB/MiB/GiB)")
	fl.IntVar(&cfg.maxDepth, "max-depth", merge.DefaultMaxDepth, "deepest JSON nesting `depth` accepted")
	fl.StringVar(&cfg.readMemory, "read-memory", "64MiB", "memory `size` for the read versions kept to choose merge bases")
	fl.DurationVar(&cfg.readAge, "read-age", mergefs.DefaultReadAge, "how long a read version is kept to choose a merge base (`duration`)")
	fl.StringVar(&cfg.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fl.StringVar(&cfg.logFormat, "log-format", "text", "log `format`: text or json")
	fl.BoolVar(&cfg.debugFUSE, "debug-fuse", false, "log every FUSE request (very verbose)")
	fl.BoolVar(&cfg.cacheReads, "cache-reads", true, "serve plain reads of an unchanged record from the kernel's page cache, the daemon keeping flock and fcntl locks; off by default where --multi-host is on, which refuses it")
	fl.StringVar(&cfg.metricsAddr, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics (like 127.0.0.1:9464); empty: only on the status socket")
	fl.StringVar(&cfg.rules, "rules", "", "rules `file` (JSON) saying which positions merge as counters, sets, keyed lists, max/min, atomically or never (see README); SIGHUP re-reads it")
	cfg.limits.register(fl)
	// Usage is printed by runMount, once: to stdout when asked for, else to
	// stderr after the flag package's error.
	fl.Usage = func() {}
	return fl
}

// parseMountFlags parses args into cfg through fl (mountFlags), noting what was given explicitly.
func parseMountFlags(fl *flag.FlagSet, cfg *mountConfig, args []string) error {
	if err := fl.Parse(args); err != nil {
		return err
	}
	fl.Visit(func(f *flag.Flag) { cfg.cacheReadsSet = cfg.cacheReadsSet || f.Name == "cache-reads" })
	return nil
}

// cachesReads says whether the mount serves cached reads over a store that other hosts write
// (fencing) or not: by default only where they do not; asked for explicitly, always (the
// filesystem then refuses a fenced store).
func (cfg mountConfig) cachesReads(fencing bool) bool {
	return cfg.cacheReads && (cfg.cacheReadsSet || !fencing)
}

func printMountUsage(fl *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, mountUsage)
	fl.SetOutput(w)
	fl.PrintDefaults()
}

func runMount(args []string, stdout, stderr io.Writer) int {
	var cfg mountConfig
	fl := mountFlags(&cfg, stderr)
	if err := parseMountFlags(fl, &cfg, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printMountUsage(fl, stdout)
			return 0
		}
		printMountUsage(fl, stderr)
		return 2
	}
	switch fl.NArg() {
	case 1:
		cfg.backing, cfg.mount, cfg.inPlace = fl.Arg(0), fl.Arg(0), true
	case 2:
		cfg.backing, cfg.mount = fl.Arg(0), fl.Arg(1)
	default:
		fmt.Fprintln(stderr, "mergefs mount: need BACKING MOUNTPOINT, or DIR to mount in place (see --help)")
		return 2
	}
	if cfg.rules != "" {
		// SIGHUP re-reads it, whatever the daemon's working directory is then.
		abs, err := filepath.Abs(cfg.rules)
		if err != nil {
			fmt.Fprintf(stderr, "mergefs mount: --rules: %v\n", err)
			return 2
		}
		cfg.rules = abs
	}
	if err := serve(cfg, stderr); err != nil {
		fmt.Fprintf(stderr, "mergefs mount: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// serve mounts the filesystem and serves it until a signal or an external
// unmount. Each step needs the ones before it; the deferred calls undo them
// in reverse order, so the store closes after the last commit and the
// journal after the store.
func serve(cfg mountConfig, stderr io.Writer) error {
	set, err := parseMountSettings(cfg, stderr)
	if err != nil {
		return err
	}
	if err := checkCanMount(); err != nil {
		return err
	}
	if set.limits, set.rejected, err = cfg.limits.parse(raiseFileLimit(set.logger)); err != nil {
		return err
	}
	dirs, err := resolveMountDirs(cfg, set.logger)
	if err != nil {
		return err
	}
	ops, err := prepareStateDir(dirs.state, cfg.metricsAddr, set.logger)
	if err != nil {
		return err
	}
	defer ops.close()
	bk, err := openBacking(dirs.backing, set)
	if err != nil {
		return err
	}
	defer bk.close()
	fsys, root, err := buildFilesystem(cfg, set, dirs, bk, ops)
	if err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(set.logger)
	if err != nil {
		return err
	}
	defer stopProfile()
	setMemoryLimit(set.readMemory, set.limits.MaxBuffered, set.logger)
	setProcs(set.logger)
	// Signals are caught before the mount exists: one that arrives as it
	// becomes ready must unmount it, not kill the daemon and leave it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// SIGHUP (systemctl reload) re-reads the rules instead of ending the daemon.
	defer reloadRulesOnHangup(cfg.rules, fsys.SetRules, set.logger)()
	server, err := mountFilesystem(cfg, dirs, fsys, root)
	if err != nil {
		return err
	}
	announceReady(cfg, set, dirs, fsys, ops, stderr)
	waitForShutdown(server, sigs, dirs.mount, set.logger, ops.stopping)
	st := fsys.Stats()
	set.logger.Info("unmounted", "commits", st.Commits, "merges", st.Merges, "conflicts", st.Conflicts,
		"rejected", st.Rejected, "failed", st.Failed, "base_fallbacks", st.BaseFallbacks)
	return nil
}

// mountSettings are the mount's flags, checked and converted.
type mountSettings struct {
	logger     *slog.Logger
	policy     merge.Policy
	fsync      backing.FsyncPolicy
	fence      backing.FenceMode
	maxSize    int64
	readMemory int64
	limits     mergefs.Limits
	rejected   mergefs.RejectedLimits
	rules      *merge.Rules
}

// parseMountSettings checks the flags that need no filesystem, in the order
// their errors are reported, and builds the logger that writes to stderr.
func parseMountSettings(cfg mountConfig, stderr io.Writer) (set mountSettings, err error) {
	if set.logger, err = newLogger(cfg.logLevel, cfg.logFormat, stderr); err != nil {
		return set, err
	}
	if set.policy, err = merge.ParsePolicy(cfg.onConflict); err != nil {
		return set, fmt.Errorf("--on-conflict: %w", err)
	}
	switch cfg.fsync {
	case "on-request":
		set.fsync = backing.FsyncOnRequest
	case "always":
		set.fsync = backing.FsyncAlways
	default:
		return set, fmt.Errorf("--fsync %q: want on-request or always", cfg.fsync)
	}
	switch cfg.multiHost {
	case "auto":
		set.fence = backing.FenceAuto
	case "on":
		set.fence = backing.FenceOn
	case "off":
		set.fence = backing.FenceOff
	default:
		return set, fmt.Errorf("--multi-host %q: want auto, on or off", cfg.multiHost)
	}
	if set.maxSize, err = bytesize.Parse(cfg.maxRecordSize); err != nil {
		return set, fmt.Errorf("--max-record-size: %w", err)
	}
	if set.readMemory, err = bytesize.Parse(cfg.readMemory); err != nil {
		return set, fmt.Errorf("--read-memory: %w", err)
	}
	if cfg.maxDepth < 1 {
		return set, fmt.Errorf("--max-depth must be at least 1")
	}
	if cfg.readAge <= 0 {
		return set, fmt.Errorf("--read-age must be positive")
	}
	if set.rules, err = loadRules(cfg.rules); err != nil {
		return set, err
	}
	return set, nil
}

// checkCanMount checks that this process can mount FUSE: mergefs mounts with
// mount(2) itself, as root.
func checkCanMount() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: mergefs mounts with mount(2) directly (no fusermount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no /dev/fuse (load the fuse module, or give the container the device): %w", err)
	}
	return nil
}

// mountDirs are the mount's directories, absolute.
type mountDirs struct {
	backing, mount, state string
}

// resolveMountDirs makes the directories absolute, clears a stale mount
// that a crashed daemon left at the mountpoint, and checks that the backing
// directory and the mountpoint can be used (an empty directory, unless
// mounting in place) and that the state directory is not inside the mount.
func resolveMountDirs(cfg mountConfig, logger *slog.Logger) (dirs mountDirs, err error) {
	if dirs.backing, err = filepath.Abs(cfg.backing); err != nil {
		return dirs, err
	}
	if dirs.mount, err = filepath.Abs(cfg.mount); err != nil {
		return dirs, err
	}
	if err := clearStaleMount(dirs.mount, logger); err != nil {
		return dirs, err
	}
	if err := checkDir("backing directory", dirs.backing); err != nil {
		return dirs, err
	}
	if !cfg.inPlace {
		if err := checkDir("mountpoint", dirs.mount); err != nil {
			return dirs, err
		}
		if err := checkEmpty(dirs.mount); err != nil {
			return dirs, err
		}
	}
	if cfg.stateDir == "" {
		if name := escapePath(dirs.mount); len(name) > 255 {
			return dirs, fmt.Errorf("the default state directory for %s would be named %s, longer than a file name may be: give --state-dir", dirs.mount, name)
		}
		dirs.state = defaultStateDir(dirs.mount)
	} else if dirs.state, err = filepath.Abs(cfg.stateDir); err != nil {
		return dirs, err
	}
	if within(dirs.state, dirs.mount) {
		return dirs, fmt.Errorf("--state-dir %s is inside the mount %s; rejected content would loop back through mergefs", dirs.state, dirs.mount)
	}
	return dirs, nil
}

// prepareStateDir creates the state directory and starts what it holds for
// operators: the daemon's claim on it, the journal, the status socket and
// the metrics listeners. The caller must close what it returns.
func prepareStateDir(stateDir, metricsAddr string, logger *slog.Logger) (*operations, error) {
	if err := secureStateDir(stateDir, logger); err != nil {
		return nil, err
	}
	return startOperations(stateDir, metricsAddr, logger)
}

// secureStateDir makes the state directory, or checks one that exists: it must be a directory (not a
// symlink) owned by root, and is tightened to 0700, since rejected content of every user's records is
// saved there.
func secureStateDir(dir string, logger *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("state directory %s is not a directory (a symlink?): refused", dir)
	}
	if st.Uid != 0 {
		return fmt.Errorf("state directory %s belongs to uid %d, not root: refused (another user could read or replace what mergefs keeps there)", dir, st.Uid)
	}
	if st.Mode&0o7777 != 0o700 {
		if err := unix.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state directory: tighten to 0700: %w", err)
		}
		logger.Warn("state directory was open to others; tightened to 0700", "dir", dir, "was", fmt.Sprintf("%#o", st.Mode&0o7777))
	}
	return nil
}

// backingDir is the backing store, on a descriptor of the backing directory
// opened before mounting (after an in-place mount, the directory's path
// leads into mergefs itself). Everything mergefs does in the backing
// directory is relative to that one descriptor.
type backingDir struct {
	store *backing.Store
}

// openBacking opens the backing store on the backing directory, removing
// temporary files a crashed daemon left. The caller must close it.
func openBacking(dir string, set mountSettings) (*backingDir, error) {
	// Files are created with exactly the mode asked for: the daemon applies
	// the caller's umask itself (see fs.MountOptions).
	unix.Umask(0)
	dirFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open backing directory: %w", err)
	}
	store, err := backing.OpenFD(dirFD, backing.Options{Fsync: set.fsync, Fence: set.fence, Logger: set.logger, MaxRecordSize: set.maxSize,
		// Records being read for opens and commits count against half the buffer budget before it sees them.
		MaxReading: set.limits.MaxBuffered / 2})
	if err != nil {
		return nil, fmt.Errorf("open backing store: %w", err)
	}
	if n := store.Recovered(); n > 0 {
		set.logger.Info("removed temporary files left by a crashed daemon", "count", n)
	}
	return &backingDir{store: store}, nil
}

// close waits for the store's commits and releases its descriptors.
func (bk *backingDir) close() {
	bk.store.Close()
}

// buildFilesystem makes the mergefs filesystem over the backing store,
// reporting its commits to the operations' journal and metrics.
func buildFilesystem(cfg mountConfig, set mountSettings, dirs mountDirs, bk *backingDir, ops *operations) (*mergefs.FS, gofs.InodeEmbedder, error) {
	return mergefs.New(mergefs.Config{
		Store:          bk.store,
		RecordPatterns: splitPatterns(cfg.records),
		Merge:          merge.Options{Policy: set.policy, MaxSize: int(set.maxSize), MaxDepth: cfg.maxDepth, Rules: set.rules},
		StateDir:       dirs.state,
		ReadMemory:     set.readMemory,
		ReadAge:        cfg.readAge,
		CacheReads:     cfg.cachesReads(bk.store.Fencing()),
		Limits:         set.limits,
		Rejected:       set.rejected,
		Logger:         set.logger,
		Observer:       ops.observer(),
	})
}

// mountFilesystem mounts root at the mountpoint with mergefs's options.
func mountFilesystem(cfg mountConfig, dirs mountDirs, fsys *mergefs.FS, root gofs.InodeEmbedder) (*fuse.Server, error) {
	opts := mergefs.MountOptions(dirs.backing, cfg.allowOther)
	opts.Debug = cfg.debugFUSE
	server, err := fsys.Mount(dirs.mount, root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dirs.mount, err)
	}
	return server, nil
}

// announceReady starts serving metrics, tells the service manager, and says
// on stderr that the mount is usable (the line scripts and tests wait for).
func announceReady(cfg mountConfig, set mountSettings, dirs mountDirs, fsys *mergefs.FS, ops *operations, stderr io.Writer) {
	ops.mounted(fsys, dirs.backing, dirs.mount, cfg.inPlace, set.readMemory)
	fmt.Fprintf(stderr, "mergefs: ready: serving %s at %s\n", dirs.backing, dirs.mount)
	set.logger.Info("mounted", "backing", dirs.backing, "mountpoint", dirs.mount, "in_place", cfg.inPlace,
		"records", cfg.records, "on_conflict", set.policy.String(), "fsync", cfg.fsync, "cache_reads", fsys.CachesReads())
}

// waitForShutdown serves until a signal or an external unmount, then makes
// sure the mount is gone. server.Wait returns only after every request in
// flight, commits included, has been answered.
func waitForShutdown(server *fuse.Server, sigs <-chan os.Signal, mountDir string, logger *slog.Logger, stopping func(reason string)) {
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
		stopping("unmounted")
		return
	case sig := <-sigs:
		logger.Info("unmounting", "signal", sig.String())
		stopping("unmounting on " + sig.String())
	}
	if err := server.Unmount(); err != nil {
		logger.Warn("mount is busy; detaching it lazily", "err", err)
		if err := unix.Unmount(mountDir, unix.MNT_DETACH); err != nil {
			logger.Error("lazy unmount failed", "err", err)
		}
	}
	<-done
}

// memoryHeadroom is what the daemon may use beyond its read-tracking bound
// and buffer budget before the Go runtime collects garbage harder: commits in
// flight, records being read, the runtime itself.
const memoryHeadroom = 128 << 20

// setMemoryLimit gives the Go runtime a soft memory limit of the read
// tracking bound and the buffer budget plus headroom, unless GOMEMLIMIT says
// otherwise. Without one the heap may grow to twice the live data before a
// collection.
func setMemoryLimit(readMemory, maxBuffered int64, logger *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := readMemory + maxBuffered + memoryHeadroom
	debug.SetMemoryLimit(limit)
	logger.Debug("soft memory limit set", "bytes", limit)
}

// procsPerCPU is how many Go processors (Ps) the daemon runs per CPU the runtime would use by
// default. Nearly every FUSE request blocks its thread in system calls: the read of /dev/fuse that
// waits for it, the backing store's, the reply. With one P per CPU, a goroutine made runnable
// meanwhile waits until a thread returns from its system call or the runtime's monitor takes the
// P back from it (after 20 µs to 10 ms); with two, it runs at once and the kernel shares the CPUs
// among the threads. Measured in scripts/bench runs on 2 CPUs (docs/design.md, section 9).
const procsPerCPU = 2

// daemonProcs is the GOMAXPROCS the daemon sets, given the runtime's default and the GOMAXPROCS
// environment variable: 0 (leave it) when the variable is set.
func daemonProcs(defaultProcs int, env string) int {
	if env != "" {
		return 0
	}
	return procsPerCPU * max(defaultProcs, 1)
}

// setProcs sets GOMAXPROCS to daemonProcs, unless the GOMAXPROCS environment variable says
// otherwise. (Setting it stops the runtime from following later changes of a cgroup's CPU limit.)
func setProcs(logger *slog.Logger) {
	n := daemonProcs(runtime.GOMAXPROCS(0), os.Getenv("GOMAXPROCS"))
	if n == 0 {
		return
	}
	runtime.GOMAXPROCS(n)
	logger.Debug("GOMAXPROCS set", "procs", n)
}

// clearStaleMount unmounts a FUSE mount at dir whose daemon is gone (every
// access gives ENOTCONN) and refuses a live one.
func clearStaleMount(dir string, logger *slog.Logger) error {
	m, mounted, err := mountinfo.At(dir)
	if err != nil || !mounted || !m.IsFUSE() {
		return err
	}
	var st unix.Stat_t
	err = unix.Stat(dir, &st)
	if err == nil {
		return fmt.Errorf("%s is busy: a live %s filesystem is mounted there", dir, m.FSType)
	}
	if !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) {
		return fmt.Errorf("%s: %w", dir, err)
	}
	logger.Warn("clearing a stale mount left by a crashed daemon", "mountpoint", dir, "fstype", m.FSType)
	if err := mountinfo.Detach(dir); err != nil {
		return fmt.Errorf("clear stale mount: %w", err)
	}
	return nil
}

func checkDir(what, dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, dir)
	}
	return nil
}

func checkEmpty(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty (to mount over a directory in place, give it as the only argument)", dir)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("mountpoint: %w", err)
	}
	return nil
}

func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func splitPatterns(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
