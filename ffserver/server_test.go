package ffserver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testBundle struct {
	t      *testing.T
	client *flowfabric.Client
	server *ffserver.Server
	http   *httptest.Server
	token  string
}

func setup(t *testing.T, cfg ffserver.Config) *testBundle {
	t.Helper()
	return setupOn(t, cfg, ffmem.New(nil), nil)
}

// setupOn is setup on store, serving through around (when not nil) in front of the server.
func setupOn(t *testing.T, cfg ffserver.Config, store ffstore.Store, around func(http.Handler) http.Handler) *testBundle {
	t.Helper()
	client, err := flowfabric.NewClient(store, nil)
	require.NoError(t, err)
	srv, err := ffserver.New(client, cfg)
	require.NoError(t, err)
	srv.Start(t.Context())
	var h http.Handler = srv
	if around != nil {
		h = around(srv)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	b := &testBundle{t: t, client: client, server: srv, http: hs, token: cfg.Token}
	t.Cleanup(func() { b.requireAnswersDocumented(cfg.Token) }) // runs first: the server is still up
	return b
}

// requestCount matches the request metric's count series: a route and a status it answered.
var requestCount = regexp.MustCompile(`(?m)^flowfabric_http_request_duration_seconds_count\{code="(\d+)",route="(\S+) (\S+)"\} `)

// requireAnswersDocumented requires that every status the server answered during the
// test, by route (read from its request metric), is in the OpenAPI document.
func (b *testBundle) requireAnswersDocumented(token string) {
	b.t.Helper()
	// The test's context has ended by cleanup time.
	req, err := http.NewRequestWithContext(context.Background(), "GET", b.http.URL+"/metrics", nil)
	require.NoError(b.t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	require.Equal(b.t, 200, resp.StatusCode, string(raw))
	doc := ffserver.OpenAPI()
	for _, m := range requestCount.FindAllStringSubmatch(string(raw), -1) {
		requireDocumented(b.t, doc, m[2], m[3], m[1])
	}
}

// requireDocumented requires that the OpenAPI document lists status among the responses
// of method and path, with a description.
func requireDocumented(t *testing.T, doc map[string]any, method, path, status string) {
	t.Helper()
	op, _ := doc["paths"].(map[string]any)[path].(map[string]any)[strings.ToLower(method)].(map[string]any)
	require.NotNil(t, op, "%s %s is not documented", method, path)
	resp, _ := op["responses"].(map[string]any)[status].(map[string]any)
	require.NotNil(t, resp, "%s %s answered %s, which its OpenAPI document does not list", method, path, status)
	require.NotEmpty(t, resp["description"], "%s %s %s", method, path, status)
}

// do sends a request with an optional JSON body and returns the status and body.
func (b *testBundle) do(method, path string, body any) (int, []byte) {
	b.t.Helper()
	status, _, raw := b.send(method, path, body)
	return status, raw
}

// send is do, returning the answer's header too.
func (b *testBundle) send(method, path string, body any) (int, http.Header, []byte) {
	b.t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		buf, err := json.Marshal(v)
		require.NoError(b.t, err)
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(b.t.Context(), method, b.http.URL+path, rd)
	require.NoError(b.t, err)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	return resp.StatusCode, resp.Header, out
}

// call sends a request, requires the status, and decodes the JSON answer into out.
func (b *testBundle) call(method, path string, body any, status int, out any) {
	b.t.Helper()
	got, raw := b.do(method, path, body)
	require.Equal(b.t, status, got, "%s %s: %s", method, path, raw)
	if out != nil {
		require.NoError(b.t, json.Unmarshal(raw, out), string(raw))
	}
}

// requireError requires an error answer with status and code.
// claimOne creates an execution with p (lane "l" and kind "k" when not set) and claims it
// over HTTP, returning its lease.
func (b *testBundle) claimOne(p fftype.CreateParams) ffserver.LeaseView {
	b.t.Helper()
	if p.Lane == "" {
		p.Lane, p.Kind = "l", "k"
	}
	_, err := b.client.Create(b.t.Context(), p)
	require.NoError(b.t, err)
	var claim ffserver.ClaimResponse
	b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "w1", "lanes": []string{p.Lane}}, 200, &claim)
	require.Len(b.t, claim.Leases, 1)
	return claim.Leases[0]
}

func (b *testBundle) requireError(method, path string, body any, status int, code string) {
	b.t.Helper()
	got, raw := b.do(method, path, body)
	require.Equal(b.t, status, got, "%s %s: %s", method, path, raw)
	var e ffserver.ErrorBody
	require.NoError(b.t, json.Unmarshal(raw, &e), "error bodies are JSON: %s", raw)
	require.Equal(b.t, code, e.Code, string(raw))
	require.NotEmpty(b.t, e.Error)
}

func TestExecutionLifecycleOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	var created fftype.CreateResult
	b.call("POST", "/v1/executions", map[string]any{"lane": "email", "kind": "send", "payload": map[string]any{"to": "a@b.c"},
		"idempotency_key": "k1", "tags": map[string]string{"customer": "acme"}}, 201, &created)
	require.Equal(t, fftype.StateWaiting, created.State)
	var dup fftype.CreateResult
	b.call("POST", "/v1/executions", map[string]any{"lane": "email", "kind": "send", "idempotency_key": "k1"}, 200, &dup)
	require.True(t, dup.Duplicate)
	require.Equal(t, created.ID, dup.ID)

	var claim ffserver.ClaimResponse
	b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "w1", "lanes": []string{"email"}}, 200, &claim)
	require.Len(t, claim.Leases, 1)
	l := claim.Leases[0]
	require.JSONEq(t, `{"to":"a@b.c"}`, string(l.Payload))
	id := string(l.ExecutionID)

	var renewed ffserver.RenewResponse
	b.call("POST", "/v1/executions/"+id+"/renew", map[string]any{"fence": l.Fence}, 200, &renewed)
	require.False(t, renewed.ExpiresAt.IsZero())
	b.call("POST", "/v1/executions/"+id+"/progress", map[string]any{"fence": l.Fence, "percent": 50, "message": "half"}, 200, nil)
	stale := l.Fence
	stale.Epoch++
	b.requireError("POST", "/v1/executions/"+id+"/complete", map[string]any{"fence": stale, "result": 1}, 409, fftype.CodeStaleLease)
	b.call("POST", "/v1/executions/"+id+"/complete", map[string]any{"fence": l.Fence, "result": map[string]bool{"sent": true}}, 200, nil)
	b.call("POST", "/v1/executions/"+id+"/complete", map[string]any{"fence": l.Fence, "result": map[string]bool{"sent": true}}, 200, nil)

	var state ffserver.StateResponse
	b.call("GET", "/v1/executions/"+id+"/state", nil, 200, &state)
	require.Equal(t, fftype.StateCompleted, state.State)
	status, raw := b.do("GET", "/v1/executions/"+id+"/result", nil)
	require.Equal(t, 200, status)
	require.JSONEq(t, `{"sent":true}`, string(raw))
	var x map[string]any
	b.call("GET", "/v1/executions/"+id, nil, 200, &x)
	require.Equal(t, "completed", x["state"])
	require.Equal(t, "acme", x["tags"].(map[string]any)["customer"])
	var atts ffserver.AttemptsResponse
	b.call("GET", "/v1/executions/"+id+"/attempts", nil, 200, &atts)
	require.Len(t, atts.Attempts, 1)
	var page fftype.ListPage
	b.call("GET", "/v1/executions?lane=email&state=completed", nil, 200, &page)
	require.Len(t, page.Executions, 1)
}

func TestBinaryPayloadsAndBulk(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	var bulk ffserver.BulkCreateResponse
	b.call("POST", "/v1/executions/bulk", map[string]any{"executions": []any{
		map[string]any{"lane": "l", "kind": "k", "payload_base64": "AAEC/w=="},
		map[string]any{"lane": "", "kind": "k"},
		map[string]any{"lane": "l", "kind": "k", "payload_base64": "!!"},
	}}, 200, &bulk)
	require.Len(t, bulk.Results, 3)
	require.NotNil(t, bulk.Results[0].Result)
	require.Equal(t, fftype.CodeInvalidLane, bulk.Results[1].Error.Code)
	require.Equal(t, fftype.CodeInvalidInput, bulk.Results[2].Error.Code)
	var claim ffserver.ClaimResponse
	b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "w1", "lanes": []string{"l"}}, 200, &claim)
	require.Len(t, claim.Leases, 1)
	require.Equal(t, "AAEC/w==", claim.Leases[0].PayloadBase64)
	require.Empty(t, claim.Leases[0].Payload)
	status, raw := b.do("GET", "/v1/executions/"+string(claim.Leases[0].ExecutionID)+"/payload", nil)
	require.Equal(t, 200, status)
	require.Equal(t, []byte{0, 1, 2, 255}, raw)
}

