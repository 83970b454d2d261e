package flowfabric_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// testStore is a store the worker tests run on. url, when set, names a fresh store that
// several processes can open (for the crash tests).
type testStore struct {
	name     string
	newStore func(t testing.TB) ffstore.Store
	url      func(t testing.TB) string
}

// workerTestStores lists the stores of the worker tests: every landed durable store, and
// the in-memory one for the in-process cases. A new store is one line here.
func workerTestStores() []testStore {
	return []testStore{
		{name: "Mem", newStore: func(t testing.TB) ffstore.Store { return ffmem.New(&ffmem.Options{Shards: 4}) }},
		{
			name: "SQLite",
			newStore: func(t testing.TB) ffstore.Store {
				s, err := ffsqlite.Open(t.Context(), filepath.Join(t.TempDir(), "ff.db"), &ffsqlite.Options{Shards: 2})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				return s
			},
			url: func(t testing.TB) string { return "sqlite://" + filepath.Join(t.TempDir(), "ff.db") + "?shards=2" },
		},
		{
			name: "Postgres",
			newStore: func(t testing.TB) ffstore.Store {
				s, err := ffpostgres.Open(t.Context(), testdb.SharedPostgres(t).URL("postgres"),
					&ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, PoolSize: 4, Shards: 2})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				return s
			},
		},
		{
			name: "Redis",
			newStore: func(t testing.TB) ffstore.Store {
				s, err := ffvalkey.Open(t.Context(), testdb.SharedRedis(t).URL(0), &ffvalkey.Options{KeyPrefix: testdb.RedisPrefix(t), Shards: 2})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				return s
			},
		},
	}
}

// testTransport is how the workers of a test reach the engine.
type testTransport struct {
	name string
	// remote puts an HTTP server (ffserver) in front of the client and runs the workers on
	// an ffclient.Client talking to it: the worker's HTTP transport.
	remote bool
}

// workerTransports lists the transports every worker behaviour is tested on.
func workerTransports() []testTransport {
	return []testTransport{{name: "InProcess"}, {name: "HTTP", remote: true}}
}

func TestWorker(t *testing.T) {
	t.Parallel()
	for _, s := range workerTestStores() {
		for _, tr := range workerTransports() {
			t.Run(s.name+"/"+tr.name, func(t *testing.T) {
				t.Parallel()
				exerciseWorker(t, s.newStore, tr)
			})
		}
	}
}

// Settings of the worker tests.
const (
	testLane = "work"
	testTTL  = 3 * time.Second
	// waitLimit bounds every wait for something another goroutine does; it only ends a
	// test that is already failing.
	waitLimit = 30 * time.Second
)

var testStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) //nolint:gochecknoglobals // a constant time

// workerBundle is one case's fixture: a fresh store, a client on a fake clock (its timers
// are not started: cases call advance), the backend workers run on, and helpers. The test
// itself acts as an operator through client, in process.
type workerBundle struct {
	ctx     context.Context
	store   *countingStore
	clock   *fftest.Clock
	client  *flowfabric.Client
	backend flowfabric.Backend // client, or remote
	remote  *ffclient.Client   // over HTTP: a client of a server in front of client; nil in process
}

func newWorkerBundle(t *testing.T, newStore func(t testing.TB) ffstore.Store, tr testTransport) *workerBundle {
	t.Helper()
	store := &countingStore{Store: newStore(t)}
	clock := fftest.NewClock(testStart)
	client, err := flowfabric.NewClient(store, &flowfabric.Config{Clock: clock})
	require.NoError(t, err)
	b := &workerBundle{ctx: t.Context(), store: store, clock: clock, client: client, backend: client}
	if tr.remote {
		srv, err := ffserver.New(client, ffserver.Config{})
		require.NoError(t, err)
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close) // after the workers' cleanups, registered later
		// The remote worker follows the server's fake clock, as it follows a real one.
		b.remote, err = ffclient.New(hs.URL, &ffclient.Config{Clock: clock})
		require.NoError(t, err)
		b.backend = b.remote
	}
	return b
}

// config returns a worker configuration for the test lane.
func config(instance string) *flowfabric.WorkerConfig {
	return &flowfabric.WorkerConfig{WorkerID: "w", WorkerInstanceID: instance, Lanes: []string{testLane}, LeaseTTL: testTTL}
}

// worker opens a worker with cfg and closes it at cleanup.
func (b *workerBundle) worker(t *testing.T, cfg *flowfabric.WorkerConfig) (*flowfabric.Worker, *flowfabric.WorkerSignals) {
	t.Helper()
	w, err := flowfabric.NewWorker(b.ctx, b.backend, cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
	return w, flowfabric.EnableSignals(w)
}

// idleWorker runs a worker that never polls: it claims only when woken, and reports the
// executions it ran on ran. It returns once Run is idle.
func (b *workerBundle) idleWorker(t *testing.T) (sig *flowfabric.WorkerSignals, ran <-chan flowfabric.ExecutionID) {
	t.Helper()
	cfg := config("i1")
	cfg.ClaimPollInterval = time.Hour
	w, sig := b.worker(t, cfg)
	flowfabric.SetIdleBackoff(w, time.Hour) // without a wake-up, Run would wait an hour
	ids := make(chan flowfabric.ExecutionID, 10)
	flowfabric.Handle(w, "k", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
		ids <- t.ExecutionID()
		return nil
	})
	run(t, w)
	recv(t, sig.Idle, "Run to go idle")
	return sig, ids
}

// create creates an execution of kind in the test lane with payload (JSON).
func (b *workerBundle) create(t *testing.T, kind, payload string) flowfabric.ExecutionID {
	t.Helper()
	res, err := b.client.Create(b.ctx, flowfabric.CreateParams{Lane: testLane, Kind: kind, Payload: []byte(payload)})
	require.NoError(t, err)
	return res.ID
}

// get reads an execution.
func (b *workerBundle) get(t *testing.T, id flowfabric.ExecutionID) *flowfabric.Execution {
	t.Helper()
	x, err := b.client.Get(b.ctx, id)
	require.NoError(t, err)
	return x
}

// advance moves the clock and runs the due timers.
func (b *workerBundle) advance(t *testing.T, d time.Duration) {
	t.Helper()
	b.clock.Advance(d)
	_, _, err := b.client.RunDue(b.ctx)
	require.NoError(t, err)
}

// run runs w in the background until the test ends.
func run(t *testing.T, w *flowfabric.Worker) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	t.Cleanup(func() {
		require.NoError(t, w.StopAndCancel(context.Background()))
		<-done
	})
	return done
}

// recv waits for a value from ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// recvID waits until ch delivers id, skipping others.
func recvID(t *testing.T, ch <-chan flowfabric.ExecutionID, id flowfabric.ExecutionID, what string) {
	t.Helper()
	for recv(t, ch, what) != id {
	}
}

// countingStore counts the units and reads that reach the store.
type countingStore struct {
	ffstore.Store
	calls atomic.Int64
}

func (s *countingStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	s.calls.Add(1)
	return s.Store.Update(ctx, shard, fn)
}

func (s *countingStore) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	s.calls.Add(1)
	return s.Store.View(ctx, shard, fn)
}

func (s *countingStore) Changes(ctx context.Context) <-chan struct{} {
	return s.Store.(ffstore.ChangeNotifier).Changes(ctx)
}

// stallingClaim is a backend whose first claim waits until its caller gives up and then
// goes on with the ended context, as a claim already under way does.
type stallingClaim struct {
	flowfabric.Backend
	entered chan struct{} // closed when the first claim starts
	once    sync.Once
}

func (b *stallingClaim) Claim(ctx context.Context, p flowfabric.ClaimParams) ([]*flowfabric.Lease, error) {
	first := false
	b.once.Do(func() { first = true })
	if first {
		close(b.entered)
		<-ctx.Done()
	}
	return b.Backend.Claim(ctx, p)
}

// blocker is a handler that reports its start and then waits for its context, reporting
// the cause.
type blocker struct {
	started chan flowfabric.ExecutionID
	causes  chan error
}

// gatedComplete is a backend whose Complete lands and then waits for gate before it
// returns, as an answer still on its way over the network.
type gatedComplete struct {
	flowfabric.Backend
	flowfabric.EventWatcher
	landed chan struct{}
	gate   chan struct{}
}

func (g *gatedComplete) Complete(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, result []byte, enc flowfabric.PayloadEncoding) error {
	err := g.Backend.Complete(ctx, id, f, result, enc)
	close(g.landed)
	<-g.gate
	return err
}

// plainBackend hides a backend's events: a worker on it finds losses by renewing.
type plainBackend struct{ flowfabric.Backend }

// slowFinisher is a backend whose finishing calls answer late, as over a slow network, so
// that their events reach the worker's watch before they return.
type slowFinisher struct {
	flowfabric.Backend
	flowfabric.EventWatcher
	delay time.Duration
}

func (s *slowFinisher) Cancel(ctx context.Context, id flowfabric.ExecutionID, p flowfabric.CancelParams) error {
	err := s.Backend.Cancel(ctx, id, p)
	time.Sleep(s.delay)
	return err
}

func (s *slowFinisher) Fail(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, p flowfabric.FailParams) (flowfabric.FailOutcome, error) {
	out, err := s.Backend.Fail(ctx, id, f, p)
	time.Sleep(s.delay)
	return out, err
}

func newBlocker() *blocker {
	return &blocker{started: make(chan flowfabric.ExecutionID, 100), causes: make(chan error, 100)}
}

func (bl *blocker) handle(ctx context.Context, t *flowfabric.Task[json.RawMessage]) error {
	bl.started <- t.ExecutionID()
	<-ctx.Done()
	bl.causes <- context.Cause(ctx)
	return ctx.Err()
}

