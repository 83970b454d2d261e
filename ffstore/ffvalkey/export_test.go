package ffvalkey

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowfabric/flowfabric/ffstore"
)

// Client returns the store's client, for tests that look at the server directly.
func Client(s *Store) rueidis.Client { return s.client }

// ShardTag returns the hash tag of a shard, braces included.
func ShardTag(s *Store, shard int) string { return tagFor(shard, s.shards) }

// TagFor is tagFor.
func TagFor(shard, shards int) string { return tagFor(shard, shards) }

// KeySlot is keySlot.
func KeySlot(key string) int { return keySlot(key) }

// CheckServer is checkServer.
func CheckServer(addr, info string) (product string, version string, aof, aofKnown, cluster bool, err error) {
	i, err := checkServer(addr, info)
	return i.Product, i.Version.String(), i.AOF, i.AOFKnown, i.Cluster, err
}

// EncodeScore is encodeScore.
func EncodeScore(score int64) string { return encodeScore(score) }

// Mark puts a pop mark on member of queue on shard, held by a unit that will never
// commit, lapsing at deadline: a unit whose process died.
func Mark(ctx context.Context, s *Store, shard int, queue, member string, deadline time.Time) error {
	k := &s.keys[shard]
	mark := strconv.FormatInt(deadline.UnixMilli(), 10)
	for len(mark) < 13 {
		mark = "0" + mark
	}
	return s.client.Do(ctx, s.client.B().Hset().Key(k.marks(queue)).FieldValue().FieldValue(member, mark+"dead-unit").Build()).Error()
}

// LoadLibrary loads the function library on every primary.
func LoadLibrary(ctx context.Context, s *Store) error { return loadLibrary(ctx, s.client) }

// ExpireHeads makes every set of heads QueueHeads keeps in memory due for a read, as if
// headsTTL had passed since it was read.
func ExpireHeads(s *Store) { s.heads.expire() }

// expire makes every set due for a read, as if headsTTL had passed since it was read.
func (c *headsCache) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, hs := range c.sets {
		hs.at = time.Time{}
	}
}

// ExpireFullScan makes the next read of every set of heads a full one, as if
// fullScanEvery had passed.
func ExpireFullScan(s *Store) {
	s.heads.mu.Lock()
	defer s.heads.mu.Unlock()
	for _, hs := range s.heads.sets {
		hs.at, hs.fullAt = time.Time{}, time.Time{}
	}
}

// HintMembers returns the store's hint of non-empty queues, as "<queue>@<shard>".
func HintMembers(ctx context.Context, s *Store) ([]string, error) {
	ms, err := s.client.Do(ctx, s.client.B().Zrange().Key(hintKey(s.prefix)).Min("0").Max("-1").Build()).AsStrSlice()
	for i, m := range ms {
		name, shard, _ := parseHintMember(m, s.shards)
		ms[i] = name + "@" + strconv.Itoa(shard)
	}
	return ms, err
}

// DropHint removes queue of shard from the store's hint, as if the writer that filled it
// had died before adding it.
func DropHint(ctx context.Context, s *Store, shard int, queue string) error {
	return s.client.Do(ctx, s.client.B().Zrem().Key(hintKey(s.prefix)).Member(hintMember(queue, shard)).Build()).Error()
}

// ReadRoundTrips returns how many round trips tx, a unit of an ffvalkey store, made to
// read.
func ReadRoundTrips(u ffstore.Tx) int { return u.(*tx).rts }

// ViewRoundTrips returns how many round trips r, a View's reads on an ffvalkey store,
// made.
func ViewRoundTrips(r ffstore.ReadTx) int { return r.(readTx).t.rts }

// FnPop is the name of the library's pop function.
const FnPop = fnPop
