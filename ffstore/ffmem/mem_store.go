// Package ffmem is an in-memory [ffstore.Store], for tests, examples and `--store mem:`.
//
// Each shard has one mutex, held for the whole of a unit ([Store.Update]) or snapshot
// ([Store.View]), so units on one shard run one at a time and never conflict; units on
// different shards run in parallel. A unit writes in place and keeps an undo log, which
// it replays if fn returns an error or panics, so a failed unit leaves nothing behind.
// Nothing survives the process.
//
// The store checks the key convention of package ffstore: a unit on shard s that touches
// a record key or queue member belonging to an execution on another shard panics, naming
// both shards. That is a bug in the engine, and the panic makes tests find it.
//
// Because a unit holds its shard's lock, fn must not call the store's methods other than
// through tx: a call that needs the unit's shard (or every shard) deadlocks.
package ffmem

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// DefaultShards is the shard count of a store created without Options.Shards.
const DefaultShards = 16

// Options configures a [Store]. The zero value, like a nil *Options, is the default.
type Options struct {
	// Shards is the shard count, 1 to [fftype.MaxShards]. 0 means [DefaultShards].
	Shards int
}

func (o *Options) validate() error {
	if o.Shards < 0 || o.Shards > fftype.MaxShards {
		return fmt.Errorf("ffmem: Options.Shards is %d, want 0 (default) or 1 to %d", o.Shards, fftype.MaxShards)
	}
	return nil
}

// Store is an in-memory [ffstore.Store]. All methods are safe for concurrent use. Create
// one with [New]; the zero value is not usable.
type Store struct {
	shards    []*shard
	closed    atomic.Bool
	conflicts ffstore.ConflictCounter // commits still to fail, see InjectConflicts
	changes   ffstore.Notifier
}

var (
	_ ffstore.Store          = (*Store)(nil)
	_ ffstore.ChangeNotifier = (*Store)(nil)
)

// shard is the state of one shard. mu guards every other field.
type shard struct {
	mu      sync.Mutex
	index   int
	records map[string][]byte
	queues  map[string]*queue
	names   btree[queueName] // names of the non-empty queues, for QueueHeads
	events  []fftype.Event   // events[i].Seq == trimmed+i+1
	trimmed uint64           // events up to this Seq were trimmed
}

// queue is an ordered set of members by (score, member), with each member's score.
type queue struct {
	scores map[string]int64
	items  btree[ffstore.QueueItem]
}

// queueName orders queue names bytewise.
type queueName string

// Less reports whether a sorts before b.
func (a queueName) Less(b queueName) bool { return a < b }

// New returns an empty store. opts may be nil. Panics if opts.Shards is negative or above
// [fftype.MaxShards].
func New(opts *Options) *Store {
	if opts == nil {
		opts = &Options{}
	}
	if err := opts.validate(); err != nil {
		panic(err.Error())
	}
	n := opts.Shards
	if n == 0 {
		n = DefaultShards
	}
	s := &Store{shards: make([]*shard, n)}
	for i := range s.shards {
		s.shards[i] = &shard{
			index:   i,
			records: make(map[string][]byte),
			queues:  make(map[string]*queue),
		}
	}
	return s
}

// InjectConflicts makes the next n unit commits, on any shard, fail with an error matching
// [fftype.ErrStoreConflict] after fn has run successfully; those units write nothing.
// Calls add up; n <= 0 adds nothing. Units whose fn returns an error do not count. It is
// the store's ffstoretest.ConflictInjector ability, for testing the engine's retries.
func (s *Store) InjectConflicts(n int) { s.conflicts.Inject(n) }

// Shards returns the shard count.
func (s *Store) Shards() int { return len(s.shards) }

func errClosed() error { return ffstore.Closed("ffmem") }

// lookup checks a call's arguments and returns the shard.
func (s *Store) lookup(ctx context.Context, shard int) (*shard, error) {
	if s.closed.Load() {
		return nil, errClosed()
	}
	if shard < 0 || shard >= len(s.shards) {
		return nil, fftype.Validationf(fftype.CodeShardOutOfRange, "shard %d is out of range: the store has shards 0 to %d", shard, len(s.shards)-1)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.shards[shard], nil
}

// locked re-checks, once the shard's lock is held, what may have changed while waiting
// for it.
func (s *Store) locked(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed()
	}
	return ctx.Err()
}

