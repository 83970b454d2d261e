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

func TestURLQuery(t *testing.T) {
	t.Parallel()
	q, err := URLQuery("sqlite:rel/x.db?shards=2&synchronous=normal")
	require.NoError(t, err)
	require.Equal(t, "2", q.Get("shards"))
	require.Equal(t, "normal", q.Get("synchronous"))
	q, err = URLQuery("/0?prefix=a%23b")
	require.NoError(t, err)
	require.Equal(t, "a#b", q.Get("prefix"), "an escaped '#' is a character like any other")
	q, err = URLQuery("postgres://h/db")
	require.NoError(t, err)
	require.Empty(t, q)
	for _, bad := range []string{"sqlite:///x.db#", "sqlite:///x#1.db", "postgres://h/db?schema=s#", "?a=1;b=2", "?a=%zz"} {
		_, err := URLQuery(bad)
		require.Error(t, err, bad)
	}
}
