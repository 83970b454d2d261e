package flowfabric

import (
	"context"
	"log/slog"
	"time"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// Config tunes a [Client]. The zero value is usable.
type Config struct {
	// Clock is the time source. Nil means the store's clock, sampled about once a second.
	// Tests pass an fftest.Clock.
	Clock Clock
	// Logger receives logs. Nil discards them.
	Logger *slog.Logger
	// Retention is how long finished executions are kept, counted from each one's end,
	// also for those that finished before it was changed. Processes sharing a store should
	// share it: a shard follows the Retention of the process whose timers hold it. 0 means
	// 7 days.
	Retention time.Duration
	// MaxPayloadBytes bounds payloads and results. 0 means 16 MiB.
	MaxPayloadBytes int
	// TimerPollInterval is the longest the timer loop sleeps when this process scheduled
	// nothing sooner (other processes' changes are seen within it). 0 means 1s.
	TimerPollInterval time.Duration
	// EventMaxAge is the longest an event is kept; events every durable consumer has
	// passed go sooner. 0 means 7 days.
	EventMaxAge time.Duration
}

// Client runs executions on one store: it creates, claims, completes and inspects them,
// and (between Start and Stop) runs the timers that promote delayed executions, expire
// leases, time out attempts and delete old executions. It is safe for concurrent use.
type Client struct {
	engine *engine.Engine
}

// NewClient returns a client on store. The caller owns the store and closes it after the
// client stops. A nil store or a negative Config value is refused with a validation
// error.
func NewClient(store ffstore.Store, cfg *Config) (*Client, error) {
	ec := &engine.Config{}
	if cfg != nil {
		ec.Clock = cfg.Clock
		ec.Logger = cfg.Logger
		ec.Retention = cfg.Retention
		ec.MaxPayloadBytes = cfg.MaxPayloadBytes
		ec.TimerPollInterval = cfg.TimerPollInterval
		ec.EventMaxAge = cfg.EventMaxAge
	}
	e, err := engine.New(store, ec)
	if err != nil {
		return nil, err
	}
	return &Client{engine: e}, nil
}

// Start runs the timer loop in the background until Stop or ctx ends. Several clients in
// several processes may run it on one store at once. Calling Start twice does nothing.
func (c *Client) Start(ctx context.Context) { c.engine.Start(ctx) }

// Stop ends the timer loop and waits for it. It is safe to call when not started.
func (c *Client) Stop() { c.engine.Stop() }

// RunDue handles every timer that is due now and reports how many items it handled and
// when the next is due. Start calls it in a loop; tests call it after moving a fake clock.
func (c *Client) RunDue(ctx context.Context) (int, time.Time, error) { return c.engine.RunDue(ctx) }

// Create creates an execution, or returns the one an earlier create made with the same id
// or idempotency key (with Duplicate set).
func (c *Client) Create(ctx context.Context, p CreateParams) (*CreateResult, error) {
	return c.engine.Create(ctx, p)
}

// CreateMany creates many executions in few store round trips and returns one result per
// item, in order; an invalid item gets its error without stopping the others.
func (c *Client) CreateMany(ctx context.Context, ps []CreateParams) []BulkCreateResult {
	return c.engine.CreateMany(ctx, ps)
}

// Claim hands a worker up to p.Count eligible executions from its lanes as leases: only
// those whose required capabilities the worker holds, highest priority first, then the
// worker's lanes and a lane's namespaces taking turns (least recently served first), then
// oldest first. An empty result means nothing was eligible.
func (c *Client) Claim(ctx context.Context, p ClaimParams) ([]*Lease, error) {
	return c.engine.Claim(ctx, p)
}

// IssueGrant reserves one eligible execution for one worker until the grant expires. A
// [GrantReclaim] grant reserves an execution whose lease expired or was revoked.
func (c *Client) IssueGrant(ctx context.Context, id ExecutionID, kind GrantKind, p GrantParams) (*GrantRef, error) {
	return c.engine.IssueGrant(ctx, id, kind, p)
}

// ClaimGrant consumes a grant and returns the lease it gives its worker.
func (c *Client) ClaimGrant(ctx context.Context, p GrantClaimParams) (*Lease, error) {
	return c.engine.ClaimGrant(ctx, p)
}

// Renew extends a lease by ttl from now (by the lease's TTL when ttl is 0) and returns
// the new expiry.
func (c *Client) Renew(ctx context.Context, id ExecutionID, f Fence, ttl time.Duration) (time.Time, error) {
	return c.engine.Renew(ctx, id, f, ttl)
}

// Progress records the running attempt's progress (0 to 100 percent, and a message).
func (c *Client) Progress(ctx context.Context, id ExecutionID, f Fence, percent int, message string) error {
	return c.engine.Progress(ctx, id, f, percent, message)
}

// Complete ends an execution successfully with result. A retried call by the same holder
// succeeds and changes nothing.
func (c *Client) Complete(ctx context.Context, id ExecutionID, f Fence, result []byte, enc PayloadEncoding) error {
	return c.engine.Complete(ctx, id, f, result, enc)
}

// Fail fails the current attempt; the execution is retried per its policy or fails for
// good.
func (c *Client) Fail(ctx context.Context, id ExecutionID, f Fence, p FailParams) (FailOutcome, error) {
	return c.engine.Fail(ctx, id, f, p)
}

// Cancel cancels an execution: by its lease holder when p.Fence is set, otherwise as an
// operator.
func (c *Client) Cancel(ctx context.Context, id ExecutionID, p CancelParams) error {
	return c.engine.Cancel(ctx, id, p)
}

// Delay pauses the running attempt; the execution is eligible again after d and its next
// claim continues the same attempt.
func (c *Client) Delay(ctx context.Context, id ExecutionID, f Fence, d time.Duration) error {
	return c.engine.Delay(ctx, id, f, d)
}

// Release gives a lease back so that another worker can take the execution at once; no
// retry or reclaim is counted.
func (c *Client) Release(ctx context.Context, id ExecutionID, f Fence) error {
	return c.engine.Release(ctx, id, f)
}

// Revoke takes a lease away from its holder; the execution's next claim is a reclaim.
func (c *Client) Revoke(ctx context.Context, id ExecutionID, reason string) error {
	return c.engine.Revoke(ctx, id, reason)
}

// ChangePriority sets the priority of a non-terminal execution.
func (c *Client) ChangePriority(ctx context.Context, id ExecutionID, priority int) error {
	return c.engine.ChangePriority(ctx, id, priority)
}

// SetTags merges tags into an execution's tags; a tag set to "" is removed.
func (c *Client) SetTags(ctx context.Context, id ExecutionID, tags map[string]string) error {
	return c.engine.SetTags(ctx, id, tags)
}

// Replay sends a finished execution round again with fresh retry and reclaim budgets.
func (c *Client) Replay(ctx context.Context, id ExecutionID) error { return c.engine.Replay(ctx, id) }

// ReplayFailed replays an execution of the dead letter, one that ended failed, as Replay
// does; any other is refused (a state error coded execution_not_failed).
func (c *Client) ReplayFailed(ctx context.Context, id ExecutionID) error {
	return c.engine.ReplayFailed(ctx, id)
}

// PauseLane stops claims from handing out the lane's executions until ResumeLane. It
// takes effect at once in this process and within a second in others.
func (c *Client) PauseLane(ctx context.Context, lane string) error {
	return c.engine.PauseLane(ctx, lane)
}

// ResumeLane undoes PauseLane. It takes effect at the next claim in every process.
func (c *Client) ResumeLane(ctx context.Context, lane string) error {
	return c.engine.ResumeLane(ctx, lane)
}

// Lane returns a lane's state.
func (c *Client) Lane(ctx context.Context, lane string) (LaneInfo, error) {
	return c.engine.Lane(ctx, lane)
}

// Get returns an execution.
func (c *Client) Get(ctx context.Context, id ExecutionID) (*Execution, error) {
	return c.engine.Get(ctx, id)
}

// List returns a page of executions matching p, oldest first.
func (c *Client) List(ctx context.Context, p ListParams) (*ListPage, error) {
	return c.engine.List(ctx, p)
}

// Attempts returns an execution's attempts, oldest first.
func (c *Client) Attempts(ctx context.Context, id ExecutionID) ([]*Attempt, error) {
	return c.engine.Attempts(ctx, id)
}

// Result returns the result of a completed execution.
func (c *Client) Result(ctx context.Context, id ExecutionID) ([]byte, error) {
	b, _, err := c.engine.Result(ctx, id)
	return b, err
}

// ResultWithEncoding is [Client.Result] with the result's encoding: binary for a result
// completed as binary ([ClaimedTask.CompleteBinary]), JSON otherwise.
func (c *Client) ResultWithEncoding(ctx context.Context, id ExecutionID) ([]byte, PayloadEncoding, error) {
	return c.engine.Result(ctx, id)
}

// Payload returns an execution's input payload.
func (c *Client) Payload(ctx context.Context, id ExecutionID) ([]byte, error) {
	return c.engine.Payload(ctx, id)
}

// Subscription is a live, resumable feed of events; see [Client.Subscribe]. Its methods:
// Events() <-chan Delivery, the deliveries, closed when the subscription ends; Err()
// error, why it ended, once Events is closed; StartCursor() string, the cursor of the
// position it started from; Position() (string, uint64), the cursor of the position it
// has reached, past the events its filter skipped, with how many deliveries it pushed
// before it (resume from it once you have received that many); and Close(), which ends
// it and waits for its goroutine.
type Subscription = engine.Subscription

// Consumer is one replica of a durable consumer; see [Client.NewConsumer]. Its methods:
// Run(ctx) error steps it until ctx ends, waiting for new events when idle, and on the
// way out calls the handler no more, stores its progress and hands its shard leases back; Step(ctx) (int, error) renews and balances its
// leases when due and handles one batch of events per held shard, returning how many it
// passed and the errors of the shards that failed, joined (a failing shard does not stop
// the others, and is tried again after a back-off); Shards() []int, the shards it holds;
// and Release(ctx), which hands its leases back at once.
type Consumer = engine.Consumer

// ConsumerConfig describes a durable consumer.
type ConsumerConfig = engine.ConsumerConfig

// Special cursors for Subscribe: the oldest event kept, and only events from now on.
const (
	CursorStart = engine.CursorStart
	CursorEnd   = engine.CursorEnd
)

// Subscribe delivers the events matching f from cursor on (CursorStart, CursorEnd, or the
// Cursor of an earlier Delivery to resume right after it), then follows the log live until
// ctx ends or the subscription is closed. A cursor whose position retention has deleted is
// refused with cursor_expired; CursorStart follows deletions until the first event arrives.
// Its StartCursor resumes from where it began, for a subscriber that loses it before its
// first delivery. The subscription rides out a store that is briefly away, reading again from where it
// was. After the channel closes, Err says why: nil for a clean end, cursor_expired when the
// subscriber fell behind retention, or the store's error once it was closed.
func (c *Client) Subscribe(ctx context.Context, f EventFilter, cursor string) (*Subscription, error) {
	return c.engine.Subscribe(ctx, f, cursor)
}

// EventCursor returns a cursor at the current end of the event log.
func (c *Client) EventCursor(ctx context.Context) (string, error) { return c.engine.EventCursor(ctx) }

// NewConsumer returns a replica of a durable consumer: every event reaches its handler at
// least once per consumer name, however many replicas run, and a dead replica's share moves
// to the others. Events are kept until every durable consumer has passed them (or their
// maximum age).
func (c *Client) NewConsumer(cfg ConsumerConfig) (*Consumer, error) { return c.engine.NewConsumer(cfg) }

// DeleteConsumer forgets a durable consumer so that it no longer holds back retention.
func (c *Client) DeleteConsumer(ctx context.Context, name string) error {
	return c.engine.DeleteConsumer(ctx, name)
}

// Changes returns a channel that receives a value soon after the store changes, or nil
// when the store cannot tell (then poll). Long-polling claimers wait on it.
func (c *Client) Changes(ctx context.Context) <-chan struct{} { return c.engine.Changes(ctx) }

// QueueDepths returns how many executions wait eligible in each lane. It reads every
// eligible item: meant for metrics, not hot paths.
func (c *Client) QueueDepths(ctx context.Context) (map[string]int, error) {
	return c.engine.QueueDepths(ctx)
}

// Ping checks that the store answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.engine.Store().Now(ctx)
	return err
}

// GrantNext picks the next execution a worker would claim, exactly as Claim would, and
// reserves it for that worker with a grant of the given TTL (0 means 5s) instead of a
// lease; the worker consumes it with ClaimGrant. A nil grant means nothing was eligible.
func (c *Client) GrantNext(ctx context.Context, p ClaimParams, ttl time.Duration) (*GrantRef, error) {
	return c.engine.GrantNext(ctx, p, ttl)
}
