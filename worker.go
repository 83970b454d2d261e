package flowfabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
)

// Worker claims executions from its lanes and runs them: by hand with [Worker.ClaimNext]
// and the grant claims, or with handlers registered by [Handle] and the runtime loop
// [Worker.Run]. It is the Go form of the original SDK's worker, and safe for concurrent
// use.
//
// # In process or over HTTP
//
// A worker runs on a [Backend]: a *[Client] in the same process, or an *ffclient.Client
// talking to a FlowFabric server from another machine. The worker's code and behaviour
// are the same on both; only how fast it hears of changes differs (see Tasks).
//
// # Identity and the duplicate guard
//
// Opening a worker registers its instance in the worker registry with its lanes and
// capabilities (see [Client.ListWorkers]). The registration is a liveness record with
// a TTL of twice the lease TTL, refreshed by a heartbeat every third of it and deleted by
// [Worker.Close]; while it is live, a second process opening a worker with the same
// instance id is refused with an error matching [ErrDuplicateWorkerInstance]. A process
// killed without Close keeps its instance id for up to two lease TTLs.
//
// # Tasks
//
// A claimed execution is a [ClaimedTask] (in handlers, a [Task] with decoded arguments).
// It holds one of the worker's MaxConcurrentTasks slots until a finishing call lands (one
// that [Worker.Run] claimed: until its handler returned and its outcome was reported), and
// its lease is renewed every third of its TTL in the background. Its context is cancelled
// when the execution is cancelled, the lease is lost (expired, revoked, or taken over), or
// the worker stops: at once when the change reaches the worker through its backend's
// events ([EventWatcher]: the store's change notifications in process, the server's event
// stream over HTTP), and at the latest at the next renewal (a third of the lease TTL).
//
// # Shutdown
//
// [Worker.Stop] stops claiming and waits for running handlers; [Worker.StopAndCancel]
// cancels them first. Work cut short by a stop is released, not failed: the execution is
// eligible again at once and its next claim continues the same attempt, counting neither a
// retry nor a reclaim. [Worker.Close] stops everything, releases the leases still held and
// deregisters the instance.
type Worker struct {
	backend     Backend
	watcher     EventWatcher // nil when the backend cannot push events
	clock       Clock
	cfg         WorkerConfig
	shards      int
	session     string
	log         *slog.Logger
	lanes       map[string]bool
	completions *Subscription
	ownsClient  bool

	slots chan struct{} // one token per held task
	freed chan struct{} // coalesced: a slot was freed
	wake  chan struct{} // coalesced: work may have become eligible in our lanes

	// closeBegun is closed, under mu, when Close begins: from then on no Run, claim or task
	// starts, and the retries of outcomes end.
	closeBegun chan struct{}

	// life is the worker's service context, cancelled by Close (cause ErrWorkerStopped).
	life       context.Context
	lifeCancel context.CancelCauseFunc
	bg         sync.WaitGroup // heartbeat, event watch and renewals

	mu         sync.Mutex
	tasks      map[ExecutionID]*ClaimedTask // held tasks, by execution
	recent     recentIDs                    // executions with a recent event and no held task
	handlers   map[string]HandlerFunc
	middleware []Middleware
	run        *runState
	guardErr   error // why the worker lost its registration to another process
	closeOnce  sync.Once
	closeErr   error

	signals     atomic.Pointer[workerSignals]
	idleBackoff time.Duration // tests: the first idle wait of Run; 0 means minIdleBackoff
	cleanupTime time.Duration // tests: the clean-up window; 0 means defaultCleanupTime
}

// WorkerOpts are optional settings of [NewWorker]. A nil *WorkerOpts means none.
type WorkerOpts struct {
	// Completions is an optional feed of completion events the caller subscribed (for
	// example with [Client.Subscribe] filtered on completed and failed events), handed out
	// by [Worker.Completions]. Nil means the worker has none.
	Completions *Subscription
	// OwnClient hands the client to the worker: Close stops the client's timers, closes
	// Completions and closes the client's store. ffconnect.Connect sets it for the client
	// it opens from WorkerConfig.Store. It applies only to a *Client backend.
	OwnClient bool
}

