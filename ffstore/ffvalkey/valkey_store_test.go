package ffvalkey_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffstoretest"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// openStore opens a store under a fresh key prefix on url and closes it at cleanup.
func openStore(t *testing.T, url string, opts *ffvalkey.Options) *ffvalkey.Store {
	t.Helper()
	o := ffvalkey.Options{KeyPrefix: testdb.RedisPrefix(t)}
	if opts != nil {
		o.Shards = opts.Shards
		o.Logger = opts.Logger
		if opts.KeyPrefix != "" {
			o.KeyPrefix = opts.KeyPrefix
		}
	}
	s, err := ffvalkey.Open(t.Context(), url, &o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	url := testdb.SharedRedis(t).URL(0)
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return openStore(t, url, &ffvalkey.Options{Shards: 4}) })
}

func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	url := testdb.SharedRedisCluster(t).URL()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return openStore(t, url, nil) })
}
