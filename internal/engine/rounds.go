package engine

import (
	"context"
	"slices"
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
//
// A call waits for its round no longer than its context: when the context ends, the call
// returns the context's error and its round goes on without it; only the call leading a
// round sees the round through. What the round does for a call that left stands unless
// the plan undoes it (plan.drop): a claim round releases the leases it took for the call,
// while a holder round applies the call's operation all the same, as if the call's reply
// had been lost on its way back (a retry with the same fence tells the outcome). A round's
// units run under a context that ends once the context of every call of the round has
// ended, so a store that stops answering holds a call no longer than its context, and a
// leader no longer than the longest context among the calls of its round.

// roundCall is what the round machinery keeps of a call; call types embed it.
type roundCall struct {
	ctx   context.Context
	err   error
	named bool          // the call leads a round, or was named to; guarded by rounds.mu
	left  bool          // its caller stopped waiting for the round serving it; guarded by rounds.mu
	life  *roundLife    // the life of the round serving it, while it runs; guarded by rounds.mu
	lead  chan struct{} // closed when the call is named to lead a round
	done  chan struct{} // closed, under rounds.mu, once the call was served
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
// the calls of one round, setting their results. serve runs under the round's context:
// it has the values of the leader's and ends once the context of every call the round
// admitted has ended.
//
// serve may call join, until it returns, to admit the calls that queued since the round
// began (within max); a round that joins them from inside its unit serves calls that
// would otherwise wait for the next round's unit, and so for the next commit. serve
// returns the joined calls it did not serve: they go back to the front of the queue, since
// the round decided what to do before they arrived. A serve that runs more than one unit
// may leave out of the later ones the calls whose callers stopped waiting meanwhile
// (rounds.waiting).
//
// drop, when set, undoes what a round did for calls whose callers stopped waiting for it
// (the caller of a call that returns unserved gets nothing undone). It runs in a goroutine
// of its own once the round has ended, and must bound its own time.
type roundPlan[C roundable] struct {
	weight func(C) int
	max    int
	serve  func(ctx context.Context, calls []C, join func() []C) (unserved []C)
	drop   func(ctx context.Context, calls []C)
}

// do queues c under key and returns nil once a round served it, leading rounds when it is
// its turn. A call whose ctx ends first returns ctx's error, and its results are not to be
// read, unless it was named to lead a round: then it leads that round.
func (r *rounds[C]) do(key string, c C, plan roundPlan[C]) error {
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
			if r.leave(q, c) {
				return b.ctx.Err()
			}
			select { // served meanwhile, or named to lead a round that others wait for
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
			return nil
		}
	}
	r.round(b.ctx, key, q, plan)
	<-b.done
	return nil
}

// leave takes c, whose ctx ended, off q, or out of the round that took it (which goes on
// without it), and reports true; it reports false if c was served or named to lead.
func (r *rounds[C]) leave(q *roundQueue[C], c C) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := c.base()
	select {
	case <-b.done:
		return false
	default:
	}
	if b.named {
		return false
	}
	if i := indexOf(q.calls, c); i >= 0 {
		q.calls = append(q.calls[:i], q.calls[i+1:]...)
	} else {
		b.left = true
		b.life.leave()
	}
	return true
}

// waiting returns calls, a part of a running round, less those whose callers stopped
// waiting for it: they left it, or their context ended (the leader's caller, or one about
// to leave). A round's serve calls it to give such calls nothing more. The result reuses
// the array of calls.
func (r *rounds[C]) waiting(calls []C) []C {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.DeleteFunc(calls, func(c C) bool {
		b := c.base()
		return b.left || b.ctx.Err() != nil
	})
}

func indexOf[C comparable](calls []C, c C) int {
	for i, x := range calls {
		if x == c {
			return i
		}
	}
	return -1
}

// runningRound is a round in progress.
type runningRound[C roundable] struct {
	ctx   context.Context // the leader's values; cancelled by life
	calls []C
	total int // the weight of calls
	life  roundLife
	// stopWatch ends the watch of its leader's ctx, if it leads (not if its ctx had
	// ended before the round began).
	stopWatch func() bool
}

