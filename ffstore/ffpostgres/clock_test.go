package ffpostgres_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestNowUnreachable checks that when the clock's connection cannot be made within the
// connect timeout, Now returns a retryable unavailable error saying so, as Open does,
// and not the bare context.DeadlineExceeded of the store's own bound: the caller's
// context is live, and would seem to have ended.
func TestNowUnreachable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	silent := silentServer(t)
	cfg, err := pgxpool.ParseConfig(testdb.SharedPostgres(t).URL("postgres"))
	require.NoError(t, err)
	var unreachable atomic.Bool
	var d net.Dialer
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if unreachable.Load() {
			return d.DialContext(ctx, "tcp", silent)
		}
		return d.DialContext(ctx, network, addr)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	s, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: testdb.Schema(t), Migrate: true, Shards: 1, ConnectTimeout: time.Second})
	require.NoError(t, err)
	defer s.Close()

	unreachable.Store(true) // the clock's first connection goes to a server that never answers
	_, err = s.Now(ctx)
	require.NoError(t, ctx.Err())
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.True(t, fftype.IsRetryable(err))
	require.ErrorContains(t, err, "no answer from the store within 1s")
	require.NotErrorIs(t, err, context.DeadlineExceeded)
}
