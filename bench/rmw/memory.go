package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mergefs/mergefs/internal/bytesize"
)

// memoryRun is one mount of the memory test.
type memoryRun struct {
	readMemory string
	idleKB     int64 // resident after mounting, before any read
	peakKB     int64 // VmHWM over the reads
	took       time.Duration
}

// runMemory measures the daemon's peak memory while cfg.memReaders processes
// each read all cfg.memRecords records: with read tracking effectively off
// (a 1-byte bound: the control, whose peak is the fixed overhead under this
// load), with the configured bound, and with the bound plus a Go soft
// memory limit of bound + memoryHeadroom (GOMEMLIMIT), which keeps the
// garbage collector from letting the heap grow to twice the live data.
// Read tracking may add at most its bound to the control's peak.
func runMemory(ctx context.Context, cfg config, self string) error {
	backing := filepath.Join(cfg.work, "memory-backing")
	mnt := filepath.Join(cfg.work, "memory-mnt")
	for _, dir := range []string{filepath.Join(backing, "m"), mnt} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	for i := range cfg.memRecords {
		data := makeRecord(i, cfg.memSize, 8)
		if err := os.WriteFile(filepath.Join(backing, "m", recordName(i)), data, 0o644); err != nil {
			return err
		}
	}
	boundBytes, err := bytesize.Parse(cfg.readMemory)
	if err != nil {
		return err
	}
	m := describeMachine()
	limit := fmt.Sprintf("GOMEMLIMIT=%dMiB", (boundBytes+memoryHeadroom)>>20)
	setups := []struct {
		label, bound string
		env          []string
	}{
		{"control, --read-memory 1 (nothing tracked)", "1", nil},
		{"--read-memory " + cfg.readMemory, cfg.readMemory, nil},
		{"--read-memory " + cfg.readMemory + " with " + limit, cfg.readMemory, []string{limit}},
	}
	var runs []memoryRun
	for _, s := range setups {
		r, err := memoryOnce(ctx, cfg, self, backing, mnt, s.bound, s.env)
		if err != nil {
			return err
		}
		runs = append(runs, r)
		fmt.Fprintf(os.Stderr, "rmw: memory, %s: done in %v\n", s.label, r.took.Round(time.Second))
	}
	fmt.Printf("mergefs memory: %d records of %s, %d reader processes each reading every record (%d reads)\n",
		cfg.memRecords, bytesize.Label(cfg.memSize), cfg.memReaders, cfg.memRecords*cfg.memReaders)
	fmt.Printf("machine: %d CPUs, %s, Linux %s; load average %s\n", m.cpus, m.cpuModel, m.kernel, loadAverage())
	mib := func(kb int64) float64 { return float64(kb) / 1024 }
	control := runs[0]
	for i, r := range runs {
		line := fmt.Sprintf("%s: idle %.1f MiB, peak %.1f MiB (VmHWM), %v", setups[i].label, mib(r.idleKB), mib(r.peakKB), r.took.Round(time.Second))
		if i > 0 {
			extra := r.peakKB - control.peakKB
			verdict := "within"
			if extra*1024 > boundBytes {
				verdict = "NOT within"
			}
			line += fmt.Sprintf("; %.1f MiB over the control: %s the bound of %.1f MiB", mib(extra), verdict, float64(boundBytes)/(1<<20))
		}
		fmt.Println(line)
	}
	return nil
}

// memoryHeadroom is what the soft memory limit allows beyond the read
// tracking bound: the daemon's fixed overhead and the collector's slack.
const memoryHeadroom = 64 << 20

func memoryOnce(ctx context.Context, cfg config, self, backing, mnt, bound string, env []string) (memoryRun, error) {
	r := memoryRun{readMemory: bound}
	argv := []string{cfg.mergefs, "mount", "--state-dir", mnt + "-state", "--log-level", "warn",
		"--read-memory", bound, backing, mnt}
	d, err := startDaemon("mergefs", argv, env, mnt, filepath.Join(cfg.work, "memory-mergefs.log"))
	if err != nil {
		return r, err
	}
	defer d.stop()
	if r.idleKB, err = procStatusKB(d.pid(), "VmRSS"); err != nil {
		return r, err
	}
	if err := resetPeakMemory(d.pid()); err != nil {
		return r, err
	}
	start := time.Now()
	var procs []*workerProc
	defer func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
				p.cmd.Wait()
			}
		}
	}()
	for i := range cfg.memReaders {
		first := i * cfg.memRecords / cfg.memReaders
		p, err := startChild(self, []string{"reader", "-dir", filepath.Join(mnt, "m"),
			"-records", fmt.Sprint(cfg.memRecords), "-first", fmt.Sprint(first)})
		if err != nil {
			return r, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if line, err := scanLine(p.out); err != nil || line != "ready" {
			return r, fmt.Errorf("reader did not start: %q %v", line, err)
		}
	}
	for _, p := range procs {
		p.stdin.Close()
	}
	done := make(chan error, 1)
	go func() {
		var firstErr error
		for _, p := range procs {
			if err := p.cmd.Wait(); err != nil && firstErr == nil {
				firstErr = fmt.Errorf("reader: %w", err)
			}
		}
		done <- firstErr
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(15 * time.Minute):
		return r, fmt.Errorf("readers did not finish within 15 minutes")
	}
	if err != nil {
		return r, err
	}
	r.took = time.Since(start)
	if r.peakKB, err = procStatusKB(d.pid(), "VmHWM"); err != nil {
		return r, err
	}
	return r, d.stop()
}
