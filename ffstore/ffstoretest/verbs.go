package ffstoretest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// maxConflictRetries bounds how often a helper retries a unit the store refused with a
// conflict, as the engine does.
const maxConflictRetries = 1000

// errBoom is what a unit returns to be rolled back.
var errBoom = errors.New("ffstoretest: boom") //nolint:gochecknoglobals // a sentinel, never changed

// exerciseVerbs checks every verb of ffstore.Store on its own, each subtest on a fresh store.
func exerciseVerbs(t *testing.T, newStore func(t *testing.T) ffstore.Store) {
	t.Parallel()

	type testBundle struct {
		ctx   context.Context
		store ffstore.Store
		first int // shard 0
		last  int // the last shard; equal to first when the store has one shard
	}

	setup := func(t *testing.T) *testBundle {
		t.Helper()
		s := newStore(t)
		require.GreaterOrEqual(t, s.Shards(), 1, "a store has at least one shard")
		require.LessOrEqual(t, s.Shards(), fftype.MaxShards)
		return &testBundle{ctx: t.Context(), store: s, first: 0, last: s.Shards() - 1}
	}

	t.Run("PutGetDelete", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := fftype.NewExecutionID(b.last)
		key := "execution:" + id.String()
		sub := "attempt:" + id.String() + "/0"

		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			tx.Put(key, []byte("v1"))
			tx.Put(sub, []byte("attempt"))
			tx.Put("local", []byte("shard-local"))
			tx.Put("empty", []byte{})
			return nil
		})
		requireRecord(t, b.store, b.last, key, "v1")
		requireRecord(t, b.store, b.last, sub, "attempt")
		requireRecord(t, b.store, b.last, "local", "shard-local")
		requireRecord(t, b.store, b.last, "empty", "") // an empty value exists
		requireNoRecord(t, b.store, b.last, "missing")

		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			tx.Put(key, []byte("v2"))
			return nil
		})
		requireRecord(t, b.store, b.last, key, "v2")

		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			tx.Delete(key)
			tx.Delete("empty")
			tx.Delete("missing") // not an error
			return nil
		})
		requireNoRecord(t, b.store, b.last, key)
		requireNoRecord(t, b.store, b.last, "empty")
		requireRecord(t, b.store, b.last, sub, "attempt")
		requireRecord(t, b.store, b.last, "local", "shard-local")
	})

	t.Run("ReadYourWrites", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		key := "execution:" + fftype.NewExecutionID(b.first).String()
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.Put("committed", []byte("old"))
			return nil
		})

		// Observations are made inside the unit and checked after it, so that a failed
		// check never unwinds through the store.
		type seen struct {
			value string
			ok    bool
		}
		var got []seen
		observe := func(tx ffstore.Tx, key string) error {
			v, ok, err := tx.Get(key)
			got = append(got, seen{value: string(v), ok: ok})
			return err
		}
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			got = nil
			steps := []func() error{
				func() error { return observe(tx, key) },
				func() error { tx.Put(key, []byte("a")); return observe(tx, key) },
				func() error { tx.Put(key, []byte("b")); return observe(tx, key) },
				func() error { tx.Delete(key); return observe(tx, key) },
				func() error { tx.Put(key, []byte("c")); return observe(tx, key) },
				func() error { return observe(tx, "committed") },
				func() error { tx.Delete("committed"); return observe(tx, "committed") },
				func() error { tx.Put("committed", []byte("new")); return observe(tx, "committed") },
			}
			for _, step := range steps {
				if err := step(); err != nil {
					return err
				}
			}
			return nil
		})
		require.Equal(t, []seen{{"", false}, {"a", true}, {"b", true}, {"", false}, {"c", true},
			{"old", true}, {"", false}, {"new", true}}, got)
		requireRecord(t, b.store, b.first, key, "c")
		requireRecord(t, b.store, b.first, "committed", "new")
	})

	t.Run("GetValueIsTheCallers", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.Put("fetched", []byte("stored"))
			tx.Put("got", []byte("stored"))
			return nil
		})
		// Values read both ways, kept past the unit, then changed by the caller, as a
		// worker may change the payload of its lease: the store must not see the change.
		var kept [][]byte
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			kept = nil
			if err := tx.Prefetch("fetched"); err != nil {
				return err
			}
			for _, k := range []string{"fetched", "got", "got"} {
				v, _, err := tx.Get(k)
				if err != nil {
					return err
				}
				kept = append(kept, v)
			}
			return nil
		})
		for _, v := range kept {
			require.Equal(t, "stored", string(v))
		}
		for _, v := range kept {
			copy(v, "CHANGED") // two Gets of one key may share a buffer
		}
		requireRecord(t, b.store, b.first, "fetched", "stored")
		requireRecord(t, b.store, b.first, "got", "stored")
		var again []string // read by a unit too: a store may cache for its units only
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			again = nil
			for _, k := range []string{"fetched", "got"} {
				v, _, err := tx.Get(k)
				if err != nil {
					return err
				}
				again = append(again, string(v))
			}
			return nil
		})
		require.Equal(t, []string{"stored", "stored"}, again)
		for _, v := range kept {
			require.Equal(t, "CHANGE", string(v), "the store does not reuse a buffer it handed out")
		}
	})

	t.Run("ShardsAreSeparate", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if b.first == b.last {
			t.Logf("store has one shard; nothing to separate")
			return
		}
		for _, shard := range []int{b.first, b.last} {
			mustUpdate(t, b.store, shard, func(tx ffstore.Tx) error {
				tx.Put("local", fmt.Appendf(nil, "shard %d", shard))
				tx.QueueAdd("q", fmt.Sprintf("m%d", shard), int64(shard))
				return nil
			})
		}
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.Put("only-first", []byte("x"))
			return nil
		})
		for _, shard := range []int{b.first, b.last} {
			requireRecord(t, b.store, shard, "local", fmt.Sprintf("shard %d", shard))
			require.Equal(t, []ffstore.QueueItem{{Member: fmt.Sprintf("m%d", shard), Score: int64(shard)}},
				queueItems(t, b.store, shard, "q"))
		}
		requireNoRecord(t, b.store, b.last, "only-first")
	})

	t.Run("UnitErrorWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		shard := b.last
		id := fftype.NewExecutionID(shard)
		key := "execution:" + id.String()
		mustUpdate(t, b.store, shard, func(tx ffstore.Tx) error {
			tx.Put("a", []byte("1"))
			tx.Put(key, []byte("2"))
			tx.QueueAdd("q:main", "x", 10)
			tx.QueueAdd("q:main", "y", 20)
			tx.QueueAdd("q:main", id.String(), 30)
			tx.QueueAdd("q:single", "only", 1)
			tx.AppendEvent(testEvent(id, "before"))
			return nil
		})
		wantQueue := queueItems(t, b.store, shard, "q:main")
		wantHeads := queueHeads(t, b.store, []string{"q:"})

		var popped, single []ffstore.QueueItem
		err := b.store.Update(b.ctx, shard, func(tx ffstore.Tx) error {
			var err error
			// Reads first: the engine never reads a queue after writing to it in a unit.
			if popped, err = tx.PopDue("q:main", ffstore.MaxScore, 1); err != nil {
				return err
			}
			if single, err = tx.PopDue("q:single", ffstore.MaxScore, 10); err != nil {
				return err
			}
			tx.Put("a", []byte("changed"))
			tx.Delete(key)
			tx.Put("c", []byte("new"))
			tx.QueueAdd("q:main", "w", 5)
			tx.QueueAdd("q:main", "y", 99)
			tx.QueueRemove("q:main", id.String())
			tx.QueueAdd("q:new", "n", 1)
			tx.AppendEvent(testEvent(id, "rolled back 1"))
			tx.AppendEvent(testEvent(id, "rolled back 2"))
			return errBoom
		})
		require.Same(t, errBoom, err, "Update returns fn's error unchanged")
		require.Equal(t, []ffstore.QueueItem{{Member: "x", Score: 10}}, popped)
		require.Equal(t, []ffstore.QueueItem{{Member: "only", Score: 1}}, single)

		requireRecord(t, b.store, shard, "a", "1")
		requireRecord(t, b.store, shard, key, "2")
		requireNoRecord(t, b.store, shard, "c")
		require.Equal(t, wantQueue, queueItems(t, b.store, shard, "q:main"))
		require.Equal(t, []ffstore.QueueItem{{Member: "only", Score: 1}}, queueItems(t, b.store, shard, "q:single"))
		require.Empty(t, queueItems(t, b.store, shard, "q:new"))
		require.ElementsMatch(t, wantHeads, queueHeads(t, b.store, []string{"q:"}))
		require.Len(t, allEvents(t, b.store, shard), 1)

		// The sequence has no hole where the rolled-back events would have been.
		mustUpdate(t, b.store, shard, func(tx ffstore.Tx) error {
			tx.AppendEvent(testEvent(id, "after"))
			return nil
		})
		events := allEvents(t, b.store, shard)
		require.Len(t, events, 2)
		require.Equal(t, uint64(2), events[1].Seq)
		require.JSONEq(t, `"after"`, string(events[1].Data))
	})

	t.Run("View", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("v"))
			tx.QueueAdd("q", "m", 3)
			return nil
		})
		var value []byte
		var ok bool
		var items []ffstore.QueueItem
		require.NoError(t, b.store.View(b.ctx, b.first, func(tx ffstore.ReadTx) error {
			if err := tx.Prefetch("k", "missing"); err != nil {
				return err
			}
			var err error
			if value, ok, err = tx.Get("k"); err != nil {
				return err
			}
			items, err = tx.Range("q", nil, ffstore.MaxScore, 10)
			return err
		}))
		require.True(t, ok)
		require.Equal(t, "v", string(value))
		require.Equal(t, []ffstore.QueueItem{{Member: "m", Score: 3}}, items)

		err := b.store.View(b.ctx, b.first, func(ffstore.ReadTx) error { return errBoom })
		require.Same(t, errBoom, err, "View returns fn's error unchanged")
	})

	t.Run("Prefetch", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := fftype.NewExecutionID(b.last)
		key := "execution:" + id.String()
		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			tx.Put("k1", []byte("1"))
			tx.Put(key, []byte("exec"))
			return nil
		})

		var got []string
		get := func(tx ffstore.ReadTx, key string) error {
			v, ok, err := tx.Get(key)
			if !ok {
				got = append(got, "<missing>")
			} else {
				got = append(got, string(v))
			}
			return err
		}
		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			got = nil
			steps := []func() error{
				func() error { return tx.Prefetch() },
				func() error { return tx.Prefetch("k1", "missing", key, "k1") },
				func() error { return get(tx, "k1") },
				func() error { return get(tx, "missing") },
				func() error { return get(tx, key) },
				// A prefetch after a write must not hide the unit's own writes.
				func() error { tx.Put("k2", []byte("2")); tx.Delete("k1"); return tx.Prefetch("k2", "k1") },
				func() error { return get(tx, "k2") },
				func() error { return get(tx, "k1") },
				// Get works for keys never prefetched.
				func() error { return get(tx, "never-prefetched") },
			}
			for _, step := range steps {
				if err := step(); err != nil {
					return err
				}
			}
			return nil
		})
		require.Equal(t, []string{"1", "<missing>", "exec", "2", "<missing>", "<missing>"}, got)

		got = nil
		require.NoError(t, b.store.View(b.ctx, b.last, func(tx ffstore.ReadTx) error {
			if err := tx.Prefetch("k1", "k2", key); err != nil {
				return err
			}
			for _, k := range []string{"k1", "k2", key} {
				if err := get(tx, k); err != nil {
					return err
				}
			}
			return nil
		}))
		require.Equal(t, []string{"<missing>", "2", "exec"}, got)
	})

	t.Run("Range", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const q = "ready:default/lane"
		// A score beyond 2^53 catches stores that keep scores as float64.
		const huge = 1<<62 + 1
		want := []ffstore.QueueItem{
			qi("neg", -7), qi("c", 1), qi("a", 2), qi("b", 2), qi("d", 3), qi("e", 5), qi("f", 5), qi("g", 8),
			qi("h", huge), qi("i", huge+1),
		}
		addItems(t, b.store, b.first, q, want)
		require.Equal(t, want, queueItems(t, b.store, b.first, q))

		rng := func(after *ffstore.QueueItem, maxScore int64, n int) []ffstore.QueueItem {
			t.Helper()
			var items []ffstore.QueueItem
			require.NoError(t, b.store.View(b.ctx, b.first, func(tx ffstore.ReadTx) error {
				var err error
				items, err = tx.Range(q, after, maxScore, n)
				return err
			}))
			return items
		}
		item := func(member string, score int64) *ffstore.QueueItem {
			return &ffstore.QueueItem{Member: member, Score: score}
		}

		require.Equal(t, want[:8], rng(nil, 8, 100), "maxScore is inclusive")
		require.Equal(t, want[:7], rng(nil, 7, 100))
		require.Equal(t, want[:5], rng(nil, 4, 100))
		require.Equal(t, want[:1], rng(nil, 0, 100))
		require.Empty(t, rng(nil, -8, 100))
		require.Equal(t, want[:9], rng(nil, huge, 100))
		require.Equal(t, want[:3], rng(nil, ffstore.MaxScore, 3))
		require.Equal(t, want[:1], rng(nil, ffstore.MaxScore, 1))
		require.Empty(t, rng(nil, ffstore.MaxScore, 0), "n <= 0 returns nothing")
		require.Empty(t, rng(nil, ffstore.MaxScore, -1), "n <= 0 returns nothing")

		require.Equal(t, want[4:6], rng(item("b", 2), ffstore.MaxScore, 2), "after is exclusive")
		require.Equal(t, want[3:6], rng(item("a", 2), ffstore.MaxScore, 3), "ties order by member")
		require.Equal(t, want[4:], rng(item("bb", 2), ffstore.MaxScore, 100), "after need not be in the queue")
		require.Equal(t, want[5:], rng(item("", 5), ffstore.MaxScore, 100))
		require.Equal(t, want[1:], rng(item("zzz", -7), ffstore.MaxScore, 100))
		require.Equal(t, want[5:7], rng(item("d", 3), 5, 100))
		require.Empty(t, rng(item("i", huge+1), ffstore.MaxScore, 100))
		require.Empty(t, rng(item("a", 2), 1, 100), "nothing after the pivot is due")

		for _, maxScore := range []int64{ffstore.MaxScore, 5} {
			for _, pageSize := range []int{1, 2, 3} {
				var paged []ffstore.QueueItem
				var after *ffstore.QueueItem
				for {
					page := rng(after, maxScore, pageSize)
					require.LessOrEqual(t, len(page), pageSize)
					if len(page) == 0 {
						break
					}
					paged = append(paged, page...)
					after = &page[len(page)-1]
				}
				require.Equal(t, rng(nil, maxScore, 100), paged, "pages of %d up to %d", pageSize, maxScore)
			}
		}

		var missing []ffstore.QueueItem
		require.NoError(t, b.store.View(b.ctx, b.first, func(tx ffstore.ReadTx) error {
			var err error
			missing, err = tx.Range("no-such-queue", nil, ffstore.MaxScore, 10)
			return err
		}))
		require.Empty(t, missing)
	})

	t.Run("RangeAfterPopDue", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		items := []ffstore.QueueItem{qi("a", 1), qi("b", 2), qi("c", 3), qi("d", 4)}
		addItems(t, b.store, b.last, "q", items)

		var popped, ranged, again []ffstore.QueueItem
		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			var err error
			if popped, err = tx.PopDue("q", 2, 10); err != nil {
				return err
			}
			if ranged, err = tx.Range("q", nil, ffstore.MaxScore, 10); err != nil {
				return err
			}
			again, err = tx.PopDue("q", 2, 10)
			return err
		})
		require.Equal(t, items[:2], popped)
		require.Equal(t, items[2:], ranged, "a unit's Range leaves out the items it popped")
		require.Empty(t, again, "a unit never pops an item twice")
		require.Equal(t, items[2:], queueItems(t, b.store, b.last, "q"))
	})

	t.Run("PopDue", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const q = "delayed"
		ids := []string{fftype.NewExecutionID(b.first).String(), fftype.NewExecutionID(b.first).String()}
		items := []ffstore.QueueItem{
			qi("neg", -7), qi("c", 1), qi("a", 2), qi("b", 2), qi("d", 3), qi("e", 5), qi("f", 5), qi("g", 8),
			qi(ids[0], 9), qi(ids[1], 9),
		}
		slices.SortFunc(items, compareItems)
		addItems(t, b.store, b.first, q, items)

		pop := func(maxScore int64, n int) []ffstore.QueueItem {
			t.Helper()
			var got []ffstore.QueueItem
			mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
				var err error
				got, err = tx.PopDue(q, maxScore, n)
				return err
			})
			return got
		}

		require.Empty(t, pop(-8, 10), "nothing is due")
		require.Empty(t, pop(ffstore.MaxScore, 0), "n <= 0 pops nothing")
		require.Empty(t, pop(ffstore.MaxScore, -1), "n <= 0 pops nothing")
		require.Equal(t, items, queueItems(t, b.store, b.first, q))

		require.Equal(t, items[:4], pop(2, 10), "maxScore is inclusive; ties order by member")
		require.Equal(t, items[4:], queueItems(t, b.store, b.first, q), "popped items are gone")
		require.Equal(t, items[4:5], pop(ffstore.MaxScore, 1))
		require.Equal(t, items[5:], queueItems(t, b.store, b.first, q))

		var first, second []ffstore.QueueItem
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			var err error
			if first, err = tx.PopDue(q, ffstore.MaxScore, 1); err != nil {
				return err
			}
			second, err = tx.PopDue(q, ffstore.MaxScore, 1)
			return err
		})
		require.Equal(t, items[5:6], first)
		require.Equal(t, items[6:7], second)

		// A unit that does not commit leaves its popped items in the queue.
		var rolledBack []ffstore.QueueItem
		err := b.store.Update(b.ctx, b.first, func(tx ffstore.Tx) error {
			var err error
			if rolledBack, err = tx.PopDue(q, ffstore.MaxScore, 2); err != nil {
				return err
			}
			return errBoom
		})
		require.Same(t, errBoom, err)
		require.Equal(t, items[7:9], rolledBack)
		require.Equal(t, items[7:], queueItems(t, b.store, b.first, q))

		require.Equal(t, items[7:], pop(ffstore.MaxScore, 100))
		require.Empty(t, queueItems(t, b.store, b.first, q))
		require.Empty(t, pop(ffstore.MaxScore, 100), "an empty queue pops nothing")
		require.Empty(t, queueHeads(t, b.store, []string{""}), "an emptied queue has no head")

		var missing []ffstore.QueueItem
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			var err error
			missing, err = tx.PopDue("no-such-queue", ffstore.MaxScore, 10)
			return err
		})
		require.Empty(t, missing)
	})

	t.Run("PopDueFetch", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const q = "ready"
		var items []ffstore.QueueItem
		for i := range 5 {
			items = append(items, qi(fftype.NewExecutionID(b.first).String(), int64(i)))
		}
		x := func(i int) string { return "x:" + items[i].Member }
		p := func(i int) string { return "p:" + items[i].Member }
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			for i, it := range items {
				tx.Put(x(i), []byte("x"+strconv.Itoa(i)))
				if i != 1 {
					tx.Put(p(i), []byte("p"+strconv.Itoa(i)))
				}
				tx.QueueAdd(q, it.Member, it.Score)
			}
			return nil
		})

		// Each pop is checked against what Get then reads; the first pop also lets a
		// store learn what the next will take, and a write between the pops (to a record
		// the next pop reads) must not be missed.
		fetcher := true
		pop := func(n int) (popped []ffstore.QueueItem, values map[string]string) {
			t.Helper()
			mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
				pf, ok := tx.(ffstore.PopFetcher)
				if fetcher = ok; !ok {
					return nil
				}
				values = map[string]string{}
				var err error
				if popped, err = pf.PopDueFetch(q, ffstore.MaxScore, n, "x", "p"); err != nil {
					return err
				}
				for _, it := range popped {
					for _, k := range []string{"x:" + it.Member, "p:" + it.Member} {
						v, ok, err := tx.Get(k)
						if err != nil {
							return err
						}
						if ok {
							values[k] = string(v)
						}
					}
				}
				return nil
			})
			return popped, values
		}
		popped, values := pop(2)
		if !fetcher {
			t.Skip("the store's units do not implement ffstore.PopFetcher")
		}
		require.Equal(t, items[:2], popped)
		require.Equal(t, map[string]string{x(0): "x0", p(0): "p0", x(1): "x1"}, values, "a missing record reads as missing")

		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.Put(x(2), []byte("x2 changed"))
			tx.QueueRemove(q, items[3].Member)
			return nil
		})
		popped, values = pop(2)
		require.Equal(t, []ffstore.QueueItem{items[2], items[4]}, popped)
		require.Equal(t, map[string]string{x(2): "x2 changed", p(2): "p2", x(4): "x4", p(4): "p4"}, values)
		require.Empty(t, queueItems(t, b.store, b.first, q))
	})

	t.Run("QueueAddReplacesScore", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		add := func(member string, score int64) {
			t.Helper()
			mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
				tx.QueueAdd("q", member, score)
				return nil
			})
		}
		add("m", 10)
		add("m", 5)
		require.Equal(t, []ffstore.QueueItem{qi("m", 5)}, queueItems(t, b.store, b.last, "q"))
		add("n", 20)
		add("m", 50)
		require.Equal(t, []ffstore.QueueItem{qi("n", 20), qi("m", 50)}, queueItems(t, b.store, b.last, "q"))
		add("m", 50)
		require.Equal(t, []ffstore.QueueItem{qi("n", 20), qi("m", 50)}, queueItems(t, b.store, b.last, "q"))

		// Several adds of one member in one unit leave the last score.
		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			tx.QueueAdd("q", "k", 1)
			tx.QueueAdd("q", "k", 30)
			tx.QueueAdd("q", "n", 40)
			return nil
		})
		require.Equal(t, []ffstore.QueueItem{qi("k", 30), qi("n", 40), qi("m", 50)}, queueItems(t, b.store, b.last, "q"))
	})

	t.Run("QueueRemove", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		addItems(t, b.store, b.first, "q", []ffstore.QueueItem{qi("a", 1), qi("b", 2), qi("c", 3)})
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.QueueRemove("q", "b")
			tx.QueueRemove("q", "missing")
			tx.QueueRemove("no-such-queue", "a")
			tx.QueueRemove("q", "c")
			tx.QueueAdd("q", "c", 0) // removed, then added back with a new score
			tx.QueueAdd("q", "d", 4)
			tx.QueueRemove("q", "d") // added, then removed
			return nil
		})
		require.Equal(t, []ffstore.QueueItem{qi("c", 0), qi("a", 1)}, queueItems(t, b.store, b.first, "q"))
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.QueueRemove("q", "a")
			tx.QueueRemove("q", "c")
			return nil
		})
		require.Empty(t, queueItems(t, b.store, b.first, "q"))
	})

	t.Run("QueueHeads", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		x := fftype.NewExecutionID(b.first).String()
		addItems(t, b.store, b.first, "ready:a", []ffstore.QueueItem{qi(x, 5), qi("y", 3), qi("z", 3)})
		addItems(t, b.store, b.first, "ready:b", []ffstore.QueueItem{qi("z", 7)})
		addItems(t, b.store, b.first, "delay:a", []ffstore.QueueItem{qi("w", -1)})
		addItems(t, b.store, b.first, "other", []ffstore.QueueItem{qi("v", 0)})
		addItems(t, b.store, b.first, "ready:empty", []ffstore.QueueItem{qi("gone", 1)})
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.QueueRemove("ready:empty", "gone")
			return nil
		})
		heads := []ffstore.QueueHead{
			{Shard: b.first, Queue: "ready:a", Item: ffstore.QueueItem{Member: "y", Score: 3}},
			{Shard: b.first, Queue: "ready:b", Item: ffstore.QueueItem{Member: "z", Score: 7}},
			{Shard: b.first, Queue: "delay:a", Item: ffstore.QueueItem{Member: "w", Score: -1}},
			{Shard: b.first, Queue: "other", Item: ffstore.QueueItem{Member: "v", Score: 0}},
		}
		ready := heads[:2:2]
		if b.last != b.first {
			u := fftype.NewExecutionID(b.last).String()
			addItems(t, b.store, b.last, "ready:a", []ffstore.QueueItem{qi(u, 9), qi("t", 10)})
			addItems(t, b.store, b.last, "delay:b", []ffstore.QueueItem{qi("s", 2)})
			lastReady := ffstore.QueueHead{Shard: b.last, Queue: "ready:a", Item: ffstore.QueueItem{Member: u, Score: 9}}
			lastDelay := ffstore.QueueHead{Shard: b.last, Queue: "delay:b", Item: ffstore.QueueItem{Member: "s", Score: 2}}
			heads = append(heads, lastReady, lastDelay)
			ready = append(ready, lastReady)
		}

		readyAndDelay := slices.DeleteFunc(slices.Clone(heads), func(h ffstore.QueueHead) bool { return h.Queue == "other" })

		require.ElementsMatch(t, ready, queueHeads(t, b.store, []string{"ready:"}))
		require.ElementsMatch(t, ready, queueHeads(t, b.store, []string{"ready:a", "ready:", "ready:b"}),
			"a queue that several prefixes match is reported once")
		require.ElementsMatch(t, readyAndDelay, queueHeads(t, b.store, []string{"delay:", "ready:"}))
		require.ElementsMatch(t, heads, queueHeads(t, b.store, []string{""}), "the empty prefix matches every queue")
		require.Empty(t, queueHeads(t, b.store, nil))
		require.Empty(t, queueHeads(t, b.store, []string{"nothing"}))
		require.Empty(t, queueHeads(t, b.store, []string{"ready:empty"}), "an emptied queue has no head")

		// The head follows pops and score changes.
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			if _, err := tx.PopDue("ready:a", ffstore.MaxScore, 1); err != nil {
				return err
			}
			tx.QueueAdd("ready:b", "z", 100)
			tx.QueueAdd("ready:b", "zz", 50)
			return nil
		})
		ready[0].Item = ffstore.QueueItem{Member: "z", Score: 3}
		ready[1].Item = ffstore.QueueItem{Member: "zz", Score: 50}
		require.ElementsMatch(t, ready, queueHeads(t, b.store, []string{"ready:"}))
	})

	t.Run("QueueHeadsNonASCIIPrefixes", func(t *testing.T) {
		// Prefixes whose last byte cannot simply be raised into valid text ("п" is D0 BF,
		// "ÿ" C3 BF, "x\x7f") still find their queues, and only theirs.
		t.Parallel()
		b := setup(t)
		want := map[string]ffstore.QueueHead{}
		for _, q := range []string{"пример", "ÿes", "x\x7fy", "р", "xy"} {
			addItems(t, b.store, b.first, q, []ffstore.QueueItem{qi("m", 1)})
			want[q] = ffstore.QueueHead{Shard: b.first, Queue: q, Item: ffstore.QueueItem{Member: "m", Score: 1}}
		}
		require.Equal(t, []ffstore.QueueHead{want["пример"]}, queueHeads(t, b.store, []string{"п"}))
		require.Equal(t, []ffstore.QueueHead{want["ÿes"]}, queueHeads(t, b.store, []string{"ÿ"}))
		require.Equal(t, []ffstore.QueueHead{want["x\x7fy"]}, queueHeads(t, b.store, []string{"x\x7f"}))
	})

	t.Run("Events", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := fftype.NewExecutionID(b.first)
		require.Empty(t, allEvents(t, b.store, b.first), "a new store has no events")

		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.AppendEvent(testEvent(id, "e1"))
			return nil
		})
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.AppendEvent(testEvent(id, "e2"))
			ev := testEvent(id, "e3")
			ev.Type = fftype.EventCompleted
			ev.Data = nil
			tx.AppendEvent(ev)
			return nil
		})
		err := b.store.Update(b.ctx, b.first, func(tx ffstore.Tx) error {
			tx.AppendEvent(testEvent(id, "rolled back"))
			return errBoom
		})
		require.Same(t, errBoom, err)
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			ev := testEvent(id, "e4")
			ev.Seq, ev.Shard = 77, b.first+1 // the store assigns both
			tx.AppendEvent(ev)
			return nil
		})

		events := allEvents(t, b.store, b.first)
		require.Len(t, events, 4)
		for i, ev := range events {
			require.Equal(t, uint64(i+1), ev.Seq, "Seq is gap-free from 1")
			require.Equal(t, b.first, ev.Shard)
			require.Equal(t, fftype.EventVersion, ev.Version)
			require.Equal(t, id, ev.ExecutionID)
			require.Equal(t, "flow-1", ev.FlowID)
			require.Equal(t, fftype.DefaultNamespace, ev.Namespace)
			require.Equal(t, "lane", ev.Lane)
			require.True(t, testEvent(id, "").Time.Equal(ev.Time), "event time %v", ev.Time)
		}
		require.Equal(t, fftype.EventProgress, events[0].Type)
		require.JSONEq(t, `"e1"`, string(events[0].Data))
		require.JSONEq(t, `"e2"`, string(events[1].Data))
		require.Equal(t, fftype.EventCompleted, events[2].Type)
		require.Empty(t, events[2].Data)
		require.JSONEq(t, `"e4"`, string(events[3].Data))

		read := func(shard int, after uint64, limit int) []uint64 {
			t.Helper()
			page, err := b.store.ReadEvents(b.ctx, shard, after, limit)
			require.NoError(t, err)
			seqs := []uint64{}
			for _, ev := range page {
				seqs = append(seqs, ev.Seq)
			}
			return seqs
		}
		require.Equal(t, []uint64{1, 2, 3, 4}, read(b.first, 0, 100))
		require.Equal(t, []uint64{3, 4}, read(b.first, 2, 100), "after is exclusive")
		require.Equal(t, []uint64{2, 3}, read(b.first, 1, 2))
		require.Equal(t, []uint64{1}, read(b.first, 0, 1))
		require.Empty(t, read(b.first, 4, 100))
		require.Empty(t, read(b.first, 1000, 100))
		require.Empty(t, read(b.first, 0, 0), "limit <= 0 returns nothing")
		require.Empty(t, read(b.first, 0, -1), "limit <= 0 returns nothing")

		if b.last != b.first {
			require.Empty(t, read(b.last, 0, 100), "each shard has its own log")
			other := fftype.NewExecutionID(b.last)
			mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
				tx.AppendEvent(testEvent(other, "l1"))
				tx.AppendEvent(testEvent(other, "l2"))
				return nil
			})
			lastEvents := allEvents(t, b.store, b.last)
			require.Len(t, lastEvents, 2)
			for i, ev := range lastEvents {
				require.Equal(t, uint64(i+1), ev.Seq)
				require.Equal(t, b.last, ev.Shard)
			}
			require.Equal(t, []uint64{1, 2, 3, 4}, read(b.first, 0, 100))
		}
	})

	t.Run("TrimEvents", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := fftype.NewExecutionID(b.last)
		require.NoError(t, b.store.TrimEvents(b.ctx, b.last, 5), "trimming an empty log is fine")
		trimmed, last, err := b.store.EventBounds(b.ctx, b.last)
		require.NoError(t, err)
		require.Zero(t, trimmed+last, "an empty log has no bounds")
		for i := range 10 {
			mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
				tx.AppendEvent(testEvent(id, fmt.Sprint(i)))
				return nil
			})
		}
		trimmed, last, err = b.store.EventBounds(b.ctx, b.last)
		require.NoError(t, err)
		require.Equal(t, [2]uint64{0, 10}, [2]uint64{trimmed, last})
		require.NoError(t, b.store.TrimEvents(b.ctx, b.last, 4))
		trimmed, last, err = b.store.EventBounds(b.ctx, b.last)
		require.NoError(t, err)
		require.Equal(t, [2]uint64{4, 10}, [2]uint64{trimmed, last})
		_, err = b.store.ReadEvents(b.ctx, b.last, 0, 100)
		require.ErrorIs(t, err, fftype.ErrCursorExpired, "events a reader needs are gone")
		_, err = b.store.ReadEvents(b.ctx, b.last, 3, 100)
		require.ErrorIs(t, err, fftype.ErrCursorExpired)
		evs, err := b.store.ReadEvents(b.ctx, b.last, 4, 100)
		require.NoError(t, err)
		require.Len(t, evs, 6)
		require.Equal(t, uint64(5), evs[0].Seq)
		require.NoError(t, b.store.TrimEvents(b.ctx, b.last, 2), "a lower trim point changes nothing")
		evs, err = b.store.ReadEvents(b.ctx, b.last, 4, 100)
		require.NoError(t, err)
		require.Len(t, evs, 6)

		require.NoError(t, b.store.TrimEvents(b.ctx, b.last, 1000), "trimming past the end trims to the end")
		evs, err = b.store.ReadEvents(b.ctx, b.last, 10, 100)
		require.NoError(t, err)
		require.Empty(t, evs)
		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			tx.AppendEvent(testEvent(id, "after"))
			return nil
		})
		evs, err = b.store.ReadEvents(b.ctx, b.last, 10, 100)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, uint64(11), evs[0].Seq, "the sequence continues after a trim")
		_, err = b.store.ReadEvents(b.ctx, b.last, 9, 100)
		require.ErrorIs(t, err, fftype.ErrCursorExpired)
		if b.first != b.last {
			_, err = b.store.ReadEvents(b.ctx, b.first, 0, 100)
			require.NoError(t, err, "trimming one shard leaves the others alone")
		}
		require.Error(t, b.store.TrimEvents(b.ctx, b.store.Shards(), 1), "shard out of range")
	})

	t.Run("Changes", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		n, ok := b.store.(ffstore.ChangeNotifier)
		if !ok {
			t.Logf("store has no change notifications; readers poll it")
			return
		}
		ctx, cancel := context.WithCancel(b.ctx)
		ch := n.Changes(ctx)
		drain := func() {
			for {
				select {
				case <-ch:
				default:
					return
				}
			}
		}
		drain() // a store may send a first spurious wake-up
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("v"))
			return nil
		})
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("no wake-up after a commit")
		}
		cancel()
		for range ch { // closed once ctx ends
		}
	})

	t.Run("ConcurrentPopDue", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const (
			items   = 500
			workers = 32
			queue   = "ready:concurrent"
		)
		want := make([]ffstore.QueueItem, items)
		for i := range want {
			want[i] = ffstore.QueueItem{Member: fmt.Sprintf("m%03d", i), Score: int64(i % 10)}
		}
		addItems(t, b.store, b.last, queue, want)

		var (
			mu     sync.Mutex
			popped = map[string]int{}
			errs   []error
			wg     sync.WaitGroup
		)
		for range workers {
			wg.Go(func() {
				for {
					var got []ffstore.QueueItem
					err := updateRetrying(b.ctx, b.store, b.last, func(tx ffstore.Tx) error {
						var err error
						got, err = tx.PopDue(queue, ffstore.MaxScore, 1)
						return err
					})
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					}
					for _, it := range got {
						popped[it.Member]++
					}
					mu.Unlock()
					if err != nil || len(got) == 0 {
						return
					}
				}
			})
		}
		wg.Wait()
		require.Empty(t, errs)
		require.Len(t, popped, items, "every item is popped")
		for member, n := range popped {
			require.Equal(t, 1, n, "%s is popped exactly once", member)
		}
		require.Empty(t, queueItems(t, b.store, b.last, queue))
	})

	t.Run("ConcurrentEvents", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const (
			writers = 16
			units   = 25
		)
		type note struct {
			Writer int `json:"w"`
			Unit   int `json:"u"`
			Index  int `json:"i"`
		}
		shards := b.store.Shards()
		var (
			mu   sync.Mutex
			errs []error
			wg   sync.WaitGroup
		)
		for w := range writers {
			wg.Go(func() {
				shard := w % shards
				id := fftype.NewExecutionID(shard)
				for u := range units {
					err := updateRetrying(b.ctx, b.store, shard, func(tx ffstore.Tx) error {
						for i := range 2 {
							ev := testEvent(id, "")
							ev.Data, _ = json.Marshal(note{Writer: w, Unit: u, Index: i})
							tx.AppendEvent(ev)
						}
						return nil
					})
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
				}
			})
		}
		wg.Wait()
		require.Empty(t, errs)

		total := 0
		for shard := range min(shards, writers) {
			events := allEvents(t, b.store, shard)
			total += len(events)
			last := map[int]int{} // writer -> position of its last event, as unit*2+index
			for i, ev := range events {
				require.Equal(t, uint64(i+1), ev.Seq, "shard %d: Seq is gap-free and unique", shard)
				require.Equal(t, shard, ev.Shard)
				var n note
				require.NoError(t, json.Unmarshal(ev.Data, &n))
				require.Equal(t, shard, n.Writer%shards, "event of writer %d on shard %d", n.Writer, shard)
				pos := n.Unit*2 + n.Index
				if prev, ok := last[n.Writer]; ok {
					require.Equal(t, prev+1, pos, "shard %d: writer %d's events in commit order", shard, n.Writer)
				} else {
					require.Equal(t, 0, pos)
				}
				last[n.Writer] = pos
			}
		}
		require.Equal(t, writers*units*2, total)
	})

	t.Run("Now", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		before := time.Now()
		now, err := b.store.Now(b.ctx)
		require.NoError(t, err)
		// The store's clock may be another machine's; it is sane, not exact.
		require.WithinDuration(t, before, now, time.Hour)
	})

	t.Run("ShardOutOfRange", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, shard := range []int{-1, b.store.Shards(), b.store.Shards() + 1000, fftype.MaxShards} {
			requireOutOfRange := func(err error) {
				t.Helper()
				require.ErrorIs(t, err, fftype.ErrValidation, "shard %d", shard)
				require.Equal(t, fftype.CodeShardOutOfRange, fftype.CodeOf(err), "shard %d", shard)
			}
			ran := false
			requireOutOfRange(b.store.Update(b.ctx, shard, func(ffstore.Tx) error { ran = true; return nil }))
			requireOutOfRange(b.store.View(b.ctx, shard, func(ffstore.ReadTx) error { ran = true; return nil }))
			_, err := b.store.ReadEvents(b.ctx, shard, 0, 10)
			requireOutOfRange(err)
			require.False(t, ran, "fn never runs for a shard out of range")
		}
	})

	t.Run("ContextCancelled", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithCancel(b.ctx)
		cancel()
		ran := false
		err := b.store.Update(ctx, b.first, func(tx ffstore.Tx) error {
			ran = true
			tx.Put("k", []byte("v"))
			return nil
		})
		require.ErrorIs(t, err, context.Canceled)
		err = b.store.View(ctx, b.first, func(ffstore.ReadTx) error { ran = true; return nil })
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, ran, "fn never runs once ctx is done")
		_, err = b.store.ReadEvents(ctx, b.first, 0, 10)
		require.ErrorIs(t, err, context.Canceled)
		_, err = b.store.QueueHeads(ctx, []string{""})
		require.ErrorIs(t, err, context.Canceled)
		_, err = b.store.Now(ctx)
		require.ErrorIs(t, err, context.Canceled)
		requireNoRecord(t, b.store, b.first, "k")
	})

	t.Run("Close", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		mustUpdate(t, b.store, b.first, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("v"))
			return nil
		})
		require.NoError(t, b.store.Close())

		ran := false
		err := b.store.Update(b.ctx, b.first, func(ffstore.Tx) error { ran = true; return nil })
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		err = b.store.View(b.ctx, b.first, func(ffstore.ReadTx) error { ran = true; return nil })
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		require.False(t, ran, "fn never runs after Close")
		_, err = b.store.ReadEvents(b.ctx, b.first, 0, 10)
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		_, err = b.store.QueueHeads(b.ctx, []string{""})
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		_, err = b.store.Now(b.ctx)
		require.ErrorIs(t, err, fftype.ErrUnavailable)
	})

	t.Run("InjectedConflict", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		injector, ok := b.store.(ConflictInjector)
		if !ok {
			t.Logf("%T does not implement ConflictInjector", b.store)
			return
		}
		id := fftype.NewExecutionID(b.last)
		mustUpdate(t, b.store, b.last, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("old"))
			tx.QueueAdd("q", id.String(), 1)
			tx.AppendEvent(testEvent(id, "before"))
			return nil
		})

		write := func(tx ffstore.Tx) ([]ffstore.QueueItem, error) {
			popped, err := tx.PopDue("q", ffstore.MaxScore, 1)
			tx.Put("k", []byte("new"))
			tx.Put("k2", []byte("new"))
			tx.QueueAdd("q2", "m", 2)
			tx.AppendEvent(testEvent(id, "after"))
			return popped, err
		}
		injector.InjectConflicts(1)
		ran := false
		err := b.store.Update(b.ctx, b.last, func(tx ffstore.Tx) error {
			ran = true
			_, err := write(tx)
			return err
		})
		require.ErrorIs(t, err, fftype.ErrStoreConflict)
		require.True(t, ran, "the conflict comes at commit, after fn ran")
		requireRecord(t, b.store, b.last, "k", "old")
		requireNoRecord(t, b.store, b.last, "k2")
		require.Equal(t, []ffstore.QueueItem{qi(id.String(), 1)}, queueItems(t, b.store, b.last, "q"))
		require.Empty(t, queueItems(t, b.store, b.last, "q2"))
		require.Len(t, allEvents(t, b.store, b.last), 1)

		// The conflict is spent: the same unit now commits.
		var popped []ffstore.QueueItem
		require.NoError(t, b.store.Update(b.ctx, b.last, func(tx ffstore.Tx) error {
			var err error
			popped, err = write(tx)
			return err
		}))
		require.Equal(t, []ffstore.QueueItem{qi(id.String(), 1)}, popped)
		requireRecord(t, b.store, b.last, "k", "new")
		require.Empty(t, queueItems(t, b.store, b.last, "q"))
		require.Len(t, allEvents(t, b.store, b.last), 2)
	})

	t.Run("QueueModel", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		exerciseQueueModel(t, b.store, b.last)
	})
}

