package ffpostgres

import (
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestWritableServerCheck: a store's connections go only to a server that accepts writes,
// unless the connection string (or PGTARGETSESSIONATTRS) asks for a stricter check, which
// stays.
func TestWritableServerCheck(t *testing.T) {
	check := func(connString string) uintptr {
		t.Helper()
		cfg, _, err := parseConfig(connString, nil)
		require.NoError(t, err)
		require.NotNil(t, cfg.ConnConfig.ValidateConnect)
		return reflect.ValueOf(cfg.ConnConfig.ValidateConnect).Pointer()
	}
	readWrite := reflect.ValueOf(pgconn.ValidateConnectTargetSessionAttrsReadWrite).Pointer()
	primary := reflect.ValueOf(pgconn.ValidateConnectTargetSessionAttrsPrimary).Pointer()
	require.Equal(t, readWrite, check("postgres://u@localhost/db"))
	require.Equal(t, readWrite, check("postgres://u@localhost/db?application_name=target_session_attrs"),
		"a parameter's value is not the parameter")
	require.Equal(t, primary, check("postgres://u@localhost/db?target_session_attrs=primary"))
	t.Setenv("PGTARGETSESSIONATTRS", "primary")
	require.Equal(t, primary, check("postgres://u@localhost/db"))
}
