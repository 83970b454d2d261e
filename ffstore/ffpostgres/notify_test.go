package ffpostgres_test

import (
	"context"
	"errors"
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
