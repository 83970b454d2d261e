package ffpostgres_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// envBenchURL names a database to benchmark against; empty starts a throw-away server with
// Postgres's durable defaults (fsync and synchronous_commit on).
const envBenchURL = "FFPOSTGRES_BENCH_URL"

// BenchmarkDrain drains b.N pre-created executions (1 KiB payloads) with 16 workers
// claiming through the engine, and reports tasks/s. It compares the two ways of telling
// other processes about commits: a NOTIFY coalesced after commit (the default) and a
// NOTIFY inside every committing unit, which takes Postgres's database-wide notify lock in
// each commit; and claims of one execution with claims of up to 8 in one unit. The whole
// system benchmark is `flowfabric bench -store postgres://…`.
func BenchmarkDrain(b *testing.B) {
	url := os.Getenv(envBenchURL)
	if url == "" {
		url = testdb.NewPostgres(b, testdb.PostgresOptions{}).URL("postgres")
	}
	for _, mode := range []struct {
		name  string
		inTx  bool
		claim int
	}{{"notify=after-commit/claim=1", false, 1}, {"notify=in-tx/claim=1", true, 1}, {"notify=after-commit/claim=8", false, 8}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			opts := &ffpostgres.Options{Schema: testdb.Schema(b), Migrate: true, PoolSize: 20}
			ffpostgres.SetNotifyInTx(opts, mode.inTx)
			s, err := ffpostgres.Open(ctx, url, opts)
			require.NoError(b, err)
			defer func() {
				_ = ffpostgres.DropSchema(ctx, s.Pool(), s.Schema())
				_ = s.Close()
			}()
			e, err := engine.New(s, nil)
			require.NoError(b, err)
			payload := []byte(`"` + string(make([]byte, 1022)) + `"`)
			for i := range payload[1 : len(payload)-1] {
				payload[i+1] = 'x'
			}
			ps := make([]fftype.CreateParams, b.N)
			for i := range ps {
				ps[i] = fftype.CreateParams{Lane: workLane, Kind: "bench", Payload: payload}
			}
			for _, r := range e.CreateMany(ctx, ps) {
				require.NoError(b, r.Err)
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for w := range 16 {
				wg.Go(func() {
					for {
						ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "bench", WorkerInstanceID: "w" + strconv.Itoa(w),
							Lanes: []string{workLane}, Count: mode.claim})
						if err != nil {
							errs <- err
							return
						}
						if len(ls) == 0 {
							return
						}
						for _, l := range ls {
							if err := e.Complete(ctx, l.ExecutionID, l.Fence, nil, ""); err != nil {
								errs <- err
								return
							}
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				require.NoError(b, err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
		})
	}
}
