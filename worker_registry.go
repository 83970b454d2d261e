package flowfabric

import (
	"context"
	"time"

	"github.com/flowfabric/flowfabric/internal/engine"
)

// The worker registry: every open [Worker] registers its instance here, and operators and
// orchestrators read and manage it through the client.
type (
	// WorkerRegistration registers a worker instance; see [Client.RegisterWorker].
	WorkerRegistration = engine.WorkerRegistration
	// WorkerRegistered is the outcome of a registration.
	WorkerRegistered = engine.WorkerRegistered
	// WorkerInfo is a live worker instance's registration.
	WorkerInfo = engine.WorkerInfo
	// WorkerListParams pages through the live workers of a namespace.
	WorkerListParams = engine.WorkerListParams
	// WorkerPage is one page of live workers.
	WorkerPage = engine.WorkerPage
)

// MaxWorkerLanes is the most lanes one worker instance registers for.
const MaxWorkerLanes = engine.MaxWorkerLanes

// RegisterWorker registers a worker instance, or refreshes the same session's live
// registration. While the instance has a live registration by another session it is
// refused with an error matching [ErrDuplicateWorkerInstance]. Workers opened with
// [NewWorker] register themselves; this is for orchestrators that track workers of their
// own.
func (c *Client) RegisterWorker(ctx context.Context, r WorkerRegistration) (WorkerRegistered, error) {
	return c.engine.RegisterWorker(ctx, r)
}

// HeartbeatWorker extends a live registration by its TTL and returns the new expiry. A
// lapsed registration is not revived ([ErrWorkerNotRegistered]).
func (c *Client) HeartbeatWorker(ctx context.Context, namespace, instanceID, session string) (time.Time, error) {
	return c.engine.HeartbeatWorker(ctx, namespace, instanceID, session)
}

// DeregisterWorker removes the session's registration so the instance id is free at once.
func (c *Client) DeregisterWorker(ctx context.Context, namespace, instanceID, session string) error {
	return c.engine.DeregisterWorker(ctx, namespace, instanceID, session)
}

// GetWorker returns a live worker registration, or an error matching
// [ErrWorkerNotRegistered].
func (c *Client) GetWorker(ctx context.Context, namespace, instanceID string) (*WorkerInfo, error) {
	return c.engine.GetWorker(ctx, namespace, instanceID)
}

// ListWorkers returns a page of the live workers of a namespace, in instance-id order.
func (c *Client) ListWorkers(ctx context.Context, p WorkerListParams) (*WorkerPage, error) {
	return c.engine.ListWorkers(ctx, p)
}

// MarkWorkerDead declares a worker instance dead: its registration goes and every lease
// it holds expires at once, so its executions are eligible again and their next claims
// are reclaim attempts. An instance not registered in namespace loses only its leases on
// that namespace's executions. Leases taken after the mark, by a new process with the
// instance id, are kept; a mark that failed part-way may be retried. It returns how many
// leases expired. reason is at most 256 bytes of UTF-8 without control characters.
func (c *Client) MarkWorkerDead(ctx context.Context, namespace, instanceID, reason string) (int, error) {
	return c.engine.MarkWorkerDead(ctx, namespace, instanceID, reason)
}
