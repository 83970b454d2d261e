package ffserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/fftype"
)

// stallStore is a store whose next unit of the armed kind stalls: it reports that it
// entered, then waits until released — or, with no release channel, until its context
// ends, and fails with the context's error, as a store that does not answer would. The
// next unit that hands out a lease while claimed is armed reports, once it ran, that it
// entered, and holds its answer until its context ends: its caller went away while the
// answer was on its way.
type stallStore struct {
	ffstore.Store
	update, view, claimed atomic.Pointer[stall]
}

// claimTx notes whether a unit hands out a lease.
type claimTx struct {
	ffstore.Tx
	claimed bool
}

func (t *claimTx) AppendEvent(ev fftype.Event) {
	t.claimed = t.claimed || ev.Type == fftype.EventClaimed
	t.Tx.AppendEvent(ev)
}

type stall struct {
	entered chan struct{}
	release chan struct{}
}

func newStall(release chan struct{}) *stall {
	return &stall{entered: make(chan struct{}), release: release}
}

func (st *stall) hold(ctx context.Context) error {
	if st == nil {
		return nil
	}
	close(st.entered)
	if st.release == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	<-st.release
	return nil
}

func (s *stallStore) Update(ctx context.Context, shard int, fn func(tx ffstore.Tx) error) error {
	if err := s.update.Swap(nil).hold(ctx); err != nil {
		return err
	}
	st := s.claimed.Load()
	if st == nil {
		return s.Store.Update(ctx, shard, fn)
	}
	var claimed bool
	err := s.Store.Update(ctx, shard, func(tx ffstore.Tx) error {
		ct := &claimTx{Tx: tx}
		err := fn(ct)
		claimed = ct.claimed
		return err
	})
	if claimed && err == nil && s.claimed.CompareAndSwap(st, nil) {
		close(st.entered)
		<-ctx.Done()
	}
	return err
}

func (s *stallStore) View(ctx context.Context, shard int, fn func(tx ffstore.ReadTx) error) error {
	if err := s.view.Swap(nil).hold(ctx); err != nil {
		return err
	}
	return s.Store.View(ctx, shard, fn)
}

// requireTimeoutBody requires a 503 JSON error with code "timeout", retryable.
func requireTimeoutBody(t *testing.T, status int, raw []byte) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, status, string(raw))
	var e ffserver.ErrorBody
	require.NoError(t, json.Unmarshal(raw, &e), "a timeout is answered with a JSON error, nothing partial: %s", raw)
	require.Equal(t, "timeout", e.Code)
	require.True(t, e.Retryable)
}

func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond

	setup := func(t *testing.T) (*testBundle, *stallStore) {
		t.Helper()
		store := &stallStore{Store: ffmem.New(nil)}
		return setupOn(t, ffserver.Config{RequestTimeout: timeout}, store, nil), store
	}

	t.Run("SlowBody", func(t *testing.T) {
		t.Parallel()
		b, _ := setup(t)
		conn, err := net.Dial("tcp", b.http.Listener.Addr().String())
		require.NoError(t, err)
		defer conn.Close()
		start := time.Now()
		_, err = fmt.Fprint(conn, "POST /v1/executions HTTP/1.1\r\nHost: ff\r\nContent-Type: application/json\r\n"+
			"Content-Length: 100\r\n\r\n{\"lane\":")
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		requireTimeoutBody(t, resp.StatusCode, raw)
		require.Less(t, time.Since(start), 10*time.Second)
	})

	t.Run("HungStore", func(t *testing.T) {
		t.Parallel()
		b, store := setup(t)
		res, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
		require.NoError(t, err)
		st := newStall(nil)
		store.view.Store(st)
		status, raw := b.do("GET", "/v1/executions/"+string(res.ID), nil)
		requireTimeoutBody(t, status, raw)
		select {
		case <-st.entered:
		default:
			t.Fatal("the read never reached the store")
		}
	})

	t.Run("LongPollOutlastsTimeout", func(t *testing.T) {
		t.Parallel()
		b, _ := setup(t)
		start := time.Now()
		var out ffserver.ClaimResponse
		b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "w1", "lanes": []string{"idle"},
			"wait_ms": (3 * timeout).Milliseconds()}, 200, &out)
		require.Empty(t, out.Leases)
		require.GreaterOrEqual(t, time.Since(start), 3*timeout, "the claim waited its wait, past the request timeout")
	})

	t.Run("StreamOpeningBounded", func(t *testing.T) {
		t.Parallel()
		b, store := setup(t)
		st := newStall(nil)
		store.view.Store(st)
		status, raw := b.do("GET", "/v1/events", nil)
		requireTimeoutBody(t, status, raw)
		select {
		case <-st.entered:
		default:
			t.Fatal("the stream's opening never reached the store")
		}
	})

	t.Run("StreamOutlastsTimeout", func(t *testing.T) {
		t.Parallel()
		b, _ := setup(t)
		req, err := http.NewRequestWithContext(t.Context(), "GET", b.http.URL+"/v1/events?lane=late", nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		// A long-poll claim passes the time: the stream is then older than the timeout.
		b.call("POST", "/v1/claim", map[string]any{"worker_id": "w", "worker_instance_id": "w1", "lanes": []string{"idle"},
			"wait_ms": (2 * timeout).Milliseconds()}, 200, nil)
		_, err = b.client.Create(t.Context(), fftype.CreateParams{Lane: "late", Kind: "k"})
		require.NoError(t, err)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				require.Equal(t, "created", ev)
				return
			}
		}
		t.Fatalf("the stream ended: %v", sc.Err())
	})
}

