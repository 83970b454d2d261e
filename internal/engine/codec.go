package engine

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/flowfabric/flowfabric/fftype"
)

// Records are stored in a compact binary form: a kind byte, a version byte, then every
// field in a fixed order. It is several times cheaper than JSON on the claim→complete path,
// where each transition reads and writes the execution and attempt records. A decoder
// refuses truncated or trailing bytes. TestCodecRoundTrip fills every field by reflection,
// so a field added to a record but not to its codec fails the build's tests.
//
// Version 2 of the execution record carries the execution's latest attempt
// (fftype.Execution.Attempt); version 1 records, which do not, are still read.
const (
	codecExecution        = 'X'
	codecAttempt          = 'A'
	codecExecutionVersion = 2
	codecAttemptVersion   = 1
)

var errCodec = errors.New("malformed record")

type encoder struct{ b []byte }

func (w *encoder) uvarint(u uint64) { w.b = binary.AppendUvarint(w.b, u) }
func (w *encoder) varint(i int64)   { w.b = binary.AppendVarint(w.b, i) }
func (w *encoder) int(i int)        { w.varint(int64(i)) }
func (w *encoder) str(s string)     { w.uvarint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *encoder) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}
func (w *encoder) dur(d fftype.Duration) { w.varint(int64(d)) }
func (w *encoder) float(f float64)       { w.uvarint(math.Float64bits(f)) }
func (w *encoder) time(t time.Time) {
	if t.IsZero() {
		w.b = append(w.b, 0)
		return
	}
	w.b = append(w.b, 1)
	w.varint(t.UnixNano())
}
func (w *encoder) strs(ss []string) {
	w.uvarint(uint64(len(ss)))
	for _, s := range ss {
		w.str(s)
	}
}

type decoder struct {
	b   []byte
	err error
}

func (r *decoder) fail() { r.err = errCodec; r.b = nil }

func (r *decoder) uvarint() uint64 {
	u, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return u
}

func (r *decoder) varint() int64 {
	i, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return i
}

func (r *decoder) int() int { return int(r.varint()) }

func (r *decoder) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *decoder) byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *decoder) bool() bool             { return r.byte() == 1 }
func (r *decoder) dur() fftype.Duration   { return fftype.Duration(r.varint()) }
func (r *decoder) float() float64         { return math.Float64frombits(r.uvarint()) }
func (r *decoder) id() fftype.ExecutionID { return fftype.ExecutionID(r.str()) }
func (r *decoder) time() (t time.Time) {
	if r.byte() == 0 {
		return t
	}
	return time.Unix(0, r.varint()).UTC()
}

func (r *decoder) strs() []string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
	}
	if n == 0 || r.err != nil {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = r.str()
	}
	return out
}

// header reads a record's kind and version byte and returns the version, failing unless
// the kind is kind and the version at most newest.
func (r *decoder) header(kind, newest byte) byte {
	k, v := r.byte(), r.byte()
	if k != kind || v < 1 || v > newest {
		r.fail()
	}
	return v
}

func (r *decoder) done() error {
	if r.err == nil && len(r.b) != 0 {
		return errCodec
	}
	return r.err
}

