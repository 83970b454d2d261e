package ffserver_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

func registration(instance, session string) map[string]any {
	return map[string]any{"worker_id": "w", "worker_instance_id": instance, "lanes": []string{"l", "m"},
		"capabilities": []string{"gpu"}, "ttl_ms": 60_000, "session": session}
}

func TestWorkerRegistryOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})

	var reg ffserver.RegisterWorkerResponse
	b.call("POST", "/v1/workers", registration("i1", "s1"), 200, &reg)
	require.False(t, reg.Refreshed)
	require.False(t, reg.ExpiresAt.IsZero())
	b.call("POST", "/v1/workers", registration("i1", "s1"), 200, &reg)
	require.True(t, reg.Refreshed, "the same session refreshes its registration")
	b.requireError("POST", "/v1/workers", registration("i1", "intruder"), 409, "duplicate_worker_instance")
	b.call("POST", "/v1/workers", registration("i2", "s2"), 200, nil)

	var info flowfabric.WorkerInfo
	b.call("GET", "/v1/workers/i1", nil, 200, &info)
	require.Equal(t, "w", info.WorkerID)
	require.Equal(t, fftype.DefaultNamespace, info.Namespace)
	require.Equal(t, []string{"l", "m"}, info.Lanes)
	require.Equal(t, []string{"gpu"}, info.Capabilities)
	require.Equal(t, time.Minute, info.TTL.D())
	b.requireError("GET", "/v1/workers/i1?namespace=other", nil, 404, "worker_not_registered")
	b.requireError("GET", "/v1/workers/nobody", nil, 404, "worker_not_registered")

	var page flowfabric.WorkerPage
	b.call("GET", "/v1/workers?limit=1", nil, 200, &page)
	require.Len(t, page.Workers, 1)
	require.Equal(t, "i1", page.Workers[0].InstanceID)
	require.Equal(t, "i1", page.Cursor)
	b.call("GET", "/v1/workers?limit=1&cursor="+page.Cursor, nil, 200, &page)
	require.Len(t, page.Workers, 1)
	require.Equal(t, "i2", page.Workers[0].InstanceID)
	b.call("GET", "/v1/workers?namespace=other", nil, 200, &page)
	require.Empty(t, page.Workers)

	var hb ffserver.HeartbeatResponse
	b.call("POST", "/v1/workers/i1/heartbeat", map[string]any{"session": "s1"}, 200, &hb)
	require.False(t, hb.ExpiresAt.IsZero())
	b.requireError("POST", "/v1/workers/i1/heartbeat", map[string]any{"session": "intruder"}, 404, "worker_not_registered")

	// Marking i1 dead expires its leases at once.
	_, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	var claim ffserver.ClaimResponse
	b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "i1", "lanes": []string{"l"}}, 200, &claim)
	require.Len(t, claim.Leases, 1)
	var dead ffserver.MarkDeadResponse
	b.call("POST", "/v1/workers/i1/mark-dead", map[string]any{"reason": "host unreachable"}, 200, &dead)
	require.Equal(t, 1, dead.ExpiredLeases)
	var state ffserver.StateResponse
	b.call("GET", "/v1/executions/"+string(claim.Leases[0].ExecutionID)+"/state", nil, 200, &state)
	require.Equal(t, fftype.StateWaiting, state.State, "the dead worker's execution is eligible again")
	b.requireError("GET", "/v1/workers/i1", nil, 404, "worker_not_registered")

	b.call("POST", "/v1/workers/i2/deregister", map[string]any{"session": "s2"}, 200, nil)
	b.requireError("GET", "/v1/workers/i2", nil, 404, "worker_not_registered")
	b.call("GET", "/v1/workers", nil, 200, &page)
	require.Empty(t, page.Workers)
}

func TestWorkerRoutesBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	b.call("POST", "/v1/workers", registration("i1", "s1"), 200, nil)
	with := func(k string, v any) map[string]any {
		r := registration("i9", "s9")
		r[k] = v
		return r
	}
	grant := `{"worker_instance_id":"i","lanes":["l"]`
	cases := []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/v1/workers", "{", 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", "", 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("bogus", 1), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("lanes", []string{}), 400, fftype.CodeInvalidLane},
		{"POST", "/v1/workers", with("lanes", "l"), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("ttl_ms", -1), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("ttl_ms", 0), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("ttl_ms", int64(1)<<50), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("session", ""), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("worker_id", ""), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("worker_instance_id", "a\x01b"), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("worker_instance_id", ".."), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("worker_id", "."), 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers", with("namespace", "has space"), 400, fftype.CodeInvalidNamespace},
		{"POST", "/v1/workers", with("capabilities", []string{"a b"}), 400, fftype.CodeInvalidCapabilities},
		{"GET", "/v1/workers?limit=0", nil, 400, fftype.CodeInvalidInput},
		{"GET", "/v1/workers?limit=abc", nil, 400, fftype.CodeInvalidInput},
		{"GET", "/v1/workers?limit=10001", nil, 400, fftype.CodeInvalidInput},
		{"GET", "/v1/workers?namespace=a%20b", nil, 400, fftype.CodeInvalidNamespace},
		{"GET", "/v1/workers?cursor=%01", nil, 400, fftype.CodeInvalidInput},
		{"GET", "/v1/workers/a%01b", nil, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/i1/heartbeat", `{}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/i1/heartbeat", `{"session":1}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/i1/deregister", `{"session":"` + strings.Repeat("s", 200) + `"}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/i1/mark-dead", `{"reason":"\u0001"}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/i1/mark-dead", `{"reason":"` + strings.Repeat("r", 300) + `"}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/nobody/mark-dead", ``, 404, "worker_not_registered"},
		{"POST", "/v1/workers/w/claim-grant", grant + `,"grant_ttl_ms":-1}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/w/claim-grant", grant + `,"grant_ttl_ms":3600001}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/w/claim-grant", `{"worker_instance_id":"i","lanes":[]}`, 400, fftype.CodeInvalidLane},
		{"POST", "/v1/workers/w/claim-grant", `{"lanes":["l"]}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/w/claim-grant", grant + `,"capabilities":[""]}`, 400, fftype.CodeInvalidCapabilities},
		{"POST", "/v1/workers/a%01b/claim-grant", grant + `}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/workers/w/claim-grant", grant + `,"count":2}`, 400, fftype.CodeInvalidInput},
	}
	for _, tc := range cases {
		b.requireError(tc.method, tc.path, tc.body, tc.status, tc.code)
	}
	var page flowfabric.WorkerPage
	b.call("GET", "/v1/workers", nil, 200, &page)
	require.Len(t, page.Workers, 1, "refused registrations wrote nothing")
	require.Equal(t, "i1", page.Workers[0].InstanceID)
}

func TestClaimGrantRoute(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	body := map[string]any{"worker_instance_id": "i1", "lanes": []string{"l"}, "grant_ttl_ms": 5000}
	status, raw := b.do("POST", "/v1/workers/w/claim-grant", body)
	require.Equal(t, http.StatusNoContent, status, "nothing eligible: %s", raw)
	require.Empty(t, raw)

	res, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Capabilities: []string{"gpu"}})
	require.NoError(t, err)
	status, _ = b.do("POST", "/v1/workers/w/claim-grant", body)
	require.Equal(t, http.StatusNoContent, status, "a worker without the capability is not granted it")

	body["capabilities"] = []string{"gpu"}
	var g fftype.GrantRef
	b.call("POST", "/v1/workers/w/claim-grant", body, 200, &g)
	require.Equal(t, res.ID, g.ExecutionID)
	require.Equal(t, fftype.GrantClaim, g.Kind)
	require.Equal(t, "w", g.WorkerID)
	require.Equal(t, "l", g.Lane)
	x, err := b.client.Get(t.Context(), res.ID)
	require.NoError(t, err)
	require.Equal(t, g.ID, x.Grant.ID, "the execution is reserved for the worker")
	require.WithinDuration(t, x.Grant.IssuedAt.Add(5*time.Second), g.ExpiresAt, 0)
	status, _ = b.do("POST", "/v1/workers/w/claim-grant", body)
	require.Equal(t, http.StatusNoContent, status, "a granted execution is not granted again")

	var lease ffserver.LeaseView
	b.call("POST", "/v1/grants/claim", map[string]any{"grant": g, "worker_id": "w", "worker_instance_id": "i1"}, 200, &lease)
	require.Equal(t, res.ID, lease.ExecutionID)
}

func TestInfo(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	var info ffserver.InfoResponse
	b.call("GET", "/v1/info", nil, 200, &info)
	require.Positive(t, info.Shards)
	require.WithinDuration(t, time.Now(), info.Now, time.Minute)
}

