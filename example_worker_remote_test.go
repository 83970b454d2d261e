package flowfabric_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// Example_remoteWorker runs the same worker on another machine than the engine: it talks
// to a FlowFabric server over HTTP through an ffclient.Client, which is a
// flowfabric.Backend like the in-process *Client. Handlers, renewal, cancellation and
// shutdown behave as in process.
func Example_remoteWorker() {
	ctx := context.Background()

	// The server's machine: an engine on its store, served over HTTP (what
	// "flowfabric server" runs).
	engine, _ := flowfabric.NewClient(ffmem.New(nil), nil)
	srv, _ := ffserver.New(engine, ffserver.Config{Token: "s3cret"})
	hs := httptest.NewServer(srv)
	defer hs.Close()

	// The worker's machine needs only the server's URL and token.
	remote, _ := ffclient.New(hs.URL, &ffclient.Config{Token: "s3cret"})
	w, err := flowfabric.NewWorker(ctx, remote, &flowfabric.WorkerConfig{WorkerID: "mailer", Lanes: []string{"email"}}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close(ctx) // releases leases and deregisters, before the server goes

	sent := make(chan struct{})
	flowfabric.Handle(w, "send_welcome", func(ctx context.Context, t *flowfabric.Task[Welcome]) error {
		fmt.Println("welcome, user", t.Args.User)
		close(sent)
		return nil
	})
	go w.Run(ctx)

	res, _ := remote.Create(ctx, flowfabric.CreateParams{Lane: "email", Kind: "send_welcome", Payload: []byte(`{"user":7}`)})
	<-sent
	_ = w.Stop(ctx)
	x, _ := remote.Get(ctx, res.ID)
	fmt.Println(x.PublicState())
	page, _ := remote.ListWorkers(ctx, flowfabric.WorkerListParams{})
	fmt.Println(len(page.Workers), "worker registered:", page.Workers[0].WorkerID)

	// Output:
	// welcome, user 7
	// completed
	// 1 worker registered: mailer
}
