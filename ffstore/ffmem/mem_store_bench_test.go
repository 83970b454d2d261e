package ffmem_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// benchIDs returns n execution ids on shard and their record keys.
func benchIDs(shard, n int) (ids, keys []string) {
	ids, keys = make([]string, n), make([]string, n)
	for i := range ids {
		ids[i] = fftype.NewExecutionID(shard).String()
		keys[i] = "x:" + ids[i]
	}
	return ids, keys
}

// BenchmarkUpdate measures units shaped like a create: one record Put and one QueueAdd.
func BenchmarkUpdate(b *testing.B) {
	value := make([]byte, 256)

	b.Run("PutQueueAdd", func(b *testing.B) {
		s := ffmem.New(&ffmem.Options{Shards: 1})
		ids, keys := benchIDs(0, 1<<16)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			j := i & (len(ids) - 1)
			err := s.Update(b.Context(), 0, func(tx ffstore.Tx) error {
				tx.Put(keys[j], value)
				tx.QueueAdd("e\x1flane", ids[j], int64(i))
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
	})

	b.Run("PutQueueAddParallel", func(b *testing.B) {
		const shards = 16
		s := ffmem.New(&ffmem.Options{Shards: shards})
		ids := make([][]string, shards)
		keys := make([][]string, shards)
		for sh := range shards {
			ids[sh], keys[sh] = benchIDs(sh, 1<<12)
		}
		var next atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(next.Add(1))
				sh, j := i%shards, (i/shards)&(1<<12-1)
				err := s.Update(b.Context(), sh, func(tx ffstore.Tx) error {
					tx.Put(keys[sh][j], value)
					tx.QueueAdd("e\x1flane", ids[sh][j], int64(i))
					return nil
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkPopDue measures a unit popping the head of a 100,000-item queue and adding it
// back at the tail, so the queue keeps its size.
func BenchmarkPopDue(b *testing.B) {
	const size = 100_000
	s := ffmem.New(&ffmem.Options{Shards: 1})
	ids, _ := benchIDs(0, size)
	if err := s.Update(b.Context(), 0, func(tx ffstore.Tx) error {
		for i, id := range ids {
			tx.QueueAdd("t\x1fdelayed", id, int64(i))
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		err := s.Update(b.Context(), 0, func(tx ffstore.Tx) error {
			items, err := tx.PopDue("t\x1fdelayed", ffstore.MaxScore, 1)
			if err != nil || len(items) != 1 {
				return fmt.Errorf("popped %v: %w", items, err)
			}
			tx.QueueAdd("t\x1fdelayed", items[0].Member, items[0].Score+size)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueueHeads measures QueueHeads over 16 shards of 256 queues each, half of
// them matching the prefix.
func BenchmarkQueueHeads(b *testing.B) {
	const shards, queues = 16, 256
	s := ffmem.New(&ffmem.Options{Shards: shards})
	for sh := range shards {
		if err := s.Update(b.Context(), sh, func(tx ffstore.Tx) error {
			for q := range queues {
				kind := "e"
				if q%2 == 1 {
					kind = "t"
				}
				tx.QueueAdd(fmt.Sprintf("%s\x1fq%03d", kind, q), "m", int64(q))
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		heads, err := s.QueueHeads(b.Context(), []string{"e\x1f"})
		if err != nil || len(heads) != shards*queues/2 {
			b.Fatalf("%d heads, %v", len(heads), err)
		}
	}
}
