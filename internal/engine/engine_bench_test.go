package engine_test

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// BenchmarkClaimComplete drains b.N pre-seeded executions with 4 KiB payloads through 16
// concurrent claim→complete loops on the in-memory store: the ceiling later stores compare
// with. Seeding is not timed. It reports the events appended per second (two per task:
// claimed and completed) and, in the Subscribed variant, how far behind a live subscriber
// following the whole log runs (p50/p99 of delivery time minus event time).
func BenchmarkClaimComplete(b *testing.B) {
	b.Run("Plain", func(b *testing.B) { benchmarkDrain(b, false) })
	b.Run("Subscribed", func(b *testing.B) { benchmarkDrain(b, true) })
}

func benchmarkDrain(b *testing.B, subscribe bool) {
	e, err := engine.New(ffmem.New(nil), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	payload := []byte(`"` + string(make4K()) + `"`)
	ps := make([]fftype.CreateParams, 0, 1000)
	for seeded := 0; seeded < b.N; seeded += len(ps) {
		ps = ps[:0]
		for i := 0; i < min(1000, b.N-seeded); i++ {
			ps = append(ps, fftype.CreateParams{Lane: "bench", Kind: "noop", Payload: payload})
		}
		for _, r := range e.CreateMany(ctx, ps) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	var done atomic.Int64
	var lags []time.Duration
	subDone := make(chan struct{})
	if subscribe {
		cursor, err := e.EventCursor(ctx)
		if err != nil {
			b.Fatal(err)
		}
		sub, err := e.Subscribe(ctx, fftype.EventFilter{Types: []fftype.EventType{fftype.EventCompleted}}, cursor)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		go func() {
			defer close(subDone)
			for d := range sub.Events() {
				lags = append(lags, time.Since(d.Event.Time))
				if len(lags) == b.N {
					return
				}
			}
		}()
	} else {
		close(subDone)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := fftype.ClaimParams{WorkerID: "bench", WorkerInstanceID: "bench-" + string(rune('a'+w)), Lanes: []string{"bench"}}
			for {
				leases, err := e.Claim(ctx, p)
				if err != nil {
					b.Error(err)
					return
				}
				if len(leases) == 0 {
					return
				}
				for _, l := range leases {
					if err := e.Complete(ctx, l.ExecutionID, l.Fence, nil, ""); err != nil {
						b.Error(err)
						return
					}
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if int(done.Load()) != b.N {
		b.Fatalf("completed %d of %d", done.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "events/s")
	<-subDone
	if subscribe {
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "lag-p50-ms")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "lag-p99-ms")
	}
}

func make4K() []byte {
	b := make([]byte, 4096-2)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}
