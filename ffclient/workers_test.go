package ffclient_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
)

func TestClientWorkerRegistry(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "tok")
	ctx := t.Context()
	reg := flowfabric.WorkerRegistration{WorkerID: "w", InstanceID: "i1", Lanes: []string{"b", "a"},
		Capabilities: []string{"gpu"}, TTL: time.Minute, Session: "s1"}
	out, err := c.RegisterWorker(ctx, reg)
	require.NoError(t, err)
	require.False(t, out.Refreshed)
	out, err = c.RegisterWorker(ctx, reg)
	require.NoError(t, err)
	require.True(t, out.Refreshed)
	intruder := reg
	intruder.Session = "s2"
	_, err = c.RegisterWorker(ctx, intruder)
	require.ErrorIs(t, err, flowfabric.ErrDuplicateWorkerInstance, "typed errors survive the wire")
	reg.InstanceID, reg.Session = "i2", "s2"
	_, err = c.RegisterWorker(ctx, reg)
	require.NoError(t, err)

	info, err := c.GetWorker(ctx, "", "i1")
	require.NoError(t, err)
	want, err := local.GetWorker(ctx, "", "i1")
	require.NoError(t, err)
	require.Equal(t, want.Lanes, info.Lanes)
	require.Equal(t, []string{"a", "b"}, info.Lanes)
	require.Equal(t, want.Capabilities, info.Capabilities)
	require.True(t, want.HeartbeatAt.Equal(info.HeartbeatAt))
	_, err = c.GetWorker(ctx, "elsewhere", "i1")
	require.ErrorIs(t, err, flowfabric.ErrWorkerNotRegistered)

	page, err := c.ListWorkers(ctx, flowfabric.WorkerListParams{Limit: 1})
	require.NoError(t, err)
	require.Len(t, page.Workers, 1)
	require.Equal(t, "i1", page.Workers[0].InstanceID)
	page, err = c.ListWorkers(ctx, flowfabric.WorkerListParams{After: page.Cursor})
	require.NoError(t, err)
	require.Len(t, page.Workers, 1)
	require.Equal(t, "i2", page.Workers[0].InstanceID)
	require.Empty(t, page.Cursor)

	exp, err := c.HeartbeatWorker(ctx, "", "i1", "s1")
	require.NoError(t, err)
	require.False(t, exp.IsZero())
	_, err = c.HeartbeatWorker(ctx, "", "i1", "s2")
	require.ErrorIs(t, err, flowfabric.ErrWorkerNotRegistered)

	_, err = c.Create(ctx, fftype.CreateParams{Lane: "a", Kind: "k"})
	require.NoError(t, err)
	leases, err := c.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i2", Lanes: []string{"a"}})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	n, err := c.MarkWorkerDead(ctx, "", "i2", "gone")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = c.MarkWorkerDead(ctx, "", "i2", "again")
	require.ErrorIs(t, err, flowfabric.ErrWorkerNotRegistered)

	// Instance ids may hold any printable byte; they travel escaped in the path.
	odd := flowfabric.WorkerRegistration{WorkerID: "w/x", InstanceID: "pod/7 a?b%", Lanes: []string{"a"}, TTL: time.Minute, Session: "s3"}
	_, err = c.RegisterWorker(ctx, odd)
	require.NoError(t, err)
	info, err = c.GetWorker(ctx, "", odd.InstanceID)
	require.NoError(t, err)
	require.Equal(t, odd.InstanceID, info.InstanceID)
	_, err = c.HeartbeatWorker(ctx, "", odd.InstanceID, "s3")
	require.NoError(t, err)
	require.NoError(t, c.DeregisterWorker(ctx, "", odd.InstanceID, "s3"))
	// "", "." and ".." cannot be path segments, so they are no ids or lanes: the client
	// refuses them as the engine does, rather than another route answering.
	badWorker := &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidInput}
	badLane := &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidLane}
	for _, bad := range []string{"", ".", ".."} {
		_, err = c.RegisterWorker(ctx, flowfabric.WorkerRegistration{WorkerID: "w", InstanceID: bad, Lanes: []string{"a"}, TTL: time.Minute, Session: "s4"})
		require.ErrorIs(t, err, badWorker, "RegisterWorker(%q)", bad)
		_, err = c.GetWorker(ctx, "", bad)
		require.ErrorIs(t, err, badWorker, "GetWorker(%q)", bad)
		_, err = c.HeartbeatWorker(ctx, "", bad, "s4")
		require.ErrorIs(t, err, badWorker, "HeartbeatWorker(%q)", bad)
		require.ErrorIs(t, c.DeregisterWorker(ctx, "", bad, "s4"), badWorker, "DeregisterWorker(%q)", bad)
		_, err = c.MarkWorkerDead(ctx, "", bad, "r")
		require.ErrorIs(t, err, badWorker, "MarkWorkerDead(%q)", bad)
		_, err = c.GrantNext(ctx, fftype.ClaimParams{WorkerID: bad, WorkerInstanceID: "i1", Lanes: []string{"nothing"}}, 0)
		require.ErrorIs(t, err, badWorker, "GrantNext(%q)", bad)
		require.ErrorIs(t, c.PauseLane(ctx, bad), badLane, "PauseLane(%q)", bad)
		require.ErrorIs(t, c.ResumeLane(ctx, bad), badLane, "ResumeLane(%q)", bad)
		_, err = c.Lane(ctx, bad)
		require.ErrorIs(t, err, badLane, "Lane(%q)", bad)
	}
	_, err = c.GrantNext(ctx, fftype.ClaimParams{WorkerID: odd.WorkerID, WorkerInstanceID: odd.InstanceID, Lanes: []string{"nothing"}}, 0)
	require.NoError(t, err)

	require.NoError(t, c.DeregisterWorker(ctx, "", "i1", "s1"))
	page, err = c.ListWorkers(ctx, flowfabric.WorkerListParams{})
	require.NoError(t, err)
	require.Empty(t, page.Workers)
	_, err = c.ListWorkers(ctx, flowfabric.WorkerListParams{Limit: -1})
	require.ErrorIs(t, err, fftype.ErrValidation)
}

