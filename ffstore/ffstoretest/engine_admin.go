package ffstoretest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

func exerciseTimers(t *testing.T, newStore func(t *testing.T) ffstore.Store) {
	t.Parallel()
	setup := func(t *testing.T) *engineBundle { return newEngineBundle(t, newStore) }

	t.Run("AttemptTimeoutRetries", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Policy: fftype.Policy{AttemptTimeout: fftype.Duration(10 * time.Second),
			Retry: &fftype.RetryPolicy{MaxRetries: 1, Backoff: fftype.Backoff{Kind: fftype.BackoffFixed, Initial: fftype.Duration(time.Second)}}}})
		l := b.claimOne(t, id)
		b.advance(t, 10*time.Second)
		x := b.get(t, id)
		require.Equal(t, fftype.StateDelayed, x.PublicState(), "a timed-out attempt is retried per policy")
		require.Equal(t, "attempt_timeout", x.FailureReason)
		requireCode(t, b.engine.Complete(b.ctx, id, l.Fence, nil, ""), fftype.KindState, fftype.CodeAttemptTimedOut)
		b.advance(t, time.Second)
		b.claimOne(t, id)
		b.advance(t, 10*time.Second)
		require.Equal(t, fftype.StateFailed, b.state(t, id))
	})

	t.Run("DeadlineIsTerminal", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p := fftype.CreateParams{Policy: fftype.Policy{Deadline: fftype.Duration(time.Minute)}}
		waiting := b.create(t, p)
		active := b.create(t, p)
		delayed := b.create(t, fftype.CreateParams{Delay: fftype.Duration(time.Hour), Policy: p.Policy})
		l := b.claimOne(t, "")
		if l.ExecutionID != active {
			waiting, active = active, waiting
		}
		b.advance(t, time.Minute)
		for _, id := range []fftype.ExecutionID{waiting, active, delayed} {
			x := b.get(t, id)
			require.Equal(t, fftype.StateExpired, x.PublicState())
			require.Equal(t, "execution_deadline", x.FailureReason)
		}
		requireCode(t, b.engine.Complete(b.ctx, active, l.Fence, nil, ""), fftype.KindState, fftype.CodeExecutionNotActive)
	})

	// An execution past its deadline is never handed out, whether or not the timer loop
	// has expired it yet: the claim expires it as the timer would and takes the next one.
	t.Run("ClaimExpiresWhatIsPastItsDeadline", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		late := b.create(t, fftype.CreateParams{Policy: fftype.Policy{Deadline: fftype.Duration(time.Minute)}})
		b.clock.Advance(time.Millisecond)
		live := b.create(t, fftype.CreateParams{})
		lateToo := b.create(t, fftype.CreateParams{Policy: fftype.Policy{Deadline: fftype.Duration(time.Minute)}})
		b.clock.Advance(time.Minute) // past both deadlines; the timer loop has not run
		b.claimOne(t, live)
		g, err := b.engine.GrantNext(b.ctx, claimParams("w", 1), 0)
		require.NoError(t, err)
		require.Nil(t, g, "nothing left to grant")
		for _, id := range []fftype.ExecutionID{late, lateToo} {
			x := b.get(t, id)
			require.Equal(t, fftype.StateExpired, x.PublicState())
			require.Equal(t, "execution_deadline", x.FailureReason)
			require.Equal(t, []fftype.EventType{fftype.EventCreated, fftype.EventExpired}, b.events(t, id))
		}
	})

	// A grant cannot be consumed once its execution's deadline passed: ClaimGrant expires
	// the execution as the timer would, and refuses the grant as void.
	t.Run("ClaimGrantExpiresWhatIsPastItsDeadline", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Policy: fftype.Policy{Deadline: fftype.Duration(time.Minute)}})
		b.clock.Advance(50 * time.Second)
		g, err := b.engine.IssueGrant(b.ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w", TTL: fftype.Duration(time.Minute)})
		require.NoError(t, err)
		b.clock.Advance(10 * time.Second)
		_, err = b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "w", WorkerInstanceID: "w-1"})
		requireCode(t, err, fftype.KindState, fftype.CodeInvalidClaimGrant)
		x := b.get(t, id)
		require.Equal(t, fftype.StateExpired, x.PublicState())
		require.Equal(t, "execution_deadline", x.FailureReason)
		_, err = b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "w", WorkerInstanceID: "w-1"})
		requireCode(t, err, fftype.KindState, fftype.CodeInvalidClaimGrant)
	})

	t.Run("IssueGrantExpiresWhatIsPastItsDeadline", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Policy: fftype.Policy{Deadline: fftype.Duration(time.Minute)}})
		b.clock.Advance(time.Minute)
		_, err := b.engine.IssueGrant(b.ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w", TTL: fftype.Duration(time.Minute)})
		requireCode(t, err, fftype.KindState, fftype.CodeExecutionNotEligible)
		x := b.get(t, id)
		require.Equal(t, fftype.StateExpired, x.PublicState(), "the refusal commits the expiry")
		require.Equal(t, "execution_deadline", x.FailureReason)
	})

	// Past the deadline its holder is refused with the code the deadline's transition
	// leaves, before the timer loop makes it as after, and the refusal changes nothing.
	t.Run("DeadlineRefusesTheHolder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Policy: fftype.Policy{Deadline: fftype.Duration(time.Minute),
			AttemptTimeout: fftype.Duration(time.Minute), LeaseTTL: fftype.Duration(5 * time.Minute)}})
		l := b.claimOne(t, id)
		b.clock.Advance(time.Minute)
		before := b.get(t, id)
		refusedAll(t, b, id, l.Fence, fftype.CodeExecutionNotActive)
		b.requireUnchanged(t, id, before)
		b.advance(t, 0)
		require.Equal(t, fftype.StateExpired, b.state(t, id))
		refusedAll(t, b, id, l.Fence, fftype.CodeExecutionNotActive)
	})

	// Past the attempt's timeout its holder is refused with attempt_timed_out, before the
	// timer loop fails the attempt as after, and the refusal changes nothing. Time the
	// attempt spent paused does not count, and a lease that expired first is what the
	// holder is told of.
	t.Run("AttemptTimeoutRefusesTheHolder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Policy: fftype.Policy{AttemptTimeout: fftype.Duration(10 * time.Second),
			LeaseTTL: fftype.Duration(time.Minute)}})
		l := b.claimOne(t, id)
		b.clock.Advance(10 * time.Second)
		before := b.get(t, id)
		refusedAll(t, b, id, l.Fence, fftype.CodeAttemptTimedOut)
		b.requireUnchanged(t, id, before)
		b.advance(t, 0)
		require.Equal(t, "attempt_timeout", b.get(t, id).FailureReason)
		refusedAll(t, b, id, l.Fence, fftype.CodeAttemptTimedOut)

		b = setup(t)
		paused := b.create(t, fftype.CreateParams{Policy: fftype.Policy{AttemptTimeout: fftype.Duration(10 * time.Second),
			LeaseTTL: fftype.Duration(time.Minute)}})
		l = b.claimOne(t, paused)
		b.advance(t, 5*time.Second)
		require.NoError(t, b.engine.Delay(b.ctx, paused, l.Fence, 30*time.Second))
		b.advance(t, 30*time.Second)
		l = b.claimOne(t, paused)
		b.clock.Advance(4 * time.Second)
		_, err := b.engine.Renew(b.ctx, paused, l.Fence, 0)
		require.NoError(t, err, "the attempt ran 9s of its 10s")
		b.clock.Advance(time.Second)
		_, err = b.engine.Renew(b.ctx, paused, l.Fence, 0)
		requireCode(t, err, fftype.KindState, fftype.CodeAttemptTimedOut)

		b = setup(t)
		expiring := b.create(t, fftype.CreateParams{Policy: fftype.Policy{AttemptTimeout: fftype.Duration(20 * time.Second),
			LeaseTTL: fftype.Duration(10 * time.Second)}})
		l = b.claimOne(t, expiring)
		b.clock.Advance(20 * time.Second)
		refusedAll(t, b, expiring, l.Fence, fftype.CodeLeaseExpired)
		b.advance(t, 0)
		refusedAll(t, b, expiring, l.Fence, fftype.CodeLeaseExpired)
	})

	t.Run("Retention", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{IdempotencyKey: "k", Policy: fftype.Policy{DedupWindow: fftype.Duration(24 * time.Hour)}})
		l := b.claimOne(t, id)
		require.NoError(t, b.engine.Complete(b.ctx, id, l.Fence, []byte(`1`), ""))
		b.advance(t, suiteRetention-time.Millisecond)
		b.get(t, id)
		b.advance(t, time.Millisecond)
		_, err := b.engine.Get(b.ctx, id)
		requireCode(t, err, fftype.KindNotFound, fftype.CodeExecutionNotFound)
		_, err = b.engine.Attempts(b.ctx, id)
		requireCode(t, err, fftype.KindNotFound, fftype.CodeExecutionNotFound)
		res, err := b.engine.Create(b.ctx, fftype.CreateParams{Lane: suiteLane, Kind: suiteKind, IdempotencyKey: "k"})
		require.NoError(t, err)
		require.False(t, res.Duplicate, "a deleted execution frees its idempotency key")
	})

	t.Run("NextDue", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		n, next, err := b.engine.RunDue(b.ctx)
		require.NoError(t, err)
		require.Zero(t, n)
		require.True(t, next.IsZero(), "an idle engine has nothing due")
		b.create(t, fftype.CreateParams{Delay: fftype.Duration(42 * time.Second)})
		_, next, err = b.engine.RunDue(b.ctx)
		require.NoError(t, err)
		require.Equal(t, suiteStart.Add(42*time.Second), next.UTC())
	})

	t.Run("GrantNext", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		g, err := b.engine.GrantNext(b.ctx, claimParams("w", 1), 0)
		require.NoError(t, err)
		require.Nil(t, g, "nothing eligible: no grant")
		low := b.create(t, fftype.CreateParams{Priority: 1})
		high := b.create(t, fftype.CreateParams{Priority: 100})
		g, err = b.engine.GrantNext(b.ctx, claimParams("w", 1), 10*time.Second)
		require.NoError(t, err)
		require.Equal(t, high, g.ExecutionID, "the scheduler picks as Claim would")
		require.Equal(t, fftype.GrantClaim, g.Kind)
		b.check(t, high)
		l := b.claimOne(t, low)
		require.NotEqual(t, high, l.ExecutionID, "the granted execution is reserved")
		gl, err := b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "w", WorkerInstanceID: "w-1"})
		require.NoError(t, err)
		require.Equal(t, high, gl.ExecutionID)
		b.check(t, high)

		b.advance(t, fftype.DefaultLeaseTTL) // both leases expire: reclaimable now
		g, err = b.engine.GrantNext(b.ctx, claimParams("w", 1), 0)
		require.NoError(t, err)
		require.Equal(t, fftype.GrantReclaim, g.Kind)
		_, err = b.engine.GrantNext(b.ctx, claimParams("", 1), 0)
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
		_, err = b.engine.GrantNext(b.ctx, claimParams("w", 1), 2*time.Hour)
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
	})

	t.Run("Grants", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Capabilities: []string{"gpu"}})
		_, err := b.engine.IssueGrant(b.ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w"})
		requireCode(t, err, fftype.KindState, fftype.CodeCapabilityMismatch)
		_, err = b.engine.IssueGrant(b.ctx, id, fftype.GrantReclaim, fftype.GrantParams{WorkerID: "w", Capabilities: []string{"gpu"}})
		requireCode(t, err, fftype.KindState, fftype.CodeNotReclaimable)
		_, err = b.engine.IssueGrant(b.ctx, id, "bogus", fftype.GrantParams{WorkerID: "w"})
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
		g, err := b.engine.IssueGrant(b.ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w", Capabilities: []string{"gpu"}, TTL: fftype.Duration(5 * time.Second)})
		require.NoError(t, err)
		b.check(t, id)
		require.Equal(t, fftype.StateWaiting, b.state(t, id))
		_, err = b.engine.IssueGrant(b.ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "v", Capabilities: []string{"gpu"}})
		requireCode(t, err, fftype.KindConflict, fftype.CodeGrantAlreadyExists)
		p := claimParams("v", 1)
		p.Capabilities = []string{"gpu"}
		leases, err := b.engine.Claim(b.ctx, p)
		require.NoError(t, err)
		require.Empty(t, leases, "a reserved execution is not handed to others")

		_, err = b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "v", WorkerInstanceID: "v-1"})
		requireCode(t, err, fftype.KindState, fftype.CodeInvalidClaimGrant)
		bogus := *g
		bogus.ID = fftype.NewUUID()
		_, err = b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: bogus, WorkerID: "w", WorkerInstanceID: "w-1"})
		requireCode(t, err, fftype.KindState, fftype.CodeInvalidClaimGrant)
		b.clock.Advance(5 * time.Second)
		_, err = b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "w", WorkerInstanceID: "w-1"})
		requireCode(t, err, fftype.KindState, fftype.CodeClaimGrantExpired)
		b.advance(t, 0)
		leases, err = b.engine.Claim(b.ctx, p)
		require.NoError(t, err)
		require.Len(t, leases, 1, "an expired grant frees the execution")
		require.NoError(t, b.engine.Release(b.ctx, id, leases[0].Fence))

		g, err = b.engine.IssueGrant(b.ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w", Capabilities: []string{"gpu"}})
		require.NoError(t, err)
		l, err := b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "w", WorkerInstanceID: "w-1"})
		require.NoError(t, err)
		require.Equal(t, id, l.ExecutionID)
		require.True(t, l.Resumed, "the released attempt continues")
		b.check(t, id)
		_, err = b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "w", WorkerInstanceID: "w-1"})
		requireCode(t, err, fftype.KindState, fftype.CodeInvalidClaimGrant)

		// A reclaim grant reserves an execution whose lease expired.
		b.advance(t, fftype.DefaultLeaseTTL)
		_, err = b.engine.IssueGrant(b.ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w", Capabilities: []string{"gpu"}})
		requireCode(t, err, fftype.KindState, fftype.CodeExecutionNotEligible)
		rg, err := b.engine.IssueGrant(b.ctx, id, fftype.GrantReclaim, fftype.GrantParams{WorkerID: "w", Capabilities: []string{"gpu"}})
		require.NoError(t, err)
		l, err = b.engine.ClaimGrant(b.ctx, fftype.GrantClaimParams{Grant: *rg, WorkerID: "w", WorkerInstanceID: "w-2"})
		require.NoError(t, err)
		require.Equal(t, fftype.AttemptReclaim, l.AttemptType)
		b.check(t, id)
	})
}

