package ffmem_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/ffstore/ffstoretest"
	"github.com/flowfabric/flowfabric/fftype"
)

var _ ffstoretest.ConflictInjector = (*ffmem.Store)(nil)

func TestConformance(t *testing.T) {
	t.Parallel()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return ffmem.New(&ffmem.Options{Shards: 8}) })
}

func TestConformanceOneShard(t *testing.T) {
	t.Parallel()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return ffmem.New(&ffmem.Options{Shards: 1}) })
}

func TestNew(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		opts   *ffmem.Options
		shards int
	}{
		{"NilOptions", nil, ffmem.DefaultShards},
		{"ZeroShards", &ffmem.Options{}, ffmem.DefaultShards},
		{"OneShard", &ffmem.Options{Shards: 1}, 1},
		{"MaxShards", &ffmem.Options{Shards: fftype.MaxShards}, fftype.MaxShards},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ffmem.New(tt.opts)
			require.Equal(t, tt.shards, s.Shards())
			require.NoError(t, s.Update(t.Context(), tt.shards-1, func(tx ffstore.Tx) error {
				tx.Put("k", []byte("v"))
				return nil
			}))
		})
	}

	for _, shards := range []int{-1, fftype.MaxShards + 1} {
		t.Run(fmt.Sprintf("Panics%d", shards), func(t *testing.T) {
			t.Parallel()
			require.Panics(t, func() { ffmem.New(&ffmem.Options{Shards: shards}) })
		})
	}
}

// panicMessage runs fn and returns the string it panicked with, failing if it did not.
func panicMessage(t *testing.T, fn func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		require.NotNil(t, r, "expected a panic")
		msg = fmt.Sprint(r)
	}()
	fn()
	return ""
}

func TestShardCrossing(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		store *ffmem.Store
		mine  fftype.ExecutionID // an execution on shard 1
		other fftype.ExecutionID // an execution on shard 3
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		return &testBundle{
			store: ffmem.New(&ffmem.Options{Shards: 4}),
			mine:  fftype.NewExecutionID(1),
			other: fftype.NewExecutionID(3),
		}
	}

	t.Run("PanicsNamingBothShards", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		key := "execution:" + b.other.String()
		sub := "attempt:" + b.other.String() + "/2"
		touches := []struct {
			name string
			fn   func(tx ffstore.Tx)
		}{
			{"Get", func(tx ffstore.Tx) { _, _, _ = tx.Get(key) }},
			{"GetSuffixed", func(tx ffstore.Tx) { _, _, _ = tx.Get(sub) }},
			{"Prefetch", func(tx ffstore.Tx) { _ = tx.Prefetch("plain", key) }},
			{"Put", func(tx ffstore.Tx) { tx.Put(sub, nil) }},
			{"Delete", func(tx ffstore.Tx) { tx.Delete(key) }},
			{"QueueAdd", func(tx ffstore.Tx) { tx.QueueAdd("ready:x", b.other.String(), 1) }},
			{"QueueRemove", func(tx ffstore.Tx) { tx.QueueRemove("ready:x", b.other.String()) }},
		}
		for _, touch := range touches {
			msg := panicMessage(t, func() {
				_ = b.store.Update(t.Context(), 1, func(tx ffstore.Tx) error {
					tx.Put("before", []byte("x"))
					touch.fn(tx)
					return nil
				})
			})
			require.Contains(t, msg, "shard 1", touch.name)
			require.Contains(t, msg, "shard 3", touch.name)
			require.Contains(t, msg, b.other.String(), touch.name)
		}
		msg := panicMessage(t, func() {
			_ = b.store.View(t.Context(), 1, func(tx ffstore.ReadTx) error {
				_, _, err := tx.Get(key)
				return err
			})
		})
		require.Contains(t, msg, "shard 1")
		require.Contains(t, msg, "shard 3")

		// The panicking units wrote nothing and released the shard.
		require.NoError(t, b.store.View(t.Context(), 1, func(tx ffstore.ReadTx) error {
			_, ok, err := tx.Get("before")
			require.False(t, ok)
			return err
		}))
	})

	t.Run("AllowsOwnAndShardLocalKeys", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, b.store.Update(t.Context(), 1, func(tx ffstore.Tx) error {
			tx.Put("execution:"+b.mine.String(), nil)
			tx.Put("attempt:"+b.mine.String()+"/0", nil)
			tx.Put("plain", nil)
			tx.Put("idem:default/"+b.other.String(), nil) // the part before '/' is no id
			tx.Put("lane:"+b.other.String()+"x", nil)     // not an id
			tx.Put(b.other.String(), nil)                 // no kind: shard-local
			tx.Put("weird:S3_"+b.other.String()[3:], nil) // not canonical
			tx.QueueAdd("ready:x", b.mine.String(), 1)
			tx.QueueAdd("ready:x", "not-an-id", 2)
			tx.QueueAdd("ready:"+b.other.String(), "m", 3) // queue names are not checked
			_, err := tx.PopDue("ready:x", ffstore.MaxScore, 1)
			return err
		}))
	})
}

