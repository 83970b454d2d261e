package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// CheckInvariants verifies that execution id is internally consistent and sits in
// exactly the queues its state calls for. The conformance suite runs it after every
// transition. It reads whole queues, so it is meant for tests.
func (e *Engine) CheckInvariants(ctx context.Context, id fftype.ExecutionID) error {
	return e.view(ctx, id, func(tx ffstore.ReadTx) error {
		x, err := getExec(tx, id)
		if err != nil {
			return err
		}
		if err := checkDimensions(x); err != nil {
			return fmt.Errorf("execution %s: %w", id, err)
		}
		if (x.Attempt != nil) != (x.TotalAttempts > 0) || x.Attempt != nil && (x.Attempt.Index != x.CurrentAttempt || x.Attempt.ExecutionID != x.ID) {
			return fmt.Errorf("execution %s: %d attempts, current %d, but latest attempt %+v", id, x.TotalAttempts, x.CurrentAttempt, x.Attempt)
		}
		if x.Ownership == fftype.OwnershipLeased {
			a, err := latestAttempt(x)
			if err != nil {
				return err
			}
			if a.Status != fftype.AttemptStarted || a.LeaseID != x.LeaseID || a.LeaseEpoch != x.LeaseEpoch || a.ID != x.AttemptID {
				return fmt.Errorf("execution %s: leased but attempt %d is %s with lease %s/%d", id, a.Index, a.Status, a.LeaseID, a.LeaseEpoch)
			}
		}
		want := placementOf(x)
		eligible := eligibleQueue(x.Lane, x.Namespace, x.Capabilities)
		if err := checkCapsRecord(tx, want, eligible, x.Capabilities); err != nil {
			return fmt.Errorf("execution %s: %w", id, err)
		}
		queues := []string{eligible, queueAll}
		for q := range timerQueues {
			if q != queueIdem {
				queues = append(queues, q)
			}
		}
		for _, q := range queues {
			score, in, err := queueScore(tx, q, string(id))
			if err != nil {
				return err
			}
			wantScore, should := want.score(q)
			switch {
			case should && !in:
				return fmt.Errorf("execution %s (%s): missing from queue %q", id, x.PublicState(), q)
			case !should && in:
				return fmt.Errorf("execution %s (%s): should not be in queue %q", id, x.PublicState(), q)
			case should && score != wantScore:
				return fmt.Errorf("execution %s: score %d in queue %q, want %d", id, score, q, wantScore)
			}
		}
		return nil
	})
}

// checkCapsRecord checks that the record of caps exists when want puts the execution in
// eligible and eligible is named by the digest of caps.
func checkCapsRecord(tx ffstore.ReadTx, want placement, eligible string, caps []string) error {
	digest, long := capsDigestOfQueue(eligible)
	if _, in := want.score(eligible); !in || !long {
		return nil
	}
	v, ok, err := tx.Get(capsKey(digest))
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("eligible in queue %q but record %q is missing", eligible, capsKey(digest))
	case string(v) != strings.Join(caps, ","):
		return fmt.Errorf("record %q holds %q, not the required capabilities", capsKey(digest), v)
	}
	return nil
}

// checkDimensions checks the rules that tie the state dimensions together.
func checkDimensions(x *fftype.Execution) error {
	fail := func(format string, args ...any) error { return fmt.Errorf("invariant: "+format, args...) }
	terminal := x.Phase == fftype.PhaseTerminal
	leased := x.Ownership == fftype.OwnershipLeased
	switch {
	case (x.Outcome != fftype.OutcomeNone) != terminal:
		return fail("outcome %s with phase %s", x.Outcome, x.Phase)
	case leased != (x.Phase == fftype.PhaseActive):
		return fail("ownership %s with phase %s", x.Ownership, x.Phase)
	case (x.Eligibility != fftype.EligibilityNotApplicable) != (x.Phase == fftype.PhaseRunnable):
		return fail("eligibility %s with phase %s", x.Eligibility, x.Phase)
	case (x.AttemptState == fftype.AttemptStateRunning) != leased:
		return fail("attempt state %s with ownership %s", x.AttemptState, x.Ownership)
	case (x.Eligibility == fftype.EligibilityGranted) != (x.Grant != nil):
		return fail("eligibility %s with grant %v", x.Eligibility, x.Grant != nil)
	case (x.Eligibility == fftype.EligibilityUntilTime) != !x.DelayUntil.IsZero():
		return fail("eligibility %s with delay_until %v", x.Eligibility, x.DelayUntil)
	case terminal == x.CompletedAt.IsZero():
		return fail("phase %s with completed_at %v", x.Phase, x.CompletedAt)
	case x.CurrentAttempt != x.TotalAttempts-1:
		return fail("current attempt %d of %d attempts", x.CurrentAttempt, x.TotalAttempts)
	case x.LeaseEpoch < uint64(x.TotalAttempts):
		return fail("lease epoch %d below attempt count %d", x.LeaseEpoch, x.TotalAttempts)
	}
	if leased && (x.LeaseID == "" || x.AttemptID == "" || x.LeaseEpoch == 0 || x.WorkerID == "" || x.LeaseExpiresAt.IsZero()) {
		return fail("leased without a complete lease")
	}
	if !leased && (x.WorkerID != "" || !x.LeaseExpiresAt.IsZero()) {
		return fail("unowned with lease fields set")
	}
	if x.Phase == fftype.PhaseRunnable && !slices.Contains([]fftype.AttemptState{
		fftype.AttemptStatePendingFirst, fftype.AttemptStatePendingRetry, fftype.AttemptStatePendingReplay,
		fftype.AttemptStatePendingReclaim, fftype.AttemptStateInterrupted}, x.AttemptState) {
		return fail("runnable with attempt state %s", x.AttemptState)
	}
	if (x.AttemptState == fftype.AttemptStatePendingFirst) != (x.TotalAttempts == 0 && !terminal) &&
		!(terminal && x.TotalAttempts == 0 && x.AttemptState == fftype.AttemptStatePendingFirst) {
		return fail("attempt state %s after %d attempts", x.AttemptState, x.TotalAttempts)
	}
	return nil
}

// queueScore finds member in queue by reading the whole queue.
func queueScore(tx ffstore.ReadTx, queue, member string) (int64, bool, error) {
	var after *ffstore.QueueItem
	for {
		items, err := tx.Range(queue, after, ffstore.MaxScore, 1024)
		if err != nil {
			return 0, false, err
		}
		for _, it := range items {
			if it.Member == member {
				return it.Score, true, nil
			}
		}
		if len(items) < 1024 {
			return 0, false, nil
		}
		after = &items[len(items)-1]
	}
}
