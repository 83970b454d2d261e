package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric"
)

// SteadyStateConfig describes scenario 3, steady-state: Seed executions are created in
// bulk, then Refill more every RefillEvery, each with a policy Deadline from its creation,
// while one SDK worker ([flowfabric.NewWorker] with a [flowfabric.Handle] handler, leases
// of LeaseTTL renewed by the SDK) runs up to Workers tasks at once, each taking TaskTime.
// The run lasts Duration from the end of the seeding. BENCHMARKS.md's figures are 10,000,
// 20 every 10 s, 60 s, 100 workers, 6 s, 3 s and 5 minutes.
type SteadyStateConfig struct {
	Seed        int
	Refill      int
	RefillEvery time.Duration
	Deadline    time.Duration
	Workers     int
	LeaseTTL    time.Duration
	TaskTime    time.Duration
	Duration    time.Duration
	// Window is the end of the run the steady throughput is measured over; 0 means 60 s.
	// A window longer than Duration is Duration.
	Window       time.Duration
	PayloadBytes int
	// Lane is the lane to use; "" means "bench".
	Lane string
	// Progress, if set, receives the seeding's and the run's progress.
	Progress ProgressFunc
}

// SteadyStateResult is what a steady-state run measured. An execution missed its
// deadline when the deadline passed before it completed: the engine expired it
// (Expired), or a worker completed it after the deadline before the engine's timer fired
// (CompletedLate), or it was still waiting or running at the end with its deadline past
// (PendingLate). Executions still pending at the end with their deadline ahead (Pending)
// have no outcome yet and count neither way.
type SteadyStateResult struct {
	Created   int // seeded and refilled
	Completed int // completions acknowledged to the workers
	// PerSec is the steady throughput: completions in the last Window, per second.
	PerSec float64
	// WholeRunPerSec is Completed per second of Duration.
	WholeRunPerSec float64
	Window         time.Duration
	// Task is, per completion, from the handler's start (just after the claim) until
	// Complete returned; it includes TaskTime.
	Task Latency
	// CreateComplete is, per completion, from the engine's creation time to its completion
	// time.
	CreateComplete Latency

	Expired, CompletedLate, PendingLate, Pending int
	// MissedDeadlinePct is the executions that missed their deadline as a percentage of
	// those with an outcome: Completed plus the missed ones.
	MissedDeadlinePct float64

	// Renewals counts the lease renewals the SDK made; Claims and Completes the claim and
	// complete calls.
	Renewals, Claims, Completes int
	// RenewalsPerTask is Renewals per completion; RenewalShare is Renewals as a fraction of
	// the claim, renew and complete calls.
	RenewalsPerTask, RenewalShare float64

	// RSS is the process's resident memory over the run.
	RSS RSSTrend
	// Errors counts retryable errors that were retried.
	Errors int
}

