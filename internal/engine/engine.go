// Package engine is the FlowFabric state machine: every rule about executions, attempts,
// leases and grants lives here, once, as Go code over typed records. Stores only store
// (package ffstore); the engine reads a unit's records, decides, and writes one batch.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Config tunes an Engine. The zero value is usable.
type Config struct {
	// Clock is the engine's time source. Nil means a clock that samples the store's clock
	// about once a second and adds the local monotonic delta.
	Clock fftype.Clock
	// Logger receives the engine's logs. Nil discards them.
	Logger *slog.Logger
	// Retention is how long terminal executions are kept before they are deleted, counted
	// from each one's end: a changed Retention applies to those already ended too. Engines
	// sharing a store should share it: each shard's executions are deleted by the Retention
	// of the engine whose timer loop holds the shard. 0 means 7 days.
	Retention time.Duration
	// MaxPayloadBytes bounds payloads and results. 0 means 16 MiB.
	MaxPayloadBytes int
	// TimerPollInterval is the longest the timer loop sleeps before looking for due work
	// again (work scheduled by this process wakes it at once). 0 means 1s.
	TimerPollInterval time.Duration
	// TimerBatch is how many due items one timer unit handles. 0 means 128.
	TimerBatch int
	// ConflictRetries is how many times a unit that lost a race is retried before the
	// operation fails with a contention error. 0 means 16.
	ConflictRetries int
	// JitterFunc returns a float in [0,1) for backoff jitter. Nil means math/rand/v2.
	JitterFunc func() float64
	// EventMaxAge is the longest an event is kept. Events are deleted earlier once every
	// registered durable consumer has passed them; with no durable consumer registered on
	// a shard, they are kept for EventMaxAge. 0 means 7 days.
	EventMaxAge time.Duration
	// EventSweepInterval is how often the timer loop deletes old events. 0 means 30s.
	EventSweepInterval time.Duration
}

// Defaults.
const (
	DefaultRetention       = 7 * 24 * time.Hour
	DefaultMaxPayloadBytes = 16 << 20
	DefaultEventMaxAge     = 7 * 24 * time.Hour
)

// Engine runs every execution operation against one store. It is safe for concurrent use.
type Engine struct {
	store  ffstore.Store
	shards int
	clock  fftype.Clock
	log    *slog.Logger
	cfg    Config

	// wake coalesces "a timer may now be due sooner" notifications for the timer loop.
	wake chan struct{}

	turns claimTurns // when lanes and namespaces last handed out work, see pick

	claims  rounds[*claimCall]  // concurrent Claim calls, served together
	holders rounds[*holderCall] // concurrent operations of lease holders, per shard
	// mergeUnits: the store is an ffstore.UnitMerger, so holders' operations go in rounds.
	mergeUnits bool
	// holderRoundBytes bounds the data of one round of holders' operations:
	// maxHolderRoundBytes, less in tests so that they need no large results.
	holderRoundBytes int

	laneMu sync.Mutex
	lanes  map[string]laneState // pause states read recently, see unpausedLanes
	// laneGen counts the lane states this process set; it moves under laneMu, and is
	// read without it by claim rounds, once per unit (see serveClaims).
	laneGen atomic.Uint64

	capsMu  sync.Mutex
	capSets map[string][]string // digest → capability set, see capSet

	loopMu   sync.Mutex
	loopStop context.CancelFunc
	loopDone chan struct{}
}

// New returns an engine over store.
func New(store ffstore.Store, cfg *Config) (*Engine, error) {
	if store == nil {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "engine: no store given")
	}
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	for name, negative := range map[string]bool{
		"Retention": c.Retention < 0, "MaxPayloadBytes": c.MaxPayloadBytes < 0,
		"TimerPollInterval": c.TimerPollInterval < 0, "TimerBatch": c.TimerBatch < 0,
		"ConflictRetries": c.ConflictRetries < 0, "EventMaxAge": c.EventMaxAge < 0,
		"EventSweepInterval": c.EventSweepInterval < 0,
	} {
		if negative {
			return nil, fftype.Validationf(fftype.CodeInvalidInput, "engine: Config.%s must not be negative (0 means the default)", name)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if c.TimerPollInterval == 0 {
		c.TimerPollInterval = time.Second
	}
	if c.TimerBatch == 0 {
		c.TimerBatch = 128
	}
	if c.ConflictRetries == 0 {
		c.ConflictRetries = 16
	}
	if c.EventMaxAge == 0 {
		c.EventMaxAge = DefaultEventMaxAge
	}
	if c.EventSweepInterval == 0 {
		c.EventSweepInterval = 30 * time.Second
	}
	if c.JitterFunc == nil {
		c.JitterFunc = rand.Float64
	}
	if c.Clock == nil {
		c.Clock = NewStoreClock(store)
	}
	shards := store.Shards()
	if shards < 1 || shards > fftype.MaxShards {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "engine: the store reports %d shards", shards)
	}
	_, merge := store.(ffstore.UnitMerger)
	return &Engine{
		store:            store,
		shards:           shards,
		clock:            c.Clock,
		log:              c.Logger,
		cfg:              c,
		wake:             make(chan struct{}, 1),
		turns:            claimTurns{lanes: map[string]uint64{}, namespaces: map[laneNamespace]uint64{}},
		lanes:            map[string]laneState{},
		capSets:          map[string][]string{},
		mergeUnits:       merge,
		holderRoundBytes: maxHolderRoundBytes,
	}, nil
}

