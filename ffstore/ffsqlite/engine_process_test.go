package ffsqlite_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// The tests in this file run the engine in real OS processes on one SQLite file: the test
// binary re-executes itself with -test.run=^TestEngineHelperProcess$ and the environment
// variables below. A helper prints one line per acknowledged operation on stdout, only
// after the engine call returned nil:
//
//	H <id>   claimed and held without completing (work job with hold set)
//	C <id>   claimed
//	D <id>   completed
//	N <id>   created (churn job)
const (
	envEngineJob  = "FFSQLITE_ENGINE_JOB"  // "work" or "churn"
	envEnginePath = "FFSQLITE_ENGINE_PATH" // the store's file
	envEngineName = "FFSQLITE_ENGINE_NAME" // the helper's worker instance id
	envEngineHold = "FFSQLITE_ENGINE_HOLD" // "1": claim one execution first and never finish it
)

const (
	workLane  = "work"
	churnLane = "churn"
)

// workResult is the result a worker stores, naming itself.
type workResult struct {
	By      string `json:"by"`
	Attempt int    `json:"attempt"`
}

// TestEngineHelperProcess is not a test: it is the body of the helper processes.
func TestEngineHelperProcess(t *testing.T) {
	job := os.Getenv(envEngineJob)
	if job == "" {
		return // run as an ordinary test: nothing to do
	}
	die := func(code int, what string, err error) {
		fmt.Fprintf(os.Stderr, "engine helper %s: %s: %v\n", os.Getenv(envEngineName), what, err)
		os.Exit(code)
	}
	ctx := context.Background()
	store, err := ffsqlite.Open(ctx, os.Getenv(envEnginePath), &ffsqlite.Options{BusyTimeout: fftestBusyTimeout})
	if err != nil {
		die(2, "open", err)
	}
	e, err := engine.New(store, nil)
	if err != nil {
		die(2, "engine", err)
	}
	name := os.Getenv(envEngineName)
	var outMu sync.Mutex
	ack := func(kind string, id fftype.ExecutionID) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintln(os.Stdout, kind, id) // unbuffered: one write(2) per line
	}
	claim := func(lane string) (*fftype.Lease, error) {
		ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "helper", WorkerInstanceID: name, Lanes: []string{lane}})
		if err != nil || len(ls) == 0 {
			return nil, err
		}
		ack("C", ls[0].ExecutionID)
		return ls[0], nil
	}
	complete := func(l *fftype.Lease) error {
		res, _ := json.Marshal(workResult{By: name, Attempt: l.AttemptIndex})
		if err := e.Complete(ctx, l.ExecutionID, l.Fence, res, ""); err != nil {
			return err
		}
		ack("D", l.ExecutionID)
		return nil
	}

	var wg sync.WaitGroup
	var failed atomic.Bool
	switch job {
	case "work":
		if os.Getenv(envEngineHold) == "1" {
			l, err := claim(workLane)
			if err != nil || l == nil {
				die(3, "hold", err)
			}
			ack("H", l.ExecutionID)
		}
		fmt.Fprintln(os.Stdout, "ready")
		if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || line != "go\n" {
			die(3, "waiting for go", err)
		}
		for range 4 {
			wg.Go(func() {
				for !failed.Load() {
					l, err := claim(workLane)
					if err != nil {
						fmt.Fprintln(os.Stderr, "claim:", err)
						failed.Store(true)
						return
					}
					if l == nil {
						return // nothing left that this process can take
					}
					if err := complete(l); err != nil {
						fmt.Fprintln(os.Stderr, "complete:", err)
						failed.Store(true)
						return
					}
				}
			})
		}
	case "churn":
		var next atomic.Int64
		for range 4 {
			wg.Go(func() {
				for !failed.Load() {
					i := next.Add(1)
					r, err := e.Create(ctx, fftype.CreateParams{Lane: churnLane, Kind: "churn",
						Payload: []byte(`{"i":` + strconv.FormatInt(i, 10) + `}`)})
					if err != nil {
						fmt.Fprintln(os.Stderr, "create:", err)
						failed.Store(true)
						return
					}
					ack("N", r.ID)
				}
			})
			wg.Go(func() {
				for !failed.Load() {
					l, err := claim(churnLane)
					if err == nil && l != nil {
						err = complete(l)
					} else if err == nil {
						time.Sleep(time.Millisecond) // a worker's idle poll, not test synchronisation
					}
					if err != nil {
						fmt.Fprintln(os.Stderr, "claim/complete:", err)
						failed.Store(true)
						return
					}
				}
			})
		}
	default:
		die(2, "job", fmt.Errorf("unknown job %q", job))
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

// engineHelper is a running helper process and the lines it printed.
type engineHelper struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // closed at EOF
	done  chan error  // the process's exit
}

