package engine

import (
	"context"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// claimer is a validated worker identity.
type claimer struct {
	workerID   string
	instanceID string
	caps       []string
	ttl        time.Duration // 0: the execution's policy decides
}

func checkClaimer(workerID, instanceID string, caps []string, ttl fftype.Duration) (claimer, error) {
	if err := fftype.ValidateWorkerID("worker_id", workerID); err != nil {
		return claimer{}, err
	}
	if err := fftype.ValidateWorkerID("worker_instance_id", instanceID); err != nil {
		return claimer{}, err
	}
	norm, err := fftype.NormalizeCapabilities("capabilities", caps)
	if err != nil {
		return claimer{}, err
	}
	if ttl != 0 && (ttl.D() < fftype.MinLeaseTTL || ttl.D() > fftype.MaxLeaseTTL) {
		return claimer{}, fftype.Validationf(fftype.CodeInvalidInput, "lease_ttl must be between %s and %s", fftype.MinLeaseTTL, fftype.MaxLeaseTTL)
	}
	return claimer{workerID: workerID, instanceID: instanceID, caps: norm, ttl: ttl.D()}, nil
}

// candidate is the head of one eligible queue on one shard that a claimer may take from.
type candidate struct {
	shard int
	queue string
	lane  string
	ns    string
	head  ffstore.QueueItem
}

func (c *candidate) bucket() int64 { return c.head.Score >> priorityBits }

// Claim is the one claim path: it hands the worker up to p.Count eligible executions from
// its lanes, as leases. Only queues whose required capabilities the worker covers are
// considered; among them the highest priority wins, then the worker's lanes take turns,
// and so do a lane's namespaces (see pick), then the oldest execution goes first. A
// paused lane hands out nothing. A call that joins a claim round is served from the
// queue heads that round read before it joined (see claimrounds.go): an execution created
// meanwhile, even of a higher priority, may wait for the next claim. An empty result
// means nothing was eligible. If ctx ends while the claim runs, Claim returns ctx's error
// and no leases: those a round took for the call meanwhile are released, so that their
// executions are claimable at once instead of after the lease TTL.
func (e *Engine) Claim(ctx context.Context, p fftype.ClaimParams) ([]*fftype.Lease, error) {
	w, count, err := checkClaim(p)
	if err != nil {
		return nil, err
	}
	leases, err := e.claimCombined(ctx, p.Lanes, w, count)
	if ctx.Err() != nil {
		e.releaseUnwanted(ctx, leases)
		return nil, ctx.Err()
	}
	if err != nil && len(leases) == 0 {
		return nil, err
	}
	return leases, nil // with some leases taken, an error recurs on the next call
}

// releaseUnwanted gives back leases whose caller gave up before they reached it. It tries
// no longer than the leases last (one that expired needs no release); a release that
// fails is logged, and that lease expires with its TTL.
func (e *Engine) releaseUnwanted(ctx context.Context, leases []*fftype.Lease) {
	var ttl time.Duration
	for _, l := range leases {
		ttl = max(ttl, l.TTL.D())
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttl)
	defer cancel()
	for _, l := range leases {
		if err := e.Release(ctx, l.ExecutionID, l.Fence); err != nil {
			e.log.Warn("a claim's caller gave up and its lease could not be released; it expires with its TTL",
				"execution_id", l.ExecutionID, "error", err)
		}
	}
}

// GrantNext is the scheduler's form of the claim path: it picks the next eligible
// execution for the worker exactly as Claim would, but reserves it with a claim grant of
// the given TTL instead of leasing it; the worker consumes the grant with ClaimGrant. A nil
// grant means nothing was eligible.
func (e *Engine) GrantNext(ctx context.Context, p fftype.ClaimParams, ttl time.Duration) (*fftype.GrantRef, error) {
	p.Count = 1
	w, _, err := checkClaim(p)
	if err != nil {
		return nil, err
	}
	if ttl == 0 {
		ttl = fftype.DefaultGrantTTL
	}
	if ttl < time.Millisecond || ttl > fftype.MaxGrantTTL {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "grant ttl must be between 1ms and %s", fftype.MaxGrantTTL)
	}
	refs, err := take(ctx, e, w.caps, p.Lanes, func(int) int { return 1 }, func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time, _ int) (*fftype.GrantRef, error) {
		kind := fftype.GrantClaim
		if x.AttemptState == fftype.AttemptStatePendingReclaim {
			kind = fftype.GrantReclaim
		}
		return e.reserve(tx, x, before, kind, w.workerID, ttl, now), nil
	})
	if err != nil || len(refs) == 0 {
		return nil, err
	}
	return refs[0], nil
}

