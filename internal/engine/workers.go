package engine

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// The worker registry.
//
// Every worker instance (one process of a worker pool) has one record on the shard of its
// namespace, keyed by (namespace, instance id): its pool identity, lanes and capabilities,
// and a liveness expiry that heartbeats push forward. The record is also the duplicate
// guard: a process proves that the record is its own with a session token it minted when it
// started, so a second live process with the same instance id is refused until the first
// deregisters or its record lapses. Lapsed records are swept by the next registration on
// the shard and are invisible to readers meanwhile.
//
// Everything here goes through the ordinary store contract: records, two queues per shard
// (the instances in name order, and the same instances by expiry) and units.

// Error codes of the registry.
const (
	// CodeDuplicateWorkerInstance refuses a registration while another process holds a live
	// registration of the same instance id.
	CodeDuplicateWorkerInstance = "duplicate_worker_instance"
	// CodeWorkerNotRegistered answers a heartbeat, lookup or mark for an instance with no
	// live registration (or one held by another session).
	CodeWorkerNotRegistered = "worker_not_registered"
)

// Registry limits.
const (
	MinWorkerTTL       = time.Second
	MaxWorkerTTL       = 2 * fftype.MaxLeaseTTL
	MaxWorkerLanes     = 64
	MaxWorkerSession   = 128
	MaxDeadReasonBytes = 256

	defaultWorkerListLimit = 1000
	maxWorkerListLimit     = 10_000
	workerSweepBatch       = 64
	leaseScanBatch         = 512
)

// Registry queues. Members are "<namespace>\x1f<instance id>", which no execution id can be.
const (
	queueWorkers      = "w" + sep + "workers" // score 0: in name order, for listing
	queueWorkerExpiry = "w" + sep + "expiry"  // by liveness expiry, for sweeping
)

func workerMember(ns, instance string) string { return ns + sep + instance }
func workerKey(ns, instance string) string    { return "wk:~" + workerMember(ns, instance) }

// workerShard is the shard holding the registry of a namespace.
func (e *Engine) workerShard(ns string) int { return fftype.ShardForKey(ns, "workers", e.shards) }

// WorkerRegistration registers one worker instance.
type WorkerRegistration struct {
	// WorkerID is the pool identity, shared by the instances of one worker. Required.
	WorkerID string
	// InstanceID identifies the process. Required; unique within the namespace among live
	// registrations.
	InstanceID string
	// Namespace scopes the registration; "" means "default".
	Namespace string
	// Lanes the instance claims from; at least one.
	Lanes []string
	// Capabilities the instance holds.
	Capabilities []string
	// TTL is how long the registration lives without a heartbeat, 1s to 48h.
	TTL time.Duration
	// Session is a secret the process minted when it started (1 to 128 bytes of UTF-8). Only the
	// same session may refresh, heartbeat or deregister a live registration.
	Session string
}

// WorkerInfo is a worker instance's registration as readers see it.
type WorkerInfo struct {
	WorkerID     string          `json:"worker_id"`
	InstanceID   string          `json:"worker_instance_id"`
	Namespace    string          `json:"namespace"`
	Lanes        []string        `json:"lanes"`
	Capabilities []string        `json:"capabilities,omitempty"`
	TTL          fftype.Duration `json:"ttl"`
	RegisteredAt time.Time       `json:"registered_at"`
	HeartbeatAt  time.Time       `json:"last_heartbeat_at"`
	ExpiresAt    time.Time       `json:"expires_at"`
}

// workerRecord is what the registry stores per instance.
type workerRecord struct {
	WorkerInfo
	Session string `json:"session"`
	// DeadAt is when MarkWorkerDead marked the instance dead: the registration is no
	// longer live (the instance id is free), and the record stays until the mark has
	// expired the leases held then (or a day has passed, see keepUntil), so that a mark
	// retried after a failure finds it.
	DeadAt time.Time `json:"dead_at,omitzero"`
}

// WorkerRegistered is the outcome of a registration.
type WorkerRegistered struct {
	// Refreshed is true when the session's own live registration was updated; false when a
	// new registration was made (none existed, or the previous one had lapsed).
	Refreshed bool
	// ExpiresAt is when the registration lapses without a heartbeat.
	ExpiresAt time.Time
}

// WorkerListParams pages through the live workers of one namespace.
type WorkerListParams struct {
	// Namespace to list; "" means "default".
	Namespace string
	// After continues a listing after this instance id; "" starts at the first.
	After string
	// Limit is the page size, 1 to 10,000; 0 means 1,000.
	Limit int
}

