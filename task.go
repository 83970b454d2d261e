package flowfabric

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// ClaimedTask is an execution a [Worker] claimed: what it needs to run it, and the calls
// that report on it under the lease's fence. Its lease is renewed every third of its TTL
// until a finishing call — Complete, Fail, Cancel, Delay or Release — lands. It holds
// one of the worker's MaxConcurrentTasks slots until then too, or, if [Worker.Run]
// claimed it, until its handler returned and its outcome was reported: a handler that
// finished its task itself may still be working. A call
// "lands" when the engine accepted it or refused it because the lease is gone (a state or
// not-found error); a call refused for bad input or a store outage leaves the task held so
// it can be retried. Go has no destructor: a task claimed by hand must end with one of the
// finishing calls (Release gives the work back), or its lease lives until the worker
// closes. It is safe for concurrent use.
type ClaimedTask struct {
	w     *Worker
	lease Lease
	rs    *runState // the Run that claimed it, which frees its slot; nil when claimed by hand

	ctx    context.Context
	cancel context.CancelCauseFunc

	renewCtx  context.Context // until the task finishes, loses its lease, or the worker closes
	stopRenew context.CancelFunc

	done     chan struct{} // closed when a finishing call landed
	doneOnce sync.Once
	settling atomic.Bool // its handler returned: the runtime is reporting the outcome

	failures atomic.Int32 // consecutive failed renewals
	lost     atomic.Bool
	gone     chan struct{} // closed when lost is set: wakes settle's back-off
	expiry   atomic.Int64  // the lease's latest known expiry on the backend's clock, Unix ns

	// A finishing call's own events (cancelled, failed, retry_scheduled) may arrive before
	// the call returns. While one is in flight, confirm leaves the task alone and notes
	// that it did; finish checks again if the call did not land.
	finishing   atomic.Int32 // finishing calls in flight
	unconfirmed atomic.Bool  // a loss event came while one was

	refused atomic.Pointer[refusal] // the last finishing call refused for a passing reason
}

// refusal is a finishing call refused for a passing reason: err, the refusal as the call
// returned it, and again, the report that makes the same call once more.
type refusal struct {
	err   error
	again report
}

func newClaimedTask(w *Worker, l *Lease, parent context.Context, rs *runState) *ClaimedTask {
	t := &ClaimedTask{w: w, lease: *l, rs: rs, done: make(chan struct{}), gone: make(chan struct{})}
	t.lease.Tags = maps.Clone(l.Tags)
	t.ctx, t.cancel = context.WithCancelCause(parent)
	t.renewCtx, t.stopRenew = context.WithCancel(w.life)
	t.expiry.Store(l.ExpiresAt.UnixNano())
	return t
}

// Task is a claimed execution whose payload was decoded into Args, as handlers registered
// with [Handle] receive it. Args is decoded from JSON, except that a []byte or
// json.RawMessage Args receives the payload's bytes as they are (binary payloads too).
type Task[T any] struct {
	*ClaimedTask
	// Args is the decoded payload; the zero value when the payload is empty.
	Args T
}

// decodeTask decodes t's payload into a Task[T].
func decodeTask[T any](t *ClaimedTask) (*Task[T], error) {
	task := &Task[T]{ClaimedTask: t}
	p := t.lease.Payload
	if len(p) == 0 {
		return task, nil
	}
	switch a := any(&task.Args).(type) {
	case *[]byte:
		*a = bytes.Clone(p)
	case *json.RawMessage:
		*a = bytes.Clone(p)
	default:
		if t.lease.Encoding == EncodingBinary {
			return nil, fmt.Errorf("the payload is binary; a handler for it takes []byte")
		}
		if err := json.Unmarshal(p, &task.Args); err != nil {
			return nil, err
		}
	}
	return task, nil
}

