package engine

import (
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftest"
	"github.com/flowfabric/flowfabric/fftype"
)

// newTestEngine returns an engine on a new in-memory store of one shard, with a fake
// clock.
func newTestEngine(t *testing.T) (*Engine, *fftest.Clock) {
	t.Helper()
	return newTestEngineOn(t, ffmem.New(&ffmem.Options{Shards: 1}), Config{})
}

// newTestEngineOn returns an engine on st configured by cfg, with a fake clock (which
// replaces cfg.Clock) set to the start of 2026.
func newTestEngineOn(t *testing.T, st ffstore.Store, cfg Config) (*Engine, *fftest.Clock) {
	t.Helper()
	clock := fftest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Clock = clock
	e, err := New(st, &cfg)
	require.NoError(t, err)
	return e, clock
}

// TestCreateManyRefusesABadRunAtAlone: a run_at too far ahead fails its own item, not the
// others of its chunk.
func TestCreateManyRefusesABadRunAtAlone(t *testing.T) {
	t.Parallel()
	e, clock := newTestEngine(t)
	res := e.CreateMany(t.Context(), []fftype.CreateParams{
		{Lane: "l", Kind: "k"},
		{Lane: "l", Kind: "k", RunAt: clock.Now().Add(2 * 365 * 24 * time.Hour)},
	})
	require.ErrorIs(t, res[1].Err, fftype.ErrValidation)
	require.NoError(t, res[0].Err)
}

// TestJSONMustBeUTF8: a JSON payload or result that is not UTF-8 (which json.Valid lets
// through) is refused on its own, so it never reaches a worker that must parse it; the
// same bytes are fine as binary.
func TestJSONMustBeUTF8(t *testing.T) {
	t.Parallel()
	e, _ := newTestEngine(t)
	ctx := t.Context()
	bad := []byte("\"caf\xe9\"")
	res := e.CreateMany(ctx, []fftype.CreateParams{
		{Lane: "l", Kind: "k", Payload: bad},
		{Lane: "l", Kind: "k", Payload: []byte(`"café"`)},
		{Lane: "l", Kind: "k", Payload: bad, Encoding: fftype.EncodingBinary},
	})
	require.ErrorIs(t, res[0].Err, fftype.ErrValidation)
	require.NoError(t, res[1].Err)
	require.NoError(t, res[2].Err)
	ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, ls, 1)
	err = e.Complete(ctx, ls[0].ExecutionID, ls[0].Fence, bad, fftype.EncodingJSON)
	require.ErrorIs(t, err, fftype.ErrValidation)
}

// TestIdempotencyKeysOfNamespacesStayApart: ("a/b", "c") and ("a", "b/c") are two keys.
func TestIdempotencyKeysOfNamespacesStayApart(t *testing.T) {
	t.Parallel()
	e, _ := newTestEngine(t)
	a, err := e.Create(t.Context(), fftype.CreateParams{Namespace: "a/b", Lane: "l", Kind: "k", IdempotencyKey: "c"})
	require.NoError(t, err)
	b, err := e.Create(t.Context(), fftype.CreateParams{Namespace: "a", Lane: "l", Kind: "k", IdempotencyKey: "b/c"})
	require.NoError(t, err)
	require.False(t, b.Duplicate)
	require.NotEqual(t, a.ID, b.ID)
}

// TestEndingAnExecutionEndsItsPausedAttempt: an execution cancelled or past its deadline
// while its attempt is paused (Delay) ends that attempt too, rather than leave it paused.
func TestEndingAnExecutionEndsItsPausedAttempt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		end    func(t *testing.T, e *Engine, clock *fftest.Clock, id fftype.ExecutionID)
		status fftype.AttemptStatus
	}{
		{"Cancel", func(t *testing.T, e *Engine, _ *fftest.Clock, id fftype.ExecutionID) {
			require.NoError(t, e.Cancel(t.Context(), id, fftype.CancelParams{Reason: "op"}))
		}, fftype.AttemptCancelled},
		{"Deadline", func(t *testing.T, e *Engine, clock *fftest.Clock, _ fftype.ExecutionID) {
			clock.Advance(time.Hour)
			_, _, err := e.RunDue(t.Context())
			require.NoError(t, err)
		}, fftype.AttemptFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, clock := newTestEngine(t)
			_, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k",
				Policy: fftype.Policy{Deadline: fftype.Duration(time.Hour)}})
			require.NoError(t, err)
			l := claimOne(t, e)
			require.NoError(t, e.Delay(t.Context(), l.ExecutionID, l.Fence, 2*time.Hour))
			tc.end(t, e, clock, l.ExecutionID)
			x, err := e.Get(t.Context(), l.ExecutionID)
			require.NoError(t, err)
			require.Equal(t, fftype.PhaseTerminal, x.Phase)
			atts, err := e.Attempts(t.Context(), l.ExecutionID)
			require.NoError(t, err)
			require.Len(t, atts, 1)
			require.Equal(t, tc.status, atts[0].Status)
			require.False(t, atts[0].EndedAt.IsZero())
		})
	}
}

