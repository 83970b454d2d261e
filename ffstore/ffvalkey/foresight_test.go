package ffvalkey_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestPopDueFetchForesees checks how a pop reads the records of the members it takes: a
// pop whose queue this process popped last, with nothing between, takes the members that
// pop saw next, with their records read beside its commit, in no round trip of its own;
// the commit refuses such a pop as a conflict if those members are no longer the head of
// the queue, and the pops of the queue then read the records of the members they expect
// in their own round trip, and the others' in one more.
func TestPopDueFetchForesees(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s, other := twoProcesses(t, url)
		ctx := t.Context()
		const q = "ready"
		// Another process writes, so that s remembers no record of its own writing.
		ids := seedQueue(t, other, q, 8, "x", "p")
		// pop pops up to two and returns what the unit read and in how many round trips.
		pop := func() (members []string, values []string, trips int, err error) {
			t.Helper()
			err = s.Update(ctx, 1, func(tx ffstore.Tx) error {
				members, values = nil, nil
				items, err := tx.(ffstore.PopFetcher).PopDueFetch(q, ffstore.MaxScore, 2, "x", "p")
				if err != nil {
					return err
				}
				trips = ffvalkey.ReadRoundTrips(tx)
				for _, it := range items {
					members = append(members, it.Member)
					for _, k := range []string{"x:", "p:"} {
						v, _, err := tx.Get(k + it.Member)
						if err != nil {
							return err
						}
						values = append(values, string(v))
					}
				}
				require.Equal(t, trips, ffvalkey.ReadRoundTrips(tx), "the records were read with the pop")
				return nil
			})
			return members, values, trips, err
		}

		members, values, trips, err := pop()
		require.NoError(t, err)
		require.Equal(t, ids[:2], members)
		require.Equal(t, []string{"x0", "p0", "x1", "p1"}, values)
		require.Equal(t, 2, trips, "nothing to guess yet: the pop, then the records")

		members, values, trips, err = pop()
		require.NoError(t, err)
		require.Equal(t, ids[2:4], members)
		require.Equal(t, []string{"x2", "p2", "x3", "p3"}, values)
		require.Equal(t, 0, trips, "foreseen: the last commit read the records")

		// Another process changes one foreseen record and takes another foreseen member away.
		require.NoError(t, other.Update(ctx, 1, func(tx ffstore.Tx) error {
			tx.Put("x:"+ids[4], []byte("x4 changed"))
			tx.QueueRemove(q, ids[5])
			return nil
		}))
		_, _, _, err = pop()
		require.ErrorIs(t, err, fftype.ErrStoreConflict, "the foreseen members are no longer the head")

		members, values, trips, err = pop()
		require.NoError(t, err)
		require.Equal(t, []string{ids[4], ids[6]}, members)
		require.Equal(t, []string{"x4 changed", "p4", "x6", "p6"}, values)
		require.Equal(t, 2, trips, "after a failed foresight, a pop: a member it did not expect costs one more round trip")

		members, values, trips, err = pop()
		require.NoError(t, err)
		require.Equal(t, ids[7:], members)
		require.Equal(t, []string{"x7", "p7"}, values)
		require.Equal(t, 1, trips, "guessed right: one round trip")
	})
}

// TestForeseenPopsYieldToPops checks that items another unit has popped and not yet
// committed are not taken by foresight: the foreseen pop fails as a conflict, and the pop
// that runs again takes the items after them.
func TestForeseenPopsYieldToPops(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s, other := twoProcesses(t, url)
		ctx := t.Context()
		const q = "ready"
		ids := seedQueue(t, other, q, 6, "x")
		pop := func(st *ffvalkey.Store, inside func() error) (members []string, trips int, err error) {
			err = st.Update(ctx, 1, func(tx ffstore.Tx) error {
				items, err := tx.(ffstore.PopFetcher).PopDueFetch(q, ffstore.MaxScore, 2, "x")
				if err != nil {
					return err
				}
				members, trips = nil, ffvalkey.ReadRoundTrips(tx)
				for _, it := range items {
					members = append(members, it.Member)
				}
				if inside != nil {
					return inside()
				}
				return nil
			})
			return members, trips, err
		}
		members, _, err := pop(s, nil)
		require.NoError(t, err)
		require.Equal(t, ids[:2], members)

		var foreseen []string
		var foreErr error
		members, _, err = pop(other, func() error {
			var trips int
			foreseen, trips, foreErr = pop(s, nil)
			require.Zero(t, trips, "taken by foresight")
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, ids[2:4], members, "the other unit popped them first")
		require.Equal(t, ids[2:4], foreseen)
		require.ErrorIs(t, foreErr, fftype.ErrStoreConflict, "they were the other unit's")

		members, _, err = pop(s, nil)
		require.NoError(t, err)
		require.Equal(t, ids[4:], members, "no item twice")
	})
}

// twoProcesses opens a store of two shards and, on its key prefix, another one, as
// another process would.
func twoProcesses(t *testing.T, url string) (s, other *ffvalkey.Store) {
	t.Helper()
	s = openStore(t, url, &ffvalkey.Options{KeyPrefix: testdb.RedisPrefix(t), Shards: 2})
	return s, openStore(t, url, &ffvalkey.Options{KeyPrefix: s.KeyPrefix(), Shards: 2})
}

// seedQueue has st put n members on queue q of shard 1, the i-th with score i and a
// record "<kind>:<member>" reading kind+i for each of kinds, and returns the members.
func seedQueue(t *testing.T, st *ffvalkey.Store, q string, n int, kinds ...string) []string {
	t.Helper()
	var ids []string
	require.NoError(t, st.Update(t.Context(), 1, func(tx ffstore.Tx) error {
		ids = nil
		for i := range n {
			id := fftype.NewExecutionID(1).String()
			ids = append(ids, id)
			for _, k := range kinds {
				tx.Put(k+":"+id, []byte(k+strconv.Itoa(i)))
			}
			tx.QueueAdd(q, id, int64(i))
		}
		return nil
	}))
	return ids
}
