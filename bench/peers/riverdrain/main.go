// Command riverdrain is BENCHMARKS.md's drain scenario on River, the peer the Postgres
// store is compared with: it seeds n jobs with a JSON payload of the given size in bulk
// (InsertMany, 1,000 at a time), then starts a River client with the given number of
// workers and the fetch settings `river bench` uses (cooldown 2 ms, poll 20 ms), and
// reports jobs per second from the start until River has recorded every completion.
// Run it beside `flowfabric bench -store postgres://…` on the same server, alternating,
// since absolute figures drift on a shared machine:
//
//	go run ./riverdrain -url 'postgres://…' -n 100000
//
// It migrates River's tables into the database's search path and truncates river_job.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// drainArgs is the job: a payload, no work.
type drainArgs struct {
	Data string `json:"data"`
}

func (drainArgs) Kind() string { return "drain" }

// drainWorker counts the jobs it works and says when the last one is done.
type drainWorker struct {
	river.WorkerDefaults[drainArgs]
	worked *atomic.Int64
	n      int64
	last   chan struct{}
}

func (w drainWorker) Work(context.Context, *river.Job[drainArgs]) error {
	if w.worked.Add(1) == w.n {
		close(w.last)
	}
	return nil
}

func main() {
	url := flag.String("url", "", "the Postgres URL (required)")
	n := flag.Int("n", 100_000, "jobs to seed and drain")
	workers := flag.Int("workers", 16, "River's MaxWorkers for the queue")
	size := flag.Int("payload", 4096, "the size of each job's JSON arguments, in bytes")
	flag.Parse()
	if *url == "" || *n < 1 || *workers < 1 || *size < 16 {
		log.Fatal("riverdrain: need -url, n ≥ 1, workers ≥ 1 and payload ≥ 16")
	}
	if err := run(context.Background(), *url, *n, *workers, *size); err != nil {
		log.Fatal("riverdrain: ", err)
	}
}

func run(ctx context.Context, url string, n, workers, size int) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "TRUNCATE river_job"); err != nil {
		return err
	}
	last := make(chan struct{})
	ws := river.NewWorkers()
	river.AddWorker(ws, drainWorker{worked: new(atomic.Int64), n: int64(n), last: last})
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers:           ws,
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		return err
	}

	data := strings.Repeat("x", size-len(`{"data":""}`))
	start := time.Now()
	for from := 0; from < n; from += 1000 {
		batch := make([]river.InsertManyParams, min(1000, n-from))
		for i := range batch {
			batch[i] = river.InsertManyParams{Args: drainArgs{Data: data}}
		}
		if _, err := client.InsertMany(ctx, batch); err != nil {
			return err
		}
	}
	seed := time.Since(start)

	start = time.Now()
	if err := client.Start(ctx); err != nil {
		return err
	}
	<-last
	for { // the last job was worked; wait until River has recorded every completion
		var left int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state <> 'completed'").Scan(&left); err != nil {
			return err
		}
		if left == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	drain := time.Since(start)
	fmt.Printf("river %s: %d jobs of %d bytes, %d workers: seed %.0f/s, drain %.0f/s\n",
		"v0.51.2", n, size, workers, float64(n)/seed.Seconds(), float64(n)/drain.Seconds())
	return client.Stop(ctx)
}
