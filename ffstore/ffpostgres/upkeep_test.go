package ffpostgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestUpkeep checks that a table that grew from empty is vacuumed and analyzed by the
// store itself, by one process at a time, and that a table that barely changed is left
// alone.
func TestUpkeep(t *testing.T) {
	t.Parallel()
	s := openStore(t, &ffpostgres.Options{Shards: 1})
	ctx := t.Context()

	// Another process is doing the upkeep: it holds the lock.
	other, err := s.Pool().Acquire(ctx)
	require.NoError(t, err)
	_, err = other.Exec(ctx, "SELECT pg_advisory_lock($1)", ffpostgres.UpkeepLockKey(s))
	require.NoError(t, err)

	for chunk := range 3 {
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
			for i := range 1000 {
				tx.Put(fmt.Sprintf("x:%d-%d", chunk, i), []byte("v"))
			}
			return nil
		}))
	}
	counter := func(table, column string) int64 {
		var n int64
		err := s.Pool().QueryRow(ctx, fmt.Sprintf(`SELECT %s FROM pg_stat_user_tables
			WHERE schemaname = $1 AND relname = $2`, column), s.Schema(), table).Scan(&n)
		require.NoError(t, err)
		return n
	}
	// Postgres publishes a backend's table counters up to a few seconds after its
	// transactions end.
	require.Eventually(t, func() bool { return counter("records", "n_ins_since_vacuum") >= 3000 },
		30*time.Second, 100*time.Millisecond)
	require.NoError(t, ffpostgres.Upkeep(ctx, s))
	require.Zero(t, counter("records", "vacuum_count"), "upkeep is left to the process holding the lock")

	_, err = other.Exec(ctx, "SELECT pg_advisory_unlock($1)", ffpostgres.UpkeepLockKey(s))
	require.NoError(t, err)
	other.Release()
	require.Eventually(t, func() bool {
		require.NoError(t, ffpostgres.Upkeep(ctx, s))
		// Manual runs; autovacuum counts separately.
		return counter("records", "vacuum_count") > 0 && counter("records", "analyze_count") > 0
	}, 30*time.Second, 200*time.Millisecond)
	require.Zero(t, counter("meta", "vacuum_count")+counter("meta", "analyze_count"),
		"a table with a few rows is left to autovacuum")

	// Upkeep lifts the statement timeout for its VACUUMs and leaves no connection without
	// it, nor holding the lock.
	conns := make([]*pgxpool.Conn, s.Pool().Config().MaxConns)
	for i := range conns {
		c, err := s.Pool().Acquire(ctx)
		require.NoError(t, err)
		conns[i] = c
		defer c.Release()
		var timeout string
		require.NoError(t, c.QueryRow(ctx, "SHOW statement_timeout").Scan(&timeout))
		require.Equal(t, "30s", timeout, "connection %d", i)
	}
	outside, err := pgx.ConnectConfig(ctx, s.Pool().Config().ConnConfig)
	require.NoError(t, err)
	defer outside.Close(ctx)
	// The store's own loop takes the lock for a moment every two seconds.
	require.Eventually(t, func() bool {
		var free bool
		require.NoError(t, outside.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", ffpostgres.UpkeepLockKey(s)).Scan(&free))
		return free
	}, 5*time.Second, 50*time.Millisecond, "the upkeep lock was released")
}

// TestUpkeepKeepsCallerStatementTimeout pins that upkeep, on the caller's pool of New,
// hands every connection back with the statement_timeout the caller set on it (here in
// AfterConnect), not the session's startup value: both where it lifts the timeout for its
// VACUUMs and where it sets New's StatementTimeout.
func TestUpkeepKeepsCallerStatementTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		timeout time.Duration
	}{
		{"PoolTimeout", 0},
		{"StoreTimeout", 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			cfg, err := pgxpool.ParseConfig(testdb.SharedPostgres(t).URL("postgres"))
			require.NoError(t, err)
			cfg.MaxConns = 3
			cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
				_, err := c.Exec(ctx, "SET statement_timeout = '7s'")
				return err
			}
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			defer pool.Close()
			s, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, Shards: 1, StatementTimeout: tc.timeout})
			require.NoError(t, err)
			defer s.Close()
			for chunk := range 3 {
				require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
					for i := range 1000 {
						tx.Put(fmt.Sprintf("x:%d-%d", chunk, i), []byte("v"))
					}
					return nil
				}))
			}
			counter := func(column string) int64 {
				var n int64
				require.NoError(t, pool.QueryRow(ctx, fmt.Sprintf(`SELECT %s FROM pg_stat_user_tables
					WHERE schemaname = $1 AND relname = 'records'`, column), s.Schema()).Scan(&n))
				return n
			}
			require.Eventually(t, func() bool {
				require.NoError(t, ffpostgres.Upkeep(ctx, s))
				return counter("vacuum_count") > 0
			}, 30*time.Second, 200*time.Millisecond, "upkeep vacuumed the table")
			conns := make([]*pgxpool.Conn, cfg.MaxConns)
			for i := range conns {
				c, err := pool.Acquire(ctx)
				require.NoError(t, err)
				conns[i] = c
				defer c.Release()
				var v string
				require.NoError(t, c.QueryRow(ctx, "SHOW statement_timeout").Scan(&v))
				require.Equal(t, "7s", v, "connection %d lost the caller's statement_timeout", i)
			}
		})
	}
}
