package ffvalkey

import (
	"slices"
	"sync"
	"time"
)

// foresight remembers, per shard and queue, what this process last saw of the queue
// after the items a unit popped from it: the items that came next, and sometimes their
// records. A claim's next pop most likely takes those items. With their records read
// beside the commit that popped the items before them, it takes them without a round
// trip of its own (a foreseen pop, see PopDueFetch), and the commit checks that they are
// still the queue's head; otherwise the pop reads their records in its own round trip.
// A wrong guess costs a round trip, or a conflict and a retry, never a wrong result.
//
// Records are taken only while fresh (foresightFresh), so that they are checked at
// commit within about the time a unit's own reads are. What foresight holds is bounded:
// past foresightMaxBytes of items and records the oldest entries are dropped, and the
// per-queue counts are forgotten past foresightMaxQueues queues.
type foresight struct {
	mu   sync.Mutex
	m    sizedMap[foreseenQueue, *foreseen] // sized by foreseen.size
	cold map[foreseenQueue]int              // pops of the queue left to make without foresight
	// wants holds, per queue, about the most items its recent pops asked for: each pop
	// raises it to its own n, or lowers it by one.
	wants map[foreseenQueue]int
}

// Bounds of foresight: how long records are taken, what entries may hold in all, and how
// many queues' counts (wants, cold) are kept.
const (
	foresightFresh     = time.Second
	foresightMaxBytes  = 8 << 20
	foresightMaxQueues = 4096
	foreseenOverhead   = 64 // per item and per record, besides their strings
)

type foreseenQueue struct {
	shard int
	queue string
}

// foreseen is what a unit saw of a queue after the items it took.
type foreseen struct {
	items []cachedItem // the queue's next items, in order
	// The records of some first items' members, under kinds, read once the unit that
	// took the items before them had committed; nil if none were read.
	kinds   []string
	records map[string]*readEntry
	read    time.Time // when the records were read
}

// size is what foresight counts for f.
func (f *foreseen) size() int {
	n := 0
	for _, c := range f.items {
		n += len(c.enc) + len(c.item.Member) + foreseenOverhead
	}
	for key, r := range f.records {
		n += len(key) + len(r.value) + foreseenOverhead
	}
	return n
}

// coldPops is how many pops of a queue forgo foresight after a foreseen pop of it failed:
// another process is likely taking the queue's head too.
const coldPops = 16

// members returns the members of up to n first items.
func (f *foreseen) members(n int) []string {
	if f == nil {
		return nil
	}
	return membersOf(f.items[:min(n, len(f.items))])
}

// membersOf returns the members of items.
func membersOf(items []cachedItem) []string {
	ms := make([]string, len(items))
	for i, c := range items {
		ms[i] = c.item.Member
	}
	return ms
}

// asked records that a pop of queue asked for n items, and returns about the most its
// recent pops asked for.
func (s *foresight) asked(shard int, queue string, n int) int {
	k := foreseenQueue{shard, queue}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wants == nil || len(s.wants) >= foresightMaxQueues {
		s.wants = map[foreseenQueue]int{}
	}
	w := max(n, s.wants[k]-1)
	s.wants[k] = w
	return w
}

// take removes and returns what was seen of queue, if anything, so that one unit at a
// time uses it. warm reports whether the queue may be popped by foresight.
func (s *foresight) take(shard int, queue string) (f *foreseen, warm bool) {
	k := foreseenQueue{shard, queue}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, _ = s.m.remove(k)
	if n := s.cold[k]; n > 0 {
		if n == 1 {
			delete(s.cold, k)
		} else {
			s.cold[k] = n - 1
		}
		return f, false
	}
	return f, true
}

// saw records what a unit saw of queue after the items it took, replacing what was seen
// of it before. The oldest entries are dropped once all hold more than foresightMaxBytes;
// an entry that would hold more than a quarter of that alone keeps no records.
func (s *foresight) saw(shard int, queue string, f *foreseen) {
	k := foreseenQueue{shard, queue}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m.m == nil {
		s.m = newSizedMap[foreseenQueue, *foreseen](foresightMaxBytes)
	}
	if len(f.items) == 0 {
		s.m.remove(k)
		return
	}
	size := f.size()
	if size > foresightMaxBytes/4 {
		f.records = nil
		size = f.size()
	}
	s.m.put(k, f, size)
}

// failed records that a foreseen pop of queue failed at commit.
func (s *foresight) failed(shard int, queue string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cold == nil || len(s.cold) >= foresightMaxQueues {
		s.cold = map[foreseenQueue]int{}
	}
	s.cold[foreseenQueue{shard, queue}] = coldPops
}

// due returns the first n items of f, if they are all due by maxScore. A pop of n due
// items whose first n visible items they still are (what the commit checks) takes just
// them; of fewer, f cannot tell for sure that no due item follows them.
func (f *foreseen) due(maxScore int64, n int) ([]cachedItem, bool) {
	if n <= 0 || len(f.items) < n || f.items[n-1].item.Score > maxScore {
		return nil, false
	}
	return f.items[:n], true
}

// recordsOf returns the records read of keys, or false if one of them was not read.
func (f *foreseen) recordsOf(keys []string, kinds []string) ([]*readEntry, bool) {
	if f.records == nil || !slices.Equal(f.kinds, kinds) || time.Since(f.read) > foresightFresh {
		return nil, false
	}
	out := make([]*readEntry, len(keys))
	for i, k := range keys {
		r, ok := f.records[k]
		if !ok {
			return nil, false
		}
		out[i] = r
	}
	return out, true
}
