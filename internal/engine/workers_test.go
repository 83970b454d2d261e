package engine_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