// Update runs fn as one unit on shard, holding the shard's lock throughout. If fn returns
// an error or panics, every write of the unit is undone and the error (or panic) passes
// through unchanged. Returns a validation error with code shard_out_of_range for a bad
// shard, ctx.Err() without running fn if ctx is done before fn would start (once fn runs,
// the unit commits regardless of ctx), an unavailable error after Close, and an error
// matching [fftype.ErrStoreConflict] only for an injected conflict. Panics if fn touches a record key or queue member of an execution on another shard.
func (s *Store) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	sh, err := s.lookup(ctx, shard)
	if err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if err := s.locked(ctx); err != nil {
		return err
	}
	t := &tx{sh: sh}
	committed := false
	defer func() {
		t.done = true
		if !committed {
			t.rollback()
		}
	}()
	if err := fn(t); err != nil {
		return err
	}
	if s.conflicts.Take() {
		return ffstore.Conflict("ffmem", shard)
	}
	for _, ev := range t.events {
		ev.Seq = sh.trimmed + uint64(len(sh.events)) + 1
		ev.Shard = sh.index
		sh.events = append(sh.events, ev)
	}
	committed = true
	s.changes.Notify()
	return nil
}

// View runs fn against shard, holding the shard's lock throughout, so fn sees the state
// between two units. fn's error passes through unchanged. Argument errors are as for
// Update, and the same shard check panics.
func (s *Store) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	sh, err := s.lookup(ctx, shard)
	if err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if err := s.locked(ctx); err != nil {
		return err
	}
	t := &tx{sh: sh}
	defer func() { t.done = true }()
	return fn(readTx{t})
}

