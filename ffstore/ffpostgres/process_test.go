package ffpostgres_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
	"github.com/flowfabric/flowfabric/internal/storetest"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// The process test runs the engine in real OS processes on one schema: the test binary
// re-executes itself with -test.run=^TestHelperProcess$ and the environment variables
// below. A helper prints one line per acknowledged operation on stdout, only after the
// engine call returned nil:
//
//	H <id>   claimed and held, never completed
//	C <id>   claimed
//	D <id>   completed
const (
	envHelperURL    = "FFPOSTGRES_HELPER_URL"    // the database; empty: not a helper
	envHelperSchema = "FFPOSTGRES_HELPER_SCHEMA" // the store's schema
	envHelperName   = "FFPOSTGRES_HELPER_NAME"   // the helper's worker instance id
	envHelperHold   = "FFPOSTGRES_HELPER_HOLD"   // "1": claim one execution first and never finish it
)

const workLane = "work"

// workResult is the result a worker stores, naming itself.
type workResult struct {
	By      string `json:"by"`
	Attempt int    `json:"attempt"`
}

// TestHelperProcess is not a test: it is the body of the helper processes. A helper
// claims and completes executions of the work lane with 4 workers, and runs the timers
// (RunDue) whenever it finds nothing to claim, so the leases of a dead process are
// expired and their executions reclaimed. It stops when its stdin closes.
func TestHelperProcess(t *testing.T) {
	url := os.Getenv(envHelperURL)
	if url == "" {
		return // run as an ordinary test: nothing to do
	}
	name := os.Getenv(envHelperName)
	die := func(code int, what string, err error) {
		fmt.Fprintf(os.Stderr, "helper %s: %s: %v\n", name, what, err)
		os.Exit(code)
	}
	ctx, stop := context.WithCancel(context.Background())
	store, err := ffpostgres.Open(ctx, url, &ffpostgres.Options{Schema: os.Getenv(envHelperSchema), PoolSize: 6})
	if err != nil {
		die(2, "open", err)
	}
	e, err := engine.New(store, nil)
	if err != nil {
		die(2, "engine", err)
	}
	var outMu sync.Mutex
	ack := func(kind string, id fftype.ExecutionID) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintln(os.Stdout, kind, id) // unbuffered: one write(2) per line
	}
	claim := func() (*fftype.Lease, error) {
		ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "helper", WorkerInstanceID: name, Lanes: []string{workLane},
			LeaseTTL: fftype.Duration(time.Second)})
		if err != nil || len(ls) == 0 {
			return nil, err
		}
		ack("C", ls[0].ExecutionID)
		return ls[0], nil
	}
	if os.Getenv(envHelperHold) == "1" {
		l, err := claim()
		if err != nil || l == nil {
			die(3, "hold", err)
		}
		ack("H", l.ExecutionID)
	}
	fmt.Fprintln(os.Stdout, "ready")
	go func() { // stdin closes: stop
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()

	var wg sync.WaitGroup
	var failed atomic.Bool
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil && !failed.Load() {
				l, err := claim()
				if err == nil && l != nil {
					res, _ := json.Marshal(workResult{By: name, Attempt: l.AttemptIndex})
					if err = e.Complete(ctx, l.ExecutionID, l.Fence, res, ""); err == nil {
						ack("D", l.ExecutionID)
					} else if errors.Is(err, fftype.ErrState) {
						err = nil // the lease was lost meanwhile; the execution is reclaimed
					}
				} else if err == nil {
					var n int
					if n, _, err = e.RunDue(ctx); err == nil && n == 0 {
						select { // a worker's idle poll, not test synchronisation
						case <-ctx.Done():
						case <-time.After(20 * time.Millisecond):
						}
					}
				}
				if err != nil && ctx.Err() == nil && !fftype.IsRetryable(err) {
					fmt.Fprintln(os.Stderr, "helper", name, "work:", err)
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		os.Exit(4)
	}
	if err := store.Close(); err != nil {
		die(5, "close", err)
	}
	os.Exit(0)
}

// helper is a running helper process and the lines it printed.
type helper struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // closed at EOF
	done  chan error  // the process's exit
}

func startHelper(t *testing.T, url, schema, name string, hold bool) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperURL+"="+url, envHelperSchema+"="+schema, envHelperName+"="+name)
	if hold {
		cmd.Env = append(cmd.Env, envHelperHold+"=1")
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &helper{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 1<<16), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		_, _ = io.Copy(io.Discard, stdout)
		h.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = stdin.Close()
	})
	return h
}

// acks sorts a helper's lines by kind: kind → ids in order.
type acks map[string][]fftype.ExecutionID

func (a acks) add(t *testing.T, line string) {
	t.Helper()
	kind, id, ok := strings.Cut(line, " ")
	require.True(t, ok, "unexpected helper line %q", line)
	a[kind] = append(a[kind], fftype.ExecutionID(id))
}

func (h *helper) awaitReady(t *testing.T, a acks) {
	t.Helper()
	for l := range h.lines {
		if l == "ready" {
			return
		}
		a.add(t, l)
	}
	t.Fatalf("helper %s ended before it was ready: %v", h.name, <-h.done)
}

func (h *helper) readUntil(t *testing.T, a acks, stop func() bool) {
	t.Helper()
	for !stop() {
		l, ok := <-h.lines
		if !ok {
			return
		}
		a.add(t, l)
	}
}

