package engine

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// Event-log reading.
const (
	eventBatch = 512
	// cursorVersion 2 carries the log's id; version 1, issued before, carries only the
	// positions and is still accepted.
	cursorVersion     = 2
	cursorVersionNoID = 1
	cursorLogIDBytes  = 8
)

// maxCursorLength is the length of the longest cursor encodeEventCursor makes: that of a
// store with fftype.MaxShards shards, each at the largest Seq. Derived from the encoder,
// it lets the decoder refuse absurd input before decoding it yet accept any cursor the
// engine issued.
var maxCursorLength = len(encodeEventCursor(math.MaxUint64, slices.Repeat([]uint64{math.MaxUint64}, fftype.MaxShards)))

// CursorStart and CursorEnd are the special cursors Subscribe accepts besides one it
// handed out: the oldest event still kept, and the end of the log (only events appended
// from now on).
const (
	CursorStart = ""
	CursorEnd   = "end"
)

// logIDKey is the record, on shard 0, that holds the store's event-log id: a random number
// written by the first engine that needs it. Cursors carry it, so that one made for
// another store (or for this one before it was recreated) is refused rather than followed
// from positions that mean nothing here.
const logIDKey = "log:~id"

// logID returns the store's event-log id, creating it on first use. It is read anew each
// time (a subscription reads it once): a store that lost its data gets a new id, and every
// process must see that one.
func (e *Engine) logID(ctx context.Context) (uint64, error) {
	var id uint64
	read := func(tx ffstore.ReadTx) (bool, error) {
		v, ok, err := tx.Get(logIDKey)
		if err != nil || !ok {
			return false, err
		}
		if len(v) != cursorLogIDBytes {
			return false, corrupt("the event log's id", fmt.Errorf("record %q holds %d bytes", logIDKey, len(v)))
		}
		id = binary.BigEndian.Uint64(v)
		return true, nil
	}
	found := false
	err := e.store.View(ctx, 0, func(tx ffstore.ReadTx) (err error) {
		found, err = read(tx)
		return err
	})
	if err != nil || found {
		return id, err
	}
	err = e.update(ctx, 0, func(tx ffstore.Tx) error {
		found, err := read(tx)
		if err != nil || found {
			return err
		}
		id = rand.Uint64()
		tx.Put(logIDKey, binary.BigEndian.AppendUint64(nil, id))
		return nil
	})
	return id, err
}

