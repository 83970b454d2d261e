package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
)

// A durable consumer may be named "timers". Its leases must not be the timer loop's: were
// they shared, each would count the other as a replica of itself and take only half the
// shards, so the consumer would miss the events of the timer loop's shards and the timer
// loop would stop running timers on the consumer's.
func TestConsumerNamedTimersHasLeasesOfItsOwn(t *testing.T) {
	t.Parallel()
	e, clock := newTestEngineOn(t, ffmem.New(&ffmem.Options{Shards: 4}), Config{})
	ctx := t.Context()

	timers := e.newLeaser(timerLeases, 0, false) // exactly what timerLoop creates
	require.NoError(t, timers.balance(ctx))
	assert.Len(t, timers.heldShards(), e.shards)

	var mu sync.Mutex
	handled := 0
	c, err := e.NewConsumer(ConsumerConfig{Name: "timers", Filter: fftype.EventFilter{Types: []fftype.EventType{fftype.EventCreated}},
		Handler: func(context.Context, fftype.Event) error { mu.Lock(); handled++; mu.Unlock(); return nil }})
	require.NoError(t, err, "the name is accepted")

	const n = 40
	for range n {
		_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	for range 10 {
		clock.Advance(DefaultConsumerLeaseTTL / 3)
		require.NoError(t, timers.balance(ctx))
		for {
			k, err := c.Step(ctx)
			require.NoError(t, err)
			if k == 0 {
				break
			}
		}
		if testing.Verbose() {
			t.Logf("timers held %v consumer held %v", timers.heldShards(), c.Shards())
		}
	}
	assert.Len(t, timers.heldShards(), e.shards, "the only timer loop must keep running timers on every shard")
	assert.Len(t, c.Shards(), e.shards, "the only replica of the consumer must hold every shard")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, n, handled, "the consumer handles every event")
}

// A consumer name that parses as an execution id is refused: the engine writes the name
// as a member of every shard's cursor queue, and a store may take a member that parses as
// an id for that execution, on that id's shard (the in-memory store panics on it). A name
// only shaped like one is still taken.
func TestConsumerNameLikeAnExecutionIDIsRefused(t *testing.T) {
	t.Parallel()
	e, _ := newTestEngineOn(t, ffmem.New(&ffmem.Options{Shards: 4}), Config{})
	ctx := t.Context()
	handler := func(context.Context, fftype.Event) error { return nil }

	name := string(fftype.NewExecutionID(1))
	_, err := e.NewConsumer(ConsumerConfig{Name: name, Handler: handler})
	require.ErrorIs(t, err, fftype.ErrValidation)
	require.ErrorIs(t, e.DeleteConsumer(ctx, name), fftype.ErrValidation)

	name = "s1_" + strings.Repeat("x", 36)
	c, err := e.NewConsumer(ConsumerConfig{Name: name, Handler: handler})
	require.NoError(t, err)
	_, err = c.Step(ctx)
	require.NoError(t, err)
	require.NoError(t, e.DeleteConsumer(ctx, name))
}

// leaseFailStore fails, while armed, every unit that writes a shard lease, after its fn has
// run (a commit that loses a race: the store contract allows it, and says fn must have no
// effect outside tx).
type leaseFailStore struct {
	ffstore.Store
	armed atomic.Bool
}

type leaseSpyTx struct {
	ffstore.Tx
	wroteLease bool
}

func (t *leaseSpyTx) Put(key string, value []byte) {
	if strings.HasPrefix(key, "slease:") {
		t.wroteLease = true
	}
	t.Tx.Put(key, value)
}

func (s *leaseFailStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	return s.Store.Update(ctx, shard, func(tx ffstore.Tx) error {
		spy := &leaseSpyTx{Tx: tx}
		if err := fn(spy); err != nil {
			return err
		}
		if s.armed.Load() && spy.wroteLease {
			return fftype.ErrStoreConflict
		}
		return nil
	})
}

// A replica whose unit taking a lease fails to commit does not hold the lease: were it to
// count the shard as its own, then once the rightful owner renewed, both replicas would
// handle the shard's events at the same time.
func TestFailedLeaseTakeIsNotHeld(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 1})
	flaky := &leaseFailStore{Store: mem}
	eA, clock := newTestEngineOn(t, mem, Config{})
	eB, err := New(flaky, &Config{Clock: clock})
	require.NoError(t, err)
	ctx := t.Context()

	var mu sync.Mutex
	handled := map[uint64][]string{}
	handler := func(who string) func(context.Context, fftype.Event) error {
		return func(_ context.Context, ev fftype.Event) error {
			mu.Lock()
			defer mu.Unlock()
			handled[ev.Seq] = append(handled[ev.Seq], who)
			return nil
		}
	}
	const ttl = 9 * time.Second
	a, err := eA.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: ttl, Handler: handler("A")})
	require.NoError(t, err)
	b, err := eB.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: ttl, Handler: handler("B")})
	require.NoError(t, err)

	_, err = a.Step(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{0}, a.Shards())
	_, err = b.Step(ctx)
	require.NoError(t, err)
	require.Empty(t, b.Shards(), "A holds the only shard")

	// A stalls past its lease; B tries to take the shard, but the unit fails to commit.
	clock.Advance(ttl + time.Second)
	flaky.armed.Store(true)
	_, err = b.Step(ctx)
	require.ErrorIs(t, err, fftype.ErrStoreConflict)
	flaky.armed.Store(false)

	// A comes back and legitimately takes its shard again.
	_, err = a.Step(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{0}, a.Shards())
	assert.Empty(t, b.Shards(), "B never got the lease")

	for range 5 {
		_, err := eA.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	_, err = b.Step(ctx)
	require.NoError(t, err)
	_, err = a.Step(ctx)
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	for seq, who := range handled {
		assert.Len(t, who, 1, "event %d handled by %v: two replicas held one shard", seq, who)
	}
}

