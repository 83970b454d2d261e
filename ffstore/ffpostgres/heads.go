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
//
// Queries run in goroutines of the flight's own, not in a caller's: a caller leaves when
// its context ends, and the query goes on for the others. close waits for them.
type headsFlight struct {
	mu     sync.Mutex
	m      map[string]*headsState
	closed bool
	wg     sync.WaitGroup // the query running for each key
}

type headsState struct {
	running *headsCall // the query in flight
	next    *headsCall // the query that starts when running ends; new callers join it
}

type headsCall struct {
	run   func() ([]ffstore.QueueHead, error) // the query, as the call that asked for it gave it
	done  chan struct{}
	heads []ffstore.QueueHead
	err   error
}

// do returns the result of a run for key that started after do was called, or ctx.Err()
// if ctx ends first. run is the query; a run started for another caller may serve this one
// instead, so it must not depend on ctx, whose end cancels nothing. After close, do
// returns an unavailable error.
func (g *headsFlight) do(ctx context.Context, key string, run func() ([]ffstore.QueueHead, error)) ([]ffstore.QueueHead, error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, errClosed()
	}
	if g.m == nil {
		g.m = map[string]*headsState{}
	}
	st := g.m[key]
	if st == nil {
		st = &headsState{}
		g.m[key] = st
	}
	c := st.next
	if c == nil {
		c = &headsCall{run: run, done: make(chan struct{})}
		if st.running != nil {
			st.next = c
		} else {
			g.start(key, st, c)
		}
	}
	g.mu.Unlock()
	return c.wait(ctx)
}

// start runs c for key in a goroutine; when c ends, the next query for key, if callers
// wait for one, starts. The caller holds mu.
func (g *headsFlight) start(key string, st *headsState, c *headsCall) {
	st.running = c
	g.wg.Go(func() {
		c.heads, c.err = c.run()
		g.mu.Lock()
		st.running = nil
		next := st.next
		st.next = nil
		switch {
		case next == nil:
			delete(g.m, key)
		case g.closed:
			delete(g.m, key)
			next.err = errClosed()
			close(next.done)
		default:
			g.start(key, st, next)
		}
		g.mu.Unlock()
		close(c.done)
	})
}

// close refuses later calls and waits for the queries running; the queries that callers
// wait to start fail instead. The store ends its queries' context first.
func (g *headsFlight) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
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
