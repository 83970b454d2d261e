package ffvalkey_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
	"github.com/flowfabric/flowfabric/internal/storetest"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

const workLane = "work"

// TestRestartDurable restarts a server that runs with appendonly yes and appendfsync
// always (SHUTDOWN, then a start on the same directory and port) while workers claim and
// complete executions through the engine: see storetest.Restart.
func TestRestartDurable(t *testing.T) {
	t.Parallel()
	srv := testdb.NewRedis(t, testdb.RedisOptions{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	store := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 4})
	storetest.Restart{Executions: 600, ClaimCount: 2, Restart: srv.Restart}.Run(t, store)
}

// tryRoundTrip creates an execution through e, claims it and completes it.
func tryRoundTrip(ctx context.Context, e *engine.Engine) (fftype.ExecutionID, error) {
	res, err := e.Create(ctx, fftype.CreateParams{Lane: workLane, Kind: "work"})
	if err != nil {
		return "", err
	}
	ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{workLane}})
	if err != nil {
		return "", err
	}
	if len(ls) != 1 || ls[0].ExecutionID != res.ID {
		return "", fmt.Errorf("claimed %v, not %s alone", ls, res.ID)
	}
	return res.ID, e.Complete(ctx, ls[0].ExecutionID, ls[0].Fence, nil, "")
}

// roundTrip is tryRoundTrip, which must succeed.
func roundTrip(t *testing.T, e *engine.Engine) fftype.ExecutionID {
	t.Helper()
	id, err := tryRoundTrip(t.Context(), e)
	require.NoError(t, err)
	return id
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
	id := roundTrip(t, e)
	require.NoError(t, srv.Restart())
	_, err = e.Get(ctx, id)
	require.ErrorIs(t, err, fftype.ErrExecutionNotFound, "the server kept nothing")
	roundTrip(t, e) // reloads the library, recreates the meta key
	again := openStore(t, srv.URL(0), &ffvalkey.Options{KeyPrefix: store.KeyPrefix()})
	require.Equal(t, 2, again.Shards(), "the meta key is back")
}

// TestChangesWakeAfterTheSubscriptionIsBack: wake-ups published while the change
// subscription was down are lost, so once it is back (the store subscribes again after
// its connection drops) every reader is woken to read again. Here another process commits
// right after a server restart, before the store has subscribed again.
func TestChangesWakeAfterTheSubscriptionIsBack(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testdb.NewRedis(t, testdb.RedisOptions{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	a := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 1})
	other := openStore(t, srv.URL(0), &ffvalkey.Options{KeyPrefix: a.KeyPrefix()})
	raw := ffvalkey.Client(other)
	channel := a.KeyPrefix() + ":changes"
	subscribed := func() bool {
		n, err := raw.Do(ctx, raw.B().PubsubNumsub().Channel(channel).Build()).AsIntMap()
		return err == nil && n[channel] == 1
	}
	changes := a.Changes(ctx)
	require.Eventually(t, subscribed, 10*time.Second, 10*time.Millisecond, "the store subscribes")

	require.NoError(t, srv.Restart())
	drain(changes) // the wake-up for the lost subscription, and any before it
	require.NoError(t, other.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
	require.Eventually(t, subscribed, 30*time.Second, 10*time.Millisecond, "the store subscribes again")
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("the change subscription was lost and is back, but no reader was woken: " +
			"commits other processes made while it was down are never signalled")
	}
}

// drain takes every wake-up pending on changes.
func drain(changes <-chan struct{}) {
	for {
		select {
		case <-changes:
		default:
			return
		}
	}
}

// TestConsumerRereadsAfterTheServerLostWrites: a server that comes back without its last
// writes (here those after the last SAVE) takes the last events and the consumer's stored
// cursor back with them, and the events appended next take the lost numbers again. The
// replica, whose cursor in memory is past them, finds its stored cursor is not where it
// read from and reads again from there: every event is handled.
func TestConsumerRereadsAfterTheServerLostWrites(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testdb.NewRedis(t, testdb.RedisOptions{}) // keeps what the last SAVE wrote
	store := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 1})
	clock := fftest.NewClock(time.Now())
	e, err := engine.New(store, &engine.Config{Clock: clock})
	require.NoError(t, err)
	handled := map[fftype.ExecutionID]int{}
	c, err := e.NewConsumer(engine.ConsumerConfig{Name: "audit", Filter: fftype.EventFilter{Types: []fftype.EventType{fftype.EventCreated}},
		Handler: func(_ context.Context, ev fftype.Event) error { handled[ev.ExecutionID]++; return nil }})
	require.NoError(t, err)
	create := func() fftype.ExecutionID {
		t.Helper()
		var id fftype.ExecutionID
		require.Eventually(t, func() bool { // the first calls after the restart may fail
			res, err := e.Create(ctx, fftype.CreateParams{Lane: workLane, Kind: "work"})
			if err == nil {
				id = res.ID
			}
			return err == nil
		}, 10*time.Second, 10*time.Millisecond)
		return id
	}
	drain := func() {
		t.Helper()
		for {
			n, err := c.Step(ctx)
			if err != nil {
				t.Logf("step: %v", err)
				continue
			}
			if n == 0 {
				return
			}
		}
	}
	create()
	create()
	drain()
	raw := ffvalkey.Client(store)
	require.NoError(t, raw.Do(ctx, raw.B().Save().Build()).Error()) // what the server will come back with
	create()
	create()
	drain()
	require.Len(t, handled, 4)

	srv.Kill() // a crash: the last two units are lost
	require.NoError(t, srv.Start())
	var after []fftype.ExecutionID
	for range 3 {
		after = append(after, create())
	}
	drain()
	clock.Advance(engine.DefaultConsumerLeaseTTL / 2) // the replica renews its lease and rereads its stored cursor
	drain()
	for i, id := range after {
		require.GreaterOrEqual(t, handled[id], 1, "execution #%d created after the restart: its created event was never handled", i+1)
	}
}

// TestCallsFailWhileTheServerIsDown: with the server gone, reads fail as writes do, with
// a retryable unavailable error once the store's retries are spent, rather than being
// retried by the client until the caller's context ends (over HTTP, a 503 at once, not a
// request that hangs until its timeout).
func TestCallsFailWhileTheServerIsDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testdb.NewRedis(t, testdb.RedisOptions{})
	store := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 1})
	e, err := engine.New(store, nil)
	require.NoError(t, err)
	res, err := e.Create(ctx, fftype.CreateParams{Lane: workLane, Kind: "k"})
	require.NoError(t, err)
	require.NoError(t, srv.Shutdown())

	for name, call := range map[string]func(context.Context) error{
		"Update": func(ctx context.Context) error {
			return store.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("x", []byte("1")); return nil })
		},
		"View": func(ctx context.Context) error {
			return store.View(ctx, 0, func(tx ffstore.ReadTx) error { _, _, err := tx.Get("x"); return err })
		},
		"engine Get":  func(ctx context.Context) error { _, err := e.Get(ctx, res.ID); return err },
		"ReadEvents":  func(ctx context.Context) error { _, err := store.ReadEvents(ctx, 0, 0, 10); return err },
		"QueueHeads":  func(ctx context.Context) error { _, err := store.QueueHeads(ctx, []string{"e"}); return err },
		"EventBounds": func(ctx context.Context) error { _, _, err := store.EventBounds(ctx, 0); return err },
	} {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := call(cctx)
		cancel()
		require.Error(t, err, name)
		require.NotErrorIs(t, err, context.DeadlineExceeded, "%s held the caller until its context ended", name)
		require.True(t, fftype.IsRetryable(err), "%s: %v", name, err)
	}
}
