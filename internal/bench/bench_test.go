package bench

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

func newClient(t *testing.T) *flowfabric.Client {
	t.Helper()
	store := ffmem.New(nil)
	t.Cleanup(func() { require.NoError(t, store.Close()) })
	c, err := flowfabric.NewClient(store, nil)
	require.NoError(t, err)
	c.Start(t.Context()) // the timers: deadlines, lease expiry
	t.Cleanup(c.Stop)
	return c
}

func TestDrain(t *testing.T) {
	t.Parallel()
	for _, pipeline := range []bool{false, true} {
		var drainHooks atomic.Int32
		res, err := Drain(t.Context(), newClient(t), DrainConfig{N: 700, Workers: 5, PayloadBytes: 100, Pipeline: pipeline,
			DrainStarted: func() { drainHooks.Add(1) }, DrainDone: func() { drainHooks.Add(1) }})
		require.NoError(t, err)
		require.Equal(t, 700, res.Count)
		require.Equal(t, 700, res.ClaimComplete.N)
		require.Equal(t, 700, res.Claim.N)
		require.Equal(t, 700, res.Complete.N)
		require.Positive(t, res.PerSec)
		require.Positive(t, res.SeedPerSec)
		require.Equal(t, int32(2), drainHooks.Load())
		if runtime.GOOS == "linux" {
			require.Positive(t, res.CPUPerTask)
		}
	}
}

// refusingCompleter refuses the completion of the n-th lease for good.
type refusingCompleter struct {
	*flowfabric.Client
	calls atomic.Int32
	n     int32
}

func (r *refusingCompleter) Complete(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, result []byte, enc flowfabric.PayloadEncoding) error {
	if r.calls.Add(1) == r.n {
		return fftype.Statef(fftype.CodeStaleLease, "refused on purpose")
	}
	return r.Client.Complete(ctx, id, f, result, enc)
}

func TestDrainFailsOnACompletionRefused(t *testing.T) {
	t.Parallel()
	for _, pipeline := range []bool{false, true} {
		_, err := Drain(t.Context(), &refusingCompleter{Client: newClient(t), n: 20}, DrainConfig{N: 100, Workers: 3, Pipeline: pipeline})
		require.ErrorContains(t, err, "refused on purpose", "pipeline %v", pipeline)
	}
}

func TestSteady(t *testing.T) {
	t.Parallel()
	for _, cfg := range []SteadyConfig{
		{Rate: 1000, Duration: 300 * time.Millisecond, Workers: 3, PayloadBytes: 64},
		{Rate: 1000, Duration: 300 * time.Millisecond, Workers: 3, PayloadBytes: 64, Pipeline: true},
		{Depth: 50, Duration: 300 * time.Millisecond, Workers: 3},
		{Depth: 50, Duration: 300 * time.Millisecond, Workers: 3, Pipeline: true},
	} {
		res, err := Steady(t.Context(), newClient(t), cfg)
		require.NoError(t, err)
		require.Positive(t, res.Created)
		require.Positive(t, res.Completed)
		require.Equal(t, res.Completed, res.CreateComplete.N)
		require.LessOrEqual(t, res.Completed+res.Backlog, res.Created)
	}
	_, err := Steady(t.Context(), newClient(t), SteadyConfig{Rate: 10, Depth: 10, Duration: time.Second, Workers: 1})
	require.ErrorContains(t, err, "either rate > 0 or depth > 0")
	// A rate the producer cannot count to (rate × elapsed overflowed to a negative count,
	// and the run created nothing and succeeded) is refused.
	for _, rate := range []float64{MaxRate * 2, 1e300, math.Inf(1), math.NaN()} {
		_, err := Steady(t.Context(), newClient(t), SteadyConfig{Rate: rate, Duration: time.Second, Workers: 1})
		require.ErrorContains(t, err, "rate", "%g", rate)
	}

	// Claim latency is also reported window by window.
	res, err := Steady(t.Context(), newClient(t), SteadyConfig{Rate: 500, Duration: 400 * time.Millisecond, Window: 100 * time.Millisecond, Workers: 2})
	require.NoError(t, err)
	require.Len(t, res.ClaimByWindow, 4)
	n := 0
	for _, l := range res.ClaimByWindow {
		require.Positive(t, l.N, "every window had claims")
		require.LessOrEqual(t, l.P99, res.Claim.Max)
		n += l.N
	}
	require.Equal(t, res.Claim.N, n, "the windows share out the run's claims")
	rec := SteadyRecord(SteadyConfig{Rate: 500, Duration: 400 * time.Millisecond, Window: 100 * time.Millisecond}, res)
	require.Equal(t, res.ClaimByWindow, rec.LatencyByWindowMS)
	require.InDelta(t, 0.1, rec.Config.WindowSec, 1e-9)
}