func startEngineHelper(t *testing.T, job, path, name string, hold bool) *engineHelper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEngineHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envEngineJob+"="+job, envEnginePath+"="+path, envEngineName+"="+name)
	if hold {
		cmd.Env = append(cmd.Env, envEngineHold+"=1")
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &engineHelper{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 1<<16), done: make(chan error, 1)}
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

// readUntil reads h's lines into a until stop returns true or h's output ends.
func (h *engineHelper) readUntil(t *testing.T, a acks, stop func() bool) {
	t.Helper()
	for !stop() {
		l, ok := <-h.lines
		if !ok {
			return
		}
		a.add(t, l)
	}
}

// finish reads h's remaining lines into a and returns its exit error.
func (h *engineHelper) finish(t *testing.T, a acks) error {
	t.Helper()
	for l := range h.lines {
		a.add(t, l)
	}
	return <-h.done
}

// awaitReady reads h's lines up to "ready" into a.
func (h *engineHelper) awaitReady(t *testing.T, a acks) {
	t.Helper()
	for l := range h.lines {
		if l == "ready" {
			return
		}
		a.add(t, l)
	}
	t.Fatalf("helper %s ended before it was ready: %v", h.name, <-h.done)
}

func set(ids []fftype.ExecutionID) map[fftype.ExecutionID]bool {
	m := make(map[fftype.ExecutionID]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// TestEngineTwoProcesses has two processes claim and complete one file's executions
// through the engine; one holds an extra lease it never finishes and is SIGKILLed
// midway, as the other starts. The parent then lets the dead worker's leases expire (a
// fake clock an hour ahead) and finishes the rest. Every execution must be completed
// exactly once, every completion a worker acknowledged must be in the file as that
// worker's, and the executions the dead worker held must show a reclaim attempt.
func TestEngineTwoProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ff.db")
	const n = 2000

	store, err := ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
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
	require.NoError(t, store.Close())

	victim := startEngineHelper(t, "work", path, "victim", true)
	survivor := startEngineHelper(t, "work", path, "survivor", false)
	va, sa := acks{}, acks{}
	victim.awaitReady(t, va)
	survivor.awaitReady(t, sa)
	require.Len(t, va["H"], 1, "the victim holds one lease")

	// The victim works alone until it has acknowledged some completions, then the
	// survivor starts and the victim is killed while its workers are mid-flight. (Working
	// together from the start, the process holding the file's write lock can starve the
	// other, whose busy handler sleeps between tries: the victim could end with no
	// completions, or the survivor with all of them before the kill.)
	_, err = io.WriteString(victim.stdin, "go\n")
	require.NoError(t, err)
	victim.readUntil(t, va, func() bool { return len(va["D"]) >= 100 })
	require.Len(t, va["D"], 100, "the victim ran out of work before it could be killed")
	_, err = io.WriteString(survivor.stdin, "go\n")
	require.NoError(t, err)
	require.NoError(t, victim.cmd.Process.Signal(syscall.SIGKILL))
	require.True(t, isKilled(victim.finish(t, va)), "the victim should have been killed")
	require.NoError(t, survivor.finish(t, sa), "survivor")
	t.Logf("victim: %d claimed, %d completed; survivor: %d claimed, %d completed",
		len(va["C"]), len(va["D"]), len(sa["C"]), len(sa["D"]))

	// Finish the rest an hour later, when every lease of the victim has expired.
	store, err = ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
	defer store.Close()
	clock := fftest.NewClock(time.Now().Add(time.Hour))
	e, err = engine.New(store, &engine.Config{Clock: clock})
	require.NoError(t, err)
	expired, _, err := e.RunDue(ctx)
	require.NoError(t, err)
	var parentDone []fftype.ExecutionID
	for {
		ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "helper", WorkerInstanceID: "parent", Lanes: []string{workLane}})
		require.NoError(t, err)
		if len(ls) == 0 {
			break
		}
		res, _ := json.Marshal(workResult{By: "parent", Attempt: ls[0].AttemptIndex})
		require.NoError(t, e.Complete(ctx, ls[0].ExecutionID, ls[0].Fence, res, ""))
		parentDone = append(parentDone, ls[0].ExecutionID)
	}
	t.Logf("the parent expired %d leases and completed %d executions", expired, len(parentDone))
	require.GreaterOrEqual(t, expired, 1, "at least the held lease expired")

	// Who acknowledged what.
	ackedBy := map[fftype.ExecutionID]string{}
	for name, done := range map[string][]fftype.ExecutionID{"victim": va["D"], "survivor": sa["D"], "parent": parentDone} {
		for _, id := range done {
			prev, dup := ackedBy[id]
			require.False(t, dup, "%s completed by %s and by %s", id, prev, name)
			ackedBy[id] = name
		}
	}
	victimClaimed := set(va["C"])
	reclaimed := 0
	for i, id := range ids {
		x, err := e.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, fftype.StateCompleted, x.PublicState(), "%s", id)
		if victimClaimed[id] || i%50 == 0 {
			// CheckInvariants reads whole queues (the retention queue holds every
			// execution here), so it runs on the victim's and a sample of the others.
			require.NoError(t, e.CheckInvariants(ctx, id))
		}
		atts, err := e.Attempts(ctx, id)
		require.NoError(t, err)
		var succeeded []*fftype.Attempt
		for _, a := range atts {
			if a.Status == fftype.AttemptSucceeded {
				succeeded = append(succeeded, a)
			}
		}
		require.Len(t, succeeded, 1, "%s has %d succeeded attempts", id, len(succeeded))
		won := succeeded[0]
		require.Equal(t, won.Index, len(atts)-1, "%s: the last attempt succeeded", id)
		res, _, err := e.Result(ctx, id)
		require.NoError(t, err)
		var wr workResult
		require.NoError(t, json.Unmarshal(res, &wr))
		require.Equal(t, won.WorkerInstanceID, wr.By, "%s: the result is the succeeded attempt's", id)
		require.Equal(t, won.Index, wr.Attempt)

		if by, ok := ackedBy[id]; ok {
			require.Equal(t, by, won.WorkerInstanceID, "%s acknowledged by %s", id, by)
		} else {
			// Only the victim may have completed without acknowledging: the kill came
			// between its commit and its print.
			require.Equal(t, "victim", won.WorkerInstanceID, "%s completed by %s without an acknowledgement", id, won.WorkerInstanceID)
		}
		// The kill may also come between a claim's commit and its print: the victim then
		// held a lease it never acknowledged.
		victimHeld := victimClaimed[id] || len(atts) > 1 && atts[0].WorkerInstanceID == "victim"
		if victimHeld && won.WorkerInstanceID != "victim" {
			// The victim's lease was lost: its attempt was interrupted and a reclaim won.
			require.Equal(t, fftype.AttemptReclaim, won.Type, "%s", id)
			require.Equal(t, "victim", atts[won.Index-1].WorkerInstanceID)
			require.Equal(t, fftype.AttemptInterrupted, atts[won.Index-1].Status)
			require.Equal(t, 1, x.ReclaimCount)
			reclaimed++
		} else {
			require.Len(t, atts, 1, "%s was claimed once", id)
			require.Zero(t, x.ReclaimCount)
		}
	}
	held := va["H"][0]
	require.Equal(t, "parent", ackedBy[held], "the held execution was finished by the parent")
	require.GreaterOrEqual(t, reclaimed, 1)
	// Each reclaim needed a lease expiry; RunDue may also have handled other timers.
	require.GreaterOrEqual(t, expired, reclaimed, "every reclaim followed an expired lease")
	t.Logf("%d executions reclaimed after the kill", reclaimed)
}

