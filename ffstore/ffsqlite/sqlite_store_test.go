package ffsqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffsqlite"
	"github.com/flowfabric/flowfabric/ffstore/ffstoretest"
	"github.com/flowfabric/flowfabric/fftype"
)

// openTemp opens a fresh store in t's temporary directory and closes it at cleanup.
func openTemp(t *testing.T, opts *ffsqlite.Options) *ffsqlite.Store {
	t.Helper()
	s, err := ffsqlite.Open(t.Context(), filepath.Join(t.TempDir(), "ff.db"), opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return openTemp(t, &ffsqlite.Options{Shards: 3}) })
}

func isCode(kind fftype.Kind, code string) error { return &fftype.Error{Kind: kind, Code: code} }

// rawExec runs statements on the file with a plain connection, behind the store's back.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer db.Close()
	for _, q := range stmts {
		_, err := db.Exec(q)
		require.NoError(t, err, q)
	}
}

// rawInt reads one integer from the file with a plain connection.
func rawInt(t *testing.T, path, query string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer db.Close()
	var n int64
	require.NoError(t, db.QueryRow(query).Scan(&n), query)
	return n
}

func TestReopen(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		path string
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		return &testBundle{path: filepath.Join(t.TempDir(), "ff.db")}
	}
	ctx := context.Background()
	evTime := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

	t.Run("DataSurvives", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s, err := ffsqlite.Open(ctx, b.path, &ffsqlite.Options{Shards: 2})
		require.NoError(t, err)
		for shard := range 2 {
			require.NoError(t, s.Update(ctx, shard, func(tx ffstore.Tx) error {
				tx.Put("k", []byte(fmt.Sprint("v", shard)))
				tx.Put("empty", nil)
				tx.QueueAdd("q:a", "m1", 10)
				tx.QueueAdd("q:a", "m0", 10)
				tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventCreated, Time: evTime, ExecutionID: "x", Namespace: "ns", Lane: "l", Data: []byte(`{"a":1}`)})
				tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventClaimed})
				return nil
			}))
		}
		require.NoError(t, s.Close())

		s, err = ffsqlite.Open(ctx, b.path, nil)
		require.NoError(t, err)
		defer s.Close()
		require.Equal(t, 2, s.Shards())
		for shard := range 2 {
			require.NoError(t, s.View(ctx, shard, func(tx ffstore.ReadTx) error {
				v, ok, err := tx.Get("k")
				require.NoError(t, err)
				require.True(t, ok)
				require.Equal(t, fmt.Sprint("v", shard), string(v))
				v, ok, err = tx.Get("empty")
				require.NoError(t, err)
				require.True(t, ok)
				require.Empty(t, v)
				items, err := tx.Range("q:a", nil, ffstore.MaxScore, 10)
				require.NoError(t, err)
				require.Equal(t, []ffstore.QueueItem{{Member: "m0", Score: 10}, {Member: "m1", Score: 10}}, items)
				return nil
			}))
			evs, err := s.ReadEvents(ctx, shard, 0, 10)
			require.NoError(t, err)
			require.Equal(t, []fftype.Event{
				{Seq: 1, Shard: shard, Version: 1, Type: fftype.EventCreated, Time: evTime, ExecutionID: "x", Namespace: "ns", Lane: "l", Data: []byte(`{"a":1}`)},
				{Seq: 2, Shard: shard, Version: 1, Type: fftype.EventClaimed},
			}, evs)
		}
		heads, err := s.QueueHeads(ctx, []string{"q:"})
		require.NoError(t, err)
		require.ElementsMatch(t, []ffstore.QueueHead{
			{Shard: 0, Queue: "q:a", Item: ffstore.QueueItem{Member: "m0", Score: 10}},
			{Shard: 1, Queue: "q:a", Item: ffstore.QueueItem{Member: "m0", Score: 10}},
		}, heads)

		// Sequences continue after the reopen.
		require.NoError(t, s.Update(ctx, 1, func(tx ffstore.Tx) error {
			tx.AppendEvent(fftype.Event{Type: fftype.EventCompleted})
			return nil
		}))
		evs, err := s.ReadEvents(ctx, 1, 2, 10)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, uint64(3), evs[0].Seq)
	})

	t.Run("ShardCountFixed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s, err := ffsqlite.Open(ctx, b.path, &ffsqlite.Options{Shards: 4})
		require.NoError(t, err)
		require.NoError(t, s.Close())

		_, err = ffsqlite.Open(ctx, b.path, &ffsqlite.Options{Shards: 2})
		require.ErrorIs(t, err, isCode(fftype.KindValidation, ffsqlite.CodeShardCountMismatch))

		s, err = ffsqlite.Open(ctx, b.path, &ffsqlite.Options{Shards: 4})
		require.NoError(t, err)
		require.Equal(t, 4, s.Shards())
		require.NoError(t, s.Close())
	})

	t.Run("SchemaTooNew", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s, err := ffsqlite.Open(ctx, b.path, nil)
		require.NoError(t, err)
		require.NoError(t, s.Close())
		rawExec(t, b.path, fmt.Sprintf(`UPDATE meta SET value = %d WHERE name = 'schema_version'`, ffsqlite.SchemaVersion+1))

		_, err = ffsqlite.Open(ctx, b.path, nil)
		require.ErrorIs(t, err, isCode(fftype.KindUnavailable, ffsqlite.CodeSchemaTooNew))
		require.False(t, fftype.IsRetryable(err))
	})

	// SQLite files of other applications are refused, however much they look like a
	// store (a table named meta is a common name, and so is a schema_version row in it),
	// and left as they were: not even switched to WAL mode.
	t.Run("NotAStore", func(t *testing.T) {
		t.Parallel()
		for _, tt := range []struct {
			name  string
			stmts []string
		}{
			{"OtherTable", []string{`CREATE TABLE other (x)`}},
			{"MetaTable", []string{`CREATE TABLE meta (id INTEGER PRIMARY KEY, data TEXT)`}},
			{"MetaWithSchemaVersion", []string{
				`CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER)`,
				`INSERT INTO meta VALUES ('schema_version', 1)`,
			}},
			{"OtherApplicationID", []string{`PRAGMA application_id = 1234`}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				rawExec(t, b.path, tt.stmts...)
				before, err := os.ReadFile(b.path)
				require.NoError(t, err)
				_, err = ffsqlite.Open(ctx, b.path, nil)
				require.ErrorIs(t, err, isCode(fftype.KindValidation, ffsqlite.CodeNotAStore), "%v", err)
				require.ErrorContains(t, err, b.path, "the error names the file")
				after, err := os.ReadFile(b.path)
				require.NoError(t, err)
				require.Equal(t, before, after, "a refused Open changed the file")
				require.NoFileExists(t, b.path+"-wal")
			})
		}
	})

	// A store created before stores carried their application id opens, and gets it.
	t.Run("WithoutApplicationID", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s, err := ffsqlite.Open(ctx, b.path, &ffsqlite.Options{Shards: 2})
		require.NoError(t, err)
		require.NoError(t, s.Update(ctx, 1, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
		require.NoError(t, s.Close())
		require.Equal(t, ffsqlite.ApplicationID, rawInt(t, b.path, `PRAGMA application_id`), "a new store carries the id")
		rawExec(t, b.path, `PRAGMA application_id = 0`)

		s, err = ffsqlite.Open(ctx, b.path, nil)
		require.NoError(t, err)
		defer s.Close()
		require.Equal(t, 2, s.Shards())
		require.NoError(t, s.View(ctx, 1, func(tx ffstore.ReadTx) error {
			v, ok, err := tx.Get("k")
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, "v", string(v))
			return nil
		}))
		require.Equal(t, ffsqlite.ApplicationID, rawInt(t, b.path, `PRAGMA application_id`))
	})

	t.Run("NotADatabase", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, os.WriteFile(b.path, []byte("this is not an sqlite file, just some text that is long enough"), 0o600))
		_, err := ffsqlite.Open(ctx, b.path, nil)
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		require.ErrorContains(t, err, b.path, "the error names the file")
	})

	// A path whose directory does not exist (a typo, most often) is bad input, and the
	// error names the file; a file that cannot be opened is named too.
	t.Run("CannotOpen", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		dir := filepath.Dir(b.path)
		require.NoError(t, os.WriteFile(b.path, nil, 0o600))
		for _, path := range []string{filepath.Join(dir, "no-such-dir", "ff.db"), filepath.Join(b.path, "ff.db")} {
			_, err := ffsqlite.Open(ctx, path, nil)
			require.ErrorIs(t, err, fftype.ErrValidation, path)
			require.False(t, fftype.IsRetryable(err))
			require.ErrorContains(t, err, path)
			require.ErrorContains(t, err, "does not exist")
		}
		_, err := ffsqlite.Open(ctx, dir, nil)
		require.ErrorIs(t, err, fftype.ErrUnavailable, "a directory is no database file")
		require.False(t, fftype.IsRetryable(err))
		require.ErrorContains(t, err, dir)
	})
}

func TestOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		path string
		opts *ffsqlite.Options
	}{
		{"Empty", "", nil},
		{"Memory", ":memory:", nil},
		{"ShardsTooMany", "a.db", &ffsqlite.Options{Shards: fftype.MaxShards + 1}},
		{"ShardsNegative", "a.db", &ffsqlite.Options{Shards: -1}},
		{"Synchronous", "a.db", &ffsqlite.Options{Synchronous: "off"}},
		{"BusyTimeout", "a.db", &ffsqlite.Options{BusyTimeout: -1}},
		{"BusyTimeoutOver32Bits", "a.db", &ffsqlite.Options{BusyTimeout: 30 * 24 * time.Hour}},
		{"PathWithNUL", "a.db\x00other.db", nil}, // SQLite would stop at the NUL and open a.db
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := tt.path
			if path != "" && path != ":memory:" {
				path = filepath.Join(dir, tt.name+path)
			}
			_, err := ffsqlite.Open(context.Background(), path, tt.opts)
			require.ErrorIs(t, err, fftype.ErrValidation)
			if path != "" && path != ":memory:" {
				_, err := os.Stat(strings.Split(path, "\x00")[0])
				require.ErrorIs(t, err, fs.ErrNotExist, "a refused Open creates no file")
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url     string
		path    string
		opts    *ffsqlite.Options
		wantErr bool
	}{
		{url: "sqlite:///var/lib/ff.db", path: "/var/lib/ff.db", opts: &ffsqlite.Options{}},
		{url: "sqlite:ff.db", path: "ff.db", opts: &ffsqlite.Options{}},
		{url: "sqlite:dir/my%20ff.db", path: "dir/my ff.db", opts: &ffsqlite.Options{}},
		{
			url:  "sqlite:///x.db?shards=4&synchronous=NORMAL&busy_timeout=250ms&checkpoint_bytes=1048576&read_conns=2",
			path: "/x.db",
			opts: &ffsqlite.Options{Shards: 4, Synchronous: ffsqlite.SynchronousNormal, BusyTimeout: 250 * time.Millisecond, CheckpointBytes: 1 << 20, ReadConns: 2},
		},
		{url: "postgres:///x.db", wantErr: true},
		{url: "sqlite://host/x.db", wantErr: true},
		{url: "sqlite://", wantErr: true},
		{url: "sqlite:///x.db?nope=1", wantErr: true},
		{url: "sqlite:///x.db?shards=x", wantErr: true},
		{url: "sqlite:///x.db?shards=1&shards=2", wantErr: true},
		{url: "sqlite:///x.db?synchronous=off", wantErr: true},
		{url: "sqlite:///x.db?busy_timeout=5", wantErr: true},
		{url: "sqlite:///x.db?busy_timeout=900h", wantErr: true}, // over the 2^31-1 ms SQLite takes
		{url: "sqlite:///x.db?synchronous=normal;shards=4", wantErr: true},
		{url: "sqlite:///x.db?shards=%zz", wantErr: true},
		{url: "sqlite:///x.db?%zz=1", wantErr: true},
		{url: "sqlite:///x#1.db", wantErr: true},
		{url: "sqlite:///x.db#", wantErr: true}, // an empty fragment still cuts the path
	} {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			path, opts, err := ffsqlite.ParseURL(tt.url)
			if tt.wantErr {
				require.ErrorIs(t, err, fftype.ErrValidation)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.path, path)
			require.Equal(t, tt.opts, opts)
		})
	}

	t.Run("OpenURL", func(t *testing.T) {
		t.Parallel()
		s, err := ffsqlite.OpenURL(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "u.db")+"?shards=3&synchronous=normal")
		require.NoError(t, err)
		defer s.Close()
		require.Equal(t, 3, s.Shards())
	})
}

