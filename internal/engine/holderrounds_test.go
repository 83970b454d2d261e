package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// mergingStore is a store with the UnitMerger property, so the engine serves holders'
// operations in rounds on it. It counts units.
type mergingStore struct {
	ffstore.Store
	units atomic.Int64
}

func (*mergingStore) MergeUnits() {}

func (s *mergingStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	s.units.Add(1)
	return s.Store.Update(ctx, shard, fn)
}

var _ ffstore.UnitMerger = (*mergingStore)(nil)

// Kinds of operation in TestHolderRounds.
const (
	opWrite     = iota // writes a mark
	opFailEarly        // fails before writing
	opStale            // has a stale fence
	opFailLate         // writes a mark, then fails
	opPanic            // writes a mark, then panics
	opQueueRead        // adds to a queue and reads it back
)

// TestHolderRounds runs operations of lease holders that the engine merges into one
// unit: each gets its own outcome, as if it had run alone. A failure before writing is
// that operation's alone and the others share the unit; an operation that fails after
// writing, panics, or reads a queue after another wrote one makes every operation of the
// round run alone.
func TestHolderRounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		kinds  []int
		shared bool // the round's operations share one unit
	}{
		{"Clean", []int{opWrite, opFailEarly, opStale}, true},
		{"FailLate", []int{opWrite, opFailEarly, opFailLate}, false},
		{"Panic", []int{opWrite, opPanic, opStale}, false},
		{"QueueRead", []int{opWrite, opQueueRead}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testHolderRound(t, tc.kinds, tc.shared)
		})
	}
}

func testHolderRound(t *testing.T, kinds []int, shared bool) {
	ctx := context.Background()
	store := &mergingStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	e, err := New(store, nil)
	require.NoError(t, err)
	require.True(t, e.mergeUnits)

	n := 4 * len(kinds)
	var ps []fftype.CreateParams
	for range n + 1 {
		ps = append(ps, fftype.CreateParams{Lane: "l", Kind: "k"})
	}
	for _, r := range e.CreateMany(ctx, ps) {
		require.NoError(t, r.Err)
	}
	leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{"l"}, Count: n + 1})
	require.NoError(t, err)
	require.Len(t, leases, n+1)
	gate, ops := leases[n], leases[:n]

	errLate := errors.New("failed after writing")
	errEarly := errors.New("failed before writing")
	op := func(kind int) holderFunc {
		return func(tx ffstore.Tx, x *fftype.Execution, _ placement, _ time.Time) error {
			if kind == opFailEarly {
				return errEarly
			}
			if kind == opQueueRead {
				tx.QueueAdd("q", string(x.ID), 1)
				if _, err := tx.Range("q", nil, ffstore.MaxScore, 10); err != nil {
					return err
				}
			}
			tx.Put("mark:"+string(x.ID), []byte("x"))
			switch kind {
			case opFailLate:
				return errLate
			case opPanic:
				panic("boom")
			}
			return nil
		}
	}

	// The gate's operation holds the first round until every other has queued, so that
	// they all share the second.
	release, queued := make(chan struct{}), make(chan struct{})
	gateDone := make(chan error, 1)
	go func() {
		gateDone <- e.holderUnit(ctx, gate.ExecutionID, gate.Fence, 0, nil, func(ffstore.Tx, *fftype.Execution, placement, time.Time) error {
			close(queued)
			<-release
			return nil
		})
	}()
	<-queued
	errs := make([]error, n)
	panics := make([]any, n)
	var wg sync.WaitGroup
	for i, l := range ops {
		kind := kinds[i%len(kinds)]
		f := l.Fence
		if kind == opStale {
			f.Epoch++
		}
		wg.Go(func() {
			defer func() { panics[i] = recover() }()
			errs[i] = e.holderUnit(ctx, l.ExecutionID, f, 0, nil, op(kind))
		})
	}
	require.Eventually(t, func() bool {
		e.holders.mu.Lock()
		defer e.holders.mu.Unlock()
		q := e.holders.queues["0"]
		return q != nil && len(q.calls) == n
	}, 5*time.Second, time.Millisecond)
	before := store.units.Load()
	close(release)
	wg.Wait()
	require.NoError(t, <-gateDone)
	if units := store.units.Load() - before; shared {
		require.Equal(t, int64(1), units, "the round's operations share one unit")
	} else {
		require.Equal(t, int64(1+n), units, "the round's unit was dropped and each operation ran alone")
	}

	for i, l := range ops {
		var marked bool
		require.NoError(t, e.store.View(ctx, 0, func(tx ffstore.ReadTx) error {
			_, marked, err = tx.Get("mark:" + string(l.ExecutionID))
			return err
		}))
		switch kinds[i%len(kinds)] {
		case opWrite, opQueueRead:
			require.NoError(t, errs[i], i)
			require.True(t, marked, "operation %d wrote", i)
		case opFailEarly:
			require.ErrorIs(t, errs[i], errEarly)
		case opStale:
			require.Equal(t, fftype.CodeStaleLease, fftype.CodeOf(errs[i]))
		case opFailLate:
			require.ErrorIs(t, errs[i], errLate)
			require.False(t, marked, "operation %d failed: its writes are undone", i)
		case opPanic:
			require.Equal(t, "boom", panics[i], "the panic reaches its own caller")
			require.False(t, marked)
		}
	}
}

