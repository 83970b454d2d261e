package ffvalkey_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestQueueHeadsHint checks the hint of non-empty queues that QueueHeads reads: a commit
// that fills a queue adds it; another process sees the head at once (its wake-up names
// the shard) even while the hint misses it; a read through the hint alone keeps the head
// of a queue it did not read, and the next full read finds it and repairs the hint; a
// read of a hinted queue that finds it empty drops it, a full read removes the entries of
// emptied queues, and filling one again adds it back.
func TestQueueHeadsHint(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		prefix := testdb.RedisPrefix(t)
		a := openStore(t, url, &ffvalkey.Options{KeyPrefix: prefix, Shards: 8})
		b := openStore(t, url, &ffvalkey.Options{KeyPrefix: prefix})
		ctx := t.Context()
		prefixes := []string{"e:l:"}
		heads := func(s *ffvalkey.Store) []ffstore.QueueHead {
			t.Helper()
			ffvalkey.ExpireHeads(s)
			h, err := s.QueueHeads(ctx, prefixes)
			require.NoError(t, err)
			return h
		}
		hint := func() []string {
			t.Helper()
			m, err := ffvalkey.HintMembers(ctx, a)
			require.NoError(t, err)
			return m
		}
		add := func(shard int, queue, member string) {
			t.Helper()
			require.NoError(t, a.Update(ctx, shard, func(tx ffstore.Tx) error { tx.QueueAdd(queue, member, 5); return nil }))
		}
		remove := func(shard int, queue, member string) {
			t.Helper()
			require.NoError(t, a.Update(ctx, shard, func(tx ffstore.Tx) error { tx.QueueRemove(queue, member); return nil }))
		}
		require.Empty(t, heads(b)) // b's first read is full
		// That read started b's subscription; until it is up, a's wake-ups miss b.
		changes := b.Changes(ctx)
		require.Eventually(t, func() bool {
			require.NoError(t, a.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("warm", []byte("x")); return nil }))
			select {
			case <-changes:
				return true
			case <-time.After(20 * time.Millisecond):
				return false
			}
		}, 5*time.Second, time.Millisecond)
		add(3, "e:l:x", "m1")
		add(3, "t:other", "m2") // not under the prefix
		require.ElementsMatch(t, []string{"e:l:x@3", "t:other@3"}, hint())

		// b learns of the head from a's wake-up, which names shard 3, even if the hint
		// lost it; a read through the hint alone does not read the queue, and keeps what b
		// knows of it.
		require.NoError(t, ffvalkey.DropHint(ctx, a, 3, "e:l:x"))
		require.Eventually(t, func() bool { return len(heads(b)) == 1 }, 5*time.Second, 10*time.Millisecond)
		require.Len(t, heads(b), 1, "a read through the hint alone keeps what it did not read")
		ffvalkey.ExpireFullScan(b)
		require.Equal(t, []ffstore.QueueHead{{Shard: 3, Queue: "e:l:x", Item: ffstore.QueueItem{Member: "m1", Score: 5}}}, heads(b))
		require.ElementsMatch(t, []string{"e:l:x@3", "t:other@3"}, hint(), "the full read repaired the hint")

		// An emptied queue stays in the hint until a full read removes it; filling it
		// again adds it back.
		remove(3, "e:l:x", "m1")
		require.ElementsMatch(t, []string{"e:l:x@3", "t:other@3"}, hint())
		require.Empty(t, heads(b))
		ffvalkey.ExpireFullScan(b)
		require.Empty(t, heads(b))
		require.Equal(t, []string{"t:other@3"}, hint())
		add(3, "e:l:x", "m3")
		require.ElementsMatch(t, []string{"e:l:x@3", "t:other@3"}, hint())
		require.Len(t, heads(b), 1)
	})
}

// TestQueueHeadsNULPrefixes asks for the heads of prefixes holding a NUL byte, which
// separates a queue's name from its shard in the hint and could have separated the
// prefixes of two lists in the cache's key: the queues whose names merely start the
// hint's entries, and the heads cached for another list, must not be in the answer.
func TestQueueHeadsNULPrefixes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openStore(t, testdb.SharedRedis(t).URL(0), &ffvalkey.Options{Shards: 1})
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		tx.QueueAdd("a", "m", 1)
		tx.QueueAdd("b", "m", 2)
		return nil
	}))
	heads := func(prefixes ...string) []ffstore.QueueHead {
		t.Helper()
		h, err := s.QueueHeads(ctx, prefixes)
		require.NoError(t, err)
		return h
	}
	require.Empty(t, heads("a\x00"), "a full read")
	ffvalkey.ExpireHeads(s)
	require.Empty(t, heads("a\x00"), "a read through the hint alone")
	require.Len(t, heads("a", "b"), 2)
	require.Empty(t, heads("a\x00b"), "not the heads cached for a and b")
}
