package engine

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestTimersWithSubMillisecondTimes: durations with a fraction of a millisecond give
// timers times between the clock's whole milliseconds. Such a timer is not due at the
// millisecond before its time (RunDue returns rather than popping it again and again) and
// fires at the one after.
func TestTimersWithSubMillisecondTimes(t *testing.T) {
	t.Parallel()
	const frac = 300 * time.Microsecond
	for _, tc := range []struct {
		name  string
		cfg   Config
		after time.Duration // from the claim to the timer's whole millisecond before its time
		claim func(t *testing.T, e *Engine)
	}{
		{"attempt timeout", Config{}, 2 * time.Second, func(t *testing.T, e *Engine) {
			_, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k",
				Policy: fftype.Policy{AttemptTimeout: fftype.Duration(2*time.Second + frac)}})
			require.NoError(t, err)
			claimOne(t, e)
		}},
		{"lease expiry", Config{}, 30 * time.Second, func(t *testing.T, e *Engine) {
			_, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
			require.NoError(t, err)
			leases, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1",
				Lanes: []string{"l"}, LeaseTTL: fftype.Duration(30*time.Second + frac)})
			require.NoError(t, err)
			require.Len(t, leases, 1)
		}},
		{"retention", Config{Retention: time.Hour + frac}, time.Hour, func(t *testing.T, e *Engine) {
			r, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
			require.NoError(t, err)
			l := claimOne(t, e)
			require.NoError(t, e.Complete(t.Context(), r.ID, l.Fence, nil, ""))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, clock := newTestEngineOn(t, ffmem.New(&ffmem.Options{Shards: 1}), tc.cfg)
			tc.claim(t, e)

			clock.Advance(tc.after)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			n, next, err := e.RunDue(ctx)
			require.NoError(t, err, "RunDue returns when the timer is not yet due")
			require.Zero(t, n)
			require.WithinDuration(t, clock.Now().Add(time.Millisecond), next, 0, "due at the next whole millisecond")

			clock.Advance(time.Millisecond)
			n, _, err = e.RunDue(ctx)
			require.NoError(t, err)
			require.Equal(t, 1, n, "fires once its time has passed")
		})
	}
}

// TestChangedRetentionAppliesToEndedExecutions: an engine restarted with another
// Retention applies it to the executions that ended before: a lowered one (an operator
// freeing space) deletes those that ended longer ago than it at once, not once the old
// retention has passed, and a raised one keeps them, with their idempotency keys, for
// the new retention.
func TestChangedRetentionAppliesToEndedExecutions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		old, now  time.Duration // the retention the execution ended under, and the restarted engine's
		kept      time.Duration // how long after its end RunDue finds it still kept
		deletedAt time.Duration // when after its end it is deleted
	}{
		{"Lowered", DefaultRetention, time.Hour, 0, 2 * time.Hour},
		{"Raised", time.Hour, 3 * time.Hour, 2 * time.Hour, 3 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := ffmem.New(&ffmem.Options{Shards: 1})
			old, clock := newTestEngineOn(t, store, Config{Retention: tc.old})
			r, err := old.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", IdempotencyKey: "key"})
			require.NoError(t, err)
			l := claimOne(t, old)
			require.NoError(t, old.Complete(t.Context(), r.ID, l.Fence, nil, ""))
			ended := clock.Now()

			e, err := New(store, &Config{Clock: clock, Retention: tc.now})
			require.NoError(t, err)
			clock.Set(ended.Add(tc.kept))
			_, next, err := e.RunDue(t.Context())
			require.NoError(t, err)
			require.Equal(t, ended.Add(tc.now), next.UTC(), "due once the new retention has passed")
			_, err = e.Get(t.Context(), r.ID)
			require.NoError(t, err)
			d, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", IdempotencyKey: "key"})
			require.NoError(t, err)
			require.True(t, d.Duplicate, "a kept execution holds its idempotency key")

			clock.Set(ended.Add(tc.deletedAt))
			n, _, err := e.RunDue(t.Context())
			require.NoError(t, err)
			require.Equal(t, 1, n)
			_, err = e.Get(t.Context(), r.ID)
			require.ErrorIs(t, err, fftype.ErrExecutionNotFound)
			d, err = e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", IdempotencyKey: "key"})
			require.NoError(t, err)
			require.False(t, d.Duplicate, "deleting it freed its idempotency key")
		})
	}
}

