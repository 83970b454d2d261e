package engine_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// TestTimerLoop runs the background loop on a fake clock: it must promote a delayed
// execution once the clock passes its time, without RunDue being called by the test.
func TestTimerLoop(t *testing.T) {
	t.Parallel()
	clock := fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, err := engine.New(ffmem.New(nil), &engine.Config{Clock: clock, TimerPollInterval: time.Hour})
	require.NoError(t, err)
	ctx := t.Context()
	e.Start(ctx)
	e.Start(ctx) // a second Start does nothing
	defer e.Stop()

	res, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Delay: fftype.Duration(time.Minute)})
	require.NoError(t, err)
	clock.Advance(time.Minute)
	require.Eventually(t, func() bool {
		x, err := e.Get(ctx, res.ID)
		return err == nil && x.PublicState() == fftype.StateWaiting
	}, 5*time.Second, time.Millisecond, "the loop promotes the execution when the clock reaches its time")
	e.Stop()
	e.Stop() // stopping twice is fine
}

// TestStoreClock checks that the production clock follows the store's clock.
func TestStoreClock(t *testing.T) {
	t.Parallel()
	store := ffmem.New(nil)
	c := engine.NewStoreClock(store)
	storeNow, err := store.Now(context.Background())
	require.NoError(t, err)
	require.WithinDuration(t, storeNow, c.Now(), time.Second)
	a, b := c.Now(), c.Now()
	require.False(t, b.Before(a), "the clock never goes backwards between samples")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, c.SleepUntil(ctx, c.Now().Add(time.Hour), nil), context.Canceled)
	wake := make(chan struct{}, 1)
	wake <- struct{}{}
	require.NoError(t, c.SleepUntil(t.Context(), c.Now().Add(time.Hour), wake), "a wake-up ends the sleep")
}

func TestNewRefusesNilStore(t *testing.T) {
	t.Parallel()
	_, err := engine.New(nil, nil)
	require.Error(t, err)
}

// TestEndedSubscriptionLeavesNothingRunning: a subscription that ends by itself (here with
// cursor_expired) and is not closed leaves nothing running, such as what follows the
// store's changes for it, even while the caller's context lives on.
func TestEndedSubscriptionLeavesNothingRunning(t *testing.T) {
	e, err := engine.New(&trimmingStore{Store: ffmem.New(&ffmem.Options{Shards: 2}), through: 100}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background()) // a long-lived parent, like a worker's life
	defer cancel()

	before := goleak.IgnoreCurrent()
	for range 5 {
		start, err := e.EventCursor(ctx)
		require.NoError(t, err)
		for range 4 {
			_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
			require.NoError(t, err)
		}
		sub, err := e.Subscribe(ctx, fftype.EventFilter{}, start)
		require.NoError(t, err)
		for range sub.Events() {
		}
		require.ErrorIs(t, sub.Err(), fftype.ErrCursorExpired)
		// Not calling Close: the subscription already ended by itself.
	}
	require.NoError(t, goleak.Find(before), "an ended subscription leaves nothing running")
}

// TestExpiredCursorIsRefusedAtOnce: a cursor the log was trimmed past is refused by
// Subscribe itself, so that a client resuming with it gets an error answer rather than a
// subscription that fails once it has begun.
func TestExpiredCursorIsRefusedAtOnce(t *testing.T) {
	t.Parallel()
	clock := fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, err := engine.New(ffmem.New(&ffmem.Options{Shards: 2}), &engine.Config{Clock: clock})
	require.NoError(t, err)
	ctx := t.Context()
	start, err := e.EventCursor(ctx)
	require.NoError(t, err)
	for range 10 {
		_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	clock.Advance(engine.DefaultEventMaxAge + time.Hour)
	_, err = e.SweepEvents(ctx)
	require.NoError(t, err)
	_, err = e.Subscribe(ctx, fftype.EventFilter{}, start)
	require.ErrorIs(t, err, fftype.ErrCursorExpired)
}

// TestCursorOfARecreatedStoreIsRefused: a cursor past the end of the log, as one kept from
// a store that was since recreated is, is an invalid cursor, not a subscription that
// skips every event until the log catches up with it.
func TestCursorOfARecreatedStoreIsRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	old, err := engine.New(ffmem.New(&ffmem.Options{Shards: 1}), nil)
	require.NoError(t, err)
	for range 3 {
		_, err := old.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	cursor, err := old.EventCursor(ctx)
	require.NoError(t, err)

	fresh, err := engine.New(ffmem.New(&ffmem.Options{Shards: 1}), nil)
	require.NoError(t, err)
	_, err = fresh.Subscribe(ctx, fftype.EventFilter{}, cursor)
	require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidCursor})
	sub, err := old.Subscribe(ctx, fftype.EventFilter{}, cursor)
	require.NoError(t, err, "on its own store it is the end of the log")
	sub.Close()
}

