package fftype

import "time"

// Policy is fixed when an execution is created. Zero fields take the defaults documented on
// each; the engine stores the policy with every default filled in.
type Policy struct {
	// Retry decides what a failed attempt does. Nil means the default: 3 retries with
	// exponential backoff from 1s to 60s and full jitter.
	Retry *RetryPolicy `json:"retry,omitempty"`
	// AttemptTimeout bounds one attempt, measured from its claim. When it passes, the
	// attempt fails with category "timeout" and is retried per Retry, and from then on its
	// lease holder's calls are refused (attempt_timed_out). Time the attempt spends paused
	// (a Delay or Snooze, a Release) does not count. 0 means no timeout.
	AttemptTimeout Duration `json:"attempt_timeout_ms,omitempty"`
	// Deadline bounds the whole execution, measured from its creation. When it passes, the
	// execution ends as expired, whatever its state: from then on its lease holder's calls
	// are refused (execution_not_active) and no claim hands it out. 0 means no deadline.
	Deadline Duration `json:"deadline_ms,omitempty"`
	// LeaseTTL is the lease length a claim grants when the claimer does not ask for one.
	// 0 means 30s.
	LeaseTTL Duration `json:"lease_ttl_ms,omitempty"`
	// MaxReclaims caps how many times the execution is reclaimed after a lost lease; the
	// lease loss after the cap fails it with reason "max_reclaims_exceeded". A replay
	// starts the count again. 0 means 100.
	MaxReclaims int `json:"max_reclaims,omitempty"`
	// MaxReplays caps how many times a terminal execution may be replayed. 0 means 10.
	MaxReplays int `json:"max_replays,omitempty"`
	// DedupWindow is how long an idempotency key keeps finding the first execution, as long
	// as that execution is kept: deleting it (retention) frees the key.
	// 0 means 24h.
	DedupWindow Duration `json:"dedup_window_ms,omitempty"`
}

// RetryPolicy decides whether and when a failed attempt is retried.
type RetryPolicy struct {
	// MaxRetries is the number of retries after the first attempt; 0 means none.
	MaxRetries int `json:"max_retries"`
	// Backoff decides the delay before each retry. The zero value is exponential from 1s to
	// 60s, doubling, with full jitter.
	Backoff Backoff `json:"backoff"`
	// NonRetryable lists failure categories that fail the execution at once: at most 64,
	// each 1 to 64 bytes of UTF-8.
	NonRetryable []string `json:"non_retryable,omitempty"`
}

// BackoffKind selects how retry delays grow.
type BackoffKind string

// Backoff kinds.
const (
	BackoffFixed       BackoffKind = "fixed"
	BackoffExponential BackoffKind = "exponential"
)

// Backoff is the delay schedule between retries. Retry n (counting from 0) waits
// Initial for fixed backoff, or min(Initial × Multiplier^n, Max) for exponential backoff;
// with Jitter the wait is drawn uniformly from [0, that delay] ("full jitter"). For
// exponential backoff a Max of 0 means 60s, or Initial if that is longer, and a
// Multiplier of 0 means the default. Multiplier is 0 or 1 to 100 for either kind.
type Backoff struct {
	Kind       BackoffKind `json:"kind"`
	Initial    Duration    `json:"initial_ms"`
	Max        Duration    `json:"max_ms,omitempty"`
	Multiplier float64     `json:"multiplier,omitempty"`
	Jitter     bool        `json:"jitter,omitempty"`
}

// Policy defaults and limits.
const (
	DefaultMaxRetries     = 3
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = time.Minute
	DefaultMultiplier     = 2.0
	DefaultLeaseTTL       = 30 * time.Second
	DefaultMaxReclaims    = 100
	DefaultMaxReplays     = 10
	DefaultDedupWindow    = 24 * time.Hour

	MinLeaseTTL       = time.Second
	MaxLeaseTTL       = 24 * time.Hour
	MaxRetriesLimit   = 10_000
	MaxBackoff        = 7 * 24 * time.Hour
	MaxMultiplier     = 100.0
	MaxReclaimsLimit  = 100_000
	MaxReplaysLimit   = 100_000
	MaxDedupWindow    = 30 * 24 * time.Hour
	MaxPolicyDuration = 365 * 24 * time.Hour
	// MaxDelay bounds how far ahead an execution may be made eligible: a create's delay
	// or run_at, and a lease holder's Delay.
	MaxDelay = 365 * 24 * time.Hour
)

// DefaultBackoff is the backoff used when none is given.
func DefaultBackoff() Backoff {
	return Backoff{Kind: BackoffExponential, Initial: Duration(DefaultBackoffInitial),
		Max: Duration(DefaultBackoffMax), Multiplier: DefaultMultiplier, Jitter: true}
}

