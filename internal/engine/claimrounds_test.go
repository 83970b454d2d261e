package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// gatedStore is the memory store whose next unit, once armed, waits at a gate before it
// runs and at another before it answers, as a unit whose reply is on its way back. Once
// hung, every unit waits until its context ends instead, as on a store that stopped
// answering. It counts units.
type gatedStore struct {
	ffstore.Store
	mu      sync.Mutex
	units   int
	next    *unitGate // the gate of the next unit, once armed
	hung    atomic.Bool
	waiting atomic.Int32 // units waiting on the hung store
}

// unitGate holds one unit of a gatedStore.
type unitGate struct {
	entered chan struct{} // closed when the unit arrives
	run     chan struct{} // closed to let it run
	ran     chan struct{} // closed once it ran (and committed, unless it failed)
	answer  chan struct{} // closed to let it answer
}

func newGatedStore() *gatedStore { return &gatedStore{Store: ffmem.New(&ffmem.Options{Shards: 1})} }

// newGatedEngine returns an engine on a gatedStore holding n executions waiting in lane
// "l".
func newGatedEngine(t *testing.T, n int) (*gatedStore, *Engine) {
	t.Helper()
	store := newGatedStore()
	e, err := New(store, nil)
	require.NoError(t, err)
	for range n {
		_, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	return store, e
}

// arm gates the next unit.
func (s *gatedStore) arm() *unitGate {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = &unitGate{entered: make(chan struct{}), run: make(chan struct{}), ran: make(chan struct{}), answer: make(chan struct{})}
	return s.next
}

// open lets the unit run and answer.
func (g *unitGate) open() {
	close(g.run)
	close(g.answer)
}

// waitHung waits until n units wait on the hung store.
func (s *gatedStore) waitHung(t *testing.T, n int32) {
	t.Helper()
	require.Eventually(t, func() bool { return s.waiting.Load() == n }, waitLimit, time.Millisecond)
}

func (s *gatedStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	s.mu.Lock()
	s.units++
	g := s.next
	s.next = nil
	s.mu.Unlock()
	if s.hung.Load() {
		s.waiting.Add(1)
		defer s.waiting.Add(-1)
		<-ctx.Done()
		return ctx.Err()
	}
	if g == nil {
		return s.Store.Update(ctx, shard, fn)
	}
	close(g.entered)
	<-g.run
	err := s.Store.Update(ctx, shard, fn)
	close(g.ran)
	<-g.answer
	return err
}

// waitLimit bounds every wait for something another goroutine does; it only ends a test
// that is already failing.
const waitLimit = 30 * time.Second

// recv waits for a value from ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// claimResult is what a Claim returned.
type claimResult struct {
	leases []*fftype.Lease
	err    error
}

// claimAsync runs a claim of one execution of lane "l" for instance in the background.
func claimAsync(ctx context.Context, e *Engine, instance string) <-chan claimResult {
	done := make(chan claimResult, 1)
	go func() {
		leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: instance, Lanes: []string{"l"}, LeaseTTL: fftype.Duration(time.Second)})
		done <- claimResult{leases, err}
	}()
	return done
}

// TestClaimWhoseCallerGaveUp: a claim whose context ends after its round took executions
// returns the context's error and no leases, and what the round took is claimable again
// at once, not after the lease TTL.
func TestClaimWhoseCallerGaveUp(t *testing.T) {
	t.Parallel()
	store := newGatedStore()
	e, err := New(store, nil)
	require.NoError(t, err)
	res, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)

	g := store.arm()
	ctx, cancel := context.WithCancel(t.Context())
	done := claimAsync(ctx, e, "gave-up")
	close(g.run)
	<-g.ran // the round's unit took the execution; its answer is on its way
	cancel()
	close(g.answer)
	got := recv(t, done, "the claim")
	require.ErrorIs(t, got.err, context.Canceled)
	require.Empty(t, got.leases)

	got = recv(t, claimAsync(t.Context(), e, "other"), "the other claim")
	require.NoError(t, got.err)
	require.Len(t, got.leases, 1, "released, so claimable at once")
	require.Equal(t, res.ID, got.leases[0].ExecutionID)
}

// TestClaimLeavesItsRoundWhenItsContextEnds: a claim whose context ends while the round
// serving it waits for the store returns the context's error at once, and the leases the
// round took for it are released.
func TestClaimLeavesItsRoundWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	store, e := newGatedEngine(t, 2)

	g := store.arm()
	led := claimAsync(t.Context(), e, "a")
	<-g.entered // the first claim's round is on its way to the store
	ctx, cancel := context.WithCancel(t.Context())
	joined := claimAsync(ctx, e, "b")
	waitQueued(t, e, []string{"l"}, 1)
	close(g.run)
	<-g.ran // the unit served both claims; its answer is on its way
	cancel()
	got := recv(t, joined, "the claim that gave up, while its round still waits")
	require.ErrorIs(t, got.err, context.Canceled)
	require.Empty(t, got.leases)

	close(g.answer)
	got = recv(t, led, "the claim that led the round")
	require.NoError(t, got.err)
	require.Len(t, got.leases, 1)
	kept := got.leases[0].ExecutionID
	require.Eventually(t, func() bool { // the round releases it in the background
		got = recv(t, claimAsync(t.Context(), e, "c"), "a later claim")
		require.NoError(t, got.err)
		return len(got.leases) == 1
	}, waitLimit, time.Millisecond, "the lease taken for the claim that gave up was released")
	require.NotEqual(t, kept, got.leases[0].ExecutionID)
}