// Sentinels of the worker, for errors.Is. Errors returned by the worker carry more detail.
var (
	// ErrWorkerAtCapacity: every MaxConcurrentTasks slot is held, so a grant was not
	// consumed. It is retryable; the grant stays valid until it expires.
	ErrWorkerAtCapacity = &fftype.Error{Kind: fftype.KindLimited, Code: CodeWorkerAtCapacity}
	// ErrDuplicateWorkerInstance: another live process holds the worker instance id.
	ErrDuplicateWorkerInstance = &fftype.Error{Kind: fftype.KindConflict, Code: engine.CodeDuplicateWorkerInstance}
	// ErrWorkerNotRegistered: the worker instance has no live registration.
	ErrWorkerNotRegistered = &fftype.Error{Kind: fftype.KindNotFound, Code: engine.CodeWorkerNotRegistered}
	// ErrWorkerClosed: the worker was closed.
	ErrWorkerClosed = &fftype.Error{Kind: fftype.KindState, Code: CodeWorkerClosed}

	// ErrWorkerStopped is the context cause of tasks cut short by Stop, StopAndCancel or
	// Close.
	ErrWorkerStopped = errors.New("flowfabric: worker stopped")
	// ErrLeaseLost is the context cause of a task whose lease was lost: it expired, was
	// revoked or taken over. The cause also matches the engine's code, such as
	// [ErrLeaseExpired] or [ErrLeaseRevoked].
	ErrLeaseLost = errors.New("flowfabric: lease lost")
	// ErrExecutionCancelled is the context cause of a task whose execution was cancelled
	// by someone other than the task.
	ErrExecutionCancelled = errors.New("flowfabric: execution cancelled")
	// ErrTaskFinished is the context cause of a task after a finishing call landed.
	ErrTaskFinished = errors.New("flowfabric: task finished")
)

// Worker error codes.
const (
	CodeWorkerAtCapacity = "worker_at_capacity"
	CodeWorkerClosed     = "worker_closed"
	codeWorkerRunning    = "worker_running"
)

// Event types the worker watches: those that may make work eligible in its lanes, and
// those that may end a held task's lease.
var (
	wakeTypes = map[EventType]bool{ //nolint:gochecknoglobals // a constant set
		fftype.EventCreated: true, fftype.EventPromoted: true, fftype.EventLeaseExpired: true,
		fftype.EventLeaseRevoked: true, fftype.EventLeaseReleased: true, fftype.EventGrantExpired: true,
		fftype.EventReplayed: true, fftype.EventLaneResumed: true, fftype.EventRetryScheduled: true,
		fftype.EventDelayed: true,
	}
	loseTypes = map[EventType]bool{ //nolint:gochecknoglobals // a constant set
		fftype.EventCancelled: true, fftype.EventLeaseRevoked: true, fftype.EventLeaseExpired: true,
		fftype.EventExpired: true, fftype.EventFailed: true, fftype.EventRetryScheduled: true,
		fftype.EventDeleted: true,
	}
)

func watchFilter() EventFilter {
	seen := map[EventType]bool{}
	var types []EventType
	for _, m := range []map[EventType]bool{wakeTypes, loseTypes} {
		for t := range m {
			if !seen[t] {
				seen[t] = true
				types = append(types, t)
			}
		}
	}
	return EventFilter{Types: types}
}

// NewWorker opens a worker on a backend the caller built — a *[Client] in process, or an
// *ffclient.Client for a worker that talks to a server over HTTP — with an optional
// completion feed in opts. It validates cfg (a *[ConfigError] names the field at fault),
// reads the shard count, registers the instance (refused with
// [ErrDuplicateWorkerInstance] while another live process holds the instance id; a
// passing failure is retried a few times) and starts the heartbeat and, when the backend
// is an [EventWatcher], the event watch that wakes Run and cancels tasks. If it fails
// after registering, it deregisters, so that a call made again after a retryable error is
// not refused as a duplicate of the failed one. cfg.Store is ignored, with a warning,
// unless opts.OwnClient says the client was opened from it. Close the worker when done.
func NewWorker(ctx context.Context, backend Backend, cfg *WorkerConfig, opts *WorkerOpts) (*Worker, error) {
	if isNil(backend) {
		return nil, &ConfigError{Field: "client", Message: "a client (or another backend) is required"}
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &WorkerOpts{}
	}
	if c.Store != "" && !opts.OwnClient {
		c.Logger.Warn("WorkerConfig.Store is set but NewWorker was given a client: the client's store is used and Store is ignored",
			"worker_id", c.WorkerID, "worker_instance_id", c.WorkerInstanceID)
	}
	shards, err := backend.Shards(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the shard count: %w", err)
	}
	if c.Shards != 0 && c.Shards != shards {
		return nil, &ConfigError{Field: "shards", Message: fmt.Sprintf("the worker expects %d shards; the store has %d", c.Shards, shards)}
	}
	watcher, _ := backend.(EventWatcher)
	_, isClient := backend.(*Client)
	w := &Worker{
		backend:     backend,
		watcher:     watcher,
		clock:       backend.Clock(),
		cfg:         c,
		shards:      shards,
		session:     fftype.NewUUID(),
		log:         c.Logger.With("worker_id", c.WorkerID, "worker_instance_id", c.WorkerInstanceID),
		lanes:       map[string]bool{},
		completions: opts.Completions,
		ownsClient:  opts.OwnClient && isClient,
		slots:       make(chan struct{}, c.MaxConcurrentTasks),
		freed:       make(chan struct{}, 1),
		wake:        make(chan struct{}, 1),
		closeBegun:  make(chan struct{}),
		tasks:       map[ExecutionID]*ClaimedTask{},
		handlers:    map[string]HandlerFunc{},
	}
	for _, l := range c.Lanes {
		w.lanes[l] = true
	}
	// A passing failure may come after the registration landed (its reply lost): a retry
	// under the same session refreshes it, where a new session would be refused as a
	// duplicate of this one.
	err = retryPassing(ctx, func() error {
		_, err := backend.RegisterWorker(ctx, w.registration())
		return err
	})
	if err != nil {
		w.dropRegistration(ctx)
		return nil, err
	}
	w.life, w.lifeCancel = context.WithCancelCause(context.WithoutCancel(ctx))
	if watcher != nil {
		// Follow the events before returning, so that none after NewWorker is missed. ctx
		// bounds the opening of the stream, not its life.
		stopOpening := context.AfterFunc(ctx, func() { w.lifeCancel(ErrWorkerStopped) })
		sub, err := watcher.WatchEvents(w.life, watchFilter())
		if !stopOpening() && err == nil { // ctx ended as the stream opened
			sub.Close()
			err = ctx.Err()
		}
		if err != nil {
			w.lifeCancel(ErrWorkerStopped)
			w.dropRegistration(ctx)
			return nil, err
		}
		w.bg.Go(func() { w.watch(sub) })
	}
	w.bg.Go(w.heartbeat)
	w.log.Info("worker opened", "lanes", c.Lanes, "capabilities", c.Capabilities, "shards", shards)
	return w, nil
}

