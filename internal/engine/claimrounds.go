package engine

import (
	"context"
	"strings"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Claim rounds (see rounds.go). Workers of one pool call Claim concurrently with the same
// lanes and capabilities, and each call on its own costs a read of the queue heads and a
// unit that pops one execution. Calls that select the same way are therefore served in
// rounds: one read of the heads and one unit per queue for all of them.
//
// Each call still gets leases in its own name (worker, instance, lease TTL) and at most
// its own count. Executions go to the calls in the order they queued, so a round that
// finds fewer executions than asked for serves the earliest calls first.

// claimCall is one Claim call.
type claimCall struct {
	roundCall
	w      claimer
	count  int
	leases []*fftype.Lease
}

// selectionKey identifies calls that select alike: the same lanes (in order, which
// matters for rotation) and the same capabilities.
func selectionKey(lanes []string, w claimer) string {
	return strings.Join(lanes, sep) + sep + sep + strings.Join(w.caps, ",")
}

// claimCombined serves one validated Claim call in its selection's rounds.
func (e *Engine) claimCombined(ctx context.Context, lanes []string, w claimer, count int) ([]*fftype.Lease, error) {
	c := &claimCall{roundCall: newRoundCall(ctx), w: w, count: count}
	e.claims.do(selectionKey(lanes, w), c, roundPlan[*claimCall]{
		weight: func(c *claimCall) int { return c.count },
		max:    fftype.MaxClaimCount,
		serve:  func(ctx context.Context, calls []*claimCall) { e.serveClaims(ctx, lanes, calls) },
	})
	return c.leases, c.err
}

// serveClaims runs one selection for calls and hands each call its share. If the
// selection fails, calls that got leases keep them (the error recurs on their next
// claim) and the others get the error.
func (e *Engine) serveClaims(ctx context.Context, lanes []string, calls []*claimCall) {
	var owners []*claimCall
	for _, c := range calls {
		for range c.count {
			owners = append(owners, c)
		}
	}
	leases, err := take(ctx, e, calls[0].w.caps, lanes, len(owners), func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time, i int) (*fftype.Lease, error) {
		return e.acquire(tx, x, before, owners[i].w, now)
	})
	for i, l := range leases {
		owners[i].leases = append(owners[i].leases, l)
	}
	for _, c := range calls {
		if len(c.leases) == 0 {
			c.err = err
		}
	}
}
