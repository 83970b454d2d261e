package ffcli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/fftype"
)

// shellWorker runs a command per execution of its lanes, through a server: the payload
// on stdin, stdout as the result, a non-zero exit as a failure (retried per policy). It is
// a [flowfabric.Worker] over HTTP, so it registers in the worker registry, heartbeats,
// renews its leases and deregisters as every SDK worker does.
type shellWorker struct {
	c           *ffclient.Client
	out         io.Writer // what it does: claims, outcomes
	errOut      io.Writer // what went wrong: calls that failed, the SDK worker's log
	lanes       []string
	caps        []string
	id          string
	instance    string
	concurrency int
	leaseTTL    time.Duration
	argv        []string
	once        bool // handle one execution, then return (for scripts and tests)
}

// claimWait is how long one claim waits on the server for work.
const claimWait = 20 * time.Second

func newWorkerCommand(out io.Writer) *cobra.Command {
	r := &remote{}
	w := &shellWorker{out: out}
	cmd := &cobra.Command{
		Use:   "worker --lane LANE -- COMMAND [ARGS...]",
		Short: "Run a shell command for each execution of a lane",
		Long: `Claim executions of the given lanes from a server and run COMMAND for each: the
payload arrives on stdin, and FF_EXECUTION_ID, FF_KIND, FF_LANE and FF_ATTEMPT in the
environment. Exit 0 completes the execution with stdout as its result (JSON as it is,
other text as a JSON string, other bytes as binary); a non-zero exit fails the attempt
with the end of stderr as the reason, and the execution is retried per its policy. The
lease is renewed while the command runs. If the execution is cancelled or the lease is
lost, the command is stopped with every process it started (it runs in a process group of
its own): SIGTERM, then SIGKILL to what is left a second later. The worker registers its
instance with the server while it runs ("flowfabric workers" lists it). Ctrl-C stops
claiming, stops running commands and hands their executions back at once; a command that
had already exited keeps its outcome. A COMMAND that cannot be found is refused before
anything is claimed. With --once the worker exits with status 0 only if the execution it
handled completed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(w.lanes) == 0 {
				return errors.New("worker: --lane is required")
			}
			if w.concurrency < 1 {
				return errors.New("worker: --concurrency must be at least 1")
			}
			if _, err := exec.LookPath(args[0]); err != nil {
				return fmt.Errorf("worker: the command to run for each execution: %w", err)
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			w.c, w.argv, w.errOut = c, args, cmd.ErrOrStderr()
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
	f.StringVar(&w.instance, "instance-id", "", "worker instance id, unique among live workers (default host-pid)")
	f.IntVar(&w.concurrency, "concurrency", 1, "commands run at once")
	f.DurationVar(&w.leaseTTL, "lease-ttl", 30*time.Second, "lease length; renewed every third of it")
	f.BoolVar(&w.once, "once", false, "handle one execution and exit, with status 0 only if it completed")
	return cmd
}

// longPoll is the shell worker's backend: the server's client, with claims that wait on
// the server for work.
type longPoll struct {
	*ffclient.Client
}

// Claim claims like [ffclient.Client.ClaimWait], waiting up to claimWait.
func (b longPoll) Claim(ctx context.Context, p fftype.ClaimParams) ([]*fftype.Lease, error) {
	return b.ClaimWait(ctx, p, claimWait)
}

func (w *shellWorker) run(ctx context.Context) error {
	// Commands and the worker's log print concurrently.
	w.out, w.errOut = &lockedWriter{w: w.out}, &lockedWriter{w: w.errOut}
	wk, err := flowfabric.NewWorker(ctx, longPoll{w.c}, &flowfabric.WorkerConfig{WorkerID: w.id, WorkerInstanceID: w.instance,
		Lanes: w.lanes, Capabilities: w.caps, LeaseTTL: w.leaseTTL, MaxConcurrentTasks: w.concurrency,
		Logger: slog.New(slog.NewTextHandler(w.errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))}, nil)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer func() {
		// Releases what is still held and deregisters, so the instance id is free at once.
		if cerr := wk.Close(context.WithoutCancel(ctx)); cerr != nil {
			fmt.Fprintf(w.errOut, "closing the worker: %v\n", cerr)
		}
	}()
	fmt.Fprintf(w.out, "worker %s/%s claiming from %v\n", w.id, w.instance, w.lanes)
	slots := make(chan struct{}, w.concurrency) // a token per command running
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return w.stopped(ctx)
		case slots <- struct{}{}:
		}
		t, err := wk.ClaimNext(ctx)
		switch {
		case ctx.Err() != nil:
			<-slots
			return w.stopped(ctx)
		case err != nil:
			<-slots
			fmt.Fprintf(w.errOut, "claim failed: %v; retrying\n", err)
			pause(ctx, time.Second)
			continue
		case t == nil:
			<-slots
			if wk.Held() >= w.concurrency {
				pause(ctx, time.Second) // an outcome is still being reported
			}
			continue
		}
		if w.once {
			return w.handle(ctx, t)
		}
		wg.Go(func() {
			defer func() { <-slots }()
			_ = w.handle(ctx, t) // printed
		})
	}
}

// stopped is what run returns when ctx ends while it waits for work: nil, as stopping is
// how a worker ends, unless it was to handle one execution and report its outcome (--once).
func (w *shellWorker) stopped(ctx context.Context) error {
	if !w.once {
		return nil
	}
	return fmt.Errorf("worker --once: stopped before it claimed an execution: %w", context.Cause(ctx))
}

// pause waits for d or the end of ctx.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// stopSignalGrace is how long the worker waits for its own stop when its command was
// killed by a stop signal it did not send.
const stopSignalGrace = 250 * time.Millisecond

// killed reports whether a command that ran, ending in ps, was killed by a signal rather
// than exiting.
func killed(ps *os.ProcessState) bool { return ps != nil && !ps.Exited() }

// errStopping is the cause of a command stopped because the worker is stopping.
var errStopping = errors.New("the worker is stopping") //nolint:gochecknoglobals // a sentinel

// handle runs the command for one task, reports its outcome and returns why the execution
// did not complete (nil if it did). The command stops when the worker stops (the execution
// is handed back) or the task's context ends (the execution was cancelled or the lease
// lost); one that had already ended on its own is completed or failed by its exit status.
func (w *shellWorker) handle(ctx context.Context, t *flowfabric.ClaimedTask) (notDone error) {
	runCtx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	defer context.AfterFunc(ctx, func() { cancel(errStopping) })()
	if ctx.Err() != nil {
		// Stopped already: AfterFunc calls cancel in a goroutine of its own, which the
		// command could start before.
		cancel(errStopping)
	}

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(runCtx, w.argv[0], w.argv[1:]...)
	cmd.Stdin = bytes.NewReader(t.Payload())
	cmd.Stdout, cmd.Stderr = &stdout, &tail{max: 2048, buf: &stderr}
	// Stopped, the command takes every process it started with it. A daemon it started
	// may hold its output open after it exits: the wait for that output stops stopGrace
	// after the exit.
	group := newProcGroup(cmd)
	cmd.Env = append(os.Environ(), "FF_EXECUTION_ID="+string(t.ExecutionID()), "FF_KIND="+t.Kind(), "FF_LANE="+t.Lane(),
		"FF_ATTEMPT="+strconv.Itoa(t.Attempt()))
	id := t.ExecutionID()
	fmt.Fprintf(w.out, "%s running (%s, attempt %d)\n", id, t.Kind(), t.Attempt())
	err := cmd.Run()
	group.reap()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // the command exited 0; only a child of it still held its output
	}
	if !group.signalled() && byStopSignal(cmd.ProcessState) {
		// A stop signal the worker did not send, most likely the one that stops the worker
		// too: a terminal sends Ctrl-C to its whole foreground group (which a command is
		// in from its start until it has made a group of its own), systemd its SIGTERM to
		// every process of the service. Give the worker's own signal a moment to arrive,
		// so the execution is handed back rather than failed.
		pause(runCtx, stopSignalGrace)
	}
	// A command that exited on its own before it was told to stop keeps its outcome
	// whatever stopped meanwhile: its work is done, or failed, either way. One killed by a
	// signal while the worker stops is taken as stopped, whoever sent the signal, and so
	// is one that never started because the stop came first.
	cause := context.Cause(runCtx)
	stopped := cause != nil && (cmd.Process == nil || group.signalled() || killed(cmd.ProcessState))
	switch {
	case stopped && errors.Is(cause, errStopping):
		// Hand the execution back so another worker takes it at once.
		if rerr := settle(ctx, t, t.Release); rerr != nil {
			fmt.Fprintf(w.errOut, "%s: release failed: %v\n", id, rerr)
		}
		fmt.Fprintf(w.out, "%s released (stopping)\n", id)
		notDone = fmt.Errorf("%s released: %w", id, cause)
	case stopped:
		fmt.Fprintf(w.out, "%s stopped: %v\n", id, cause)
		notDone = fmt.Errorf("%s stopped: %w", id, cause)
	case err != nil:
		reason := err.Error()
		if s := bytes.TrimSpace(stderr.Bytes()); len(s) > 0 {
			reason += ": "
			reason += endOf(string(s), fftype.MaxReasonBytes-len(reason)) // the last lines say why
		}
		w.fail(ctx, t, "exit", err.Error(), reason)
		notDone = fmt.Errorf("%s failed: %w", id, err)
	default:
		result, binary := resultOf(stdout.Bytes())
		complete := t.Complete
		if binary {
			complete = t.CompleteBinary
		}
		cerr := settle(ctx, t, func(rctx context.Context) error { return complete(rctx, result) })
		if cerr == nil {
			fmt.Fprintf(w.out, "%s completed\n", id)
			break
		}
		fmt.Fprintf(w.errOut, "%s: complete failed: %v\n", id, cerr)
		notDone = fmt.Errorf("%s: complete failed: %w", id, cerr)
		if !t.Finished() && ctx.Err() == nil {
			// Refused for good (a result over the server's limit): fail the attempt rather
			// than hand back work that would end the same way.
			w.fail(ctx, t, "result_refused", "result refused", "the result was refused: "+cerr.Error())
		}
	}
	if !t.Finished() {
		// The outcome did not land (or the lease is gone): give the execution back, which
		// also ends the task on the worker's side.
		_ = settle(ctx, t, t.Release)
	}
	return notDone
}

// fail fails t's attempt with a category and reason; what names the failure in the output.
func (w *shellWorker) fail(ctx context.Context, t *flowfabric.ClaimedTask, category, what, reason string) {
	var out flowfabric.FailOutcome
	err := settle(ctx, t, func(rctx context.Context) (err error) {
		out, err = t.Fail(rctx, fftype.FailParams{Reason: fftype.ClipReason(reason), Category: category})
		return err
	})
	if err != nil {
		fmt.Fprintf(w.errOut, "%s: fail failed: %v\n", t.ExecutionID(), err)
		return
	}
	fmt.Fprintf(w.out, "%s failed (%s); retry scheduled: %v\n", t.ExecutionID(), what, out.RetryScheduled)
}

// settle makes a finishing call on t, retrying while it is refused for a passing reason
// (the server unreachable) until it lands or the worker stops; it returns the last error.
// Each try is bounded, so a server that stopped answering does not hold the worker up.
func settle(ctx context.Context, t *flowfabric.ClaimedTask, call func(context.Context) error) error {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := call(rctx)
		cancel()
		if err == nil || t.Finished() || !fftype.IsRetryable(err) || ctx.Err() != nil {
			return err
		}
		pause(ctx, backoff)
	}
}

// resultOf turns a command's stdout into a result: JSON in UTF-8 as it is, other UTF-8
// text as a JSON string, anything else (JSON syntax around other bytes included) as it is,
// to be sent as binary.
func resultOf(stdout []byte) (result []byte, binary bool) {
	trimmed := bytes.TrimSpace(stdout)
	switch {
	case len(trimmed) == 0:
		return nil, false
	case fftype.ValidJSON(trimmed):
		return trimmed, false
	case utf8.Valid(stdout):
		b, _ := json.Marshal(string(bytes.TrimRight(stdout, "\n")))
		return b, false
	default:
		return stdout, true
	}
}

// endOf returns the end of s, made valid UTF-8, in at most n bytes, starting at a
// character.
func endOf(s string, n int) string {
	s = strings.ToValidUTF8(s, string(utf8.RuneError))
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return s[i:]
}

// tail keeps the last max bytes written to it. The first may be the end of a character cut
// at the start: [fftype.ClipReason] makes the reason valid UTF-8.
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

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