// dropRegistration deregisters the instance when NewWorker fails after registering it, or
// perhaps registering it, so that opening the worker again is not refused as a duplicate
// of the failed attempt. It tries within the clean-up time; if it still fails, the
// registration lapses after its TTL.
func (w *Worker) dropRegistration(ctx context.Context) {
	cctx, cancel := w.cleanupContext(ctx)
	defer cancel()
	_ = w.deregister(cctx)
}

// deregister removes the session's registration, so that the instance id is free at
// once, retrying passing failures while ctx lives: one blip would otherwise leave the id
// taken, and a process restarting with it refused, until the registration lapses.
func (w *Worker) deregister(ctx context.Context) error {
	return retryPassing(ctx, func() error {
		return w.backend.DeregisterWorker(ctx, w.cfg.Namespace, w.cfg.WorkerInstanceID, w.session)
	})
}

// retryPassing makes call until it succeeds, fails for good (not a passing failure, see
// passing) or has failed five times, waiting 10ms, then four times longer each time, between tries
// while ctx lives. It returns call's last error.
func retryPassing(ctx context.Context, call func() error) error {
	backoff := 10 * time.Millisecond
	for try := 1; ; try++ {
		err := call()
		if err == nil || !passing(err) || try == 5 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff *= 4
	}
}

func (w *Worker) registration() WorkerRegistration {
	return WorkerRegistration{
		WorkerID:     w.cfg.WorkerID,
		InstanceID:   w.cfg.WorkerInstanceID,
		Namespace:    w.cfg.Namespace,
		Lanes:        w.cfg.Lanes,
		Capabilities: w.cfg.Capabilities,
		TTL:          w.cfg.livenessTTL(),
		Session:      w.session,
	}
}

// Backend returns the backend the worker runs on (the original's backend accessor).
func (w *Worker) Backend() Backend { return w.backend }

// Client returns the client the worker runs on in process, or nil when its backend is not
// a *Client (a worker talking to a server over HTTP).
func (w *Worker) Client() *Client {
	c, _ := w.backend.(*Client)
	return c
}

// Completions returns the completion feed given to [NewWorker], or the one
// ffconnect.Connect subscribed; nil when the worker has none (its store cannot push
// changes, or the caller gave none).
func (w *Worker) Completions() *Subscription { return w.completions }

// Config returns the worker's configuration with its defaults filled in: the instance id
// it runs as, lanes and capabilities sorted and without duplicates.
func (w *Worker) Config() WorkerConfig {
	c := w.cfg
	c.Lanes = append([]string(nil), c.Lanes...)
	c.Capabilities = append([]string(nil), c.Capabilities...)
	return c
}

// Shards returns the store's shard count, read when the worker opened (the original's
// partition configuration). Execution ids carry their shard, so callers rarely need it.
func (w *Worker) Shards() int { return w.shards }

// Held returns how many of the MaxConcurrentTasks slots are taken: by tasks claimed by hand
// and not yet finished, by Run's tasks whose handler has not returned or whose outcome is
// still being reported, and by a claim in flight.
func (w *Worker) Held() int { return len(w.slots) }

// claimParams asks for n leases with the worker's identity.
func (w *Worker) claimParams(n int) ClaimParams {
	return ClaimParams{
		WorkerID:         w.cfg.WorkerID,
		WorkerInstanceID: w.cfg.WorkerInstanceID,
		Lanes:            w.cfg.Lanes,
		Capabilities:     w.cfg.Capabilities,
		Count:            n,
		LeaseTTL:         fftype.Duration(w.cfg.LeaseTTL),
	}
}