// TestConsumerTakesOverReleasedLeasesAtOnce: the leases a stopping replica hands back are
// taken over by the others at their next step, not at their next balance a third of the
// lease TTL later, so a clean stop or a rolling deploy leaves no shard without its
// consumer for seconds.
func TestConsumerTakesOverReleasedLeasesAtOnce(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 2})
	e, clock := newTestEngineOn(t, mem, Config{})
	ctx := t.Context()
	handled := map[int]int{} // shard → events handled by B
	a, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(context.Context, fftype.Event) error { return nil }})
	require.NoError(t, err)
	b, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(_ context.Context, ev fftype.Event) error {
		handled[ev.Shard]++
		return nil
	}})
	require.NoError(t, err)
	step := func(c *Consumer) {
		t.Helper()
		_, err := c.Step(ctx)
		require.NoError(t, err)
	}
	step(a)
	step(b)
	clock.Advance(DefaultConsumerLeaseTTL / 3)
	step(a)
	step(b)
	require.Len(t, a.Shards(), 1, "the replicas share the shards")
	require.Len(t, b.Shards(), 1, "the replicas share the shards")

	a.Release(ctx) // A stops, just after B counted the replicas
	for shard := range e.shards {
		require.NoError(t, mem.Update(ctx, shard, func(tx ffstore.Tx) error {
			tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventProgress, ExecutionID: "e"})
			return nil
		}))
	}
	clock.Advance(replicaCountGap / 2)
	step(b)
	require.Len(t, b.Shards(), 1, "B counts the replicas at most every replicaCountGap")
	require.Equal(t, replicaCountGap, b.leases.idleWait(time.Second),
		"having put a count off, B waits no longer than the gap for a change to wake it")
	clock.Advance(replicaCountGap / 2) // well before B's next balance
	step(b)
	require.Equal(t, []int{0, 1}, b.Shards(), "B takes over A's shard at once")
	require.Equal(t, map[int]int{0: 1, 1: 1}, handled, "B handles the events of both shards")
}

// countingStore counts the calls made to the store it wraps, whose change notifications
// it hides.
type countingStore struct {
	ffstore.Store
	calls atomic.Int64
}

func (s *countingStore) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	s.calls.Add(1)
	return s.Store.View(ctx, shard, fn)
}

func (s *countingStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	s.calls.Add(1)
	return s.Store.Update(ctx, shard, fn)
}

func (s *countingStore) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	s.calls.Add(1)
	return s.Store.ReadEvents(ctx, shard, after, limit)
}

func (s *countingStore) EventBounds(ctx context.Context, shard int) (uint64, uint64, error) {
	s.calls.Add(1)
	return s.Store.EventBounds(ctx, shard)
}

// TestConsumerIdleWakesOnlyToRenewItsLeases: an idle consumer whose poll interval is longer
// than a third of its lease TTL wakes once a third of the TTL, to renew its leases, and
// touches the store only then: the per-shard checks of its own step must not count as a
// put-off count of the replicas, which would make it wake every replicaCountGap. The test
// runs Run's loop on the fake clock: step, then wait idleWait.
func TestConsumerIdleWakesOnlyToRenewItsLeases(t *testing.T) {
	t.Parallel()
	st := &countingStore{Store: ffmem.New(&ffmem.Options{Shards: 4})}
	e, clock := newTestEngineOn(t, st, Config{TimerPollInterval: time.Hour})
	ctx := t.Context()
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(context.Context, fftype.Event) error { return nil }})
	require.NoError(t, err)
	_, err = c.Step(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 2, 3}, c.Shards())

	before := st.calls.Load()
	wakes := 0
	for end := clock.Now().Add(time.Minute); clock.Now().Before(end); wakes++ {
		clock.Advance(c.idleWait())
		n, err := c.Step(ctx)
		require.NoError(t, err)
		require.Zero(t, n)
	}
	require.Equal(t, int(time.Minute/(DefaultConsumerLeaseTTL/3)), wakes, "an idle consumer wakes once a third of the lease TTL")
	// Each wake balances (a unit on shard 0 and one per shard) and reads each shard's log.
	require.LessOrEqual(t, st.calls.Load()-before, int64(wakes*(2*e.shards+1)))
	require.Equal(t, []int{0, 1, 2, 3}, c.Shards())
}

