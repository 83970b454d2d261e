package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

func TestWorkerRegistry(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		clock  *fftest.Clock
		engine *engine.Engine
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		clock := fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		e, err := engine.New(ffmem.New(&ffmem.Options{Shards: 4}), &engine.Config{Clock: clock})
		require.NoError(t, err)
		return &testBundle{clock: clock, engine: e}
	}
	reg := func(instance, session string) engine.WorkerRegistration {
		return engine.WorkerRegistration{WorkerID: "w", InstanceID: instance, Lanes: []string{"l"}, TTL: time.Minute, Session: session}
	}

	t.Run("MarkDeadWithoutARegistrationStaysInItsNamespace", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		_, err := b.engine.RegisterWorker(ctx, engine.WorkerRegistration{WorkerID: "mailer", InstanceID: "host-1",
			Namespace: "tenant-a", Lanes: []string{"l"}, TTL: time.Minute, Session: "s"})
		require.NoError(t, err)
		_, err = b.engine.Create(ctx, fftype.CreateParams{Namespace: "tenant-a", Lane: "l", Kind: "k"})
		require.NoError(t, err)
		leases, err := b.engine.Claim(ctx, fftype.ClaimParams{WorkerID: "mailer", WorkerInstanceID: "host-1", Lanes: []string{"l"}})
		require.NoError(t, err)
		require.Len(t, leases, 1)

		// tenant-b has no worker host-1: tenant-a's keeps its lease.
		_, err = b.engine.MarkWorkerDead(ctx, "tenant-b", "host-1", "typo")
		require.ErrorIs(t, err, fftype.ErrNotFound)
		require.NoError(t, b.engine.Complete(ctx, leases[0].ExecutionID, leases[0].Fence, nil, ""))
	})

	t.Run("MarkDeadReasonIsPlainText", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, reason := range []string{"line\u0085break", "bad\xffutf8", "tab\t"} {
			_, err := b.engine.RegisterWorker(t.Context(), reg("i", "s"))
			require.NoError(t, err)
			_, err = b.engine.MarkWorkerDead(t.Context(), "", "i", reason)
			require.ErrorIs(t, err, fftype.ErrValidation, "reason %q", reason)
		}
	})

	t.Run("OneOfManyRacingProcessesWins", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var wg sync.WaitGroup
		errs := make([]error, 16)
		for i := range errs {
			wg.Go(func() {
				_, errs[i] = b.engine.RegisterWorker(t.Context(), reg("same", fmt.Sprint("session-", i)))
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
				continue
			}
			require.True(t, errors.Is(err, &fftype.Error{Kind: fftype.KindConflict, Code: engine.CodeDuplicateWorkerInstance}), "%v", err)
		}
		require.Equal(t, 1, won)
	})

	t.Run("ListCrossesBatches", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const n = 1300
		for i := range n {
			_, err := b.engine.RegisterWorker(t.Context(), reg(fmt.Sprintf("i%05d", i), "s"))
			require.NoError(t, err)
		}
		page, err := b.engine.ListWorkers(t.Context(), engine.WorkerListParams{})
		require.NoError(t, err)
		require.Len(t, page.Workers, 1000)
		require.Equal(t, "i00999", page.Cursor)
		page, err = b.engine.ListWorkers(t.Context(), engine.WorkerListParams{After: page.Cursor})
		require.NoError(t, err)
		require.Len(t, page.Workers, n-1000)
		require.Equal(t, "i01000", page.Workers[0].InstanceID)
		require.Empty(t, page.Cursor)
	})

	t.Run("SweepDeletesLapsedRecords", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for i := range 10 {
			_, err := b.engine.RegisterWorker(t.Context(), reg(fmt.Sprint("old-", i), "s"))
			require.NoError(t, err)
		}
		b.clock.Advance(time.Hour)
		_, err := b.engine.RegisterWorker(t.Context(), reg("new", "s"))
		require.NoError(t, err)
		page, err := b.engine.ListWorkers(t.Context(), engine.WorkerListParams{})
		require.NoError(t, err)
		require.Len(t, page.Workers, 1)
		// Swept records are gone, not just hidden: an old session cannot heartbeat them back.
		_, err = b.engine.HeartbeatWorker(t.Context(), "", "old-1", "s")
		require.True(t, errors.Is(err, &fftype.Error{Kind: fftype.KindNotFound, Code: engine.CodeWorkerNotRegistered}))
	})
}

// viewHookStore is a memory store whose next View of one shard, once armed, first runs a
// hook (which may call the engine) and then either fails or proceeds.
type viewHookStore struct {
	*ffmem.Store
	mu    sync.Mutex
	shard int
	armed bool
	fail  bool
	hook  func()
}

func (s *viewHookStore) arm(shard int, fail bool, hook func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shard, s.armed, s.fail, s.hook = shard, true, fail, hook
}