// drain moves the lines h printed so far into a, without waiting for more. It may run
// outside the test's goroutine, so it keeps malformed lines under "?" for later checks.
func (h *helper) drain(a acks) {
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				return
			}
			kind, id, ok := strings.Cut(l, " ")
			if !ok {
				kind, id = "?", l
			}
			a[kind] = append(a[kind], fftype.ExecutionID(id))
		default:
			return
		}
	}
}

func (h *helper) finish(t *testing.T, a acks) error {
	t.Helper()
	for l := range h.lines {
		a.add(t, l)
	}
	return <-h.done
}

func isKilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestProcesses has two processes claim and complete one schema's executions through
// the engine; one holds an extra lease it never finishes and is SIGKILLed midway. Its
// leases (TTL 1s) expire and the survivor's RunDue puts their executions back, so the
// survivor finishes everything. Every execution must be completed exactly once, every
// completion a process acknowledged must be in the database as that process's, and the
// executions the dead process held must show a reclaim attempt.
func TestProcesses(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.SharedPostgres(t).URL("postgres")
	schema := testdb.Schema(t)
	const n = 1500

	store, err := ffpostgres.Open(ctx, url, &ffpostgres.Options{Schema: schema, Migrate: true, Shards: 4, PoolSize: 4})
	require.NoError(t, err)
	defer store.Close()
	e, err := engine.New(store, nil)
	require.NoError(t, err)
	ps := make([]fftype.CreateParams, n)
	for i := range ps {
		ps[i] = fftype.CreateParams{Lane: workLane, Kind: "work", Payload: []byte(strconv.Itoa(i))}
	}
	var ids []fftype.ExecutionID
	for _, r := range e.CreateMany(ctx, ps) {
		require.NoError(t, r.Err)
		ids = append(ids, r.Result.ID)
	}

	victim := startHelper(t, url, schema, "victim", true)
	survivor := startHelper(t, url, schema, "survivor", false)
	va, sa := acks{}, acks{}
	victim.awaitReady(t, va)
	survivor.awaitReady(t, sa)
	require.Len(t, va["H"], 1, "the victim holds one lease")

	// Kill the victim once it has acknowledged some completions, while both work.
	victim.readUntil(t, va, func() bool { return len(va["D"]) >= 100 })
	require.Len(t, va["D"], 100, "the victim ran out of work before it could be killed")
	require.NoError(t, victim.cmd.Process.Signal(syscall.SIGKILL))
	require.True(t, isKilled(victim.finish(t, va)), "the victim should have been killed")

	// The survivor finishes everything, the victim's lost leases included.
	log := storetest.NewEventTally(store)
	require.Eventually(t, func() bool {
		survivor.drain(sa)
		return log.CatchUp(ctx) == nil && len(log.Completed) == n
	}, 2*time.Minute, 50*time.Millisecond, "every execution completes")
	require.NoError(t, survivor.stdin.Close())
	require.NoError(t, survivor.finish(t, sa), "survivor")
	require.NoError(t, log.CatchUp(ctx), "the event logs are gap-free")
	require.Empty(t, sa["?"], "malformed helper lines")
	t.Logf("victim: %d claimed, %d completed; survivor: %d claimed, %d completed",
		len(va["C"]), len(va["D"]), len(sa["C"]), len(sa["D"]))

	ackedBy := map[fftype.ExecutionID]string{}
	for name, done := range map[string][]fftype.ExecutionID{"victim": va["D"], "survivor": sa["D"]} {
		for _, id := range done {
			prev, dup := ackedBy[id]
			require.False(t, dup, "%s completed by %s and by %s", id, prev, name)
			ackedBy[id] = name
		}
	}
	victimClaimed := map[fftype.ExecutionID]bool{}
	for _, id := range va["C"] {
		victimClaimed[id] = true
	}
	reclaimed := 0
	for i, id := range ids {
		require.Equal(t, 1, log.Completed[id], "%s: one completed event", id)
		x, err := e.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, fftype.StateCompleted, x.PublicState(), "%s", id)
		if victimClaimed[id] || i%50 == 0 {
			require.NoError(t, e.CheckInvariants(ctx, id))
		}
		atts, err := e.Attempts(ctx, id)
		require.NoError(t, err)
		var won *fftype.Attempt
		for _, a := range atts {
			if a.Status == fftype.AttemptSucceeded {
				require.Nil(t, won, "%s has two succeeded attempts", id)
				won = a
			}
		}
		require.NotNil(t, won, "%s has no succeeded attempt", id)
		res, _, err := e.Result(ctx, id)
		require.NoError(t, err)
		var wr workResult
		require.NoError(t, json.Unmarshal(res, &wr))
		require.Equal(t, won.WorkerInstanceID, wr.By, "%s: the result is the succeeded attempt's", id)
		if by, ok := ackedBy[id]; ok {
			require.Equal(t, by, won.WorkerInstanceID, "%s acknowledged by %s", id, by)
		} else {
			// Only the victim may have completed without acknowledging: the kill came
			// between its commit and its print.
			require.Equal(t, "victim", won.WorkerInstanceID, "%s completed by %s without an acknowledgement", id, won.WorkerInstanceID)
		}
		if victimClaimed[id] && won.WorkerInstanceID != "victim" {
			require.Equal(t, fftype.AttemptReclaim, won.Type, "%s", id)
			require.Equal(t, fftype.AttemptInterrupted, atts[won.Index-1].Status)
			reclaimed++
		}
	}
	require.Equal(t, "survivor", ackedBy[va["H"][0]], "the held execution was reclaimed and finished by the survivor")
	t.Logf("%d executions reclaimed after the kill", reclaimed)
}
