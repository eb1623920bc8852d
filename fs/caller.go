package fs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/sysx"
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
	// groups are the task's supplementary groups (from /proc, as of the last check): with uid and
	// gid (from the request) the identity the daemon acts as for the caller.
	groups []uint32
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
	status, err := r.readStatus(tid)
	if err != nil {
		return caller{}, err
	}
	if ok && cached.thread.start == threadStart {
		c := cached.caller
		c.groups = status.groups
		r.store(tid, cachedCaller{c, now})
		c.uid, c.gid = uid, gid
		return c, nil
	}

	tgid := status.tgid
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
		groups: status.groups,
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

// readStat returns the start time and command name of task pid. It can
// block while pid is in the middle of execve: never call it for a FLUSH,
// which an execve sends when it closes close-on-exec descriptors.
func (r *callerResolver) readStat(pid uint32) (uint64, string, error) {
	data, err := readProc(fmt.Sprintf("%s/%d/stat", r.procRoot, pid))
	if err != nil {
		return 0, "", fmt.Errorf("identify caller %d: %w", pid, err)
	}
	return parseStat(data)
}

// readProc reads a /proc file whole with plain system calls (open, read until the end, close): not
// through os.File, whose registration with the runtime's poller costs as many system calls again,
// on paths that most requests to records take (BenchmarkCallerResolve).
func readProc(path string) ([]byte, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		data, err := sysx.ReadAll(fd, procFileHint, -1)
		sysx.Close(fd)
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		return data, nil
	}
}

// procFileHint sizes the buffer /proc files are read into: a task's status is about 1.5 KB.
const procFileHint = 4095

// parseStat reads "pid (comm) state ppid ..." where comm may itself contain
// spaces and parentheses, so fields are counted from the last ')'.
func parseStat(data []byte) (uint64, string, error) {
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return 0, "", fmt.Errorf("malformed /proc stat line")
	}
	comm := string(data[open+1 : end])
	fields := bytes.Fields(data[end+1:])
	// fields[0] is field 3 (state); starttime is field 22.
	const startField = 22 - 3
	if len(fields) <= startField {
		return 0, "", fmt.Errorf("short /proc stat line")
	}
	start, err := strconv.ParseUint(string(fields[startField]), 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("bad start time in /proc stat: %w", err)
	}
	return start, comm, nil
}

// peek returns what is cached for tid, without reading /proc.
func (r *callerResolver) peek(tid uint32) (caller, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cache[tid]
	return c.caller, ok
}

// taskStatus is what mergefs needs of /proc/<tid>/status, which, unlike
// stat, answers at once even for a task in the middle of execve.
type taskStatus struct {
	tgid    uint32
	name    string
	groups  []uint32 // supplementary groups
	pending uint64   // SigPnd | ShdPnd: signals pending, as a mask of bit sig-1
	blocked uint64   // SigBlk
	ignored uint64   // SigIgn
	caught  uint64   // SigCgt
}

func (r *callerResolver) readStatus(tid uint32) (taskStatus, error) {
	data, err := readProc(fmt.Sprintf("%s/%d/status", r.procRoot, tid))
	if err != nil {
		return taskStatus{}, fmt.Errorf("identify caller %d: %w", tid, err)
	}
	return parseStatus(data)
}

func parseStatus(data []byte) (taskStatus, error) {
	var st taskStatus
	haveTgid := false
	for line := range bytes.Lines(data) {
		key, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		var err error
		switch string(key) {
		case "Name":
			st.name = string(value)
		case "Tgid":
			var v uint64
			v, err = strconv.ParseUint(string(value), 10, 32)
			st.tgid, haveTgid = uint32(v), err == nil
		case "SigPnd", "ShdPnd":
			var v uint64
			v, err = strconv.ParseUint(string(value), 16, 64)
			st.pending |= v
		case "SigBlk":
			st.blocked, err = strconv.ParseUint(string(value), 16, 64)
		case "SigIgn":
			st.ignored, err = strconv.ParseUint(string(value), 16, 64)
		case "SigCgt":
			st.caught, err = strconv.ParseUint(string(value), 16, 64)
		case "Groups":
			st.groups, err = parseGroups(value)
		}
		if err != nil {
			return taskStatus{}, fmt.Errorf("bad %s in /proc status: %w", key, err)
		}
	}
	if !haveTgid {
		return taskStatus{}, fmt.Errorf("no Tgid in /proc status")
	}
	return st, nil
}

func parseGroups(value []byte) ([]uint32, error) {
	fields := bytes.Fields(value)
	groups := make([]uint32, 0, len(fields))
	for _, f := range fields {
		g, err := strconv.ParseUint(string(f), 10, 32)
		if err != nil {
			return nil, err
		}
		groups = append(groups, uint32(g))
	}
	return groups, nil
}

func sigBit(sig syscall.Signal) uint64 { return 1 << (uint(sig) - 1) }

// harmlessByDefault are the signals whose default action does not end a
// process.
var harmlessByDefault = sigBit(syscall.SIGCHLD) | sigBit(syscall.SIGCONT) | sigBit(syscall.SIGURG) |
	sigBit(syscall.SIGWINCH) | sigBit(syscall.SIGSTOP) | sigBit(syscall.SIGTSTP) |
	sigBit(syscall.SIGTTIN) | sigBit(syscall.SIGTTOU)

// dying reports whether the task is being killed by a signal: SIGKILL, or
// a pending signal that it neither blocks, ignores nor handles and whose
// default action ends it. The kernel closes such a task's files, sending
// FLUSH, but the process never chose to close them.
func (s taskStatus) dying() bool {
	if s.pending&sigBit(syscall.SIGKILL) != 0 {
		return true
	}
	fatal := s.pending &^ (s.blocked | s.ignored | s.caught | harmlessByDefault)
	return fatal != 0
}