// TestSteadyRefusesTooManyWindows pins that a Window that would split Duration into more
// than MaxWindows windows is refused before the run: ClaimByWindow keeps a summary per
// window, and a Window of 1 ns in a 1 s run allocated a billion of them after it and ran
// out of memory.
func TestSteadyRefusesTooManyWindows(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, window := range []time.Duration{time.Minute / 100_000, time.Minute / (MaxWindows + 1), -time.Second} {
		start := time.Now()
		_, err := Steady(t.Context(), c, SteadyConfig{Rate: 10, Duration: time.Minute, Workers: 1, Window: window})
		require.ErrorContains(t, err, "window", "%s", window)
		require.Less(t, time.Since(start), 30*time.Second, "%s: refused up front, not after the minute's run", window)
	}
	_, err := Steady(t.Context(), c, SteadyConfig{Rate: 10, Duration: 200 * time.Millisecond, Workers: 1, Window: 200 * time.Millisecond / MaxWindows})
	require.NoError(t, err, "MaxWindows windows")
}

// TestSteadyState runs a small steady-state: 40 seeded tasks of 0.5 s on 4 slots, whose
// 1.5 s deadlines many of them miss, and refills; tasks outlive a third of the 1 s lease,
// so the SDK renews.
func TestSteadyState(t *testing.T) {
	t.Parallel()
	var phases sync.Map
	cfg := SteadyStateConfig{Seed: 40, Refill: 2, RefillEvery: 300 * time.Millisecond, Deadline: 1500 * time.Millisecond,
		Workers: 4, LeaseTTL: time.Second, TaskTime: 500 * time.Millisecond, Duration: 3 * time.Second, Window: time.Second,
		Progress: func(p Progress) { phases.Store(p.Phase, true) }}
	res, err := SteadyState(t.Context(), newClient(t), cfg)
	require.NoError(t, err)
	t.Logf("%+v", res)
	require.Greater(t, res.Created, cfg.Seed, "refills were created")
	require.Positive(t, res.Completed)
	require.Equal(t, res.Completed, res.Task.N)
	require.Equal(t, res.Completed, res.CreateComplete.N)
	require.Equal(t, res.Created, res.Completed+res.Expired+res.PendingLate+res.Pending, "every execution is accounted for")
	require.Positive(t, res.Expired+res.PendingLate, "seeded tasks missed their deadline")
	require.Positive(t, res.MissedDeadlinePct)
	require.LessOrEqual(t, res.MissedDeadlinePct, 100.0)
	require.Positive(t, res.Renewals)
	require.Positive(t, res.Claims)
	require.GreaterOrEqual(t, res.Completes, res.Completed)
	require.Positive(t, res.RenewalShare)
	require.Less(t, res.RenewalShare, 1.0)
	require.Equal(t, time.Second, res.Window)
	require.Positive(t, res.RSS.Samples)
	require.Positive(t, res.RSS.StartMB)
	_, ok := phases.Load("run")
	require.True(t, ok)

	_, err = SteadyState(t.Context(), newClient(t), SteadyStateConfig{Workers: 1})
	require.ErrorContains(t, err, "steady-state needs")
}

// doubleCompleter completes the first execution it completes a second time, under a
// fresh claim after a replay, as a buggy engine might: Verify must notice.
type doubleCompleter struct {
	*flowfabric.Client
	done atomic.Bool
}

