package ffvalkey

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// openTwoShards opens a store of two shards on url under prefix (a new one if empty).
func openTwoShards(t *testing.T, url, prefix string) *Store {
	t.Helper()
	if prefix == "" {
		prefix = testdb.RedisPrefix(t)
	}
	s, err := Open(t.Context(), url, &Options{Shards: 2, KeyPrefix: prefix})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// twoStores opens two stores of two shards on one new key prefix, as two processes would.
func twoStores(t *testing.T, url string) (*Store, *Store) {
	t.Helper()
	s := openTwoShards(t, url, "")
	return s, openTwoShards(t, url, s.prefix)
}

// fillQueue adds n items to queue q of shard 1, with records "x:<member>", written by
// another Store (so that s remembers none of them).
func fillQueue(t *testing.T, url, prefix, q string, n int) []string {
	t.Helper()
	other := openTwoShards(t, url, prefix)
	var ids []string
	require.NoError(t, other.Update(t.Context(), 1, func(tx ffstore.Tx) error {
		for i := range n {
			id := fmt.Sprintf("m%03d", i)
			ids = append(ids, id)
			tx.Put("x:"+id, []byte("x"+strconv.Itoa(i)))
			tx.QueueAdd(q, id, int64(i))
		}
		return nil
	}))
	return ids
}

// popThenRange runs a unit on shard 1 of s that pops up to n items of q, reading their
// records "x:<member>", and then reads up to m items of q by Range (none if m is 0). It
// returns the items of each and the round trips the pop made to read.
func popThenRange(t *testing.T, s *Store, q string, n, m int) (popped, next []ffstore.QueueItem, trips int) {
	t.Helper()
	require.NoError(t, s.Update(t.Context(), 1, func(u ffstore.Tx) error {
		var err error
		if popped, err = u.(ffstore.PopFetcher).PopDueFetch(q, ffstore.MaxScore, n, "x"); err != nil {
			return err
		}
		trips = u.(*tx).rts
		if m > 0 {
			next, err = u.Range(q, nil, ffstore.MaxScore, m)
		}
		return err
	}))
	return popped, next, trips
}

// TestRangeLeavesOutForeseenItems checks that a Range after a foreseen pop leaves out
// the items the unit took, also once a chain of foreseen pops has used up what the last
// real pop saw ahead and the Range goes to the server, where those items carry no mark of
// the unit.
func TestRangeLeavesOutForeseenItems(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s := openTwoShards(t, url, "")
		const q = "ready"
		fillQueue(t, url, s.prefix, q, 40)
		for i := range 20 {
			popped, next, _ := popThenRange(t, s, q, 1, 1)
			require.Len(t, popped, 1)
			if len(next) > 0 {
				require.NotEqual(t, popped[0].Member, next[0].Member,
					"unit %d: Range returned the item the unit itself took (by foresight)", i)
			}
		}
	})
}

// TestForeseenPopTakesWhatAPopWould checks that a pop takes as many items as are due,
// up to n, when the last pop saw fewer ahead and more came since: foresight takes only
// n items it saw, and the Range after the pop sees the rest.
func TestForeseenPopTakesWhatAPopWould(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s, other := twoStores(t, url)
		const q = "ready"
		ctx := t.Context()
		fillQueue(t, url, s.prefix, q, 3)
		popped, _, _ := popThenRange(t, s, q, 1, 0)
		require.Len(t, popped, 1)
		// Another process adds 20 due items (scores after the ones left).
		require.NoError(t, other.Update(ctx, 1, func(u ffstore.Tx) error {
			for i := range 20 {
				id := fmt.Sprintf("n%03d", i)
				u.Put("x:"+id, []byte("n"))
				u.QueueAdd(q, id, int64(100+i))
			}
			return nil
		}))
		popped, next, _ := popThenRange(t, s, q, 5, 1)
		require.Len(t, popped, 5, "a pop takes 5 of the 22 due items")
		require.NotEmpty(t, next, "the queue still holds due items")
	})
}

