package ffpostgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestStatementTimeout pins that Options.StatementTimeout of a store on the caller's pool
// ([ffpostgres.New]) bounds every call, not only units: a call waiting for a lock another
// session holds fails with the server's statement timeout, long before the caller's
// context ends, and the pool's connection keeps its own statement_timeout. (Each call
// runs once first, so that its statements are prepared on the connection: preparing one
// is a round trip of its own, which a lock on a whole table would hold up unbounded.)
func TestStatementTimeout(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		ctx    context.Context
		url    string
		schema string
		pool   *pgxpool.Pool
		store  *ffpostgres.Store
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		b := &testBundle{ctx: t.Context(), url: testdb.SharedPostgres(t).URL("postgres"), schema: testdb.Schema(t)}
		pool, err := pgxpool.New(b.ctx, b.url+"&pool_max_conns=1")
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		b.pool = pool
		b.store, err = ffpostgres.New(pool, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 1, StatementTimeout: 200 * time.Millisecond})
		require.NoError(t, err)
		t.Cleanup(func() { _ = b.store.Close() })
		require.NoError(t, b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("v"))
			tx.QueueAdd("q", "m", 1)
			return nil
		}))
		return b
	}
	// appendEvent leaves an event for the next read to number.
	appendEvent := func(t *testing.T, b *testBundle) {
		t.Helper()
		require.NoError(t, b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
			tx.AppendEvent(fftype.Event{Type: "x", Time: time.Unix(1, 0)})
			return nil
		}))
	}
	// hold runs lock ({S} is the schema) in a transaction of another session until the
	// test ends.
	hold := func(t *testing.T, b *testBundle, lock string) {
		t.Helper()
		conn, err := pgx.Connect(b.ctx, b.url)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.WithoutCancel(b.ctx)) })
		_, err = conn.Exec(b.ctx, "BEGIN")
		require.NoError(t, err)
		_, err = conn.Exec(b.ctx, strings.ReplaceAll(lock, "{S}", pgx.Identifier{b.schema}.Sanitize()))
		require.NoError(t, err)
	}

	const eventLog = "SELECT 1 FROM {S}.event_logs WHERE shard = 0 FOR UPDATE"
	for _, tc := range []struct {
		name string
		lock string
		call func(ctx context.Context, s *ffpostgres.Store) error
	}{
		{"ReadEvents", eventLog, func(ctx context.Context, s *ffpostgres.Store) error {
			_, err := s.ReadEvents(ctx, 0, 0, 10)
			return err
		}},
		{"EventBounds", eventLog, func(ctx context.Context, s *ffpostgres.Store) error {
			_, _, err := s.EventBounds(ctx, 0)
			return err
		}},
		{"TrimEvents", eventLog, func(ctx context.Context, s *ffpostgres.Store) error {
			return s.TrimEvents(ctx, 0, 1)
		}},
		{"QueueHeads", "LOCK TABLE {S}.queues IN ACCESS EXCLUSIVE MODE", func(ctx context.Context, s *ffpostgres.Store) error {
			_, err := s.QueueHeads(ctx, []string{"q"})
			return err
		}},
		{"Update", "SELECT 1 FROM {S}.records WHERE shard = 0 AND key = 'k' FOR UPDATE", func(ctx context.Context, s *ffpostgres.Store) error {
			return s.Update(ctx, 0, func(tx ffstore.Tx) error {
				_, _, err := tx.Get("k")
				return err
			})
		}},
		{"View", "LOCK TABLE {S}.records IN ACCESS EXCLUSIVE MODE", func(ctx context.Context, s *ffpostgres.Store) error {
			return s.View(ctx, 0, func(tx ffstore.ReadTx) error {
				_, _, err := tx.Get("k")
				return err
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			appendEvent(t, b)
			require.NoError(t, tc.call(b.ctx, b.store))
			appendEvent(t, b)
			hold(t, b, tc.lock)

			ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
			defer cancel()
			err := tc.call(ctx, b.store)
			require.ErrorIs(t, err, isCode(fftype.KindUnavailable, fftype.CodeStoreUnavailable))
			require.NotErrorIs(t, err, context.DeadlineExceeded, "the call waited for the caller's context")
			var pgErr *pgconn.PgError
			require.True(t, errors.As(err, &pgErr), "%v", err)
			require.Equal(t, "57014", pgErr.Code, "statement timeout")

			var timeout string
			require.NoError(t, b.pool.QueryRow(b.ctx, "SHOW statement_timeout").Scan(&timeout))
			require.Equal(t, "0", timeout, "the caller's connection keeps its setting")
		})
	}
}
