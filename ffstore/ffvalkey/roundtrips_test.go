package ffvalkey_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestClaimAndCompleteTakeOneCallEach runs executions through the engine, claimed and
// completed one at a time, and counts the calls the server received meanwhile (its
// SLOWLOG, logging every command, on a server of its own): most claims take their items
// by foresight, without a pop, and completions read the execution their claim wrote
// without an MGET. Every execution completes.
func TestClaimAndCompleteTakeOneCallEach(t *testing.T) {
	t.Parallel()
	const n = 40
	srv := testdb.NewRedis(t, testdb.RedisOptions{})
	s := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 1})
	c, err := flowfabric.NewClient(s, nil)
	require.NoError(t, err)
	ctx := t.Context()
	var ids []flowfabric.ExecutionID
	for range n {
		r, err := c.Create(ctx, flowfabric.CreateParams{Lane: "l", Kind: "k", Payload: []byte(`"p"`)})
		require.NoError(t, err)
		ids = append(ids, r.ID)
	}
	rc := ffvalkey.Client(s)
	slowlog := func(args ...string) {
		require.NoError(t, rc.Do(ctx, rc.B().Arbitrary("SLOWLOG").Args(args...).Build()).Error())
	}
	require.NoError(t, rc.Do(ctx, rc.B().ConfigSet().ParameterValue().ParameterValue("slowlog-log-slower-than", "0").
		ParameterValue("slowlog-max-len", "100000").Build()).Error())
	slowlog("RESET")

	p := flowfabric.ClaimParams{WorkerID: "w", WorkerInstanceID: "w-1", Lanes: []string{"l"}}
	for range n {
		leases, err := c.Claim(ctx, p)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		require.NoError(t, c.Complete(ctx, leases[0].ExecutionID, leases[0].Fence, nil, ""))
	}

	entries, err := rc.Do(ctx, rc.B().Arbitrary("SLOWLOG", "GET").Args("-1").Build()).ToArray()
	require.NoError(t, err)
	var pops, mgets int
	for _, e := range entries {
		f, err := e.ToArray()
		require.NoError(t, err)
		args, err := f[3].AsStrSlice()
		require.NoError(t, err)
		switch {
		case len(args) > 1 && args[0] == "FCALL" && args[1] == ffvalkey.FnPop:
			pops++
		case args[0] == "MGET":
			mgets++
		}
	}
	// A pop looks ten items ahead for a claim of one, so about one claim in nine pops;
	// each claim's commit reads ahead with one MGET, and nothing else reads records.
	t.Logf("%d claims and completions: %d pops, %d MGETs", n, pops, mgets)
	require.LessOrEqual(t, pops, n/4, "claims taken by foresight")
	require.LessOrEqual(t, mgets, n+pops, "completions read nothing")
	for _, id := range ids {
		x, err := c.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, flowfabric.StateCompleted, x.PublicState())
	}
}
