package fs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// procKey names a thread or a process across pid reuse: the kernel recycles
// ids, but never two live tasks with one id and one start time.
type procKey struct {
	pid   uint32
	start uint64 // clock ticks since boot, field 22 of /proc/<pid>/stat
}

// caller is the task behind a FUSE request. FUSE gives the thread id; read
// tracking needs the process too, since threads of one process may read and
// write a record on different threads.
type caller struct {
	thread procKey
	proc   procKey
	uid    uint32
	gid    uint32
	comm   string
}

// callerCacheLimit bounds the thread table; a full table is dropped whole,
// which only costs the next requests a re-read of /proc.
const callerCacheLimit = 8192

// callerRecheck is how long a cached identity is used before /proc confirms
// it again. The check guards against a thread id now naming another task:
// that needs the old task to exit and the kernel to hand out every other id
// first, since ids are allocated cyclically up to pid_max, which is at least
// 32768 and at least 1024 per CPU. Wrapping within this window takes a new
// task every 10 µs on every CPU (about the cost of a bare clone and exit),
// for nothing else. Checking on every request instead cost an open, read
// and close of /proc/<tid>/stat on nearly every request to a record, up to
// nine per read-modify-write cycle (BenchmarkCallerResolve).
const callerRecheck = 10 * time.Millisecond

// callerResolver maps thread ids to processes through /proc. A cached entry
// is used as is for callerRecheck, then trusted again only if the thread's
// start time still matches, which guards against a thread id being reused
// by another process.
type callerResolver struct {
	procRoot string
	now      func() time.Time

	mu    sync.Mutex
	cache map[uint32]cachedCaller
}

type cachedCaller struct {
	caller
	checked time.Time // when /proc last confirmed it
}

func newCallerResolver(procRoot string) *callerResolver {
	return &callerResolver{procRoot: procRoot, now: time.Now, cache: make(map[uint32]cachedCaller)}
}

// resolve identifies the task tid. The caller of a FUSE request is blocked in
// its syscall, so its /proc entries exist while the request is served.
func (r *callerResolver) resolve(tid, uid, gid uint32) (caller, error) {
	now := r.now()
	r.mu.Lock()
	cached, ok := r.cache[tid]
	r.mu.Unlock()
	if ok && now.Sub(cached.checked) < callerRecheck {
		c := cached.caller
		c.uid, c.gid = uid, gid
		return c, nil
	}

	threadStart, threadComm, err := r.readStat(tid)
	if err != nil {
		return caller{}, err
	}
	if ok && cached.thread.start == threadStart {
		r.store(tid, cachedCaller{cached.caller, now})
		c := cached.caller
		c.uid, c.gid = uid, gid
		return c, nil
	}

	tgid, err := r.readTgid(tid)
	if err != nil {
		return caller{}, err
	}
	procStart, comm := threadStart, threadComm
	if tgid != tid {
		procStart, comm, err = r.readStat(tgid)
		if err != nil {
			return caller{}, err
		}
	}
	c := caller{
		thread: procKey{pid: tid, start: threadStart},
		proc:   procKey{pid: tgid, start: procStart},
		uid:    uid,
		gid:    gid,
		comm:   comm,
	}
	r.store(tid, cachedCaller{c, now})
	return c, nil
}

func (r *callerResolver) store(tid uint32, c cachedCaller) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[tid]; !ok && len(r.cache) >= callerCacheLimit {
		clear(r.cache)
	}
	r.cache[tid] = c
}

// readStat returns the start time and command name of task pid.
func (r *callerResolver) readStat(pid uint32) (uint64, string, error) {
	st, err := r.readTaskStat(pid)
	return st.start, st.comm, err
}

func (r *callerResolver) readTaskStat(pid uint32) (taskStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", r.procRoot, pid))
	if err != nil {
		return taskStat{}, fmt.Errorf("identify caller %d: %w", pid, err)
	}
	return parseStat(data)
}

// killedWhileExiting reports whether task tid is being torn down by a
// signal (SIGKILL, a crash): the kernel then closes its files and sends
// FLUSH for each, but the process never chose to close them, so its
// half-written records must not be committed. A process that exits
// normally without closing its files still commits.
func (r *callerResolver) killedWhileExiting(tid uint32) bool {
	st, err := r.readTaskStat(tid)
	return err == nil && st.killedWhileExiting()
}

// taskStat is what mergefs needs of /proc/<pid>/stat.
type taskStat struct {
	start    uint64 // field 22, clock ticks after boot
	comm     string // field 2
	flags    uint64 // field 9, PF_* flags
	exitCode uint64 // field 52, as waitpid reports it; set early in do_exit
}

// pfExiting is the kernel's PF_EXITING: the task is in do_exit.
const pfExiting = 0x4

func (s taskStat) killedWhileExiting() bool {
	return s.flags&pfExiting != 0 && s.exitCode&0x7f != 0
}

// parseStat reads "pid (comm) state ppid ..." where comm may itself contain
// spaces and parentheses, so fields are counted from the last ')'.
func parseStat(data []byte) (taskStat, error) {
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return taskStat{}, fmt.Errorf("malformed /proc stat line")
	}
	st := taskStat{comm: string(data[open+1 : end])}
	// fields[0] is field 3 (state).
	fields := bytes.Fields(data[end+1:])
	field := func(n int) (uint64, error) {
		if len(fields) <= n-3 {
			return 0, fmt.Errorf("short /proc stat line")
		}
		v, err := strconv.ParseUint(string(fields[n-3]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad field %d in /proc stat: %w", n, err)
		}
		return v, nil
	}
	var err error
	if st.start, err = field(22); err != nil {
		return taskStat{}, err
	}
	if st.flags, err = field(9); err != nil {
		return taskStat{}, err
	}
	// exit_code is missing before Linux 3.5; zero then reads as "not killed".
	st.exitCode, _ = field(52)
	return st, nil
}

func (r *callerResolver) readTgid(tid uint32) (uint32, error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/status", r.procRoot, tid))
	if err != nil {
		return 0, fmt.Errorf("identify caller %d: %w", tid, err)
	}
	return parseTgid(data)
}

func parseTgid(status []byte) (uint32, error) {
	const key = "\nTgid:"
	i := bytes.Index(status, []byte(key))
	if i < 0 {
		return 0, fmt.Errorf("no Tgid in /proc status")
	}
	rest := status[i+len(key):]
	if nl := bytes.IndexByte(rest, '\n'); nl >= 0 {
		rest = rest[:nl]
	}
	tgid, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad Tgid in /proc status: %w", err)
	}
	return uint32(tgid), nil
}
