// Package ffclient is the Go client of the FlowFabric HTTP API (package ffserver). Its
// create, claim, lease-holder, operator and read methods mirror flowfabric.Client's, with
// the same parameter and result types; events come through Events and WatchEvents rather
// than Subscribe, the dead letter's replay through ReplayMany, and the timer loop and
// durable consumers stay in the server. Errors come back as *fftype.Error with the
// server's kind, code and retryable flag, so errors.Is works across the wire.
//
// A *Client is a flowfabric.Backend: flowfabric.NewWorker runs a worker on it, on a machine
// other than the server's, with the same handlers, runtime and guarantees as in process.
// One difference: a JSON payload or result travels inside a JSON body, which keeps its
// value but not its whitespace, so a lease's payload comes compacted, and one this client
// creates or completes is stored compacted (see package ffserver).
package ffclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/fftype"
)

// Config tunes a Client.
type Config struct {
	// Token is sent as "Authorization: Bearer <token>" when set.
	Token string
	// HTTPClient makes the requests. Nil means a client with no overall timeout (claims
	// long-poll and event streams stay open); bound calls with their context or Timeout.
	// The Client uses a copy that follows no redirect: a redirect fails the call.
	HTTPClient *http.Client
	// Timeout bounds how long a call waits for the server's answer to begin: to connect,
	// send, and get the answer's headers; a claim that long-polls gets its wait on top.
	// The body is not bounded, so event streams stay open. A call that runs out of it fails
	// with a retryable unavailable error. 0 means no bound but the call's context.
	Timeout time.Duration
	// Clock is what [Client.Clock] returns: the time source of workers running on this
	// client. Nil means a clock that follows the server's engine clock (see
	// [Client.Clock]). Tests pass the fake clock their in-process server runs on.
	Clock fftype.Clock
}

// Client calls one FlowFabric server. It is safe for concurrent use.
type Client struct {
	base    string
	token   string
	http    *http.Client
	timeout time.Duration
	clock   fftype.Clock
}

// New returns a client for the server at baseURL, e.g. "http://127.0.0.1:8080".
func New(baseURL string, cfg *Config) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffclient: %q is not an http(s) URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		// Paths are appended to the base: a query or fragment would swallow them.
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffclient: the server URL must not carry a query, a fragment or credentials")
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), http: noRedirects(http.DefaultClient)}
	if cfg != nil {
		if t := cfg.Token; strings.TrimSpace(t) != t || strings.ContainsFunc(t, unicode.IsControl) {
			// It could not go in a header: every call would fail as if the server were down.
			return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffclient: the token has surrounding space or a control character")
		}
		c.token = cfg.Token
		if cfg.HTTPClient != nil {
			c.http = noRedirects(cfg.HTTPClient)
		}
		if cfg.Timeout < 0 {
			return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffclient: Timeout must not be negative")
		}
		c.timeout = cfg.Timeout
		c.clock = cfg.Clock
	}
	if c.clock == nil {
		c.clock = &serverClock{c: c}
	}
	return c, nil
}

// noRedirects returns a copy of hc that follows no redirect, whose answer is then an
// error like any other that is not a success. The API never redirects; followed, a
// redirect would resend a POST as a GET without its body, or have a path the server
// cleaned (of a dot segment) answered by another route, silently.
func noRedirects(hc *http.Client) *http.Client {
	cp := *hc
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

// BaseURL returns the server URL the client calls.
func (c *Client) BaseURL() string { return c.base }

// Ping checks that the server answers and that its store does (GET /readyz). It returns
// nil, or an error matching fftype.ErrUnavailable.
func (c *Client) Ping(ctx context.Context) error {
	return c.request(ctx, "GET", "/readyz", nil, nil)
}

// request sends one call and decodes a JSON answer into out (if not nil). Error answers
// become *fftype.Error; a server that cannot be reached is an unavailable error.
func (c *Client) request(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return decodeBody(resp, out)
}

// decodeBody decodes a JSON answer into out.
func decodeBody(resp *http.Response, out any) error {
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return &fftype.Error{Kind: fftype.KindUnavailable, Code: "bad_response", Message: "the server's answer is not the JSON expected", Retryable: true, Err: err}
	}
	return nil
}

