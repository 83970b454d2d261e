package testdb_test

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

func TestSharedPostgres(t *testing.T) {
	t.Parallel()
	pg := testdb.SharedPostgres(t)
	require.Same(t, pg, testdb.SharedPostgres(t), "one server per test binary")

	conn, err := pgx.Connect(t.Context(), pg.URL("postgres"))
	require.NoError(t, err)
	defer conn.Close(t.Context())
	var fsync string
	require.NoError(t, conn.QueryRow(t.Context(), "SHOW fsync").Scan(&fsync))
	require.Equal(t, "off", fsync, "the shared server trades durability for speed")

	url, err := pg.CreateDatabase(t.Context())
	require.NoError(t, err)
	other, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer other.Close(t.Context())
	require.NoError(t, other.Ping(t.Context()))

	require.NotEqual(t, testdb.Schema(t), testdb.Schema(t), "schema names are unique")
}

func TestRestart(t *testing.T) {
	t.Parallel()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{})
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	require.NoError(t, err)
	var fsync string
	require.NoError(t, conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync))
	require.Equal(t, "on", fsync, "a server of its own keeps the durable defaults")
	_, err = conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
	require.NoError(t, err)

	require.NoError(t, pg.Restart())
	require.Error(t, conn.Ping(ctx), "the restart dropped the old connection")
	conn, err = pgx.Connect(ctx, pg.URL("postgres"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var v int
	require.NoError(t, conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v))
	require.Equal(t, 42, v, "committed data survives the restart")
}
