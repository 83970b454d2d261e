package fftype

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNormalizeCapabilities(t *testing.T) {
	t.Parallel()
	got, err := NormalizeCapabilities("caps", []string{"gpu", "cuda", "gpu", "é"})
	require.NoError(t, err)
	require.Equal(t, []string{"cuda", "gpu", "é"}, got)
	got, err = NormalizeCapabilities("caps", nil)
	require.NoError(t, err)
	require.Nil(t, got)

	tooMany := make([]string, MaxCapabilityTokens+1)
	for i := range tooMany {
		tooMany[i] = "c" + itoa(i)
	}
	longTokens := []string{strings.Repeat("a", 2048), strings.Repeat("b", 2048)}
	for _, caps := range [][]string{{""}, {"a,b"}, {"a b"}, {"a\tb"}, {"a\x7f"}, {"gpu\u00a0a100"}, {"gpu\u2028x"},
		{"gpu\u0085x"}, {"gpu\u3000x"}, {"a\xff"}, tooMany, longTokens} {
		_, err := NormalizeCapabilities("caps", caps)
		require.True(t, errors.Is(err, &Error{Kind: KindValidation, Code: CodeInvalidCapabilities}), "%q", caps)
	}
	_, err = NormalizeCapabilities("caps", tooMany[:MaxCapabilityTokens])
	require.NoError(t, err, "256 tokens is the inclusive limit")
}

func TestCoversCapabilities(t *testing.T) {
	t.Parallel()
	require.True(t, CoversCapabilities([]string{"a", "b", "c"}, []string{"a", "c"}))
	require.True(t, CoversCapabilities(nil, nil))
	require.True(t, CoversCapabilities([]string{"a"}, nil))
	require.False(t, CoversCapabilities([]string{"a", "c"}, []string{"b"}))
	require.False(t, CoversCapabilities(nil, []string{"a"}))
}