// usable refuses calls on a closed worker or one that lost its instance id.
func (w *Worker) usable() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing() {
		return fftype.Statef(CodeWorkerClosed, "the worker was closed")
	}
	return w.guardErr
}

// tryAcquire takes up to n free slots without waiting and returns how many it took.
func (w *Worker) tryAcquire(n int) int {
	got := 0
	for got < n {
		select {
		case w.slots <- struct{}{}:
			got++
		default:
			return got
		}
	}
	return got
}

// releaseSlots gives n slots back.
func (w *Worker) releaseSlots(n int) {
	for range n {
		<-w.slots
	}
	if n > 0 {
		signal(w.freed)
	}
}

// signal sends a coalesced wake-up.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func atCapacity(max int) error {
	e := fftype.NewError(fftype.KindLimited, CodeWorkerAtCapacity, "the worker holds %d tasks, its MaxConcurrentTasks", max)
	e.Retryable = true
	return e
}

// ClaimNext claims the next execution through the one claim path, with the worker's
// lanes (taking turns) and capabilities: it is never handed an execution it cannot run.
// It returns nil and no error when the worker is at capacity (without claiming) or nothing
// was eligible: poll again soon. The task holds a slot until a finishing call lands; a
// continued attempt (after a delay or a release) is claimed transparently. If ctx ends
// while the claim runs, it returns ctx's error, and the backend gives back what the claim
// took.
func (w *Worker) ClaimNext(ctx context.Context) (*ClaimedTask, error) {
	if err := w.usable(); err != nil {
		return nil, err
	}
	if w.tryAcquire(1) == 0 {
		return nil, nil
	}
	leases, err := w.backend.Claim(ctx, w.claimParams(1))
	if err != nil || len(leases) == 0 {
		w.releaseSlots(1)
		return nil, err
	}
	return w.adopt(leases[0], nil)
}

// ClaimFromGrant consumes a claim grant issued to this worker (see [Client.IssueGrant])
// for lane. Capacity is checked first: at capacity it returns an error matching
// [ErrWorkerAtCapacity] and the grant is not touched, so it can be consumed later while
// it lasts. A grant for another lane or of another kind is refused before any store call.
// An expired, consumed or foreign grant is refused by the engine ([ErrGrantExpired],
// [ErrGrantInvalid]).
func (w *Worker) ClaimFromGrant(ctx context.Context, lane string, grant GrantRef) (*ClaimedTask, error) {
	if err := w.usable(); err != nil {
		return nil, err
	}
	if grant.Kind != GrantClaim {
		return nil, &ConfigError{Field: "kind", Message: fmt.Sprintf("grant kind is %q: consume a reclaim grant with ClaimFromReclaimGrant", grant.Kind)}
	}
	if lane != grant.Lane {
		return nil, &ConfigError{Field: "lane", Message: fmt.Sprintf("the grant is for lane %q, not %q", grant.Lane, lane)}
	}
	if w.tryAcquire(1) == 0 {
		return nil, atCapacity(w.cfg.MaxConcurrentTasks)
	}
	l, err := w.backend.ClaimGrant(ctx, GrantClaimParams{Grant: grant, WorkerID: w.cfg.WorkerID,
		WorkerInstanceID: w.cfg.WorkerInstanceID, LeaseTTL: fftype.Duration(w.cfg.LeaseTTL)})
	if err != nil {
		w.releaseSlots(1)
		return nil, err
	}
	return w.adopt(l, nil)
}

// ClaimViaServer asks a scheduler — usually the server's, through an *ffclient.Client —
// for a grant of the next execution of lane this worker would claim (matching its
// capabilities, exactly as [Worker.ClaimNext] would pick it), then consumes the grant as
// [Worker.ClaimFromGrant] does. A nil admin means the worker's own backend, which must then
// be a [GrantScheduler] (both *Client and *ffclient.Client are). grantTTL bounds how long
// the execution stays reserved between the two steps; 0 means 5s.
//
// Capacity is checked first: at capacity it returns an error matching
// [ErrWorkerAtCapacity] without asking for a grant, so nothing is reserved and the
// execution stays eligible for other workers. It returns nil and no error when nothing
// was eligible (the server's 204). A lane the worker does not serve is refused with a
// *[ConfigError] before any call. If the grant cannot be consumed, the error says why and
// the grant lapses at its expiry.
func (w *Worker) ClaimViaServer(ctx context.Context, admin GrantScheduler, lane string, grantTTL time.Duration) (*ClaimedTask, error) {
	if err := w.usable(); err != nil {
		return nil, err
	}
	if isNil(admin) {
		s, ok := w.backend.(GrantScheduler)
		if !ok {
			return nil, &ConfigError{Field: "admin", Message: "no scheduler given and the worker's backend cannot issue grants"}
		}
		admin = s
	}
	if !w.lanes[lane] {
		return nil, &ConfigError{Field: "lane", Message: fmt.Sprintf("the worker does not serve lane %q", lane)}
	}
	if grantTTL < 0 || grantTTL > fftype.MaxGrantTTL {
		return nil, &ConfigError{Field: "grant_ttl", Message: "must be 0 (5s) or up to " + fftype.MaxGrantTTL.String()}
	}
	if w.tryAcquire(1) == 0 {
		return nil, atCapacity(w.cfg.MaxConcurrentTasks)
	}
	held := true
	defer func() { // also when admin panics: the slot must not stay taken
		if held {
			w.releaseSlots(1)
		}
	}()
	p := w.claimParams(1)
	p.Lanes = []string{lane}
	grant, err := admin.GrantNext(ctx, p, grantTTL)
	if err != nil || grant == nil {
		return nil, err
	}
	l, err := w.backend.ClaimGrant(ctx, GrantClaimParams{Grant: *grant, WorkerID: w.cfg.WorkerID,
		WorkerInstanceID: w.cfg.WorkerInstanceID, LeaseTTL: fftype.Duration(w.cfg.LeaseTTL)})
	if err != nil {
		return nil, fmt.Errorf("consuming the grant of %s: %w", grant.ExecutionID, err)
	}
	held = false // adopt owns the slot now
	return w.adopt(l, nil)
}

