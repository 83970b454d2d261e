package ffpostgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

func isCode(kind fftype.Kind, code string) error { return &fftype.Error{Kind: kind, Code: code} }

// rawExec runs statements on the shared server behind the store's back.
func rawExec(t *testing.T, stmts ...string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), testdb.SharedPostgres(t).URL("postgres"))
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	for _, q := range stmts {
		_, err := conn.Exec(t.Context(), q)
		require.NoError(t, err, q)
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		ctx    context.Context
		url    string
		schema string
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		return &testBundle{ctx: t.Context(), url: testdb.SharedPostgres(t).URL("postgres"), schema: testdb.Schema(t)}
	}

	t.Run("PlansStatementsOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		mode := func(url string) string {
			s, err := ffpostgres.Open(b.ctx, url, &ffpostgres.Options{Schema: b.schema, Migrate: true})
			require.NoError(t, err)
			defer s.Close()
			var mode string
			require.NoError(t, s.Pool().QueryRow(b.ctx, "SHOW plan_cache_mode").Scan(&mode))
			return mode
		}
		require.Equal(t, "force_generic_plan", mode(b.url), "the store's statements keep their first plan")
		require.Equal(t, "auto", mode(b.url+"&plan_cache_mode=auto"), "the connection string's setting wins")
	})

	t.Run("SchemeInCapitals", func(t *testing.T) {
		// A URL's scheme is case-insensitive: "POSTGRESQL://…" is the same database, and
		// its store parameters apply, not the local server's default database.
		t.Parallel()
		b := setup(t)
		url := "POSTGRESQL" + strings.TrimPrefix(b.url, "postgres") + "&shards=3&migrate=true&schema=" + b.schema
		require.NoError(t, ffpostgres.MigrateURL(b.ctx, url, ""))
		s, err := ffpostgres.Open(b.ctx, url, nil)
		require.NoError(t, err)
		defer s.Close()
		require.Equal(t, 3, s.Shards())
		require.Equal(t, b.schema, s.Schema())
	})

	t.Run("CreatesAndReopens", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema, Migrate: true})
		require.NoError(t, err)
		require.Equal(t, ffpostgres.DefaultShards, s.Shards())
		require.Equal(t, b.schema, s.Schema())
		require.NoError(t, s.Update(b.ctx, 3, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("v"))
			tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventCreated, Time: time.Unix(1, 2)})
			return nil
		}))
		require.NoError(t, s.Close())
		require.ErrorIs(t, s.Close(), fftype.ErrUnavailable, "a second Close fails")

		// Reopened without Migrate (the schema is current) and with the stored count.
		s, err = ffpostgres.Open(b.ctx, strings.Replace(b.url, "postgres://", "postgresql://", 1), &ffpostgres.Options{Schema: b.schema})
		require.NoError(t, err)
		defer s.Close()
		require.Equal(t, ffpostgres.DefaultShards, s.Shards())
		require.NoError(t, s.View(b.ctx, 3, func(tx ffstore.ReadTx) error {
			v, ok, err := tx.Get("k")
			require.True(t, ok)
			require.Equal(t, "v", string(v))
			return err
		}))
		evs, err := s.ReadEvents(b.ctx, 3, 0, 10)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, uint64(1), evs[0].Seq)
	})

	t.Run("ShardCountMismatch", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 4})
		require.NoError(t, err)
		require.NoError(t, s.Close())
		_, err = ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema, Shards: 5})
		require.ErrorIs(t, err, isCode(fftype.KindValidation, ffpostgres.CodeShardCountMismatch))
		require.ErrorContains(t, err, "created with 4 shards")
		s, err = ffpostgres.Open(b.ctx, b.url+"&shards=4", &ffpostgres.Options{Schema: b.schema})
		require.NoError(t, err, "the URL may name the count")
		require.Equal(t, 4, s.Shards())
		require.NoError(t, s.Close())
	})

	t.Run("MissingSchemaNeedsMigrate", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema})
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, ffpostgres.CodeSchemaTooOld))
		require.False(t, fftype.IsRetryable(err))
		var sv *ffpostgres.SchemaVersionError
		require.ErrorAs(t, err, &sv)
		require.Equal(t, ffpostgres.SchemaVersionError{Schema: b.schema, Found: 0, Known: ffpostgres.SchemaVersion}, *sv)
		require.ErrorContains(t, err, "ffpostgres.Migrate")

		require.NoError(t, ffpostgres.MigrateURL(b.ctx, b.url, b.schema))
		s, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema})
		require.NoError(t, err, "Migrate made the schema current")
		require.NoError(t, s.Close())
	})

	t.Run("OlderSchemaRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, ffpostgres.MigrateURL(b.ctx, b.url, b.schema))
		rawExec(t, fmt.Sprintf(`UPDATE %s.meta SET value = %d WHERE name = 'schema_version'`, b.schema, ffpostgres.SchemaVersion-1))
		_, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema})
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, ffpostgres.CodeSchemaTooOld))
		require.ErrorContains(t, err, "run ffpostgres.Migrate")
	})

	t.Run("NewerSchemaRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, ffpostgres.MigrateURL(b.ctx, b.url, b.schema))
		rawExec(t, fmt.Sprintf(`UPDATE %s.meta SET value = %d WHERE name = 'schema_version'`, b.schema, ffpostgres.SchemaVersion+1))
		for _, migrate := range []bool{false, true} {
			_, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema, Migrate: migrate})
			require.ErrorIs(t, err, isCode(fftype.KindUnavailable, ffpostgres.CodeSchemaTooNew), "migrate=%v", migrate)
			var sv *ffpostgres.SchemaVersionError
			require.ErrorAs(t, err, &sv)
			require.Equal(t, ffpostgres.SchemaVersion+1, sv.Found)
			require.ErrorContains(t, err, "upgrade the binary")
		}
		err := ffpostgres.MigrateURL(b.ctx, b.url, b.schema)
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, ffpostgres.CodeSchemaTooNew), "Migrate never goes backwards")
	})

	t.Run("ConcurrentMigrations", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// Openers with pools of their own, as separate processes would be; without the
		// advisory lock the concurrent CREATE TABLEs would fail.
		const openers = 6
		var wg sync.WaitGroup
		stores := make([]*ffpostgres.Store, openers)
		errs := make([]error, openers)
		for i := range openers {
			wg.Go(func() {
				stores[i], errs[i] = ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 5, PoolSize: 2})
			})
		}
		wg.Wait()
		for i := range openers {
			require.NoError(t, errs[i], "opener %d", i)
			require.Equal(t, 5, stores[i].Shards())
			require.NoError(t, stores[i].Close())
		}
	})

	t.Run("UserPool", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		pool, err := pgxpool.New(b.ctx, b.url)
		require.NoError(t, err)
		defer pool.Close()
		_, err = ffpostgres.New(pool, &ffpostgres.Options{Schema: b.schema})
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, ffpostgres.CodeSchemaTooOld))
		s, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 2, StatementTimeout: 5 * time.Second})
		require.NoError(t, err)
		require.Same(t, pool, s.Pool())
		require.NoError(t, s.Update(b.ctx, 1, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("v"))
			return nil
		}))
		require.NoError(t, s.Close())
		require.NoError(t, pool.Ping(b.ctx), "Close leaves the caller's pool open")
	})

	t.Run("UserPoolConnectHooks", func(t *testing.T) {
		// A caller's pool may complete each connection's settings in BeforeConnect (a
		// password or token fetched afresh, as pgx documents) and prepare it in
		// AfterConnect: the store's own connections, the clock's and the listener's, go
		// through both hooks as the pool's do.
		t.Parallel()
		b := setup(t)
		cfg, err := pgxpool.ParseConfig(b.url)
		require.NoError(t, err)
		cfg.ConnConfig.Database = "stale_credentials"
		cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
			cc.Database = "postgres"
			return nil
		}
		var prepared atomic.Int32
		cfg.AfterConnect = func(context.Context, *pgx.Conn) error {
			prepared.Add(1)
			return nil
		}
		pool, err := pgxpool.NewWithConfig(b.ctx, cfg)
		require.NoError(t, err)
		defer pool.Close()
		s, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 1, ConnectTimeout: 2 * time.Second})
		require.NoError(t, err)
		defer s.Close()
		before := prepared.Load()
		_, err = s.Now(b.ctx)
		require.NoError(t, err, "the clock's connection connects as the pool's do")
		select {
		case <-s.Changes(b.ctx): // the listener wakes its readers once it listens
		case <-time.After(10 * time.Second):
			t.Fatal("the listener never listened")
		}
		require.Equal(t, before+2, prepared.Load(), "AfterConnect ran for the clock's and the listener's connections")
	})

	t.Run("BadOptions", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, tc := range []struct {
			url  string
			opts *ffpostgres.Options
		}{
			{b.url, &ffpostgres.Options{Schema: "Bad-Name"}},
			{b.url, &ffpostgres.Options{Schema: "pg_catalog"}},
			{b.url, &ffpostgres.Options{Shards: -1}},
			{b.url, &ffpostgres.Options{Shards: fftype.MaxShards + 1}},
			{b.url, &ffpostgres.Options{PoolSize: -1}},
			{b.url + "&shards=x", nil},
			{b.url + "&migrate=maybe", nil},
			{"mysql://localhost/db", nil},
		} {
			_, err := ffpostgres.Open(b.ctx, tc.url, tc.opts)
			require.ErrorIs(t, err, fftype.ErrValidation, "%s %+v", tc.url, tc.opts)
		}
	})

	t.Run("RefusedSettings", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// Settings of the connection string that the server refuses are bad input, not an
		// unreachable database.
		for _, tc := range []struct{ param, says string }{
			{"plan_cache_mode=sometimes", `invalid value for parameter "plan_cache_mode"`},
			{"no_such_setting=1", `unrecognized configuration parameter "no_such_setting"`},
		} {
			_, err := ffpostgres.Open(b.ctx, b.url+"&"+tc.param, &ffpostgres.Options{Schema: b.schema, Migrate: true})
			require.ErrorIs(t, err, isCode(fftype.KindValidation, fftype.CodeInvalidInput), tc.param)
			require.False(t, fftype.IsRetryable(err))
			require.ErrorContains(t, err, "refused a setting of the connection string")
			require.ErrorContains(t, err, tc.says)
			require.NotContains(t, err.Error(), "cannot reach")
		}
		err := ffpostgres.MigrateURL(b.ctx, b.url+"&no_such_setting=1", b.schema)
		require.ErrorIs(t, err, isCode(fftype.KindValidation, fftype.CodeInvalidInput))

		// A database or a role that does not exist: the server answered, so it was reached,
		// and the error says what is wrong; trying again will not help.
		for _, tc := range []struct{ url, says string }{
			{strings.Replace(b.url, "/postgres?", "/no_such_db?", 1), "cannot use the database: it does not exist; create it, or name another in the connection string (SQLSTATE 3D000)"},
			{strings.Replace(b.url, "//postgres@", "//no_such_role@", 1), "cannot use the database: the server refused the role"},
		} {
			_, err = ffpostgres.Open(b.ctx, tc.url, &ffpostgres.Options{Schema: b.schema})
			require.ErrorIs(t, err, fftype.ErrUnavailable, tc.url)
			require.False(t, fftype.IsRetryable(err))
			require.ErrorContains(t, err, tc.says)
			require.NotContains(t, err.Error(), "cannot reach")
		}
	})

	// The connection string's pool_max_conns and connect_timeout (pgx's own parameters)
	// apply where the options leave PoolSize and ConnectTimeout at 0; an option set wins.
	t.Run("ConnectionStringLimits", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		maxConns := func(opts *ffpostgres.Options) int32 {
			s, err := ffpostgres.Open(b.ctx, b.url+"&pool_max_conns=3", opts)
			require.NoError(t, err)
			defer s.Close()
			return s.Pool().Config().MaxConns
		}
		require.EqualValues(t, 3, maxConns(&ffpostgres.Options{Schema: b.schema, Migrate: true}))
		require.EqualValues(t, 5, maxConns(&ffpostgres.Options{Schema: b.schema, PoolSize: 5}))

		url := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=1", silentServer(t))
		start := time.Now()
		_, err := ffpostgres.Open(b.ctx, url, nil)
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, fftype.CodeStoreUnavailable))
		require.Less(t, time.Since(start), 5*time.Second, "connect_timeout=1 bounds Open")
		require.ErrorContains(t, err, "within 1s")
		start = time.Now()
		require.Error(t, ffpostgres.MigrateURL(b.ctx, url, b.schema))
		require.Less(t, time.Since(start), 5*time.Second, "connect_timeout=1 bounds MigrateURL")
	})

	// A role without CONNECT privilege on the database gets SQLSTATE 42501 at connect:
	// like a missing database, the database cannot be used (unavailable, not retryable);
	// it is not a refused setting of the connection string.
	t.Run("NoConnectPrivilege", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		dbURL, err := testdb.SharedPostgres(t).CreateDatabase(b.ctx)
		require.NoError(t, err)
		db := dbURL[strings.LastIndex(dbURL, "/")+1 : strings.Index(dbURL, "?")]
		role := strings.Replace(b.schema, "t_", "r_", 1)
		rawExec(t, "CREATE ROLE "+role+" LOGIN", "REVOKE CONNECT ON DATABASE "+db+" FROM PUBLIC")
		_, err = ffpostgres.Open(b.ctx, strings.Replace(dbURL, "postgres://postgres@", "postgres://"+role+"@", 1), nil)
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, fftype.CodeStoreUnavailable))
		require.False(t, fftype.IsRetryable(err))
		require.ErrorContains(t, err, "cannot use the database: the role lacks a privilege it needs, such as CONNECT on the database, CREATE on it to create the schema, or CREATE on the schema to create the tables (SQLSTATE 42501)")
		require.NotContains(t, err.Error(), "refused a setting of the connection string")
	})

	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// Nothing listens on the port: refused at once.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
		_, err = ffpostgres.Open(b.ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
			&ffpostgres.Options{Schema: b.schema, ConnectTimeout: 2 * time.Second})
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, fftype.CodeStoreUnavailable))
		require.True(t, fftype.IsRetryable(err))
		// It failed at once: the message names the dial error, not a timeout.
		require.ErrorContains(t, err, fmt.Sprintf("cannot reach the database at 127.0.0.1:%d: connect: connection refused", port))
		require.NotContains(t, err.Error(), "within")

		// A server that accepts and never answers: the connect timeout ends the wait.
		const timeout = 1500 * time.Millisecond
		start := time.Now()
		silent := silentServer(t)
		_, err = ffpostgres.Open(b.ctx, fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", silent),
			&ffpostgres.Options{Schema: b.schema, ConnectTimeout: timeout})
		elapsed := time.Since(start)
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, fftype.CodeStoreUnavailable))
		require.True(t, fftype.IsRetryable(err))
		require.False(t, errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, fftype.ErrUnavailable))
		require.Less(t, elapsed, timeout+5*time.Second, "Open gives up about when the connect timeout says")
		require.ErrorContains(t, err, "cannot reach the database at "+silent+" within 1.5s")
	})
}

