package fftype

import (
	"errors"
	"fmt"
	"slices"
)

// Kind classifies an [Error]. Callers branch on the kind; the HTTP layer maps each kind to
// one status code.
type Kind string

// The error kinds. Each [Error] has exactly one.
const (
	KindNotFound        Kind = "not_found"       // the named entity does not exist
	KindValidation      Kind = "validation"      // the input is malformed or out of range
	KindConflict        Kind = "conflict"        // the request conflicts with existing data
	KindState           Kind = "state"           // the entity is not in a state that allows the operation
	KindContention      Kind = "contention"      // a concurrent change won; retrying may succeed
	KindLimited         Kind = "limited"         // a rate, capacity or count limit refused the operation
	KindTooLarge        Kind = "too_large"       // the input is larger than allowed
	KindUnauthenticated Kind = "unauthenticated" // credentials are missing or wrong
	KindUnavailable     Kind = "unavailable"     // the store or a dependency cannot be reached
)

// Kinds lists every kind.
var Kinds = []Kind{ //nolint:gochecknoglobals // a constant list
	KindNotFound, KindValidation, KindConflict, KindState, KindContention, KindLimited,
	KindTooLarge, KindUnauthenticated, KindUnavailable,
}

// Known reports whether k is one of Kinds.
func (k Kind) Known() bool { return slices.Contains(Kinds, k) }

// Error is returned by every engine operation that fails for a reason the caller can act
// on. Code is a stable snake_case identifier and part of the API; Message is a human
// sentence safe to show to the caller; Err is an underlying cause for logs.
type Error struct {
	Kind      Kind
	Code      string
	Message   string
	Retryable bool
	Err       error
}

// Error implements error as "kind: code: message".
func (e *Error) Error() string {
	s := string(e.Kind) + ": " + e.Code
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same Kind and, when target sets one, the
// same Code. So errors.Is(err, ErrNotFound) matches every not-found error and
// errors.Is(err, ErrStaleLease) matches only that code. A nil *Error target matches
// nothing.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Kind == e.Kind && (t.Code == "" || t.Code == e.Code)
}

// Sentinels for errors.Is. The kind-only sentinels match any code of their kind.
var (
	ErrNotFound        = &Error{Kind: KindNotFound}
	ErrValidation      = &Error{Kind: KindValidation}
	ErrConflict        = &Error{Kind: KindConflict}
	ErrState           = &Error{Kind: KindState}
	ErrContention      = &Error{Kind: KindContention}
	ErrLimited         = &Error{Kind: KindLimited}
	ErrTooLarge        = &Error{Kind: KindTooLarge}
	ErrUnauthenticated = &Error{Kind: KindUnauthenticated}
	ErrUnavailable     = &Error{Kind: KindUnavailable}

	ErrExecutionNotFound    = &Error{Kind: KindNotFound, Code: CodeExecutionNotFound}
	ErrStaleLease           = &Error{Kind: KindState, Code: CodeStaleLease}
	ErrLeaseExpired         = &Error{Kind: KindState, Code: CodeLeaseExpired}
	ErrLeaseRevoked         = &Error{Kind: KindState, Code: CodeLeaseRevoked}
	ErrAttemptTimedOut      = &Error{Kind: KindState, Code: CodeAttemptTimedOut}
	ErrExecutionNotActive   = &Error{Kind: KindState, Code: CodeExecutionNotActive}
	ErrStoreConflict        = &Error{Kind: KindContention, Code: CodeStoreConflict}
	ErrInvalidClaimGrant    = &Error{Kind: KindState, Code: CodeInvalidClaimGrant}
	ErrClaimGrantExpired    = &Error{Kind: KindState, Code: CodeClaimGrantExpired}
	ErrCapabilityMismatch   = &Error{Kind: KindState, Code: CodeCapabilityMismatch}
	ErrMaxReplaysExhausted  = &Error{Kind: KindLimited, Code: CodeMaxReplaysExhausted}
	ErrGrantAlreadyExists   = &Error{Kind: KindConflict, Code: CodeGrantAlreadyExists}
	ErrExecutionNotEligible = &Error{Kind: KindState, Code: CodeExecutionNotEligible}
	ErrCursorExpired        = &Error{Kind: KindState, Code: CodeCursorExpired}
)

