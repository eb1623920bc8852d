package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mergefs/mergefs/internal/bytesize"
)

// A target is one way of serving the records to the workers.
type target struct {
	name  string
	fuse  string   // "", "loopback" or "mergefs"
	flags []string // extra mergefs flags
	flock bool
	// sharedOnly: measured on shared records only (a lock around each cycle changes nothing on
	// distinct ones).
	sharedOnly bool
	binary     string // mergefs binary if not the one under test
	daemon     *daemon
	backing    string // where the driver prepares and checks records
	dir        string // where the workers find them
}

// targetNames in table order.
var targetNames = []string{"plain", "flock", "loopback", "loopback-flock", "mergefs", "mergefs-fsync", "mergefs-no-cache-reads"}

func newTargets(work, compare string) []*target {
	plain := filepath.Join(work, "plain")
	targets := []*target{
		{name: "plain", backing: plain, dir: plain},
		{name: "flock", flock: true, backing: plain, dir: plain},
		{name: "loopback", fuse: "loopback", backing: filepath.Join(work, "loopback-backing"), dir: filepath.Join(work, "loopback-mnt")},
		// The loopback with flock around each cycle, as the workers would need to lose no update
		// without mergefs: the fair comparison on a shared record, where the bare loopback loses most.
		{name: "loopback-flock", fuse: "loopback", flock: true, sharedOnly: true,
			backing: filepath.Join(work, "loopback-flock-backing"), dir: filepath.Join(work, "loopback-flock-mnt")},
		{name: "mergefs", fuse: "mergefs", backing: filepath.Join(work, "mergefs-backing"), dir: filepath.Join(work, "mergefs-mnt")},
		{name: "mergefs-fsync", fuse: "mergefs", flags: []string{"--fsync=always"},
			backing: filepath.Join(work, "mergefs-fsync-backing"), dir: filepath.Join(work, "mergefs-fsync-mnt")},
		{name: "mergefs-no-cache-reads", fuse: "mergefs", flags: []string{"--cache-reads=false"},
			backing: filepath.Join(work, "mergefs-no-cache-reads-backing"), dir: filepath.Join(work, "mergefs-no-cache-reads-mnt")},
	}
	if compare != "" {
		targets = append(targets, &target{name: "mergefs-before", fuse: "mergefs", binary: compare,
			backing: filepath.Join(work, "mergefs-before-backing"), dir: filepath.Join(work, "mergefs-before-mnt")})
	}
	return targets
}

// shape is one load: how many workers, on one shared record or one record
// each, and how many plain reads (open, read, close) each makes before each
// read-modify-write.
type shape struct {
	workers int
	shared  bool
	reads   int
}

func (s shape) String() string {
	kind := "distinct"
	if s.shared {
		kind = "shared"
	}
	if s.reads > 0 {
		return fmt.Sprintf("%d %s, %d reads", s.workers, kind, s.reads)
	}
	return fmt.Sprintf("%d %s", s.workers, kind)
}

// cellResult is one measurement: one target, size and shape in one run.
type cellResult struct {
	rate    float64 // cycles per second, all workers together
	cycles  int64
	lost    int64 // committed increments missing from the final records
	torn    int64 // reads that found no usable record
	errors  int64
	corrupt int64 // final records that are not valid JSON
	hwmKB   int64 // daemon's peak resident set during the cell; 0 without a daemon
	note    string
}

type cellKey struct {
	target string
	size   int
	shape  shape
}

type bench struct {
	cfg      config
	self     string // this binary, run again as worker
	targets  []*target
	results  map[cellKey][]cellResult
	ratios   map[cellKey][2][]float64 // per run: to loopback, to plain
	seq      int
	problems []string
}