func encodeExecution(x *fftype.Execution) []byte {
	w := encoder{b: make([]byte, 0, 512)}
	w.b = append(w.b, codecExecution, codecExecutionVersion)
	w.str(string(x.ID))
	w.str(x.Namespace)
	w.str(x.Lane)
	w.str(x.Kind)
	w.int(x.Priority)
	w.strs(x.Capabilities)
	w.uvarint(uint64(len(x.Tags)))
	for k, v := range x.Tags {
		w.str(k)
		w.str(v)
	}
	w.str(x.Traceparent)
	encodePolicy(&w, &x.Policy)
	w.str(x.IdemKey)
	w.str(string(x.Encoding))
	w.str(string(x.Phase))
	w.str(string(x.Ownership))
	w.str(string(x.Eligibility))
	w.str(string(x.BlockingReason))
	w.str(x.BlockingDetail)
	w.str(string(x.Outcome))
	w.str(string(x.AttemptState))
	w.int(x.TotalAttempts)
	w.int(x.RetryCount)
	w.int(x.ReplayCount)
	w.int(x.ReclaimCount)
	w.int(x.CurrentAttempt)
	w.str(x.AttemptID)
	w.str(x.LeaseID)
	w.uvarint(x.LeaseEpoch)
	w.str(x.WorkerID)
	w.str(x.WorkerInstanceID)
	w.dur(x.LeaseTTL)
	w.time(x.LeaseExpiresAt)
	w.time(x.LeaseRenewedAt)
	w.str(x.LastLeaseEnd)
	w.bool(x.Grant != nil)
	if g := x.Grant; g != nil {
		w.str(g.ID)
		w.str(string(g.Kind))
		w.str(g.WorkerID)
		w.str(g.Lane)
		w.time(g.IssuedAt)
		w.time(g.ExpiresAt)
	}
	w.time(x.CreatedAt)
	w.time(x.UpdatedAt)
	w.time(x.StartedAt)
	w.time(x.CompletedAt)
	w.time(x.DelayUntil)
	w.time(x.AttemptTimeoutAt)
	w.time(x.DeadlineAt)
	w.int(x.ProgressPercent)
	w.str(x.ProgressMessage)
	w.time(x.ProgressAt)
	w.str(x.FailureReason)
	w.str(x.FailureCategory)
	w.str(x.CancellationReason)
	w.str(x.CancelledBy)
	w.str(x.PendingReason)
	w.bool(x.Attempt != nil)
	if x.Attempt != nil {
		encodeAttemptFields(&w, x.Attempt)
	}
	return w.b
}

