package ffserver

import (
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// The wire forms of requests and responses. Payloads and results travel as JSON values
// as they are (payload) or, for binary data, as base64 (payload_base64). A JSON value
// keeps its value but not its whitespace: encoding/json compacts a json.RawMessage it
// writes, so leases carry payloads compacted (GET …/payload answers the stored bytes). A
// request field tagged required:"true" must be present and not null (see
// requiredFields); the format tag gives a field's OpenAPI format.

// CreateRequest is the body of POST /v1/executions and one item of a bulk create.
type CreateRequest struct {
	ID                   fftype.ExecutionID `json:"id,omitempty"`
	Namespace            string             `json:"namespace,omitempty"`
	Lane                 string             `json:"lane" required:"true"`
	Kind                 string             `json:"kind" required:"true"`
	Payload              json.RawMessage    `json:"payload,omitempty"`
	PayloadBase64        string             `json:"payload_base64,omitempty" format:"byte"`
	Priority             int                `json:"priority,omitempty"`
	RequiredCapabilities []string           `json:"required_capabilities,omitempty"`
	Tags                 map[string]string  `json:"tags,omitempty"`
	Traceparent          string             `json:"traceparent,omitempty"`
	Policy               fftype.Policy      `json:"policy"`
	IdempotencyKey       string             `json:"idempotency_key,omitempty"`
	DelayMS              int64              `json:"delay_ms,omitempty"`
	RunAt                time.Time          `json:"run_at,omitzero"`
}

func (c *CreateRequest) params() (fftype.CreateParams, error) {
	payload, enc, err := DecodePayload("payload", c.Payload, c.PayloadBase64)
	if err != nil {
		return fftype.CreateParams{}, err
	}
	delay, err := ms(c.DelayMS, "delay_ms", fftype.MaxDelay)
	if err != nil {
		return fftype.CreateParams{}, err
	}
	return fftype.CreateParams{
		ID: c.ID, Namespace: c.Namespace, Lane: c.Lane, Kind: c.Kind, Payload: payload, Encoding: enc,
		Priority: c.Priority, Capabilities: c.RequiredCapabilities, Tags: c.Tags, Traceparent: c.Traceparent,
		Policy: c.Policy, IdempotencyKey: c.IdempotencyKey,
		Delay: fftype.Duration(delay), RunAt: c.RunAt,
	}, nil
}

// BulkCreateRequest is the body of POST /v1/executions/bulk.
type BulkCreateRequest struct {
	Executions []CreateRequest `json:"executions" required:"true"`
}

// BulkCreateResponse has one item per request item, in order: a result or an error.
type BulkCreateResponse struct {
	Results []BulkItem `json:"results"`
}

// BulkItem is one item's outcome.
type BulkItem struct {
	Result *fftype.CreateResult `json:"result,omitempty"`
	Error  *ErrorBody           `json:"error,omitempty"`
}

// maxBulk bounds the items of one bulk create.
const maxBulk = 10_000

// LeaseView is a lease on the wire.
type LeaseView struct {
	fftype.Lease
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payload_base64,omitempty" format:"byte"`
}

func leaseView(l *fftype.Lease) LeaseView {
	v := LeaseView{Lease: *l}
	v.Payload, v.PayloadBase64 = EncodePayload(l.Payload, l.Encoding)
	return v
}

// ClaimRequest is the body of POST /v1/claim.
type ClaimRequest struct {
	WorkerID         string   `json:"worker_id" required:"true"`
	WorkerInstanceID string   `json:"worker_instance_id" required:"true"`
	Lanes            []string `json:"lanes" required:"true"`
	Capabilities     []string `json:"capabilities,omitempty"`
	Count            int      `json:"count,omitempty"`
	LeaseTTLMS       int64    `json:"lease_ttl_ms,omitempty"`
	// WaitMS long-polls: with nothing eligible, the request waits up to this long for work.
	WaitMS int64 `json:"wait_ms,omitempty"`
}

// ClaimResponse carries the leases a claim got; empty when nothing was eligible.
type ClaimResponse struct {
	Leases []LeaseView `json:"leases"`
}

// FenceRequest is the body of lease-bound calls that carry nothing but the fence.
type FenceRequest struct {
	Fence fftype.Fence `json:"fence" required:"true"`
}

// RenewRequest is the body of POST /v1/executions/{id}/renew.
type RenewRequest struct {
	Fence      fftype.Fence `json:"fence" required:"true"`
	LeaseTTLMS int64        `json:"lease_ttl_ms,omitempty"`
}

// RenewResponse carries the new lease expiry.
type RenewResponse struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// ProgressRequest is the body of POST /v1/executions/{id}/progress.
type ProgressRequest struct {
	Fence   fftype.Fence `json:"fence" required:"true"`
	Percent int          `json:"percent" required:"true"`
	Message string       `json:"message,omitempty"`
}

// CompleteRequest is the body of POST /v1/executions/{id}/complete.
type CompleteRequest struct {
	Fence        fftype.Fence    `json:"fence" required:"true"`
	Result       json.RawMessage `json:"result,omitempty"`
	ResultBase64 string          `json:"result_base64,omitempty" format:"byte"`
}

// FailRequest is the body of POST /v1/executions/{id}/fail.
type FailRequest struct {
	Fence    fftype.Fence `json:"fence" required:"true"`
	Reason   string       `json:"reason"`
	Category string       `json:"category,omitempty"`
	NoRetry  bool         `json:"no_retry,omitempty"`
}

// DelayRequest is the body of POST /v1/executions/{id}/delay.
type DelayRequest struct {
	Fence   fftype.Fence `json:"fence" required:"true"`
	DelayMS int64        `json:"delay_ms" required:"true"`
}

// CancelRequest is the body of POST /v1/executions/{id}/cancel: with a fence the lease
// holder cancels, without one an operator does.
type CancelRequest struct {
	Reason string        `json:"reason,omitempty"`
	Fence  *fftype.Fence `json:"fence,omitempty"`
}

// ReasonRequest is a body carrying an optional reason.
type ReasonRequest struct {
	Reason string `json:"reason,omitempty"`
}

// PriorityRequest is the body of PUT /v1/executions/{id}/priority.
type PriorityRequest struct {
	Priority int `json:"priority" required:"true"`
}

// TagsRequest is the body of POST /v1/executions/{id}/tags.
type TagsRequest struct {
	Tags map[string]string `json:"tags" required:"true"`
}

// GrantRequest is the body of POST /v1/executions/{id}/grants.
type GrantRequest struct {
	Kind         fftype.GrantKind `json:"kind" required:"true"`
	WorkerID     string           `json:"worker_id" required:"true"`
	Capabilities []string         `json:"capabilities,omitempty"`
	TTLMS        int64            `json:"ttl_ms,omitempty"`
}

// GrantClaimRequest is the body of POST /v1/grants/claim.
type GrantClaimRequest struct {
	Grant            fftype.GrantRef `json:"grant" required:"true"`
	WorkerID         string          `json:"worker_id" required:"true"`
	WorkerInstanceID string          `json:"worker_instance_id" required:"true"`
	LeaseTTLMS       int64           `json:"lease_ttl_ms,omitempty"`
}

// ReplayManyRequest is the body of POST /v1/dead-letter/replay: the ids to replay.
type ReplayManyRequest struct {
	IDs []fftype.ExecutionID `json:"ids" required:"true"`
}

// ReplayManyResponse has one item per id, in order.
type ReplayManyResponse struct {
	Results []ReplayItem `json:"results"`
}

// ReplayItem is one replay's outcome.
type ReplayItem struct {
	ID    fftype.ExecutionID `json:"id"`
	Error *ErrorBody         `json:"error,omitempty"`
}

// StateResponse is the body of GET /v1/executions/{id}/state.
type StateResponse struct {
	State fftype.PublicState `json:"state"`
}

// AttemptsResponse is the body of GET /v1/executions/{id}/attempts.
type AttemptsResponse struct {
	Attempts []*fftype.Attempt `json:"attempts"`
}

// StatusResponse is the body of health checks.
type StatusResponse struct {
	Status string `json:"status"`
}

// OKResponse is the body of calls that return nothing else.
type OKResponse struct {
	OK bool `json:"ok"`
}

// DecodePayload turns the wire form of a payload or result — a JSON value, or a base64
// string for binary data — into bytes and their encoding. field names it in errors.
func DecodePayload(field string, raw json.RawMessage, b64 string) ([]byte, fftype.PayloadEncoding, error) {
	switch {
	case len(raw) > 0 && b64 != "":
		return nil, "", badRequest("set %s or %s_base64, not both", field, field)
	case b64 != "":
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, "", badRequest("%s_base64 is not standard base64", field)
		}
		return b, fftype.EncodingBinary, nil
	default:
		return raw, fftype.EncodingJSON, nil
	}
}

