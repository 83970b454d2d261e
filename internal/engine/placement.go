package engine

import (
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// placement is the set of queues an execution belongs in, with its score in each. It is
// derived from the record alone by placementOf, so a unit that saves a record also moves
// it between queues, and the two cannot drift apart.
//
// An execution is in at most maxPlacement queues (all executions, one for its phase, its
// attempt timeout, its deadline), so a placement is a small array that lives on the
// stack: units build two for every execution they save.
type placement struct {
	n  int
	at [maxPlacement]queueEntry
}

// maxPlacement is the most queues an execution is ever in at once.
const maxPlacement = 4

// queueEntry is one queue of a placement and the execution's score in it.
type queueEntry struct {
	queue string
	score int64
}

// add puts the execution in q with score; q must not be in p yet.
func (p *placement) add(q string, score int64) {
	p.at[p.n] = queueEntry{q, score}
	p.n++
}

// queues returns the queues of p with their scores.
func (p *placement) queues() []queueEntry { return p.at[:p.n] }

// score returns the execution's score in q, and whether it belongs in q.
func (p *placement) score(q string) (int64, bool) {
	for _, qs := range p.queues() {
		if qs.queue == q {
			return qs.score, true
		}
	}
	return 0, false
}

// placementOf returns where x belongs given its state.
func placementOf(x *fftype.Execution) placement {
	var p placement
	p.add(queueAll, ms(x.CreatedAt))
	switch x.Phase {
	case fftype.PhaseRunnable:
		switch x.Eligibility {
		case fftype.EligibilityNow:
			p.add(eligibleQueue(x.Lane, x.Namespace, x.Capabilities), priorityScore(x.Priority, x.CreatedAt))
		case fftype.EligibilityUntilTime:
			p.add(queueDelayed, ms(x.DelayUntil))
		case fftype.EligibilityGranted:
			p.add(queueGrant, ms(x.Grant.ExpiresAt))
		}
	case fftype.PhaseActive:
		p.add(queueLease, ms(x.LeaseExpiresAt))
		if !x.AttemptTimeoutAt.IsZero() {
			p.add(queueAttemptTimeout, ms(x.AttemptTimeoutAt))
		}
	case fftype.PhaseTerminal:
		p.add(queueRetention, ms(x.CompletedAt)) // due Retention later: timerLag
	}
	if x.Phase != fftype.PhaseTerminal && !x.DeadlineAt.IsZero() {
		p.add(queueDeadline, ms(x.DeadlineAt))
	}
	return p
}

// without returns p without queue q: used by units that popped x from q, so that saving
// x puts it back in q if it still belongs there.
func (p placement) without(q string) placement {
	var c placement
	for _, qs := range p.queues() {
		if qs.queue != q {
			c.add(qs.queue, qs.score)
		}
	}
	return c
}

// save writes x and moves it from the queues of before to the queues it now belongs in.
//
// An eligible queue named by the digest of x's capability set may hold x under its
// earlier, inline name instead (inlineEligibleQueue: an entry written before such sets
// were named by digest, or by an earlier build during a rolling upgrade), which before
// cannot tell. So save never trusts before about such a queue: leaving it, it removes
// both names; staying in or entering it, it writes the entry under the digest name and
// the set's record (putCapsRecord) and removes the inline name. Short sets, the common
// case, cost nothing of this.
func (e *Engine) save(tx ffstore.Tx, before placement, x *fftype.Execution) {
	putExec(tx, x)
	after := placementOf(x)
	for _, qs := range before.queues() {
		if _, ok := after.score(qs.queue); !ok {
			tx.QueueRemove(qs.queue, string(x.ID))
			if _, byDigest := capsDigestOfQueue(qs.queue); byDigest {
				tx.QueueRemove(inlineEligibleQueue(x), string(x.ID))
			}
		}
	}
	for _, qs := range after.queues() {
		if digest, byDigest := capsDigestOfQueue(qs.queue); byDigest {
			tx.QueueRemove(inlineEligibleQueue(x), string(x.ID))
			putCapsRecord(tx, digest, x.Capabilities)
			tx.QueueAdd(qs.queue, string(x.ID), qs.score)
		} else if old, ok := before.score(qs.queue); !ok || old != qs.score {
			tx.QueueAdd(qs.queue, string(x.ID), qs.score)
		}
	}
}