func decodeExecution(b []byte) (*fftype.Execution, error) {
	r := decoder{b: b}
	version := r.header(codecExecution, codecExecutionVersion)
	x := &fftype.Execution{}
	x.ID = r.id()
	x.Namespace = r.str()
	x.Lane = r.str()
	x.Kind = r.str()
	x.Priority = r.int()
	x.Capabilities = r.strs()
	if n := r.uvarint(); n > uint64(len(r.b)) {
		r.fail()
	} else if n > 0 {
		x.Tags = make(map[string]string, n)
		for range n {
			k := r.str()
			x.Tags[k] = r.str()
		}
	}
	x.Traceparent = r.str()
	decodePolicy(&r, &x.Policy)
	x.IdemKey = r.str()
	x.Encoding = fftype.PayloadEncoding(r.str())
	x.Phase = fftype.Phase(r.str())
	x.Ownership = fftype.Ownership(r.str())
	x.Eligibility = fftype.Eligibility(r.str())
	x.BlockingReason = fftype.BlockingReason(r.str())
	x.BlockingDetail = r.str()
	x.Outcome = fftype.Outcome(r.str())
	x.AttemptState = fftype.AttemptState(r.str())
	x.TotalAttempts = r.int()
	x.RetryCount = r.int()
	x.ReplayCount = r.int()
	x.ReclaimCount = r.int()
	x.CurrentAttempt = r.int()
	x.AttemptID = r.str()
	x.LeaseID = r.str()
	x.LeaseEpoch = r.uvarint()
	x.WorkerID = r.str()
	x.WorkerInstanceID = r.str()
	x.LeaseTTL = r.dur()
	x.LeaseExpiresAt = r.time()
	x.LeaseRenewedAt = r.time()
	x.LastLeaseEnd = r.str()
	if r.bool() {
		g := &fftype.Grant{}
		g.ID = r.str()
		g.Kind = fftype.GrantKind(r.str())
		g.WorkerID = r.str()
		g.Lane = r.str()
		g.IssuedAt = r.time()
		g.ExpiresAt = r.time()
		x.Grant = g
	}
	x.CreatedAt = r.time()
	x.UpdatedAt = r.time()
	x.StartedAt = r.time()
	x.CompletedAt = r.time()
	x.DelayUntil = r.time()
	x.AttemptTimeoutAt = r.time()
	x.DeadlineAt = r.time()
	x.ProgressPercent = r.int()
	x.ProgressMessage = r.str()
	x.ProgressAt = r.time()
	x.FailureReason = r.str()
	x.FailureCategory = r.str()
	x.CancellationReason = r.str()
	x.CancelledBy = r.str()
	x.PendingReason = r.str()
	if version >= 2 && r.bool() {
		x.Attempt = &fftype.Attempt{}
		decodeAttemptFields(&r, x.Attempt)
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return x, nil
}

func encodePolicy(w *encoder, p *fftype.Policy) {
	w.bool(p.Retry != nil)
	if r := p.Retry; r != nil {
		w.int(r.MaxRetries)
		w.str(string(r.Backoff.Kind))
		w.dur(r.Backoff.Initial)
		w.dur(r.Backoff.Max)
		w.float(r.Backoff.Multiplier)
		w.bool(r.Backoff.Jitter)
		w.strs(r.NonRetryable)
	}
	w.dur(p.AttemptTimeout)
	w.dur(p.Deadline)
	w.dur(p.LeaseTTL)
	w.int(p.MaxReclaims)
	w.int(p.MaxReplays)
	w.dur(p.DedupWindow)
}

func decodePolicy(r *decoder, p *fftype.Policy) {
	if r.bool() {
		rp := &fftype.RetryPolicy{}
		rp.MaxRetries = r.int()
		rp.Backoff.Kind = fftype.BackoffKind(r.str())
		rp.Backoff.Initial = r.dur()
		rp.Backoff.Max = r.dur()
		rp.Backoff.Multiplier = r.float()
		rp.Backoff.Jitter = r.bool()
		rp.NonRetryable = r.strs()
		p.Retry = rp
	}
	p.AttemptTimeout = r.dur()
	p.Deadline = r.dur()
	p.LeaseTTL = r.dur()
	p.MaxReclaims = r.int()
	p.MaxReplays = r.int()
	p.DedupWindow = r.dur()
}

func encodeAttempt(a *fftype.Attempt) []byte {
	w := encoder{b: make([]byte, 0, 256)}
	w.b = append(w.b, codecAttempt, codecAttemptVersion)
	encodeAttemptFields(&w, a)
	return w.b
}

func encodeAttemptFields(w *encoder, a *fftype.Attempt) {
	w.str(string(a.ExecutionID))
	w.int(a.Index)
	w.str(a.ID)
	w.str(string(a.Type))
	w.str(string(a.Status))
	w.str(a.LeaseID)
	w.uvarint(a.LeaseEpoch)
	w.str(a.WorkerID)
	w.str(a.WorkerInstanceID)
	w.str(a.Reason)
	w.int(a.PreviousAttempt)
	w.time(a.CreatedAt)
	w.time(a.EndedAt)
	w.time(a.PausedAt)
	w.time(a.ResumedAt)
	w.str(a.FailureReason)
	w.str(a.FailureCategory)
}

func decodeAttempt(b []byte) (*fftype.Attempt, error) {
	r := decoder{b: b}
	r.header(codecAttempt, codecAttemptVersion)
	a := &fftype.Attempt{}
	decodeAttemptFields(&r, a)
	if err := r.done(); err != nil {
		return nil, err
	}
	return a, nil
}

func decodeAttemptFields(r *decoder, a *fftype.Attempt) {
	a.ExecutionID = r.id()
	a.Index = r.int()
	a.ID = r.str()
	a.Type = fftype.AttemptType(r.str())
	a.Status = fftype.AttemptStatus(r.str())
	a.LeaseID = r.str()
	a.LeaseEpoch = r.uvarint()
	a.WorkerID = r.str()
	a.WorkerInstanceID = r.str()
	a.Reason = r.str()
	a.PreviousAttempt = r.int()
	a.CreatedAt = r.time()
	a.EndedAt = r.time()
	a.PausedAt = r.time()
	a.ResumedAt = r.time()
	a.FailureReason = r.str()
	a.FailureCategory = r.str()
}