// TestReplayOfAnExecutionThatNeverRan: it waits for its first attempt, as the invariants
// require.
func TestReplayOfAnExecutionThatNeverRan(t *testing.T) {
	t.Parallel()
	e, _ := newTestEngine(t)
	r, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	require.NoError(t, e.Cancel(t.Context(), r.ID, fftype.CancelParams{Reason: "op"}))
	require.NoError(t, e.Replay(t.Context(), r.ID))
	require.NoError(t, e.CheckInvariants(t.Context(), r.ID))
	x, err := e.Get(t.Context(), r.ID)
	require.NoError(t, err)
	require.Equal(t, fftype.AttemptStatePendingFirst, x.AttemptState)
	require.Equal(t, 1, x.ReplayCount)
	require.Equal(t, fftype.AttemptInitial, claimOne(t, e).AttemptType)
}

// TestHolderOfATimedOutAttempt: the holder of an attempt its timeout failed is told so,
// and its own Fail is not taken for a retry of a call it never made.
func TestHolderOfATimedOutAttempt(t *testing.T) {
	t.Parallel()
	e, clock := newTestEngine(t)
	_, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{
		AttemptTimeout: fftype.Duration(5 * time.Second),
		Retry:          &fftype.RetryPolicy{MaxRetries: 3, Backoff: fftype.Backoff{Kind: fftype.BackoffFixed, Initial: fftype.Duration(time.Minute)}}}})
	require.NoError(t, err)
	l := claimOne(t, e)
	clock.Advance(5 * time.Second)
	_, _, err = e.RunDue(t.Context())
	require.NoError(t, err)

	require.ErrorIs(t, e.Complete(t.Context(), l.ExecutionID, l.Fence, nil, ""), fftype.ErrAttemptTimedOut)
	_, err = e.Fail(t.Context(), l.ExecutionID, l.Fence, fftype.FailParams{Reason: "mine"})
	require.ErrorIs(t, err, fftype.ErrAttemptTimedOut)
	x, err := e.Get(t.Context(), l.ExecutionID)
	require.NoError(t, err)
	require.Equal(t, "attempt_timeout", x.FailureReason, "the holder's late Fail changed nothing")
}

// TestIssueGrantAfterTheLastOneLapsed: a grant past its expiry no longer reserves the
// execution, whether or not the timer loop has swept it yet.
func TestIssueGrantAfterTheLastOneLapsed(t *testing.T) {
	t.Parallel()
	e, clock := newTestEngine(t)
	res, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	_, err = e.IssueGrant(t.Context(), res.ID, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w1", TTL: fftype.Duration(time.Second)})
	require.NoError(t, err)
	_, err = e.IssueGrant(t.Context(), res.ID, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w2"})
	require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindConflict, Code: fftype.CodeGrantAlreadyExists})

	clock.Advance(time.Second) // lapsed; the timer loop has not run
	ref, err := e.IssueGrant(t.Context(), res.ID, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w2"})
	require.NoError(t, err)
	require.Equal(t, "w2", ref.WorkerID)
	require.NoError(t, e.CheckInvariants(t.Context(), res.ID))
	n, _, err := e.RunDue(t.Context())
	require.NoError(t, err)
	require.Zero(t, n, "the first grant's timer went with it")
}

// TestTagLimits: a tag given as "" is no tag, at create as in SetTags; the 64-tag cap
// applies to the tags an execution ends up with, so removals do not count, and going
// over it is invalid input, not a bad key.
func TestTagLimits(t *testing.T) {
	t.Parallel()
	e, _ := newTestEngine(t)
	res, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Tags: map[string]string{"a": "", "b": "x"}})
	require.NoError(t, err)
	x, err := e.Get(t.Context(), res.ID)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"b": "x"}, x.Tags)

	full, swap := map[string]string{}, map[string]string{"fresh": "v"}
	for i := range fftype.MaxTags {
		full["k"+strconv.Itoa(i)] = "v"
		swap["k"+strconv.Itoa(i)] = ""
	}
	full["dropped"] = "" // no tag, so not one of the 64
	res, err = e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Tags: full})
	require.NoError(t, err)
	_, err = e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Tags: swap})
	require.NoError(t, err, "65 entries, one tag")
	many := maps.Clone(swap)
	for i := range fftype.MaxTags {
		many["x"+strconv.Itoa(i)] = ""
	}
	_, err = e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Tags: many})
	require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidInput}, "129 entries")
	err = e.SetTags(t.Context(), res.ID, map[string]string{"one_more": "v"})
	require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidInput}, "65 tags")
	require.NoError(t, e.SetTags(t.Context(), res.ID, swap), "64 removals and one tag leave one")
	x, err = e.Get(t.Context(), res.ID)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"fresh": "v"}, x.Tags)
}
