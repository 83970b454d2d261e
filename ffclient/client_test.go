package ffclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffclient"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T, token string) (*ffclient.Client, *flowfabric.Client) {
	t.Helper()
	local, err := flowfabric.NewClient(ffmem.New(nil), nil)
	require.NoError(t, err)
	srv, err := ffserver.New(local, ffserver.Config{Token: token})
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c, err := ffclient.New(hs.URL, &ffclient.Config{Token: token})
	require.NoError(t, err)
	return c, local
}

func TestClientWorkerRoundTrip(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "tok")
	ctx := t.Context()
	res, err := c.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Payload: []byte(`{"n":1}`), IdempotencyKey: "x"})
	require.NoError(t, err)
	again, err := c.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", IdempotencyKey: "x"})
	require.NoError(t, err)
	require.True(t, again.Duplicate)

	leases, err := c.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	l := leases[0]
	require.Equal(t, res.ID, l.ExecutionID)
	require.JSONEq(t, `{"n":1}`, string(l.Payload))
	_, err = c.Renew(ctx, l.ExecutionID, l.Fence, 0)
	require.NoError(t, err)
	require.NoError(t, c.Progress(ctx, l.ExecutionID, l.Fence, 10, "go"))
	bad := l.Fence
	bad.Epoch = 42
	err = c.Complete(ctx, l.ExecutionID, bad, nil, "")
	require.ErrorIs(t, err, fftype.ErrStaleLease, "typed errors survive the wire")
	require.NoError(t, c.Complete(ctx, l.ExecutionID, l.Fence, []byte{0, 1, 2}, fftype.EncodingBinary))
	got, err := c.Result(ctx, l.ExecutionID)
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2}, got)
	got, enc, err := c.ResultWithEncoding(ctx, l.ExecutionID)
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2}, got)
	require.Equal(t, fftype.EncodingBinary, enc)
	x, err := c.Get(ctx, l.ExecutionID)
	require.NoError(t, err)
	require.Equal(t, fftype.StateCompleted, x.PublicState())
	atts, err := c.Attempts(ctx, l.ExecutionID)
	require.NoError(t, err)
	require.Len(t, atts, 1)

	_, err = c.Get(ctx, fftype.NewExecutionID(0))
	require.ErrorIs(t, err, fftype.ErrNotFound)
	noauth, err := ffclient.New(c.BaseURL(), nil)
	require.NoError(t, err)
	_, err = noauth.List(ctx, fftype.ListParams{})
	require.ErrorIs(t, err, fftype.ErrUnauthenticated)
	require.NoError(t, noauth.Ping(ctx), "readiness needs no token")
	gone, err := ffclient.New("http://127.0.0.1:1", nil)
	require.NoError(t, err)
	require.ErrorIs(t, gone.Ping(ctx), fftype.ErrUnavailable, "a server that does not answer is unavailable")
}

func TestClientOperatorCalls(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "")
	ctx := t.Context()
	results := c.CreateMany(ctx, []fftype.CreateParams{{Lane: "l", Kind: "k"}, {Lane: "", Kind: "k"}, {Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{}}}})
	require.NoError(t, results[0].Err)
	require.ErrorIs(t, results[1].Err, fftype.ErrValidation)
	id := results[0].Result.ID
	require.NoError(t, c.SetTags(ctx, id, map[string]string{"a": "b"}))
	require.NoError(t, c.ChangePriority(ctx, id, 7))
	require.NoError(t, c.PauseLane(ctx, "l"))
	info, err := c.Lane(ctx, "l")
	require.NoError(t, err)
	require.True(t, info.Paused)
	require.NoError(t, c.ResumeLane(ctx, "l"))
	g, err := c.IssueGrant(ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w"})
	require.NoError(t, err)
	l, err := c.ClaimGrant(ctx, fftype.GrantClaimParams{Grant: *g, WorkerID: "w", WorkerInstanceID: "w1"})
	require.NoError(t, err)
	require.NoError(t, c.Delay(ctx, id, l.Fence, time.Hour))
	require.NoError(t, c.Cancel(ctx, id, fftype.CancelParams{Reason: "done"}))

	other := results[2].Result.ID
	leases, err := c.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	out, err := c.Fail(ctx, other, leases[0].Fence, fftype.FailParams{Reason: "x"})
	require.NoError(t, err)
	require.False(t, out.RetryScheduled)
	page, err := c.DeadLetter(ctx, fftype.ListParams{Lane: "l"})
	require.NoError(t, err)
	require.Len(t, page.Executions, 1)
	errs, err := c.ReplayMany(ctx, []fftype.ExecutionID{other})
	require.NoError(t, err)
	require.NoError(t, errs[0])
	leases, err = c.ClaimWait(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}}, time.Second)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	require.NoError(t, c.Release(ctx, other, leases[0].Fence))
	require.ErrorIs(t, c.Revoke(ctx, other, "x"), fftype.ErrState, "no lease to revoke")
	require.ErrorIs(t, c.Replay(ctx, other), fftype.ErrState, "not finished")
}

