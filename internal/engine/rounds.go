package engine

import (
	"context"
	"sync"

	"github.com/flowfabric/flowfabric/fftype"
)

// Rounds: concurrent calls that can share one unit are served together. Calls queue by
// a key; the first call of an idle queue leads a round that serves every call queued by
// then, while calls that arrive meanwhile queue for the next round, which the first of
// them leads, unless the round admits them before its unit runs (claims do). With no
// contention a round serves one call and costs what the call would alone; under load one
// unit serves many calls. Claims (claimrounds.go) and the operations of lease holders
// (holderrounds.go) are served this way.

// roundCall is what the round machinery keeps of a call; call types embed it.
type roundCall struct {
	ctx   context.Context
	err   error
	named bool          // the call leads a round, or was named to; guarded by rounds.mu
	lead  chan struct{} // closed when the call is named to lead a round
	done  chan struct{} // closed once the call was served
}

func newRoundCall(ctx context.Context) roundCall {
	return roundCall{ctx: ctx, lead: make(chan struct{}), done: make(chan struct{})}
}

func (c *roundCall) base() *roundCall { return c }

// roundable is a call type served in rounds.
type roundable interface {
	comparable
	base() *roundCall
}

// rounds holds the queues of one kind of call.
type rounds[C roundable] struct {
	mu     sync.Mutex
	queues map[string]*roundQueue[C]
}

type roundQueue[C roundable] struct {
	running bool // a round is running, or the call to lead the next was named
	calls   []C
}

// roundPlan says how a kind of call is served: weight is what a call adds to a round,
// which holds at most max (a call heavier than max is served alone), and serve serves
// the calls of one round, setting their results; ctx is the leader's, without its
// cancellation, since the round serves others too.
//
// serve may call join, until it returns, to admit the calls that queued since the round
// began (within max); a round that joins them from inside its unit serves calls that
// would otherwise wait for the next round's unit, and so for the next commit. serve
// returns the joined calls it did not serve: they go back to the front of the queue, since
// the round decided what to do before they arrived.
type roundPlan[C roundable] struct {
	weight func(C) int
	max    int
	serve  func(ctx context.Context, calls []C, join func() []C) (unserved []C)
}

// do queues c under key and returns once a round served it, leading rounds when it is
// its turn. A call whose ctx ends while it waits leaves the queue with ctx's error,
// unless a round took it or it was named to lead one.
func (r *rounds[C]) do(key string, c C, plan roundPlan[C]) {
	b := c.base()
	r.mu.Lock()
	if r.queues == nil {
		r.queues = map[string]*roundQueue[C]{}
	}
	q := r.queues[key]
	if q == nil {
		q = &roundQueue[C]{}
		r.queues[key] = q
	}
	q.calls = append(q.calls, c)
	leader := !q.running
	if leader {
		q.running = true
		b.named = true
	}
	r.mu.Unlock()

	if !leader {
		select {
		case <-b.lead:
		case <-b.done:
		case <-b.ctx.Done():
			r.mu.Lock()
			if i := indexOf(q.calls, c); i >= 0 && !b.named {
				q.calls = append(q.calls[:i], q.calls[i+1:]...)
				b.err = b.ctx.Err()
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
			// Taken into a round already, or named to lead one that others wait for.
			select {
			case <-b.lead:
			case <-b.done:
			}
		}
		// Once served, a call is off the queue and cannot be named any more; a call
		// named before it was served must still lead the round it was named for.
		r.mu.Lock()
		named := b.named
		r.mu.Unlock()
		if !named {
			return
		}
	}
	r.round(b.ctx, key, q, plan)
	<-b.done
}

func indexOf[C comparable](calls []C, c C) int {
	for i, x := range calls {
		if x == c {
			return i
		}
	}
	return -1
}

// round serves the calls queued on q, then passes the next round to the first call still
// waiting, or marks q idle.
func (r *rounds[C]) round(ctx context.Context, key string, q *roundQueue[C], plan roundPlan[C]) {
	r.mu.Lock()
	calls, total := r.admit(q, nil, 0, plan)
	r.mu.Unlock()

	var unserved []C
	defer r.handOn(key, q, &unserved) // even if serve panics: later calls must not wait forever
	if len(calls) == 0 {
		return
	}
	join := func() []C {
		r.mu.Lock()
		defer r.mu.Unlock()
		n := len(calls)
		calls, total = r.admit(q, calls, total, plan)
		return calls[n:]
	}
	served := false
	defer func() {
		if served {
			return
		}
		// serve panicked (a bug): the panic goes on in the leader; every call of the
		// round is answered with an error rather than left waiting.
		for _, c := range calls {
			if b := c.base(); b.err == nil {
				b.err = fftype.NewError(fftype.KindUnavailable, fftype.CodeRoundFailed,
					"the round serving this call failed on another call's bug; retry")
			}
			close(c.base().done)
		}
	}()
	unserved = plan.serve(context.WithoutCancel(ctx), calls, join)
	served = true
	for _, c := range calls {
		if indexOf(unserved, c) < 0 {
			close(c.base().done)
		}
	}
}

// handOn puts the calls a round did not serve back at the front of q, then passes the
// next round to the first call waiting, or marks q idle.
func (r *rounds[C]) handOn(key string, q *roundQueue[C], unserved *[]C) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q.calls = append(*unserved, q.calls...)
	if len(q.calls) > 0 {
		c := q.calls[0].base()
		c.named = true
		close(c.lead)
		return
	}
	q.running = false
	delete(r.queues, key)
}

// admit moves queued calls into a round holding calls of weight total, while they fit in
// plan.max (the first call of a round always fits), and answers those whose ctx ended.
// r.mu must be held.
func (r *rounds[C]) admit(q *roundQueue[C], calls []C, total int, plan roundPlan[C]) ([]C, int) {
	for len(q.calls) > 0 && (len(calls) == 0 || total+plan.weight(q.calls[0]) <= plan.max) {
		c := q.calls[0]
		q.calls = q.calls[1:]
		if b := c.base(); b.ctx.Err() != nil {
			b.err = b.ctx.Err()
			close(b.done)
			continue
		}
		calls = append(calls, c)
		total += plan.weight(c)
	}
	return calls, total
}