func exerciseAdmin(t *testing.T, newStore func(t *testing.T) ffstore.Store) {
	t.Parallel()
	setup := func(t *testing.T) *engineBundle { return newEngineBundle(t, newStore) }

	t.Run("ChangePriority", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first := b.create(t, fftype.CreateParams{})
		b.clock.Advance(time.Millisecond)
		second := b.create(t, fftype.CreateParams{})
		require.NoError(t, b.engine.ChangePriority(b.ctx, second, 10))
		b.check(t, second)
		requireCode(t, b.engine.ChangePriority(b.ctx, second, 9001), fftype.KindValidation, fftype.CodeInvalidPriority)
		b.claimOne(t, second)
		l := b.claimOne(t, first)
		require.NoError(t, b.engine.Complete(b.ctx, first, l.Fence, nil, ""))
		requireCode(t, b.engine.ChangePriority(b.ctx, first, 1), fftype.KindState, fftype.CodeExecutionTerminal)
	})

	t.Run("Tags", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Tags: map[string]string{"a": "1", "b": "2"}})
		require.NoError(t, b.engine.SetTags(b.ctx, id, map[string]string{"b": "", "c.d": "3"}))
		require.Equal(t, map[string]string{"a": "1", "c.d": "3"}, b.get(t, id).Tags)
		requireCode(t, b.engine.SetTags(b.ctx, id, map[string]string{"Nope": "x"}), fftype.KindValidation, fftype.CodeInvalidTagKey)
		requireCode(t, b.engine.SetTags(b.ctx, id, nil), fftype.KindValidation, fftype.CodeInvalidInput)
		requireCode(t, b.engine.SetTags(b.ctx, fftype.NewExecutionID(0), map[string]string{"a": "b"}), fftype.KindNotFound, fftype.CodeExecutionNotFound)
	})

	t.Run("Replay", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Policy: fftype.Policy{MaxReplays: 2, Retry: &fftype.RetryPolicy{MaxRetries: 1,
			Backoff: fftype.Backoff{Kind: fftype.BackoffFixed}}}})
		requireCode(t, b.engine.Replay(b.ctx, id), fftype.KindState, fftype.CodeExecutionNotTerminal)
		for round := range 2 {
			for range 2 { // first attempt, then its one retry
				l := b.claimOne(t, id)
				_, err := b.engine.Fail(b.ctx, id, l.Fence, fftype.FailParams{Reason: "bad"})
				require.NoError(t, err)
			}
			require.Equal(t, fftype.StateFailed, b.state(t, id))
			require.NoError(t, b.engine.Replay(b.ctx, id))
			x := b.get(t, id)
			require.Equal(t, fftype.StateWaiting, x.PublicState())
			require.Equal(t, 0, x.RetryCount, "a replay starts a fresh retry budget")
			require.Equal(t, round+1, x.ReplayCount)
		}
		l := b.claimOne(t, id)
		require.Equal(t, fftype.AttemptReplay, l.AttemptType)
		require.NoError(t, b.engine.Complete(b.ctx, id, l.Fence, nil, ""))
		requireCode(t, b.engine.Replay(b.ctx, id), fftype.KindLimited, fftype.CodeMaxReplaysExhausted)
	})

	// A replay starts the reclaim count again, as it does the retry count: the replay's
	// first lost lease is reclaimed, even after the execution failed at the reclaim cap.
	t.Run("ReplayStartsFreshReclaimBudget", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Policy: fftype.Policy{MaxReclaims: 1, LeaseTTL: fftype.Duration(10 * time.Second)}})
		b.claimOne(t, id)
		b.advance(t, 10*time.Second)
		require.Equal(t, fftype.AttemptReclaim, b.claimOne(t, id).AttemptType)
		b.advance(t, 10*time.Second)
		x := b.get(t, id)
		require.Equal(t, fftype.StateFailed, x.PublicState())
		require.Equal(t, "max_reclaims_exceeded", x.FailureReason)

		require.NoError(t, b.engine.ReplayFailed(b.ctx, id))
		require.Zero(t, b.get(t, id).ReclaimCount)
		require.Equal(t, fftype.AttemptReplay, b.claimOne(t, id).AttemptType)
		b.advance(t, 10*time.Second)
		x = b.get(t, id)
		require.Equal(t, fftype.StateWaiting, x.PublicState(), "the replay's first lost lease is reclaimed (failure %q)", x.FailureReason)
		require.Equal(t, fftype.AttemptStatePendingReclaim, x.AttemptState)
		require.Equal(t, fftype.AttemptReclaim, b.claimOne(t, id).AttemptType)
		require.Equal(t, 1, b.get(t, id).ReclaimCount)
	})

	t.Run("ListFiltersAndPages", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var all []fftype.ExecutionID
		for i := range 30 {
			ns := fmt.Sprintf("ns%d", i%3)
			kind := []string{"a", "b"}[i%2]
			all = append(all, b.create(t, fftype.CreateParams{Namespace: ns, Kind: kind}))
			b.clock.Advance(time.Millisecond)
		}
		for _, l := range b.claim(t, "w", 5) {
			require.NoError(t, b.engine.Complete(b.ctx, l.ExecutionID, l.Fence, nil, ""))
		}
		var got []fftype.ExecutionID
		pages := 0
		for cursor := ""; ; pages++ {
			page, err := b.engine.List(b.ctx, fftype.ListParams{Limit: 7, Cursor: cursor})
			require.NoError(t, err)
			require.LessOrEqual(t, len(page.Executions), 7)
			for _, x := range page.Executions {
				got = append(got, x.ID)
			}
			if page.Cursor == "" {
				break
			}
			cursor = page.Cursor
		}
		require.Equal(t, all, got, "pages cover every execution once, oldest first")
		require.GreaterOrEqual(t, pages, 4)
		exact, err := b.engine.List(b.ctx, fftype.ListParams{Limit: len(all)})
		require.NoError(t, err)
		require.Len(t, exact.Executions, len(all))
		require.Empty(t, exact.Cursor, "a page that ends with the last match has no next page")

		count := func(p fftype.ListParams) int {
			p.Limit = 1000
			page, err := b.engine.List(b.ctx, p)
			require.NoError(t, err)
			require.Empty(t, page.Cursor)
			return len(page.Executions)
		}
		require.Equal(t, 10, count(fftype.ListParams{Namespace: "ns1"}))
		require.Equal(t, 15, count(fftype.ListParams{Kind: "a"}))
		require.Equal(t, 5, count(fftype.ListParams{Namespace: "ns0", Kind: "a"}))
		require.Equal(t, 5, count(fftype.ListParams{State: fftype.StateCompleted}))
		require.Equal(t, 25, count(fftype.ListParams{State: fftype.StateWaiting, Lane: suiteLane}))
		require.Equal(t, 0, count(fftype.ListParams{Lane: "elsewhere"}))

		_, err = b.engine.List(b.ctx, fftype.ListParams{Cursor: "garbage!"})
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidCursor)
		_, err = b.engine.List(b.ctx, fftype.ListParams{State: "running"})
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
		_, err = b.engine.List(b.ctx, fftype.ListParams{Limit: 1001})
		requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidInput)
	})
}

// refusedAll requires every call of the holder of fence f on id to be refused with code.
func refusedAll(t *testing.T, b *engineBundle, id fftype.ExecutionID, f fftype.Fence, code string) {
	t.Helper()
	requireCode(t, b.engine.Complete(b.ctx, id, f, nil, ""), fftype.KindState, code)
	_, err := b.engine.Fail(b.ctx, id, f, fftype.FailParams{Reason: "late"})
	requireCode(t, err, fftype.KindState, code)
	_, err = b.engine.Renew(b.ctx, id, f, 0)
	requireCode(t, err, fftype.KindState, code)
	requireCode(t, b.engine.Progress(b.ctx, id, f, 50, ""), fftype.KindState, code)
	requireCode(t, b.engine.Delay(b.ctx, id, f, time.Second), fftype.KindState, code)
	requireCode(t, b.engine.Release(b.ctx, id, f), fftype.KindState, code)
	requireCode(t, b.engine.Cancel(b.ctx, id, fftype.CancelParams{Fence: &f}), fftype.KindState, code)
}