// resultUnitsStore is a merging memory store that logs, for each unit that commits, the
// results it writes.
type resultUnitsStore struct {
	mergingStore
	mu    sync.Mutex
	units [][]int // the sizes of the results each unit wrote, for units that wrote any
}

func (s *resultUnitsStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	tx := &resultsTx{}
	err := s.mergingStore.Update(ctx, shard, func(inner ffstore.Tx) error {
		tx.Tx, tx.sizes = inner, nil // the unit may run more than once
		return fn(tx)
	})
	if err == nil && len(tx.sizes) > 0 {
		s.mu.Lock()
		s.units = append(s.units, tx.sizes)
		s.mu.Unlock()
	}
	return err
}

// resultsTx notes the sizes of the results a unit writes.
type resultsTx struct {
	ffstore.Tx
	sizes []int
}

func (t *resultsTx) Put(key string, value []byte) {
	if strings.HasPrefix(key, "r:") || strings.HasPrefix(key, "rb:") {
		t.sizes = append(t.sizes, len(value))
	}
	t.Tx.Put(key, value)
}

// TestHolderRoundsAreBoundedByBytes: operations of lease holders share a round only up to
// the round's bound on the data they bring, so that results that each fit a unit never
// add up to a unit the store refuses; an operation larger than the bound runs alone.
func TestHolderRoundsAreBoundedByBytes(t *testing.T) {
	t.Parallel()
	const (
		bound = 64 << 10 // each operation weighs at least bound/maxHolderRound, 1 KiB
		small = 16 << 10 // four fit a round
		large = 100 << 10
	)
	store := &resultUnitsStore{mergingStore: mergingStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}}
	e, err := New(store, nil)
	require.NoError(t, err)
	e.holderRoundBytes = bound
	sizes := []int{small, small, small, small, large, small, small, small, small}
	var ps []fftype.CreateParams
	for range len(sizes) + 1 {
		ps = append(ps, fftype.CreateParams{Lane: "l", Kind: "k"})
	}
	for _, r := range e.CreateMany(t.Context(), ps) {
		require.NoError(t, r.Err)
	}
	leases, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i", Lanes: []string{"l"}, Count: len(ps)})
	require.NoError(t, err)
	require.Len(t, leases, len(ps))
	gate := leases[len(sizes)]
	queued := func(n int) bool {
		e.holders.mu.Lock()
		defer e.holders.mu.Unlock()
		q := e.holders.queues["0"]
		return q != nil && len(q.calls) == n
	}

	// The gate's operation holds the shard's round while the others queue, in order.
	release, held := make(chan struct{}), make(chan struct{})
	gateDone := make(chan error, 1)
	go func() {
		gateDone <- e.holderUnit(t.Context(), gate.ExecutionID, gate.Fence, 0, nil, func(ffstore.Tx, *fftype.Execution, placement, time.Time) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	errs := make([]error, len(sizes))
	var wg sync.WaitGroup
	for i, size := range sizes {
		wg.Go(func() {
			errs[i] = e.Complete(t.Context(), leases[i].ExecutionID, leases[i].Fence, make([]byte, size), fftype.EncodingBinary)
		})
		require.Eventually(t, func() bool { return queued(i + 1) }, waitLimit, time.Millisecond)
	}
	close(release)
	wg.Wait()
	require.NoError(t, <-gateDone)
	for i, err := range errs {
		require.NoError(t, err, i)
	}
	require.Equal(t, [][]int{{small, small, small, small}, {large}, {small, small, small, small}}, store.units)
}

// TestHolderRoundLonePanic: an operation that panics alone in its round panics in its
// caller, and the shard goes on serving lease holders: the round hands its queue on.
func TestHolderRoundLonePanic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e, err := New(&mergingStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}, nil)
	require.NoError(t, err)
	for range 2 {
		_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i", Lanes: []string{"l"}, Count: 2})
	require.NoError(t, err)
	require.Len(t, leases, 2)

	require.PanicsWithValue(t, "boom", func() {
		_ = e.holderUnit(ctx, leases[0].ExecutionID, leases[0].Fence, 0, nil,
			func(ffstore.Tx, *fftype.Execution, placement, time.Time) error { panic("boom") })
	})

	done := make(chan error, 1)
	go func() { done <- e.Complete(ctx, leases[1].ExecutionID, leases[1].Fence, nil, "") }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("a holder operation on the shard still waits for the round that panicked")
	}
}

