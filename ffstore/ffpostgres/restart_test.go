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
