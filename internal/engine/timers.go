package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// timerQueues are the due-queues the timer loop serves.
var timerQueues = map[string]bool{
	queueDelayed: true, queueLease: true, queueAttemptTimeout: true, queueDeadline: true,
	queueGrant: true, queueRetention: true, queueIdem: true,
}

// timerLag returns how long after its score an item of timer queue q is due. Every queue
// but one scores an item by the time it is due. The retention queue scores an execution
// by the time it ended and lags by Retention, so that the engine's Retention, not the
// one of the process that ended it, decides: a lowered retention deletes executions that
// ended long enough ago at once (re-scoring could only ever catch a raised one).
func (e *Engine) timerLag(q string) time.Duration {
	if q == queueRetention {
		return e.cfg.Retention
	}
	return 0
}

// dueMS returns when an item of timer queue q with score is due, in Unix milliseconds
// rounded up (as ms rounds), so that it is due at a time the engine's clock reads.
func (e *Engine) dueMS(q string, score int64) int64 {
	return ms(fromMS(score).Add(e.timerLag(q)))
}

// maxDueScore returns the highest score of the items of timer queue q that are due at
// now, a whole millisecond: rounded down, so that it pops no item that fire would find
// not yet due and only put back.
func (e *Engine) maxDueScore(q string, now time.Time) int64 {
	return now.Add(-e.timerLag(q)).UnixMilli()
}

// RunDue handles every timer that is due now on every shard — delayed promotion, lease
// expiry, attempt timeouts, deadlines, grant expiry, retention and idempotency-key expiry —
// and returns how many items it handled and when the next timer is due (zero if none).
// Each item is handled in a unit that re-checks the record, so running RunDue in many
// processes at once is safe.
func (e *Engine) RunDue(ctx context.Context) (int, time.Time, error) {
	return e.runDue(ctx, nil)
}

// runDue is RunDue restricted to the shards in only (every shard when only is nil). A
// queue whose unit fails is left for the next call and the others go on, so that one
// failing unit (a record that cannot be read, say) does not stop every other timer; the
// first error is returned once the rest are done.
func (e *Engine) runDue(ctx context.Context, only map[int]bool) (int, time.Time, error) {
	handled := 0
	var failed map[ffstore.QueueHead]bool // shard and queue of the units that failed
	var firstErr error
	for {
		heads, err := e.store.QueueHeads(ctx, []string{timerPrefix})
		if err != nil {
			return handled, time.Time{}, err
		}
		now := e.now()
		var next time.Time
		ran := false
		// Earliest due first, whatever order the store listed the queues in.
		slices.SortFunc(heads, func(a, b ffstore.QueueHead) int {
			return cmp.Compare(e.dueMS(a.Queue, a.Item.Score), e.dueMS(b.Queue, b.Item.Score))
		})
		for _, h := range heads {
			key := ffstore.QueueHead{Shard: h.Shard, Queue: h.Queue}
			if !timerQueues[h.Queue] || only != nil && !only[h.Shard] || failed[key] {
				continue
			}
			if due := e.dueMS(h.Queue, h.Item.Score); due > ms(now) {
				if at := fromMS(due); next.IsZero() || at.Before(next) {
					next = at
				}
				continue
			}
			n, err := e.runTimer(ctx, h.Shard, h.Queue)
			if err != nil {
				if ctx.Err() != nil {
					return handled, time.Time{}, err
				}
				if failed == nil {
					failed = map[ffstore.QueueHead]bool{}
					firstErr = err
				}
				failed[key] = true
				continue
			}
			handled += n
			ran = true
		}
		if !ran {
			return handled, next, firstErr
		}
	}
}

// runTimer handles up to one batch of due items of one timer queue in one unit.
func (e *Engine) runTimer(ctx context.Context, shard int, queue string) (int, error) {
	var n int
	err := e.update(ctx, shard, func(tx ffstore.Tx) error {
		now := e.now()
		items, err := tx.PopDue(queue, e.maxDueScore(queue, now), e.cfg.TimerBatch)
		if err != nil {
			return err
		}
		n = len(items)
		if queue == queueIdem {
			return expireIdemKeys(tx, items, now)
		}
		if err := prefetchExecs(tx, items); err != nil {
			return err
		}
		for _, it := range items {
			x, err := getExec(tx, fftype.ExecutionID(it.Member))
			if fftype.CodeOf(err) == fftype.CodeExecutionNotFound {
				continue
			}
			if err != nil {
				return err
			}
			before := placementOf(x).without(queue)
			done, err := e.fire(tx, queue, x, before, now)
			if err != nil {
				return err
			}
			if !done {
				// Not due after all (renewed, rescheduled): put the entry back if it belongs.
				p := placementOf(x)
				if score, ok := p.score(queue); ok {
					tx.QueueAdd(queue, string(x.ID), score)
				}
			}
		}
		return nil
	})
	return n, err
}