// TestBeginShutdownEndsAStreamOpening: a stream still opening (its store does not answer)
// when the server begins to shut down is answered at once, 503 and retryable, rather than
// holding the shutdown until its request timeout.
func TestBeginShutdownEndsAStreamOpening(t *testing.T) {
	t.Parallel()
	store := &stallStore{Store: ffmem.New(nil)}
	b := setupOn(t, ffserver.Config{}, store, nil)
	st := newStall(nil)
	store.view.Store(st)
	type answer struct {
		status int
		raw    []byte
	}
	answered := make(chan answer, 1)
	go func() {
		status, raw := b.do("GET", "/v1/events", nil)
		answered <- answer{status, raw}
	}()
	<-st.entered
	b.server.BeginShutdown()
	select {
	case a := <-answered:
		require.Equal(t, http.StatusServiceUnavailable, a.status, string(a.raw))
		var e ffserver.ErrorBody
		require.NoError(t, json.Unmarshal(a.raw, &e), string(a.raw))
		require.Equal(t, "shutting_down", e.Code)
		require.True(t, e.Retryable)
	case <-time.After(10 * time.Second):
		t.Fatal("the opening stream was not answered at shutdown")
	}
}

// TestClaimReleasedWhenClientGoesAway: the client of a claim disconnects while the claim
// is being served; the lease handed out cannot reach it, so the server releases it and
// the execution is claimable again at once, not after its 10-minute lease TTL.
func TestClaimReleasedWhenClientGoesAway(t *testing.T) {
	t.Parallel()
	store := &stallStore{Store: ffmem.New(nil)}
	b := setupOn(t, ffserver.Config{}, store, nil)
	res, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "gone", Kind: "k"})
	require.NoError(t, err)

	st := newStall(nil)
	store.claimed.Store(st)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	answered := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, "POST", b.http.URL+"/v1/claim", strings.NewReader(
			`{"worker_id":"w","worker_instance_id":"w1","lanes":["gone"],"lease_ttl_ms":600000}`))
		if err == nil {
			var resp *http.Response
			if resp, err = http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		answered <- err
	}()
	<-st.entered // the claim took the execution; its answer waits until the server sees its client go
	cancel()
	require.Error(t, <-answered)

	require.Eventually(t, func() bool {
		atts, err := b.client.Attempts(t.Context(), res.ID)
		require.NoError(t, err)
		return len(atts) == 1 && atts[0].Status == fftype.AttemptPaused
	}, 10*time.Second, 10*time.Millisecond, "the undelivered lease is released")
	leases, err := b.client.Claim(t.Context(), fftype.ClaimParams{WorkerID: "w2", WorkerInstanceID: "w2-1", Lanes: []string{"gone"}})
	require.NoError(t, err)
	require.Len(t, leases, 1, "claimable again at once")
	require.Equal(t, res.ID, leases[0].ExecutionID)
}

// TestBulkCreateOutOfTimeIs503: a bulk create that runs out of time is answered like any
// other request that does, not 200 with an error per item.
func TestBulkCreateOutOfTimeIs503(t *testing.T) {
	t.Parallel()
	store := &stallStore{Store: ffmem.New(nil)}
	b := setupOn(t, ffserver.Config{RequestTimeout: 300 * time.Millisecond}, store, nil)
	store.update.Store(newStall(nil))
	status, raw := b.do("POST", "/v1/executions/bulk", map[string]any{"executions": []any{
		map[string]any{"lane": "l", "kind": "k"}}})
	requireTimeoutBody(t, status, raw)
}

// TestScrapeWithinTheRequestTimeout: a scrape answers within the request timeout, as every
// request must, while the store hangs: the queue depths, read last, are left out.
func TestScrapeWithinTheRequestTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	store := &stallStore{Store: ffmem.New(nil)}
	b := setupOn(t, ffserver.Config{RequestTimeout: timeout}, store, nil)
	_, err := b.client.Create(t.Context(), fftype.CreateParams{Lane: "l", Kind: "k"})
	require.NoError(t, err)
	store.view.Store(newStall(nil)) // the queue-depth read hangs until its context ends
	start := time.Now()
	status, raw := b.do("GET", "/metrics", nil)
	require.Less(t, time.Since(start), timeout, "the scrape answered in time")
	require.Equal(t, http.StatusOK, status)
	require.NotContains(t, string(raw), "flowfabric_queue_depth{")
	require.Contains(t, string(raw), "go_goroutines", "the other metrics are there")
}
