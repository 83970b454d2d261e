package ffvalkey_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestClusterKeys runs the engine's operations on the Cluster — create, claim, complete,
// fail with retry, delay, lease expiry, retention, events and their trimming — and then
// looks at every key the store wrote: each carries the hash tag of one shard, lives on
// the node that serves that tag's slot, and the 16 shards sit 5, 6 and 5 on the three
// primaries. (The conformance suite on the Cluster would fail with CROSSSLOT if a unit
// touched keys of two slots.)
func TestClusterKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cluster := testdb.SharedRedisCluster(t)
	s := openStore(t, cluster.URL(), nil)
	require.True(t, s.Cluster())
	require.Equal(t, ffvalkey.DefaultShards, s.Shards())
	clock := fftest.NewClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	e, err := engine.New(s, &engine.Config{Clock: clock, Retention: time.Hour})
	require.NoError(t, err)

	var ps []fftype.CreateParams
	for i := range 64 {
		p := fftype.CreateParams{Lane: workLane, Kind: "work", Payload: []byte(strconv.Itoa(i))}
		if i%8 == 0 {
			p.Delay = fftype.Duration(time.Minute)
		}
		if i%16 == 1 {
			p.IdempotencyKey = "k" + strconv.Itoa(i)
		}
		ps = append(ps, p)
	}
	for _, r := range e.CreateMany(ctx, ps) {
		require.NoError(t, r.Err)
	}
	for round := 0; ; round++ {
		ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{workLane}, Count: 10})
		require.NoError(t, err)
		if len(ls) == 0 {
			break
		}
		for i, l := range ls {
			switch {
			case i%5 == 1 && round == 0:
				_, err = e.Fail(ctx, l.ExecutionID, l.Fence, fftype.FailParams{Reason: "boom"})
			case i%7 == 2:
				continue // its lease expires
			default:
				err = e.Complete(ctx, l.ExecutionID, l.Fence, nil, "")
			}
			require.NoError(t, err)
		}
	}
	clock.Advance(2 * time.Hour)
	_, _, err = e.RunDue(ctx)
	require.NoError(t, err)
	for shard := range s.Shards() {
		_, last, err := s.EventBounds(ctx, shard)
		require.NoError(t, err)
		require.NoError(t, s.TrimEvents(ctx, shard, last/2))
	}

	slotNode := clusterSlots(t, cluster)
	shardsOnNode := map[string]int{}
	for shard := range s.Shards() {
		shardsOnNode[slotNode[ffvalkey.KeySlot(ffvalkey.ShardTag(s, shard))]]++
	}
	require.Len(t, shardsOnNode, 3)
	counts := []int{}
	for _, n := range cluster.Nodes {
		counts = append(counts, shardsOnNode[n.Addr])
	}
	require.ElementsMatch(t, []int{5, 6, 5}, counts, "shards per primary")

	c := ffvalkey.Client(s)
	seen := 0
	for addr, node := range c.Nodes() {
		var cursor uint64
		for {
			entry, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(s.KeyPrefix()+":*").Count(1000).Build()).AsScanEntry()
			require.NoError(t, err)
			for _, key := range entry.Elements {
				seen++
				if key == s.KeyPrefix()+":meta" || key == s.KeyPrefix()+":hint" {
					continue // the keys outside the shards, each used alone
				}
				rest := strings.TrimPrefix(key, s.KeyPrefix()+":")
				require.True(t, strings.HasPrefix(rest, "{ff:s"), "key %q has a shard tag", key)
				tag := rest[:strings.IndexByte(rest, '}')+1]
				shard, err := strconv.Atoi(tag[len("{ff:s"):strings.LastIndexByte(tag, ':')])
				require.NoError(t, err)
				require.Equal(t, ffvalkey.ShardTag(s, shard), tag, "key %q", key)
				slot := ffvalkey.KeySlot(key)
				require.Equal(t, ffvalkey.KeySlot(tag), slot)
				require.Equal(t, addr, slotNode[slot], "key %q of slot %d lives on the node serving it", key, slot)
				got, err := node.Do(ctx, node.B().ClusterKeyslot().Key(key).Build()).AsInt64()
				require.NoError(t, err)
				require.Equal(t, int64(slot), got, "the server agrees on the slot of %q", key)
			}
			if cursor = entry.Cursor; cursor == 0 {
				break
			}
		}
	}
	require.Greater(t, seen, 100)
}