func (d *doubleCompleter) Complete(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, result []byte, enc flowfabric.PayloadEncoding) error {
	if err := d.Client.Complete(ctx, id, f, result, enc); err != nil {
		return err
	}
	if d.done.CompareAndSwap(false, true) {
		return d.Client.Replay(ctx, id) // back in the queue: it will be claimed and completed again
	}
	return nil
}

func TestDrainFailsLoudlyOnADoubleCompletion(t *testing.T) {
	t.Parallel()
	for _, pipeline := range []bool{false, true} {
		_, err := Drain(t.Context(), &doubleCompleter{Client: newClient(t)}, DrainConfig{N: 50, Workers: 2, Pipeline: pipeline})
		require.ErrorContains(t, err, "correctness")
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	created := map[flowfabric.ExecutionID]bool{}
	var done []flowfabric.ExecutionID
	for range 3 {
		r, err := c.Create(ctx, flowfabric.CreateParams{Lane: "v", Kind: "k"})
		require.NoError(t, err)
		created[r.ID] = true
		ls, err := c.Claim(ctx, flowfabric.ClaimParams{WorkerID: "w", WorkerInstanceID: "w", Lanes: []string{"v"}})
		require.NoError(t, err)
		require.NoError(t, c.Complete(ctx, ls[0].ExecutionID, ls[0].Fence, nil, ""))
		done = append(done, ls[0].ExecutionID)
	}
	require.NoError(t, Verify(ctx, c, "v", created, done))
	require.ErrorContains(t, Verify(ctx, c, "v", created, done[:2]), "3 executions created, 2 completed")
	require.ErrorContains(t, Verify(ctx, c, "v", created, append(done, done[0])), "completed twice")

	// The store lists one more completed execution in the lane than the run created.
	extra, err := c.Create(ctx, flowfabric.CreateParams{Lane: "v", Kind: "k"})
	require.NoError(t, err)
	ls, err := c.Claim(ctx, flowfabric.ClaimParams{WorkerID: "w", WorkerInstanceID: "w", Lanes: []string{"v"}})
	require.NoError(t, err)
	require.Equal(t, extra.ID, ls[0].ExecutionID)
	require.NoError(t, c.Complete(ctx, ls[0].ExecutionID, ls[0].Fence, nil, ""))
	require.ErrorContains(t, Verify(ctx, c, "v", created, done), "did not create")
}

// TestSteadyStateCheck feeds the steady-state check acknowledgements that disagree with
// the store: it must refuse them.
func TestSteadyStateCheck(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	created := map[flowfabric.ExecutionID]bool{}
	require.NoError(t, createN(ctx, c, flowfabric.CreateParams{Lane: "v", Kind: "k", Policy: flowfabric.Policy{Deadline: flowfabric.Duration(time.Hour)}},
		2, created, nil))
	ls, err := c.Claim(ctx, flowfabric.ClaimParams{WorkerID: "w", WorkerInstanceID: "w", Lanes: []string{"v"}})
	require.NoError(t, err)
	require.NoError(t, c.Complete(ctx, ls[0].ExecutionID, ls[0].Fence, nil, ""))
	done := ls[0].ExecutionID
	var waiting flowfabric.ExecutionID
	for id := range created {
		if id != done {
			waiting = id
		}
	}
	check := func(acked ...flowfabric.ExecutionID) (*SteadyStateResult, error) {
		r := &steadyStateRun{cfg: SteadyStateConfig{Lane: "v"}}
		for _, id := range acked {
			r.acked = append(r.acked, completion{id: id})
		}
		res := &SteadyStateResult{Completed: len(acked)}
		return res, r.check(ctx, c, created, res)
	}
	res, err := check(done)
	require.NoError(t, err)
	require.Equal(t, 1, res.Pending)
	require.Zero(t, res.MissedDeadlinePct)
	_, err = check(done, done)
	require.ErrorContains(t, err, "completed twice")
	_, err = check()
	require.ErrorContains(t, err, "is completed, and its completion was acknowledged: false")
	_, err = check(done, waiting)
	require.ErrorContains(t, err, "is waiting, and its completion was acknowledged: true")
}
