package engine

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
