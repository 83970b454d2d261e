package flowfabric

import (
	"context"
	"time"
)

// Backend is what a [Worker] runs on: the claim and lease calls of the worker protocol, the
// worker registry calls, the shard count and the engine's clock. Two implementations ship
// with FlowFabric, and the worker's code is the same on both:
//
//   - *[Client], in process: the worker calls the engine directly;
//   - *ffclient.Client, over HTTP: the worker runs on another machine and talks to a
//     FlowFabric server (ffserver). Package ffclient implements this interface without
//     this package importing it.
//
// Each method has the contract of the [Client] method of the same name. Errors are
// *[Error] values (or wrap one), so that the worker can tell a lease that is gone (a state
// or not-found error) from a passing failure (retryable). A Backend may also implement
// [EventWatcher]; one that does not leaves the worker to learn of cancellations at its
// next lease renewal and of new work at its next poll.
//
// The interface may grow with the features of the worker (suspension, signals); an
// implementation outside this module should embed a Backend it delegates to.
type Backend interface {
	// Claim hands the worker up to p.Count leases; none means nothing was eligible. If ctx
	// ends while the claim runs, it returns ctx's error and no leases, and gives back any
	// it took meanwhile.
	Claim(ctx context.Context, p ClaimParams) ([]*Lease, error)
	// ClaimGrant consumes a grant and returns its lease.
	ClaimGrant(ctx context.Context, p GrantClaimParams) (*Lease, error)
	// Get returns an execution. The worker reads it to learn why a lease was lost.
	Get(ctx context.Context, id ExecutionID) (*Execution, error)

	// Renew extends a lease by ttl (by its TTL when ttl is 0) and returns the new expiry.
	Renew(ctx context.Context, id ExecutionID, f Fence, ttl time.Duration) (time.Time, error)
	// Progress records the running attempt's progress.
	Progress(ctx context.Context, id ExecutionID, f Fence, percent int, message string) error
	// Complete ends an execution successfully.
	Complete(ctx context.Context, id ExecutionID, f Fence, result []byte, enc PayloadEncoding) error
	// Fail fails the running attempt.
	Fail(ctx context.Context, id ExecutionID, f Fence, p FailParams) (FailOutcome, error)
	// Cancel cancels an execution (the worker always sets p.Fence).
	Cancel(ctx context.Context, id ExecutionID, p CancelParams) error
	// Delay pauses the running attempt for d.
	Delay(ctx context.Context, id ExecutionID, f Fence, d time.Duration) error
	// Release gives a lease back.
	Release(ctx context.Context, id ExecutionID, f Fence) error

	// RegisterWorker registers or refreshes a worker instance.
	RegisterWorker(ctx context.Context, r WorkerRegistration) (WorkerRegistered, error)
	// HeartbeatWorker extends a live registration.
	HeartbeatWorker(ctx context.Context, namespace, instanceID, session string) (time.Time, error)
	// DeregisterWorker removes the session's registration.
	DeregisterWorker(ctx context.Context, namespace, instanceID, session string) error

	// Shards returns the store's shard count.
	Shards(ctx context.Context) (int, error)
	// Clock returns the clock the worker times renewals, heartbeats and grant expiry with:
	// the engine's clock, or one that follows it.
	Clock() Clock
}

// EventWatcher is the optional ability of a [Backend] to push events as they happen. A
// worker whose backend has it follows the events of its lanes and of its held executions,
// so that new work wakes [Worker.Run] at once and a cancelled or lost task's context is
// cancelled at once; without it, the worker polls (up to ClaimPollInterval) and learns of a
// lost lease at its next renewal (at most a third of the lease TTL). *[Client] implements
// it with [Client.Subscribe], *ffclient.Client with the server's event stream.
type EventWatcher interface {
	// WatchEvents follows the events matching f from now on: every event appended after
	// it returned is delivered, until ctx ends or the stream is closed.
	WatchEvents(ctx context.Context, f EventFilter) (EventStream, error)
}

// EventStream is a live feed of events; *[Subscription] is one.
type EventStream interface {
	// Events returns the channel of deliveries, closed when the stream ends.
	Events() <-chan Delivery
	// Err returns why the stream ended once Events is closed: nil after Close or the end
	// of its context.
	Err() error
	// Close ends the stream and waits for its goroutine. It may be called more than once.
	Close()
}

// GrantScheduler hands out grants from the scheduler: the next execution a worker would
// claim, reserved for it. *[Client] and *ffclient.Client implement it; see
// [Worker.ClaimViaServer].
type GrantScheduler interface {
	// GrantNext reserves the next eligible execution for the worker p describes with a
	// grant of the given TTL (0 means 5s); nil means nothing was eligible.
	GrantNext(ctx context.Context, p ClaimParams, ttl time.Duration) (*GrantRef, error)
}

var (
	_ Backend        = (*Client)(nil)
	_ EventWatcher   = (*Client)(nil)
	_ GrantScheduler = (*Client)(nil)
	_ EventStream    = (*Subscription)(nil)
)

// Shards returns the store's shard count, fixed when the store was first opened.
func (c *Client) Shards(context.Context) (int, error) { return c.engine.Store().Shards(), nil }

// Clock returns the engine's clock: the one given in [Config], or the store's.
func (c *Client) Clock() Clock { return c.engine.Clock() }

// WatchEvents is [Client.Subscribe] from the end of the log: it delivers the events
// matching f appended from now on.
func (c *Client) WatchEvents(ctx context.Context, f EventFilter) (EventStream, error) {
	sub, err := c.Subscribe(ctx, f, CursorEnd)
	if err != nil {
		return nil, err
	}
	return sub, nil
}

// closeStore closes the client's store, for a worker that owns its client.
func (c *Client) closeStore() error { return c.engine.Store().Close() }