// TestForesightEntriesStaySmall checks that a large claim's pop does not read, and
// foresight does not keep, thousands of items ahead, and that what it keeps is counted.
func TestForesightEntriesStaySmall(t *testing.T) {
	t.Parallel()
	url := testdb.SharedRedis(t).URL(0)
	s := openTwoShards(t, url, "")
	const q = "big"
	ctx := t.Context()
	other := openTwoShards(t, url, s.prefix)
	for b := range 10 {
		require.NoError(t, other.Update(ctx, 1, func(u ffstore.Tx) error {
			for i := range 1000 {
				u.QueueAdd(q, fmt.Sprintf("m%05d", b*1000+i), int64(b*1000+i))
			}
			return nil
		}))
	}
	require.NoError(t, s.Update(ctx, 1, func(u ffstore.Tx) error {
		_, err := u.(ffstore.PopFetcher).PopDueFetch(q, ffstore.MaxScore, 1000, "x")
		return err
	}))
	s.foresight.mu.Lock()
	defer s.foresight.mu.Unlock()
	e := s.foresight.m.m[foreseenQueue{1, q}].v
	require.LessOrEqual(t, len(e.items), lookahead+foreseeMax)
	require.Equal(t, e.size(), s.foresight.m.bytes, "its items are counted")
}

// TestClaimsOfTwoProcessesTakeEachItemOnce has two stores on one prefix claim a queue
// with 16 claimers popping 1 to 3 items, most by foresight, retrying conflicts, and
// checks that every item is taken exactly once.
func TestClaimsOfTwoProcessesTakeEachItemOnce(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		a, b := twoStores(t, url)
		const q = "ready"
		ctx := t.Context()
		ids := fillQueue(t, url, a.prefix, q, 600)
		var mu sync.Mutex
		taken := map[string]int{}
		var wg sync.WaitGroup
		for w := range 16 {
			st := a
			if w%2 == 1 {
				st = b
			}
			wg.Go(func() {
				for {
					var got []ffstore.QueueItem
					err := st.Update(ctx, 1, func(u ffstore.Tx) error {
						var err error
						got, err = u.(ffstore.PopFetcher).PopDueFetch(q, ffstore.MaxScore, 1+w%3, "x")
						for _, it := range got {
							if _, _, err := u.Get("x:" + it.Member); err != nil {
								return err
							}
							u.Put("x:"+it.Member, []byte("done"))
						}
						return err
					})
					if errors.Is(err, fftype.ErrStoreConflict) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, it := range got {
						taken[it.Member]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, id := range ids {
			require.Equal(t, 1, taken[id], id)
		}
	})
}

// TestRangeAfterForeseenPopReadsTheQueue checks that a Range after a foreseen pop reads
// the queue as committed, not what an earlier unit's pop saw: here another process
// removed an item between the two.
func TestRangeAfterForeseenPopReadsTheQueue(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s, other := twoStores(t, url)
		const q = "ready"
		ctx := t.Context()
		ids := fillQueue(t, url, s.prefix, q, 10)
		popThenRange(t, s, q, 1, 0)
		// Another process removes the item after the next one, and commits.
		require.NoError(t, other.Update(ctx, 1, func(u ffstore.Tx) error {
			u.QueueRemove(q, ids[2])
			u.Delete("x:" + ids[2])
			return nil
		}))
		popped, next, trips := popThenRange(t, s, q, 1, 1)
		require.Equal(t, ids[1], popped[0].Member)
		require.Equal(t, 0, trips, "foreseen")
		require.NotEqual(t, ids[2], next[0].Member, "Range returned an item removed before the unit began")
	})
}

// TestRangePagesAfterForeseenPop checks Range pages after a foreseen pop, with after and
// a bound on the score: they hold what the queue holds, less the unit's items.
func TestRangePagesAfterForeseenPop(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s := openTwoShards(t, url, "")
		const q = "ready"
		ctx := t.Context()
		ids := fillQueue(t, url, s.prefix, q, 30)
		require.NoError(t, s.Update(ctx, 1, func(u ffstore.Tx) error {
			_, err := u.(ffstore.PopFetcher).PopDueFetch(q, ffstore.MaxScore, 2, "x")
			return err
		}))
		require.NoError(t, s.Update(ctx, 1, func(u ffstore.Tx) error {
			popped, err := u.(ffstore.PopFetcher).PopDueFetch(q, ffstore.MaxScore, 2, "x")
			if err != nil {
				return err
			}
			require.Equal(t, ids[2], popped[0].Member)
			require.Equal(t, 0, u.(*tx).rts)
			for _, maxScore := range []int64{ffstore.MaxScore, 20, 3, 1} {
				for _, page := range []int{1, 3, 7, 40} {
					var got []string
					var after *ffstore.QueueItem
					for {
						items, err := u.Range(q, after, maxScore, page)
						if err != nil {
							return err
						}
						for _, it := range items {
							got = append(got, it.Member)
						}
						if len(items) < page {
							break
						}
						after = &items[len(items)-1]
					}
					var want []string
					for i := 4; i < 30 && int64(i) <= maxScore; i++ {
						want = append(want, ids[i])
					}
					require.Equal(t, want, got, fmt.Sprintf("maxScore %d page %d", maxScore, page))
				}
			}
			// after pointing at a foreseen item, and before it.
			items, err := u.Range(q, &popped[0], ffstore.MaxScore, 2)
			if err != nil {
				return err
			}
			require.Equal(t, []ffstore.QueueItem{{Member: ids[4], Score: 4}, {Member: ids[5], Score: 5}}, items)
			items, err = u.Range(q, &ffstore.QueueItem{Member: ids[0], Score: 0}, ffstore.MaxScore, 1)
			if err != nil {
				return err
			}
			require.Equal(t, ids[4], items[0].Member)
			return nil
		}))
	})
}

