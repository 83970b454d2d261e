package flowfabric_test

import (
	"context"
	"net/http"
	"net/http/httptest"
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
	"github.com/flowfabric/flowfabric/fftest"
)

// remoteServer is an ffserver in front of an in-memory store that a test can take down
// and bring back up (a new server on the same store), as a restart does. Event streams
// signal on streams once they flush (the worker follows the log); while down it answers
// 503, and a worker's attempt to follow the events again signals on downHits.
type remoteServer struct {
	store    *ffmem.Store
	clock    *fftest.Clock
	client   *flowfabric.Client // the current server's client
	http     *httptest.Server
	mu       sync.Mutex
	srv      *ffserver.Server
	down     atomic.Bool
	streams  chan struct{}
	downHits chan struct{}
	nstreams atomic.Int32
}

func newRemoteServer(t *testing.T) *remoteServer {
	t.Helper()
	s := &remoteServer{store: ffmem.New(&ffmem.Options{Shards: 2}), clock: fftest.NewClock(testStart),
		streams: make(chan struct{}, 10), downHits: make(chan struct{}, 1)}
	s.start(t)
	s.http = httptest.NewServer(s)
	t.Cleanup(s.http.Close)
	return s
}

// start serves the store with a new client and server.
func (s *remoteServer) start(t *testing.T) *ffserver.Server {
	t.Helper()
	client, err := flowfabric.NewClient(s.store, &flowfabric.Config{Clock: s.clock})
	require.NoError(t, err)
	srv, err := ffserver.New(client, ffserver.Config{})
	require.NoError(t, err)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client, s.srv = client, srv
	return srv
}

// worker opens a worker on an ffclient of the server that polls only when told to.
func (s *remoteServer) worker(t *testing.T) *flowfabric.Worker {
	t.Helper()
	remote, err := ffclient.New(s.http.URL, &ffclient.Config{Clock: s.clock})
	require.NoError(t, err)
	cfg := config("i1")
	cfg.ClaimPollInterval = time.Hour
	w, err := flowfabric.NewWorker(t.Context(), remote, cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
	return w
}

type flushHook struct {
	http.ResponseWriter
	once sync.Once
	fn   func()
}

func (f *flushHook) FlushError() error {
	err := http.NewResponseController(f.ResponseWriter).Flush()
	f.once.Do(f.fn)
	return err
}
func (f *flushHook) Unwrap() http.ResponseWriter { return f.ResponseWriter }

func (s *remoteServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	events := r.URL.Path == "/v1/events"
	if s.down.Load() {
		if events {
			select {
			case s.downHits <- struct{}{}:
			default:
			}
		}
		http.Error(w, "restarting", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if events {
		s.nstreams.Add(1)
		w = &flushHook{ResponseWriter: w, fn: func() { s.streams <- struct{}{} }}
	}
	srv.ServeHTTP(w, r)
}

func TestRemoteWatchResumesAfterServerRestart(t *testing.T) {
	t.Run("Graceful", func(t *testing.T) { remoteRestart(t, false) })
	t.Run("Abrupt", func(t *testing.T) { remoteRestart(t, true) })
}

func remoteRestart(t *testing.T, abrupt bool) {
	ctx := t.Context()
	s := newRemoteServer(t)
	w := s.worker(t)
	sig := flowfabric.EnableSignals(w)
	flowfabric.SetIdleBackoff(w, time.Hour)
	bl := newBlocker()
	flowfabric.Handle(w, "block", bl.handle)
	run(t, w)
	recv(t, s.streams, "the first stream")
	recv(t, sig.Idle, "Run to go idle")

	held, err := s.client.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "block"})
	require.NoError(t, err)
	require.Equal(t, held.ID, recv(t, bl.started, "the handler"))

	// The server restarts: its streams end, a new server on the same store takes over.
	old := s.srv
	s.start(t)
	if abrupt {
		s.http.CloseClientConnections()
	} else {
		old.BeginShutdown()
	}
	old.Close()
	recv(t, s.streams, "the worker's new stream")

	// A revoke on the new server reaches the held task through the new stream.
	require.NoError(t, s.client.Revoke(ctx, held.ID, "rebalancing"))
	require.ErrorIs(t, recv(t, bl.causes, "the revoke"), flowfabric.ErrLeaseRevoked)
	require.Equal(t, held.ID, recv(t, bl.started, "the reclaim"))
	require.NoError(t, s.client.Cancel(ctx, held.ID, flowfabric.CancelParams{Reason: "done"}))
	require.ErrorIs(t, recv(t, bl.causes, "the cancel"), flowfabric.ErrExecutionCancelled)

	// New work wakes Run through the new stream.
	recv(t, sig.Idle, "Run to go idle again")
	x, err := s.client.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "block"})
	require.NoError(t, err)
	require.Equal(t, x.ID, recv(t, bl.started, "the new work"))
	require.NoError(t, s.client.Cancel(ctx, x.ID, flowfabric.CancelParams{}))
	recv(t, bl.causes, "the cancel")
	require.EqualValues(t, 2, s.nstreams.Load())
}