// viewFailStore fails, while armed, every read of shard 0 made with View.
type viewFailStore struct {
	ffstore.Store
	armed atomic.Bool
}

func (s *viewFailStore) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	if s.armed.Load() && shard == 0 {
		return errors.New("shard 0 cannot be read")
	}
	return s.Store.View(ctx, shard, fn)
}

// TestConsumerCarriesOnPastAFailedReplicaCount: the count of the live replicas between two
// balances only lets a replica take over released leases sooner, so one that fails to read
// is logged, once for a run of failures, and the step goes on with the leases it holds.
func TestConsumerCarriesOnPastAFailedReplicaCount(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 2})
	st := &viewFailStore{Store: mem}
	var logs strings.Builder
	e, clock := newTestEngineOn(t, st, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := t.Context()
	handled := 0
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit",
		Handler: func(context.Context, fftype.Event) error { handled++; return nil }})
	require.NoError(t, err)
	_, err = c.Step(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{0, 1}, c.Shards())

	st.armed.Store(true)
	for i := range 3 {
		clock.Advance(replicaCountGap) // a count is due, the balance is not
		for shard := range e.shards {
			appendEvents(t, mem, shard, 1)
		}
		n, err := c.Step(ctx)
		require.NoError(t, err, "step %d", i)
		require.Equal(t, e.shards, n, "step %d handles every shard's event", i)
	}
	require.Equal(t, 3*e.shards, handled)
	require.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), "one warning for the run of failures:\n%s", logs.String())
}

// TestConsumerFollowsItsStoredCursorBack: a stored cursor that is not where the replica
// read from (a store that came back without its last writes took the cursor's advance
// back with the events it covered) is where the replica reads again, rather than being
// overwritten by the replica's cursor from before the loss.
func TestConsumerFollowsItsStoredCursorBack(t *testing.T) {
	t.Parallel()
	e, err := New(ffmem.New(&ffmem.Options{Shards: 1}), nil)
	require.NoError(t, err)
	ctx := t.Context()
	handled := map[uint64]int{}
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit",
		Handler: func(_ context.Context, ev fftype.Event) error { handled[ev.Seq]++; return nil }})
	require.NoError(t, err)
	create := func() {
		_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	for range 4 {
		create()
	}
	n, err := c.Step(ctx)
	require.NoError(t, err)
	require.Equal(t, 4, n)

	require.NoError(t, e.update(ctx, 0, func(tx ffstore.Tx) error { // the store loses the last two advances
		rec, ok, err := readShardLease(tx, "audit")
		require.True(t, ok)
		rec.Cursor = 2
		putJSON(tx, shardLeaseKey("audit"), rec)
		return err
	}))
	create()
	for range 3 {
		_, err := c.Step(ctx)
		require.NoError(t, err)
	}
	require.Equal(t, map[uint64]int{1: 1, 2: 1, 3: 2, 4: 2, 5: 2}, handled,
		"events 3 and 4, whose handling the store lost, are handled again")
	require.NoError(t, e.store.View(ctx, 0, func(tx ffstore.ReadTx) error {
		rec, _, err := readShardLease(tx, "audit")
		require.Equal(t, uint64(5), rec.Cursor)
		return err
	}))
}

// TestConsumerSlowHandlerKeepsItsLease: a handler slow enough that a whole batch outlasts
// the shard lease still moves the cursor on, on every shard. Were the lease left to lapse
// during a batch, the cursor could not be stored, and the replica would take the lease
// back from the old cursor and handle the same events again, forever; were a shard's batch
// to stop at once under a lease aged by the other shards' batches, it would wait for them
// to drain.
func TestConsumerSlowHandlerKeepsItsLease(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 2})
	e, clock := newTestEngineOn(t, mem, Config{})
	ctx := t.Context()
	const (
		ttl     = 3 * time.Second
		perCall = 10 * time.Millisecond // a batch takes eventBatch*perCall, well over ttl
		n       = eventBatch + 100      // per shard
	)
	handled := map[[2]uint64]int{} // (shard, seq) → calls
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: ttl,
		Handler: func(_ context.Context, ev fftype.Event) error {
			clock.Advance(perCall)
			handled[[2]uint64{uint64(ev.Shard), ev.Seq}]++
			return nil
		}})
	require.NoError(t, err)
	for shard := range e.shards {
		require.NoError(t, mem.Update(ctx, shard, func(tx ffstore.Tx) error {
			for range n {
				tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventProgress, ExecutionID: "e"})
			}
			return nil
		}))
	}

	perShard := func() []int {
		out := make([]int, e.shards)
		for ev := range handled {
			out[ev[0]]++
		}
		return out
	}
	_, err = c.Step(ctx)
	require.NoError(t, err)
	require.NotContains(t, perShard(), 0, "each shard makes progress in a step, after another shard's slow batch too")
	for range 10 * e.shards * n * int(perCall) / int(ttl) { // ten times the steps needed
		_, err := c.Step(ctx)
		require.NoError(t, err)
	}
	require.Equal(t, e.shards*n, len(handled), "every event is handled")
	for ev, k := range handled {
		require.Equal(t, 1, k, "event %v handled %d times by the only replica", ev, k)
	}
	require.Equal(t, []int{0, 1}, c.Shards(), "the replica kept its leases")
	for shard := range e.shards {
		require.NoError(t, e.store.View(ctx, shard, func(tx ffstore.ReadTx) error {
			rec, _, err := readShardLease(tx, "audit")
			require.Equal(t, uint64(n), rec.Cursor)
			return err
		}))
	}
}