// Store returns the engine's store.
func (e *Engine) Store() ffstore.Store { return e.store }

// Clock returns the engine's clock.
func (e *Engine) Clock() fftype.Clock { return e.clock }

// now returns the engine time truncated to the millisecond, the resolution every store keeps.
func (e *Engine) now() time.Time { return e.clock.Now().Truncate(time.Millisecond) }

// update runs fn as a unit on shard, retrying when the store reports a conflict. fn must
// be safe to run again: it re-reads everything it depends on.
func (e *Engine) update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	var err error
	for i := 0; i < e.cfg.ConflictRetries; i++ {
		err = e.store.Update(ctx, shard, fn)
		if err == nil || !errors.Is(err, fftype.ErrStoreConflict) {
			return err
		}
		if i > 2 {
			backoff := time.Duration(1<<min(i, 8)) * 50 * time.Microsecond
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
		}
	}
	return err
}

// checkID validates an execution id against the store's shard count.
func (e *Engine) checkID(id fftype.ExecutionID) (int, error) {
	if _, err := fftype.ParseExecutionID(string(id)); err != nil {
		return 0, err
	}
	shard := id.Shard()
	if shard >= e.shards {
		return 0, fftype.Validationf(fftype.CodeShardOutOfRange, "execution id %s names shard %d; the store has %d", id, shard, e.shards)
	}
	return shard, nil
}

// notifyTimers tells the timer loop that something may be due sooner than it thought.
func (e *Engine) notifyTimers() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// prefetchExecs reads the execution records of the members of items in one round trip.
func prefetchExecs(tx ffstore.ReadTx, items []ffstore.QueueItem) error {
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = execKey(fftype.ExecutionID(it.Member))
	}
	return tx.Prefetch(keys...)
}

// getExec reads and decodes an execution record; it returns a not-found error if absent.
func getExec(tx ffstore.ReadTx, id fftype.ExecutionID) (*fftype.Execution, error) {
	b, ok, err := tx.Get(execKey(id))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fftype.NotFoundf(fftype.CodeExecutionNotFound, "execution %s not found", id)
	}
	x, err := decodeExecution(b)
	if err != nil {
		return nil, corrupt("execution "+string(id), err)
	}
	if x.Attempt == nil && x.TotalAttempts > 0 {
		// Recorded before executions carried their latest attempt: it is stored apart.
		if x.Attempt, err = getAttempt(tx, id, x.CurrentAttempt); err != nil {
			return nil, err
		}
	}
	return x, nil
}

func putJSON(tx ffstore.Tx, key string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Records are plain structs of strings, numbers and times; Marshal cannot fail.
		panic("engine: encoding record: " + err.Error())
	}
	tx.Put(key, b)
}

func putExec(tx ffstore.Tx, x *fftype.Execution) { tx.Put(execKey(x.ID), encodeExecution(x)) }

// latestAttempt returns x's current attempt, which getExec guarantees once x was claimed.
func latestAttempt(x *fftype.Execution) (*fftype.Attempt, error) {
	if a := x.Attempt; a != nil && a.Index == x.CurrentAttempt {
		return a, nil
	}
	return nil, fftype.NotFoundf(fftype.CodeAttemptNotFound, "attempt %d of %s not found", x.CurrentAttempt, x.ID)
}

// putAttempt stores a, an attempt no longer the latest, apart from its execution.
func putAttempt(tx ffstore.Tx, a *fftype.Attempt) {
	tx.Put(attemptKey(a.ExecutionID, a.Index), encodeAttempt(a))
}

func getAttempt(tx ffstore.ReadTx, id fftype.ExecutionID, index int) (*fftype.Attempt, error) {
	b, ok, err := tx.Get(attemptKey(id, index))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fftype.NotFoundf(fftype.CodeAttemptNotFound, "attempt %d of %s not found", index, id)
	}
	a, err := decodeAttempt(b)
	if err != nil {
		return nil, corrupt("attempt", err)
	}
	return a, nil
}

func corrupt(what string, err error) error {
	return &fftype.Error{Kind: fftype.KindUnavailable, Code: fftype.CodeCorruption,
		Message: what + " could not be decoded", Err: err}
}

// appendEvent records a transition of x in its shard's log.
func appendEvent(tx ffstore.Tx, typ fftype.EventType, x *fftype.Execution, now time.Time, data any) {
	ev := fftype.Event{Version: fftype.EventVersion, Type: typ, Time: now,
		ExecutionID: x.ID, Namespace: x.Namespace, Lane: x.Lane}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			panic("engine: encoding event: " + err.Error())
		}
		ev.Data = b
	}
	tx.AppendEvent(ev)
}
