package ffvalkey_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/internal/bench"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// BenchmarkDrain is BENCHMARKS.md's submit-claim-complete on this store beside a raw
// Redis baseline measured in the same run, on one throw-away server with
// --appendonly yes --appendfsync everysec: FF_BENCH_N executions (default 100,000) with
// 4 KiB payloads are seeded in bulk and drained by 16 workers claiming one at a time, and
// the baseline RPUSHes as many 4 KiB values in chunks of 1,000 and drains them with 16
// connections doing BLMPOP COUNT 1 + INCR. Each of FF_BENCH_RUNS runs (default 5) does
// both; the medians are reported, with their ratio and the server's CPU per task.
// FF_BENCH_PROFILE names a file for a CPU profile of the first drain. Run it alone:
//
//	go test -run - -bench Drain -benchtime 1x ./ffstore/ffvalkey/
func BenchmarkDrain(b *testing.B) {
	n := benchEnvInt("FF_BENCH_N", 100_000)
	runs := benchEnvInt("FF_BENCH_RUNS", 5)
	workers := benchEnvInt("FF_BENCH_WORKERS", 16)
	srv := testdb.NewRedis(b, testdb.RedisOptions{Args: []string{"--appendonly", "yes", "--appendfsync", "everysec"}})
	ctx := context.Background()
	var raws, ours, cpus []float64
	for run := range runs {
		raw := rawBaseline(ctx, b, srv.Addr, n, 4096, workers)
		s, err := ffvalkey.Open(ctx, srv.URL(0), &ffvalkey.Options{KeyPrefix: "bench" + strconv.Itoa(run)})
		require.NoError(b, err)
		c, err := flowfabric.NewClient(s, nil)
		require.NoError(b, err)
		cfg := bench.DrainConfig{N: n, Workers: workers, PayloadBytes: 4096, Pipeline: true}
		var cpu0, cpu1 float64
		cfg.DrainStarted = func() { cpu0 = serverCPU(ctx, b, srv.Addr) }
		cfg.DrainDone = func() { cpu1 = serverCPU(ctx, b, srv.Addr) }
		if p := os.Getenv("FF_BENCH_PROFILE"); p != "" && run == 0 {
			f, err := os.Create(p)
			require.NoError(b, err)
			started, done := cfg.DrainStarted, cfg.DrainDone
			cfg.DrainStarted = func() { started(); _ = pprof.StartCPUProfile(f) }
			cfg.DrainDone = func() { pprof.StopCPUProfile(); _ = f.Close(); done() }
		}
		r, err := bench.Drain(ctx, c, cfg)
		require.NoError(b, err)
		require.NoError(b, s.Drop(ctx))
		require.NoError(b, s.Close())
		cpu := (cpu1 - cpu0) / float64(n) * 1e6
		raws, ours, cpus = append(raws, raw), append(ours, r.PerSec), append(cpus, cpu)
		fmt.Printf("run %d: raw %.0f/s, ffvalkey %.0f/s (ratio %.3f; seed %.0f/s; claim p50 %.2f ms p99 %.2f ms; complete p50 %.2f ms p99 %.2f ms; server CPU %.0f µs/task, %.0f%% of a core; %d retried errors)\n",
			run+1, raw, r.PerSec, r.PerSec/raw, r.SeedPerSec, r.Claim.P50, r.Claim.P99, r.Complete.P50, r.Complete.P99,
			cpu, (cpu1-cpu0)/r.Drain.Seconds()*100, r.Errors)
	}
	raw, our := bench.Median(raws), bench.Median(ours)
	fmt.Printf("median of %d runs of %d executions: raw %.0f/s, ffvalkey %.0f/s, ratio %.3f, server CPU %.0f µs/task\n",
		runs, n, raw, our, our/raw, bench.Median(cpus))
	b.ReportMetric(our, "tasks/s")
	b.ReportMetric(raw, "raw/s")
	b.ReportMetric(our/raw, "ratio")
}

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// rawBaseline pushes n values of size bytes onto a list in chunks of 1,000, then drains
// them with workers connections doing BLMPOP COUNT 1 + INCR, and returns the drain's
// rate.
func rawBaseline(ctx context.Context, tb testing.TB, addr string, n, size, workers int) float64 {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, ForceSingleClient: true})
	require.NoError(tb, err)
	defer client.Close()
	key := "raw:" + strconv.FormatInt(time.Now().UnixNano(), 36)
	payload := string(bench.Payload(size, ""))
	for start := 0; start < n; start += 1000 {
		vals := make([]string, 0, 1000)
		for range min(1000, n-start) {
			vals = append(vals, payload)
		}
		require.NoError(tb, client.Do(ctx, client.B().Rpush().Key(key).Element(vals...).Build()).Error())
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range workers {
		wg.Go(func() {
			c, cancel := client.Dedicate() // a connection of its own, as each worker would have
			defer cancel()
			for done.Load() < int64(n) {
				res := c.Do(ctx, c.B().Blmpop().Timeout(0.05).Numkeys(1).Key(key).Left().Count(1).Build())
				if rueidis.IsRedisNil(res.Error()) {
					continue
				}
				require.NoError(tb, res.Error())
				require.NoError(tb, c.Do(ctx, c.B().Incr().Key(key+":done").Build()).Error())
				done.Add(1)
			}
		})
	}
	wg.Wait()
	rate := float64(n) / time.Since(begin).Seconds()
	require.NoError(tb, client.Do(ctx, client.B().Del().Key(key, key+":done").Build()).Error())
	return rate
}

