package ffclient

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/fftype"
)

// TestReadEventsDeliversOnlyEvents: blocks without data — the position a stream opens
// with, a keep-alive comment — deliver nothing; each event carries its own id.
func TestReadEventsDeliversOnlyEvents(t *testing.T) {
	t.Parallel()
	stream := "id: c0\n\n" +
		": keep-alive\n\n" +
		"id: c1\nevent: created\ndata: {\"seq\":1,\"type\":\"created\",\"execution_id\":\"x\"}\n\n"
	var got []fftype.Delivery
	require.NoError(t, readEvents(strings.NewReader(stream), func(d fftype.Delivery) error {
		got = append(got, d)
		return nil
	}))
	require.Len(t, got, 1)
	require.Equal(t, "c1", got[0].Cursor)
	require.Equal(t, fftype.EventCreated, got[0].Event.Type)
}
