package ffserver_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/fftype"
)

// apiDoc reads the served OpenAPI document as a client generator in another language
// would, and collects where the server's answers differ from it.
type apiDoc struct {
	t       *testing.T
	schemas map[string]any
	paths   map[string]any
	probs   []string
}

func loadDoc(t *testing.T, b *testBundle) *apiDoc {
	t.Helper()
	var raw map[string]any
	b.call("GET", "/v1/openapi.json", nil, 200, &raw)
	return &apiDoc{t: t, schemas: raw["components"].(map[string]any)["schemas"].(map[string]any),
		paths: raw["paths"].(map[string]any)}
}

func (d *apiDoc) problem(format string, args ...any) {
	d.probs = append(d.probs, fmt.Sprintf(format, args...))
}

// pathParam matches a path template's parameters.
var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// op returns the operation of method that a concrete path matches, and its template.
func (d *apiDoc) op(method, path string) (string, map[string]any) {
	path, _, _ = strings.Cut(path, "?")
	for tmpl, item := range d.paths {
		re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pathParam.ReplaceAllString(tmpl, "\x00")), "\x00", `[^/]+`) + "$"
		if regexp.MustCompile(re).MatchString(path) {
			if op, ok := item.(map[string]any)[strings.ToLower(method)].(map[string]any); ok {
				return tmpl, op
			}
		}
	}
	return "", nil
}

// resolve follows a schema's $ref.
func (d *apiDoc) resolve(s map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		s = d.schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
	}
}

