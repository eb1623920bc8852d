package fs

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/merge"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// kinds returns the candidates' versions' contents with their kinds and flags, for comparisons.
func kinds(cs []candidate) []string {
	var out []string
	for _, c := range cs {
		s := fmt.Sprintf("%s:%v", c.v.data, c.from)
		if c.threadLast {
			s += "+thread"
		}
		if c.procLast {
			s += "+proc"
		}
		out = append(out, s)
	}
	return out
}

func TestHistoryCandidates(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	h := newHistory(1<<20, time.Minute, clock.now)
	proc, other := procKey{pid: 10, start: 1}, procKey{pid: 20, start: 1}
	t1, t2 := procKey{pid: 11, start: 2}, procKey{pid: 12, start: 3}
	v := func(s string) *version { return h.share(7, []byte(s)) }
	v1, v2, v3 := v(`{"v":1}`), v(`{"v":2}`), v(`{"v":3}`)
	h.read(7, t1, proc, v1)
	h.read(7, t2, proc, v2)
	h.read(7, other, other, v3)
	atOpen := v(`{"v":4}`)

	got := kinds(h.candidates(7, t1, proc, atOpen, event.Handle))
	want := []string{`{"v":1}:thread+thread`, `{"v":2}:process+proc`, `{"v":3}:other-process`, `{"v":4}:handle`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("thread 1's candidates:\n got %v\nwant %v", got, want)
	}
	// A truncating handle's record at open is the fallback: no candidate beside reads, the only
	// one without.
	got = kinds(h.candidates(7, t1, proc, atOpen, event.Fallback))
	want = want[:3]
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("thread 1's candidates with a truncating handle:\n got %v\nwant %v", got, want)
	}
	if got := kinds(h.candidates(9, t1, proc, atOpen, event.Fallback)); fmt.Sprint(got) != fmt.Sprint([]string{`{"v":4}:fallback`}) {
		t.Errorf("a record nothing was read of: %v, want only the fallback", got)
	}
	// A thread that read nothing: the process's reads, no thread flag.
	got = kinds(h.candidates(7, procKey{pid: 13, start: 4}, proc, nil, event.NoBase))
	want = []string{`{"v":2}:process+proc`, `{"v":1}:process`, `{"v":3}:other-process`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("another thread's candidates:\n got %v\nwant %v", got, want)
	}
	// What the process committed is a candidate, and the newest thing it knows.
	mine := &version{data: []byte(`{"v":5}`)}
	h.committed(7, t1, proc, mine)
	got = kinds(h.candidates(7, t2, proc, nil, event.NoBase))
	want = []string{`{"v":2}:thread+thread`, `{"v":5}:own-commit+proc`, `{"v":1}:process`, `{"v":3}:other-process`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after a commit:\n got %v\nwant %v", got, want)
	}
	// A new process with a reused pid inherits nothing of the old one, and another process's commit
	// that nobody read is no candidate: two writers that made one change alike would each look
	// derived from the other's commit.
	reused := procKey{pid: 10, start: 99}
	got = kinds(h.candidates(7, reused, reused, nil, event.NoBase))
	want = []string{`{"v":3}:other-process`, `{"v":2}:other-process`, `{"v":1}:other-process`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("a reused pid:\n got %v\nwant %v", got, want)
	}
	// Once read, it is.
	h.read(7, other, other, mine)
	got = kinds(h.candidates(7, reused, reused, nil, event.NoBase))
	want = []string{`{"v":5}:other-process`, `{"v":3}:other-process`, `{"v":2}:other-process`, `{"v":1}:other-process`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after another process read the commit:\n got %v\nwant %v", got, want)
	}
	if got := h.candidates(8, t1, proc, nil, event.NoBase); len(got) != 0 {
		t.Errorf("another record: %v", kinds(got))
	}
}

// A commit is noted once its FLUSH is answered, which may be after another process already read
// what it committed (the reader's open does not wait for that reply). That version was read all
// the same: it stays a base candidate for other processes, whatever order the notes came in.
func TestHistoryAVersionReadBeforeItsCommitIsNotedStaysACandidate(t *testing.T) {
	h := newHistory(1<<20, time.Minute, time.Now)
	committer, reader, writer := procKey{pid: 1, start: 1}, procKey{pid: 2, start: 1}, procKey{pid: 3, start: 1}
	v := h.share(7, []byte(`{"a":1}`))
	h.read(7, reader, reader, v)
	h.committed(7, committer, committer, v)
	want := []string{`{"a":1}:other-process`}
	if got := kinds(h.candidates(7, writer, writer, nil, event.NoBase)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("read, then noted as committed: candidates %v, want %v", got, want)
	}
}

