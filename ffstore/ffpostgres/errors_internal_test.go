package ffpostgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestTranslateSaysWhyTheDatabaseCannotBeUsed pins the message of each refusal that an
// operator must act on, the wrong password among them (the test servers trust every
// login, so no test meets it for real): not retryable, and saying what to fix.
func TestTranslateSaysWhyTheDatabaseCannotBeUsed(t *testing.T) {
	t.Parallel()
	for state, says := range map[string]string{
		"3D000": "it does not exist",
		"28P01": "password authentication failed: no such role, or the wrong password",
		"28000": "the server refused the role",
		"42501": "the role lacks a privilege",
	} {
		err := translate(context.Background(), &pgconn.PgError{Code: state}, "connect")
		require.ErrorIs(t, err, fftype.ErrUnavailable, state)
		require.False(t, fftype.IsRetryable(err), state)
		require.ErrorContains(t, err, "postgres connect: cannot use the database: "+says, state)
		require.ErrorContains(t, err, "(SQLSTATE "+state+")")
	}
}

// TestTranslateRetriesPassingStates pins the SQLSTATEs that end or refuse a unit for a
// passing reason of the server's (a session ended for idling in a transaction or
// running too long, a read-only server during a failover): nothing was written, and the
// unit may be retried.
func TestTranslateRetriesPassingStates(t *testing.T) {
	t.Parallel()
	for _, state := range []string{"25006", "25P03", "25P04", "57P01", "08006", "53300"} {
		err := translate(context.Background(), &pgconn.PgError{Code: state}, "commit")
		require.ErrorIs(t, err, fftype.ErrUnavailable, state)
		require.True(t, fftype.IsRetryable(err), state)
	}
	err := translate(context.Background(), &pgconn.PgError{Code: "25001"}, "commit")
	require.False(t, fftype.IsRetryable(err), "a transaction state the store itself got wrong is not passing")
}

// TestCallBoundFollowsTheStatementTimeout pins that what bounds a unit's commit and a
// shared heads query is as long as the longest statement allowed: a statement timeout
// set above the default is honoured there too, and a shorter one or none keeps the
// default's bound.
func TestCallBoundFollowsTheStatementTimeout(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ statement, want time.Duration }{
		{90 * time.Second, 91 * time.Second},
		{5 * time.Second, time.Second + DefaultStatementTimeout},
		{-1, time.Second + DefaultStatementTimeout},
	} {
		o := Options{ConnectTimeout: time.Second, StatementTimeout: c.statement}
		require.Equal(t, c.want, o.callBound(), "statement timeout %v", c.statement)
	}
}

// TestTranslateStoreTimeout pins what a call returns when a bound of the store's own (a
// shared clock read or heads query, New's checks) runs out while the caller's context is
// live: a retryable unavailable error saying the database did not answer in time, not
// the bound's bare context error, which would say that the caller's context ended. The
// end of a caller's context still passes through bare.
func TestTranslateStoreTimeout(t *testing.T) {
	t.Parallel()
	pgxErr := func(ctx context.Context) error { return fmt.Errorf("failed to connect: %w", ctx.Err()) }

	bound, cancel := ffstore.WithStoreTimeout(context.Background(), time.Millisecond)
	defer cancel()
	<-bound.Done()
	err := translate(bound, pgxErr(bound), "read clock")
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.True(t, fftype.IsRetryable(err))
	require.ErrorContains(t, err, "postgres read clock: no answer from the store within 1ms")
	require.NotErrorIs(t, err, context.DeadlineExceeded, "not the end of the caller's context")

	caller, cancelCaller := context.WithCancel(context.Background())
	bound, cancel = ffstore.WithStoreTimeout(caller, time.Hour)
	defer cancel()
	cancelCaller()
	require.Equal(t, context.Canceled, translate(bound, pgxErr(bound), "read queue heads"), "the caller's context ended first")
}