// TestStartCursor: a subscription's start cursor is where it began, however far it has
// read since: from the end of the log, a subscription from it delivers every event the
// first one does; from a cursor, it is that cursor.
func TestStartCursor(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e, err := engine.New(ffmem.New(&ffmem.Options{Shards: 2}), nil)
	require.NoError(t, err)
	_, err = e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	sub, err := e.Subscribe(ctx, fftype.EventFilter{}, engine.CursorEnd)
	require.NoError(t, err)
	defer sub.Close()
	start := sub.StartCursor()
	var created []fftype.ExecutionID
	for range 3 {
		res, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
		created = append(created, res.ID)
	}
	var got []fftype.ExecutionID
	for range created {
		got = append(got, nextDelivery(t, sub).Event.ExecutionID)
	}
	require.ElementsMatch(t, created, got)
	require.Equal(t, start, sub.StartCursor(), "reading on does not move the start")

	again, err := e.Subscribe(ctx, fftype.EventFilter{}, start)
	require.NoError(t, err)
	defer again.Close()
	require.Equal(t, start, again.StartCursor(), "a subscription from a cursor starts at it")
	got = got[:0]
	for range created {
		got = append(got, nextDelivery(t, again).Event.ExecutionID)
	}
	require.ElementsMatch(t, created, got, "from the start cursor, every event since the first subscription began")
}

// TestSubscriptionPosition: a subscription's position moves past the events its filter
// skips, so that once retention has deleted them a subscription from it is still taken
// (one from its last delivery would be refused); and it never moves past an event not yet
// pushed into the channel, with the count of deliveries pushed before it.
func TestSubscriptionPosition(t *testing.T) {
	t.Parallel()

	t.Run("PastSkippedEvents", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		store := ffmem.New(&ffmem.Options{Shards: 2})
		e, err := engine.New(store, nil)
		require.NoError(t, err)
		quiet := fftype.EventFilter{Lane: "quiet"}
		sub, err := e.Subscribe(ctx, quiet, engine.CursorEnd)
		require.NoError(t, err)
		defer sub.Close()
		at, delivered := sub.Position()
		require.Equal(t, sub.StartCursor(), at, "it starts where it started")
		require.Zero(t, delivered)
		for range 10 {
			_, err := e.Create(ctx, fftype.CreateParams{Lane: "busy", Kind: "k"})
			require.NoError(t, err)
		}
		end, err := e.EventCursor(ctx)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			at, delivered = sub.Position()
			return at == end
		}, 10*time.Second, time.Millisecond, "the position moves past the skipped events")
		require.Zero(t, delivered)
		require.Empty(t, sub.Events())

		for s := range store.Shards() {
			_, last, err := store.EventBounds(ctx, s)
			require.NoError(t, err)
			require.NoError(t, store.TrimEvents(ctx, s, last))
		}
		_, err = e.Subscribe(ctx, quiet, sub.StartCursor())
		require.ErrorIs(t, err, fftype.ErrCursorExpired, "retention deleted what the start needs")
		again, err := e.Subscribe(ctx, quiet, at)
		require.NoError(t, err, "nothing the position needs was deleted")
		again.Close()
	})

	t.Run("NotPastUndelivered", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		// One shard: its events arrive in order, so the next of one subscription is the
		// next of the other.
		e, err := engine.New(ffmem.New(&ffmem.Options{Shards: 1}), nil)
		require.NoError(t, err)
		created := fftype.EventFilter{Types: []fftype.EventType{fftype.EventCreated}}
		sub, err := e.Subscribe(ctx, created, engine.CursorEnd)
		require.NoError(t, err)
		defer sub.Close()
		room := cap(sub.Events())
		for range room + 10 {
			_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
			require.NoError(t, err)
		}
		// The channel fills up; the next event waits for room, not yet pushed.
		require.Eventually(t, func() bool { return len(sub.Events()) == room }, 10*time.Second, time.Millisecond)
		at, delivered := sub.Position()
		require.Equal(t, uint64(room), delivered, "the deliveries pushed before the position")
		rest, err := e.Subscribe(ctx, created, at)
		require.NoError(t, err)
		defer rest.Close()
		for range room {
			nextDelivery(t, sub)
		}
		require.Equal(t, nextDelivery(t, sub).Event.ExecutionID, nextDelivery(t, rest).Event.ExecutionID,
			"from the position, the first event not pushed when it was read")
	})
}