// A slow request (an await on a slow upstream) still finds its own read however many versions other
// processes read since.
func TestHistoryKeepsAProcessesOwnReads(t *testing.T) {
	h := newHistory(1<<30, time.Hour, time.Now)
	slow, busy := procKey{pid: 1, start: 1}, procKey{pid: 2, start: 1}
	first := h.share(1, []byte(`{"n":0}`))
	h.read(1, slow, slow, first)
	for i := 1; i <= 500; i++ {
		h.read(1, busy, busy, h.share(1, []byte(fmt.Sprintf(`{"n":%d}`, i))))
	}
	cs := h.candidates(1, slow, slow, nil, event.NoBase)
	if len(cs) == 0 || cs[0].v != first || !cs[0].threadLast {
		t.Fatalf("the slow request's own read is not its first candidate: %v", kinds(cs))
	}
	if len(cs) > 1+maxRecent {
		t.Errorf("%d candidates, want at most %d", len(cs), 1+maxRecent)
	}
}

func TestHistoryExpiresByAge(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	h := newHistory(1<<20, time.Minute, clock.now)
	p := procKey{pid: 1, start: 1}
	h.read(1, p, p, h.share(1, []byte(`{}`)))
	clock.t = clock.t.Add(59 * time.Second)
	if got := h.candidates(1, p, p, nil, event.NoBase); len(got) == 0 {
		t.Fatal("version expired before its age")
	}
	clock.t = clock.t.Add(2 * time.Second)
	if got := h.candidates(1, p, p, nil, event.NoBase); len(got) != 0 {
		t.Fatalf("after the age: %v", kinds(got))
	}
	h.read(2, p, p, h.share(2, []byte(`{}`))) // any activity drops records not touched within the age
	if st := h.stats(); st.Records != 1 {
		t.Fatalf("after expiry: %+v, want only the new record", st)
	}
	if st := h.stats(); st.Evicted != 1 {
		t.Fatalf("evicted %d records, want 1", st.Evicted)
	}
}

// Versions shared by several entries are charged once; entries are charged too (with small records
// they outweigh the data); past the bound the least recently used records go first.
func TestHistoryMemoryBound(t *testing.T) {
	v := &version{data: make([]byte, 1000)}
	one := recordBytes + procBytes + threadBytes + 2*seenBytes + (versionBytes + 1000) // in the record's and the process's lists
	h := newHistory(int64(3*one), time.Hour, time.Now)
	p := procKey{pid: 1, start: 1}
	h.read(1, p, p, v)
	if st := h.stats(); st.Bytes != int64(one) {
		t.Fatalf("one read: %d bytes, want %d (the version once, though held three times)", st.Bytes, one)
	}
	h.read(2, p, p, &version{data: make([]byte, 1000)})
	h.read(3, p, p, &version{data: make([]byte, 1000)})
	if st := h.stats(); st.Records != 3 || st.Evicted != 0 {
		t.Fatalf("at the bound: %+v", st)
	}
	h.read(4, p, p, &version{data: make([]byte, 1000)})
	st := h.stats()
	if st.Bytes > int64(3*one) || st.Records != 3 || st.Evicted != 1 {
		t.Fatalf("past the bound: %+v, want 3 records within %d bytes", st, 3*one)
	}
	if got := h.candidates(1, p, p, nil, event.NoBase); len(got) != 0 {
		t.Fatal("the least recently used record survived")
	}
	// A version larger than the whole bound is not kept.
	h.read(5, p, p, &version{data: make([]byte, 4*one)})
	if got := h.candidates(5, p, p, nil, event.NoBase); len(got) != 0 {
		t.Fatal("a version larger than the bound is kept")
	}
	// 100,000 readers of one tiny record stay within 1 MiB.
	small := newHistory(1<<20, time.Hour, time.Now)
	tiny := &version{data: []byte(`{}`)}
	for pid := range uint32(100000) {
		q := procKey{pid: pid, start: 1}
		small.read(uint64(pid%50+1), q, q, tiny)
	}
	if st := small.stats(); st.Bytes > 1<<20 || st.Evicted == 0 {
		t.Fatalf("100,000 readers: %+v", st)
	}
}