// Context returns the task's context. It is cancelled when the execution is cancelled
// (cause [ErrExecutionCancelled]), its lease is lost ([ErrLeaseLost]), the worker stops
// ([ErrWorkerStopped]) or a finishing call landed ([ErrTaskFinished]); context.Cause says
// which. Handlers receive it as their ctx.
func (t *ClaimedTask) Context() context.Context { return t.ctx }

// ExecutionID returns the execution's id.
func (t *ClaimedTask) ExecutionID() ExecutionID { return t.lease.ExecutionID }

// Namespace returns the execution's namespace.
func (t *ClaimedTask) Namespace() string { return t.lease.Namespace }

// Lane returns the lane the execution was claimed from.
func (t *ClaimedTask) Lane() string { return t.lease.Lane }

// Kind returns the execution's kind.
func (t *ClaimedTask) Kind() string { return t.lease.Kind }

// Tags returns a copy of the execution's tags.
func (t *ClaimedTask) Tags() map[string]string { return maps.Clone(t.lease.Tags) }

// Payload returns the execution's input as stored. A JSON payload that reached the worker
// over HTTP is the same JSON value with its insignificant whitespace dropped (the API
// carries it as JSON); a binary payload's bytes are always exact.
func (t *ClaimedTask) Payload() []byte { return t.lease.Payload }

// Encoding returns how the payload is encoded.
func (t *ClaimedTask) Encoding() PayloadEncoding { return t.lease.Encoding }

// Attempt returns the index of the running attempt, from 0.
func (t *ClaimedTask) Attempt() int { return t.lease.AttemptIndex }

// AttemptType says why the attempt started: initial, retry, replay or reclaim.
func (t *ClaimedTask) AttemptType() fftype.AttemptType { return t.lease.AttemptType }

// Resumed reports whether the task continues an attempt paused by a delay or a release.
func (t *ClaimedTask) Resumed() bool { return t.lease.Resumed }

// Fence returns the lease's fence, which every call on the task presents.
func (t *ClaimedTask) Fence() Fence { return t.lease.Fence }

// Lease returns a copy of the lease as claimed (its expiry is not updated by renewals).
func (t *ClaimedTask) Lease() Lease {
	l := t.lease
	l.Tags = maps.Clone(l.Tags)
	return l
}

// Finished reports whether a finishing call landed (or the runtime gave the task up).
func (t *ClaimedTask) Finished() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// extend notes exp, a renewal's new expiry of the lease, unless a later one is known.
func (t *ClaimedTask) extend(exp time.Time) {
	n := exp.UnixNano()
	for {
		old := t.expiry.Load()
		if n <= old || t.expiry.CompareAndSwap(old, n) {
			return
		}
	}
}

// expiresAt returns the lease's latest known expiry, on the backend's clock.
func (t *ClaimedTask) expiresAt() time.Time { return time.Unix(0, t.expiry.Load()) }

// LeaseHealthy reports whether the lease is believed held: it was not lost and fewer than
// three renewals in a row failed.
func (t *ClaimedTask) LeaseHealthy() bool { return !t.lost.Load() && t.failures.Load() < 3 }

// ConsecutiveRenewalFailures returns how many renewals in a row failed.
func (t *ClaimedTask) ConsecutiveRenewalFailures() int { return int(t.failures.Load()) }

// lands reports whether a call's result ends the task: it was accepted, or refused because
// the execution is no longer this lease's to act on.
func lands(err error) bool {
	var fe *fftype.Error
	return err == nil || errors.As(err, &fe) && (fe.Kind == fftype.KindState || fe.Kind == fftype.KindNotFound)
}

// leaseGone reports whether a renewal's error means the lease is gone for good.
func leaseGone(err error) bool { return err != nil && lands(err) }

// finish runs a finishing call and ends the task if it landed. A call refused for a
// passing reason is kept with again, the report that makes it once more, for a handler
// that returns the refusal (see refusedIn).
func (t *ClaimedTask) finish(call func() error, again report) error {
	t.finishing.Add(1)
	err := call()
	t.finishing.Add(-1)
	if lands(err) {
		t.detach()
		return err
	}
	if passing(err) {
		t.refused.Store(&refusal{err: err, again: again})
	}
	if t.unconfirmed.Swap(false) {
		t.w.confirm(t)
	}
	return err
}