// checkClaim validates claim parameters and returns the claimer and the count.
func checkClaim(p fftype.ClaimParams) (claimer, int, error) {
	w, err := checkClaimer(p.WorkerID, p.WorkerInstanceID, p.Capabilities, p.LeaseTTL)
	if err != nil {
		return claimer{}, 0, err
	}
	count := p.Count
	if count == 0 {
		count = 1
	}
	if count < 0 || count > fftype.MaxClaimCount {
		return claimer{}, 0, fftype.Validationf(fftype.CodeInvalidInput, "count must be between 1 and %d", fftype.MaxClaimCount)
	}
	if len(p.Lanes) == 0 {
		return claimer{}, 0, fftype.Validationf(fftype.CodeInvalidLane, "lanes must name at least one lane")
	}
	for _, l := range p.Lanes {
		if err := fftype.ValidateLane(l); err != nil {
			return claimer{}, 0, err
		}
	}
	return w, count, nil
}

// takeFunc acts on one eligible execution inside the unit that popped it from its queue
// (before is its placement less that queue) and returns what the caller collects; i is
// the position the result will have among everything the selection collects.
type takeFunc[T any] func(tx ffstore.Tx, x *fftype.Execution, before placement, now time.Time, i int) (T, error)

// take is the selection Claim and GrantNext share: it finds the queues of the lanes that
// a worker with capabilities caps may take from and applies act to up to demand(taken)
// executions, best first, taken being how many earlier units took. On an error it
// returns what earlier units took with it.
//
// demand may change while take runs: it grows as a claim round admits the calls that
// queue meanwhile, and shrinks, never below taken, as calls whose callers left are
// passed over. What it adds is served from the candidates take read at the start, so an
// execution created since, even of a higher priority, waits for a later take. take
// calls it once to start and then only inside its units, as late as possible, so a unit
// serves everything asked of it by the time it runs; a further unit runs only for demand
// a unit saw and could not meet. Calls that queue after the last unit asked for demand
// wait for the next round rather than hold this one's callers through another unit (on
// Postgres, 29% of a drain's rounds had run a second unit for them).
func take[T any](ctx context.Context, e *Engine, caps []string, laneNames []string, demand func(taken int) int, act takeFunc[T]) ([]T, error) {
	lanes, err := e.unpausedLanes(ctx, laneNames)
	if err != nil || len(lanes) == 0 {
		return nil, err
	}
	prefixes := make([]string, len(lanes))
	for i, l := range lanes {
		prefixes[i] = eligibleLanePrefix(l)
	}
	heads, err := e.store.QueueHeads(ctx, prefixes)
	if err != nil {
		return nil, err
	}
	cands := make([]*candidate, 0, len(heads))
	capsLen := joinedLen(caps)
	for _, h := range heads {
		lane, ns, qcaps, ok := parseEligibleQueue(h.Queue)
		if !ok {
			continue
		}
		covered, err := e.covers(ctx, h.Shard, caps, capsLen, qcaps)
		if err != nil {
			return nil, err
		}
		if !covered {
			continue
		}
		cands = append(cands, &candidate{shard: h.Shard, queue: h.Queue, lane: lane, ns: ns, head: h.Item})
	}
	asked := demand(0) // then as the last unit saw it
	unitDemand := func(taken int) int { asked = demand(taken); return asked }
	var taken []T
	for len(cands) > 0 && len(taken) < asked {
		i, alone := e.pick(cands)
		c := cands[i]
		maxScore := int64(ffstore.MaxScore)
		if alone {
			// No other namespace competes at this priority: take a batch, but nothing of a
			// lower priority than the best head elsewhere. The batch may pass over older
			// heads of the same priority in other queues (other shards, other capability
			// sets): bounding it by them would cut a batch to an item or two when work is
			// spread over the shards. The README says so.
			maxScore = (c.bucket()+1)<<priorityBits - 1
		}
		got, next, err := takeFrom(ctx, e, c, len(taken), alone, unitDemand, maxScore, act)
		if err != nil {
			return taken, err
		}
		if len(got) > 0 {
			e.turns.serve(c.lane, c.ns)
		}
		taken = append(taken, got...)
		if next == nil {
			cands = append(cands[:i], cands[i+1:]...)
		} else {
			c.head = *next
		}
	}
	return taken, nil
}

