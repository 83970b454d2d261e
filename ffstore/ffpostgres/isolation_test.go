package ffpostgres_test

import (
	"context"
	"strings"
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

// TestReadCommittedWhateverTheDefault pins that the store's transactions run at READ
// COMMITTED, which its locking relies on, in a database whose
// default_transaction_isolation (an administrator's policy) is stricter. There, a
// statement that waited for a row another transaction changed, or finds a row deleted
// since its transaction's snapshot, fails with a serialization failure instead of reading
// the row as it now is.
func TestReadCommittedWhateverTheDefault(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"repeatable read", "serializable"} {
		t.Run(strings.ReplaceAll(level, " ", "_"), func(t *testing.T) {
			t.Parallel()

			type testBundle struct {
				ctx    context.Context
				url    string // a fresh database whose default is level
				schema string
				admin  *pgx.Conn // the test's own connection to that database
				watch  *pgx.Conn // another, outside transactions, for lockWaiters
			}
			setup := func(t *testing.T) *testBundle {
				t.Helper()
				ctx := t.Context()
				url, err := testdb.SharedPostgres(t).CreateDatabase(ctx)
				require.NoError(t, err)
				admin, err := pgx.Connect(ctx, url)
				require.NoError(t, err)
				t.Cleanup(func() { _ = admin.Close(context.Background()) })
				watch, err := pgx.Connect(ctx, url)
				require.NoError(t, err)
				t.Cleanup(func() { _ = watch.Close(context.Background()) })
				_, err = admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{databaseOf(url)}.Sanitize()+
					" SET default_transaction_isolation = '"+level+"'")
				require.NoError(t, err)
				return &testBundle{ctx: ctx, url: url, schema: testdb.Schema(t), admin: admin, watch: watch}
			}
			open := func(t *testing.T, b *testBundle) *ffpostgres.Store {
				t.Helper()
				s, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 1, PoolSize: 4})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				return s
			}

			// A unit that waited for another's record lock reads the record as the other
			// unit wrote it.
			t.Run("UnitReadsTheWriteItWaitedFor", func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				s := open(t, b)
				require.NoError(t, s.Update(b.ctx, 0, func(tx ffstore.Tx) error { tx.Put("counter", []byte("0")); return nil }))
				read, release := make(chan struct{}), make(chan struct{})
				firstDone := make(chan error, 1)
				go func() {
					firstDone <- s.Update(b.ctx, 0, func(tx ffstore.Tx) error {
						v, _, err := tx.Get("counter")
						if err != nil {
							return err
						}
						close(read)
						<-release
						tx.Put("counter", append(v, '+'))
						return nil
					})
				}()
				<-read
				secondDone := make(chan error, 1)
				var seen string
				go func() {
					secondDone <- s.Update(b.ctx, 0, func(tx ffstore.Tx) error {
						if _, _, err := tx.Get("other"); err != nil { // the transaction's first statement
							return err
						}
						v, _, err := tx.Get("counter")
						seen = string(v)
						tx.Put("counter", append(v, '*'))
						return err
					})
				}()
				require.Eventually(t, lockWaiters(t, b.watch, 1), 10*time.Second, 5*time.Millisecond)
				close(release)
				require.NoError(t, <-firstDone)
				require.NoError(t, <-secondDone)
				require.Equal(t, "0+", seen)
			})

			// A pop skips the items another unit popped since the popping unit began.
			t.Run("PopSkipsItemsPoppedMeanwhile", func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				s := open(t, b)
				require.NoError(t, s.Update(b.ctx, 0, func(tx ffstore.Tx) error {
					tx.QueueAdd("q", "m1", 1)
					tx.QueueAdd("q", "m2", 2)
					return nil
				}))
				var got []ffstore.QueueItem
				require.NoError(t, s.Update(b.ctx, 0, func(tx ffstore.Tx) error {
					if _, _, err := tx.Get("k"); err != nil { // the transaction's first statement
						return err
					}
					if err := s.Update(b.ctx, 0, func(tx ffstore.Tx) error {
						_, err := tx.PopDue("q", ffstore.MaxScore, 1)
						return err
					}); err != nil {
						return err
					}
					var err error
					got, err = tx.PopDue("q", ffstore.MaxScore, 1)
					return err
				}))
				require.Equal(t, []ffstore.QueueItem{{Member: "m2", Score: 2}}, got)
			})

			// The event log's sequencer and trim wait for the shard's event_logs row, which
			// the other one changes; here the test changes it. The store is New's, on a
			// pool of the caller's, so that its transactions also set the statement timeout.
			t.Run("EventLogWaitsForItsRow", func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				pool, err := pgxpool.New(b.ctx, b.url)
				require.NoError(t, err)
				defer pool.Close()
				s, err := ffpostgres.New(pool, &ffpostgres.Options{Schema: b.schema, Migrate: true, Shards: 1, StatementTimeout: 20 * time.Second})
				require.NoError(t, err)
				defer s.Close()
				require.NoError(t, s.Update(b.ctx, 0, func(tx ffstore.Tx) error {
					tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventCreated})
					return nil
				}))
				// holdLog runs call while the test holds the event_logs row of shard 0 with
				// a change, committed once call waits for it.
				holdLog := func(call func() error) error {
					_, err := b.admin.Exec(b.ctx, "BEGIN")
					require.NoError(t, err)
					_, err = b.admin.Exec(b.ctx, "UPDATE "+pgx.Identifier{b.schema}.Sanitize()+".event_logs SET last_seq = last_seq WHERE shard = 0")
					require.NoError(t, err)
					done := make(chan error, 1)
					go func() { done <- call() }()
					require.Eventually(t, lockWaiters(t, b.watch, 1), 10*time.Second, 5*time.Millisecond)
					_, err = b.admin.Exec(b.ctx, "COMMIT")
					require.NoError(t, err)
					return <-done
				}
				var evs []fftype.Event
				require.NoError(t, holdLog(func() (err error) {
					evs, err = s.ReadEvents(b.ctx, 0, 0, 10)
					return err
				}), "numbering the waiting events")
				require.Len(t, evs, 1)
				require.NoError(t, holdLog(func() error { return s.TrimEvents(b.ctx, 0, 1) }), "raising the trim point")
				trimmed, last, err := s.EventBounds(b.ctx, 0)
				require.NoError(t, err)
				require.Equal(t, [2]uint64{1, 1}, [2]uint64{trimmed, last})
			})

			// Migrations wait for each other under an advisory lock; the one that waited
			// reads the schema as the other left it, and has nothing left to do.
			t.Run("MigrationsWaitForEachOther", func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				_, err := b.admin.Exec(b.ctx, "SELECT pg_advisory_lock($1)", ffpostgres.MigrateLockKey(b.schema))
				require.NoError(t, err)
				done := make(chan error, 2)
				for range 2 {
					go func() { done <- ffpostgres.MigrateURL(b.ctx, b.url, b.schema) }()
				}
				require.Eventually(t, lockWaiters(t, b.watch, 2), 10*time.Second, 5*time.Millisecond)
				_, err = b.admin.Exec(b.ctx, "SELECT pg_advisory_unlock($1)", ffpostgres.MigrateLockKey(b.schema))
				require.NoError(t, err)
				require.NoError(t, <-done)
				require.NoError(t, <-done)
			})

			// The first opens of a schema agree on its shard count: an open that waited
			// for another's insert of the count reads it.
			t.Run("FirstOpensAgreeOnShards", func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				require.NoError(t, ffpostgres.MigrateURL(b.ctx, b.url, b.schema))
				_, err := b.admin.Exec(b.ctx, "BEGIN")
				require.NoError(t, err)
				_, err = b.admin.Exec(b.ctx, "INSERT INTO "+pgx.Identifier{b.schema}.Sanitize()+".meta (name, value) VALUES ('shards', 3)")
				require.NoError(t, err)
				done := make(chan error, 1)
				var shards int
				go func() {
					s, err := ffpostgres.Open(b.ctx, b.url, &ffpostgres.Options{Schema: b.schema})
					if err == nil {
						shards = s.Shards()
						err = s.Close()
					}
					done <- err
				}()
				require.Eventually(t, lockWaiters(t, b.watch, 1), 10*time.Second, 5*time.Millisecond)
				_, err = b.admin.Exec(b.ctx, "COMMIT")
				require.NoError(t, err)
				require.NoError(t, <-done)
				require.Equal(t, 3, shards)
			})
		})
	}
}

// databaseOf returns the database named by a URL of [testdb.Postgres].
func databaseOf(url string) string {
	return url[strings.LastIndex(url, "/")+1 : strings.Index(url, "?")]
}

// lockWaiters reports whether at least n backends of conn's database wait for a lock.
// conn must not be in a transaction, which would keep reading its first snapshot of the
// activity.
func lockWaiters(t *testing.T, conn *pgx.Conn, n int) func() bool {
	return func() bool {
		var waiting int
		err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting >= n
	}
}
