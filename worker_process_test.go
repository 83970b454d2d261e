package flowfabric_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffconnect"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
)

// The crash tests run a worker in a real child process: the test binary re-executes itself
// with the environment variables below, and TestMain runs victimMain instead of the tests.
const (
	envHelper   = "FLOWFABRIC_TEST_HELPER" // the helper's job: "victim"
	envURL      = "FLOWFABRIC_TEST_URL"    // the store both processes open
	victimSlots = 8
	victimTTL   = 10 * time.Second
)

// victimMain is the child's body: a worker that claims victimSlots executions, prints
// "claimed <id>" for each as its handler starts, and blocks until it is killed. Its clock
// is a fake that starts where the parent's does and never moves.
func victimMain() int {
	ctx := context.Background()
	w, err := ffconnect.Connect(ctx, &flowfabric.WorkerConfig{
		Store: os.Getenv(envURL), WorkerID: "w", WorkerInstanceID: "victim",
		Lanes: []string{testLane}, LeaseTTL: victimTTL, MaxConcurrentTasks: victimSlots,
	}, &flowfabric.Config{Clock: fftest.NewClock(testStart)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 2
	}
	flowfabric.Handle(w, "crash", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
		fmt.Fprintln(os.Stdout, "claimed", t.ExecutionID()) // one write(2) per line
		<-ctx.Done()
		return ctx.Err()
	})
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 3
	}
	return 0
}

// victim is a running child process.
type victim struct {
	cmd    *exec.Cmd
	lines  chan string // its stdout, closed at EOF
	stderr *bytes.Buffer
	exited chan struct{}
}

func startVictim(t *testing.T, url string) *victim {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"=victim", envURL+"="+url)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	v := &victim{cmd: cmd, lines: make(chan string, 100), stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = &lockedWriter{w: v.stderr, mu: &sync.Mutex{}}
	require.NoError(t, cmd.Start())
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer close(v.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			v.lines <- sc.Text()
		}
	}()
	go func() {
		<-scanned
		_ = cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-v.exited
	})
	return v
}

// next returns the victim's next line.
func (v *victim) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-v.lines:
		require.True(t, ok, "the victim exited: %s", v.stderr.String())
		return l
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for the victim: %s", v.stderr.String())
		return ""
	}
}

func TestWorkerKilled(t *testing.T) {
	t.Parallel()
	for _, s := range workerTestStores() {
		if s.url == nil {
			continue // not shared between processes
		}
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			testWorkerKilled(t, s.url(t))
		})
	}
}

// testWorkerKilled: a worker process killed with SIGKILL while it holds leases and another
// worker drains the lane. Once the leases expire, the survivor reclaims each of the
// victim's executions and completes every execution exactly once; the victim's instance id
// stays taken until its registration lapses.
func testWorkerKilled(t *testing.T, url string) {
	ctx := t.Context()
	store, err := ffconnect.Open(ctx, url, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	clock := fftest.NewClock(testStart)
	client, err := flowfabric.NewClient(store, &flowfabric.Config{Clock: clock})
	require.NoError(t, err)

	const total = 24
	for range total {
		_, err := client.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "crash"})
		require.NoError(t, err)
	}
	v := startVictim(t, url)
	held := map[flowfabric.ExecutionID]bool{}
	for len(held) < victimSlots {
		id, ok := strings.CutPrefix(v.next(t), "claimed ")
		require.True(t, ok)
		held[flowfabric.ExecutionID(id)] = true
	}

	// The survivor drains the rest of the lane while the victim holds its share.
	var mu sync.Mutex
	runs := map[flowfabric.ExecutionID]int{}
	cfg := config("survivor")
	cfg.LeaseTTL = victimTTL
	cfg.MaxConcurrentTasks = 4
	survivor, err := flowfabric.NewWorker(ctx, client, cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, survivor.Close(context.Background())) })
	sig := flowfabric.EnableSignals(survivor)
	flowfabric.Handle(survivor, "crash", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
		mu.Lock()
		defer mu.Unlock()
		runs[t.ExecutionID()]++
		return nil
	})
	run(t, survivor)
	settled := 0
	for ; settled < 4; settled++ {
		recv(t, sig.Settled, "the survivor's work")
	}
	require.NoError(t, v.cmd.Process.Kill(), "SIGKILL, mid-drain")
	recv(t, v.exited, "the victim to die")
	for ; settled < total-victimSlots; settled++ {
		recv(t, sig.Settled, "the survivor's work")
	}
	for id := range held {
		x, err := client.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, flowfabric.StateActive, x.PublicState(), "the dead worker's leases have not expired yet")
		require.Equal(t, "victim", x.WorkerInstanceID)
	}

	// Its leases expire; the survivor reclaims and completes every one of them.
	clock.Advance(victimTTL + victimTTL/2)
	_, _, err = client.RunDue(ctx)
	require.NoError(t, err)
	for ; settled < total; settled++ {
		recv(t, sig.Settled, "a reclaimed execution")
	}
	page, err := client.List(ctx, flowfabric.ListParams{State: flowfabric.StateCompleted, Limit: 100})
	require.NoError(t, err)
	require.Len(t, page.Executions, total)
	mu.Lock()
	require.Len(t, runs, total)
	for id, n := range runs {
		require.Equal(t, 1, n, "execution %s ran once on the survivor", id)
	}
	mu.Unlock()
	for id := range held {
		atts, err := client.Attempts(ctx, id)
		require.NoError(t, err)
		require.Len(t, atts, 2)
		require.Equal(t, fftype.AttemptInterrupted, atts[0].Status, "the victim's attempt was interrupted")
		require.Equal(t, "victim", atts[0].WorkerInstanceID)
		require.Equal(t, fftype.AttemptReclaim, atts[1].Type)
		require.Equal(t, fftype.AttemptSucceeded, atts[1].Status)
	}

	// The killed process never deregistered: its instance id is taken until the
	// registration lapses (twice the lease TTL), then free.
	_, err = flowfabric.NewWorker(ctx, client, config("victim"), nil)
	require.ErrorIs(t, err, flowfabric.ErrDuplicateWorkerInstance)
	clock.Advance(victimTTL)
	again, err := flowfabric.NewWorker(ctx, client, config("victim"), nil)
	require.NoError(t, err)
	require.NoError(t, again.Close(ctx))
}