// panickyStore is the memory store whose next unit panics when told to: a store bug.
type panickyStore struct {
	*ffmem.Store
	panicNext atomic.Bool
}

func (s *panickyStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	if s.panicNext.CompareAndSwap(true, false) {
		panic("boom")
	}
	return s.Store.Update(ctx, shard, fn)
}

// TestClaimRoundPanic: a claim round whose unit panics panics in its leader, and the
// selection's queue goes on to the next claim instead of holding it forever.
func TestClaimRoundPanic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := &panickyStore{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	e, err := New(store, nil)
	require.NoError(t, err)
	_, err = e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	claim := func() ([]*fftype.Lease, error) {
		return e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i", Lanes: []string{"l"}})
	}

	store.panicNext.Store(true)
	require.PanicsWithValue(t, "boom", func() { _, _ = claim() })

	done := make(chan []*fftype.Lease, 1)
	go func() {
		leases, err := claim()
		require.NoError(t, err)
		done <- leases
	}()
	select {
	case leases := <-done:
		require.Len(t, leases, 1)
	case <-time.After(10 * time.Second):
		t.Fatal("a claim still waits for the round that panicked")
	}
}

// TestHolderCallsLeaveTheirRoundWithTheirContexts: on a store that stopped answering,
// operations of lease holders that share a round each return their context's error when
// their context ends, whether others of the round still wait or not.
func TestHolderCallsLeaveTheirRoundWithTheirContexts(t *testing.T) {
	t.Parallel()
	e, gated, leases, queued := holdersOnAGate(t)
	renew := func(l *fftype.Lease) (context.CancelFunc, <-chan error) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			_, err := e.Renew(ctx, l.ExecutionID, l.Fence, 0)
			done <- err
		}()
		return cancel, done
	}

	gated.hung.Store(true)
	cancelA, a := renew(leases[0]) // leads a round of its own
	gated.waitHung(t, 1)
	cancelB, b := renew(leases[1])
	require.Eventually(t, func() bool { return queued(1) }, waitLimit, time.Millisecond)
	cancelC, c := renew(leases[2])
	require.Eventually(t, func() bool { return queued(2) }, waitLimit, time.Millisecond)
	cancelA()
	require.ErrorIs(t, recv(t, a, "the first renewal"), context.Canceled)
	// The other two share the next round, which waits for the store.
	require.Eventually(t, func() bool { return queued(0) && gated.waiting.Load() == 1 }, waitLimit, time.Millisecond)

	cancelC()
	require.ErrorIs(t, recv(t, c, "the renewal that gave up while its round waits"), context.Canceled)
	require.Equal(t, int32(1), gated.waiting.Load(), "the round's unit waits on for the renewal still waiting")
	cancelB()
	require.ErrorIs(t, recv(t, b, "the renewal that led the round"), context.Canceled)
}

