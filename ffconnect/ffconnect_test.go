package ffconnect_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffconnect"
	"github.com/flowfabric/flowfabric/ffstore/ffmem"
	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	for _, url := range []string{"mem:", "mem://", "MEM:"} {
		s, err := ffconnect.Open(ctx, url, nil)
		require.NoError(t, err, url)
		require.IsType(t, &ffmem.Store{}, s)
		require.NoError(t, s.Close())
	}
	path := filepath.Join(t.TempDir(), "ff.db")
	s, err := ffconnect.Open(ctx, "sqlite://"+path+"?shards=3", nil)
	require.NoError(t, err)
	require.IsType(t, &ffsqlite.Store{}, s)
	require.Equal(t, 3, s.Shards())
	require.NoError(t, s.Close())

	for _, bad := range []string{"", "nope", "mysql://db", "mem:/x", "sqlite://host/path.db", "sqlite:"} {
		_, err := ffconnect.Open(ctx, bad, nil)
		require.ErrorIs(t, err, fftype.ErrValidation, bad)
	}
	_, err = ffconnect.Open(ctx, "https://ff.example.com", nil)
	require.ErrorIs(t, err, fftype.ErrValidation)
	require.ErrorContains(t, err, "flowfabric.NewWorker", "a server's URL is refused with a hint at the remote worker")
}

// TestOpenFailureReturnsNoStore pins that a failed Open returns a nil interface, not an
// ffstore.Store holding a nil store, so that the usual `if s != nil { s.Close() }` is safe.
// (require.Nil would take a nil pointer in the interface for nil, hence the == nil.)
func TestOpenFailureReturnsNoStore(t *testing.T) {
	t.Parallel()
	for name, url := range map[string]string{
		"sqlite":   "sqlite://" + filepath.Join(t.TempDir(), "missing-dir", "ff.db"),
		"postgres": "postgres://app@127.0.0.1:1/db?sslmode=bogus",
		"redis":    "redis://127.0.0.1:1?bogus=1",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := ffconnect.Open(t.Context(), url, nil)
			require.Error(t, err)
			require.Truef(t, s == nil, "Open failed (%v) but returned the store %#v", err, s)
		})
	}
}

// TestOpenDoesNotEchoAPassword pins that a refused store URL's error, which the CLI prints,
// does not repeat a password it holds: a libpq key=value string (another common way to
// write a Postgres DSN) has no scheme, also when a value holds a ':'; a server's URL may
// carry userinfo; and a password holding an unescaped '?', '#' or '/' is cut short, its
// rest read as a port, the database or a parameter.
func TestOpenDoesNotEchoAPassword(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"host=db user=app password=hunter2 dbname=app",
		"user=app password=hunter2:x host=db",
		"https://app:hunter2@ff.example.com",
		"postgres://app:hunter2?x@db.internal:5432/app",
		"postgres://app:hunter2#x@db.internal:5432/app",
		"postgres://app:hunter2/x@db.internal:5432/app",
		"postgresql://app:hunter2?x@db.internal/app",
		"redis://:2024/hunter2@cache.internal:6379/0",
		"redis://default:2024?hunter2@cache.internal:6379",
	} {
		_, err := ffconnect.Open(t.Context(), bad, nil)
		require.ErrorIs(t, err, fftype.ErrValidation, bad)
		require.NotContains(t, err.Error(), "hunter2")
	}
}

func TestConnect(t *testing.T) {
	t.Parallel()

	t.Run("RefusesAConfigWithoutStore", func(t *testing.T) {
		t.Parallel()
		_, err := ffconnect.Connect(t.Context(), &flowfabric.WorkerConfig{WorkerID: "w", Lanes: []string{"l"}}, nil)
		var ce *flowfabric.ConfigError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "store", ce.Field)

		_, err = ffconnect.Connect(t.Context(), &flowfabric.WorkerConfig{Store: "mem:", WorkerID: "w"}, nil)
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "lanes", ce.Field, "the config is checked before the store is opened")

		_, err = ffconnect.Connect(t.Context(), &flowfabric.WorkerConfig{Store: "bogus:", WorkerID: "w", Lanes: []string{"l"}}, nil)
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "store", ce.Field)
	})

	t.Run("RunsOnSQLiteAndOwnsTheStore", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		url := "sqlite://" + filepath.Join(t.TempDir(), "ff.db")
		cfg := &flowfabric.WorkerConfig{Store: url, WorkerID: "w", WorkerInstanceID: "only", Lanes: []string{"l"}}
		w, err := ffconnect.Connect(ctx, cfg, nil)
		require.NoError(t, err)
		require.Equal(t, url, w.Config().Store)
		feed := w.Completions()
		require.NotNil(t, feed, "SQLite pushes changes, so the worker has a completion feed")

		_, err = ffconnect.Connect(ctx, cfg, nil)
		require.ErrorIs(t, err, flowfabric.ErrDuplicateWorkerInstance, "a second process with the instance id is refused")

		flowfabric.Handle(w, "double", func(ctx context.Context, t *flowfabric.Task[int]) error {
			return t.Complete(ctx, []byte{byte('0' + 2*t.Args)})
		})
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		res, err := w.Client().Create(ctx, flowfabric.CreateParams{Lane: "l", Kind: "double", Payload: []byte("3")})
		require.NoError(t, err)
		d := <-feed.Events()
		require.Equal(t, res.ID, d.Event.ExecutionID)
		require.Equal(t, fftype.EventCompleted, d.Event.Type)
		out, err := w.Client().Result(ctx, res.ID)
		require.NoError(t, err)
		require.Equal(t, "6", string(out))

		require.NoError(t, w.Stop(ctx))
		require.NoError(t, <-done)
		store := w.Client()
		require.NoError(t, w.Close(ctx))
		_, err = store.Get(context.Background(), res.ID)
		require.Error(t, err, "Close closed the store the worker opened")

		again, err := ffconnect.Connect(ctx, cfg, nil)
		require.NoError(t, err, "Close released the instance id")
		require.NoError(t, again.Close(ctx))
	})
}

