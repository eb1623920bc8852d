package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/bytesize"
)

// Buffer budget part of the memory test: hog processes, each acting as a user of its own, open many
// new records and write into them without closing, the way a user trying to exhaust the daemon would
// (issue 13). The daemon's peak memory is reported against --max-buffered.
const (
	budgetHogs    = 8
	budgetHandles = 32
	budgetPerFile = 16 << 20 // --max-record-size
	budgetLimit   = "256MiB"
	budgetUIDBase = 61000
)

func runBudget(ctx context.Context, cfg config, self string) error {
	backing := filepath.Join(cfg.work, "budget-backing")
	mnt := filepath.Join(cfg.work, "budget-mnt")
	for _, dir := range []string{backing, mnt} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(backing, 0o1777); err != nil {
		return err
	}
	limit, err := bytesize.Parse(budgetLimit)
	if err != nil {
		return err
	}
	argv := []string{cfg.mergefs, "mount", "--state-dir", mnt + "-state", "--log-level", "error", "--allow-other",
		"--max-buffered", budgetLimit, "--max-record-size", "16MiB", "--rejected-max", "16MiB",
		backing, mnt}
	d, err := startDaemon("mergefs", argv, nil, mnt, filepath.Join(cfg.work, "budget-mergefs.log"))
	if err != nil {
		return err
	}
	defer d.stop()
	idleKB, err := procStatusKB(d.pid(), "VmRSS")
	if err != nil {
		return err
	}
	if err := resetPeakMemory(d.pid()); err != nil {
		return err
	}
	var procs []*workerProc
	defer func() {
		for _, p := range procs {
			p.cmd.Process.Kill() // killed: their buffers are never committed
			p.cmd.Wait()
		}
	}()
	start := time.Now()
	for i := range budgetHogs {
		p, err := startChild(self, []string{"hog", "-dir", mnt, "-uid", fmt.Sprint(budgetUIDBase + i),
			"-handles", fmt.Sprint(budgetHandles), "-size", fmt.Sprint(budgetPerFile)})
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	var buffered int64
	refusals := map[string]int{}
	for _, p := range procs {
		line, err := scanLineUntil(ctx, p, time.Now().Add(10*time.Minute))
		if err != nil {
			return fmt.Errorf("hog: %w", err)
		}
		var n int64
		var stop string
		if _, err := fmt.Sscanf(line, "buffered %d stopped %s", &n, &stop); err != nil {
			return fmt.Errorf("hog said %q", line)
		}
		buffered += n
		refusals[stop]++
	}
	peakKB, err := procStatusKB(d.pid(), "VmHWM")
	if err != nil {
		return err
	}
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	attempted := int64(budgetHogs * budgetHandles * budgetPerFile)
	fmt.Printf("mergefs buffer budget: %d users each opening %d new records and writing %d MiB into each without closing (%.0f MiB attempted), --max-buffered %s (each user's share a quarter), %v\n",
		budgetHogs, budgetHandles, budgetPerFile>>20, mib(attempted), budgetLimit, time.Since(start).Round(time.Second))
	var stops []string
	for k, v := range refusals {
		stops = append(stops, fmt.Sprintf("%d by %s", v, k))
	}
	extra := peakKB*1024 - idleKB*1024
	fmt.Printf("accepted %.1f MiB (%.2f of the budget); users stopped: %s; daemon idle %.1f MiB, peak %.1f MiB (VmHWM): %.1f MiB over idle, %.2f times the budget\n",
		mib(buffered), float64(buffered)/float64(limit), strings.Join(stops, ", "), mib(idleKB*1024), mib(peakKB*1024), mib(extra), float64(extra)/float64(limit))
	return nil
}

// runHog is a hog child: as user -uid (its filesystem ids, on one locked thread), it opens -handles
// new records under -dir and writes -size bytes into each, 1 MiB at a time, until a write fails; it
// prints "buffered N stopped ERRNO" and then waits to be killed, holding everything open.
func runHog(args []string) error {
	fl := flag.NewFlagSet("hog", flag.ContinueOnError)
	dir := fl.String("dir", "", "directory")
	uid := fl.Int("uid", 0, "filesystem uid and gid")
	handles := fl.Int("handles", 0, "records to open")
	size := fl.Int("size", 0, "bytes to write into each")
	if err := fl.Parse(args); err != nil {
		return err
	}
	// The directory is opened as root: the scratch directory above it is root's alone.
	dirfd, err := unix.Open(*dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	// setfsuid/setfsgid return the previous id, not an error.
	unix.Setfsgid(*uid)
	unix.Setfsuid(*uid)
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = 'x'
	}
	var buffered int64
	stopped := "none"
	var fds []int
hogging:
	for h := range *handles {
		fd, err := unix.Openat(dirfd, "hog-"+strconv.Itoa(*uid)+"-"+strconv.Itoa(h)+".json", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			stopped = unix.ErrnoName(err.(unix.Errno))
			break
		}
		fds = append(fds, fd)
		for off := 0; off < *size; off += len(chunk) {
			n, err := unix.Pwrite(fd, chunk, int64(off))
			buffered += int64(max(n, 0))
			if err != nil {
				stopped = unix.ErrnoName(err.(unix.Errno))
				break hogging
			}
		}
	}
	fmt.Printf("buffered %d stopped %s\n", buffered, stopped)
	_, err = io.Copy(io.Discard, os.Stdin) // held open until killed
	return err
}
