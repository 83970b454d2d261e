package ffcli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/fftype"
)

// shellWorker runs a command per execution of its lanes, through a server: the payload
// on stdin, stdout as the result, a non-zero exit as a failure (retried per policy).
type shellWorker struct {
	c           *ffclient.Client
	out         io.Writer
	lanes       []string
	caps        []string
	id          string
	instance    string
	concurrency int
	leaseTTL    time.Duration
	argv        []string
	once        bool // handle one execution, then return (for scripts and tests)
}

func newWorkerCommand(out io.Writer) *cobra.Command {
	r := &remote{}
	w := &shellWorker{out: out}
	cmd := &cobra.Command{
		Use:   "worker --lane LANE -- COMMAND [ARGS...]",
		Short: "Run a shell command for each execution of a lane",
		Long: `Claim executions of the given lanes from a server and run COMMAND for each: the
payload arrives on stdin, and FF_EXECUTION_ID, FF_KIND, FF_LANE and FF_ATTEMPT in the
environment. Exit 0 completes the execution with stdout as its result (JSON as it is,
other text as a JSON string); a non-zero exit fails the attempt with the end of stderr as
the reason, and the execution is retried per its policy. The lease is renewed while the
command runs. Ctrl-C stops claiming, stops running commands and hands their executions
back at once.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(w.lanes) == 0 {
				return errors.New("worker: --lane is required")
			}
			if w.concurrency < 1 {
				return errors.New("worker: --concurrency must be at least 1")
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			w.c, w.argv = c, args
			if w.instance == "" {
				host, _ := os.Hostname()
				w.instance = host + "-" + strconv.Itoa(os.Getpid())
			}
			return w.run(cmd.Context())
		},
	}
	r.flags(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&w.lanes, "lane", nil, "lane to work (repeat for several)")
	f.StringSliceVar(&w.caps, "capability", nil, "capabilities this worker holds")
	f.StringVar(&w.id, "worker-id", "shell-worker", "worker id")
	f.StringVar(&w.instance, "instance-id", "", "worker instance id (default host-pid)")
	f.IntVar(&w.concurrency, "concurrency", 1, "commands run at once")
	f.DurationVar(&w.leaseTTL, "lease-ttl", 30*time.Second, "lease length; renewed every third of it")
	f.BoolVar(&w.once, "once", false, "handle one execution and exit")
	return cmd
}

func (w *shellWorker) run(ctx context.Context) error {
	slots := make(chan struct{}, w.concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	fmt.Fprintf(w.out, "worker %s/%s claiming from %v\n", w.id, w.instance, w.lanes)
	for ctx.Err() == nil {
		slots <- struct{}{} // wait for a free slot, then take every other free one
		free := 1
	take:
		for free < cap(slots) {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break take
			}
		}
		leases, err := w.c.ClaimWait(ctx, fftype.ClaimParams{WorkerID: w.id, WorkerInstanceID: w.instance,
			Lanes: w.lanes, Capabilities: w.caps, Count: free, LeaseTTL: fftype.Duration(w.leaseTTL)}, 20*time.Second)
		for range free - len(leases) {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(w.out, "claim failed: %v; retrying\n", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for _, l := range leases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				w.handle(ctx, l)
			}()
		}
		if w.once && len(leases) > 0 {
			wg.Wait()
			return nil
		}
	}
	return nil
}

// handle runs the command for one lease and reports its outcome.
func (w *shellWorker) handle(ctx context.Context, l *fftype.Lease) {
	report := context.WithoutCancel(ctx) // outcomes are reported even while stopping
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go w.renew(runCtx, cancel, l)

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(runCtx, w.argv[0], w.argv[1:]...)
	cmd.Stdin = bytes.NewReader(l.Payload)
	cmd.Stdout, cmd.Stderr = &stdout, &tail{max: 2048, buf: &stderr}
	cmd.Env = append(os.Environ(), "FF_EXECUTION_ID="+string(l.ExecutionID), "FF_KIND="+l.Kind, "FF_LANE="+l.Lane,
		"FF_ATTEMPT="+strconv.Itoa(l.AttemptIndex))
	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		// Stopping: hand the execution back so another worker takes it at once.
		if rerr := w.c.Release(report, l.ExecutionID, l.Fence); rerr != nil {
			fmt.Fprintf(w.out, "%s: release failed: %v\n", l.ExecutionID, rerr)
		}
		fmt.Fprintf(w.out, "%s released (stopping)\n", l.ExecutionID)
	case context.Cause(runCtx) != nil && runCtx.Err() != nil:
		fmt.Fprintf(w.out, "%s stopped: %v\n", l.ExecutionID, context.Cause(runCtx))
	case err != nil:
		reason := err.Error()
		if s := bytes.TrimSpace(stderr.Bytes()); len(s) > 0 {
			reason += ": " + string(s)
		}
		out, ferr := w.c.Fail(report, l.ExecutionID, l.Fence, fftype.FailParams{Reason: truncateReason(reason), Category: "exit"})
		if ferr != nil {
			fmt.Fprintf(w.out, "%s: fail failed: %v\n", l.ExecutionID, ferr)
			return
		}
		fmt.Fprintf(w.out, "%s failed (%s); retry scheduled: %v\n", l.ExecutionID, err, out.RetryScheduled)
	default:
		result, enc := resultOf(stdout.Bytes())
		if cerr := w.c.Complete(report, l.ExecutionID, l.Fence, result, enc); cerr != nil {
			fmt.Fprintf(w.out, "%s: complete failed: %v\n", l.ExecutionID, cerr)
			return
		}
		fmt.Fprintf(w.out, "%s completed\n", l.ExecutionID)
	}
}

// renew keeps the lease alive every third of its TTL; if the lease is lost (expired,
// revoked, cancelled) it stops the command.
func (w *shellWorker) renew(ctx context.Context, stop context.CancelCauseFunc, l *fftype.Lease) {
	t := time.NewTicker(max(l.TTL.D()/3, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := w.c.Renew(ctx, l.ExecutionID, l.Fence, 0)
		var fe *fftype.Error
		if errors.As(err, &fe) && !fe.Retryable {
			stop(fmt.Errorf("lease lost: %w", err))
			return
		}
	}
}

// resultOf turns a command's stdout into a result: JSON as it is, other UTF-8 text as a
// JSON string, anything else as binary.
func resultOf(stdout []byte) ([]byte, fftype.PayloadEncoding) {
	trimmed := bytes.TrimSpace(stdout)
	switch {
	case len(trimmed) == 0:
		return nil, fftype.EncodingJSON
	case json.Valid(trimmed):
		return trimmed, fftype.EncodingJSON
	case utf8.Valid(stdout):
		b, _ := json.Marshal(string(bytes.TrimRight(stdout, "\n")))
		return b, fftype.EncodingJSON
	default:
		return stdout, fftype.EncodingBinary
	}
}

func truncateReason(s string) string {
	if len(s) <= fftype.MaxReasonBytes {
		return s
	}
	return s[:fftype.MaxReasonBytes-3] + "..."
}

// tail keeps the last max bytes written to it.
type tail struct {
	max int
	buf *bytes.Buffer
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}