// isNil reports whether v is nil or holds a nil pointer, such as a nil *Client passed
// as an interface.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// ReclaimArgs names what a reclaim grant is expected to reserve.
type ReclaimArgs struct {
	// ExecutionID and Lane must be the grant's.
	ExecutionID ExecutionID
	Lane        string
	// LeaseTTL of the new lease, 1s to 24h; 0 means the worker's LeaseTTL.
	LeaseTTL time.Duration
}

// ReclaimStatus is the outcome of [Worker.ClaimFromReclaimGrant].
type ReclaimStatus string

// Reclaim outcomes.
const (
	// ReclaimClaimed: a new reclaim attempt started; the outcome carries its task.
	ReclaimClaimed ReclaimStatus = "claimed"
	// ReclaimNotReclaimable: the execution is no longer waiting for a reclaim; that
	// includes a grant consumed already, whose reclaim is running or done.
	ReclaimNotReclaimable ReclaimStatus = "not_reclaimable"
	// ReclaimCapExceeded: the execution used up its reclaims and failed.
	ReclaimCapExceeded ReclaimStatus = "reclaim_cap_exceeded"
	// ReclaimGrantNotFound: the execution still waits for a reclaim, but the grant is not
	// outstanding (expired, replaced by another grant, or issued to another worker).
	ReclaimGrantNotFound ReclaimStatus = "grant_not_found"
)

// ReclaimOutcome is what [Worker.ClaimFromReclaimGrant] did.
type ReclaimOutcome struct {
	Status ReclaimStatus
	// Task is the claimed task when Status is ReclaimClaimed.
	Task *ClaimedTask
	// Detail explains the other outcomes.
	Detail string
}

// ClaimFromReclaimGrant consumes a reclaim grant — one reserving an execution whose lease
// expired or was revoked, issued with kind [GrantReclaim] — and starts a new reclaim
// attempt on this worker. Before any store call it refuses, with a *[ConfigError], a grant
// and args that name different executions or lanes, a grant that is not a reclaim grant,
// and a grant that has expired by the engine's clock; then capacity is checked, and at
// capacity it returns an error matching [ErrWorkerAtCapacity] with the grant intact.
// Otherwise it reports the outcome: claimed (with the task), not reclaimable, reclaim cap
// exceeded, or grant not found.
func (w *Worker) ClaimFromReclaimGrant(ctx context.Context, grant GrantRef, args ReclaimArgs) (*ReclaimOutcome, error) {
	if err := w.usable(); err != nil {
		return nil, err
	}
	if grant.ExecutionID != args.ExecutionID {
		return nil, &ConfigError{Field: "execution_id", Message: fmt.Sprintf("the grant is for execution %s, the args name %s", grant.ExecutionID, args.ExecutionID)}
	}
	if grant.Lane != args.Lane {
		return nil, &ConfigError{Field: "lane", Message: fmt.Sprintf("the grant is for lane %q, the args name %q", grant.Lane, args.Lane)}
	}
	if grant.Kind != GrantReclaim {
		return nil, &ConfigError{Field: "kind", Message: fmt.Sprintf("grant kind is %q: consume a claim grant with ClaimFromGrant", grant.Kind)}
	}
	if now := w.clock.Now(); !now.Before(grant.ExpiresAt) {
		return nil, &ConfigError{Field: "expires_at", Message: fmt.Sprintf("the grant expired at %s (now %s)",
			grant.ExpiresAt.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))}
	}
	ttl := args.LeaseTTL
	if ttl == 0 {
		ttl = w.cfg.LeaseTTL
	}
	if ttl != 0 && (ttl < fftype.MinLeaseTTL || ttl > fftype.MaxLeaseTTL) {
		return nil, &ConfigError{Field: "lease_ttl", Message: "must be 0 or between " + fftype.MinLeaseTTL.String() + " and " + fftype.MaxLeaseTTL.String()}
	}
	if w.tryAcquire(1) == 0 {
		return nil, atCapacity(w.cfg.MaxConcurrentTasks)
	}
	l, err := w.backend.ClaimGrant(ctx, GrantClaimParams{Grant: grant, WorkerID: w.cfg.WorkerID,
		WorkerInstanceID: w.cfg.WorkerInstanceID, LeaseTTL: fftype.Duration(ttl)})
	if err == nil {
		t, err := w.adopt(l, nil)
		if err != nil {
			return nil, err
		}
		return &ReclaimOutcome{Status: ReclaimClaimed, Task: t}, nil
	}
	w.releaseSlots(1)
	switch fftype.CodeOf(err) {
	case fftype.CodeInvalidClaimGrant, fftype.CodeClaimGrantExpired:
	default:
		return nil, err
	}
	x, gerr := w.backend.Get(ctx, grant.ExecutionID)
	switch {
	case gerr != nil:
		return nil, gerr
	case x.Phase == fftype.PhaseTerminal && x.FailureReason == "max_reclaims_exceeded":
		return &ReclaimOutcome{Status: ReclaimCapExceeded, Detail: fmt.Sprintf("reclaimed %d times, the cap", x.ReclaimCount)}, nil
	case x.Phase != fftype.PhaseRunnable || x.AttemptState != fftype.AttemptStatePendingReclaim:
		return &ReclaimOutcome{Status: ReclaimNotReclaimable, Detail: fmt.Sprintf("execution is %s (%s)", x.PublicState(), x.AttemptState)}, nil
	default:
		return &ReclaimOutcome{Status: ReclaimGrantNotFound, Detail: err.Error()}, nil
	}
}

