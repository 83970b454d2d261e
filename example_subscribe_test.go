package flowfabric_test

import (
	"context"
	"fmt"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// Example_subscribe follows the event log of one execution while it runs.
func Example_subscribe() {
	ctx := context.Background()
	client, err := flowfabric.NewClient(ffmem.New(nil), nil)
	if err != nil {
		panic(err)
	}
	res, err := client.Create(ctx, flowfabric.CreateParams{Lane: "email", Kind: "send_welcome"})
	if err != nil {
		panic(err)
	}
	sub, err := client.Subscribe(ctx, flowfabric.EventFilter{ExecutionID: res.ID}, flowfabric.CursorStart)
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	leases, err := client.Claim(ctx, flowfabric.ClaimParams{WorkerID: "mailer", WorkerInstanceID: "mailer-1", Lanes: []string{"email"}})
	if err != nil {
		panic(err)
	}
	if err := client.Complete(ctx, res.ID, leases[0].Fence, nil, ""); err != nil {
		panic(err)
	}
	for d := range sub.Events() {
		fmt.Println(d.Event.Type)
		if d.Event.Type == "completed" {
			break
		}
	}
	// Output:
	// created
	// claimed
	// completed
}