// roundLife counts the calls of a running round whose callers still wait for it, and
// cancels the round's context once none does. A caller that leads the round is watched
// with context.AfterFunc; the others see their ctx end while they wait, and leave.
// Guarded by rounds.mu.
type roundLife struct {
	waiting int
	cancel  context.CancelFunc
}

func (l *roundLife) leave() {
	if l.waiting--; l.waiting == 0 {
		l.cancel()
	}
}

// round serves the calls queued on q, then passes the next round to the first call still
// waiting, or marks q idle.
func (r *rounds[C]) round(leader context.Context, key string, q *roundQueue[C], plan roundPlan[C]) {
	rd := &runningRound[C]{}
	rd.ctx, rd.life.cancel = context.WithCancel(context.WithoutCancel(leader))
	defer rd.life.cancel()
	r.mu.Lock()
	r.admit(q, rd, plan)
	r.mu.Unlock()

	var unserved []C
	served := false
	defer func() { // even if serve panics: later calls must not wait forever
		if gone := r.end(key, q, rd, unserved, served); len(gone) > 0 && plan.drop != nil {
			// Not on the leader's time: its answer is ready, and undoing what the round
			// did for others may wait on a store that stopped answering.
			go plan.drop(context.WithoutCancel(rd.ctx), gone)
		}
	}()
	if len(rd.calls) > 0 {
		join := func() []C {
			r.mu.Lock()
			defer r.mu.Unlock()
			n := len(rd.calls)
			r.admit(q, rd, plan)
			return rd.calls[n:]
		}
		unserved = plan.serve(rd.ctx, rd.calls, join)
	}
	served = true
}

// end closes round rd: it answers the calls it served (if serve panicked, a bug, each
// with an error rather than leaving it waiting), puts those it did not serve back at the
// front of q, and passes the next round to the first call waiting, or marks q idle. It
// returns the calls whose callers left.
func (r *rounds[C]) end(key string, q *roundQueue[C], rd *runningRound[C], unserved []C, served bool) (gone []C) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rd.stopWatch != nil {
		rd.stopWatch()
	}
	var back []C
	for _, c := range rd.calls {
		b := c.base()
		b.life = nil
		switch {
		case b.left:
			gone = append(gone, c)
		case indexOf(unserved, c) >= 0:
			back = append(back, c)
		default:
			switch {
			case !served && b.err == nil:
				b.err = fftype.NewError(fftype.KindUnavailable, fftype.CodeRoundFailed,
					"the round serving this call failed on another call's bug; retry")
			case b.err != nil && rd.ctx.Err() != nil:
				b.err = b.ctx.Err() // the round was cancelled: every call's ctx had ended
			}
			close(b.done)
		}
	}
	q.calls = append(back, q.calls...)
	if len(q.calls) > 0 {
		c := q.calls[0].base()
		c.named = true
		close(c.lead)
		return gone
	}
	q.running = false
	delete(r.queues, key)
	return gone
}

// admit moves queued calls into round rd while they fit in plan.max (the first call of a
// round always fits), and answers those whose ctx ended. A round whose context ended
// admits none. r.mu must be held.
func (r *rounds[C]) admit(q *roundQueue[C], rd *runningRound[C], plan roundPlan[C]) {
	for len(q.calls) > 0 && rd.ctx.Err() == nil && (len(rd.calls) == 0 || rd.total+plan.weight(q.calls[0]) <= plan.max) {
		c := q.calls[0]
		q.calls = q.calls[1:]
		b := c.base()
		if b.ctx.Err() != nil {
			b.err = b.ctx.Err()
			close(b.done)
			continue
		}
		rd.calls = append(rd.calls, c)
		rd.total += plan.weight(c)
		rd.life.waiting++
		b.life = &rd.life
		if b.named { // the leader: it runs the round, so it cannot see its ctx end and leave
			rd.stopWatch = context.AfterFunc(b.ctx, func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				rd.life.leave()
			})
		}
	}
}