func exerciseWorker(t *testing.T, newStore func(t testing.TB) ffstore.Store, tr testTransport) {
	t.Helper()
	setup := func(t *testing.T) *workerBundle { return newWorkerBundle(t, newStore, tr) }

	t.Run("OpenRegistersAndGuardsTheInstance", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cfg := config("i1")
		cfg.Capabilities = []string{"gpu", "cpu"}
		w, err := flowfabric.NewWorker(b.ctx, b.backend, cfg, nil)
		require.NoError(t, err)
		info, err := b.client.GetWorker(b.ctx, "", "i1")
		require.NoError(t, err)
		require.Equal(t, "w", info.WorkerID)
		require.Equal(t, []string{testLane}, info.Lanes)
		require.Equal(t, []string{"cpu", "gpu"}, info.Capabilities)
		require.Equal(t, 2*testTTL, info.TTL.D(), "the liveness TTL is twice the lease TTL")

		_, err = flowfabric.NewWorker(b.ctx, b.backend, config("i1"), nil)
		require.ErrorIs(t, err, flowfabric.ErrDuplicateWorkerInstance, "a second live process with the instance id is refused")
		other, err := flowfabric.NewWorker(b.ctx, b.backend, config("i2"), nil)
		require.NoError(t, err)
		require.NoError(t, other.Close(b.ctx))

		require.NoError(t, w.Close(b.ctx))
		require.NoError(t, w.Close(b.ctx), "closing twice is fine")
		_, err = b.client.GetWorker(b.ctx, "", "i1")
		require.ErrorIs(t, err, flowfabric.ErrWorkerNotRegistered, "a clean shutdown releases the instance id")
		again, err := flowfabric.NewWorker(b.ctx, b.backend, config("i1"), nil)
		require.NoError(t, err)
		require.NoError(t, again.Close(b.ctx))

		_, err = w.ClaimNext(b.ctx)
		require.ErrorIs(t, err, flowfabric.ErrWorkerClosed)
		require.ErrorIs(t, w.Run(b.ctx), flowfabric.ErrWorkerClosed)
	})

	t.Run("OpenChecksShardsAndWarnsAboutStore", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cfg := config("i1")
		cfg.Shards = b.store.Shards() + 1
		_, err := flowfabric.NewWorker(b.ctx, b.backend, cfg, nil)
		var ce *flowfabric.ConfigError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "shards", ce.Field)

		var logs bytes.Buffer
		var mu sync.Mutex
		cfg = config("i1")
		cfg.Store = "sqlite:///elsewhere.db"
		cfg.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
		cfg.Shards = b.store.Shards()
		w, err := flowfabric.NewWorker(b.ctx, b.backend, cfg, nil)
		require.NoError(t, err)
		require.NoError(t, w.Close(b.ctx))
		mu.Lock()
		defer mu.Unlock()
		require.Contains(t, logs.String(), "level=WARN msg=\"WorkerConfig.Store is set but NewWorker was given a client")
	})

	t.Run("Accessors", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sub, err := b.client.Subscribe(b.ctx, flowfabric.EventFilter{Types: []flowfabric.EventType{"completed"}}, flowfabric.CursorEnd)
		require.NoError(t, err)
		defer sub.Close()
		w, err := flowfabric.NewWorker(b.ctx, b.backend, &flowfabric.WorkerConfig{WorkerID: "w", Lanes: []string{"b", "a", "b"}},
			&flowfabric.WorkerOpts{Completions: sub})
		require.NoError(t, err)
		defer func() { require.NoError(t, w.Close(b.ctx)) }()
		require.Same(t, b.backend, w.Backend())
		if b.remote == nil {
			require.Same(t, b.client, w.Client())
		} else {
			require.Nil(t, w.Client(), "a worker over HTTP has no in-process client")
		}
		require.Same(t, sub, w.Completions())
		require.Equal(t, b.store.Shards(), w.Shards())
		c := w.Config()
		require.Equal(t, []string{"a", "b"}, c.Lanes)
		require.Equal(t, fftype.DefaultNamespace, c.Namespace)
		require.Equal(t, 1, c.MaxConcurrentTasks, "0 means 1")
		require.Equal(t, time.Second, c.ClaimPollInterval)
		require.NotEmpty(t, c.WorkerInstanceID, "a fresh instance id is minted")
		_, err = b.client.GetWorker(b.ctx, "", c.WorkerInstanceID)
		require.NoError(t, err)

		plain, _ := b.worker(t, config("plain"))
		require.Nil(t, plain.Completions(), "no completion feed was given")
	})

	t.Run("ClaimNextAndCapacity", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cfg := config("i1")
		cfg.MaxConcurrentTasks = 2
		w, _ := b.worker(t, cfg)
		var ids []flowfabric.ExecutionID
		for i := range 3 {
			ids = append(ids, b.create(t, "k", fmt.Sprintf(`{"n":%d}`, i)))
		}
		require.NoError(t, b.client.SetTags(b.ctx, ids[0], map[string]string{"team": "a"}))
		t1, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.NotNil(t, t1)
		t2, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.NotNil(t, t2)
		before := b.store.calls.Load()
		t3, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.Nil(t, t3, "at capacity: nothing, without claiming")
		require.Equal(t, before, b.store.calls.Load(), "at capacity the store is not asked")
		require.Equal(t, 2, w.Held())

		for _, task := range []*flowfabric.ClaimedTask{t1, t2} {
			require.Equal(t, "k", task.Kind())
			require.Equal(t, testLane, task.Lane())
			require.Equal(t, 0, task.Attempt())
			require.Equal(t, fftype.AttemptInitial, task.AttemptType())
			require.True(t, task.Fence().Complete())
			require.True(t, task.LeaseHealthy())
			require.Equal(t, flowfabric.StateActive, b.get(t, task.ExecutionID()).PublicState())
			if task.ExecutionID() == ids[0] {
				require.Equal(t, map[string]string{"team": "a"}, task.Tags())
				require.JSONEq(t, `{"n":0}`, string(task.Payload()))
			}
		}
		require.NoError(t, t1.Complete(b.ctx, []byte(`{"ok":true}`)))
		require.True(t, t1.Finished())
		require.ErrorIs(t, context.Cause(t1.Context()), flowfabric.ErrTaskFinished)
		t3, err = w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.NotNil(t, t3, "a finished task frees its slot")
		none, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.Nil(t, none)

		require.ErrorIs(t, t2.Complete(b.ctx, []byte("{bad")), flowfabric.ErrValidation)
		require.False(t, t2.Finished(), "a refused call for bad input keeps the task")
		out, err := t2.Fail(b.ctx, flowfabric.FailParams{Reason: "nope", Category: "permanent", NoRetry: true})
		require.NoError(t, err)
		require.False(t, out.RetryScheduled)
		require.NoError(t, t3.Release(b.ctx))
		require.Equal(t, flowfabric.StateWaiting, b.get(t, t3.ExecutionID()).PublicState())
		require.Equal(t, 0, w.Held())
	})

	t.Run("CapacityHoldsUnderConcurrentClaims", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cfg := config("i1")
		cfg.MaxConcurrentTasks = 3
		w, _ := b.worker(t, cfg)
		for range 20 {
			b.create(t, "k", "")
		}
		var wg sync.WaitGroup
		var got atomic.Int32
		for range 12 {
			wg.Go(func() {
				task, err := w.ClaimNext(b.ctx)
				if err == nil && task != nil {
					got.Add(1)
				}
			})
		}
		wg.Wait()
		require.EqualValues(t, 3, got.Load())
		page, err := b.client.List(b.ctx, flowfabric.ListParams{State: flowfabric.StateActive})
		require.NoError(t, err)
		require.Len(t, page.Executions, 3)
	})

	t.Run("ClaimFromGrant", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, _ := b.worker(t, config("i1"))
		held := b.create(t, "k", "")
		granted := b.create(t, "k", "")
		task, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		if task.ExecutionID() != held {
			held, granted = granted, held
		}
		grant, err := b.client.IssueGrant(b.ctx, granted, flowfabric.GrantClaim, flowfabric.GrantParams{WorkerID: "w", TTL: flowfabric.Duration(time.Minute)})
		require.NoError(t, err)

		before := b.get(t, granted)
		_, err = w.ClaimFromGrant(b.ctx, testLane, *grant)
		require.ErrorIs(t, err, flowfabric.ErrWorkerAtCapacity)
		require.True(t, fftype.IsRetryable(err))
		require.Equal(t, before, b.get(t, granted), "the grant is untouched at capacity")

		_, err = w.ClaimFromGrant(b.ctx, "other", *grant)
		var ce *flowfabric.ConfigError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "lane", ce.Field)

		require.NoError(t, task.Complete(b.ctx, nil))
		gt, err := w.ClaimFromGrant(b.ctx, testLane, *grant)
		require.NoError(t, err)
		require.Equal(t, granted, gt.ExecutionID())
		require.NoError(t, gt.Complete(b.ctx, nil))
		_, err = w.ClaimFromGrant(b.ctx, testLane, *grant)
		require.ErrorIs(t, err, flowfabric.ErrGrantInvalid, "a grant is consumed once")
	})

	t.Run("ClaimFromReclaimGrant", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		lost := b.create(t, "k", "")
		busy := b.create(t, "k", "")
		dead, _ := b.worker(t, config("dead"))
		old, err := dead.ClaimNext(b.ctx)
		require.NoError(t, err)
		if old.ExecutionID() != lost {
			lost, busy = busy, lost
		}
		b.advance(t, testTTL)
		recv(t, old.Context().Done(), "the lost task's context")
		require.Equal(t, flowfabric.StateWaiting, b.get(t, lost).PublicState())

		// The dead worker is gone for good; a rescuer holds its only slot with the other execution.
		require.NoError(t, dead.Close(b.ctx))
		grant, err := b.client.IssueGrant(b.ctx, lost, flowfabric.GrantReclaim, flowfabric.GrantParams{WorkerID: "w", TTL: flowfabric.Duration(time.Minute)})
		require.NoError(t, err)
		w, _ := b.worker(t, config("rescuer"))
		hold, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.Equal(t, busy, hold.ExecutionID(), "the lost execution is reserved by the grant")

		args := flowfabric.ReclaimArgs{ExecutionID: lost, Lane: testLane}
		refusals := []struct {
			field string
			grant flowfabric.GrantRef
			args  flowfabric.ReclaimArgs
		}{
			{"execution_id", *grant, flowfabric.ReclaimArgs{ExecutionID: busy, Lane: testLane}},
			{"lane", *grant, flowfabric.ReclaimArgs{ExecutionID: lost, Lane: "other"}},
			{"expires_at", func() flowfabric.GrantRef { g := *grant; g.ExpiresAt = testStart.Add(time.Second); return g }(), args},
			{"kind", func() flowfabric.GrantRef { g := *grant; g.Kind = flowfabric.GrantClaim; return g }(), args},
		}
		for _, r := range refusals {
			before := b.store.calls.Load()
			_, err := w.ClaimFromReclaimGrant(b.ctx, r.grant, r.args)
			var ce *flowfabric.ConfigError
			require.ErrorAs(t, err, &ce, r.field)
			require.Equal(t, r.field, ce.Field)
			require.ErrorIs(t, err, flowfabric.ErrValidation)
			require.Equal(t, before, b.store.calls.Load(), "%s is refused before any store call", r.field)
		}
		before := b.get(t, lost)
		_, err = w.ClaimFromReclaimGrant(b.ctx, *grant, args)
		require.ErrorIs(t, err, flowfabric.ErrWorkerAtCapacity)
		require.Equal(t, before, b.get(t, lost), "the grant is untouched at capacity")

		require.NoError(t, hold.Complete(b.ctx, nil))
		out, err := w.ClaimFromReclaimGrant(b.ctx, *grant, args)
		require.NoError(t, err)
		require.Equal(t, flowfabric.ReclaimClaimed, out.Status)
		require.Equal(t, fftype.AttemptReclaim, out.Task.AttemptType())
		require.Equal(t, 1, out.Task.Attempt())
		require.ErrorIs(t, old.Complete(b.ctx, nil), flowfabric.ErrStaleLease, "the old holder cannot finish")
		require.NoError(t, out.Task.Complete(b.ctx, nil))

		again, err := w.ClaimFromReclaimGrant(b.ctx, *grant, args)
		require.NoError(t, err)
		require.Equal(t, flowfabric.ReclaimNotReclaimable, again.Status)
	})

	t.Run("ReclaimGrantNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, "k", "")
		require.NoError(t, func() error {
			l, err := b.client.Claim(b.ctx, flowfabric.ClaimParams{WorkerID: "x", WorkerInstanceID: "x1", Lanes: []string{testLane}})
			require.Len(t, l, 1)
			return err
		}())
		require.NoError(t, b.client.Revoke(b.ctx, id, "test"))
		grant, err := b.client.IssueGrant(b.ctx, id, flowfabric.GrantReclaim, flowfabric.GrantParams{WorkerID: "someone-else"})
		require.NoError(t, err)
		w, _ := b.worker(t, config("i1"))
		out, err := w.ClaimFromReclaimGrant(b.ctx, *grant, flowfabric.ReclaimArgs{ExecutionID: id, Lane: testLane})
		require.NoError(t, err)
		require.Equal(t, flowfabric.ReclaimGrantNotFound, out.Status, "a grant issued to another worker is not ours")
		require.Equal(t, 0, w.Held())
	})

	t.Run("StaleWorkerCannotCompleteAfterReclaim", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, "k", "")
		stale, _ := b.worker(t, config("stale"))
		task, err := stale.ClaimNext(b.ctx)
		require.NoError(t, err)
		// The holder stalls past its lease (its renewal never ran in time); the timer expires it.
		b.advance(t, 10*testTTL)
		recv(t, task.Context().Done(), "the stale task's context")
		cause := context.Cause(task.Context())
		require.ErrorIs(t, cause, flowfabric.ErrLeaseLost)
		require.ErrorIs(t, cause, flowfabric.ErrLeaseExpired)
		require.False(t, task.LeaseHealthy())

		fresh, _ := b.worker(t, config("fresh"))
		again, err := fresh.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.Equal(t, id, again.ExecutionID())
		require.Equal(t, fftype.AttemptReclaim, again.AttemptType())

		require.ErrorIs(t, task.Complete(b.ctx, []byte(`"stale"`)), flowfabric.ErrStaleLease, "another holder has it now")
		require.True(t, task.Finished(), "a refusal because the lease is gone lands")
		require.Equal(t, 0, stale.Held())
		_, err = task.Fail(b.ctx, flowfabric.FailParams{Reason: "stale"})
		require.ErrorIs(t, err, flowfabric.ErrState)
		require.Equal(t, flowfabric.StateActive, b.get(t, id).PublicState(), "the stale calls changed nothing")
		require.NoError(t, again.Complete(b.ctx, []byte(`"fresh"`)))
		res, err := b.client.Result(b.ctx, id)
		require.NoError(t, err)
		require.JSONEq(t, `"fresh"`, string(res))
		atts, err := b.client.Attempts(b.ctx, id)
		require.NoError(t, err)
		require.Len(t, atts, 2)
		require.Equal(t, fftype.AttemptInterrupted, atts[0].Status)
		require.Equal(t, fftype.AttemptSucceeded, atts[1].Status)
	})

	t.Run("RenewalKeepsALongTaskAlive", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, "k", "")
		w, sig := b.worker(t, config("i1"))
		task, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		epoch := task.Fence().Epoch
		const steps = 30 // ten lease TTLs
		for range steps {
			b.clock.Advance(testTTL / 3)
			recvID(t, sig.Renewed, id, "a renewal")
			_, _, err := b.client.RunDue(b.ctx)
			require.NoError(t, err)
		}
		x := b.get(t, id)
		require.Equal(t, flowfabric.StateActive, x.PublicState())
		require.Equal(t, epoch, x.LeaseEpoch, "renewal keeps the lease")
		require.Equal(t, b.clock.Now().Add(testTTL), x.LeaseExpiresAt.UTC())
		require.True(t, task.LeaseHealthy())
		require.Zero(t, task.ConsecutiveRenewalFailures())
		require.NoError(t, task.Context().Err())
		require.NoError(t, task.Complete(b.ctx, nil))
		require.Equal(t, flowfabric.StateCompleted, b.get(t, id).PublicState())
	})

	t.Run("CancelReachesTheHandler", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, sig := b.worker(t, config("i1"))
		bl := newBlocker()
		flowfabric.Handle(w, "block", bl.handle)
		run(t, w)

		id := b.create(t, "block", "")
		require.Equal(t, id, recv(t, bl.started, "the handler"))
		require.NoError(t, b.client.Cancel(b.ctx, id, flowfabric.CancelParams{Reason: "not needed"}))
		cause := recv(t, bl.causes, "the cancel")
		require.ErrorIs(t, cause, flowfabric.ErrExecutionCancelled)
		require.Contains(t, cause.Error(), "not needed")
		recvID(t, sig.Settled, id, "settling")
		x := b.get(t, id)
		require.Equal(t, flowfabric.StateCancelled, x.PublicState())
		require.Equal(t, "operator", x.CancelledBy)

		revoked := b.create(t, "block", "")
		require.Equal(t, revoked, recv(t, bl.started, "the handler"))
		require.NoError(t, b.client.Revoke(b.ctx, revoked, "rebalancing"))
		cause = recv(t, bl.causes, "the revoke")
		require.ErrorIs(t, cause, flowfabric.ErrLeaseLost)
		require.ErrorIs(t, cause, flowfabric.ErrLeaseRevoked)
		// The revoked execution is eligible for a reclaim; the worker takes it again.
		require.Equal(t, revoked, recv(t, bl.started, "the reclaimed execution"))
		require.NoError(t, b.client.Cancel(b.ctx, revoked, flowfabric.CancelParams{}))
		require.ErrorIs(t, recv(t, bl.causes, "the cancel"), flowfabric.ErrExecutionCancelled)
	})

	t.Run("LeaseExpiryReachesTheHandler", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, _ := b.worker(t, config("i1"))
		bl := newBlocker()
		flowfabric.Handle(w, "block", bl.handle)
		run(t, w)
		id := b.create(t, "block", "")
		require.Equal(t, id, recv(t, bl.started, "the handler"))
		b.advance(t, 10*testTTL)
		cause := recv(t, bl.causes, "the lease loss")
		require.ErrorIs(t, cause, flowfabric.ErrLeaseLost)
		require.ErrorIs(t, cause, flowfabric.ErrLeaseExpired)
	})

	t.Run("HandlerOutcomes", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, sig := b.worker(t, config("i1"))
		type args struct {
			Mode string `json:"mode"`
		}
		var order []string
		var mu sync.Mutex
		note := func(s string) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, s)
		}
		w.Use(func(next flowfabric.HandlerFunc) flowfabric.HandlerFunc {
			return func(ctx context.Context, t *flowfabric.ClaimedTask) error {
				note("outer:" + t.Kind())
				return next(ctx, t)
			}
		}, func(next flowfabric.HandlerFunc) flowfabric.HandlerFunc {
			return func(ctx context.Context, t *flowfabric.ClaimedTask) error {
				note("inner:" + t.Kind())
				return next(ctx, t)
			}
		})
		flowfabric.Handle(w, "job", func(ctx context.Context, t *flowfabric.Task[args]) error {
			switch t.Args.Mode {
			case "ok":
				return nil
			case "result":
				return t.Complete(ctx, []byte(`{"answer":42}`))
			case "error":
				return errors.New("transient trouble")
			case "noretry":
				return flowfabric.NoRetry(errors.New("bad input"))
			case "snooze":
				return flowfabric.Snooze(time.Minute)
			case "cancel":
				return flowfabric.Cancel(errors.New("no longer wanted"))
			case "panic":
				panic("boom")
			case "goexit":
				runtime.Goexit() // as t.FailNow in a handler does
			case "snooze-too-long":
				return flowfabric.Snooze(400 * 24 * time.Hour) // the engine refuses delays over a year
			}
			return fmt.Errorf("unknown mode %q", t.Args.Mode)
		})
		require.Error(t, flowfabric.HandleSafely(w, "job", func(context.Context, *flowfabric.Task[args]) error { return nil }), "one handler per kind")
		require.Panics(t, func() { flowfabric.Handle[args](w, "bad kind", nil) })
		run(t, w)

		ids := map[string]flowfabric.ExecutionID{}
		create := func(kind, payload string) flowfabric.ExecutionID {
			res, err := b.client.Create(b.ctx, flowfabric.CreateParams{Lane: testLane, Kind: kind, Payload: []byte(payload),
				Policy: flowfabric.Policy{Retry: &flowfabric.RetryPolicy{MaxRetries: 3,
					Backoff: flowfabric.Backoff{Kind: fftype.BackoffFixed, Initial: flowfabric.Duration(time.Minute)}}}})
			require.NoError(t, err)
			return res.ID
		}
		for _, mode := range []string{"ok", "result", "error", "noretry", "snooze", "cancel", "panic", "goexit", "snooze-too-long"} {
			ids[mode] = create("job", fmt.Sprintf(`{"mode":%q}`, mode))
		}
		ids["undecodable"] = create("job", `{"mode":7}`)
		ids["unknown"] = create("nobody-handles-this", "")
		pending := map[flowfabric.ExecutionID]bool{}
		for _, id := range ids {
			pending[id] = true
		}
		for len(pending) > 0 {
			delete(pending, recv(t, sig.Settled, "settling"))
		}

		x := b.get(t, ids["ok"])
		require.Equal(t, flowfabric.StateCompleted, x.PublicState())
		res, err := b.client.Result(b.ctx, ids["result"])
		require.NoError(t, err)
		require.JSONEq(t, `{"answer":42}`, string(res), "a handler may finish the task itself")

		x = b.get(t, ids["error"])
		require.Equal(t, flowfabric.StateDelayed, x.PublicState(), "an error is retried per policy")
		require.Equal(t, flowfabric.CategoryHandlerError, x.FailureCategory)
		require.Equal(t, "transient trouble", x.FailureReason)

		x = b.get(t, ids["noretry"])
		require.Equal(t, flowfabric.StateFailed, x.PublicState())
		require.Equal(t, "bad input", x.FailureReason)

		x = b.get(t, ids["snooze"])
		require.Equal(t, flowfabric.StateDelayed, x.PublicState())
		require.Equal(t, fftype.AttemptStateInterrupted, x.AttemptState, "a snooze continues the same attempt")
		require.Equal(t, 0, x.RetryCount)
		require.Equal(t, b.clock.Now().Add(time.Minute), x.DelayUntil.UTC())

		x = b.get(t, ids["cancel"])
		require.Equal(t, flowfabric.StateCancelled, x.PublicState())
		require.Equal(t, "no longer wanted", x.CancellationReason)

		x = b.get(t, ids["panic"])
		require.Equal(t, flowfabric.StateDelayed, x.PublicState(), "a panic is a failed attempt, retried")
		require.Equal(t, flowfabric.CategoryHandlerPanic, x.FailureCategory)
		require.Contains(t, x.FailureReason, "panic: boom")
		require.Contains(t, x.FailureReason, "worker_test.go", "the stack is in the failure")
		require.NotContains(t, x.FailureReason, "runtime/debug", "the stack starts at the panic")
		require.LessOrEqual(t, len(x.FailureReason), fftype.MaxReasonBytes)

		x = b.get(t, ids["goexit"])
		require.Equal(t, flowfabric.StateDelayed, x.PublicState(), "a handler that exits its goroutine fails the attempt")
		require.Equal(t, flowfabric.CategoryHandlerPanic, x.FailureCategory)
		require.Contains(t, x.FailureReason, "runtime.Goexit")

		x = b.get(t, ids["snooze-too-long"])
		require.Equal(t, flowfabric.StateDelayed, x.PublicState(), "an outcome the engine refuses fails the attempt, not left to expire")
		require.Equal(t, flowfabric.CategoryHandlerError, x.FailureCategory)
		require.Contains(t, x.FailureReason, "could not report the handler's outcome")
		require.Zero(t, x.ReclaimCount)

		x = b.get(t, ids["undecodable"])
		require.Equal(t, flowfabric.StateFailed, x.PublicState(), "a payload that does not decode is not retried")
		require.Equal(t, flowfabric.CategoryDecode, x.FailureCategory)

		x = b.get(t, ids["unknown"])
		require.Equal(t, flowfabric.CategoryNoHandler, x.FailureCategory)

		mu.Lock()
		defer mu.Unlock()
		require.True(t, strings.HasPrefix(order[0], "outer:"))
		require.Equal(t, "inner:"+strings.TrimPrefix(order[0], "outer:"), order[1], "the first middleware is the outermost")
		require.Contains(t, order, "outer:nobody-handles-this", "middleware wraps the no-handler case too")
	})

	t.Run("MiddlewarePanicWhileWrapping", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, sig := b.worker(t, config("i1"))
		w.Use(func(flowfabric.HandlerFunc) flowfabric.HandlerFunc { panic("middleware setup failed") })
		flowfabric.Handle(w, "k", func(context.Context, *flowfabric.Task[struct{}]) error { return nil })
		run(t, w)
		id := b.create(t, "k", "")
		recvID(t, sig.Settled, id, "settling")
		x := b.get(t, id)
		require.Equal(t, flowfabric.CategoryHandlerPanic, x.FailureCategory, "a panic in middleware fails the attempt like one in a handler")
		require.Contains(t, x.FailureReason, "middleware setup failed")
	})

	t.Run("RunContextEndAfterStopIsAHardStop", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, sig := b.worker(t, config("i1"))
		bl := newBlocker()
		flowfabric.Handle(w, "block", bl.handle)
		ctx, cancel := context.WithCancel(b.ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		id := b.create(t, "block", "")
		require.Equal(t, id, recv(t, bl.started, "the handler"))

		stopCtx, stopCancel := context.WithCancel(b.ctx)
		defer stopCancel()
		stopped := make(chan error, 1)
		go func() { stopped <- w.Stop(stopCtx) }() // graceful: waits for the handler
		recv(t, sig.Unclaimed, "the end of the claim loop")

		cancel() // the end of Run's ctx is a hard stop, Stop or no Stop
		require.ErrorIs(t, recv(t, bl.causes, "the handler's cancellation"), flowfabric.ErrWorkerStopped)
		require.NoError(t, recv(t, done, "Run"))
		require.NoError(t, recv(t, stopped, "Stop"))
	})

	t.Run("OwnFinishingCallIsNotALoss", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		slow := &slowFinisher{Backend: b.backend, EventWatcher: b.backend.(flowfabric.EventWatcher), delay: 300 * time.Millisecond}
		w, err := flowfabric.NewWorker(b.ctx, slow, config("i1"), nil)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
		for _, finish := range []func(*flowfabric.ClaimedTask) error{
			func(task *flowfabric.ClaimedTask) error { return task.Cancel(b.ctx, "mine") },
			func(task *flowfabric.ClaimedTask) error {
				_, err := task.Fail(b.ctx, flowfabric.FailParams{Reason: "boom"})
				return err
			},
		} {
			b.create(t, "k", "")
			task, err := w.ClaimNext(b.ctx)
			require.NoError(t, err)
			require.NotNil(t, task)
			require.NoError(t, finish(task))
			require.ErrorIs(t, context.Cause(task.Context()), flowfabric.ErrTaskFinished,
				"the event of the task's own call, seen before the call returned, is not a loss")
			require.True(t, task.LeaseHealthy())
		}
	})

	t.Run("RenewalDuringOwnFinishIsNotALoss", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		gb := &gatedComplete{Backend: b.backend, EventWatcher: b.backend.(flowfabric.EventWatcher),
			landed: make(chan struct{}), gate: make(chan struct{})}
		w, err := flowfabric.NewWorker(b.ctx, gb, config("i1"), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = w.Close(context.Background()) })
		sig := flowfabric.EnableSignals(w)
		b.create(t, "k", "")
		task, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.NotNil(t, task)

		done := make(chan error, 1)
		go func() { done <- task.Complete(context.Background(), nil) }()
		recv(t, gb.landed, "the Complete to land")
		b.clock.Advance(testTTL/3 + time.Millisecond) // a renewal is due while the answer travels
		recv(t, sig.Renewed, "a renewal")
		close(gb.gate)
		require.NoError(t, recv(t, done, "the Complete to return"))
		require.ErrorIs(t, context.Cause(task.Context()), flowfabric.ErrTaskFinished)
		require.True(t, task.LeaseHealthy())
	})

	t.Run("CompleteBinary", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, err := flowfabric.NewWorker(b.ctx, b.backend, config("i1"), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = w.Close(context.Background()) })
		id := b.create(t, "k", "")
		task, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.NotNil(t, task)
		require.ErrorIs(t, task.Complete(b.ctx, []byte{0, 1, 0xff}), flowfabric.ErrValidation, "Complete takes JSON")
		require.NoError(t, task.CompleteBinary(b.ctx, []byte{0, 1, 0xff}))
		res, err := b.client.Result(b.ctx, id)
		require.NoError(t, err)
		require.Equal(t, []byte{0, 1, 0xff}, res)
	})

	// However the worker finds out that the attempt timed out — by the timer's event, or
	// by a renewal refused after or even before the timer loop failed the attempt — the
	// task's cause is the lost lease and the timeout, also when the timeout failed the
	// last attempt and so the execution.
	t.Run("AttemptTimeoutIsTheLossCause", func(t *testing.T) {
		t.Parallel()
		for _, how := range []string{"events", "renewal", "renewal before the timer", "events, last attempt"} {
			b := setup(t)
			var retry *fftype.RetryPolicy
			if how == "events, last attempt" {
				retry = &fftype.RetryPolicy{}
			}
			backend := b.backend
			if !strings.HasPrefix(how, "events") {
				backend = plainBackend{backend} // the loss is found by a renewal
			}
			w, err := flowfabric.NewWorker(b.ctx, backend, config("i1"), nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = w.Close(context.Background()) })
			sig := flowfabric.EnableSignals(w)
			_, err = b.client.Create(b.ctx, flowfabric.CreateParams{Lane: testLane, Kind: "k",
				Policy: flowfabric.Policy{AttemptTimeout: fftype.Duration(500 * time.Millisecond), Retry: retry}})
			require.NoError(t, err)
			task, err := w.ClaimNext(b.ctx)
			require.NoError(t, err)
			require.NotNil(t, task)
			if how == "renewal before the timer" {
				b.clock.Advance(600 * time.Millisecond)
			} else {
				b.advance(t, 600*time.Millisecond)
			}
			if !strings.HasPrefix(how, "events") {
				b.clock.Advance(testTTL / 3)
				recv(t, sig.Renewed, "a renewal")
			}
			recv(t, task.Context().Done(), "the task's cancellation")
			cause := context.Cause(task.Context())
			require.ErrorIs(t, cause, flowfabric.ErrLeaseLost, how)
			require.ErrorIs(t, cause, fftype.ErrAttemptTimedOut, how)
		}
	})

	t.Run("CapacityHoldsUnderLoad", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		gate := make(chan struct{})
		var inFlight, peak atomic.Int32
		var seen sync.Map
		var dupes atomic.Int32
		handler := func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			if _, loaded := seen.LoadOrStore(t.ExecutionID(), true); loaded {
				dupes.Add(1)
			}
			<-gate
			return nil
		}
		const total = 40
		caps := []int{3, 2}
		var sigs []*flowfabric.WorkerSignals
		var workers []*flowfabric.Worker
		for i, c := range caps {
			cfg := config(fmt.Sprint("i", i))
			cfg.MaxConcurrentTasks = c
			w, sig := b.worker(t, cfg)
			flowfabric.Handle(w, "k", handler)
			sigs = append(sigs, sig)
			workers = append(workers, w)
		}
		for range total {
			b.create(t, "k", "")
		}
		for _, w := range workers {
			run(t, w)
		}
		// Each worker fills its slots and no more.
		for i, c := range caps {
			for range c {
				recv(t, sigs[i].Claimed, "a claim")
			}
			require.Equal(t, c, workers[i].Held())
		}
		close(gate)
		done := 0
		for done < total {
			select {
			case <-sigs[0].Settled:
				done++
			case <-sigs[1].Settled:
				done++
			case <-time.After(waitLimit):
				t.Fatalf("only %d of %d settled", done, total)
			}
		}
		require.LessOrEqual(t, int(peak.Load()), 5, "never more than the sum of the capacities")
		require.Zero(t, dupes.Load(), "each execution ran once")
		page, err := b.client.List(b.ctx, flowfabric.ListParams{State: flowfabric.StateCompleted, Limit: 100})
		require.NoError(t, err)
		require.Len(t, page.Executions, total)
	})

	// A handler that finishes its own task (here with a result) and goes on working still
	// runs: Run counts it against MaxConcurrentTasks until it returns.
	t.Run("HandlerThatFinishedItsTaskKeepsItsSlot", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cfg := config("i1")
		cfg.MaxConcurrentTasks = 1
		w, sig := b.worker(t, cfg)
		finish, finished, gate := make(chan struct{}), make(chan error, 2), make(chan struct{})
		flowfabric.Handle(w, "k", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
			<-finish
			finished <- t.Complete(ctx, []byte(`{"ok":true}`))
			<-gate // clean-up after reporting the result
			return nil
		})
		b.create(t, "k", "")
		b.create(t, "k", "")
		run(t, w)
		endCleanUp := sync.OnceFunc(func() { close(gate) })
		t.Cleanup(endCleanUp) // before Run's: the handlers' contexts end with their Complete
		first := recv(t, sig.Claimed, "the first claim")
		recv(t, sig.Full, "Run to wait for a slot")
		close(finish)
		require.NoError(t, recv(t, finished, "the first handler's Complete"))
		// Run looks for a slot again (it would have at once had the Complete freed one) and
		// finds none.
		flowfabric.WakeClaimLoop(w)
		recv(t, sig.Full, "Run to wait for a slot again")
		select {
		case id := <-sig.Claimed:
			t.Fatalf("claimed %s while the first handler was still running", id)
		default:
		}
		require.Equal(t, 1, w.Held())

		endCleanUp()
		recvID(t, sig.Settled, first, "the first handler to settle")
		second := recv(t, sig.Claimed, "the second claim once the first handler returned")
		recvID(t, sig.Settled, second, "the second handler to settle")
		require.Equal(t, flowfabric.StateCompleted, b.get(t, first).PublicState())
		require.Equal(t, flowfabric.StateCompleted, b.get(t, second).PublicState())
	})

	t.Run("StopAndCancelReleasesLeases", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cfg := config("i1")
		cfg.MaxConcurrentTasks = 2
		w, sig := b.worker(t, cfg)
		bl := newBlocker()
		flowfabric.Handle(w, "block", bl.handle)
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		a, c := b.create(t, "block", ""), b.create(t, "block", "")
		recv(t, bl.started, "a handler")
		recv(t, bl.started, "a handler")
		require.NoError(t, w.StopAndCancel(b.ctx))
		require.NoError(t, recv(t, done, "Run"))
		for range 2 {
			require.ErrorIs(t, recv(t, bl.causes, "a cancel"), flowfabric.ErrWorkerStopped)
			recv(t, sig.Settled, "settling")
		}
		for _, id := range []flowfabric.ExecutionID{a, c} {
			x := b.get(t, id)
			require.Equal(t, flowfabric.StateWaiting, x.PublicState(), "released: eligible at once")
			require.Equal(t, fftype.AttemptStateInterrupted, x.AttemptState)
			require.Equal(t, 0, x.RetryCount, "a release counts no retry")
		}
		require.NoError(t, w.Stop(b.ctx), "stopping a stopped worker is fine")

		other, _ := b.worker(t, config("i2"))
		task, err := other.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.True(t, task.Resumed(), "the next claim continues the attempt")
		require.Equal(t, 0, task.Attempt())
		require.NoError(t, task.Complete(b.ctx, nil))
	})

	t.Run("StopWaitsThenEscalates", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, sig := b.worker(t, config("i1"))
		gate := make(chan struct{})
		started := make(chan flowfabric.ExecutionID, 10)
		flowfabric.Handle(w, "stubborn", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
			started <- t.ExecutionID()
			<-gate // ignores its context
			return nil
		})
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		id := b.create(t, "stubborn", "")
		recv(t, started, "the handler")
		expired, cancel := context.WithCancel(b.ctx)
		cancel()
		require.ErrorIs(t, w.Stop(expired), context.Canceled, "the deadline passed before the handler returned")
		x := b.get(t, id)
		require.Equal(t, flowfabric.StateWaiting, x.PublicState(), "the stuck task's lease was released")
		close(gate)
		require.NoError(t, recv(t, done, "Run"))
		recvID(t, sig.Settled, id, "settling")
		require.Equal(t, flowfabric.StateWaiting, b.get(t, id).PublicState(), "the late completion was refused")
	})

	t.Run("StopDuringAClaimLeavesNothingLeased", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, "k", `{}`)
		backend := &stallingClaim{Backend: b.backend, entered: make(chan struct{})}
		w, err := flowfabric.NewWorker(b.ctx, backend, config("i1"), nil)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
		var ran atomic.Bool
		flowfabric.Handle(w, "k", func(context.Context, *flowfabric.Task[json.RawMessage]) error {
			ran.Store(true)
			return nil
		})
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		recv(t, backend.entered, "the worker's claim")
		require.NoError(t, w.Stop(b.ctx))
		require.NoError(t, recv(t, done, "Run to return"))
		require.False(t, ran.Load(), "a claim that returns after the stop starts nothing")
		leases, err := b.client.Claim(b.ctx, flowfabric.ClaimParams{WorkerID: "w", WorkerInstanceID: "other", Lanes: []string{testLane}})
		require.NoError(t, err)
		require.Len(t, leases, 1, "the execution is claimable at once, not after its lease TTL")
		require.Equal(t, id, leases[0].ExecutionID)
	})

	t.Run("StopIsGraceful", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, _ := b.worker(t, config("i1"))
		gate := make(chan struct{})
		started := make(chan struct{}, 10)
		flowfabric.Handle(w, "slow", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
			started <- struct{}{}
			<-gate
			return ctx.Err()
		})
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		id := b.create(t, "slow", "")
		recv(t, started, "the handler")
		stopped := make(chan error, 1)
		go func() { stopped <- w.Stop(context.Background()) }()
		select {
		case <-stopped:
			t.Fatal("Stop returned while a handler was running")
		case <-done:
			t.Fatal("Run returned while a handler was running")
		default:
		}
		close(gate)
		require.NoError(t, recv(t, stopped, "Stop"))
		require.NoError(t, recv(t, done, "Run"))
		require.Equal(t, flowfabric.StateCompleted, b.get(t, id).PublicState(), "the handler finished and completed")
	})

	t.Run("CloseReleasesTasksClaimedByHand", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, "k", "")
		w, err := flowfabric.NewWorker(b.ctx, b.backend, config("i1"), nil)
		require.NoError(t, err)
		task, err := w.ClaimNext(b.ctx)
		require.NoError(t, err)
		require.NoError(t, w.Close(b.ctx))
		require.ErrorIs(t, context.Cause(task.Context()), flowfabric.ErrWorkerStopped, "cut short by the close")
		x := b.get(t, id)
		require.Equal(t, flowfabric.StateWaiting, x.PublicState())
		require.Equal(t, "released", x.LastLeaseEnd)
	})

	t.Run("CloseWhileRunning", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, err := flowfabric.NewWorker(b.ctx, b.backend, config("i1"), nil)
		require.NoError(t, err)
		bl := newBlocker()
		flowfabric.Handle(w, "block", bl.handle)
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		id := b.create(t, "block", "")
		recv(t, bl.started, "the handler")
		expired, cancel := context.WithCancel(b.ctx)
		cancel()
		require.ErrorIs(t, w.Close(expired), context.Canceled, "Close's deadline passed before the handler returned")
		require.ErrorIs(t, recv(t, bl.causes, "the stop"), flowfabric.ErrWorkerStopped)
		require.NoError(t, recv(t, done, "Run"))
		require.Equal(t, flowfabric.StateWaiting, b.get(t, id).PublicState(), "released")
		_, err = b.client.GetWorker(b.ctx, "", "i1")
		require.ErrorIs(t, err, flowfabric.ErrWorkerNotRegistered, "deregistered all the same")
	})

	t.Run("WakesAfterItsEventFeedBroke", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		inner, ok := b.backend.(flowfabric.EventWatcher)
		require.True(t, ok)
		cw := &breakableWatcher{Backend: b.backend, inner: inner, hold: make(chan struct{})}
		b.backend = cw
		_, ran := b.idleWorker(t)
		cw.breakFeed()
		// Created while the worker follows no feed: its event never reaches the worker.
		id := b.create(t, "k", "")
		close(cw.hold)
		require.Equal(t, id, recv(t, ran, "the execution created while the feed was down"))
	})

	t.Run("WakesAtOnceForNewWork", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sig, ran := b.idleWorker(t)
		id := b.create(t, "k", "")
		require.Equal(t, id, recv(t, ran, "the new execution"))
		recv(t, sig.Idle, "Run to go idle again")
		// A delayed execution wakes it when the timer promotes it.
		delayed, err := b.client.Create(b.ctx, flowfabric.CreateParams{Lane: testLane, Kind: "k", Delay: flowfabric.Duration(time.Minute)})
		require.NoError(t, err)
		b.advance(t, time.Minute)
		require.Equal(t, delayed.ID, recv(t, ran, "the promoted execution"))
	})

	t.Run("WakesWhenItsLaneIsResumedElsewhere", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// An operator's process on the same store; the clock stands still, so the worker's
		// process would trust a lane state it cached for ever.
		there, err := flowfabric.NewClient(b.store, &flowfabric.Config{Clock: b.clock})
		require.NoError(t, err)
		require.NoError(t, there.PauseLane(b.ctx, testLane))
		id := b.create(t, "k", "")
		_, ran := b.idleWorker(t) // its claim found the lane paused
		require.NoError(t, there.ResumeLane(b.ctx, testLane))
		require.Equal(t, id, recv(t, ran, "the execution of the resumed lane"),
			"the lane_resumed event woke Run, whose claim must see the lane resumed")
	})

	t.Run("MarkedDeadAndEvicted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, _ := b.worker(t, config("i1"))
		bl := newBlocker()
		flowfabric.Handle(w, "block", bl.handle)
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		id := b.create(t, "block", "")
		require.Equal(t, id, recv(t, bl.started, "the handler"))

		n, err := b.client.MarkWorkerDead(b.ctx, "", "i1", "host unreachable")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		cause := recv(t, bl.causes, "the lease loss")
		require.ErrorIs(t, cause, flowfabric.ErrLeaseExpired)
		// Another process takes the instance id while this one's registration is gone; at
		// its next heartbeat the worker finds out and stops.
		_, err = b.client.RegisterWorker(b.ctx, flowfabric.WorkerRegistration{WorkerID: "w", InstanceID: "i1",
			Lanes: []string{testLane}, TTL: time.Hour, Session: "intruder"})
		require.NoError(t, err)
		b.clock.Advance(2 * testTTL)
		require.ErrorIs(t, recv(t, done, "Run"), flowfabric.ErrDuplicateWorkerInstance)
		_, err = w.ClaimNext(b.ctx)
		require.ErrorIs(t, err, flowfabric.ErrDuplicateWorkerInstance)
	})

	t.Run("ClaimViaServer", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		w, _ := b.worker(t, config("i1"))
		admin, ok := b.backend.(flowfabric.GrantScheduler)
		require.True(t, ok, "the backend is the scheduler too")

		none, err := w.ClaimViaServer(b.ctx, admin, testLane, time.Minute)
		require.NoError(t, err)
		require.Nil(t, none, "nothing eligible: nil, as the server's 204")
		gpu, err := b.client.Create(b.ctx, flowfabric.CreateParams{Lane: testLane, Kind: "k", Capabilities: []string{"gpu"}})
		require.NoError(t, err)
		none, err = w.ClaimViaServer(b.ctx, nil, testLane, 0)
		require.NoError(t, err)
		require.Nil(t, none, "an execution the worker cannot run is not granted to it")
		require.Nil(t, b.get(t, gpu.ID).Grant)
		_, err = w.ClaimViaServer(b.ctx, admin, "other", 0)
		var ce *flowfabric.ConfigError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "lane", ce.Field)

		first, second := b.create(t, "k", `{"n":1}`), b.create(t, "k", `{"n":2}`)
		task, err := w.ClaimViaServer(b.ctx, admin, testLane, time.Minute)
		require.NoError(t, err)
		require.NotNil(t, task)
		if task.ExecutionID() != first {
			first, second = second, first
		}
		x := b.get(t, first)
		require.Equal(t, flowfabric.StateActive, x.PublicState(), "the grant was consumed: the worker holds the lease")
		require.Equal(t, task.Fence().LeaseID, x.LeaseID)
		require.Nil(t, x.Grant)

		// At capacity the scheduler is not even asked: nothing is reserved for a worker that
		// cannot run it, and the other execution stays eligible for everyone.
		before := b.get(t, second)
		calls := b.store.calls.Load()
		_, err = w.ClaimViaServer(b.ctx, admin, testLane, time.Minute)
		require.ErrorIs(t, err, flowfabric.ErrWorkerAtCapacity)
		require.True(t, fftype.IsRetryable(err))
		require.Equal(t, calls, b.store.calls.Load(), "capacity is checked before any call")
		require.Equal(t, before, b.get(t, second))

		// A grant the scheduler issued stays intact while the worker is at capacity, and is
		// consumed once a slot is free.
		grant, err := admin.GrantNext(b.ctx, flowfabric.ClaimParams{WorkerID: "w", WorkerInstanceID: "i1", Lanes: []string{testLane}}, time.Minute)
		require.NoError(t, err)
		require.Equal(t, second, grant.ExecutionID)
		reserved := b.get(t, second)
		_, err = w.ClaimFromGrant(b.ctx, testLane, *grant)
		require.ErrorIs(t, err, flowfabric.ErrWorkerAtCapacity)
		require.Equal(t, reserved, b.get(t, second), "the grant is untouched at capacity")
		require.Equal(t, grant.ID, reserved.Grant.ID)
		require.NoError(t, task.Complete(b.ctx, nil))
		gt, err := w.ClaimFromGrant(b.ctx, testLane, *grant)
		require.NoError(t, err)
		require.Equal(t, second, gt.ExecutionID())
		require.NoError(t, gt.Complete(b.ctx, nil))

		third := b.create(t, "k", "")
		task, err = w.ClaimViaServer(b.ctx, nil, testLane, 0)
		require.NoError(t, err, "a nil admin is the worker's own backend")
		require.Equal(t, third, task.ExecutionID())
		require.NoError(t, task.Complete(b.ctx, nil))
		require.Equal(t, 0, w.Held())
	})

	t.Run("WithoutEventsCancelArrivesAtTheNextRenewal", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// A backend without the EventWatcher ability: the worker polls for work and hears of
		// a cancel when its renewal is refused, within a third of the lease TTL.
		w, err := flowfabric.NewWorker(b.ctx, noEvents{b.backend}, config("i1"), nil)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
		sig := flowfabric.EnableSignals(w)
		bl := newBlocker()
		flowfabric.Handle(w, "block", bl.handle)
		run(t, w)
		id := b.create(t, "block", "")
		require.Equal(t, id, recv(t, bl.started, "the handler"))
		require.NoError(t, b.client.Cancel(b.ctx, id, flowfabric.CancelParams{Reason: "not needed"}))
		select {
		case cause := <-bl.causes:
			t.Fatalf("the cancel arrived before any renewal, with no events: %v", cause)
		default:
		}
		b.clock.Advance(testTTL / 3)
		recvID(t, sig.Renewed, id, "the renewal")
		cause := recv(t, bl.causes, "the cancel")
		require.ErrorIs(t, cause, flowfabric.ErrExecutionCancelled, "the renewal's refusal is explained by the execution")
		require.Contains(t, cause.Error(), "not needed")
		recvID(t, sig.Settled, id, "settling")
		require.Equal(t, flowfabric.StateCancelled, b.get(t, id).PublicState())
	})
}