// TestClaimRoundPassesOverCallsThatLeft: a claim round whose unit runs after one of its
// calls left gives that call nothing more: what the call would have got goes to a call of
// the round that still waits, in the same round, and is not leased to the caller that
// left only to be released (which would also cost the execution an attempt).
func TestClaimRoundPassesOverCallsThatLeft(t *testing.T) {
	t.Parallel()
	store := newGatedStore()
	e, err := New(store, nil)
	require.NoError(t, err)
	lanes := []string{"a", "b"} // one execution each; a round takes them in a unit each
	for _, l := range lanes {
		_, err := e.Create(t.Context(), fftype.CreateParams{Lane: l, Kind: "k"})
		require.NoError(t, err)
	}
	claim := func(ctx context.Context, instance string) <-chan claimResult {
		done := make(chan claimResult, 1)
		go func() {
			leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: instance, Lanes: lanes})
			done <- claimResult{leases, err}
		}()
		return done
	}

	g := store.arm()
	led := claim(t.Context(), "leader")
	<-g.entered // the round read the heads of both lanes; its first unit waits
	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := claim(ctx, "gave-up")
	waitQueued(t, e, lanes, 1)
	waiting := claim(t.Context(), "waiting")
	waitQueued(t, e, lanes, 2)
	close(g.run)
	<-g.ran // the first unit admitted both calls and took one execution, for the leader
	cancel()
	got := recv(t, gaveUp, "the claim that gave up")
	require.ErrorIs(t, got.err, context.Canceled)
	close(g.answer)

	got = recv(t, led, "the leader")
	require.NoError(t, got.err)
	require.Len(t, got.leases, 1)
	got = recv(t, waiting, "the claim still waiting")
	require.NoError(t, got.err)
	require.Len(t, got.leases, 1, "the round leased the other execution to the call that had left")
	require.Equal(t, uint64(1), got.leases[0].Fence.Epoch, "the execution was leased before, to the call that had left")
}

// TestClaimOnAStoreThatStoppedAnswering: a claim returns its context's error when its
// context ends, even though the store never answers its round's unit.
func TestClaimOnAStoreThatStoppedAnswering(t *testing.T) {
	t.Parallel()
	store, e := newGatedEngine(t, 1)

	store.hung.Store(true)
	ctx, cancel := context.WithCancel(t.Context())
	done := claimAsync(ctx, e, "i")
	store.waitHung(t, 1)
	cancel()
	got := recv(t, done, "the claim")
	require.ErrorIs(t, got.err, context.Canceled)
	require.Empty(t, got.leases)
}

// TestClaimReleasesNoLongerThanTheLeasesLast: a claim whose context ended after its round
// took a lease gives the lease back, but stops trying once the lease would have expired
// anyway: a store that stopped answering holds it no longer.
func TestClaimReleasesNoLongerThanTheLeasesLast(t *testing.T) {
	t.Parallel()
	store, e := newGatedEngine(t, 1)

	g := store.arm()
	ctx, cancel := context.WithCancel(t.Context())
	done := claimAsync(ctx, e, "i") // with a lease TTL of 1s
	close(g.run)
	<-g.ran
	store.hung.Store(true) // the release will wait for the store
	cancel()
	close(g.answer)
	got := recv(t, done, "the claim")
	require.ErrorIs(t, got.err, context.Canceled)
	require.Empty(t, got.leases)
}

// waitQueued waits until n claim calls wait for a round of lanes.
func waitQueued(t *testing.T, e *Engine, lanes []string, n int) {
	t.Helper()
	key := selectionKey(lanes, claimer{caps: nil})
	require.Eventually(t, func() bool {
		e.claims.mu.Lock()
		defer e.claims.mu.Unlock()
		q := e.claims.queues[key]
		return q != nil && len(q.calls) == n
	}, 5*time.Second, time.Millisecond)
}