// TestRetentionEntryScoredByAnEarlierBuild: earlier builds scored the retention queue by
// the time of deletion rather than of the end. Such an entry is deleted one retention
// late, never early.
func TestRetentionEntryScoredByAnEarlierBuild(t *testing.T) {
	t.Parallel()
	store := ffmem.New(&ffmem.Options{Shards: 1})
	e, clock := newTestEngineOn(t, store, Config{Retention: time.Hour})
	r, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	l := claimOne(t, e)
	require.NoError(t, e.Complete(t.Context(), r.ID, l.Fence, nil, ""))
	ended := clock.Now()
	require.NoError(t, store.Update(t.Context(), 0, func(tx ffstore.Tx) error {
		tx.QueueAdd(queueRetention, string(r.ID), ms(ended.Add(time.Hour)))
		return nil
	}))

	clock.Set(ended.Add(time.Hour))
	_, next, err := e.RunDue(t.Context())
	require.NoError(t, err)
	require.Equal(t, ended.Add(2*time.Hour), next.UTC())
	_, err = e.Get(t.Context(), r.ID)
	require.NoError(t, err, "not deleted early")

	clock.Set(ended.Add(2 * time.Hour))
	n, _, err := e.RunDue(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = e.Get(t.Context(), r.ID)
	require.ErrorIs(t, err, fftype.ErrExecutionNotFound)
}

// TestStartAfterItsContextEnded: a loop whose ctx ended is not running, so Start runs a
// new one and timers fire again.
func TestStartAfterItsContextEnded(t *testing.T) {
	t.Parallel()
	e, clock := newTestEngineOn(t, ffmem.New(nil), Config{TimerPollInterval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	e.Start(ctx)
	cancel()
	<-e.loopDone

	e.Start(t.Context())
	defer e.Stop()
	res, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Delay: fftype.Duration(time.Minute)})
	require.NoError(t, err)
	clock.Advance(time.Minute)
	require.Eventually(t, func() bool {
		x, err := e.Get(t.Context(), res.ID)
		return err == nil && x.PublicState() == fftype.StateWaiting
	}, 10*time.Second, 5*time.Millisecond, "the new loop promotes the delayed execution")
}

// TestOneFailingTimerUnitStallsNoOther: a timer unit that keeps failing (here on an
// unreadable record on one shard) holds back only its own queue: RunDue handles the other
// due timers, and reports the failure.
func TestOneFailingTimerUnitStallsNoOther(t *testing.T) {
	t.Parallel()
	st := ffmem.New(&ffmem.Options{Shards: 2})
	e, clock := newTestEngineOn(t, st, Config{})
	ctx := t.Context()
	// bad: delayed 1s on one shard; good: delayed 1m on the other shard.
	var bad, good fftype.ExecutionID
	badShard := -1
	for bad == "" || good == "" {
		delay := time.Minute
		if bad == "" {
			delay = time.Second
		}
		res, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Delay: fftype.Duration(delay)})
		require.NoError(t, err)
		s, err := e.checkID(res.ID)
		require.NoError(t, err)
		switch {
		case bad == "":
			bad, badShard = res.ID, s
		case s != badShard && good == "":
			good = res.ID
		}
	}
	// bad's record becomes unreadable (a bug elsewhere, a partial write, a newer codec).
	require.NoError(t, st.Update(ctx, badShard, func(tx ffstore.Tx) error {
		tx.Put(execKey(bad), []byte("\x00not a record"))
		return nil
	}))
	clock.Advance(time.Hour)
	_, _, err := e.RunDue(ctx)
	require.ErrorIs(t, err, fftype.ErrUnavailable, "the failure is reported")
	x, err := e.Get(ctx, good)
	require.NoError(t, err)
	require.Equal(t, fftype.StateWaiting, x.PublicState(),
		"the delayed execution on the other shard is promoted whatever the timer unit of another shard does")
}

