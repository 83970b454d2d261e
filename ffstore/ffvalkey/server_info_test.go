package ffvalkey_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestCheckServer runs the version check on INFO replies as servers send them.
func TestCheckServer(t *testing.T) {
	t.Parallel()
	const redis70 = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n\r\n# Persistence\r\nloading:0\r\naof_enabled:0\r\n\r\n# Cluster\r\ncluster_enabled:0\r\n"
	const redis72aof = "# Server\r\nredis_version:7.2.4\r\nredis_mode:cluster\r\n# Persistence\r\naof_enabled:1\r\n# Cluster\r\ncluster_enabled:1\r\n"
	const redis62 = "# Server\r\nredis_version:6.2.14\r\n# Persistence\r\naof_enabled:1\r\n"
	const redis80rc = "# Server\r\nredis_version:8.0.0-rc1\r\n"
	// Valkey reports an old redis_version for compatibility, and its own version beside it.
	const valkey72 = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:7.2.5\r\nredis_mode:standalone\r\n# Persistence\r\naof_enabled:1\r\n"
	const valkey80 = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n# Cluster\r\ncluster_enabled:1\r\n"
	const valkeyOld = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:7.0.0\r\n"
	const noVersion = "# Server\r\nos:Linux\r\n"

	tests := []struct {
		name, info        string
		product, version  string
		aof, aofKnown, cl bool
		tooOld            bool
	}{
		{name: "Redis70", info: redis70, product: "redis", version: "7.0.15", aofKnown: true},
		{name: "Redis72ClusterAOF", info: redis72aof, product: "redis", version: "7.2.4", aof: true, aofKnown: true, cl: true},
		{name: "Redis80RC", info: redis80rc, product: "redis", version: "8.0.0"},
		{name: "Valkey72", info: valkey72, product: "valkey", version: "7.2.5", aof: true, aofKnown: true},
		{name: "Valkey80", info: valkey80, product: "valkey", version: "8.0.1", cl: true},
		{name: "Redis62", info: redis62, product: "redis", tooOld: true},
		{name: "ValkeyBelow72", info: valkeyOld, product: "valkey", tooOld: true},
		{name: "NoVersion", info: noVersion, tooOld: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			product, version, aof, aofKnown, cluster, err := ffvalkey.CheckServer("127.0.0.1:6379", tt.info)
			if tt.tooOld {
				require.ErrorIs(t, err, fftype.ErrUnavailable)
				require.Equal(t, ffvalkey.CodeServerTooOld, fftype.CodeOf(err))
				require.Contains(t, err.Error(), "Redis 7.0.0+ or Valkey 7.2.0+")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.product, product)
			require.Equal(t, tt.version, version)
			require.Equal(t, tt.aof, aof)
			require.Equal(t, tt.aofKnown, aofKnown)
			require.Equal(t, tt.cl, cluster)
		})
	}
}
