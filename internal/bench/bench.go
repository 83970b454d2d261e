// Package bench runs FlowFabric's benchmark scenarios (see BENCHMARKS.md in the shared
// docs) against a client: the engine in process, or a server over HTTP. It measures,
// checks and draws a progress bar; opening stores and printing results belong to the
// command that calls it.
//
// The scenarios are [Drain] (submit-claim-complete, and burn-down with many workers and
// empty payloads), [Steady] (a producer at a fixed rate or keeping a fixed backlog while
// claim loops drain it) and [SteadyState] (SDK workers running slow tasks with deadlines).
//
// Every scenario checks its own correctness — each execution it created was completed
// exactly once (or, where deadlines apply, at most once and otherwise expired), by the
// workers' own count and by the store's listing — and returns an error otherwise, so a
// fast but wrong run never reports a number.
package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/fftype"
)

// Client is what the scenarios drive: the parts of [flowfabric.Client] a worker and a
// producer use. A transport over HTTP implements it too.
type Client interface {
	CreateMany(ctx context.Context, ps []flowfabric.CreateParams) []flowfabric.BulkCreateResult
	Claim(ctx context.Context, p flowfabric.ClaimParams) ([]*flowfabric.Lease, error)
	Complete(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, result []byte, enc flowfabric.PayloadEncoding) error
	List(ctx context.Context, p flowfabric.ListParams) (*flowfabric.ListPage, error)
}

// Backend is a [Client] that SDK workers can also run on ([flowfabric.NewWorker]):
// *[flowfabric.Client] in process, *ffclient.Client over HTTP.
type Backend interface {
	Client
	flowfabric.Backend
	flowfabric.EventWatcher
}

var _ Backend = (*flowfabric.Client)(nil)

// SeedChunk is how many executions one bulk create carries while seeding.
const SeedChunk = 1000

// stallTimeout bounds how long workers go without a claim while work is known to be
// left before the run fails.
const stallTimeout = 30 * time.Second

// DrainConfig describes a drain run (scenario submit-claim-complete): N executions are
// seeded in bulk, then Workers loops claim one execution and complete it until all are
// done.
type DrainConfig struct {
	N            int
	Workers      int
	PayloadBytes int
	// Pipeline makes each loop claim its next execution while its last completion is
	// still in flight, as a worker does whose completions are sent in the background
	// (River's completer works so); a loop never has more than one completion in flight.
	// Without it a loop waits for each completion before it claims again.
	Pipeline bool
	// Lane is the lane to seed and drain; "" means "bench".
	Lane string
	// Progress, if set, receives the seeding's and the drain's progress.
	Progress ProgressFunc
	// DrainStarted, if set, is called just before the drain starts and DrainDone just after
	// the last completion (a CPU profile brackets the drain with them).
	DrainStarted, DrainDone func()
}

// DrainResult is what a drain run measured.
type DrainResult struct {
	Seed       time.Duration // seeding wall time
	SeedPerSec float64
	Drain      time.Duration // first claim to last completion
	PerSec     float64       // completions per second of Drain
	// ClaimComplete is per task: from the start of the Claim call that returned the lease
	// until Complete returned.
	ClaimComplete Latency
	Claim         Latency // Claim calls that returned a lease
	Complete      Latency // Complete calls
	Count         int     // executions completed
	// Errors counts retryable errors that were retried (a non-retryable one fails the run).
	Errors int
	// CPUPerTask is the process's CPU time (user + system, every goroutine) during the
	// drain divided by Count; 0 where it is not measured. Unlike throughput it hardly
	// moves when other processes share the machine.
	CPUPerTask time.Duration
	// MachineBusy is the share of the whole machine's CPU time, every process and core,
	// that was busy during the drain, from 0 to 1; 0 where it is not measured (Linux
	// only). Well below 1, the drain waited on round trips or a single-threaded server
	// rather than on CPU.
	MachineBusy float64
}