// WithDefaults returns p with every zero field replaced by its default.
func (p Policy) WithDefaults() Policy {
	if p.Retry == nil {
		p.Retry = &RetryPolicy{MaxRetries: DefaultMaxRetries, Backoff: DefaultBackoff()}
	} else {
		r := *p.Retry
		r.NonRetryable = append([]string(nil), r.NonRetryable...)
		r.Backoff = r.Backoff.withDefaults()
		p.Retry = &r
	}
	if p.LeaseTTL == 0 {
		p.LeaseTTL = Duration(DefaultLeaseTTL)
	}
	if p.MaxReclaims == 0 {
		p.MaxReclaims = DefaultMaxReclaims
	}
	if p.MaxReplays == 0 {
		p.MaxReplays = DefaultMaxReplays
	}
	if p.DedupWindow == 0 {
		p.DedupWindow = Duration(DefaultDedupWindow)
	}
	return p
}

// Validate checks p against the limits; each refusal is a validation error with code
// invalid_policy naming the field.
func (p Policy) Validate() error {
	bad := func(field, format string, args ...any) error {
		e := Validationf(CodeInvalidPolicy, format, args...)
		e.Message = "policy." + field + ": " + e.Message
		return e
	}
	durs := []struct {
		name string
		d    Duration
		max  time.Duration
	}{
		{"attempt_timeout", p.AttemptTimeout, MaxPolicyDuration},
		{"deadline", p.Deadline, MaxPolicyDuration},
		{"lease_ttl", p.LeaseTTL, MaxLeaseTTL},
		{"dedup_window", p.DedupWindow, MaxDedupWindow},
	}
	for _, d := range durs {
		if d.d < 0 || d.d.D() > d.max {
			return bad(d.name, "must be between 0 and %s", d.max)
		}
	}
	if p.LeaseTTL != 0 && p.LeaseTTL.D() < MinLeaseTTL {
		return bad("lease_ttl", "must be at least %s", MinLeaseTTL)
	}
	if p.MaxReclaims < 0 || p.MaxReclaims > MaxReclaimsLimit {
		return bad("max_reclaims", "must be between 0 and %d", MaxReclaimsLimit)
	}
	if p.MaxReplays < 0 || p.MaxReplays > MaxReplaysLimit {
		return bad("max_replays", "must be between 0 and %d", MaxReplaysLimit)
	}
	if r := p.Retry; r != nil {
		if r.MaxRetries < 0 || r.MaxRetries > MaxRetriesLimit {
			return bad("retry.max_retries", "must be between 0 and %d", MaxRetriesLimit)
		}
		if len(r.NonRetryable) > 64 {
			return bad("retry.non_retryable", "at most 64 categories")
		}
		for _, c := range r.NonRetryable {
			if why := checkText(c, MaxCategoryBytes); c == "" || why != "" {
				return bad("retry.non_retryable", "categories must be 1 to %d bytes of UTF-8", MaxCategoryBytes)
			}
		}
		b := r.Backoff
		if b == (Backoff{}) {
			return nil
		}
		switch b.Kind {
		case BackoffFixed, BackoffExponential:
		default:
			return bad("retry.backoff.kind", "must be %q or %q, not %q", BackoffFixed, BackoffExponential, b.Kind)
		}
		if b.Initial < 0 || b.Initial.D() > MaxBackoff || b.Max < 0 || b.Max.D() > MaxBackoff {
			return bad("retry.backoff", "delays must be between 0 and %s", MaxBackoff)
		}
		// Checked for a fixed backoff too, which ignores it: the execution stores it, and
		// JSON cannot carry a NaN or an infinity.
		if b.Multiplier != 0 && !(b.Multiplier >= 1 && b.Multiplier <= MaxMultiplier) { // refuses NaN too
			return bad("retry.backoff.multiplier", "must be between 1 and %g", MaxMultiplier)
		}
		if b.Kind == BackoffExponential && b.Max != 0 && b.Max < b.Initial {
			return bad("retry.backoff.max", "must not be below initial")
		}
	}
	return nil
}

// withDefaults returns b with the defaults Backoff documents filled in.
func (b Backoff) withDefaults() Backoff {
	if b == (Backoff{}) {
		return DefaultBackoff()
	}
	if b.Kind == BackoffExponential {
		if b.Max == 0 {
			// The default cap, unless the first delay is already longer.
			b.Max = max(Duration(DefaultBackoffMax), b.Initial)
		}
		if b.Multiplier == 0 {
			b.Multiplier = DefaultMultiplier
		}
	}
	return b
}

// Delay returns the backoff before retry n (0 for the first retry) before jitter, with
// the defaults Backoff documents for its zero fields.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	if b.Kind == BackoffFixed {
		return b.Initial.D()
	}
	d := float64(b.Initial.D())
	limit := float64(b.Max.D())
	for i := 0; i < n && d < limit; i++ {
		d *= b.Multiplier
	}
	if d > limit {
		d = limit
	}
	return time.Duration(d)
}
