package ffvalkey_test

import (
	"math"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
)

// TestShardTagsSpread checks that the shards' hash tags spread evenly over the slot
// split that redis-cli --cluster create makes for 3, 4 and 5 primaries, and that every
// shard has a slot of its own.
func TestShardTagsSpread(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 64, 100, 128, 256, 1024} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			t.Parallel()
			slots := make([]int, n)
			for s := range n {
				tag := ffvalkey.TagFor(s, n)
				require.Regexp(t, `^\{ff:s`+strconv.Itoa(s)+`:[0-9]+\}$`, tag)
				slots[s] = ffvalkey.KeySlot("prefix:" + tag + ":r:key")
				require.Equal(t, slots[s], ffvalkey.KeySlot(tag), "the tag decides the slot")
			}
			require.True(t, slices.IsSorted(slots), "shard order follows slot order: %v", slots)
			require.Len(t, slices.Compact(slices.Clone(slots)), n, "every shard has a slot of its own")
			for _, primaries := range []int{3, 4, 5} {
				if n < primaries {
					continue
				}
				counts := make([]int, primaries)
				for _, slot := range slots {
					counts[nodeOf(slot, primaries)]++
				}
				lo, hi := slices.Min(counts), slices.Max(counts)
				require.LessOrEqual(t, hi-lo, 1, "%d shards on %d primaries: %v", n, primaries, counts)
			}
		})
	}
}

// nodeOf returns which of n primaries serves slot under redis-cli's even split.
func nodeOf(slot, n int) int {
	per := float64(16384) / float64(n)
	first := 0
	for i := range n {
		last := int(math.Round(per*float64(i+1))) - 1
		if i == n-1 {
			last = 16383
		}
		if slot >= first && slot <= last {
			return i
		}
		first = last + 1
	}
	return -1
}

func TestDefaultShardsOnThreePrimaries(t *testing.T) {
	t.Parallel()
	counts := make([]int, 3)
	for s := range ffvalkey.DefaultShards {
		counts[nodeOf(ffvalkey.KeySlot(ffvalkey.TagFor(s, ffvalkey.DefaultShards)), 3)]++
	}
	require.Equal(t, []int{5, 6, 5}, counts)
}

func TestKeySlot(t *testing.T) {
	t.Parallel()
	// Values from CLUSTER KEYSLOT.
	require.Equal(t, 12182, ffvalkey.KeySlot("foo"))
	require.Equal(t, 5061, ffvalkey.KeySlot("{bar}"))
	require.Equal(t, 5061, ffvalkey.KeySlot("x{bar}y"))
	require.Equal(t, ffvalkey.KeySlot("{}x"), ffvalkey.KeySlot("{}x"), "an empty tag hashes the whole key")
}

// TestScoreEncodingOrder checks that encoded scores sort bytewise as the int64s sort,
// across the whole range, beyond 2^53 in particular.
func TestScoreEncodingOrder(t *testing.T) {
	t.Parallel()
	scores := []int64{math.MinInt64, math.MinInt64 + 1, -1 << 62, -(1 << 53) - 1, -(1 << 53), -2, -1, 0, 1, 2,
		1 << 53, 1<<53 + 1, 1 << 62, 1<<62 + 1, math.MaxInt64 - 1, math.MaxInt64}
	for i := 1; i < len(scores); i++ {
		a, b := ffvalkey.EncodeScore(scores[i-1]), ffvalkey.EncodeScore(scores[i])
		require.Len(t, a, 8)
		require.Less(t, a, b, "%d < %d", scores[i-1], scores[i])
	}
}