func TestInjectConflicts(t *testing.T) {
	t.Parallel()

	s := ffmem.New(&ffmem.Options{Shards: 2})
	put := func(shard int, value string) error {
		return s.Update(t.Context(), shard, func(tx ffstore.Tx) error {
			tx.Put("k", []byte(value))
			return nil
		})
	}
	s.InjectConflicts(0)  // adds nothing
	s.InjectConflicts(-3) // adds nothing
	require.NoError(t, put(0, "a"))

	s.InjectConflicts(1)
	s.InjectConflicts(1) // adds up: two conflicts
	// A unit whose fn fails does not use one up.
	require.ErrorIs(t, s.Update(t.Context(), 0, func(ffstore.Tx) error { return context.Canceled }), context.Canceled)

	err := put(1, "b")
	require.ErrorIs(t, err, fftype.ErrStoreConflict)
	require.True(t, fftype.IsRetryable(err))
	var fe *fftype.Error
	require.ErrorAs(t, err, &fe)
	require.Equal(t, fftype.KindContention, fe.Kind)
	require.Equal(t, fftype.CodeStoreConflict, fe.Code)

	require.ErrorIs(t, put(0, "c"), fftype.ErrStoreConflict, "conflicts hit any shard")
	require.NoError(t, put(0, "d"), "both conflicts are spent")
	require.NoError(t, s.View(t.Context(), 0, func(tx ffstore.ReadTx) error {
		v, _, err := tx.Get("k")
		require.Equal(t, "d", string(v))
		return err
	}))
}

func TestUnitPanicRollsBack(t *testing.T) {
	t.Parallel()

	s := ffmem.New(&ffmem.Options{Shards: 1})
	require.NoError(t, s.Update(t.Context(), 0, func(tx ffstore.Tx) error {
		tx.Put("k", []byte("old"))
		tx.QueueAdd("q", "a", 1)
		return nil
	}))
	require.PanicsWithValue(t, "boom", func() {
		_ = s.Update(t.Context(), 0, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("new"))
			tx.QueueAdd("q", "b", 0)
			if _, err := tx.PopDue("q", ffstore.MaxScore, 10); err != nil {
				return err
			}
			tx.AppendEvent(fftype.Event{Type: fftype.EventCreated})
			panic("boom")
		})
	})
	require.NoError(t, s.View(t.Context(), 0, func(tx ffstore.ReadTx) error {
		v, _, err := tx.Get("k")
		require.Equal(t, "old", string(v))
		items, err2 := tx.Range("q", nil, ffstore.MaxScore, 10)
		require.Equal(t, []ffstore.QueueItem{{Member: "a", Score: 1}}, items)
		return errors.Join(err, err2)
	}))
	events, err := s.ReadEvents(t.Context(), 0, 0, 10)
	require.NoError(t, err)
	require.Empty(t, events)
}

func TestRetainedTxPanics(t *testing.T) {
	t.Parallel()

	s := ffmem.New(nil)
	var kept ffstore.Tx
	require.NoError(t, s.Update(t.Context(), 0, func(tx ffstore.Tx) error {
		kept = tx
		return nil
	}))
	require.Panics(t, func() { _, _, _ = kept.Get("k") })
	require.Panics(t, func() { kept.Put("k", nil) })
	require.Panics(t, func() { _, _ = kept.PopDue("q", 0, 1) })

	var view ffstore.ReadTx
	require.NoError(t, s.View(t.Context(), 0, func(tx ffstore.ReadTx) error {
		view = tx
		_, isTx := tx.(ffstore.Tx)
		require.False(t, isTx, "a view cannot write")
		return nil
	}))
	require.Panics(t, func() { _, _ = view.Range("q", nil, 0, 1) })
}

func TestValuesAreCopied(t *testing.T) {
	t.Parallel()

	s := ffmem.New(nil)
	require.NoError(t, s.Update(t.Context(), 0, func(tx ffstore.Tx) error {
		tx.Put("k", []byte("value"))
		tx.AppendEvent(fftype.Event{Type: fftype.EventCreated, Data: []byte(`{"a":1}`)})
		return nil
	}))
	get := func() []byte {
		var v []byte
		require.NoError(t, s.View(t.Context(), 0, func(tx ffstore.ReadTx) error {
			var err error
			v, _, err = tx.Get("k")
			return err
		}))
		return v
	}
	v := get()
	copy(v, "XXXXX")
	require.Equal(t, "value", string(get()), "Get returns a copy")

	events, err := s.ReadEvents(t.Context(), 0, 0, 10)
	require.NoError(t, err)
	copy(events[0].Data, "XXXXXXX")
	events, err = s.ReadEvents(t.Context(), 0, 0, 10)
	require.NoError(t, err)
	require.True(t, bytes.Equal([]byte(`{"a":1}`), events[0].Data), "ReadEvents returns copies")
}

func TestClose(t *testing.T) {
	t.Parallel()

	s := ffmem.New(nil)
	require.NoError(t, s.Close())
	err := s.Close()
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.Equal(t, fftype.CodeStoreUnavailable, fftype.CodeOf(err))
	require.False(t, fftype.IsRetryable(err), "a closed store stays closed")
	require.Equal(t, ffmem.DefaultShards, s.Shards(), "Shards still answers")
}

func TestLargeQueue(t *testing.T) {
	t.Parallel()

	const n = 100_000
	s := ffmem.New(&ffmem.Options{Shards: 1})
	require.NoError(t, s.Update(t.Context(), 0, func(tx ffstore.Tx) error {
		for i := range n {
			// Scores descend as members ascend, with ties, so neither order helps.
			tx.QueueAdd("q", fmt.Sprintf("m%06d", i), int64((n-i)/3))
		}
		return nil
	}))
	var prev *ffstore.QueueItem
	popped := 0
	for {
		var items []ffstore.QueueItem
		require.NoError(t, s.Update(t.Context(), 0, func(tx ffstore.Tx) error {
			var err error
			items, err = tx.PopDue("q", ffstore.MaxScore, 1000)
			return err
		}))
		if len(items) == 0 {
			break
		}
		for i := range items {
			if prev != nil {
				require.True(t, prev.Less(items[i]), "%v before %v", *prev, items[i])
			}
			prev = &items[i]
		}
		popped += len(items)
	}
	require.Equal(t, n, popped)
	heads, err := s.QueueHeads(t.Context(), []string{""})
	require.NoError(t, err)
	require.Empty(t, heads)
}