// EncodePayload renders bytes as their wire form: a JSON value, or base64 for binary
// data (and for bytes that are not valid JSON, as records older than the UTF-8 check
// may hold).
func EncodePayload(b []byte, enc fftype.PayloadEncoding) (json.RawMessage, string) {
	if len(b) == 0 {
		return nil, ""
	}
	if enc == fftype.EncodingBinary || !fftype.ValidJSON(b) {
		return nil, base64.StdEncoding.EncodeToString(b)
	}
	return json.RawMessage(b), ""
}

// InfoResponse is the body of GET /v1/info: what a remote worker reads when it opens.
type InfoResponse struct {
	// Shards is the store's shard count.
	Shards int `json:"shards"`
	// Now is the engine clock's time, which remote workers follow.
	Now time.Time `json:"now"`
}

// RegisterWorkerRequest is the body of POST /v1/workers.
type RegisterWorkerRequest struct {
	WorkerID         string   `json:"worker_id" required:"true"`
	WorkerInstanceID string   `json:"worker_instance_id" required:"true"`
	Namespace        string   `json:"namespace,omitempty"`
	Lanes            []string `json:"lanes" required:"true"`
	Capabilities     []string `json:"capabilities,omitempty"`
	// TTLMS is how long the registration lives without a heartbeat, 1s to 48h.
	TTLMS int64 `json:"ttl_ms" required:"true"`
	// Session is a secret the worker process minted; only the same session may refresh,
	// heartbeat or deregister the registration.
	Session string `json:"session" required:"true"`
}