// TestTimerLoopGoesOnPastAFailingShard: a shard whose store fails (its timer lease cannot
// be renewed) must not stop the timer loop on the other shards, as RunDue promises for a
// failing timer unit; nor must shard 0, where the loop cannot then announce itself, even
// for longer than its leases last.
func TestTimerLoopGoesOnPastAFailingShard(t *testing.T) {
	t.Parallel()
	for _, failing := range []int{3, 0} {
		t.Run(fmt.Sprintf("shard %d", failing), func(t *testing.T) {
			t.Parallel()
			st := &shardFaultStore{Store: ffmem.New(&ffmem.Options{Shards: 4}), shard: failing}
			e, clock := newTestEngineOn(t, st, Config{Logger: slog.New(slog.DiscardHandler)})
			ctx := t.Context()
			e.Start(ctx)
			defer e.Stop()
			require.Eventually(t, func() bool { // the loop holds every shard's lease
				for shard := range 4 {
					var held bool
					require.NoError(t, st.View(ctx, shard, func(tx ffstore.ReadTx) error {
						_, ok, err := readShardLease(tx, timerLeases)
						held = ok
						return err
					}))
					if !held {
						return false
					}
				}
				return true
			}, waitLimit, time.Millisecond)
			st.set(faultFail)
			var ids []fftype.ExecutionID
			delay := fftype.Duration(2 * DefaultConsumerLeaseTTL) // past the leases' first expiry
			for len(ids) < 6 {                                    // creations on the failing shard fail
				if res, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Delay: delay}); err == nil {
					ids = append(ids, res.ID)
				}
			}
			require.Eventually(t, func() bool {
				clock.Advance(100 * time.Millisecond)
				for _, id := range ids {
					x, err := e.Get(ctx, id)
					if err != nil || x.PublicState() != fftype.StateWaiting {
						return false
					}
				}
				return true
			}, waitLimit, 5*time.Millisecond, "the delayed executions on the healthy shards are promoted")
		})
	}
}

// claimWithTTL claims the one eligible execution of lane "l" under a lease of ttl.
func claimWithTTL(t *testing.T, e *Engine, ttl time.Duration) *fftype.Lease {
	t.Helper()
	leases, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1",
		Lanes: []string{"l"}, LeaseTTL: fftype.Duration(ttl)})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	return leases[0]
}

// TestLateTimerLoopAppliesTheTimerThatCameFirst: a timer loop that runs late pops every
// due item of a queue whose head (another execution's) is the earliest, and may so find
// an execution by a later timer of its own. It applies the one that came first, as the
// holder was told: the deadline before an attempt timeout, an attempt timeout before the
// lease's expiry.
func TestLateTimerLoopAppliesTheTimerThatCameFirst(t *testing.T) {
	t.Parallel()
	noRetry := &fftype.RetryPolicy{MaxRetries: 0}
	for _, tc := range []struct {
		name    string
		head    fftype.Policy // of the execution whose timer heads the queue
		headTTL time.Duration
		policy  fftype.Policy
		ttl     time.Duration
		told    string
		outcome fftype.Outcome
		failure string
	}{
		{
			name: "DeadlineBeforeAttemptTimeout",
			head: fftype.Policy{AttemptTimeout: fftype.Duration(time.Second)}, headTTL: time.Hour,
			policy: fftype.Policy{Retry: noRetry, Deadline: fftype.Duration(5 * time.Second), AttemptTimeout: fftype.Duration(10 * time.Second)},
			ttl:    time.Hour, told: fftype.CodeExecutionNotActive, outcome: fftype.OutcomeExpired, failure: "execution_deadline",
		},
		{
			name: "AttemptTimeoutBeforeLeaseExpiry", headTTL: 5 * time.Second,
			policy: fftype.Policy{Retry: noRetry, AttemptTimeout: fftype.Duration(10 * time.Second)},
			ttl:    20 * time.Second, told: fftype.CodeAttemptTimedOut, outcome: fftype.OutcomeFailed, failure: "attempt_timeout",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, clock := newTestEngineOn(t, ffmem.New(&ffmem.Options{Shards: 1}), Config{})
			ctx := t.Context()
			_, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Policy: tc.head})
			require.NoError(t, err)
			claimWithTTL(t, e, tc.headTTL)
			_, err = e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Policy: tc.policy})
			require.NoError(t, err)
			l := claimWithTTL(t, e, tc.ttl)

			clock.Advance(30 * time.Second)
			err = e.Complete(ctx, l.ExecutionID, l.Fence, nil, "")
			require.Equal(t, tc.told, fftype.CodeOf(err), "%v", err)
			_, _, err = e.RunDue(ctx)
			require.NoError(t, err)
			x, err := e.Get(ctx, l.ExecutionID)
			require.NoError(t, err)
			require.Equal(t, tc.outcome, x.Outcome, "phase %s, attempt state %s, failure %q", x.Phase, x.AttemptState, x.FailureReason)
			require.Equal(t, tc.failure, x.FailureReason)
			require.NoError(t, e.CheckInvariants(ctx, l.ExecutionID))
		})
	}
}