// noEvents hides a backend's EventWatcher ability.
type noEvents struct{ flowfabric.Backend }

// lockedWriter serialises writes to a buffer shared with the test.
type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// breakableWatcher follows events through inner until breakFeed ends the feed; following
// again then waits until hold is closed.
type breakableWatcher struct {
	flowfabric.Backend
	inner flowfabric.EventWatcher
	hold  chan struct{}

	mu     sync.Mutex
	feeds  int
	broken chan struct{}
}

func (b *breakableWatcher) WatchEvents(ctx context.Context, f flowfabric.EventFilter) (flowfabric.EventStream, error) {
	b.mu.Lock()
	b.feeds++
	again := b.feeds > 1
	if b.broken == nil {
		b.broken = make(chan struct{})
	}
	broken := b.broken
	b.mu.Unlock()
	if again {
		select {
		case <-b.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		broken = nil // the new feed is not broken
	}
	s, err := b.inner.WatchEvents(ctx, f)
	if err != nil {
		return nil, err
	}
	return newBreakableFeed(s, broken), nil
}

// breakFeed ends the first feed.
func (b *breakableWatcher) breakFeed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.broken)
}

// breakableFeed forwards inner's deliveries until broken is closed.
type breakableFeed struct {
	inner flowfabric.EventStream
	out   chan flowfabric.Delivery
	stop  chan struct{}
	once  sync.Once
	done  chan struct{}
	err   error
}

