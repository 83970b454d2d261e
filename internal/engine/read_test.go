package engine

import (
	"encoding/base64"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
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

// testLogID stands for a store's event-log id in cursor tests.
const testLogID = 0x0123456789abcdef

// TestLongestEventCursorIsAccepted: the engine takes back any cursor it can issue, up to
// the longest: one of a store with the most shards, each far into its log.
func TestLongestEventCursorIsAccepted(t *testing.T) {
	t.Parallel()
	e := &Engine{shards: fftype.MaxShards}
	pos := slices.Repeat([]uint64{math.MaxUint64}, fftype.MaxShards)
	got, err := e.decodeEventCursor(encodeEventCursor(testLogID, pos))
	require.NoError(t, err)
	require.Equal(t, pos, got.pos)
	_, err = e.decodeEventCursor(encodeEventCursor(testLogID, pos) + "A")
	require.ErrorIs(t, err, fftype.ErrValidation, "one character longer is refused")
}

// TestEventCursorNamesItsLog: a cursor made for another log is refused; one issued before
// cursors carried their log's id (version 1) is still taken.
func TestEventCursorNamesItsLog(t *testing.T) {
	t.Parallel()
	e := &Engine{shards: 2}
	c, err := e.decodeEventCursor(encodeEventCursor(testLogID+1, []uint64{3, 4}))
	require.NoError(t, err)
	err = c.of(testLogID)
	require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidCursor})
	require.ErrorContains(t, err, "another store")

	v1 := base64.RawURLEncoding.EncodeToString([]byte{cursorVersionNoID, 2, 3, 4})
	c, err = e.decodeEventCursor(v1)
	require.NoError(t, err)
	require.NoError(t, c.of(testLogID), "a version 1 cursor names no log")
	require.Equal(t, []uint64{3, 4}, c.pos)
}

func FuzzDecodeEventCursor(f *testing.F) {
	e := &Engine{shards: 16}
	f.Add(encodeEventCursor(testLogID, make([]uint64, 16)))
	f.Add("end")
	f.Add("AQ")
	f.Add("AhAB")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := e.decodeEventCursor(s)
		if err != nil {
			require.ErrorIs(t, err, fftype.ErrValidation)
			return
		}
		require.Len(t, c.pos, 16)
		again, err := e.decodeEventCursor(encodeEventCursor(testLogID, c.pos))
		require.NoError(t, err)
		require.Equal(t, c.pos, again.pos)
	})
}

// TestMalformedCursorWritesNothing: a cursor that is not one is refused before the store is
// asked anything, so a bad request writes no log id on a store that has none yet.
func TestMalformedCursorWritesNothing(t *testing.T) {
	t.Parallel()
	st := ffmem.New(nil)
	e, _ := newTestEngineOn(t, st, Config{})
	_, err := e.Subscribe(t.Context(), fftype.EventFilter{}, "not-a-cursor")
	require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindValidation, Code: fftype.CodeInvalidCursor})
	require.False(t, stored(t, st, logIDKey))
}
