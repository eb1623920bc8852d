package fs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/backing"
	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/merge"
)

// Benchmarks of the record hot paths without a kernel: the handle-level cost
// of what a FUSE request does, beside merge/bench_test.go's merge engine.
// scripts/bench measures the same paths through a mount.

var benchSizes = []int{300, 4 << 10, 256 << 10}

// benchRecord is a record of about size bytes as a Python worker writes it,
// with counters a and b for two writers.
func benchRecord(size int, a, b int) []byte {
	head := fmt.Sprintf(`{"id": 7, "name": "Zo\u00eb", "a": %d, "b": %d, "pad": "`, a, b)
	return []byte(head + strings.Repeat("x", max(size-len(head)-2, 0)) + `"}`)
}

func newBenchFS(b *testing.B) *testFS {
	b.Helper()
	dir := b.TempDir()
	store, err := backing.Open(dir, backing.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	fsys, _, err := New(Config{Store: store, StateDir: b.TempDir(), Merge: merge.Options{Policy: merge.WriterWins}})
	if err != nil {
		b.Fatal(err)
	}
	return &testFS{FS: fsys, dir: dir}
}

// benchSleeper is another process, so that two writers are two processes.
func benchSleeper(b *testing.B) task {
	b.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return task(cmd.Process.Pid)
}

func (f *testFS) write(b *testing.B, name string, data []byte) {
	if err := os.WriteFile(filepath.Join(f.dir, name), data, 0o644); err != nil {
		b.Fatal(err)
	}
}

func (f *testFS) benchOpen(b *testing.B, tk task, name string, flags uint32) *recordHandle {
	return f.open(b, tk, name, flags)
}

// readWhole reads a handle as the kernel does for a direct-I/O read: chunks
// of max_read (1 MiB, MountOptions) until a short one.
func readWhole(b *testing.B, ctx context.Context, h *recordHandle, buf []byte) int {
	total := 0
	for {
		res, errno := h.Read(ctx, buf, int64(total))
		if errno != 0 {
			b.Fatal(errno)
		}
		data, _ := res.Bytes(buf)
		total += len(data)
		if len(data) < len(buf) {
			return total
		}
	}
}

const fuseChunk = 1 << 20

// BenchmarkCallerResolve is the identification of a request's caller that
// every OPEN, GETATTR, first READ and FLUSH of a record does.
func BenchmarkCallerResolve(b *testing.B) {
	r := newCallerResolver("/proc")
	pid := uint32(os.Getpid())
	if _, err := r.resolve(pid, 0, 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.resolve(pid, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallerRecheck is the identification of a caller whose cached identity is older than
// callerRecheck: /proc confirms it (the thread's status is read again, through the file held open
// for it), as for most requests of a worker that makes fewer than a hundred a second.
func BenchmarkCallerRecheck(b *testing.B) {
	r := newCallerResolver("/proc")
	now := time.Now()
	r.now = func() time.Time { return now }
	pid := uint32(os.Getpid())
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(callerRecheck)
		if _, err := r.resolve(pid, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshotOpen is an OPEN of a record: read the current record from
// the backing store, identify the caller, set up the handle (and RELEASE).
func BenchmarkSnapshotOpen(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeLabel(size), func(b *testing.B) {
			f := newBenchFS(b)
			f.write(b, "r.json", benchRecord(size, 0, 0))
			ctx := self().ctx()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				h := f.benchOpen(b, self(), "r.json", syscall.O_RDONLY)
				h.Release(ctx)
			}
		})
	}
}

// benchBatch is how many handles are opened with the timer stopped before
// the measured requests on them: StopTimer reads the memory statistics,
// which would dwarf a single request.
const benchBatch = 256

// BenchmarkSnapshotRead is the READ requests of a whole fresh snapshot,
// including the first read's registration with read tracking.
func BenchmarkSnapshotRead(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeLabel(size), func(b *testing.B) {
			f := newBenchFS(b)
			f.write(b, "r.json", benchRecord(size, 0, 0))
			ctx := self().ctx()
			buf := make([]byte, fuseChunk)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for done := 0; done < b.N; {
				b.StopTimer()
				handles := make([]*recordHandle, min(benchBatch, b.N-done))
				for i := range handles {
					handles[i] = f.benchOpen(b, self(), "r.json", syscall.O_RDONLY)
				}
				b.StartTimer()
				for _, h := range handles {
					if n := readWhole(b, ctx, h, buf); n != size {
						b.Fatalf("read %d bytes of %d", n, size)
					}
				}
				b.StopTimer()
				for _, h := range handles {
					h.Release(ctx)
				}
				b.StartTimer()
				done += len(handles)
			}
		})
	}
}

// BenchmarkBufferWrite is the WRITE requests of a whole-record rewrite into
// a truncating handle's buffer.
func BenchmarkBufferWrite(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeLabel(size), func(b *testing.B) {
			f := newBenchFS(b)
			content := benchRecord(size, 1, 0)
			f.write(b, "r.json", benchRecord(size, 0, 0))
			ctx := self().ctx()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for done := 0; done < b.N; {
				b.StopTimer()
				handles := make([]*recordHandle, min(benchBatch, b.N-done))
				for i := range handles {
					handles[i] = f.benchOpen(b, self(), "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
				}
				b.StartTimer()
				for _, h := range handles {
					for off := 0; off < len(content); off += fuseChunk {
						chunk := content[off:min(off+fuseChunk, len(content))]
						if _, errno := h.Write(ctx, chunk, int64(off)); errno != 0 {
							b.Fatal(errno)
						}
					}
				}
				b.StopTimer()
				for _, h := range handles {
					h.Release(ctx) // dirty: dropped, never committed
				}
				b.StartTimer()
				done += len(handles)
			}
		})
	}
}

