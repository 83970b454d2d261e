package fftype

// The state of an execution is a vector of dimensions, each a real field of [Execution].
// The public state is derived from them by [DerivePublicState] and never stored on its own.

// Phase is the lifecycle phase of an execution.
type Phase string

// Lifecycle phases.
const (
	PhaseRunnable  Phase = "runnable"  // waiting to be claimed (now, later, or when unblocked)
	PhaseActive    Phase = "active"    // a worker holds a lease on it
	PhaseSuspended Phase = "suspended" // parked until a signal or timeout (suspension issue)
	PhaseTerminal  Phase = "terminal"  // finished; only replay moves it on
)

// Ownership says whether a worker holds the execution.
type Ownership string

// Ownership states.
const (
	OwnershipUnowned Ownership = "unowned"
	OwnershipLeased  Ownership = "leased"
)

// Eligibility says when a runnable execution may be claimed.
type Eligibility string

// Eligibility states.
const (
	EligibilityNow           Eligibility = "eligible_now"
	EligibilityUntilTime     Eligibility = "not_eligible_until_time"
	EligibilityGranted       Eligibility = "reserved_by_grant"
	EligibilityNotApplicable Eligibility = "not_applicable"
)

// BlockingReason explains what a non-active, non-terminal execution waits for.
type BlockingReason string

// Blocking reasons.
const (
	BlockingNone                  BlockingReason = "none"
	BlockingWaitingForWorker      BlockingReason = "waiting_for_worker"
	BlockingWaitingForRetry       BlockingReason = "waiting_for_retry_backoff"
	BlockingWaitingForDelay       BlockingReason = "waiting_for_delay"
	BlockingWaitingForGrantHolder BlockingReason = "waiting_for_grant_holder"
)

// Outcome is how a terminal execution ended.
type Outcome string

// Terminal outcomes.
const (
	OutcomeNone      Outcome = "none"
	OutcomeSuccess   Outcome = "success"
	OutcomeFailed    Outcome = "failed"
	OutcomeCancelled Outcome = "cancelled"
	OutcomeExpired   Outcome = "expired"
)

// AttemptState says which kind of attempt the next claim starts, or that one is running.
// It routes the next claim: pending_first → an initial attempt; pending_retry → a retry;
// pending_replay → a replay; pending_reclaim → a reclaim (after a lease expired or was
// revoked); interrupted → the same attempt continues (after a worker delay or a release).
type AttemptState string

// Attempt states of an execution.
const (
	AttemptStatePendingFirst   AttemptState = "pending_first_attempt"
	AttemptStateRunning        AttemptState = "running_attempt"
	AttemptStateInterrupted    AttemptState = "attempt_interrupted"
	AttemptStatePendingRetry   AttemptState = "pending_retry_attempt"
	AttemptStatePendingReplay  AttemptState = "pending_replay_attempt"
	AttemptStatePendingReclaim AttemptState = "pending_reclaim_attempt"
	AttemptStateTerminal       AttemptState = "attempt_terminal"
)

// PublicState is the one-word state users see, derived from the dimensions.
type PublicState string

// Public states.
const (
	StateWaiting   PublicState = "waiting"
	StateDelayed   PublicState = "delayed"
	StateActive    PublicState = "active"
	StateSuspended PublicState = "suspended"
	StateCompleted PublicState = "completed"
	StateFailed    PublicState = "failed"
	StateCancelled PublicState = "cancelled"
	StateExpired   PublicState = "expired"
)

// PublicStates lists every public state, in lifecycle order.
var PublicStates = []PublicState{StateWaiting, StateDelayed, StateActive, StateSuspended,
	StateCompleted, StateFailed, StateCancelled, StateExpired}

// Valid reports whether s is a known public state.
func (s PublicState) Valid() bool {
	for _, p := range PublicStates {
		if p == s {
			return true
		}
	}
	return false
}

// Terminal reports whether s is a terminal public state.
func (s PublicState) Terminal() bool {
	switch s {
	case StateCompleted, StateFailed, StateCancelled, StateExpired:
		return true
	}
	return false
}

// DerivePublicState is the one function that maps the state dimensions to the public state.
func DerivePublicState(phase Phase, eligibility Eligibility, outcome Outcome) PublicState {
	switch phase {
	case PhaseTerminal:
		switch outcome {
		case OutcomeSuccess:
			return StateCompleted
		case OutcomeCancelled:
			return StateCancelled
		case OutcomeExpired:
			return StateExpired
		default:
			return StateFailed
		}
	case PhaseActive:
		return StateActive
	case PhaseSuspended:
		return StateSuspended
	default:
		if eligibility == EligibilityUntilTime {
			return StateDelayed
		}
		return StateWaiting
	}
}

// AttemptType says why an attempt was started.
type AttemptType string

// Attempt types.
const (
	AttemptInitial AttemptType = "initial"
	AttemptRetry   AttemptType = "retry"
	AttemptReplay  AttemptType = "replay"
	AttemptReclaim AttemptType = "reclaim"
)

// AttemptStatus is the lifecycle of one attempt record.
type AttemptStatus string

// Attempt statuses. Started and Paused are live; the others are final.
const (
	AttemptStarted     AttemptStatus = "started"
	AttemptPaused      AttemptStatus = "paused" // released, or delayed by its worker; the next claim continues it
	AttemptSucceeded   AttemptStatus = "ended_success"
	AttemptFailed      AttemptStatus = "ended_failure"
	AttemptCancelled   AttemptStatus = "ended_cancelled"
	AttemptInterrupted AttemptStatus = "interrupted" // its lease expired or was revoked
)

// Final reports whether the attempt has ended for good.
func (s AttemptStatus) Final() bool { return s != AttemptStarted && s != AttemptPaused }