// adopt turns a lease the worker claimed, holding a slot, into a held task with its
// renewal running. rs is the Run that claimed it, or nil for a claim by hand. On a closed
// worker it gives the lease back and fails.
func (w *Worker) adopt(l *Lease, rs *runState) (*ClaimedTask, error) {
	parent := w.life
	if rs != nil {
		parent = rs.workCtx
	}
	t := newClaimedTask(w, l, parent, rs)
	w.mu.Lock()
	if w.closing() {
		w.mu.Unlock()
		ctx, cancel := w.cleanupContext(w.life)
		defer cancel()
		_ = t.Release(ctx)
		return nil, fftype.Statef(CodeWorkerClosed, "the worker was closed")
	}
	w.tasks[l.ExecutionID] = t
	recheck := w.recent.has(l.ExecutionID)
	w.bg.Go(t.renewLoop)
	w.mu.Unlock()
	if recheck {
		w.confirm(t) // an event about it arrived between the claim and now
	}
	return t, nil
}

// unregister forgets a task that finished.
func (w *Worker) unregister(t *ClaimedTask) {
	w.mu.Lock()
	if w.tasks[t.lease.ExecutionID] == t {
		delete(w.tasks, t.lease.ExecutionID)
	}
	w.mu.Unlock()
}

// heldTasks returns the held tasks that keep matches.
func (w *Worker) heldTasks(keep func(*ClaimedTask) bool) []*ClaimedTask {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*ClaimedTask
	for _, t := range w.tasks {
		if keep == nil || keep(t) {
			out = append(out, t)
		}
	}
	return out
}

// releaseAll gives back the leases of the held tasks that keep matches.
func (w *Worker) releaseAll(ctx context.Context, keep func(*ClaimedTask) bool) error {
	var errs []error
	for _, t := range w.heldTasks(keep) {
		if err := t.Release(ctx); err != nil && !t.Finished() {
			errs = append(errs, fmt.Errorf("releasing %s: %w", t.ExecutionID(), err))
		}
	}
	return errors.Join(errs...)
}

// callTimeout bounds a background call (a renewal, a heartbeat) made every interval: a
// call that hangs (a server that stopped answering) fails in time for the next one.
func callTimeout(interval time.Duration) time.Duration { return max(interval, 2*time.Second) }

// defaultCleanupTime is the clean-up window: how long calls that must run even when the
// caller's context is done may take.
const defaultCleanupTime = 10 * time.Second

// cleanupWindow returns the clean-up window.
func (w *Worker) cleanupWindow() time.Duration {
	if w.cleanupTime > 0 {
		return w.cleanupTime
	}
	return defaultCleanupTime
}

// cleanupContext is the context of calls that must run even when the caller's context is
// done: releasing leases and deregistering on the way out.
func (w *Worker) cleanupContext(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(parent), w.cleanupWindow())
}

