package fs

import (
	"bytes"
	"errors"
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
const callerCacheLimit = 1024

// callerRecheck is how long a cached identity is used before /proc confirms
// it again, and refreshes its supplementary groups. Between checks the cache
// is trusted: a thread id naming another task needs the old task to exit and
// the kernel to hand out every other id first, since ids are allocated
// cyclically up to pid_max, which is at least 32768 and at least 1024 per
// CPU. Wrapping within this window takes a new task every 10 µs on every CPU
// (about the cost of a bare clone and exit), for nothing else. Checking on
// every request instead cost a read of /proc on nearly every request to a
// record, up to nine per read-modify-write cycle (BenchmarkCallerResolve).
const callerRecheck = 10 * time.Millisecond

// callerIdle is how long a thread may make no request before its entry, and
// the /proc file it holds open, are dropped.
const callerIdle = 2 * time.Second

// callerResolver maps thread ids to processes through /proc. A cached entry
// is used as is for callerRecheck, then confirmed through the thread's
// /proc/<tid>/status, held open since the thread was first resolved: the
// kernel ties an open /proc file to the task it was opened for, and once that
// task has exited every read fails (ESRCH), even after its id is reused. A
// successful read therefore confirms the very task, with no second file to
// compare start times, and gives its current groups.
type callerResolver struct {
	procRoot string
	now      func() time.Time

	mu    sync.Mutex
	cache map[uint32]cachedCaller
	sweep *time.Timer // drops idle entries; nil while the table is empty
}

type cachedCaller struct {
	caller
	checked time.Time // when /proc last confirmed it
	status  *os.File  // the thread's /proc/<tid>/status, open since it was resolved
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
	if ok {
		status, err := readStatusFile(cached.status)
		if err == nil && status.tgid == cached.proc.pid {
			c := cached.caller
			c.groups = status.groups
			r.store(tid, cachedCaller{caller: c, checked: now, status: cached.status})
			c.uid, c.gid = uid, gid
			return c, nil
		}
		// The task has exited: tid, if it names a task at all, names another one.
		r.forget(tid, cached.status)
	}

	file, err := openProc(fmt.Sprintf("%s/%d/status", r.procRoot, tid))
	if err != nil {
		return caller{}, fmt.Errorf("identify caller %d: %w", tid, err)
	}
	c, err := r.identify(tid, file)
	if err != nil {
		file.Close()
		return caller{}, err
	}
	r.store(tid, cachedCaller{caller: c, checked: now, status: file})
	c.uid, c.gid = uid, gid
	return c, nil
}

// identify reads what names the task tid whose status file is open. The status is read after the
// stat: a task alive when its status was opened and still alive after the stat was read by path is
// the task that stat describes, as no two live tasks share an id.
func (r *callerResolver) identify(tid uint32, status *os.File) (caller, error) {
	threadStart, threadComm, err := r.readStat(tid)
	if err != nil {
		return caller{}, err
	}
	st, err := readStatusFile(status)
	if err != nil {
		return caller{}, fmt.Errorf("identify caller %d: %w", tid, err)
	}
	procStart, comm := threadStart, threadComm
	if st.tgid != tid {
		procStart, comm, err = r.readStat(st.tgid)
		if err != nil {
			return caller{}, err
		}
	}
	return caller{
		thread: procKey{pid: tid, start: threadStart},
		proc:   procKey{pid: st.tgid, start: procStart},
		groups: st.groups,
		comm:   comm,
	}, nil
}

// store caches c for tid, closing the status file of an entry it replaces.
func (r *callerResolver) store(tid uint32, c cachedCaller) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.cache[tid]
	if !ok && len(r.cache) >= callerCacheLimit {
		for _, e := range r.cache {
			e.status.Close()
		}
		clear(r.cache)
	}
	if ok && old.status != c.status {
		old.status.Close()
	}
	r.cache[tid] = c
	if r.sweep == nil {
		r.sweep = time.AfterFunc(callerIdle, r.dropIdle)
	}
}

// forget drops tid's entry if it still holds status, and closes status. A request being resolved
// at the same time may still read it: os.File closes the descriptor only after such a read, which
// then fails as for an exited task.
func (r *callerResolver) forget(tid uint32, status *os.File) {
	r.mu.Lock()
	if e, ok := r.cache[tid]; ok && e.status == status {
		delete(r.cache, tid)
	}
	r.mu.Unlock()
	status.Close()
}

// dropIdle drops the entries of threads that made no request for callerIdle, with their files: a
// task that has exited holds nothing in the daemon for long.
func (r *callerResolver) dropIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for tid, e := range r.cache {
		if now.Sub(e.checked) >= callerIdle {
			e.status.Close()
			delete(r.cache, tid)
		}
	}
	if len(r.cache) == 0 {
		r.sweep = nil
		return
	}
	r.sweep.Reset(callerIdle)
}

// status reads the status of task tid: through the file its entry holds if that task is still
// alive, else by path.
func (r *callerResolver) status(tid uint32) (taskStatus, error) {
	r.mu.Lock()
	cached, ok := r.cache[tid]
	r.mu.Unlock()
	if ok {
		if st, err := readStatusFile(cached.status); err == nil {
			return st, nil
		}
	}
	data, err := readProc(fmt.Sprintf("%s/%d/status", r.procRoot, tid))
	if err != nil {
		return taskStatus{}, fmt.Errorf("identify caller %d: %w", tid, err)
	}
	return parseStatus(data)
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

// openProc opens a /proc file to be read again later (readStatusFile).
func openProc(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return f, err
	}
}

// readStatusFile reads a task's status again through its open file: one pread from the start, which
// /proc answers with the task as it is now (ESRCH once it has exited).
func readStatusFile(f *os.File) (taskStatus, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return taskStatus{}, err
	}
	buf := make([]byte, procFileHint)
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Pread(int(fd), buf, 0)
			switch {
			case rerr == unix.EINTR:
				continue
			case rerr == nil && n == len(buf):
				buf = make([]byte, 2*len(buf)) // possibly cut short: read it whole
				continue
			}
			return true
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return taskStatus{}, &os.PathError{Op: "read", Path: f.Name(), Err: err}
	}
	return parseStatus(buf[:n])
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
