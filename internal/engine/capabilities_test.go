package engine

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

func TestEligibleQueueCapabilities(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name   string
		caps   []string
		inline bool
	}{
		{"None", nil, true},
		{"Short", []string{"cuda", "gpu"}, true},
		{"AtLimit", []string{"a", strings.Repeat("b", maxInlineCaps-2)}, true},
		{"OverLimit", []string{"a", strings.Repeat("b", maxInlineCaps-1)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := eligibleQueue("lane", "ns", tc.caps)
			lane, ns, part, ok := parseEligibleQueue(q)
			require.True(t, ok)
			require.Equal(t, "lane", lane)
			require.Equal(t, "ns", ns)
			digest, byDigest := capsDigestOfQueue(q)
			require.Equal(t, !tc.inline, byDigest)
			if tc.inline {
				require.Equal(t, strings.Join(tc.caps, ","), part, "a short set is named as it always was")
				return
			}
			require.Equal(t, capsDigestMark+digest, part)
			require.Len(t, digest, capsDigestLen)
			require.Less(t, len(q), 100)
		})
	}

	t.Run("OtherQueues", func(t *testing.T) {
		t.Parallel()
		for _, q := range []string{queueAll, queueLease, timerPrefix + capsDigestMark + strings.Repeat("0", capsDigestLen)} {
			_, ok := capsDigestOfQueue(q)
			require.False(t, ok, q)
		}
	})
}

// TestInlineNamedEntriesOfLongSets: an execution with a long capability set that sits in
// its eligible queue under the queue's inline name (written before such sets were named
// by digest, or by a process of an earlier build during a rolling upgrade) is still
// claimed by a covering worker, and a change that moves it leaves no entry under the old
// name and writes the set's record.
func TestInlineNamedEntriesOfLongSets(t *testing.T) {
	t.Parallel()
	var caps []string
	for i := range 10 {
		caps = append(caps, fmt.Sprintf("capability-%02d-%s", i, strings.Repeat("x", 20)))
	}
	require.Greater(t, joinedLen(caps), maxInlineCaps)
	for _, name := range []string{"Claim", "ChangePriorityThenClaim"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			e, _ := newTestEngine(t)
			res, err := e.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Capabilities: caps})
			require.NoError(t, err)
			x, err := e.Get(ctx, res.ID)
			require.NoError(t, err)
			byDigest, inline := eligibleQueue("l", "default", caps), inlineEligibleQueue(x)
			digest, _ := capsDigestOfQueue(byDigest)
			require.NoError(t, e.store.Update(ctx, res.ID.Shard(), func(tx ffstore.Tx) error {
				items, err := tx.Range(byDigest, nil, ffstore.MaxScore, 10)
				if err != nil {
					return err
				}
				require.Len(t, items, 1)
				tx.QueueRemove(byDigest, string(res.ID))
				tx.QueueAdd(inline, string(res.ID), items[0].Score)
				tx.Delete(capsKey(digest))
				return nil
			}))
			if name == "ChangePriorityThenClaim" {
				require.NoError(t, e.ChangePriority(ctx, res.ID, 5))
				require.NoError(t, e.CheckInvariants(ctx, res.ID), "the record is written")
				require.NoError(t, e.store.View(ctx, res.ID.Shard(), func(tx ffstore.ReadTx) error {
					items, err := tx.Range(inline, nil, ffstore.MaxScore, 10)
					require.Empty(t, items, "no entry is left under the inline name")
					return err
				}))
			}
			claim := func(caps []string) []*fftype.Lease {
				ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{"l"}, Capabilities: caps, Count: 10})
				require.NoError(t, err)
				return ls
			}
			require.Empty(t, claim(caps[1:]), "a worker lacking a token")
			require.Len(t, claim(caps), 1, "a covering worker")
			require.NoError(t, e.CheckInvariants(ctx, res.ID))
		})
	}
}
