// Package bench runs FlowFabric's benchmark scenarios (see BENCHMARKS.md in the shared
// docs) against a client, in process today and over HTTP later. It measures and checks;
// opening stores and printing belong to the command that calls it.
//
// Every scenario checks its own correctness — each execution it created was completed
// exactly once, by the workers' own count and by the store's listing — and returns an
// error otherwise, so a fast but wrong run never reports a number.
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

var _ Client = (*flowfabric.Client)(nil)

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
	// Lane is the lane to seed and drain; "" means "bench".
	Lane string
	// Progress, if set, is called from one goroutine about every half second with the
	// phase ("seed" or "drain") and how far it got.
	Progress func(phase string, done, total int)
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
	ps := make([]flowfabric.CreateParams, 0, SeedChunk)
	start := time.Now()
	lastReport := start
	for len(created) < cfg.N {
		ps = ps[:0]
		for range min(SeedChunk, cfg.N-len(created)) {
			ps = append(ps, flowfabric.CreateParams{Lane: cfg.Lane, Kind: "bench", Payload: payload})
		}
		for _, r := range c.CreateMany(ctx, ps) {
			if r.Err != nil {
				return nil, fmt.Errorf("bench: seeding: %w", r.Err)
			}
			if created[r.Result.ID] {
				return nil, fmt.Errorf("bench: seeding: id %s returned twice", r.Result.ID)
			}
			created[r.Result.ID] = true
		}
		if cfg.Progress != nil && time.Since(lastReport) > 500*time.Millisecond {
			cfg.Progress("seed", len(created), cfg.N)
			lastReport = time.Now()
		}
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
	stopProgress := progress(cfg.Progress, "drain", &completed, cfg.N)
	cpu := processCPU()
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

func drainWorker(ctx context.Context, c Client, cfg DrainConfig, w int, s *workerStats, claimed, completed, errCount *atomic.Int64) error {
	p := flowfabric.ClaimParams{WorkerID: "bench", WorkerInstanceID: "bench-" + strconv.Itoa(w), Lanes: []string{cfg.Lane}, Count: 1}
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
			t2 := time.Now()
			if err := completeRetrying(ctx, c, l, nil, errCount); err != nil {
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
		}
	}
}

// completeRetrying completes l, retrying retryable errors: a retried Complete by the same
// holder returns the first outcome, so a retry never completes twice.
func completeRetrying(ctx context.Context, c Client, l *flowfabric.Lease, result []byte, errCount *atomic.Int64) error {
	for {
		err := c.Complete(ctx, l.ExecutionID, l.Fence, result, "")
		if err == nil {
			return nil
		}
		if !fftype.IsRetryable(err) || ctx.Err() != nil {
			return fmt.Errorf("bench: complete %s: %w", l.ExecutionID, err)
		}
		errCount.Add(1)
	}
}

// Verify checks that every id in created was completed exactly once: done (the workers'
// acknowledged completions) holds each exactly once and nothing else, and the store lists
// exactly the created executions of lane as completed.
func Verify(ctx context.Context, c Client, lane string, created map[flowfabric.ExecutionID]bool, done []flowfabric.ExecutionID) error {
	seen := make(map[flowfabric.ExecutionID]int, len(done))
	for _, id := range done {
		seen[id]++
		switch {
		case !created[id]:
			return fmt.Errorf("bench: correctness: completed %s, which this run did not create", id)
		case seen[id] > 1:
			return fmt.Errorf("bench: correctness: %s completed %d times", id, seen[id])
		}
	}
	if len(seen) != len(created) {
		return fmt.Errorf("bench: correctness: %d executions created, %d completed", len(created), len(seen))
	}
	listed := make(map[flowfabric.ExecutionID]bool, len(created))
	cursor := ""
	for {
		page, err := c.List(ctx, flowfabric.ListParams{Lane: lane, State: flowfabric.StateCompleted, Limit: 1000, Cursor: cursor})
		if err != nil {
			return fmt.Errorf("bench: correctness: listing completed executions: %w", err)
		}
		for _, x := range page.Executions {
			switch {
			case listed[x.ID]:
				return fmt.Errorf("bench: correctness: %s listed twice", x.ID)
			case !created[x.ID]:
				return fmt.Errorf("bench: correctness: %s is listed as completed but this run did not create it", x.ID)
			}
			listed[x.ID] = true
		}
		if page.Cursor == "" {
			break
		}
		cursor = page.Cursor
	}
	if len(listed) != len(created) {
		return fmt.Errorf("bench: correctness: the store lists %d completed executions, want %d", len(listed), len(created))
	}
	return nil
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

// progress calls report about every half second with done's value until the returned
// stop is called. A nil report does nothing.
func progress(report func(string, int, int), phase string, done *atomic.Int64, total int) (stop func()) {
	if report == nil {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				report(phase, int(done.Load()), total)
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}