// refusedIn returns the report that makes again the last finishing call of t refused for
// a passing reason, if err is that refusal or wraps it, or else nil.
func (t *ClaimedTask) refusedIn(err error) *report {
	r := t.refused.Load()
	if r == nil || !wraps(err, r.err) {
		return nil
	}
	return &r.again
}

// wraps reports whether err is target or wraps it: the very value, not one that matches
// it (errors.Is would take any refusal of the same kind for it).
func wraps(err, target error) bool {
	if !reflect.TypeOf(target).Comparable() {
		return false
	}
	for pending := []error{err}; len(pending) > 0; {
		e := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		if e == target {
			return true
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			pending = append(pending, u.Unwrap())
		case interface{ Unwrap() []error }:
			pending = append(pending, u.Unwrap()...)
		}
	}
	return false
}

// detach ends the task on the worker's side: renewal stops, the context is cancelled, and
// the slot of a task claimed by hand is freed (Run frees its own tasks' slots when their
// handlers return). The lease is whatever the last call left.
func (t *ClaimedTask) detach() {
	t.doneOnce.Do(func() {
		close(t.done)
		t.stopRenew()
		t.cancel(ErrTaskFinished)
		t.w.unregister(t)
		if t.rs == nil {
			t.w.releaseSlots(1)
		}
	})
}

// loseLease cancels the task because a call on its lease was refused with err, a sign the
// lease is gone, and reports whether it did (see loseUnlessFinishing).
func (t *ClaimedTask) loseLease(ctx context.Context, err error) bool {
	return t.loseUnlessFinishing(func() error { return t.w.lossCause(ctx, t, err) })
}

// loseUnlessFinishing cancels the task with the cause that cause reads of its lost lease,
// if any, and reports whether it did. While a finishing call of the task is in flight it
// only notes that the lease looked gone: that call's landing may be what ended it, and
// finish confirms if the call did not land.
func (t *ClaimedTask) loseUnlessFinishing(cause func() error) bool {
	if t.finishing.Load() == 0 {
		c := cause()
		if c == nil {
			return false
		}
		if t.finishing.Load() == 0 && !t.Finished() { // no finishing call began meanwhile
			t.lose(c)
			return true
		}
	}
	t.unconfirmed.Store(true)
	return false
}

// lose cancels the task because its lease is gone (or the execution was cancelled).
func (t *ClaimedTask) lose(cause error) {
	if t.lost.CompareAndSwap(false, true) {
		close(t.gone)
	}
	t.cancel(cause)
	t.stopRenew()
}

// Complete ends the execution successfully with result (JSON, or nil for none). A retried
// Complete after a lost response succeeds.
func (t *ClaimedTask) Complete(ctx context.Context, result []byte) error {
	return t.complete(ctx, result, EncodingJSON)
}

// CompleteBinary is [ClaimedTask.Complete] with a result of opaque bytes rather than JSON.
func (t *ClaimedTask) CompleteBinary(ctx context.Context, result []byte) error {
	return t.complete(ctx, result, EncodingBinary)
}

func (t *ClaimedTask) complete(ctx context.Context, result []byte, enc PayloadEncoding) error {
	return t.finish(func() error { return t.w.backend.Complete(ctx, t.lease.ExecutionID, t.lease.Fence, result, enc) },
		plainReport(t, func(ctx context.Context) error { return t.complete(ctx, result, enc) }))
}

// Fail fails the attempt with p.Reason and p.Category. The execution is retried per its
// policy unless p.NoRetry is set or the category is non-retryable; the outcome says which.
func (t *ClaimedTask) Fail(ctx context.Context, p FailParams) (FailOutcome, error) {
	var out FailOutcome
	err := t.finish(func() (err error) {
		out, err = t.w.backend.Fail(ctx, t.lease.ExecutionID, t.lease.Fence, p)
		return err
	}, failReport(t, p))
	return out, err
}