func TestBadInputIsAClearClientError(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{LargeBodyBytes: 1024})
	cases := []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/v1/executions", "{", 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions", "", 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions", `{"lane":"l","kind":"k"} {}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions", `{"lane":"l","kind":"k","bogus":1}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions", `{"lane":5,"kind":"k"}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions", `{"lane":"l","kind":"k","payload":1,"payload_base64":"AA=="}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions", `{"lane":"l","kind":"k","delay_ms":-5}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions", `{"lane":"l","kind":"k","payload":"` + strings.Repeat("x", 2048) + `"}`, 413, fftype.CodePayloadTooLarge},
		{"POST", "/v1/executions", `{"lane":"l","kind":"k","priority":99999}`, 400, fftype.CodeInvalidPriority},
		{"GET", "/v1/executions/nope", nil, 400, fftype.CodeInvalidID},
		{"GET", "/v1/executions/s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b", nil, 404, fftype.CodeExecutionNotFound},
		{"GET", "/v1/executions/s999_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b", nil, 400, fftype.CodeShardOutOfRange},
		{"GET", "/v1/executions?limit=0", nil, 400, fftype.CodeInvalidInput},
		{"GET", "/v1/executions?limit=abc", nil, 400, fftype.CodeInvalidInput},
		{"GET", "/v1/executions?state=running", nil, 400, fftype.CodeInvalidInput},
		{"GET", "/v1/executions?cursor=zzz", nil, 400, fftype.CodeInvalidCursor},
		// A lane that no URL path can name: /v1/lanes/./pause is /v1/lanes/pause.
		{"POST", "/v1/executions", `{"lane":".","kind":"k"}`, 400, fftype.CodeInvalidLane},
		{"POST", "/v1/lanes/%2E%2E/pause", nil, 400, fftype.CodeInvalidLane},
		{"POST", "/v1/claim", `{"worker_id":"w","worker_instance_id":"w1","lanes":[]}`, 400, fftype.CodeInvalidLane},
		{"POST", "/v1/claim", `{"worker_id":"w","worker_instance_id":"w1","lanes":["l"],"wait_ms":999999}`, 400, fftype.CodeInvalidInput},
		// Milliseconds that overflow a duration must not wrap around into the range.
		{"POST", "/v1/claim", `{"worker_id":"w","worker_instance_id":"w1","lanes":["l"],"wait_ms":18446744073710}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions", `{"lane":"l","kind":"k","delay_ms":18446744073710}`, 400, fftype.CodeInvalidInput},
		// Invalid UTF-8 is refused, not stored with its bytes replaced.
		{"POST", "/v1/executions", "{\"lane\":\"l\",\"kind\":\"k\",\"payload\":\"\xff\"}", 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions/s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b/complete", `{"fence":{"lease_id":"x"}}`, 400, fftype.CodeInvalidFence},
		{"GET", "/v1/nothing-here", nil, 404, "route_not_found"},
		{"DELETE", "/v1/executions/s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b/priority", nil, 405, "method_not_allowed"},
		// A missing field whose zero is a legal value is refused, not read as zero.
		{"PUT", "/v1/executions/s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b/priority", `{}`, 400, fftype.CodeInvalidInput},
		{"PUT", "/v1/executions/s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b/priority", `null`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions/s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b/delay", `{}`, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/executions/s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b/progress", `{"message":"m"}`, 400, fftype.CodeInvalidInput},
		{"GET", "/v1/events?cursor=%21%21", nil, 400, fftype.CodeInvalidCursor},
		{"GET", "/v1/events?types=completed,complted", nil, 400, fftype.CodeInvalidInput},
		{"POST", "/v1/dead-letter/replay", `{"ids":[]}`, 400, fftype.CodeInvalidInput},
	}
	for _, tc := range cases {
		b.requireError(tc.method, tc.path, tc.body, tc.status, tc.code)
	}
	var page fftype.ListPage
	b.call("GET", "/v1/executions", nil, 200, &page)
	require.Empty(t, page.Executions, "refused requests wrote nothing")
}

// TestFieldNamesAreExact: encoding/json matches field names case-insensitively, so a
// "Lane" beside "lane" would override it. A key that is not exactly a documented field's
// name is an unknown field, at the top of a body or nested in it, and is refused with
// nothing written.
func TestFieldNamesAreExact(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	const id = "s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
	for _, tc := range []struct{ path, body, unknown string }{
		{"/v1/executions", `{"lane":"l","kind":"k","Lane":"other"}`, "Lane"},
		{"/v1/executions", `{"LANE":"l","kind":"k"}`, "LANE"},
		{"/v1/executions", `{"lane":"l","kind":"k","policy":{"Retry":{}}}`, "policy.Retry"},
		{"/v1/executions/bulk", `{"executions":[{"lane":"l","kind":"k"},{"lane":"l","Kind":"k"}]}`, "executions[1].Kind"},
		{"/v1/executions/" + id + "/complete", `{"fence":{"lease_id":"x","lease_epoch":1,"attempt_id":"a","Lease_ID":"y"}}`, "fence.Lease_ID"},
	} {
		status, raw := b.do("POST", tc.path, tc.body)
		require.Equal(t, 400, status, "%s %s: %s", tc.path, tc.body, raw)
		var e ffserver.ErrorBody
		require.NoError(t, json.Unmarshal(raw, &e))
		require.Equal(t, fftype.CodeInvalidInput, e.Code)
		require.Contains(t, e.Error, strconv.Quote(tc.unknown), "the error names the unknown field")
	}
	var page fftype.ListPage
	b.call("GET", "/v1/executions", nil, 200, &page)
	require.Empty(t, page.Executions, "refused requests wrote nothing")
	b.call("POST", "/v1/executions", `{"lane":"l","kind":"k","policy":{"retry":{}},"tags":{"k":"v"},"payload":{"Lane":1}}`, 201, nil)
}

