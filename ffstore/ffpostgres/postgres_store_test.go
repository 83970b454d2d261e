package ffpostgres_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/ffstore/ffstoretest"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// openStore opens a store on a fresh schema of the shared server and closes it at cleanup.
func openStore(t *testing.T, opts *ffpostgres.Options) *ffpostgres.Store {
	t.Helper()
	o := ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, PoolSize: 4}
	if opts != nil {
		o.Shards = opts.Shards
		if opts.Schema != "" {
			o.Schema = opts.Schema
		}
		if opts.PoolSize != 0 {
			o.PoolSize = opts.PoolSize
		}
	}
	s, err := ffpostgres.Open(t.Context(), testdb.SharedPostgres(t).URL("postgres"), &o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return openStore(t, &ffpostgres.Options{Shards: 3}) })
}

// TestConformanceUserPool runs the suite on stores on the caller's pool ([ffpostgres.New])
// with a statement timeout, which their transactions and batches set for themselves.
func TestConformanceUserPool(t *testing.T) {
	t.Parallel()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store {
		pool, err := pgxpool.New(t.Context(), testdb.SharedPostgres(t).URL("postgres")+"&pool_max_conns=4")
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		s, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, Shards: 3, StatementTimeout: 30 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
