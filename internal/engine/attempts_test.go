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
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
)

// prefetchLog is the memory store recording the keys of every Prefetch and Get in its
// units.
type prefetchLog struct {
	*ffmem.Store
	mu   sync.Mutex
	keys [][]string
}

func (s *prefetchLog) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	return s.Store.Update(ctx, shard, func(tx ffstore.Tx) error { return fn(loggedTx{Tx: tx, log: s}) })
}

// take returns the reads logged since the last take.
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

func (t loggedTx) Get(key string) ([]byte, bool, error) {
	t.log.mu.Lock()
	t.log.keys = append(t.log.keys, []string{key})
	t.log.mu.Unlock()
	return t.Tx.Get(key)
}

// leasedOnLog returns an engine on a prefetchLog over a memory store, with a fake clock,
// and a lease it handed out on an execution that retries once.
func leasedOnLog(t *testing.T) (*prefetchLog, *Engine, *fftype.Lease) {
	t.Helper()
	store := &prefetchLog{Store: ffmem.New(&ffmem.Options{Shards: 1})}
	e, err := New(store, &Config{Clock: fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))})
	require.NoError(t, err)
	_, err = e.Create(context.Background(), fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{MaxRetries: 1}}})
	require.NoError(t, err)
	return store, e, claimOne(t, e)
}

func claimOne(t *testing.T, e *Engine) *fftype.Lease {
	t.Helper()
	leases, err := e.Claim(context.Background(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	return leases[0]
}

// stored reports whether the store holds key.
func stored(t *testing.T, s ffstore.Store, key string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, s.View(context.Background(), 0, func(tx ffstore.ReadTx) error {
		var err error
		_, ok, err = tx.Get(key)
		return err
	}))
	return ok
}

// TestLatestAttemptInExecution checks that the latest attempt lives in the execution's
// record: a holder's operation reads that one record, an attempt is stored apart only
// once the next one starts, and Attempts lists them all.
func TestLatestAttemptInExecution(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, e, first := leasedOnLog(t)
	id := first.ExecutionID

	store.take()
	_, err := e.Renew(ctx, id, first.Fence, 0)
	require.NoError(t, err)
	out, err := e.Fail(ctx, id, first.Fence, fftype.FailParams{Reason: "boom"})
	require.NoError(t, err)
	require.True(t, out.RetryScheduled)
	require.Equal(t, [][]string{{execKey(id)}, {execKey(id)}}, store.take(), "each operation read one record")
	require.False(t, stored(t, store, attemptKey(id, 0)), "the failed attempt is still the latest")

	x, err := e.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, fftype.AttemptFailed, x.Attempt.Status)
	require.Equal(t, "boom", x.Attempt.FailureReason)

	// The retry's claim, once its backoff has passed, stores the first attempt apart.
	e.clock.(*fftest.Clock).Advance(time.Hour)
	promoted, _, err := e.RunDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, promoted)
	l := claimOne(t, e)
	require.Equal(t, id, l.ExecutionID)
	require.Equal(t, 1, l.AttemptIndex)
	require.Equal(t, fftype.AttemptRetry, l.AttemptType)
	require.NoError(t, e.Complete(ctx, id, l.Fence, nil, ""))
	require.True(t, stored(t, store, attemptKey(id, 0)))
	require.False(t, stored(t, store, attemptKey(id, 1)))
	atts, err := e.Attempts(ctx, id)
	require.NoError(t, err)
	require.Len(t, atts, 2)
	require.Equal(t, []fftype.AttemptStatus{fftype.AttemptFailed, fftype.AttemptSucceeded}, []fftype.AttemptStatus{atts[0].Status, atts[1].Status})
	require.Equal(t, 0, atts[1].PreviousAttempt)
	require.NoError(t, e.CheckInvariants(ctx, id))
}

