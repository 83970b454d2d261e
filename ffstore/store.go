// Package ffstore is the contract between the engine and its stores.
//
// A store persists engine state and decides nothing: every rule about executions lives in
// the engine, which reads typed records, decides, and hands the store one batch of writes.
// The contract is shaped only by the engine's needs and is not stable: do not implement
// it outside this module. One conformance suite (package ffstoretest) runs the complete
// behaviour of the system against every store.
//
// # Units
//
// [Store.Update] runs a unit: an atomic read-modify-write within one shard. Everything a
// unit read — records, queue ranges and popped items — is still true when it commits
// (row locks, a single writer, or per-key versions), so units never write on stale reads.
// If the store cannot guarantee that, it aborts the unit and returns an error matching
// [fftype.ErrStoreConflict]; nothing is written and the engine retries.
//
// # Keys
//
// Record keys and queue names are opaque strings to the store. By convention a key that
// belongs to one execution has the form "<kind>:<execution id>" or
// "<kind>:<execution id>/<suffix>", and queue members are execution ids, so a store (the
// in-memory one does) can check that a unit touches only its own shard.
package ffstore

import (
	"context"
	"math"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// MaxScore is the largest queue score; PopDue and Range with it take every item.
const MaxScore = math.MaxInt64

// Store persists engine state. All methods are safe for concurrent use.
type Store interface {
	// Shards returns the shard count, fixed when the store was first created. Shards are
	// numbered 0 to Shards()-1.
	Shards() int

	// Update runs fn as one atomic unit against one shard. fn's reads see the shard's state
	// plus the unit's own record writes; its writes are applied together when fn returns
	// nil, or not at all. If fn returns an error, Update returns it unchanged and writes
	// nothing. A unit that cannot commit because something it read changed returns an error
	// matching fftype.ErrStoreConflict. fn must not retain tx after it returns. fn may be
	// called more than once for one Update (a store may roll back and re-run a batch of
	// units): it must re-read what it depends on and have no effect outside tx. A store
	// that validates reads at commit may answer a conflict instead of fn's error when what
	// fn read had changed. An Update that returns an unavailable error may or may not have
	// committed (a lost reply): the engine's fences and idempotent replays cover that.
	//
	// What a unit read still holds when it commits, within two limits that the engine's
	// use keeps to: a record read as missing is checked only if the unit then creates it
	// (the engine acts on a record's absence only by creating the record), and a Range
	// is a hint: checked at most for the items it returned, not for items that entered
	// its range since, and on Postgres not at all (the engine ranges inside a unit only
	// for hints it checks again). Postgres cannot lock what does not exist (nor lock a
	// Range's items without deadlocking against SKIP LOCKED pops), and Redis does not
	// lock ranges.
	Update(ctx context.Context, shard int, fn func(tx Tx) error) error

	// View runs fn against a consistent read-only snapshot of one shard. fn may be called
	// more than once (a store without snapshots re-runs it when a read changed meanwhile;
	// such a store checks a Range as Update does, so a View that pages through a queue
	// while it changes may miss an item that moved behind its position: the engine pages
	// that way only where nothing moves, as in creation order, or for approximate counts).
	View(ctx context.Context, shard int, fn func(tx ReadTx) error) error

	// QueueHeads returns the first item (lowest score, then lowest member) of every
	// non-empty queue, on any shard, whose name starts with one of prefixes. The result is
	// a hint: by the time the caller acts on it another unit may have taken the item, so
	// callers re-check inside a unit. Order of the result is unspecified.
	QueueHeads(ctx context.Context, prefixes []string) ([]QueueHead, error)

	// ReadEvents returns up to limit events of one shard with Seq greater than after, in
	// Seq order. If events after `after` were trimmed (after is below the shard's trim
	// point), it returns an error matching fftype.ErrCursorExpired instead.
	ReadEvents(ctx context.Context, shard int, after uint64, limit int) ([]fftype.Event, error)

	// EventBounds returns the trim point of one shard's log (events up to it are gone) and
	// the Seq of its last event (0 when none was ever appended). Events trimmed..last
	// exclusive of trimmed are readable.
	EventBounds(ctx context.Context, shard int) (trimmed, last uint64, err error)

	// TrimEvents deletes the events of one shard with Seq at most through and raises the
	// shard's trim point to through (it never lowers it; a through beyond the last Seq
	// means the last Seq). The sequence continues where it was: the next append still gets
	// the next number.
	TrimEvents(ctx context.Context, shard int, through uint64) error

	// Now returns the store's clock. The engine's production clock samples it about once
	// a second; transitions never call it directly. It may be called while units are
	// running (even from inside one), so it must not wait for anything a unit holds, such
	// as a pooled connection.
	Now(ctx context.Context) (time.Time, error)

	// Close releases the store's resources. Calls after Close fail.
	Close() error
}

// ChangeNotifier is an optional ability of a store: Changes returns a channel that
// receives a value soon after any unit commits to the store, from this process or (where
// the store can tell) another one. Values are coalesced hints that something may have
// changed, never data, and may be spurious. The channel is closed when ctx ends. Waiting
// on it must not hold a transaction or a pooled connection. Stores without it are polled.
type ChangeNotifier interface {
	Changes(ctx context.Context) <-chan struct{}
}

// UnitMerger is an optional property of a store: each of its units costs round trips
// and a commit of its own, which concurrent units do not share (Postgres: a transaction
// each; Redis: a read and a function call each, whose per-call work — the commit
// counter, the wake-up, the head of every queue written — pipelining does not spread).
// The engine then merges concurrent small operations on one shard (those of lease
// holders) into one unit. Stores that already share that cost between concurrent
// units by a group commit (SQLite), or that have none (memory), do not have it.
type UnitMerger interface {
	// MergeUnits marks the property; it does nothing.
	MergeUnits()
}

// PopFetcher is an optional ability of a unit's Tx: PopDueFetch is PopDue followed by a
// Prefetch of the records "<kind>:<member>", for every member popped and each of kinds
// (queue members are execution ids, and record keys follow the convention above), in
// fewer round trips than the two calls take. The records are read as Prefetch reads them.
type PopFetcher interface {
	PopDueFetch(queue string, maxScore int64, n int, kinds ...string) ([]QueueItem, error)
}

// ReadTx is the read side of a unit.
type ReadTx interface {
	// Prefetch loads the given keys in one round trip, so that later Gets of them are
	// served without another. It is an optimisation: Get works without it.
	Prefetch(keys ...string) error

	// Get returns the value stored under key and whether it exists. The caller must not
	// change value while the unit runs; once the unit has ended it is the caller's. A
	// store may hand out the buffer it read the value into (to every Get of the key in
	// the unit), but none it uses after the unit: a cache shared between units hands out
	// copies.
	Get(key string) (value []byte, ok bool, err error)

	// Range returns up to n items of queue with score at most maxScore, in (score, member)
	// order, starting strictly after the item after (from the beginning when after is nil),
	// less the items this unit popped. In a View it reflects the View's snapshot; in a
	// unit, the committed queue, which on Postgres is read anew by each call (so two pages
	// may see a change committed between them).
	Range(queue string, after *QueueItem, maxScore int64, n int) ([]QueueItem, error)
}

// Tx is a unit: reads plus one batch of writes. Writes are buffered or applied in place as
// the store prefers, but become visible to other units only when the unit commits.
type Tx interface {
	ReadTx

	// Put stores value under key, replacing any previous value. The store keeps value;
	// the caller must not change it afterwards.
	Put(key string, value []byte)

	// Delete removes key; deleting a missing key is not an error.
	Delete(key string)

	// QueueAdd puts member into queue with score, replacing its score if present.
	QueueAdd(queue, member string, score int64)

	// QueueRemove takes member out of queue; removing a missing member is not an error.
	QueueRemove(queue, member string)

	// PopDue removes and returns up to n items of queue with score at most maxScore, in
	// (score, member) order. Items another unit is popping concurrently are skipped rather
	// than waited for. If the unit does not commit, the items stay in the queue.
	// The engine never reads a queue with Range or PopDue after writing to it in the same
	// unit, so stores need not merge a unit's queue writes into its queue reads.
	PopDue(queue string, maxScore int64, n int) ([]QueueItem, error)

	// AppendEvent appends ev to the shard's event log. The store assigns ev.Seq and
	// ev.Shard at commit: Seq is the next number of the shard's gap-free sequence.
	AppendEvent(ev fftype.Event)
}

// QueueItem is one member of a queue.
type QueueItem struct {
	Member string
	Score  int64
}

// QueueHead is the first item of one queue on one shard.
type QueueHead struct {
	Shard int
	Queue string
	Item  QueueItem
}

// Less reports whether a sorts before b in queue order.
func (a QueueItem) Less(b QueueItem) bool {
	return a.Score < b.Score || a.Score == b.Score && a.Member < b.Member
}
