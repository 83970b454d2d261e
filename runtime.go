package flowfabric

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// HandlerFunc runs a claimed task whose payload is not decoded yet: the form every handler
// takes inside the worker, and the one [Middleware] wraps.
type HandlerFunc func(ctx context.Context, t *ClaimedTask) error

// Middleware wraps every handler of a worker, for logging, metrics, tracing or recovery of
// its own. It sees the task before its payload is decoded.
type Middleware func(next HandlerFunc) HandlerFunc

// Handle registers fn as the handler of executions of kind on w. The payload is decoded
// from JSON into T before fn runs (a payload that does not decode fails the execution at
// once, category "payload_decode"). What fn returns decides what happens to the execution:
//
//   - nil: it completes (unless fn already finished the task itself, for example with
//     Complete and a result; if that call was refused for a passing reason, it is made
//     again, as below);
//   - [NoRetry](err): it fails for good;
//   - [Snooze](d): the attempt pauses and the execution is eligible again after d;
//   - [Cancel](err): it is cancelled;
//   - the error of a finishing call fn made itself (Complete, Fail, Cancel, Delay or
//     Release) refused for a passing reason, such as a store outage, or an error wrapping
//     it: the runtime makes that call again, with the same arguments, retrying as it does
//     the outcome of nil (so `return t.Complete(ctx, result)` is safe);
//   - any other error: the attempt fails (category "handler_error") and is retried per the
//     execution's policy;
//   - a panic: the attempt fails (category "handler_panic") with the panic value and stack.
//
// Any other error returned after the worker stopped (the task's context was cancelled
// with [ErrWorkerStopped]) releases the execution instead, so another worker continues it
// at once. Handle panics if kind is not a valid kind or already has a handler; see
// [HandleSafely]. Handlers may be added while the worker runs.
func Handle[T any](w *Worker, kind string, fn func(ctx context.Context, t *Task[T]) error) {
	if err := HandleSafely(w, kind, fn); err != nil {
		panic(err)
	}
}

