package ffstoretest

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

func exerciseCreate(t *testing.T, newStore func(t *testing.T) ffstore.Store) {
	t.Parallel()
	setup := func(t *testing.T) *engineBundle { return newEngineBundle(t, newStore) }

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Payload: []byte(`{"n":1}`), Tags: map[string]string{"customer": "acme"},
			Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
		x := b.get(t, id)
		require.Equal(t, fftype.StateWaiting, x.PublicState())
		require.Equal(t, fftype.DefaultNamespace, x.Namespace)
		require.Equal(t, suiteStart, x.CreatedAt.UTC())
		require.Equal(t, fftype.AttemptStatePendingFirst, x.AttemptState)
		require.Equal(t, fftype.DefaultMaxRetries, x.Policy.Retry.MaxRetries)
		require.Equal(t, fftype.DefaultBackoff(), x.Policy.Retry.Backoff)
		require.Equal(t, fftype.DefaultLeaseTTL, x.Policy.LeaseTTL.D())
		require.Equal(t, fftype.DefaultMaxReclaims, x.Policy.MaxReclaims)
		require.Equal(t, fftype.DefaultMaxReplays, x.Policy.MaxReplays)
		require.Equal(t, fftype.DefaultDedupWindow, x.Policy.DedupWindow.D())
		require.Equal(t, "acme", x.Tags["customer"])
		require.Equal(t, -1, x.CurrentAttempt)
		payload, err := b.engine.Payload(b.ctx, id)
		require.NoError(t, err)
		require.JSONEq(t, `{"n":1}`, string(payload))
		require.Equal(t, []fftype.EventType{fftype.EventCreated}, b.events(t, id))
	})

	t.Run("CallerBuffersAreCopied", func(t *testing.T) {
		// A caller may reuse a payload's or result's buffer once the call returns.
		t.Parallel()
		b := setup(t)
		buf := []byte(`{"n":"original"}`)
		id := b.create(t, fftype.CreateParams{Payload: buf})
		copy(buf, `{"n":"MUTATED!"}`)
		l := b.claimOne(t, id)
		require.Equal(t, `{"n":"original"}`, string(l.Payload), "the payload handed to the worker")
		payload, err := b.engine.Payload(b.ctx, id)
		require.NoError(t, err)
		require.Equal(t, `{"n":"original"}`, string(payload))

		res := []byte(`{"ok":"original"}`)
		require.NoError(t, b.engine.Complete(b.ctx, id, l.Fence, res, ""))
		copy(res, `{"ok":"MUTATED!"}`)
		got, _, err := b.engine.Result(b.ctx, id)
		require.NoError(t, err)
		require.Equal(t, `{"ok":"original"}`, string(got))
	})

	t.Run("Validation", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		long := strings.Repeat("x", 300)
		cases := []struct {
			name string
			p    fftype.CreateParams
			kind fftype.Kind
			code string
		}{
			{"NoLane", fftype.CreateParams{Lane: "", Kind: "k"}, fftype.KindValidation, fftype.CodeInvalidLane},
			{"LaneControl", fftype.CreateParams{Lane: "a\nb", Kind: "k"}, fftype.KindValidation, fftype.CodeInvalidLane},
			{"LaneTooLong", fftype.CreateParams{Lane: long, Kind: "k"}, fftype.KindValidation, fftype.CodeInvalidLane},
			{"NoKind", fftype.CreateParams{Lane: "l"}, fftype.KindValidation, fftype.CodeInvalidKind},
			{"NamespaceSpace", fftype.CreateParams{Lane: "l", Kind: "k", Namespace: "a b"}, fftype.KindValidation, fftype.CodeInvalidNamespace},
			{"PriorityHigh", fftype.CreateParams{Lane: "l", Kind: "k", Priority: 9001}, fftype.KindValidation, fftype.CodeInvalidPriority},
			{"PriorityNegative", fftype.CreateParams{Lane: "l", Kind: "k", Priority: -1}, fftype.KindValidation, fftype.CodeInvalidPriority},
			{"CapEmpty", fftype.CreateParams{Lane: "l", Kind: "k", Capabilities: []string{""}}, fftype.KindValidation, fftype.CodeInvalidCapabilities},
			{"CapComma", fftype.CreateParams{Lane: "l", Kind: "k", Capabilities: []string{"a,b"}}, fftype.KindValidation, fftype.CodeInvalidCapabilities},
			{"CapSpace", fftype.CreateParams{Lane: "l", Kind: "k", Capabilities: []string{"gpu "}}, fftype.KindValidation, fftype.CodeInvalidCapabilities},
			{"CapTooMany", fftype.CreateParams{Lane: "l", Kind: "k", Capabilities: manyTokens(257)}, fftype.KindValidation, fftype.CodeInvalidCapabilities},
			{"TagKey", fftype.CreateParams{Lane: "l", Kind: "k", Tags: map[string]string{"Bad Key": "v"}}, fftype.KindValidation, fftype.CodeInvalidTagKey},
			{"Traceparent", fftype.CreateParams{Lane: "l", Kind: "k", Traceparent: "nope"}, fftype.KindValidation, fftype.CodeInvalidTraceparent},
			{"PayloadNotJSON", fftype.CreateParams{Lane: "l", Kind: "k", Payload: []byte("{oops")}, fftype.KindValidation, fftype.CodeInvalidInput},
			{"PayloadEncoding", fftype.CreateParams{Lane: "l", Kind: "k", Encoding: "xml"}, fftype.KindValidation, fftype.CodeInvalidInput},
			{"PayloadTooLarge", fftype.CreateParams{Lane: "l", Kind: "k", Payload: make([]byte, suiteMaxPayload+1), Encoding: fftype.EncodingBinary}, fftype.KindTooLarge, fftype.CodePayloadTooLarge},
			{"NegativeDelay", fftype.CreateParams{Lane: "l", Kind: "k", Delay: -1}, fftype.KindValidation, fftype.CodeInvalidInput},
			{"DelayAndRunAt", fftype.CreateParams{Lane: "l", Kind: "k", Delay: fftype.Duration(time.Second), RunAt: suiteStart.Add(time.Hour)}, fftype.KindValidation, fftype.CodeInvalidInput},
			{"IdemKeyTooLong", fftype.CreateParams{Lane: "l", Kind: "k", IdempotencyKey: long}, fftype.KindValidation, fftype.CodeInvalidInput},
			{"IdemKeyNotUTF8", fftype.CreateParams{Lane: "l", Kind: "k", IdempotencyKey: "key-\xff"}, fftype.KindValidation, fftype.CodeInvalidInput},
			{"TagValueNotUTF8", fftype.CreateParams{Lane: "l", Kind: "k", Tags: map[string]string{"t": "v\xff"}}, fftype.KindValidation, fftype.CodeInvalidInput},
			{"NonRetryableNotUTF8", fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{NonRetryable: []string{"caf\xe9"}}}}, fftype.KindValidation, fftype.CodeInvalidPolicy},
			{"BadID", fftype.CreateParams{Lane: "l", Kind: "k", ID: "{fp:1}:x"}, fftype.KindValidation, fftype.CodeInvalidID},
			{"IDShardOutOfRange", fftype.CreateParams{Lane: "l", Kind: "k", ID: fftype.NewExecutionID(fftype.MaxShards - 1)}, fftype.KindValidation, fftype.CodeShardOutOfRange},
			{"RetryNegative", fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{MaxRetries: -1}}}, fftype.KindValidation, fftype.CodeInvalidPolicy},
			{"BackoffKind", fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{Backoff: fftype.Backoff{Kind: "linear"}}}}, fftype.KindValidation, fftype.CodeInvalidPolicy},
			{"Multiplier", fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{Backoff: fftype.Backoff{Kind: fftype.BackoffExponential, Initial: 1, Multiplier: 0.5}}}}, fftype.KindValidation, fftype.CodeInvalidPolicy},
			{"FixedMultiplierInf", fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{Backoff: fftype.Backoff{Kind: fftype.BackoffFixed, Initial: 1, Multiplier: math.Inf(1)}}}}, fftype.KindValidation, fftype.CodeInvalidPolicy},
			{"LeaseTTLShort", fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{LeaseTTL: fftype.Duration(time.Millisecond)}}, fftype.KindValidation, fftype.CodeInvalidPolicy},
			{"NegativeTimeout", fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{AttemptTimeout: -1}}, fftype.KindValidation, fftype.CodeInvalidPolicy},
		}
		for _, tc := range cases {
			_, err := b.engine.Create(b.ctx, tc.p)
			requireCode(t, err, tc.kind, tc.code)
		}
		page, err := b.engine.List(b.ctx, fftype.ListParams{})
		require.NoError(t, err)
		require.Empty(t, page.Executions, "refused creates must write nothing")
	})

	t.Run("IdempotencyKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p := fftype.CreateParams{Lane: suiteLane, Kind: suiteKind, IdempotencyKey: "order-42",
			Policy: fftype.Policy{DedupWindow: fftype.Duration(time.Minute)}}
		first, err := b.engine.Create(b.ctx, p)
		require.NoError(t, err)
		require.False(t, first.Duplicate)
		require.Equal(t, fftype.ShardForKey(fftype.DefaultNamespace, "order-42", b.store.Shards()), first.ID.Shard())

		again, err := b.engine.Create(b.ctx, p)
		require.NoError(t, err)
		require.True(t, again.Duplicate)
		require.Equal(t, first.ID, again.ID)

		other := p
		other.Namespace = "tenant-b"
		elsewhere, err := b.engine.Create(b.ctx, other)
		require.NoError(t, err)
		require.False(t, elsewhere.Duplicate, "keys are scoped by namespace")

		// An id on the wrong shard for the key is refused.
		wrong := p
		wrong.ID = fftype.NewExecutionID((first.ID.Shard() + 1) % b.store.Shards())
		if b.store.Shards() > 1 {
			_, err = b.engine.Create(b.ctx, wrong)
			requireCode(t, err, fftype.KindValidation, fftype.CodeInvalidID)
		}

		b.advance(t, time.Minute+time.Millisecond)
		later, err := b.engine.Create(b.ctx, p)
		require.NoError(t, err)
		require.False(t, later.Duplicate, "the key is free again after its window")
		require.NotEqual(t, first.ID, later.ID)
	})

	t.Run("DuplicateID", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := fftype.NewExecutionID(b.store.Shards() - 1)
		res, err := b.engine.Create(b.ctx, fftype.CreateParams{ID: id, Lane: suiteLane, Kind: suiteKind})
		require.NoError(t, err)
		require.Equal(t, id, res.ID)
		res, err = b.engine.Create(b.ctx, fftype.CreateParams{ID: id, Lane: "other", Kind: "other"})
		require.NoError(t, err)
		require.True(t, res.Duplicate)
		require.Equal(t, suiteLane, b.get(t, id).Lane, "a duplicate create changes nothing")
	})

	t.Run("Delayed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.create(t, fftype.CreateParams{Delay: fftype.Duration(10 * time.Second)})
		require.Equal(t, fftype.StateDelayed, b.state(t, id))
		require.Empty(t, b.claim(t, "w", 1))
		b.advance(t, 9*time.Second)
		require.Equal(t, fftype.StateDelayed, b.state(t, id))
		b.advance(t, time.Second)
		require.Equal(t, fftype.StateWaiting, b.state(t, id))
		b.claimOne(t, id)

		at := b.create(t, fftype.CreateParams{RunAt: suiteStart.Add(time.Hour)})
		require.Equal(t, fftype.StateDelayed, b.state(t, at))
		past := b.create(t, fftype.CreateParams{RunAt: suiteStart.Add(-time.Hour)})
		require.Equal(t, fftype.StateWaiting, b.state(t, past), "a run_at in the past is eligible at once")
		require.Equal(t, []fftype.EventType{fftype.EventCreated, fftype.EventPromoted, fftype.EventClaimed}, b.events(t, id))
	})

	t.Run("Bulk", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var ps []fftype.CreateParams
		for i := 0; i < 600; i++ {
			p := fftype.CreateParams{Lane: suiteLane, Kind: suiteKind, Payload: []byte(`{}`)}
			if i%100 == 7 {
				p.Lane = "" // invalid
			}
			if i == 10 {
				p.IdempotencyKey = "dup"
			}
			if i == 11 {
				p.IdempotencyKey = "dup"
			}
			ps = append(ps, p)
		}
		results := b.engine.CreateMany(b.ctx, ps)
		require.Len(t, results, len(ps))
		created := map[fftype.ExecutionID]bool{}
		for i, r := range results {
			if i%100 == 7 {
				requireCode(t, r.Err, fftype.KindValidation, fftype.CodeInvalidLane)
				continue
			}
			require.NoError(t, r.Err)
			if i == 11 {
				require.True(t, r.Result.Duplicate)
				require.Equal(t, results[10].Result.ID, r.Result.ID)
				continue
			}
			require.False(t, r.Result.Duplicate)
			created[r.Result.ID] = true
		}
		require.Len(t, created, 600-6-1)
		total := 0
		for cursor := ""; ; {
			page, err := b.engine.List(b.ctx, fftype.ListParams{Cursor: cursor, Limit: 1000})
			require.NoError(t, err)
			total += len(page.Executions)
			if page.Cursor == "" {
				break
			}
			cursor = page.Cursor
		}
		require.Equal(t, len(created), total)
	})

	// An item whose text a store cannot hold as it is (Postgres keeps an idempotency key as
	// text, which must be UTF-8) fails alone, not with the others of its shard's chunk.
	t.Run("BulkBadTextFailsAlone", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const badKey = "bad-\xff"
		shard := fftype.ShardForKey(fftype.DefaultNamespace, badKey, b.store.Shards())
		results := b.engine.CreateMany(b.ctx, []fftype.CreateParams{
			{Lane: suiteLane, Kind: suiteKind, ID: fftype.NewExecutionID(shard)},
			{Lane: suiteLane, Kind: suiteKind, IdempotencyKey: badKey},
			{Lane: suiteLane, Kind: suiteKind, ID: fftype.NewExecutionID(shard), Tags: map[string]string{"t": "v\xff"}},
			{Lane: suiteLane, Kind: suiteKind, ID: fftype.NewExecutionID(shard)},
		})
		require.Len(t, results, 4)
		require.NoError(t, results[0].Err)
		requireCode(t, results[1].Err, fftype.KindValidation, fftype.CodeInvalidInput)
		requireCode(t, results[2].Err, fftype.KindValidation, fftype.CodeInvalidInput)
		require.NoError(t, results[3].Err)
	})
}

func manyTokens(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "cap" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	return out
}

// longCapabilities returns n sorted capability tokens of 38 bytes each.
func longCapabilities(n int) []string {
	out := make([]string, n)
	for i := range out {
		sum := sha256.Sum256([]byte(strconv.Itoa(i)))
		out[i] = "model-" + hex.EncodeToString(sum[:16])
	}
	slices.Sort(out)
	return out
}
