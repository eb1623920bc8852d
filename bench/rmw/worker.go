package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// workerResult is what one worker process prints when its time is up.
type workerResult struct {
	Cycles     int64  `json:"cycles"` // read-modify-write cycles whose final close returned 0
	Torn       int64  `json:"torn"`   // reads that were empty, short, or lacked the worker's field
	Errors     int64  `json:"errors"` // cycles that failed with an error (EIO from close, ...)
	FirstError string `json:"first_error,omitempty"`
	ElapsedNS  int64  `json:"elapsed_ns"`
}

// runWorker is one legacy worker process: it waits until stdin is closed (the
// start signal), then repeats the read-modify-write cycle on one record for
// the given time and prints a workerResult on stdout. With -reads N, each
// cycle first reads the record N times as a request that only reads it
// does (the read-heavy rows: most API traffic is reads).
//
// Each cycle makes the system calls Python 3.11 makes for
//
//	with open(p) as f: d = json.load(f)
//	d[key] = ...
//	with open(p, "w") as f: json.dump(d, f)
//
// (strace: openat, fstat, ioctl TCGETS, lseek x2, fstat, read(size+1),
// read(1), close; openat O_WRONLY|O_CREAT|O_TRUNC, fstat, ioctl, lseek x2,
// write, close) without the interpreter, so that the filesystem's cost is
// what is measured. The change is one fixed-width counter, edited in place:
// "wN": "0000000042".
func runWorker(args []string) error {
	fl := flag.NewFlagSet("worker", flag.ContinueOnError)
	record := fl.String("record", "", "record `path`")
	key := fl.String("key", "", "counter field this worker increments")
	duration := fl.Duration("duration", time.Second, "how long to run")
	lockPath := fl.String("flock", "", "take flock(LOCK_EX) on this `file` around each cycle")
	unpinned := fl.Bool("unpinned", false, "let the Go runtime move the cycle between OS threads")
	reads := fl.Int("reads", 0, "plain reads (open, read, close, as json.load(open(p))) before each read-modify-write")
	size := fl.Int("size", 0, "the record's size in `bytes` (it never changes): a read of any other length is torn")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *record == "" || *key == "" || *size <= 0 {
		return errors.New("worker: -record, -key and -size are required")
	}
	lockFD := -1
	if *lockPath != "" {
		fd, err := unix.Open(*lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("worker: lock file: %w", err)
		}
		lockFD = fd
	}
	// A Python worker does all its file I/O on one thread; without this the
	// Go runtime would spread the cycle's system calls over threads, and
	// mergefs chooses a merge base per thread first (DESIGN.md §2).
	if !*unpinned {
		runtime.LockOSThread()
	}
	w := &cycler{path: *record, field: counterField(*key), size: *size, buf: make([]byte, 64<<10)}

	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // start signal: the driver closes stdin

	var res workerResult
	start := time.Now()
	deadline := start.Add(*duration)
	for time.Now().Before(deadline) {
		if lockFD >= 0 {
			if err := flockRetry(lockFD, unix.LOCK_EX); err != nil {
				return fmt.Errorf("worker: flock: %w", err)
			}
		}
		torn, err := w.plainReads(*reads)
		if err == nil && !torn {
			torn, err = w.cycle()
		}
		if lockFD >= 0 {
			if err := flockRetry(lockFD, unix.LOCK_UN); err != nil {
				return fmt.Errorf("worker: unlock: %w", err)
			}
		}
		switch {
		case err != nil:
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
		case torn:
			res.Torn++
		default:
			res.Cycles++
		}
	}
	res.ElapsedNS = int64(time.Since(start))
	return json.NewEncoder(os.Stdout).Encode(res)
}

func flockRetry(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); err != unix.EINTR {
			return err
		}
	}
}

// counterWidth is the number of digits of a counter; counters are JSON
// strings so that a record's size never changes.
const counterWidth = 10

// counterField is how a counter's key and the opening quote of its value
// appear in a record, as Python's json.dump writes them.
func counterField(key string) []byte {
	return []byte(fmt.Sprintf("%q: \"", key))
}

type cycler struct {
	path  string
	field []byte
	size  int
	buf   []byte
}

