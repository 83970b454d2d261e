package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// bulkChunk is how many creates of one shard share a unit in a bulk create.
const bulkChunk = 256

// idemRecord is what an idempotency key stores.
type idemRecord struct {
	ID        fftype.ExecutionID `json:"id"`
	ExpiresAt time.Time          `json:"expires"`
}

// newExecution is a validated create request, ready to write.
type newExecution struct {
	x       *fftype.Execution
	payload []byte
	runAt   time.Time // zero: eligible now
	delay   time.Duration
}

// Create creates one execution, or finds the one an earlier create made with the same id
// or idempotency key.
func (e *Engine) Create(ctx context.Context, p fftype.CreateParams) (*fftype.CreateResult, error) {
	n, err := e.prepareCreate(p)
	if err != nil {
		return nil, err
	}
	var res *fftype.CreateResult
	err = e.update(ctx, n.x.ID.Shard(), func(tx ffstore.Tx) error {
		var err error
		res, err = e.insert(tx, n, e.now())
		return err
	})
	if err != nil {
		return nil, err
	}
	if !res.Duplicate && (!n.runAt.IsZero() || n.x.Policy.Deadline != 0) {
		e.notifyTimers()
	}
	return res, nil
}

// CreateMany creates many executions, one result per item in the order given. Items are
// grouped by shard and written in few units; an invalid item gets its error and does not
// stop the others.
func (e *Engine) CreateMany(ctx context.Context, ps []fftype.CreateParams) []fftype.BulkCreateResult {
	out := make([]fftype.BulkCreateResult, len(ps))
	byShard := map[int][]int{}
	prepared := make([]*newExecution, len(ps))
	for i, p := range ps {
		n, err := e.prepareCreate(p)
		if err != nil {
			out[i].Err = err
			continue
		}
		prepared[i] = n
		s := n.x.ID.Shard()
		byShard[s] = append(byShard[s], i)
	}
	for shard, idxs := range byShard {
		for start := 0; start < len(idxs); start += bulkChunk {
			chunk := idxs[start:min(start+bulkChunk, len(idxs))]
			results := make([]*fftype.CreateResult, len(chunk))
			keys := make([]string, 0, 2*len(chunk))
			for _, i := range chunk {
				x := prepared[i].x
				keys = append(keys, execKey(x.ID))
				if x.IdemKey != "" {
					keys = append(keys, idemKey(x.Namespace, x.IdemKey))
				}
			}
			err := e.update(ctx, shard, func(tx ffstore.Tx) error {
				now := e.now()
				if err := tx.Prefetch(keys...); err != nil { // one round trip for the chunk's reads
					return err
				}
				for j, i := range chunk {
					r, err := e.insert(tx, prepared[i], now)
					if err != nil {
						return err
					}
					results[j] = r
				}
				return nil
			})
			for j, i := range chunk {
				if err != nil {
					out[i].Err = err
				} else {
					out[i].Result = results[j]
				}
			}
		}
	}
	e.notifyTimers()
	return out
}

// prepareCreate validates p and builds the record to insert. It reads nothing.
func (e *Engine) prepareCreate(p fftype.CreateParams) (*newExecution, error) {
	ns := p.Namespace
	if ns == "" {
		ns = fftype.DefaultNamespace
	}
	if err := fftype.ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := fftype.ValidateLane(p.Lane); err != nil {
		return nil, err
	}
	if err := fftype.ValidateKind(p.Kind); err != nil {
		return nil, err
	}
	if p.Priority < 0 || p.Priority > fftype.MaxPriority {
		return nil, fftype.Validationf(fftype.CodeInvalidPriority, "priority %d is outside 0..%d", p.Priority, fftype.MaxPriority)
	}
	caps, err := fftype.NormalizeCapabilities("required_capabilities", p.Capabilities)
	if err != nil {
		return nil, err
	}
	if err := fftype.ValidateTags(p.Tags); err != nil {
		return nil, err
	}
	if err := fftype.ValidateTraceparent(p.Traceparent); err != nil {
		return nil, err
	}
	if err := p.Policy.Validate(); err != nil {
		return nil, err
	}
	enc, err := e.checkPayload("payload", p.Payload, p.Encoding)
	if err != nil {
		return nil, err
	}
	if err := fftype.ValidatePlainText("idempotency_key", p.IdempotencyKey, fftype.MaxIdemKeyBytes); err != nil {
		return nil, err
	}
	if p.Delay < 0 || p.Delay.D() > fftype.MaxDelay {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "delay must be between 0 and %s", fftype.MaxDelay)
	}
	if p.Delay != 0 && !p.RunAt.IsZero() {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "set delay or run_at, not both")
	}
	if !p.RunAt.IsZero() && p.RunAt.Sub(e.now()) > fftype.MaxDelay {
		// Checked here too, not only in the unit, so that in a bulk create it fails this
		// item alone rather than its whole chunk.
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "run_at is more than %s ahead", fftype.MaxDelay)
	}

	shard := -1
	if p.IdempotencyKey != "" {
		shard = fftype.ShardForKey(ns, p.IdempotencyKey, e.shards)
	}
	id := p.ID
	if id != "" {
		s, err := e.checkID(id)
		if err != nil {
			return nil, err
		}
		if shard >= 0 && s != shard {
			return nil, fftype.Validationf(fftype.CodeInvalidID,
				"execution id %s names shard %d but its idempotency key maps to shard %d; omit the id or mint it on that shard", id, s, shard)
		}
	} else {
		if shard < 0 {
			shard = rand.IntN(e.shards)
		}
		id = fftype.NewExecutionID(shard)
	}

	tags := make(map[string]string, len(p.Tags))
	for k, v := range p.Tags {
		if v != "" { // "" means no such tag, as in SetTags
			tags[k] = v
		}
	}
	x := &fftype.Execution{
		ID:             id,
		Namespace:      ns,
		Lane:           p.Lane,
		Kind:           p.Kind,
		Priority:       p.Priority,
		Capabilities:   caps,
		Tags:           tags,
		Traceparent:    p.Traceparent,
		Policy:         p.Policy.WithDefaults(),
		IdemKey:        p.IdempotencyKey,
		Encoding:       enc,
		Phase:          fftype.PhaseRunnable,
		Ownership:      fftype.OwnershipUnowned,
		Eligibility:    fftype.EligibilityNow,
		BlockingReason: fftype.BlockingWaitingForWorker,
		Outcome:        fftype.OutcomeNone,
		AttemptState:   fftype.AttemptStatePendingFirst,
		CurrentAttempt: -1,
	}
	if len(x.Tags) == 0 {
		x.Tags = nil
	}
	// The store keeps what a unit puts; the caller may reuse its buffer once Create returns.
	return &newExecution{x: x, payload: bytes.Clone(p.Payload), runAt: p.RunAt, delay: p.Delay.D()}, nil
}

