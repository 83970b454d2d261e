package engine

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	pos := ffstore.QueueItem{Score: 1767225600000, Member: string(fftype.NewExecutionID(3))}
	got, err := decodeCursor(encodeCursor(pos))
	require.NoError(t, err)
	require.Equal(t, pos, *got)
	got, err = decodeCursor("")
	require.NoError(t, err)
	require.Nil(t, got)
	for _, bad := range []string{"!!", "MTpAOng", encodeCursor(ffstore.QueueItem{Score: 1, Member: "not-an-id"})} {
		_, err := decodeCursor(bad)
		require.ErrorIs(t, err, fftype.ErrValidation, bad)
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(encodeCursor(ffstore.QueueItem{Score: 5, Member: string(fftype.NewExecutionID(0))}))
	f.Add("")
	f.Add("MTo")
	f.Fuzz(func(t *testing.T, s string) {
		pos, err := decodeCursor(s)
		if err != nil {
			require.ErrorIs(t, err, fftype.ErrValidation)
			return
		}
		if pos != nil {
			again, err := decodeCursor(encodeCursor(*pos))
			require.NoError(t, err)
			require.Equal(t, pos, again)
		}
	})
}

func TestPriorityScore(t *testing.T) {
	t.Parallel()
	now := suiteNow()
	hi, lo := priorityScore(9000, now), priorityScore(0, now)
	require.Less(t, hi, lo, "higher priority sorts first")
	require.Less(t, priorityScore(5, now), priorityScore(5, now.Add(time.Millisecond)), "then older first")
	require.Equal(t, 9000, priorityOfScore(hi))
	require.Equal(t, 0, priorityOfScore(lo))
	require.Positive(t, lo)
}

func suiteNow() (t time.Time) { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// TestLongestEventCursorIsAccepted: the engine takes back any cursor it can issue, up to
// the longest: one of a store with the most shards, each far into its log.
func TestLongestEventCursorIsAccepted(t *testing.T) {
	t.Parallel()
	e := &Engine{shards: fftype.MaxShards}
	pos := slices.Repeat([]uint64{math.MaxUint64}, fftype.MaxShards)
	got, err := e.decodeEventCursor(encodeEventCursor(pos))
	require.NoError(t, err)
	require.Equal(t, pos, got)
	_, err = e.decodeEventCursor(encodeEventCursor(pos) + "A")
	require.ErrorIs(t, err, fftype.ErrValidation, "one character longer is refused")
}

func FuzzDecodeEventCursor(f *testing.F) {
	e := &Engine{shards: 16}
	f.Add(encodeEventCursor(make([]uint64, 16)))
	f.Add("end")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, s string) {
		pos, err := e.decodeEventCursor(s)
		if err != nil {
			require.ErrorIs(t, err, fftype.ErrValidation)
			return
		}
		require.Len(t, pos, 16)
		again, err := e.decodeEventCursor(encodeEventCursor(pos))
		require.NoError(t, err)
		require.Equal(t, pos, again)
	})
}