// newSlowConsumer returns the only replica of a consumer on a store of 8 shards, with a
// lease TTL of 3 s and a handler that takes 10 ms of the fake clock per event (a third of
// the TTL in 100 events), and the events it handled per shard.
func newSlowConsumer(t *testing.T) (*Consumer, *ffmem.Store, []int) {
	t.Helper()
	mem := ffmem.New(&ffmem.Options{Shards: 8})
	e, clock := newTestEngineOn(t, mem, Config{})
	handled := make([]int, e.shards)
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: 3 * time.Second,
		Handler: func(_ context.Context, ev fftype.Event) error {
			clock.Advance(10 * time.Millisecond)
			handled[ev.Shard]++
			return nil
		}})
	require.NoError(t, err)
	return c, mem, handled
}

// TestConsumerSlowHandlerKeepsTheLeasesOfEveryShard: a replica keeps the leases of all its
// shards through a step of slow batches, not only of the shard it is handling: each batch may
// run for a third of the TTL, so were only that shard's lease renewed, the lease of the
// fourth shard, renewed as the step began, would lapse before its turn came.
func TestConsumerSlowHandlerKeepsTheLeasesOfEveryShard(t *testing.T) {
	t.Parallel()
	c, mem, handled := newSlowConsumer(t)
	for shard := range len(handled) {
		appendEvents(t, mem, shard, eventBatch+100)
	}
	_, err := c.Step(t.Context())
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7}, c.Shards(), "the only replica keeps every lease through a step")
	require.NotContains(t, handled, 0, "each shard makes progress in a step")
}

// TestConsumerSlowHandlerServesEveryShard: a slow replica whose first shards receive, each
// step, what one batch handles still gets to its later shards' events.
func TestConsumerSlowHandlerServesEveryShard(t *testing.T) {
	t.Parallel()
	c, mem, handled := newSlowConsumer(t)
	for shard := range len(handled) {
		appendEvents(t, mem, shard, 50)
	}
	for range 30 {
		for shard := range 3 {
			appendEvents(t, mem, shard, 100) // what one batch handles
		}
		_, err := c.Step(t.Context())
		require.NoError(t, err)
	}
	for shard := 3; shard < len(handled); shard++ {
		require.Equal(t, 50, handled[shard], "shard %d's events are handled (handled per shard: %v)", shard, handled)
	}
}

// slowUnitsStore takes `per` of the fake clock for every unit and EventBounds call, as a
// store a network round trip or a few away does.
type slowUnitsStore struct {
	ffstore.Store
	clock *fftest.Clock
	per   time.Duration
}

func (s *slowUnitsStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	s.clock.Advance(s.per)
	return s.Store.Update(ctx, shard, fn)
}

func (s *slowUnitsStore) EventBounds(ctx context.Context, shard int) (uint64, uint64, error) {
	s.clock.Advance(s.per)
	return s.Store.EventBounds(ctx, shard)
}

// TestConsumerBalanceLongerThanAThirdOfTheTTL: a balance takes one unit per shard, so on a
// store with many shards, or slow units, it may take longer than a third of the lease TTL.
// The next balance is due a third of the TTL after it ends, not after it began, or the
// batches after it would end before their first event and the consumer handle nothing.
// Here 4 shards with units of 5 ms and a TTL of 60 ms stand for the 1024 shards with units
// of 5 ms and the TTL of 15 s of a real store: a steady balance takes 25 ms (the first, which
// also reads the shards' bounds, 45 ms), over a third of the TTL but under two.
func TestConsumerBalanceLongerThanAThirdOfTheTTL(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 4})
	st := &slowUnitsStore{Store: mem}
	e, clock := newTestEngineOn(t, st, Config{})
	st.clock = clock
	handled := 0
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: 60 * time.Millisecond,
		Handler: func(context.Context, fftype.Event) error { handled++; return nil }})
	require.NoError(t, err)
	for shard := range 4 {
		appendEvents(t, mem, shard, 10)
	}
	st.per = 5 * time.Millisecond
	for range 3 {
		_, err := c.Step(t.Context())
		require.NoError(t, err)
	}
	require.Equal(t, 40, handled, "the waiting events are handled")
	require.Equal(t, []int{0, 1, 2, 3}, c.Shards(), "the replica kept its leases")
}

