package engine

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestClaimTurns: a worker's lanes take turns, and so do the namespaces of a lane, within
// one claim and from one claim to the next, whether the work sits on one shard or many.
func TestClaimTurns(t *testing.T) {
	t.Parallel()
	for _, shards := range []int{1, 3} {
		e, _ := newTestEngineOn(t, ffmem.New(&ffmem.Options{Shards: shards}), Config{})
		ctx := t.Context()
		for i := range 12 {
			_, err := e.Create(ctx, fftype.CreateParams{Lane: []string{"l1", "l2"}[i/6], Namespace: []string{"a", "b", "c"}[i%3], Kind: "k"})
			require.NoError(t, err)
		}
		p := fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i", Lanes: []string{"l1", "l2"}, Count: 6}
		leases, err := e.Claim(ctx, p)
		require.NoError(t, err)
		served := map[string]int{}
		for _, l := range leases {
			served[l.Lane]++
			served[l.Lane+"/"+l.Namespace]++
		}
		require.Equal(t, 3, served["l1"], "shards %d: %v", shards, served)
		require.Equal(t, 3, served["l2"], "shards %d: %v", shards, served)
		p.Count = 1
		for range 6 {
			l, err := e.Claim(ctx, p)
			require.NoError(t, err)
			require.Len(t, l, 1)
			served[l[0].Lane]++
			served[l[0].Lane+"/"+l[0].Namespace]++
		}
		for _, k := range []string{"l1/a", "l1/b", "l1/c", "l2/a", "l2/b", "l2/c"} {
			require.Equal(t, 2, served[k], "shards %d: %v", shards, served)
		}
	}
}

// TestClaimLaneTurnsOfPoolsWithOtherLanes: lanes take turns for each worker although
// workers of other lanes claim in between. Two pools claim in turn, one from lanes a and
// b, the other from lanes x and y; each is served from both of its lanes.
func TestClaimLaneTurnsOfPoolsWithOtherLanes(t *testing.T) {
	t.Parallel()
	e, _ := newTestEngine(t)
	ctx := t.Context()
	for range 10 {
		for _, lane := range []string{"a", "b", "x", "y"} {
			_, err := e.Create(ctx, fftype.CreateParams{Lane: lane, Kind: "k"})
			require.NoError(t, err)
		}
	}
	served := map[string]int{}
	for range 10 {
		for _, lanes := range [][]string{{"a", "b"}, {"x", "y"}} {
			ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i", Lanes: lanes})
			require.NoError(t, err)
			require.Len(t, ls, 1)
			served[ls[0].Lane]++
		}
	}
	require.Equal(t, map[string]int{"a": 5, "b": 5, "x": 5, "y": 5}, served)
}

// TestClaimNamespaceTurnsOfWorkersWithOtherCapabilities: the namespaces a worker can serve
// take turns for it although workers that cover fewer of them claim in between. Two
// workers claim in turn from one lane: one covers namespaces a and b, the other also
// namespace c, whose executions need a gpu; c gets its turns with the second.
func TestClaimNamespaceTurnsOfWorkersWithOtherCapabilities(t *testing.T) {
	t.Parallel()
	e, _ := newTestEngine(t)
	ctx := t.Context()
	for range 10 {
		for _, ns := range []string{"a", "b", "c"} {
			p := fftype.CreateParams{Lane: "l", Kind: "k", Namespace: ns}
			if ns == "c" {
				p.Capabilities = []string{"gpu"}
			}
			_, err := e.Create(ctx, p)
			require.NoError(t, err)
		}
	}
	gpuServed := map[string]int{}
	for range 6 {
		for _, caps := range [][]string{nil, {"gpu"}} {
			ls, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i", Lanes: []string{"l"}, Capabilities: caps})
			require.NoError(t, err)
			require.Len(t, ls, 1)
			if caps != nil {
				gpuServed[ls[0].Namespace]++
			}
		}
	}
	require.GreaterOrEqual(t, gpuServed["c"], 2, "the gpu worker's claims went to %v", gpuServed)
}

// TestClaimTurnsStayBounded: the turns of lanes and namespaces that come and go are
// forgotten beyond maxTurns, while the one just served is kept.
func TestClaimTurnsStayBounded(t *testing.T) {
	t.Parallel()
	turns := claimTurns{lanes: map[string]uint64{}, namespaces: map[laneNamespace]uint64{}}
	for i := range maxTurns + 10 {
		turns.serve("l"+strconv.Itoa(i), "n")
	}
	require.Len(t, turns.lanes, maxTurns)
	require.Len(t, turns.namespaces, maxTurns)
	last := "l" + strconv.Itoa(maxTurns+9)
	require.Equal(t, uint64(maxTurns+10), turns.lanes[last])
	require.Equal(t, uint64(maxTurns+10), turns.namespaces[laneNamespace{last, "n"}])
}

// TestClaimNamespaceTurnsPastWhatTurnsRemember: with more namespaces in a lane than
// claimTurns remembers (maxTurns), every namespace still gets its turn: fair turns serve
// each of N namespaces once in N picks, and none twice before all once.
func TestClaimNamespaceTurnsPastWhatTurnsRemember(t *testing.T) {
	t.Parallel()
	e, _ := newTestEngineOn(t, ffmem.New(&ffmem.Options{Shards: 1}), Config{})
	ctx := t.Context()
	const n = maxTurns + 104
	var ps []fftype.CreateParams
	for i := range n {
		for range 4 {
			ps = append(ps, fftype.CreateParams{Lane: "l", Namespace: fmt.Sprintf("n%05d", i), Kind: "k"})
		}
	}
	for len(ps) > 0 {
		k := min(len(ps), 500)
		for _, r := range e.CreateMany(ctx, ps[:k]) {
			require.NoError(t, r.Err)
		}
		ps = ps[k:]
	}
	served := map[string]int{}
	total := 0
	for total < n+800 {
		leases, err := e.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "i", Lanes: []string{"l"}, Count: 1000})
		require.NoError(t, err)
		require.NotEmpty(t, leases)
		for _, l := range leases {
			served[l.Namespace]++
		}
		total += len(leases)
	}
	most := 0
	for _, c := range served {
		most = max(most, c)
	}
	var never []string
	for i := range n {
		if ns := fmt.Sprintf("n%05d", i); served[ns] == 0 {
			never = append(never, ns)
		}
	}
	require.Empty(t, never, "after %d leases over %d namespaces (fair turns serve each once), %d namespaces were never served, e.g. %v, while others were served up to %d times",
		total, n, len(never), never[:min(5, len(never))], most)
	require.LessOrEqual(t, most, 2, "%d leases over %d namespaces", total, n)
}
