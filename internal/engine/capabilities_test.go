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

// TestInlineNamedEntriesOfLongSets: an eligible queue named by the digest of a long
// capability set may hold entries under its earlier, inline name, written before such sets
// were named by digest or by a process of an earlier build during a rolling upgrade.
func TestInlineNamedEntriesOfLongSets(t *testing.T) {
	t.Parallel()
	var caps []string
	for i := range 10 {
		caps = append(caps, fmt.Sprintf("capability-%02d-%s", i, strings.Repeat("x", 20)))
	}
	require.Greater(t, joinedLen(caps), maxInlineCaps)
	byDigest := eligibleQueue("l", "default", caps)
	digest, _ := capsDigestOfQueue(byDigest)

	// setup creates an execution with caps and rewrites the store as an earlier build
	// would have left it: moved, its entry under the inline name only and no record of
	// the set; or not moved, with an entry under the inline name beside the digest's (an
	// earlier build changed its priority).
	setup := func(t *testing.T, moved bool) (*Engine, *fftype.Execution) {
		t.Helper()
		e, _ := newTestEngine(t)
		res, err := e.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Capabilities: caps, Priority: 5})
		require.NoError(t, err)
		require.NoError(t, e.store.Update(t.Context(), res.ID.Shard(), func(tx ffstore.Tx) error {
			x, err := getExec(tx, res.ID)
			if err != nil {
				return err
			}
			if moved {
				tx.QueueRemove(byDigest, string(x.ID))
				tx.Delete(capsKey(digest))
			} else {
				x.Priority = 1
				putExec(tx, x)
			}
			tx.QueueAdd(inlineEligibleQueue(x), string(x.ID), priorityScore(x.Priority, x.CreatedAt))
			return nil
		}))
		x, err := e.Get(t.Context(), res.ID)
		require.NoError(t, err)
		return e, x
	}
	claim := func(t *testing.T, e *Engine, caps []string) []*fftype.Lease {
		t.Helper()
		ls, err := e.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{"l"}, Capabilities: caps, Count: 10})
		require.NoError(t, err)
		return ls
	}
	inlineEntries := func(t *testing.T, e *Engine, x *fftype.Execution) []ffstore.QueueItem {
		t.Helper()
		var items []ffstore.QueueItem
		require.NoError(t, e.store.View(t.Context(), x.ID.Shard(), func(tx ffstore.ReadTx) error {
			var err error
			items, err = tx.Range(inlineEligibleQueue(x), nil, ffstore.MaxScore, 10)
			return err
		}))
		return items
	}

	for name, change := range map[string]func(*Engine, *fftype.Execution) error{
		"Claimed": func(*Engine, *fftype.Execution) error { return nil },
		"PriorityChanged": func(e *Engine, x *fftype.Execution) error {
			return e.ChangePriority(t.Context(), x.ID, 7)
		},
		"Tagged": func(e *Engine, x *fftype.Execution) error {
			return e.SetTags(t.Context(), x.ID, map[string]string{"team": "a"})
		},
	} {
		t.Run("Moved"+name, func(t *testing.T) {
			// Still eligible, and claimed by a covering worker only; a change that keeps
			// it eligible moves it to the digest name and writes the set's record.
			t.Parallel()
			e, x := setup(t, true)
			require.NoError(t, change(e, x))
			if name != "Claimed" {
				require.NoError(t, e.CheckInvariants(t.Context(), x.ID))
				require.Empty(t, inlineEntries(t, e, x), "no entry is left under the inline name")
			}
			require.Empty(t, claim(t, e, caps[1:]), "a worker lacking a token")
			require.Len(t, claim(t, e, caps), 1, "a covering worker")
			require.NoError(t, e.CheckInvariants(t.Context(), x.ID))
		})
	}

	t.Run("LeftBesideDigestEntry", func(t *testing.T) {
		// Claimed through its digest entry, running or finished, it is not claimed again
		// through the inline one.
		t.Parallel()
		e, x := setup(t, false)
		ls := claim(t, e, caps)
		require.Len(t, ls, 1)
		require.Empty(t, claim(t, e, caps), "a running execution")
		require.NoError(t, e.Complete(t.Context(), x.ID, ls[0].Fence, nil, ""))
		require.Empty(t, claim(t, e, caps), "a completed execution")
		done, err := e.Get(t.Context(), x.ID)
		require.NoError(t, err)
		require.Equal(t, fftype.PhaseTerminal, done.Phase)
	})
}