func TestValidateNames(t *testing.T) {
	t.Parallel()
	require.NoError(t, ValidateLane("emails high"))
	require.Error(t, ValidateLane(""))
	require.Error(t, ValidateLane(strings.Repeat("a", 65)))
	require.Error(t, ValidateLane("é"))
	// A URL path cannot name them: /v1/lanes/./pause is /v1/lanes/pause.
	require.ErrorIs(t, ValidateLane("."), &Error{Kind: KindValidation, Code: CodeInvalidLane})
	require.ErrorIs(t, ValidateLane(".."), &Error{Kind: KindValidation, Code: CodeInvalidLane})
	require.NoError(t, ValidateLane("..."))
	require.NoError(t, ValidateLane("a/.."))
	require.NoError(t, ValidateNamespace("tenant-42"))
	require.Error(t, ValidateNamespace("a b"))
	require.NoError(t, ValidateKind("email.send"))
	require.Error(t, ValidateKind(""))
	require.NoError(t, ValidateTagKey("billing.plan-2"))
	for _, k := range []string{"", "Upper", "9lead", "a b", strings.Repeat("a", 129)} {
		require.Error(t, ValidateTagKey(k), k)
	}
	require.NoError(t, ValidateWorkerID("worker_id", "host-1 pid 42 é"))
	require.NoError(t, ValidateWorkerID("worker_id", "..."))
	for _, id := range []string{"", "w\xff", "w\x00", "w\u0085", strings.Repeat("w", 257), ".", ".."} {
		require.Error(t, ValidateWorkerID("worker_id", id), "%q", id)
	}
	require.NoError(t, ValidateTraceparent(""))
	require.NoError(t, ValidateTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	require.Error(t, ValidateTraceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01"))
	require.Error(t, ValidateTraceparent("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
}

func TestPolicyDefaultsAndBackoff(t *testing.T) {
	t.Parallel()
	p := Policy{}.WithDefaults()
	require.Equal(t, DefaultMaxRetries, p.Retry.MaxRetries)
	require.Equal(t, DefaultBackoff(), p.Retry.Backoff)
	require.Equal(t, DefaultLeaseTTL, p.LeaseTTL.D())
	require.Equal(t, DefaultMaxReclaims, p.MaxReclaims)
	require.Equal(t, DefaultMaxReplays, p.MaxReplays)

	b := p.Retry.Backoff
	require.Equal(t, time.Second, b.Delay(0))
	require.Equal(t, 2*time.Second, b.Delay(1))
	require.Equal(t, 32*time.Second, b.Delay(5))
	require.Equal(t, time.Minute, b.Delay(6))
	require.Equal(t, time.Minute, b.Delay(10_000), "capped, and no overflow")
	fixed := Backoff{Kind: BackoffFixed, Initial: Duration(5 * time.Second)}
	require.Equal(t, 5*time.Second, fixed.Delay(9))

	zero := Policy{Retry: &RetryPolicy{MaxRetries: 0}}.WithDefaults()
	require.Equal(t, 0, zero.Retry.MaxRetries, "an explicit policy keeps its zero retries")
	require.NoError(t, Policy{}.Validate())
	require.Error(t, Policy{MaxReclaims: -1}.Validate())
	require.Error(t, Policy{Retry: &RetryPolicy{Backoff: Backoff{Kind: BackoffExponential, Initial: Duration(time.Minute), Max: Duration(time.Second)}}}.Validate())
	require.Error(t, Policy{Retry: &RetryPolicy{Backoff: Backoff{Kind: BackoffExponential, Initial: Duration(time.Second), Multiplier: math.NaN()}}}.Validate(),
		"a NaN multiplier is refused")

	long := Policy{Retry: &RetryPolicy{Backoff: Backoff{Kind: BackoffExponential, Initial: Duration(2 * time.Minute)}}}.WithDefaults()
	require.Equal(t, 2*time.Minute, long.Retry.Backoff.Delay(0), "no default cap below the first delay")
}

// A multiplier that is not a finite number from 1 to MaxMultiplier is refused whatever the
// kind: a fixed backoff ignores it, but the execution stores it, and JSON cannot encode a
// NaN or an infinity, so such an execution could not be shown over the HTTP API.
func TestPolicyValidateRefusesABadMultiplierOfAnyKind(t *testing.T) {
	t.Parallel()
	for _, kind := range []BackoffKind{BackoffFixed, BackoffExponential} {
		for _, m := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, 0.5, MaxMultiplier + 1} {
			p := Policy{Retry: &RetryPolicy{MaxRetries: 1, Backoff: Backoff{Kind: kind, Initial: Duration(time.Second), Multiplier: m}}}
			require.ErrorIs(t, p.Validate(), &Error{Kind: KindValidation, Code: CodeInvalidPolicy}, "%s backoff, multiplier %v", kind, m)
		}
		for _, m := range []float64{0, 1, MaxMultiplier} {
			p := Policy{Retry: &RetryPolicy{MaxRetries: 1, Backoff: Backoff{Kind: kind, Initial: Duration(time.Second), Multiplier: m}}}
			require.NoError(t, p.Validate(), "%s backoff, multiplier %v", kind, m)
			_, err := json.Marshal(Execution{ID: NewExecutionID(0), Policy: p.WithDefaults()})
			require.NoError(t, err)
		}
	}
}

// Delay applies the defaults Backoff documents, as the stored policy has them.
func TestBackoffDelayAppliesTheDefaults(t *testing.T) {
	t.Parallel()
	require.Equal(t, time.Second, Backoff{}.Delay(0), "the zero Backoff starts at 1s")
	require.Equal(t, 2*time.Second, Backoff{}.Delay(1), "and doubles")
	require.Equal(t, time.Minute, Backoff{}.Delay(100), "up to 60s")
	b := Backoff{Kind: BackoffExponential, Initial: Duration(time.Second)}
	require.Equal(t, 4*time.Second, b.Delay(2), "Multiplier 0 is the default")
	require.Equal(t, time.Minute, b.Delay(100), "Max 0 is 60s")
	long := Backoff{Kind: BackoffExponential, Initial: Duration(2 * time.Minute)}
	require.Equal(t, 2*time.Minute, long.Delay(3), "or Initial if that is longer")
	for _, b := range []Backoff{{}, b, long, {Kind: BackoffFixed, Initial: Duration(time.Second)}} {
		stored := Policy{Retry: &RetryPolicy{Backoff: b}}.WithDefaults().Retry.Backoff
		for n := range 10 {
			require.Equal(t, stored.Delay(n), b.Delay(n), "%+v, retry %d", b, n)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	var d Duration
	require.NoError(t, json.Unmarshal([]byte("1500"), &d))
	require.Equal(t, 1500*time.Millisecond, d.D())
	for _, raw := range []string{"18446744073710", "9223372036855", "-9223372036855", "1.5", `"1s"`} {
		require.Error(t, json.Unmarshal([]byte(raw), &d), "%s ms does not fit a duration or is not a count", raw)
	}
	require.NoError(t, json.Unmarshal([]byte("9223372036854"), &d), "the largest count that fits")
}

// Every Duration encodes to a count that decodes, and to one its field's limits judge
// alike: the extremes, a nanosecond past a millisecond rounded away from zero, clamped to
// the largest count a Duration holds.
func TestDurationJSONRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct {
		d, back Duration
	}{
		{Duration(math.MaxInt64), Duration(math.MaxInt64 / int64(time.Millisecond) * int64(time.Millisecond))},
		{Duration(math.MinInt64), Duration(math.MinInt64 / int64(time.Millisecond) * int64(time.Millisecond))},
		{Duration(math.MinInt64 + 1), Duration(math.MinInt64 / int64(time.Millisecond) * int64(time.Millisecond))},
		{Duration(time.Millisecond + 1), Duration(2 * time.Millisecond)},
		{Duration(-time.Millisecond - 1), Duration(-2 * time.Millisecond)},
		{Duration(MaxDelay + 1), Duration(MaxDelay + time.Millisecond)},
	}
	for _, tc := range cases {
		b, err := json.Marshal(tc.d)
		require.NoError(t, err)
		var back Duration
		require.NoError(t, json.Unmarshal(b, &back), "%d ns encoded as %s", int64(tc.d), b)
		require.Equal(t, tc.back, back, "%d ns encoded as %s", int64(tc.d), b)
	}
}

func TestErrorIs(t *testing.T) {
	t.Parallel()
	err := Statef(CodeStaleLease, "nope")
	require.True(t, errors.Is(err, ErrState))
	require.True(t, errors.Is(err, ErrStaleLease))
	require.False(t, errors.Is(err, ErrLeaseExpired))
	require.False(t, errors.Is(err, ErrNotFound))
	require.False(t, IsRetryable(err))
	require.True(t, IsRetryable(NewError(KindContention, CodeStoreConflict, "x")))
	require.Equal(t, CodeStaleLease, CodeOf(err))
	require.Equal(t, "state: stale_lease: nope", err.Error())
}

// errors.Is with a nil *Error target reports false rather than panicking.
func TestErrorIsNilTarget(t *testing.T) {
	t.Parallel()
	err := NotFoundf(CodeExecutionNotFound, "x")
	var target *Error
	require.NotPanics(t, func() { require.False(t, errors.Is(err, target)) })
}

func TestDerivePublicState(t *testing.T) {
	t.Parallel()
	cases := []struct {
		phase Phase
		elig  Eligibility
		out   Outcome
		want  PublicState
	}{
		{PhaseRunnable, EligibilityNow, OutcomeNone, StateWaiting},
		{PhaseRunnable, EligibilityGranted, OutcomeNone, StateWaiting},
		{PhaseRunnable, EligibilityUntilTime, OutcomeNone, StateDelayed},
		{PhaseActive, EligibilityNotApplicable, OutcomeNone, StateActive},
		{PhaseSuspended, EligibilityNotApplicable, OutcomeNone, StateSuspended},
		{PhaseTerminal, EligibilityNotApplicable, OutcomeSuccess, StateCompleted},
		{PhaseTerminal, EligibilityNotApplicable, OutcomeFailed, StateFailed},
		{PhaseTerminal, EligibilityNotApplicable, OutcomeCancelled, StateCancelled},
		{PhaseTerminal, EligibilityNotApplicable, OutcomeExpired, StateExpired},
	}
	for _, c := range cases {
		require.Equal(t, c.want, DerivePublicState(c.phase, c.elig, c.out))
		require.True(t, c.want.Valid())
	}
	require.False(t, PublicState("running").Valid())
}

func TestExecutionJSONCarriesDerivedState(t *testing.T) {
	t.Parallel()
	x := Execution{ID: "s1_x", Phase: PhaseTerminal, Outcome: OutcomeSuccess, LeaseTTL: Duration(1500 * time.Millisecond)}
	b, err := json.Marshal(x)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, "completed", m["state"])
	require.Equal(t, "s1_x", m["id"])
	require.EqualValues(t, 1500, m["lease_ttl_ms"])
	var back Execution
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, x.ID, back.ID)
	require.Equal(t, x.LeaseTTL, back.LeaseTTL)
}

func FuzzNormalizeCapabilities(f *testing.F) {
	f.Add("gpu,cuda", "b")
	f.Add("", " ")
	f.Fuzz(func(t *testing.T, a, b string) {
		caps, err := NormalizeCapabilities("caps", []string{a, b})
		if err != nil {
			require.ErrorIs(t, err, ErrValidation)
			return
		}
		require.True(t, CoversCapabilities(caps, caps))
		again, err := NormalizeCapabilities("caps", caps)
		require.NoError(t, err)
		require.Equal(t, caps, again, "normalizing is idempotent")
	})
}

func TestClipReason(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", MaxReasonBytes)
	for _, tc := range []struct {
		name, s, want string
	}{
		{"short", "hello", "hello"},
		{"at the limit", long, long},
		{"cut", long + "b", long},
		{"cut inside é", long[1:] + "é", long[1:]},
		{"cut inside 😀", long[2:] + "😀", long[2:]},
		{"bad bytes replaced", "caf\xe9", "caf\uFFFD"},
		{"bad bytes replaced, then cut", strings.Repeat("\xe9 ", MaxReasonBytes), strings.Repeat("\uFFFD ", MaxReasonBytes/4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := ClipReason(tc.s)
			require.Equal(t, tc.want, got)
			b, err := json.Marshal(got)
			require.NoError(t, err)
			var back string
			require.NoError(t, json.Unmarshal(b, &back))
			require.Equal(t, got, back, "JSON delivers it as it is")
			require.NoError(t, ValidateReason("reason", back))
		})
	}
}

func TestValidateReason(t *testing.T) {
	t.Parallel()
	require.NoError(t, ValidateReason("reason", strings.Repeat("é", MaxReasonBytes/2)))
	for _, bad := range []string{strings.Repeat("a", MaxReasonBytes+1), "caf\xe9"} {
		require.ErrorIs(t, ValidateReason("reason", bad), &Error{Kind: KindValidation, Code: CodeInvalidInput}, "%q", bad)
	}
}

// Tag values, idempotency keys (checked by the engine with ValidatePlainText) and failure
// categories must be UTF-8: JSON, and so the HTTP API and the event log, would hand out
// other text than was stored.
func TestValidateTextThatJSONCarries(t *testing.T) {
	t.Parallel()
	invalid := &Error{Kind: KindValidation, Code: CodeInvalidInput}
	require.NoError(t, ValidateTags(map[string]string{"t": strings.Repeat("é", MaxTagValueBytes/2)}))
	require.ErrorIs(t, ValidateTags(map[string]string{"t": "v\xff"}), invalid)
	require.ErrorIs(t, ValidateTags(map[string]string{"t": strings.Repeat("a", MaxTagValueBytes+1)}), invalid)

	for _, ok := range []string{"", "transient", "é", strings.Repeat("a", MaxCategoryBytes)} {
		require.NoError(t, ValidateText("category", ok, MaxCategoryBytes), "%q", ok)
	}
	for _, bad := range []string{"caf\xe9", strings.Repeat("a", MaxCategoryBytes+1)} {
		require.ErrorIs(t, ValidateText("category", bad, MaxCategoryBytes), invalid, "%q", bad)
		p := Policy{Retry: &RetryPolicy{NonRetryable: []string{bad}}}
		require.ErrorIs(t, p.Validate(), &Error{Kind: KindValidation, Code: CodeInvalidPolicy}, "%q", bad)
	}
	require.ErrorIs(t, Policy{Retry: &RetryPolicy{NonRetryable: []string{""}}}.Validate(), &Error{Kind: KindValidation, Code: CodeInvalidPolicy})
}