// clusterSlots returns the address of the node serving each slot.
func clusterSlots(t *testing.T, c *testdb.RedisCluster) map[int]string {
	t.Helper()
	s := openStore(t, c.URL(), &ffvalkey.Options{Shards: 1})
	cl := ffvalkey.Client(s)
	ranges, err := cl.Do(t.Context(), cl.B().ClusterSlots().Build()).ToArray()
	require.NoError(t, err)
	out := map[int]string{}
	for _, r := range ranges {
		parts, err := r.ToArray()
		require.NoError(t, err)
		lo, err := parts[0].AsInt64()
		require.NoError(t, err)
		hi, err := parts[1].AsInt64()
		require.NoError(t, err)
		node, err := parts[2].ToArray()
		require.NoError(t, err)
		host, err := node[0].ToString()
		require.NoError(t, err)
		port, err := node[1].AsInt64()
		require.NoError(t, err)
		for slot := lo; slot <= hi; slot++ {
			out[int(slot)] = host + ":" + strconv.FormatInt(port, 10)
		}
	}
	require.Len(t, out, 16384)
	return out
}

// TestClusterUnitWaitsOutSlotMigration migrates the slot of a shard slowly: one of its
// keys moves at once and the rest a second later, as when a reshard moves a big key. A
// unit on the shard meanwhile gets TRYAGAIN, which says it did not run: it must wait for
// the migration to end rather than fail.
func TestClusterUnitWaitsOutSlotMigration(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := ownCluster(t)
	const shards, shard = 2, 0
	s := openStore(t, c.URL(), &ffvalkey.Options{Shards: shards})
	put := func(v string) error {
		return s.Update(ctx, shard, func(tx ffstore.Tx) error {
			tx.Put("a", []byte(v))
			tx.AppendEvent(fftype.Event{Type: fftype.EventCreated})
			return nil
		})
	}
	require.NoError(t, put("1"))

	slot := ffvalkey.KeySlot(ffvalkey.TagFor(shard, shards))
	from := nodeOfSlot(t, c, slot)
	var nodes [3]rueidis.Client
	var ids [3]string
	for i := range nodes {
		nodes[i] = singleNodeClient(t, c.Nodes[(from+i)%3].Addr)
		id, err := nodeDo(ctx, nodes[i], "CLUSTER", "MYID").ToString()
		require.NoError(t, err)
		ids[i] = id
	}
	src, dst := nodes[0], nodes[1]
	host, port, err := net.SplitHostPort(c.Nodes[(from+1)%3].Addr)
	require.NoError(t, err)
	ss := strconv.Itoa(slot)
	require.NoError(t, nodeDo(ctx, dst, "CLUSTER", "SETSLOT", ss, "IMPORTING", ids[0]).Error())
	require.NoError(t, nodeDo(ctx, src, "CLUSTER", "SETSLOT", ss, "MIGRATING", ids[1]).Error())
	verKey := s.KeyPrefix() + ":" + ffvalkey.TagFor(shard, shards) + ":v"
	require.NoError(t, nodeDo(ctx, src, "MIGRATE", host, port, "", "0", "5000", "KEYS", verKey).Error())

	done := make(chan error, 1)
	go func() { done <- put("2") }()
	time.Sleep(time.Second) // the slow key: longer than the old fixed retries took
	for {
		keys, err := nodeDo(ctx, src, "CLUSTER", "GETKEYSINSLOT", ss, "100").AsStrSlice()
		require.NoError(t, err)
		if len(keys) == 0 {
			break
		}
		require.NoError(t, nodeDo(ctx, src, append([]string{"MIGRATE", host, port, "", "0", "5000", "REPLACE", "KEYS"}, keys...)...).Error())
	}
	for _, n := range nodes {
		require.NoError(t, nodeDo(ctx, n, "CLUSTER", "SETSLOT", ss, "NODE", ids[1]).Error())
	}
	require.NoError(t, <-done, "a unit during a slow slot migration")
}

// singleNodeClient returns a client of the Cluster node at addr alone.
func singleNodeClient(t *testing.T, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true, DisableCache: true})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// nodeDo sends the command args to c.
func nodeDo(ctx context.Context, c rueidis.Client, args ...string) rueidis.RedisResult {
	return c.Do(ctx, c.B().Arbitrary(args[0]).Args(args[1:]...).Build())
}

