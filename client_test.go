package flowfabric_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

func memClient(t *testing.T) *flowfabric.Client {
	t.Helper()
	c, err := flowfabric.NewClient(ffmem.New(&ffmem.Options{Shards: 2}), nil)
	require.NoError(t, err)
	return c
}

func memWorker(t *testing.T, c *flowfabric.Client, cfg *flowfabric.WorkerConfig) *flowfabric.Worker {
	t.Helper()
	w, err := flowfabric.NewWorker(t.Context(), c, cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return w
}

// TestSubscribeToWorkerRegistryEvents: the worker registry's event types are known types,
// so subscriptions and consumers may filter on them.
func TestSubscribeToWorkerRegistryEvents(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := memClient(t)
	sub, err := c.Subscribe(ctx, flowfabric.EventFilter{Types: []flowfabric.EventType{
		fftype.EventWorkerRegistered, fftype.EventWorkerDeregistered, fftype.EventWorkerMarkedDead}}, flowfabric.CursorEnd)
	require.NoError(t, err, "a filter on the registry's exported event types must be accepted")
	defer sub.Close()
	w := memWorker(t, c, &flowfabric.WorkerConfig{WorkerID: "w", Lanes: []string{"a"}})
	select {
	case d := <-sub.Events():
		require.Equal(t, fftype.EventWorkerRegistered, d.Event.Type)
	case <-time.After(10 * time.Second):
		t.Fatal("no worker_registered event delivered")
	}
	_ = w

	_, err = c.NewConsumer(flowfabric.ConsumerConfig{Name: "registry",
		Filter:  flowfabric.EventFilter{Types: []flowfabric.EventType{fftype.EventWorkerMarkedDead}},
		Handler: func(context.Context, flowfabric.Event) error { return nil }})
	require.NoError(t, err, "a durable consumer of worker_marked_dead events must be accepted")
}

// TestClaimViaServerWithANilClient: a nil *Client as the admin means the worker's own
// backend, as an untyped nil does, rather than a panic that keeps a slot for good.
func TestClaimViaServerWithANilClient(t *testing.T) {
	t.Parallel()
	c := memClient(t)
	w := memWorker(t, c, &flowfabric.WorkerConfig{WorkerID: "w", Lanes: []string{"a"}})
	var admin *flowfabric.Client
	var panicked any
	var task *flowfabric.ClaimedTask
	var err error
	func() {
		defer func() { panicked = recover() }()
		task, err = w.ClaimViaServer(t.Context(), admin, "a", 0)
	}()
	require.Nil(t, panicked, "ClaimViaServer with a nil *Client panicked")
	require.NoError(t, err)
	require.Nil(t, task, "nothing is eligible")
	require.Zero(t, w.Held(), "an empty ClaimViaServer keeps no slot")
}

// TestValidateAgreesWithNewWorkerOnLanes: more lanes than the registry takes is a
// *ConfigError from Validate and from NewWorker, before any store call.
func TestValidateAgreesWithNewWorkerOnLanes(t *testing.T) {
	t.Parallel()
	lanes := make([]string, 65)
	for i := range lanes {
		lanes[i] = fmt.Sprintf("lane%d", i)
	}
	cfg := &flowfabric.WorkerConfig{WorkerID: "w", Lanes: lanes}
	_, nwErr := flowfabric.NewWorker(t.Context(), memClient(t), cfg, nil)
	require.Error(t, nwErr, "NewWorker refuses 65 lanes")
	var ce *flowfabric.ConfigError
	require.ErrorAs(t, cfg.Validate(), &ce, "Validate accepted a config NewWorker refuses (%v)", nwErr)
	require.Equal(t, "lanes", ce.Field)
	require.ErrorAs(t, nwErr, &ce, "NewWorker's refusal of a bad config must be a *ConfigError")
}

// TestReplayFailedRefusesTheUnfailed: ReplayFailed refuses any execution that did not end
// failed with execution_not_failed, one that has not ended included.
func TestReplayFailedRefusesTheUnfailed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := memClient(t)
	res, err := c.Create(ctx, flowfabric.CreateParams{Lane: "a", Kind: "k"})
	require.NoError(t, err)
	err = c.ReplayFailed(ctx, res.ID)
	require.ErrorIs(t, err, flowfabric.ErrState)
	require.Equal(t, fftype.CodeExecutionNotFailed, fftype.CodeOf(err), "got %v", err)
}