// pick chooses the candidate to claim from: the highest priority; then, among its lanes,
// the one served least recently; then, within that lane, the namespace served least
// recently; then the oldest head. Names tied at a turn (never served, or forgotten: see
// putTurn) go in rotation (ahead), so one worker alone sees its lanes, and a lane's
// namespaces, in strict alternation, in name order. Turns are counted
// for the whole engine but compared only among the candidates of this caller, so workers
// whose lanes or capabilities differ cannot starve each other's candidates. alone reports
// whether the chosen candidate's namespace is the only one at that priority.
func (e *Engine) pick(cands []*candidate) (int, bool) {
	best := cands[0].bucket()
	for _, c := range cands[1:] {
		best = min(best, c.bucket())
	}
	e.turns.mu.Lock()
	defer e.turns.mu.Unlock()
	first := -1 // the first candidate at the best priority
	alone := true
	lane, laneAt := "", uint64(0)
	for i, c := range cands {
		if c.bucket() != best {
			continue
		}
		at := e.turns.lanes[c.lane]
		if first < 0 {
			first, lane, laneAt = i, c.lane, at
			continue
		}
		alone = alone && c.lane == cands[first].lane && c.ns == cands[first].ns
		if at < laneAt || at == laneAt && ahead(c.lane, lane, e.turns.lastLane) {
			lane, laneAt = c.lane, at
		}
	}
	chosen := -1
	ns, nsAt := "", uint64(0)
	for i, c := range cands {
		if c.bucket() != best || c.lane != lane {
			continue
		}
		switch at := e.turns.namespaces[laneNamespace{lane, c.ns}]; {
		case chosen < 0, at < nsAt, at == nsAt && ahead(c.ns, ns, e.turns.lastNS):
			chosen, ns, nsAt = i, c.ns, at
		case c.ns == ns && c.head.Less(cands[chosen].head):
			chosen = i
		}
	}
	return chosen, alone
}

// ahead reports whether name a goes before name b of the same turn: the names after
// last, the name last served, first and in order, then the others in order. So names that
// tie, those never served or forgotten, take their turns in rotation, not the first in
// order again and again.
func ahead(a, b, last string) bool {
	if wa, wb := a <= last, b <= last; wa != wb {
		return wb
	}
	return a < b
}

// maxTurns bounds each map of claimTurns (lanes and namespaces come and go).
const maxTurns = 4096

// claimTurns records when each lane, and each namespace of a lane, last handed out work,
// for pick.
type claimTurns struct {
	mu         sync.Mutex
	served     uint64                   // counts the times work was handed out
	lanes      map[string]uint64        // lane → served when it last handed out work
	namespaces map[laneNamespace]uint64 // the same per namespace of a lane
	lastLane   string                   // the lane that handed out work last
	lastNS     string                   // and its namespace
}

type laneNamespace struct{ lane, ns string }

// serve records that the namespace ns of lane handed out work.
func (t *claimTurns) serve(lane, ns string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.served++
	putTurn(t.lanes, lane, t.served)
	putTurn(t.namespaces, laneNamespace{lane, ns}, t.served)
	t.lastLane, t.lastNS = lane, ns
}

