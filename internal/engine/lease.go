package engine

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// checkFence refuses a fence that is not complete.
func checkFence(f fftype.Fence) error {
	if !f.Complete() {
		return fftype.Validationf(fftype.CodeInvalidFence, "a fence needs lease_id, lease_epoch and attempt_id")
	}
	return nil
}

// checkHolder decides whether the holder of fence f may act on x now: it holds the
// current lease, and none of the execution's deadline, the attempt's timeout and the
// lease's expiry has come. A timer that has come refuses the holder even before the timer
// loop handles it, and leaves x to the loop, which applies the same timer
// (leaseEndingTimer). Without the lease, fftype.LostLeaseError says why not.
func checkHolder(x *fftype.Execution, f fftype.Fence, now time.Time) error {
	if !f.Names(x) || x.Ownership != fftype.OwnershipLeased {
		return fftype.LostLeaseError(x, f)
	}
	switch leaseEndingTimer(x, now) {
	case queueDeadline:
		return fftype.Statef(fftype.CodeExecutionNotActive, "execution %s passed its deadline at %s", x.ID, x.DeadlineAt.Format(time.RFC3339Nano))
	case queueAttemptTimeout:
		return fftype.LeaseEndError(x.ID, fftype.LeaseEndTimedOut)
	case queueLease:
		return fftype.LeaseEndError(x.ID, fftype.LeaseEndExpired)
	}
	return nil
}

// leaseEndingTimer returns the timer queue of the transition that is due for x now among
// those that end a lease, or "" if none is: past the deadline, the deadline's, as the
// execution is to end whatever else is due; else that of whichever came first of the
// attempt's timeout and the lease's expiry (the timeout on a tie). The timer loop applies
// that one whichever of x's due timers it found first, and a holder is told of that one.
func leaseEndingTimer(x *fftype.Execution, now time.Time) string {
	switch {
	case due(x.DeadlineAt, now):
		return queueDeadline
	case due(x.AttemptTimeoutAt, now) && !x.AttemptTimeoutAt.After(x.LeaseExpiresAt):
		return queueAttemptTimeout
	case due(x.LeaseExpiresAt, now):
		return queueLease
	}
	return ""
}

// endLease clears the lease fields of x. The fence (lease id, epoch, attempt id) stays so
// that a retried call by the same holder is recognised.
func endLease(x *fftype.Execution, now time.Time) {
	x.Ownership = fftype.OwnershipUnowned
	x.WorkerID, x.WorkerInstanceID = "", ""
	x.LeaseExpiresAt, x.LeaseRenewedAt = time.Time{}, time.Time{}
	x.UpdatedAt = now
}

// toTerminal moves x to the terminal phase with outcome.
func toTerminal(x *fftype.Execution, outcome fftype.Outcome, now time.Time) {
	endLease(x, now)
	x.Phase = fftype.PhaseTerminal
	x.Outcome = outcome
	x.Eligibility = fftype.EligibilityNotApplicable
	x.BlockingReason = fftype.BlockingNone
	x.BlockingDetail = ""
	x.Grant = nil
	x.DelayUntil = time.Time{}
	if x.TotalAttempts > 0 {
		x.AttemptState = fftype.AttemptStateTerminal
	}
	x.CompletedAt = now
}

// toRunnable moves x to the runnable phase, eligible at until (now when until is not after
// now), with attempt state as.
func toRunnable(x *fftype.Execution, as fftype.AttemptState, until time.Time, waitReason fftype.BlockingReason, now time.Time) {
	endLease(x, now)
	x.Phase = fftype.PhaseRunnable
	x.AttemptState = as
	x.Grant = nil
	x.BlockingDetail = ""
	if until.After(now) {
		x.Eligibility = fftype.EligibilityUntilTime
		x.BlockingReason = waitReason
		x.DelayUntil = until
	} else {
		x.Eligibility = fftype.EligibilityNow
		x.BlockingReason = fftype.BlockingWaitingForWorker
		x.DelayUntil = time.Time{}
	}
}

// attemptUnfinished reports whether x's latest attempt has yet to end: it runs, or it was
// paused (Delay, Release) and the next claim would continue it. An execution that ends
// otherwise ends it too.
func attemptUnfinished(x *fftype.Execution) bool {
	return x.Phase == fftype.PhaseActive || x.AttemptState == fftype.AttemptStateInterrupted
}

