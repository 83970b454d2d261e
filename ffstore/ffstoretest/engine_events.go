package ffstoretest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// waitLimit bounds how long a case waits for a subscription to deliver; a correct store
// delivers in milliseconds.
const waitLimit = 15 * time.Second

// receive reads n deliveries from sub, failing if they do not come.
func receive(t *testing.T, sub *engine.Subscription, n int) []fftype.Delivery {
	t.Helper()
	var out []fftype.Delivery
	timeout := time.After(waitLimit)
	for len(out) < n {
		select {
		case d, ok := <-sub.Events():
			require.True(t, ok, "subscription ended early: %v", sub.Err())
			out = append(out, d)
		case <-timeout:
			t.Fatalf("got %d of %d events", len(out), n)
		}
	}
	return out
}

// requireQuiet requires that sub delivers nothing more right now.
func requireQuiet(t *testing.T, sub *engine.Subscription) {
	t.Helper()
	select {
	case d := <-sub.Events():
		t.Fatalf("unexpected event %s %s", d.Event.Type, d.Event.ExecutionID)
	default:
	}
}

func exerciseEvents(t *testing.T, newStore func(t *testing.T) ffstore.Store) {
	t.Parallel()
	setup := func(t *testing.T) *engineBundle { return newEngineBundle(t, newStore) }

	t.Run("NoGapsNoDuplicates", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const writers, each = 16, 15
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if _, err := b.engine.Create(b.ctx, fftype.CreateParams{Lane: suiteLane, Kind: suiteKind,
						Namespace: fmt.Sprintf("ns%d", w%4)}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		sub, err := b.engine.Subscribe(b.ctx, fftype.EventFilter{}, engine.CursorStart)
		require.NoError(t, err)
		defer sub.Close()
		got := receive(t, sub, writers*each)
		last := map[int]uint64{}
		seen := map[string]bool{}
		for _, d := range got {
			ev := d.Event
			require.Equal(t, last[ev.Shard]+1, ev.Seq, "shard %d: no gap, no duplicate", ev.Shard)
			last[ev.Shard] = ev.Seq
			key := fmt.Sprint(ev.Shard, "/", ev.Seq)
			require.False(t, seen[key])
			seen[key] = true
			require.Equal(t, fftype.EventCreated, ev.Type)
		}
		requireQuiet(t, sub)
	})

	t.Run("ResumeFromCursor", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for range 5 {
			b.create(t, fftype.CreateParams{})
		}
		sub, err := b.engine.Subscribe(b.ctx, fftype.EventFilter{}, engine.CursorStart)
		require.NoError(t, err)
		first := receive(t, sub, 3)
		sub.Close()
		require.NoError(t, sub.Err(), "closing is a clean end")
		for range 2 {
			b.create(t, fftype.CreateParams{})
		}
		sub, err = b.engine.Subscribe(b.ctx, fftype.EventFilter{}, first[2].Cursor)
		require.NoError(t, err)
		defer sub.Close()
		rest := receive(t, sub, 4)
		ids := map[fftype.ExecutionID]bool{}
		for _, d := range append(first, rest...) {
			require.False(t, ids[d.Event.ExecutionID], "an event delivered twice across the restart")
			ids[d.Event.ExecutionID] = true
		}
		require.Len(t, ids, 7, "the restarted subscriber misses nothing")
		requireQuiet(t, sub)

		_, err = b.engine.Subscribe(b.ctx, fftype.EventFilter{}, "not-a-cursor")
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidCursor)
		_, err = b.engine.Subscribe(b.ctx, fftype.EventFilter{Lane: "bad\n"}, engine.CursorStart)
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidLane)
		_, err = b.engine.Subscribe(b.ctx, fftype.EventFilter{Types: []fftype.EventType{"complted"}}, engine.CursorStart)
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
	})

	t.Run("FollowLiveWithFilter", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		old := b.create(t, fftype.CreateParams{Namespace: "tenant-a"})
		end, err := b.engine.EventCursor(b.ctx)
		require.NoError(t, err)
		sub, err := b.engine.Subscribe(b.ctx, fftype.EventFilter{Namespace: "tenant-a",
			Types: []fftype.EventType{fftype.EventCreated, fftype.EventCompleted}}, end)
		require.NoError(t, err)
		defer sub.Close()
		b.create(t, fftype.CreateParams{Namespace: "tenant-b"})
		id := b.create(t, fftype.CreateParams{Namespace: "tenant-a"})
		d := receive(t, sub, 1)[0]
		require.Equal(t, id, d.Event.ExecutionID, "only new events of the filter's namespace")
		require.NotEqual(t, old, d.Event.ExecutionID)

		leases, err := b.engine.Claim(b.ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1",
			Lanes: []string{suiteLane}, Count: 10})
		require.NoError(t, err)
		for _, l := range leases {
			require.NoError(t, b.engine.Complete(b.ctx, l.ExecutionID, l.Fence, nil, ""))
		}
		var completed []fftype.ExecutionID
		for _, d := range receive(t, sub, 2) {
			require.Equal(t, fftype.EventCompleted, d.Event.Type, "claimed events are filtered out")
			completed = append(completed, d.Event.ExecutionID)
		}
		require.ElementsMatch(t, []fftype.ExecutionID{old, id}, completed)

		only, err := b.engine.Subscribe(b.ctx, fftype.EventFilter{ExecutionID: id}, engine.CursorStart)
		require.NoError(t, err)
		defer only.Close()
		var types []fftype.EventType
		for _, d := range receive(t, only, 3) {
			types = append(types, d.Event.Type)
		}
		require.Equal(t, []fftype.EventType{fftype.EventCreated, fftype.EventClaimed, fftype.EventCompleted}, types)
	})

	t.Run("ConsumersSplitAndHandOver", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		other, err := engine.New(b.store, &engine.Config{Clock: b.clock})
		require.NoError(t, err)
		var mu sync.Mutex
		handled := map[string]string{} // event → consumer replica that handled it
		handler := func(who string) func(context.Context, fftype.Event) error {
			return func(_ context.Context, ev fftype.Event) error {
				mu.Lock()
				defer mu.Unlock()
				key := fmt.Sprint(ev.Shard, "/", ev.Seq)
				if prev, dup := handled[key]; dup {
					return fmt.Errorf("event %s handled by %s and again by %s", key, prev, who)
				}
				handled[key] = who
				return nil
			}
		}
		const ttl = 9 * time.Second
		c1, err := b.engine.NewConsumer(engine.ConsumerConfig{Name: "audit", LeaseTTL: ttl, Handler: handler("c1")})
		require.NoError(t, err)
		c2, err := other.NewConsumer(engine.ConsumerConfig{Name: "audit", LeaseTTL: ttl, Handler: handler("c2")})
		require.NoError(t, err)
		drain := func(cs ...*engine.Consumer) {
			t.Helper()
			for progress := true; progress; {
				progress = false
				for _, c := range cs {
					n, err := c.Step(b.ctx)
					require.NoError(t, err)
					progress = progress || n > 0
				}
			}
		}
		shards := b.store.Shards()
		drain(c1, c2)
		b.clock.Advance(ttl / 3) // both rebalance: c1 hands back what c2 should take
		drain(c1, c2)
		drain(c2, c1)
		require.Len(t, c1.Shards(), (shards+1)/2, "the first replica keeps its share")
		require.Len(t, c2.Shards(), shards/2, "the second replica takes the rest")

		for range 40 {
			b.create(t, fftype.CreateParams{})
		}
		drain(c1, c2)
		mu.Lock()
		require.Len(t, handled, 40, "every event handled once")
		mu.Unlock()

		// c2 dies without handing back its leases; c1 takes over once they expire.
		for range 20 {
			b.create(t, fftype.CreateParams{})
		}
		b.clock.Advance(ttl + time.Second)
		drain(c1)
		require.Len(t, c1.Shards(), shards, "the survivor holds every shard")
		mu.Lock()
		require.Len(t, handled, 60, "events appended while c2 was dead are handled, none twice")
		mu.Unlock()

		_, err = b.engine.NewConsumer(engine.ConsumerConfig{Name: "Bad Name", Handler: handler("x")})
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
		_, err = b.engine.NewConsumer(engine.ConsumerConfig{Name: "nohandler"})
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
	})

	t.Run("RetentionKeepsWhatConsumersNeed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var seen int
		slow, err := b.engine.NewConsumer(engine.ConsumerConfig{Name: "slow",
			Handler: func(context.Context, fftype.Event) error { seen++; return nil }})
		require.NoError(t, err)
		_, err = slow.Step(b.ctx) // registers, with nothing to read yet
		require.NoError(t, err)
		start, err := b.engine.EventCursor(b.ctx)
		require.NoError(t, err)
		for range 10 {
			b.create(t, fftype.CreateParams{})
		}
		n, err := b.engine.SweepEvents(b.ctx)
		require.NoError(t, err)
		require.Zero(t, n, "nothing the consumer still needs is deleted")
		_, err = slow.Step(b.ctx)
		require.NoError(t, err)
		require.Equal(t, 10, seen)
		n, err = b.engine.SweepEvents(b.ctx)
		require.NoError(t, err)
		require.Equal(t, 10, n, "events every consumer passed are deleted")

		_, err = b.engine.Subscribe(b.ctx, fftype.EventFilter{}, start)
		require.ErrorIs(t, err, fftype.ErrCursorExpired, "an expired cursor gets the typed error")

		// The maximum age deletes events even a stalled consumer has not passed.
		for range 3 {
			b.create(t, fftype.CreateParams{})
		}
		b.clock.Advance(engine.DefaultEventMaxAge + time.Minute)
		n, err = b.engine.SweepEvents(b.ctx)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		_, err = slow.Step(b.ctx)
		require.NoError(t, err, "a consumer behind the maximum age skips ahead")
		b.create(t, fftype.CreateParams{})
		_, err = slow.Step(b.ctx)
		require.NoError(t, err)
		require.Equal(t, 11, seen)

		require.NoError(t, b.engine.DeleteConsumer(b.ctx, "slow"))
		b.create(t, fftype.CreateParams{})
		n, err = b.engine.SweepEvents(b.ctx)
		require.NoError(t, err)
		require.Zero(t, n, "with no consumer registered, events live for the maximum age")
	})
}