// errNoAnswer is the cause of a call that ran out of Config.Timeout.
var errNoAnswer = errors.New("ffclient: the server's answer did not begin within the timeout")

// noAnswerWithin is the cause of a call whose answer did not begin within d.
func noAnswerWithin(d time.Duration) error { return fmt.Errorf("%w (%s)", errNoAnswer, d) }

// do sends req, whose body is in, bounded by the client's timeout until its answer begins
// (see Config.Timeout); the answer's body cancels the request's context once closed. A
// request that hands out leases is not bounded here: handingOutLeases times it, so as to
// read an answer that comes late.
func (c *Client) do(req *http.Request, in any) (*http.Response, error) {
	switch in.(type) {
	case ffserver.ClaimRequest, ffserver.GrantClaimRequest:
		return c.http.Do(req) // timed by handingOutLeases
	}
	if c.timeout == 0 {
		return c.http.Do(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(c.timeout, func() { cancel(errNoAnswer) })
	resp, err := c.http.Do(req.WithContext(ctx))
	if !timer.Stop() {
		if err == nil {
			_ = resp.Body.Close()
		}
		cancel(nil)
		return nil, noAnswerWithin(c.timeout)
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

// cancelOnClose is the body of an answer that cancels its request's context once closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c cancelOnClose) Close() error {
	defer c.cancel()
	return c.ReadCloser.Close()
}

// encodedJSON is a request body already encoded as JSON, which send sends as it is.
type encodedJSON []byte

// send performs a request, whose body is in encoded as JSON (nil for none), and turns any
// non-2xx answer into an error.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	switch in := in.(type) {
	case nil:
	case encodedJSON:
		body = bytes.NewReader(in)
	default:
		b, err := encodeRequest(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffclient: %v", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.do(req, in)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, unreachable(err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var eb ffserver.ErrorBody
	if json.Unmarshal(raw, &eb) != nil || eb.Code == "" || !fftype.Kind(eb.Kind).Known() {
		// Not the API's answer (a proxy's, say): unavailable whatever the status, never a
		// kind a caller could take for the execution's state. Worth a retry when the
		// status says it may pass.
		passing := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests ||
			resp.StatusCode == http.StatusRequestTimeout
		msg := "the server answered " + resp.Status
		if loc := resp.Header.Get("Location"); loc != "" {
			msg += ", a redirect to " + loc + " that the client does not follow"
		}
		return nil, &fftype.Error{Kind: fftype.KindUnavailable, Code: "http_" + strconv.Itoa(resp.StatusCode),
			Message: msg, Retryable: passing}
	}
	return nil, fromBody(&eb)
}

// millis is d in the API's unit, as fftype.Duration.Millis rounds it.
func millis(d time.Duration) int64 { return fftype.Duration(d).Millis() }

// unreachable is the error of a call that got no answer from the server, for cause.
func unreachable(cause error) error {
	return &fftype.Error{Kind: fftype.KindUnavailable, Code: fftype.CodeStoreUnavailable,
		Message: "the server cannot be reached", Retryable: true, Err: cause}
}

// execPath is the path of the route suffix of execution id ("" for the execution itself).
// A malformed id is refused here, before any request, with the validation error the engine
// gives in process: put in the path, "" or a dot segment would name another route. A valid
// id needs no escaping.
func execPath(id fftype.ExecutionID, suffix string) (string, error) {
	if _, err := fftype.ParseExecutionID(string(id)); err != nil {
		return "", err
	}
	return "/v1/executions/" + string(id) + suffix, nil
}

// onExecution sends a call to the route suffix of execution id (see execPath) and decodes
// its answer into out, as request does.
func (c *Client) onExecution(ctx context.Context, method string, id fftype.ExecutionID, suffix string, in, out any) error {
	path, err := execPath(id, suffix)
	if err != nil {
		return err
	}
	return c.request(ctx, method, path, in, out)
}

func toRequest(p fftype.CreateParams) (ffserver.CreateRequest, error) {
	r := ffserver.CreateRequest{ID: p.ID, Namespace: p.Namespace, Lane: p.Lane, Kind: p.Kind, Priority: p.Priority,
		RequiredCapabilities: p.Capabilities, Tags: p.Tags, Traceparent: p.Traceparent, Policy: p.Policy,
		IdempotencyKey: p.IdempotencyKey, DelayMS: millis(p.Delay.D()), RunAt: p.RunAt}
	var err error
	r.Payload, r.PayloadBase64, err = wirePayload("payload", p.Payload, p.Encoding)
	return r, err
}

// Create creates an execution (or finds the one its id or idempotency key names).
func (c *Client) Create(ctx context.Context, p fftype.CreateParams) (*fftype.CreateResult, error) {
	req, err := toRequest(p)
	if err != nil {
		return nil, err
	}
	var out fftype.CreateResult
	if err := c.request(ctx, "POST", "/v1/executions", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateMany creates many executions in as few requests as the server takes: 1,000 items
// each at most, in a body within the server's default limit
// ([ffserver.DefaultLargeBodyBytes]), items weighed whole, tags and all. An item heavier
// than that goes in a request of its own, so that if the server refuses it, it fails
// alone. One result per item, in order.
func (c *Client) CreateMany(ctx context.Context, ps []fftype.CreateParams) []fftype.BulkCreateResult {
	out := make([]fftype.BulkCreateResult, len(ps))
	var body bulkBody
	for i, p := range ps {
		item, err := encodeItem(p)
		if err != nil {
			out[i].Err = err
			continue
		}
		if !body.fits(item) {
			c.createBulk(ctx, &body, out)
		}
		body.add(i, item)
	}
	c.createBulk(ctx, &body, out)
	return out
}

// A bulk create is sent in requests of at most maxBulkItems items whose body weighs at
// most maxBulkBody bytes, the server's default limit.
const (
	maxBulkItems = 1000
	maxBulkBody  = ffserver.DefaultLargeBodyBytes
)

// The frame of a bulk create's body (a BulkCreateRequest) around its items.
const (
	bulkOpen  = `{"executions":[`
	bulkClose = `]}`
)

// bulkBody is the body of a bulk create being filled: its items, each encoded once, and
// the index among the caller's items of each.
type bulkBody struct {
	buf   bytes.Buffer
	items []int
}

// fits reports whether item may join the body: an empty body takes any item.
func (b *bulkBody) fits(item []byte) bool {
	return len(b.items) == 0 ||
		len(b.items) < maxBulkItems && b.buf.Len()+len(",")+len(item)+len(bulkClose) <= maxBulkBody
}

// add appends item, the caller's item i.
func (b *bulkBody) add(i int, item []byte) {
	if len(b.items) == 0 {
		b.buf.WriteString(bulkOpen)
	} else {
		b.buf.WriteByte(',')
	}
	b.buf.Write(item)
	b.items = append(b.items, i)
}

// encodeItem returns p as an item of a bulk create's body.
func encodeItem(p fftype.CreateParams) ([]byte, error) {
	r, err := toRequest(p)
	if err != nil {
		return nil, err
	}
	b, err := encodeRequest(r)
	if err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b, []byte("\n")), nil
}

// encodeRequest encodes v, a request body, as JSON. It refuses a string that is not valid
// UTF-8 (as the engine does an idempotency key, a tag value, a reason or a category):
// encoding/json would send it changed, each bad byte replaced by U+FFFD, so that the server
// would store other text, or take two keys for one.
func encodeRequest(v any) ([]byte, error) {
	if at, ok := invalidUTF8(reflect.ValueOf(v), "request"); !ok {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffclient: %s is not valid UTF-8", at)
	}
	var b bytes.Buffer
	if err := ffserver.NewJSONEncoder(&b).Encode(v); err != nil {
		return nil, fftype.Validationf(fftype.CodeInvalidInput, "ffclient: encoding the request: %v", err)
	}
	return b.Bytes(), nil
}

// invalidUTF8 looks through v, found at the place named at, for a string (or map key) that
// is not valid UTF-8; it returns where the first one is and false, or "" and true.
// Byte slices (binary payloads, raw JSON) are not strings and are left alone.
func invalidUTF8(v reflect.Value, at string) (string, bool) {
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return at, false
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return invalidUTF8(v.Elem(), at)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() {
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				if name == "" {
					name = f.Name
				}
				if w, ok := invalidUTF8(v.Field(i), at+"."+name); !ok {
					return w, false
				}
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			break
		}
		for i := range v.Len() {
			if w, ok := invalidUTF8(v.Index(i), fmt.Sprintf("%s[%d]", at, i)); !ok {
				return w, false
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if k := it.Key(); k.Kind() == reflect.String && !utf8.ValidString(k.String()) {
				return at + " (a key)", false
			}
			if w, ok := invalidUTF8(it.Value(), fmt.Sprintf("%s[%q]", at, it.Key())); !ok {
				return w, false
			}
		}
	}
	return "", true
}

// createBulk sends body, if it holds any item, sets the results of its items in out, and
// empties it.
func (c *Client) createBulk(ctx context.Context, body *bulkBody, out []fftype.BulkCreateResult) {
	if len(body.items) == 0 {
		return
	}
	body.buf.WriteString(bulkClose)
	var resp ffserver.BulkCreateResponse
	err := c.request(ctx, "POST", "/v1/executions/bulk", encodedJSON(body.buf.Bytes()), &resp)
	for j, i := range body.items {
		switch {
		case err != nil:
			out[i].Err = err
		case j >= len(resp.Results):
			out[i].Err = fewerResults()
		case resp.Results[j].Error != nil:
			out[i].Err = fromBody(resp.Results[j].Error)
		default:
			out[i].Result = resp.Results[j].Result
		}
	}
	*body = bulkBody{}
}

// fromBody is the error an error body of the API states: one item's of a bulk call, or an
// event stream's. A kind the client does not know (an older server's "internal", a newer
// server's new kind) is unavailable, as send takes a whole answer with one: never a kind
// a caller could take for the execution's state.
func fromBody(e *ffserver.ErrorBody) error {
	kind := fftype.Kind(e.Kind)
	if !kind.Known() {
		kind = fftype.KindUnavailable
	}
	return &fftype.Error{Kind: kind, Code: e.Code, Message: e.Error, Retryable: e.Retryable}
}

// Claim claims leases for a worker; nothing eligible is an empty slice.
func (c *Client) Claim(ctx context.Context, p fftype.ClaimParams) ([]*fftype.Lease, error) {
	return c.ClaimWait(ctx, p, 0)
}

// claimGrace is how long a claim whose caller gave up (its ctx ended, or the answer did
// not begin within Config.Timeout) still waits for the server's answer. The server gives
// back the leases of an answer it cannot deliver, but one it already sent would be lost
// until the leases expire; read within the grace, its leases are given back at once.
const claimGrace = 250 * time.Millisecond

// ClaimWait claims like Claim but, with nothing eligible, lets the server wait up to wait
// for work to arrive; a wait longer than the server takes ([ffserver.MaxClaimWait], 30s)
// is capped to it. If ctx ends while the claim is under way, ClaimWait
// returns ctx's error, and if the answer does not begin within Config.Timeout plus the
// wait, a retryable unavailable error; either way it releases whatever leases the
// server's answer still brings.
func (c *Client) ClaimWait(ctx context.Context, p fftype.ClaimParams, wait time.Duration) ([]*fftype.Lease, error) {
	wait = min(wait, ffserver.MaxClaimWait)
	req := ffserver.ClaimRequest{WorkerID: p.WorkerID, WorkerInstanceID: p.WorkerInstanceID, Lanes: p.Lanes,
		Capabilities: p.Capabilities, Count: p.Count, LeaseTTLMS: millis(p.LeaseTTL.D()), WaitMS: millis(wait)}
	var resp ffserver.ClaimResponse
	leases, err := c.handingOutLeases(ctx, wait, func(ctx context.Context, answerBegan func()) ([]ffserver.LeaseView, error) {
		err := c.leaseRequest(ctx, "/v1/claim", req, &resp, answerBegan)
		return resp.Leases, err
	})
	if err != nil {
		return nil, err
	}
	out := make([]*fftype.Lease, len(leases))
	for i := range leases {
		l, err := fromLeaseView(&leases[i])
		if err != nil {
			return nil, err
		}
		out[i] = l
	}
	return out, nil
}

// handingOutLeases makes call, a request whose answer hands out leases (a claim, the claim
// of a grant), so that no lease is lost to a caller that stopped waiting for the answer:
// when ctx ends, or the answer does not begin within Config.Timeout plus extra (the
// server's wait), call still has claimGrace to read the answer, whose leases are then
// released, and handingOutLeases returns ctx's error or a retryable unavailable one. call
// must call answerBegan once the answer begins.
func (c *Client) handingOutLeases(ctx context.Context, extra time.Duration, call func(ctx context.Context, answerBegan func()) ([]ffserver.LeaseView, error)) ([]ffserver.LeaseView, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	gaveUp, giveUp := context.WithCancelCause(ctx)
	defer giveUp(nil)
	answerBegan := func() {}
	if c.timeout > 0 {
		d := c.timeout + extra
		timer := time.AfterFunc(d, func() { giveUp(noAnswerWithin(d)) })
		answerBegan = func() { timer.Stop() }
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(gaveUp, func() { time.AfterFunc(claimGrace, cancel) })
	defer stop()
	leases, err := call(rctx, answerBegan)
	if gaveUp.Err() != nil {
		c.giveBack(ctx, leases)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, unreachable(context.Cause(gaveUp))
	}
	return leases, err
}

// leaseRequest sends a request that hands out leases and decodes its answer into out,
// calling answerBegan once the answer begins.
func (c *Client) leaseRequest(ctx context.Context, path string, req, out any, answerBegan func()) error {
	resp, err := c.send(ctx, "POST", path, req)
	answerBegan()
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeBody(resp, out)
}

// giveBack releases leases a caller will not use, without ctx's cancellation and within
// a bound. A release that fails leaves that lease to expire.
func (c *Client) giveBack(ctx context.Context, leases []ffserver.LeaseView) {
	if len(leases) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, l := range leases {
		_ = c.Release(rctx, l.ExecutionID, l.Fence)
	}
}

func fromLeaseView(v *ffserver.LeaseView) (*fftype.Lease, error) {
	l := v.Lease
	b, _, err := ffserver.DecodePayload("payload", v.Payload, v.PayloadBase64)
	if err != nil {
		return nil, err
	}
	l.Payload = b
	return &l, nil
}

// IssueGrant reserves an execution for one worker.
func (c *Client) IssueGrant(ctx context.Context, id fftype.ExecutionID, kind fftype.GrantKind, p fftype.GrantParams) (*fftype.GrantRef, error) {
	var out fftype.GrantRef
	err := c.onExecution(ctx, "POST", id, "/grants", ffserver.GrantRequest{Kind: kind, WorkerID: p.WorkerID,
		Capabilities: p.Capabilities, TTLMS: millis(p.TTL.D())}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ClaimGrant consumes a grant. If ctx ends, or the answer does not begin within
// Config.Timeout, while the claim is under way, the lease the answer still brings is
// released (the grant is spent; the execution is claimable by anyone at once).
func (c *Client) ClaimGrant(ctx context.Context, p fftype.GrantClaimParams) (*fftype.Lease, error) {
	req := ffserver.GrantClaimRequest{Grant: p.Grant, WorkerID: p.WorkerID, WorkerInstanceID: p.WorkerInstanceID,
		LeaseTTLMS: millis(p.LeaseTTL.D())}
	var v ffserver.LeaseView
	leases, err := c.handingOutLeases(ctx, 0, func(ctx context.Context, answerBegan func()) ([]ffserver.LeaseView, error) {
		if err := c.leaseRequest(ctx, "/v1/grants/claim", req, &v, answerBegan); err != nil {
			return nil, err
		}
		return []ffserver.LeaseView{v}, nil
	})
	if err != nil {
		return nil, err
	}
	return fromLeaseView(&leases[0])
}

// Renew extends a lease and returns the new expiry.
func (c *Client) Renew(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, ttl time.Duration) (time.Time, error) {
	var out ffserver.RenewResponse
	err := c.onExecution(ctx, "POST", id, "/renew", ffserver.RenewRequest{Fence: f, LeaseTTLMS: millis(ttl)}, &out)
	return out.ExpiresAt, err
}

// Progress reports the running attempt's progress.
func (c *Client) Progress(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, percent int, message string) error {
	return c.onExecution(ctx, "POST", id, "/progress", ffserver.ProgressRequest{Fence: f, Percent: percent, Message: message}, nil)
}

// Complete completes an execution with result. As in process, a result that is not valid
// JSON under the JSON encoding ("" or fftype.EncodingJSON) is refused with a validation
// error, before any request; send raw bytes with fftype.EncodingBinary.
func (c *Client) Complete(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, result []byte, enc fftype.PayloadEncoding) error {
	req := ffserver.CompleteRequest{Fence: f}
	var err error
	if req.Result, req.ResultBase64, err = wirePayload("result", result, enc); err != nil {
		return err
	}
	return c.onExecution(ctx, "POST", id, "/complete", req, nil)
}

// wirePayload gives bytes their wire form: JSON as it is, or base64 for the binary
// encoding. Bytes that are not JSON under the JSON encoding are refused before any
// request, as the engine refuses them in process.
func wirePayload(field string, b []byte, enc fftype.PayloadEncoding) (json.RawMessage, string, error) {
	if _, err := fftype.CheckPayload(field, b, enc); err != nil {
		return nil, "", err
	}
	raw, b64 := ffserver.EncodePayload(b, enc)
	return raw, b64, nil
}

// Fail fails the current attempt.
func (c *Client) Fail(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, p fftype.FailParams) (fftype.FailOutcome, error) {
	var out fftype.FailOutcome
	err := c.onExecution(ctx, "POST", id, "/fail", ffserver.FailRequest{Fence: f, Reason: p.Reason, Category: p.Category, NoRetry: p.NoRetry}, &out)
	return out, err
}

// Cancel cancels an execution, as its lease holder when p.Fence is set.
func (c *Client) Cancel(ctx context.Context, id fftype.ExecutionID, p fftype.CancelParams) error {
	return c.onExecution(ctx, "POST", id, "/cancel", ffserver.CancelRequest{Reason: p.Reason, Fence: p.Fence}, nil)
}

// Delay pauses the running attempt for d.
func (c *Client) Delay(ctx context.Context, id fftype.ExecutionID, f fftype.Fence, d time.Duration) error {
	return c.onExecution(ctx, "POST", id, "/delay", ffserver.DelayRequest{Fence: f, DelayMS: millis(d)}, nil)
}

// Release gives a lease back.
func (c *Client) Release(ctx context.Context, id fftype.ExecutionID, f fftype.Fence) error {
	return c.onExecution(ctx, "POST", id, "/release", ffserver.FenceRequest{Fence: f}, nil)
}

// Revoke takes a lease away from its holder.
func (c *Client) Revoke(ctx context.Context, id fftype.ExecutionID, reason string) error {
	return c.onExecution(ctx, "POST", id, "/revoke-lease", ffserver.ReasonRequest{Reason: reason}, nil)
}

// ChangePriority sets an execution's priority.
func (c *Client) ChangePriority(ctx context.Context, id fftype.ExecutionID, priority int) error {
	return c.onExecution(ctx, "PUT", id, "/priority", ffserver.PriorityRequest{Priority: priority}, nil)
}

// SetTags merges tags into an execution's tags.
func (c *Client) SetTags(ctx context.Context, id fftype.ExecutionID, tags map[string]string) error {
	return c.onExecution(ctx, "POST", id, "/tags", ffserver.TagsRequest{Tags: tags}, nil)
}

// Replay replays a finished execution.
func (c *Client) Replay(ctx context.Context, id fftype.ExecutionID) error {
	return c.onExecution(ctx, "POST", id, "/replay", nil, nil)
}

// ReplayMany replays many failed executions; one error (or nil) per id. It sends them in
// requests of at most a thousand, the most the server takes in one.
func (c *Client) ReplayMany(ctx context.Context, ids []fftype.ExecutionID) ([]error, error) {
	out := make([]error, len(ids))
	// A malformed id gets its error here, as in process, and is not sent: it could not be
	// encoded intact (an id that is not UTF-8), and it must not fail the others.
	var send []fftype.ExecutionID
	var at []int // where each id sent is among ids
	for i, id := range ids {
		if _, err := fftype.ParseExecutionID(string(id)); err != nil {
			out[i] = err
			continue
		}
		send, at = append(send, id), append(at, i)
	}
	for start := 0; start < len(send); start += maxReplayIDs {
		chunk := send[start:min(start+maxReplayIDs, len(send))]
		var resp ffserver.ReplayManyResponse
		if err := c.request(ctx, "POST", "/v1/dead-letter/replay", ffserver.ReplayManyRequest{IDs: chunk}, &resp); err != nil {
			return nil, err
		}
		for j := range chunk {
			switch i := at[start+j]; {
			case j >= len(resp.Results):
				out[i] = fewerResults()
			case resp.Results[j].Error != nil:
				out[i] = fromBody(resp.Results[j].Error)
			}
		}
	}
	return out, nil
}

// fewerResults is the error of an item of a bulk call the server's answer left out (a new
// one each time: an *fftype.Error may be changed by whoever gets it).
func fewerResults() error {
	return &fftype.Error{Kind: fftype.KindUnavailable, Code: "bad_response", Message: "the server answered fewer results than items"}
}

// maxReplayIDs is how many ids the server takes in one dead-letter replay.
const maxReplayIDs = 1000

// PauseLane pauses a lane.
func (c *Client) PauseLane(ctx context.Context, lane string) error {
	path, err := lanePath(lane, "/pause")
	if err != nil {
		return err
	}
	return c.request(ctx, "POST", path, nil, nil)
}

// ResumeLane resumes a lane.
func (c *Client) ResumeLane(ctx context.Context, lane string) error {
	path, err := lanePath(lane, "/resume")
	if err != nil {
		return err
	}
	return c.request(ctx, "POST", path, nil, nil)
}

// Lane returns a lane's state.
func (c *Client) Lane(ctx context.Context, lane string) (fftype.LaneInfo, error) {
	var out fftype.LaneInfo
	path, err := lanePath(lane, "")
	if err != nil {
		return out, err
	}
	err = c.request(ctx, "GET", path, nil, &out)
	return out, err
}

// Get describes an execution.
func (c *Client) Get(ctx context.Context, id fftype.ExecutionID) (*fftype.Execution, error) {
	var out fftype.Execution
	if err := c.onExecution(ctx, "GET", id, "", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func listQuery(p fftype.ListParams) string {
	q := url.Values{}
	for k, v := range map[string]string{"namespace": p.Namespace, "lane": p.Lane, "state": string(p.State), "kind": p.Kind, "cursor": p.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// List returns a page of executions.
func (c *Client) List(ctx context.Context, p fftype.ListParams) (*fftype.ListPage, error) {
	var out fftype.ListPage
	if err := c.request(ctx, "GET", "/v1/executions"+listQuery(p), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeadLetter returns a page of failed executions (p.State is ignored).
func (c *Client) DeadLetter(ctx context.Context, p fftype.ListParams) (*fftype.ListPage, error) {
	p.State = ""
	var out fftype.ListPage
	if err := c.request(ctx, "GET", "/v1/dead-letter"+listQuery(p), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Attempts returns an execution's attempts.
func (c *Client) Attempts(ctx context.Context, id fftype.ExecutionID) ([]*fftype.Attempt, error) {
	var out ffserver.AttemptsResponse
	err := c.onExecution(ctx, "GET", id, "/attempts", nil, &out)
	return out.Attempts, err
}

// Result returns a completed execution's result bytes: nil if it completed with none, the
// bytes "null" if with the JSON value null.
func (c *Client) Result(ctx context.Context, id fftype.ExecutionID) ([]byte, error) {
	b, _, err := c.ResultWithEncoding(ctx, id)
	return b, err
}

// ResultWithEncoding is [Client.Result] with the result's encoding: binary for a result
// completed as binary, JSON otherwise.
func (c *Client) ResultWithEncoding(ctx context.Context, id fftype.ExecutionID) ([]byte, fftype.PayloadEncoding, error) {
	return c.raw(ctx, id, "/result")
}

// Payload returns an execution's input payload bytes: nil if it was created with none,
// the bytes "null" if with the JSON value null.
func (c *Client) Payload(ctx context.Context, id fftype.ExecutionID) ([]byte, error) {
	b, _, err := c.raw(ctx, id, "/payload")
	return b, err
}

// raw gets the stored bytes of the route suffix of execution id, and their encoding, which
// the server answers as the content type; no content (204) is no bytes.
func (c *Client) raw(ctx context.Context, id fftype.ExecutionID, suffix string) ([]byte, fftype.PayloadEncoding, error) {
	path, err := execPath(id, suffix)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.send(ctx, "GET", path, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, fftype.EncodingJSON, nil // none were given; a JSON null comes as null
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", &fftype.Error{Kind: fftype.KindUnavailable, Code: "bad_response", Message: "reading the answer failed", Retryable: true, Err: err}
	}
	if resp.Header.Get("Content-Type") == "application/octet-stream" {
		return b, fftype.EncodingBinary, nil
	}
	return b, fftype.EncodingJSON, nil
}

// Events follows the server's event log from cursor — flowfabric.CursorStart for the
// oldest event kept, flowfabric.CursorEnd for new events only, or a delivery's cursor —
// and calls fn for each delivery until ctx ends, fn returns an error, or the server ends
// the stream (an expired cursor comes back as an error matching fftype.ErrCursorExpired).
func (c *Client) Events(ctx context.Context, f fftype.EventFilter, cursor string, fn func(fftype.Delivery) error) error {
	if cursor == flowfabric.CursorStart {
		cursor = "start" // the API's name for it; no cursor there means the end
	}
	resp, err := c.send(ctx, "GET", eventsPath(f, cursor), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	err = readEvents(resp.Body, fn)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// eventsPath is the URL of the event stream for f from cursor.
func eventsPath(f fftype.EventFilter, cursor string) string {
	q := url.Values{}
	for k, v := range map[string]string{"namespace": f.Namespace, "lane": f.Lane, "execution_id": string(f.ExecutionID), "flow_id": f.FlowID, "cursor": cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if len(f.Types) > 0 {
		ts := make([]string, len(f.Types))
		for i, t := range f.Types {
			ts[i] = string(t)
		}
		q.Set("types", strings.Join(ts, ","))
	}
	return "/v1/events?" + q.Encode()
}

// readEvents parses a server-sent event stream and calls fn for each delivery, until the
// stream ends (nil), fn fails, the server sends an error event, or reading fails. A block
// without data (the position a stream opens with, a keep-alive comment) delivers nothing.
func readEvents(body io.Reader, fn func(fftype.Delivery) error) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var d fftype.Delivery
	var event string
	var hasData bool
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			d.Cursor = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			if event == "error" {
				var eb ffserver.ErrorBody
				if err := json.Unmarshal(data, &eb); err != nil {
					return &fftype.Error{Kind: fftype.KindUnavailable, Code: "bad_response", Message: "an unreadable error event", Err: err}
				}
				return fromBody(&eb)
			}
			if err := json.Unmarshal(data, &d.Event); err != nil {
				return &fftype.Error{Kind: fftype.KindUnavailable, Code: "bad_response", Message: "an unreadable event", Err: err}
			}
			hasData = true
		case line == "":
			if hasData {
				if err := fn(d); err != nil {
					return err
				}
			}
			d, event, hasData = fftype.Delivery{}, "", false
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return &fftype.Error{Kind: fftype.KindUnavailable, Code: "stream_broken", Message: "the event stream broke", Retryable: true, Err: err}
	}
	return nil
}