// Stable error codes. They appear on the wire and never change meaning.
const (
	CodeExecutionNotFound    = "execution_not_found"
	CodeAttemptNotFound      = "attempt_not_found"
	CodeResultNotFound       = "result_not_found"
	CodeInvalidInput         = "invalid_input"
	CodeInvalidID            = "invalid_id"
	CodeInvalidLane          = "invalid_lane"
	CodeInvalidNamespace     = "invalid_namespace"
	CodeInvalidKind          = "invalid_kind"
	CodeInvalidCapabilities  = "invalid_capabilities"
	CodeInvalidPolicy        = "invalid_policy"
	CodeInvalidPriority      = "invalid_priority"
	CodeInvalidTagKey        = "invalid_tag_key"
	CodeInvalidTraceparent   = "invalid_traceparent"
	CodeInvalidFence         = "invalid_fence"
	CodePayloadTooLarge      = "payload_too_large"
	CodeDuplicateExecution   = "duplicate_execution"
	CodeStaleLease           = "stale_lease"
	CodeLeaseExpired         = "lease_expired"
	CodeLeaseRevoked         = "lease_revoked"
	CodeAttemptTimedOut      = "attempt_timed_out" // the attempt's timeout passed: it ends the attempt, and its lease
	CodeExecutionNotActive   = "execution_not_active"
	CodeExecutionNotEligible = "execution_not_eligible"
	CodeExecutionNotTerminal = "execution_not_terminal"
	CodeExecutionTerminal    = "execution_terminal"
	CodeExecutionNotFailed   = "execution_not_failed" // a dead-letter replay of an execution that did not fail
	CodeMaxReplaysExhausted  = "max_replays_exhausted"
	CodeGrantAlreadyExists   = "grant_already_exists"
	CodeInvalidClaimGrant    = "invalid_claim_grant"
	CodeClaimGrantExpired    = "claim_grant_expired"
	CodeNotReclaimable       = "execution_not_reclaimable"
	CodeCapabilityMismatch   = "capability_mismatch"
	CodeNoActiveLease        = "no_active_lease"
	CodeStoreConflict        = "store_conflict"
	CodeStoreUnavailable     = "store_unavailable"
	CodeRoundFailed          = "round_failed" // the shared unit serving the call failed on another call's bug
	CodeInvalidCursor        = "invalid_cursor"
	CodeCursorExpired        = "cursor_expired"
	CodeShardOutOfRange      = "shard_out_of_range"
	CodeCorruption           = "corruption"
)

// NewError returns an *Error of the given kind and code with a formatted message. The
// retryable flag follows the kind: contention and unavailable errors are retryable.
func NewError(kind Kind, code, format string, args ...any) *Error {
	return &Error{
		Kind:      kind,
		Code:      code,
		Message:   fmt.Sprintf(format, args...),
		Retryable: kind == KindContention || kind == KindUnavailable,
	}
}

// Validationf returns a validation error with the given code.
func Validationf(code, format string, args ...any) *Error {
	return NewError(KindValidation, code, format, args...)
}

// Statef returns a state error with the given code.
func Statef(code, format string, args ...any) *Error {
	return NewError(KindState, code, format, args...)
}

// NotFoundf returns a not-found error with the given code.
func NotFoundf(code, format string, args ...any) *Error {
	return NewError(KindNotFound, code, format, args...)
}

// IsRetryable reports whether err is an *Error marked retryable.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}

// CodeOf returns the code of err if it is an *Error, or "" otherwise.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
