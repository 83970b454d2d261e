package flowfabric_test

import (
	"context"
	"fmt"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// Welcome is the payload of a send_welcome execution.
type Welcome struct {
	User int `json:"user"`
}

// Example_worker is the ten-line worker: a typed handler for one kind, run by the worker's
// runtime loop, which claims, renews, completes and shuts down.
func Example_worker() {
	ctx := context.Background()
	client, _ := flowfabric.NewClient(ffmem.New(nil), nil)
	w, _ := flowfabric.NewWorker(ctx, client, &flowfabric.WorkerConfig{WorkerID: "mailer", Lanes: []string{"email"}}, nil)
	defer w.Close(ctx)

	sent := make(chan struct{})
	flowfabric.Handle(w, "send_welcome", func(ctx context.Context, t *flowfabric.Task[Welcome]) error {
		fmt.Println("welcome, user", t.Args.User)
		close(sent)
		return nil // completes the execution; an error would fail it and retry per policy
	})
	go w.Run(ctx)

	res, _ := client.Create(ctx, flowfabric.CreateParams{Lane: "email", Kind: "send_welcome", Payload: []byte(`{"user":42}`)})
	<-sent
	_ = w.Stop(ctx) // waits for running handlers and their completions
	x, _ := client.Get(ctx, res.ID)
	fmt.Println(x.PublicState())

	// Output:
	// welcome, user 42
	// completed
}