// HandleSafely is [Handle] returning a *[ConfigError] instead of panicking.
func HandleSafely[T any](w *Worker, kind string, fn func(ctx context.Context, t *Task[T]) error) error {
	if fn == nil {
		return &ConfigError{Field: "handler", Message: "the handler is nil"}
	}
	if err := fftype.ValidateKind(kind); err != nil {
		return configErr("kind", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.handlers[kind]; ok {
		return &ConfigError{Field: "kind", Message: fmt.Sprintf("kind %q already has a handler", kind)}
	}
	w.handlers[kind] = func(ctx context.Context, ct *ClaimedTask) error {
		t, err := decodeTask[T](ct)
		if err != nil {
			return &decodeError{err: err}
		}
		return fn(ctx, t)
	}
	return nil
}

// Use adds middleware around every handler of w. The first added is the outermost. A panic in
// middleware, as it wraps a handler or as it runs, fails the attempt as one in a handler does.
func (w *Worker) Use(mw ...Middleware) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.middleware = append(w.middleware, mw...)
}

// NoRetryError is returned by [NoRetry]: the execution fails for good.
type NoRetryError struct{ Err error }

// NoRetry marks err as final: a handler returning it fails the execution without a retry.
func NoRetry(err error) error { return &NoRetryError{Err: err} }

// Error implements error.
func (e *NoRetryError) Error() string { return "no retry: " + errText(e.Err) }

// Unwrap returns the cause.
func (e *NoRetryError) Unwrap() error { return e.Err }

// Is matches any *NoRetryError.
func (e *NoRetryError) Is(target error) bool { _, ok := target.(*NoRetryError); return ok }

// SnoozeError is returned by [Snooze]: the attempt pauses for Duration.
type SnoozeError struct{ Duration time.Duration }

// Snooze asks for the task to run again after d: the attempt pauses (its lease is given
// back), the execution is delayed until then, and its next claim continues the same
// attempt, counting no retry. Snooze panics if d is negative.
func Snooze(d time.Duration) error {
	if d < 0 {
		panic("flowfabric: Snooze with a negative duration")
	}
	return &SnoozeError{Duration: d}
}

// Error implements error.
func (e *SnoozeError) Error() string { return "snoozed for " + e.Duration.String() }

// Is matches any *SnoozeError.
func (e *SnoozeError) Is(target error) bool { _, ok := target.(*SnoozeError); return ok }

// CancelError is returned by [Cancel]: the execution is cancelled.
type CancelError struct{ Err error }

// Cancel asks for the execution to be cancelled, with err as the reason.
func Cancel(err error) error { return &CancelError{Err: err} }

// Error implements error.
func (e *CancelError) Error() string { return "cancelled: " + errText(e.Err) }

// Unwrap returns the cause.
func (e *CancelError) Unwrap() error { return e.Err }

// Is matches any *CancelError.
func (e *CancelError) Is(target error) bool { _, ok := target.(*CancelError); return ok }

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// decodeError is a payload that did not decode into the handler's type.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return "decoding the payload: " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// noHandlerError is a task of a kind with no handler.
type noHandlerError struct{ kind string }

func (e *noHandlerError) Error() string { return "no handler for kind " + e.kind }

// Failure categories the runtime reports.
const (
	CategoryHandlerError = "handler_error"
	CategoryHandlerPanic = "handler_panic"
	CategoryNoHandler    = "runtime_no_handler"
	CategoryDecode       = "payload_decode"
)

// runState is one Run of a worker.
type runState struct {
	fetchCtx    context.Context // claiming; cancelled by every kind of stop
	fetchCancel context.CancelCauseFunc
	workCtx     context.Context // the parent of handlers' contexts
	workCancel  context.CancelCauseFunc
	stopAfter   func() bool // unhooks the run from the worker's life
	wg          sync.WaitGroup
	done        chan struct{} // closed when Run returns

	mu  sync.Mutex
	err error // why Run failed
}

func (rs *runState) setErr(err error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.err == nil {
		rs.err = err
	}
}

// Run claims executions of the worker's lanes and runs them with the registered handlers,
// at most MaxConcurrentTasks at a time, until ctx ends or [Worker.Stop] or
// [Worker.StopAndCancel] is called. A handler holds its slot until it returned and its
// outcome was reported, also after it finished its task itself (for example with
// Complete and a result). A fetch asks only for free slots. When nothing is
// eligible it waits, doubling the wait from 50ms up to ClaimPollInterval, and is woken at
// once by new work in its lanes. Run returns when claiming has stopped and every handler
// has returned and its finishing call landed: nil after a stop, or the error that stopped
// it (another process took the instance id). The end of ctx is a hard stop: running
// handlers' contexts are cancelled and their executions released. Run needs at least one
// handler and runs once at a time.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	switch {
	case w.closing():
		w.mu.Unlock()
		return fftype.Statef(CodeWorkerClosed, "the worker was closed")
	case w.guardErr != nil:
		w.mu.Unlock()
		return w.guardErr
	case w.run != nil:
		w.mu.Unlock()
		return fftype.Statef(codeWorkerRunning, "the worker is already running")
	case len(w.handlers) == 0:
		w.mu.Unlock()
		return &ConfigError{Field: "handlers", Message: "no handler is registered; add one with Handle"}
	}
	rs := &runState{done: make(chan struct{})}
	rs.fetchCtx, rs.fetchCancel = context.WithCancelCause(ctx)
	rs.workCtx, rs.workCancel = context.WithCancelCause(context.WithoutCancel(ctx))
	rs.stopAfter = context.AfterFunc(w.life, func() {
		rs.fetchCancel(ErrWorkerStopped)
		rs.workCancel(ErrWorkerStopped)
	})
	// The end of ctx is a hard stop, also once a graceful Stop has ended the claim loop.
	hardStop := context.AfterFunc(ctx, func() { rs.workCancel(ErrWorkerStopped) })
	w.run = rs
	w.mu.Unlock()
	defer func() {
		hardStop()
		rs.stopAfter()
		rs.fetchCancel(ErrWorkerStopped)
		rs.workCancel(ErrWorkerStopped)
		w.mu.Lock()
		w.run = nil
		w.mu.Unlock()
		close(rs.done)
	}()

	w.fetch(rs)
	if s := w.signals.Load(); s != nil {
		s.send(s.Unclaimed, "")
	}
	rs.wg.Wait()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.err
}