// Close shuts the worker down: it stops Run as [Worker.Stop] does (waiting for handlers
// until ctx ends, then cancelling them), releases the leases of the tasks still held (Run's
// and those claimed by hand, also those of finished handlers whose outcome a store outage
// kept refusing: those retries end when Close begins), stops the heartbeat, the event watch
// and every renewal, and deregisters the instance so that its id is free at once (trying
// again after a passing failure). Once ctx ended, the releases and the deregistration
// share one clean-up window of 10s, the releases stopping at 8s, so that Close returns at
// most about 10s after ctx ends and still tries to deregister even when the store stopped
// answering. A worker that owns its client (opened by ffconnect.Connect) also stops the
// client and closes its store. Calls after the first return the first's result.
func (w *Worker) Close(ctx context.Context) error {
	w.closeOnce.Do(func() { w.closeErr = w.close(ctx) })
	return w.closeErr
}

// closing reports whether Close has begun.
func (w *Worker) closing() bool {
	select {
	case <-w.closeBegun:
		return true
	default:
		return false
	}
}

func (w *Worker) close(ctx context.Context) error {
	var errs []error
	w.mu.Lock()
	close(w.closeBegun)
	w.mu.Unlock()
	if w.awaitStop(ctx, false) != nil {
		errs = append(errs, ctx.Err())
	}
	cctx, cancel := w.cleanupContext(ctx)
	defer cancel()
	// The last fifth of the window is kept for deregistering: releases on a store that
	// stopped answering would take it all.
	rctx, rcancel := context.WithTimeout(cctx, w.cleanupWindow()*4/5)
	defer rcancel()
	for _, t := range w.heldTasks(nil) {
		t.cancel(ErrWorkerStopped) // cut short by the close, before the release ends them
	}
	if err := w.releaseAll(rctx, nil); err != nil {
		errs = append(errs, err)
	}
	w.lifeCancel(ErrWorkerStopped)
	w.bg.Wait()
	if err := w.deregister(cctx); err != nil {
		errs = append(errs, fmt.Errorf("deregistering: %w", err))
	}
	if c := w.Client(); w.ownsClient && c != nil {
		if w.completions != nil {
			w.completions.Close()
		}
		c.Stop()
		if err := c.closeStore(); err != nil {
			errs = append(errs, fmt.Errorf("closing the store: %w", err))
		}
	}
	w.log.Info("worker closed")
	return errors.Join(errs...)
}

// heartbeat refreshes the registration every third of its TTL on the backend's clock. A
// registration that lapsed (the process stalled, or an operator marked it dead) is made
// again; if another process took the instance id meanwhile, the worker stops.
func (w *Worker) heartbeat() {
	clock := w.clock
	interval := w.cfg.livenessTTL() / 3
	for {
		if clock.SleepUntil(w.life, clock.Now().Add(interval), nil) != nil {
			return
		}
		ctx, cancel := context.WithTimeout(w.life, callTimeout(interval))
		_, err := w.backend.HeartbeatWorker(ctx, w.cfg.Namespace, w.cfg.WorkerInstanceID, w.session)
		if errors.Is(err, ErrWorkerNotRegistered) {
			w.log.Warn("the worker's registration lapsed; registering again")
			_, err = w.backend.RegisterWorker(ctx, w.registration())
			if errors.Is(err, ErrDuplicateWorkerInstance) {
				cancel()
				w.evict(err)
				return
			}
		}
		cancel()
		if err != nil && w.life.Err() == nil {
			w.log.Warn("worker heartbeat failed", "err", err)
		}
		if s := w.signals.Load(); s != nil {
			s.send(s.Heartbeat, "")
		}
	}
}

// evict stops a worker whose instance id another live process took over.
func (w *Worker) evict(err error) {
	w.log.Error("another process registered this worker instance id; stopping", "err", err)
	w.mu.Lock()
	w.guardErr = err
	rs := w.run
	w.mu.Unlock()
	if rs != nil {
		rs.setErr(err)
		cause := fmt.Errorf("%w: %w", ErrWorkerStopped, err)
		rs.fetchCancel(cause)
		rs.workCancel(cause)
	}
}

// watch follows the event log: events of our lanes that may make work eligible wake Run,
// and events about held executions are checked against the backend so that a task whose
// lease is gone is cancelled at once.
func (w *Worker) watch(sub EventStream) {
	defer func() { sub.Close() }()
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	const minRetry, maxRetry = 100 * time.Millisecond, 5 * time.Second
	for {
		for d := range sub.Events() {
			w.onEvent(&d.Event)
		}
		if w.life.Err() != nil {
			return
		}
		w.log.Warn("worker event feed ended; following again from the end of the log", "err", sub.Err())
		for _, t := range w.heldTasks(nil) {
			w.confirm(t)
		}
		for wait := minRetry; ; wait = min(2*wait, maxRetry) {
			retry.Reset(wait)
			select {
			case <-w.life.Done():
				return
			case <-retry.C:
			}
			next, err := w.watcher.WatchEvents(w.life, watchFilter())
			if err == nil {
				sub.Close()
				sub = next
				// Events appended while no feed was followed are not delivered: the held
				// tasks are checked again now that the new feed follows what comes next
				// (a check before it could miss a cancel in between), and work those
				// events made eligible is claimed now rather than at the next poll.
				for _, t := range w.heldTasks(nil) {
					w.confirm(t)
				}
				signal(w.wake)
				break
			}
			if w.life.Err() != nil {
				return
			}
			w.log.Warn("worker event feed could not be followed", "err", err)
		}
	}
}

