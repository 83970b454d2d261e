package engine

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// gatedStore is the memory store whose next unit, once armed, waits at the gate. It
// counts units.
type gatedStore struct {
	*ffmem.Store
	mu      sync.Mutex
	units   int
	armed   bool
	entered chan struct{} // closed when the gated unit arrives
	gate    chan struct{} // closed to let it run
}

func (s *gatedStore) arm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.entered, s.gate = true, make(chan struct{}), make(chan struct{})
}

func (s *gatedStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	s.mu.Lock()
	s.units++
	armed := s.armed
	s.armed = false
	s.mu.Unlock()
	if armed {
		close(s.entered)
		<-s.gate
	}
	return s.Store.Update(ctx, shard, fn)
}

// TestClaimWhoseCallerGaveUp: a claim whose context ends after its round began taking
// executions returns the context's error and no leases, and what the round took is
// claimable again at once, not after the lease TTL.
func TestClaimWhoseCallerGaveUp(t *testing.T) {
	t.Parallel()
	store := &gatedStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	e, err := New(store, nil)
	require.NoError(t, err)
	res, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	params := func(instance string) fftype.ClaimParams {
		return fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: instance, Lanes: []string{"l"}}
	}

	store.arm()
	ctx, cancel := context.WithCancel(t.Context())
	type claimed struct {
		leases []*fftype.Lease
		err    error
	}
	done := make(chan claimed, 1)
	go func() {
		leases, err := e.Claim(ctx, params("gave-up"))
		done <- claimed{leases, err}
	}()
	<-store.entered // the round's unit is on its way to the store
	cancel()
	close(store.gate)
	got := <-done
	require.ErrorIs(t, got.err, context.Canceled)
	require.Empty(t, got.leases)

	leases, err := e.Claim(t.Context(), params("other"))
	require.NoError(t, err)
	require.Len(t, leases, 1, "released, so claimable at once")
	require.Equal(t, res.ID, leases[0].ExecutionID)
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
	store := &gatedStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	e, err := New(store, nil)
	require.NoError(t, err)
	lanes := []string{"l"}
	for range 3 {
		_, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}

	store.arm()
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
	<-store.entered // the first claim's round is on its way to the store
	store.mu.Lock()
	before := store.units
	store.mu.Unlock()
	claim(1)
	claim(2)
	waitQueued(t, e, lanes, 2)
	close(store.gate)
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
	store := &gatedStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	e, err := New(store, nil)
	require.NoError(t, err)
	lanes := []string{"l1", "l2"}
	_, err = e.Create(t.Context(), fftype.CreateParams{Lane: "l1", Kind: "k"})
	require.NoError(t, err)

	store.arm()
	first := make(chan []*fftype.Lease, 1)
	go func() {
		leases, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "a", Lanes: lanes})
		assert.NoError(t, err)
		first <- leases
	}()
	<-store.entered // the round saw only l1's queue
	late, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l2", Kind: "k"})
	require.NoError(t, err)
	second := make(chan []*fftype.Lease, 1)
	go func() {
		leases, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "b", Lanes: lanes})
		assert.NoError(t, err)
		second <- leases
	}()
	waitQueued(t, e, lanes, 1)
	close(store.gate)

	require.Len(t, <-first, 1)
	leases := <-second
	require.Len(t, leases, 1, "the late claim is served by a round that looked after it arrived")
	require.Equal(t, late.ID, leases[0].ExecutionID)
}