func TestClientEvents(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, err := c.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	var got []fftype.Delivery
	err = c.Events(ctx, fftype.EventFilter{ExecutionID: res.ID}, "start", func(d fftype.Delivery) error {
		got = append(got, d)
		return errStop
	})
	require.ErrorIs(t, err, errStop)
	require.Len(t, got, 1)
	require.Equal(t, fftype.EventCreated, got[0].Event.Type)
	require.NotEmpty(t, got[0].Cursor)

	_, err = ffclient.New("ftp://x", nil)
	require.Error(t, err)
	unreachable, err := ffclient.New("http://127.0.0.1:1", nil)
	require.NoError(t, err)
	_, err = unreachable.Get(ctx, res.ID)
	require.ErrorIs(t, err, fftype.ErrUnavailable)
}

var errStop = errors.New("stop")

func TestClientRefusesNonJSONPayloadsLikeTheEngine(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ctx := t.Context()
	_, err := c.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Payload: []byte("{nope")})
	require.ErrorIs(t, err, fftype.ErrValidation)
	results := c.CreateMany(ctx, []fftype.CreateParams{{Lane: "l", Kind: "k", Payload: []byte("{nope")}, {Lane: "l", Kind: "k"},
		{Lane: "l", Kind: "k", Payload: []byte{0xff}, Encoding: fftype.EncodingBinary}})
	require.ErrorIs(t, results[0].Err, fftype.ErrValidation)
	require.NoError(t, results[1].Err)
	require.NoError(t, results[2].Err)
	page, err := local.List(ctx, fftype.ListParams{})
	require.NoError(t, err)
	require.Len(t, page.Executions, 2, "the refused item was never sent")
}

// lateClaims serves an in-memory engine whose claims answer late: the server produces a
// claim's answer at once (so it will not give the leases back itself), signals answered,
// and writes the answer after delay. It returns the engine's client and the server's URL.
func lateClaims(t *testing.T, delay time.Duration) (local *flowfabric.Client, url string, answered <-chan struct{}) {
	t.Helper()
	local, err := flowfabric.NewClient(ffmem.New(nil), nil)
	require.NoError(t, err)
	srv, err := ffserver.New(local, ffserver.Config{})
	require.NoError(t, err)
	produced := make(chan struct{}, 10)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/claim" && r.URL.Path != "/v1/grants/claim" {
			srv.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		produced <- struct{}{}
		time.Sleep(delay)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(hs.Close)
	return local, hs.URL, produced
}

// TestClaimAnswerAfterTheCallerGaveUp: the server has produced a claim's answer when the
// worker gives up, before the answer arrives. The client still reads it within its grace
// and releases the leases, so the execution is claimable at once rather than after its
// 10-minute lease.
func TestClaimAnswerAfterTheCallerGaveUp(t *testing.T) {
	t.Parallel()
	local, url, answered := lateClaims(t, 50*time.Millisecond) // the worker gives up meanwhile
	c, err := ffclient.New(url, nil)
	require.NoError(t, err)

	ctx := t.Context()
	res, err := local.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	claimCtx, cancel := context.WithCancel(ctx)
	go func() {
		<-answered
		cancel()
	}()
	p := fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}, LeaseTTL: fftype.Duration(10 * time.Minute)}
	leases, err := c.Claim(claimCtx, p)
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, leases)

	requireGivenBack(t, local, res.ID)
}