// TestHolderCallMayLandAfterItsCallerLeft: an operation of a lease holder whose caller
// gave up (and got its context's error) after a round admitted it is still applied by
// that round, as after a reply lost on its way back; the caller learns the outcome by
// retrying with the same fence, which returns the first outcome and changes nothing.
func TestHolderCallMayLandAfterItsCallerLeft(t *testing.T) {
	t.Parallel()
	e, gated, leases, queued := holdersOnAGate(t)

	// The gate's operation holds the shard's round while a Renew and a Complete queue.
	release, held := make(chan struct{}), make(chan struct{})
	gateDone := make(chan error, 1)
	gate := leases[2]
	go func() {
		gateDone <- e.holderUnit(t.Context(), gate.ExecutionID, gate.Fence, 0, nil, func(ffstore.Tx, *fftype.Execution, placement, time.Time) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	renewed := make(chan error, 1)
	go func() {
		_, err := e.Renew(t.Context(), leases[0].ExecutionID, leases[0].Fence, 0)
		renewed <- err
	}()
	require.Eventually(t, func() bool { return queued(1) }, waitLimit, time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	l := leases[1]
	completed := make(chan error, 1)
	go func() { completed <- e.Complete(ctx, l.ExecutionID, l.Fence, []byte(`1`), "") }()
	require.Eventually(t, func() bool { return queued(2) }, waitLimit, time.Millisecond)
	g := gated.arm() // the unit of the round of both waits at the gate
	close(release)
	require.NoError(t, <-gateDone)
	<-g.entered // the round admitted both
	cancel()
	require.ErrorIs(t, recv(t, completed, "the complete that gave up"), context.Canceled)
	g.open()
	require.NoError(t, recv(t, renewed, "the renew"))

	x, err := e.Get(t.Context(), l.ExecutionID)
	require.NoError(t, err)
	require.Equal(t, fftype.OutcomeSuccess, x.Outcome, "the round applied the Complete whose caller left")
	require.NoError(t, e.Complete(t.Context(), l.ExecutionID, l.Fence, []byte(`2`), ""), "the retry returns the first outcome")
	res, _, err := e.Result(t.Context(), l.ExecutionID)
	require.NoError(t, err)
	require.JSONEq(t, `1`, string(res), "the retry changed nothing")
}

// holdersOnAGate returns an engine on a gated store that merges units, holding leases on
// three executions of shard 0, and queued, which reports whether n holder calls wait in
// that shard's queue of rounds.
func holdersOnAGate(t *testing.T) (e *Engine, gated *gatedStore, leases []*fftype.Lease, queued func(n int) bool) {
	t.Helper()
	gated = newGatedStore()
	e, err := New(&mergingStore{Store: gated}, nil)
	require.NoError(t, err)
	var ps []fftype.CreateParams
	for range 3 {
		ps = append(ps, fftype.CreateParams{Lane: "l", Kind: "k"})
	}
	for _, r := range e.CreateMany(t.Context(), ps) {
		require.NoError(t, r.Err)
	}
	leases, err = e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i", Lanes: []string{"l"}, Count: 3})
	require.NoError(t, err)
	require.Len(t, leases, 3)
	queued = func(n int) bool {
		e.holders.mu.Lock()
		defer e.holders.mu.Unlock()
		q := e.holders.queues["0"]
		return q != nil && len(q.calls) == n
	}
	return e, gated, leases, queued
}
