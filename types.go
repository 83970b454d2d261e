package flowfabric

import "github.com/flowfabric/flowfabric/fftype"

// The vocabulary of the API lives in package fftype, which imports nothing of this module,
// so that stores, the server and the client share it. These aliases let users name it from
// here.
type (
	// ExecutionID identifies an execution; see [fftype.ExecutionID].
	ExecutionID = fftype.ExecutionID
	// Execution is an execution's record; see [fftype.Execution].
	Execution = fftype.Execution
	// Attempt is one attempt of an execution.
	Attempt = fftype.Attempt
	// Policy is fixed at creation: retries, timeouts, lease TTL and caps.
	Policy = fftype.Policy
	// RetryPolicy decides whether and when a failed attempt is retried.
	RetryPolicy = fftype.RetryPolicy
	// Backoff is the delay schedule between retries.
	Backoff = fftype.Backoff
	// Duration is a time.Duration that encodes as milliseconds in JSON.
	Duration = fftype.Duration
	// CreateParams describes an execution to create.
	CreateParams = fftype.CreateParams
	// CreateResult is the outcome of a create.
	CreateResult = fftype.CreateResult
	// BulkCreateResult is the outcome of one item of a bulk create.
	BulkCreateResult = fftype.BulkCreateResult
	// ClaimParams asks for leases for one worker.
	ClaimParams = fftype.ClaimParams
	// Lease is a claimed execution and the fence its holder presents.
	Lease = fftype.Lease
	// Fence is the lease triple every lease-bound call carries.
	Fence = fftype.Fence
	// FailParams describes a failed attempt.
	FailParams = fftype.FailParams
	// FailOutcome says whether a failure was retried.
	FailOutcome = fftype.FailOutcome
	// CancelParams describes a cancel.
	CancelParams = fftype.CancelParams
	// GrantParams asks for a grant.
	GrantParams = fftype.GrantParams
	// GrantRef is an issued grant.
	GrantRef = fftype.GrantRef
	// GrantKind distinguishes claim and reclaim grants.
	GrantKind = fftype.GrantKind
	// GrantClaimParams consumes a grant.
	GrantClaimParams = fftype.GrantClaimParams
	// ListParams filters a listing.
	ListParams = fftype.ListParams
	// ListPage is one page of a listing.
	ListPage = fftype.ListPage
	// LaneInfo is a lane's state.
	LaneInfo = fftype.LaneInfo
	// PublicState is the state users see.
	PublicState = fftype.PublicState
	// PayloadEncoding says how payload bytes are read.
	PayloadEncoding = fftype.PayloadEncoding
	// Clock is the engine's time source.
	Clock = fftype.Clock
	// Error is the typed error every operation returns.
	Error = fftype.Error
	// Event is one entry of the event log.
	Event = fftype.Event
	// EventType names a transition.
	EventType = fftype.EventType
	// EventFilter selects events for a subscription or consumer.
	EventFilter = fftype.EventFilter
	// Delivery is one event handed to a subscriber, with the cursor after it.
	Delivery = fftype.Delivery
)

// Grant kinds, public states and payload encodings.
const (
	GrantClaim   = fftype.GrantClaim
	GrantReclaim = fftype.GrantReclaim

	StateWaiting   = fftype.StateWaiting
	StateDelayed   = fftype.StateDelayed
	StateActive    = fftype.StateActive
	StateSuspended = fftype.StateSuspended
	StateCompleted = fftype.StateCompleted
	StateFailed    = fftype.StateFailed
	StateCancelled = fftype.StateCancelled
	StateExpired   = fftype.StateExpired

	EncodingJSON   = fftype.EncodingJSON
	EncodingBinary = fftype.EncodingBinary
)

// Error sentinels for errors.Is; see package fftype for the full set of codes.
var (
	ErrNotFound     = fftype.ErrNotFound
	ErrValidation   = fftype.ErrValidation
	ErrConflict     = fftype.ErrConflict
	ErrState        = fftype.ErrState
	ErrContention   = fftype.ErrContention
	ErrLimited      = fftype.ErrLimited
	ErrTooLarge     = fftype.ErrTooLarge
	ErrUnavailable  = fftype.ErrUnavailable
	ErrStaleLease   = fftype.ErrStaleLease
	ErrLeaseExpired = fftype.ErrLeaseExpired
	ErrLeaseRevoked = fftype.ErrLeaseRevoked
	// ErrAttemptTimedOut refuses the holder of an attempt past its timeout.
	ErrAttemptTimedOut = fftype.ErrAttemptTimedOut
	ErrNotActive       = fftype.ErrExecutionNotActive
	ErrGrantExpired    = fftype.ErrClaimGrantExpired
	ErrGrantInvalid    = fftype.ErrInvalidClaimGrant
	// ErrCursorExpired ends a subscription (or refuses a cursor) that fell behind the
	// log's retention.
	ErrCursorExpired = fftype.ErrCursorExpired
)