// RegisterWorkerResponse is the outcome of a registration.
type RegisterWorkerResponse struct {
	// Refreshed is true when the session's own live registration was updated.
	Refreshed bool      `json:"refreshed"`
	ExpiresAt time.Time `json:"expires_at"`
}

// WorkerSessionRequest is the body of a worker instance's heartbeat and deregistration.
type WorkerSessionRequest struct {
	Namespace string `json:"namespace,omitempty"`
	Session   string `json:"session" required:"true"`
}

// HeartbeatResponse carries the registration's new expiry.
type HeartbeatResponse struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// MarkDeadRequest is the body of POST /v1/workers/{worker_instance_id}/mark-dead.
type MarkDeadRequest struct {
	Namespace string `json:"namespace,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// MarkDeadResponse says how many of the dead worker's leases expired.
type MarkDeadResponse struct {
	ExpiredLeases int `json:"expired_leases"`
}

// WorkerGrantRequest is the body of POST /v1/workers/{worker_id}/claim-grant: the worker
// instance asking the scheduler for a grant, its lanes and capabilities.
type WorkerGrantRequest struct {
	WorkerInstanceID string   `json:"worker_instance_id" required:"true"`
	Lanes            []string `json:"lanes" required:"true"`
	Capabilities     []string `json:"capabilities,omitempty"`
	// GrantTTLMS is how long the grant reserves the execution; 0 means 5s, at most 1h.
	GrantTTLMS int64 `json:"grant_ttl_ms,omitempty"`
}