// due reports whether the time t of a timer is set and has come by now.
func due(t, now time.Time) bool { return !t.IsZero() && !t.After(now) }

// fire applies the transition a due timer stands for, if x is still due. It reports
// whether it did.
func (e *Engine) fire(tx ffstore.Tx, queue string, x *fftype.Execution, before placement, now time.Time) (bool, error) {
	switch queue {
	case queueDelayed:
		if x.Phase != fftype.PhaseRunnable || x.Eligibility != fftype.EligibilityUntilTime || !due(x.DelayUntil, now) {
			return false, nil
		}
		toRunnable(x, x.AttemptState, now, fftype.BlockingWaitingForWorker, now)
		e.save(tx, before, x)
		appendEvent(tx, fftype.EventPromoted, x, now, nil)
	case queueLease:
		if x.Ownership != fftype.OwnershipLeased || !due(x.LeaseExpiresAt, now) {
			return false, nil
		}
		return true, e.loseLease(tx, x, before, fftype.LeaseEndExpired, "", now)
	case queueAttemptTimeout:
		if x.Ownership != fftype.OwnershipLeased || !due(x.AttemptTimeoutAt, now) {
			return false, nil
		}
		if q := leaseEndingTimer(x, now); q != queueAttemptTimeout {
			// The deadline, or the lease's expiry, came first: a late loop found this
			// timer first because another execution heads its queue. (loseLease, which
			// the lease's expiry goes through, makes the same choice.)
			return e.fire(tx, q, x, before, now)
		}
		x.LastLeaseEnd = fftype.LeaseEndTimedOut // so that the holder's calls are told, not taken for replays
		_, err := e.failAttempt(tx, x, before, fftype.FailParams{Reason: "attempt_timeout", Category: "timeout"}, now)
		return true, err
	case queueDeadline:
		if x.Phase == fftype.PhaseTerminal || !due(x.DeadlineAt, now) {
			return false, nil
		}
		if attemptUnfinished(x) {
			if err := endAttempt(tx, x, fftype.AttemptFailed, "execution_deadline", "timeout", now); err != nil {
				return false, err
			}
		}
		x.FailureReason, x.FailureCategory = "execution_deadline", "timeout"
		toTerminal(x, fftype.OutcomeExpired, now)
		e.save(tx, before, x)
		appendEvent(tx, fftype.EventExpired, x, now, map[string]any{"reason": "execution_deadline"})
	case queueGrant:
		if x.Eligibility != fftype.EligibilityGranted || !due(x.Grant.ExpiresAt, now) {
			return false, nil
		}
		e.expireGrant(tx, x, before, now)
	case queueRetention:
		if x.Phase != fftype.PhaseTerminal || !due(x.CompletedAt.Add(e.cfg.Retention), now) {
			return false, nil
		}
		return true, e.delete(tx, x, before, now)
	default:
		return false, nil
	}
	return true, nil
}

// delete removes a terminal execution and everything stored with it.
func (e *Engine) delete(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
	for _, qs := range before.queues() {
		tx.QueueRemove(qs.queue, string(x.ID))
	}
	tx.Delete(execKey(x.ID))
	tx.Delete(payloadKey(x.ID))
	tx.Delete(resultKey(x.ID))
	tx.Delete(binaryResultKey(x.ID))
	for i := 0; i < x.TotalAttempts; i++ {
		tx.Delete(attemptKey(x.ID, i))
	}
	if x.IdemKey != "" {
		b, ok, err := tx.Get(idemKey(x.Namespace, x.IdemKey))
		if err != nil {
			return err
		}
		var rec idemRecord
		if ok && json.Unmarshal(b, &rec) == nil && rec.ID == x.ID {
			tx.Delete(idemKey(x.Namespace, x.IdemKey))
			tx.QueueRemove(queueIdem, idemMember(x.Namespace, x.IdemKey))
		}
	}
	appendEvent(tx, fftype.EventDeleted, x, now, nil)
	return nil
}

