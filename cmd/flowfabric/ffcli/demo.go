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
	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/fftype"
)

// DefaultDemoDB is the SQLite file the demo uses, in the working directory.
const DefaultDemoDB = "flowfabric-demo.db"

func demoCommand(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("flowfabric demo", flag.ContinueOnError)
	fs.SetOutput(out)
	n := fs.Int("n", 5, "how many executions the demo runs")
	db := fs.String("db", DefaultDemoDB, "the SQLite file to run on; created if missing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *n < 1 || *n > 10_000 {
		return fmt.Errorf("-n must be between 1 and 10000, not %d", *n)
	}
	return Demo(ctx, out, *db, *n)
}

// Demo creates n executions in the SQLite file at path, claims them as a worker and
// completes them (the first one fails once and is retried after a short backoff),
// printing what happens. Each run uses a lane of its own, so a file that already holds
// earlier runs' executions works too and only this run's are reported.
func Demo(ctx context.Context, out io.Writer, path string, n int) error {
	store, err := ffsqlite.Open(ctx, path, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	client, err := flowfabric.NewClient(store, &flowfabric.Config{TimerPollInterval: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	client.Start(ctx)
	defer client.Stop() // before store.Close: defers run last-in first-out

	lane := "demo-" + fftype.NewUUID()[24:] // the UUID's random tail: a lane per run
	fmt.Fprintf(out, "FlowFabric demo: %d executions on the SQLite file %s\n", n, store.Path())
	retry := &flowfabric.RetryPolicy{MaxRetries: 2, Backoff: flowfabric.Backoff{Kind: "fixed", Initial: flowfabric.Duration(100 * time.Millisecond)}}
	var ps []flowfabric.CreateParams
	for i := 1; i <= n; i++ {
		payload, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("friend-%d", i)})
		ps = append(ps, flowfabric.CreateParams{Lane: lane, Kind: "greet", Payload: payload,
			Policy: flowfabric.Policy{Retry: retry}})
	}
	var ids []flowfabric.ExecutionID
	for _, r := range client.CreateMany(ctx, ps) {
		if r.Err != nil {
			return r.Err
		}
		ids = append(ids, r.Result.ID)
	}
	fmt.Fprintf(out, "created %d executions in lane %q\n", n, lane)

	done, failedOnce := 0, false
	deadline := time.Now().Add(30 * time.Second)
	for done < n {
		if time.Now().After(deadline) {
			return errors.New("demo: executions did not finish within 30s")
		}
		leases, err := client.Claim(ctx, flowfabric.ClaimParams{WorkerID: "demo-worker",
			WorkerInstanceID: "demo-worker-1", Lanes: []string{lane}, Count: 10})
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
	// Read back what the file now says about this run's executions.
	completed := 0
	for _, id := range ids {
		x, err := client.Get(ctx, id)
		if err != nil {
			return err
		}
		if x.PublicState() == flowfabric.StateCompleted {
			completed++
		}
	}
	fmt.Fprintf(out, "done: %d of %d executions completed (stored in %s)\n", completed, n, store.Path())
	return nil
}
