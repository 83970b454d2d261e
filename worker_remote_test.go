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

// swapHandler serves the current ffserver; streams signal once they flush (subscribed).
type swapHandler struct {
	mu       sync.Mutex
	srv      *ffserver.Server
	streams  chan struct{}
	nstreams atomic.Int32
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

func (h *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	srv := h.srv
	h.mu.Unlock()
	if r.URL.Path == "/v1/events" {
		h.nstreams.Add(1)
		w = &flushHook{ResponseWriter: w, fn: func() { h.streams <- struct{}{} }}
	}
	srv.ServeHTTP(w, r)
}

func TestRemoteWatchResumesAfterServerRestart(t *testing.T) {
	t.Run("Graceful", func(t *testing.T) { remoteRestart(t, false) })
	t.Run("Abrupt", func(t *testing.T) { remoteRestart(t, true) })
}

func remoteRestart(t *testing.T, abrupt bool) {
	ctx := t.Context()
	store := ffmem.New(&ffmem.Options{Shards: 2})
	clock := fftest.NewClock(testStart)
	client1, err := flowfabric.NewClient(store, &flowfabric.Config{Clock: clock})
	require.NoError(t, err)
	srv1, err := ffserver.New(client1, ffserver.Config{})
	require.NoError(t, err)
	h := &swapHandler{srv: srv1, streams: make(chan struct{}, 10)}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	remote, err := ffclient.New(hs.URL, &ffclient.Config{Clock: clock})
	require.NoError(t, err)

	cfg := config("i1")
	cfg.ClaimPollInterval = time.Hour
	w, err := flowfabric.NewWorker(ctx, remote, cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
	sig := flowfabric.EnableSignals(w)
	flowfabric.SetIdleBackoff(w, time.Hour)
	bl := newBlocker()
	flowfabric.Handle(w, "block", bl.handle)
	run(t, w)
	recv(t, h.streams, "the first stream")
	recv(t, sig.Idle, "Run to go idle")

	held, err := client1.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "block"})
	require.NoError(t, err)
	require.Equal(t, held.ID, recv(t, bl.started, "the handler"))

	// The server restarts: its streams end, a new server on the same store takes over.
	client2, err := flowfabric.NewClient(store, &flowfabric.Config{Clock: clock})
	require.NoError(t, err)
	srv2, err := ffserver.New(client2, ffserver.Config{})
	require.NoError(t, err)
	h.mu.Lock()
	h.srv = srv2
	h.mu.Unlock()
	if abrupt {
		hs.CloseClientConnections()
	} else {
		srv1.BeginShutdown()
	}
	srv1.Close()
	recv(t, h.streams, "the worker's new stream")

	// A revoke on the new server reaches the held task through the new stream.
	require.NoError(t, client2.Revoke(ctx, held.ID, "rebalancing"))
	require.ErrorIs(t, recv(t, bl.causes, "the revoke"), flowfabric.ErrLeaseRevoked)
	require.Equal(t, held.ID, recv(t, bl.started, "the reclaim"))
	require.NoError(t, client2.Cancel(ctx, held.ID, flowfabric.CancelParams{Reason: "done"}))
	require.ErrorIs(t, recv(t, bl.causes, "the cancel"), flowfabric.ErrExecutionCancelled)

	// New work wakes Run through the new stream.
	recv(t, sig.Idle, "Run to go idle again")
	x, err := client2.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "block"})
	require.NoError(t, err)
	require.Equal(t, x.ID, recv(t, bl.started, "the new work"))
	require.NoError(t, client2.Cancel(ctx, x.ID, flowfabric.CancelParams{}))
	recv(t, bl.causes, "the cancel")
	require.EqualValues(t, 2, h.nstreams.Load())
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

// downHandler answers 503 to everything while down, else serves the current server.
type downHandler struct {
	swapHandler
	down     atomic.Bool
	downHits chan struct{}
}

func (h *downHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.down.Load() {
		if r.URL.Path == "/v1/events" {
			select {
			case h.downHits <- struct{}{}:
			default:
			}
		}
		http.Error(w, "restarting", http.StatusServiceUnavailable)
		return
	}
	h.swapHandler.ServeHTTP(w, r)
}

// A cancel made (through another server on the store, or in process) while the worker's
// server restarts reaches the running handler: the worker checks its held tasks again
// once it follows the new feed.
func TestRemoteCancelDuringServerRestartReachesTheHandler(t *testing.T) {
	ctx := t.Context()
	store := ffmem.New(&ffmem.Options{Shards: 2})
	clock := fftest.NewClock(testStart)
	client1, err := flowfabric.NewClient(store, &flowfabric.Config{Clock: clock})
	require.NoError(t, err)
	srv1, err := ffserver.New(client1, ffserver.Config{})
	require.NoError(t, err)
	h := &downHandler{swapHandler: swapHandler{srv: srv1, streams: make(chan struct{}, 10)}, downHits: make(chan struct{}, 1)}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	remote, err := ffclient.New(hs.URL, &ffclient.Config{Clock: clock})
	require.NoError(t, err)

	cfg := config("i1")
	cfg.ClaimPollInterval = time.Hour
	w, err := flowfabric.NewWorker(ctx, remote, cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Close(context.Background())) })
	bl := newBlocker()
	flowfabric.Handle(w, "block", bl.handle)
	run(t, w)
	recv(t, h.streams, "the first stream")

	held, err := client1.Create(ctx, flowfabric.CreateParams{Lane: testLane, Kind: "block"})
	require.NoError(t, err)
	require.Equal(t, held.ID, recv(t, bl.started, "the handler"))

	// The server goes down: its stream ends and it answers 503 until it is back.
	h.down.Store(true)
	srv1.BeginShutdown()
	srv1.Close()
	recv(t, h.downHits, "the worker trying to follow the events again")

	// Meanwhile an operator cancels the execution (another server on the same store).
	require.NoError(t, client1.Cancel(ctx, held.ID, flowfabric.CancelParams{Reason: "not needed"}))

	// The server is back on the same store.
	client2, err := flowfabric.NewClient(store, &flowfabric.Config{Clock: clock})
	require.NoError(t, err)
	srv2, err := ffserver.New(client2, ffserver.Config{})
	require.NoError(t, err)
	h.mu.Lock()
	h.srv = srv2
	h.mu.Unlock()
	h.down.Store(false)
	recv(t, h.streams, "the worker's new stream")

	select {
	case cause := <-bl.causes:
		require.ErrorIs(t, cause, flowfabric.ErrExecutionCancelled)
	case <-time.After(10 * time.Second):
		t.Fatalf("the handler of the cancelled execution %s still runs 10s after the worker follows the events again", held.ID)
	}
}
