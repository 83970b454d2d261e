package ffstoretest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// Settings of the engine the behaviour cases run.
const (
	suiteRetention  = time.Hour
	suiteMaxPayload = 64 << 10
	suiteLane       = "default"
	suiteKind       = "test.job"
)

// suiteStart is where every case's fake clock starts.
var suiteStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) //nolint:gochecknoglobals // a constant time

// engineBundle is one behaviour case's fixture: a fresh store, an engine on a fake clock
// with deterministic jitter (half the backoff), and helpers that check the invariants of
// every execution they touch.
type engineBundle struct {
	ctx    context.Context
	store  ffstore.Store
	clock  *fftest.Clock
	engine *engine.Engine
}

func newEngineBundle(t *testing.T, newStore func(t *testing.T) ffstore.Store) *engineBundle {
	t.Helper()
	store := newStore(t)
	clock := fftest.NewClock(suiteStart)
	e, err := engine.New(store, &engine.Config{
		Clock:           clock,
		Retention:       suiteRetention,
		MaxPayloadBytes: suiteMaxPayload,
		JitterFunc:      func() float64 { return 0.5 },
	})
	require.NoError(t, err)
	return &engineBundle{ctx: t.Context(), store: store, clock: clock, engine: e}
}

// create creates an execution in the suite lane with params p (Lane and Kind default)
// and checks its invariants.
func (b *engineBundle) create(t *testing.T, p fftype.CreateParams) fftype.ExecutionID {
	t.Helper()
	if p.Lane == "" {
		p.Lane = suiteLane
	}
	if p.Kind == "" {
		p.Kind = suiteKind
	}
	res, err := b.engine.Create(b.ctx, p)
	require.NoError(t, err)
	b.check(t, res.ID)
	return res.ID
}

// claimParams returns claim parameters for worker w on the suite lane.
func claimParams(w string, n int) fftype.ClaimParams {
	return fftype.ClaimParams{WorkerID: w, WorkerInstanceID: w + "-1", Lanes: []string{suiteLane}, Count: n}
}

// claim claims up to n executions for worker w from the suite lane.
func (b *engineBundle) claim(t *testing.T, w string, n int) []*fftype.Lease {
	t.Helper()
	leases, err := b.engine.Claim(b.ctx, claimParams(w, n))
	require.NoError(t, err)
	for _, l := range leases {
		b.check(t, l.ExecutionID)
	}
	return leases
}

// claimOne claims exactly one execution and requires it to be id when id is not empty.
func (b *engineBundle) claimOne(t *testing.T, id fftype.ExecutionID) *fftype.Lease {
	t.Helper()
	leases := b.claim(t, "w", 1)
	require.Len(t, leases, 1, "expected one eligible execution")
	if id != "" {
		require.Equal(t, id, leases[0].ExecutionID)
	}
	return leases[0]
}

// get reads an execution and checks its invariants.
func (b *engineBundle) get(t *testing.T, id fftype.ExecutionID) *fftype.Execution {
	t.Helper()
	b.check(t, id)
	x, err := b.engine.Get(b.ctx, id)
	require.NoError(t, err)
	return x
}

// state returns the public state of id.
func (b *engineBundle) state(t *testing.T, id fftype.ExecutionID) fftype.PublicState {
	t.Helper()
	return b.get(t, id).PublicState()
}

// check runs the engine's invariant check on id.
func (b *engineBundle) check(t *testing.T, id fftype.ExecutionID) {
	t.Helper()
	require.NoError(t, b.engine.CheckInvariants(b.ctx, id))
}

// advance moves the clock forward and runs every due timer.
func (b *engineBundle) advance(t *testing.T, d time.Duration) {
	t.Helper()
	b.clock.Advance(d)
	_, _, err := b.engine.RunDue(b.ctx)
	require.NoError(t, err)
}

// events returns the types of the events recorded for id, in order.
func (b *engineBundle) events(t *testing.T, id fftype.ExecutionID) []fftype.EventType {
	t.Helper()
	var out []fftype.EventType
	var after uint64
	for {
		evs, err := b.store.ReadEvents(b.ctx, id.Shard(), after, 500)
		require.NoError(t, err)
		for _, ev := range evs {
			require.Equal(t, after+1, ev.Seq, "event sequence has a gap")
			after = ev.Seq
			if ev.ExecutionID == id {
				out = append(out, ev.Type)
			}
		}
		if len(evs) < 500 {
			return out
		}
	}
}

// requireCode requires err to be an *fftype.Error of the given kind and code.
func requireCode(t *testing.T, err error, kind fftype.Kind, code string) {
	t.Helper()
	require.Error(t, err)
	var fe *fftype.Error
	require.True(t, errors.As(err, &fe), "want *fftype.Error, got %T: %v", err, err)
	require.Equal(t, kind, fe.Kind, "kind of %v", err)
	require.Equal(t, code, fe.Code, "code of %v", err)
}

// requireUnchanged requires the execution record of id to equal before.
func (b *engineBundle) requireUnchanged(t *testing.T, id fftype.ExecutionID, before *fftype.Execution) {
	t.Helper()
	require.Equal(t, before, b.get(t, id), "a refused call must change nothing")
}
