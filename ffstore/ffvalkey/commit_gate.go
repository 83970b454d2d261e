package ffvalkey

import (
	"slices"
	"sync"
)

// commitGate orders this process's reads of a shard's events after the commits that
// wrote them. The server applies a commit, and its events can be read, a moment before
// the committing goroutine has its reply and patches the heads cache with the queues the
// commit filled. A reader that saw the events in between, and claimed at once (a worker
// woken by a "created" event), would find the cache without the new head and wait for
// its next poll. So every commit holds a ticket from before it is sent until its heads
// are patched, and ReadEvents, once it has the events, waits for the tickets issued
// before then: whatever commit of this process wrote them is among those.
type commitGate struct {
	mu      sync.Mutex
	done    *sync.Cond
	issued  uint64   // tickets handed out
	pending []uint64 // tickets not yet returned, ascending
}

// enter hands out a ticket for a commit about to be sent.
func (g *commitGate) enter() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.issued++
	g.pending = append(g.pending, g.issued)
	return g.issued
}

// leave returns a commit's ticket once its heads are patched (or it failed).
func (g *commitGate) leave(ticket uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if i, ok := slices.BinarySearch(g.pending, ticket); ok {
		g.pending = slices.Delete(g.pending, i, i+1)
	}
	if g.done != nil {
		g.done.Broadcast()
	}
}

// wait returns once every ticket issued so far has been returned; tickets issued while
// it waits are not waited for.
func (g *commitGate) wait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	upto := g.issued
	for len(g.pending) > 0 && g.pending[0] <= upto {
		if g.done == nil {
			g.done = sync.NewCond(&g.mu)
		}
		g.done.Wait()
	}
}
