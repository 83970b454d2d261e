// Package storetest holds the scenarios that need a store's real server, to stop it or
// to kill the processes using it, and the checks they share. The conformance suite every
// store passes is ffstore/ffstoretest; these run beside it in the tests of the stores
// that have a server.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// Lane is the lane the scenarios' executions are created in.
const Lane = "work"

// Restart is a restart scenario: see Run.
type Restart struct {
	Executions int          // created before the workers start
	ClaimCount int          // leases each claim asks for
	Restart    func() error // stops the store's server and starts it again on the same data
}

// Run restarts the store's server while six workers claim (leases of 1 s) and complete
// Executions through the engine. Calls fail with retryable errors while the server is
// down and the workers retry them; a claim whose reply was lost expires and is
// reclaimed, and a completion whose reply was lost is retried and answered from its
// first outcome. Run requires a wake-up from the store's Changes after the restart, and
// afterwards every execution completed exactly once with one succeeded attempt, every
// acknowledged completion there, and every shard's event log gap-free. The store must
// keep what it acknowledged across the restart.
func (r Restart) Run(t *testing.T, store interface {
	ffstore.Store
	ffstore.ChangeNotifier
}) {
	t.Helper()
	ctx := t.Context()
	e, err := engine.New(store, nil)
	require.NoError(t, err)

	ps := make([]fftype.CreateParams, r.Executions)
	for i := range ps {
		ps[i] = fftype.CreateParams{Lane: Lane, Kind: "work", Payload: []byte(strconv.Itoa(i))}
	}
	ids := make([]fftype.ExecutionID, 0, r.Executions)
	for _, res := range e.CreateMany(ctx, ps) {
		require.NoError(t, res.Err)
		ids = append(ids, res.Result.ID)
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
					Lanes: []string{Lane}, Count: r.ClaimCount, LeaseTTL: fftype.Duration(time.Second)})
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
	require.Eventually(t, func() bool { return ackedN.Load() >= int64(r.Executions/4) }, time.Minute, 5*time.Millisecond)
	for drained := false; !drained; {
		select {
		case <-changes:
		default:
			drained = true
		}
	}
	require.NoError(t, r.Restart())
	t.Logf("restarted the server after %d acknowledged completions", ackedN.Load())
	select {
	case <-changes:
	case <-time.After(30 * time.Second):
		t.Fatal("no wake-up after the restart")
	}

	log := NewEventTally(store)
	require.Eventually(t, func() bool {
		return failure.Load() != nil || log.CatchUp(ctx) == nil && len(log.Completed) == r.Executions
	}, 2*time.Minute, 50*time.Millisecond, "every execution completes after the restart")
	stopWork()
	workersWG.Wait()
	if err, _ := failure.Load().(error); err != nil {
		require.NoError(t, err, "a worker failed with a non-retryable error")
	}
	require.NoError(t, log.CatchUp(ctx), "every shard's event log is gap-free")
	t.Logf("%d acknowledged completions, %d calls retried while the server was away", ackedN.Load(), unavail.Load())

	for _, id := range ids {
		require.Equal(t, 1, log.Completed[id], "%s: exactly one completed event", id)
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
		require.Equal(t, 1, log.Completed[k.(fftype.ExecutionID)], "acknowledged completion of %s is there", k)
		return true
	})
}

// EventTally follows every shard's event log of a store from the start, requiring each
// shard's Seqs to be gap-free, and counts each execution's completed events.
type EventTally struct {
	Completed map[fftype.ExecutionID]int // completed events read, by execution

	store ffstore.Store
	last  []uint64 // per shard, the Seq of the last event read
}

// NewEventTally returns a tally of store's logs that has read nothing yet.
func NewEventTally(store ffstore.Store) *EventTally {
	return &EventTally{Completed: map[fftype.ExecutionID]int{}, store: store, last: make([]uint64, store.Shards())}
}

// CatchUp reads every event appended since the last call.
func (l *EventTally) CatchUp(ctx context.Context) error {
	for shard := range l.last {
		for {
			evs, err := l.store.ReadEvents(ctx, shard, l.last[shard], 1000)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				break
			}
			for _, ev := range evs {
				if ev.Seq != l.last[shard]+1 {
					return fmt.Errorf("shard %d: Seq %d follows %d", shard, ev.Seq, l.last[shard])
				}
				l.last[shard] = ev.Seq
				if ev.Type == fftype.EventCompleted {
					l.Completed[ev.ExecutionID]++
				}
			}
		}
	}
	return nil
}
