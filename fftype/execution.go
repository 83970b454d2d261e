package fftype

import (
	"encoding/json"
	"math"
	"time"
	"unicode/utf8"
)

// Execution is the stored record of one execution: its identity, its state dimensions,
// its counters and its current lease. The engine owns every field; stores persist it as an
// opaque value.
type Execution struct {
	ID           ExecutionID       `json:"id"`
	Namespace    string            `json:"namespace"`
	Lane         string            `json:"lane"`
	Kind         string            `json:"kind"`
	Priority     int               `json:"priority"`
	Capabilities []string          `json:"required_capabilities,omitempty"` // required by the execution, sorted
	Tags         map[string]string `json:"tags,omitempty"`
	Traceparent  string            `json:"traceparent,omitempty"`
	Policy       Policy            `json:"policy"`
	IdemKey      string            `json:"idempotency_key,omitempty"`
	Encoding     PayloadEncoding   `json:"encoding,omitempty"`

	// The state vector.
	Phase          Phase          `json:"phase"`
	Ownership      Ownership      `json:"ownership"`
	Eligibility    Eligibility    `json:"eligibility"`
	BlockingReason BlockingReason `json:"blocking_reason"`
	BlockingDetail string         `json:"blocking_detail,omitempty"`
	Outcome        Outcome        `json:"outcome"`
	AttemptState   AttemptState   `json:"attempt_state"`

	// Counters.
	TotalAttempts int `json:"total_attempts"` // also the index of the next attempt
	RetryCount    int `json:"retry_count"`    // retries since creation or the last replay
	ReplayCount   int `json:"replay_count"`
	ReclaimCount  int `json:"reclaim_count"` // reclaims since creation or the last replay

	// Current attempt and lease. LeaseEpoch only grows; the attempt fields survive terminal
	// transitions so a retried terminal call by the same holder can be recognised.
	CurrentAttempt   int       `json:"current_attempt"` // -1 before the first claim
	AttemptID        string    `json:"attempt_id,omitempty"`
	LeaseID          string    `json:"lease_id,omitempty"`
	LeaseEpoch       uint64    `json:"lease_epoch,omitempty"`
	WorkerID         string    `json:"worker_id,omitempty"`
	WorkerInstanceID string    `json:"worker_instance_id,omitempty"`
	LeaseTTL         Duration  `json:"lease_ttl_ms,omitempty"`
	LeaseExpiresAt   time.Time `json:"lease_expires_at,omitzero"`
	LeaseRenewedAt   time.Time `json:"lease_renewed_at,omitzero"`
	// LastLeaseEnd says how the lease of epoch LeaseEpoch ended when it did not end with a
	// call by its holder: one of the LeaseEnd constants. Fenced calls use it to answer
	// lease_expired, lease_revoked or attempt_timed_out instead of a bare stale_lease.
	LastLeaseEnd string `json:"last_lease_end,omitempty"`
	// Attempt is the latest attempt (index CurrentAttempt), nil before the first claim.
	// It is stored with the execution, so a transition reads and writes one record;
	// earlier attempts are stored apart once a new one starts.
	Attempt *Attempt `json:"attempt,omitempty"`

	// Grant reservation (claim or reclaim grant) while Eligibility is EligibilityGranted.
	Grant *Grant `json:"grant,omitempty"`

	// Times.
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	StartedAt        time.Time `json:"started_at,omitzero"`
	CompletedAt      time.Time `json:"completed_at,omitzero"`
	DelayUntil       time.Time `json:"delay_until,omitzero"`
	AttemptTimeoutAt time.Time `json:"attempt_timeout_at,omitzero"`
	DeadlineAt       time.Time `json:"deadline_at,omitzero"`

	// Progress of the running attempt, as last reported by its worker.
	ProgressPercent int       `json:"progress_percent,omitempty"`
	ProgressMessage string    `json:"progress_message,omitempty"`
	ProgressAt      time.Time `json:"progress_at,omitzero"`

	// Why the execution last failed or was cancelled.
	FailureReason      string `json:"failure_reason,omitempty"`
	FailureCategory    string `json:"failure_category,omitempty"`
	CancellationReason string `json:"cancellation_reason,omitempty"`
	CancelledBy        string `json:"cancelled_by,omitempty"`

	// Lineage the next attempt inherits.
	PendingReason string `json:"pending_reason,omitempty"`
}