const trickyJSON = "{\"s\":\"<a href=\\\"x\\\">&amp; \u2028 \u2029 é 日本 😀 \\u003c\"}"

func TestRemotePayloadsRoundTrip(t *testing.T) {
	b := newWorkerBundle(t, func(t testing.TB) ffstore.Store { return ffmem.New(&ffmem.Options{Shards: 2}) }, testTransport{name: "HTTP", remote: true})
	w, _ := b.worker(t, config("i1"))
	id := b.create(t, "k", trickyJSON)
	task, err := w.ClaimNext(b.ctx)
	require.NoError(t, err)
	require.NotNil(t, task)
	require.Equal(t, trickyJSON, string(task.Payload()))
	require.NoError(t, task.Complete(b.ctx, []byte(trickyJSON)))
	res, err := b.client.Result(b.ctx, id)
	require.NoError(t, err)
	require.Equal(t, trickyJSON, string(res))
	rres, err := b.remote.Result(b.ctx, id)
	require.NoError(t, err)
	require.Equal(t, trickyJSON, string(rres))

	reason := "bad <input> & \u2028 é 日本 😀"
	id2 := b.create(t, "k", "")
	task, err = w.ClaimNext(b.ctx)
	require.NoError(t, err)
	require.NotNil(t, task)
	require.Equal(t, id2, task.ExecutionID())
	_, err = task.Fail(b.ctx, flowfabric.FailParams{Reason: reason, NoRetry: true})
	require.NoError(t, err)
	x := b.get(t, id2)
	require.Equal(t, reason, x.FailureReason)
	rx, err := b.remote.Get(b.ctx, id2)
	require.NoError(t, err)
	require.Equal(t, reason, rx.FailureReason)
}

// A cancel made (through another server on the store, or in process) while the worker's
// server restarts reaches the running handler: the worker checks its held tasks again
// once it follows the new feed.
func TestRemoteCancelDuringServerRestartReachesTheHandler(t *testing.T) {
	ctx := t.Context()
	s := newRemoteServer(t)
	w := s.worker(t)
	bl := newBlocker()
	flowfabric.Handle(w, "block", bl.handle)
	run(t, w)
	recv(t, s.streams, "the first stream")

	held, err := s.client.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "block"})
	require.NoError(t, err)
	require.Equal(t, held.ID, recv(t, bl.started, "the handler"))

	// The server goes down: its stream ends and it answers 503 until it is back.
	s.down.Store(true)
	s.srv.BeginShutdown()
	s.srv.Close()
	recv(t, s.downHits, "the worker trying to follow the events again")

	// Meanwhile an operator cancels the execution (another server on the same store).
	require.NoError(t, s.client.Cancel(ctx, held.ID, flowfabric.CancelParams{Reason: "not needed"}))

	// The server is back on the same store.
	s.start(t)
	s.down.Store(false)
	recv(t, s.streams, "the worker's new stream")

	select {
	case cause := <-bl.causes:
		require.ErrorIs(t, cause, flowfabric.ErrExecutionCancelled)
	case <-time.After(10 * time.Second):
		t.Fatalf("the handler of the cancelled execution %s still runs 10s after the worker follows the events again", held.ID)
	}
}