// trimmingStore sweeps the log through `through` right before every ReadEvents, as a
// retention sweep in another process may between a subscription's checking its cursor
// and its first read.
type trimmingStore struct {
	ffstore.Store
	through uint64
}

func (s *trimmingStore) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	if err := s.TrimEvents(ctx, shard, s.through); err != nil {
		return nil, err
	}
	return s.Store.ReadEvents(ctx, shard, after, limit)
}

// TestSubscribeFromStartOutlivesATrim: a subscription from the oldest event kept, whose
// log is trimmed before it read anything, starts at the new oldest event rather than
// failing with cursor_expired: it never promised the events that were trimmed.
func TestSubscribeFromStartOutlivesATrim(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := &trimmingStore{Store: ffmem.New(&ffmem.Options{Shards: 1}), through: 2}
	e, err := engine.New(st, nil)
	require.NoError(t, err)
	for range 3 {
		_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	sub, err := e.Subscribe(ctx, fftype.EventFilter{}, engine.CursorStart)
	require.NoError(t, err)
	defer sub.Close()
	select {
	case d, ok := <-sub.Events():
		require.True(t, ok, "the subscription ended: %v", sub.Err())
		require.Equal(t, uint64(3), d.Event.Seq, "the first event after the trim")
	case <-time.After(10 * time.Second):
		t.Fatal("no event delivered")
	}
}

// TestSubscribeRefusesAnotherStoresCursor: a cursor names its store's event log, so one
// from another store (with as many shards, and further into its log) is refused rather
// than followed from positions that mean nothing there; another engine on the same store
// takes it.
func TestSubscribeRefusesAnotherStoresCursor(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	newEngine := func(st ffstore.Store) *engine.Engine {
		e, err := engine.New(st, nil)
		require.NoError(t, err)
		return e
	}
	storeA, storeB := ffmem.New(&ffmem.Options{Shards: 2}), ffmem.New(&ffmem.Options{Shards: 2})
	a, b := newEngine(storeA), newEngine(storeB)
	for range 4 {
		_, err := b.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	_, err := a.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	cursor, err := a.EventCursor(ctx)
	require.NoError(t, err)

	_, err = b.Subscribe(ctx, fftype.EventFilter{}, cursor)
	require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidCursor})
	sub, err := newEngine(storeA).Subscribe(ctx, fftype.EventFilter{}, cursor)
	require.NoError(t, err, "another engine on the same store")
	sub.Close()
}

// gatedReadsStore lets the first ReadEvents through and holds every later one until gate
// is closed.
type gatedReadsStore struct {
	ffstore.Store
	reads       atomic.Int32
	first, gate chan struct{}
}

func (s *gatedReadsStore) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	if s.reads.Add(1) == 1 {
		defer close(s.first)
	} else {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.ReadEvents(ctx, shard, after, limit)
}