func TestHistorySharesEqualContentAndForgets(t *testing.T) {
	h := newHistory(1<<20, time.Hour, time.Now)
	p := procKey{pid: 1, start: 1}
	first := h.share(1, []byte(`{"a":1}`))
	h.read(1, p, p, first)
	if got := h.share(1, []byte(`{"a":1}`)); got != first {
		t.Fatal("an open of unchanged content got its own copy")
	}
	if got := h.share(1, []byte(`{"a":2}`)); got == first {
		t.Fatal("changed content shared the old version")
	}
	if got := h.share(2, []byte(`{"a":1}`)); got == first {
		t.Fatal("another record shared the version")
	}
	h.forget(1)
	if got := h.share(1, []byte(`{"a":1}`)); got == first {
		t.Fatal("a forgotten record's version is still shared")
	}
	if st := h.stats(); st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("after forget: %+v", st)
	}
}

// A slow request in a busy process (an event loop serving other requests on the same record while
// it awaits) still finds its own read after hundreds of versions its own process read since.
func TestHistoryKeepsASlowRequestsReadInABusyProcess(t *testing.T) {
	h := newHistory(1<<30, time.Hour, time.Now)
	loop := procKey{pid: 1, start: 1}
	first := h.share(1, []byte(`{"n":0}`))
	h.read(1, loop, loop, first)
	for i := 1; i <= 300; i++ {
		h.read(1, loop, loop, h.share(1, []byte(fmt.Sprintf(`{"n":%d}`, i))))
	}
	found := false
	for _, c := range h.candidates(1, loop, loop, nil, event.NoBase) {
		found = found || c.v == first
	}
	if !found {
		t.Fatal("the slow request's read is no candidate after 300 newer reads by its process")
	}
}

// One busy record alone past the memory bound loses its oldest reads, not its whole history.
func TestHistoryTrimsTheOnlyRecordOldestFirst(t *testing.T) {
	p := procKey{pid: 1, start: 1}
	one := int64(versionBytes + 1000 + 2*seenBytes)
	h := newHistory(recordBytes+procBytes+threadBytes+10*one, time.Hour, time.Now)
	var vs []*version
	for range 30 {
		v := &version{data: make([]byte, 1000)}
		vs = append(vs, v)
		h.read(1, p, p, v)
	}
	st := h.stats()
	if st.Records != 1 || st.Bytes > h.maxBytes || st.Evicted == 0 {
		t.Fatalf("after 30 reads of 1000 bytes within 10: %+v", st)
	}
	in := map[*version]bool{}
	for _, c := range h.candidates(1, p, p, nil, event.NoBase) {
		in[c.v] = true
	}
	if !in[vs[29]] || !in[vs[25]] || in[vs[0]] {
		t.Fatalf("kept: newest %v, 26th %v, oldest %v; want the newest reads, not the oldest", in[vs[29]], in[vs[25]], in[vs[0]])
	}
}

// A version's parse may be dropped (history.release) while a commit asks for it: document still
// returns a parse. It once dereferenced the dropped one: a panic in the commit after its rename,
// and EIO for a write that had landed.
func TestDocumentWhileItsParseIsDropped(t *testing.T) {
	v := &version{data: []byte(`{"a": 1, "b": [1, 2, 3]}`)}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				v.parsed.Store(nil)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for i := range 200000 {
		if v.document(merge.Options{}, nil) == nil {
			t.Fatalf("call %d: no parse of a valid document", i)
		}
	}
}

// Commits asking at once for the parse of one version (the committer of a merged record parsing it
// after its lock, the next commit taking it as theirs under its own) share one parse.
func TestConcurrentDocumentCallsParseOnce(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"a": 0`)
	for i := range 20000 {
		fmt.Fprintf(&b, `, "f%d": "%040d"`, i, i)
	}
	b.WriteString(`}`)
	for round := range 5 {
		v := &version{data: []byte(b.String())}
		start := make(chan struct{})
		var wg sync.WaitGroup
		before := merge.ParseCount()
		for range 8 {
			wg.Go(func() {
				<-start
				if v.document(merge.Options{}, nil) == nil {
					t.Error("no parse of a valid document")
				}
			})
		}
		close(start)
		wg.Wait()
		if n := merge.ParseCount() - before; n != 1 {
			t.Fatalf("round %d: 8 concurrent callers made %d parses of one version, want 1", round, n)
		}
	}
}