// BenchmarkCommit is a whole rewrite of a record: OPEN with O_TRUNC, the
// WRITEs, and the FLUSH that commits (which dominates: see BenchmarkSnapshotOpen
// and BenchmarkBufferWrite for the rest). Two processes take turns, each
// changing its own counter from a base the other has since changed, so every
// commit is a real 3-way merge and an atomic replacement in the backing
// store (temporary file, rename; no fsync).
func BenchmarkCommit(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeLabel(size), func(b *testing.B) {
			f := newBenchFS(b)
			f.write(b, "r.json", benchRecord(size, 0, 0))
			writers := []task{self(), benchSleeper(b)}
			buf := make([]byte, fuseChunk)
			for _, tk := range writers { // each writer has read the record
				h := f.benchOpen(b, tk, "r.json", syscall.O_RDONLY)
				readWhole(b, tk.ctx(), h, buf)
				h.Release(tk.ctx())
			}
			// What each writer believes plus its own change: writer w
			// sets its own counter to 1 and 0 by turns; the other counter
			// is stale, which the merge must keep.
			var contents [2][2][]byte
			for own := range 2 {
				contents[0][own] = benchRecord(size, own, 0)
				contents[1][own] = benchRecord(size, 0, own)
			}
			var turns [2]int
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				w := i % 2
				turns[w]++
				tk := writers[w]
				ctx := tk.ctx()
				h := f.benchOpen(b, tk, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
				content := contents[w][turns[w]%2]
				for off := 0; off < len(content); off += fuseChunk {
					if _, errno := h.Write(ctx, content[off:min(off+fuseChunk, len(content))], int64(off)); errno != 0 {
						b.Fatal(errno)
					}
				}
				if errno := h.Flush(ctx); errno != 0 {
					b.Fatal(errno)
				}
				h.Release(ctx)
			}
			if st := f.Stats(); st.Merges == 0 || st.Commits == 0 {
				b.Fatalf("no merging commits measured: %+v", st)
			}
		})
	}
}

// BenchmarkReadTracking is what remembering a read and looking up a base
// cost with many readers and records tracked, and at the memory bound where
// every remember evicts.
func BenchmarkReadTracking(b *testing.B) {
	const records, readers = 10000, 100
	v := &version{data: make([]byte, 1024)}
	for _, bound := range []int64{DefaultReadMemory, 1 << 20} {
		b.Run(fmt.Sprintf("bound=%dMiB", bound>>20), func(b *testing.B) {
			h := newHistory(bound, time.Hour, time.Now)
			for i := range records {
				p := procKey{pid: uint32(i % readers), start: 1}
				h.read(uint64(i+1), p, p, &version{data: v.data})
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				p := procKey{pid: uint32(i % readers), start: 1}
				h.read(uint64(i%records+1), p, p, &version{data: v.data})
				h.candidates(uint64((i*7)%records+1), p, p, nil, event.NoBase)
			}
		})
	}
}