// TestNewClientRefusesNegativeConfig: 0 means a Config field's default; a negative value
// is a validation error rather than the default too, and so is a nil store.
func TestNewClientRefusesNegativeConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]*flowfabric.Config{
		"Retention":         {Retention: -time.Hour},
		"MaxPayloadBytes":   {MaxPayloadBytes: -1},
		"TimerPollInterval": {TimerPollInterval: -time.Second},
		"EventMaxAge":       {EventMaxAge: -time.Hour},
	} {
		_, err := flowfabric.NewClient(ffmem.New(nil), cfg)
		require.ErrorIs(t, err, flowfabric.ErrValidation, "negative %s accepted", name)
	}
	_, err := flowfabric.NewClient(nil, nil)
	require.ErrorIs(t, err, flowfabric.ErrValidation, "a nil store: %v", err)
}

// TestReclaimWithAConsumedGrant: a reclaim grant used a second time finds its execution
// reclaimed already: not reclaimable, as the original answers.
func TestReclaimWithAConsumedGrant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := memClient(t)
	res, err := c.Create(ctx, flowfabric.CreateParams{Lane: "a", Kind: "k"})
	require.NoError(t, err)
	_, err = c.Claim(ctx, flowfabric.ClaimParams{WorkerID: "other", WorkerInstanceID: "o1", Lanes: []string{"a"}})
	require.NoError(t, err)
	require.NoError(t, c.Revoke(ctx, res.ID, "gone"))
	g, err := c.IssueGrant(ctx, res.ID, flowfabric.GrantReclaim, flowfabric.GrantParams{WorkerID: "w", TTL: fftype.Duration(time.Minute)})
	require.NoError(t, err)
	w := memWorker(t, c, &flowfabric.WorkerConfig{WorkerID: "w", Lanes: []string{"a"}, MaxConcurrentTasks: 2})
	args := flowfabric.ReclaimArgs{ExecutionID: g.ExecutionID, Lane: g.Lane}
	out, err := w.ClaimFromReclaimGrant(ctx, *g, args)
	require.NoError(t, err)
	require.Equal(t, flowfabric.ReclaimClaimed, out.Status)
	again, err := w.ClaimFromReclaimGrant(ctx, *g, args)
	require.NoError(t, err)
	require.Equal(t, flowfabric.ReclaimNotReclaimable, again.Status, "a consumed grant: %s (%s)", again.Status, again.Detail)
}

// TestCreateRetriedAfterALostReply: a create whose reply was lost after it landed, retried
// with the same idempotency key, finds the execution it made instead of making another;
// the same for CreateMany.
func TestCreateRetriedAfterALostReply(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newFaultStore(4)
	c, err := flowfabric.NewClient(s, nil)
	require.NoError(t, err)

	s.loseReplies(fftype.EventCreated, 1)
	p := flowfabric.CreateParams{Lane: "work", Kind: "k", IdempotencyKey: "order-1", Payload: []byte(`{"a":1}`)}
	_, err = c.Create(ctx, p)
	require.True(t, fftype.IsRetryable(err), "the lost reply is a passing failure: %v", err)
	res, err := c.Create(ctx, p)
	require.NoError(t, err)
	require.True(t, res.Duplicate)
	page, err := c.List(ctx, flowfabric.ListParams{Lane: "work"})
	require.NoError(t, err)
	require.Len(t, page.Executions, 1)
	require.Equal(t, res.ID, page.Executions[0].ID)

	s.loseReplies(fftype.EventCreated, 1)
	ps := []flowfabric.CreateParams{{Lane: "work", Kind: "k", IdempotencyKey: "order-2"}}
	out := c.CreateMany(ctx, ps)
	require.True(t, fftype.IsRetryable(out[0].Err), "the lost reply is a passing failure: %v", out[0].Err)
	out = c.CreateMany(ctx, ps)
	require.NoError(t, out[0].Err)
	require.True(t, out[0].Result.Duplicate)
}
