package engine

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Holder rounds (see rounds.go). Lease holders complete, fail, renew and report progress
// concurrently, and on a store whose units do not share round trips (an
// ffstore.UnitMerger) each operation costs a read of its execution (which carries its
// current attempt) and a commit. On such a store, operations on one shard are therefore
// served in rounds: one unit reads the executions of every operation in the round in one
// round trip, applies the operations one after the other (each sees the ones before it,
// as if they had run alone in that order), and commits once.
//
// An operation that fails before it writes anything (a stale fence, say) gets its error
// and the others go on. One that fails after writing, panics, or would read a queue that
// an earlier operation of the round wrote (which a unit must not do) cannot be undone
// alone: the round's unit is dropped and every operation of it runs in a unit of its own.

// holderFunc applies an operation to x, whose holder was checked.
type holderFunc func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error

// holderCall is one operation of a lease holder.
type holderCall struct {
	roundCall
	id     fftype.ExecutionID
	f      fftype.Fence
	replay func(*fftype.Execution) bool
	fn     holderFunc
	size   int  // the bytes of data it brings to write (a result)
	alone  bool // the round did not serve it: it runs in a unit of its own
}

// Bounds of one round: it holds at most maxHolderRound operations, and at most
// maxHolderRoundBytes of the data they bring, far below what any store takes in one unit
// (Postgres refuses a message over 1 GiB; 64 results of 16 MiB each made one).
const (
	maxHolderRound      = 64
	maxHolderRoundBytes = 16 << 20
)

// errSplit drops a round's unit so that its operations run alone.
var errSplit = errors.New("engine: the round's operations must run alone")

// holderUnit runs fn in a unit on the execution id for the holder of fence f. If replay
// recognises a retried call whose effect is already in place, the unit returns nil
// without calling fn. size is the bytes of data fn brings to write beyond the execution's
// record, an event and a short text (a result), 0 if none: the more it brings, the fewer
// operations share its round (holderWeight).
func (e *Engine) holderUnit(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, size int,
	replay func(x *fftype.Execution) bool, fn holderFunc) error {
	shard, err := e.checkID(id)
	if err != nil {
		return err
	}
	if err := checkFence(f); err != nil {
		return err
	}
	c := &holderCall{roundCall: newRoundCall(ctx), id: id, f: f, replay: replay, fn: fn, size: size}
	if e.mergeUnits {
		err := e.holders.do(strconv.Itoa(shard), c, roundPlan[*holderCall]{
			weight: e.holderWeight,
			max:    e.holderRoundBytes,
			serve: func(ctx context.Context, calls []*holderCall, join func() []*holderCall) []*holderCall {
				if len(calls) == 1 {
					// Holders' calls come in bursts: a claim round hands out leases on one
					// shard to many workers at once, and their completions follow together.
					// The first would run alone and the others in a second unit; yielding
					// once lets those already runnable join it. (Postgres, 50,000 drain:
					// lone units fell from 4,053 to 802, and the drain ran 3% faster.)
					runtime.Gosched()
					calls = append(calls, join()...)
				}
				e.serveHolders(ctx, shard, calls)
				return nil
			},
		})
		if err != nil {
			return err // as after a lost reply: whether the operation landed, a retry tells
		}
	} else {
		c.alone = true
	}
	if c.alone {
		c.err = e.holderAlone(shard, c)
	}
	if c.err == nil {
		e.notifyTimers()
	}
	return c.err
}

// holderWeight is what c adds to its round: the data it brings, and no less than a
// maxHolderRound-th of the round's bound, so that the bound holds both the bytes and the
// count of a round's operations.
func (e *Engine) holderWeight(c *holderCall) int {
	return max(c.size, e.holderRoundBytes/maxHolderRound)
}

// holderAlone applies c in a unit of its own, under its caller's context.
func (e *Engine) holderAlone(shard int, c *holderCall) error {
	return e.update(c.ctx, shard, func(tx ffstore.Tx) error { return e.holderStep(tx, c) })
}