func (w *Worker) onEvent(ev *Event) {
	if ev.Lane != "" && w.lanes[ev.Lane] && wakeTypes[ev.Type] {
		signal(w.wake)
	}
	if ev.ExecutionID == "" || !loseTypes[ev.Type] {
		return
	}
	w.mu.Lock()
	t := w.tasks[ev.ExecutionID]
	if t == nil {
		w.recent.add(ev.ExecutionID)
	}
	w.mu.Unlock()
	if t != nil {
		w.confirm(t)
	}
}

// confirm reads t's execution and cancels t if its lease is no longer the one t holds.
func (w *Worker) confirm(t *ClaimedTask) {
	if t.Finished() || t.lost.Load() {
		return
	}
	t.loseUnlessFinishing(func() error {
		ctx, cancel := context.WithTimeout(w.life, 10*time.Second)
		defer cancel()
		x, err := w.backend.Get(ctx, t.lease.ExecutionID)
		switch {
		case errors.Is(err, fftype.ErrExecutionNotFound):
			return fmt.Errorf("%w: %w", ErrLeaseLost, err)
		case err != nil:
			if w.life.Err() == nil {
				w.log.Warn("checking a held execution failed; the next renewal will tell", "execution_id", t.lease.ExecutionID, "err", err)
			}
			return nil
		default:
			return lostCause(x, t.lease.Fence)
		}
	})
}

// lossCause says why t's lease is gone after a call on it was refused with err, a state or
// not-found error: it reads the execution, so that a cancel shows as
// [ErrExecutionCancelled] even when it is found out by a renewal (a backend without
// events); if the read fails or shows nothing more, the cause is err.
func (w *Worker) lossCause(ctx context.Context, t *ClaimedTask, err error) error {
	if x, gerr := w.backend.Get(ctx, t.lease.ExecutionID); gerr == nil {
		if cause := lostCause(x, t.lease.Fence); cause != nil {
			return cause
		}
	}
	return fmt.Errorf("%w: %w", ErrLeaseLost, err)
}

// lostCause says why the holder of fence f no longer holds x, or nil if it still does: a
// cancel, or the engine's own answer to the holder's calls (fftype.LostLeaseError).
func lostCause(x *Execution, f Fence) error {
	if f.Names(x) && x.Ownership == fftype.OwnershipLeased {
		return nil
	}
	if x.Phase == fftype.PhaseTerminal && x.Outcome == fftype.OutcomeCancelled {
		if x.CancellationReason != "" {
			return fmt.Errorf("%w: %s", ErrExecutionCancelled, x.CancellationReason)
		}
		return ErrExecutionCancelled
	}
	lost := fftype.LostLeaseError(x, f)
	if x.Phase == fftype.PhaseTerminal && f.Names(x) {
		// The lease's end may have ended the execution too (an attempt timeout with no
		// retry left): name both, whichever the worker learned of first.
		if end := fftype.LeaseEndError(x.ID, x.LastLeaseEnd); end != nil {
			return fmt.Errorf("%w: %w: %w", ErrLeaseLost, end, lost)
		}
	}
	return fmt.Errorf("%w: %w", ErrLeaseLost, lost)
}

// recentIDs remembers the last executions that had an event while the worker held no task
// for them, so that a claim racing with such an event checks its lease at once.
type recentIDs struct {
	ring []ExecutionID
	next int
	set  map[ExecutionID]int
}

const recentSize = 1024

func (r *recentIDs) add(id ExecutionID) {
	if r.set == nil {
		r.ring, r.set = make([]ExecutionID, recentSize), map[ExecutionID]int{}
	}
	if old := r.ring[r.next]; old != "" {
		if r.set[old]--; r.set[old] <= 0 {
			delete(r.set, old)
		}
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % recentSize
	r.set[id]++
}

// has reports whether id is remembered.
func (r *recentIDs) has(id ExecutionID) bool {
	_, ok := r.set[id]
	return ok
}

// workerSignals are hooks for tests (nil in production): each receives a value when the
// named step happened. A signal that finds its buffer full is dropped.
type workerSignals struct {
	Renewed   chan ExecutionID // a renewal of the task's lease was attempted
	Heartbeat chan ExecutionID // a heartbeat was attempted
	Settled   chan ExecutionID // the runtime finished with a task (its finishing call landed or was given up)
	Claimed   chan ExecutionID // the runtime claimed a task
	Idle      chan ExecutionID // Run found nothing to claim and is waiting
	Full      chan ExecutionID // Run found every slot taken and is waiting for one
	Unclaimed chan ExecutionID // Run's claim loop ended
}

func (s *workerSignals) send(ch chan ExecutionID, id ExecutionID) {
	select {
	case ch <- id:
	default:
	}
}
