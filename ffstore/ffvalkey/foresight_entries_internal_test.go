package ffvalkey

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
)

// seenWithRecords is what a commit that read the record "x:<member>" of each of members
// ahead would leave, read at read.
func seenWithRecords(read time.Time, value []byte, members ...string) *foreseen {
	f := &foreseen{kinds: []string{"x"}, records: map[string]*readEntry{}, read: read}
	for i, m := range members {
		f.items = append(f.items, cachedItem{item: ffstore.QueueItem{Member: m, Score: int64(i)}, enc: m})
		f.records["x:"+m] = &readEntry{version: versionString(1), value: value}
	}
	return f
}

func TestForesightTakesOnlyFreshRecords(t *testing.T) {
	t.Parallel()
	keys := []string{"x:a"}
	_, ok := seenWithRecords(time.Now(), nil, "a").recordsOf(keys, []string{"x"})
	require.True(t, ok)
	_, ok = seenWithRecords(time.Now().Add(-2*foresightFresh), nil, "a").recordsOf(keys, []string{"x"})
	require.False(t, ok, "read too long ago: checked at commit much later than a unit's own reads")
	_, ok = seenWithRecords(time.Now(), nil, "a").recordsOf(keys, []string{"y"})
	require.False(t, ok, "other kinds")
}

func TestForesightBounded(t *testing.T) {
	t.Parallel()
	var s foresight
	value := bytes.Repeat([]byte("v"), 4<<10)
	for i := range 1000 {
		s.saw(0, "q"+strconv.Itoa(i), seenWithRecords(time.Now(), value, "a", "b"))
		require.LessOrEqual(t, s.m.bytes, foresightMaxBytes)
	}
	first, _ := s.take(0, "q0")
	require.Nil(t, first, "the oldest go first")
	last, _ := s.take(0, "q999")
	require.NotNil(t, last.records)

	// Entries replaced, and taken: what they held no longer counts.
	for range 3 {
		s.saw(0, "q998", seenWithRecords(time.Now(), value, "a"))
	}
	for i := range 1000 {
		s.take(0, "q"+strconv.Itoa(i))
	}
	require.Zero(t, s.m.bytes)
	require.Empty(t, s.m.m)

	// Items count, records or not: many queues' items alone stay within the bound.
	many := make([]string, 100)
	for i := range many {
		many[i] = "m" + strconv.Itoa(i)
	}
	for i := range 50 * foresightMaxQueues {
		q := "q" + strconv.Itoa(i)
		s.saw(0, q, &foreseen{items: seenWithRecords(time.Now(), nil, many...).items})
		s.asked(0, q, 1)
		s.failed(0, q)
		require.LessOrEqual(t, s.m.bytes, foresightMaxBytes)
		require.LessOrEqual(t, len(s.wants), foresightMaxQueues)
		require.LessOrEqual(t, len(s.cold), foresightMaxQueues)
		require.LessOrEqual(t, len(s.m.order), 2*len(s.m.m)+64)
	}
}

// TestForesightKeepsOthersBesideAnOversizedEntry checks that an entry whose records alone
// would pass the bound (a claim whose look-ahead holds a large payload) keeps none, and
// does not push out the other queues' entries.
func TestForesightKeepsOthersBesideAnOversizedEntry(t *testing.T) {
	t.Parallel()
	var s foresight
	for i := range 10 {
		s.saw(0, "small"+strconv.Itoa(i), seenWithRecords(time.Now(), []byte("v"), "a"))
	}
	big := bytes.Repeat([]byte("p"), foresightMaxBytes+1)
	s.saw(0, "big", seenWithRecords(time.Now(), big, "a"))
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Nil(t, s.m.m[foreseenQueue{0, "big"}].v.records)
	require.Len(t, s.m.m, 11, "other queues' entries stay; the oversized one keeps no records")
}

// TestForesightEvictsTheOldestEntries checks that, past the bound, the oldest entry goes
// first, not the newest entry of a queue seen again since its first listing.
func TestForesightEvictsTheOldestEntries(t *testing.T) {
	t.Parallel()
	var s foresight
	value := bytes.Repeat([]byte("v"), 1<<20) // ~1 MiB per entry
	s.saw(0, "hot", seenWithRecords(time.Now(), value, "a"))
	for i := range 6 {
		s.saw(0, "cold"+strconv.Itoa(i), seenWithRecords(time.Now(), value, "a"))
	}
	s.saw(0, "hot", seenWithRecords(time.Now(), value, "a")) // seen again: the newest entry
	s.saw(0, "new", seenWithRecords(time.Now(), value, "a")) // passes 8 MiB: one must go
	s.mu.Lock()
	defer s.mu.Unlock()
	_, hot := s.m.m[foreseenQueue{0, "hot"}]
	_, cold0 := s.m.m[foreseenQueue{0, "cold0"}]
	require.True(t, hot, "seen again: newer than cold0")
	require.False(t, cold0, "the oldest entry goes first")
}