// TestVersion1ExecutionRecords checks that an execution recorded before executions
// carried their latest attempt (codec version 1, the attempt stored apart) reads, ends its
// attempt, retries and lists its attempts as one recorded now does.
func TestVersion1ExecutionRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, e, l := leasedOnLog(t)
	id := l.ExecutionID
	require.NoError(t, store.Update(ctx, 0, func(tx ffstore.Tx) error {
		x, err := getExec(tx, id)
		if err != nil {
			return err
		}
		putAttempt(tx, x.Attempt)
		x.Attempt = nil
		b := encodeExecution(x)
		require.Equal(t, byte(0), b[len(b)-1], "no attempt: the last byte")
		v1 := append([]byte{}, b[:len(b)-1]...)
		v1[1] = 1
		tx.Put(execKey(id), v1)
		return nil
	}))

	x, err := e.Get(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, x.Attempt, "read from its own record")
	require.Equal(t, l.Fence.AttemptID, x.Attempt.ID)
	require.NoError(t, e.CheckInvariants(ctx, id))

	_, err = e.Fail(ctx, id, l.Fence, fftype.FailParams{Reason: "boom", Category: "transient"})
	require.NoError(t, err)
	atts, err := e.Attempts(ctx, id)
	require.NoError(t, err)
	require.Len(t, atts, 1)
	require.Equal(t, fftype.AttemptFailed, atts[0].Status)
	require.NoError(t, e.CheckInvariants(ctx, id))
}

func TestCodecReadsVersion1(t *testing.T) {
	t.Parallel()
	x := &fftype.Execution{ID: fftype.NewExecutionID(1), TotalAttempts: 0, CurrentAttempt: -1}
	b := encodeExecution(x)
	v1 := append([]byte{}, b[:len(b)-1]...)
	v1[1] = 1
	got, err := decodeExecution(v1)
	require.NoError(t, err)
	require.Equal(t, x, got)
	v3 := append([]byte{}, b...)
	v3[1] = 3
	_, err = decodeExecution(v3)
	require.Error(t, err, "a version newer than the codec")
}

// TestAttemptTimeoutCountsRunningTimeOnly: an attempt paused for longer than its timeout
// resumes with the time it had left, rather than timing out as soon as it is claimed
// again.
func TestAttemptTimeoutCountsRunningTimeOnly(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, err := New(ffmem.New(&ffmem.Options{Shards: 1}), &Config{Clock: clock})
	require.NoError(t, err)
	res, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k",
		Policy: fftype.Policy{AttemptTimeout: fftype.Duration(10 * time.Minute)}})
	require.NoError(t, err)
	claim := func() *fftype.Lease {
		leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{"l"},
			LeaseTTL: fftype.Duration(time.Hour)})
		require.NoError(t, err)
		require.Len(t, leases, 1)
		return leases[0]
	}
	l := claim()
	first := l.Fence.AttemptID
	clock.Advance(4 * time.Minute)
	require.NoError(t, e.Delay(ctx, l.ExecutionID, l.Fence, time.Hour))
	clock.Advance(time.Hour)
	_, _, err = e.RunDue(ctx)
	require.NoError(t, err)
	require.Equal(t, first, claim().Fence.AttemptID, "the same attempt continues")

	clock.Advance(5*time.Minute + 59*time.Second)
	_, _, err = e.RunDue(ctx)
	require.NoError(t, err)
	x, err := e.Get(ctx, res.ID)
	require.NoError(t, err)
	require.Equal(t, fftype.StateActive, x.PublicState(), "4 + 5:59 minutes of running is within the 10 minutes")

	clock.Advance(time.Second)
	_, _, err = e.RunDue(ctx)
	require.NoError(t, err)
	x, err = e.Get(ctx, res.ID)
	require.NoError(t, err)
	require.NotEqual(t, fftype.StateActive, x.PublicState(), "10 minutes of running is the timeout")
	require.Equal(t, "timeout", x.FailureCategory)
}
