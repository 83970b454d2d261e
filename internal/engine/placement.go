package engine

import (
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// placement is the set of queues an execution belongs in, with its score in each. It is
// derived from the record alone by placementOf, so a unit that saves a record also moves
// it between queues, and the two cannot drift apart.
type placement map[string]int64

// placementOf returns where x belongs given its state.
func (e *Engine) placementOf(x *fftype.Execution) placement {
	p := placement{queueAll: ms(x.CreatedAt)}
	switch x.Phase {
	case fftype.PhaseRunnable:
		switch x.Eligibility {
		case fftype.EligibilityNow:
			p[eligibleQueue(x.Lane, x.Namespace, x.Capabilities)] = priorityScore(x.Priority, x.CreatedAt)
		case fftype.EligibilityUntilTime:
			p[queueDelayed] = ms(x.DelayUntil)
		case fftype.EligibilityGranted:
			p[queueGrant] = ms(x.Grant.ExpiresAt)
		}
	case fftype.PhaseActive:
		p[queueLease] = ms(x.LeaseExpiresAt)
		if !x.AttemptTimeoutAt.IsZero() {
			p[queueAttemptTimeout] = ms(x.AttemptTimeoutAt)
		}
	case fftype.PhaseTerminal:
		p[queueRetention] = ms(x.CompletedAt.Add(e.cfg.Retention))
	}
	if x.Phase != fftype.PhaseTerminal && !x.DeadlineAt.IsZero() {
		p[queueDeadline] = ms(x.DeadlineAt)
	}
	return p
}

// without returns a copy of p without queue q: used by units that popped x from q, so
// that saving x puts it back in q if it still belongs there.
func (p placement) without(q string) placement {
	c := make(placement, len(p))
	for k, v := range p {
		if k != q {
			c[k] = v
		}
	}
	return c
}

// save writes x and moves it from the queues of before to the queues it now belongs in.
// It returns the new placement.
func (e *Engine) save(tx ffstore.Tx, before placement, x *fftype.Execution) placement {
	putExec(tx, x)
	after := e.placementOf(x)
	for q := range before {
		if _, ok := after[q]; !ok {
			tx.QueueRemove(q, string(x.ID))
		}
	}
	for q, score := range after {
		if old, ok := before[q]; !ok || old != score {
			tx.QueueAdd(q, string(x.ID), score)
		}
	}
	return after
}
