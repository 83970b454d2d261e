package flowfabric_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// Example_workerShutdown shows the control-flow errors and a graceful shutdown: a handler
// that snoozes, and one cut short by the shutdown whose execution is released — eligible
// at once for another worker, counting no retry. A program would start the shutdown from
// signal.NotifyContext(ctx, os.Interrupt) instead of a channel.
func Example_workerShutdown() {
	ctx := context.Background()
	client, _ := flowfabric.NewClient(ffmem.New(nil), nil)
	w, _ := flowfabric.NewWorker(ctx, client, &flowfabric.WorkerConfig{
		WorkerID: "reports", Lanes: []string{"reports"}, MaxConcurrentTasks: 2,
	}, nil)
	defer w.Close(ctx)

	busy := make(chan struct{}, 2)
	flowfabric.Handle(w, "render", func(ctx context.Context, t *flowfabric.Task[string]) error {
		if t.Args == "not yet" {
			busy <- struct{}{}
			return flowfabric.Snooze(time.Hour) // run again in an hour, same attempt
		}
		busy <- struct{}{}
		<-ctx.Done() // a long render, until the worker stops
		if errors.Is(context.Cause(ctx), flowfabric.ErrWorkerStopped) {
			fmt.Println("render interrupted by the shutdown")
		}
		return ctx.Err()
	})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	snoozed, _ := client.Create(ctx, flowfabric.CreateParams{Lane: "reports", Kind: "render", Payload: []byte(`"not yet"`)})
	long, _ := client.Create(ctx, flowfabric.CreateParams{Lane: "reports", Kind: "render", Payload: []byte(`"q3"`)})
	<-busy
	<-busy

	// Give running handlers ten seconds, then cancel them and release their leases.
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = w.StopAndCancel(stopCtx)
	fmt.Println("Run returned:", <-done)

	for _, id := range []flowfabric.ExecutionID{snoozed.ID, long.ID} {
		x, _ := client.Get(ctx, id)
		fmt.Println(x.PublicState(), "retries:", x.RetryCount)
	}

	// Output:
	// render interrupted by the shutdown
	// Run returned: <nil>
	// delayed retries: 0
	// waiting retries: 0
}