// SteadyState seeds, runs the SDK worker and the refills for cfg.Duration, stops the
// worker (cancelling its running tasks, whose executions are released), and checks the
// outcome against the store's listing: every created execution is listed once; each
// completed one was acknowledged to exactly one handler and no acknowledged one ended
// otherwise; the others expired or are still pending; none failed or was cancelled.
func SteadyState(ctx context.Context, c Backend, cfg SteadyStateConfig) (*SteadyStateResult, error) {
	if cfg.Seed < 0 || cfg.Refill < 0 || cfg.RefillEvery <= 0 || cfg.Deadline <= 0 || cfg.Workers < 1 ||
		cfg.LeaseTTL <= 0 || cfg.TaskTime < 0 || cfg.Duration <= 0 || cfg.Window < 0 || cfg.PayloadBytes < 0 {
		return nil, fmt.Errorf("bench: steady-state needs seed, refill, task time, window and payload ≥ 0, and refill interval, deadline, lease TTL, duration > 0 and workers ≥ 1")
	}
	if cfg.Lane == "" {
		cfg.Lane = "bench"
	}
	if cfg.Window == 0 {
		cfg.Window = time.Minute
	}
	cfg.Window = min(cfg.Window, cfg.Duration)
	p := flowfabric.CreateParams{Lane: cfg.Lane, Kind: "bench", Payload: Payload(cfg.PayloadBytes, ""),
		Policy: flowfabric.Policy{Deadline: flowfabric.Duration(cfg.Deadline)}}

	created := make(map[flowfabric.ExecutionID]bool, cfg.Seed)
	var seeded atomic.Int64
	stopProgress := progress(cfg.Progress, func() Progress {
		return Progress{Phase: "seed", Done: int(seeded.Load()), Total: cfg.Seed, Unit: "executions"}
	})
	err := createN(ctx, c, p, cfg.Seed, created, &seeded)
	stopProgress()
	if err != nil {
		return nil, fmt.Errorf("bench: seeding: %w", err)
	}

	run := &steadyStateRun{cfg: cfg, backend: &countingBackend{Backend: c}}
	w, err := run.openWorker(ctx)
	if err != nil {
		return nil, err
	}
	rss := sampleRSS(max(min(cfg.Duration/60, time.Second), 10*time.Millisecond))
	start := time.Now()
	stopProgress = progress(cfg.Progress, func() Progress {
		return Progress{Phase: "run", Done: int(time.Since(start).Seconds()), Total: int(cfg.Duration.Seconds()), Unit: "s",
			Completed: int(run.completed.Load())}
	})
	runDone := make(chan struct{})
	var runErr error
	go func() {
		defer close(runDone)
		runErr = w.Run(ctx)
	}()
	err = run.refill(ctx, c, p, created, start, runDone)
	// The end of the run, whatever happened: cancel the running tasks (their executions
	// are released) and close the worker.
	end := time.Now()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	stopErr := w.StopAndCancel(cctx)
	<-runDone
	err = errors.Join(err, stopErr, runErr, w.Close(cctx))
	stopProgress()
	trend := rss()
	if err != nil {
		return nil, err
	}

	res := run.result(end.Sub(start), end)
	res.Created = len(created)
	res.RSS = trend
	if err := run.check(ctx, c, created, res); err != nil {
		return nil, err
	}
	return res, nil
}

// steadyStateRun is one steady-state run's worker side.
type steadyStateRun struct {
	cfg       SteadyStateConfig
	backend   *countingBackend
	completed atomic.Int64
	errs      atomic.Int64

	mu    sync.Mutex
	acked []completion // completions acknowledged to the handlers
}

// completion is one Complete acknowledged to a handler.
type completion struct {
	id         flowfabric.ExecutionID
	start, end time.Time
}

// openWorker opens the SDK worker on the counting backend with the task handler.
func (r *steadyStateRun) openWorker(ctx context.Context) (*flowfabric.Worker, error) {
	w, err := flowfabric.NewWorker(ctx, r.backend, &flowfabric.WorkerConfig{WorkerID: "bench", Lanes: []string{r.cfg.Lane},
		LeaseTTL: r.cfg.LeaseTTL, MaxConcurrentTasks: r.cfg.Workers}, nil)
	if err != nil {
		return nil, fmt.Errorf("bench: opening the worker: %w", err)
	}
	flowfabric.Handle(w, "bench", r.handle)
	return w, nil
}

// handle is the task: it takes TaskTime, then completes the execution itself so that it
// knows the completion landed. A task cut short (its deadline passed, or the run ended)
// returns the cause, and the SDK settles it.
func (r *steadyStateRun) handle(ctx context.Context, t *flowfabric.Task[json.RawMessage]) error {
	start := time.Now()
	if err := pause(ctx, r.cfg.TaskTime); err != nil {
		return context.Cause(ctx)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := retry(cctx, &r.errs, func() error { return t.Complete(cctx, nil) }); err != nil {
		return err // refused: the deadline passed meanwhile
	}
	r.mu.Lock()
	r.acked = append(r.acked, completion{id: t.ExecutionID(), start: start, end: time.Now()})
	r.mu.Unlock()
	r.completed.Add(1)
	return nil
}

// refill creates cfg.Refill executions every cfg.RefillEvery until cfg.Duration has
// passed since start. It fails if the worker's Run ends first (runDone is closed).
func (r *steadyStateRun) refill(ctx context.Context, c Client, p flowfabric.CreateParams, created map[flowfabric.ExecutionID]bool, start time.Time, runDone <-chan struct{}) error {
	end := time.NewTimer(time.Until(start.Add(r.cfg.Duration)))
	defer end.Stop()
	t := time.NewTicker(r.cfg.RefillEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-runDone:
			return errors.New("bench: the worker stopped before the end of the run")
		case <-end.C:
			return nil
		case <-t.C:
			if err := createN(ctx, c, p, r.cfg.Refill, created, nil); err != nil {
				return fmt.Errorf("bench: refill: %w", err)
			}
		}
	}
}