// TestRangeOfAnyLengthAfterForeseenPop checks that a Range of any length after a
// foreseen pop returns what is left.
func TestRangeOfAnyLengthAfterForeseenPop(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s := openTwoShards(t, url, "")
		const q = "ready"
		fillQueue(t, url, s.prefix, q, 10)
		popThenRange(t, s, q, 1, 0)
		_, rest, trips := popThenRange(t, s, q, 1, math.MaxInt)
		require.Zero(t, trips, "foreseen")
		require.Len(t, rest, 8, "Range(n=MaxInt) after a foreseen pop returns the 8 items left")
	})
}

// TestPopAgainAfterForeseenPop checks that a unit that pops a queue again after a
// foreseen pop gets the items after those it foresaw, without a conflict when nothing
// else changed.
func TestPopAgainAfterForeseenPop(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s := openTwoShards(t, url, "")
		const q = "ready"
		ids := fillQueue(t, url, s.prefix, q, 60)
		ctx := t.Context()
		conflicts := 0
		var taken []string
		for range 10 {
			err := s.Update(ctx, 1, func(u ffstore.Tx) error {
				pf := u.(ffstore.PopFetcher)
				first, err := pf.PopDueFetch(q, ffstore.MaxScore, 1, "x")
				if err != nil {
					return err
				}
				second, err := pf.PopDueFetch(q, ffstore.MaxScore, 1, "x")
				if err != nil {
					return err
				}
				for _, it := range append(first, second...) {
					taken = append(taken, it.Member)
				}
				return nil
			})
			if errors.Is(err, fftype.ErrStoreConflict) {
				conflicts++
				continue
			}
			require.NoError(t, err)
		}
		require.Zero(t, conflicts, "no other unit ran: conflicts %d of 10 units", conflicts)
		require.Equal(t, ids[:20], taken, "each item once, in order")
	})
}