// MarshalJSON encodes the record with its derived public state as "state".
func (e Execution) MarshalJSON() ([]byte, error) {
	type plain Execution // without this method
	return json.Marshal(struct {
		plain
		State PublicState `json:"state"`
	}{plain(e), e.PublicState()})
}

// PublicState derives the execution's public state from its dimensions.
func (e *Execution) PublicState() PublicState {
	return DerivePublicState(e.Phase, e.Eligibility, e.Outcome)
}

// Fence returns the execution's current lease fence.
func (e *Execution) Fence() Fence {
	return Fence{LeaseID: e.LeaseID, Epoch: e.LeaseEpoch, AttemptID: e.AttemptID}
}

// Grant is a reservation of an execution for one worker until it expires. A claim grant
// reserves an eligible execution for an ordinary claim; a reclaim grant reserves one whose
// lease expired or was revoked for a reclaim attempt.
type Grant struct {
	ID        string    `json:"id"`
	Kind      GrantKind `json:"kind"`
	WorkerID  string    `json:"worker_id"`
	Lane      string    `json:"lane"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// GrantKind distinguishes claim grants from reclaim grants.
type GrantKind string

// Grant kinds.
const (
	GrantClaim   GrantKind = "claim"
	GrantReclaim GrantKind = "reclaim"
)

// Fence is the triple that every lease-bound call carries. A call whose fence does not
// match the execution's current lease is refused and changes nothing; one without all
// three parts is refused as invalid (the required tags say so in the HTTP API's document).
type Fence struct {
	LeaseID   string `json:"lease_id" required:"true"`
	Epoch     uint64 `json:"lease_epoch" required:"true"`
	AttemptID string `json:"attempt_id" required:"true"`
}

// Values of Execution.LastLeaseEnd.
const (
	LeaseEndExpired  = "expired"   // the lease's time ran out
	LeaseEndRevoked  = "revoked"   // an operator took it back
	LeaseEndReleased = "released"  // its holder gave it back (a worker shutting down)
	LeaseEndTimedOut = "timed_out" // the attempt's timeout failed the attempt
)

// Names reports whether f names the latest lease of x, held or not.
func (f Fence) Names(x *Execution) bool {
	return x.LeaseID == f.LeaseID && x.LeaseEpoch == f.Epoch && x.AttemptID == f.AttemptID
}

// LostLeaseError says why the holder of fence f may no longer act on x, whose lease f does
// not hold: the execution finished (execution_not_active, whichever timer fired first);
// else f's lease ended without a call by its holder (lease_expired, lease_revoked,
// attempt_timed_out); else a plain stale_lease. The engine answers fenced calls with it,
// and workers name the cause of a lost task with it.
func LostLeaseError(x *Execution, f Fence) *Error {
	if x.Phase == PhaseTerminal {
		return Statef(CodeExecutionNotActive, "execution %s is %s", x.ID, x.PublicState())
	}
	if f.Names(x) {
		if err := LeaseEndError(x.ID, x.LastLeaseEnd); err != nil {
			return err
		}
	}
	return Statef(CodeStaleLease, "the fence does not match the current lease on %s (epoch %d)", x.ID, x.LeaseEpoch)
}

// LeaseEndError is the error that refuses the holder of the lease on execution id once the
// lease ended, or is due to end, as how: lease_expired, lease_revoked or attempt_timed_out
// for LeaseEndExpired, LeaseEndRevoked and LeaseEndTimedOut; nil for any other how.
func LeaseEndError(id ExecutionID, how string) *Error {
	switch how {
	case LeaseEndExpired:
		return Statef(CodeLeaseExpired, "the lease on %s expired", id)
	case LeaseEndRevoked:
		return Statef(CodeLeaseRevoked, "the lease on %s was revoked", id)
	case LeaseEndTimedOut:
		return Statef(CodeAttemptTimedOut, "the attempt on %s timed out", id)
	}
	return nil
}

// Complete reports whether all three parts are set.
func (f Fence) Complete() bool { return f.LeaseID != "" && f.Epoch != 0 && f.AttemptID != "" }

// Empty reports whether no part is set.
func (f Fence) Empty() bool { return f.LeaseID == "" && f.Epoch == 0 && f.AttemptID == "" }

// Attempt is the stored record of one attempt of an execution.
type Attempt struct {
	ExecutionID      ExecutionID   `json:"execution_id"`
	Index            int           `json:"index"`
	ID               string        `json:"id"`
	Type             AttemptType   `json:"type"`
	Status           AttemptStatus `json:"status"`
	LeaseID          string        `json:"lease_id"`
	LeaseEpoch       uint64        `json:"lease_epoch"`
	WorkerID         string        `json:"worker_id"`
	WorkerInstanceID string        `json:"worker_instance_id"`
	Reason           string        `json:"reason,omitempty"` // why it started (retry/replay/reclaim lineage)
	PreviousAttempt  int           `json:"previous_attempt"` // -1 when none
	CreatedAt        time.Time     `json:"created_at"`
	EndedAt          time.Time     `json:"ended_at,omitzero"`
	PausedAt         time.Time     `json:"paused_at,omitzero"`
	ResumedAt        time.Time     `json:"resumed_at,omitzero"`
	FailureReason    string        `json:"failure_reason,omitempty"`
	FailureCategory  string        `json:"failure_category,omitempty"`
}

// PayloadEncoding says how a payload's bytes are to be read.
type PayloadEncoding string

// Payload encodings.
const (
	EncodingJSON   PayloadEncoding = "json"
	EncodingBinary PayloadEncoding = "binary"
)

// ValidJSON reports whether b is one JSON value in UTF-8, as JSON must be (RFC 8259);
// json.Valid alone does not check the UTF-8.
func ValidJSON(b []byte) bool { return json.Valid(b) && utf8.Valid(b) }

// CheckPayload checks payload or result b, named field, against encoding enc ("" means
// JSON): JSON must be empty or ValidJSON; binary may be any bytes. It returns the
// effective encoding.
func CheckPayload(field string, b []byte, enc PayloadEncoding) (PayloadEncoding, error) {
	switch enc {
	case "", EncodingJSON:
		if len(b) > 0 && !ValidJSON(b) {
			return "", Validationf(CodeInvalidInput, "%s is not valid JSON in UTF-8 (use the binary encoding for raw bytes)", field)
		}
		return EncodingJSON, nil
	case EncodingBinary:
		return enc, nil
	default:
		return "", Validationf(CodeInvalidInput, "%s encoding %q: want %q or %q", field, enc, EncodingJSON, EncodingBinary)
	}
}

// Duration is a time.Duration that encodes in JSON as integer milliseconds.
type Duration time.Duration

// MarshalJSON encodes d as integer milliseconds (see Millis).
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.Millis())
}

// maxMillis is the largest count of whole milliseconds a time.Duration holds (about 292
// years), either way.
const maxMillis = math.MaxInt64 / int64(time.Millisecond)

// Millis returns d in whole milliseconds, the unit of the JSON API, rounded away from
// zero: a non-zero duration never becomes 0 (which the API reads as the default, or no
// delay or wait), nor changes sign, and one past a limit (the limits are whole
// milliseconds) stays past it, so a server refuses it as the engine does in process. The
// one difference: a duration less than a millisecond short of a lower limit (a 999.5ms
// lease TTL) reads as that limit. The count is at most maxMillis either way (it clamps
// the few nanoseconds past it at the extremes, far beyond every limit), so that
// UnmarshalJSON takes whatever MarshalJSON wrote.
func (d Duration) Millis() int64 {
	ms := int64(time.Duration(d) / time.Millisecond)
	switch rem := time.Duration(d) % time.Millisecond; {
	case rem > 0:
		ms++
	case rem < 0:
		ms--
	}
	return max(-maxMillis, min(ms, maxMillis))
}

// UnmarshalJSON decodes integer milliseconds. A count beyond what a time.Duration holds
// (about 292 years) is refused rather than wrapped around into a small one.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var ms int64
	if err := json.Unmarshal(b, &ms); err != nil {
		return err
	}
	if ms > maxMillis || ms < -maxMillis {
		return Validationf(CodeInvalidInput, "%d ms is out of range for a duration", ms)
	}
	*d = Duration(time.Duration(ms) * time.Millisecond)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