// endAttempt sets the final or paused status of x's current attempt.
func endAttempt(tx ffstore.Tx, x *fftype.Execution, status fftype.AttemptStatus, reason, category string, now time.Time) error {
	a, err := latestAttempt(x)
	if err != nil {
		return err
	}
	a.Status = status
	if status == fftype.AttemptPaused {
		a.PausedAt = now
	} else {
		a.EndedAt = now
	}
	a.FailureReason, a.FailureCategory = reason, category
	return nil
}

// Renew extends the lease by ttl from now (the lease's own TTL when ttl is 0). It returns
// the new expiry. The epoch does not change.
func (e *Engine) Renew(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, ttl time.Duration) (time.Time, error) {
	if ttl != 0 && (ttl < fftype.MinLeaseTTL || ttl > fftype.MaxLeaseTTL) {
		return time.Time{}, fftype.Validationf(fftype.CodeInvalidInput, "lease ttl must be between %s and %s", fftype.MinLeaseTTL, fftype.MaxLeaseTTL)
	}
	var expires time.Time
	err := e.holderUnit(ctx, id, f, 0, nil, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		if ttl != 0 {
			x.LeaseTTL = fftype.Duration(ttl)
		}
		x.LeaseExpiresAt = now.Add(x.LeaseTTL.D())
		x.LeaseRenewedAt = now
		x.UpdatedAt = now
		e.save(tx, before, x)
		expires = x.LeaseExpiresAt
		return nil
	})
	return expires, err
}

// Progress records the running attempt's progress: a percentage from 0 to 100 and a
// message of at most 1,024 bytes.
func (e *Engine) Progress(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, percent int, message string) error {
	if percent < 0 || percent > 100 {
		return fftype.Validationf(fftype.CodeInvalidInput, "progress percent %d is outside 0..100", percent)
	}
	if err := fftype.ValidateReason("progress message", message); err != nil {
		return err
	}
	return e.holderUnit(ctx, id, f, 0, nil, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		x.ProgressPercent, x.ProgressMessage, x.ProgressAt = percent, message, now
		x.UpdatedAt = now
		e.save(tx, before, x)
		appendEvent(tx, fftype.EventProgress, x, now, map[string]any{"percent": percent, "message": message})
		return nil
	})
}

// Complete ends the execution successfully and stores result (JSON unless enc says
// binary). A retried Complete by the same holder succeeds and changes nothing.
func (e *Engine) Complete(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, result []byte, enc fftype.PayloadEncoding) error {
	enc, err := e.checkPayload("result", result, enc)
	if err != nil {
		return err
	}
	key := resultKey
	if enc == fftype.EncodingBinary {
		key = binaryResultKey
	}
	result = bytes.Clone(result) // the store keeps it; the caller may reuse its buffer
	replay := func(x *fftype.Execution) bool { return x.Outcome == fftype.OutcomeSuccess }
	return e.holderUnit(ctx, id, f, len(result), replay, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		if err := endAttempt(tx, x, fftype.AttemptSucceeded, "", "", now); err != nil {
			return err
		}
		toTerminal(x, fftype.OutcomeSuccess, now)
		e.save(tx, before, x)
		if len(result) > 0 {
			tx.Put(key(x.ID), result)
		}
		appendEvent(tx, fftype.EventCompleted, x, now, map[string]any{"attempt_index": x.CurrentAttempt})
		return nil
	})
}

// Fail ends the current attempt as failed. The execution is retried per its policy —
// unless p.NoRetry is set, p.Category is non-retryable, or the retries are used up — or
// fails for good. A retried Fail by the same holder returns the first outcome.
func (e *Engine) Fail(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, p fftype.FailParams) (fftype.FailOutcome, error) {
	if err := fftype.ValidateReason("reason", p.Reason); err != nil {
		return fftype.FailOutcome{}, err
	}
	if err := fftype.ValidateText("category", p.Category, fftype.MaxCategoryBytes); err != nil {
		return fftype.FailOutcome{}, err
	}
	var out fftype.FailOutcome
	replay := func(x *fftype.Execution) bool {
		switch {
		case x.Phase == fftype.PhaseTerminal && x.Outcome == fftype.OutcomeFailed && x.LastLeaseEnd == "":
			out = fftype.FailOutcome{}
			return true
		case x.Phase == fftype.PhaseRunnable && x.AttemptState == fftype.AttemptStatePendingRetry && x.LastLeaseEnd == "":
			out = fftype.FailOutcome{RetryScheduled: true, RetryAt: x.DelayUntil}
			if out.RetryAt.IsZero() {
				out.RetryAt = x.UpdatedAt
			}
			return true
		}
		return false
	}
	err := e.holderUnit(ctx, id, f, 0, replay, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		var err error
		out, err = e.failAttempt(tx, x, before, p, now)
		return err
	})
	return out, err
}

