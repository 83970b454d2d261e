package ffcli

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffconnect"
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
		s, err := ffconnect.Open(t.Context(), base+"&schema="+schema)
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
