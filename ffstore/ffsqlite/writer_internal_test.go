package ffsqlite

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestDiskFull: a unit whose write finds the disk full (here the file is capped with
// max_page_count, which fails the same way) makes SQLite roll the whole transaction
// back. Every unit of its group commit must then fail with the disk-full error, a
// retryable unavailable one, whichever pass of the batch it happened in: none may be
// acknowledged, since nothing of the batch was written, and none may get the error of
// the writer's own rollback, which finds no transaction left. A unit that failed on its
// own keeps its own error, and the store writes again once there is room.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	big := func(tx ffstore.Tx) error {
		tx.Put("big", bytes.Repeat([]byte("x"), 1<<20))
		return nil
	}
	small := func(tx ffstore.Tx) error {
		tx.Put("small", []byte("v"))
		return nil
	}
	errOwn := errors.New("the unit's own error")
	for _, tt := range []struct {
		name string
		fns  []func(ffstore.Tx) error
		want []error // per fn; nil means the disk-full error
	}{
		{"alone", []func(ffstore.Tx) error{big}, []error{nil}},
		// Without savepoints: the batch's first pass.
		{"fast pass", []func(ffstore.Tx) error{small, big}, []error{nil, nil}},
		// A failing unit sends the batch to its second pass, with a savepoint per unit.
		{"savepoint pass", []func(ffstore.Tx) error{
			small, func(ffstore.Tx) error { return errOwn }, big,
		}, []error{nil, errOwn, nil}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			s, err := Open(ctx, filepath.Join(t.TempDir(), "ff.db"), nil)
			require.NoError(t, err)
			defer s.Close()
			setMaxPages(t, s, 0)

			holder, results := runInOneBatch(t, s, tt.fns...)
			requireDiskFull(t, holder)
			for i, r := range results {
				if tt.want[i] != nil {
					require.ErrorIs(t, r.err, tt.want[i], "unit %d", i)
				} else {
					requireDiskFull(t, r.err)
				}
			}
			for _, key := range []string{"small", "big"} {
				_, ok := get(t, s, key)
				require.False(t, ok, "%s was written", key)
			}

			setMaxPages(t, s, 1<<30)
			require.NoError(t, s.Update(ctx, 0, small))
			_, ok := get(t, s, "small")
			require.True(t, ok)
		})
	}
}

// TestGoexitInUnit: a unit whose fn calls runtime.Goexit, as t.FailNow does, is treated
// like one whose fn panics: its writes are rolled back, the rest of its group commit
// commits, and Update calls runtime.Goexit in its caller, as it re-raises a panic. The
// writer goroutine, which Goexit ends, used to take the store down with it: the units of
// its batch were acknowledged though they never committed, and later Updates hung.
func TestGoexitInUnit(t *testing.T) {
	t.Parallel()
	putA := func(tx ffstore.Tx) error {
		tx.Put("a", []byte("v"))
		return nil
	}
	exit := func(tx ffstore.Tx) error {
		tx.Put("b", []byte("v"))
		runtime.Goexit()
		return nil
	}
	errOwn := errors.New("the unit's own error")
	for _, tt := range []struct {
		name string
		fns  []func(ffstore.Tx) error
		want []result
	}{
		// Without savepoints: the batch's first pass.
		{"fast pass", []func(ffstore.Tx) error{putA, exit}, []result{{}, {exited: true}}},
		// A failing unit sends the batch to its second pass, with a savepoint per unit.
		{"savepoint pass", []func(ffstore.Tx) error{
			putA, func(ffstore.Tx) error { return errOwn }, exit,
		}, []result{{}, {err: errOwn}, {exited: true}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			s, err := Open(ctx, filepath.Join(t.TempDir(), "ff.db"), nil)
			require.NoError(t, err)
			defer s.Close()

			holder, results := runInOneBatch(t, s, tt.fns...)
			require.NoError(t, holder)
			require.Equal(t, tt.want, results)
			_, ok := get(t, s, "a")
			require.True(t, ok, "the batchmate's write was lost")
			_, ok = get(t, s, "b")
			require.False(t, ok, "the exited unit's write was committed")

			later := make(chan error, 1)
			go func() { later <- s.Update(ctx, 0, func(ffstore.Tx) error { return nil }) }()
			select {
			case err := <-later:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("a later Update hangs: no writer is left")
			}
		})
	}
}

