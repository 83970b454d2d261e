package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Durable consumers and shard leases.
//
// A durable consumer processes every event of the log once per consumer name, however
// many engine replicas run it: each (consumer, shard) pair has a lease record on its
// shard holding the owner, the lease expiry and the consumer's cursor in that shard's log.
// Replicas announce themselves on shard 0; each takes a fair share of the shards' leases,
// renews them, hands back extras when more replicas arrive, and takes over the shards of a
// replica that handed them back as it stopped (at once) or whose leases expired. The timer
// loop uses the same leases, under timerLeases.

// timerLeases is the name the timer loop's shard leases go by: no consumer can be called
// so, so no consumer shares them.
const timerLeases = "#timers"

// DefaultConsumerLeaseTTL is how long a shard lease lasts without renewal.
const DefaultConsumerLeaseTTL = 15 * time.Second

// queueCursors holds, per shard, each durable consumer's cursor as its score, so retention
// reads the slowest one as the queue's head.
const queueCursors = "c" + sep + "cursors"

func membersQueue(name string) string  { return "c" + sep + "members" + sep + name }
func shardLeaseKey(name string) string { return "slease:~" + name }

// validConsumerName checks a consumer name: 1 to 64 of [a-z0-9_.-], and not an execution
// id. The name is a member of every shard's queueCursors, and by ffstore's convention a
// member that parses as an execution id is that execution, which lives on one shard (the
// in-memory store panics on it elsewhere). Refusing such names, rather than prefixing the
// member, leaves the members stores already hold as they are.
func validConsumerName(name string) error {
	ok := name != "" && len(name) <= 64
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
	}
	if !ok {
		return fftype.Validationf(fftype.CodeInvalidInput, "consumer name %q: 1 to 64 of [a-z0-9_.-]", name)
	}
	if _, err := fftype.ParseExecutionID(name); err == nil {
		return fftype.Validationf(fftype.CodeInvalidInput, "consumer name %q: must not be an execution id", name)
	}
	return nil
}

// shardLease is the stored lease of one (consumer, shard).
type shardLease struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
	Cursor  uint64    `json:"cursor"`
}

// leaser balances the shard leases of one consumer name for one replica.
type leaser struct {
	e        *Engine
	name     string
	instance string
	ttl      time.Duration
	held     map[int]time.Time // shard → lease expiry
	unsure   map[int]bool      // shards whose last visit failed: the store may name this replica
	balanced time.Time         // when balance last ended
	live     int               // the live replicas balance counted
	counted  time.Time         // when the live replicas were last counted
	putOff   bool              // a count was put off for replicaCountGap
	miscount bool              // the last count outside balance failed
	cursors  map[int]uint64    // shard → cursor as of the lease's last read (consumers only)
	tracks   bool              // record cursors (durable consumers) or not (timers)
	// ended, if set, is called with each shard whose lease the replica stops holding, so
	// that what its user keeps per shard ends with the lease it was kept under.
	ended func(shard int)
}

// replicaCountGap is the least time between two counts of the live replicas outside
// balance. Each costs a read of shard 0, and a loop woken by every commit to a busy store
// would otherwise read it on every commit.
const replicaCountGap = 100 * time.Millisecond

func (e *Engine) newLeaser(name string, ttl time.Duration, tracks bool) *leaser {
	if ttl <= 0 {
		ttl = DefaultConsumerLeaseTTL
	}
	return &leaser{e: e, name: name, instance: fftype.NewUUID(), ttl: ttl,
		held: map[int]time.Time{}, unsure: map[int]bool{}, cursors: map[int]uint64{}, tracks: tracks}
}

// balanceIfDue runs balance when a third of the lease TTL has passed since the last one,
// or as soon as the number of live replicas has changed: a replica that stops hands its
// leases back before it leaves the member list, so the others, counting one replica less,
// take its shards over at once; when one joins, the others hand back at once the leases
// beyond their new share (it takes them at its next balance). The replicas are counted at
// most every replicaCountGap.
func (l *leaser) balanceIfDue(ctx context.Context) error {
	if l.balanceDue() {
		return l.balance(ctx)
	}
	now := l.e.now()
	// A count put off here, after a wake-up, may miss a replica leaving; putOff makes the
	// loop look again soon.
	l.putOff = now.Before(l.counted.Add(replicaCountGap))
	if l.putOff {
		return nil
	}
	l.counted = now
	if live, ok := l.recount(ctx, now); ok && live != l.live {
		return l.balance(ctx)
	}
	return nil
}