// TestEngineCrashSafety SIGKILLs a process that creates executions and completes others
// as fast as it can. Reopened, the file must hold every acknowledged create and every
// acknowledged completion, and every execution must be whole: its record, queues,
// attempts, payload and result agree (engine.CheckInvariants and more).
func TestEngineCrashSafety(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ff.db")

	h := startEngineHelper(t, "churn", path, "churner", false)
	a := acks{}
	h.readUntil(t, a, func() bool { return len(a["N"]) >= 600 && len(a["D"]) >= 200 })
	require.NoError(t, h.cmd.Process.Signal(syscall.SIGKILL))
	require.True(t, isKilled(h.finish(t, a)), "the helper should have been killed")
	t.Logf("acknowledged: %d creates, %d claims, %d completions", len(a["N"]), len(a["C"]), len(a["D"]))

	store, err := ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
	defer store.Close()
	e, err := engine.New(store, nil)
	require.NoError(t, err)

	var all []*fftype.Execution
	cursor := ""
	for {
		page, err := e.List(ctx, fftype.ListParams{Limit: 1000, Cursor: cursor})
		require.NoError(t, err)
		all = append(all, page.Executions...)
		if page.Cursor == "" {
			break
		}
		cursor = page.Cursor
	}
	byID := map[fftype.ExecutionID]*fftype.Execution{}
	for _, x := range all {
		require.Nil(t, byID[x.ID], "%s listed twice", x.ID)
		byID[x.ID] = x
	}
	for _, id := range a["N"] {
		require.NotNil(t, byID[id], "acknowledged create %s is lost", id)
	}
	completed := set(a["D"])
	for id := range completed {
		require.NotNil(t, byID[id], "acknowledged completion %s: execution lost", id)
		require.Equal(t, fftype.StateCompleted, byID[id].PublicState(), "acknowledged completion %s", id)
	}
	for _, id := range a["C"] {
		require.NotNil(t, byID[id], "claimed %s: execution lost", id)
		require.NotEqual(t, fftype.StateWaiting, byID[id].PublicState(), "acknowledged claim of %s", id)
	}

	states := map[fftype.PublicState]int{}
	for _, x := range all {
		states[x.PublicState()]++
		require.NoError(t, e.CheckInvariants(ctx, x.ID))
		payload, err := e.Payload(ctx, x.ID)
		require.NoError(t, err)
		require.Regexp(t, `^\{"i":\d+\}$`, string(payload), "%s: payload", x.ID)
		atts, err := e.Attempts(ctx, x.ID)
		require.NoError(t, err)
		switch x.PublicState() {
		case fftype.StateWaiting:
			require.Empty(t, atts, "%s", x.ID)
		case fftype.StateActive:
			require.Len(t, atts, 1, "%s", x.ID)
			require.Equal(t, fftype.AttemptStarted, atts[0].Status)
		case fftype.StateCompleted:
			require.Len(t, atts, 1, "%s", x.ID)
			require.Equal(t, fftype.AttemptSucceeded, atts[0].Status)
			res, _, err := e.Result(ctx, x.ID)
			require.NoError(t, err)
			require.JSONEq(t, `{"by":"churner","attempt":0}`, string(res))
		default:
			t.Fatalf("%s is %s", x.ID, x.PublicState())
		}
	}
	t.Logf("in the file: %d executions %v", len(all), states)
	evs, err := store.ReadEvents(ctx, 0, 0, 1_000_000)
	require.NoError(t, err)
	for i, ev := range evs {
		require.Equal(t, uint64(i+1), ev.Seq, "the event log has a gap")
	}
	created := 0
	for _, ev := range evs {
		if ev.Type == fftype.EventCreated {
			created++
		}
	}
	require.Equal(t, len(all), created, "one created event per execution")
}
