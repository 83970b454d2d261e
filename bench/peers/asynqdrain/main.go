// Command asynqdrain is BENCHMARKS.md's drain scenario on Asynq, the peer the Redis store
// is compared with: it seeds n tasks with a payload of the given size (64 concurrent
// Enqueue calls, Asynq having no bulk insert), then starts a server with the given
// concurrency and reports tasks per second from the start until Asynq has acknowledged
// the last one. Run it beside the Redis store's BenchmarkDrain or
// `flowfabric bench -store redis://…` on the same server, alternating:
//
//	go run ./asynqdrain -addr localhost:6379 -n 100000
//
// It deletes Asynq's default queue first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
)

func main() {
	addr := flag.String("addr", "localhost:6379", "the Redis address")
	n := flag.Int("n", 100_000, "tasks to seed and drain")
	workers := flag.Int("workers", 16, "the server's concurrency")
	size := flag.Int("payload", 4096, "the size of each task's payload, in bytes")
	flag.Parse()
	if *n < 1 || *workers < 1 || *size < 2 {
		log.Fatal("asynqdrain: need n ≥ 1, workers ≥ 1 and payload ≥ 2")
	}
	if err := run(asynq.RedisClientOpt{Addr: *addr}, *n, *workers, *size); err != nil {
		log.Fatal("asynqdrain: ", err)
	}
}

func run(opt asynq.RedisClientOpt, n, workers, size int) error {
	inspector := asynq.NewInspector(opt)
	defer inspector.Close()
	if err := inspector.DeleteQueue("default", true); err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		return err
	}
	client := asynq.NewClient(opt)
	defer client.Close()

	payload := []byte(`"` + strings.Repeat("x", size-2) + `"`)
	start := time.Now()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && failed.Load() == nil {
				if _, err := client.Enqueue(asynq.NewTask("drain", payload)); err != nil {
					failed.Store(&err)
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	seed := time.Since(start)

	var done atomic.Int64
	last := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("drain", func(context.Context, *asynq.Task) error {
		if done.Add(1) == int64(n) {
			close(last)
		}
		return nil
	})
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: workers, LogLevel: asynq.WarnLevel})
	start = time.Now()
	if err := srv.Start(mux); err != nil {
		return err
	}
	defer srv.Shutdown()
	<-last
	for { // the last handler returned; wait for Asynq to acknowledge it
		q, err := inspector.GetQueueInfo("default")
		if err != nil {
			return err
		}
		if q.Active == 0 && q.Pending == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	drain := time.Since(start)
	fmt.Printf("asynq %s: %d tasks of %d bytes, %d workers: seed %.0f/s, drain %.0f/s\n",
		"v0.26.0", n, size, workers, float64(n)/seed.Seconds(), float64(n)/drain.Seconds())
	return nil
}