func (b *bench) mountAll(ctx context.Context, run, size int) error {
	for _, t := range b.targets {
		if t.fuse == "" {
			continue
		}
		for _, dir := range []string{t.backing, t.dir} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		var argv, env []string
		switch t.fuse {
		case "loopback":
			argv = []string{b.cfg.loopback, t.backing, t.dir}
		case "mergefs":
			state := t.dir + "-state"
			binary := b.cfg.mergefs
			if t.binary != "" {
				binary = t.binary
			}
			argv = append([]string{binary, "mount", "--state-dir", state, "--log-level", "warn"}, t.flags...)
			argv = append(argv, t.backing, t.dir)
			if b.cfg.profileDir != "" {
				env = append(env, "MERGEFS_CPUPROFILE="+filepath.Join(b.cfg.profileDir,
					fmt.Sprintf("%s-%d-run%d.pprof", t.name, size, run)))
			}
		}
		logPath := filepath.Join(b.cfg.work, fmt.Sprintf("%s.log", t.name))
		d, err := startDaemon(t.name, argv, env, t.dir, logPath)
		if err != nil {
			return err
		}
		t.daemon = d
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) unmountAll() error {
	var errs []error
	for _, t := range b.targets {
		if t.daemon == nil {
			continue
		}
		if err := t.daemon.stop(); err != nil {
			errs = append(errs, err)
		}
		if t.daemon.waitErr != nil {
			errs = append(errs, fmt.Errorf("%s exited with %v: %s", t.name, t.daemon.waitErr, tail(t.daemon.logPath, 5)))
		}
		t.daemon = nil
	}
	return errors.Join(errs...)
}

// runAll measures every cell cfg.runs times. Each run mounts fresh daemons
// per record size, and within one size and shape runs the targets back to
// back (in an order rotated per run), so that ratios compare measurements
// taken moments apart.
func (b *bench) runAll(ctx context.Context) error {
	b.results = make(map[cellKey][]cellResult)
	b.ratios = make(map[cellKey][2][]float64)
	for run := range b.cfg.runs {
		for _, g := range b.cfg.groups {
			size := g.size
			if err := b.mountAll(ctx, run, size); err != nil {
				return errors.Join(err, b.unmountAll())
			}
			err := b.runSize(ctx, run, g)
			if uerr := b.unmountAll(); uerr != nil {
				err = errors.Join(err, uerr)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "run %d/%d: %s records done\n", run+1, b.cfg.runs, bytesize.Label(size))
		}
	}
	return nil
}

func (b *bench) runSize(ctx context.Context, run int, g group) error {
	size := g.size
	for _, sh := range g.shapes {
		group := make(map[string]cellResult)
		for i := range b.targets {
			t := b.targets[(i+run)%len(b.targets)]
			if t.sharedOnly && !sh.shared {
				continue
			}
			res, err := b.runCell(ctx, t, size, sh)
			if err != nil {
				return fmt.Errorf("%s, %s records, %s: %w", t.name, bytesize.Label(size), sh, err)
			}
			key := cellKey{t.name, size, sh}
			b.results[key] = append(b.results[key], res)
			group[t.name] = res
		}
		for name, res := range group {
			key := cellKey{name, size, sh}
			r := b.ratios[key]
			if lb, ok := group["loopback"]; ok && lb.rate > 0 {
				r[0] = append(r[0], res.rate/lb.rate)
			}
			if pl, ok := group["plain"]; ok && pl.rate > 0 {
				r[1] = append(r[1], res.rate/pl.rate)
			}
			b.ratios[key] = r
		}
	}
	return nil
}

// counters is how many counter fields every record has: enough for every
// worker, and the same for every shape so that records of one size have one
// layout.
func (b *bench) counters() int {
	n := 8
	for _, g := range b.cfg.groups {
		for _, sh := range g.shapes {
			n = max(n, sh.workers)
		}
	}
	return n
}

func (b *bench) runCell(ctx context.Context, t *target, size int, sh shape) (cellResult, error) {
	var res cellResult
	if t.daemon != nil && !t.daemon.alive() {
		return res, fmt.Errorf("daemon died: %s", tail(t.daemon.logPath, 10))
	}
	b.seq++
	cell := fmt.Sprintf("c%d", b.seq)
	backingCell := filepath.Join(t.backing, cell)
	if err := os.MkdirAll(backingCell, 0o755); err != nil {
		return res, err
	}
	records := sh.workers
	if sh.shared {
		records = 1
	}
	lengths := make([]int, records)
	for i := range records {
		data := makeRecord(i, size, b.counters())
		lengths[i] = len(data)
		if err := os.WriteFile(filepath.Join(backingCell, recordName(i)), data, 0o644); err != nil {
			return res, err
		}
	}
	if t.daemon != nil {
		if err := resetPeakMemory(t.daemon.pid()); err != nil {
			return res, fmt.Errorf("reset peak memory: %w", err)
		}
	}

	results, err := b.runWorkers(ctx, t, cell, sh, lengths)
	if err != nil {
		return res, err
	}
	if t.daemon != nil {
		if res.hwmKB, err = procStatusKB(t.daemon.pid(), "VmHWM"); err != nil {
			return res, err
		}
	}
	for i, r := range results {
		res.cycles += r.Cycles
		res.torn += r.Torn
		res.errors += r.Errors
		if r.ElapsedNS > 0 {
			res.rate += float64(r.Cycles) / (float64(r.ElapsedNS) / 1e9)
		}
		if r.FirstError != "" && res.note == "" {
			res.note = fmt.Sprintf("worker %d: %s", i, r.FirstError)
		}
	}
	// Every worker increments only its own field, so after the run field wI
	// of its record must equal its committed cycles.
	for i, r := range results {
		rec := 0
		if !sh.shared {
			rec = i
		}
		data, err := os.ReadFile(filepath.Join(backingCell, recordName(rec)))
		if err != nil {
			return res, err
		}
		value, valid := counterValue(data, fmt.Sprintf("w%d", i))
		if !valid && (sh.shared && i == 0 || !sh.shared) {
			res.corrupt++
		}
		if value < 0 {
			res.lost += r.Cycles // the field is gone altogether
			continue
		}
		res.lost += r.Cycles - value
	}
	if res.errors > 0 {
		b.problems = append(b.problems, fmt.Sprintf("%s, %s, %s: %d failed cycles (%s)",
			t.name, bytesize.Label(size), sh, res.errors, res.note))
	}
	// Through the mount, so that mergefs forgets what was read of it.
	if err := os.RemoveAll(filepath.Join(t.dir, cell)); err != nil {
		return res, fmt.Errorf("remove %s: %w", cell, err)
	}
	return res, nil
}

// counterValue reads field key of a final record: from the parsed JSON if the
// record is valid (valid=true), else from its text; -1 if the field is gone.
func counterValue(data []byte, key string) (value int64, valid bool) {
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err == nil {
		s, ok := doc[key].(string)
		if !ok {
			return -1, true
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return -1, true
		}
		return v, true
	}
	digits, ok := findCounter(data, counterField(key), len(data))
	if !ok {
		return -1, false
	}
	v, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return -1, false
	}
	return v, false
}

type workerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// runWorkers starts the cell's worker processes, lets them go at once and
// collects their results.
func (b *bench) runWorkers(ctx context.Context, t *target, cell string, sh shape, lengths []int) ([]workerResult, error) {
	procs := make([]*workerProc, 0, sh.workers)
	defer func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
				p.cmd.Wait()
			}
		}
	}()
	for i := range sh.workers {
		rec := i
		if sh.shared {
			rec = 0
		}
		path := filepath.Join(t.dir, cell, recordName(rec))
		args := []string{"worker", "-record", path, "-key", fmt.Sprintf("w%d", i), "-size", fmt.Sprint(lengths[rec]),
			"-duration", b.cfg.duration.String()}
		if t.flock {
			args = append(args, "-flock", path+".lock")
		}
		if b.cfg.unpinned {
			args = append(args, "-unpinned")
		}
		if sh.reads > 0 {
			args = append(args, "-reads", fmt.Sprint(sh.reads))
		}
		p, err := startChild(b.self, args)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if line, err := scanLine(p.out); err != nil || line != "ready" {
			return nil, fmt.Errorf("worker did not start: %q %v", line, err)
		}
	}
	for _, p := range procs {
		p.stdin.Close()
	}
	results := make([]workerResult, len(procs))
	deadline := time.Now().Add(b.cfg.duration + time.Minute)
	for i, p := range procs {
		line, err := scanLineUntil(ctx, p, deadline)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(line), &results[i]); err != nil {
			return nil, fmt.Errorf("worker result %q: %w", line, err)
		}
		if err := p.cmd.Wait(); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
	}
	return results, nil
}

// startChild starts this binary in a child mode; the child dies with the
// driver.
func startChild(self string, args []string) (*workerProc, error) {
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 4096), 1<<20)
	return &workerProc{cmd: cmd, stdin: stdin, out: sc}, nil
}

// scanLineUntil reads a worker's result line, giving up at the deadline or
// when ctx ends (the worker is killed; a worker stuck in a hung mount is
// freed when the mount is aborted during cleanup).
func scanLineUntil(ctx context.Context, p *workerProc, deadline time.Time) (string, error) {
	type lineErr struct {
		line string
		err  error
	}
	ch := make(chan lineErr, 1)
	go func() {
		line, err := scanLine(p.out)
		ch <- lineErr{line, err}
	}()
	select {
	case le := <-ch:
		return le.line, le.err
	case <-ctx.Done():
		p.cmd.Process.Kill()
		return "", ctx.Err()
	case <-time.After(time.Until(deadline)):
		p.cmd.Process.Kill()
		return "", errors.New("worker did not finish in time (hung mount?)")
	}
}

func recordName(i int) string { return fmt.Sprintf("r%d.json", i) }

// makeRecord builds a record of exactly size bytes (at least the fields'
// own size), laid out the way Python's json.dump writes: counters w0...,
// some non-ASCII text escaped as json.dump escapes it, and a "profile"
// object of many short fields, as a large user profile would have.
func makeRecord(id, size, counters int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"id": %d, "name": "Zo\u00eb \u00dcnal", "score": 1.5, "tags": ["a", "b"], `, id)
	for i := range counters {
		fmt.Fprintf(&b, `"w%d": "%0*d", `, i, counterWidth, 0)
	}
	b.WriteString(`"profile": {`)
	const tail = `"pad": ""}}`
	for i := 0; size-b.Len()-len(tail) > 2*profileField; i++ {
		fmt.Fprintf(&b, `"f%d": "%s", `, i, strings.Repeat("x", profileField-len(fmt.Sprintf(`"f%d": "", `, i))))
	}
	b.WriteString(`"pad": "`)
	b.WriteString(strings.Repeat("x", max(size-b.Len()-len(`"}}`), 0)))
	b.WriteString(`"}}`)
	return []byte(b.String())
}

// profileField is the size of one field of a record's profile object.
const profileField = 48