// WorkerPage is one page of live workers in instance-id order. Cursor, when not empty, is
// the After of the next page.
type WorkerPage struct {
	Workers []*WorkerInfo `json:"workers"`
	Cursor  string        `json:"cursor,omitempty"`
}

func checkSession(session string) error {
	if session == "" || len(session) > MaxWorkerSession || !utf8.ValidString(session) {
		// UTF-8, as the registration record is JSON, which would change other bytes.
		return fftype.Validationf(fftype.CodeInvalidInput, "worker session must be 1 to %d bytes of UTF-8", MaxWorkerSession)
	}
	return nil
}

func normNamespace(ns string) (string, error) {
	if ns == "" {
		return fftype.DefaultNamespace, nil
	}
	return ns, fftype.ValidateNamespace(ns)
}

func checkInstance(ns, instance string) (string, error) {
	ns, err := normNamespace(ns)
	if err != nil {
		return "", err
	}
	return ns, fftype.ValidateWorkerID("worker_instance_id", instance)
}

// normalizeLanes validates lanes and returns them sorted without duplicates.
func normalizeLanes(lanes []string) ([]string, error) {
	if len(lanes) == 0 {
		return nil, fftype.Validationf(fftype.CodeInvalidLane, "lanes must name at least one lane")
	}
	out := make([]string, 0, len(lanes))
	for _, l := range lanes {
		if err := fftype.ValidateLane(l); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxWorkerLanes {
		return nil, fftype.Validationf(fftype.CodeInvalidLane, "at most %d lanes", MaxWorkerLanes)
	}
	return out, nil
}

func readWorker(tx ffstore.ReadTx, ns, instance string) (*workerRecord, error) {
	b, ok, err := tx.Get(workerKey(ns, instance))
	if err != nil || !ok {
		return nil, err
	}
	var rec workerRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, corrupt("worker "+instance, err)
	}
	return &rec, nil
}

// deadMarkKept is how long the record of a registration marked dead is kept, at least,
// for a retry of a mark that failed part-way (a mark that finishes deletes it at once).
const deadMarkKept = 24 * time.Hour

// keepUntil is when the sweep may delete rec: when it lapses, or for a registration marked
// dead, deadMarkKept after the mark if that is later.
func (rec *workerRecord) keepUntil() time.Time {
	if rec.DeadAt.IsZero() || rec.DeadAt.Add(deadMarkKept).Before(rec.ExpiresAt) {
		return rec.ExpiresAt
	}
	return rec.DeadAt.Add(deadMarkKept)
}

func (rec *workerRecord) live(now time.Time) bool {
	return rec.DeadAt.IsZero() && now.Before(rec.ExpiresAt)
}

func putWorker(tx ffstore.Tx, rec *workerRecord) {
	m := workerMember(rec.Namespace, rec.InstanceID)
	putJSON(tx, workerKey(rec.Namespace, rec.InstanceID), rec)
	tx.QueueAdd(queueWorkers, m, 0)
	tx.QueueAdd(queueWorkerExpiry, m, ms(rec.keepUntil()))
}

func deleteWorker(tx ffstore.Tx, ns, instance string) {
	m := workerMember(ns, instance)
	tx.Delete(workerKey(ns, instance))
	tx.QueueRemove(queueWorkers, m)
	tx.QueueRemove(queueWorkerExpiry, m)
}

func workerEvent(tx ffstore.Tx, typ fftype.EventType, ns string, now time.Time, data map[string]any) {
	b, err := json.Marshal(data)
	if err != nil {
		panic("engine: encoding event: " + err.Error())
	}
	tx.AppendEvent(fftype.Event{Version: fftype.EventVersion, Type: typ, Time: now, Namespace: ns, Data: b})
}

// sweepWorkers deletes up to a batch of the shard's lapsed registrations. It must run before
// the unit writes to the registry queues.
func sweepWorkers(tx ffstore.Tx, now time.Time) error {
	items, err := tx.PopDue(queueWorkerExpiry, ms(now), workerSweepBatch)
	if err != nil {
		return err
	}
	for _, it := range items {
		ns, instance, ok := strings.Cut(it.Member, sep)
		if !ok {
			continue
		}
		rec, err := readWorker(tx, ns, instance)
		if err != nil {
			return err
		}
		switch {
		case rec == nil:
			tx.QueueRemove(queueWorkers, it.Member)
		case now.Before(rec.keepUntil()):
			tx.QueueAdd(queueWorkerExpiry, it.Member, ms(rec.keepUntil()))
		default:
			deleteWorker(tx, ns, instance)
		}
	}
	return nil
}

