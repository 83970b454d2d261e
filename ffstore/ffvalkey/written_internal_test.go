package ffvalkey

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWrittenRecordsKeepsTheLatestCommit(t *testing.T) {
	t.Parallel()
	var w writtenRecords
	w.remember(5, map[string][]byte{"a": []byte("five"), "b": []byte("b5")})
	r, ok := w.get("a")
	require.True(t, ok)
	require.Equal(t, versionString(5), r.version)
	require.Equal(t, "five", string(r.value))
	copy(r.value, "XXXX")
	r, _ = w.get("a")
	require.Equal(t, "five", string(r.value), "a read is a copy: the caller may change it")

	w.remember(4, map[string][]byte{"a": []byte("four"), "b": nil})
	r, _ = w.get("a")
	require.Equal(t, "five", string(r.value), "an earlier commit's reply, late, changes nothing")
	_, ok = w.get("b")
	require.True(t, ok, "nor does an earlier commit's delete")

	w.remember(6, map[string][]byte{"a": []byte("six"), "b": nil})
	r, _ = w.get("a")
	require.Equal(t, versionString(6), r.version)
	_, ok = w.get("b")
	require.False(t, ok, "deleted")

	w.remember(7, map[string][]byte{"a": make([]byte, writtenMaxValue+1)})
	_, ok = w.get("a")
	require.False(t, ok, "too large to keep: the older value is not kept either")

	w.forget([]string{"a", "never"})
	require.Zero(t, w.m.bytes)
}

// TestWrittenRecordsBoundedInEntries checks that records with empty or tiny values
// count against the bound too.
func TestWrittenRecordsBoundedInEntries(t *testing.T) {
	t.Parallel()
	var w writtenRecords
	for i := range 300_000 {
		w.remember(uint64(i+1), map[string][]byte{"ff:{0}:r:exec:" + strconv.Itoa(i): {}})
	}
	require.LessOrEqual(t, len(w.m.m), writtenMaxBytes/writtenOverhead)
	require.LessOrEqual(t, w.m.bytes, writtenMaxBytes)
}

func TestWrittenRecordsBounded(t *testing.T) {
	t.Parallel()
	var w writtenRecords
	value := bytes.Repeat([]byte("v"), 1<<10)
	n := 2 * writtenMaxBytes / len(value)
	for i := range n {
		w.remember(uint64(i+1), map[string][]byte{"k" + strconv.Itoa(i): value})
		require.LessOrEqual(t, w.m.bytes, writtenMaxBytes)
	}
	_, ok := w.get("k0")
	require.False(t, ok, "the oldest go first")
	_, ok = w.get("k" + strconv.Itoa(n-1))
	require.True(t, ok)
	require.Greater(t, w.m.bytes, writtenMaxBytes-len(value)-writtenOverhead-16, "full")

	// One record written again and again: what it replaced is not kept in order.
	for i := range 10 * n {
		w.remember(uint64(n+i+1), map[string][]byte{"again": value})
	}
	require.LessOrEqual(t, len(w.m.order), 2*len(w.m.m)+64)
	require.LessOrEqual(t, w.m.bytes, writtenMaxBytes)
}