// appendEvents appends n progress events to shard's log.
func appendEvents(t *testing.T, st ffstore.Store, shard, n int) {
	t.Helper()
	require.NoError(t, st.Update(t.Context(), shard, func(tx ffstore.Tx) error {
		for range n {
			tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventProgress, ExecutionID: "e"})
		}
		return nil
	}))
}

// TestConsumerFailingShardDoesNotHoldBackTheOthers: an event the handler keeps failing on
// stops only its own shard. Step still handles the other shards' events, returns the
// failure, and offers the failed event again once the shard's back-off has passed.
func TestConsumerFailingShardDoesNotHoldBackTheOthers(t *testing.T) {
	t.Parallel()
	e, clock := newTestEngineOn(t, ffmem.New(&ffmem.Options{Shards: 2}), Config{})
	ctx := t.Context()
	errPoison := errors.New("cannot handle this one")
	handled := map[int]int{} // shard → events handled
	tried := 0               // attempts on shard 0's event
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(_ context.Context, ev fftype.Event) error {
		if ev.Shard == 0 {
			tried++
			return errPoison
		}
		handled[ev.Shard]++
		return nil
	}})
	require.NoError(t, err)
	_, err = c.Step(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{0, 1}, c.Shards())
	for shard := range 2 {
		require.NoError(t, e.update(ctx, shard, func(tx ffstore.Tx) error {
			tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventProgress, ExecutionID: "e"})
			return nil
		}))
	}

	n, err := c.Step(ctx)
	require.ErrorIs(t, err, errPoison)
	require.Equal(t, 1, n, "shard 1's event is handled in the same step")
	require.Equal(t, map[int]int{1: 1}, handled)
	clock.Advance(shardRetryMin)
	_, err = c.Step(ctx)
	require.ErrorIs(t, err, errPoison)
	require.Equal(t, 2, tried, "shard 0's cursor stays before the failing event")
	require.Equal(t, map[int]int{1: 1}, handled, "shard 1's cursor moved past its event")
}

// shardFault is what a shardFaultStore does to the units of its shard.
type shardFault int32

const (
	faultNone      shardFault = iota
	faultFail                 // every unit fails, writing nothing
	faultLostReply            // the next unit commits but reports failure (a lost reply), once
	faultHang                 // every unit waits until its ctx ends
)

// shardFaultStore does its fault to every unit on one shard.
type shardFaultStore struct {
	ffstore.Store
	shard int
	fault atomic.Int32
}

func (s *shardFaultStore) set(f shardFault) { s.fault.Store(int32(f)) }

func (s *shardFaultStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	if shard != s.shard {
		return s.Store.Update(ctx, shard, fn)
	}
	switch shardFault(s.fault.Load()) {
	case faultFail:
		return fftype.ErrUnavailable
	case faultHang:
		<-ctx.Done()
		return ctx.Err()
	case faultLostReply:
		err := s.Store.Update(ctx, shard, fn)
		if err == nil && s.fault.CompareAndSwap(int32(faultLostReply), int32(faultNone)) {
			return fftype.ErrUnavailable
		}
		return err
	}
	return s.Store.Update(ctx, shard, fn)
}

// TestConsumerFailingShardStoreDoesNotHoldBackTheOthers: a shard whose store fails (an
// unreachable partition, a corrupt lease) stops only itself, as a failing handler does:
// its lease cannot be renewed, but the balance goes on to the other shards, whose leases
// it renews and whose batches run, and the step reports the failure. Shard 0, where the
// replicas announce themselves, is no exception: a replica that cannot announce itself
// still renews the leases it holds, taking no others as it cannot count its share.
func TestConsumerFailingShardStoreDoesNotHoldBackTheOthers(t *testing.T) {
	t.Parallel()
	for _, failing := range []int{3, 0} {
		t.Run(fmt.Sprintf("shard %d", failing), func(t *testing.T) {
			t.Parallel()
			mem := ffmem.New(&ffmem.Options{Shards: 4})
			st := &shardFaultStore{Store: mem, shard: failing}
			e, clock := newTestEngineOn(t, st, Config{Logger: slog.New(slog.DiscardHandler)})
			ctx := t.Context()
			handled := map[int]int{}
			c, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(_ context.Context, ev fftype.Event) error {
				handled[ev.Shard]++
				return nil
			}})
			require.NoError(t, err)
			_, err = c.Step(ctx)
			require.NoError(t, err)
			require.Equal(t, []int{0, 1, 2, 3}, c.Shards())

			st.set(faultFail)
			healthy := slices.DeleteFunc([]int{0, 1, 2, 3}, func(s int) bool { return s == failing })
			const steps = int(4 * DefaultConsumerLeaseTTL / time.Second) // past every lease's first expiry
			failed := 0
			for range steps {
				for _, shard := range healthy {
					appendEvents(t, mem, shard, 1)
				}
				if _, err := c.Step(ctx); err != nil {
					require.ErrorIs(t, err, fftype.ErrUnavailable)
					failed++
				}
				clock.Advance(time.Second)
			}
			require.Positive(t, failed, "the step reports the failing shard")
			want := map[int]int{}
			for _, shard := range healthy {
				want[shard] = steps
			}
			require.Equal(t, want, handled, "shards %v keep going while shard %d's store fails", healthy, failing)
			require.Equal(t, healthy, c.Shards())
		})
	}
}

