package ffvalkey

import (
	"bytes"
	"log/slog"
	"strconv"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestCheckServersWarnsAboutPrimariesWithoutAOF: a primary with appendonly off is warned
// about, a replica is not (its role is in INFO's replication section).
func TestCheckServersWarnsAboutPrimariesWithoutAOF(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	primary := testdb.NewRedis(t, testdb.RedisOptions{})
	replica := testdb.NewRedis(t, testdb.RedisOptions{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.Port)}})
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{replica.Addr}, DisableCache: true, ForceSingleClient: true})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	role, err := client.Do(ctx, client.B().Info().Section("replication").Build()).ToString()
	require.NoError(t, err)
	require.Contains(t, role, "role:slave", "the server is a replica")

	warned := func(c rueidis.Client) bool {
		var logs bytes.Buffer
		s := &Store{client: c, log: slog.New(slog.NewTextHandler(&logs, nil))}
		require.NoError(t, s.checkServers(ctx))
		return bytes.Contains(logs.Bytes(), []byte("appendonly off"))
	}
	require.False(t, warned(client), "a replica is not warned about")
	pc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{primary.Addr}, DisableCache: true, ForceSingleClient: true})
	require.NoError(t, err)
	t.Cleanup(pc.Close)
	require.True(t, warned(pc), "a primary without AOF is")
}