// expireIdemKeys deletes idempotency keys whose window has passed.
func expireIdemKeys(tx ffstore.Tx, items []ffstore.QueueItem, now time.Time) error {
	for _, it := range items {
		key := idemKeyOfMember(it.Member)
		b, ok, err := tx.Get(key)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		var rec idemRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return corrupt("idempotency key", err)
		}
		if rec.ExpiresAt.After(now) {
			tx.QueueAdd(queueIdem, it.Member, ms(rec.ExpiresAt))
			continue
		}
		tx.Delete(key)
	}
	return nil
}

// Start runs the timer loop in the background until Stop or ctx ends. The loop holds the
// timer loop's shard leases, shared fairly among every engine running on the store, and on
// its shards it handles due timers and sweeps the event log (on every shard while the
// store refuses the lease units, as one at its memory limit does); then it sleeps until
// the next timer is due, a change wakes it, or the poll interval passes. Calling Start on
// a running engine does nothing; once a loop has ended with its ctx, Start runs a new one.
func (e *Engine) Start(ctx context.Context) {
	e.loopMu.Lock()
	defer e.loopMu.Unlock()
	if e.loopStop != nil {
		select {
		case <-e.loopDone:
		default:
			return
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	e.loopStop, e.loopDone = cancel, done
	go func() {
		defer close(done)
		e.timerLoop(ctx)
	}()
}

func (e *Engine) timerLoop(ctx context.Context) {
	leases := e.newLeaser(timerLeases, 0, false)
	defer leases.release(context.WithoutCancel(ctx))
	changes := e.changes(ctx)
	var swept time.Time
	for ctx.Err() == nil {
		// A balance that failed (on some shards or all) leaves the loop the shards it
		// still holds: one failing shard must not stop the timers of the others.
		berr := leases.balanceIfDue(ctx)
		only := map[int]bool{}
		for _, s := range leases.heldShards() {
			only[s] = true
		}
		_, next, err := e.runDue(ctx, only)
		sweepOn := only
		if berr != nil && len(only) == 0 {
			// The store refuses the lease units. One at its memory limit (a Redis at
			// maxmemory) refuses every write but a trim, which is what frees it; a trim
			// is safe from any replica on any shard (it never lowers a trim point).
			sweepOn = nil
		}
		if !e.now().Before(swept.Add(e.cfg.EventSweepInterval)) { // even if a timer failed
			swept = e.now()
			_, serr := e.sweepEvents(ctx, sweepOn)
			err = errors.Join(err, serr)
		}
		if err := errors.Join(berr, err); err != nil && ctx.Err() == nil {
			e.log.Warn("timer loop failed; retrying", "err", err)
		}
		until := e.clock.Now().Add(leases.idleWait(e.cfg.TimerPollInterval))
		if err == nil && !next.IsZero() && next.Before(until) {
			until = next
		}
		ran := time.Now()
		if e.sleepUntil(ctx, until, changes) != nil {
			return
		}
		// Every committed unit may wake the loop; under load that would run it thousands
		// of times a second to find nothing due. Wake-ups closer than minTimerGap (real
		// time) to the last run wait out the rest of the gap.
		if gap := time.Since(ran); gap < minTimerGap {
			t := time.NewTimer(minTimerGap - gap)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// minTimerGap is the least real time between two runs of the timer loop.
const minTimerGap = 10 * time.Millisecond

// sleepUntil sleeps on the engine's clock until t, a local wake-up, a store change, or the
// end of ctx.
func (e *Engine) sleepUntil(ctx context.Context, t time.Time, changes <-chan struct{}) error {
	if changes == nil {
		return e.clock.SleepUntil(ctx, t, e.wake)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-changes:
			e.notifyTimers()
		case <-ctx.Done():
		}
	}()
	return e.clock.SleepUntil(ctx, t, e.wake)
}

// expireGrant ends x's grant, whose time has passed: x is eligible again for everyone.
func (e *Engine) expireGrant(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) {
	g := x.Grant
	toRunnable(x, x.AttemptState, now, fftype.BlockingWaitingForWorker, now)
	e.save(tx, before, x)
	appendEvent(tx, fftype.EventGrantExpired, x, now, map[string]any{"grant_kind": g.Kind, "worker_id": g.WorkerID})
}

// Stop ends the timer loop and waits for it. It is safe to call when not started, and
// more than once.
func (e *Engine) Stop() {
	e.loopMu.Lock()
	stop, done := e.loopStop, e.loopDone
	e.loopStop, e.loopDone = nil, nil
	e.loopMu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}