// TestConsumerFailingShardBacksOff: a shard whose handler keeps failing is retried after a
// back-off that doubles up to shardRetryMax, however much the other shards keep the
// replica stepping, and its error is logged as a warning once per run of failures: a
// downstream that is already failing is not hammered, nor the log flooded. A success ends
// the run, so the next failure is retried after shardRetryMin again.
func TestConsumerFailingShardBacksOff(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 2})
	var logs strings.Builder
	e, clock := newTestEngineOn(t, mem, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := t.Context()
	failing, tried := true, 0
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(_ context.Context, ev fftype.Event) error {
		if ev.Shard != 0 {
			return nil
		}
		tried++
		if failing {
			return errors.New("downstream is down")
		}
		return nil
	}})
	require.NoError(t, err)
	warnings := func() int { return strings.Count(logs.String(), "level=WARN") }
	const tick = 10 * time.Millisecond
	step := func() bool { // one step with traffic on shard 1; reports whether shard 0 was tried
		t.Helper()
		appendEvents(t, mem, 1, 1)
		before := tried
		_, err := c.Step(ctx)
		clock.Advance(tick)
		if tried == before {
			require.NoError(t, err)
			return false
		}
		return true
	}

	appendEvents(t, mem, 0, 1)
	var gaps []time.Duration
	last := clock.Now()
	require.True(t, step())
	require.Equal(t, shardRetryMin-tick, c.idleWait(), "an idle Run wakes when the back-off ends")
	for end := last.Add(4 * shardRetryMax); clock.Now().Before(end); {
		if at := clock.Now(); step() {
			gaps, last = append(gaps, at.Sub(last)), at
		}
	}
	require.Less(t, len(gaps), 20, "retried %d times in %v", len(gaps), 4*shardRetryMax)
	wait := shardRetryMin
	for i, gap := range gaps {
		require.GreaterOrEqual(t, gap, wait, "retry %d (gaps %v)", i+1, gaps)
		require.Less(t, gap, wait+tick, "retry %d (gaps %v)", i+1, gaps)
		wait = min(2*wait, shardRetryMax)
	}
	require.Equal(t, shardRetryMax, gaps[len(gaps)-1], "the back-off is capped (gaps %v)", gaps)
	require.Equal(t, 1, warnings(), "one warning for the run of failures:\n%s", logs.String())

	failing = false
	for !step() {
	}
	failing = true
	appendEvents(t, mem, 0, 1)
	require.True(t, step(), "a shard that succeeded is tried at once")
	for range shardRetryMin/tick - 1 {
		require.False(t, step())
	}
	require.True(t, step(), "after a success the back-off starts over")
	require.Equal(t, 2, warnings(), "a new run of failures is logged again:\n%s", logs.String())
}

// TestConsumerBackOffEndsWithTheLease: a shard's run of failures belongs to the lease it
// happened under. Replica A backs a failing shard off to shardRetryMax, stalls past its
// lease, and B takes the shard over and handles the event; when A takes the shard back, it
// is a fresh shard for A: A handles its next event at once, and a failure on it starts a
// new run (a warning, retried after shardRetryMin), not the old run's back-off.
func TestConsumerBackOffEndsWithTheLease(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 1})
	var logs strings.Builder
	eA, clock := newTestEngineOn(t, mem, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	eB, err := New(mem, &Config{Clock: clock})
	require.NoError(t, err)
	ctx := t.Context()
	triedA := 0
	a, err := eA.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(context.Context, fftype.Event) error {
		triedA++
		return errors.New("downstream is down")
	}})
	require.NoError(t, err)
	b, err := eB.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(context.Context, fftype.Event) error { return nil }})
	require.NoError(t, err)

	appendEvents(t, mem, 0, 1)
	for a.failing[0].wait < shardRetryMax {
		_, _ = a.Step(ctx)
		clock.Advance(100 * time.Millisecond)
	}
	clock.Advance(DefaultConsumerLeaseTTL + time.Second) // A stalls; its lease lapses
	n, err := b.Step(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "B takes the shard over and handles the event A failed on")
	b.Release(ctx)
	appendEvents(t, mem, 0, 1)

	before := triedA
	_, err = a.Step(ctx)
	require.Error(t, err)
	require.Equal(t, []int{0}, a.Shards(), "A takes the shard back")
	require.Equal(t, before+1, triedA, "A tries the shard's new event at once")
	require.Equal(t, shardRetryMin, a.failing[0].wait, "the failure starts a new run")
	require.Equal(t, 2, strings.Count(logs.String(), "level=WARN"), "the new run is logged again:\n%s", logs.String())
}