// recount counts the live replicas outside balance, reporting false if it could not. The
// count only hastens a balance, which comes on schedule anyway, so a failure is logged
// rather than returned: as a warning for the first of a run of them, then at debug level.
func (l *leaser) recount(ctx context.Context, now time.Time) (int, bool) {
	live := 0
	err := l.e.store.View(ctx, 0, func(tx ffstore.ReadTx) error {
		var err error
		live, err = l.countLive(tx, now)
		return err
	})
	if err != nil && ctx.Err() == nil {
		level := slog.LevelDebug
		if !l.miscount {
			level = slog.LevelWarn
		}
		l.e.log.Log(ctx, level, "counting the live replicas failed; balancing on schedule", "leases", l.name, "err", err)
	}
	l.miscount = err != nil
	return live, err == nil
}

// balanceOnSchedule runs balance if a third of the lease TTL has passed since the last
// one, without counting the replicas: a loop calls it between its batches, where a count
// would only repeat the one it made when it woke.
func (l *leaser) balanceOnSchedule(ctx context.Context) error {
	if l.balanceDue() {
		return l.balance(ctx)
	}
	return nil
}

// balanceDue reports whether a third of the lease TTL has passed since balance last ended
// (or it never ran). Balance renews every lease the replica holds, so until then none of
// them is due for renewal.
func (l *leaser) balanceDue() bool {
	return l.balanced.IsZero() || !l.e.now().Before(l.balanced.Add(l.ttl/3))
}

// idleWait returns how long a loop with nothing to do may wait before it calls
// balanceIfDue again: poll, but no longer than a third of the lease TTL, nor than
// replicaCountGap while a count is put off, so that a replica leaving during the gap is
// noticed although no further change wakes the loop.
func (l *leaser) idleWait(poll time.Duration) time.Duration {
	if l.putOff {
		poll = min(poll, replicaCountGap)
	}
	return min(poll, l.ttl/3)
}

// countLive counts the live replicas in the member list, this one included.
func (l *leaser) countLive(tx ffstore.ReadTx, now time.Time) (int, error) {
	members, err := tx.Range(membersQueue(l.name), nil, ffstore.MaxScore, fftype.MaxShards+1)
	if err != nil {
		return 0, err
	}
	live := 1
	for _, m := range members {
		if m.Member != l.instance && m.Score > ms(now) {
			live++
		}
	}
	return live, nil
}

// balance announces the replica, counts the live ones, and renews, takes or hands back
// shard leases so that this replica holds its fair share. A shard whose unit fails stops
// only itself: balance goes on to the others and returns the failures joined, and the
// failed shard is visited again at the next balance. Shard 0 is no exception: a replica
// that cannot announce itself there cannot count its share, so it renews the leases it
// holds and takes none, and announces itself at the next balance.
func (l *leaser) balance(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err // stopping: what is held stays held, for release to hand back
	}
	l.counted, l.putOff = l.e.now(), false
	shards := l.shardOrder()
	target := len(l.held) // without a count the share is unknown: keep what is held
	var failed []error
	if live, err := l.announce(ctx); err == nil {
		l.live = live
		target = (l.e.shards + live - 1) / live
	} else {
		failed = append(failed, fmt.Errorf("announcing the replica: %w", err))
		shards = slices.DeleteFunc(shards, func(s int) bool { _, ok := l.held[s]; return !ok })
	}
	for _, s := range shards {
		if ctx.Err() != nil {
			return errors.Join(append(failed, ctx.Err())...) // stopping, as above
		}
		if err := l.visit(ctx, s, target); err != nil {
			failed = append(failed, fmt.Errorf("shard %d's lease: %w", s, err))
		}
	}
	// The next balance is due a third of the TTL from now, not from the start: one over
	// many shards or slow units may take longer than that, and measured from its start it
	// would be due again at once, ending every batch before its first event. A lease is
	// renewed at the same point of each balance, so it holds while a balance takes less
	// than two thirds of the TTL less one handler call.
	l.balanced = l.e.now()
	return errors.Join(failed...)
}