// TestClaimRoundAdmitsLateCalls: claims that queue while a round's unit waits for the
// store are served by that unit, not by another unit after it.
func TestClaimRoundAdmitsLateCalls(t *testing.T) {
	t.Parallel()
	store := newGatedStore()
	e, err := New(store, nil)
	require.NoError(t, err)
	lanes := []string{"l"}
	for range 3 {
		_, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}

	g := store.arm()
	var wg sync.WaitGroup
	got := make([][]*fftype.Lease, 3)
	claim := func(i int) {
		wg.Go(func() {
			leases, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: string(rune('a' + i)), Lanes: lanes})
			assert.NoError(t, err)
			got[i] = leases
		})
	}
	claim(0)
	<-g.entered // the first claim's round is on its way to the store
	store.mu.Lock()
	before := store.units
	store.mu.Unlock()
	claim(1)
	claim(2)
	waitQueued(t, e, lanes, 2)
	g.open()
	wg.Wait()
	store.mu.Lock()
	after := store.units
	store.mu.Unlock()

	seen := map[fftype.ExecutionID]bool{}
	for i, leases := range got {
		require.Len(t, leases, 1, "claim %d", i)
		seen[leases[0].ExecutionID] = true
	}
	require.Len(t, seen, 3)
	require.Equal(t, before, after, "the round's unit served all three claims")
}

// TestClaimRoundRequeuesLateCallsItCannotServe: a claim that joined a round after the
// round chose its queues, and got nothing from it, is not answered by that round: the
// next round looks again and finds what was created before the claim was made.
func TestClaimRoundRequeuesLateCallsItCannotServe(t *testing.T) {
	t.Parallel()
	store := newGatedStore()
	e, err := New(store, nil)
	require.NoError(t, err)
	lanes := []string{"l1", "l2"}
	_, err = e.Create(t.Context(), fftype.CreateParams{Lane: "l1", Kind: "k"})
	require.NoError(t, err)

	g := store.arm()
	first := make(chan []*fftype.Lease, 1)
	go func() {
		leases, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "a", Lanes: lanes})
		assert.NoError(t, err)
		first <- leases
	}()
	<-g.entered // the round saw only l1's queue
	late, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l2", Kind: "k"})
	require.NoError(t, err)
	second := make(chan []*fftype.Lease, 1)
	go func() {
		leases, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "b", Lanes: lanes})
		assert.NoError(t, err)
		second <- leases
	}()
	waitQueued(t, e, lanes, 1)
	g.open()

	require.Len(t, <-first, 1)
	leases := <-second
	require.Len(t, leases, 1, "the late claim is served by a round that looked after it arrived")
	require.Equal(t, late.ID, leases[0].ExecutionID)
}

// TestClaimJoiningARoundAfterPauseLaneGetsNothing: a claim that starts after PauseLane
// returned hands out nothing from the lane, also when it joins a round that read the
// lane's state before the pause (the round's own claim, which started before, may take
// one).
func TestClaimJoiningARoundAfterPauseLaneGetsNothing(t *testing.T) {
	t.Parallel()
	store, e := newGatedEngine(t, 2)

	g := store.arm()
	led := claimAsync(t.Context(), e, "a")
	<-g.entered // its round read the lane's state; its unit waits for the store
	require.NoError(t, e.PauseLane(t.Context(), "l"))
	joined := claimAsync(t.Context(), e, "b")
	waitQueued(t, e, []string{"l"}, 1)
	g.open()
	got := recv(t, led, "the round's own claim")
	require.NoError(t, got.err)
	got = recv(t, joined, "the claim that started after the pause")
	require.NoError(t, got.err)
	require.Empty(t, got.leases, "a claim started after PauseLane returned got work from the paused lane")
}

// TestRoundLeaderIsNotHeldByAnotherCallersRelease: the leader of a claim round whose
// other claim left after the unit committed gets its own lease at once; it is not held
// while the round releases the other claim's lease on a store that stopped answering
// (which may take that lease's TTL).
func TestRoundLeaderIsNotHeldByAnotherCallersRelease(t *testing.T) {
	t.Parallel()
	store, e := newGatedEngine(t, 2)

	g := store.arm()
	led := claimAsync(t.Context(), e, "a") // lease TTL 1s
	<-g.entered
	ctx, cancel := context.WithCancel(t.Context())
	joined := make(chan claimResult, 1)
	go func() {
		leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "b", Lanes: []string{"l"},
			LeaseTTL: fftype.Duration(3 * time.Second)})
		joined <- claimResult{leases, err}
	}()
	waitQueued(t, e, []string{"l"}, 1)
	close(g.run)
	<-g.ran // the unit took an execution for each claim
	cancel()
	got := recv(t, joined, "the claim that left")
	require.ErrorIs(t, got.err, context.Canceled)

	store.hung.Store(true) // the store stops answering: the release of b's lease waits
	close(g.answer)
	got = recv(t, led, "the leader's claim, whose lease (TTL 1s) the round took")
	require.NoError(t, got.err)
	require.Len(t, got.leases, 1)
	store.waitHung(t, 1) // the release of b's lease waits for the store,
	store.waitHung(t, 0) // and gives up with its TTL
}
