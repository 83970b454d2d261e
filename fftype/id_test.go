package fftype

import (
	"errors"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseExecutionID(t *testing.T) {
	t.Parallel()
	good := []string{
		"s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"s15_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"s1023_00000000-0000-0000-0000-000000000000",
	}
	for _, s := range good {
		id, err := ParseExecutionID(s)
		require.NoError(t, err, s)
		require.Equal(t, s, id.String())
	}
	bad := []string{
		"", "s", "s_", "x0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"{fp:1}:0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"s01_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"s-1_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"s+1_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"s1024_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",
		"s1_0190A7B2-1C3D-7E4F-8A9B-0C1D2E3F4A5B",
		"s1_0190a7b21c3d7e4f8a9b0c1d2e3f4a5b",
		"s1_{0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b}",
		"s1_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b ",
	}
	for _, s := range bad {
		_, err := ParseExecutionID(s)
		require.Error(t, err, s)
		require.True(t, errors.Is(err, &Error{Kind: KindValidation, Code: CodeInvalidID}), s)
		require.Equal(t, -1, ExecutionID(s).Shard())
	}
}

func TestNewExecutionIDSortsInMintOrder(t *testing.T) {
	t.Parallel()
	var uuids []string
	for range 10_000 {
		u := NewUUID()
		require.True(t, isCanonicalUUID(u))
		require.Equal(t, byte('7'), u[14], "version 7")
		uuids = append(uuids, u)
	}
	require.True(t, sort.StringsAreSorted(uuids), "UUIDs minted by one process sort in mint order")
	id := NewExecutionID(7)
	require.Equal(t, 7, id.Shard())
	require.Panics(t, func() { ExecutionIDFromUUID(MaxShards, NewUUID()) })
}

func TestShardForKey(t *testing.T) {
	t.Parallel()
	require.Equal(t, ShardForKey("ns", "key", 16), ShardForKey("ns", "key", 16))
	seen := map[int]bool{}
	for i := range 1000 {
		s := ShardForKey("ns", string(rune('a'+i%26))+itoa(i), 16)
		require.GreaterOrEqual(t, s, 0)
		require.Less(t, s, 16)
		seen[s] = true
	}
	require.Len(t, seen, 16, "keys spread over every shard")
	require.NotEqual(t, ShardForKey("a", "bc", 1<<20), ShardForKey("ab", "c", 1<<20), "namespace and key are separated")
}

func FuzzParseExecutionID(f *testing.F) {
	f.Add("s3_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b")
	f.Add("s_")
	f.Add("{fp:1}:x")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseExecutionID(s)
		if err != nil {
			require.Equal(t, -1, ExecutionID(s).Shard())
			return
		}
		require.Equal(t, s, string(id))
		shard := id.Shard()
		require.GreaterOrEqual(t, shard, 0)
		require.Less(t, shard, MaxShards)
		require.Equal(t, id, ExecutionIDFromUUID(shard, s[len(s)-36:]), "parse and build round-trip")
	})
}
