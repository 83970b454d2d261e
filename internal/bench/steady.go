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

// produceTick is how often the steady producer creates the executions that fell due.
const produceTick = 10 * time.Millisecond

// idleWait bounds how long an idle worker waits for the producer's signal before it
// claims again.
const idleWait = 50 * time.Millisecond

// MaxRate is the highest rate, in executions/s, a steady-rate producer takes: far above
// what any store sustains, and low enough that rate × elapsed seconds counts in an int.
const MaxRate = 1_000_000

// MaxWindows is the most windows of [SteadyConfig.Window] a steady run's Duration may
// hold: the run keeps a summary of each (ClaimByWindow), so a window far shorter than the
// run would take more memory than the run itself.
const MaxWindows = 1000

// CheckWindow refuses a window that is not positive or that splits a run of duration
// into more than [MaxWindows] windows; [Steady] calls it, and a command line can call it
// before anything runs.
func CheckWindow(duration, window time.Duration) error {
	if window <= 0 {
		return fmt.Errorf("window %s is not positive", window)
	}
	if n := duration / window; n > MaxWindows {
		return fmt.Errorf("window %s splits the %s run into %d windows, more than %d: make it at least %s",
			window, duration, n, MaxWindows, duration/(MaxWindows+1)+1)
	}
	return nil
}

// SteadyConfig describes a steady run: for Duration, a producer creates executions while
// Workers loops claim and complete them. The producer runs at a fixed rate (Rate per
// second, at most [MaxRate]: scenario steady-rate) or keeps a fixed backlog (Depth
// executions created and not yet claimed: scenario steady-depth); exactly one of the two
// is set.
type SteadyConfig struct {
	Rate         float64
	Depth        int
	Duration     time.Duration
	Workers      int
	PayloadBytes int
	// Pipeline is as for [DrainConfig]: each worker claims while its last completion is
	// in flight.
	Pipeline bool
	// Lane is the lane to use; "" means "bench".
	Lane string
	// Window is the length of the windows ClaimByWindow summarizes; 0 means a minute.
	// Duration may hold at most [MaxWindows] of them.
	Window time.Duration
	// Progress, if set, receives the run's progress (phase "run", in seconds).
	Progress ProgressFunc
}

// SteadyResult is what a steady run measured over its window (the Duration the producer
// ran).
type SteadyResult struct {
	Created   int     // executions created in the window
	Completed int     // completions in the window
	PerSec    float64 // Completed / Duration
	// Claim is the duration of Claim calls in the window that returned a lease.
	Claim Latency
	// ClaimByWindow is Claim for each whole Window of the run, in order (none when the
	// run is shorter than two windows): a claim latency that creeps up as the store ages
	// shows here.
	ClaimByWindow []Latency
	// CreateComplete is, per execution completed in the window, from just before the
	// create call that made it until Complete returned.
	CreateComplete Latency
	// Backlog is how many created executions were not yet completed when the window
	// ended; they are completed (and checked) afterwards, in Tail.
	Backlog int
	Tail    time.Duration
	Errors  int
}

