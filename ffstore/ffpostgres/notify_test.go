package ffpostgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestNotifyRetriesAFailedSend: a NOTIFY whose try fails, at once or by running out of
// its bound (no pooled connection within the connect timeout), is tried again, so that
// another process is still woken for the commit.
func TestNotifyRetriesAFailedSend(t *testing.T) {
	t.Parallel()
	for name, fail := range map[string]func(ctx context.Context) error{
		"fails":     func(context.Context) error { return errors.New("injected: transient acquire failure") },
		"times out": func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			url := testdb.SharedPostgres(t).URL("postgres")
			schema := testdb.Schema(t)

			cfg, err := pgxpool.ParseConfig(url)
			require.NoError(t, err)
			var failNext atomic.Bool
			cfg.PrepareConn = func(ctx context.Context, _ *pgx.Conn) (bool, error) {
				if failNext.CompareAndSwap(true, false) {
					return true, fail(ctx)
				}
				return true, nil
			}
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			defer pool.Close()
			a, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: schema, Migrate: true, Shards: 1, ConnectTimeout: 200 * time.Millisecond})
			require.NoError(t, err)
			defer a.Close()

			wake := openListening(t, url, schema)

			require.NoError(t, a.Update(ctx, 0, func(tx ffstore.Tx) error {
				tx.Put("k", []byte("v"))
				failNext.Store(true) // the unit holds its connection: the next acquire is the notifier's
				return nil
			}))
			select {
			case <-wake:
			case <-time.After(5 * time.Second):
				t.Fatalf("process B was never woken for A's commit (injected failure still pending: %v)", failNext.Load())
			}
		})
	}
}

// TestCloseSendsTheLastNotify: a process that commits and then closes its store at once
// (a CLI creating an execution and exiting, a worker shutting down) still wakes another
// process's readers: Close lets the NOTIFY for the last commit go out.
func TestCloseSendsTheLastNotify(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.SharedPostgres(t).URL("postgres")
	schema := testdb.Schema(t)
	b := openListening(t, url, schema)
	for i := range 3 {
		a, err := ffpostgres.Open(ctx, url, &ffpostgres.Options{Schema: schema, Shards: 1})
		require.NoError(t, err)
		require.NoError(t, a.Update(ctx, 0, func(tx ffstore.Tx) error {
			tx.Put(fmt.Sprintf("k%d", i), []byte("v"))
			return nil
		}))
		require.NoError(t, a.Close())
		select {
		case <-b:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: a commit followed by Close never woke another process's reader", i)
		}
	}
}

// TestCloseSendsTheNotifyOfARunningUnit: a unit still running when Close starts commits
// (Close waits for it), and its NOTIFY goes out before Close stops the notifier.
func TestCloseSendsTheNotifyOfARunningUnit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.SharedPostgres(t).URL("postgres")
	schema := testdb.Schema(t)
	b := openListening(t, url, schema)
	a, err := ffpostgres.Open(ctx, url, &ffpostgres.Options{Schema: schema, Shards: 1})
	require.NoError(t, err)
	inUnit, release := make(chan struct{}), make(chan struct{})
	unitErr := make(chan error, 1)
	go func() {
		unitErr <- a.Update(ctx, 0, func(tx ffstore.Tx) error {
			close(inUnit)
			<-release
			tx.Put("k", []byte("v"))
			return nil
		})
	}()
	<-inUnit
	closeErr := make(chan error, 1)
	go func() { closeErr <- a.Close() }()
	require.Eventually(t, func() bool { // Close has begun: new units are refused
		return a.Update(ctx, 0, func(ffstore.Tx) error { return nil }) != nil
	}, 5*time.Second, time.Millisecond)
	close(release)
	require.NoError(t, <-unitErr)
	require.NoError(t, <-closeErr)
	select {
	case <-b:
	case <-time.After(5 * time.Second):
		t.Fatal("a unit that committed while Close waited for it never woke another process's reader")
	}
}

