package ffstoretest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// registration returns a valid registration of instance in namespace ns for session.
func registration(ns, instance, session string) engine.WorkerRegistration {
	return engine.WorkerRegistration{WorkerID: "pool", InstanceID: instance, Namespace: ns,
		Lanes: []string{suiteLane, "other"}, Capabilities: []string{"gpu", "cpu", "gpu"}, TTL: time.Minute, Session: session}
}

func exerciseWorkers(t *testing.T, newStore func(t *testing.T) ffstore.Store) {
	t.Parallel()
	setup := func(t *testing.T) *engineBundle { return newEngineBundle(t, newStore) }

	t.Run("RegisterRefreshAndDuplicateGuard", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		reg, err := b.engine.RegisterWorker(b.ctx, registration("", "i1", "s1"))
		require.NoError(t, err)
		require.False(t, reg.Refreshed)
		require.Equal(t, suiteStart.Add(time.Minute), reg.ExpiresAt.UTC())
		info, err := b.engine.GetWorker(b.ctx, "", "i1")
		require.NoError(t, err)
		require.Equal(t, fftype.DefaultNamespace, info.Namespace)
		require.Equal(t, []string{"default", "other"}, info.Lanes, "lanes are sorted")
		require.Equal(t, []string{"cpu", "gpu"}, info.Capabilities, "capabilities are normalised")

		b.clock.Advance(10 * time.Second)
		r := registration("", "i1", "s1")
		r.Lanes = []string{"third"}
		reg, err = b.engine.RegisterWorker(b.ctx, r)
		require.NoError(t, err)
		require.True(t, reg.Refreshed, "the same session refreshes its registration")
		require.Equal(t, suiteStart.Add(70*time.Second), reg.ExpiresAt.UTC())
		info, err = b.engine.GetWorker(b.ctx, "", "i1")
		require.NoError(t, err)
		require.Equal(t, []string{"third"}, info.Lanes)
		require.Equal(t, suiteStart, info.RegisteredAt.UTC(), "a refresh keeps the registration time")

		_, err = b.engine.RegisterWorker(b.ctx, registration("", "i1", "s2"))
		requireCode(t, err, fftype.KindConflict, engine.CodeDuplicateWorkerInstance)
		after, err := b.engine.GetWorker(b.ctx, "", "i1")
		require.NoError(t, err)
		require.Equal(t, info, after, "a refused registration changes nothing")

		other := registration("", "i1", "s1")
		other.WorkerID = "another-pool"
		_, err = b.engine.RegisterWorker(b.ctx, other)
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)

		_, err = b.engine.RegisterWorker(b.ctx, registration("tenant-b", "i1", "s2"))
		require.NoError(t, err, "instance ids are scoped by namespace")

		b.clock.Advance(time.Minute)
		_, err = b.engine.GetWorker(b.ctx, "", "i1")
		requireCode(t, err, fftype.KindNotFound, engine.CodeWorkerNotRegistered)
		reg, err = b.engine.RegisterWorker(b.ctx, registration("", "i1", "s2"))
		require.NoError(t, err, "a lapsed registration is taken over")
		require.False(t, reg.Refreshed)
	})

	t.Run("RegisterValidation", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cases := []struct {
			name string
			mut  func(r *engine.WorkerRegistration)
			code string
		}{
			{"EmptyWorkerID", func(r *engine.WorkerRegistration) { r.WorkerID = "" }, fftype.CodeInvalidInput},
			{"EmptyInstance", func(r *engine.WorkerRegistration) { r.InstanceID = "" }, fftype.CodeInvalidInput},
			{"BadNamespace", func(r *engine.WorkerRegistration) { r.Namespace = "a b" }, fftype.CodeInvalidNamespace},
			{"NoLanes", func(r *engine.WorkerRegistration) { r.Lanes = nil }, fftype.CodeInvalidLane},
			{"BadLane", func(r *engine.WorkerRegistration) { r.Lanes = []string{"é"} }, fftype.CodeInvalidLane},
			{"CommaCapability", func(r *engine.WorkerRegistration) { r.Capabilities = []string{"a,b"} }, fftype.CodeInvalidCapabilities},
			{"ShortTTL", func(r *engine.WorkerRegistration) { r.TTL = time.Millisecond }, fftype.CodeInvalidInput},
			{"NoSession", func(r *engine.WorkerRegistration) { r.Session = "" }, fftype.CodeInvalidInput},
		}
		for _, c := range cases {
			r := registration("", "i1", "s1")
			c.mut(&r)
			_, err := b.engine.RegisterWorker(b.ctx, r)
			requireCode(t, err, fftype.KindValidation, c.code)
		}
		page, err := b.engine.ListWorkers(b.ctx, engine.WorkerListParams{})
		require.NoError(t, err)
		require.Empty(t, page.Workers, "refused registrations write nothing")
	})

	t.Run("Heartbeat", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.engine.RegisterWorker(b.ctx, registration("", "i1", "s1"))
		require.NoError(t, err)
		b.clock.Advance(50 * time.Second)
		exp, err := b.engine.HeartbeatWorker(b.ctx, "", "i1", "s1")
		require.NoError(t, err)
		require.Equal(t, suiteStart.Add(110*time.Second), exp.UTC())
		_, err = b.engine.HeartbeatWorker(b.ctx, "", "i1", "s2")
		requireCode(t, err, fftype.KindNotFound, engine.CodeWorkerNotRegistered)
		_, err = b.engine.HeartbeatWorker(b.ctx, "", "nobody", "s1")
		requireCode(t, err, fftype.KindNotFound, engine.CodeWorkerNotRegistered)
		b.clock.Advance(time.Minute)
		_, err = b.engine.HeartbeatWorker(b.ctx, "", "i1", "s1")
		requireCode(t, err, fftype.KindNotFound, engine.CodeWorkerNotRegistered)
		_, err = b.engine.GetWorker(b.ctx, "", "i1")
		requireCode(t, err, fftype.KindNotFound, engine.CodeWorkerNotRegistered)
	})

	t.Run("ListPagesAndSkipsLapsed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for i := range 7 {
			_, err := b.engine.RegisterWorker(b.ctx, registration("", fmt.Sprintf("i%d", i), "s"))
			require.NoError(t, err)
		}
		_, err := b.engine.RegisterWorker(b.ctx, registration("tenant-b", "elsewhere", "s"))
		require.NoError(t, err)
		short := registration("", "i3", "s")
		short.TTL = time.Second
		_, err = b.engine.RegisterWorker(b.ctx, short)
		require.NoError(t, err)
		b.clock.Advance(2 * time.Second)

		var got []string
		after := ""
		for pages := 0; ; pages++ {
			require.Less(t, pages, 10)
			page, err := b.engine.ListWorkers(b.ctx, engine.WorkerListParams{After: after, Limit: 2})
			require.NoError(t, err)
			for _, w := range page.Workers {
				got = append(got, w.InstanceID)
				require.Equal(t, fftype.DefaultNamespace, w.Namespace)
			}
			if page.Cursor == "" {
				break
			}
			after = page.Cursor
		}
		require.Equal(t, []string{"i0", "i1", "i2", "i4", "i5", "i6"}, got, "in order, lapsed i3 skipped, other namespaces apart")
		page, err := b.engine.ListWorkers(b.ctx, engine.WorkerListParams{Namespace: "tenant-b"})
		require.NoError(t, err)
		require.Len(t, page.Workers, 1)
		require.Empty(t, page.Cursor)

		_, err = b.engine.ListWorkers(b.ctx, engine.WorkerListParams{Limit: -1})
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)

		// The next registration on the shard sweeps the lapsed record, so it can be taken.
		_, err = b.engine.RegisterWorker(b.ctx, registration("", "i3", "new-session"))
		require.NoError(t, err)
	})

	t.Run("Deregister", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.engine.RegisterWorker(b.ctx, registration("", "i1", "s1"))
		require.NoError(t, err)
		require.NoError(t, b.engine.DeregisterWorker(b.ctx, "", "i1", "intruder"), "another session's call is a no-op")
		_, err = b.engine.GetWorker(b.ctx, "", "i1")
		require.NoError(t, err)
		require.NoError(t, b.engine.DeregisterWorker(b.ctx, "", "i1", "s1"))
		_, err = b.engine.GetWorker(b.ctx, "", "i1")
		requireCode(t, err, fftype.KindNotFound, engine.CodeWorkerNotRegistered)
		require.NoError(t, b.engine.DeregisterWorker(b.ctx, "", "i1", "s1"), "deregistering twice is fine")
		reg, err := b.engine.RegisterWorker(b.ctx, registration("", "i1", "s2"))
		require.NoError(t, err, "the instance id is free at once after a clean shutdown")
		require.False(t, reg.Refreshed)
	})

	t.Run("MarkDeadExpiresLeases", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.engine.RegisterWorker(b.ctx, registration("", "doomed", "s1"))
		require.NoError(t, err)
		var ids []fftype.ExecutionID
		for range 6 {
			ids = append(ids, b.create(t, fftype.CreateParams{}))
		}
		dead, err := b.engine.Claim(b.ctx, fftype.ClaimParams{WorkerID: "pool", WorkerInstanceID: "doomed", Lanes: []string{suiteLane}, Count: 4})
		require.NoError(t, err)
		require.Len(t, dead, 4)
		alive := b.claim(t, "alive", 2)
		require.Len(t, alive, 2)

		n, err := b.engine.MarkWorkerDead(b.ctx, "", "doomed", "host lost")
		require.NoError(t, err)
		require.Equal(t, 4, n)
		_, err = b.engine.GetWorker(b.ctx, "", "doomed")
		requireCode(t, err, fftype.KindNotFound, engine.CodeWorkerNotRegistered)
		for _, l := range dead {
			x := b.get(t, l.ExecutionID)
			require.Equal(t, fftype.StateWaiting, x.PublicState(), "eligible again at once")
			require.Equal(t, fftype.AttemptStatePendingReclaim, x.AttemptState)
			requireCode(t, b.engine.Complete(b.ctx, l.ExecutionID, l.Fence, nil, ""), fftype.KindState, fftype.CodeLeaseExpired)
			require.Contains(t, b.events(t, l.ExecutionID), fftype.EventLeaseExpired)
		}
		for _, l := range alive {
			require.Equal(t, fftype.StateActive, b.state(t, l.ExecutionID), "other workers keep their leases")
		}
		again := b.claim(t, "rescuer", 10)
		require.Len(t, again, 4)
		for _, l := range again {
			require.Equal(t, fftype.AttemptReclaim, l.AttemptType)
		}

		_, err = b.engine.MarkWorkerDead(b.ctx, "", "doomed", "again")
		requireCode(t, err, fftype.KindNotFound, engine.CodeWorkerNotRegistered)
		_, err = b.engine.MarkWorkerDead(b.ctx, "", "doomed", "bad\nreason")
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
	})

	t.Run("MarkDeadWithoutRegistration", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{})
		l, err := b.engine.Claim(b.ctx, fftype.ClaimParams{WorkerID: "pool", WorkerInstanceID: "ghost", Lanes: []string{suiteLane}})
		require.NoError(t, err)
		require.Len(t, l, 1)
		n, err := b.engine.MarkWorkerDead(b.ctx, "", "ghost", "")
		require.NoError(t, err, "leases of an unregistered instance still expire")
		require.Equal(t, 1, n)
		require.Equal(t, fftype.StateWaiting, b.state(t, id))
	})
}