// TestClaimAnswerAfterTheTimeout: the same for a claim whose answer begins just after
// Config.Timeout ran out. The claim fails, retryable, so its caller never sees the leases
// the answer brings: the client reads it within the same grace and gives them back.
func TestClaimAnswerAfterTheTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	local, url, _ := lateClaims(t, timeout+50*time.Millisecond) // on its way as the timeout passes
	c, err := ffclient.New(url, &ffclient.Config{Timeout: timeout})
	require.NoError(t, err)

	ctx := t.Context()
	res, err := local.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	p := fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}, LeaseTTL: fftype.Duration(10 * time.Minute)}
	leases, err := c.Claim(ctx, p)
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.True(t, fftype.IsRetryable(err))
	require.ErrorContains(t, err, "did not begin within the timeout (100ms)")
	require.Empty(t, leases)

	requireGivenBack(t, local, res.ID)
}

// TestGrantClaimAnswerAfterTheTimeout: the claim of a grant hands out a lease as a claim
// does, and gives it back the same way when its answer comes too late.
func TestGrantClaimAnswerAfterTheTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	local, url, _ := lateClaims(t, timeout+50*time.Millisecond)
	c, err := ffclient.New(url, &ffclient.Config{Timeout: timeout})
	require.NoError(t, err)

	ctx := t.Context()
	res, err := local.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	grant, err := local.IssueGrant(ctx, res.ID, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w"})
	require.NoError(t, err)
	lease, err := c.ClaimGrant(ctx, fftype.GrantClaimParams{Grant: *grant, WorkerID: "w", WorkerInstanceID: "w1",
		LeaseTTL: fftype.Duration(10 * time.Minute)})
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.True(t, fftype.IsRetryable(err))
	require.Nil(t, lease)

	requireGivenBack(t, local, res.ID)
}

// TestClaimWaitOverTheServersMaximum: a wait longer than the server takes is capped to
// its maximum (ffserver.MaxClaimWait), as ClaimWait documents, not refused.
func TestClaimWaitOverTheServersMaximum(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ctx := t.Context()
	_, err := local.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	leases, err := c.ClaimWait(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}}, time.Minute)
	require.NoError(t, err, "work is eligible: the wait is not even used")
	require.Len(t, leases, 1)
}

// TestDurationsFinerThanAMillisecond: the API takes durations in whole milliseconds. The
// client rounds a finer one away from zero, so that the server refuses what the engine
// refuses in process, rather than reading a non-zero duration as 0 (the default, or no
// delay) or one past a limit as the limit.
func TestDurationsFinerThanAMillisecond(t *testing.T) {
	t.Parallel()
	const sub = 500 * time.Microsecond
	for _, remote := range []bool{false, true} {
		t.Run(map[bool]string{false: "InProcess", true: "HTTP"}[remote], func(t *testing.T) {
			t.Parallel()
			c, local := setup(t, "")
			var b interface {
				flowfabric.Backend
				Create(ctx context.Context, p fftype.CreateParams) (*fftype.CreateResult, error)
			} = local
			if remote {
				b = c
			}
			ctx := t.Context()
			_, err := b.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Delay: fftype.Duration(-sub)})
			require.ErrorIs(t, err, fftype.ErrValidation, "a create's negative delay")
			_, err = b.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{LeaseTTL: fftype.Duration(sub)}})
			require.ErrorIs(t, err, fftype.ErrValidation, "a policy's 500µs lease TTL")
			_, err = b.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
			require.NoError(t, err)
			p := fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}, LeaseTTL: fftype.Duration(sub)}
			_, err = b.Claim(ctx, p)
			require.ErrorIs(t, err, fftype.ErrValidation, "a claim's 500µs lease TTL")
			p.LeaseTTL = 0
			leases, err := b.Claim(ctx, p)
			require.NoError(t, err)
			require.Len(t, leases, 1)
			l := leases[0]
			_, err = b.Renew(ctx, l.ExecutionID, l.Fence, sub)
			require.ErrorIs(t, err, fftype.ErrValidation, "a renewal's 500µs lease TTL")
			err = b.Delay(ctx, l.ExecutionID, l.Fence, -sub)
			require.ErrorIs(t, err, fftype.ErrValidation, "a negative delay")
			err = b.Delay(ctx, l.ExecutionID, l.Fence, fftype.MaxDelay+sub)
			require.ErrorIs(t, err, fftype.ErrValidation, "a delay past the limit")
		})
	}
}