// TestConsumerRunKeepsUpPastAFailingShard: while the other shards make progress, Run steps
// again at once, even though a shard failed in the step: on a store that cannot tell of
// changes, waiting a poll interval after each such step would let one failing event
// throttle every shard to a batch per interval.
func TestConsumerRunKeepsUpPastAFailingShard(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 2})
	polled := struct{ ffstore.Store }{mem} // hides mem's change notifications
	e, _ := newTestEngineOn(t, polled, Config{TimerPollInterval: time.Hour})
	var handled atomic.Int64
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: time.Hour, Handler: func(_ context.Context, ev fftype.Event) error {
		if ev.Shard == 0 {
			return errors.New("cannot handle this one")
		}
		handled.Add(1)
		return nil
	}})
	require.NoError(t, err)
	const backlog = eventBatch + 1 // two steps' worth on shard 1
	for shard, n := range []int{1, backlog} {
		require.NoError(t, mem.Update(t.Context(), shard, func(tx ffstore.Tx) error {
			for range n {
				tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventProgress, ExecutionID: "e"})
			}
			return nil
		}))
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	require.Eventually(t, func() bool { return handled.Load() == backlog }, waitLimit, time.Millisecond,
		"shard 1's backlog is handled without waiting a poll interval between batches")
	cancel()
	require.NoError(t, <-done)
}

// TestConsumerRunEndsOnAStoreThatStoppedAnswering: Run hands its leases back on the way
// out, but on a store that no longer answers it gives up once they would have lapsed
// anyway, rather than wait forever.
func TestConsumerRunEndsOnAStoreThatStoppedAnswering(t *testing.T) {
	t.Parallel()
	st := newGatedStore()
	e, err := New(st, nil)
	require.NoError(t, err)
	handling := make(chan struct{})
	var once sync.Once
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: time.Second,
		Handler: func(context.Context, fftype.Event) error { once.Do(func() { close(handling) }); return nil }})
	require.NoError(t, err)
	_, err = e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-handling // it holds the shard's lease
	st.hung.Store(true)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitLimit):
		t.Fatal("Run did not return on a store that stopped answering")
	}
}

// TestConsumerStopKeepsItsProgress: a replica whose Run is stopped while a handler runs (a
// clean stop, not a crash) calls the handler no more, and stores the cursor past the events
// it handled, so the next replica does not handle them again: at-least-once allows
// duplicates only after a failure.
func TestConsumerStopKeepsItsProgress(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 1})
	eA, err := New(mem, nil)
	require.NoError(t, err)
	eB, err := New(mem, nil)
	require.NoError(t, err)
	const n = 50
	appendEvents(t, mem, 0, n)
	ctx, cancel := context.WithCancel(t.Context())
	handledA := map[uint64]bool{}
	afterStop := 0
	a, err := eA.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(hctx context.Context, ev fftype.Event) error {
		if hctx.Err() != nil {
			afterStop++
		}
		handledA[ev.Seq] = true
		if ev.Seq == 5 {
			cancel() // the replica is stopped while this call runs, which completes the event
		}
		return nil
	}})
	require.NoError(t, err)
	require.NoError(t, a.Run(ctx))
	require.Zero(t, afterStop, "calls of the handler after Run's ctx ended")

	handledB := map[uint64]bool{}
	b, err := eB.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(_ context.Context, ev fftype.Event) error {
		require.False(t, handledA[ev.Seq], "event %d, handled before the stop, is handled again", ev.Seq)
		handledB[ev.Seq] = true
		return nil
	}})
	require.NoError(t, err)
	_, err = b.Step(t.Context())
	require.NoError(t, err)
	require.Len(t, handledB, n-len(handledA), "the next replica handles the rest")
}

// TestConsumerStopKeepsWhatACtxAwareHandlerFinished: a handler that honours ctx fails the
// event in flight when the replica stops; the events it completed before stay done.
func TestConsumerStopKeepsWhatACtxAwareHandlerFinished(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 1})
	e, err := New(mem, nil)
	require.NoError(t, err)
	appendEvents(t, mem, 0, 20)
	ctx, cancel := context.WithCancel(t.Context())
	c, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: func(hctx context.Context, ev fftype.Event) error {
		if ev.Seq == 5 {
			cancel()
			<-hctx.Done()
			return hctx.Err()
		}
		return nil
	}})
	require.NoError(t, err)
	require.NoError(t, c.Run(ctx))
	require.NoError(t, mem.View(t.Context(), 0, func(tx ffstore.ReadTx) error {
		rec, ok, err := readShardLease(tx, "audit")
		require.True(t, ok)
		require.Equal(t, uint64(4), rec.Cursor, "the four events handled before the stop are stored as done")
		return err
	}))
}