// TestSubscribeFromStartPromisesWhatItRead: once a subscription from the oldest event has
// read a shard (even finding it empty), the events appended after are promised to it:
// trimmed before it read them, it ends with cursor_expired rather than skip them.
func TestSubscribeFromStartPromisesWhatItRead(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := &gatedReadsStore{Store: ffmem.New(&ffmem.Options{Shards: 1}), first: make(chan struct{}), gate: make(chan struct{})}
	e, err := engine.New(st, nil)
	require.NoError(t, err)
	sub, err := e.Subscribe(ctx, fftype.EventFilter{}, engine.CursorStart)
	require.NoError(t, err)
	defer sub.Close()
	select {
	case <-st.first:
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription did not read the log")
	}
	for range 2 {
		_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	require.NoError(t, st.Store.TrimEvents(ctx, 0, 2))
	_, err = e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	close(st.gate)
	select {
	case d, ok := <-sub.Events():
		require.False(t, ok, "event %d delivered: events 1 and 2 were skipped", d.Event.Seq)
		require.ErrorIs(t, sub.Err(), fftype.ErrCursorExpired)
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription neither delivered nor ended")
	}
}

// flakyReadsStore fails the first `fail` ReadEvents calls as a store that is briefly away.
type flakyReadsStore struct {
	ffstore.Store
	fail atomic.Int32
}

func (s *flakyReadsStore) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	if s.fail.Add(-1) >= 0 {
		return nil, fftype.NewError(fftype.KindUnavailable, fftype.CodeStoreUnavailable, "injected: the store is restarting")
	}
	return s.Store.ReadEvents(ctx, shard, after, limit)
}

// TestSubscriptionOutlivesABriefOutage: a subscription whose reads fail with retryable
// errors reads again from where it was and misses nothing; one whose store was closed
// ends with the store's error.
func TestSubscriptionOutlivesABriefOutage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	mem := ffmem.New(&ffmem.Options{Shards: 2})
	st := &flakyReadsStore{Store: mem}
	e, err := engine.New(st, nil)
	require.NoError(t, err)
	sub, err := e.Subscribe(ctx, fftype.EventFilter{}, engine.CursorStart)
	require.NoError(t, err)
	defer sub.Close()
	st.fail.Store(3)
	for range 4 {
		_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	for range 4 {
		select {
		case _, ok := <-sub.Events():
			require.True(t, ok, "the subscription ended: %v", sub.Err())
		case <-time.After(10 * time.Second):
			t.Fatal("an event was not delivered")
		}
	}

	require.NoError(t, mem.Close())
	select {
	case _, ok := <-sub.Events():
		require.False(t, ok)
		require.ErrorIs(t, sub.Err(), fftype.ErrUnavailable)
	case <-time.After(10 * time.Second):
		t.Fatal("a subscription on a closed store did not end")
	}
}

// shardDownStore answers ReadEvents on one shard with a retryable error, always (a
// Cluster node that serves that shard is away); the other shards answer.
type shardDownStore struct {
	ffstore.Store
	down int
}

func (s *shardDownStore) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	if shard == s.down {
		return nil, fftype.NewError(fftype.KindUnavailable, fftype.CodeStoreUnavailable, "injected: the shard's node is away")
	}
	return s.Store.ReadEvents(ctx, shard, after, limit)
}

// retryLog records the retry_in of each "retrying" warning.
type retryLog struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (h *retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *retryLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *retryLog) WithGroup(string) slog.Handler            { return h }
func (h *retryLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			h.mu.Lock()
			h.delays = append(h.delays, a.Value.Duration())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *retryLog) snapshot() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.delays...)
}

// TestSubscriptionBacksOffWhileOneShardIsDown: a subscription whose reads of one shard
// keep failing with a retryable error backs off, although the other shards answer.
func TestSubscriptionBacksOffWhileOneShardIsDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := &shardDownStore{Store: ffmem.New(&ffmem.Options{Shards: 2}), down: 1}
	h := &retryLog{}
	e, err := engine.New(st, &engine.Config{Logger: slog.New(h)})
	require.NoError(t, err)
	sub, err := e.Subscribe(ctx, fftype.EventFilter{}, engine.CursorStart)
	require.NoError(t, err)
	defer sub.Close()

	require.Eventually(t, func() bool { return len(h.snapshot()) >= 6 }, 20*time.Second, 10*time.Millisecond)
	delays := h.snapshot()[:6]
	t.Logf("retry_in of the first six retries: %v", delays)
	require.Greater(t, delays[5], delays[0],
		"the backoff grows while one shard stays away")
}

// nextDelivery returns sub's next delivery, failing the test if the subscription ends or
// none comes within 10 s.
func nextDelivery(t *testing.T, sub *engine.Subscription) fftype.Delivery {
	t.Helper()
	select {
	case d, ok := <-sub.Events():
		require.True(t, ok, "the subscription ended: %v", sub.Err())
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no event delivered")
		return fftype.Delivery{}
	}
}