// QueueHeads returns the first item of every non-empty queue whose name starts with one of
// prefixes, shard by shard in shard order and then by queue name. Each shard is read under
// its lock, one after the other, so the result is not one snapshot of the whole store.
// Queue names are kept sorted per shard, so the cost is O(log q) per prefix and shard plus
// O(log n) per queue reported; a queue matched by two prefixes is reported once.
func (s *Store) QueueHeads(ctx context.Context, prefixes []string) ([]ffstore.QueueHead, error) {
	if s.closed.Load() {
		return nil, errClosed()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prefixes = ffstore.DisjointPrefixes(prefixes)
	var heads []ffstore.QueueHead
	for _, sh := range s.shards {
		sh.mu.Lock()
		if s.closed.Load() {
			sh.mu.Unlock()
			return nil, errClosed()
		}
		for _, p := range prefixes {
			pivot := queueName(p)
			sh.names.Ascend(&pivot, true, func(name queueName) bool {
				if !strings.HasPrefix(string(name), p) {
					return false
				}
				if item, ok := sh.queues[string(name)].items.Min(); ok {
					heads = append(heads, ffstore.QueueHead{Shard: sh.index, Queue: string(name), Item: item})
				}
				return true
			})
		}
		sh.mu.Unlock()
	}
	return heads, nil
}

// ReadEvents returns up to limit events of shard with Seq greater than after, in Seq
// order; limit <= 0 returns none. The events are copies the caller may modify. Argument
// errors are as for Update.
func (s *Store) ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error) {
	sh, err := s.lookup(ctx, shard)
	if err != nil {
		return nil, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.closed.Load() {
		return nil, errClosed()
	}
	if after < sh.trimmed {
		return nil, ffstore.CursorExpired(shard, after, sh.trimmed)
	}
	after -= sh.trimmed // index into sh.events from here on
	if limit <= 0 || after >= uint64(len(sh.events)) {
		return nil, nil
	}
	end := uint64(len(sh.events))
	if uint64(limit) < end-after {
		end = after + uint64(limit)
	}
	out := slices.Clone(sh.events[after:end])
	for i := range out {
		out[i].Data = bytes.Clone(out[i].Data)
	}
	return out, nil
}

// TrimEvents deletes the events of shard up to Seq through (at most the last one) and
// raises the shard's trim point. Argument errors are as for Update.
func (s *Store) TrimEvents(ctx context.Context, shard int, through uint64) error {
	sh, err := s.lookup(ctx, shard)
	if err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.closed.Load() {
		return errClosed()
	}
	through = min(through, sh.trimmed+uint64(len(sh.events)))
	if through <= sh.trimmed {
		return nil
	}
	sh.events = slices.Clone(sh.events[through-sh.trimmed:])
	sh.trimmed = through
	return nil
}

// EventBounds returns shard's trim point and last Seq. Argument errors are as for Update.
func (s *Store) EventBounds(ctx context.Context, shard int) (trimmed, last uint64, err error) {
	sh, err := s.lookup(ctx, shard)
	if err != nil {
		return 0, 0, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.closed.Load() {
		return 0, 0, errClosed()
	}
	return sh.trimmed, sh.trimmed + uint64(len(sh.events)), nil
}

// Changes implements [ffstore.ChangeNotifier]: it wakes after every committed unit.
func (s *Store) Changes(ctx context.Context) <-chan struct{} { return s.changes.Changes(ctx) }

// Now returns time.Now(). It fails only after Close or when ctx is done.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	if s.closed.Load() {
		return time.Time{}, errClosed()
	}
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// Close drops the store's contents. It waits for running units to finish; every call
// after it, Close included, returns an unavailable error with code store_unavailable.
func (s *Store) Close() error {
	for _, sh := range s.shards {
		sh.mu.Lock()
	}
	defer func() {
		for _, sh := range s.shards {
			sh.mu.Unlock()
		}
	}()
	if s.closed.Load() {
		return errClosed()
	}
	s.closed.Store(true)
	for _, sh := range s.shards {
		sh.records, sh.queues, sh.names, sh.events = nil, nil, btree[queueName]{}, nil
	}
	return nil
}

// undoKind says what an undo entry restores.
type undoKind uint8

const (
	undoRecord undoKind = iota
	undoQueue
)

// undo restores one record or queue member to what it was before one write.
type undo struct {
	kind    undoKind
	key     string // record key or queue name
	member  string
	value   []byte
	score   int64
	existed bool
}

// tx is a unit (or, wrapped in readTx, a View) on one shard. It writes in place and logs
// how to undo each write.
type tx struct {
	sh     *shard
	undo   []undo
	events []fftype.Event
	done   bool
}

var _ ffstore.Tx = (*tx)(nil)

// readTx is the read-only face of a tx, so that a View's fn cannot assert its way to
// writes.
type readTx struct{ t *tx }

var _ ffstore.ReadTx = readTx{}

// Prefetch is [tx.Prefetch].
func (r readTx) Prefetch(keys ...string) error { return r.t.Prefetch(keys...) }

// Get is [tx.Get].
func (r readTx) Get(key string) ([]byte, bool, error) { return r.t.Get(key) }

// Range is [tx.Range].
func (r readTx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	return r.t.Range(queue, after, maxScore, n)
}

// live panics if the unit is over: fn retained tx.
func (t *tx) live() {
	if t.done {
		panic("ffmem: transaction used after its unit ended (fn must not retain tx)")
	}
}

// use panics if the unit is over or key belongs to an execution on another shard.
func (t *tx) use(what, key string, shardOf func(string) (int, bool)) {
	t.live()
	if other, ok := shardOf(key); ok && other != t.sh.index {
		panic(fmt.Sprintf("ffmem: unit on shard %d touches %s %q of an execution on shard %d", t.sh.index, what, key, other))
	}
}

// keyShard returns the shard of the execution a record key belongs to: the part of the key
// after the first ':' and before the next '/' parsed as an execution id. ok is false for a
// shard-local key.
func keyShard(key string) (shard int, ok bool) {
	i := strings.IndexByte(key, ':')
	if i < 0 {
		return 0, false
	}
	rest := key[i+1:]
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		rest = rest[:j]
	}
	return memberShard(rest)
}

// memberShard returns the shard of the execution whose id is s; ok is false if s is not an
// execution id.
func memberShard(s string) (shard int, ok bool) {
	// "s0_" and a 36-byte UUID at least; skips the costly error of most non-ids.
	if len(s) < 39 || s[0] != 's' {
		return 0, false
	}
	id, err := fftype.ParseExecutionID(s)
	if err != nil {
		return 0, false
	}
	return id.Shard(), true
}

// Prefetch does nothing but the shard check: every Get is served from memory.
func (t *tx) Prefetch(keys ...string) error {
	for _, k := range keys {
		t.use("record key", k, keyShard)
	}
	return nil
}

// Get returns a copy of the value under key, including this unit's writes.
func (t *tx) Get(key string) ([]byte, bool, error) {
	t.use("record key", key, keyShard)
	v, ok := t.sh.records[key]
	if !ok {
		return nil, false, nil
	}
	return bytes.Clone(v), true, nil
}

