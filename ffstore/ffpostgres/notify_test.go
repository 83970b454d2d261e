package ffpostgres_test

import (
	"context"
	"errors"
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
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestNotifyRetriesAFailedSend pins that a NOTIFY whose first try fails (here the pool
// acquire right after the commit) is retried, so another process's readers are still
// woken by that commit rather than only at their next poll.
func TestNotifyRetriesAFailedSend(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testdb.SharedPostgres(t).URL("postgres")
	schema := testdb.Schema(t)

	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	var failNext atomic.Bool
	cfg.PrepareConn = func(context.Context, *pgx.Conn) (bool, error) {
		if failNext.CompareAndSwap(true, false) {
			return true, errors.New("injected: transient acquire failure")
		}
		return true, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	a, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: schema, Migrate: true, Shards: 1})
	require.NoError(t, err)
	defer a.Close()

	b, err := ffpostgres.Open(ctx, url, &ffpostgres.Options{Schema: schema, Shards: 1})
	require.NoError(t, err)
	defer b.Close()
	wake := b.Changes(ctx)
	select { // the listener wakes its readers once it listens
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("listener never started")
	}

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
}

// silentConn is a connection that a test can make go silent, as one to a server whose
// host vanished does: what is written to it is lost, and nothing more is read from it,
// though it stays open and reads still honour their deadlines.
type silentConn struct {
	net.Conn
	silent atomic.Bool
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
	cfg, err := pgxpool.ParseConfig(testdb.SharedPostgres(t).URL("postgres"))
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []*silentConn
	var d net.Dialer
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sc := &silentConn{Conn: c}
		mu.Lock()
		conns = append(conns, sc)
		mu.Unlock()
		return sc, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	opts := &ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, Shards: 1, ConnectTimeout: time.Second}
	ffpostgres.SetListenIdle(opts, 200*time.Millisecond)
	s, err := ffpostgres.New(pool, opts)
	require.NoError(t, err)
	defer s.Close()

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
	mu.Lock()
	for _, c := range conns {
		c.silent.Store(true)
	}
	mu.Unlock()
	select { // the replacement listens, and wakes the readers for what it may have missed
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener still waits on a connection that went silent")
	}
}