// holderStep applies c in tx: it reads the execution, recognises a replay, checks the
// holder and runs c.fn.
func (e *Engine) holderStep(tx ffstore.Tx, c *holderCall) error {
	now := e.now()
	x, err := getExec(tx, c.id)
	if err != nil {
		return err
	}
	if c.replay != nil && x.Ownership != fftype.OwnershipLeased && c.f.Names(x) && c.replay(x) {
		return nil
	}
	if err := checkHolder(x, c.f, now); err != nil {
		return err
	}
	return c.fn(tx, x, placementOf(x), now)
}

// serveHolders serves one round of operations on shard. A lone operation runs as it
// would without rounds, in its own unit and under its caller's context.
func (e *Engine) serveHolders(ctx context.Context, shard int, calls []*holderCall) {
	if len(calls) == 1 {
		calls[0].err = e.holderAlone(shard, calls[0])
		return
	}
	errs := make([]error, len(calls))
	err := e.update(ctx, shard, func(tx ffstore.Tx) error {
		clear(errs) // the unit may run more than once
		if err := e.prefetchHolders(tx, calls); err != nil {
			return err
		}
		rt := &roundTx{Tx: tx}
		for i, c := range calls {
			writes := rt.writes
			err := rt.step(e, c)
			if rt.split || err != nil && rt.writes != writes {
				return errSplit
			}
			errs[i] = err
			rt.endStep()
		}
		return nil
	})
	for i, c := range calls {
		switch {
		case errors.Is(err, errSplit):
			c.alone = true
		case err != nil:
			c.err = err
		default:
			c.err = errs[i]
		}
	}
}

// prefetchHolders reads the executions of calls in one round trip.
func (e *Engine) prefetchHolders(tx ffstore.Tx, calls []*holderCall) error {
	keys := make([]string, len(calls))
	for i, c := range calls {
		keys[i] = execKey(c.id)
	}
	return tx.Prefetch(keys...)
}

// roundTx is the unit of a round as its operations see it: it counts their writes and
// refuses a queue read after an earlier operation wrote queues.
type roundTx struct {
	ffstore.Tx
	writes      int
	queues      bool // this operation wrote a queue
	priorQueues bool // an earlier operation of the round wrote a queue
	split       bool // an operation panicked or made a read the round cannot serve
}

// step runs c. A panic splits the round instead of escaping: the operation runs again
// alone, where the panic reaches its caller.
func (t *roundTx) step(e *Engine, c *holderCall) (err error) {
	defer func() {
		if recover() != nil {
			t.split = true
			err = errSplit
		}
	}()
	return e.holderStep(t, c)
}

// endStep closes one operation.
func (t *roundTx) endStep() {
	t.priorQueues = t.priorQueues || t.queues
	t.queues = false
}

func (t *roundTx) queueRead() bool {
	if t.priorQueues {
		t.split = true
	}
	return t.split
}

func (t *roundTx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	if t.queueRead() {
		return nil, errSplit
	}
	return t.Tx.Range(queue, after, maxScore, n)
}

func (t *roundTx) PopDue(queue string, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	if t.queueRead() {
		return nil, errSplit
	}
	t.writes++
	t.queues = true
	return t.Tx.PopDue(queue, maxScore, n)
}

func (t *roundTx) Put(key string, value []byte) { t.writes++; t.Tx.Put(key, value) }
func (t *roundTx) Delete(key string)            { t.writes++; t.Tx.Delete(key) }
func (t *roundTx) AppendEvent(ev fftype.Event)  { t.writes++; t.Tx.AppendEvent(ev) }

func (t *roundTx) QueueAdd(queue, member string, score int64) {
	t.writes++
	t.queues = true
	t.Tx.QueueAdd(queue, member, score)
}

func (t *roundTx) QueueRemove(queue, member string) {
	t.writes++
	t.queues = true
	t.Tx.QueueRemove(queue, member)
}
