package ffpostgres_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/internal/storetest"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestRestart restarts the database server (durable defaults: fsync and synchronous
// commit on) while workers claim and complete executions through the engine: see
// storetest.Restart. A completion whose COMMIT went through but whose answer was lost is
// retried and answered from its first outcome.
func TestRestart(t *testing.T) {
	t.Parallel()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{})
	store, err := ffpostgres.Open(t.Context(), pg.URL("postgres"), &ffpostgres.Options{
		Migrate: true, Shards: 4, PoolSize: 8, ConnectTimeout: 2 * time.Second, StatementTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer store.Close()
	storetest.Restart{Executions: 1200, ClaimCount: 4, Restart: pg.Restart}.Run(t, store)
}

// TestClockReconnectsAfterRestart pins that the store's clock, whose connection the
// server ended by restarting, reconnects and answers on its first read after the restart
// rather than failing that read.
func TestClockReconnectsAfterRestart(t *testing.T) {
	t.Parallel()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{Fast: true})
	ctx := t.Context()
	s, err := ffpostgres.Open(ctx, pg.URL("postgres"), &ffpostgres.Options{Migrate: true, Shards: 1, ConnectTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Now(ctx)
	require.NoError(t, err)
	require.NoError(t, pg.Restart())
	_, err = s.Now(ctx)
	require.NoError(t, err, "the database is up again; the clock reconnects")
}