// announce renews the replica's entry in the member list on shard 0, forgetting the
// replicas gone quiet, and returns how many are live, this one included.
func (l *leaser) announce(ctx context.Context) (int, error) {
	live := 1
	err := l.e.update(ctx, 0, func(tx ffstore.Tx) error {
		now := l.e.now()
		q := membersQueue(l.name)
		if _, err := tx.PopDue(q, ms(now), 1000); err != nil {
			return err
		}
		var err error
		if live, err = l.countLive(tx, now); err != nil {
			return err
		}
		tx.QueueAdd(q, l.instance, ms(now.Add(l.ttl)))
		return nil
	})
	return live, err
}

// shardOrder starts each replica at a different shard, so replicas rarely race for the
// same free lease.
func (l *leaser) shardOrder() []int {
	h := fnv.New32a()
	h.Write([]byte(l.instance))
	start := int(h.Sum32() % uint32(l.e.shards))
	out := make([]int, l.e.shards)
	for i := range out {
		out[i] = (start + i) % l.e.shards
	}
	return out
}

// visit renews, takes or hands back the lease of one shard. What the replica holds changes
// only once the unit has committed: if it fails, the replica does not count the shard as
// its own, whatever the unit meant to do.
func (l *leaser) visit(ctx context.Context, shard, target int) error {
	var start uint64 // where a brand-new consumer starts: the oldest event kept
	if _, ok := l.held[shard]; !ok && l.tracks {
		trimmed, _, err := l.e.store.EventBounds(ctx, shard)
		if err != nil {
			return err
		}
		start = trimmed
	}
	var expires time.Time // the lease's expiry if the unit keeps or takes it
	var taken bool        // the unit took the lease afresh
	var cursor uint64
	err := l.e.update(ctx, shard, func(tx ffstore.Tx) error {
		expires, taken = time.Time{}, false
		now := l.e.now()
		rec, ok, err := readShardLease(tx, l.name)
		if err != nil {
			return err
		}
		if !ok {
			rec.Cursor = start
		}
		mine := ok && rec.Owner == l.instance && now.Before(rec.Expires)
		free := !ok || !now.Before(rec.Expires)
		others := len(l.held) // leases held on other shards
		if _, ok := l.held[shard]; ok {
			others--
		}
		switch {
		case mine && others >= target:
			rec.Expires = now // hand back: free for a replica short of its share
		case mine:
			rec.Expires = now.Add(l.ttl)
			expires = rec.Expires
		case free && others < target:
			rec.Owner, rec.Expires = l.instance, now.Add(l.ttl)
			expires, taken = rec.Expires, true
		default:
			return nil // someone else's, or ours but lapsed
		}
		cursor = rec.Cursor
		putJSON(tx, shardLeaseKey(l.name), rec)
		if l.tracks {
			tx.QueueAdd(queueCursors, l.name, int64(rec.Cursor))
		}
		return nil
	})
	if err != nil {
		// The unit may have committed (a lost reply, a stop while it did): the store may
		// name this replica as the holder. The shard is not worked until a visit
		// succeeds, but release hands it back.
		l.unsure[shard] = true
		if ctx.Err() != nil {
			return err // stopping: a lease held stays held, for release to hand back
		}
	} else {
		delete(l.unsure, shard)
	}
	if err != nil || expires.IsZero() || taken { // a lease taken afresh ends any held before
		l.drop(shard)
	}
	if err != nil || expires.IsZero() {
		return err
	}
	l.held[shard] = expires
	l.cursors[shard] = cursor
	return nil
}

// drop forgets the replica's lease of shard, if it holds one, and tells ended.
func (l *leaser) drop(shard int) {
	if _, ok := l.held[shard]; !ok {
		return
	}
	delete(l.held, shard)
	delete(l.cursors, shard)
	if l.ended != nil {
		l.ended(shard)
	}
}

func readShardLease(tx ffstore.ReadTx, name string) (shardLease, bool, error) {
	var rec shardLease
	b, ok, err := tx.Get(shardLeaseKey(name))
	if err != nil || !ok {
		return rec, false, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, corrupt("shard lease", err)
	}
	return rec, true, nil
}

// holds reports whether the replica holds shard's lease by its own clock.
func (l *leaser) holds(shard int) bool {
	exp, ok := l.held[shard]
	return ok && l.e.now().Before(exp)
}

// heldShards returns the shards the replica holds, in order.
func (l *leaser) heldShards() []int {
	var out []int
	for s := range l.held {
		if l.holds(s) {
			out = append(out, s)
		}
	}
	sort.Ints(out)
	return out
}

