package ffcli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestWorkersCommandAndRemoteWorker runs a Go worker on another "machine" — over HTTP
// against the real server command, with the server's clock — and lists it with the
// workers command.
func TestWorkersCommandAndRemoteWorker(t *testing.T) {
	t.Parallel()
	base := startServer(t, "tok")
	remote, err := ffclient.New(base, &ffclient.Config{Token: "tok"})
	require.NoError(t, err)
	ctx := t.Context()
	open := func(instance string, lanes, caps []string) *flowfabric.Worker {
		w, err := flowfabric.NewWorker(ctx, remote, &flowfabric.WorkerConfig{WorkerID: "greeter", WorkerInstanceID: instance,
			Lanes: lanes, Capabilities: caps, LeaseTTL: 3 * time.Second}, nil)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) }) // before the server stops
		return w
	}
	w := open("host-a-1", []string{"greet", "audit"}, []string{"gpu", "eu"})
	open("host-b-1", []string{"greet"}, nil)

	out := cli(t, "workers", "--server", base, "--token", "tok")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	require.Equal(t, []string{"INSTANCE", "WORKER", "NAMESPACE", "LANES", "CAPABILITIES", "LAST", "HEARTBEAT"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"host-a-1", "greeter", "default", "audit,greet", "eu,gpu"}, strings.Fields(lines[1])[:5])
	require.Equal(t, []string{"host-b-1", "greeter", "default", "greet", "-"}, strings.Fields(lines[2])[:5])
	_, err = time.Parse(time.RFC3339, strings.Fields(lines[1])[5])
	require.NoError(t, err, "the last heartbeat is a time")

	out = cli(t, "workers", "--server", base, "--token", "tok", "--limit", "1")
	require.Contains(t, out, "host-a-1")
	require.NotContains(t, out, "host-b-1")
	require.Contains(t, out, "more: --cursor host-a-1")
	out = cli(t, "workers", "--server", base, "--token", "tok", "--cursor", "host-a-1", "--json")
	var page flowfabric.WorkerPage
	require.NoError(t, json.Unmarshal([]byte(out), &page))
	require.Len(t, page.Workers, 1)
	require.Equal(t, "host-b-1", page.Workers[0].InstanceID)
	out = cli(t, "workers", "--server", base, "--token", "tok", "--namespace", "other")
	require.Equal(t, "no live workers in namespace \"other\"\n", out)

	var buf bytes.Buffer
	root := NewRootCommand(&buf)
	root.SetArgs([]string{"workers", "--server", base, "--token", "tok", "--limit", "-3"})
	require.ErrorIs(t, root.ExecuteContext(ctx), fftype.ErrValidation, "bad input is the server's validation error")

	// The remote worker works: an execution submitted with the CLI runs in its handler.
	ran := make(chan flowfabric.ExecutionID, 1)
	flowfabric.Handle(w, "hello", func(ctx context.Context, t *flowfabric.Task[struct{ Name string }]) error {
		if err := t.Complete(ctx, []byte(`{"greeting":"hello `+t.Args.Name+`"}`)); err != nil {
			return err
		}
		ran <- t.ExecutionID()
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	out = cli(t, "exec", "submit", "--server", base, "--token", "tok", "--lane", "audit", "--kind", "hello", "--payload", `{"Name":"Ada"}`)
	id := strings.Fields(out)[0]
	select {
	case got := <-ran:
		require.Equal(t, id, string(got))
	case <-time.After(30 * time.Second):
		t.Fatal("the remote worker never ran the execution")
	}
	require.NoError(t, w.Stop(ctx))
	require.NoError(t, <-done)
	out = cli(t, "exec", "result", "--server", base, "--token", "tok", id)
	require.JSONEq(t, `{"greeting":"hello Ada"}`, strings.TrimSpace(out))
}