var errFeedBroken = errors.New("the feed broke")

func newBreakableFeed(inner flowfabric.EventStream, broken <-chan struct{}) *breakableFeed {
	f := &breakableFeed{inner: inner, out: make(chan flowfabric.Delivery), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer close(f.out)
		for {
			select {
			case d, ok := <-inner.Events():
				if !ok {
					f.err = inner.Err()
					return
				}
				select {
				case f.out <- d:
				case <-broken:
					f.err = errFeedBroken
					return
				case <-f.stop:
					return
				}
			case <-broken:
				f.err = errFeedBroken
				return
			case <-f.stop:
				return
			}
		}
	}()
	return f
}

func (f *breakableFeed) Events() <-chan flowfabric.Delivery { return f.out }

func (f *breakableFeed) Err() error {
	<-f.done
	return f.err
}

func (f *breakableFeed) Close() {
	f.once.Do(func() { close(f.stop) })
	f.inner.Close()
	<-f.done
}

// TestWorkerRunReturnsAfterStopWhileItsClaimHangs: Run's claim in flight on a store that
// stopped answering ends when Stop cancels it, and Run returns.
func TestWorkerRunReturnsAfterStopWhileItsClaimHangs(t *testing.T) {
	t.Parallel()
	s := newFaultStore(1)
	c, err := flowfabric.NewClient(s, nil)
	require.NoError(t, err)
	_, err = c.Create(t.Context(), flowfabric.CreateParams{Lane: testLane, Kind: "k"})
	require.NoError(t, err)
	w, err := flowfabric.NewWorker(t.Context(), c, config("i1"), nil)
	require.NoError(t, err)
	flowfabric.Handle(w, "k", func(context.Context, *flowfabric.Task[struct{}]) error { return nil })

	s.hung.Store(true)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	s.waitHung(t, 1) // the claim reached the store
	stopped := make(chan error, 1)
	go func() { stopped <- w.Stop(context.Background()) }()
	require.NoError(t, recv(t, stopped, "Stop"))
	require.NoError(t, recv(t, ran, "Run"))

	s.hung.Store(false)
	require.NoError(t, w.Close(context.Background()))
}