// commit moves a consumer's cursor on shard from `from`, where the replica read, to
// `cursor`, if the replica still holds the lease and the stored cursor is still `from`,
// and renews the lease: a replica that stores its progress keeps the shard however long
// its batch took. A stored cursor that is not `from` — the store came back from a crash
// without its last writes, taking the events after it and the cursor's advance with them,
// so the events appended since carry those numbers again — is where the replica reads next.
//
// The unit goes on if ctx ends meanwhile, for up to a lease TTL (by then the lease has
// lapsed, and the cursor could not be stored anyway): a replica stopped cleanly stores the
// progress it made, so the next one does not handle those events again.
func (l *leaser) commit(ctx context.Context, shard int, from, cursor uint64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.ttl)
	defer cancel()
	var expires time.Time // the renewed lease's expiry; zero if the lease was lost
	stored := cursor
	err := l.e.update(ctx, shard, func(tx ffstore.Tx) error {
		expires = time.Time{}
		now := l.e.now()
		rec, ok, err := readShardLease(tx, l.name)
		if err != nil {
			return err
		}
		if !ok || rec.Owner != l.instance || !now.Before(rec.Expires) {
			return nil
		}
		if rec.Cursor == from {
			rec.Cursor = cursor
			tx.QueueAdd(queueCursors, l.name, int64(cursor))
		}
		stored = rec.Cursor
		rec.Expires = now.Add(l.ttl)
		expires = rec.Expires
		putJSON(tx, shardLeaseKey(l.name), rec)
		return nil
	})
	if err != nil {
		return err
	}
	if expires.IsZero() {
		l.drop(shard)
		return nil
	}
	if stored != cursor {
		l.e.log.Warn("durable consumer's stored cursor is not where it read from (the store lost its last writes?); reading again from the stored one",
			"consumer", l.name, "shard", shard, "read_from", from, "stored", stored)
	}
	l.held[shard] = expires
	l.cursors[shard] = stored
	return nil
}

// release hands back every lease the replica holds, leaves the member list (the others,
// seeing a replica leave, balance at once and find its leases free), and then hands back
// the leases it may hold in the store (a visit of the shard failed), trying no longer
// than a lease lasts: by then the leases have lapsed by themselves, so a store that
// stopped answering does not hold up the replica's exit.
func (l *leaser) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.ttl)
	defer cancel()
	handBack := func(s int) {
		_ = l.e.update(ctx, s, func(tx ffstore.Tx) error {
			rec, ok, err := readShardLease(tx, l.name)
			if err != nil || !ok || rec.Owner != l.instance {
				return err
			}
			rec.Expires = l.e.now()
			putJSON(tx, shardLeaseKey(l.name), rec)
			return nil
		})
	}
	for s := range l.held {
		handBack(s)
		l.drop(s)
	}
	_ = l.e.update(ctx, 0, func(tx ffstore.Tx) error {
		tx.QueueRemove(membersQueue(l.name), l.instance)
		return nil
	})
	// Last, as a shard whose visit failed may not answer now either.
	for s := range l.unsure {
		handBack(s)
	}
	clear(l.unsure)
}

// ConsumerConfig describes a durable consumer.
type ConsumerConfig struct {
	// Name identifies the consumer: replicas running the same name share its work and
	// its cursors. 1 to 64 of [a-z0-9_.-], and not an execution id ("s<shard>_<uuid>").
	Name string
	// Filter selects the events Handler sees; the cursor passes the others too.
	Filter fftype.EventFilter
	// Handler processes one event. It runs at least once per event (again after a crash
	// or a lost lease before the cursor was stored), so it must be idempotent. An error
	// stops the shard's batch, not the other shards'; the event is offered again after a
	// back-off of 100ms, doubling with each failure in a row up to 30s (a replica that
	// stops holding the shard forgets its run of failures on it).
	Handler func(ctx context.Context, ev fftype.Event) error
	// LeaseTTL is how long a replica's shard leases last without renewal; a dead
	// replica's shards move to the others after it. 0 means 15s. One call of Handler and
	// one balance (a store unit per shard) must take less than two thirds of it together:
	// a replica renews all its leases between batches, a third of it after its last
	// renewal ended, ending a batch for it, so a longer call may outlast the lease, and
	// the event is handled again.
	LeaseTTL time.Duration
}

