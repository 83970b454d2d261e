package ffclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/fftype"
)

// The calls below make a *Client a flowfabric.Backend (a worker runs on it over HTTP), an
// EventWatcher (the worker follows the server's event stream) and a GrantScheduler (for
// Worker.ClaimViaServer), and cover the worker registry.
var (
	_ flowfabric.Backend        = (*Client)(nil)
	_ flowfabric.EventWatcher   = (*Client)(nil)
	_ flowfabric.GrantScheduler = (*Client)(nil)
)

// workerPath is the path of the route suffix of the worker id (a worker instance's, or a
// worker's, as field names it), for an id the engine would take: one it refuses (an empty
// id, "." or "..") gets the engine's error here, as in process, rather than reach another
// route.
func workerPath(field, id, suffix string) (string, error) {
	if err := fftype.ValidateWorkerID(field, id); err != nil {
		return "", err
	}
	return "/v1/workers/" + url.PathEscape(id) + suffix, nil
}

// lanePath is workerPath for a lane's routes.
func lanePath(lane, suffix string) (string, error) {
	if err := fftype.ValidateLane(lane); err != nil {
		return "", err
	}
	return "/v1/lanes/" + url.PathEscape(lane) + suffix, nil
}

// Info returns the server's shard count and its engine clock's time.
func (c *Client) Info(ctx context.Context) (*ffserver.InfoResponse, error) {
	var out ffserver.InfoResponse
	if err := c.request(ctx, "GET", "/v1/info", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Shards returns the server's shard count.
func (c *Client) Shards(ctx context.Context) (int, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.Shards, nil
}

// Clock returns the clock given in Config, or one that follows the server's engine clock:
// it reads the server's time (GET /v1/info) at most every 10s, corrects for half the
// round trip, and adds the local monotonic time elapsed since. Workers on this client time
// their lease renewals and heartbeats with it and check grant expiry against it, so a
// skewed local clock does not make them renew late. Until the server first answers it
// reads the local clock.
func (c *Client) Clock() fftype.Clock { return c.clock }

// RegisterWorker registers a worker instance, or refreshes the same session's live
// registration; a live registration by another session is refused with an error matching
// flowfabric.ErrDuplicateWorkerInstance.
func (c *Client) RegisterWorker(ctx context.Context, r flowfabric.WorkerRegistration) (flowfabric.WorkerRegistered, error) {
	var out ffserver.RegisterWorkerResponse
	err := c.request(ctx, "POST", "/v1/workers", ffserver.RegisterWorkerRequest{WorkerID: r.WorkerID,
		WorkerInstanceID: r.InstanceID, Namespace: r.Namespace, Lanes: r.Lanes, Capabilities: r.Capabilities,
		TTLMS: millis(r.TTL), Session: r.Session}, &out)
	return flowfabric.WorkerRegistered{Refreshed: out.Refreshed, ExpiresAt: out.ExpiresAt}, err
}

// HeartbeatWorker extends the session's live registration and returns its new expiry; a
// lapsed one is not revived (flowfabric.ErrWorkerNotRegistered).
func (c *Client) HeartbeatWorker(ctx context.Context, namespace, instanceID, session string) (time.Time, error) {
	var out ffserver.HeartbeatResponse
	path, err := workerPath("worker_instance_id", instanceID, "/heartbeat")
	if err != nil {
		return time.Time{}, err
	}
	err = c.request(ctx, "POST", path, ffserver.WorkerSessionRequest{Namespace: namespace, Session: session}, &out)
	return out.ExpiresAt, err
}

// DeregisterWorker removes the session's registration so the instance id is free at once.
func (c *Client) DeregisterWorker(ctx context.Context, namespace, instanceID, session string) error {
	path, err := workerPath("worker_instance_id", instanceID, "/deregister")
	if err != nil {
		return err
	}
	return c.request(ctx, "POST", path, ffserver.WorkerSessionRequest{Namespace: namespace, Session: session}, nil)
}

// GetWorker returns a live worker registration, or an error matching
// flowfabric.ErrWorkerNotRegistered.
func (c *Client) GetWorker(ctx context.Context, namespace, instanceID string) (*flowfabric.WorkerInfo, error) {
	path, err := workerPath("worker_instance_id", instanceID, "")
	if err != nil {
		return nil, err
	}
	if namespace != "" {
		path += "?" + url.Values{"namespace": {namespace}}.Encode()
	}
	var out flowfabric.WorkerInfo
	if err := c.request(ctx, "GET", path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListWorkers returns a page of the live workers of a namespace, in instance-id order;
// p.After takes the page's Cursor to continue.
func (c *Client) ListWorkers(ctx context.Context, p flowfabric.WorkerListParams) (*flowfabric.WorkerPage, error) {
	q := url.Values{}
	if p.Namespace != "" {
		q.Set("namespace", p.Namespace)
	}
	if p.After != "" {
		q.Set("cursor", p.After)
	}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	path := "/v1/workers"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out flowfabric.WorkerPage
	if err := c.request(ctx, "GET", path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// MarkWorkerDead declares a worker instance dead: its registration goes and its leases
// expire at once. It returns how many leases expired.
func (c *Client) MarkWorkerDead(ctx context.Context, namespace, instanceID, reason string) (int, error) {
	var out ffserver.MarkDeadResponse
	path, err := workerPath("worker_instance_id", instanceID, "/mark-dead")
	if err != nil {
		return 0, err
	}
	err = c.request(ctx, "POST", path, ffserver.MarkDeadRequest{Namespace: namespace, Reason: reason}, &out)
	return out.ExpiredLeases, err
}

// GrantNext asks the server's scheduler to reserve the next execution the worker p
// describes would claim, with a grant of the given TTL (0 means 5s); nil means nothing was
// eligible (the server answered 204). p.Count and p.LeaseTTL are not sent.
func (c *Client) GrantNext(ctx context.Context, p fftype.ClaimParams, ttl time.Duration) (*fftype.GrantRef, error) {
	path, err := workerPath("worker_id", p.WorkerID, "/claim-grant")
	if err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, "POST", path, ffserver.WorkerGrantRequest{
		WorkerInstanceID: p.WorkerInstanceID, Lanes: p.Lanes, Capabilities: p.Capabilities, GrantTTLMS: millis(ttl)})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	var g fftype.GrantRef
	if err := decodeBody(resp, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// WatchEvents follows the server's event stream for the events matching f appended from
// now on: it returns once the server has subscribed, so no later event is missed. The
// stream ends when ctx ends, Close is called, or the connection breaks (Err then says so).
func (c *Client) WatchEvents(ctx context.Context, f fftype.EventFilter) (flowfabric.EventStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	resp, err := c.send(ctx, "GET", eventsPath(f, ""), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &eventStream{ch: make(chan fftype.Delivery, 64), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer cancel() // a stream that ends by itself releases its context too
		defer close(s.done)
		defer close(s.ch)
		defer resp.Body.Close()
		err := readEvents(resp.Body, func(d fftype.Delivery) error {
			select {
			case s.ch <- d:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = &fftype.Error{Kind: fftype.KindUnavailable, Code: "stream_ended", Message: "the server ended the event stream", Retryable: true}
		}
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}()
	return s, nil
}

// eventStream is the server's event stream as a flowfabric.EventStream.
type eventStream struct {
	ch     chan fftype.Delivery
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

func (s *eventStream) Events() <-chan fftype.Delivery { return s.ch }

func (s *eventStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *eventStream) Close() {
	s.cancel()
	<-s.done
}

// serverClock follows the server's engine clock; see Client.Clock.
type serverClock struct {
	c *Client

	mu      sync.Mutex
	offset  time.Duration // server time minus local time
	lastTry time.Time     // local time of the last sync attempt
}

// clockSync is how often a serverClock reads the server's time.
const clockSync = 10 * time.Second

func (k *serverClock) Now() time.Time {
	k.mu.Lock()
	if k.lastTry.IsZero() {
		// The first reading: every reader waits for it.
		k.lastTry = time.Now()
		if off, ok := k.read(); ok {
			k.offset = off
		}
	}
	due := time.Since(k.lastTry) >= clockSync
	if due {
		k.lastTry = time.Now()
	}
	offset := k.offset
	k.mu.Unlock()
	if due {
		// Later readings: one reader makes it, without the lock, while the others go on
		// with the last offset rather than wait on the server.
		if off, ok := k.read(); ok {
			k.mu.Lock()
			k.offset = off
			k.mu.Unlock()
			offset = off
		}
	}
	return time.Now().Add(offset)
}

// read measures the server's time minus local time; ok is false if the server did not
// answer within a second.
func (k *serverClock) read() (offset time.Duration, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	sent := time.Now()
	info, err := k.c.Info(ctx)
	if err != nil {
		return 0, false
	}
	rtt := time.Since(sent)
	return info.Now.Sub(sent.Add(rtt / 2)), true
}

func (k *serverClock) SleepUntil(ctx context.Context, until time.Time, wake <-chan struct{}) error {
	t := time.NewTimer(until.Sub(k.Now()))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
		return nil
	case <-t.C:
		return nil
	}
}
