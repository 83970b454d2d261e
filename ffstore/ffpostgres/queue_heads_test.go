package ffpostgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestQueueHeadsLeavesWhenItsContextEnds checks that a QueueHeads caller gets ctx.Err()
// about when its context ends, as from every other call of the store, rather than once
// the query its callers share ends (up to the statement timeout); and that Close does not
// wait that long for such a query either.
func TestQueueHeadsLeavesWhenItsContextEnds(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		ctx    context.Context
		url    string
		schema string
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		return &testBundle{ctx: t.Context(), url: testdb.SharedPostgres(t).URL("postgres"), schema: testdb.Schema(t)}
	}
	// queueHeads calls QueueHeads with a context that ends soon and requires that it
	// returns the context's error about then.
	queueHeads := func(t *testing.T, s *ffpostgres.Store) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := s.QueueHeads(ctx, []string{"q"})
			done <- err
		}()
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.DeadlineExceeded)
		case <-time.After(5 * time.Second):
			t.Fatal("QueueHeads did not return once its context ended")
		}
	}

	// The shared query waits for a lock on the queue directory.
	t.Run("QueryWaitsForALock", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 1,
			PoolSize: 2, StatementTimeout: 20 * time.Second})
		require.NoError(t, err)
		closed := false
		defer func() {
			if !closed {
				_ = s.Close()
			}
		}()
		require.NoError(t, s.Update(b.ctx, 0, func(tx ffstore.Tx) error { tx.QueueAdd("q", "m", 1); return nil }))
		_, err = s.QueueHeads(b.ctx, []string{"q"}) // prepares the statement, which then needs no lock
		require.NoError(t, err)

		conn, err := pgx.Connect(b.ctx, b.url)
		require.NoError(t, err)
		defer conn.Close(context.WithoutCancel(b.ctx))
		_, err = conn.Exec(b.ctx, "BEGIN")
		require.NoError(t, err)
		_, err = conn.Exec(b.ctx, "LOCK TABLE "+pgx.Identifier{b.schema}.Sanitize()+".queues IN ACCESS EXCLUSIVE MODE")
		require.NoError(t, err)

		queueHeads(t, s) // starts the shared query
		queueHeads(t, s) // waits for the next one, which starts when the first ends

		// The first query still waits for the lock; Close ends it rather than wait.
		start := time.Now()
		require.NoError(t, s.Close())
		closed = true
		require.Less(t, time.Since(start), 5*time.Second, "Close waited for the shared query to time out")
	})

	// The shared query waits for a pooled connection, all of them held by units.
	t.Run("PoolExhausted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 1, PoolSize: 1})
		require.NoError(t, err)
		defer s.Close()
		require.NoError(t, s.Update(b.ctx, 0, func(tx ffstore.Tx) error { tx.QueueAdd("q", "m", 1); return nil }))

		held, release := make(chan struct{}), make(chan struct{})
		unitDone := make(chan error, 1)
		go func() {
			unitDone <- s.Update(b.ctx, 0, func(tx ffstore.Tx) error {
				_, _, err := tx.Get("k")
				close(held)
				<-release
				return err
			})
		}()
		<-held
		func() {
			defer close(release) // on failure too, before Close waits for the unit
			queueHeads(t, s)
		}()
		require.NoError(t, <-unitDone)
		heads, err := s.QueueHeads(b.ctx, []string{"q"})
		require.NoError(t, err)
		require.Len(t, heads, 1, "the pool came free: QueueHeads answers again")
	})
}