// failAttempt fails x's running attempt and retries or ends it per policy.
func (e *Engine) failAttempt(tx ffstore.Tx, x *fftype.Execution, before placement, p fftype.FailParams, now time.Time) (fftype.FailOutcome, error) {
	if err := endAttempt(tx, x, fftype.AttemptFailed, p.Reason, p.Category, now); err != nil {
		return fftype.FailOutcome{}, err
	}
	x.FailureReason, x.FailureCategory = p.Reason, p.Category
	r := x.Policy.Retry
	retry := !p.NoRetry && r != nil && x.RetryCount < r.MaxRetries && !slices.Contains(r.NonRetryable, p.Category)
	if !retry {
		toTerminal(x, fftype.OutcomeFailed, now)
		e.save(tx, before, x)
		appendEvent(tx, fftype.EventFailed, x, now, map[string]any{
			"attempt_index": x.CurrentAttempt, "reason": p.Reason, "category": p.Category})
		return fftype.FailOutcome{}, nil
	}
	delay := r.Backoff.Delay(x.RetryCount)
	if r.Backoff.Jitter {
		delay = time.Duration(e.cfg.JitterFunc() * float64(delay))
	}
	at := now.Add(delay).Truncate(time.Millisecond)
	x.RetryCount++
	x.PendingReason = p.Reason
	toRunnable(x, fftype.AttemptStatePendingRetry, at, fftype.BlockingWaitingForRetry, now)
	e.save(tx, before, x)
	appendEvent(tx, fftype.EventRetryScheduled, x, now, map[string]any{
		"attempt_index": x.CurrentAttempt, "reason": p.Reason, "category": p.Category,
		"retry_count": x.RetryCount, "retry_at": at})
	return fftype.FailOutcome{RetryScheduled: true, RetryAt: at}, nil
}

// Delay pauses the running attempt and makes the execution eligible again after d; the
// next claim continues the same attempt. Neither a retry nor a reclaim is counted.
func (e *Engine) Delay(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, d time.Duration) error {
	if d < 0 || d > fftype.MaxDelay {
		return fftype.Validationf(fftype.CodeInvalidInput, "delay must be between 0 and %s", fftype.MaxDelay)
	}
	replay := func(x *fftype.Execution) bool {
		return x.Phase == fftype.PhaseRunnable && x.AttemptState == fftype.AttemptStateInterrupted && x.LastLeaseEnd == ""
	}
	return e.holderUnit(ctx, id, f, 0, replay, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		if err := endAttempt(tx, x, fftype.AttemptPaused, "worker_delay", "", now); err != nil {
			return err
		}
		until := now.Add(d).Truncate(time.Millisecond)
		toRunnable(x, fftype.AttemptStateInterrupted, until, fftype.BlockingWaitingForDelay, now)
		e.save(tx, before, x)
		appendEvent(tx, fftype.EventDelayed, x, now, map[string]any{"attempt_index": x.CurrentAttempt, "until": until})
		return nil
	})
}

// Release gives the lease back, for a worker that shuts down: the execution is eligible at
// once and the next claim continues the same attempt, counting neither a retry nor a
// reclaim.
func (e *Engine) Release(ctx context.Context, id fftype.ExecutionID, f fftype.Fence) error {
	replay := func(x *fftype.Execution) bool { return x.LastLeaseEnd == fftype.LeaseEndReleased }
	return e.holderUnit(ctx, id, f, 0, replay, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		if err := endAttempt(tx, x, fftype.AttemptPaused, "released", "", now); err != nil {
			return err
		}
		toRunnable(x, fftype.AttemptStateInterrupted, now, fftype.BlockingWaitingForWorker, now)
		x.LastLeaseEnd = fftype.LeaseEndReleased
		e.save(tx, before, x)
		appendEvent(tx, fftype.EventLeaseReleased, x, now, map[string]any{"attempt_index": x.CurrentAttempt})
		return nil
	})
}