// exerciseQueueModel runs units of random queue writes and pops against shard, some of
// them rolled back, and compares the queue with a model after each unit. The seed is
// fixed, so a failure repeats.
func exerciseQueueModel(t *testing.T, s ffstore.Store, shard int) {
	t.Helper()
	const (
		queue   = "model"
		units   = 40
		writes  = 120
		members = 400
	)
	r := rand.New(rand.NewPCG(1, 2))
	model := map[string]int64{}
	sorted := func() []ffstore.QueueItem {
		items := make([]ffstore.QueueItem, 0, len(model))
		for m, sc := range model {
			items = append(items, ffstore.QueueItem{Member: m, Score: sc})
		}
		slices.SortFunc(items, compareItems)
		return items
	}

	for unit := range units {
		next := maps.Clone(model)
		maxScore := int64(r.IntN(60) - 30)
		n := r.IntN(20)
		var wantPopped []ffstore.QueueItem
		for _, it := range sorted() {
			if len(wantPopped) == n || it.Score > maxScore {
				break
			}
			wantPopped = append(wantPopped, it)
			delete(next, it.Member)
		}
		fail := r.IntN(4) == 0
		ops := make([]func(tx ffstore.Tx), 0, writes)
		for range writes {
			member := fmt.Sprintf("m%d", r.IntN(members))
			if r.IntN(3) == 0 {
				ops = append(ops, func(tx ffstore.Tx) { tx.QueueRemove(queue, member) })
				delete(next, member)
			} else {
				score := int64(r.IntN(100) - 50)
				ops = append(ops, func(tx ffstore.Tx) { tx.QueueAdd(queue, member, score) })
				next[member] = score
			}
		}

		var popped []ffstore.QueueItem
		err := updateRetrying(t.Context(), s, shard, func(tx ffstore.Tx) error {
			var err error
			if popped, err = tx.PopDue(queue, maxScore, n); err != nil {
				return err
			}
			for _, op := range ops {
				op(tx)
			}
			if fail {
				return errBoom
			}
			return nil
		})
		requireItems(t, wantPopped, popped, "unit %d", unit)
		if fail {
			require.Same(t, errBoom, err)
		} else {
			require.NoError(t, err)
			model = next
		}
		want := sorted()
		requireItems(t, want, queueItems(t, s, shard, queue), "unit %d", unit)

		// Random ranges over the committed queue.
		for range 5 {
			var after *ffstore.QueueItem
			if r.IntN(3) > 0 {
				after = &ffstore.QueueItem{Member: fmt.Sprintf("m%d", r.IntN(members)), Score: int64(r.IntN(100) - 50)}
			}
			maxScore := int64(r.IntN(120) - 60)
			n := r.IntN(50)
			var wantRange []ffstore.QueueItem
			for _, it := range want {
				if len(wantRange) == n || it.Score > maxScore {
					break
				}
				if after == nil || after.Less(it) {
					wantRange = append(wantRange, it)
				}
			}
			var got []ffstore.QueueItem
			require.NoError(t, s.View(t.Context(), shard, func(tx ffstore.ReadTx) error {
				var err error
				got, err = tx.Range(queue, after, maxScore, n)
				return err
			}))
			requireItems(t, wantRange, got, "unit %d: Range(%v, %d, %d)", unit, after, maxScore, n)
		}
	}
}