// TestQueryParametersAreTheDocumentedOnes: a query parameter a route does not document — a
// misspelt filter such as ?status=failed — is refused rather than ignored, which would
// widen the answer without a word; so are one given twice and a malformed query. Every
// parameter the document lists is taken.
func TestQueryParametersAreTheDocumentedOnes(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	_, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	const id = "s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
	for _, path := range []string{
		"/v1/executions?status=failed",
		"/v1/executions?Lane=l",
		"/v1/executions?lane=l&lane=m",
		"/v1/executions?lane=%zz",
		"/v1/dead-letter?state=waiting",
		"/v1/events?after=x",
		"/v1/workers?after=x",
		"/v1/executions/" + id + "?lane=l",
		"/healthz?verbose=1",
	} {
		b.requireError("GET", path, nil, 400, fftype.CodeInvalidInput)
	}
	b.requireError("POST", "/v1/executions?lane=l", `{"lane":"l","kind":"k"}`, 400, fftype.CodeInvalidInput)

	var page fftype.ListPage
	b.call("GET", "/v1/executions?namespace=default&lane=l&state=waiting&kind=k&limit=5", nil, 200, &page)
	require.Len(t, page.Executions, 1)
	for path, item := range ffserver.OpenAPI()["paths"].(map[string]any) {
		get, ok := item.(map[string]any)["get"].(map[string]any)
		if !ok {
			continue
		}
		q := url.Values{}
		params, _ := get["parameters"].([]any)
		for _, p := range params {
			if p := p.(map[string]any); p["in"] == "query" {
				q.Set(p["name"].(string), "")
			}
		}
		if len(q) == 0 {
			continue
		}
		path = strings.NewReplacer("{id}", id, "{lane}", "l", "{worker_instance_id}", "w1").Replace(path)
		req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+path+"?"+q.Encode(), nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req) // answers with its status before any body, streams included
		require.NoError(t, err)
		resp.Body.Close()
		require.NotEqual(t, 400, resp.StatusCode, "GET %s?%s: every documented parameter is taken", path, q.Encode())
	}
}