// checkPayload validates a payload or result and returns its effective encoding.
func (e *Engine) checkPayload(field string, b []byte, enc fftype.PayloadEncoding) (fftype.PayloadEncoding, error) {
	if len(b) > e.cfg.MaxPayloadBytes {
		return "", &fftype.Error{Kind: fftype.KindTooLarge, Code: fftype.CodePayloadTooLarge,
			Message: field + " is larger than " + strconv.Itoa(e.cfg.MaxPayloadBytes) + " bytes"}
	}
	return fftype.CheckPayload(field, b, enc)
}

// insert writes one prepared execution in a unit, or reports the existing duplicate.
func (e *Engine) insert(tx ffstore.Tx, n *newExecution, now time.Time) (*fftype.CreateResult, error) {
	proto := n.x
	if proto.IdemKey != "" {
		b, ok, err := tx.Get(idemKey(proto.Namespace, proto.IdemKey))
		if err != nil {
			return nil, err
		}
		if ok {
			var rec idemRecord
			if err := json.Unmarshal(b, &rec); err != nil {
				return nil, corrupt("idempotency key", err)
			}
			if rec.ExpiresAt.After(now) {
				if _, ok, err := tx.Get(execKey(rec.ID)); err != nil {
					return nil, err
				} else if ok { // else retention deleted it: the key is free again
					return e.duplicate(tx, rec.ID)
				}
			}
		}
	}
	if _, ok, err := tx.Get(execKey(proto.ID)); err != nil {
		return nil, err
	} else if ok {
		return e.duplicate(tx, proto.ID)
	}

	x := *proto // a unit may run more than once: never change the prepared record
	x.CreatedAt, x.UpdatedAt = now, now
	runAt := n.runAt
	if n.delay > 0 {
		runAt = now.Add(n.delay)
	}
	if runAt.After(now) {
		if runAt.Sub(now) > fftype.MaxDelay {
			return nil, fftype.Validationf(fftype.CodeInvalidInput, "run_at is more than %s ahead", fftype.MaxDelay)
		}
		x.Eligibility = fftype.EligibilityUntilTime
		x.BlockingReason = fftype.BlockingWaitingForDelay
		x.DelayUntil = runAt.Truncate(time.Millisecond)
	}
	if d := x.Policy.Deadline; d != 0 {
		x.DeadlineAt = now.Add(d.D())
	}
	e.save(tx, placement{}, &x)
	if len(n.payload) > 0 {
		tx.Put(payloadKey(x.ID), n.payload)
	}
	if x.IdemKey != "" {
		rec := idemRecord{ID: x.ID, ExpiresAt: now.Add(x.Policy.DedupWindow.D())}
		putJSON(tx, idemKey(x.Namespace, x.IdemKey), rec)
		tx.QueueAdd(queueIdem, idemMember(x.Namespace, x.IdemKey), ms(rec.ExpiresAt))
	}
	appendEvent(tx, fftype.EventCreated, &x, now, map[string]any{"kind": x.Kind, "state": x.PublicState()})
	return &fftype.CreateResult{ID: x.ID, State: x.PublicState()}, nil
}

func (e *Engine) duplicate(tx ffstore.Tx, id fftype.ExecutionID) (*fftype.CreateResult, error) {
	x, err := getExec(tx, id)
	if err != nil {
		return nil, err
	}
	return &fftype.CreateResult{ID: id, State: x.PublicState(), Duplicate: true}, nil
}
