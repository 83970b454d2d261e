package ffpostgres

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/flowfabric/flowfabric/ffstore"
)

// headsFlight coalesces concurrent QueueHeads calls with the same prefixes: a call that
// arrives while a query for them runs does not start its own, nor take the running one's
// result (which may predate the call), but waits for the next query, which starts once the
// running one ends and then serves every call that waited for it. Every caller thus gets
// a result read after its call began, and many claimers polling one lane cost one query
// at a time instead of one each.
type headsFlight struct {
	mu sync.Mutex
	m  map[string]*headsState
}

type headsState struct {
	running *headsCall // the query in flight
	next    *headsCall // the query that starts when running ends; new callers join it
}

type headsCall struct {
	done  chan struct{}
	heads []ffstore.QueueHead
	err   error
}

// do returns run's result for key, from a run that started after do was called.
func (g *headsFlight) do(ctx context.Context, key string, run func() ([]ffstore.QueueHead, error)) ([]ffstore.QueueHead, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*headsState{}
	}
	st := g.m[key]
	if st == nil {
		st = &headsState{}
		g.m[key] = st
	}
	if c := st.next; c != nil {
		g.mu.Unlock()
		return c.wait(ctx)
	}
	c := &headsCall{done: make(chan struct{})}
	if prev := st.running; prev != nil {
		st.next = c
		g.mu.Unlock()
		<-prev.done // not ctx: the callers that joined c wait for this goroutine to run it
		g.mu.Lock()
		st.next = nil
	}
	st.running = c
	g.mu.Unlock()

	c.heads, c.err = run()

	g.mu.Lock()
	st.running = nil
	if st.next == nil {
		delete(g.m, key)
	}
	g.mu.Unlock()
	close(c.done)
	return slices.Clone(c.heads), c.err
}

func (c *headsCall) wait(ctx context.Context) ([]ffstore.QueueHead, error) {
	select {
	case <-c.done:
		return slices.Clone(c.heads), c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// headsKey names a set of disjoint, sorted prefixes.
func headsKey(prefixes []string) string { return strings.Join(prefixes, "\x00") }
