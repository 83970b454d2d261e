package ffpostgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

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