// TestAnswersNotFromTheAPI: an answer that is not the API's (a proxy's page) is
// unavailable whatever its status, so that no caller takes it for the execution's state,
// and retryable when its status says it may pass.
func TestAnswersNotFromTheAPI(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status    int
		retryable bool
	}{
		{http.StatusNotFound, false},
		{http.StatusForbidden, false},
		{http.StatusRequestTimeout, true},
		{http.StatusTooManyRequests, true},
		{http.StatusBadGateway, true},
	} {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "a proxy's page", tc.status)
		}))
		c, err := ffclient.New(hs.URL, nil)
		require.NoError(t, err)
		_, err = c.Get(t.Context(), "s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b")
		hs.Close()
		require.ErrorIs(t, err, fftype.ErrUnavailable, "%d", tc.status)
		require.Equal(t, tc.retryable, fftype.IsRetryable(err), "%d", tc.status)
	}
}

// TestNewRefusesWhatWouldBreakEveryCall: a server URL with a query (every path would go
// into it) and a token that cannot be a header value (every call would fail as if the
// server were down) are refused up front.
func TestNewRefusesWhatWouldBreakEveryCall(t *testing.T) {
	t.Parallel()
	for _, bad := range []struct{ url, token string }{
		{"http://127.0.0.1:1/?region=eu", ""},
		{"http://127.0.0.1:1/#x", ""},
		{"http://u:p@127.0.0.1:1", ""},
		{"http://127.0.0.1:1", "tok\n"},
		{"http://127.0.0.1:1", " tok"},
	} {
		_, err := ffclient.New(bad.url, &ffclient.Config{Token: bad.token})
		require.ErrorIs(t, err, fftype.ErrValidation, "%q %q", bad.url, bad.token)
	}
}

