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
// A round admits the calls that queue while its unit waits for the store, up to the
// moment the unit pops. Without that, a pool's workers split into groups that each wait
// for the other's round: the first worker back from a round leads the next one alone,
// while the rest queue behind it, and every round costs a commit of its own. A call that
// joins is served from the queue heads the round read before it arrived: an execution
// created since in another queue, even one of a higher priority, waits for the next
// claim while the joined call takes what the round found (reading the heads again for it
// would cost the round trip the round saves). A joined call the round finds nothing for
// waits for the next round, which reads them again.
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

// selectionKey identifies calls that select alike: the same lanes (named in the same
// order) and the same capabilities.
func selectionKey(lanes []string, w claimer) string {
	return strings.Join(lanes, sep) + sep + sep + strings.Join(w.caps, ",")
}

// claimCombined serves one validated Claim call in its selection's rounds.
func (e *Engine) claimCombined(ctx context.Context, lanes []string, w claimer, count int) ([]*fftype.Lease, error) {
	c := &claimCall{roundCall: newRoundCall(ctx), w: w, count: count}
	err := e.claims.do(selectionKey(lanes, w), c, roundPlan[*claimCall]{
		weight: func(c *claimCall) int { return c.count },
		max:    fftype.MaxClaimCount,
		serve: func(ctx context.Context, calls []*claimCall, join func() []*claimCall) []*claimCall {
			return e.serveClaims(ctx, lanes, calls, join)
		},
		drop: func(ctx context.Context, calls []*claimCall) {
			for _, c := range calls {
				e.releaseUnwanted(ctx, c.leases)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return c.leases, c.err
}

// serveClaims runs one selection for calls, and for the calls join admits while it runs,
// and hands each call its share. If the selection fails, calls that got leases keep them
// (the error recurs on their next claim) and the others get the error. A joined call that
// got nothing although the selection succeeded is returned unserved: the selection
// looked for executions before that call arrived, so it must not answer it.
//
// Once this process sets a lane's pause state, the round serves no call that joins from
// then on: such a call may have begun after a PauseLane returned, which must take effect
// for it at once, while the round's lanes were chosen before. It goes back unserved, to
// a round that reads the lanes again.
//
// Each unit passes over the calls whose callers stopped waiting since the round admitted
// them: what they would have got goes to the calls that still wait, rather than to a
// caller that is gone, whose lease would only be released again (the execution losing an
// attempt to it) while a call still waiting came away empty.
func (e *Engine) serveClaims(ctx context.Context, lanes []string, calls []*claimCall, join func() []*claimCall) (unserved []*claimCall) {
	var owners []*claimCall
	admit := func(cs []*claimCall) {
		for _, c := range cs {
			for range c.count {
				owners = append(owners, c)
			}
		}
	}
	admit(calls)
	first := len(calls)
	gen := e.laneGen.Load() // before take reads the lanes' pause states
	joining := true
	demand := func(taken int) int {
		if joining {
			joined := join()
			calls = append(calls, joined...)
			// Read after join: a pause that returned before a joined call began is seen here.
			if joining = e.laneGen.Load() == gen; joining {
				admit(joined)
			}
		}
		owners = append(owners[:taken], e.claims.waiting(owners[taken:])...)
		return len(owners)
	}
	leases, err := take(ctx, e, calls[0].w.caps, lanes, demand, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time, i int) (*fftype.Lease, error) {
		return e.acquire(tx, x, before, owners[i].w, now)
	})
	for i, l := range leases {
		owners[i].leases = append(owners[i].leases, l)
	}
	for i, c := range calls {
		switch {
		case len(c.leases) > 0:
		case i >= first && err == nil:
			unserved = append(unserved, c)
		default:
			c.err = err
		}
	}
	return unserved
}
