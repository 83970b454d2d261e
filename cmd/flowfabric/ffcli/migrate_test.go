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
		require.ErrorContains(t, err, "schema is for Postgres stores only", store)
	}
	require.NoFileExists(t, path)
	require.Contains(t, cli(t, "migrate", "--store", "sqlite://"+path), "is up to date")
}

// TestMigrateShardCount pins who chooses a store's shard count when "flowfabric migrate"
// runs before the first server. On Postgres and Valkey/Redis migrate leaves it to the
// first open, so a server started afterwards with ?shards=4 gets 4 shards. An SQLite
// file stores its schema and its shard count in one transaction, so there migrate
// creates the store with the URL's count, which a later open with another count is
// refused.
func TestMigrateShardCount(t *testing.T) {
	t.Parallel()
	pg := testdb.NewPostgres(t, testdb.PostgresOptions{Fast: true}).URL("postgres") + "&schema=" + testdb.Schema(t)
	rd := testdb.NewRedis(t, testdb.RedisOptions{}).URL(0) + "?prefix=" + testdb.RedisPrefix(t)
	for _, tc := range []struct{ name, url string }{
		{"Postgres", pg},
		{"Redis", rd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Contains(t, cli(t, "migrate", "--store", tc.url), "is up to date")
			require.Contains(t, cli(t, "migrate", "--store", tc.url), "is up to date", "migrate again")
			s, err := ffconnect.Open(t.Context(), tc.url+"&shards=4", nil)
			require.NoError(t, err, "the first open after migrate chooses the shard count")
			require.NoError(t, s.Close())
			require.Contains(t, cli(t, "migrate", "--store", tc.url), "is up to date", "migrate an existing store")
			_, err = ffconnect.Open(t.Context(), tc.url+"&shards=2", nil)
			require.ErrorContains(t, err, "shard_count_mismatch", "the count the first open chose stays")
		})
	}
	t.Run("SQLite", func(t *testing.T) {
		url := "sqlite://" + filepath.ToSlash(filepath.Join(t.TempDir(), "ff.db"))
		require.Contains(t, cli(t, "migrate", "--store", url+"?shards=4"), "is up to date")
		s, err := ffconnect.Open(t.Context(), url+"?shards=4", nil)
		require.NoError(t, err, "migrate created the store with the URL's shard count")
		require.NoError(t, s.Close())
		_, err = ffconnect.Open(t.Context(), url+"?shards=2", nil)
		require.ErrorContains(t, err, "shard_count_mismatch")
	})
}