// TestJSONErrorThatIsNotTheAPIs: a gateway's JSON error with a code but no kind the API
// knows is unavailable and, for a 503, worth a retry.
func TestJSONErrorThatIsNotTheAPIs(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"no healthy upstream","code":"upstream_unavailable"}`))
	}))
	defer hs.Close()
	c, err := ffclient.New(hs.URL, nil)
	require.NoError(t, err)
	_, err = c.Get(t.Context(), "s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b")
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.True(t, fftype.IsRetryable(err))
}

// TestMalformedIDsAreRefusedAsInProcess: an execution id that is not one is refused by
// every call that puts it in a path, before any request, with the validation error the
// engine gives in process; as it is in a path, "" or a dot segment would name another
// route ("." the listing, which answered an empty execution).
func TestMalformedIDsAreRefusedAsInProcess(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ctx := t.Context()
	var f fftype.Fence
	calls := map[string]func(id fftype.ExecutionID) error{
		"Get":      func(id fftype.ExecutionID) error { _, err := c.Get(ctx, id); return err },
		"Attempts": func(id fftype.ExecutionID) error { _, err := c.Attempts(ctx, id); return err },
		"Result":   func(id fftype.ExecutionID) error { _, err := c.Result(ctx, id); return err },
		"Payload":  func(id fftype.ExecutionID) error { _, err := c.Payload(ctx, id); return err },
		"IssueGrant": func(id fftype.ExecutionID) error {
			_, err := c.IssueGrant(ctx, id, fftype.GrantClaim, fftype.GrantParams{WorkerID: "w"})
			return err
		},
		"Renew":          func(id fftype.ExecutionID) error { _, err := c.Renew(ctx, id, f, 0); return err },
		"Progress":       func(id fftype.ExecutionID) error { return c.Progress(ctx, id, f, 1, "") },
		"Complete":       func(id fftype.ExecutionID) error { return c.Complete(ctx, id, f, nil, "") },
		"Fail":           func(id fftype.ExecutionID) error { _, err := c.Fail(ctx, id, f, fftype.FailParams{}); return err },
		"Cancel":         func(id fftype.ExecutionID) error { return c.Cancel(ctx, id, fftype.CancelParams{Reason: "r"}) },
		"Delay":          func(id fftype.ExecutionID) error { return c.Delay(ctx, id, f, time.Second) },
		"Release":        func(id fftype.ExecutionID) error { return c.Release(ctx, id, f) },
		"Revoke":         func(id fftype.ExecutionID) error { return c.Revoke(ctx, id, "r") },
		"ChangePriority": func(id fftype.ExecutionID) error { return c.ChangePriority(ctx, id, 1) },
		"SetTags":        func(id fftype.ExecutionID) error { return c.SetTags(ctx, id, map[string]string{"a": "b"}) },
		"Replay":         func(id fftype.ExecutionID) error { return c.Replay(ctx, id) },
	}
	for _, id := range []fftype.ExecutionID{"", ".", "..", "x", "s0_..", "../v1/lanes/x"} {
		_, want := local.Get(ctx, id)
		require.ErrorIs(t, want, fftype.ErrValidation, "in process %q", id)
		for name, call := range calls {
			require.Equal(t, want, call(id), "%s(%q)", name, id)
		}
	}
}

// TestRedirectsAreNotFollowed: a redirect is answered as an error, not by where it points:
// followed, a POST would arrive there as a GET without its body, and a path the server
// cleaned (of a dot segment) would be answered by another route. A caller's HTTPClient is
// left as it is.
func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	mux.Handle("/v1/", http.RedirectHandler("/elsewhere", http.StatusPermanentRedirect))
	hs := httptest.NewServer(mux)
	defer hs.Close()
	hc := &http.Client{}
	for _, cfg := range []*ffclient.Config{nil, {HTTPClient: hc}} {
		c, err := ffclient.New(hs.URL, cfg)
		require.NoError(t, err)
		err = c.Cancel(t.Context(), "s0_0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b", fftype.CancelParams{})
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		require.False(t, fftype.IsRetryable(err))
		require.ErrorContains(t, err, "308")
	}
	require.Nil(t, hc.CheckRedirect)
}

// failingStore fails every write with an error that is not an *fftype.Error, as a store's
// bug or a corrupt record would.
type failingStore struct{ ffstore.Store }

func (failingStore) Update(context.Context, int, func(ffstore.Tx) error) error {
	return errors.New("disk on fire")
}

// TestInternalErrorAlikeWholeOrPerItem: the server's internal error is the same error,
// of a kind fftype knows, whether it failed a whole call or one item of a bulk create.
func TestInternalErrorAlikeWholeOrPerItem(t *testing.T) {
	t.Parallel()
	local, err := flowfabric.NewClient(failingStore{ffmem.New(nil)}, nil)
	require.NoError(t, err)
	srv, err := ffserver.New(local, ffserver.Config{})
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c, err := ffclient.New(hs.URL, nil)
	require.NoError(t, err)
	_, whole := c.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.ErrorIs(t, whole, fftype.ErrUnavailable)
	require.True(t, fftype.IsRetryable(whole))
	item := c.CreateMany(t.Context(), []fftype.CreateParams{{Lane: "l", Kind: "k"}})[0].Err
	require.Equal(t, whole, item)
}

// TestItemErrorOfAKindNotKnown: an item's error of a kind the client does not know (an
// older server's "internal", a newer one's new kind) is unavailable, as a whole answer's
// is, never a kind a caller could take for the execution's state.
func TestItemErrorOfAKindNotKnown(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"results":[{"error":{"error":"internal error","code":"internal","kind":"internal","retryable":true}}]}`)
	}))
	defer hs.Close()
	c, err := ffclient.New(hs.URL, nil)
	require.NoError(t, err)
	err = c.CreateMany(t.Context(), []fftype.CreateParams{{Lane: "l", Kind: "k"}})[0].Err
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.True(t, fftype.IsRetryable(err))
}