// TestWorkerCloseWhileTheStoreHangs: Close on a store that stopped answering, with
// handlers that ignore their context, returns within one clean-up window after its context
// ended, releases each held task once and keeps part of the window to deregister.
func TestWorkerCloseWhileTheStoreHangs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newFaultStore(2)
	// On the fake clock no renewal or heartbeat reaches the hung store: only Close's calls do.
	c, err := flowfabric.NewClient(s, &flowfabric.Config{Clock: fftest.NewClock(testStart)})
	require.NoError(t, err)
	backend := &closeCalls{Backend: c, EventWatcher: c, releases: map[flowfabric.ExecutionID]int{}}
	cfg := config("i1")
	cfg.MaxConcurrentTasks = 2
	w, err := flowfabric.NewWorker(ctx, backend, cfg, nil)
	require.NoError(t, err)
	const window = 500 * time.Millisecond
	flowfabric.SetCleanupWindow(w, window)
	gate := make(chan struct{})
	started := make(chan flowfabric.ExecutionID, 2)
	flowfabric.Handle(w, "stubborn", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
		started <- t.ExecutionID()
		<-gate // ignores its context
		return nil
	})
	for range 2 {
		_, err := c.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "stubborn"})
		require.NoError(t, err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	ids := []flowfabric.ExecutionID{recv(t, started, "a handler"), recv(t, started, "a handler")}

	s.hung.Store(true)
	expired, cancel := context.WithCancel(ctx)
	cancel()
	begin := time.Now()
	err = w.Close(expired)
	took := time.Since(begin)
	require.ErrorIs(t, err, context.Canceled, "Close's context ended before the handlers returned")
	require.Less(t, took, 2*window, "one clean-up window, not one for the stop and another for the close")
	require.True(t, backend.deregisterLive.Load(), "the releases left time to deregister")
	backend.mu.Lock()
	for _, id := range ids {
		require.Equal(t, 1, backend.releases[id], "%s is released once", id)
	}
	backend.mu.Unlock()

	s.hung.Store(false)
	close(gate)
	require.NoError(t, recv(t, done, "Run"))
}