// RegisterWorker registers a worker instance, or refreshes the session's own live
// registration (new lanes, capabilities and TTL; the expiry moves to now + TTL). A live
// registration of the instance by another session is refused with a conflict error coded
// duplicate_worker_instance and nothing changes; a lapsed one is replaced. The unit also
// deletes some of the shard's lapsed registrations.
func (e *Engine) RegisterWorker(ctx context.Context, r WorkerRegistration) (WorkerRegistered, error) {
	var out WorkerRegistered
	if err := fftype.ValidateWorkerID("worker_id", r.WorkerID); err != nil {
		return out, err
	}
	ns, err := checkInstance(r.Namespace, r.InstanceID)
	if err != nil {
		return out, err
	}
	lanes, err := normalizeLanes(r.Lanes)
	if err != nil {
		return out, err
	}
	caps, err := fftype.NormalizeCapabilities("capabilities", r.Capabilities)
	if err != nil {
		return out, err
	}
	if r.TTL < MinWorkerTTL || r.TTL > MaxWorkerTTL {
		return out, fftype.Validationf(fftype.CodeInvalidInput, "worker ttl must be between %s and %s", MinWorkerTTL, MaxWorkerTTL)
	}
	if err := checkSession(r.Session); err != nil {
		return out, err
	}
	err = e.update(ctx, e.workerShard(ns), func(tx ffstore.Tx) error {
		now := e.now()
		out = WorkerRegistered{}
		if err := sweepWorkers(tx, now); err != nil {
			return err
		}
		rec, err := readWorker(tx, ns, r.InstanceID)
		if err != nil {
			return err
		}
		if rec != nil && rec.live(now) {
			if rec.Session != r.Session {
				return fftype.NewError(fftype.KindConflict, CodeDuplicateWorkerInstance,
					"worker instance %q of namespace %q is registered by another live process (worker %q) until %s",
					r.InstanceID, ns, rec.WorkerID, rec.ExpiresAt.Format(time.RFC3339Nano))
			}
			if rec.WorkerID != r.WorkerID {
				return fftype.Validationf(fftype.CodeInvalidInput, "worker instance %q is registered for worker %q, not %q", r.InstanceID, rec.WorkerID, r.WorkerID)
			}
			out.Refreshed = true
		} else {
			rec = &workerRecord{WorkerInfo: WorkerInfo{RegisteredAt: now}}
		}
		rec.WorkerID, rec.InstanceID, rec.Namespace = r.WorkerID, r.InstanceID, ns
		rec.Lanes, rec.Capabilities = lanes, caps
		rec.TTL = fftype.Duration(r.TTL)
		rec.HeartbeatAt = now
		rec.ExpiresAt = now.Add(r.TTL)
		rec.Session = r.Session
		putWorker(tx, rec)
		if !out.Refreshed {
			workerEvent(tx, fftype.EventWorkerRegistered, ns, now, map[string]any{
				"worker_id": r.WorkerID, "worker_instance_id": r.InstanceID, "lanes": lanes, "capabilities": caps})
		}
		out.ExpiresAt = rec.ExpiresAt
		return nil
	})
	return out, err
}

func notRegistered(ns, instance string) error {
	return fftype.NotFoundf(CodeWorkerNotRegistered, "worker instance %q of namespace %q has no live registration", instance, ns)
}

// HeartbeatWorker extends the session's live registration by its TTL from now and returns
// the new expiry. A registration that is missing, lapsed or held by another session is not
// revived: the answer is a not-found error coded worker_not_registered.
func (e *Engine) HeartbeatWorker(ctx context.Context, namespace, instanceID, session string) (time.Time, error) {
	ns, err := checkInstance(namespace, instanceID)
	if err != nil {
		return time.Time{}, err
	}
	if err := checkSession(session); err != nil {
		return time.Time{}, err
	}
	var expires time.Time
	err = e.update(ctx, e.workerShard(ns), func(tx ffstore.Tx) error {
		now := e.now()
		rec, err := readWorker(tx, ns, instanceID)
		if err != nil {
			return err
		}
		if rec == nil || rec.Session != session || !rec.live(now) {
			return notRegistered(ns, instanceID)
		}
		rec.HeartbeatAt = now
		rec.ExpiresAt = now.Add(rec.TTL.D())
		putWorker(tx, rec)
		expires = rec.ExpiresAt
		return nil
	})
	return expires, err
}