// refusingUnitsStore refuses every unit, as a store at its memory limit does (a Redis at
// maxmemory), while reads and trims go through.
type refusingUnitsStore struct{ ffstore.Store }

func (refusingUnitsStore) Update(context.Context, int, func(ffstore.Tx) error) error {
	return fftype.NewError(fftype.KindUnavailable, fftype.CodeStoreUnavailable, "injected: out of memory")
}

// TestTimerLoopSweepsAStoreThatRefusesUnits: the timer loop sweeps the event logs of the
// shards whose leases it holds; on a store that refuses every unit it can hold none, and
// trimming its logs may be the only thing that frees it. It then sweeps every shard.
func TestTimerLoopSweepsAStoreThatRefusesUnits(t *testing.T) {
	t.Parallel()
	mem := ffmem.New(&ffmem.Options{Shards: 2})
	e, clock := newTestEngineOn(t, refusingUnitsStore{mem}, Config{EventMaxAge: time.Minute})
	for shard := range 2 {
		require.NoError(t, mem.Update(t.Context(), shard, func(tx ffstore.Tx) error {
			tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventProgress, Time: clock.Now().Add(-time.Hour),
				ExecutionID: fftype.NewExecutionID(shard), Namespace: "default", Lane: "l"})
			return nil
		}))
	}
	e.Start(t.Context())
	defer e.Stop()
	require.Eventually(t, func() bool {
		for shard := range 2 {
			if trimmed, _, err := mem.EventBounds(t.Context(), shard); err != nil || trimmed == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "the hour-old events are swept")
}

// TestLostLeaseAfterADueTimer: a lease lost without its holder (a revoke, a worker marked
// dead) after the attempt's timeout or the deadline has come, before the timer loop ran:
// the timer decides, as it holds from its time on, rather than the lost lease: the timed-
// out work does not run again.
func TestLostLeaseAfterADueTimer(t *testing.T) {
	t.Parallel()
	noRetry := &fftype.RetryPolicy{MaxRetries: 0}
	for _, tc := range []struct {
		name    string
		policy  fftype.Policy
		lose    func(e *Engine, id fftype.ExecutionID) error
		outcome fftype.Outcome
		failure string
	}{
		{
			name:    "RevokeAfterAttemptTimeout",
			policy:  fftype.Policy{AttemptTimeout: fftype.Duration(5 * time.Second), Retry: noRetry},
			lose:    func(e *Engine, id fftype.ExecutionID) error { return e.Revoke(t.Context(), id, "operator") },
			outcome: fftype.OutcomeFailed, failure: "attempt_timeout",
		},
		{
			name:   "MarkWorkerDeadAfterAttemptTimeout",
			policy: fftype.Policy{AttemptTimeout: fftype.Duration(5 * time.Second), Retry: noRetry},
			lose: func(e *Engine, _ fftype.ExecutionID) error {
				n, err := e.MarkWorkerDead(t.Context(), "", "w-1", "gone")
				if n != 1 {
					return fmt.Errorf("%d leases expired, want 1", n)
				}
				return err
			},
			outcome: fftype.OutcomeFailed, failure: "attempt_timeout",
		},
		{
			name:    "RevokePastDeadline",
			policy:  fftype.Policy{Deadline: fftype.Duration(5 * time.Second), MaxReclaims: 0},
			lose:    func(e *Engine, id fftype.ExecutionID) error { return e.Revoke(t.Context(), id, "operator") },
			outcome: fftype.OutcomeExpired, failure: "execution_deadline",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, clock := newTestEngine(t)
			res, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Policy: tc.policy})
			require.NoError(t, err)
			claimOne(t, e)
			clock.Advance(6 * time.Second) // the timer has come; the loop has not run
			require.NoError(t, tc.lose(e, res.ID))
			x, err := e.Get(t.Context(), res.ID)
			require.NoError(t, err)
			require.Equal(t, tc.outcome, x.Outcome, "phase %s, attempt state %s, failure %q", x.Phase, x.AttemptState, x.FailureReason)
			require.Equal(t, tc.failure, x.FailureReason)
			require.NoError(t, e.CheckInvariants(t.Context(), res.ID))
		})
	}
}
