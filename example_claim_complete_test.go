package flowfabric_test

import (
	"context"
	"fmt"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// Example_claimComplete creates an execution, claims it as a worker and completes it.
func Example_claimComplete() {
	ctx := context.Background()
	client, err := flowfabric.NewClient(ffmem.New(nil), nil)
	if err != nil {
		panic(err)
	}

	res, err := client.Create(ctx, flowfabric.CreateParams{
		Lane: "email", Kind: "send_welcome", Payload: []byte(`{"user":42}`),
	})
	if err != nil {
		panic(err)
	}

	leases, err := client.Claim(ctx, flowfabric.ClaimParams{
		WorkerID: "mailer", WorkerInstanceID: "mailer-1", Lanes: []string{"email"},
	})
	if err != nil {
		panic(err)
	}
	l := leases[0]
	fmt.Println("claimed", l.Kind, string(l.Payload), "attempt", l.AttemptIndex)

	if err := client.Complete(ctx, l.ExecutionID, l.Fence, []byte(`{"sent":true}`), ""); err != nil {
		panic(err)
	}
	x, err := client.Get(ctx, res.ID)
	if err != nil {
		panic(err)
	}
	result, err := client.Result(ctx, res.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(x.PublicState(), string(result))

	// Output:
	// claimed send_welcome {"user":42} attempt 0
	// completed {"sent":true}
}