// closeCalls is a backend that counts the worker's releases, by execution, and notes
// whether its deregistration began with time left.
type closeCalls struct {
	flowfabric.Backend
	flowfabric.EventWatcher

	mu       sync.Mutex
	releases map[flowfabric.ExecutionID]int

	deregisterLive atomic.Bool
}

func (b *closeCalls) Release(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence) error {
	b.mu.Lock()
	b.releases[id]++
	b.mu.Unlock()
	return b.Backend.Release(ctx, id, f)
}

func (b *closeCalls) DeregisterWorker(ctx context.Context, namespace, instanceID, session string) error {
	b.deregisterLive.Store(ctx.Err() == nil)
	return b.Backend.DeregisterWorker(ctx, namespace, instanceID, session)
}

// TestNewWorkerThroughALostRegistrationReply: a registration that landed but whose reply
// was lost is made again under the same session, which refreshes it: NewWorker opens the
// worker rather than failing.
func TestNewWorkerThroughALostRegistrationReply(t *testing.T) {
	t.Parallel()
	s := newFaultStore(2)
	c, err := flowfabric.NewClient(s, nil)
	require.NoError(t, err)
	s.loseReplies(fftype.EventWorkerRegistered, 1)
	w, err := flowfabric.NewWorker(t.Context(), c, config("i1"), nil)
	require.NoError(t, err)
	require.NoError(t, w.Close(context.Background()))
}

// TestNewWorkerAgainAfterItFailed: NewWorker that fails after its registration landed
// deregisters, so that calling it again opens the worker instead of being refused as a
// duplicate of the failed call until the registration lapses.
func TestNewWorkerAgainAfterItFailed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// fault makes the next NewWorker on s with ctx fail after it registered; cancel
		// ends ctx.
		fault func(s *faultStore, cancel context.CancelFunc)
	}{
		{"ContextEndedAsTheRegistrationLanded", func(s *faultStore, cancel context.CancelFunc) {
			s.loseReplies(fftype.EventWorkerRegistered, 1)
			s.onFault = cancel
		}},
		{"WatchFailed", func(s *faultStore, _ context.CancelFunc) {
			s.failBounds(1)
			s.failUnits(fftype.EventWorkerDeregistered, 1) // the first deregistration too
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newFaultStore(2)
			c, err := flowfabric.NewClient(s, nil)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			tc.fault(s, cancel)
			_, err = flowfabric.NewWorker(ctx, c, config("i1"), nil)
			require.Error(t, err)

			w, err := flowfabric.NewWorker(t.Context(), c, config("i1"), nil)
			require.NoError(t, err, "opening the worker again")
			require.NoError(t, w.Close(context.Background()))
		})
	}
}