// DeregisterWorker removes the session's registration, for a clean shutdown: the instance
// id is free for another process at once. A registration that is missing, belongs to
// another session or was marked dead is left alone, and that is not an error.
func (e *Engine) DeregisterWorker(ctx context.Context, namespace, instanceID, session string) error {
	ns, err := checkInstance(namespace, instanceID)
	if err != nil {
		return err
	}
	if err := checkSession(session); err != nil {
		return err
	}
	return e.update(ctx, e.workerShard(ns), func(tx ffstore.Tx) error {
		now := e.now()
		rec, err := readWorker(tx, ns, instanceID)
		if err != nil || rec == nil || rec.Session != session || !rec.DeadAt.IsZero() {
			return err // a registration marked dead has ended, and its record is the mark's
		}
		deleteWorker(tx, ns, instanceID)
		workerEvent(tx, fftype.EventWorkerDeregistered, ns, now, map[string]any{
			"worker_id": rec.WorkerID, "worker_instance_id": instanceID})
		return nil
	})
}

// GetWorker returns a live registration. A missing or lapsed one is a not-found error coded
// worker_not_registered.
func (e *Engine) GetWorker(ctx context.Context, namespace, instanceID string) (*WorkerInfo, error) {
	ns, err := checkInstance(namespace, instanceID)
	if err != nil {
		return nil, err
	}
	var info *WorkerInfo
	err = e.store.View(ctx, e.workerShard(ns), func(tx ffstore.ReadTx) error {
		rec, err := readWorker(tx, ns, instanceID)
		if err != nil {
			return err
		}
		if rec == nil || !rec.live(e.now()) {
			return notRegistered(ns, instanceID)
		}
		info = &rec.WorkerInfo
		return nil
	})
	return info, err
}

// ListWorkers returns a page of the live workers of one namespace, in instance-id order.
func (e *Engine) ListWorkers(ctx context.Context, p WorkerListParams) (*WorkerPage, error) {
	ns, err := normNamespace(p.Namespace)
	if err != nil {
		return nil, err
	}
	if p.After != "" {
		if err := fftype.ValidateWorkerID("after", p.After); err != nil {
			return nil, err
		}
	}
	limit := p.Limit
	if limit == 0 {
		limit = defaultWorkerListLimit
	}
	if limit < 0 || limit > maxWorkerListLimit {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "limit must be between 1 and %d", maxWorkerListLimit)
	}
	prefix := ns + sep
	page := &WorkerPage{Workers: []*WorkerInfo{}}
	err = e.store.View(ctx, e.workerShard(ns), func(tx ffstore.ReadTx) error {
		page.Workers, page.Cursor = page.Workers[:0], ""
		now := e.now()
		// prefix alone sorts before every member of the namespace.
		after := &ffstore.QueueItem{Member: prefix + p.After}
		for {
			items, err := tx.Range(queueWorkers, after, 0, leaseScanBatch)
			if err != nil {
				return err
			}
			keys := make([]string, 0, len(items))
			for _, it := range items {
				if strings.HasPrefix(it.Member, prefix) {
					keys = append(keys, "wk:~"+it.Member)
				}
			}
			if err := tx.Prefetch(keys...); err != nil {
				return err
			}
			for _, it := range items {
				instance, ok := strings.CutPrefix(it.Member, prefix)
				if !ok {
					return nil // past the namespace
				}
				rec, err := readWorker(tx, ns, instance)
				if err != nil {
					return err
				}
				if rec == nil || !rec.live(now) {
					continue
				}
				page.Workers = append(page.Workers, &rec.WorkerInfo)
				if len(page.Workers) == limit {
					page.Cursor = instance
					return nil
				}
			}
			if len(items) < leaseScanBatch {
				return nil
			}
			after = &items[len(items)-1]
		}
	})
	return page, err
}