// cycle runs one read-modify-write. torn reports a read that gave no usable
// record (an empty or partly written file): nothing is written then.
func (c *cycler) cycle() (torn bool, err error) {
	data, err := c.read()
	if err != nil {
		return false, err
	}
	digits, ok := findCounter(data, c.field, c.size)
	if !ok {
		return true, nil
	}
	if !increment(digits) {
		return true, nil
	}
	return false, c.write(data)
}

// plainReads reads the record n times as a request that only reads it
// does; torn reports a read that gave no usable record.
func (c *cycler) plainReads(n int) (torn bool, err error) {
	for range n {
		data, err := c.read()
		if err != nil {
			return false, err
		}
		if _, ok := findCounter(data, c.field, c.size); !ok {
			return true, nil
		}
	}
	return false, nil
}

func (c *cycler) read() ([]byte, error) {
	fd, err := openRetry(c.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open for reading: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	pythonFileChecks(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	want := int(st.Size) + 1
	if len(c.buf) < want {
		c.buf = make([]byte, want)
	}
	n := 0
	for {
		if n == len(c.buf) {
			c.buf = append(c.buf, make([]byte, len(c.buf))...)
		}
		chunk := c.buf[n:]
		if n > 0 {
			chunk = chunk[:1] // Python's second read asks for one byte
		} else {
			chunk = chunk[:want]
		}
		m, err := unix.Read(fd, chunk)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if m == 0 {
			return c.buf[:n], nil
		}
		n += m
	}
}

func (c *cycler) write(data []byte) error {
	fd, err := openRetry(c.path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o666)
	if err != nil {
		return fmt.Errorf("open for writing: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("fstat: %w", err)
	}
	pythonFileChecks(fd)
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("write: %w", err)
		}
		data = data[n:]
	}
	// The commit point on mergefs: an error here is the worker's error.
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// pythonFileChecks makes the calls io.open makes on a new file object: an
// isatty probe and two position queries.
func pythonFileChecks(fd int) {
	unix.IoctlGetTermios(fd, unix.TCGETS)
	unix.Seek(fd, 0, io.SeekCurrent)
	unix.Seek(fd, 0, io.SeekCurrent)
}

func openRetry(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// findCounter returns the digits of the counter introduced by field, if data
// is a whole record of size bytes (records never change size) and holds a
// complete one. A read of another length is a record caught while it was
// being written: Python's json.load raises on it, so its worker writes
// nothing (a cut record that still holds the counter must not count as a
// cycle: writing it back would move a fraction of the record).
func findCounter(data, field []byte, size int) ([]byte, bool) {
	if len(data) != size {
		return nil, false
	}
	i := bytes.Index(data, field)
	if i < 0 {
		return nil, false
	}
	start := i + len(field)
	end := start + counterWidth
	if end >= len(data) || data[end] != '"' {
		return nil, false
	}
	return data[start:end], true
}

// increment adds one to a fixed-width decimal counter in place.
func increment(digits []byte) bool {
	for _, d := range digits {
		if d < '0' || d > '9' {
			return false
		}
	}
	for i := len(digits) - 1; i >= 0; i-- {
		if digits[i] < '9' {
			digits[i]++
			return true
		}
		digits[i] = '0'
	}
	return false // overflow: cannot happen in a benchmark's lifetime
}

// runReader is one process of the memory test: it reads every record once
// (open, read to the end, close: what read tracking sees of a worker) and
// exits.
func runReader(args []string) error {
	fl := flag.NewFlagSet("reader", flag.ContinueOnError)
	dir := fl.String("dir", "", "directory of records")
	count := fl.Int("records", 0, "records r0.json ... r<N-1>.json to read")
	first := fl.Int("first", 0, "start at this record (readers start at different places)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	runtime.LockOSThread()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	buf := make([]byte, 64<<10)
	for i := range *count {
		path := fmt.Sprintf("%s/%s", *dir, recordName((*first+i)%*count))
		if err := readOnce(path, buf); err != nil {
			return fmt.Errorf("reader: %s: %w", path, err)
		}
	}
	return nil
}

func readOnce(path string, buf []byte) error {
	fd, err := openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return err
		case n == 0:
			return nil
		}
	}
}