// TestWritesUnderContention: every route that writes answers 409 store_conflict (retryable)
// when the store keeps reporting conflicts, writes nothing, and its operation lists 409.
func TestWritesUnderContention(t *testing.T) {
	t.Parallel()
	store := ffmem.New(nil)
	b := setupOn(t, ffserver.Config{}, store, nil)
	ctx := t.Context()
	create := func(lane string) string {
		res, err := b.client.Create(ctx, fftype.CreateParams{Lane: lane, Kind: "k"})
		require.NoError(t, err)
		return string(res.ID)
	}
	create("held")
	var claim ffserver.ClaimResponse
	b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "i1", "lanes": []string{"held"}}, 200, &claim)
	l := claim.Leases[0]
	waiting, ended, granted := "/v1/executions/"+create("l"), "/v1/executions/"+create("l"), create("l")
	b.call("POST", ended+"/cancel", nil, 200, nil)
	var g fftype.GrantRef
	b.call("POST", "/v1/executions/"+granted+"/grants", map[string]any{"kind": "claim", "worker_id": "w"}, 201, &g)
	leased := "/v1/executions/" + string(l.ExecutionID)
	b.call("POST", "/v1/workers", registration("i1", "s1"), 200, nil)
	fence := func(more ...any) map[string]any {
		m := map[string]any{"fence": l.Fence}
		for i := 0; i < len(more); i += 2 {
			m[more[i].(string)] = more[i+1]
		}
		return m
	}

	doc := ffserver.OpenAPI()
	for _, c := range []struct {
		method, path, tmpl string
		body               any
	}{
		{"POST", "/v1/executions", "/v1/executions", map[string]any{"lane": "l", "kind": "k"}},
		{"POST", waiting + "/tags", "/v1/executions/{id}/tags", map[string]any{"tags": map[string]string{"a": "b"}}},
		{"PUT", waiting + "/priority", "/v1/executions/{id}/priority", map[string]any{"priority": 1}},
		{"POST", waiting + "/cancel", "/v1/executions/{id}/cancel", nil},
		{"POST", waiting + "/grants", "/v1/executions/{id}/grants", map[string]any{"kind": "claim", "worker_id": "w"}},
		{"POST", ended + "/replay", "/v1/executions/{id}/replay", nil},
		{"POST", "/v1/grants/claim", "/v1/grants/claim", map[string]any{"grant": g, "worker_id": "w", "worker_instance_id": "i1"}},
		{"POST", "/v1/claim", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "i1", "lanes": []string{"l"}}},
		{"POST", "/v1/workers/w/claim-grant", "/v1/workers/{worker_id}/claim-grant", map[string]any{"worker_instance_id": "i1", "lanes": []string{"l"}}},
		{"POST", leased + "/renew", "/v1/executions/{id}/renew", fence()},
		{"POST", leased + "/progress", "/v1/executions/{id}/progress", fence("percent", 5)},
		{"POST", leased + "/complete", "/v1/executions/{id}/complete", fence()},
		{"POST", leased + "/fail", "/v1/executions/{id}/fail", fence()},
		{"POST", leased + "/delay", "/v1/executions/{id}/delay", fence("delay_ms", 0)},
		{"POST", leased + "/release", "/v1/executions/{id}/release", fence()},
		{"POST", leased + "/revoke-lease", "/v1/executions/{id}/revoke-lease", nil},
		{"POST", "/v1/lanes/l/pause", "/v1/lanes/{lane}/pause", nil},
		{"POST", "/v1/lanes/l/resume", "/v1/lanes/{lane}/resume", nil},
		{"POST", "/v1/workers", "/v1/workers", registration("i2", "s2")},
		{"POST", "/v1/workers/i1/heartbeat", "/v1/workers/{worker_instance_id}/heartbeat", map[string]any{"session": "s1"}},
		{"POST", "/v1/workers/i1/deregister", "/v1/workers/{worker_instance_id}/deregister", map[string]any{"session": "s1"}},
		{"POST", "/v1/workers/i1/mark-dead", "/v1/workers/{worker_instance_id}/mark-dead", nil},
	} {
		store.InjectConflicts(16) // the engine's ConflictRetries: every try of the unit conflicts
		b.requireError(c.method, c.path, c.body, http.StatusConflict, fftype.CodeStoreConflict)
		requireDocumented(t, doc, c.method, c.tmpl, "409")
	}
	var page fftype.ListPage
	b.call("GET", "/v1/executions", nil, 200, &page)
	require.Len(t, page.Executions, 4, "nothing was created")
	var st ffserver.StateResponse
	b.call("GET", leased+"/state", nil, 200, &st)
	require.Equal(t, fftype.StateActive, st.State, "the lease is held still")
}
