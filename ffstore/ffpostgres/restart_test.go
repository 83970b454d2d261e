package ffpostgres_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestRestart restarts the database server (durable defaults: fsync and synchronous
// commit on) while workers claim and complete executions through the engine. Calls fail
// with unavailable errors while it is down and the workers retry them; a completion whose
// COMMIT went through but whose answer was lost is retried and answered from its first
// outcome, and a claim lost that way expires (lease TTL 1s) and is reclaimed. Afterwards
// every execution is completed exactly once, every acknowledged completion is there, and
// every shard's event log is gap-free.
func TestRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{})
	store, err := ffpostgres.Open(ctx, pg.URL("postgres"), &ffpostgres.Options{
		Migrate: true, Shards: 4, PoolSize: 8, ConnectTimeout: 2 * time.Second, StatementTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer store.Close()
	e, err := engine.New(store, nil)
	require.NoError(t, err)

	const n = 1200
	ps := make([]fftype.CreateParams, n)
	for i := range ps {
		ps[i] = fftype.CreateParams{Lane: workLane, Kind: "work", Payload: []byte(strconv.Itoa(i))}
	}
	ids := make([]fftype.ExecutionID, 0, n)
	for _, r := range e.CreateMany(ctx, ps) {
		require.NoError(t, r.Err)
		ids = append(ids, r.Result.ID)
	}

	// The readers' wake-ups must survive the restart too.
	changes := store.Changes(ctx)

	var (
		acked     sync.Map // id → true: Complete returned nil
		ackedN    atomic.Int64
		unavail   atomic.Int64 // calls that failed while the server was away
		failure   atomic.Value
		workersWG sync.WaitGroup
	)
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	retrying := func(err error) bool {
		if err == nil || workCtx.Err() != nil {
			return false
		}
		if fftype.IsRetryable(err) {
			unavail.Add(1)
			return true
		}
		failure.CompareAndSwap(nil, err)
		return false
	}
	for w := range 6 {
		workersWG.Go(func() {
			name := "w" + strconv.Itoa(w)
			for workCtx.Err() == nil && failure.Load() == nil {
				ls, err := e.Claim(workCtx, fftype.ClaimParams{WorkerID: "worker", WorkerInstanceID: name,
					Lanes: []string{workLane}, Count: 4, LeaseTTL: fftype.Duration(time.Second)})
				if retrying(err) {
					continue
				}
				if len(ls) == 0 {
					n, _, err := e.RunDue(workCtx)
					if !retrying(err) && n == 0 {
						select { // a worker's idle poll, not test synchronisation
						case <-workCtx.Done():
						case <-time.After(20 * time.Millisecond):
						}
					}
					continue
				}
				for _, l := range ls {
					for {
						err := e.Complete(workCtx, l.ExecutionID, l.Fence, []byte(`"`+name+`"`), "")
						if err == nil {
							acked.Store(l.ExecutionID, true)
							ackedN.Add(1)
							break
						}
						if errors.Is(err, fftype.ErrState) {
							break // the lease expired while the server was away: reclaimed later
						}
						if !retrying(err) {
							break
						}
					}
				}
			}
		})
	}

	// Restart once a quarter of the work is acknowledged, while the workers run.
	require.Eventually(t, func() bool { return ackedN.Load() >= n/4 }, time.Minute, 5*time.Millisecond)
	drained := false
	for !drained {
		select {
		case <-changes:
		default:
			drained = true
		}
	}
	require.NoError(t, pg.Restart())
	t.Logf("restarted the server after %d acknowledged completions", ackedN.Load())
	select {
	case <-changes:
	case <-time.After(30 * time.Second):
		t.Fatal("no wake-up after the restart")
	}

	log := newEventLog(store)
	require.Eventually(t, func() bool {
		return failure.Load() != nil || log.catchUp(ctx) == nil && len(log.completed) == n
	}, 2*time.Minute, 50*time.Millisecond, "every execution completes after the restart")
	stopWork()
	workersWG.Wait()
	if err, _ := failure.Load().(error); err != nil {
		require.NoError(t, err, "a worker failed with a non-retryable error")
	}
	require.NoError(t, log.catchUp(ctx), "every shard's event log is gap-free")
	t.Logf("%d acknowledged completions, %d calls retried while the server was away", ackedN.Load(), unavail.Load())

	for _, id := range ids {
		require.Equal(t, 1, log.completed[id], "%s: exactly one completed event", id)
		x, err := e.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, fftype.StateCompleted, x.PublicState(), "%s", id)
		atts, err := e.Attempts(ctx, id)
		require.NoError(t, err)
		succeeded := 0
		for _, a := range atts {
			if a.Status == fftype.AttemptSucceeded {
				succeeded++
			}
		}
		require.Equal(t, 1, succeeded, "%s: one succeeded attempt", id)
	}
	acked.Range(func(k, _ any) bool {
		require.Equal(t, 1, log.completed[k.(fftype.ExecutionID)], "acknowledged completion of %s is there", k)
		return true
	})
}
