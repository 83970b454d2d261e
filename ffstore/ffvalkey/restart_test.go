package ffvalkey_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

const workLane = "work"

// TestRestartDurable restarts a server that runs with appendonly yes and appendfsync
// always (SHUTDOWN, then a start on the same directory and port) while workers claim
// and complete executions through the engine. Calls fail with unavailable errors while
// it is down and the workers retry them; a claim whose reply was lost expires (lease
// TTL 1s) and is reclaimed, and a completion whose reply was lost is retried and
// answered from its first outcome. Afterwards every execution is completed exactly once,
// every acknowledged completion is there, and every shard's log is gap-free.
func TestRestartDurable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testdb.NewRedis(t, testdb.RedisOptions{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	store := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 4})
	e, err := engine.New(store, nil)
	require.NoError(t, err)

	const n = 600
	ps := make([]fftype.CreateParams, n)
	for i := range ps {
		ps[i] = fftype.CreateParams{Lane: workLane, Kind: "work", Payload: []byte(strconv.Itoa(i))}
	}
	ids := make([]fftype.ExecutionID, 0, n)
	for _, r := range e.CreateMany(ctx, ps) {
		require.NoError(t, r.Err)
		ids = append(ids, r.Result.ID)
	}
	changes := store.Changes(ctx)

	var (
		acked     sync.Map // id → true: Complete returned nil
		ackedN    atomic.Int64
		unavail   atomic.Int64
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
					Lanes: []string{workLane}, Count: 2, LeaseTTL: fftype.Duration(time.Second)})
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

	require.Eventually(t, func() bool { return ackedN.Load() >= n/4 }, time.Minute, 5*time.Millisecond)
	for drained := false; !drained; {
		select {
		case <-changes:
		default:
			drained = true
		}
	}
	require.NoError(t, srv.Restart())
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

// TestRestartWithoutPersistence restarts a server that keeps nothing: the store's keys
// and its function library are gone. The open store loads the library again by itself
// and takes new work with no manual step.
func TestRestartWithoutPersistence(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testdb.NewRedis(t, testdb.RedisOptions{})
	store := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 2})
	e, err := engine.New(store, nil)
	require.NoError(t, err)
	roundTrip := func() fftype.ExecutionID {
		t.Helper()
		res, err := e.Create(ctx, fftype.CreateParams{Lane: workLane, Kind: "work"})
		require.NoError(t, err)
		ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{workLane}})
		require.NoError(t, err)
		require.Len(t, ls, 1)
		require.Equal(t, res.ID, ls[0].ExecutionID)
		require.NoError(t, e.Complete(ctx, ls[0].ExecutionID, ls[0].Fence, nil, ""))
		return res.ID
	}
	id := roundTrip()
	require.NoError(t, srv.Restart())
	_, err = e.Get(ctx, id)
	require.ErrorIs(t, err, fftype.ErrExecutionNotFound, "the server kept nothing")
	roundTrip() // reloads the library, recreates the meta key
	again := openStore(t, srv.URL(0), &ffvalkey.Options{KeyPrefix: store.KeyPrefix()})
	require.Equal(t, 2, again.Shards(), "the meta key is back")
}

// eventLog reads every shard's log from the start and counts completed events per
// execution, requiring Seq to be gap-free.
type eventLog struct {
	store     ffstore.Store
	next      []uint64
	completed map[fftype.ExecutionID]int
}

func newEventLog(s ffstore.Store) *eventLog {
	return &eventLog{store: s, next: make([]uint64, s.Shards()), completed: map[fftype.ExecutionID]int{}}
}

func (l *eventLog) catchUp(ctx context.Context) error {
	for shard := range l.next {
		for {
			evs, err := l.store.ReadEvents(ctx, shard, l.next[shard], 500)
			if err != nil {
				return err
			}
			if len(evs) == 0 {
				break
			}
			for _, ev := range evs {
				if ev.Seq != l.next[shard]+1 {
					return errors.New("gap in the log of shard " + strconv.Itoa(shard) + " at " + strconv.FormatUint(ev.Seq, 10))
				}
				l.next[shard] = ev.Seq
				if ev.Type == fftype.EventCompleted {
					l.completed[ev.ExecutionID]++
				}
			}
		}
	}
	return nil
}