var errBoom = errors.New("boom")

// TestGroupCommit drives many concurrent units, some failing, and checks that a unit's
// failure undoes only its own writes although units share group commits.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, nil)

	const goroutines, perGoroutine = 32, 20
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				id := fmt.Sprintf("%d-%d", g, i)
				fail := (g+i)%3 == 0
				err := s.Update(ctx, 0, func(tx ffstore.Tx) error {
					tx.Put("rec:"+id, []byte(id))
					tx.QueueAdd("q", id, int64(i))
					tx.AppendEvent(fftype.Event{Type: fftype.EventCreated, Data: []byte(`"` + id + `"`)})
					if fail {
						return fmt.Errorf("unit %s: %w", id, errBoom)
					}
					return nil
				})
				if fail && !errors.Is(err, errBoom) || !fail && err != nil {
					t.Errorf("unit %s (fail=%v): %v", id, fail, err)
				}
			}
		})
	}
	wg.Wait()

	units := int64(goroutines * perGoroutine)
	commits := ffsqlite.Commits(s)
	t.Logf("%d units in %d group commits", units, commits)
	require.Less(t, commits, units, "no unit shared a commit")

	var want []string
	require.NoError(t, s.View(ctx, 0, func(tx ffstore.ReadTx) error {
		for g := range goroutines {
			for i := range perGoroutine {
				id := fmt.Sprintf("%d-%d", g, i)
				_, ok, err := tx.Get("rec:" + id)
				require.NoError(t, err)
				require.Equal(t, (g+i)%3 != 0, ok, id)
				if ok {
					want = append(want, id)
				}
			}
		}
		items, err := tx.Range("q", nil, ffstore.MaxScore, 10_000)
		require.NoError(t, err)
		require.Len(t, items, len(want))
		return nil
	}))
	evs, err := s.ReadEvents(ctx, 0, 0, 10_000)
	require.NoError(t, err)
	require.Len(t, evs, len(want))
	var got []string
	for i, ev := range evs {
		require.Equal(t, uint64(i+1), ev.Seq, "sequence has a gap")
		got = append(got, string(ev.Data[1:len(ev.Data)-1]))
	}
	require.ElementsMatch(t, want, got)
}