// mustUpdate runs fn as a unit on shard and requires it to commit, retrying conflicts.
func mustUpdate(t *testing.T, s ffstore.Store, shard int, fn func(tx ffstore.Tx) error) {
	t.Helper()
	require.NoError(t, updateRetrying(t.Context(), s, shard, fn))
}

// updateRetrying runs fn as a unit, retrying while the store answers with a conflict, as
// the engine does. It is safe to call from any goroutine.
func updateRetrying(ctx context.Context, s ffstore.Store, shard int, fn func(tx ffstore.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.Update(ctx, shard, fn)
		if !errors.Is(err, fftype.ErrStoreConflict) || attempt == maxConflictRetries {
			return err
		}
	}
}

// requireRecord requires the record under key on shard to hold want.
func requireRecord(t *testing.T, s ffstore.Store, shard int, key, want string) {
	t.Helper()
	var value []byte
	var ok bool
	require.NoError(t, s.View(t.Context(), shard, func(tx ffstore.ReadTx) error {
		var err error
		value, ok, err = tx.Get(key)
		return err
	}))
	require.True(t, ok, "record %q exists on shard %d", key, shard)
	require.Equal(t, want, string(value), "record %q on shard %d", key, shard)
}

// requireNoRecord requires that shard holds no record under key.
func requireNoRecord(t *testing.T, s ffstore.Store, shard int, key string) {
	t.Helper()
	var value []byte
	var ok bool
	require.NoError(t, s.View(t.Context(), shard, func(tx ffstore.ReadTx) error {
		var err error
		value, ok, err = tx.Get(key)
		return err
	}))
	require.False(t, ok, "record %q on shard %d holds %q, want none", key, shard, value)
}

