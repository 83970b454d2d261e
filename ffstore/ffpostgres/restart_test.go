package ffpostgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/storetest"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestRestart restarts the database server (durable defaults: fsync and synchronous
// commit on) while workers claim and complete executions through the engine: see
// storetest.Restart. A completion whose COMMIT went through but whose answer was lost is
// retried and answered from its first outcome.
func TestRestart(t *testing.T) {
	t.Parallel()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{})
	store, err := ffpostgres.Open(t.Context(), pg.URL("postgres"), &ffpostgres.Options{
		Migrate: true, Shards: 4, PoolSize: 8, ConnectTimeout: 2 * time.Second, StatementTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer store.Close()
	storetest.Restart{Executions: 1200, ClaimCount: 4, Restart: pg.Restart}.Run(t, store)
}

// TestClockReconnectsAfterRestart pins that the store's clock, whose connection the
// server ended by restarting, reconnects and answers on its first read after the restart
// rather than failing that read.
func TestClockReconnectsAfterRestart(t *testing.T) {
	t.Parallel()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{Fast: true})
	ctx := t.Context()
	s, err := ffpostgres.Open(ctx, pg.URL("postgres"), &ffpostgres.Options{Migrate: true, Shards: 1, ConnectTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Now(ctx)
	require.NoError(t, err)
	require.NoError(t, pg.Restart())
	_, err = s.Now(ctx)
	require.NoError(t, err, "the database is up again; the clock reconnects")
}

// TestReadOnlyDatabase stands for a failover: the database turns read-only (sessions
// end, as a demoted primary's do, and new ones are read-only), then writable again.
// While it is read-only a unit fails with a retryable error, Open says why it cannot
// use it, and the event log's reads (which number events, and so write) fail retryably
// too, so that subscriptions ride it out; once it is writable, the same store works on
// new connections, not on read-only sessions kept from before.
func TestReadOnlyDatabase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url, err := testdb.SharedPostgres(t).CreateDatabase(ctx)
	require.NoError(t, err)
	admin, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer admin.Close(context.WithoutCancel(ctx))
	var db string
	require.NoError(t, admin.QueryRow(ctx, "SELECT current_database()").Scan(&db))
	setReadOnly := func(on bool) {
		stmt := "ALTER DATABASE " + pgx.Identifier{db}.Sanitize() + " RESET default_transaction_read_only"
		if on {
			stmt = "ALTER DATABASE " + pgx.Identifier{db}.Sanitize() + " SET default_transaction_read_only = on"
		}
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err)
		_, err = admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", db)
		require.NoError(t, err)
	}
	s, err := ffpostgres.Open(ctx, url, &ffpostgres.Options{Migrate: true, Shards: 1, PoolSize: 2, ConnectTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer s.Close()
	put := func() error {
		return s.Update(ctx, 0, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("v"))
			tx.AppendEvent(fftype.Event{Type: "x", Time: time.Unix(1, 0)})
			return nil
		})
	}
	require.NoError(t, put())

	setReadOnly(true)
	for range 2 { // the first may find a connection the server just ended
		err = put()
	}
	require.Error(t, err)
	require.True(t, fftype.IsRetryable(err), "a read-only database is a passing state: %v", err)
	require.ErrorContains(t, err, "read-only")
	_, err = s.ReadEvents(ctx, 0, 0, 10)
	require.True(t, err == nil || fftype.IsRetryable(err), "%v", err)
	_, err = ffpostgres.Open(ctx, url, &ffpostgres.Options{ConnectTimeout: 2 * time.Second})
	require.True(t, fftype.IsRetryable(err), "%v", err)
	require.ErrorContains(t, err, "is read-only (a standby?): the store needs one that accepts writes")

	setReadOnly(false)
	if err = put(); err != nil { // it may find a connection the server just ended
		err = put()
	}
	require.NoError(t, err, "writable again: the store's connections are new ones")
	evs, err := s.ReadEvents(ctx, 0, 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 2, "each acknowledged unit's event, once")
}

// TestServerTurnsReadOnly stands for a failover whose old primary stays up, read-only,
// keeping its sessions: a unit it refuses drops its connection (so that the next one
// may reach the new primary, not the same session again), and the change listener
// leaves it too, rather than listen where no unit's NOTIFY arrives any more.
func TestServerTurnsReadOnly(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{Fast: true})
	opts := &ffpostgres.Options{Migrate: true, Shards: 1, PoolSize: 1, ConnectTimeout: 2 * time.Second}
	ffpostgres.SetListenIdle(opts, 100*time.Millisecond)
	s, err := ffpostgres.Open(ctx, pg.URL("postgres"), opts)
	require.NoError(t, err)
	defer s.Close()
	admin, err := pgx.Connect(ctx, pg.URL("postgres"))
	require.NoError(t, err)
	defer admin.Close(context.WithoutCancel(ctx))
	setReadOnly := func(on bool) {
		stmt := "ALTER SYSTEM RESET default_transaction_read_only"
		if on {
			stmt = "ALTER SYSTEM SET default_transaction_read_only = on"
		}
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err)
		_, err = admin.Exec(ctx, "SELECT pg_reload_conf()")
		require.NoError(t, err)
		time.Sleep(300 * time.Millisecond) // sessions take the new setting at their next statement
	}
	backend := func() int32 {
		var pid int32
		require.NoError(t, s.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
		return pid
	}
	put := func() error {
		return s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil })
	}
	wake := s.Changes(ctx)
	select { // the listener wakes its readers once it listens
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener never listened")
	}
	require.NoError(t, put())
	before := backend()

	setReadOnly(true)
	err = put()
	require.ErrorContains(t, err, "read-only")
	require.True(t, fftype.IsRetryable(err), "%v", err)
	time.Sleep(500 * time.Millisecond) // the listener finds its server read-only, and keeps trying to leave it
	for len(wake) > 0 {
		<-wake
	}
	setReadOnly(false)
	select { // the listener's new connection wakes the readers
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener stayed on a connection whose server had turned read-only")
	}
	require.NoError(t, put())
	require.NotEqual(t, before, backend(), "the refused unit's connection was dropped")
}