// TestCloseDeregistersThroughAPassingFailure: Close frees the instance id at once even
// when its first deregistration meets a passing failure (a store blip, a proxy's 503): it
// tries again, so the process restarting with the same id is not refused as a duplicate
// of itself until the registration lapses.
func TestCloseDeregistersThroughAPassingFailure(t *testing.T) {
	t.Parallel()
	s := newFaultStore(2)
	c, err := flowfabric.NewClient(s, nil)
	require.NoError(t, err)
	w, err := flowfabric.NewWorker(t.Context(), c, config("i1"), nil)
	require.NoError(t, err)
	s.failUnits(fftype.EventWorkerDeregistered, 1)
	require.NoError(t, w.Close(context.Background()))

	w, err = flowfabric.NewWorker(t.Context(), c, config("i1"), nil)
	require.NoError(t, err, "the restarted worker is refused")
	require.NoError(t, w.Close(context.Background()))
}

// TestWorkerThroughLostReplies runs a worker through lost replies of its claims and
// finishing calls, and a finishing call that fails before it lands: each execution ends
// once, in the state its handler asked for.
func TestWorkerThroughLostReplies(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newFaultStore(4)
	c, err := flowfabric.NewClient(s, &flowfabric.Config{TimerPollInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	c.Start(ctx) // a claim whose reply was lost leaves a lease that must expire
	t.Cleanup(c.Stop)
	cfg := config("i1")
	cfg.LeaseTTL, cfg.ClaimPollInterval, cfg.MaxConcurrentTasks = time.Second, 50*time.Millisecond, 4
	w, err := flowfabric.NewWorker(ctx, c, cfg, nil)
	require.NoError(t, err)
	var runs sync.Map // execution id → *atomic.Int32
	first := func(id flowfabric.ExecutionID) bool {
		v, _ := runs.LoadOrStore(id, new(atomic.Int32))
		return v.(*atomic.Int32).Add(1) == 1
	}
	flowfabric.Handle(w, "complete", func(ctx context.Context, t *flowfabric.Task[json.RawMessage]) error {
		return t.Complete(ctx, []byte(`{"ok":true}`))
	})
	flowfabric.Handle(w, "fail", func(ctx context.Context, t *flowfabric.Task[json.RawMessage]) error {
		if first(t.ExecutionID()) {
			return errors.New("the first run fails")
		}
		return nil
	})
	flowfabric.Handle(w, "snooze", func(ctx context.Context, t *flowfabric.Task[json.RawMessage]) error {
		if first(t.ExecutionID()) {
			return flowfabric.Snooze(100 * time.Millisecond)
		}
		return nil
	})
	flowfabric.Handle(w, "plain", func(context.Context, *flowfabric.Task[json.RawMessage]) error { return nil })

	s.loseReplies(fftype.EventCompleted, 2)
	s.loseReplies(fftype.EventRetryScheduled, 1)
	s.loseReplies(fftype.EventDelayed, 1)
	s.loseReplies(fftype.EventClaimed, 1)
	s.failUnits(fftype.EventCompleted, 1)
	policy := fftype.Policy{Retry: &fftype.RetryPolicy{MaxRetries: 3,
		Backoff: fftype.Backoff{Kind: fftype.BackoffFixed, Initial: fftype.Duration(50 * time.Millisecond)}}}
	var ids []flowfabric.ExecutionID
	for kind, n := range map[string]int{"complete": 3, "fail": 2, "snooze": 2, "plain": 3} {
		for range n {
			res, err := c.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: kind, Policy: policy})
			require.NoError(t, err)
			ids = append(ids, res.ID)
		}
	}

	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	for _, id := range ids {
		require.Eventually(t, func() bool {
			x, err := c.Get(ctx, id)
			return err == nil && x.Phase == fftype.PhaseTerminal
		}, waitLimit, 10*time.Millisecond, "execution %s ends", id)
	}
	require.NoError(t, w.Stop(ctx))
	require.NoError(t, recv(t, done, "Run"))
	require.NoError(t, w.Close(ctx))

	events := eventCounts(t, s)
	for _, id := range ids {
		x, err := c.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, fftype.OutcomeSuccess, x.Outcome, "%s %s", id, x.Kind)
		require.Equal(t, 1, events[id][fftype.EventCompleted], "%s %s: %v", id, x.Kind, events[id])
		switch x.Kind {
		case "fail":
			require.Equal(t, 1, x.RetryCount, "%s: one retry", id)
			require.Equal(t, 1, events[id][fftype.EventRetryScheduled], "%v", events[id])
		case "snooze":
			require.Equal(t, 0, x.RetryCount)
			require.Equal(t, 1, events[id][fftype.EventDelayed], "%v", events[id])
		case "complete":
			r, err := c.Result(ctx, id)
			require.NoError(t, err)
			require.JSONEq(t, `{"ok":true}`, string(r))
		}
	}
}

// TestWorkerReportsAnOutcomeThroughAnOutage: a handler's outcome refused by a store
// outage longer than the clean-up window, but shorter than the lease, is retried until it
// lands: the execution completes once and its handler does not run again.
func TestWorkerReportsAnOutcomeThroughAnOutage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newFaultStore(1)
	// On the fake clock the lease does not expire during the outage.
	c, err := flowfabric.NewClient(s, &flowfabric.Config{Clock: fftest.NewClock(testStart)})
	require.NoError(t, err)
	w, err := flowfabric.NewWorker(ctx, c, config("i1"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
	flowfabric.SetCleanupWindow(w, 100*time.Millisecond) // over long before the outage
	sig := flowfabric.EnableSignals(w)
	var runs atomic.Int32
	flowfabric.Handle(w, "k", func(context.Context, *flowfabric.Task[struct{}]) error {
		runs.Add(1)
		return nil
	})
	s.failUnits(fftype.EventCompleted, 5) // the store refuses the first five tries (about 0.85 s)
	res, err := c.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "k"})
	require.NoError(t, err)
	run(t, w)
	recvID(t, sig.Settled, res.ID, "settling")

	x, err := c.Get(ctx, res.ID)
	require.NoError(t, err)
	require.Equal(t, flowfabric.StateCompleted, x.PublicState(), "the outcome landed once the store answered")
	require.Equal(t, 1, eventCounts(t, s)[res.ID][fftype.EventCompleted])
	require.Equal(t, int32(1), runs.Load(), "the handler ran once")
}

// TestWorkerRetriesAHandlersOwnFinishThroughABlip: a handler that finishes its task itself
// and returns the error of that finishing call (`return t.Complete(ctx, result)`), which a
// store blip refused, has the same call made again, with the same arguments, as the outcome
// of a handler returning nil is: the execution ends as the handler asked, and the handler
// does not run again on a spent retry.
func TestWorkerRetriesAHandlersOwnFinishThroughABlip(t *testing.T) {
	t.Parallel()
	type handler = func(ctx context.Context, t *flowfabric.Task[struct{}]) error
	cases := []struct {
		name  string
		event fftype.EventType // of the finishing call whose unit fails once
		fn    handler
		runs  int // how often the handler runs
		check func(t *testing.T, b *workerBundle, x *flowfabric.Execution)
	}{
		{
			name: "Complete", event: fftype.EventCompleted, runs: 1,
			fn: func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
				return t.Complete(ctx, []byte(`{"answer":42}`))
			},
			check: func(t *testing.T, b *workerBundle, x *flowfabric.Execution) {
				require.Equal(t, flowfabric.StateCompleted, x.PublicState())
				res, err := b.client.Result(b.ctx, x.ID)
				require.NoError(t, err)
				require.JSONEq(t, `{"answer":42}`, string(res))
			},
		},
		{
			name: "CompleteBinaryWrapped", event: fftype.EventCompleted, runs: 1,
			fn: func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
				if err := t.CompleteBinary(ctx, []byte{0xff, 0}); err != nil {
					return fmt.Errorf("reporting the result: %w", err)
				}
				return nil
			},
			check: func(t *testing.T, b *workerBundle, x *flowfabric.Execution) {
				require.Equal(t, flowfabric.StateCompleted, x.PublicState())
				res, enc, err := b.client.ResultWithEncoding(b.ctx, x.ID)
				require.NoError(t, err)
				require.Equal(t, []byte{0xff, 0}, res)
				require.Equal(t, flowfabric.EncodingBinary, enc)
			},
		},
		{
			// The handler ignores the refusal and returns nil: its result is not lost.
			name: "CompleteThenNil", event: fftype.EventCompleted, runs: 1,
			fn: func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
				_ = t.Complete(ctx, []byte(`{"answer":43}`))
				return nil
			},
			check: func(t *testing.T, b *workerBundle, x *flowfabric.Execution) {
				require.Equal(t, flowfabric.StateCompleted, x.PublicState())
				res, err := b.client.Result(b.ctx, x.ID)
				require.NoError(t, err)
				require.JSONEq(t, `{"answer":43}`, string(res))
			},
		},
		{
			name: "Fail", event: fftype.EventFailed, runs: 1,
			fn: func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
				_, err := t.Fail(ctx, flowfabric.FailParams{Reason: "bad input", Category: "permanent", NoRetry: true})
				return err
			},
			check: func(t *testing.T, b *workerBundle, x *flowfabric.Execution) {
				require.Equal(t, flowfabric.StateFailed, x.PublicState())
				require.Equal(t, "bad input", x.FailureReason)
				require.Equal(t, "permanent", x.FailureCategory)
			},
		},
		{
			name: "Cancel", event: fftype.EventCancelled, runs: 1,
			fn: func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
				return t.Cancel(ctx, "no longer wanted")
			},
			check: func(t *testing.T, b *workerBundle, x *flowfabric.Execution) {
				require.Equal(t, flowfabric.StateCancelled, x.PublicState())
				require.Equal(t, "no longer wanted", x.CancellationReason)
			},
		},
		{
			name: "Delay", event: fftype.EventDelayed, runs: 1,
			fn: func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
				return t.Delay(ctx, time.Hour)
			},
			check: func(t *testing.T, b *workerBundle, x *flowfabric.Execution) {
				require.Equal(t, flowfabric.StateDelayed, x.PublicState())
				require.Equal(t, fftype.AttemptStateInterrupted, x.AttemptState)
				require.Equal(t, b.clock.Now().Add(time.Hour), x.DelayUntil.UTC())
			},
		},
		{
			name: "Release", event: fftype.EventLeaseReleased, runs: 2, // released, then resumed
			fn: func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
				if t.Resumed() {
					return nil
				}
				return t.Release(ctx)
			},
			check: func(t *testing.T, b *workerBundle, x *flowfabric.Execution) {
				require.Equal(t, flowfabric.StateCompleted, x.PublicState())
			},
		},
	}
	for _, tr := range workerTransports() {
		for _, tc := range cases {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				s := newFaultStore(1)
				b := newWorkerBundle(t, func(testing.TB) ffstore.Store { return s }, tr)
				w, sig := b.worker(t, config("i1"))
				var runs atomic.Int32
				flowfabric.Handle(w, "k", func(ctx context.Context, t *flowfabric.Task[struct{}]) error {
					runs.Add(1)
					return tc.fn(ctx, t)
				})
				s.failUnits(tc.event, 1)
				res, err := b.client.Create(b.ctx, flowfabric.CreateParams{Lane: testLane, Kind: "k",
					Policy: flowfabric.Policy{Retry: &flowfabric.RetryPolicy{MaxRetries: 3}}})
				require.NoError(t, err)
				run(t, w)
				for range tc.runs {
					recvID(t, sig.Settled, res.ID, "settling")
				}

				x := b.get(t, res.ID)
				require.Zero(t, x.RetryCount, "no retry spent: category %q, reason %q", x.FailureCategory, x.FailureReason)
				tc.check(t, b, x)
				require.Equal(t, 1, eventCounts(t, s)[res.ID][tc.event])
				require.Equal(t, int32(tc.runs), runs.Load())
			})
		}
	}
}