// TestBulkAnswerMissingItems: a bulk answer that leaves items out gives each of them an
// unavailable error of its own, and the items it holds their outcomes.
func TestBulkAnswerMissingItems(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"results":[{"error":{"error":"no","code":"invalid_lane","kind":"validation"}}]}`)
	}))
	defer hs.Close()
	c, err := ffclient.New(hs.URL, nil)
	require.NoError(t, err)
	res := c.CreateMany(t.Context(), []fftype.CreateParams{{Lane: "l", Kind: "k"}, {Lane: "l", Kind: "k"}, {Lane: "l", Kind: "k"}})
	require.ErrorIs(t, res[0].Err, fftype.ErrValidation)
	require.ErrorIs(t, res[1].Err, fftype.ErrUnavailable)
	require.ErrorIs(t, res[2].Err, fftype.ErrUnavailable)
	require.NotSame(t, res[1].Err, res[2].Err, "each item its own error")
	ids := []fftype.ExecutionID{fftype.NewExecutionID(0), fftype.NewExecutionID(0)}
	errs, err := c.ReplayMany(t.Context(), ids)
	require.NoError(t, err)
	require.ErrorIs(t, errs[0], fftype.ErrValidation)
	require.ErrorIs(t, errs[1], fftype.ErrUnavailable)
}

// TestNullIsNotNothing: a payload or result that is the JSON value null reads back as the
// bytes "null", and one that is nothing as nothing, as in process.
func TestNullIsNotNothing(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ctx := t.Context()
	for i, stored := range [][]byte{[]byte("null"), nil} {
		lane := "l" + strconv.Itoa(i)
		res, err := c.Create(ctx, fftype.CreateParams{Lane: lane, Kind: "k", Payload: stored})
		require.NoError(t, err)
		ls, err := c.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{lane}})
		require.NoError(t, err)
		require.Len(t, ls, 1)
		require.Equal(t, string(stored), string(ls[0].Payload), "the lease's payload")
		require.NoError(t, c.Complete(ctx, res.ID, ls[0].Fence, stored, fftype.EncodingJSON))

		want, err := local.Payload(ctx, res.ID)
		require.NoError(t, err)
		require.Equal(t, string(stored), string(want), "in process")
		payload, err := c.Payload(ctx, res.ID)
		require.NoError(t, err)
		require.Equal(t, string(stored), string(payload), "the payload")
		result, enc, err := c.ResultWithEncoding(ctx, res.ID)
		require.NoError(t, err)
		require.Equal(t, string(stored), string(result), "the result")
		require.Equal(t, fftype.EncodingJSON, enc)
	}
}

// TestReplayManyOverAThousand: more ids than one request takes get one answer each.
func TestReplayManyOverAThousand(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "")
	ids := make([]fftype.ExecutionID, 1001)
	for i := range ids {
		ids[i] = fftype.NewExecutionID(0)
	}
	errs, err := c.ReplayMany(t.Context(), ids)
	require.NoError(t, err)
	require.Len(t, errs, len(ids))
	require.ErrorIs(t, errs[1000], fftype.ErrNotFound)
}

// TestEventsFromCursorStart: flowfabric.CursorStart means the oldest event kept, as it does
// for flowfabric.Client.Subscribe, not only new ones.
func TestEventsFromCursorStart(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, err := c.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	stop := errors.New("stop")
	var got []fftype.Delivery
	err = c.Events(ctx, fftype.EventFilter{ExecutionID: res.ID}, flowfabric.CursorStart, func(d fftype.Delivery) error {
		got = append(got, d)
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Len(t, got, 1)
	require.Equal(t, fftype.EventCreated, got[0].Event.Type)
}

// TestCreateManyHeavierThanOneBody: items whose payloads together outweigh one request's
// body limit are sent in several requests, as they would be created in process.
func TestCreateManyHeavierThanOneBody(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "")
	payload := []byte(`"` + strings.Repeat("a", 11<<20) + `"`) // 11 MiB: three are over 32 MiB
	ps := []fftype.CreateParams{
		{Lane: "l", Kind: "k", Payload: payload},
		{Lane: "l", Kind: "k", Payload: payload},
		{Lane: "l", Kind: "k", Payload: payload},
	}
	for i, r := range c.CreateMany(t.Context(), ps) {
		require.NoError(t, r.Err, "item %d", i)
	}
}

// TestCreateManyHeavyTags: a bulk request is bounded by what its items weigh whole, not
// by their payloads alone: 500 items with the most tags the engine takes (64 keys of 128
// bytes, values of 1 KiB: 74 KB each) and no payload weigh 37 MB together, over one body's
// limit, and are all created, as in process.
func TestCreateManyHeavyTags(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "")
	tags := map[string]string{}
	for i := range fftype.MaxTags {
		k := fmt.Sprintf("k%03d", i) + strings.Repeat("x", fftype.MaxTagKeyBytes-4)
		tags[k] = strings.Repeat("v", fftype.MaxTagValueBytes)
	}
	ps := make([]fftype.CreateParams, 500)
	for i := range ps {
		ps[i] = fftype.CreateParams{Lane: "l", Kind: "k", Tags: tags}
	}
	for i, r := range c.CreateMany(t.Context(), ps) {
		require.NoError(t, r.Err, "item %d", i)
	}
}

// TestCreateManyItemOverABodyFailsAlone: an item heavier than a whole body goes in a
// request of its own, so that the server's refusal (413) is its error alone; the items
// beside it are created.
func TestCreateManyItemOverABodyFailsAlone(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, "")
	huge := make([]byte, 25<<20) // 33 MiB once in base64
	ps := []fftype.CreateParams{
		{Lane: "l", Kind: "k", Payload: []byte(`{"n":1}`)},
		{Lane: "l", Kind: "k", Payload: huge, Encoding: fftype.EncodingBinary},
		{Lane: "l", Kind: "k", Payload: []byte(`{"n":2}`)},
	}
	res := c.CreateMany(t.Context(), ps)
	require.NoError(t, res[0].Err)
	require.ErrorIs(t, res[1].Err, fftype.ErrTooLarge)
	require.NoError(t, res[2].Err)
}

// TestCreateManyHTMLPayloadsFitOneBody: JSON payloads go over the wire as they are, with
// no HTML escaping (which makes each '<' six bytes): ten 1 MiB payloads of '<', 10 MiB
// together, fit one bulk body.
func TestCreateManyHTMLPayloadsFitOneBody(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	payload := []byte(`"` + strings.Repeat("<", 1<<20) + `"`)
	var ps []fftype.CreateParams
	for range 10 {
		ps = append(ps, fftype.CreateParams{Lane: "l", Kind: "k", Payload: payload})
	}
	// In process the same batch is fine.
	for i, r := range local.CreateMany(t.Context(), ps) {
		require.NoError(t, r.Err, "in process, item %d", i)
	}
	for i, r := range c.CreateMany(t.Context(), ps) {
		require.NoError(t, r.Err, "over HTTP, item %d", i)
	}
}

// TestJSONPayloadKeepsItsValueNotItsWhitespace pins what the documentation says of JSON
// in JSON bodies: a payload reaches a remote worker with its value, numbers' digits and
// keys' order kept, but compacted; one created through ffclient is stored compacted; and
// GET …/payload answers the bytes as stored.
func TestJSONPayloadKeepsItsValueNotItsWhitespace(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ctx := t.Context()
	const stored, compact = `{"b": [1, 2.50, "<x>"], "a": null}`, `{"b":[1,2.50,"<x>"],"a":null}`
	res, err := local.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Payload: []byte(stored)})
	require.NoError(t, err)
	got, err := c.Payload(ctx, res.ID)
	require.NoError(t, err)
	require.Equal(t, stored, string(got), "GET …/payload")
	ls, err := c.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, ls, 1)
	require.Equal(t, compact, string(ls[0].Payload), "a lease")

	res, err = c.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Payload: []byte(stored)})
	require.NoError(t, err)
	got, err = local.Payload(ctx, res.ID)
	require.NoError(t, err)
	require.Equal(t, compact, string(got), "created through ffclient")
}

// TestJSONPayloadWithinLimitOverHTTP: a JSON payload under MaxPayloadBytes is accepted
// over HTTP as in process: the client does not inflate it by escaping before the engine
// measures it.
func TestJSONPayloadWithinLimitOverHTTP(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	payload := []byte(`"` + strings.Repeat("<b>", 1400_000) + `"`) // 4.2 MiB: 18 MiB once escaped
	_, err := local.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Payload: payload})
	require.NoError(t, err, "in process")
	_, err = c.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k", Payload: payload})
	require.NoError(t, err, "over HTTP")
}

// TestBulkItemNotUTF8FailsAlone: a JSON payload that is not UTF-8 is refused on its own,
// by the client before it is sent, as in process; the other items of the batch are
// created.
func TestBulkItemNotUTF8FailsAlone(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ps := []fftype.CreateParams{
		{Lane: "l", Kind: "k", Payload: []byte(`{"n":1}`)},
		{Lane: "l", Kind: "k", Payload: []byte("\"caf\xe9\"")}, // Latin-1 é
	}
	inProcess := local.CreateMany(t.Context(), ps)
	require.NoError(t, inProcess[0].Err, "in process the valid item is created")
	require.ErrorIs(t, inProcess[1].Err, fftype.ErrValidation)
	remote := c.CreateMany(t.Context(), ps)
	require.NoError(t, remote[0].Err, "over HTTP the valid item is created too")
	require.ErrorIs(t, remote[1].Err, fftype.ErrValidation)
}

// TestTimeoutGivesAClaimItsWait: Config.Timeout bounds how long a call waits for the
// server's answer, a long-polling claim's wait on top, so that a claim outlasts a short
// timeout while other calls to a server that does not answer fail, retryable.
func TestTimeoutGivesAClaimItsWait(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // a server answering later than the timeout
		case <-time.After(3 * timeout):
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, `{"leases":[]}`)
	}))
	defer slow.Close()
	c, err := ffclient.New(slow.URL, &ffclient.Config{Timeout: timeout})
	require.NoError(t, err)
	ctx := t.Context()
	leases, err := c.ClaimWait(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}}, time.Second)
	require.NoError(t, err, "the claim waits for the server for its wait on top")
	require.Empty(t, leases)
	_, err = c.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}})
	require.ErrorIs(t, err, fftype.ErrUnavailable, "a claim that does not wait has the timeout alone")
	require.True(t, fftype.IsRetryable(err))
	require.ErrorContains(t, err, "did not begin within the timeout (100ms)")

	_, err = ffclient.New(slow.URL, &ffclient.Config{Timeout: -time.Second})
	require.ErrorIs(t, err, fftype.ErrValidation)
}

// requireGivenBack checks that the client gave back the lease a late answer brought:
// another worker claims execution id at once.
func requireGivenBack(t *testing.T, local *flowfabric.Client, id fftype.ExecutionID) {
	t.Helper()
	again, err := local.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w2", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, again, 1, "the lease of the late answer was given back")
	require.Equal(t, id, again[0].ExecutionID)
}

// TestTextNotUTF8IsRefusedAsInProcess: a string the engine refuses for not being UTF-8 (an
// idempotency key, a tag value, a failure category) is refused by the client too, before
// encoding/json would send it changed: two keys that differ only in a bad byte would
// become one, and a category would no longer match the policy's list.
func TestTextNotUTF8IsRefusedAsInProcess(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ctx := t.Context()
	for _, p := range []fftype.CreateParams{
		{Lane: "l", Kind: "k", IdempotencyKey: "order-\xff"},
		{Lane: "l", Kind: "k", Tags: map[string]string{"t": "a\xffb"}},
	} {
		_, err := local.Create(ctx, p)
		require.ErrorIs(t, err, fftype.ErrValidation, "in process")
		_, err = c.Create(ctx, p)
		require.ErrorIs(t, err, fftype.ErrValidation, "over HTTP")
		res := c.CreateMany(ctx, []fftype.CreateParams{p, {Lane: "l", Kind: "k"}})
		require.ErrorIs(t, res[0].Err, fftype.ErrValidation, "in a bulk create")
		require.NoError(t, res[1].Err, "the other item of the bulk create")
	}

	_, err := c.Create(ctx, fftype.CreateParams{Lane: "m", Kind: "k"})
	require.NoError(t, err)
	ls, err := c.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"m"}})
	require.NoError(t, err)
	require.Len(t, ls, 1)
	_, err = c.Fail(ctx, ls[0].ExecutionID, ls[0].Fence, fftype.FailParams{Reason: "r", Category: "bad\xff"})
	require.ErrorIs(t, err, fftype.ErrValidation)
	require.ErrorContains(t, err, "category")
	x, err := local.Get(ctx, ls[0].ExecutionID)
	require.NoError(t, err)
	require.Equal(t, fftype.StateActive, x.PublicState(), "the refused Fail changed nothing")
}

// TestReplayManyMalformedIDFailsAlone: a malformed id (one that is not even UTF-8) gets its
// own error, as in process, and the others are replayed.
func TestReplayManyMalformedIDFailsAlone(t *testing.T) {
	t.Parallel()
	c, local := setup(t, "")
	ctx := t.Context()
	res, err := local.Create(ctx, fftype.CreateParams{Lane: "l", Kind: "k", Policy: fftype.Policy{Retry: &fftype.RetryPolicy{}}})
	require.NoError(t, err)
	failed := res.ID
	leases, err := local.Claim(ctx, fftype.ClaimParams{WorkerID: "w", WorkerInstanceID: "w1", Lanes: []string{"l"}})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	out, err := local.Fail(ctx, failed, leases[0].Fence, fftype.FailParams{Reason: "x"})
	require.NoError(t, err)
	require.False(t, out.RetryScheduled)
	errs, err := c.ReplayMany(ctx, []fftype.ExecutionID{"bad\xff", failed, "nope"})
	require.NoError(t, err)
	require.Len(t, errs, 3)
	require.ErrorIs(t, errs[0], fftype.ErrValidation)
	require.NoError(t, errs[1])
	require.ErrorIs(t, errs[2], fftype.ErrValidation)
	x, err := local.Get(ctx, failed)
	require.NoError(t, err)
	require.Equal(t, fftype.StateWaiting, x.PublicState(), "replayed")
}
