package ffserver

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/fftype"
)

// TestEveryKindHasAStatus: each error kind answers with a status of its own, so no kind
// falls through to a 500.
func TestEveryKindHasAStatus(t *testing.T) {
	t.Parallel()
	for _, k := range fftype.Kinds {
		require.Contains(t, statusOfKind, k, "kind %s has no status", k)
	}
	require.Len(t, statusOfKind, len(fftype.Kinds), "a status for a kind fftype does not know")
}