// silentServer returns the address of a server that accepts connections and never
// answers; it closes them at the end of the test.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	cs, opts, err := ffpostgres.ParseURL("postgresql://u:p@db.example:5433/app?sslmode=disable&schema=ff&shards=8&migrate=1&statement_timeout=5s&pool_size=30&pool_max_conns=7")
	require.NoError(t, err)
	require.Equal(t, &ffpostgres.Options{Schema: "ff", Shards: 8, Migrate: true, StatementTimeout: 5 * time.Second, PoolSize: 30}, opts)
	require.Equal(t, "postgresql://u:p@db.example:5433/app?pool_max_conns=7&sslmode=disable", cs, "pgx's own parameters pass through")
	for _, bad := range []string{"sqlite:///x.db", "postgres:///app?schema=ff;shards=8", "postgres:///app?shards=%zz"} {
		_, _, err = ffpostgres.ParseURL(bad)
		require.ErrorIs(t, err, fftype.ErrValidation, bad)
	}
}

// TestParseURLDoesNotQuoteAPassword: a password with an unescaped '?', '#' or '/' makes
// the URL fail to parse, or (when what precedes the cut passes for a port) leaves the rest
// of it, up to its '@', in the database name or a parameter's name; the error, which
// callers log, must not quote any of it (nor a bad percent-escape in it), and says to
// percent-escape. An '@' in a parameter's value, such as a password given as one, is
// taken.
func TestParseURLDoesNotQuoteAPassword(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		"postgres://app:s3cretpw?x@db.internal:5432/app",
		"postgres://app:s3cretpw#x@db.internal:5432/app",
		"postgres://app:s3cretpw/x@db.internal:5432/app",
		"postgresql://app:s3cretpw?x@db.internal/app",
		"postgres://app:2024/s3cretpw@db.internal/app",
		"postgres://app:2024?s3cretpw@db.internal/app",
		"postgres://app:s3cretpw%zz@db.internal/app", // a bad percent-escape
		"postgres://s3cretpw%zz:pw@db.internal/app",
	} {
		_, _, err := ffpostgres.ParseURL(raw)
		require.ErrorIs(t, err, fftype.ErrValidation, raw)
		require.NotContains(t, err.Error(), "s3cretpw", raw)
		require.NotContains(t, err.Error(), "%zz", raw)
		require.ErrorContains(t, err, "percent-escape", raw)
	}
	_, _, err := ffpostgres.ParseURL("postgres://app@db.internal/app?password=s3cret@pw")
	require.NoError(t, err)
}
