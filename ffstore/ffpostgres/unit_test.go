package ffpostgres_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffpostgres"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// waitingForLock reports whether some backend of the schema's database is waiting for a
// lock while running a statement that mentions needle.
func waitingForLock(t *testing.T, needle string) func() bool {
	return func() bool {
		conn, err := pgx.Connect(t.Context(), testdb.SharedPostgres(t).URL("postgres"))
		if err != nil {
			return false
		}
		defer conn.Close(context.WithoutCancel(t.Context()))
		var n int
		err = conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, needle).Scan(&n)
		return err == nil && n > 0
	}
}

func TestUnits(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		ctx   context.Context
		store *ffpostgres.Store
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		return &testBundle{ctx: t.Context(), store: openStore(t, &ffpostgres.Options{Shards: 2})}
	}

	// A unit that read a record holds it until it commits: a second unit reading it waits,
	// then sees the first one's write. So two units can never both act on one read.
	t.Run("ReadRecordsAreLocked", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
			tx.Put("counter", []byte("0"))
			return nil
		}))
		read, release := make(chan struct{}), make(chan struct{})
		firstDone := make(chan error, 1)
		go func() {
			firstDone <- b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
				if err := tx.Prefetch("counter"); err != nil {
					return err
				}
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
			secondDone <- b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
				v, _, err := tx.Get("counter")
				seen = string(v)
				tx.Put("counter", append(v, '*'))
				return err
			})
		}()
		require.Eventually(t, waitingForLock(t, "FOR UPDATE"), 10*time.Second, 5*time.Millisecond,
			"the second unit waits for the first one's lock")
		close(release)
		require.NoError(t, <-firstDone)
		require.NoError(t, <-secondDone)
		require.Equal(t, "0+", seen, "the second unit read the first one's committed write")
		require.NoError(t, b.store.View(b.ctx, 0, func(tx ffstore.ReadTx) error {
			v, _, err := tx.Get("counter")
			require.Equal(t, "0+*", string(v))
			return err
		}))
	})

	// A record read as missing cannot be locked; if two units both read it missing and
	// create it, the second to commit fails with a conflict instead of overwriting.
	t.Run("CreatingAMissingRecordConflicts", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		read, release := make(chan struct{}), make(chan struct{})
		firstDone := make(chan error, 1)
		go func() {
			firstDone <- b.store.Update(b.ctx, 1, func(tx ffstore.Tx) error {
				if _, ok, err := tx.Get("idem"); err != nil || ok {
					return fmt.Errorf("want missing, got ok=%v err=%w", ok, err)
				}
				close(read)
				<-release
				tx.Put("idem", []byte("first"))
				return nil
			})
		}()
		<-read
		require.NoError(t, b.store.Update(b.ctx, 1, func(tx ffstore.Tx) error {
			_, _, err := tx.Get("idem")
			tx.Put("idem", []byte("second"))
			return err
		}))
		close(release)
		require.ErrorIs(t, <-firstDone, fftype.ErrStoreConflict)
		require.NoError(t, b.store.View(b.ctx, 1, func(tx ffstore.ReadTx) error {
			v, _, err := tx.Get("idem")
			require.Equal(t, "second", string(v), "the record was not overwritten")
			return err
		}))
	})

	// Claimers popping one queue never wait for each other: an item a unit holds is
	// skipped by the others.
	t.Run("PopSkipsLockedItems", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
			tx.QueueAdd("q", "a", 1)
			tx.QueueAdd("q", "b", 2)
			return nil
		}))
		popped, release := make(chan []ffstore.QueueItem, 1), make(chan struct{})
		firstDone := make(chan error, 1)
		go func() {
			firstDone <- b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
				items, err := tx.PopDue("q", ffstore.MaxScore, 1)
				popped <- items
				<-release
				return err
			})
		}()
		require.Equal(t, []ffstore.QueueItem{{Member: "a", Score: 1}}, <-popped)
		var second, rest []ffstore.QueueItem
		require.NoError(t, b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
			var err error
			if second, err = tx.PopDue("q", ffstore.MaxScore, 10); err != nil {
				return err
			}
			rest, err = tx.Range("q", nil, ffstore.MaxScore, 10)
			return err
		}))
		require.Equal(t, []ffstore.QueueItem{{Member: "b", Score: 2}}, second, "the held item is skipped")
		require.Equal(t, []ffstore.QueueItem{{Member: "a", Score: 1}}, rest,
			"Range in a unit reads the committed queue, the other unit's pop not yet included")
		close(release)
		require.NoError(t, <-firstDone)
	})

	// The queue directory never loses a non-empty queue while units empty and refill it
	// and upkeep prunes it concurrently; once the queue stays empty, upkeep prunes it.
	t.Run("QueueDirectoryUnderChurn", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const rounds = 150
		ctx, cancel := context.WithCancel(b.ctx)
		defer cancel()
		var pruners sync.WaitGroup
		for range 2 {
			pruners.Go(func() {
				for ctx.Err() == nil {
					_ = ffpostgres.Upkeep(ctx, b.store)
				}
			})
		}
		for i := range rounds {
			var wg sync.WaitGroup
			wg.Go(func() { // empties the queue
				_ = b.store.Update(b.ctx, 1, func(tx ffstore.Tx) error {
					_, err := tx.PopDue("churn", ffstore.MaxScore, 100)
					return err
				})
			})
			wg.Go(func() { // refills it
				require.NoError(t, b.store.Update(b.ctx, 1, func(tx ffstore.Tx) error {
					tx.QueueAdd("churn", fmt.Sprintf("m%d", i), int64(i))
					return nil
				}))
			})
			wg.Wait()
			var items []ffstore.QueueItem
			require.NoError(t, b.store.View(b.ctx, 1, func(tx ffstore.ReadTx) error {
				var err error
				items, err = tx.Range("churn", nil, ffstore.MaxScore, 1)
				return err
			}))
			heads, err := b.store.QueueHeads(b.ctx, []string{"churn"})
			require.NoError(t, err)
			if len(items) > 0 {
				require.Equal(t, []ffstore.QueueHead{{Shard: 1, Queue: "churn", Item: items[0]}}, heads, "round %d", i)
			}
		}
		cancel()
		pruners.Wait()

		directory := func() (n int) {
			t.Helper()
			require.NoError(t, b.store.Pool().QueryRow(b.ctx,
				fmt.Sprintf(`SELECT count(*) FROM %s.queues WHERE queue = 'churn'`, b.store.Schema())).Scan(&n))
			return n
		}
		require.NoError(t, b.store.Update(b.ctx, 1, func(tx ffstore.Tx) error {
			_, err := tx.PopDue("churn", ffstore.MaxScore, rounds)
			return err
		}))
		heads, err := b.store.QueueHeads(b.ctx, []string{"churn"})
		require.NoError(t, err)
		require.Empty(t, heads)
		// The store's own upkeep may hold the upkeep lock at the moment: then it prunes.
		require.Eventually(t, func() bool {
			require.NoError(t, ffpostgres.Upkeep(b.ctx, b.store))
			return directory() == 0
		}, 10*time.Second, 50*time.Millisecond)
	})

	// Units of other processes wake a reader through LISTEN/NOTIFY, and so does the
	// listener's reconnection after its connection is killed.
	t.Run("ChangesFromAnotherStore", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		other, err := ffpostgres.Open(b.ctx, testdb.SharedPostgres(t).URL("postgres"), &ffpostgres.Options{Schema: b.store.Schema(), PoolSize: 2})
		require.NoError(t, err)
		defer other.Close()

		ctx, cancel := context.WithCancel(b.ctx)
		defer cancel()
		ch := b.store.Changes(ctx)
		requireWake := func(msg string) {
			t.Helper()
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				t.Fatal("no wake-up: " + msg)
			}
		}
		drain := func() {
			for {
				select {
				case <-ch:
				default:
					return
				}
			}
		}
		// The first wake-up comes once the listener listens; nothing before it counts.
		requireWake("after the listener connected")
		drain()
		require.NoError(t, other.Update(b.ctx, 0, func(tx ffstore.Tx) error {
			tx.Put("k", []byte("v"))
			return nil
		}))
		requireWake("after another store's commit")

		// Kill the listener's connection: it reconnects and wakes the reader.
		drain()
		rawExec(t, fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE query = 'LISTEN %s'`, listenChannel(t, b.store)))
		requireWake("after the listener reconnected")
		require.Eventually(t, func() bool {
			drain()
			if err := other.Update(b.ctx, 0, func(tx ffstore.Tx) error {
				tx.Put("k", []byte("v2"))
				return nil
			}); err != nil {
				return false
			}
			select {
			case <-ch:
				return true
			case <-time.After(100 * time.Millisecond):
				return false
			}
		}, 10*time.Second, time.Millisecond, "another store's commit wakes the reconnected listener")
		cancel()
		for range ch {
		}
	})

	// A busy process's commits share NOTIFYs: sent at least notifyGap apart, and one
	// after the last commit.
	t.Run("NotifiesCoalesced", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		conn, err := pgx.Connect(b.ctx, testdb.SharedPostgres(t).URL("postgres"))
		require.NoError(t, err)
		defer conn.Close(context.WithoutCancel(b.ctx))
		_, err = conn.Exec(b.ctx, "LISTEN "+pgx.Identifier{ffpostgres.ChangeChannel(b.store)}.Sanitize())
		require.NoError(t, err)

		const commits = 100
		start := time.Now()
		for i := range commits {
			require.NoError(t, b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
				tx.Put("k", []byte(fmt.Sprint(i)))
				return nil
			}))
		}
		committed := time.Now()
		n, last := 0, time.Time{}
		for {
			ctx, cancel := context.WithTimeout(b.ctx, 300*time.Millisecond)
			_, err := conn.WaitForNotification(ctx)
			cancel()
			if err != nil {
				break
			}
			n, last = n+1, time.Now()
		}
		require.Positive(t, n)
		require.False(t, last.Before(committed), "a NOTIFY followed the last commit")
		// Every NOTIFY was sent between start and its arrival, notifyGap apart at least.
		require.LessOrEqual(t, n, int(last.Sub(start)/ffpostgres.NotifyGap)+1, "%d commits in %s", commits, committed.Sub(start))
	})

	// The engine samples the store's clock from inside units. With every pooled
	// connection held by such a unit, reading the clock must not wait for the pool.
	t.Run("NowInsideUnitsWithThePoolFull", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := openStore(t, &ffpostgres.Options{Schema: b.store.Schema(), PoolSize: 2})
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				errs[i] = s.Update(b.ctx, 0, func(tx ffstore.Tx) error {
					if _, _, err := tx.Get(fmt.Sprint("k", i)); err != nil { // holds a connection
						return err
					}
					ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
					defer cancel()
					if now, err := s.Now(ctx); err != nil || now.IsZero() {
						return fmt.Errorf("now %v: %w", now, err)
					}
					return nil
				})
			})
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
	})

	t.Run("ReadEventsPastEnd", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		trimmed, last, err := b.store.EventBounds(b.ctx, 1)
		require.NoError(t, err)
		require.Zero(t, trimmed)
		require.Zero(t, last)
		require.NoError(t, b.store.Update(b.ctx, 1, func(tx ffstore.Tx) error {
			for range 3 {
				tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventCreated})
			}
			return nil
		}))
		trimmed, last, err = b.store.EventBounds(b.ctx, 1)
		require.NoError(t, err)
		require.Zero(t, trimmed)
		require.Equal(t, uint64(3), last)
		evs, err := b.store.ReadEvents(b.ctx, 1, 1<<63, 10)
		require.NoError(t, err)
		require.Empty(t, evs)
	})

	// Events are numbered in the order their units can see each other: a unit that waited
	// for another's lock and read its write comes after it in the log, even though it took
	// its first lock, and with it its transaction id, before the other unit began.
	t.Run("EventsInCausalOrder", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		schema := testdb.Schema(t)
		s := openStore(t, &ffpostgres.Options{Shards: 1, Schema: schema})
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
			tx.Put("a", []byte("0"))
			tx.Put("e", []byte("0"))
			return nil
		}))
		step := func(name string) fftype.Event {
			return fftype.Event{Version: 1, Type: fftype.EventProgress, ExecutionID: "e", Data: []byte(`"` + name + `"`)}
		}
		laterLocked, earlierLocked := make(chan struct{}), make(chan struct{})
		laterDone := make(chan error, 1)
		var laterSaw string
		go func() {
			laterDone <- s.Update(ctx, 0, func(tx ffstore.Tx) error {
				if _, _, err := tx.Get("a"); err != nil { // takes a transaction id
					return err
				}
				close(laterLocked)
				<-earlierLocked
				v, _, err := tx.Get("e") // waits for the other unit
				laterSaw = string(v)
				tx.Put("e", []byte("step2"))
				tx.AppendEvent(step("step2"))
				return err
			})
		}()
		<-laterLocked
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
			if _, _, err := tx.Get("e"); err != nil {
				return err
			}
			close(earlierLocked)
			require.Eventually(t, waitingForLock(t, schema), 10*time.Second, 5*time.Millisecond,
				"the other unit waits for this one's lock")
			tx.Put("e", []byte("step1"))
			tx.AppendEvent(step("step1"))
			return nil
		}))
		require.NoError(t, <-laterDone)
		require.Equal(t, "step1", laterSaw, "the waiting unit read the other one's write")
		evs, err := s.ReadEvents(ctx, 0, 0, 10)
		require.NoError(t, err)
		require.Len(t, evs, 2)
		require.Equal(t, []string{`"step1"`, `"step2"`}, []string{string(evs[0].Data), string(evs[1].Data)})
	})

	// TrimEvents counts the events committed but not numbered yet: trimming through the
	// end trims them too.
	t.Run("TrimNumbersWaitingEvents", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for range 5 {
			require.NoError(t, b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
				for range 3 {
					tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventCreated})
				}
				return nil
			}))
		}
		require.NoError(t, b.store.TrimEvents(b.ctx, 0, 5))
		trimmed, last, err := b.store.EventBounds(b.ctx, 0)
		require.NoError(t, err)
		require.Equal(t, [2]uint64{5, 15}, [2]uint64{trimmed, last})
		require.NoError(t, b.store.TrimEvents(b.ctx, 0, math.MaxUint64))
		trimmed, last, err = b.store.EventBounds(b.ctx, 0)
		require.NoError(t, err)
		require.Equal(t, [2]uint64{15, 15}, [2]uint64{trimmed, last})
	})

	// Keys, queue names and members are text columns, which cannot hold a NUL byte or
	// invalid UTF-8: each operation refuses such a string with a validation error, not a
	// retryable unavailable one, and its unit writes nothing. A value the database itself
	// refuses (here a kind of PopDueFetch, which the store does not check) is a
	// validation error too.
	t.Run("BadTextIsAValidationError", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, bad := range []string{"k\x00nul", "inst\xff"} {
			for name, op := range map[string]func(tx ffstore.Tx) error{
				"Put":            func(tx ffstore.Tx) error { tx.Put(bad, []byte("v")); return nil },
				"Delete":         func(tx ffstore.Tx) error { tx.Delete(bad); return nil },
				"QueueAddQueue":  func(tx ffstore.Tx) error { tx.QueueAdd(bad, "m", 1); return nil },
				"QueueAddMember": func(tx ffstore.Tx) error { tx.QueueAdd("q", bad, 1); return nil },
				"QueueRemove":    func(tx ffstore.Tx) error { tx.QueueRemove("q", bad); return nil },
				"Get":            func(tx ffstore.Tx) error { _, _, err := tx.Get(bad); return err },
				"Prefetch":       func(tx ffstore.Tx) error { return tx.Prefetch("k", bad) },
				"Range": func(tx ffstore.Tx) error {
					_, err := tx.Range(bad, nil, ffstore.MaxScore, 1)
					return err
				},
				"PopDue": func(tx ffstore.Tx) error {
					_, err := tx.PopDue(bad, ffstore.MaxScore, 1)
					return err
				},
				"PopDueFetchKind": func(tx ffstore.Tx) error {
					_, err := tx.(ffstore.PopFetcher).PopDueFetch("q", ffstore.MaxScore, 1, bad)
					return err
				},
			} {
				err := b.store.Update(b.ctx, 0, func(tx ffstore.Tx) error {
					tx.Put("good", []byte("v"))
					tx.QueueAdd("good", "m", 1)
					return op(tx)
				})
				require.ErrorIs(t, err, isCode(fftype.KindValidation, fftype.CodeInvalidInput), "%s %q", name, bad)
				require.False(t, fftype.IsRetryable(err), "%s %q", name, bad)
			}
		}
		require.NoError(t, b.store.View(b.ctx, 0, func(tx ffstore.ReadTx) error {
			_, ok, err := tx.Get("good")
			require.False(t, ok, "a refused unit wrote its record")
			items, err2 := tx.Range("good", nil, ffstore.MaxScore, 1)
			require.Empty(t, items, "a refused unit wrote its queue item")
			return errors.Join(err, err2)
		}))
	})
}

// listenChannel returns the quoted LISTEN channel of s, as it appears in pg_stat_activity.
func listenChannel(t *testing.T, s *ffpostgres.Store) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), testdb.SharedPostgres(t).URL("postgres"))
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	var q string
	require.Eventually(t, func() bool {
		err := conn.QueryRow(t.Context(), `SELECT query FROM pg_stat_activity WHERE query LIKE 'LISTEN %'
			AND query LIKE '%' || $1 || '%'`, ffpostgres.ChangeChannel(s)).Scan(&q)
		return err == nil
	}, 10*time.Second, 5*time.Millisecond)
	return q[len("LISTEN "):]
}
