package engine

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// gatedStore is the memory store whose next unit, once armed, waits at the gate.
type gatedStore struct {
	*ffmem.Store
	mu      sync.Mutex
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