// encodeEventCursor packs the log's id and one position per shard: base64url of a
// version byte, the id (8 bytes), the shard count and each shard's last-delivered Seq as
// uvarints. 16 shards fit in well under 200 bytes, small enough for an HTTP header; the
// most shards, far into their logs, take some kilobytes (maxCursorLength at most).
func encodeEventCursor(logID uint64, pos []uint64) string {
	b := make([]byte, 0, 2+cursorLogIDBytes+len(pos)*4)
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, logID)
	b = binary.AppendUvarint(b, uint64(len(pos)))
	for _, p := range pos {
		b = binary.AppendUvarint(b, p)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// eventCursor is a decoded cursor: its positions, and the id of the log it was made for
// (named is false for a version 1 cursor, which names none).
type eventCursor struct {
	pos   []uint64
	logID uint64
	named bool
}

// badCursor is the error of a cursor refused for why.
func badCursor(why string) error {
	return fftype.Validationf(fftype.CodeInvalidCursor, "event cursor: %s", why)
}

// decodeEventCursor decodes cursor s, which must have been made for a store of this
// engine's shard count. It reads nothing from the store: a malformed cursor costs nothing.
func (e *Engine) decodeEventCursor(s string) (eventCursor, error) {
	var c eventCursor
	if len(s) > maxCursorLength {
		return c, badCursor("too long")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 2 || b[0] != cursorVersion && b[0] != cursorVersionNoID {
		return c, badCursor("not a cursor this engine issued")
	}
	if b[0] == cursorVersion {
		if len(b) < 1+cursorLogIDBytes+1 {
			return c, badCursor("truncated")
		}
		c.logID, c.named = binary.BigEndian.Uint64(b[1:]), true
		b = b[cursorLogIDBytes:]
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n != uint64(e.shards) {
		return c, badCursor("made for a store with another shard count")
	}
	b = b[k:]
	c.pos = make([]uint64, e.shards)
	for i := range c.pos {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return c, badCursor("truncated")
		}
		c.pos[i], b = v, b[k:]
	}
	if len(b) != 0 {
		return c, badCursor("trailing bytes")
	}
	return c, nil
}

// of refuses c unless it was made for the log logID, or names none.
func (c eventCursor) of(logID uint64) error {
	if c.named && c.logID != logID {
		return badCursor("made for another store's event log")
	}
	return nil
}

// EventCursor returns a cursor at the current end of the log: a subscription from it
// delivers only events appended afterwards.
func (e *Engine) EventCursor(ctx context.Context) (string, error) {
	id, err := e.logID(ctx)
	if err != nil {
		return "", err
	}
	pos, err := e.endPositions(ctx)
	if err != nil {
		return "", err
	}
	return encodeEventCursor(id, pos), nil
}

func (e *Engine) endPositions(ctx context.Context) ([]uint64, error) {
	pos := make([]uint64, e.shards)
	for s := range pos {
		_, last, err := e.store.EventBounds(ctx, s)
		if err != nil {
			return nil, err
		}
		pos[s] = last
	}
	return pos, nil
}

// checkInLog refuses positions outside their shard's log. One past its end, as a cursor of
// a store that was since recreated (or a forged one) is, is invalid: followed, it would
// skip, without a word, every event until the log caught up with it. One before its trim
// point has expired; saying so now, rather than from the subscription's first read,
// lets a client that resumes by itself (a browser's EventSource) see an error answer and
// stop, rather than resume into the same failure again and again.
func (e *Engine) checkInLog(ctx context.Context, pos []uint64) error {
	for s, p := range pos {
		trimmed, last, err := e.store.EventBounds(ctx, s)
		if err != nil {
			return err
		}
		if p > last {
			return fftype.Validationf(fftype.CodeInvalidCursor,
				"event cursor: shard %d is at %d, past the end of its log (%d); was the store recreated?", s, p, last)
		}
		if p < trimmed {
			return ffstore.CursorExpired(s, p, trimmed)
		}
	}
	return nil
}

func (e *Engine) startPositions(ctx context.Context) ([]uint64, error) {
	pos := make([]uint64, e.shards)
	for s := range pos {
		trimmed, _, err := e.store.EventBounds(ctx, s)
		if err != nil {
			return nil, err
		}
		pos[s] = trimmed
	}
	return pos, nil
}

// validateFilter checks a filter's fields.
func validateFilter(f fftype.EventFilter) error {
	if f.Namespace != "" {
		if err := fftype.ValidateNamespace(f.Namespace); err != nil {
			return err
		}
	}
	if f.Lane != "" {
		if err := fftype.ValidateLane(f.Lane); err != nil {
			return err
		}
	}
	if f.ExecutionID != "" {
		if _, err := fftype.ParseExecutionID(string(f.ExecutionID)); err != nil {
			return err
		}
	}
	if len(f.FlowID) > 128 || len(f.Types) > 64 {
		return fftype.Validationf(fftype.CodeInvalidInput, "event filter: flow id or type list too long")
	}
	for _, t := range f.Types {
		if !t.Known() {
			return fftype.Validationf(fftype.CodeInvalidInput, "event filter: unknown event type %q", t)
		}
	}
	return nil
}

// Subscription is a live, resumable feed of events. Read Events until it is closed, then
// Err says why: nil after Close or the context's end, an error matching
// fftype.ErrCursorExpired when the log was trimmed past the subscription's position (the
// subscriber fell too far behind), or a store error that retrying cannot cure (the store
// was closed). Retryable store errors (a restart, a failover) do not end it: it reads
// again, with backoff, from where it was.
type Subscription struct {
	ch     chan fftype.Delivery
	logID  uint64
	start  string
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
	// reached holds each shard's position once every event before it was pushed into ch
	// or skipped, and delivered how many were pushed by then; they move together (mu).
	reached   []uint64
	delivered uint64
}

// Events returns the channel of deliveries; it is closed when the subscription ends.
func (s *Subscription) Events() <-chan fftype.Delivery { return s.ch }

// StartCursor returns the cursor of the position the subscription started from: a
// subscription from it delivers every event this one delivers. For CursorEnd that is the
// end of the log when Subscribe returned, so a subscriber that loses the subscription
// before its first delivery resumes from it without a gap; for CursorStart it is the
// oldest events kept then, which retention may delete (a subscription from it is then
// refused with cursor_expired, where this one moves on to the new oldest event).
func (s *Subscription) StartCursor() string { return s.start }

// Position returns the cursor of the position the subscription has reached in the log,
// and how many deliveries it had pushed into Events by then: every event before the
// position that matches the filter is among them, and the others were skipped. Unlike the
// cursor of the last delivery, it moves past the events the filter skips, so a subscriber
// whose filter rarely matches can resume from it although retention has since deleted
// the skipped events (a resume from the last delivery would get cursor_expired). It is a
// position to resume from only once the subscriber has received as many deliveries as
// delivered: those it has not received yet come before it. Safe for concurrent use.
func (s *Subscription) Position() (cursor string, delivered uint64) {
	s.mu.Lock()
	pos, delivered := slices.Clone(s.reached), s.delivered
	s.mu.Unlock()
	return encodeEventCursor(s.logID, pos), delivered
}

// reach records that every event of shard up to p was pushed into the channel or skipped,
// the last one pushed if pushed.
func (s *Subscription) reach(shard int, p uint64, pushed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reached[shard] = p
	if pushed {
		s.delivered++
	}
}

// Err returns why the subscription ended, once Events is closed.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription and waits for its goroutine.
func (s *Subscription) Close() {
	s.cancel()
	<-s.done
}

// Subscribe delivers the events that match f from cursor on — CursorStart for the oldest
// event kept, CursorEnd for only new ones, or a cursor from an earlier delivery to resume
// right after it — then follows the log live until ctx ends or Close. Events of one shard
// arrive in order; across shards, in the order they are read. A consumer that is slow
// holds the subscription back (deliveries are never dropped); one that falls behind
// retention gets cursor_expired, from Subscribe itself when the cursor's position is
// already deleted.
func (e *Engine) Subscribe(ctx context.Context, f fftype.EventFilter, cursor string) (*Subscription, error) {
	if err := validateFilter(f); err != nil {
		return nil, err
	}
	var given eventCursor
	if cursor != CursorStart && cursor != CursorEnd {
		var err error
		if given, err = e.decodeEventCursor(cursor); err != nil {
			return nil, err // before the store is asked anything
		}
	}
	logID, err := e.logID(ctx)
	if err != nil {
		return nil, err
	}
	var pos []uint64
	switch cursor {
	case CursorStart:
		pos, err = e.startPositions(ctx)
	case CursorEnd:
		pos, err = e.endPositions(ctx)
	default:
		pos = given.pos
		if err = given.of(logID); err == nil {
			err = e.checkInLog(ctx, pos)
		}
	}
	if err != nil {
		return nil, err
	}
	// A subscription from the oldest event kept follows the trim point of every shard it
	// has read nothing from yet: a sweep that trims between reading the point and the
	// first read takes only events it never promised.
	var atStart []bool
	if cursor == CursorStart {
		atStart = make([]bool, len(pos))
		for s := range atStart {
			atStart[s] = true
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	// The start is encoded now: follow moves pos on.
	sub := &Subscription{ch: make(chan fftype.Delivery, eventBatch), logID: logID, start: encodeEventCursor(logID, pos),
		cancel: cancel, done: make(chan struct{}), reached: slices.Clone(pos)}
	wake := e.changes(ctx)
	go func() {
		defer cancel() // a subscription that ends by itself stops what follows the store's changes for it
		defer close(sub.done)
		defer close(sub.ch)
		err := e.follow(ctx, pos, atStart, wake, func(shard int, ev *fftype.Event, pos []uint64) error {
			if ev == nil || !f.Match(ev) {
				sub.reach(shard, pos[shard], false)
				return nil
			}
			select {
			case sub.ch <- fftype.Delivery{Event: *ev, Cursor: encodeEventCursor(logID, pos)}:
				// Only now: a position past an event not yet in the channel would let a
				// subscriber that resumes from it miss that event.
				sub.reach(shard, pos[shard], true)
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if ctx.Err() == nil {
			sub.mu.Lock()
			sub.err = err
			sub.mu.Unlock()
		}
	}()
	return sub, nil
}

// changes returns the store's change notifications, or nil when it has none (readers then
// poll every TimerPollInterval).
func (e *Engine) changes(ctx context.Context) <-chan struct{} {
	if n, ok := e.store.(ffstore.ChangeNotifier); ok {
		return n.Changes(ctx)
	}
	return nil
}

// How long a subscription waits before reading again after a retryable store error: it
// doubles from the first to the last.
const (
	followRetryMin = 50 * time.Millisecond
	followRetryMax = 5 * time.Second
)

// follow reads every shard's log from pos on, calling fn for each event with its shard
// and the positions after it, and waits for a change when all shards are drained. It
// returns when ctx ends (nil) or on the first error. A shard marked in atStart (which may
// be nil) is at its log's trim point and nothing was read from it yet: trimmed further
// meanwhile, it moves to the new trim point instead of failing with cursor_expired, and
// fn is called with a nil event to say so.
func (e *Engine) follow(ctx context.Context, pos []uint64, atStart []bool, wake <-chan struct{}, fn func(int, *fftype.Event, []uint64) error) error {
	poll := time.NewTimer(0)
	defer poll.Stop()
	retry := followRetryMin
	for {
		read, retried := false, false
		for s := range pos {
			evs, err := e.store.ReadEvents(ctx, s, pos[s], eventBatch)
			if err != nil && atStart != nil && atStart[s] && errors.Is(err, fftype.ErrCursorExpired) {
				var trimmed uint64
				if trimmed, _, err = e.store.EventBounds(ctx, s); err == nil {
					pos[s] = trimmed
					if err = fn(s, nil, pos); err == nil {
						evs, err = e.store.ReadEvents(ctx, s, pos[s], eventBatch)
					}
				}
			}
			if err != nil && ctx.Err() == nil && fftype.IsRetryable(err) {
				// The store is briefly away (a restart, a failover): the positions are
				// kept, so reading again later misses nothing. The first failure of a
				// run of them is worth a warning, not every retry.
				level := slog.LevelDebug
				if retry == followRetryMin {
					level = slog.LevelWarn
				}
				e.log.Log(ctx, level, "event subscription: reading the log failed; retrying", "shard", s, "err", err, "retry_in", retry)
				poll.Reset(retry)
				select {
				case <-ctx.Done():
					return nil
				case <-poll.C:
				}
				retry = min(2*retry, followRetryMax)
				retried = true
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if atStart != nil {
				// Read, even empty: from here on the shard's events are promised.
				atStart[s] = false
			}
			for i := range evs {
				pos[s] = evs[i].Seq
				if err := fn(s, &evs[i], pos); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
			}
			read = read || len(evs) > 0
		}
		if retried {
			continue // read every shard again before waiting for a change
		}
		retry = followRetryMin // a whole pass read without an error
		if read {
			continue
		}
		poll.Reset(e.cfg.TimerPollInterval)
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
		}
	}
}

// Changes returns a channel that receives a value soon after the store changes (coalesced
// hints, see ffstore.ChangeNotifier), or nil when the store cannot tell, in which case
// callers poll. It closes when ctx ends.
func (e *Engine) Changes(ctx context.Context) <-chan struct{} { return e.changes(ctx) }