// addItems adds items to queue on shard in one unit, in an order unlike theirs.
func addItems(t *testing.T, s ffstore.Store, shard int, queue string, items []ffstore.QueueItem) {
	t.Helper()
	mustUpdate(t, s, shard, func(tx ffstore.Tx) error {
		for i := range items {
			it := items[(i*7+3)%len(items)]
			if len(items)%7 == 0 {
				it = items[len(items)-1-i]
			}
			tx.QueueAdd(queue, it.Member, it.Score)
		}
		return nil
	})
}

// queueItems returns every item of queue on shard, in order.
func queueItems(t *testing.T, s ffstore.Store, shard int, queue string) []ffstore.QueueItem {
	t.Helper()
	var items []ffstore.QueueItem
	require.NoError(t, s.View(t.Context(), shard, func(tx ffstore.ReadTx) error {
		var err error
		items, err = tx.Range(queue, nil, ffstore.MaxScore, 1_000_000)
		return err
	}))
	return items
}

// queueHeads returns the store's QueueHeads for prefixes.
func queueHeads(t *testing.T, s ffstore.Store, prefixes []string) []ffstore.QueueHead {
	t.Helper()
	heads, err := s.QueueHeads(t.Context(), prefixes)
	require.NoError(t, err)
	return heads
}