// Consumer is one replica of a durable consumer. Run it with Run, or drive it a step at a
// time with Step.
type Consumer struct {
	e      *Engine
	cfg    ConsumerConfig
	leases *leaser
	turn   int // the shard the next step starts at, or the first held after it
	// failing holds the shards whose last batch failed, until one succeeds or the replica
	// stops holding the shard: a run of failures belongs to the lease it happened under.
	failing map[int]shardFailure
}

// shardFailure is a shard whose last batch failed: how many batches in a row did, and when
// and after what back-off it is tried again.
type shardFailure struct {
	count   int
	wait    time.Duration
	retryAt time.Time
}

// How long a shard whose batch failed waits before it is tried again: the back-off doubles
// from the first to the last with each failure in a row.
const (
	shardRetryMin = 100 * time.Millisecond
	shardRetryMax = 30 * time.Second
)

// NewConsumer returns a replica of the durable consumer cfg.Name.
func (e *Engine) NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if err := validConsumerName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Handler == nil {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "consumer %q has no handler", cfg.Name)
	}
	if err := validateFilter(cfg.Filter); err != nil {
		return nil, err
	}
	if cfg.LeaseTTL < 0 {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "consumer lease ttl must not be negative")
	}
	c := &Consumer{e: e, cfg: cfg, leases: e.newLeaser(cfg.Name, cfg.LeaseTTL, true),
		failing: map[int]shardFailure{}}
	c.leases.ended = func(shard int) { delete(c.failing, shard) }
	return c, nil
}

// Shards returns the shards whose leases this replica holds.
func (c *Consumer) Shards() []int { return c.leases.heldShards() }

// Step handles one batch of events on each held shard, starting each step at the shard
// after the one the last step started at. Before each batch it renews and balances the
// leases if a third of their TTL has passed since it last finished, and a batch ends early
// once it has: however slow the handler, no lease lapses while other shards' batches run.
// A batch ends too once ctx has, storing the cursor past the events it handled.
// It returns how many events it handled (matching or not) and the errors of the shards
// that failed, joined: a shard that fails (its handler or its store) stops only its own
// batch, so one event the handler keeps failing on does not hold back the other shards,
// and it is skipped until its back-off (see [ConsumerConfig.Handler]) has passed. The
// first failure of a shard in a row is logged as a warning, the others at debug level.
// The errors of a balance are returned too: a shard whose lease could not be renewed or
// taken is left out until the next balance, and the step goes on with the others; a
// replica that could not announce itself on shard 0 renews the leases it holds, takes no
// others, and goes on with them.
func (c *Consumer) Step(ctx context.Context) (int, error) {
	n, failed, err := c.step(ctx)
	return n, errors.Join(append(failed, err)...)
}

// step is Step, with the errors of the shards that failed apart from the balance's.
func (c *Consumer) step(ctx context.Context) (total int, failed []error, err error) {
	err = c.leases.balanceIfDue(ctx)
	for _, s := range c.shardsInTurn() {
		if ctx.Err() != nil {
			break // stopping: the other shards' batches would end before their first event
		}
		err = errors.Join(err, c.leases.balanceOnSchedule(ctx)) // the batches before took a while
		if !c.leases.holds(s) || c.e.now().Before(c.failing[s].retryAt) {
			continue // handed back or lost in that balance, or backing off
		}
		n, err := c.processShard(ctx, s)
		total += n
		c.settle(ctx, s, err)
		if err != nil {
			failed = append(failed, fmt.Errorf("shard %d: %w", s, err))
		}
	}
	return total, failed, err
}

// settle records how shard's batch ended: a failure backs the shard off, and a success
// ends its run of failures. A batch cut short because ctx ended is neither.
func (c *Consumer) settle(ctx context.Context, shard int, err error) {
	if ctx.Err() != nil {
		return
	}
	f, was := c.failing[shard]
	if err == nil {
		if was {
			delete(c.failing, shard)
			c.e.log.Info("durable consumer's shard recovered", "consumer", c.cfg.Name, "shard", shard, "failures", f.count)
		}
		return
	}
	level := slog.LevelDebug
	f.count++
	f.wait = min(2*f.wait, shardRetryMax)
	if !was { // a downstream that is down fails every retry: warn once, not at each
		level, f.wait = slog.LevelWarn, shardRetryMin
	}
	f.retryAt = c.e.now().Add(f.wait)
	c.failing[shard] = f
	c.e.log.Log(ctx, level, "durable consumer's shard failed; retrying after a back-off",
		"consumer", c.cfg.Name, "shard", shard, "err", err, "retry_in", f.wait, "failures", f.count)
}

