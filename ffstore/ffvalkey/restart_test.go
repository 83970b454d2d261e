package ffvalkey_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/engine"
	"github.com/flowfabric/flowfabric/internal/storetest"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

const workLane = "work"

// TestRestartDurable restarts a server that runs with appendonly yes and appendfsync
// always (SHUTDOWN, then a start on the same directory and port) while workers claim and
// complete executions through the engine: see storetest.Restart.
func TestRestartDurable(t *testing.T) {
	t.Parallel()
	srv := testdb.NewRedis(t, testdb.RedisOptions{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	store := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 4})
	storetest.Restart{Executions: 600, ClaimCount: 2, Restart: srv.Restart}.Run(t, store)
}

// TestRestartWithoutPersistence restarts a server that keeps nothing: the store's keys
// and its function library are gone. The open store loads the library again by itself
// and takes new work with no manual step.
func TestRestartWithoutPersistence(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testdb.NewRedis(t, testdb.RedisOptions{})
	store := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 2})
	e, err := engine.New(store, nil)
	require.NoError(t, err)
	roundTrip := func() fftype.ExecutionID {
		t.Helper()
		res, err := e.Create(ctx, fftype.CreateParams{Lane: workLane, Kind: "work"})
		require.NoError(t, err)
		ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{workLane}})
		require.NoError(t, err)
		require.Len(t, ls, 1)
		require.Equal(t, res.ID, ls[0].ExecutionID)
		require.NoError(t, e.Complete(ctx, ls[0].ExecutionID, ls[0].Fence, nil, ""))
		return res.ID
	}
	id := roundTrip()
	require.NoError(t, srv.Restart())
	_, err = e.Get(ctx, id)
	require.ErrorIs(t, err, fftype.ErrExecutionNotFound, "the server kept nothing")
	roundTrip() // reloads the library, recreates the meta key
	again := openStore(t, srv.URL(0), &ffvalkey.Options{KeyPrefix: store.KeyPrefix()})
	require.Equal(t, 2, again.Shards(), "the meta key is back")
}