// Drain seeds and drains, then checks that every seeded execution was completed exactly
// once. It returns an error if any call fails for good, if the workers stall, or if the
// check fails.
func Drain(ctx context.Context, c Client, cfg DrainConfig) (*DrainResult, error) {
	if cfg.N < 1 || cfg.Workers < 1 || cfg.PayloadBytes < 0 {
		return nil, fmt.Errorf("bench: drain needs n ≥ 1, workers ≥ 1 and payload ≥ 0, got %d, %d, %d", cfg.N, cfg.Workers, cfg.PayloadBytes)
	}
	if cfg.Lane == "" {
		cfg.Lane = "bench"
	}
	res := &DrainResult{}
	payload := Payload(cfg.PayloadBytes, "")

	// Seed.
	created := make(map[flowfabric.ExecutionID]bool, cfg.N)
	var seeded atomic.Int64
	stopProgress := progress(cfg.Progress, func() Progress {
		return Progress{Phase: "seed", Done: int(seeded.Load()), Total: cfg.N, Unit: "executions"}
	})
	start := time.Now()
	err := createN(ctx, c, flowfabric.CreateParams{Lane: cfg.Lane, Kind: "bench", Payload: payload}, cfg.N, created, &seeded)
	stopProgress()
	if err != nil {
		return nil, fmt.Errorf("bench: seeding: %w", err)
	}
	res.Seed = time.Since(start)
	res.SeedPerSec = float64(cfg.N) / res.Seed.Seconds()

	// Drain.
	var claimed, completed, errCount atomic.Int64
	ws := make([]*workerStats, cfg.Workers)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if cfg.DrainStarted != nil {
		cfg.DrainStarted()
	}
	stopProgress = progress(cfg.Progress, func() Progress {
		return Progress{Phase: "drain", Done: int(completed.Load()), Total: cfg.N, Unit: "executions", Completed: int(completed.Load())}
	})
	cpu := processCPU()
	busy0, total0, machineOK := machineCPU()
	start = time.Now()
	var wg sync.WaitGroup
	for w := range ws {
		ws[w] = &workerStats{}
		wg.Go(func() {
			err := drainWorker(ctx, c, cfg, w, ws[w], &claimed, &completed, &errCount)
			if err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	res.Drain = time.Since(start)
	cpu = processCPU() - cpu
	if busy1, total1, ok := machineCPU(); ok && machineOK && total1 > total0 {
		res.MachineBusy = float64(busy1-busy0) / float64(total1-total0)
	}
	stopProgress()
	if cfg.DrainDone != nil {
		cfg.DrainDone()
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	res.Count = int(completed.Load())
	res.PerSec = float64(res.Count) / res.Drain.Seconds()
	res.Errors = int(errCount.Load())
	if res.Count > 0 {
		res.CPUPerTask = cpu / time.Duration(res.Count)
	}

	var cc, cl, co []time.Duration
	var done []flowfabric.ExecutionID
	for _, s := range ws {
		cc = append(cc, s.claimComplete...)
		cl = append(cl, s.claim...)
		co = append(co, s.complete...)
		done = append(done, s.done...)
	}
	res.ClaimComplete, res.Claim, res.Complete = Summarize(cc), Summarize(cl), Summarize(co)
	if err := Verify(ctx, c, cfg.Lane, created, done); err != nil {
		return nil, err
	}
	return res, nil
}

// workerStats is one worker's samples, merged after the run.
type workerStats struct {
	claimComplete, claim, complete []time.Duration
	done                           []flowfabric.ExecutionID
}

func drainWorker(ctx context.Context, c Client, cfg DrainConfig, w int, s *workerStats, claimed, completed, errCount *atomic.Int64) (err error) {
	p := flowfabric.ClaimParams{WorkerID: "bench", WorkerInstanceID: "bench-" + strconv.Itoa(w), Lanes: []string{cfg.Lane}, Count: 1}
	var completions inFlight
	defer func() {
		if ferr := completions.wait(); err == nil {
			err = ferr
		}
	}()
	lastClaim := time.Now()
	for {
		t0 := time.Now()
		leases, err := c.Claim(ctx, p)
		t1 := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return nil // another worker failed the run
			}
			if fftype.IsRetryable(err) {
				errCount.Add(1)
				continue
			}
			return fmt.Errorf("bench: claim: %w", err)
		}
		if len(leases) == 0 {
			if claimed.Load() >= int64(cfg.N) {
				return nil
			}
			// Work is left but this claim saw none: a store that skips items being
			// popped by another unit can answer so. Try again shortly.
			if time.Since(lastClaim) > stallTimeout {
				return fmt.Errorf("bench: workers stalled: %d of %d claimed, none claimable for %s", claimed.Load(), cfg.N, stallTimeout)
			}
			if err := pause(ctx, time.Millisecond); err != nil {
				return nil
			}
			continue
		}
		lastClaim = t1
		claimed.Add(int64(len(leases)))
		for _, l := range leases {
			err := completions.do(cfg.Pipeline, func() error {
				t2 := time.Now()
				if err := completeLease(ctx, c, l, errCount); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				t3 := time.Now()
				s.claim = append(s.claim, t1.Sub(t0))
				s.complete = append(s.complete, t3.Sub(t2))
				s.claimComplete = append(s.claimComplete, t3.Sub(t0))
				s.done = append(s.done, l.ExecutionID)
				completed.Add(1)
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
}

// inFlight runs a loop's completions: one at a time, in the background when the loop is
// pipelined, so that the loop claims meanwhile.
type inFlight struct {
	wg  sync.WaitGroup
	err error
}

// do waits for the completion in flight and then runs call, in the background when
// background is set. It returns the error of the completion it waited for, or call's.
func (f *inFlight) do(background bool, call func() error) error {
	if err := f.wait(); err != nil {
		return err
	}
	if !background {
		return call()
	}
	f.wg.Go(func() { f.err = call() })
	return nil
}

// wait waits for the completion in flight, if any, and returns its error.
func (f *inFlight) wait() error {
	f.wg.Wait()
	return f.err
}

// completeLease completes l with no result, retrying retryable errors.
func completeLease(ctx context.Context, c Client, l *flowfabric.Lease, errCount *atomic.Int64) error {
	err := retry(ctx, errCount, func() error { return c.Complete(ctx, l.ExecutionID, l.Fence, nil, "") })
	if err != nil {
		return fmt.Errorf("bench: complete %s: %w", l.ExecutionID, err)
	}
	return nil
}

// retry calls call until it succeeds, fails with an error that is not retryable, or ctx
// ends, counting the retried errors in errCount. Only finishing calls go through it: one
// retried by the same lease holder returns the first outcome, so a retry never completes
// twice.
func retry(ctx context.Context, errCount *atomic.Int64, call func() error) error {
	for {
		err := call()
		if err == nil || !fftype.IsRetryable(err) || ctx.Err() != nil {
			return err
		}
		errCount.Add(1)
	}
}

// createN creates n executions like p in bulk calls of at most [SeedChunk], adding their
// ids to created and the count of each call to count (when not nil). It fails on the
// first create refused and on an id returned twice.
func createN(ctx context.Context, c Client, p flowfabric.CreateParams, n int, created map[flowfabric.ExecutionID]bool, count *atomic.Int64) error {
	ps := make([]flowfabric.CreateParams, 0, min(n, SeedChunk))
	for n > 0 {
		ps = ps[:0]
		for range min(n, SeedChunk) {
			ps = append(ps, p)
		}
		for _, r := range c.CreateMany(ctx, ps) {
			if r.Err != nil {
				return r.Err
			}
			if created[r.Result.ID] {
				return fmt.Errorf("id %s returned twice", r.Result.ID)
			}
			created[r.Result.ID] = true
		}
		n -= len(ps)
		if count != nil {
			count.Add(int64(len(ps)))
		}
	}
	return nil
}

// Verify checks that every id in created was completed exactly once: done (the workers'
// acknowledged completions) holds each exactly once and nothing else, and the store lists
// exactly the created executions of lane as completed.
func Verify(ctx context.Context, c Client, lane string, created map[flowfabric.ExecutionID]bool, done []flowfabric.ExecutionID) error {
	acked, err := acknowledged(created, done)
	if err != nil {
		return err
	}
	if len(acked) != len(created) {
		return fmt.Errorf("bench: correctness: %d executions created, %d completed", len(created), len(acked))
	}
	return eachCreated(ctx, c, lane, flowfabric.StateCompleted, created, func(*flowfabric.Execution) error { return nil })
}

// acknowledged returns the set of ids whose completions were acknowledged, failing if one
// was not created by this run or was acknowledged twice.
func acknowledged(created map[flowfabric.ExecutionID]bool, ids []flowfabric.ExecutionID) (map[flowfabric.ExecutionID]bool, error) {
	acked := make(map[flowfabric.ExecutionID]bool, len(ids))
	for _, id := range ids {
		switch {
		case !created[id]:
			return nil, fmt.Errorf("bench: correctness: completed %s, which this run did not create", id)
		case acked[id]:
			return nil, fmt.Errorf("bench: correctness: %s completed twice", id)
		}
		acked[id] = true
	}
	return acked, nil
}

// eachCreated calls fn with every execution of lane in state (every state when "") that
// the store lists, and fails if one is listed twice or was not created by this run, or if
// the store does not list every created execution.
func eachCreated(ctx context.Context, c Client, lane string, state flowfabric.PublicState,
	created map[flowfabric.ExecutionID]bool, fn func(*flowfabric.Execution) error) error {
	listed := make(map[flowfabric.ExecutionID]bool, len(created))
	err := eachInLane(ctx, c, lane, state, func(x *flowfabric.Execution) error {
		switch {
		case listed[x.ID]:
			return fmt.Errorf("bench: correctness: %s listed twice", x.ID)
		case !created[x.ID]:
			return fmt.Errorf("bench: correctness: %s is listed (%s) but this run did not create it", x.ID, x.PublicState())
		}
		listed[x.ID] = true
		return fn(x)
	})
	if err != nil {
		return err
	}
	if len(listed) != len(created) {
		what := "executions"
		if state != "" {
			what = string(state) + " executions"
		}
		return fmt.Errorf("bench: correctness: the store lists %d %s, want %d", len(listed), what, len(created))
	}
	return nil
}

// eachInLane calls fn with every execution of lane in state (every state when "") that
// the store lists, in pages, and stops at fn's first error.
func eachInLane(ctx context.Context, c Client, lane string, state flowfabric.PublicState, fn func(*flowfabric.Execution) error) error {
	cursor := ""
	for {
		page, err := c.List(ctx, flowfabric.ListParams{Lane: lane, State: state, Limit: 1000, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("bench: correctness: listing the executions of lane %s: %w", lane, err)
		}
		for _, x := range page.Executions {
			if err := fn(x); err != nil {
				return err
			}
		}
		if page.Cursor == "" {
			return nil
		}
		cursor = page.Cursor
	}
}

// Payload returns a JSON string of exactly n bytes (n ≥ 2; smaller n give an empty
// payload) that starts with prefix.
func Payload(n int, prefix string) []byte {
	if n < 2 {
		return nil
	}
	b := make([]byte, n)
	b[0], b[n-1] = '"', '"'
	copy(b[1:n-1], prefix)
	for i := 1 + len(prefix); i < n-1; i++ {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// pause waits d or until ctx is done.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// progress passes snapshot's value to report about every half second until the
// returned stop is called. A nil report does nothing.
func progress(report ProgressFunc, snapshot func() Progress) (stop func()) {
	if report == nil {
		return func() {}
	}
	return every(500*time.Millisecond, func() { report(snapshot()) })
}

// every calls fn every interval, from a goroutine of its own, until the returned stop is
// called; stop returns once fn is no longer running.
func every(interval time.Duration, fn func()) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}
