package ffpostgres_test

import (
	"testing"

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
