package ffserver

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/fftype"
)

// route is one endpoint. The table below is the single source of the mux and of the
// OpenAPI document, so the two cannot disagree. It names every status a route answers
// with: its success status, the other answers that are not errors (also), and the error
// statuses of its own checks and engine calls (fails); [route.statuses] adds those every
// route of its shape can answer.
type route struct {
	method  string
	path    string
	summary string
	doc     string // what the summary leaves out, or ""
	auth    bool
	long    bool // a long-poll or a stream: its handler bounds its own time, not the request timeout
	request any  // a value of the request body's type, or nil for none
	params  []param
	status  int // the success status
	// respond is a value of the success body's type — of each event's data for a stream —
	// or nil for no body, or one that media's own schemas describe.
	respond any
	media   []string // the success body's media types; nil means JSON
	also    []answer
	fails   []int
	handle  func(s *Server, w http.ResponseWriter, r *http.Request) error
}

// param is a query or header parameter of a route.
type param struct {
	name string
	in   string // "query" or "header"
	doc  string // what its name leaves out, or ""
}

// checkQuery refuses a query that is malformed, names a parameter rt does not take, or
// names one twice: ignored, a misspelt filter (?status=failed for ?state=failed) or a
// second value would widen or change the answer without a word.
func (rt route) checkQuery(raw string) error {
	if raw == "" {
		return nil
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return badRequest("the query is malformed: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(q)) {
		switch {
		case !slices.ContainsFunc(rt.params, func(p param) bool { return p.in == "query" && p.name == name }):
			return badRequest("unknown query parameter %q; %s %s takes %s", name, rt.method, rt.path, rt.queryNames())
		case len(q[name]) > 1:
			return badRequest("query parameter %q is given %d times; give it once", name, len(q[name]))
		}
	}
	return nil
}

// queryNames lists the query parameters rt takes, for an error message.
func (rt route) queryNames() string {
	var names []string
	for _, p := range rt.params {
		if p.in == "query" {
			names = append(names, p.name)
		}
	}
	if names == nil {
		return "none"
	}
	return strings.Join(names, ", ")
}

// query returns query parameters whose names say what they are.
func query(names ...string) []param {
	out := make([]param, len(names))
	for i, n := range names {
		out[i] = param{name: n, in: "query"}
	}
	return out
}

// The media types the API answers with.
const (
	mediaJSON   = "application/json"
	mediaBinary = "application/octet-stream"
	mediaEvents = "text/event-stream"
	mediaText   = "text/plain"
)

// eventsDoc describes the event stream's framing.
const eventsDoc = "Server-sent events. Each event's `id` is the cursor that resumes right after it, its `event` " +
	"name the event's type, its `data` the event as JSON (the schema of this answer). A stream not asked from " +
	"`start` opens with its position, an `id` alone, so that a client that loses it before the first matching " +
	"event resumes without a gap. A stream whose reader fell behind retention ends with an event named `error` " +
	"whose data is an ErrorBody (code cursor_expired). Comments (`: keep-alive`) keep an idle stream open; with " +
	"one, once every matching event so far was sent, an `id` alone may move the position past the events the " +
	"filter skipped, so that a client resumes from there rather than from events retention has since deleted."

// noBytes is the answer of the route of an execution's stored bytes, what, when there are
// none (see writeBytes).
func noBytes(what string) answer {
	return answer{http.StatusNoContent, "the execution has no " + what + ": none was given (a JSON null is answered as null, 200)", nil}
}

// answer is a status a route answers with besides its success status and its errors.
type answer struct {
	status  int
	why     string
	respond any // a value of the body's type, or nil for no body
}

// The error statuses of the engine calls routes make (see statusOfKind). 503 is a store
// that does not answer or a request that timed out.
var (
	failsQuery  = []int{400, 503}                //nolint:gochecknoglobals // constant: a listing refuses bad parameters
	failsEvents = []int{400, 409, 503}           //nolint:gochecknoglobals // constant: a listing, and 409 for a cursor the log was trimmed past
	failsRead   = []int{400, 404, 503}           //nolint:gochecknoglobals // constant: a read by id (bad or unknown)
	failsWrite  = []int{400, 404, 409, 503}      //nolint:gochecknoglobals // constant: a write to an execution or worker by id, refused in the current state or on a store conflict
	failsChange = []int{400, 409, 503}           //nolint:gochecknoglobals // constant: a write that needs nothing to exist (a claim, a registration or its removal, a lane's pause), refused in the current state or on a store conflict
	failsReplay = []int{400, 404, 409, 429, 503} //nolint:gochecknoglobals // constant: a transition, and 429 at the replay cap
)

// statuses returns every status rt answers with, ascending: its own, plus 401 on
// authenticated routes, 413 and 503 on routes reading a body (oversized, or not arrived
// within the request timeout), 400 everywhere (a query parameter the route does not take,
// see checkQuery, or a malformed body) and 500 everywhere (an internal error, logged and
// answered without detail).
func (rt route) statuses() []int {
	out := []int{rt.status, http.StatusBadRequest, http.StatusInternalServerError}
	for _, a := range rt.also {
		out = append(out, a.status)
	}
	out = append(out, rt.fails...)
	if rt.auth {
		out = append(out, http.StatusUnauthorized)
	}
	if rt.request != nil {
		out = append(out, http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// apiRoutes returns the route table.
func apiRoutes() []route {
	return []route{
		{method: "GET", path: "/healthz", summary: "Liveness: the process serves requests", status: 200, respond: StatusResponse{}, handle: (*Server).healthz},
		{method: "GET", path: "/readyz", summary: "Readiness: the store answers", status: 200, respond: StatusResponse{}, fails: []int{503}, handle: (*Server).readyz},
		{method: "GET", path: "/v1/openapi.json", summary: "This API's OpenAPI 3 document", auth: true, status: 200, media: []string{mediaJSON}, handle: (*Server).openapi},
		{method: "GET", path: "/metrics", summary: "Prometheus metrics: transitions by kind and lane, queue depth per lane, request latency per route",
			doc: "The Prometheus text format; a scraper may negotiate another with Accept.", auth: true, status: 200, media: []string{mediaText}, handle: (*Server).serveMetrics},

		{method: "POST", path: "/v1/executions", summary: "Create an execution", auth: true, request: CreateRequest{}, status: 201, respond: fftype.CreateResult{},
			also: []answer{{200, "the id or idempotency key found an earlier execution (duplicate is true)", fftype.CreateResult{}}}, fails: []int{409, 503}, handle: (*Server).create},
		{method: "POST", path: "/v1/executions/bulk", summary: "Create many executions; one result or error per item", auth: true, request: BulkCreateRequest{}, status: 200, respond: BulkCreateResponse{}, handle: (*Server).createBulk},
		{method: "GET", path: "/v1/executions", summary: "List executions, oldest first, filtered and paged by cursor", auth: true, params: query("namespace", "lane", "state", "kind", "cursor", "limit"), status: 200, respond: fftype.ListPage{}, fails: failsQuery, handle: (*Server).list},
		{method: "GET", path: "/v1/executions/{id}", summary: "Describe an execution", auth: true, status: 200, respond: fftype.Execution{}, fails: failsRead, handle: (*Server).get},
		{method: "GET", path: "/v1/executions/{id}/state", summary: "An execution's public state", auth: true, status: 200, respond: StateResponse{}, fails: failsRead, handle: (*Server).state},
		{method: "GET", path: "/v1/executions/{id}/result", summary: "A completed execution's result: JSON as stored, or binary as application/octet-stream", auth: true, status: 200, media: []string{mediaJSON, mediaBinary},
			also: []answer{noBytes("result")}, fails: []int{400, 404, 409, 503}, handle: (*Server).result},
		{method: "GET", path: "/v1/executions/{id}/payload", summary: "An execution's input payload: JSON as stored, or binary as application/octet-stream", auth: true, status: 200, media: []string{mediaJSON, mediaBinary},
			also: []answer{noBytes("payload")}, fails: failsRead, handle: (*Server).payload},
		{method: "GET", path: "/v1/executions/{id}/attempts", summary: "An execution's attempts, oldest first", auth: true, status: 200, respond: AttemptsResponse{}, fails: failsRead, handle: (*Server).attempts},
		{method: "POST", path: "/v1/executions/{id}/tags", summary: "Merge tags into an execution's tags (a tag set to \"\" is removed)", auth: true, request: TagsRequest{}, status: 200, respond: OKResponse{}, fails: failsWrite, handle: (*Server).tags},
		{method: "POST", path: "/v1/executions/{id}/cancel", summary: "Cancel: by the lease holder with a fence, or by an operator without one", auth: true, request: CancelRequest{}, status: 200, respond: OKResponse{}, fails: failsWrite, handle: (*Server).cancel},
		{method: "PUT", path: "/v1/executions/{id}/priority", summary: "Change an execution's priority", auth: true, request: PriorityRequest{}, status: 200, respond: OKResponse{}, fails: failsWrite, handle: (*Server).priority},
		{method: "POST", path: "/v1/executions/{id}/replay", summary: "Replay a finished execution with fresh retry and reclaim budgets", auth: true, status: 200, respond: OKResponse{}, fails: failsReplay, handle: (*Server).replay},
		{method: "POST", path: "/v1/executions/{id}/revoke-lease", summary: "Take the lease away from its holder; the next claim is a reclaim", auth: true, request: ReasonRequest{}, status: 200, respond: OKResponse{}, fails: failsWrite, handle: (*Server).revoke},
		{method: "POST", path: "/v1/executions/{id}/grants", summary: "Issue a claim or reclaim grant reserving the execution for one worker", auth: true, request: GrantRequest{}, status: 201, respond: fftype.GrantRef{}, fails: failsWrite, handle: (*Server).grant},
		{method: "POST", path: "/v1/grants/claim", summary: "Consume a grant: its worker gets the lease", auth: true, request: GrantClaimRequest{}, status: 200, respond: LeaseView{}, fails: failsWrite, handle: (*Server).claimGrant},

		{method: "POST", path: "/v1/claim", summary: "Worker protocol: claim leases from lanes, optionally waiting up to wait_ms for work", auth: true, long: true, request: ClaimRequest{}, status: 200, respond: ClaimResponse{}, fails: failsChange, handle: (*Server).claim},
		{method: "POST", path: "/v1/executions/{id}/renew", summary: "Worker protocol: renew the lease", auth: true, request: RenewRequest{}, status: 200, respond: RenewResponse{}, fails: failsWrite, handle: (*Server).renew},
		{method: "POST", path: "/v1/executions/{id}/progress", summary: "Worker protocol: report progress", auth: true, request: ProgressRequest{}, status: 200, respond: OKResponse{}, fails: failsWrite, handle: (*Server).progress},
		{method: "POST", path: "/v1/executions/{id}/complete", summary: "Worker protocol: complete with a result", auth: true, request: CompleteRequest{}, status: 200, respond: OKResponse{}, fails: failsWrite, handle: (*Server).complete},
		{method: "POST", path: "/v1/executions/{id}/fail", summary: "Worker protocol: fail the attempt; retried per policy", auth: true, request: FailRequest{}, status: 200, respond: fftype.FailOutcome{}, fails: failsWrite, handle: (*Server).fail},
		{method: "POST", path: "/v1/executions/{id}/delay", summary: "Worker protocol: pause the attempt for delay_ms; the next claim continues it", auth: true, request: DelayRequest{}, status: 200, respond: OKResponse{}, fails: failsWrite, handle: (*Server).delay},
		{method: "POST", path: "/v1/executions/{id}/release", summary: "Worker protocol: give the lease back (graceful shutdown)", auth: true, request: FenceRequest{}, status: 200, respond: OKResponse{}, fails: failsWrite, handle: (*Server).release},

		{method: "GET", path: "/v1/lanes/{lane}", summary: "A lane's state", auth: true, status: 200, respond: fftype.LaneInfo{}, fails: failsQuery, handle: (*Server).lane},
		{method: "POST", path: "/v1/lanes/{lane}/pause", summary: "Pause a lane: claims hand out none of its executions", auth: true, status: 200, respond: fftype.LaneInfo{}, fails: failsChange, handle: (*Server).pauseLane},
		{method: "POST", path: "/v1/lanes/{lane}/resume", summary: "Resume a paused lane", auth: true, status: 200, respond: fftype.LaneInfo{}, fails: failsChange, handle: (*Server).resumeLane},

		{method: "GET", path: "/v1/dead-letter", summary: "Failed executions, oldest first, filtered and paged", auth: true, params: query("namespace", "lane", "kind", "cursor", "limit"), status: 200, respond: fftype.ListPage{}, fails: failsQuery, handle: (*Server).deadLetter},
		{method: "POST", path: "/v1/dead-letter/replay", summary: "Replay failed executions by id; one result per id", auth: true, request: ReplayManyRequest{}, status: 200, respond: ReplayManyResponse{}, fails: []int{503}, handle: (*Server).replayMany},
		{method: "GET", path: "/v1/events", summary: "The event log as server-sent events from a cursor (or Last-Event-ID), then live", doc: eventsDoc, auth: true, long: true,
			params: append(query("namespace", "lane", "execution_id", "flow_id"),
				param{"types", "query", "event types, comma-separated; any of them matches"},
				param{"cursor", "query", "where to start: an event's id to resume right after it, or `start` for the oldest event kept; none means from now"},
				param{"Last-Event-ID", "header", "an event's id to resume right after it, as a browser's EventSource sends on reconnecting; it wins over cursor"}),
			status: 200, respond: fftype.Event{}, media: []string{mediaEvents}, fails: failsEvents, handle: (*Server).events},

		{method: "GET", path: "/v1/info", summary: "The engine's shard count and clock, read by remote workers", auth: true, status: 200, respond: InfoResponse{}, fails: []int{503}, handle: (*Server).info},
		{method: "POST", path: "/v1/workers", summary: "Register a worker instance, or refresh the same session's live registration (409 while another process holds the instance id)", auth: true, request: RegisterWorkerRequest{}, status: 200, respond: RegisterWorkerResponse{}, fails: failsChange, handle: (*Server).registerWorker},
		{method: "GET", path: "/v1/workers", summary: "List the live worker instances of a namespace, in instance-id order, paged by cursor", auth: true, params: query("namespace", "cursor", "limit"), status: 200, respond: flowfabric.WorkerPage{}, fails: failsQuery, handle: (*Server).listWorkers},
		{method: "GET", path: "/v1/workers/{worker_instance_id}", summary: "A live worker instance's registration", auth: true, params: query("namespace"), status: 200, respond: flowfabric.WorkerInfo{}, fails: failsRead, handle: (*Server).getWorker},
		{method: "POST", path: "/v1/workers/{worker_instance_id}/heartbeat", summary: "Extend the session's live registration by its TTL (404 once it lapsed)", auth: true, request: WorkerSessionRequest{}, status: 200, respond: HeartbeatResponse{}, fails: failsWrite, handle: (*Server).heartbeatWorker},
		{method: "POST", path: "/v1/workers/{worker_instance_id}/deregister", summary: "Remove the session's registration so the instance id is free at once", auth: true, request: WorkerSessionRequest{}, status: 200, respond: OKResponse{}, fails: failsChange, handle: (*Server).deregisterWorker},
		{method: "POST", path: "/v1/workers/{worker_instance_id}/mark-dead", summary: "Declare a worker instance dead: its registration goes and its leases expire at once", auth: true, request: MarkDeadRequest{}, status: 200, respond: MarkDeadResponse{}, fails: failsWrite, handle: (*Server).markWorkerDead},
		{method: "POST", path: "/v1/workers/{worker_id}/claim-grant", summary: "The scheduler reserves the next execution the worker would claim with a grant", auth: true, request: WorkerGrantRequest{}, status: 200, respond: fftype.GrantRef{},
			also: []answer{{204, "nothing is eligible", nil}}, fails: failsChange, handle: (*Server).grantNext},
	}
}

// ---- health

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, StatusResponse{Status: "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.client.Ping(ctx); err != nil {
		return &fftype.Error{Kind: fftype.KindUnavailable, Code: fftype.CodeStoreUnavailable, Message: "the store does not answer", Retryable: true, Err: err}
	}
	writeJSON(w, http.StatusOK, StatusResponse{Status: "ready"})
	return nil
}

// ---- helpers

func pathID(r *http.Request) (fftype.ExecutionID, error) {
	return fftype.ParseExecutionID(r.PathValue("id"))
}

// idBody reads the execution id of the path and the JSON body of an execution route.
func idBody[T any](r *http.Request, limit int64) (fftype.ExecutionID, T, error) {
	var req T
	id, err := pathID(r)
	if err != nil {
		return "", req, err
	}
	req, err = decode[T](r, limit)
	return id, req, err
}

// ms converts a count of milliseconds to a duration of at most max. The range is checked
// before converting: a count large enough to overflow would otherwise wrap around into it.
func ms(v int64, field string, max time.Duration) (time.Duration, error) {
	if v < 0 || v > max.Milliseconds() {
		return 0, badRequest("%s must be between 0 and %d", field, max.Milliseconds())
	}
	return time.Duration(v) * time.Millisecond, nil
}

func queryLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, badRequest("limit must be an integer from 1 to 1000")
	}
	return n, nil
}

func ok(w http.ResponseWriter) error {
	writeJSON(w, http.StatusOK, OKResponse{OK: true})
	return nil
}

// ---- executions

func (s *Server) create(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[CreateRequest](r, s.cfg.LargeBodyBytes)
	if err != nil {
		return err
	}
	p, err := req.params()
	if err != nil {
		return err
	}
	res, err := s.client.Create(r.Context(), p)
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if res.Duplicate {
		status = http.StatusOK
	}
	writeJSON(w, status, res)
	return nil
}

func (s *Server) createBulk(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[BulkCreateRequest](r, s.cfg.LargeBodyBytes)
	if err != nil {
		return err
	}
	if len(req.Executions) == 0 || len(req.Executions) > maxBulk {
		return badRequest("executions must hold 1 to %d items", maxBulk)
	}
	out := BulkCreateResponse{Results: make([]BulkItem, len(req.Executions))}
	var ps []fftype.CreateParams
	var idx []int
	for i := range req.Executions {
		p, err := req.Executions[i].params()
		if err != nil {
			out.Results[i].Error = errorBody(err)
			continue
		}
		ps = append(ps, p)
		idx = append(idx, i)
	}
	for j, res := range s.client.CreateMany(r.Context(), ps) {
		if res.Err != nil {
			out.Results[idx[j]].Error = errorBody(res.Err)
		} else {
			out.Results[idx[j]].Result = res.Result
		}
	}
	if err := r.Context().Err(); err != nil {
		// Out of time, as any request can be: 503. Items that were created are found
		// again by a retry, through their ids or idempotency keys.
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	page, err := s.client.List(r.Context(), fftype.ListParams{Namespace: q.Get("namespace"), Lane: q.Get("lane"),
		State: fftype.PublicState(q.Get("state")), Kind: q.Get("kind"), Cursor: q.Get("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	x, err := s.client.Get(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, x)
	return nil
}

func (s *Server) state(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	x, err := s.client.Get(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, StateResponse{State: x.PublicState()})
	return nil
}

// writeBytes answers with stored bytes: JSON as it is, binary as octet-stream. No JSON at
// all (none was given) is no content, 204: answered as null, it would read as the JSON
// value null, which is stored as such.
func writeBytes(w http.ResponseWriter, b []byte, enc fftype.PayloadEncoding) {
	switch {
	case enc == fftype.EncodingBinary:
		w.Header().Set("Content-Type", mediaBinary)
	case len(b) == 0:
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		w.Header().Set("Content-Type", mediaJSON)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func (s *Server) result(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	b, enc, err := s.client.ResultWithEncoding(r.Context(), id)
	if err != nil {
		return err
	}
	writeBytes(w, b, enc)
	return nil
}

func (s *Server) payload(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	x, err := s.client.Get(r.Context(), id)
	if err != nil {
		return err
	}
	b, err := s.client.Payload(r.Context(), id)
	if err != nil {
		return err
	}
	writeBytes(w, b, x.Encoding)
	return nil
}

func (s *Server) attempts(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	atts, err := s.client.Attempts(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, AttemptsResponse{Attempts: atts})
	return nil
}

func (s *Server) tags(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[TagsRequest](r, s.cfg.LargeBodyBytes) // 128 entries of up to 1 KiB each
	if err != nil {
		return err
	}
	if err := s.client.SetTags(r.Context(), id, req.Tags); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[CancelRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	if err := s.client.Cancel(r.Context(), id, fftype.CancelParams{Reason: req.Reason, Fence: req.Fence}); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) priority(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[PriorityRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	if err := s.client.ChangePriority(r.Context(), id, req.Priority); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) replay(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if err := s.client.Replay(r.Context(), id); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[ReasonRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	if err := s.client.Revoke(r.Context(), id, req.Reason); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) grant(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[GrantRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	ttl, err := ms(req.TTLMS, "ttl_ms", fftype.MaxGrantTTL)
	if err != nil {
		return err
	}
	g, err := s.client.IssueGrant(r.Context(), id, req.Kind, fftype.GrantParams{WorkerID: req.WorkerID,
		Capabilities: req.Capabilities, TTL: fftype.Duration(ttl)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, g)
	return nil
}

func (s *Server) claimGrant(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[GrantClaimRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	ttl, err := ms(req.LeaseTTLMS, "lease_ttl_ms", fftype.MaxLeaseTTL)
	if err != nil {
		return err
	}
	l, err := s.client.ClaimGrant(r.Context(), fftype.GrantClaimParams{Grant: req.Grant, WorkerID: req.WorkerID,
		WorkerInstanceID: req.WorkerInstanceID, LeaseTTL: fftype.Duration(ttl)})
	if err != nil {
		return err
	}
	return s.deliver(r.Context(), w, []*fftype.Lease{l}, leaseView(l))
}

// ---- worker protocol

func (s *Server) claim(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[ClaimRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	ttl, err := ms(req.LeaseTTLMS, "lease_ttl_ms", fftype.MaxLeaseTTL)
	if err != nil {
		return err
	}
	wait, err := ms(req.WaitMS, "wait_ms", MaxClaimWait)
	if err != nil {
		return err
	}
	p := fftype.ClaimParams{WorkerID: req.WorkerID, WorkerInstanceID: req.WorkerInstanceID, Lanes: req.Lanes,
		Capabilities: req.Capabilities, Count: req.Count, LeaseTTL: fftype.Duration(ttl)}
	// The request is bounded by its wait plus the request timeout.
	ctx, cancel := context.WithTimeout(r.Context(), wait+s.cfg.RequestTimeout)
	defer cancel()
	waitCtx, endWait := context.WithTimeout(ctx, wait)
	defer endWait()
	changes := s.client.Changes(waitCtx)
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		// Claim on the request's context, not the wait's: a lease handed out must reach
		// the worker even if the wait ends meanwhile.
		leases, err := s.client.Claim(ctx, p)
		if err != nil {
			return err
		}
		if len(leases) > 0 || wait == 0 || waitCtx.Err() != nil {
			out := ClaimResponse{Leases: make([]LeaseView, len(leases))}
			for i, l := range leases {
				out.Leases[i] = leaseView(l)
			}
			return s.deliver(ctx, w, leases, out)
		}
		poll.Reset(250 * time.Millisecond) // for stores without change notifications
		select {
		case <-waitCtx.Done():
		case <-changes:
		case <-poll.C:
		case <-s.closing:
			endWait() // the server is shutting down: answer now
		}
	}
}

// deliver answers a claim with body (200), which hands out leases. When they cannot reach
// the worker — ctx, the request's, ended (its client went away or it timed out) or the
// answer could not be written — it releases them, so that their executions are claimable
// at once instead of after their lease TTL, and answers the end of ctx as an error.
func (s *Server) deliver(ctx context.Context, w http.ResponseWriter, leases []*fftype.Lease, body any) error {
	if err := ctx.Err(); err != nil {
		s.releaseUndelivered(ctx, leases)
		return err
	}
	writeJSON(w, http.StatusOK, body)
	if err := http.NewResponseController(w).Flush(); err != nil {
		s.releaseUndelivered(ctx, leases)
	}
	return nil
}

// releaseUndelivered gives back leases whose claim did not reach its worker. A release
// that fails is logged; that lease expires with its TTL.
func (s *Server) releaseUndelivered(ctx context.Context, leases []*fftype.Lease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
	defer cancel()
	for _, l := range leases {
		if err := s.client.Release(ctx, l.ExecutionID, l.Fence); err != nil {
			s.log.Warn("a claim's answer did not reach its worker and its lease could not be released; it expires with its TTL",
				"execution_id", l.ExecutionID, "err", err)
			continue
		}
		s.log.Info("a claim's answer did not reach its worker; its lease was released", "execution_id", l.ExecutionID)
	}
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[RenewRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	ttl, err := ms(req.LeaseTTLMS, "lease_ttl_ms", fftype.MaxLeaseTTL)
	if err != nil {
		return err
	}
	exp, err := s.client.Renew(r.Context(), id, req.Fence, ttl)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, RenewResponse{ExpiresAt: exp})
	return nil
}

func (s *Server) progress(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[ProgressRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	if err := s.client.Progress(r.Context(), id, req.Fence, req.Percent, req.Message); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) complete(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[CompleteRequest](r, s.cfg.LargeBodyBytes)
	if err != nil {
		return err
	}
	result, enc, err := DecodePayload("result", req.Result, req.ResultBase64)
	if err != nil {
		return err
	}
	if err := s.client.Complete(r.Context(), id, req.Fence, result, enc); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[FailRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	out, err := s.client.Fail(r.Context(), id, req.Fence, fftype.FailParams{Reason: req.Reason, Category: req.Category, NoRetry: req.NoRetry})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) delay(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[DelayRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	d, err := ms(req.DelayMS, "delay_ms", fftype.MaxDelay)
	if err != nil {
		return err
	}
	if err := s.client.Delay(r.Context(), id, req.Fence, d); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) error {
	id, req, err := idBody[FenceRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	if err := s.client.Release(r.Context(), id, req.Fence); err != nil {
		return err
	}
	return ok(w)
}

// ---- lanes

func (s *Server) lane(w http.ResponseWriter, r *http.Request) error {
	info, err := s.client.Lane(r.Context(), r.PathValue("lane"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) pauseLane(w http.ResponseWriter, r *http.Request) error {
	if err := s.client.PauseLane(r.Context(), r.PathValue("lane")); err != nil {
		return err
	}
	return s.lane(w, r)
}

func (s *Server) resumeLane(w http.ResponseWriter, r *http.Request) error {
	if err := s.client.ResumeLane(r.Context(), r.PathValue("lane")); err != nil {
		return err
	}
	return s.lane(w, r)
}

// ---- dead letter

func (s *Server) deadLetter(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	page, err := s.client.List(r.Context(), fftype.ListParams{Namespace: q.Get("namespace"), Lane: q.Get("lane"),
		State: fftype.StateFailed, Kind: q.Get("kind"), Cursor: q.Get("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) replayMany(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[ReplayManyRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	if len(req.IDs) == 0 || len(req.IDs) > 1000 {
		return badRequest("ids must hold 1 to 1000 execution ids")
	}
	out := ReplayManyResponse{Results: make([]ReplayItem, len(req.IDs))}
	for i, id := range req.IDs {
		out.Results[i].ID = id
		err := s.client.ReplayFailed(r.Context(), id)
		if err == nil {
			continue
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		out.Results[i].Error = errorBody(err)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ---- events

func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := fftype.EventFilter{Namespace: q.Get("namespace"), Lane: q.Get("lane"),
		ExecutionID: fftype.ExecutionID(q.Get("execution_id")), FlowID: q.Get("flow_id")}
	if t := q.Get("types"); t != "" {
		for _, typ := range strings.Split(t, ",") {
			f.Types = append(f.Types, fftype.EventType(typ))
		}
	}
	cursor := q.Get("cursor")
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		cursor = last
	}
	if cursor == "" {
		cursor = flowfabric.CursorEnd
	} else if cursor == "start" {
		cursor = flowfabric.CursorStart
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	sub, err := s.subscribe(ctx, cancel, f, cursor)
	if err != nil {
		return err
	}
	defer sub.Close()
	// The stream opens with its position, so that a client that loses it before the first
	// matching event resumes without a gap. A stream from the start needs none: asked
	// again from the start, it resumes exactly, moving past what retention deleted as the
	// stream itself would.
	start := sub.StartCursor()
	if cursor == flowfabric.CursorStart {
		start = ""
	}
	return s.streamEvents(w, r, sub, start)
}

// errShuttingDown answers a request that the server's shutdown ended before its answer
// began: the client may try again, here once the server is back or elsewhere.
var errShuttingDown = &fftype.Error{Kind: fftype.KindUnavailable, Code: "shutting_down", //nolint:gochecknoglobals // a constant error
	Message: "the server is shutting down", Retryable: true}

// subscribe opens the subscription of an event stream on ctx, on which it then streams
// until the request ends. The stream is exempt from the request timeout, its opening is
// not: should the request timeout pass or the server begin to shut down before the
// subscription is open (its store does not answer), cancel ends ctx and the request is
// answered 503 timeout or shutting_down, as any other request would be.
func (s *Server) subscribe(ctx context.Context, cancel context.CancelCauseFunc, f fftype.EventFilter, cursor string) (*flowfabric.Subscription, error) {
	opened, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		timeout := time.NewTimer(s.cfg.RequestTimeout)
		defer timeout.Stop()
		select {
		case <-timeout.C:
			cancel(context.DeadlineExceeded)
		case <-s.closing:
			cancel(errShuttingDown)
		case <-opened:
		}
	}()
	sub, err := s.client.Subscribe(ctx, f, cursor)
	close(opened)
	<-watched // from here on, nothing but the request's end cancels ctx
	if cause := context.Cause(ctx); cause != nil {
		if err == nil {
			sub.Close()
		}
		return nil, cause
	}
	return sub, err
}

// ---- engine and workers

func (s *Server) info(w http.ResponseWriter, r *http.Request) error {
	n, err := s.client.Shards(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, InfoResponse{Shards: n, Now: s.client.Clock().Now()})
	return nil
}

// maxWorkerTTL bounds a registration's TTL (the engine refuses more).
const maxWorkerTTL = 2 * fftype.MaxLeaseTTL

func (s *Server) registerWorker(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[RegisterWorkerRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	ttl, err := ms(req.TTLMS, "ttl_ms", maxWorkerTTL)
	if err != nil {
		return err
	}
	out, err := s.client.RegisterWorker(r.Context(), flowfabric.WorkerRegistration{WorkerID: req.WorkerID,
		InstanceID: req.WorkerInstanceID, Namespace: req.Namespace, Lanes: req.Lanes, Capabilities: req.Capabilities,
		TTL: ttl, Session: req.Session})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, RegisterWorkerResponse{Refreshed: out.Refreshed, ExpiresAt: out.ExpiresAt})
	return nil
}

func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10_000 {
			return badRequest("limit must be an integer from 1 to 10000")
		}
		limit = n
	}
	page, err := s.client.ListWorkers(r.Context(), flowfabric.WorkerListParams{Namespace: q.Get("namespace"),
		After: q.Get("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) getWorker(w http.ResponseWriter, r *http.Request) error {
	info, err := s.client.GetWorker(r.Context(), r.URL.Query().Get("namespace"), r.PathValue("worker_instance_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) heartbeatWorker(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[WorkerSessionRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	exp, err := s.client.HeartbeatWorker(r.Context(), req.Namespace, r.PathValue("worker_instance_id"), req.Session)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, HeartbeatResponse{ExpiresAt: exp})
	return nil
}

func (s *Server) deregisterWorker(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[WorkerSessionRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	if err := s.client.DeregisterWorker(r.Context(), req.Namespace, r.PathValue("worker_instance_id"), req.Session); err != nil {
		return err
	}
	return ok(w)
}

func (s *Server) markWorkerDead(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[MarkDeadRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	n, err := s.client.MarkWorkerDead(r.Context(), req.Namespace, r.PathValue("worker_instance_id"), req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, MarkDeadResponse{ExpiredLeases: n})
	return nil
}

func (s *Server) grantNext(w http.ResponseWriter, r *http.Request) error {
	req, err := decode[WorkerGrantRequest](r, ControlBodyBytes)
	if err != nil {
		return err
	}
	ttl, err := ms(req.GrantTTLMS, "grant_ttl_ms", fftype.MaxGrantTTL)
	if err != nil {
		return err
	}
	g, err := s.client.GrantNext(r.Context(), fftype.ClaimParams{WorkerID: r.PathValue("worker_id"),
		WorkerInstanceID: req.WorkerInstanceID, Lanes: req.Lanes, Capabilities: req.Capabilities}, ttl)
	if err != nil {
		return err
	}
	if g == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}