// Range returns up to n items of queue with score at most maxScore after the item after.
// It reflects this unit's own queue writes too, which the contract allows.
func (t *tx) Range(queue string, after *ffstore.QueueItem, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	t.live()
	q := t.sh.queues[queue]
	if q == nil || n <= 0 {
		return nil, nil
	}
	var out []ffstore.QueueItem
	q.items.Ascend(after, false, func(it ffstore.QueueItem) bool {
		if it.Score > maxScore {
			return false
		}
		out = append(out, it)
		return len(out) < n
	})
	return out, nil
}

// Put stores value under key, keeping the slice.
func (t *tx) Put(key string, value []byte) {
	t.use("record key", key, keyShard)
	t.saveRecord(key)
	t.sh.records[key] = value
}

// Delete removes key.
func (t *tx) Delete(key string) {
	t.use("record key", key, keyShard)
	if _, ok := t.sh.records[key]; ok {
		t.saveRecord(key)
		delete(t.sh.records, key)
	}
}

func (t *tx) saveRecord(key string) {
	old, existed := t.sh.records[key]
	t.undo = append(t.undo, undo{kind: undoRecord, key: key, value: old, existed: existed})
}

// QueueAdd puts member into queue with score.
func (t *tx) QueueAdd(queue, member string, score int64) {
	t.use("queue member", member, memberShard)
	q := t.sh.queues[queue]
	old, existed := int64(0), false
	if q != nil {
		old, existed = q.scores[member]
	}
	if existed && old == score {
		return
	}
	t.undo = append(t.undo, undo{kind: undoQueue, key: queue, member: member, score: old, existed: existed})
	t.sh.queueSet(queue, member, score)
}

// QueueRemove takes member out of queue.
func (t *tx) QueueRemove(queue, member string) {
	t.use("queue member", member, memberShard)
	q := t.sh.queues[queue]
	if q == nil {
		return
	}
	old, ok := q.scores[member]
	if !ok {
		return
	}
	t.undo = append(t.undo, undo{kind: undoQueue, key: queue, member: member, score: old, existed: true})
	t.sh.queueDelete(queue, member)
}

// PopDue removes and returns up to n items of queue with score at most maxScore.
func (t *tx) PopDue(queue string, maxScore int64, n int) ([]ffstore.QueueItem, error) {
	t.live()
	q := t.sh.queues[queue]
	if q == nil || n <= 0 {
		return nil, nil
	}
	var out []ffstore.QueueItem
	for len(out) < n {
		it, ok := q.items.Min()
		if !ok || it.Score > maxScore {
			break
		}
		q.items.DeleteMin()
		delete(q.scores, it.Member)
		t.undo = append(t.undo, undo{kind: undoQueue, key: queue, member: it.Member, score: it.Score, existed: true})
		out = append(out, it)
	}
	if q.items.Len() == 0 {
		t.sh.dropQueue(queue)
	}
	return out, nil
}

// AppendEvent buffers ev; Update numbers and appends it at commit.
func (t *tx) AppendEvent(ev fftype.Event) {
	t.live()
	t.events = append(t.events, ev)
}

// rollback undoes the unit's writes, newest first.
func (t *tx) rollback() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		u := &t.undo[i]
		switch {
		case u.kind == undoRecord && u.existed:
			t.sh.records[u.key] = u.value
		case u.kind == undoRecord:
			delete(t.sh.records, u.key)
		case u.existed:
			t.sh.queueSet(u.key, u.member, u.score)
		default:
			t.sh.queueDelete(u.key, u.member)
		}
	}
	t.undo, t.events = nil, nil
}

// queueSet puts member into queue with score, creating the queue if needed.
func (sh *shard) queueSet(name, member string, score int64) {
	q := sh.queues[name]
	if q == nil {
		q = &queue{scores: make(map[string]int64)}
		sh.queues[name] = q
		sh.names.Insert(queueName(name))
	}
	if old, ok := q.scores[member]; ok {
		q.items.Delete(ffstore.QueueItem{Member: member, Score: old})
	}
	q.scores[member] = score
	q.items.Insert(ffstore.QueueItem{Member: member, Score: score})
}

// queueDelete takes member out of queue, dropping the queue once it is empty.
func (sh *shard) queueDelete(name, member string) {
	q := sh.queues[name]
	if q == nil {
		return
	}
	if old, ok := q.scores[member]; ok {
		q.items.Delete(ffstore.QueueItem{Member: member, Score: old})
		delete(q.scores, member)
	}
	if q.items.Len() == 0 {
		sh.dropQueue(name)
	}
}

func (sh *shard) dropQueue(name string) {
	delete(sh.queues, name)
	sh.names.Delete(queueName(name))
}