func sizeLabel(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMB", n>>20)
	}
	if n >= 1<<10 {
		return fmt.Sprintf("%dKB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// profileRecord is a record laid out as bench/rmw's (a few counters, escaped non-ASCII text, and a
// "profile" object of 48-byte fields up to about size bytes: 256 KB has about 5,400 keys), with
// counter a.
func profileRecord(size, a int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"id": 7, "name": "Zo\u00eb \u00dcnal", "score": 1.5, "tags": ["a", "b"], "w0": "%010d", "w1": "%010d", "profile": {`, a, 0)
	for i := 0; size-b.Len() > 96; i++ {
		key := fmt.Sprintf(`"f%d": "`, i)
		b.WriteString(key)
		b.WriteString(strings.Repeat("x", 48-len(key)-3))
		b.WriteString(`", `)
	}
	b.WriteString(`"pad": ""}}`)
	return []byte(b.String())
}

// BenchmarkCommitCPU is the CPU a commit of a record of many fields spends in choosing its base
// and merging, when theirs is the writer's base (nobody committed since the writer read: the usual
// case), beside one validating parse of mine (merge.ParseDocument), in the same loop (the machine
// is shared: a ratio measured in one loop is what contention affects alike). The store's I/O is
// left out: the merge gets theirs directly. Issue 15's target for 256KB: "%cpu" at most 120.
func BenchmarkCommitCPU(b *testing.B) {
	for _, size := range []int{4 << 10, 256 << 10, 1 << 20} {
		f := newBenchFS(b)
		f.write(b, "r.json", profileRecord(size, 0))
		w := self()
		h := f.benchOpen(b, w, "r.json", syscall.O_RDONLY)
		readWhole(b, w.ctx(), h, make([]byte, fuseChunk))
		h.Release(w.ctx())
		c := f.callerOf(w.ctx())
		read := h.view
		mine := profileRecord(size, 1)
		req := commitRequest{record: "r.json", expect: h.expect, writer: c, mine: mine,
			bases: f.history.candidates(h.expect, c.thread, c.proc, nil, event.NoBase)}
		commit := func() {
			m := commitMerge{fsys: f.FS, req: req, opts: f.mergeOpts}
			var err error
			if m.choice, err = f.chooseBase(req); err != nil {
				b.Fatal(err)
			}
			if out, err := m.merge(read.data, true); err != nil || len(out) != len(mine) || m.choice.base != read {
				b.Fatal("not the commit of mine onto its base", err)
			}
		}
		parse := func() {
			if _, err := merge.ParseDocument(mine, f.mergeOpts); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(sizeLabel(size)+"/commit", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				commit()
			}
		})
		b.Run(sizeLabel(size)+"/parse", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				parse()
			}
		})
		b.Run(sizeLabel(size)+"/ratio", func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var commitCPU, parseCPU time.Duration
			for b.Loop() {
				c0 := threadCPU()
				commit()
				c1 := threadCPU()
				parse()
				c2 := threadCPU()
				commitCPU += c1 - c0
				parseCPU += c2 - c1
			}
			b.ReportMetric(100*float64(commitCPU)/float64(parseCPU), "%cpu")
		})
	}
}

// threadCPU is the CPU time of the calling thread: unlike the wall clock, it does not count the
// time other processes of this shared machine hold the CPU.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}

