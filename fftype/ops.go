package fftype

import "time"

// CreateParams describes one execution to create.
type CreateParams struct {
	// ID is the execution's id. Empty means the engine mints one. A given id must name a
	// shard of the store and, with an IdempotencyKey, the shard that key maps to.
	ID ExecutionID `json:"id,omitempty"`
	// Namespace is the tenant; empty means "default".
	Namespace string `json:"namespace,omitempty"`
	// Lane is the queue the execution waits in. Required.
	Lane string `json:"lane"`
	// Kind names the handler that runs it. Required.
	Kind string `json:"kind"`
	// Payload is the input. With EncodingJSON (the default) it must be valid JSON in UTF-8,
	// or empty.
	Payload  []byte          `json:"-"`
	Encoding PayloadEncoding `json:"encoding,omitempty"`
	// Priority orders eligible executions of a lane: higher first, 0 to 9000.
	Priority int `json:"priority,omitempty"`
	// Capabilities a worker must hold to be handed this execution.
	Capabilities []string `json:"required_capabilities,omitempty"`
	// Tags are the execution's labels: at most 64, keys a lowercase letter then
	// [a-z0-9_.-], values UTF-8 of at most 1,024 bytes. A tag whose value is "" is not
	// kept, as SetTags removes it.
	Tags map[string]string `json:"tags,omitempty"`
	// Traceparent is a W3C trace context carried to the worker.
	Traceparent string `json:"traceparent,omitempty"`
	Policy      Policy `json:"policy"`
	// IdempotencyKey makes a retried create find the first execution made with the same
	// key in the same namespace, for Policy.DedupWindow or until that execution is
	// deleted (Config.Retention after it ended), whichever comes first. At most 256 bytes
	// of UTF-8 with no control character.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Delay keeps the execution from being claimed until Delay has passed. RunAt does the
	// same with an absolute time; set at most one.
	Delay Duration  `json:"delay_ms,omitempty"`
	RunAt time.Time `json:"run_at,omitzero"`
}

// CreateResult is the outcome of one create.
type CreateResult struct {
	ID    ExecutionID `json:"id"`
	State PublicState `json:"state"`
	// Duplicate is true when the id or idempotency key named an existing execution; ID is
	// then that execution's id and nothing was written.
	Duplicate bool `json:"duplicate"`
}

// BulkCreateResult is the outcome of one item of a bulk create: a result or an error.
type BulkCreateResult struct {
	Result *CreateResult
	Err    error
}

// ClaimParams asks for up to Count executions for one worker.
type ClaimParams struct {
	WorkerID         string   `json:"worker_id"`
	WorkerInstanceID string   `json:"worker_instance_id"`
	Lanes            []string `json:"lanes"`
	// Capabilities the worker holds; it is handed only executions whose required
	// capabilities are a subset.
	Capabilities []string `json:"capabilities,omitempty"`
	// Count is the most leases to return, 1 to 1000; 0 means 1.
	Count int `json:"count,omitempty"`
	// LeaseTTL overrides the executions' policy lease TTL when non-zero.
	LeaseTTL Duration `json:"lease_ttl_ms,omitempty"`
}

// MaxClaimCount bounds ClaimParams.Count.
const MaxClaimCount = 1000

// Lease is a claimed execution: what the worker needs to run it and the fence it must
// present on every call.
type Lease struct {
	ExecutionID  ExecutionID       `json:"execution_id"`
	Namespace    string            `json:"namespace"`
	Lane         string            `json:"lane"`
	Kind         string            `json:"kind"`
	Payload      []byte            `json:"-"`
	Encoding     PayloadEncoding   `json:"encoding"`
	Priority     int               `json:"priority"`
	Tags         map[string]string `json:"tags,omitempty"`
	Traceparent  string            `json:"traceparent,omitempty"`
	Fence        Fence             `json:"fence"`
	AttemptIndex int               `json:"attempt_index"`
	AttemptType  AttemptType       `json:"attempt_type"`
	// Resumed is true when the lease continues an attempt paused by a delay or release.
	Resumed   bool      `json:"resumed"`
	TTL       Duration  `json:"lease_ttl_ms"`
	ExpiresAt time.Time `json:"expires_at"`
	// RetryCount is the number of retries scheduled so far.
	RetryCount int `json:"retry_count"`
}

// FailParams describes a failed attempt.
type FailParams struct {
	Reason string `json:"reason"`
	// Category classifies the failure ("transient", "permanent", "timeout", …); a category
	// listed in the retry policy's NonRetryable fails the execution at once. At most 64
	// bytes of UTF-8.
	Category string `json:"category,omitempty"`
	// NoRetry fails the execution at once, whatever the policy.
	NoRetry bool `json:"no_retry,omitempty"`
}

// FailOutcome is what a failure did.
type FailOutcome struct {
	// RetryScheduled is true when the execution will be retried at RetryAt; false when it
	// failed for good.
	RetryScheduled bool      `json:"retry_scheduled"`
	RetryAt        time.Time `json:"retry_at,omitzero"`
}

// GrantParams asks for a stand-alone grant reserving one execution for one worker.
type GrantParams struct {
	WorkerID     string   `json:"worker_id"`
	Capabilities []string `json:"capabilities,omitempty"`
	// TTL is how long the reservation lasts, 1ms to 1h; 0 means 5s.
	TTL Duration `json:"ttl_ms,omitempty"`
}

// Grant limits.
const (
	DefaultGrantTTL = 5 * time.Second
	MaxGrantTTL     = time.Hour
)

// GrantRef is a grant as handed to a worker, to consume with a grant claim, which reads
// only its ID and ExecutionID (the required tags say so in the HTTP API's document).
type GrantRef struct {
	ID          string      `json:"grant_id" required:"true"`
	Kind        GrantKind   `json:"kind"`
	ExecutionID ExecutionID `json:"execution_id" required:"true"`
	Lane        string      `json:"lane"`
	WorkerID    string      `json:"worker_id"`
	ExpiresAt   time.Time   `json:"expires_at"`
}

// GrantClaimParams consumes a grant.
type GrantClaimParams struct {
	Grant            GrantRef `json:"grant"`
	WorkerID         string   `json:"worker_id"`
	WorkerInstanceID string   `json:"worker_instance_id"`
	LeaseTTL         Duration `json:"lease_ttl_ms,omitempty"`
}

// ListParams filters and pages a listing of executions. Zero fields do not filter.
type ListParams struct {
	Namespace string      `json:"namespace,omitempty"`
	Lane      string      `json:"lane,omitempty"`
	State     PublicState `json:"state,omitempty"`
	Kind      string      `json:"kind,omitempty"`
	// Cursor continues a previous listing; empty starts at the oldest execution.
	Cursor string `json:"cursor,omitempty"`
	// Limit is the page size, 1 to 1000; 0 means 100.
	Limit int `json:"limit,omitempty"`
}

// ListPage is one page of a listing. Cursor is empty when there is nothing more.
type ListPage struct {
	Executions []*Execution `json:"executions"`
	Cursor     string       `json:"cursor,omitempty"`
}

// LaneInfo is the stored state of a lane.
type LaneInfo struct {
	Name      string    `json:"name"`
	Paused    bool      `json:"paused"`
	UpdatedAt time.Time `json:"updated_at"`
}

// CancelParams describes a cancel. With a Fence the lease holder cancels its own
// execution; without one an operator cancels any non-terminal execution.
type CancelParams struct {
	Reason string `json:"reason,omitempty"`
	Fence  *Fence `json:"fence,omitempty"`
}
