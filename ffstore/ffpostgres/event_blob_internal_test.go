package ffpostgres

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/fftype"
)

func TestEventBlob(t *testing.T) {
	t.Parallel()
	events := []fftype.Event{
		{Shard: 3, Seq: 10, Version: 1, Type: "created", Time: time.Unix(1700000000, 123).UTC(), ExecutionID: "e1", Namespace: "ns", Lane: "läne"},
		{Shard: 3, Seq: 11, Version: 7, Type: "claimed", Time: time.Unix(-1, 999999999).UTC(), ExecutionID: "e1", FlowID: "f", Lane: "l", Data: []byte(`{"a":1}`)},
		{Shard: 3, Seq: 12, Version: 1, Type: "completed", Time: time.Unix(0, 0).UTC(), ExecutionID: "e2", Data: []byte{}},
	}
	var blob []byte
	for i := range events {
		blob = appendEventBlob(blob, &events[i])
	}

	got, err := decodeEventBlob(nil, 3, 10, 12, blob, 0, 100)
	require.NoError(t, err)
	require.Equal(t, events, got)
	got, err = decodeEventBlob(nil, 3, 10, 12, blob, 10, 1)
	require.NoError(t, err)
	require.Equal(t, events[1:2], got, "after and limit cut inside the block")

	// Every truncation fails, as do trailing bytes, a count that does not match and a
	// nanosecond field out of range.
	for n := range len(blob) {
		_, err := decodeEventBlob(nil, 3, 10, 12, blob[:n], 0, 100)
		require.ErrorIs(t, err, errEventBlob, "truncated to %d bytes", n)
	}
	_, err = decodeEventBlob(nil, 3, 10, 12, append(blob[:len(blob):len(blob)], 0), 0, 100)
	require.ErrorIs(t, err, errEventBlob)
	_, err = decodeEventBlob(nil, 3, 10, 11, blob, 0, 100)
	require.ErrorIs(t, err, errEventBlob)
	bad := append([]byte{}, blob...)
	bad[12] = 0xff
	_, err = decodeEventBlob(nil, 3, 10, 12, bad, 0, 100)
	require.ErrorIs(t, err, errEventBlob)
}
