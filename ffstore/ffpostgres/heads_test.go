package ffpostgres

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestHeadsFlight checks that concurrent calls share runs, and that every call gets the
// result of a run that started after the call did.
func TestHeadsFlight(t *testing.T) {
	t.Parallel()
	var g headsFlight
	var runs atomic.Int64
	release := make(chan struct{})
	started := make(chan int64, 100)
	run := func() ([]ffstore.QueueHead, error) {
		n := runs.Add(1)
		started <- n
		<-release
		return []ffstore.QueueHead{{Shard: int(n)}}, nil
	}

	// The first call runs at once and blocks in run.
	first := make(chan int, 1)
	go func() {
		h, err := g.do(t.Context(), "k", run)
		if err != nil || len(h) != 1 {
			first <- -1
			return
		}
		first <- h[0].Shard
	}()
	require.Equal(t, int64(1), <-started)

	// Calls arriving meanwhile must not take run 1's result: they share run 2.
	const late = 10
	var wg sync.WaitGroup
	results := make([]int, late)
	for i := range late {
		wg.Go(func() {
			if h, err := g.do(t.Context(), "k", run); err == nil && len(h) == 1 {
				results[i] = h[0].Shard
			}
		})
	}
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		st := g.m["k"]
		return st != nil && st.next != nil
	}, 5*time.Second, time.Millisecond)
	close(release) // every run from now on returns at once
	require.Equal(t, 1, <-first)
	wg.Wait()
	require.Equal(t, int64(2), <-started)
	for _, r := range results {
		require.GreaterOrEqual(t, r, 2, "a late call got an earlier run's result")
	}
	require.Less(t, runs.Load(), int64(1+late), "late calls shared runs")

	// A cancelled waiter leaves; the run goes on for the others.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c := &headsCall{done: make(chan struct{})}
	_, err := c.wait(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, g.m, "finished keys are forgotten")
}

// TestHeadsFlightCallersLeaveOnTheirContext checks that a caller leaves once its context
// ends, both the one whose call started the running query and one waiting for the next,
// while the query goes on; and that close refuses later calls, starts no next query and
// waits for the running one.
func TestHeadsFlightCallersLeaveOnTheirContext(t *testing.T) {
	t.Parallel()
	var g headsFlight
	var runs atomic.Int64
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseRuns := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseRuns) // on failure too: no run outlives the test
	started := make(chan struct{}, 10)
	run := func() ([]ffstore.QueueHead, error) {
		runs.Add(1)
		started <- struct{}{}
		<-release
		return nil, nil
	}
	call := func(ctx context.Context) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := g.do(ctx, "k", run)
			done <- err
		}()
		return done
	}
	returned := func(done <-chan error, msg string) error {
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal(msg)
			return nil
		}
	}

	firstCtx, cancelFirst := context.WithCancel(t.Context())
	first := call(firstCtx)
	<-started
	lateCtx, cancelLate := context.WithCancel(t.Context())
	late := call(lateCtx)
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.m["k"] != nil && g.m["k"].next != nil
	}, 5*time.Second, time.Millisecond)
	cancelFirst()
	require.ErrorIs(t, returned(first, "the caller that started the query stays"), context.Canceled)
	cancelLate()
	require.ErrorIs(t, returned(late, "the caller waiting for the next query stays"), context.Canceled)

	closed := make(chan struct{})
	go func() {
		g.close()
		close(closed)
	}()
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.closed
	}, 5*time.Second, time.Millisecond)
	_, err := g.do(t.Context(), "k", run)
	require.ErrorIs(t, err, fftype.ErrUnavailable, "after close, calls are refused")
	select {
	case <-closed:
		t.Fatal("close returned while a query ran")
	default:
	}
	releaseRuns()
	<-closed
	require.Equal(t, int64(1), runs.Load(), "close starts no next query")
}
