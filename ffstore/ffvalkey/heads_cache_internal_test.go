package ffvalkey

import (
	"context"
	"maps"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
)

// TestHeadsCacheKeepsWhatAReadDidNotCover: a commit of this process that fills an empty
// queue patches its head into the cache at once but adds the queue to the store's hint
// only after it returns. A read in between, on a shard it does not scan, finds the queue
// in neither, and must not drop the patched head: the timer loop would then sleep past a
// due timer, and a claim would miss new work, until the next full read.
func TestHeadsCacheKeepsWhatAReadDidNotCover(t *testing.T) {
	t.Parallel()
	const shards = 4
	prefixes := []string{"t"}
	var c headsCache
	emptyRead := func() headsRead {
		r := headsRead{found: make([]map[string]ffstore.QueueItem, shards), vers: make([]uint64, shards),
			scanned: make([]bool, shards), read: make([]map[string]bool, shards)}
		for i := range r.found {
			r.found[i] = map[string]ffstore.QueueItem{}
		}
		return r
	}
	heads := func(read func() headsRead) []ffstore.QueueHead {
		t.Helper()
		c.expire() // read again, whatever the TTL says
		hs, err := c.queueHeads(context.Background(), prefixes, shards,
			func(context.Context, []string, headsPlan) (headsRead, error) { return read(), nil })
		require.NoError(t, err)
		return hs
	}

	// A first read loads the set: shard 1's lease queue, found through the hint.
	lease := ffstore.QueueItem{Member: "a", Score: 10}
	got := heads(func() headsRead {
		r := emptyRead()
		r.scanned = []bool{true, true, true, true}
		r.found[1]["t-lease"] = lease
		r.vers[1] = 3
		return r
	})
	require.Equal(t, []ffstore.QueueHead{{Shard: 1, Queue: "t-lease", Item: lease}}, got)

	// A commit (number 5) fills shard 1's delayed queue: patched, not yet in the hint.
	delayed := ffstore.QueueItem{Member: "b", Score: 20}
	c.patch(1, 5, []string{"t-delayed"}, []*ffstore.QueueItem{&delayed})

	// A read through the hint alone: it reads shard 1's lease queue (the hint names it),
	// at a later commit number, and knows nothing of the delayed queue.
	got = heads(func() headsRead {
		r := emptyRead()
		r.read[1] = map[string]bool{"t-lease": true}
		r.found[1]["t-lease"] = lease
		r.vers[1] = 6
		return r
	})
	require.ElementsMatch(t, []ffstore.QueueHead{
		{Shard: 1, Queue: "t-lease", Item: lease},
		{Shard: 1, Queue: "t-delayed", Item: delayed},
	}, got, "the patched head of a queue the read did not cover is kept")

	// A read that covers the delayed queue and finds it empty drops it, as does a read
	// of the lease queue that finds it gone.
	got = heads(func() headsRead {
		r := emptyRead()
		r.read[1] = map[string]bool{"t-lease": true, "t-delayed": true}
		r.vers[1] = 7
		return r
	})
	require.Empty(t, got)

	// A full read replaces everything.
	c.patch(2, 8, []string{"t-delayed"}, []*ffstore.QueueItem{&delayed})
	got = heads(func() headsRead {
		r := emptyRead()
		r.scanned = []bool{true, true, true, true}
		r.vers[2] = 9
		return r
	})
	require.Empty(t, got, "a scanned shard's directory covers every queue")
}

// TestHeadsCacheForgetsCommitNumbersOnInvalidate: a server that lost its data numbers its
// commits from 1 again. The first read after the library is reloaded runs while a commit
// of this process fills a queue the cache knew from before, at a much higher number. The
// commit's patch must not be dropped as late, or the read, which found the queue empty
// before the commit, leaves the cache without the head a worker woken by the commit's
// event is about to ask for.
func TestHeadsCacheForgetsCommitNumbersOnInvalidate(t *testing.T) {
	t.Parallel()
	const shards = 2
	prefixes := []string{"t"}
	var c headsCache
	fullRead := func(ver uint64, found map[string]ffstore.QueueItem) headsRead {
		r := headsRead{found: make([]map[string]ffstore.QueueItem, shards), vers: make([]uint64, shards),
			scanned: []bool{true, true}, read: make([]map[string]bool, shards)}
		for i := range r.found {
			r.found[i] = map[string]ffstore.QueueItem{}
		}
		maps.Copy(r.found[1], found)
		r.vers[1] = ver
		return r
	}
	read := func(read func() headsRead) []ffstore.QueueHead {
		t.Helper()
		hs, err := c.queueHeads(context.Background(), prefixes, shards,
			func(context.Context, []string, headsPlan) (headsRead, error) { return read(), nil })
		require.NoError(t, err)
		return hs
	}

	old := ffstore.QueueItem{Member: "old", Score: 1}
	read(func() headsRead { return fullRead(500, map[string]ffstore.QueueItem{"t-q": old}) })

	c.invalidate() // the library was loaded again: the server may have lost its data

	fresh := ffstore.QueueItem{Member: "new", Score: 2}
	read(func() headsRead {
		r := fullRead(0, nil) // the directory, read before the commit
		c.patch(1, 1, []string{"t-q"}, []*ffstore.QueueItem{&fresh})
		return r
	})
	got := read(func() headsRead {
		t.Fatal("the set was just read: it is served from memory")
		return headsRead{}
	})
	require.Equal(t, []ffstore.QueueHead{{Shard: 1, Queue: "t-q", Item: fresh}}, got)
}