// Cancel ends the execution as cancelled from any non-terminal state. Cancelling an
// execution that is already cancelled succeeds and changes nothing; cancelling one that
// ended otherwise is refused.
func (e *Engine) Cancel(ctx context.Context, id fftype.ExecutionID, p fftype.CancelParams) error {
	if err := fftype.ValidateReason("reason", p.Reason); err != nil {
		return err
	}
	apply := func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time) error {
		by := "operator"
		if x.Phase == fftype.PhaseActive && p.Fence != nil {
			by = "worker:" + x.WorkerID
		}
		if attemptUnfinished(x) {
			if err := endAttempt(tx, x, fftype.AttemptCancelled, "cancelled: "+p.Reason, "cancelled", now); err != nil {
				return err
			}
		}
		toTerminal(x, fftype.OutcomeCancelled, now)
		x.CancellationReason, x.CancelledBy = p.Reason, by
		e.save(tx, before, x)
		appendEvent(tx, fftype.EventCancelled, x, now, map[string]any{"reason": p.Reason, "by": by})
		return nil
	}
	if p.Fence != nil {
		replay := func(x *fftype.Execution) bool { return x.Outcome == fftype.OutcomeCancelled }
		return e.holderUnit(ctx, id, *p.Fence, 0, replay, apply)
	}
	shard, err := e.checkID(id)
	if err != nil {
		return err
	}
	return e.update(ctx, shard, func(tx ffstore.Tx) error {
		x, err := getExec(tx, id)
		if err != nil {
			return err
		}
		if x.Phase == fftype.PhaseTerminal {
			if x.Outcome == fftype.OutcomeCancelled {
				return nil
			}
			return fftype.Statef(fftype.CodeExecutionTerminal, "execution %s already ended as %s", id, x.PublicState())
		}
		return apply(tx, x, placementOf(x), e.now())
	})
}

// Revoke takes the lease away from its holder (an operator action). The holder's later
// calls fail with lease_revoked; the execution is eligible again and its next claim is a
// reclaim attempt, or it fails if the reclaim cap is used up.
func (e *Engine) Revoke(ctx context.Context, id fftype.ExecutionID, reason string) error {
	if err := fftype.ValidateReason("reason", reason); err != nil {
		return err
	}
	shard, err := e.checkID(id)
	if err != nil {
		return err
	}
	err = e.update(ctx, shard, func(tx ffstore.Tx) error {
		x, err := getExec(tx, id)
		if err != nil {
			return err
		}
		if x.Ownership != fftype.OwnershipLeased {
			return fftype.Statef(fftype.CodeNoActiveLease, "execution %s has no lease (it is %s)", id, x.PublicState())
		}
		return e.loseLease(tx, x, placementOf(x), fftype.LeaseEndRevoked, reason, e.now())
	})
	if err == nil {
		e.notifyTimers()
	}
	return err
}

// loseLease ends x's lease without its holder: the attempt is interrupted and the
// execution goes back to eligible for a reclaim attempt, or fails when the reclaim cap is
// used up. A deadline or attempt timeout that has come decides instead, as it holds from
// its time on (leaseEndingTimer): the timed-out work does not run again.
func (e *Engine) loseLease(tx ffstore.Tx, x *fftype.Execution, before placement, how, reason string, now time.Time) error {
	if q := leaseEndingTimer(x, now); q == queueDeadline || q == queueAttemptTimeout {
		_, err := e.fire(tx, q, x, before, now)
		return err
	}
	why := "lease_" + how
	if reason != "" {
		why += ": " + reason
	}
	if err := endAttempt(tx, x, fftype.AttemptInterrupted, why, "lease_lost", now); err != nil {
		return err
	}
	x.LastLeaseEnd = how
	event := fftype.EventLeaseExpired
	if how == fftype.LeaseEndRevoked {
		event = fftype.EventLeaseRevoked
	}
	data := map[string]any{"attempt_index": x.CurrentAttempt, "lease_epoch": x.LeaseEpoch, "reason": reason}
	if x.ReclaimCount >= x.Policy.MaxReclaims {
		x.FailureReason, x.FailureCategory = "max_reclaims_exceeded", "lease_lost"
		toTerminal(x, fftype.OutcomeFailed, now)
		e.save(tx, before, x)
		appendEvent(tx, event, x, now, data)
		appendEvent(tx, fftype.EventFailed, x, now, map[string]any{"attempt_index": x.CurrentAttempt, "reason": x.FailureReason})
		return nil
	}
	x.PendingReason = why
	toRunnable(x, fftype.AttemptStatePendingReclaim, now, fftype.BlockingWaitingForWorker, now)
	e.save(tx, before, x)
	appendEvent(tx, event, x, now, data)
	return nil
}