// TestWriterCache checks that the writer's record cache never serves a stale value: not
// after a unit that wrote the record was rolled back, and not after another connection
// (here a second Store on the same file) changed it.
func TestWriterCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ff.db")
	a, err := ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
	defer a.Close()
	b, err := ffsqlite.Open(ctx, path, nil)
	require.NoError(t, err)
	defer b.Close()

	put := func(s *ffsqlite.Store, v string, fail error) error {
		return s.Update(ctx, 0, func(tx ffstore.Tx) error {
			tx.Put("k", []byte(v))
			return fail
		})
	}
	get := func(s *ffsqlite.Store) string {
		var v []byte
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
			var err error
			v, _, err = tx.Get("k")
			return err
		}))
		return string(v)
	}

	require.NoError(t, put(a, "v1", nil))
	require.Equal(t, "v1", get(a))
	require.ErrorIs(t, put(a, "rolled back", errBoom), errBoom)
	require.Equal(t, "v1", get(a), "a rolled-back write is not served")

	// Units that share a group commit, one failing after its write.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			var fail error
			if i%2 == 1 {
				fail = errBoom
			}
			_ = a.Update(ctx, 0, func(tx ffstore.Tx) error {
				tx.Put(fmt.Sprint("g", i), []byte("x"))
				return fail
			})
		})
	}
	wg.Wait()
	require.NoError(t, a.Update(ctx, 0, func(tx ffstore.Tx) error {
		for i := range 8 {
			_, ok, err := tx.Get(fmt.Sprint("g", i))
			require.NoError(t, err)
			require.Equal(t, i%2 == 0, ok, "g%d", i)
		}
		return nil
	}))

	require.NoError(t, put(b, "v2", nil))
	require.Equal(t, "v2", get(a), "another connection's commit is seen")
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("PanicIsReraisedAndRolledBack", func(t *testing.T) {
		t.Parallel()
		s := openTemp(t, nil)
		require.PanicsWithValue(t, "kaboom", func() {
			_ = s.Update(ctx, 0, func(tx ffstore.Tx) error {
				tx.Put("k", []byte("v"))
				panic("kaboom")
			})
		})
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
			_, ok, err := tx.Get("k")
			require.NoError(t, err)
			require.False(t, ok)
			return nil
		}))
	})

	t.Run("CancelledContextRunsNothing", func(t *testing.T) {
		t.Parallel()
		s := openTemp(t, nil)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		ran := false
		err := s.Update(cctx, 0, func(tx ffstore.Tx) error { ran = true; return nil })
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, ran)
	})

	t.Run("TxAfterUnit", func(t *testing.T) {
		t.Parallel()
		s := openTemp(t, nil)
		var kept ffstore.Tx
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { kept = tx; return nil }))
		_, _, err := kept.Get("k")
		require.ErrorIs(t, err, fftype.ErrValidation)
		require.Panics(t, func() { kept.Put("k", nil) })
	})

	t.Run("ShardOutOfRange", func(t *testing.T) {
		t.Parallel()
		s := openTemp(t, &ffsqlite.Options{Shards: 2})
		err := s.Update(ctx, 2, func(tx ffstore.Tx) error { return nil })
		require.ErrorIs(t, err, isCode(fftype.KindValidation, fftype.CodeShardOutOfRange))
		err = s.View(ctx, -1, func(tx ffstore.ReadTx) error { return nil })
		require.ErrorIs(t, err, isCode(fftype.KindValidation, fftype.CodeShardOutOfRange))
		_, err = s.ReadEvents(ctx, 5, 0, 1)
		require.ErrorIs(t, err, isCode(fftype.KindValidation, fftype.CodeShardOutOfRange))
	})
}

func TestClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := ffsqlite.Open(ctx, filepath.Join(t.TempDir(), "ff.db"), nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	unavailable := isCode(fftype.KindUnavailable, fftype.CodeStoreUnavailable)
	require.ErrorIs(t, s.Close(), unavailable)
	require.ErrorIs(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { return nil }), unavailable)
	require.ErrorIs(t, s.View(ctx, 0, func(tx ffstore.ReadTx) error { return nil }), unavailable)
	_, err = s.QueueHeads(ctx, []string{""})
	require.ErrorIs(t, err, unavailable)
	_, err = s.ReadEvents(ctx, 0, 0, 1)
	require.ErrorIs(t, err, unavailable)
	_, err = s.Now(ctx)
	require.ErrorIs(t, err, unavailable)
	_, err = ffsqlite.Changed(ctx, s)
	require.ErrorIs(t, err, unavailable)
}

func TestChanged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, nil)

	changed, err := ffsqlite.Changed(ctx, s)
	require.NoError(t, err)
	require.True(t, changed, "first call")
	changed, err = ffsqlite.Changed(ctx, s)
	require.NoError(t, err)
	require.False(t, changed)

	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
	changed, err = ffsqlite.Changed(ctx, s)
	require.NoError(t, err)
	require.True(t, changed, "after a commit of this process")

	// A commit by another connection, as another process would make.
	other, err := ffsqlite.Open(ctx, s.Path(), nil)
	require.NoError(t, err)
	require.NoError(t, other.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("w")); return nil }))
	require.NoError(t, other.Close())
	changed, err = ffsqlite.Changed(ctx, s)
	require.NoError(t, err)
	require.True(t, changed, "after a commit of another store")
}