// TestContentTypeIsAMediaType: a body's Content-Type is read as a media type, whose type
// and subtype are case-insensitive (RFC 9110 §8.3.1) and which must be exactly JSON (or the
// form type curl -d sends), not merely begin like it.
func TestContentTypeIsAMediaType(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	for _, tc := range []struct {
		contentType string
		status      int
	}{
		{"application/json", 201},
		{"Application/JSON; charset=utf-8", 201},
		{"application/json ;charset=UTF-8", 201},
		{"application/x-www-form-urlencoded", 201},
		{"", 201},
		{"application/jsonx", 400},
		{"application/json-seq", 400},
		{"application/x-www-form-urlencodedx", 400},
		{"text/plain", 400},
		{"application/json; =", 400},
	} {
		req, err := http.NewRequestWithContext(t.Context(), "POST", b.http.URL+"/v1/executions",
			strings.NewReader(`{"lane":"l","kind":"k"}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", tc.contentType)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, tc.status, resp.StatusCode, "Content-Type: %s: %s", tc.contentType, raw)
		if tc.status == 400 {
			require.Contains(t, string(raw), `"code":"unsupported_media_type"`)
		}
	}
}

// TestMissingRequiredFieldChangesNothing: a required field that is missing or null (which
// would decode as its zero value, a legal one) is refused with 400 and nothing written.
func TestMissingRequiredFieldChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	var x fftype.Execution
	b.call("POST", "/v1/executions", `{"lane":"l","kind":"k","priority":7}`, 201, &x)
	path := "/v1/executions/" + string(x.ID)
	b.requireError("PUT", path+"/priority", `{}`, 400, fftype.CodeInvalidInput)
	b.requireError("PUT", path+"/priority", `{"priority":null}`, 400, fftype.CodeInvalidInput)
	b.call("GET", path, nil, 200, &x)
	require.Equal(t, 7, x.Priority, "a refused change of priority left it alone")
	b.call("PUT", path+"/priority", `{"priority":0}`, 200, nil)
	b.call("GET", path, nil, 200, &x)
	require.Zero(t, x.Priority, "an explicit 0 is a priority")

	schemas := ffserver.OpenAPI()["components"].(map[string]any)["schemas"].(map[string]any)
	require.Equal(t, []string{"priority"}, schemas["PriorityRequest"].(map[string]any)["required"], "documented as required")
}

// TestNullDelayIsRefused: a worker's delay with "delay_ms": null is refused; the lease
// stays with the worker rather than being given up for a delay of 0.
func TestNullDelayIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	l := b.claimOne(fftype.CreateParams{Lane: "l", Kind: "k"})
	path := "/v1/executions/" + string(l.ExecutionID)
	b.requireError("POST", path+"/delay", map[string]any{"fence": l.Fence, "delay_ms": nil}, 400, fftype.CodeInvalidInput)
	b.requireError("POST", path+"/progress", map[string]any{"fence": l.Fence, "percent": nil}, 400, fftype.CodeInvalidInput)
	var st ffserver.StateResponse
	b.call("GET", path+"/state", nil, 200, &st)
	require.Equal(t, fftype.StateActive, st.State, "the lease is still held")
}

func TestWrongMethodIs405(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	req, err := http.NewRequestWithContext(t.Context(), "DELETE", b.http.URL+"/v1/executions", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body ffserver.ErrorBody
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "GET, POST", resp.Header.Get("Allow"))
	require.Equal(t, "method_not_allowed", body.Code)
}

func TestAuthAndCORS(t *testing.T) {
	t.Parallel()
	_, err := ffserver.New(mustClient(t), ffserver.Config{CORSOrigins: []string{"not an origin"}})
	require.Error(t, err, "a bad CORS origin fails closed")
	_, err = ffserver.New(mustClient(t), ffserver.Config{CORSOrigins: []string{"https://ok.example.com/path"}})
	require.Error(t, err)
	_, err = ffserver.New(mustClient(t), ffserver.Config{RequestTimeout: -time.Second})
	require.ErrorContains(t, err, "must not be negative")

	b := setup(t, ffserver.Config{Token: "s3cret", CORSOrigins: []string{"https://ops.example.com"}})
	b.call("GET", "/v1/executions", nil, 200, nil)
	b.token = "wrong"
	b.requireError("GET", "/v1/executions", nil, 401, "unauthenticated")
	b.requireError("GET", "/metrics", nil, 401, "unauthenticated")
	b.token = ""
	b.requireError("GET", "/v1/executions", nil, 401, "unauthenticated")
	b.call("GET", "/healthz", nil, 200, nil)
	b.call("GET", "/readyz", nil, 200, nil)

	preflight := func(origin string) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), "OPTIONS", b.http.URL+"/v1/executions", nil)
		require.NoError(t, err)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	resp := preflight("https://ops.example.com")
	require.Equal(t, 204, resp.StatusCode)
	require.Equal(t, "https://ops.example.com", resp.Header.Get("Access-Control-Allow-Origin"))
	resp = preflight("https://evil.example.com")
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
}

// TestUnauthorizedCarriesAChallenge: every 401 names the scheme to answer with in
// WWW-Authenticate (RFC 9110 §11.6.1), which standard HTTP clients rely on.
func TestUnauthorizedCarriesAChallenge(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{Token: "tok"})
	for _, path := range []string{"/v1/executions", "/metrics"} {
		req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, path)
		require.Equal(t, `Bearer realm="flowfabric"`, resp.Header.Get("WWW-Authenticate"), path)
	}
}

// TestBearerSchemeIsCaseInsensitive: the authentication scheme is a case-insensitive token
// (RFC 9110 §11.1), so "bearer" and "BEARER" are Bearer; the token itself is compared
// exactly.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{Token: "tok"})
	for _, tc := range []struct {
		header string
		status int
	}{
		{"Bearer tok", 200},
		{"bearer tok", 200},
		{"BEARER tok", 200},
		{"Bearer  tok", 200}, // 1*SP separates scheme and credentials
		{"Bearer Tok", 401},
		{"Bearertok", 401},
		{"Basic tok", 401},
		{"tok", 401},
	} {
		req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+"/v1/executions", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", tc.header)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode, "Authorization: %s", tc.header)
	}
}

func mustClient(t *testing.T) *flowfabric.Client {
	c, err := flowfabric.NewClient(ffmem.New(nil), nil)
	require.NoError(t, err)
	return c
}

// TestOpenAPIMatchesRoutes sends requests to every operation of the document: each must
// reach a handler (no route-not-found, no method-not-allowed) and answer only statuses the
// document lists for it — with and without the token, with an empty object, with
// malformed JSON, and with ids that are not valid. The mux is built from the same table, so
// a route can be neither served undocumented nor documented unserved; every other test's
// answers are checked against the document too (see requireAnswersDocumented).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{Token: "t"})
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]any `json:"responses"`
			Security  []any          `json:"security"`
		} `json:"paths"`
	}
	b.call("GET", "/v1/openapi.json", nil, 200, &doc)
	require.GreaterOrEqual(t, len(doc.Paths), 25)
	full := ffserver.OpenAPI()
	ops := 0
	for path, item := range doc.Paths {
		for method, op := range item {
			ops++
			for code := range op.Responses {
				_, err := strconv.Atoi(code)
				require.NoError(t, err, "%s %s: every response is a status, none is a catch-all default", method, path)
			}
			if method == "get" && path == "/v1/events" {
				continue // a stream: covered by TestEventsAsServerSentEvents
			}
			valid := strings.NewReplacer("{id}", "s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b", "{lane}", "default").Replace(path)
			invalid := strings.NewReplacer("{id}", "nope", "{lane}", "%20", "{worker_instance_id}", "a%01b", "{worker_id}", "a%01b").Replace(path)
			for _, req := range []struct {
				path, body, token string
			}{
				{valid, "{}", "t"},
				{valid, "{", "t"},
				{valid, "{}", "wrong"},
				{invalid, "{}", "t"},
			} {
				b.token = req.token
				status, raw := b.do(strings.ToUpper(method), req.path, req.body)
				require.NotEqual(t, 405, status, "%s %s", method, req.path)
				require.NotContains(t, string(raw), "route_not_found", "%s %s is documented but not served", method, path)
				require.Less(t, status, 500, "%s %s: %s", method, req.path, raw)
				requireDocumented(t, full, method, path, strconv.Itoa(status))
			}
		}
	}
	require.Equal(t, len(full["paths"].(map[string]any)), len(doc.Paths))
	require.Greater(t, ops, 28)
}

func TestLongPollClaimWakesOnNewWork(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	done := make(chan ffserver.ClaimResponse, 1)
	start := time.Now()
	go func() {
		var out ffserver.ClaimResponse
		b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "w1",
			"lanes": []string{"late"}, "wait_ms": 20000}, 200, &out)
		done <- out
	}()
	_, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "late", Kind: "k"})
	require.NoError(t, err)
	select {
	case out := <-done:
		require.Len(t, out.Leases, 1)
		require.Less(t, time.Since(start), 15*time.Second, "woken by the new work, not by the wait's end")
	case <-time.After(25 * time.Second):
		t.Fatal("long-poll claim never returned")
	}
	var out ffserver.ClaimResponse
	b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "w1", "lanes": []string{"late"}, "wait_ms": 10}, 200, &out)
	require.Empty(t, out.Leases, "an empty claim is a 200 with no leases")
}

func TestEventsAsServerSentEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	res, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+"/v1/events?cursor=start&execution_id="+string(res.ID), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	sc := bufio.NewScanner(resp.Body)
	var id, event string
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			event = v
			break
		}
	}
	require.Equal(t, "created", event)
	require.NotEmpty(t, id, "each event carries the cursor that resumes after it")
}

// TestEventsHeadEnds: a HEAD of the event stream answers the stream's status and headers
// and ends, like any HEAD, instead of streaming into a body nobody reads: the keep-alive
// connection serves the next request, and the handler (with its subscription) is done.
func TestEventsHeadEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	t.Cleanup(b.server.BeginShutdown) // runs first: a stream that did not end would hold the cleanup's Close
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), "HEAD", b.http.URL+"/v1/events?lane=l", nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	req, err = http.NewRequestWithContext(t.Context(), "GET", b.http.URL+"/healthz", nil)
	require.NoError(t, err)
	resp, err = c.Do(req)
	require.NoError(t, err, "the next request on the HEAD's connection")
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	_, raw := b.do("GET", "/metrics", nil)
	require.Contains(t, string(raw), `flowfabric_http_request_duration_seconds_count{code="200",route="GET /v1/events"} 1`,
		"the HEAD's handler ended before its answer was complete")
}

// TestEventStreamOpensWithItsPosition: a stream from now opens with its position, an id
// alone that delivers no event, so a client whose connection drops before the first
// matching event resumes from it and misses nothing written in between.
func TestEventStreamOpensWithItsPosition(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	open := func(lastEventID string) (*http.Response, *bufio.Scanner) {
		req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+"/v1/events?lane=watched", nil)
		require.NoError(t, err)
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode)
		return resp, bufio.NewScanner(resp.Body)
	}
	resp, sc := open("")
	require.True(t, sc.Scan())
	cursor, ok := strings.CutPrefix(sc.Text(), "id: ")
	require.True(t, ok, "the stream opens with its position, not %q", sc.Text())
	require.True(t, sc.Scan())
	require.Empty(t, sc.Text(), "the position alone: no event, no data")
	resp.Body.Close() // the connection drops before anything matched

	res, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "watched", Kind: "k"})
	require.NoError(t, err)
	resp, sc = open(cursor)
	defer resp.Body.Close()
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			require.Contains(t, data, string(res.ID), "the event written while disconnected")
			return
		}
	}
	t.Fatal("the resumed stream ended without the event")
}

// TestEventsRefuseAnExpiredResume: a resume (Last-Event-ID) from a position the log was
// trimmed past is answered 409 cursor_expired, not with a stream that fails once begun,
// so that a browser's EventSource stops instead of reconnecting into it forever.
func TestEventsRefuseAnExpiredResume(t *testing.T) {
	t.Parallel()
	store := ffmem.New(nil)
	b := setupOn(t, ffserver.Config{}, store, nil)
	ctx := t.Context()
	cursor, err := b.client.EventCursor(ctx)
	require.NoError(t, err)
	for range 20 {
		_, err := b.client.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
	}
	for s := range store.Shards() {
		require.NoError(t, store.TrimEvents(ctx, s, math.MaxUint64))
	}
	req, err := http.NewRequestWithContext(ctx, "GET", b.http.URL+"/v1/events", nil)
	require.NoError(t, err)
	req.Header.Set("Last-Event-ID", cursor)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	var body struct{ Code string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, fftype.CodeCursorExpired, body.Code)
}

// TestFilteredStreamResumesAfterRetention: a client following a quiet filter, up to date
// while other lanes' events flow and are then deleted by retention, missed nothing: its
// stream moves its id past the events the filter skipped (an id alone, at a keep-alive),
// so that when its connection drops it resumes with that id rather than being refused
// cursor_expired — which would stop a browser's EventSource for good.
func TestFilteredStreamResumesAfterRetention(t *testing.T) {
	t.Parallel()
	store := ffmem.New(nil)
	b := setupOn(t, ffserver.Config{}, store, func(h http.Handler) http.Handler {
		ffserver.SetEventHeartbeat(h.(*ffserver.Server), 10*time.Millisecond)
		return h
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	open := func(lastEventID string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", b.http.URL+"/v1/events?lane=quiet", nil)
		require.NoError(t, err)
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		return resp
	}
	resp := open("")
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	for range 10 {
		_, err := b.client.Create(ctx, fftype.CreateParams{Lane: "busy", Kind: "k"})
		require.NoError(t, err)
	}
	end, err := b.client.EventCursor(ctx)
	require.NoError(t, err)
	sc := bufio.NewScanner(resp.Body)
	last := ""
	for last != end && sc.Scan() {
		require.False(t, strings.HasPrefix(sc.Text(), "event: "), "nothing matches: %s", sc.Text())
		if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			last = id
		}
	}
	require.Equal(t, end, last, "the stream's id moved past the skipped events: %v", sc.Err())

	for s := range store.Shards() {
		_, through, err := store.EventBounds(ctx, s)
		require.NoError(t, err)
		require.NoError(t, store.TrimEvents(ctx, s, through)) // what every durable consumer has passed
	}
	resp.Body.Close() // the connection drops
	again := open(last)
	defer again.Body.Close()
	require.Equal(t, 200, again.StatusCode, "a resume that missed no matching event")
}

// failingStore fails every write with an error that is not an *fftype.Error, as a store's
// bug or a corrupt record would.
type failingStore struct{ ffstore.Store }

func (failingStore) Update(context.Context, int, func(ffstore.Tx) error) error {
	return errors.New("disk on fire")
}

// TestInternalErrorIsStatedAlikeWholeOrPerItem: an internal error has the same body
// whether it fails a whole request (a 500) or one item of a bulk create or a dead-letter
// replay: a kind a client knows, and nothing of its cause.
func TestInternalErrorIsStatedAlikeWholeOrPerItem(t *testing.T) {
	t.Parallel()
	b := setupOn(t, ffserver.Config{}, failingStore{ffmem.New(nil)}, nil)
	status, raw := b.do("POST", "/v1/executions", map[string]any{"lane": "l", "kind": "k"})
	require.Equal(t, http.StatusInternalServerError, status, "%s", raw)
	var whole ffserver.ErrorBody
	require.NoError(t, json.Unmarshal(raw, &whole))
	require.True(t, fftype.Kind(whole.Kind).Known(), "kind %q", whole.Kind)
	require.NotContains(t, whole.Error, "disk")
	var bulk ffserver.BulkCreateResponse
	b.call("POST", "/v1/executions/bulk", map[string]any{"executions": []any{map[string]any{"lane": "l", "kind": "k"}}}, 200, &bulk)
	require.Equal(t, whole, *bulk.Results[0].Error, "a bulk create's item")
	var replay ffserver.ReplayManyResponse
	b.call("POST", "/v1/dead-letter/replay", map[string]any{"ids": []fftype.ExecutionID{fftype.NewExecutionID(0)}}, 200, &replay)
	require.Equal(t, whole, *replay.Results[0].Error, "a dead-letter replay's item")
}

func TestDeadLetterAndReplay(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	l := b.claimOne(fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{}}})
	var out fftype.FailOutcome
	b.call("POST", "/v1/executions/"+string(l.ExecutionID)+"/fail", map[string]any{"fence": l.Fence, "reason": "boom"}, 200, &out)
	require.False(t, out.RetryScheduled)
	var page fftype.ListPage
	b.call("GET", "/v1/dead-letter?lane=l", nil, 200, &page)
	require.Len(t, page.Executions, 1)
	var rep ffserver.ReplayManyResponse
	b.call("POST", "/v1/dead-letter/replay", map[string]any{"ids": []string{string(l.ExecutionID), "s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"}}, 200, &rep)
	require.Nil(t, rep.Results[0].Error)
	require.Equal(t, fftype.CodeExecutionNotFound, rep.Results[1].Error.Code)
	b.call("GET", "/v1/dead-letter", nil, 200, &page)
	require.Empty(t, page.Executions)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	_, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "m", Kind: "k"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, raw := b.do("GET", "/metrics", nil)
		return strings.Contains(string(raw), `flowfabric_queue_depth{lane="m"} 1`) &&
			strings.Contains(string(raw), `flowfabric_execution_transitions_total{lane="m",transition="creations"} 1`)
	}, 10*time.Second, 10*time.Millisecond)
	b.call("GET", "/healthz", nil, 200, nil)
	_, raw := b.do("GET", "/metrics", nil)
	require.Contains(t, string(raw), `flowfabric_http_request_duration_seconds_count{code="200",route="GET /healthz"} 1`)
}

// TestMetricsQueueDepthOfADrainedLane: a lane drained to nothing is reported as 0, not
// left out of the scrape, where it would read as "no data" rather than an empty queue.
func TestMetricsQueueDepthOfADrainedLane(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	_, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "m", Kind: "k"})
	require.NoError(t, err)
	_, raw := b.do("GET", "/metrics", nil)
	require.Contains(t, string(raw), `flowfabric_queue_depth{lane="m"} 1`)
	leases, err := b.client.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"m"}})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	_, raw = b.do("GET", "/metrics", nil)
	require.Contains(t, string(raw), `flowfabric_queue_depth{lane="m"} 0`)
}

// TestMetricsWhileTheStoreIsDown: with the store not answering, /metrics still serves
// every metric but the queue depth it cannot read, among them the requests answered 503.
func TestMetricsWhileTheStoreIsDown(t *testing.T) {
	t.Parallel()
	store := ffmem.New(nil)
	b := setupOn(t, ffserver.Config{}, store, nil)
	_, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "m", Kind: "k"})
	require.NoError(t, err)
	require.NoError(t, store.Close())
	b.requireError("GET", "/v1/executions", nil, 503, fftype.CodeStoreUnavailable)
	status, raw := b.do("GET", "/metrics", nil)
	require.Equal(t, 200, status, string(raw))
	require.Contains(t, string(raw), `flowfabric_http_request_duration_seconds_count{code="503",route="GET /v1/executions"} 1`)
	require.NotContains(t, string(raw), "flowfabric_queue_depth{")
}

func FuzzCreateBody(f *testing.F) {
	f.Add(`{"lane":"l","kind":"k","payload":{"a":1}}`)
	f.Add(`{"lane":"l","kind":"k","payload_base64":"AA=="}`)
	f.Add(`[1,2,3]`)
	client, err := flowfabric.NewClient(ffmem.New(nil), nil)
	require.NoError(f, err)
	srv, err := ffserver.New(client, ffserver.Config{})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/v1/executions", strings.NewReader(body))
		srv.ServeHTTP(rec, req)
		require.Less(t, rec.Code, 500, "a caller's mistake is never a 500: %s", rec.Body)
	})
}

func TestBeginShutdownEndsLongRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	claimed := make(chan int, 1)
	go func() {
		status, _ := b.do("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "w1", "lanes": []string{"idle"}, "wait_ms": 30000})
		claimed <- status
	}()
	req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+"/v1/events", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	streamDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		streamDone <- err
	}()
	b.server.BeginShutdown()
	select {
	case status := <-claimed:
		require.Equal(t, 200, status, "a long-polling claim answers (empty) at shutdown")
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not end at shutdown")
	}
	select {
	case err := <-streamDone:
		require.NoError(t, err, "the event stream ends cleanly")
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream did not end at shutdown")
	}
}

// TestReplayRoutes: a replay past the policy's cap answers 429 as documented, and the
// dead-letter replay takes only failed executions, leaving others (and their results)
// alone.
func TestReplayRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	res, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{MaxReplays: 1}})
	require.NoError(t, err)
	id := string(res.ID)
	b.call("POST", "/v1/executions/"+id+"/cancel", map[string]any{"reason": "x"}, 200, nil)
	b.call("POST", "/v1/executions/"+id+"/replay", nil, 200, nil)
	b.call("POST", "/v1/executions/"+id+"/cancel", map[string]any{"reason": "x"}, 200, nil)
	b.requireError("POST", "/v1/executions/"+id+"/replay", nil, 429, fftype.CodeMaxReplaysExhausted)
	requireDocumented(t, ffserver.OpenAPI(), "POST", "/v1/executions/{id}/replay", "429")

	l := b.claimOne(fftype.CreateParams{Lane: "done", Kind: "k"})
	done := string(l.ExecutionID)
	b.call("POST", "/v1/executions/"+done+"/complete", map[string]any{"fence": l.Fence, "result": map[string]int{"a": 1}}, 200, nil)
	var rep ffserver.ReplayManyResponse
	b.call("POST", "/v1/dead-letter/replay", map[string]any{"ids": []string{done}}, 200, &rep)
	require.NotNil(t, rep.Results[0].Error)
	require.Equal(t, fftype.CodeExecutionNotFailed, rep.Results[0].Error.Code)
	var state ffserver.StateResponse
	b.call("GET", "/v1/executions/"+done+"/state", nil, 200, &state)
	require.Equal(t, fftype.StateCompleted, state.State, "left alone")
}

// TestBinaryResultThatReadsAsJSON: a result completed as binary comes back as
// application/octet-stream, even when its bytes happen to be valid JSON ("null").
func TestBinaryResultThatReadsAsJSON(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	l := b.claimOne(fftype.CreateParams{Lane: "l", Kind: "k"})
	id := string(l.ExecutionID)
	b.call("POST", "/v1/executions/"+id+"/complete", map[string]any{"fence": l.Fence,
		"result_base64": base64.StdEncoding.EncodeToString([]byte("null"))}, 200, nil)
	req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+"/v1/executions/"+id+"/result", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "null", string(body))
}

// TestNullIsNotNothing: a payload or result that is the JSON value null is answered as
// null (200), one that is nothing with no content (204), so that a reader tells them apart.
func TestNullIsNotNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	for _, tc := range []struct {
		stored []byte
		status int
	}{{[]byte("null"), http.StatusOK}, {nil, http.StatusNoContent}} {
		l := b.claimOne(fftype.CreateParams{Lane: "l" + strconv.Itoa(tc.status), Kind: "k", Payload: tc.stored})
		id := string(l.ExecutionID)
		complete := map[string]any{"fence": l.Fence}
		if tc.stored != nil {
			complete["result"] = json.RawMessage(tc.stored)
		}
		b.call("POST", "/v1/executions/"+id+"/complete", complete, 200, nil)
		for _, route := range []string{"/payload", "/result"} {
			status, h, raw := b.send("GET", "/v1/executions/"+id+route, nil)
			require.Equal(t, tc.status, status, "%s of %q", route, tc.stored)
			require.Equal(t, string(tc.stored), string(raw), "%s of %q", route, tc.stored)
			if status == http.StatusOK {
				require.Equal(t, "application/json", h.Get("Content-Type"))
			}
		}
	}
}

// TestSetTagsAtTheLimits: the largest change of tags the engine takes (64 tags of 1 KiB)
// fits an HTTP body too.
func TestSetTagsAtTheLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	res, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	tags := map[string]string{}
	for i := range fftype.MaxTags {
		tags["t"+strconv.Itoa(i)] = strings.Repeat("v", fftype.MaxTagValueBytes)
	}
	status, raw := b.do("POST", "/v1/executions/"+string(res.ID)+"/tags", map[string]any{"tags": tags})
	require.Equal(t, http.StatusOK, status, "%s", raw)
}