// allEvents returns every event of shard, read in pages.
func allEvents(t *testing.T, s ffstore.Store, shard int) []fftype.Event {
	t.Helper()
	var events []fftype.Event
	for {
		page, err := s.ReadEvents(t.Context(), shard, uint64(len(events)), 100)
		require.NoError(t, err)
		if len(page) == 0 {
			return events
		}
		events = append(events, page...)
	}
}

// testEvent returns an event about id whose data is the JSON string note.
func testEvent(id fftype.ExecutionID, note string) fftype.Event {
	data, _ := json.Marshal(note)
	return fftype.Event{
		Version:     fftype.EventVersion,
		Type:        fftype.EventProgress,
		Time:        time.Date(2026, 5, 1, 12, 0, 0, 123_000_000, time.UTC),
		ExecutionID: id,
		FlowID:      "flow-1",
		Namespace:   fftype.DefaultNamespace,
		Lane:        "lane",
		Data:        data,
	}
}

// requireItems requires got to hold the items of want, in order; nil and empty are alike.
func requireItems(t *testing.T, want, got []ffstore.QueueItem, msgAndArgs ...any) {
	t.Helper()
	if len(want) == 0 && len(got) == 0 {
		return
	}
	require.Equal(t, want, got, msgAndArgs...)
}

// qi returns a queue item.
func qi(member string, score int64) ffstore.QueueItem {
	return ffstore.QueueItem{Member: member, Score: score}
}

func compareItems(a, b ffstore.QueueItem) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}