func TestQueueDirectoryPruned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, nil)
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		tx.QueueAdd("a", "m1", 1)
		tx.QueueAdd("a", "m2", 2)
		tx.QueueAdd("b", "m1", 1)
		return nil
	}))
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		items, err := tx.PopDue("a", ffstore.MaxScore, 10)
		require.NoError(t, err)
		require.Len(t, items, 2)
		tx.QueueRemove("b", "m1")
		return nil
	}))
	heads, err := s.QueueHeads(ctx, []string{""})
	require.NoError(t, err)
	require.Empty(t, heads)

	db, err := sql.Open("sqlite", s.Path())
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM queues`).Scan(&n))
	require.Zero(t, n, "directory rows of empty queues")
}

func TestIdleCheckpoint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opts := &ffsqlite.Options{}
	ffsqlite.SetIdleCheckpointDelay(opts, 10*time.Millisecond)
	s := openTemp(t, opts)
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		tx.Put("k", make([]byte, 64<<10))
		return nil
	}))
	walSize := func() int64 {
		fi, err := os.Stat(s.Path() + "-wal")
		require.NoError(t, err)
		return fi.Size()
	}
	require.Eventually(t, func() bool { return walSize() == 0 }, 10*time.Second, 5*time.Millisecond)
}

// TestBusy holds SQLite's write lock from another connection, as another process would:
// units fail with a retryable unavailable error after the busy timeout, reads go on, and
// units succeed again once the lock is released.
func TestBusy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, &ffsqlite.Options{BusyTimeout: 50 * time.Millisecond})
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))

	db, err := sql.Open("sqlite", s.Path())
	require.NoError(t, err)
	defer db.Close()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
	require.NoError(t, err)

	ran := false
	err = s.Update(ctx, 0, func(tx ffstore.Tx) error { ran = true; return nil })
	require.ErrorIs(t, err, isCode(fftype.KindUnavailable, fftype.CodeStoreUnavailable))
	require.True(t, fftype.IsRetryable(err))
	require.False(t, ran)
	requireValue(t, s, "k", "v")

	_, err = conn.ExecContext(ctx, "ROLLBACK")
	require.NoError(t, err)
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("w")); return nil }))
	requireValue(t, s, "k", "w")
}

func requireValue(t *testing.T, s *ffsqlite.Store, key, want string) {
	t.Helper()
	require.NoError(t, s.View(context.Background(), 0, func(tx ffstore.ReadTx) error {
		v, ok, err := tx.Get(key)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, want, string(v))
		return nil
	}))
}

// TestCheckpointBoundsWAL writes far more than CheckpointBytes with no idle time: the
// write-ahead log is checkpointed as it passes the bound and stays near it.
func TestCheckpointBoundsWAL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const bound = 256 << 10
	opts := &ffsqlite.Options{CheckpointBytes: bound}
	ffsqlite.SetIdleCheckpointDelay(opts, time.Hour)
	s := openTemp(t, opts)
	value := make([]byte, 16<<10)
	var largest int64
	for i := range 256 { // 4 MiB of values
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
			tx.Put(fmt.Sprint("k", i%64), value)
			return nil
		}))
		fi, err := os.Stat(s.Path() + "-wal")
		require.NoError(t, err)
		largest = max(largest, fi.Size())
	}
	t.Logf("largest WAL file: %d bytes", largest)
	require.Less(t, largest, int64(2*bound))
}

// TestConcurrentOpen opens a new file from several stores at once, as processes starting
// together would: exactly one creates the schema and all agree on it.
func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ff.db")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s, err := ffsqlite.Open(context.Background(), path, &ffsqlite.Options{Shards: 2})
			if !assertNoError(t, err) {
				return
			}
			defer s.Close()
			if s.Shards() != 2 {
				t.Errorf("Shards() = %d, want 2", s.Shards())
			}
		})
	}
	wg.Wait()
}

// assertNoError reports err from a goroutine other than the test's, where require must
// not be used.
func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestIdleCheckpointDoesNotHoldTheWriter: the idle checkpoint does not wait for a reader
// that still uses the log (its busy timeout is really 0 while it runs), so a unit that
// arrives meanwhile is not held for the busy timeout.
func TestIdleCheckpointDoesNotHoldTheWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const busy = 4 * time.Second
	opts := &ffsqlite.Options{BusyTimeout: busy}
	ffsqlite.SetIdleCheckpointDelay(opts, 10*time.Millisecond)
	s := openTemp(t, opts)
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("seed", []byte("x")); return nil }))

	inView, release, viewDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		viewDone <- s.View(ctx, 0, func(tx ffstore.ReadTx) error {
			if _, _, err := tx.Get("seed"); err != nil { // a reader on the log
				return err
			}
			close(inView)
			<-release
			return nil
		})
	}()
	<-inView
	defer func() { close(release); require.NoError(t, <-viewDone) }()
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
	time.Sleep(500 * time.Millisecond) // the writer is idle: its idle checkpoint has started

	start := time.Now()
	uctx, cancel := context.WithTimeout(ctx, busy/2)
	defer cancel()
	err := s.Update(uctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("w")); return nil })
	took := time.Since(start)
	t.Logf("an Update during the idle checkpoint took %s (busy timeout %s)", took, busy)
	require.NoError(t, err, "the writer was stuck in the idle checkpoint, waiting for the reader")
}

// TestSchemaUpgradedUnderARunningStore: a running store whose file another process (a
// newer binary, in a rolling upgrade) migrated past its schema stops writing, with the
// error Open gives for such a file.
func TestSchemaUpgradedUnderARunningStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, nil)
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))

	// A newer binary opens the same file and migrates it (here: only the version).
	rawExec(t, s.Path(), fmt.Sprintf(`UPDATE meta SET value = %d WHERE name = 'schema_version'`, ffsqlite.SchemaVersion+1))
	_, err := ffsqlite.Open(ctx, s.Path(), nil)
	require.ErrorIs(t, err, isCode(fftype.KindUnavailable, ffsqlite.CodeSchemaTooNew), "a new Open is refused")

	err = s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("w")); return nil })
	require.ErrorIs(t, err, isCode(fftype.KindUnavailable, ffsqlite.CodeSchemaTooNew),
		"the running store still writes into a file of a newer schema")
}