func (s *viewHookStore) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	s.mu.Lock()
	fire := s.armed && shard == s.shard
	fail, hook := s.fail, s.hook
	if fire {
		s.armed = false
	}
	s.mu.Unlock()
	if fire {
		if hook != nil {
			hook()
		}
		if fail {
			return fftype.NewError(fftype.KindUnavailable, fftype.CodeStoreUnavailable, "injected: outage of shard %d", shard)
		}
	}
	return s.Store.View(ctx, shard, fn)
}

func newViewHookEngine(t *testing.T) (*viewHookStore, *engine.Engine, *fftest.Clock) {
	t.Helper()
	clock := fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	store := &viewHookStore{Store: ffmem.New(&ffmem.Options{Shards: 4})}
	e, err := engine.New(store, &engine.Config{Clock: clock})
	require.NoError(t, err)
	return store, e, clock
}

// TestMarkWorkerDeadRetriedAfterAPartialFailure: a mark whose lease scan of one shard
// fails (a passing outage) is retried by its caller, and the retry finishes the job: it
// still knows the worker's id, so it expires its leases on executions of other namespaces
// (claims go by lane, not namespace) rather than answer worker_not_registered.
func TestMarkWorkerDeadRetriedAfterAPartialFailure(t *testing.T) {
	t.Parallel()
	store, e, _ := newViewHookEngine(t)
	ctx := t.Context()
	res, _ := hostWithALease(t, e, time.Minute, "tenant-a")

	store.arm(res.ID.Shard(), true, nil) // the lease scan of that shard fails once
	_, err := e.MarkWorkerDead(ctx, "", "host-1", "host lost")
	require.Error(t, err, "the injected outage fails the call")
	require.True(t, fftype.IsRetryable(err), "a passing failure: the caller retries")

	n, err := e.MarkWorkerDead(ctx, "", "host-1", "host lost")
	require.NoError(t, err, "retrying the failed MarkWorkerDead must finish its job")
	require.Equal(t, 1, n)
	x, err := e.Get(ctx, res.ID)
	require.NoError(t, err)
	require.NotEqual(t, fftype.OwnershipLeased, x.Ownership, "the dead worker's lease must be expired")
}

// TestMarkWorkerDeadSparesTheNextSessionsLeases: a mark frees the instance id at once, then
// scans every shard for leases. A new process with the same instance id (a restarted pod)
// that registers and claims meanwhile keeps its lease: only those held at the mark expire.
func TestMarkWorkerDeadSparesTheNextSessionsLeases(t *testing.T) {
	t.Parallel()
	store, e, clock := newViewHookEngine(t)
	ctx := t.Context()
	reg := engine.WorkerRegistration{WorkerID: "pool", InstanceID: "pod-7", Lanes: []string{"l"}, TTL: time.Minute, Session: "old"}
	_, err := e.RegisterWorker(ctx, reg)
	require.NoError(t, err)
	old, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	dead, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "pool", WorkerInstanceID: "pod-7", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, dead, 1)

	fresh, err := e.Create(ctx, fftype.CreateParams{Lane: "l2", Kind: "k"})
	require.NoError(t, err)
	var newLease []*fftype.Lease
	store.arm(fresh.ID.Shard(), false, func() {
		// The restarted process, a moment later: the id is free.
		clock.Advance(time.Millisecond)
		r := reg
		r.Session, r.Lanes = "new", []string{"l2"}
		_, err := e.RegisterWorker(ctx, r)
		require.NoError(t, err, "the instance id is free once marked dead")
		newLease, err = e.Claim(ctx, fftype.ClaimParams{WorkerID: "pool", WorkerInstanceID: "pod-7", Lanes: []string{"l2"}})
		require.NoError(t, err)
		require.Len(t, newLease, 1)
	})
	n, err := e.MarkWorkerDead(ctx, "", "pod-7", "pod evicted")
	require.NoError(t, err)
	require.Len(t, newLease, 1, "the hook ran")
	x, err := e.Get(ctx, old.ID)
	require.NoError(t, err)
	require.NotEqual(t, fftype.OwnershipLeased, x.Ownership, "the dead process's lease expired")
	_, err = e.Renew(ctx, newLease[0].ExecutionID, newLease[0].Fence, 0)
	require.NoError(t, err,
		"the lease the new process took after the mark must survive (MarkWorkerDead expired %d leases)", n)
}

// TestWorkerSessionMustBeUTF8: the registration record is JSON, which would change a
// session's other bytes, and the session could then not heartbeat its own registration:
// such a session is refused.
func TestWorkerSessionMustBeUTF8(t *testing.T) {
	t.Parallel()
	_, e, _ := newViewHookEngine(t)
	_, err := e.RegisterWorker(t.Context(), engine.WorkerRegistration{WorkerID: "w", InstanceID: "i1",
		Lanes: []string{"l"}, TTL: time.Minute, Session: "\xff\xfe-secret"})
	require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidInput})
}

