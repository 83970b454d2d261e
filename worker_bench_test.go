package flowfabric_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/ffserver"
)

// BenchmarkCancelDelay measures how long a cancel takes to reach a running handler's
// context: from just before Client.Cancel is called until the handler sees its context
// done. It reports the p50, p99 and max of the delay, and the p99 counted from the moment
// Cancel returned (the commit's own cost left out; 0 when the handler saw it first); ns/op
// is the whole round (create, claim, start, cancel, settle). Over HTTP the worker runs on
// an ffclient.Client and hears of the cancel through the server's event stream.
func BenchmarkCancelDelay(b *testing.B) {
	for _, s := range workerTestStores() {
		for _, tr := range workerTransports() {
			b.Run(s.name+"/"+tr.name, func(b *testing.B) { benchmarkCancelDelay(b, s, tr) })
		}
	}
}

func benchmarkCancelDelay(b *testing.B, s testStore, tr testTransport) {
	ctx := b.Context()
	client, err := flowfabric.NewClient(s.newStore(b), nil)
	require.NoError(b, err)
	var backend flowfabric.Backend = client
	if tr.remote {
		srv, err := ffserver.New(client, ffserver.Config{})
		require.NoError(b, err)
		hs := httptest.NewServer(srv)
		defer hs.Close()
		backend, err = ffclient.New(hs.URL, nil)
		require.NoError(b, err)
	}
	w, err := flowfabric.NewWorker(ctx, backend, &flowfabric.WorkerConfig{WorkerID: "bench", Lanes: []string{testLane}}, nil)
	require.NoError(b, err)
	defer func() { require.NoError(b, w.Close(context.Background())) }()
	started := make(chan flowfabric.ExecutionID, 1)
	seen := make(chan time.Time, 1)
	flowfabric.Handle(w, "block", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
		started <- t.ExecutionID()
		<-ctx.Done()
		seen <- time.Now()
		return ctx.Err()
	})
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	delays := make([]time.Duration, 0, b.N)
	afterCommit := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		res, err := client.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "block"})
		require.NoError(b, err)
		<-started
		t0 := time.Now()
		require.NoError(b, client.Cancel(ctx, res.ID, flowfabric.CancelParams{Reason: "bench"}))
		t1 := time.Now()
		at := <-seen
		delays = append(delays, at.Sub(t0))
		afterCommit = append(afterCommit, max(at.Sub(t1), 0))
	}
	b.StopTimer()
	require.NoError(b, w.Stop(ctx))
	require.NoError(b, <-done)
	slices.Sort(delays)
	slices.Sort(afterCommit)
	q := func(ds []time.Duration, p float64) float64 {
		return float64(ds[int(p*float64(len(ds)-1))].Microseconds())
	}
	b.ReportMetric(q(delays, 0.50), "p50-µs")
	b.ReportMetric(q(delays, 0.99), "p99-µs")
	b.ReportMetric(float64(delays[len(delays)-1].Microseconds()), "max-µs")
	b.ReportMetric(q(afterCommit, 0.99), "p99-after-commit-µs")
}

// BenchmarkWorkerDrain measures how fast one worker with 16 slots drains a lane of no-op
// executions (seeded in bulk before the timer starts), through the runtime: claim, run,
// complete, renewals and the event watch included.
func BenchmarkWorkerDrain(b *testing.B) {
	for _, s := range workerTestStores() {
		b.Run(s.name, func(b *testing.B) {
			ctx := b.Context()
			client, err := flowfabric.NewClient(s.newStore(b), nil)
			require.NoError(b, err)
			w, err := flowfabric.NewWorker(ctx, client, &flowfabric.WorkerConfig{WorkerID: "bench", Lanes: []string{testLane},
				MaxConcurrentTasks: 16}, nil)
			require.NoError(b, err)
			defer func() { require.NoError(b, w.Close(context.Background())) }()
			var ran atomic.Int64
			all := make(chan struct{})
			n := int64(b.N)
			flowfabric.Handle(w, "noop", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
				if ran.Add(1) == n {
					close(all)
				}
				return nil
			})
			ps := make([]flowfabric.CreateParams, b.N)
			for i := range ps {
				ps[i] = flowfabric.CreateParams{Lane: testLane, Kind: "noop", Payload: []byte(`{"n":1}`)}
			}
			for start := 0; start < len(ps); start += 1000 {
				for _, r := range client.CreateMany(ctx, ps[start:min(start+1000, len(ps))]) {
					require.NoError(b, r.Err)
				}
			}
			done := make(chan error, 1)
			b.ResetTimer()
			begin := time.Now()
			go func() { done <- w.Run(context.Background()) }()
			<-all
			require.NoError(b, w.Stop(ctx)) // the last completions land
			elapsed := time.Since(begin)
			b.StopTimer()
			require.NoError(b, <-done)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
		})
	}
}