// TestConsumerStoppedAtABalanceHandsItsLeasesBack: a replica whose ctx ends as a balance
// comes due keeps its leases for Release to hand back (a balance under an ended ctx
// would fail every visit), so the next replica takes them over at once.
func TestConsumerStoppedAtABalanceHandsItsLeasesBack(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 4})
	e, clock := newTestEngineOn(t, mem, Config{})
	a, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: noop})
	require.NoError(t, err)
	_, err = a.Step(t.Context())
	require.NoError(t, err)
	require.Len(t, a.Shards(), 4)

	clock.Advance(DefaultConsumerLeaseTTL / 3) // a balance is due
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the replica is being stopped
	_, _ = a.Step(ctx)
	a.Release(t.Context())

	requireEveryShardFree(t, e, 4) // the stopped replica's leases must be free at once, not after the TTL
}

// TestConsumerReleaseHandsBackALeaseWhoseVisitFailed: a balance whose unit on one shard
// fails leaves the replica unsure whether the store still has it as the shard's holder:
// it works the shard no more, but Release still hands it back, so the next replica takes
// every shard at once rather than wait out that lease.
func TestConsumerReleaseHandsBackALeaseWhoseVisitFailed(t *testing.T) {
	t.Parallel()
	e, st, a := auditFailingOnShard3(t, DefaultConsumerLeaseTTL)
	require.NotContains(t, a.Shards(), 3, "a shard whose renewal failed is not worked")
	st.set(faultNone)
	a.Release(t.Context())

	requireEveryShardFree(t, e, 4) // every lease was handed back
}

// TestConsumerReleaseHandsBackATakeWhoseReplyWasLost: a visit that took a free lease,
// whose unit committed but reported a store error, leaves the store naming this replica
// as the shard's holder: release hands it back, so the next replica does not wait it out.
func TestConsumerReleaseHandsBackATakeWhoseReplyWasLost(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 4})
	st := &shardFaultStore{Store: mem, shard: 3}
	e, _ := newTestEngineOn(t, st, Config{Logger: slog.New(slog.DiscardHandler)})
	a, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: noop})
	require.NoError(t, err)
	st.set(faultLostReply)
	_, err = a.Step(t.Context())
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.NotContains(t, a.Shards(), 3)
	var owner string
	require.NoError(t, mem.View(t.Context(), 3, func(tx ffstore.ReadTx) error {
		rec, ok, err := readShardLease(tx, "audit")
		require.True(t, ok)
		owner = rec.Owner
		return err
	}))
	require.Equal(t, a.leases.instance, owner, "the store names the replica as shard 3's holder")
	a.Release(t.Context())

	requireEveryShardFree(t, e, 4) // every lease was handed back
}

// TestConsumerReleaseHandsBackTheSureLeasesFirst: a shard whose visit failed and whose
// store then stops answering is handed back last, so that its unit, which takes what is
// left of release's time, does not keep the leases the replica surely holds from being
// handed back.
func TestConsumerReleaseHandsBackTheSureLeasesFirst(t *testing.T) {
	t.Parallel()
	const ttl = 300 * time.Millisecond
	for trial := range 3 { // the map order of the shards varies
		e, st, a := auditFailingOnShard3(t, ttl)
		st.set(faultHang) // shard 3 failed at the balance; now it stops answering
		a.Release(t.Context())
		st.set(faultFail)

		b, err := e.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: ttl, Handler: noop})
		require.NoError(t, err)
		_, _ = b.Step(t.Context())
		require.Equal(t, []int{0, 1, 2}, b.Shards(), "trial %d: the healthy shards' leases were handed back", trial)
	}
}

// noop is a consumer's handler that does nothing.
func noop(context.Context, fftype.Event) error { return nil }

// auditFailingOnShard3 returns an engine on a 4-shard store whose shard 3 fails, and a
// replica of the consumer "audit" with lease TTL ttl that took every shard and then, at
// its next balance, saw shard 3's unit fail (st is left failing it).
func auditFailingOnShard3(t *testing.T, ttl time.Duration) (*Engine, *shardFaultStore, *Consumer) {
	t.Helper()
	st := &shardFaultStore{Store: ffmem.New(&ffmem.Options{Shards: 4}), shard: 3}
	e, clock := newTestEngineOn(t, st, Config{Logger: slog.New(slog.DiscardHandler)})
	a, err := e.NewConsumer(ConsumerConfig{Name: "audit", LeaseTTL: ttl, Handler: noop})
	require.NoError(t, err)
	_, err = a.Step(t.Context())
	require.NoError(t, err)
	require.Len(t, a.Shards(), 4)
	clock.Advance(ttl / 3) // a balance is due, and shard 3's unit fails
	st.set(faultFail)
	_, err = a.Step(t.Context())
	require.Error(t, err)
	return e, st, a
}

// requireEveryShardFree checks that a new replica of the consumer "audit" takes all the
// store's shards at once: the replicas before it handed their leases back.
func requireEveryShardFree(t *testing.T, e *Engine, shards int) {
	t.Helper()
	b, err := e.NewConsumer(ConsumerConfig{Name: "audit", Handler: noop})
	require.NoError(t, err)
	_, err = b.Step(t.Context())
	require.NoError(t, err)
	require.Len(t, b.Shards(), shards, "the leases were handed back")
}