// MarkWorkerDead declares a worker instance dead: its registration ends (the instance id
// is free at once), and every lease it held then, on any shard, expires, so the executions
// go back to eligible and their next claim starts a reclaim attempt (or fails them at the
// reclaim cap). Leases are matched by instance id and, when the registration existed, by
// its worker id; without a registration, only leases on executions of the namespace are,
// so that a worker of another namespace with the same instance id keeps its own. A lease
// taken after the mark (by a new process that registered the instance id again) is left
// alone. A mark that fails part-way (a passing store error) may be retried: it finishes
// the same job, unless the instance id was registered again meanwhile (the retry then
// marks that registration dead too). reason is at most 256 bytes of UTF-8 with no
// control characters. It returns how many leases expired; an instance with neither a
// registration nor a lease is a not-found error coded worker_not_registered.
func (e *Engine) MarkWorkerDead(ctx context.Context, namespace, instanceID, reason string) (int, error) {
	ns, err := checkInstance(namespace, instanceID)
	if err != nil {
		return 0, err
	}
	if err := fftype.ValidatePlainText("reason", reason, MaxDeadReasonBytes); err != nil {
		return 0, err
	}
	var h leaseHolder
	found := false
	err = e.update(ctx, e.workerShard(ns), func(tx ffstore.Tx) error {
		now := e.now()
		h, found = leaseHolder{instanceID: instanceID, namespace: ns, markedAt: now}, false
		rec, err := readWorker(tx, ns, instanceID)
		if err != nil || rec == nil {
			return err
		}
		found = true
		if rec.DeadAt.IsZero() { // not a retry of a mark that failed part-way
			rec.DeadAt = now
			putWorker(tx, rec)
			workerEvent(tx, fftype.EventWorkerMarkedDead, ns, now, map[string]any{
				"worker_id": rec.WorkerID, "worker_instance_id": instanceID, "reason": reason})
		}
		h = leaseHolder{workerID: rec.WorkerID, instanceID: instanceID, markedAt: rec.DeadAt}
		return nil
	})
	if err != nil {
		return 0, err
	}
	why := "worker marked dead"
	if reason != "" {
		why += ": " + reason
	}
	expired := 0
	for s := 0; s < e.shards; s++ {
		n, err := e.expireLeasesOf(ctx, s, h, why)
		expired += n
		if err != nil {
			return expired, err
		}
	}
	if expired > 0 {
		e.notifyTimers()
	}
	if !found {
		if expired == 0 {
			return 0, notRegistered(ns, instanceID)
		}
		return expired, nil
	}
	// The leases held at the mark are gone: the record has done its part.
	err = e.update(ctx, e.workerShard(ns), func(tx ffstore.Tx) error {
		rec, err := readWorker(tx, ns, instanceID)
		if err == nil && rec != nil && rec.DeadAt.Equal(h.markedAt) {
			deleteWorker(tx, ns, instanceID)
		}
		return err
	})
	return expired, err
}

// leaseHolder names the leases MarkWorkerDead expires: those of an instance, of its
// worker id when given, on executions of a namespace when given, taken no later than
// markedAt (renewed since or not: a worker marked dead may still be renewing).
type leaseHolder struct {
	workerID, instanceID, namespace string
	markedAt                        time.Time
}

// holds reports whether x is leased by h.
func (h leaseHolder) holds(x *fftype.Execution) bool {
	return x.Ownership == fftype.OwnershipLeased && x.WorkerInstanceID == h.instanceID &&
		(h.workerID == "" || x.WorkerID == h.workerID) && (h.namespace == "" || x.Namespace == h.namespace) &&
		!leaseTakenAt(x).After(h.markedAt)
}

// leaseTakenAt returns when x's lease was taken: when its attempt began, or resumed. An
// execution whose record does not carry its latest attempt (written by an earlier build)
// reads as leased from the start of time.
func leaseTakenAt(x *fftype.Execution) time.Time {
	a := x.Attempt
	switch {
	case a == nil:
		return time.Time{}
	case a.ResumedAt.After(a.CreatedAt):
		return a.ResumedAt
	}
	return a.CreatedAt
}

// expireLeasesOf expires the leases of one shard held by the instance: it finds them with a
// read of the shard's lease queue, then expires them in one unit that checks each again.
func (e *Engine) expireLeasesOf(ctx context.Context, shard int, h leaseHolder, why string) (int, error) {
	var ids []fftype.ExecutionID
	err := e.store.View(ctx, shard, func(tx ffstore.ReadTx) error {
		ids = ids[:0]
		var after *ffstore.QueueItem
		for {
			items, err := tx.Range(queueLease, after, ffstore.MaxScore, leaseScanBatch)
			if err != nil || len(items) == 0 {
				return err
			}
			if err := prefetchExecs(tx, items); err != nil {
				return err
			}
			for _, it := range items {
				x, err := getExec(tx, fftype.ExecutionID(it.Member))
				if fftype.CodeOf(err) == fftype.CodeExecutionNotFound {
					continue
				}
				if err != nil {
					return err
				}
				if h.holds(x) {
					ids = append(ids, x.ID)
				}
			}
			after = &items[len(items)-1]
		}
	})
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	n := 0
	err = e.update(ctx, shard, func(tx ffstore.Tx) error {
		n = 0
		now := e.now()
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = execKey(id)
		}
		if err := tx.Prefetch(keys...); err != nil {
			return err
		}
		for _, id := range ids {
			x, err := getExec(tx, id)
			if fftype.CodeOf(err) == fftype.CodeExecutionNotFound {
				continue
			}
			if err != nil {
				return err
			}
			if !h.holds(x) {
				continue // finished or lost meanwhile
			}
			if err := e.loseLease(tx, x, placementOf(x), fftype.LeaseEndExpired, why, now); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
