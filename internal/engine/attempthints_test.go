package engine

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// prefetchLog is the memory store recording the keys of every Prefetch in its units.
type prefetchLog struct {
	*ffmem.Store
	mu   sync.Mutex
	keys [][]string
}

func (s *prefetchLog) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	return s.Store.Update(ctx, shard, func(tx ffstore.Tx) error { return fn(loggedTx{Tx: tx, log: s}) })
}

// take returns the Prefetches logged since the last take.
func (s *prefetchLog) take() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.keys
	s.keys = nil
	return out
}

type loggedTx struct {
	ffstore.Tx
	log *prefetchLog
}

func (t loggedTx) Prefetch(keys ...string) error {
	t.log.mu.Lock()
	t.log.keys = append(t.log.keys, slices.Clone(keys))
	t.log.mu.Unlock()
	return t.Tx.Prefetch(keys...)
}

// leasedOnLog returns an engine on a prefetchLog over a memory store, and n leases it
// handed out.
func leasedOnLog(t *testing.T, n int) (*prefetchLog, *Engine, []*fftype.Lease) {
	t.Helper()
	ctx := context.Background()
	store := &prefetchLog{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	e, err := New(store, nil)
	require.NoError(t, err)
	ps := make([]fftype.CreateParams, n)
	for i := range ps {
		ps[i] = fftype.CreateParams{Lane: "l", Kind: "k"}
	}
	for _, r := range e.CreateMany(ctx, ps) {
		require.NoError(t, r.Err)
	}
	leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{"l"}, Count: n})
	require.NoError(t, err)
	require.Len(t, leases, n)
	return store, e, leases
}

// TestAttemptHints checks that a holder's operation reads the execution and its current
// attempt together when this engine handed out the lease, and that an engine without
// the hint, or with a wrong one, still ends the right attempt.
func TestAttemptHints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, e, leases := leasedOnLog(t, 3)
	completed := func(l *fftype.Lease) {
		t.Helper()
		x, err := e.Get(ctx, l.ExecutionID)
		require.NoError(t, err)
		require.Equal(t, fftype.OutcomeSuccess, x.Outcome)
		atts, err := e.Attempts(ctx, l.ExecutionID)
		require.NoError(t, err)
		require.Len(t, atts, 1)
		require.Equal(t, fftype.AttemptSucceeded, atts[0].Status)
	}

	store.take()
	a := leases[0]
	_, err := e.Renew(ctx, a.ExecutionID, a.Fence, 0)
	require.NoError(t, err)
	require.NoError(t, e.Complete(ctx, a.ExecutionID, a.Fence, nil, ""))
	want := []string{execKey(a.ExecutionID), attemptKey(a.ExecutionID, 0)}
	require.Equal(t, [][]string{want, want}, store.take(), "the claim left a hint, which the renewal kept")
	completed(a)
	_, ok := e.attempts.get(a.ExecutionID)
	require.False(t, ok, "the lease ended, and with it the hint")

	other, err := New(store, nil)
	require.NoError(t, err)
	b := leases[1]
	require.NoError(t, other.Complete(ctx, b.ExecutionID, b.Fence, nil, ""))
	require.Equal(t, [][]string{{execKey(b.ExecutionID)}}, store.take(), "another engine has no hint")
	completed(b)

	c := leases[2]
	e.attempts.set(c.ExecutionID, 5)
	require.NoError(t, e.Complete(ctx, c.ExecutionID, c.Fence, nil, ""))
	completed(c)
}

// TestAttemptHintsInRounds checks that a round of holders' operations reads their
// executions and hinted attempts in its first read.
func TestAttemptHintsInRounds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, e, leases := leasedOnLog(t, 2)

	store.take()
	mark := func(tx ffstore.Tx, x *fftype.Execution, _ placement, _ time.Time) error {
		tx.Put("mark:"+string(x.ID), []byte("x"))
		return nil
	}
	calls := make([]*holderCall, len(leases))
	for i, l := range leases {
		calls[i] = &holderCall{roundCall: newRoundCall(ctx), id: l.ExecutionID, f: l.Fence, fn: mark}
	}
	e.serveHolders(ctx, 0, calls)
	for _, c := range calls {
		require.NoError(t, c.err)
		require.False(t, c.alone, "the operations shared the round's unit")
	}
	a, b := leases[0].ExecutionID, leases[1].ExecutionID
	reads := store.take()
	require.NotEmpty(t, reads)
	require.Equal(t, []string{execKey(a), attemptKey(a, 0), execKey(b), attemptKey(b, 0)}, reads[0])
}