// putTurn sets m[k] = served. A full map first forgets the key served least recently,
// which reads as never served from then on: it goes ahead of every key the map holds, in
// rotation with the other names it ties with (ahead), so nothing starves however many
// names there are. Forgetting scans the map, once per name that enters a full one.
func putTurn[K comparable](m map[K]uint64, k K, served uint64) {
	if _, ok := m[k]; !ok && len(m) >= maxTurns {
		var oldest K
		oldestAt := uint64(math.MaxUint64)
		for key, at := range m {
			if at < oldestAt {
				oldest, oldestAt = key, at
			}
		}
		delete(m, oldest)
	}
	m[k] = served
}

// takeFrom pops executions from one eligible queue in one unit, applies act to each
// (numbering them from base), and returns what act collected and the queue's new head
// (nil when empty). It pops what demand(base) still asks for beyond base when the
// candidate is alone at its priority, one execution otherwise, and none if demand asks
// for no more than base; one past its deadline is expired there, as the timer loop would
// expire it, instead of going to act. The head is read only when the caller may go on
// (demand asks for more, or the unit took fewer than it popped for); otherwise it is
// reported as nil.
func takeFrom[T any](ctx context.Context, e *Engine, c *candidate, base int, alone bool, demand func(taken int) int, maxScore int64, act takeFunc[T]) ([]T, *ffstore.QueueItem, error) {
	var got []T
	var next *ffstore.QueueItem
	err := e.update(ctx, c.shard, func(tx ffstore.Tx) error {
		got, next = nil, nil // the unit may run again after a conflict
		now := e.now()
		count := demand(base)
		if count <= base {
			return nil // those who asked for more left: nothing to take, nor to read
		}
		want := 1
		if alone {
			want = count - base
		}
		more := count-base > want
		items, err := popDue(tx, c.queue, maxScore, want, kindExec, kindPayload)
		if err != nil {
			return err
		}
		for _, it := range items {
			x, err := getExec(tx, fftype.ExecutionID(it.Member))
			if fftype.CodeOf(err) == fftype.CodeExecutionNotFound {
				continue // a queue entry never outlives its record; tolerate it anyway
			}
			if err != nil {
				return err
			}
			before := placementOf(x)
			queue := c.queue
			if _, ok := before.score(queue); !ok {
				// Perhaps the queue x belongs in, under the inline name it had before long
				// capability sets were named by digest.
				if queue != inlineEligibleQueue(x) {
					continue // not eligible here: the pop only dropped a stale entry
				}
				queue = eligibleQueue(x.Lane, x.Namespace, x.Capabilities)
				if _, ok := before.score(queue); !ok {
					continue
				}
			}
			before = before.without(queue)
			expired, err := e.fire(tx, queueDeadline, x, before, now)
			if err != nil {
				return err
			}
			if expired {
				continue // past its deadline: it ends here, as the timer loop would end it
			}
			v, err := act(tx, x, before, now, base+len(got))
			if err != nil {
				return err
			}
			got = append(got, v)
		}
		if !more && len(got) == want {
			return nil // the claim is done: nobody needs the next head
		}
		rest, err := tx.Range(c.queue, nil, ffstore.MaxScore, 1)
		if err != nil {
			return err
		}
		if len(rest) > 0 {
			next = &rest[0]
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	e.notifyTimers()
	return got, next, nil
}

// popDue pops up to n due executions of queue and prefetches their records of the given
// kinds, in one round trip where the store can (ffstore.PopFetcher).
func popDue(tx ffstore.Tx, queue string, maxScore int64, n int, kinds ...string) ([]ffstore.QueueItem, error) {
	if pf, ok := tx.(ffstore.PopFetcher); ok {
		return pf.PopDueFetch(queue, maxScore, n, kinds...)
	}
	items, err := tx.PopDue(queue, maxScore, n)
	if err != nil || len(items) == 0 {
		return items, err
	}
	members := make([]string, len(items))
	for i, it := range items {
		members[i] = it.Member
	}
	return items, tx.Prefetch(ffstore.MemberRecordKeys(members, kinds)...)
}

// acquire gives w a lease on the runnable execution x: a new attempt, or the paused
// attempt continued. before is x's placement less any queue the unit popped it from.
func (e *Engine) acquire(tx ffstore.Tx, x *fftype.Execution, before placement, w claimer, now time.Time) (*fftype.Lease, error) {
	ttl := w.ttl
	if ttl == 0 {
		ttl = x.Policy.LeaseTTL.D()
	}
	var att *fftype.Attempt
	resumed := x.AttemptState == fftype.AttemptStateInterrupted
	event := fftype.EventClaimed
	if resumed {
		a, err := latestAttempt(x)
		if err != nil {
			return nil, err
		}
		att = a
		if !x.AttemptTimeoutAt.IsZero() && !att.PausedAt.IsZero() {
			// The attempt's timeout counts the time it ran, not the time it was paused.
			x.AttemptTimeoutAt = x.AttemptTimeoutAt.Add(now.Sub(att.PausedAt))
		}
		att.Status = fftype.AttemptStarted
		att.ResumedAt = now
		event = fftype.EventResumed
	} else {
		if x.Attempt != nil {
			putAttempt(tx, x.Attempt) // no longer the latest
		}
		att = &fftype.Attempt{
			ExecutionID:     x.ID,
			Index:           x.TotalAttempts,
			ID:              fftype.NewUUID(),
			Status:          fftype.AttemptStarted,
			PreviousAttempt: x.CurrentAttempt,
			Reason:          x.PendingReason,
			CreatedAt:       now,
		}
		switch x.AttemptState {
		case fftype.AttemptStatePendingRetry:
			att.Type = fftype.AttemptRetry
		case fftype.AttemptStatePendingReplay:
			att.Type = fftype.AttemptReplay
		case fftype.AttemptStatePendingReclaim:
			att.Type = fftype.AttemptReclaim
			x.ReclaimCount++
			event = fftype.EventReclaimed
		default:
			att.Type = fftype.AttemptInitial
		}
		x.TotalAttempts++
		x.CurrentAttempt = att.Index
		x.AttemptID = att.ID
		x.AttemptTimeoutAt = time.Time{}
		if t := x.Policy.AttemptTimeout; t != 0 {
			x.AttemptTimeoutAt = now.Add(t.D())
		}
		x.ProgressPercent, x.ProgressMessage, x.ProgressAt = 0, "", time.Time{}
		x.PendingReason = ""
	}
	x.LeaseEpoch++
	x.LeaseID = fftype.NewUUID()
	x.WorkerID, x.WorkerInstanceID = w.workerID, w.instanceID
	x.LeaseTTL = fftype.Duration(ttl)
	x.LeaseExpiresAt = now.Add(ttl)
	x.LeaseRenewedAt = now
	x.LastLeaseEnd = ""
	x.Phase = fftype.PhaseActive
	x.Ownership = fftype.OwnershipLeased
	x.Eligibility = fftype.EligibilityNotApplicable
	x.BlockingReason = fftype.BlockingNone
	x.BlockingDetail = ""
	x.AttemptState = fftype.AttemptStateRunning
	x.Grant = nil
	x.DelayUntil = time.Time{}
	if x.StartedAt.IsZero() {
		x.StartedAt = now
	}
	x.UpdatedAt = now

	att.LeaseID, att.LeaseEpoch = x.LeaseID, x.LeaseEpoch
	att.WorkerID, att.WorkerInstanceID = w.workerID, w.instanceID
	x.Attempt = att
	e.save(tx, before, x)
	appendEvent(tx, event, x, now, map[string]any{
		"attempt_index": att.Index, "attempt_type": att.Type, "lease_epoch": x.LeaseEpoch, "worker_id": w.workerID,
	})

	payload, _, err := tx.Get(payloadKey(x.ID))
	if err != nil {
		return nil, err
	}
	return &fftype.Lease{
		ExecutionID:  x.ID,
		Namespace:    x.Namespace,
		Lane:         x.Lane,
		Kind:         x.Kind,
		Payload:      payload,
		Encoding:     x.Encoding,
		Priority:     x.Priority,
		Tags:         x.Tags,
		Traceparent:  x.Traceparent,
		Fence:        x.Fence(),
		AttemptIndex: att.Index,
		AttemptType:  att.Type,
		Resumed:      resumed,
		TTL:          fftype.Duration(ttl),
		ExpiresAt:    x.LeaseExpiresAt,
		RetryCount:   x.RetryCount,
	}, nil
}

// IssueGrant reserves the eligible execution id for one worker until the grant expires;
// no other claim can take it meanwhile. A claim grant needs an execution waiting for an
// ordinary attempt; a reclaim grant one whose lease expired or was revoked. The worker
// must hold the execution's required capabilities. When the grant expires unused, the
// execution becomes eligible again. An execution past its deadline is refused as not
// eligible, and ends as expired, as the timer loop would end it.
func (e *Engine) IssueGrant(ctx context.Context, id fftype.ExecutionID, kind fftype.GrantKind, p fftype.GrantParams) (*fftype.GrantRef, error) {
	shard, err := e.checkID(id)
	if err != nil {
		return nil, err
	}
	if kind != fftype.GrantClaim && kind != fftype.GrantReclaim {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "grant kind %q: want %q or %q", kind, fftype.GrantClaim, fftype.GrantReclaim)
	}
	if err := fftype.ValidateWorkerID("worker_id", p.WorkerID); err != nil {
		return nil, err
	}
	caps, err := fftype.NormalizeCapabilities("capabilities", p.Capabilities)
	if err != nil {
		return nil, err
	}
	ttl := p.TTL.D()
	if ttl == 0 {
		ttl = fftype.DefaultGrantTTL
	}
	if ttl < time.Millisecond || ttl > fftype.MaxGrantTTL {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "grant ttl must be between 1ms and %s", fftype.MaxGrantTTL)
	}
	var ref *fftype.GrantRef
	var refused error // a refusal that commits what the unit wrote
	err = e.update(ctx, shard, func(tx ffstore.Tx) error {
		ref, refused = nil, nil // the unit may run again after a conflict
		now := e.now()
		x, err := getExec(tx, id)
		if err != nil {
			return err
		}
		expired, err := e.fire(tx, queueDeadline, x, placementOf(x), now)
		if err != nil {
			return err
		}
		if expired {
			refused = fftype.Statef(fftype.CodeExecutionNotEligible, "execution %s passed its deadline at %s; it expired",
				id, x.DeadlineAt.Format(time.RFC3339Nano))
			return nil
		}
		if x.Eligibility == fftype.EligibilityGranted && !now.Before(x.Grant.ExpiresAt) {
			e.expireGrant(tx, x, placementOf(x), now) // its slot is free, swept or not
		}
		if x.Eligibility == fftype.EligibilityGranted {
			return &fftype.Error{Kind: fftype.KindConflict, Code: fftype.CodeGrantAlreadyExists,
				Message: "execution " + string(id) + " is already reserved by a grant until " + x.Grant.ExpiresAt.Format(time.RFC3339Nano)}
		}
		if x.Phase != fftype.PhaseRunnable || x.Eligibility != fftype.EligibilityNow {
			return fftype.Statef(fftype.CodeExecutionNotEligible, "execution %s is %s, not eligible", id, x.PublicState())
		}
		reclaimable := x.AttemptState == fftype.AttemptStatePendingReclaim
		if kind == fftype.GrantReclaim && !reclaimable {
			return fftype.Statef(fftype.CodeNotReclaimable, "execution %s did not lose a lease; issue a claim grant", id)
		}
		if kind == fftype.GrantClaim && reclaimable {
			return fftype.Statef(fftype.CodeExecutionNotEligible, "execution %s lost its lease; issue a reclaim grant", id)
		}
		if missing := missingCaps(caps, x.Capabilities); missing != "" {
			return fftype.Statef(fftype.CodeCapabilityMismatch, "worker lacks required capabilities: %s", missing)
		}
		ref = e.reserve(tx, x, placementOf(x), kind, p.WorkerID, ttl, now)
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.notifyTimers()
	return ref, refused
}

// reserve takes the eligible execution x out of its queue with a grant for one worker.
func (e *Engine) reserve(tx ffstore.Tx, x *fftype.Execution, before placement, kind fftype.GrantKind, workerID string, ttl time.Duration, now time.Time) *fftype.GrantRef {
	g := &fftype.Grant{ID: fftype.NewUUID(), Kind: kind, WorkerID: workerID, Lane: x.Lane, IssuedAt: now, ExpiresAt: now.Add(ttl)}
	x.Grant = g
	x.Eligibility = fftype.EligibilityGranted
	x.BlockingReason = fftype.BlockingWaitingForGrantHolder
	x.UpdatedAt = now
	e.save(tx, before, x)
	appendEvent(tx, fftype.EventGrantIssued, x, now, map[string]any{"grant_kind": kind, "worker_id": workerID, "expires_at": g.ExpiresAt})
	return &fftype.GrantRef{ID: g.ID, Kind: kind, ExecutionID: x.ID, Lane: x.Lane, WorkerID: workerID, ExpiresAt: g.ExpiresAt}
}

// missingCaps returns the comma-joined tokens of need that have lacks, or "".
func missingCaps(have, need []string) string {
	var miss []string
	for _, n := range need {
		if j := sort.SearchStrings(have, n); j == len(have) || have[j] != n {
			miss = append(miss, n)
		}
	}
	return strings.Join(miss, ",")
}

// ClaimGrant consumes a grant: the worker it names gets a lease on the reserved execution
// (a reclaim attempt for a reclaim grant). A grant that expired, was consumed, or names
// another worker is refused and nothing changes. A grant still valid on an execution past
// its deadline is refused as invalid_claim_grant, and the execution ends as expired, as
// the timer loop would end it.
func (e *Engine) ClaimGrant(ctx context.Context, p fftype.GrantClaimParams) (*fftype.Lease, error) {
	w, err := checkClaimer(p.WorkerID, p.WorkerInstanceID, nil, p.LeaseTTL)
	if err != nil {
		return nil, err
	}
	shard, err := e.checkID(p.Grant.ExecutionID)
	if err != nil {
		return nil, err
	}
	if p.Grant.ID == "" {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "grant id is required")
	}
	var lease *fftype.Lease
	var refused error // a refusal that commits what the unit wrote
	err = e.update(ctx, shard, func(tx ffstore.Tx) error {
		lease, refused = nil, nil // the unit may run again after a conflict
		now := e.now()
		x, err := getExec(tx, p.Grant.ExecutionID)
		if err != nil {
			return err
		}
		g := x.Grant
		if g == nil || g.ID != p.Grant.ID || x.Eligibility != fftype.EligibilityGranted {
			return fftype.Statef(fftype.CodeInvalidClaimGrant, "grant %s is not outstanding on execution %s", p.Grant.ID, x.ID)
		}
		if g.WorkerID != p.WorkerID {
			return fftype.Statef(fftype.CodeInvalidClaimGrant, "grant %s was issued to another worker", g.ID)
		}
		if !now.Before(g.ExpiresAt) {
			return fftype.Statef(fftype.CodeClaimGrantExpired, "grant %s expired at %s", g.ID, g.ExpiresAt.Format(time.RFC3339Nano))
		}
		expired, err := e.fire(tx, queueDeadline, x, placementOf(x), now)
		if err != nil {
			return err
		}
		if expired {
			refused = fftype.Statef(fftype.CodeInvalidClaimGrant, "execution %s passed its deadline at %s; it expired with grant %s",
				x.ID, x.DeadlineAt.Format(time.RFC3339Nano), g.ID)
			return nil
		}
		if err := tx.Prefetch(payloadKey(x.ID)); err != nil {
			return err
		}
		lease, err = e.acquire(tx, x, placementOf(x), w, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	e.notifyTimers()
	return lease, refused
}