// TestMarkWorkerDeadExpiresALeaseRenewedSince: a worker marked dead whose renewals still
// run (a hung handler, a host that still reaches the store) renews its lease between the
// mark and the scan of that lease's shard. It held the lease at the mark: it expires.
func TestMarkWorkerDeadExpiresALeaseRenewedSince(t *testing.T) {
	t.Parallel()
	store, e, clock := newViewHookEngine(t)
	ctx := t.Context()
	res, lease := hostWithALease(t, e, time.Minute, "")
	clock.Advance(time.Second)
	store.arm(res.ID.Shard(), false, func() {
		clock.Advance(time.Millisecond)
		_, err := e.Renew(ctx, lease.ExecutionID, lease.Fence, 0) // the zombie's renew loop
		require.NoError(t, err)
	})
	n, err := e.MarkWorkerDead(ctx, "", "host-1", "hung")
	require.NoError(t, err)
	x, err := e.Get(ctx, res.ID)
	require.NoError(t, err)
	require.NotEqual(t, fftype.OwnershipLeased, x.Ownership,
		"the lease the dead worker held at the mark must expire even if it renewed it meanwhile (expired %d)", n)
}

// TestDeregisterAfterMarkWorkerDead: the registration of a worker marked dead has ended.
// Its process deregistering afterwards, while the record is kept for a retry of a mark
// that failed part-way, neither ends it again (no worker_deregistered event) nor takes
// away what the retry needs.
func TestDeregisterAfterMarkWorkerDead(t *testing.T) {
	t.Parallel()
	store, e, _ := newViewHookEngine(t)
	ctx := t.Context()
	res, _ := hostWithALease(t, e, time.Minute, "tenant-a")

	store.arm(res.ID.Shard(), true, nil)
	_, err := e.MarkWorkerDead(ctx, "", "host-1", "host lost")
	require.Error(t, err)
	require.NoError(t, e.DeregisterWorker(ctx, "", "host-1", "s1"))

	var types []fftype.EventType
	for s := range 4 {
		evs, err := store.ReadEvents(ctx, s, 0, 1000)
		require.NoError(t, err)
		for _, ev := range evs {
			if ev.ExecutionID == "" {
				types = append(types, ev.Type)
			}
		}
	}
	require.Equal(t, []fftype.EventType{fftype.EventWorkerRegistered, fftype.EventWorkerMarkedDead}, types,
		"a registration marked dead is not deregistered again")
	n, err := e.MarkWorkerDead(ctx, "", "host-1", "host lost")
	require.NoError(t, err, "the retry finishes the mark")
	require.Equal(t, 1, n)
}

// TestMarkWorkerDeadRetriedAfterTheRegistrationLapsed: a mark that failed part-way is
// retried after the registration's TTL has passed and another registration's unit swept
// the lapsed ones: the record of the mark is kept for the retry, which finishes the job.
func TestMarkWorkerDeadRetriedAfterTheRegistrationLapsed(t *testing.T) {
	t.Parallel()
	store, e, clock := newViewHookEngine(t)
	ctx := t.Context()
	res, lease := hostWithALease(t, e, 5*time.Second, "tenant-a")

	store.arm(res.ID.Shard(), true, nil)
	_, err := e.MarkWorkerDead(ctx, "", "host-1", "host lost")
	require.Error(t, err)

	clock.Advance(10 * time.Second)
	_, err = e.Renew(ctx, lease.ExecutionID, lease.Fence, 0) // the zombie renews
	require.NoError(t, err)
	// Another worker of the namespace registers: its unit sweeps lapsed records.
	_, err = e.RegisterWorker(ctx, engine.WorkerRegistration{WorkerID: "pool", InstanceID: "host-2",
		Lanes: []string{"l"}, TTL: time.Minute, Session: "s2"})
	require.NoError(t, err)

	n, err := e.MarkWorkerDead(ctx, "", "host-1", "host lost")
	require.NoError(t, err, "the retry finishes the mark")
	require.Equal(t, 1, n)
	x, err := e.Get(ctx, res.ID)
	require.NoError(t, err)
	require.NotEqual(t, fftype.OwnershipLeased, x.Ownership)
}

// hostWithALease registers the instance "host-1" of worker "pool" (session "s1", lane
// "l") for ttl, and has it claim an execution created in namespace, which it returns
// with the lease.
func hostWithALease(t *testing.T, e *engine.Engine, ttl time.Duration, namespace string) (*fftype.CreateResult, *fftype.Lease) {
	t.Helper()
	ctx := t.Context()
	_, err := e.RegisterWorker(ctx, engine.WorkerRegistration{WorkerID: "pool", InstanceID: "host-1",
		Lanes: []string{"l"}, TTL: ttl, Session: "s1"})
	require.NoError(t, err)
	res, err := e.Create(ctx, fftype.CreateParams{Namespace: namespace, Lane: "l", Kind: "k"})
	require.NoError(t, err)
	leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "pool", WorkerInstanceID: "host-1", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	return res, leases[0]
}