// TestKindOf pins the store each scheme selects, in any case, and the schemes refused.
func TestKindOf(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]ffconnect.Kind{
		"sqlite:///x.db": ffconnect.KindSQLite, "SQLite:x.db": ffconnect.KindSQLite,
		"mem:": ffconnect.KindMem, "MEM://": ffconnect.KindMem,
		"postgres://h/db": ffconnect.KindPostgres, "PostgreSQL://h/db": ffconnect.KindPostgres,
		"redis://h": ffconnect.KindValkey, "Rediss+Cluster://h": ffconnect.KindValkey, "valkey://h": ffconnect.KindValkey,
	} {
		got, err := ffconnect.KindOf(url)
		require.NoError(t, err, url)
		require.Equal(t, want, got, url)
	}
	for _, bad := range []string{"", "mem", "mysql://db", "https://ff.example.com", "host=db password=x"} {
		_, err := ffconnect.KindOf(bad)
		require.ErrorIs(t, err, fftype.ErrValidation, bad)
	}
}

// TestOpenRefusesAHash pins that every store refuses a URL holding a '#', also where it
// ends the URL: the fragment is then empty, and a check for a fragment let it by, so that
// sqlite://…/run# opened (and created) the file …/run. Refused while parsing, no store is
// reached.
func TestOpenRefusesAHash(t *testing.T) {
	t.Parallel()
	dir := filepath.ToSlash(t.TempDir())
	for _, url := range []string{
		"sqlite://" + dir + "/run#", "sqlite://" + dir + "/run#x", "sqlite:" + dir + "/run#", "sqlite://" + dir + "/run?shards=2#",
		"postgres://app@127.0.0.1:1/db#", "postgres://app@127.0.0.1:1/db?schema=s#",
		"redis://127.0.0.1:1#", "redis://127.0.0.1:1/0#", "redis://127.0.0.1:1?prefix=p#",
	} {
		s, err := ffconnect.Open(t.Context(), url, nil)
		if s != nil {
			require.NoError(t, s.Close())
		}
		require.ErrorIs(t, err, fftype.ErrValidation, url)
		require.ErrorContains(t, err, "'#'", url)
	}
	_, err := os.Stat(filepath.Join(dir, "run"))
	require.ErrorIs(t, err, os.ErrNotExist, "a URL ending in '#' created the file it names without it")
}

// TestMigrate: Migrate brings each kind of store up to date the way the kind's own
// migration does, and refuses a schema for a store that has none, opening nothing.
func TestMigrate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ff.db")
	err := ffconnect.Migrate(t.Context(), "sqlite://"+path, &ffconnect.MigrateOpts{Schema: "ff"})
	require.ErrorIs(t, err, fftype.ErrValidation)
	require.NoFileExists(t, path, "a refused migration opens nothing")
	require.NoError(t, ffconnect.Migrate(t.Context(), "sqlite://"+path+"?shards=3", nil))
	s, err := ffconnect.Open(t.Context(), "sqlite://"+path, nil)
	require.NoError(t, err)
	require.Equal(t, 3, s.Shards(), "a new SQLite store is created with the URL's count")
	require.NoError(t, s.Close())
	require.NoError(t, ffconnect.Migrate(t.Context(), "mem:", nil))
	require.ErrorIs(t, ffconnect.Migrate(t.Context(), "http://x", nil), fftype.ErrValidation)

	// Postgres: the schema given, migrated, is one Open then takes without migrating.
	schema := testdb.Schema(t)
	pg := testdb.SharedPostgres(t).URL("postgres") + "&schema=" + schema
	_, err = ffconnect.Open(t.Context(), pg, nil)
	require.Error(t, err, "not migrated yet")
	require.NoError(t, ffconnect.Migrate(t.Context(), pg, &ffconnect.MigrateOpts{Schema: schema}))
	s, err = ffconnect.Open(t.Context(), pg, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	// Redis: the library is loaded, and no schema is taken.
	redis := testdb.SharedRedis(t).URL(0) + "?prefix=" + testdb.RedisPrefix(t)
	require.ErrorIs(t, ffconnect.Migrate(t.Context(), redis, &ffconnect.MigrateOpts{Schema: "ff"}), fftype.ErrValidation)
	require.NoError(t, ffconnect.Migrate(t.Context(), redis, nil))
	s, err = ffconnect.Open(t.Context(), redis, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
}
