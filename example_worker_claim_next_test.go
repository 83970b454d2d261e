package flowfabric_test

import (
	"context"
	"fmt"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// Example_workerClaimNext drives a worker by hand, as the original SDK's loop does: claim,
// work, finish; nil means nothing was eligible (or the worker is at capacity).
func Example_workerClaimNext() {
	ctx := context.Background()
	client, err := flowfabric.NewClient(ffmem.New(nil), nil)
	if err != nil {
		panic(err)
	}
	w, err := flowfabric.NewWorker(ctx, client, &flowfabric.WorkerConfig{
		WorkerID: "resizer", WorkerInstanceID: "resizer-1", Lanes: []string{"images"}, MaxConcurrentTasks: 2,
	}, nil)
	if err != nil {
		panic(err)
	}
	defer w.Close(ctx)

	for i, name := range []string{"a.png", "b.png", "c.png"} {
		_, err := client.Create(ctx, flowfabric.CreateParams{Lane: "images", Kind: "resize",
			Payload: []byte(fmt.Sprintf("%q", name)), Priority: 3 - i})
		if err != nil {
			panic(err)
		}
	}
	for {
		task, err := w.ClaimNext(ctx)
		if err != nil {
			panic(err)
		}
		if task == nil {
			break
		}
		fmt.Println(task.Kind(), string(task.Payload()), "attempt", task.Attempt())
		if err := task.Complete(ctx, []byte(`{"ok":true}`)); err != nil {
			panic(err)
		}
	}

	// Output:
	// resize "a.png" attempt 0
	// resize "b.png" attempt 0
	// resize "c.png" attempt 0
}