// idleWait returns how long Run may wait with nothing to do: as long as the leases allow,
// but no longer than until a failing shard's back-off ends.
func (c *Consumer) idleWait() time.Duration {
	wait := c.leases.idleWait(c.e.cfg.TimerPollInterval)
	now := c.e.now()
	for _, f := range c.failing {
		if f.retryAt.After(now) {
			wait = min(wait, f.retryAt.Sub(now))
		}
	}
	return wait
}

// shardsInTurn returns the held shards in order, from the first at or after c.turn, and
// moves the turn on past it, so that no shard always has its batch first.
func (c *Consumer) shardsInTurn() []int {
	held := c.leases.heldShards()
	i, _ := slices.BinarySearch(held, c.turn)
	if i == len(held) {
		i = 0
	}
	out := slices.Concat(held[i:], held[:i])
	if len(out) > 0 {
		c.turn = out[0] + 1
	}
	return out
}

func (c *Consumer) processShard(ctx context.Context, shard int) (int, error) {
	cursor := c.leases.cursors[shard]
	evs, err := c.e.store.ReadEvents(ctx, shard, cursor, eventBatch)
	if errors.Is(err, fftype.ErrCursorExpired) {
		// Only the maximum age deletes events a consumer has not passed.
		trimmed, _, berr := c.e.store.EventBounds(ctx, shard)
		if berr != nil {
			return 0, berr
		}
		c.e.log.Warn("durable consumer fell behind the event log's maximum age; skipping to the oldest event kept",
			"consumer", c.cfg.Name, "shard", shard, "cursor", cursor, "trimmed", trimmed)
		return 0, c.leases.commit(ctx, shard, cursor, trimmed)
	}
	if err != nil {
		return 0, err
	}
	done := cursor
	var herr error
	for i := range evs {
		// The batch ends once the leases are due for renewal: its cursor is stored, and the
		// balance before the next batch renews them all, so a slow handler keeps both the
		// leases and the progress made under them. It ends too once ctx has: the replica
		// is stopping, and stores what it has done for the next one.
		if !c.leases.holds(shard) || c.leases.balanceDue() || ctx.Err() != nil {
			break
		}
		if c.cfg.Filter.Match(&evs[i]) {
			if herr = c.cfg.Handler(ctx, evs[i]); herr != nil {
				break
			}
		}
		done = evs[i].Seq
	}
	if done != cursor {
		if err := c.leases.commit(ctx, shard, cursor, done); err != nil {
			return 0, err
		}
	}
	return int(done - cursor), herr
}

// Run steps the consumer until ctx ends, waiting for new events when idle and renewing
// its leases well before they expire. Once ctx ends it calls the handler no more, stores
// the cursor past the events handled (a call that returns ctx's error leaves its event
// for the next replica), and hands its leases back so other replicas take over at once
// (on a store that cannot tell of changes, at their next poll): a clean stop leaves no
// event to be handled twice.
// A failing shard is retried after its back-off, and logged as Step says; Run steps
// again at once while the other shards make progress.
func (c *Consumer) Run(ctx context.Context) error {
	wake := c.e.changes(ctx)
	defer c.leases.release(context.WithoutCancel(ctx))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		n, _, err := c.step(ctx) // step logs the shards that failed
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.e.log.Warn("durable consumer could not balance its leases; retrying", "consumer", c.cfg.Name, "err", err)
		}
		if n > 0 {
			continue // more may be waiting; a failed shard waits out its back-off
		}
		timer.Reset(c.idleWait())
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-timer.C:
		}
	}
}

// Release hands back the replica's leases at once (Run does this when it returns).
func (c *Consumer) Release(ctx context.Context) { c.leases.release(ctx) }

// DeleteConsumer forgets a durable consumer: its leases and cursors go, so it no longer
// holds back the event log's retention. Replicas still running under the name register it
// again.
func (e *Engine) DeleteConsumer(ctx context.Context, name string) error {
	if err := validConsumerName(name); err != nil {
		return err
	}
	for s := 0; s < e.shards; s++ {
		if err := e.update(ctx, s, func(tx ffstore.Tx) error {
			tx.Delete(shardLeaseKey(name))
			tx.QueueRemove(queueCursors, name)
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
