package ffvalkey_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/internal/engine"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// ownCluster starts a 3-primary Cluster for the test alone (its nodes may be restarted).
func ownCluster(t *testing.T) *testdb.RedisCluster {
	t.Helper()
	c, err := testdb.StartRedisCluster(3, testdb.RedisClusterOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Remove() })
	return c
}

// nodeOfSlot returns the index in c.Nodes of the node serving slot.
func nodeOfSlot(t *testing.T, c *testdb.RedisCluster, slot int) int {
	t.Helper()
	addr := clusterSlots(t, c)[slot]
	for i, n := range c.Nodes {
		if n.Addr == addr {
			return i
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return -1
}

// waitClusterOK waits until every node of c answers and reports cluster_state:ok. It
// talks to each node with a client of its own, not through a store: opening a store
// would load the function library on every node.
func waitClusterOK(t *testing.T, c *testdb.RedisCluster) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, n := range c.Nodes {
			client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{n.Addr}, ForceSingleClient: true, DisableCache: true})
			if err != nil {
				return false
			}
			info, err := client.Do(t.Context(), client.B().ClusterInfo().Build().Pin()).ToString()
			client.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond)
}

// TestClusterMetaKeyLostOnNodeWithoutShards: on a Cluster the meta key lives on a slot of
// its own. When the node holding it restarts without persistence and serves none of the
// store's shards, no function call of the store finds the library missing there, yet the
// running store writes the meta key back, so that a process opening the store afterwards
// with Shards 0 gets its shard count, not a new store of 16 shards beside it.
func TestClusterMetaKeyLostOnNodeWithoutShards(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := ownCluster(t)
	const shards = 2
	// A prefix whose meta key is on a node that serves neither shard.
	shardNodes := map[int]bool{}
	for shard := range shards {
		shardNodes[nodeOfSlot(t, c, ffvalkey.KeySlot(ffvalkey.TagFor(shard, shards)))] = true
	}
	require.Len(t, shardNodes, 2)
	slots := clusterSlots(t, c)
	var prefix string
	var metaNode int
	for i := 0; ; i++ {
		prefix = "metalost" + strconv.Itoa(i)
		addr := slots[ffvalkey.KeySlot(prefix+":meta")]
		for j, n := range c.Nodes {
			if n.Addr == addr {
				metaNode = j
			}
		}
		if !shardNodes[metaNode] {
			break
		}
	}
	store := openStore(t, c.URL(), &ffvalkey.Options{KeyPrefix: prefix, Shards: shards})
	e, err := engine.New(store, nil)
	require.NoError(t, err)
	roundTrip(t, e)

	require.NoError(t, c.Nodes[metaNode].Restart()) // keeps nothing: the meta key is gone
	waitClusterOK(t, c)
	// The running process goes on (its units never touch the node), and writes the meta
	// key back at its next full read of the queue heads.
	raw := ffvalkey.Client(store)
	require.Eventually(t, func() bool {
		if _, err := tryRoundTrip(ctx, e); err != nil {
			return false
		}
		n, err := raw.Do(ctx, raw.B().Hget().Key(prefix+":meta").Field("shards").Build()).ToString()
		return err == nil && n == strconv.Itoa(shards)
	}, 30*time.Second, 20*time.Millisecond, "the meta key is written back")

	again, err := ffvalkey.Open(ctx, c.URL(), &ffvalkey.Options{KeyPrefix: prefix})
	require.NoError(t, err)
	defer again.Close()
	require.Equal(t, shards, again.Shards(),
		"a process opening the running store with Shards 0 must get its shard count; the meta key was never written back after its node restarted")
}

// TestRestartMetaKeyBackWhenAnotherStoreReloadedTheLibrary: a server restarted without
// persistence loses the store's meta key. When something else loads the function library
// first (here another store under its own prefix), the running store's calls never find
// it missing, yet the store writes its meta key back.
func TestRestartMetaKeyBackWhenAnotherStoreReloadedTheLibrary(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testdb.NewRedis(t, testdb.RedisOptions{})
	store := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 2})
	e, err := engine.New(store, nil)
	require.NoError(t, err)
	roundTrip(t, e)
	require.NoError(t, srv.Restart())
	openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 4}) // another store, another prefix
	raw := ffvalkey.Client(store)
	require.Eventually(t, func() bool {
		roundTrip(t, e)
		n, err := raw.Do(ctx, raw.B().Hget().Key(store.KeyPrefix()+":meta").Field("shards").Build()).ToString()
		return err == nil && n == "2"
	}, 30*time.Second, 20*time.Millisecond, "the meta key is written back")
	again, err := ffvalkey.Open(ctx, srv.URL(0), &ffvalkey.Options{KeyPrefix: store.KeyPrefix()})
	require.NoError(t, err)
	defer again.Close()
	require.Equal(t, 2, again.Shards(), "the meta key of the running store is not back")
}
