// Package ffcli holds the flowfabric command's commands. Each writes to the writer it is
// given, so tests read what a user would see.
package ffcli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
)

// Run runs the command line args (without the program name), writing to out.
func Run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("flowfabric", flag.ContinueOnError)
	fs.SetOutput(out)
	n := fs.Int("n", 5, "how many executions the demo runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *n > 10_000 {
		return fmt.Errorf("-n must be between 1 and 10000, not %d", *n)
	}
	return Demo(ctx, out, *n)
}

// Demo creates n executions, claims them as a worker and completes them (the first one
// fails once and is retried after a short backoff), printing what happens.
func Demo(ctx context.Context, out io.Writer, n int) error {
	store := ffmem.New(nil)
	defer store.Close()
	client, err := flowfabric.NewClient(store, &flowfabric.Config{TimerPollInterval: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	client.Start(ctx)
	defer client.Stop()

	fmt.Fprintf(out, "FlowFabric demo: %d executions on the in-memory store (%d shards)\n", n, store.Shards())
	retry := &flowfabric.RetryPolicy{MaxRetries: 2, Backoff: flowfabric.Backoff{Kind: "fixed", Initial: flowfabric.Duration(100 * time.Millisecond)}}
	var ps []flowfabric.CreateParams
	for i := 1; i <= n; i++ {
		payload, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("friend-%d", i)})
		ps = append(ps, flowfabric.CreateParams{Lane: "demo", Kind: "greet", Payload: payload,
			Policy: flowfabric.Policy{Retry: retry}})
	}
	for _, r := range client.CreateMany(ctx, ps) {
		if r.Err != nil {
			return r.Err
		}
	}
	fmt.Fprintf(out, "created %d executions in lane \"demo\"\n", n)

	done, failedOnce := 0, false
	deadline := time.Now().Add(30 * time.Second)
	for done < n {
		if time.Now().After(deadline) {
			return errors.New("demo: executions did not finish within 30s")
		}
		leases, err := client.Claim(ctx, flowfabric.ClaimParams{WorkerID: "demo-worker",
			WorkerInstanceID: "demo-worker-1", Lanes: []string{"demo"}, Count: 10})
		if err != nil {
			return err
		}
		if len(leases) == 0 {
			select { // the retried execution is waiting out its backoff
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		for _, l := range leases {
			var in struct{ Name string }
			if err := json.Unmarshal(l.Payload, &in); err != nil {
				return err
			}
			if !failedOnce {
				failedOnce = true
				out1, err := client.Fail(ctx, l.ExecutionID, l.Fence, flowfabric.FailParams{Reason: "flaky network (on purpose)"})
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "%s attempt %d failed; retry scheduled: %v\n", l.ExecutionID, l.AttemptIndex, out1.RetryScheduled)
				continue
			}
			result, _ := json.Marshal(map[string]string{"greeting": "hello, " + in.Name})
			if err := client.Complete(ctx, l.ExecutionID, l.Fence, result, ""); err != nil {
				return err
			}
			done++
			fmt.Fprintf(out, "%s attempt %d (%s) completed: %s\n", l.ExecutionID, l.AttemptIndex, l.AttemptType, result)
		}
	}
	page, err := client.List(ctx, flowfabric.ListParams{Lane: "demo", State: flowfabric.StateCompleted, Limit: 1000})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "done: %d of %d executions completed\n", len(page.Executions), n)
	return nil
}
