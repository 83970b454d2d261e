package engine

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Claim combining. Workers of one pool call Claim concurrently with the same lanes and
// capabilities, and each call on its own costs a read of the queue heads and a unit that
// pops one execution. Calls that would select the same way are therefore served together:
// the first becomes the leader and runs a round for every call queued behind it by then
// (one read of the heads, one unit per queue, popping for all of them), while calls that
// arrive meanwhile queue for the next round, which the first of them leads. With no
// contention a round serves one call and costs what a lone claim costs; under load a
// round serves many.
//
// Each call still gets leases in its own name (worker, instance, lease TTL) and at most
// its own count. Executions go to the calls in the order they queued, so a round that
// finds fewer executions than asked for serves the earliest calls first.

// claimCall is one Claim call waiting to be served by a round.
type claimCall struct {
	ctx   context.Context
	w     claimer
	count int

	named  bool          // the call leads a round, or was named to; guarded by claimCombiner.mu
	lead   chan struct{} // closed when the call is named to lead a round
	done   chan struct{} // closed once leases and err are set
	leases []*fftype.Lease
	err    error
}

// claimQueue is the calls of one selection (lanes and capabilities) waiting for a round.
type claimQueue struct {
	running bool // a round is running, or the call to lead the next was named
	calls   []*claimCall
}

// claimCombiner holds the claim queues, by selection.
type claimCombiner struct {
	mu     sync.Mutex
	queues map[string]*claimQueue
}

// selectionKey identifies calls that select alike: the same lanes (in order, which
// matters for rotation) and the same capabilities.
func selectionKey(lanes []string, w claimer) string {
	return strings.Join(lanes, sep) + sep + sep + strings.Join(w.caps, ",")
}

// claimCombined serves one validated Claim call through its selection's queue.
func (e *Engine) claimCombined(ctx context.Context, lanes []string, w claimer, count int) ([]*fftype.Lease, error) {
	c := &claimCall{ctx: ctx, w: w, count: count, lead: make(chan struct{}), done: make(chan struct{})}
	key := selectionKey(lanes, w)
	cc := &e.claims
	cc.mu.Lock()
	q := cc.queues[key]
	if q == nil {
		q = &claimQueue{}
		cc.queues[key] = q
	}
	q.calls = append(q.calls, c)
	leader := !q.running
	if leader {
		q.running = true
		c.named = true
	}
	cc.mu.Unlock()

	if !leader {
		select {
		case <-c.lead:
		case <-c.done:
		case <-ctx.Done():
			cc.mu.Lock()
			if i := indexOf(q.calls, c); i >= 0 && !c.named {
				q.calls = append(q.calls[:i], q.calls[i+1:]...)
				cc.mu.Unlock()
				return nil, ctx.Err()
			}
			cc.mu.Unlock()
			// Taken into a round already, or named to lead one that others wait for.
			select {
			case <-c.lead:
			case <-c.done:
			}
		}
		// Once served, a call is off the queue and cannot be named any more; a call
		// named before it was served must still run the round it was named for.
		cc.mu.Lock()
		named := c.named
		cc.mu.Unlock()
		if !named {
			return c.leases, c.err
		}
	}
	e.claimRound(ctx, key, q, lanes)
	<-c.done
	return c.leases, c.err
}

func indexOf(calls []*claimCall, c *claimCall) int {
	for i, x := range calls {
		if x == c {
			return i
		}
	}
	return -1
}

// claimRound serves the calls queued on q, then passes the next round to the first call
// still waiting, or marks q idle. ctx is the leader's; the round runs without its
// cancellation, since it serves others.
func (e *Engine) claimRound(ctx context.Context, key string, q *claimQueue, lanes []string) {
	cc := &e.claims
	cc.mu.Lock()
	var calls []*claimCall
	total := 0
	for len(q.calls) > 0 && total+q.calls[0].count <= fftype.MaxClaimCount {
		c := q.calls[0]
		q.calls = q.calls[1:]
		if c.ctx.Err() != nil {
			c.err = c.ctx.Err()
			close(c.done)
			continue
		}
		calls = append(calls, c)
		total += c.count
	}
	cc.mu.Unlock()

	if len(calls) > 0 {
		e.serve(context.WithoutCancel(ctx), lanes, calls, total)
	}

	cc.mu.Lock()
	defer cc.mu.Unlock()
	if len(q.calls) > 0 {
		// The round passes to the first call waiting.
		c := q.calls[0]
		c.named = true
		close(c.lead)
		return
	}
	q.running = false
	delete(cc.queues, key)
}

// serve runs one selection for calls, total executions in all, and hands each call its
// share. If the selection fails, calls that got leases keep them (the error recurs on
// their next claim) and the others get the error.
func (e *Engine) serve(ctx context.Context, lanes []string, calls []*claimCall, total int) {
	owners := make([]*claimCall, 0, total)
	for _, c := range calls {
		for range c.count {
			owners = append(owners, c)
		}
	}
	leases, err := take(ctx, e, calls[0].w.caps, lanes, total, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time, i int) (*fftype.Lease, error) {
		return e.acquire(tx, x, before, owners[i].w, now)
	})
	for i, l := range leases {
		owners[i].leases = append(owners[i].leases, l)
	}
	for _, c := range calls {
		if len(c.leases) == 0 {
			c.err = err
		}
		close(c.done)
	}
}