// BenchmarkBaseChoice measures what choosing a commit's base costs beside the commit itself
// (docs/design.md, "The base of a commit"): "commit" is a whole rewrite of the record (open O_TRUNC,
// writes, the flush that commits) whose writer's read is the only candidate; "choose-N" is the base
// choice alone among N candidates: the writer's read and N-1 versions other processes read, each one
// change from the next. Choosing among one candidate still validates and summarizes mine, which a
// commit needs anyway; the choice's own cost is choose-32 less choose-1. scripts/bench --base-choice
// prints it as a share of the commit. "own-reads" (4 KB) is a worker that keeps updating its record: the
// candidates of its commit are its own last reads (as many as the history keeps), each one change
// from the next, gathered and chosen from.
func BenchmarkBaseChoice(b *testing.B) {
	for _, size := range []int{4 << 10, 256 << 10} {
		b.Run(sizeLabel(size)+"/commit", func(b *testing.B) {
			f, writer, _ := baseChoiceFixture(b, size, 1)
			contents := [2][]byte{benchRecord(size, 1, 0), benchRecord(size, 2, 0)}
			ctx := writer.ctx()
			b.SetBytes(int64(size))
			i := 0
			for b.Loop() {
				i++
				h := f.benchOpen(b, writer, "r.json", syscall.O_WRONLY|syscall.O_TRUNC)
				content := contents[i%2]
				for off := 0; off < len(content); off += fuseChunk {
					if _, errno := h.Write(ctx, content[off:min(off+fuseChunk, len(content))], int64(off)); errno != 0 {
						b.Fatal(errno)
					}
				}
				if errno := h.Flush(ctx); errno != 0 {
					b.Fatal(errno)
				}
				h.Release(ctx)
			}
		})
		// 512 versions of 256 KB are more than the default read memory keeps.
		if size == 4<<10 {
			b.Run(sizeLabel(size)+"/own-reads", func(b *testing.B) {
				f, writer, id := baseChoiceFixture(b, size, 1)
				c := f.callerOf(writer.ctx())
				for i := 1; i < maxProcReads; i++ {
					f.history.read(id, c.thread, c.proc, &version{data: benchRecord(size, i, 0)})
				}
				mine := benchRecord(size, maxProcReads, 0)
				b.SetBytes(int64(size))
				for b.Loop() {
					req := commitRequest{mine: mine, bases: f.history.candidates(id, c.thread, c.proc, nil, event.NoBase)}
					if len(req.bases) != maxProcReads {
						b.Fatalf("%d candidates, want %d", len(req.bases), maxProcReads)
					}
					if ch, err := f.chooseBase(req); err != nil || ch.from != event.Thread || ch.distance != 1 {
						b.Fatalf("choice %+v, %v: want the writer's last read, one change away", ch, err)
					}
				}
			})
			// A record three other writers share: between two of this writer's reads they changed
			// "b" (so no older read is a step from mine), and read versions of their own.
			b.Run(sizeLabel(size)+"/shared-reads", func(b *testing.B) {
				f, writer, id := baseChoiceFixture(b, size, 1)
				c := f.callerOf(writer.ctx())
				for i := 1; i < maxProcReads; i++ {
					f.history.read(id, c.thread, c.proc, &version{data: benchRecord(size, i, 3*i)})
					other := procKey{pid: uint32(1000000 + i%3), start: 1}
					f.history.read(id, other, other, &version{data: benchRecord(size, i, 3*i+1+i%2)})
				}
				mine := benchRecord(size, maxProcReads, 3*(maxProcReads-1))
				b.SetBytes(int64(size))
				for b.Loop() {
					req := commitRequest{mine: mine, bases: f.history.candidates(id, c.thread, c.proc, nil, event.NoBase)}
					ch, err := f.chooseBase(req)
					if err != nil || ch.from != event.Thread || ch.distance != 1 {
						b.Fatalf("choice %+v, %v: want the writer's last read, one change away", ch, err)
					}
				}
			})
		}
		for _, candidates := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/choose-%d", sizeLabel(size), candidates), func(b *testing.B) {
				f, writer, id := baseChoiceFixture(b, size, candidates)
				c := f.callerOf(writer.ctx())
				req := commitRequest{mine: benchRecord(size, 1, 0),
					bases: f.history.candidates(id, c.thread, c.proc, nil, event.NoBase)}
				if len(req.bases) != candidates {
					b.Fatalf("%d candidates, want %d", len(req.bases), candidates)
				}
				b.SetBytes(int64(size))
				for b.Loop() {
					if ch, err := f.chooseBase(req); err != nil || ch.from != event.Thread {
						b.Fatalf("choice %+v, %v: want the writer's read", ch, err)
					}
				}
			})
		}
	}
}

// baseChoiceFixture makes a record of size bytes that the writer (this process) has read, with
// candidates-1 versions of it that other processes read, and returns its identity.
func baseChoiceFixture(b *testing.B, size, candidates int) (*testFS, task, uint64) {
	f := newBenchFS(b)
	f.write(b, "r.json", benchRecord(size, 0, 0))
	writer := self()
	h := f.benchOpen(b, writer, "r.json", syscall.O_RDONLY)
	readWhole(b, writer.ctx(), h, make([]byte, fuseChunk))
	id := h.expect
	h.Release(writer.ctx())
	for i := 1; i < candidates; i++ {
		other := procKey{pid: uint32(1000000 + i), start: 1}
		f.history.read(id, other, other, &version{data: benchRecord(size, 0, i)})
	}
	return f, writer, id
}