// slotMigration moves nothing: it sets a shard's slot MIGRATING on the node serving it
// and IMPORTING on another, as a reshard does before its first key moves, and sets it
// back.
type slotMigration struct {
	nodes [2]rueidis.Client // the node serving the slot, and the one importing it
	ids   [2]string
	slot  string
}

func newSlotMigration(t *testing.T, c *testdb.RedisCluster, shard, shards int) *slotMigration {
	t.Helper()
	slot := ffvalkey.KeySlot(ffvalkey.TagFor(shard, shards))
	from := nodeOfSlot(t, c, slot)
	m := &slotMigration{slot: strconv.Itoa(slot)}
	for i := range m.nodes {
		m.nodes[i] = singleNodeClient(t, c.Nodes[(from+i)%len(c.Nodes)].Addr)
		id, err := nodeDo(t.Context(), m.nodes[i], "CLUSTER", "MYID").ToString()
		require.NoError(t, err)
		m.ids[i] = id
	}
	return m
}

// begin marks the slot IMPORTING and MIGRATING. It returns an error rather than fail the
// test, as it runs inside a unit, off the test's goroutine.
func (m *slotMigration) begin(ctx context.Context) error {
	if err := nodeDo(ctx, m.nodes[1], "CLUSTER", "SETSLOT", m.slot, "IMPORTING", m.ids[0]).Error(); err != nil {
		return err
	}
	return nodeDo(ctx, m.nodes[0], "CLUSTER", "SETSLOT", m.slot, "MIGRATING", m.ids[1]).Error()
}

func (m *slotMigration) end(t *testing.T) {
	require.NoError(t, nodeDo(context.Background(), m.nodes[0], "CLUSTER", "SETSLOT", m.slot, "STABLE").Error())
	require.NoError(t, nodeDo(context.Background(), m.nodes[1], "CLUSTER", "SETSLOT", m.slot, "STABLE").Error())
}

// TestCommitDuringASlotMigration: a reshard begins (the shard's slot MIGRATING, no key
// moved yet) as a unit that empties a queue commits, every key it names still on the
// serving node. The function would empty the queue, then find the queue's key refused as
// missing in a migrating slot, half-way through its writes; the commit waits instead
// (TRYAGAIN), writes nothing meanwhile, and commits whole once the slot is stable.
func TestCommitDuringASlotMigration(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := ownCluster(t)
	const shards, shard = 2, 0
	s := openStore(t, c.URL(), &ffvalkey.Options{Shards: shards})
	require.NoError(t, s.Update(ctx, shard, func(tx ffstore.Tx) error {
		tx.Put("a", []byte("1"))
		tx.Put("b", []byte("1"))
		tx.QueueAdd("q", "m1", 1)
		tx.AppendEvent(fftype.Event{Type: fftype.EventCreated})
		return nil
	}))
	// A delete, so that every fixed key of the shard exists (the delete counter too).
	require.NoError(t, s.Update(ctx, shard, func(tx ffstore.Tx) error { tx.Delete("b"); return nil }))
	_, before, err := s.EventBounds(ctx, shard)
	require.NoError(t, err)

	m := newSlotMigration(t, c, shard, shards)
	began := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		once := false
		done <- s.Update(ctx, shard, func(tx ffstore.Tx) error {
			if _, err := tx.PopDue("q", ffstore.MaxScore, 1); err != nil {
				return err
			}
			tx.AppendEvent(fftype.Event{Type: fftype.EventCreated})
			if !once {
				once = true
				defer close(began)
				return m.begin(context.WithoutCancel(ctx))
			}
			return nil
		})
	}()
	<-began
	select {
	case err := <-done:
		t.Fatalf("the commit ended while the slot migrated: %v", err)
	case <-time.After(300 * time.Millisecond): // it waits
	}
	m.end(t)
	require.NoError(t, <-done)
	_, after, err := s.EventBounds(ctx, shard)
	require.NoError(t, err)
	require.Equal(t, before+1, after, "one event: no half-done commit came before the whole one")
	var left []ffstore.QueueItem
	require.NoError(t, s.View(ctx, shard, func(tx ffstore.ReadTx) error {
		left, err = tx.Range("q", nil, ffstore.MaxScore, 10)
		return err
	}))
	require.Empty(t, left)
}
