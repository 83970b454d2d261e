package ffconnect_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffconnect"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestOpenNetworkStores opens the Postgres and Redis stores by URL and runs a create on
// each, so the URL switch reaches every store.
func TestOpenNetworkStores(t *testing.T) {
	t.Parallel()
	urls := map[string]string{
		"postgres": testdb.SharedPostgres(t).URL("postgres") + "&schema=" + testdb.Schema(t) + "&migrate=true",
		"redis":    testdb.SharedRedis(t).URL(0) + "?prefix=" + testdb.RedisPrefix(t),
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := ffconnect.Open(t.Context(), url)
			require.NoError(t, err, url)
			defer s.Close()
			require.GreaterOrEqual(t, s.Shards(), 1)
			_, err = s.Now(t.Context())
			require.NoError(t, err)
		})
	}
	_, err := ffconnect.Open(t.Context(), "postgres://nobody@127.0.0.1:1/db?connect_timeout=1")
	require.ErrorIs(t, err, fftype.ErrUnavailable)
}
