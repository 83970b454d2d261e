package ffstore

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/fftype"
)

func TestDisjointPrefixes(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"a", "b"}, DisjointPrefixes([]string{"b", "ab", "a", "bc", "a"}))
	require.Equal(t, []string{""}, DisjointPrefixes([]string{"x", ""}))
	require.Empty(t, DisjointPrefixes(nil))
	in := []string{"z", "y"}
	DisjointPrefixes(in)
	require.Equal(t, []string{"z", "y"}, in, "the input is not changed")
}

func TestPrefixEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p, end string
		ok     bool
	}{
		{"e\x1flane\x1f", "e\x1flane\x20", true},
		{"a\xff", "b", true},
		{"a\xff\xff", "b", true},
		{"\xff\xff", "", false},
		{"", "", false},
	} {
		end, ok := PrefixEnd(tc.p)
		require.Equal(t, tc.ok, ok, "%q", tc.p)
		require.Equal(t, tc.end, end, "%q", tc.p)
		if ok {
			require.Greater(t, end, tc.p+"\xff\xff\xff", "%q: past every name it starts", tc.p)
		}
	}
}

func TestCursorExpired(t *testing.T) {
	t.Parallel()
	require.ErrorIs(t, CursorExpired(1, 2, 3), fftype.ErrCursorExpired)
}

func TestMemberRecordKeys(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"x:a", "p:a", "x:b", "p:b"}, MemberRecordKeys([]string{"a", "b"}, []string{"x", "p"}))
	require.Empty(t, MemberRecordKeys([]string{"a"}, nil))
}
