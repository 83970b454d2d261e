package ffvalkey

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCommitGate: wait returns once the tickets issued before it are back, in whatever
// order they come back, and does not wait for tickets issued after it began.
func TestCommitGate(t *testing.T) {
	t.Parallel()
	var g commitGate
	g.wait() // nothing pending

	a, b := g.enter(), g.enter()
	waited := make(chan struct{})
	go func() {
		g.wait()
		close(waited)
	}()
	require.Eventually(t, func() bool { // the waiter took its mark: a and b
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.done != nil
	}, 5*time.Second, time.Millisecond)
	later := g.enter() // issued after wait began: not waited for

	g.leave(b)
	select {
	case <-waited:
		t.Fatal("wait returned while an earlier commit was still out")
	case <-time.After(20 * time.Millisecond):
	}
	g.leave(a)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return once the earlier commits were back")
	}
	g.leave(later)
	g.leave(later) // a second leave changes nothing
	g.wait()
}