// TestContextEndsAfterFnStarted: once a unit's fn has started, Update waits for the
// commit regardless of ctx. A unit whose fn ran in its batch's first pass, and whose ctx
// ended then, must not be dropped for its ctx when a batchmate makes the batch run again,
// with savepoints after the batchmate's error or in a new writer after its Goexit: it
// commits and its Update succeeds.
func TestContextEndsAfterFnStarted(t *testing.T) {
	t.Parallel()
	errOwn := errors.New("the unit's own error")
	for _, tt := range []struct {
		name      string
		batchmate func(ffstore.Tx) error
		want      result
	}{
		{"savepoint pass", func(ffstore.Tx) error { return errOwn }, result{err: errOwn}},
		{"after Goexit", func(ffstore.Tx) error { runtime.Goexit(); return nil }, result{exited: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(t.Context(), filepath.Join(t.TempDir(), "ff.db"), nil)
			require.NoError(t, err)
			defer s.Close()

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			giveUp := func(tx ffstore.Tx) error {
				tx.Put("a", []byte("v"))
				cancel() // the caller gives up while fn runs
				return nil
			}
			holder, results := runContextsInOneBatch(t, s,
				[]context.Context{ctx, t.Context()}, []func(ffstore.Tx) error{giveUp, tt.batchmate})
			require.NoError(t, holder)
			require.Equal(t, []result{{}, tt.want}, results)
			_, ok := get(t, s, "a")
			require.True(t, ok, "the unit was acknowledged but not committed")
		})
	}
}

// requireDiskFull checks that err is the store's error for SQLITE_FULL.
func requireDiskFull(t *testing.T, err error) {
	t.Helper()
	var fe *fftype.Error
	require.ErrorAs(t, err, &fe)
	require.Equal(t, fftype.KindUnavailable, fe.Kind, "%v", err)
	require.True(t, fe.Retryable, "%v", err)
	code, ok := sqliteCode(fe.Err)
	require.True(t, ok, "%v", err)
	require.Equal(t, sqliteFull, code&0xff, "%v", err)
}

// setMaxPages sets the writer connection's max_page_count to n pages, or to the file's
// current page count if n is 0, so that writes needing a new page find the disk full.
func setMaxPages(t *testing.T, s *Store, n int64) {
	t.Helper()
	ctx := t.Context()
	require.NoError(t, s.Update(ctx, 0, func(ffstore.Tx) error {
		if n == 0 {
			rows, err := s.wconn.(driver.QueryerContext).QueryContext(ctx, "PRAGMA page_count", nil)
			if err != nil {
				return err
			}
			dest := make([]driver.Value, 1)
			err = rows.Next(dest)
			_ = rows.Close()
			if err != nil {
				return err
			}
			n = dest[0].(int64)
		}
		_, err := s.wconn.(driver.ExecerContext).ExecContext(ctx, "PRAGMA max_page_count = "+strconv.FormatInt(n, 10), nil)
		return err
	}))
}

// get reads key on shard 0 through a View.
func get(t *testing.T, s *Store, key string) (value []byte, ok bool) {
	t.Helper()
	require.NoError(t, s.View(t.Context(), 0, func(tx ffstore.ReadTx) error {
		var err error
		value, ok, err = tx.Get(key)
		return err
	}))
	return value, ok
}

// result is how one Update ended.
type result struct {
	err    error
	exited bool // Update did not return: it called runtime.Goexit
}

// runInOneBatch runs fns as units of one group commit on shard 0, in order, and returns
// how each Update ended. It holds the writer inside a unit of its own while the others
// queue, so that the writer takes them all into that unit's batch once it returns;
// holder is the error of that unit's Update.
func runInOneBatch(t *testing.T, s *Store, fns ...func(ffstore.Tx) error) (holder error, results []result) {
	t.Helper()
	ctxs := make([]context.Context, len(fns))
	for i := range ctxs {
		ctxs[i] = t.Context()
	}
	return runContextsInOneBatch(t, s, ctxs, fns)
}

// runContextsInOneBatch is runInOneBatch with a context for each Update: fns[i] runs in
// an Update given ctxs[i].
func runContextsInOneBatch(t *testing.T, s *Store, ctxs []context.Context, fns []func(ffstore.Tx) error) (holder error, results []result) {
	t.Helper()
	ctx := t.Context()
	entered, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- s.Update(ctx, 0, func(ffstore.Tx) error {
			select {
			case <-entered: // a second run of the batch
			default:
				close(entered)
			}
			<-release
			return nil
		})
	}()
	<-entered
	ended := make([]chan result, len(fns))
	for i, fn := range fns {
		ended[i] = make(chan result, 1)
		go func() {
			var r result
			returned := false
			defer func() {
				r.exited = !returned
				ended[i] <- r
			}()
			r.err = s.Update(ctxs[i], 0, fn)
			returned = true
		}()
		require.Eventually(t, func() bool { return len(s.units) == i+1 }, 10*time.Second, time.Millisecond)
	}
	close(release)
	holder = <-held
	for _, c := range ended {
		results = append(results, <-c)
	}
	return holder, results
}
