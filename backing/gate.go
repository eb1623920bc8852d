package backing

import "sync"

// readGate bounds the bytes of records being read into memory at once, so that many concurrent
// opens (one user's thousand threads, say) cannot each hold a record's content before the caller's
// budget sees it. A read that does not fit waits for reads in flight to end; a read larger than the
// whole bound runs alone.
type readGate struct {
	max int64 // 0: no bound

	mu       sync.Mutex
	cond     *sync.Cond
	inFlight int64
}

func newReadGate(max int64) *readGate {
	g := &readGate{max: max}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// enter waits until n bytes may be read; leave(n) must follow.
func (g *readGate) enter(n int64) {
	if g.max <= 0 || n <= 0 {
		return
	}
	g.mu.Lock()
	for g.inFlight > 0 && g.inFlight+n > g.max {
		g.cond.Wait()
	}
	g.inFlight += n
	g.mu.Unlock()
}

func (g *readGate) leave(n int64) {
	if g.max <= 0 || n <= 0 {
		return
	}
	g.mu.Lock()
	g.inFlight -= n
	g.mu.Unlock()
	g.cond.Broadcast()
}