// serverCPU returns the CPU seconds the server has used.
func serverCPU(ctx context.Context, tb testing.TB, addr string) float64 {
	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, ForceSingleClient: true})
	require.NoError(tb, err)
	defer cl.Close()
	st, err := cl.Do(ctx, cl.B().Info().Section("cpu").Build()).ToString()
	require.NoError(tb, err)
	var total float64
	for _, line := range strings.Split(st, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}

// BenchmarkIdleQueueHeads measures what an idle claim costs the server each time the
// heads of its lane are read again (every headsTTL, or after a wake-up): a store of 16
// shards, each holding a timer queue but nothing in the lane's eligible queues. It
// reports the server commands per read beside the time. Run it alone:
//
//	go test -run - -bench IdleQueueHeads -benchtime 2000x ./ffstore/ffvalkey/
func BenchmarkIdleQueueHeads(b *testing.B) {
	srv := testdb.NewRedis(b, testdb.RedisOptions{})
	ctx := context.Background()
	s, err := ffvalkey.Open(ctx, srv.URL(0), &ffvalkey.Options{Shards: 16})
	require.NoError(b, err)
	b.Cleanup(func() { _ = s.Close() })
	for shard := range s.Shards() {
		require.NoError(b, s.Update(ctx, shard, func(tx ffstore.Tx) error {
			tx.QueueAdd("t:lease", "x", 1)
			tx.QueueAdd("e:lane:ns:", "y", 1)
			return nil
		}))
		require.NoError(b, s.Update(ctx, shard, func(tx ffstore.Tx) error {
			_, err := tx.PopDue("e:lane:ns:", ffstore.MaxScore, 1)
			return err
		}))
	}
	prefixes := []string{"e:lane:"}
	heads, err := s.QueueHeads(ctx, prefixes)
	require.NoError(b, err)
	require.Empty(b, heads)
	before := serverCommands(ctx, b, srv.Addr)
	b.ResetTimer()
	for range b.N {
		ffvalkey.ExpireHeads(s)
		if _, err := s.QueueHeads(ctx, prefixes); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(serverCommands(ctx, b, srv.Addr)-before-1)/float64(b.N), "commands/op")
}

// serverCommands returns the number of commands the server has processed.
func serverCommands(ctx context.Context, tb testing.TB, addr string) int64 {
	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, ForceSingleClient: true})
	require.NoError(tb, err)
	defer cl.Close()
	st, err := cl.Do(ctx, cl.B().Info().Section("stats").Build()).ToString()
	require.NoError(tb, err)
	for _, line := range strings.Split(st, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	tb.Fatal("INFO stats has no total_commands_processed")
	return 0
}
