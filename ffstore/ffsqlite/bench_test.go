package ffsqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/fftype"
)

// BenchmarkUnits measures units shaped like an engine transition: Get one record, Put
// two records of 4 KiB, QueueAdd and PopDue one item, and AppendEvent. "serial" has one
// caller, so every unit is its own commit; "concurrent16" has 16 callers whose units
// share group commits.
//
// The driver was chosen with this benchmark (2 vCPUs, virtual disk, units/s, ranges over
// repeated runs): modernc.org/sqlite v1.62.0 (pure Go) made FULL serial 2,200–3,700,
// FULL concurrent16 12,000–18,900, NORMAL serial 8,700–10,500, NORMAL concurrent16
// 15,000–24,000; github.com/mattn/go-sqlite3 v1.14.53 (cgo) made 3,100, 4,600–14,100,
// 9,100–9,300 and 17,400–22,200. Not faster with cgo, so pure Go.
func BenchmarkUnits(b *testing.B) {
	for _, sync := range []ffsqlite.Synchronous{ffsqlite.SynchronousFull, ffsqlite.SynchronousNormal} {
		for _, callers := range []int{1, 16} {
			name := fmt.Sprintf("%s/serial", sync)
			if callers > 1 {
				name = fmt.Sprintf("%s/concurrent%d", sync, callers)
			}
			b.Run(name, func(b *testing.B) { benchmarkUnits(b, sync, callers) })
		}
	}
}

func benchmarkUnits(b *testing.B, sync ffsqlite.Synchronous, callers int) {
	ctx := context.Background()
	s, err := ffsqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), &ffsqlite.Options{Synchronous: sync})
	require.NoError(b, err)
	defer s.Close()

	value := make([]byte, 4<<10)
	for i := range value {
		value[i] = byte(i * 7)
	}
	const keys = 1000
	var seq atomic.Int64
	unit := func(i int64) error {
		k := i % keys
		return s.Update(ctx, 0, func(tx ffstore.Tx) error {
			if _, _, err := tx.Get(fmt.Sprintf("exec:%d", k)); err != nil {
				return err
			}
			tx.Put(fmt.Sprintf("exec:%d", k), value)
			tx.Put(fmt.Sprintf("attempt:%d", k), value)
			tx.QueueAdd("eligible", fmt.Sprintf("m%d", i), i)
			if _, err := tx.PopDue("eligible", ffstore.MaxScore, 1); err != nil {
				return err
			}
			tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventClaimed, Time: time.Unix(i, 0), Data: []byte(`{"attempt":1}`)})
			return nil
		})
	}

	commits := ffsqlite.Commits(s)
	b.ResetTimer()
	if callers == 1 {
		for b.Loop() {
			if err := unit(seq.Add(1)); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		// RunParallel starts parallelism × GOMAXPROCS goroutines.
		b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := unit(seq.Add(1)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "units/s")
	if n := ffsqlite.Commits(s) - commits; n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "units/commit")
	}
}
