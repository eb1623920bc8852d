package backing

import (
	"testing"
	"time"
)

func TestReadGateBoundsBytesInFlight(t *testing.T) {
	g := newReadGate(10)
	g.enter(6)
	entered := make(chan struct{})
	go func() {
		g.enter(6) // 12 > 10: waits for the first read
		close(entered)
	}()
	select {
	case <-entered:
		t.Fatal("a read past the bound entered while another was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	g.enter(4) // fits: 10
	g.leave(6)
	g.leave(4)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting read did not enter once the others left")
	}
	g.leave(6)
	// Larger than the bound: runs alone.
	g.enter(100)
	g.leave(100)
	if g.inFlight != 0 {
		t.Fatalf("in flight after all left: %d", g.inFlight)
	}
}
