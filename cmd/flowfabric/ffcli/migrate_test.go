package ffcli

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffconnect"
	"github.com/flowfabric/flowfabric/ffserver"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestMigrateSchema pins which Postgres schema "flowfabric migrate" brings up to date: the
// store URL's schema parameter, unless --schema or FF_POSTGRES_SCHEMA names another, so
// that a server given the same URL finds its schema migrated. Not parallel: a case sets
// FF_POSTGRES_SCHEMA.
func TestMigrateSchema(t *testing.T) {
	base := testdb.NewPostgres(t, testdb.PostgresOptions{Fast: true}).URL("postgres")
	// opens reports whether a store on schema opens without migrating it.
	opens := func(t *testing.T, schema string) bool {
		t.Helper()
		s, err := ffconnect.Open(t.Context(), base+"&schema="+schema, nil)
		if err != nil {
			return false
		}
		require.NoError(t, s.Close())
		return true
	}
	for _, tt := range []struct {
		name string
		flag bool // --schema names the other schema
		env  bool // FF_POSTGRES_SCHEMA names the other schema
	}{
		{name: "URL"},
		{name: "Flag", flag: true},
		{name: "Environment", env: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, other := testdb.Schema(t), testdb.Schema(t)
			args := []string{"migrate", "--store", base + "&schema=" + url}
			if tt.flag {
				args = append(args, "--schema", other)
			}
			if tt.env {
				t.Setenv("FF_POSTGRES_SCHEMA", other)
			}
			require.Contains(t, cli(t, args...), "is up to date")
			overridden := tt.flag || tt.env
			require.Equal(t, !overridden, opens(t, url), "the URL's schema %s migrated", url)
			require.Equal(t, overridden, opens(t, other), "the other schema %s migrated", other)
		})
	}
}

// TestStoreURLPasswordIsNotPrinted pins that neither the server's banner nor migrate's
// report prints a password given as a parameter of the store URL.
func TestStoreURLPasswordIsNotPrinted(t *testing.T) {
	t.Parallel()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{Fast: true}) // trust auth: any password works
	url := pg.URL("postgres") + "&schema=" + testdb.Schema(t) + "&password=s3cret-pw"
	out := cli(t, "migrate", "--store", url)
	require.Contains(t, out, "password=xxxxx")
	require.NotContains(t, out, "s3cret-pw", "migrate's report")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var banner bytes.Buffer
	o := &serveOptions{store: url, addr: "127.0.0.1:0", logLevel: "error", timeout: ffserver.DefaultRequestTimeout,
		shutdown: 10 * time.Second, ready: func(string) { cancel() }}
	require.NoError(t, serve(ctx, &banner, o))
	require.Contains(t, banner.String(), "listening on")
	require.NotContains(t, banner.String(), "s3cret-pw", "the server's banner")
}

// TestMigrateSchemaIsForPostgres pins that --schema on another store is refused rather
// than ignored, and that nothing is opened (no SQLite file is created).
func TestMigrateSchemaIsForPostgres(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ff.db")
	for _, store := range []string{"sqlite://" + path, "mem:"} {
		err := Run(t.Context(), []string{"migrate", "--store", store, "--schema", "ff"}, io.Discard)
		require.ErrorContains(t, err, "--schema", store)
	}
	require.NoFileExists(t, path)
	require.Contains(t, cli(t, "migrate", "--store", "sqlite://"+path), "is up to date")
}