// Cancel ends the execution as cancelled, by its lease holder.
func (t *ClaimedTask) Cancel(ctx context.Context, reason string) error {
	f := t.lease.Fence
	return t.finish(func() error {
		return t.w.backend.Cancel(ctx, t.lease.ExecutionID, CancelParams{Reason: reason, Fence: &f})
	}, cancelReport(t, reason))
}

// Delay pauses the attempt: the execution is eligible again after d, and its next claim
// continues the same attempt, counting no retry.
func (t *ClaimedTask) Delay(ctx context.Context, d time.Duration) error {
	return t.finish(func() error { return t.w.backend.Delay(ctx, t.lease.ExecutionID, t.lease.Fence, d) },
		plainReport(t, func(ctx context.Context) error { return t.Delay(ctx, d) }))
}

// Release gives the lease back: the execution is eligible at once, and its next claim
// continues the same attempt, counting neither a retry nor a reclaim.
func (t *ClaimedTask) Release(ctx context.Context) error {
	return t.finish(func() error { return t.w.backend.Release(ctx, t.lease.ExecutionID, t.lease.Fence) },
		plainReport(t, t.Release))
}

// Progress records the attempt's progress: 0 to 100 percent and a message of at most
// 1,024 bytes. If the lease is gone, the task's context is cancelled too.
func (t *ClaimedTask) Progress(ctx context.Context, percent int, message string) error {
	err := t.w.backend.Progress(ctx, t.lease.ExecutionID, t.lease.Fence, percent, message)
	if leaseGone(err) {
		t.loseLease(ctx, err)
	}
	return err
}

// Renew extends the lease by its TTL now and returns the new expiry. The worker renews
// automatically; this is for callers that want to be sure before a long step.
func (t *ClaimedTask) Renew(ctx context.Context) (time.Time, error) {
	exp, err := t.w.backend.Renew(ctx, t.lease.ExecutionID, t.lease.Fence, 0)
	switch {
	case err == nil:
		t.extend(exp)
	case leaseGone(err):
		t.loseLease(ctx, err)
	}
	return exp, err
}

// renewLoop renews the lease every third of its TTL on the backend's clock until the task
// finishes, loses its lease or the worker closes. Missed ticks are skipped, not burst. A
// renewal refused because the lease is gone cancels the task with the reason (a cancel
// reaches a worker without events this way).
func (t *ClaimedTask) renewLoop() {
	clock := t.w.clock
	ttl := t.lease.TTL.D()
	interval := max(ttl/3, time.Millisecond)
	last := t.lease.ExpiresAt.Add(-ttl)
	for {
		if clock.SleepUntil(t.renewCtx, last.Add(interval), nil) != nil {
			return
		}
		ctx, cancel := context.WithTimeout(t.renewCtx, callTimeout(interval))
		exp, err := t.w.backend.Renew(ctx, t.lease.ExecutionID, t.lease.Fence, 0)
		cancel()
		last = clock.Now()
		switch {
		case err == nil:
			t.failures.Store(0)
			t.extend(exp)
		case t.renewCtx.Err() != nil:
			return
		case leaseGone(err):
			if t.loseLease(t.renewCtx, err) {
				t.failures.Add(1)
				t.w.log.Warn("lease lost; stopped renewing", "execution_id", t.lease.ExecutionID, "err", err)
			}
		default:
			n := t.failures.Add(1)
			t.w.log.Warn("lease renewal failed; retrying at the next tick", "execution_id", t.lease.ExecutionID, "failures", n, "err", err)
		}
		if s := t.w.signals.Load(); s != nil {
			s.send(s.Renewed, t.lease.ExecutionID)
		}
		if t.lost.Load() {
			return
		}
	}
}