// TestRefusedOutcomeKeepsItsIntent: when the backend refuses the report of a handler's
// outcome as invalid (here, any reason that says "unspeakable"), the worker reports the
// refusal instead, as the same kind of outcome: a NoRetry failure stays final and a
// cancel stays a cancel, rather than both becoming a failure that is retried.
func TestRefusedOutcomeKeepsItsIntent(t *testing.T) {
	t.Parallel()
	for _, tr := range workerTransports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := newWorkerBundle(t, func(testing.TB) ffstore.Store { return ffmem.New(&ffmem.Options{Shards: 2}) }, tr)
			w, err := flowfabric.NewWorker(b.ctx, newRefusingReasons(b.backend, "unspeakable"), config("i1"), nil)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
			sig := flowfabric.EnableSignals(w)
			flowfabric.Handle(w, "noretry", func(context.Context, *flowfabric.Task[struct{}]) error {
				return flowfabric.NoRetry(errors.New("unspeakable input"))
			})
			flowfabric.Handle(w, "cancel", func(context.Context, *flowfabric.Task[struct{}]) error {
				return flowfabric.Cancel(errors.New("unspeakable request"))
			})
			noRetry, cancel := b.create(t, "noretry", ""), b.create(t, "cancel", "")
			run(t, w)
			pending := map[flowfabric.ExecutionID]bool{noRetry: true, cancel: true}
			for len(pending) > 0 {
				delete(pending, recv(t, sig.Settled, "settling"))
			}

			x := b.get(t, noRetry)
			require.Equal(t, flowfabric.StateFailed, x.PublicState(), "a NoRetry failure stays final")
			require.Equal(t, flowfabric.CategoryHandlerError, x.FailureCategory)
			require.Contains(t, x.FailureReason, "could not report the handler's outcome")
			x = b.get(t, cancel)
			require.Equal(t, flowfabric.StateCancelled, x.PublicState(), "a cancel stays a cancel")
			require.Contains(t, x.CancellationReason, "could not report the handler's outcome")
		})
	}
}

// refusingReasons is a backend that refuses as invalid every failure and cancel whose
// reason contains a word, as a store refuses a reason it cannot keep.
type refusingReasons struct {
	flowfabric.Backend
	flowfabric.EventWatcher
	word string
}

func newRefusingReasons(b flowfabric.Backend, word string) *refusingReasons {
	w, _ := b.(flowfabric.EventWatcher)
	return &refusingReasons{Backend: b, EventWatcher: w, word: word}
}

// refuses returns the refusal of reason, or nil.
func (b *refusingReasons) refuses(reason string) error {
	if strings.Contains(reason, b.word) {
		return fftype.Validationf(fftype.CodeInvalidInput, "a reason the store cannot keep")
	}
	return nil
}

func (b *refusingReasons) Fail(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, p flowfabric.FailParams) (flowfabric.FailOutcome, error) {
	if err := b.refuses(p.Reason); err != nil {
		return flowfabric.FailOutcome{}, err
	}
	return b.Backend.Fail(ctx, id, f, p)
}

func (b *refusingReasons) Cancel(ctx context.Context, id flowfabric.ExecutionID, p flowfabric.CancelParams) error {
	if err := b.refuses(p.Reason); err != nil {
		return err
	}
	return b.Backend.Cancel(ctx, id, p)
}

// refusingComplete is a backend whose Complete is refused with a passing error (an outage
// that reaches only completions) while refuse is set; tries receives a value per refusal.
type refusingComplete struct {
	flowfabric.Backend
	flowfabric.EventWatcher
	refuse atomic.Bool
	tries  chan struct{}
}

func newRefusingComplete(b flowfabric.Backend) *refusingComplete {
	w, _ := b.(flowfabric.EventWatcher)
	r := &refusingComplete{Backend: b, EventWatcher: w, tries: make(chan struct{}, 1000)}
	r.refuse.Store(true)
	return r
}

func (b *refusingComplete) Complete(ctx context.Context, id flowfabric.ExecutionID, f flowfabric.Fence, result []byte, enc flowfabric.PayloadEncoding) error {
	if b.refuse.Load() {
		select {
		case b.tries <- struct{}{}:
		default:
		}
		return errFault()
	}
	return b.Backend.Complete(ctx, id, f, result, enc)
}

// refusedOutcome runs a worker on bundle b whose completions are refused, with the given
// clean-up window, and a handler that returns nil at once. It returns once the first
// completion of execution id was refused. The worker is closed at cleanup, once the refusals
// stop.
func (b *workerBundle) refusedOutcome(t *testing.T, window time.Duration) (w *flowfabric.Worker, sig *flowfabric.WorkerSignals, backend *refusingComplete, id flowfabric.ExecutionID, done <-chan error, runs *atomic.Int32) {
	t.Helper()
	backend = newRefusingComplete(b.backend)
	w, err := flowfabric.NewWorker(b.ctx, backend, config("i1"), nil)
	require.NoError(t, err)
	flowfabric.SetCleanupWindow(w, window)
	sig = flowfabric.EnableSignals(w)
	runs = new(atomic.Int32)
	flowfabric.Handle(w, "k", func(context.Context, *flowfabric.Task[struct{}]) error {
		runs.Add(1)
		return nil
	})
	ran, returned := make(chan error, 1), make(chan struct{})
	go func() {
		ran <- w.Run(context.Background())
		close(returned)
	}()
	t.Cleanup(func() {
		backend.refuse.Store(false)
		require.NoError(t, w.Close(context.Background()))
		<-returned
	})
	id = b.create(t, "k", "")
	recv(t, backend.tries, "a refused completion")
	return w, sig, backend, id, ran, runs
}

// TestWorkerDropsAnOutcomeOnceTheExecutionIsCancelled: an operator cancels an execution
// whose finished handler's outcome is being retried through an outage. Once the worker
// learns of the cancel the outcome can no longer land, so its retries stop at once and the
// slot is freed, although the clean-up window and the lease (on a clock that does not
// move) would allow more.
func TestWorkerDropsAnOutcomeOnceTheExecutionIsCancelled(t *testing.T) {
	t.Parallel()
	for _, tr := range workerTransports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := newWorkerBundle(t, func(testing.TB) ffstore.Store { return newFaultStore(1) }, tr)
			_, sig, _, id, _, _ := b.refusedOutcome(t, time.Hour)
			require.NoError(t, b.client.Cancel(b.ctx, id, flowfabric.CancelParams{Reason: "operator"}))
			recvID(t, sig.Settled, id, "the outcome to be dropped")
			require.Equal(t, flowfabric.StateCancelled, b.get(t, id).PublicState())
		})
	}
}

// TestWorkerGivesUpAnOutcomeAtTheLeaseExpiry: an outcome the store keeps refusing, while it
// accepts renewals, is retried until the lease's expiry known when the handler returned
// (and the clean-up window) has passed, then given up: the renewals that keep the lease
// meanwhile do not push that bound back.
func TestWorkerGivesUpAnOutcomeAtTheLeaseExpiry(t *testing.T) {
	t.Parallel()
	b := newWorkerBundle(t, func(testing.TB) ffstore.Store { return newFaultStore(1) }, testTransport{name: "InProcess"})
	// A window short of the test's length, so that the lease's expiry is the later bound,
	// and long enough for Close to deregister.
	_, sig, backend, id, _, _ := b.refusedOutcome(t, time.Second)
	for range 2 { // the lease is renewed meanwhile...
		b.advance(t, testTTL/3)
		recvID(t, sig.Renewed, id, "a renewal")
	}
	// ...but the bound stays the expiry known when the handler returned; once past it (a
	// renewal may or may not come first), the outcome is given up.
	b.advance(t, testTTL/3+time.Millisecond)
	recvID(t, sig.Settled, id, "the outcome to be given up")
	require.True(t, backend.refuse.Load())
	require.Equal(t, flowfabric.StateActive, b.get(t, id).PublicState(), "the lease is left to expire")
}

// TestWorkerStopKeepsAFinishedOutcome: Stop whose context ends while a finished handler's
// outcome is retried through a short outage does not release that task (its handler is no
// longer running): the outcome lands once the store is back and the handler ran once.
func TestWorkerStopKeepsAFinishedOutcome(t *testing.T) {
	t.Parallel()
	for _, tr := range workerTransports() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := newWorkerBundle(t, func(testing.TB) ffstore.Store { return newFaultStore(1) }, tr)
			w, sig, backend, id, done, runs := b.refusedOutcome(t, time.Hour)
			expired, cancel := context.WithCancel(b.ctx)
			cancel()
			require.ErrorIs(t, w.Stop(expired), context.Canceled)
			backend.refuse.Store(false) // the outage ends, well within the lease
			recvID(t, sig.Settled, id, "settling")
			require.NoError(t, recv(t, done, "Run"))
			require.Equal(t, flowfabric.StateCompleted, b.get(t, id).PublicState())
			require.Equal(t, int32(1), runs.Load(), "the handler ran once")
		})
	}
}

// TestWorkerCloseEndsOutcomeRetries: Close, even with a context that never ends, ends the
// retries of a finished handler's outcome (on a clock that does not move they would go on
// for ever) and releases the task, so the execution is eligible again at once.
func TestWorkerCloseEndsOutcomeRetries(t *testing.T) {
	t.Parallel()
	b := newWorkerBundle(t, func(testing.TB) ffstore.Store { return newFaultStore(1) }, testTransport{name: "InProcess"})
	w, _, _, id, done, _ := b.refusedOutcome(t, time.Hour)
	closed := make(chan error, 1)
	go func() { closed <- w.Close(context.Background()) }()
	require.NoError(t, recv(t, closed, "Close"))
	require.NoError(t, recv(t, done, "Run"))
	require.Equal(t, flowfabric.StateWaiting, b.get(t, id).PublicState(), "released")
}

// eventCounts tallies the events of each execution in the event logs of s.
func eventCounts(t *testing.T, s ffstore.Store) map[flowfabric.ExecutionID]map[fftype.EventType]int {
	t.Helper()
	out := map[flowfabric.ExecutionID]map[fftype.EventType]int{}
	for shard := range s.Shards() {
		for after := uint64(0); ; {
			evs, err := s.ReadEvents(t.Context(), shard, after, 512)
			require.NoError(t, err)
			if len(evs) == 0 {
				break
			}
			for _, ev := range evs {
				after = ev.Seq
				if out[ev.ExecutionID] == nil {
					out[ev.ExecutionID] = map[fftype.EventType]int{}
				}
				out[ev.ExecutionID][ev.Type]++
			}
		}
	}
	return out
}
