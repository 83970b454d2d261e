package ffpostgres_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
)

// TestUpkeep checks that a table that grew from empty is vacuumed and analyzed by the
// store itself, and that a table that barely changed is left alone.
func TestUpkeep(t *testing.T) {
	t.Parallel()
	s := openStore(t, &ffpostgres.Options{Shards: 1})
	ctx := t.Context()
	for chunk := range 3 {
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
			for i := range 1000 {
				tx.Put(fmt.Sprintf("x:%d-%d", chunk, i), []byte("v"))
			}
			return nil
		}))
	}

	counts := func(table string) (vacuums, analyzes int64) {
		err := s.Pool().QueryRow(ctx, `SELECT vacuum_count, analyze_count FROM pg_stat_user_tables
			WHERE schemaname = $1 AND relname = $2`, s.Schema(), table).Scan(&vacuums, &analyzes)
		require.NoError(t, err)
		return vacuums, analyzes
	}
	// Postgres publishes a backend's table counters up to a few seconds after its
	// transactions end, and the store's own loop may get there first: either way the
	// records table ends up vacuumed and analyzed (autovacuum counts separately).
	require.Eventually(t, func() bool {
		require.NoError(t, ffpostgres.Upkeep(ctx, s))
		v, a := counts("records")
		return v > 0 && a > 0
	}, 30*time.Second, 200*time.Millisecond)
	v, a := counts("meta")
	require.Zero(t, v+a, "a table with a few rows is left to autovacuum")
}