var dateTime = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`)

// validate checks the JSON value v (decoded with UseNumber) against schema s strictly: a
// null where the schema does not say nullable, a property the schema does not list, a
// missing required property, a wrong type or format.
func (d *apiDoc) validate(where string, s map[string]any, v any) {
	s = d.resolve(s)
	typ, _ := s["type"].(string)
	if v == nil {
		if typ != "" && s["nullable"] != true {
			d.problem("%s: null, but the document says %s (not nullable)", where, typ)
		}
		return
	}
	switch typ {
	case "":
		return // any JSON value
	case "string":
		str, ok := v.(string)
		if !ok {
			d.problem("%s: %T, the document says string", where, v)
			return
		}
		if s["format"] == "date-time" && !dateTime.MatchString(str) {
			d.problem("%s: %q is not a date-time", where, str)
		}
		if s["format"] == "byte" {
			if _, err := base64.StdEncoding.DecodeString(str); err != nil {
				d.problem("%s: %q is not base64", where, str)
			}
		}
		if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, any(str)) {
			d.problem("%s: %q not in enum %v", where, str, enum)
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			d.problem("%s: %T, the document says %s", where, v, typ)
			return
		}
		if _, err := strconv.ParseUint(strings.TrimPrefix(string(n), "-"), 10, 64); typ == "integer" && err != nil {
			d.problem("%s: %s is not an integer", where, n)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			d.problem("%s: %T, the document says boolean", where, v)
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			d.problem("%s: %T, the document says array", where, v)
			return
		}
		for i, e := range arr {
			d.validate(fmt.Sprintf("%s[%d]", where, i), s["items"].(map[string]any), e)
		}
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			d.problem("%s: %T, the document says object", where, v)
			return
		}
		props, _ := s["properties"].(map[string]any)
		more, _ := s["additionalProperties"].(map[string]any)
		for k, e := range obj {
			switch p, ok := props[k].(map[string]any); {
			case ok:
				d.validate(where+"."+k, p, e)
			case more != nil:
				d.validate(where+"."+k, more, e)
			default:
				d.problem("%s.%s: a property the document does not list", where, k)
			}
		}
		req, _ := s["required"].([]any)
		for _, r := range req {
			if _, ok := obj[r.(string)]; !ok {
				d.problem("%s: required %s missing", where, r)
			}
		}
	}
}

// exchange sends a request and checks the answer against the document: the operation
// exists, lists the status and the content type, and a JSON body matches its schema.
func (d *apiDoc) exchange(b *testBundle, method, path string, body any) (int, []byte) {
	d.t.Helper()
	status, header, raw := b.send(method, path, body)
	tmpl, op := d.op(method, path)
	where := fmt.Sprintf("%s %s -> %d", method, tmpl, status)
	if op == nil {
		d.problem("%s %s: not in the document", method, path)
		return status, raw
	}
	answer, ok := op["responses"].(map[string]any)[strconv.Itoa(status)].(map[string]any)
	if !ok {
		d.problem("%s: status not documented: %s", where, raw)
		return status, raw
	}
	if len(raw) == 0 {
		return status, raw
	}
	content, _ := answer["content"].(map[string]any)
	ct, _, _ := strings.Cut(header.Get("Content-Type"), ";")
	media, ok := content[ct].(map[string]any)
	if !ok {
		d.problem("%s: answered %s; the document lists %v", where, ct, slices.Sorted(maps.Keys(content)))
		return status, raw
	}
	if ct == "application/json" {
		d.validate(where, media["schema"].(map[string]any), decodeJSON(d.t, raw))
	}
	return status, raw
}

// decodeJSON decodes raw keeping numbers as written.
func decodeJSON(t *testing.T, raw []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v), string(raw))
	return v
}

// TestOpenAPIDescribesAWorkersLife walks a worker's whole life over HTTP, as a worker in
// another language would, and checks every answer against the OpenAPI document: status,
// content type and body, the event stream's events included.
func TestOpenAPIDescribesAWorkersLife(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{Token: "tok"})
	b.client.Start(t.Context())
	t.Cleanup(b.client.Stop)
	d := loadDoc(t, b)
	x := func(method, path string, body any, want int) map[string]any {
		t.Helper()
		status, raw := d.exchange(b, method, path, body)
		require.Equal(t, want, status, "%s %s: %s", method, path, raw)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return out
	}
	fence := func(l map[string]any) any { return l["fence"] }

	x("GET", "/v1/info", nil, 200)
	x("POST", "/v1/workers", map[string]any{"worker_id": "py", "worker_instance_id": "py-1", "lanes": []string{"jobs"}, "ttl_ms": 60000, "session": "s"}, 200)
	x("GET", "/v1/workers", nil, 200)
	x("GET", "/v1/workers/py-1", nil, 200)
	x("POST", "/v1/workers/py-1/heartbeat", map[string]any{"session": "s"}, 200)
	// Reads of an execution before anything happened to it.
	c := x("POST", "/v1/executions", map[string]any{"lane": "jobs", "kind": "k", "payload": map[string]any{"a": 1},
		"policy": map[string]any{"retry": map[string]any{"max_retries": 1, "backoff": map[string]any{"kind": "fixed", "initial_ms": 1}}}}, 201)
	id := c["id"].(string)
	x("GET", "/v1/executions/"+id, nil, 200)
	x("GET", "/v1/executions/"+id+"/attempts", nil, 200)
	x("GET", "/v1/executions/"+id+"/payload", nil, 200)
	x("GET", "/v1/executions?lane=nothing-here", nil, 200)
	x("GET", "/v1/dead-letter?lane=nothing-here", nil, 200)
	x("GET", "/v1/lanes/jobs", nil, 200)

	claim := func() map[string]any {
		out := x("POST", "/v1/claim", map[string]any{"worker_id": "py", "worker_instance_id": "py-1", "lanes": []string{"jobs"}, "wait_ms": 5000}, 200)
		ls := out["leases"].([]any)
		require.Len(t, ls, 1)
		return ls[0].(map[string]any)
	}
	l := claim()
	x("POST", "/v1/executions/"+id+"/renew", map[string]any{"fence": fence(l), "lease_ttl_ms": 20000}, 200)
	x("POST", "/v1/executions/"+id+"/progress", map[string]any{"fence": fence(l), "percent": 10}, 200)
	x("POST", "/v1/executions/"+id+"/fail", map[string]any{"fence": fence(l), "reason": "flaky"}, 200)
	l = claim()
	x("POST", "/v1/executions/"+id+"/delay", map[string]any{"fence": fence(l), "delay_ms": 0}, 200)
	l = claim()
	x("POST", "/v1/executions/"+id+"/release", map[string]any{"fence": fence(l)}, 200)
	l = claim()
	x("GET", "/v1/executions/"+id, nil, 200)
	x("POST", "/v1/executions/"+id+"/complete", map[string]any{"fence": fence(l), "result": map[string]any{"ok": true}}, 200)
	x("POST", "/v1/executions/"+id+"/complete", map[string]any{"fence": fence(l), "result": map[string]any{"ok": true}}, 200)
	x("GET", "/v1/executions/"+id+"/result", nil, 200)
	x("GET", "/v1/executions/"+id+"/attempts", nil, 200)
	x("GET", "/v1/executions/"+id+"/state", nil, 200)
	x("GET", "/v1/executions?lane=jobs", nil, 200)

	// Binary in, binary out.
	c = x("POST", "/v1/executions", map[string]any{"lane": "jobs", "kind": "bin", "payload_base64": base64.StdEncoding.EncodeToString([]byte{0, 1, 2})}, 201)
	bid := c["id"].(string)
	l = claim()
	require.Equal(t, "AAEC", l["payload_base64"])
	x("POST", "/v1/executions/"+bid+"/complete", map[string]any{"fence": fence(l), "result_base64": "AAE="}, 200)
	x("GET", "/v1/executions/"+bid+"/result", nil, 200)
	x("GET", "/v1/executions/"+bid+"/payload", nil, 200)

	// Fail for good, dead letter, replay.
	c = x("POST", "/v1/executions", map[string]any{"lane": "jobs", "kind": "k", "policy": map[string]any{"retry": map[string]any{"max_retries": 0}}}, 201)
	fid := c["id"].(string)
	l = claim()
	x("POST", "/v1/executions/"+fid+"/fail", map[string]any{"fence": fence(l), "reason": "no", "no_retry": true}, 200)
	x("GET", "/v1/dead-letter", nil, 200)
	x("POST", "/v1/dead-letter/replay", map[string]any{"ids": []string{fid}}, 200)
	l = claim()
	x("POST", "/v1/executions/"+fid+"/cancel", map[string]any{"fence": fence(l), "reason": "stop"}, 200)
	x("POST", "/v1/executions/"+fid+"/replay", nil, 200)
	x("GET", "/v1/executions/"+fid+"/result", nil, 409)
	x("POST", "/v1/executions/"+fid+"/tags", map[string]any{"tags": map[string]string{"a": "b"}}, 200)
	x("PUT", "/v1/executions/"+fid+"/priority", map[string]any{"priority": 5}, 200)
	g := x("POST", "/v1/executions/"+fid+"/grants", map[string]any{"kind": "claim", "worker_id": "py"}, 201)
	x("POST", "/v1/grants/claim", map[string]any{"grant": g, "worker_id": "py", "worker_instance_id": "py-1"}, 200)
	x("POST", "/v1/executions/"+fid+"/revoke-lease", map[string]any{"reason": "r"}, 200)
	x("POST", "/v1/workers/py/claim-grant", map[string]any{"worker_instance_id": "py-1", "lanes": []string{"none"}}, 204)
	x("POST", "/v1/lanes/jobs/pause", nil, 200)
	x("POST", "/v1/lanes/jobs/resume", nil, 200)
	x("POST", "/v1/workers/py-1/mark-dead", map[string]any{}, 200)
	x("POST", "/v1/workers/py-1/deregister", map[string]any{"session": "s"}, 200)
	x("GET", "/v1/workers/py-1", nil, 404)
	x("GET", "/v1/executions/s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b", nil, 404)
	x("GET", "/metrics", nil, 200)

	// The event stream: its media type, and each event's data as the document says.
	req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+"/v1/events?cursor=start&execution_id="+id, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	_, op := d.op("GET", "/v1/events")
	content, _ := op["responses"].(map[string]any)["200"].(map[string]any)["content"].(map[string]any)
	media, ok := content[resp.Header.Get("Content-Type")].(map[string]any)
	require.True(t, ok, "the document lists %v for the event stream", slices.Sorted(maps.Keys(content)))
	events := 0
	for sc := bufio.NewScanner(resp.Body); events < 5 && sc.Scan(); {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			d.validate("GET /v1/events -> data", media["schema"].(map[string]any), decodeJSON(t, []byte(data)))
			events++
		}
	}
	require.Equal(t, 5, events)
	require.Empty(t, d.probs, "the document does not describe what the server answers:\n%s", strings.Join(d.probs, "\n"))
}

// requireMinimal requires that the JSON value v carries exactly the properties the schema
// s lists as required, at every level, and returns their paths.
func (d *apiDoc) requireMinimal(where string, s map[string]any, v any, at []string) [][]string {
	d.t.Helper()
	s = d.resolve(s)
	obj, ok := v.(map[string]any)
	props, described := s["properties"].(map[string]any)
	if !ok || !described {
		return nil // a value, a list, or a map of any keys
	}
	var required []string
	listed, _ := s["required"].([]any)
	for _, r := range listed {
		required = append(required, r.(string))
	}
	require.ElementsMatch(d.t, required, slices.Collect(maps.Keys(obj)), "%s %v: the body has exactly the required fields", where, at)
	var paths [][]string
	for k, e := range obj {
		path := append(slices.Clip(at), k)
		paths = append(paths, path)
		paths = append(paths, d.requireMinimal(where, props[k].(map[string]any), e, path)...)
	}
	return paths
}

// without returns a copy of the JSON object v without the property at path.
func without(v map[string]any, path []string) map[string]any {
	out := maps.Clone(v)
	if len(path) == 1 {
		delete(out, path[0])
	} else {
		out[path[0]] = without(out[path[0]].(map[string]any), path[1:])
	}
	return out
}

// TestOpenAPIRequiredIsWhatTheServerRequires sends every route that takes a body the
// smallest one that does its work: exactly the fields the document lists as required, at
// every level. Each is accepted; without any one of those fields it is refused with 400.
// A route whose body the document says is optional is sent none and accepts that; one
// whose body is required refuses an empty one.
func TestOpenAPIRequiredIsWhatTheServerRequires(t *testing.T) {
	t.Parallel()
	b := setup(t, ffserver.Config{})
	d := loadDoc(t, b)
	covered := map[string]bool{}
	x := func(method, path string, body map[string]any, want int) map[string]any {
		t.Helper()
		tmpl, op := d.op(method, path)
		require.NotNil(t, op, "%s %s", method, path)
		covered[method+" "+tmpl] = true
		rb := op["requestBody"].(map[string]any)
		if body == nil {
			require.Equal(t, false, rb["required"], "%s %s takes no body; the document says it needs one", method, tmpl)
		} else {
			require.Equal(t, true, rb["required"], "%s %s needs a body; the document says it is optional", method, tmpl)
			b.requireError(method, path, "", 400, fftype.CodeInvalidInput)
			schema := rb["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)
			var v map[string]any
			raw, err := json.Marshal(body)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(raw, &v))
			for _, p := range d.requireMinimal(method+" "+tmpl, schema, v, nil) {
				status, raw := b.do(method, path, without(v, p))
				require.Equal(t, 400, status, "%s %s without %v: %s", method, tmpl, p, raw)
			}
		}
		var send any
		if body != nil {
			send = body
		}
		status, raw := b.do(method, path, send)
		require.Equal(t, want, status, "%s %s: %s", method, tmpl, raw)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return out
	}
	ex := func(id any, rest string) string { return "/v1/executions/" + id.(string) + rest }
	register := map[string]any{"worker_id": "w", "worker_instance_id": "i1", "lanes": []string{"l"}, "ttl_ms": 60000, "session": "s"}
	claim := func() (string, any) {
		out := x("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "i1", "lanes": []string{"l"}}, 200)
		l := out["leases"].([]any)[0].(map[string]any)
		return l["execution_id"].(string), l["fence"]
	}

	x("POST", "/v1/workers", register, 200)
	x("POST", "/v1/workers/i1/heartbeat", map[string]any{"session": "s"}, 200)
	id := x("POST", "/v1/executions", map[string]any{"lane": "l", "kind": "k"}, 201)["id"]
	bulk := x("POST", "/v1/executions/bulk", map[string]any{"executions": []any{map[string]any{"lane": "l", "kind": "k"}}}, 200)
	other := bulk["results"].([]any)[0].(map[string]any)["result"].(map[string]any)["id"]
	x("POST", ex(id, "/tags"), map[string]any{"tags": map[string]string{"a": "b"}}, 200)
	x("PUT", ex(id, "/priority"), map[string]any{"priority": 1}, 200)
	g := x("POST", ex(other, "/grants"), map[string]any{"kind": "claim", "worker_id": "w"}, 201)
	x("POST", "/v1/grants/claim", map[string]any{"grant": map[string]any{"grant_id": g["grant_id"], "execution_id": other},
		"worker_id": "w", "worker_instance_id": "i1"}, 200)
	x("POST", ex(other, "/revoke-lease"), nil, 200)

	held, fence := claim()
	x("POST", ex(held, "/renew"), map[string]any{"fence": fence}, 200)
	x("POST", ex(held, "/progress"), map[string]any{"fence": fence, "percent": 5}, 200)
	x("POST", ex(held, "/delay"), map[string]any{"fence": fence, "delay_ms": 0}, 200)
	held, fence = claim()
	x("POST", ex(held, "/release"), map[string]any{"fence": fence}, 200)
	held, fence = claim()
	x("POST", ex(held, "/fail"), map[string]any{"fence": fence}, 200)
	held, fence = claim()
	x("POST", ex(held, "/complete"), map[string]any{"fence": fence}, 200)
	x("POST", "/v1/dead-letter/replay", map[string]any{"ids": []any{held}}, 200)
	if held == id {
		id = other
	}
	x("POST", ex(id, "/cancel"), nil, 200) // the one that failed, waiting for its retry
	x("POST", "/v1/workers/w/claim-grant", map[string]any{"worker_instance_id": "i1", "lanes": []string{"empty"}}, 204)
	x("POST", "/v1/workers/i1/deregister", map[string]any{"session": "s"}, 200)
	x("POST", "/v1/workers", register, 200)
	x("POST", "/v1/workers/i1/mark-dead", nil, 200)

	for tmpl, item := range d.paths {
		for method, op := range item.(map[string]any) {
			if _, ok := op.(map[string]any)["requestBody"]; ok {
				require.True(t, covered[strings.ToUpper(method)+" "+tmpl], "%s %s takes a body the test does not send", method, tmpl)
			}
		}
	}
}

// TestOpenAPIBase64IsBytes: the binary forms of payloads and results are documented as
// base64 strings (format byte), so that generated clients encode and decode them.
func TestOpenAPIBase64IsBytes(t *testing.T) {
	t.Parallel()
	schemas := ffserver.OpenAPI()["components"].(map[string]any)["schemas"].(map[string]any)
	for schema, field := range map[string]string{"CreateRequest": "payload_base64", "LeaseView": "payload_base64", "CompleteRequest": "result_base64"} {
		prop := schemas[schema].(map[string]any)["properties"].(map[string]any)[field].(map[string]any)
		require.Equal(t, "string", prop["type"], "%s.%s", schema, field)
		require.Equal(t, "byte", prop["format"], "%s.%s", schema, field)
	}
}