// fetch is the claim loop of a Run.
func (w *Worker) fetch(rs *runState) {
	initial := min(minIdleBackoff, w.cfg.ClaimPollInterval)
	if w.idleBackoff > 0 {
		initial = w.idleBackoff
	}
	backoff := initial
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for rs.fetchCtx.Err() == nil {
		n := w.tryAcquire(min(cap(w.slots)-len(w.slots), fftype.MaxClaimCount))
		if n == 0 {
			if s := w.signals.Load(); s != nil {
				s.send(s.Full, "")
			}
			select {
			case <-rs.fetchCtx.Done():
				return
			case <-w.freed:
			}
			continue
		}
		// A claim in flight when the run stops returns nothing (see Backend.Claim).
		leases, err := w.backend.Claim(rs.fetchCtx, w.claimParams(n))
		w.releaseSlots(n - len(leases))
		if err != nil && rs.fetchCtx.Err() == nil {
			w.log.Warn("claim failed", "err", err)
		}
		for _, l := range leases {
			t, err := w.adopt(l, rs)
			if err != nil {
				w.releaseSlots(1) // the lease was given back and no handler will run
				continue
			}
			if s := w.signals.Load(); s != nil {
				s.send(s.Claimed, l.ExecutionID)
			}
			rs.wg.Go(func() { w.execute(t) })
		}
		if err == nil && len(leases) == n {
			backoff = initial
			continue // every slot asked for was filled: there may be more
		}
		if len(leases) > 0 {
			backoff = initial
		}
		if s := w.signals.Load(); s != nil {
			s.send(s.Idle, "")
		}
		timer.Reset(backoff)
		select {
		case <-rs.fetchCtx.Done():
			return
		case <-w.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		backoff = max(min(2*backoff, w.cfg.ClaimPollInterval), initial)
	}
}

// handlerFor returns the middleware-wrapped handler of kind.
func (w *Worker) handlerFor(kind string) HandlerFunc {
	w.mu.Lock()
	h, ok := w.handlers[kind]
	mw := w.middleware
	w.mu.Unlock()
	if !ok {
		h = func(context.Context, *ClaimedTask) error { return &noHandlerError{kind: kind} }
	}
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// execute runs one task's handler and settles the task, also when the handler ends its
// goroutine with runtime.Goexit (as t.FailNow in a handler does): that fails the attempt
// like a panic. Only then does it free the task's slot: a handler that finished its task
// itself and went on working counts against MaxConcurrentTasks until it returns.
func (w *Worker) execute(t *ClaimedTask) {
	panicText, err := "the handler did not return: it called runtime.Goexit", error(nil)
	defer func() {
		w.settle(t, err, panicText)
		w.releaseSlots(1)
		if s := w.signals.Load(); s != nil {
			s.send(s.Settled, t.lease.ExecutionID)
		}
	}()
	panicText, err = w.callHandler(t)
}

// callHandler wraps the task's handler in the middleware and runs it, turning a panic in
// either into its value and stack.
func (w *Worker) callHandler(t *ClaimedTask) (panicText string, err error) {
	defer func() {
		if v := recover(); v != nil {
			panicText = fmt.Sprintf("panic: %v\n%s", v, panicStack(debug.Stack()))
		}
	}()
	return "", w.handlerFor(t.lease.Kind)(t.ctx, t)
}

// panicStack drops the frames of the stack above the panicking function (the goroutine
// header, debug.Stack, the deferred recover and the runtime's panic).
func panicStack(stack []byte) string {
	s := string(stack)
	if i := strings.Index(s, "\npanic("); i >= 0 {
		rest := s[i+1:]
		// Skip "panic(...)" and its "\t.../runtime/panic.go:N" line.
		for range 2 {
			if j := strings.IndexByte(rest, '\n'); j >= 0 {
				rest = rest[j+1:]
			}
		}
		return rest
	}
	return s
}

// settle makes the call the handler's outcome asks for (see outcome), unless the task
// already finished. A call refused for a passing reason (the store unavailable, a
// conflict, no answer in time) is retried, waiting 10ms and then four times longer each
// time up to a second, for as long as it may still land: until the lease is found lost
// (the execution was cancelled, or another holder took it), or else until the lease's
// expiry known when the handler returned has passed and at least for the clean-up window
// (see settleBound; the renewals go on meanwhile, so the lease holds, but do not extend
// the tries). So an outage shorter than the lease does not run a finished handler again.
// Close ends the retries: it releases what is still held itself. If the call does not
// land, or is refused for good, the task is given up and its lease left to expire, so the
// execution is reclaimed. A call refused as invalid (a snooze longer than a delay may be,
// a reason the backend will not keep) is made again with the refusal as its reason: a
// failure keeps its category and whether it is final, a cancel stays a cancel, and any
// other outcome fails the attempt.
func (w *Worker) settle(t *ClaimedTask, err error, panicText string) {
	t.settling.Store(true) // Stop leaves the outcome to these tries
	if t.Finished() {
		return
	}
	r := outcome(t, err, panicText)
	call := r.call
	bound := settleBound{window: time.Now().Add(w.cleanupWindow()), expiry: t.expiresAt()}
	backoff := 10 * time.Millisecond
	refused := false
	for {
		cerr := w.settleTry(t, call, bound)
		if t.Finished() {
			if cerr != nil {
				w.log.Debug("the task's lease was gone when it finished", "execution_id", t.lease.ExecutionID, "err", cerr)
			}
			return
		}
		if errors.Is(cerr, fftype.ErrValidation) && !refused {
			refused = true
			call = r.retell("the worker could not report the handler's outcome: " + cerr.Error())
			continue
		}
		if passing(cerr) && w.mayLand(t, bound) && w.backOff(t, backoff) {
			backoff = min(4*backoff, maxSettleBackoff)
			continue
		}
		switch {
		case t.lost.Load():
			w.log.Debug("the task's lease was lost while its outcome was retried", "execution_id", t.lease.ExecutionID, "err", cerr)
		case w.closing():
			return // Close releases the lease, so the execution runs again at once
		default:
			w.log.Error("could not report a task's outcome; its lease will expire and the execution be reclaimed",
				"execution_id", t.lease.ExecutionID, "err", cerr)
		}
		t.detach()
		return
	}
}

// outcome returns the report of what t's handler left: err, what it returned, or
// panicText, its panic (see Handle). A handler that returns the refusal of a finishing
// call of its own for a passing reason (`return t.Complete(ctx, result)` in a store
// outage), an error wrapping it, or nil after such a refusal, has that call made again:
// its work is done, and failing the attempt would run it again (completing it with no
// result would lose the result).
func outcome(t *ClaimedTask, err error, panicText string) report {
	var (
		snooze    *SnoozeError
		cancelled *CancelError
		noRetry   *NoRetryError
		decode    *decodeError
		noHandler *noHandlerError
	)
	switch {
	case panicText != "":
		return failing(t, panicText, CategoryHandlerPanic, false)
	case err == nil:
		if r := t.refused.Load(); r != nil {
			return r.again // its own finishing call, refused by a blip, is what it meant
		}
		return plainReport(t, func(ctx context.Context) error { return t.Complete(ctx, nil) })
	case errors.As(err, &snooze):
		return plainReport(t, func(ctx context.Context) error { return t.Delay(ctx, snooze.Duration) })
	case errors.As(err, &cancelled):
		return cancelReport(t, fftype.ClipReason(errText(cancelled.Err)))
	case errors.As(err, &noRetry):
		return failing(t, errText(noRetry.Err), CategoryHandlerError, true)
	}
	if again := t.refusedIn(err); again != nil {
		return *again
	}
	switch {
	case errors.Is(context.Cause(t.ctx), ErrWorkerStopped):
		return plainReport(t, t.Release) // an error after the stop is the stop's doing: hand the work back
	case errors.As(err, &decode):
		return failing(t, err.Error(), CategoryDecode, true)
	case errors.As(err, &noHandler):
		return failing(t, err.Error(), CategoryNoHandler, false)
	default:
		return failing(t, err.Error(), CategoryHandlerError, false)
	}
}

// report is a finishing call that reports a task's outcome, and retell, which returns the
// call that reports it with another reason instead when the backend refuses it as invalid:
// as the same kind of outcome if it has a reason of its own (a failure keeps its category
// and whether it is final, a cancel stays a cancel), or else as a failed attempt.
type report struct {
	call   func(ctx context.Context) error
	retell func(reason string) func(ctx context.Context) error
}

// plainReport is the report of call, an outcome with no reason of its own (a result, a
// delay, a release).
func plainReport(t *ClaimedTask, call func(ctx context.Context) error) report {
	return report{call: call, retell: func(reason string) func(ctx context.Context) error {
		return failing(t, reason, CategoryHandlerError, false).call
	}}
}

// failReport is the report that fails t's attempt with p.
func failReport(t *ClaimedTask, p FailParams) report {
	return report{
		call: func(ctx context.Context) error {
			_, err := t.Fail(ctx, p)
			return err
		},
		retell: func(reason string) func(ctx context.Context) error {
			q := p
			q.Reason = fftype.ClipReason(reason)
			return failReport(t, q).call
		},
	}
}

// failing is the report that fails t's attempt with reason (clipped to the limit).
func failing(t *ClaimedTask, reason, category string, final bool) report {
	return failReport(t, FailParams{Reason: fftype.ClipReason(reason), Category: category, NoRetry: final})
}

// cancelReport is the report that cancels t's execution, as its lease holder, with reason.
func cancelReport(t *ClaimedTask, reason string) report {
	return report{
		call: func(ctx context.Context) error { return t.Cancel(ctx, reason) },
		retell: func(other string) func(ctx context.Context) error {
			return cancelReport(t, fftype.ClipReason(other)).call
		},
	}
}

// passing reports whether a call's error is a passing failure, worth trying the call again.
func passing(err error) bool {
	return fftype.IsRetryable(err) || errors.Is(err, context.DeadlineExceeded)
}

// maxSettleBackoff caps the wait between tries of a handler's outcome.
const maxSettleBackoff = time.Second

// settleTry makes a finishing call of t once. It may take until the outcome can no longer
// land (see mayLand) but no longer than a renewal may, so that a call stuck on a
// connection that died does not outlast the store's return.
func (w *Worker) settleTry(t *ClaimedTask, call func(ctx context.Context) error, bound settleBound) error {
	ctx, cancel := context.WithTimeout(w.life, min(bound.left(w.clock), callTimeout(t.lease.TTL.D()/3)))
	defer cancel()
	return call(ctx)
}

// settleBound is how long a finished handler's outcome is tried: until the clean-up window
// ends (window, on the local clock) or the lease's expiry known when the handler returned
// has passed (expiry, on the backend's clock, which leases are timed with), whichever is
// later. The renewals that go on meanwhile keep the lease but do not move the bound, so an
// outcome the store refuses for ever is given up.
type settleBound struct{ window, expiry time.Time }

// left returns how long the bound still leaves, on clock (the backend's).
func (b settleBound) left(clock Clock) time.Duration {
	return max(time.Until(b.window), b.expiry.Sub(clock.Now()))
}

// mayLand reports whether a finishing call of t may still land: its lease is not known
// lost (the execution cancelled, or another holder), Close has not begun, and bound is not
// reached.
func (w *Worker) mayLand(t *ClaimedTask, bound settleBound) bool {
	return !t.lost.Load() && !w.closing() && bound.left(w.clock) > 0
}

// backOff waits d before the next try of t's outcome and reports whether it waited that
// long: the wait is cut short when t's lease is found lost (the outcome can no longer
// land) or Close begins (it releases the lease instead).
func (w *Worker) backOff(t *ClaimedTask, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-t.gone:
	case <-w.closeBegun:
	}
	return false
}

// Stop stops claiming and waits until every running handler has returned and its
// finishing call landed. A claim in flight starts nothing: the backend gives back what it
// took, so that other workers take those executions at once. If ctx ends first, it
// escalates: the handlers' contexts are cancelled (cause [ErrWorkerStopped]), the leases
// of tasks whose handlers are still running are released so that other workers take them
// at once, and it returns ctx.Err() without waiting for the handlers. A handler that
// already returned keeps its outcome: its finishing call is still tried for as long as it
// may land (releasing it would run the handler again), and Run returns once it ends. Stop on a worker that is not running does nothing; it may be called again.
func (w *Worker) Stop(ctx context.Context) error { return w.stop(ctx, false) }

// StopAndCancel is [Worker.Stop] that cancels the running handlers' contexts at once:
// their executions are released when they return.
func (w *Worker) StopAndCancel(ctx context.Context) error { return w.stop(ctx, true) }

func (w *Worker) stop(ctx context.Context, cancel bool) error {
	rs := w.awaitStop(ctx, cancel)
	if rs == nil {
		return nil
	}
	rs.workCancel(ErrWorkerStopped)
	cctx, cc := w.cleanupContext(ctx)
	defer cc()
	if err := w.releaseAll(cctx, func(t *ClaimedTask) bool { return t.rs == rs && !t.settling.Load() }); err != nil {
		w.log.Warn("releasing the leases of stopped handlers failed", "err", err)
	}
	return ctx.Err()
}

// awaitStop stops the running Run's claim loop, cancels its handlers too if cancel is set,
// and waits until the Run returns or ctx ends. It returns the Run if it is still going
// (ctx ended first), or nil.
func (w *Worker) awaitStop(ctx context.Context, cancel bool) *runState {
	w.mu.Lock()
	rs := w.run
	w.mu.Unlock()
	if rs == nil {
		return nil
	}
	rs.fetchCancel(ErrWorkerStopped)
	if cancel {
		rs.workCancel(ErrWorkerStopped)
	}
	select {
	case <-rs.done:
		return nil
	case <-ctx.Done():
	}
	select {
	case <-rs.done:
		return nil // finished as ctx ended
	default:
		return rs
	}
}