// openListening opens another process's store on schema and returns its Changes channel
// once its listener listens.
func openListening(t *testing.T, url, schema string) <-chan struct{} {
	t.Helper()
	s, err := ffpostgres.Open(t.Context(), url, &ffpostgres.Options{Schema: schema, Migrate: true, Shards: 1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	wake := s.Changes(t.Context())
	select { // the listener wakes its readers once it listens
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("listener never started")
	}
	return wake
}

// silentConn is a connection that a test can make go silent, as one to a server whose
// host vanished does: what is written to it is lost, and nothing more is read from it,
// though it stays open and reads still honour their deadlines. It also goes silent by
// itself at a write that silentAt, if set, returns true for.
type silentConn struct {
	net.Conn
	silentAt func([]byte) bool
	silent   atomic.Bool
}

func (c *silentConn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if !c.silent.Load() || err != nil {
			return n, err
		}
	}
}

func (c *silentConn) Write(b []byte) (int, error) {
	if c.silentAt != nil && c.silentAt(b) {
		c.silent.Store(true)
	}
	if c.silent.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// TestListenerLeavesASilentConnection: a LISTEN connection whose server stops answering
// without closing it is found out and replaced, and the readers woken, rather than waited
// on forever.
func TestListenerLeavesASilentConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, conns := newSilenceableStore(t, nil)
	wake := s.Changes(ctx)
	select { // the listener wakes its readers once it listens
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("listener never started")
	}
	time.Sleep(500 * time.Millisecond) // past a check or two of the healthy connection
	select {
	case <-wake:
		t.Fatal("a healthy, quiet listener woke its readers")
	default:
	}
	for _, c := range conns() {
		c.silent.Store(true)
	}
	select { // the replacement listens, and wakes the readers for what it may have missed
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener still waits on a connection that went silent")
	}
}

// TestListenerLeavesAConnectionSilentAtListen: a connection that goes silent between
// connecting and its LISTEN is given up after the connect timeout, as one that goes
// silent later is, and the listener listens on a new one.
func TestListenerLeavesAConnectionSilentAtListen(t *testing.T) {
	t.Parallel()
	var once atomic.Bool
	s, conns := newSilenceableStore(t, func(b []byte) bool {
		return bytes.Contains(b, []byte("LISTEN ")) && once.CompareAndSwap(false, true)
	})
	select { // the listener wakes its readers once it listens
	case <-s.Changes(t.Context()):
	case <-time.After(10 * time.Second):
		t.Fatal("the listener never listens: its LISTEN waits on a silent connection")
	}
	silent := 0
	for _, c := range conns() {
		if c.silent.Load() {
			silent++
		}
	}
	require.Equal(t, 1, silent, "the first LISTEN was sent on a connection that went silent")
}

// newSilenceableStore returns a store on a pool whose connections, and the store's own,
// can be made to go silent (see silentConn), with a connect timeout of 1 s and a listener
// that checks its connection after 200 ms of quiet; silentAt is every connection's
// silentAt. conns lists the connections made so far.
func newSilenceableStore(t *testing.T, silentAt func([]byte) bool) (s *ffpostgres.Store, conns func() []*silentConn) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testdb.SharedPostgres(t).URL("postgres"))
	require.NoError(t, err)
	var mu sync.Mutex
	var made []*silentConn
	var d net.Dialer
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sc := &silentConn{Conn: c, silentAt: silentAt}
		mu.Lock()
		defer mu.Unlock()
		made = append(made, sc)
		return sc, nil
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	opts := &ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, Shards: 1, ConnectTimeout: time.Second}
	ffpostgres.SetListenIdle(opts, 200*time.Millisecond)
	s, err = ffpostgres.New(pool, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s, func() []*silentConn {
		mu.Lock()
		defer mu.Unlock()
		return append([]*silentConn(nil), made...)
	}
}

// TestCloseAfterTheCallersPoolClosed: a store made by New whose pool the caller closed
// first (the reverse of the usual order) answers calls as closed, not worth retrying,
// and does not spend Close's bound retrying a NOTIFY that a closed pool can never send.
func TestCloseAfterTheCallersPoolClosed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, testdb.SharedPostgres(t).URL("postgres"))
	require.NoError(t, err)
	a, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, Shards: 1})
	require.NoError(t, err)
	for i := range 3 { // the later commits' NOTIFY waits out the gap after the first's
		require.NoError(t, a.Update(ctx, 0, func(tx ffstore.Tx) error {
			tx.Put(fmt.Sprintf("k%d", i), []byte("v"))
			return nil
		}))
	}
	pool.Close()
	err = a.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil })
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.False(t, fftype.IsRetryable(err), "no call on a closed pool is worth retrying: %v", err)
	start := time.Now()
	_ = a.Close()
	require.Less(t, time.Since(start), 2*time.Second, "Close gave up on the closed pool at once")
}