func TestClientGrantNext(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "")
	ctx := t.Context()
	p := fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i1", Lanes: []string{"l"}}
	g, err := c.GrantNext(ctx, p, time.Minute)
	require.NoError(t, err)
	require.Nil(t, g, "nothing eligible: no grant and no error")
	res, err := c.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	g, err = c.GrantNext(ctx, p, time.Minute)
	require.NoError(t, err)
	require.Equal(t, res.ID, g.ExecutionID)
	l, err := c.ClaimGrant(ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "w", WorkerInstanceID: "i1"})
	require.NoError(t, err)
	require.Equal(t, res.ID, l.ExecutionID)
	_, err = c.GrantNext(ctx, p, 2*time.Hour)
	require.ErrorIs(t, err, fftype.ErrValidation)
	_, err = c.GrantNext(ctx, fftype.ClaimParams{Lanes: []string{"l"}}, 0)
	require.ErrorIs(t, err, fftype.ErrValidation)
}

func TestClientWatchEvents(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ctx := t.Context()
	before, err := c.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	s, err := c.WatchEvents(ctx, fftype.EventFilter{Types: []fftype.EventType{fftype.EventCreated}})
	require.NoError(t, err)
	res, err := local.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	select {
	case d := <-s.Events():
		require.Equal(t, res.ID, d.Event.ExecutionID, "only events from the watch on; %s came before", before.ID)
		require.Equal(t, fftype.EventCreated, d.Event.Type)
	case <-time.After(30 * time.Second):
		t.Fatal("no event")
	}
	s.Close()
	s.Close()
	for range s.Events() {
	}
	require.NoError(t, s.Err(), "a closed stream ended cleanly")

	wctx, cancel := context.WithCancel(ctx)
	s, err = c.WatchEvents(wctx, fftype.EventFilter{})
	require.NoError(t, err)
	cancel()
	for range s.Events() {
	}
	require.NoError(t, s.Err())
	s.Close()

	_, err = c.WatchEvents(ctx, fftype.EventFilter{Namespace: "has space"})
	require.ErrorIs(t, err, fftype.ErrValidation)
}

func TestClientClockFollowsTheServer(t *testing.T) {
	t.Parallel()
	clock := fftest.NewClock(time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC))
	local, err := flowfabric.NewClient(ffmem.New(&ffmem.Options{Shards: 3}), &flowfabric.Config{Clock: clock})
	require.NoError(t, err)
	srv, err := ffserver.New(local, ffserver.Config{})
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)

	c, err := ffclient.New(hs.URL, nil)
	require.NoError(t, err)
	n, err := c.Shards(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.WithinDuration(t, clock.Now(), c.Clock().Now(), 10*time.Second, "the default clock reads the server's engine clock")
	require.NoError(t, c.Clock().SleepUntil(t.Context(), clock.Now().Add(-time.Minute), nil), "a time already past returns at once")

	fixed, err := ffclient.New(hs.URL, &ffclient.Config{Clock: clock})
	require.NoError(t, err)
	require.Same(t, clock, fixed.Clock())

	down, err := ffclient.New("http://127.0.0.1:1", nil)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), down.Clock().Now(), 10*time.Second, "with no server, the local clock")
}

// TestNewWorkerGivesUpWithItsContext: NewWorker on a server whose event stream does not
// open returns when its ctx ends, rather than waiting for the stream forever.
func TestNewWorkerGivesUpWithItsContext(t *testing.T) {
	t.Parallel()
	local, err := flowfabric.NewClient(ffmem.New(nil), nil)
	require.NoError(t, err)
	srv, err := ffserver.New(local, ffserver.Config{})
	require.NoError(t, err)
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/events" {
			select { // a stream whose headers never come
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		srv.ServeHTTP(w, r)
	}))
	defer hs.Close()
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	c, err := ffclient.New(hs.URL, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		w, err := flowfabric.NewWorker(ctx, c, &flowfabric.WorkerConfig{WorkerID: "w", Lanes: []string{"l"}}, nil)
		if err == nil {
			_ = w.Close(context.Background())
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(3 * time.Second):
		unblock()
		<-done
		t.Fatal("NewWorker still blocked 3s after its 300ms ctx ended")
	}
}