// Steady runs the producer and workers for cfg.Duration, lets the workers finish the
// backlog, and checks that every created execution was completed exactly once.
func Steady(ctx context.Context, c Client, cfg SteadyConfig) (*SteadyResult, error) {
	// !(Rate <= MaxRate) also refuses NaN.
	if (cfg.Rate > 0) == (cfg.Depth > 0) || cfg.Rate < 0 || !(cfg.Rate <= MaxRate) || cfg.Depth < 0 || cfg.Duration <= 0 || cfg.Workers < 1 ||
		cfg.PayloadBytes < 0 {
		return nil, fmt.Errorf("bench: steady needs either rate > 0 or depth > 0, rate ≤ %d, and duration > 0, workers ≥ 1 and payload ≥ 0", MaxRate)
	}
	if cfg.Lane == "" {
		cfg.Lane = "bench"
	}
	if cfg.Window == 0 {
		cfg.Window = time.Minute
	}
	if err := CheckWindow(cfg.Duration, cfg.Window); err != nil {
		return nil, fmt.Errorf("bench: steady: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	start := time.Now()
	st := &steadyState{wake: newBroadcast(), start: start, windowEnd: start.Add(cfg.Duration)}
	ws := make([]*steadyWorker, cfg.Workers)
	var wg sync.WaitGroup
	for w := range ws {
		ws[w] = &steadyWorker{}
		wg.Go(func() {
			if err := st.work(ctx, c, cfg, w, ws[w]); err != nil {
				cancel(err)
			}
		})
	}
	stopProgress := progress(cfg.Progress, func() Progress {
		return Progress{Phase: "run", Done: int(time.Since(start).Seconds()), Total: int(cfg.Duration.Seconds()), Unit: "s",
			Completed: int(st.completed.Load())}
	})
	created, err := st.produce(ctx, c, cfg, start)
	if err != nil {
		cancel(err)
	}
	backlog := int(st.createdN.Load() - st.completedInWindow.Load())
	windowDone := time.Now()
	wg.Wait()
	stopProgress()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}

	res := &SteadyResult{
		Created:   len(created),
		Completed: int(st.completedInWindow.Load()),
		Backlog:   backlog,
		Tail:      time.Since(windowDone),
		Errors:    int(st.errs.Load()),
	}
	res.PerSec = float64(res.Completed) / cfg.Duration.Seconds()
	var cl, clAt, cc []time.Duration
	var done []flowfabric.ExecutionID
	for _, w := range ws {
		cl = append(cl, w.claim...)
		clAt = append(clAt, w.claimAt...)
		cc = append(cc, w.createComplete...)
		done = append(done, w.done...)
	}
	if windows := int(cfg.Duration / cfg.Window); windows >= 2 {
		res.ClaimByWindow = ByWindow(clAt, cl, cfg.Window, windows)
	}
	res.Claim, res.CreateComplete = Summarize(cl), Summarize(cc)
	if err := Verify(ctx, c, cfg.Lane, created, done); err != nil {
		return nil, err
	}
	return res, nil
}

type steadyState struct {
	start, windowEnd  time.Time
	wake              *broadcast
	createdN          atomic.Int64 // executions created so far
	producerDone      atomic.Bool  // set after createdN has its final value
	claimed           atomic.Int64
	completed         atomic.Int64
	completedInWindow atomic.Int64
	errs              atomic.Int64
}

type steadyWorker struct {
	claim, createComplete []time.Duration
	claimAt               []time.Duration // when each claim returned, from the start
	done                  []flowfabric.ExecutionID
}

// produce creates what falls due every tick until the window ends and returns the ids:
// at a fixed rate, what the rate asks for by now; at a fixed depth, what tops the backlog
// (created and not yet claimed) up to it.
func (st *steadyState) produce(ctx context.Context, c Client, cfg SteadyConfig, start time.Time) (map[flowfabric.ExecutionID]bool, error) {
	defer func() {
		st.producerDone.Store(true)
		st.wake.signal()
	}()
	created := map[flowfabric.ExecutionID]bool{}
	t := time.NewTicker(produceTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return created, nil // a worker failed; the caller reports its error
		case now := <-t.C:
			if !now.Before(st.windowEnd) {
				return created, nil
			}
			due := int(cfg.Rate*now.Sub(start).Seconds()) - len(created)
			if cfg.Depth > 0 {
				due = cfg.Depth - (len(created) - int(st.claimed.Load()))
			}
			if due <= 0 {
				continue
			}
			prefix := strconv.FormatInt(time.Now().UnixNano(), 10) + " "
			payload := Payload(max(cfg.PayloadBytes, len(prefix)+2), prefix)
			err := createN(ctx, c, flowfabric.CreateParams{Lane: cfg.Lane, Kind: "bench", Payload: payload}, due, created, &st.createdN)
			st.wake.signal()
			if err != nil {
				if ctx.Err() != nil {
					return created, nil
				}
				return created, fmt.Errorf("bench: create: %w", err)
			}
		}
	}
}

// work is one worker: claim one, complete it, until the producer is done and everything
// it created was claimed.
func (st *steadyState) work(ctx context.Context, c Client, cfg SteadyConfig, w int, s *steadyWorker) (err error) {
	p := flowfabric.ClaimParams{WorkerID: "bench", WorkerInstanceID: "bench-" + strconv.Itoa(w), Lanes: []string{cfg.Lane}, Count: 1}
	var completions inFlight
	defer func() {
		if ferr := completions.wait(); err == nil {
			err = ferr
		}
	}()
	for {
		wake := st.wake.wait() // before the claim, so a signal during it is not missed
		t0 := time.Now()
		leases, err := c.Claim(ctx, p)
		t1 := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if fftype.IsRetryable(err) {
				st.errs.Add(1)
				continue
			}
			return fmt.Errorf("bench: claim: %w", err)
		}
		if len(leases) == 0 {
			if st.producerDone.Load() && st.claimed.Load() >= st.createdN.Load() {
				return nil
			}
			t := time.NewTimer(idleWait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		st.claimed.Add(int64(len(leases)))
		if t1.Before(st.windowEnd) {
			s.claim = append(s.claim, t1.Sub(t0))
			s.claimAt = append(s.claimAt, t1.Sub(st.start))
		}
		for _, l := range leases {
			err := completions.do(cfg.Pipeline, func() error {
				if err := completeLease(ctx, c, l, &st.errs); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				t3 := time.Now()
				s.done = append(s.done, l.ExecutionID)
				st.completed.Add(1)
				if t3.Before(st.windowEnd) {
					st.completedInWindow.Add(1)
					if at, ok := createdAt(l.Payload); ok {
						s.createComplete = append(s.createComplete, t3.Sub(at))
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
}

// createdAt reads the creation time the producer put at the start of a payload.
func createdAt(payload []byte) (time.Time, bool) {
	if len(payload) < 2 {
		return time.Time{}, false
	}
	end := 1
	for end < len(payload) && payload[end] != ' ' {
		end++
	}
	ns, err := strconv.ParseInt(string(payload[1:end]), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// broadcast wakes every waiter at once: wait returns a channel that the next signal
// closes.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) signal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}
