package ffvalkey_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestUnitsRereadWhatTheyWrote checks that a unit reads a record this process wrote last
// without a round trip, and that when another process wrote it since, the unit fails as a
// conflict, whatever it returned, and its next run reads the record from the server.
func TestUnitsRereadWhatTheyWrote(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s, other := twoProcesses(t, url)
		ctx := t.Context()
		put := func(st *ffvalkey.Store, value string) {
			t.Helper()
			require.NoError(t, st.Update(ctx, 1, func(tx ffstore.Tx) error {
				tx.Put("k", []byte(value))
				return nil
			}))
		}
		// read reads k in a unit that writes w, or fails with fail, and returns what it
		// read and in how many round trips.
		read := func(w string, fail error) (value string, trips int, err error) {
			err = s.Update(ctx, 1, func(tx ffstore.Tx) error {
				v, ok, err := tx.Get("k")
				if err != nil {
					return err
				}
				value, trips = string(v), ffvalkey.ReadRoundTrips(tx)
				if !ok {
					value = "<none>"
				}
				if w != "" {
					tx.Put("w", []byte(w))
				}
				return fail
			})
			return value, trips, err
		}

		put(s, "one")
		v, trips, err := read("x", nil)
		require.NoError(t, err)
		require.Equal(t, "one", v)
		require.Zero(t, trips, "written by this process: no round trip")

		put(other, "two")
		_, _, err = read("x", nil)
		require.ErrorIs(t, err, fftype.ErrStoreConflict, "another process wrote it since")
		v, trips, err = read("x", nil)
		require.NoError(t, err)
		require.Equal(t, "two", v)
		require.Equal(t, 1, trips, "read from the server after the conflict")

		// A unit that fails after such a read: its error stands if the read still
		// holds, and is a conflict if it does not.
		put(s, "three")
		mine := errors.New("mine")
		_, trips, err = read("", mine)
		require.ErrorIs(t, err, mine)
		require.Zero(t, trips)
		put(other, "four")
		_, _, err = read("", mine)
		require.ErrorIs(t, err, fftype.ErrStoreConflict)
		v, _, err = read("", nil)
		require.NoError(t, err)
		require.Equal(t, "four", v, "a unit without writes checks such a read, too")

		require.NoError(t, s.Update(ctx, 1, func(tx ffstore.Tx) error { tx.Delete("k"); return nil }))
		v, trips, err = read("", nil)
		require.NoError(t, err)
		require.Equal(t, "<none>", v)
		require.Equal(t, 1, trips, "a deleted record is read from the server")

		// Views read the server.
		put(s, "five")
		require.NoError(t, s.View(ctx, 1, func(tx ffstore.ReadTx) error {
			_, _, err := tx.Get("k")
			require.Equal(t, 1, ffvalkey.ViewRoundTrips(tx))
			return err
		}))
	})
}

// TestRememberedRecordsAfterTheServerLostData checks remembered records against a server
// that lost data and so numbers commits again from where its data ends: another process
// writes a record at the very commit number at which this process remembers another
// value of it, and a unit of this process must still read the record's value.
func TestRememberedRecordsAfterTheServerLostData(t *testing.T) {
	t.Parallel()
	for _, lost := range []string{"restart without persistence", "crash back to a snapshot"} {
		t.Run(lost, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			srv := testdb.NewRedis(t, testdb.RedisOptions{})
			a := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 1, KeyPrefix: testdb.RedisPrefix(t)})
			b := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 1, KeyPrefix: a.KeyPrefix()})
			put := func(s *ffvalkey.Store, key, value string) {
				t.Helper()
				require.Eventually(t, func() bool { // the first calls after the restart may fail
					return s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put(key, []byte(value)); return nil }) == nil
				}, 10*time.Second, 10*time.Millisecond)
			}
			if lost == "restart without persistence" {
				put(a, "other", "1")
				put(a, "k", "old") // commit 2: a remembers k = "old" at 2
				require.NoError(t, srv.Restart())
				put(b, "other", "x")
				put(b, "k", "new") // commit 2 again
			} else {
				put(a, "k", "saved") // commit 1
				c := ffvalkey.Client(a)
				require.NoError(t, c.Do(ctx, c.B().Save().Build()).Error())
				put(a, "k", "lost") // commit 2: a remembers k = "lost" at 2
				srv.Kill()
				require.NoError(t, srv.Start()) // k = "saved" at 1; the library survives
				put(b, "k", "new")              // commit 2 again
			}
			var read string
			require.Eventually(t, func() bool {
				return a.Update(ctx, 0, func(tx ffstore.Tx) error {
					v, _, err := tx.Get("k")
					read = string(v)
					tx.Put("copy", v)
					return err
				}) == nil
			}, 10*time.Second, 10*time.Millisecond)
			require.Equal(t, "new", read)
		})
	}
}