// result computes the throughputs, latencies and call counts of a run that lasted ran
// and ended at end.
func (r *steadyStateRun) result(ran time.Duration, end time.Time) *SteadyStateResult {
	res := &SteadyStateResult{Window: r.cfg.Window, Errors: int(r.errs.Load())}
	windowStart := end.Add(-r.cfg.Window)
	var task []time.Duration
	for _, a := range r.acked {
		task = append(task, a.end.Sub(a.start))
		if !a.end.Before(windowStart) && !a.end.After(end) {
			res.PerSec++
		}
	}
	res.Completed = len(r.acked)
	res.PerSec /= r.cfg.Window.Seconds()
	res.WholeRunPerSec = float64(res.Completed) / ran.Seconds()
	res.Task = Summarize(task)
	b := r.backend
	res.Renewals, res.Claims, res.Completes = int(b.renews.Load()), int(b.claims.Load()), int(b.completes.Load())
	if res.Completed > 0 {
		res.RenewalsPerTask = float64(res.Renewals) / float64(res.Completed)
	}
	if calls := res.Renewals + res.Claims + res.Completes; calls > 0 {
		res.RenewalShare = float64(res.Renewals) / float64(calls)
	}
	return res
}

// check classifies every created execution by the store's listing into res and fails on
// anything a correct engine cannot produce (see [SteadyState]).
func (r *steadyStateRun) check(ctx context.Context, c Backend, created map[flowfabric.ExecutionID]bool, res *SteadyStateResult) error {
	ids := make([]flowfabric.ExecutionID, len(r.acked))
	for i, a := range r.acked {
		ids[i] = a.id
	}
	acked, err := acknowledged(created, ids)
	if err != nil {
		return err
	}
	now := c.Clock().Now()
	var createComplete []time.Duration
	err = eachCreated(ctx, c, r.cfg.Lane, "", created, func(x *flowfabric.Execution) error {
		state := x.PublicState()
		if acked[x.ID] != (state == flowfabric.StateCompleted) {
			return fmt.Errorf("bench: correctness: %s is %s, and its completion was acknowledged: %v", x.ID, state, acked[x.ID])
		}
		switch state {
		case flowfabric.StateCompleted:
			createComplete = append(createComplete, x.CompletedAt.Sub(x.CreatedAt))
			if x.CompletedAt.After(x.DeadlineAt) {
				res.CompletedLate++
			}
		case flowfabric.StateExpired:
			res.Expired++
		case flowfabric.StateWaiting, flowfabric.StateActive, flowfabric.StateDelayed:
			if x.DeadlineAt.After(now) {
				res.Pending++
			} else {
				res.PendingLate++
			}
		default:
			return fmt.Errorf("bench: correctness: %s ended %s (%s)", x.ID, state, x.FailureReason)
		}
		return nil
	})
	if err != nil {
		return err
	}
	res.CreateComplete = Summarize(createComplete)
	if missed := res.Expired + res.CompletedLate + res.PendingLate; missed > 0 {
		res.MissedDeadlinePct = 100 * float64(missed) / float64(res.Completed+missed)
	}
	return nil
}

// countingBackend counts a worker's claim, renew and complete calls.
type countingBackend struct {
	Backend
	claims, renews, completes atomic.Int64
}

// Claim counts and claims.
func (b *countingBackend) Claim(ctx context.Context, p flowfabric.ClaimParams) ([]*flowfabric.Lease, error) {
	b.claims.Add(1)
	return b.Backend.Claim(ctx, p)
}

// Renew counts and renews.
func (b *countingBackend) Renew(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, ttl time.Duration) (time.Time, error) {
	b.renews.Add(1)
	return b.Backend.Renew(ctx, id, f, ttl)
}

// Complete counts and completes.
func (b *countingBackend) Complete(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, result []byte, enc flowfabric.PayloadEncoding) error {
	b.completes.Add(1)
	return b.Backend.Complete(ctx, id, f, result, enc)
}
