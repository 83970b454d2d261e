package ffvalkey_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/ffstore/ffstoretest"
	"github.com/flowfabric/flowfabric/ffstore/ffvalkey"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// openStore opens a store under a fresh key prefix on url and closes it at cleanup.
func openStore(t *testing.T, url string, opts *ffvalkey.Options) *ffvalkey.Store {
	t.Helper()
	o := ffvalkey.Options{KeyPrefix: testdb.RedisPrefix(t)}
	if opts != nil {
		o.Shards = opts.Shards
		o.Logger = opts.Logger
		if opts.KeyPrefix != "" {
			o.KeyPrefix = opts.KeyPrefix
		}
	}
	s, err := ffvalkey.Open(t.Context(), url, &o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	url := testdb.SharedRedis(t).URL(0)
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return openStore(t, url, &ffvalkey.Options{Shards: 4}) })
}

func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	url := testdb.SharedRedisCluster(t).URL()
	ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return openStore(t, url, nil) })
}

// TestTLS runs the conformance suite over rediss:// against a server that speaks only
// TLS, with a certificate from a private CA the URL trusts with ca_file (no
// skip_verify), a password and database 3; and checks that the keys land in database 3
// and that a URL without the CA or with a wrong password is refused.
func TestTLS(t *testing.T) {
	t.Parallel()
	srv := testdb.NewRedis(t, testdb.RedisOptions{TLS: true, Password: "tls-s3cret"})
	url := srv.URL(3)
	require.True(t, strings.HasPrefix(url, "rediss://:tls-s3cret@"), url)

	t.Run("Conformance", func(t *testing.T) {
		t.Parallel()
		ffstoretest.Exercise(t, func(t *testing.T) ffstore.Store { return openStore(t, url, &ffvalkey.Options{Shards: 4}) })
	})

	t.Run("Database", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, url, &ffvalkey.Options{Shards: 2})
		require.NoError(t, s.Update(t.Context(), 1, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
		c := ffvalkey.Client(s)
		info, err := c.Do(t.Context(), c.B().Info().Section("keyspace").Build()).ToString()
		require.NoError(t, err)
		require.Contains(t, info, "db3:keys=")
		require.NotContains(t, info, "db0:")
	})

	t.Run("UntrustedCA", func(t *testing.T) {
		t.Parallel()
		noCA, _, _ := strings.Cut(url, "?")
		_, err := ffvalkey.Open(t.Context(), noCA+"?dial_timeout=2s", nil)
		require.ErrorIs(t, err, fftype.ErrUnavailable)
	})

	t.Run("WrongPassword", func(t *testing.T) {
		t.Parallel()
		for _, bad := range []string{strings.Replace(url, "tls-s3cret", "wrong", 1), strings.Replace(url, ":tls-s3cret@", "", 1)} {
			_, err := ffvalkey.Open(t.Context(), bad, nil)
			require.ErrorIs(t, err, fftype.ErrUnavailable)
			require.False(t, fftype.IsRetryable(err), "trying again cannot help: %v", err)
			require.Contains(t, err.Error(), "refused the credentials")
		}
	})
}

// TestTLSCluster opens stores on a Cluster over TLS whose nodes each have a certificate
// for their own address alone: every node must be checked against the address it is
// dialled at, not against the seed's, whether the URL asks for a Cluster or names one
// node (a Cluster is found all the same).
func TestTLSCluster(t *testing.T) {
	t.Parallel()
	c, err := testdb.StartRedisCluster(3, testdb.RedisClusterOptions{TLS: true})
	require.NoError(t, err, "the throw-away TLS Redis Cluster cannot be started")
	t.Cleanup(func() { _ = c.Remove() })
	for _, url := range []string{c.URL(), "rediss://" + c.Nodes[0].Addr + "?ca_file=" + neturl.QueryEscape(c.CAFile)} {
		s := openStore(t, url, &ffvalkey.Options{Shards: 3})
		require.True(t, s.Cluster(), url)
		for shard := range s.Shards() { // the shards are spread over every node
			require.NoError(t, s.Update(t.Context(), shard, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
		}
	}
}

// logBuffer collects log records for tests.
type logBuffer struct {
	mu   sync.Mutex
	recs []string
}

func (l *logBuffer) Enabled(context.Context, slog.Level) bool { return true }
func (l *logBuffer) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Level.String()+" "+r.Message)
	return nil
}
func (l *logBuffer) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logBuffer) WithGroup(string) slog.Handler      { return l }
func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.recs)
}

func TestOpen(t *testing.T) {
	t.Parallel()

	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close()) // nothing listens there now
		_, err = ffvalkey.Open(t.Context(), "redis://"+addr+"?dial_timeout=1s", nil)
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		require.True(t, fftype.IsRetryable(err))
		require.Contains(t, err.Error(), "connect to "+addr)
	})

	t.Run("RefusedSettings", func(t *testing.T) {
		// The server refuses them with its generic ERR replies: trying again cannot help.
		t.Parallel()
		srv := testdb.SharedRedis(t)
		for _, q := range []string{"/99", "/0?client_name=my%20app"} {
			_, err := ffvalkey.Open(t.Context(), "redis://"+srv.Addr+q, nil)
			require.ErrorIs(t, err, fftype.ErrUnavailable, q)
			require.False(t, fftype.IsRetryable(err), "%s: trying again cannot help: %v", q, err)
		}
	})

	t.Run("ServerFull", func(t *testing.T) {
		// A server at maxclients answers a new connection with a generic ERR reply and
		// closes it (rueidis reports the reply or the EOF, as the timing goes); a client
		// that disconnects makes room.
		t.Parallel()
		srv := testdb.NewRedis(t, testdb.RedisOptions{Args: []string{"--maxclients", "1"}})
		held, err := net.Dial("tcp", srv.Addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = held.Close() })
		// Answered: the server holds the connection, its only one, before Open dials.
		_, err = held.Write([]byte("PING\r\n"))
		require.NoError(t, err)
		pong := make([]byte, 7)
		_, err = io.ReadFull(held, pong)
		require.NoError(t, err)
		require.Equal(t, "+PONG\r\n", string(pong))
		_, err = ffvalkey.Open(t.Context(), srv.URL(0), nil)
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		require.True(t, fftype.IsRetryable(err), "%v", err)
	})

	t.Run("WarnsWithoutAOF", func(t *testing.T) {
		t.Parallel()
		logs := &logBuffer{}
		openStore(t, testdb.SharedRedis(t).URL(0), &ffvalkey.Options{Logger: slog.New(logs)})
		require.Condition(t, func() bool {
			return slices.ContainsFunc(logs.lines(), func(l string) bool { return strings.HasPrefix(l, "WARN") && strings.Contains(l, "appendonly off") })
		}, "logs: %q", logs.lines())
	})

	t.Run("ShardCountIsFixed", func(t *testing.T) {
		t.Parallel()
		url := testdb.SharedRedis(t).URL(0)
		prefix := testdb.RedisPrefix(t)
		s := openStore(t, url, &ffvalkey.Options{KeyPrefix: prefix, Shards: 4})
		require.Equal(t, 4, s.Shards())
		again := openStore(t, url, &ffvalkey.Options{KeyPrefix: prefix})
		require.Equal(t, 4, again.Shards(), "0 means the stored count")
		_, err := ffvalkey.Open(t.Context(), url, &ffvalkey.Options{KeyPrefix: prefix, Shards: 8})
		require.ErrorIs(t, err, fftype.ErrValidation)
		require.Equal(t, ffvalkey.CodeShardCountMismatch, fftype.CodeOf(err))
		fresh := openStore(t, url+"?shards=2", &ffvalkey.Options{})
		require.Equal(t, 2, fresh.Shards(), "the URL's shards parameter")
		def := openStore(t, url, nil)
		require.Equal(t, ffvalkey.DefaultShards, def.Shards())
	})

	t.Run("FormatTooNew", func(t *testing.T) {
		t.Parallel()
		url := testdb.SharedRedis(t).URL(0)
		s := openStore(t, url, nil)
		c := ffvalkey.Client(s)
		require.NoError(t, c.Do(t.Context(), c.B().Hset().Key(s.KeyPrefix()+":meta").FieldValue().FieldValue("format", "2").Build()).Error())
		_, err := ffvalkey.Open(t.Context(), url, &ffvalkey.Options{KeyPrefix: s.KeyPrefix()})
		require.ErrorIs(t, err, fftype.ErrUnavailable)
		require.Equal(t, ffvalkey.CodeFormatTooNew, fftype.CodeOf(err))
	})

	// A newer format may keep its shard count elsewhere: its meta key is refused as it
	// is, and left as it is.
	t.Run("FormatTooNewWithoutShards", func(t *testing.T) {
		t.Parallel()
		url := testdb.SharedRedis(t).URL(0)
		s := openStore(t, url, nil)
		c := ffvalkey.Client(s)
		prefix := testdb.RedisPrefix(t)
		require.NoError(t, c.Do(t.Context(), c.B().Hset().Key(prefix+":meta").FieldValue().FieldValue("format", "2").Build()).Error())
		_, err := ffvalkey.Open(t.Context(), url, &ffvalkey.Options{KeyPrefix: prefix})
		require.Equal(t, ffvalkey.CodeFormatTooNew, fftype.CodeOf(err), "Open: %v", err)
		err = ffvalkey.Migrate(t.Context(), url, &ffvalkey.Options{KeyPrefix: prefix})
		require.Equal(t, ffvalkey.CodeFormatTooNew, fftype.CodeOf(err), "Migrate: %v", err)
		meta, err := c.Do(t.Context(), c.B().Hgetall().Key(prefix+":meta").Build()).AsStrMap()
		require.NoError(t, err)
		require.Equal(t, map[string]string{"format": "2"}, meta, "the newer store's meta key is left alone")
	})

	t.Run("Migrate", func(t *testing.T) {
		t.Parallel()
		// A server of its own, so that the library is there only if Migrate loaded it.
		url := testdb.NewRedis(t, testdb.RedisOptions{}).URL(0)
		prefix := testdb.RedisPrefix(t)
		require.NoError(t, ffvalkey.Migrate(t.Context(), url, &ffvalkey.Options{KeyPrefix: prefix}))
		s := openStore(t, url, &ffvalkey.Options{KeyPrefix: prefix, Shards: 4})
		c := ffvalkey.Client(s)
		libs, err := c.Do(t.Context(), c.B().FunctionList().Libraryname(ffvalkey.LibraryName).Build()).ToArray()
		require.NoError(t, err)
		require.Len(t, libs, 1, "Migrate loaded the library")
		require.Equal(t, 4, s.Shards(), "Migrate left the shard count to the first Open")
		require.NoError(t, ffvalkey.Migrate(t.Context(), url, &ffvalkey.Options{KeyPrefix: prefix}), "an existing store")

		require.NoError(t, c.Do(t.Context(), c.B().Hset().Key(prefix+":meta").FieldValue().FieldValue("format", "99").Build()).Error())
		err = ffvalkey.Migrate(t.Context(), url, &ffvalkey.Options{KeyPrefix: prefix})
		require.Equal(t, ffvalkey.CodeFormatTooNew, fftype.CodeOf(err), "%v", err)
	})

	t.Run("ClusterURLOnAServer", func(t *testing.T) {
		t.Parallel()
		_, err := ffvalkey.Open(t.Context(), "redis+cluster://"+testdb.SharedRedis(t).Addr, nil)
		require.ErrorIs(t, err, fftype.ErrValidation)
		require.Contains(t, err.Error(), "not in cluster mode")
	})

	t.Run("DatabaseOnACluster", func(t *testing.T) {
		t.Parallel()
		// A redis:// URL naming one node of a Cluster: ParseURL cannot know it is one.
		node := testdb.SharedRedisCluster(t).Nodes[0].Addr
		_, err := ffvalkey.Open(t.Context(), "redis://"+node+"/3", nil)
		require.ErrorIs(t, err, fftype.ErrValidation)
		require.False(t, fftype.IsRetryable(err))
		require.Contains(t, err.Error(), "a Cluster has only database 0")
	})

	t.Run("BadOptions", func(t *testing.T) {
		t.Parallel()
		url := testdb.SharedRedis(t).URL(0)
		for _, o := range []*ffvalkey.Options{{Shards: -1}, {Shards: fftype.MaxShards + 1}, {KeyPrefix: "a b"}, {KeyPrefix: "{x}"}} {
			_, err := ffvalkey.Open(t.Context(), url, o)
			require.ErrorIs(t, err, fftype.ErrValidation, "%+v", o)
		}
	})

	t.Run("UserThatCannotPublish", func(t *testing.T) {
		// Every commit publishes after its writes: a user refused that (Redis 7 gives a
		// new ACL user no channels) would have units applied but reported failed.
		t.Parallel()
		srv := testdb.NewRedis(t, testdb.RedisOptions{})
		admin := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 1})
		c := ffvalkey.Client(admin)
		require.NoError(t, c.Do(t.Context(), c.B().Arbitrary("ACL", "SETUSER", "ff", "on", ">pw", "~*", "+@all").Build()).Error())
		url := strings.Replace(srv.URL(0), "redis://", "redis://ff:pw@", 1)
		_, err := ffvalkey.Open(t.Context(), url, &ffvalkey.Options{KeyPrefix: admin.KeyPrefix()})
		require.ErrorIs(t, err, fftype.ErrValidation)
		require.ErrorContains(t, err, "may not publish")
		require.NoError(t, c.Do(t.Context(), c.B().Arbitrary("ACL", "SETUSER", "ff", "&"+admin.KeyPrefix()+":changes").Build()).Error())
		s := openStore(t, url, &ffvalkey.Options{KeyPrefix: admin.KeyPrefix()})
		require.NoError(t, s.Update(t.Context(), 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
	})

	t.Run("Database", func(t *testing.T) {
		t.Parallel()
		srv := testdb.SharedRedis(t)
		prefix := testdb.RedisPrefix(t)
		s := openStore(t, srv.URL(5), &ffvalkey.Options{KeyPrefix: prefix, Shards: 1})
		require.NoError(t, s.Update(t.Context(), 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
		other := openStore(t, srv.URL(6), &ffvalkey.Options{KeyPrefix: prefix, Shards: 1})
		require.NoError(t, other.View(t.Context(), 0, func(tx ffstore.ReadTx) error {
			_, ok, err := tx.Get("k")
			require.False(t, ok, "another database is another store")
			return err
		}))
	})
}

// TestLibraryReloads removes the function library from the server before each kind of
// call, as a restart without persistence or a failover to a node without it would, and
// checks that every call path loads it again by itself.
func TestLibraryReloads(t *testing.T) {
	t.Parallel()
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "Server", true: "Cluster"}[cluster], func(t *testing.T) {
			t.Parallel()
			// A server of its own: FUNCTION FLUSH would break the other tests' stores.
			var url string
			if cluster {
				c, err := testdb.StartRedisCluster(3, testdb.RedisClusterOptions{})
				require.NoError(t, err, "the throw-away Redis Cluster cannot be started")
				t.Cleanup(func() { _ = c.Remove() })
				url = c.URL()
			} else {
				url = testdb.NewRedis(t, testdb.RedisOptions{}).URL(0)
			}
			s := openStore(t, url, &ffvalkey.Options{Shards: 4})
			ctx := t.Context()
			c := ffvalkey.Client(s)
			flush := func() {
				t.Helper()
				for _, node := range c.Nodes() {
					require.NoError(t, node.Do(ctx, node.B().FunctionFlush().Build()).Error())
				}
			}
			// Written by another process, so that s does not remember the record.
			other := openStore(t, url, &ffvalkey.Options{KeyPrefix: s.KeyPrefix(), Shards: 4})
			require.NoError(t, other.Update(ctx, 1, func(tx ffstore.Tx) error {
				tx.Put("x:third", []byte("3"))
				tx.QueueAdd("q", "third", 3)
				return nil
			}))
			id := fftype.NewExecutionID(1)
			calls := []struct {
				name string
				call func() error
			}{
				{"commit", func() error {
					return s.Update(ctx, 1, func(tx ffstore.Tx) error {
						tx.Put("x:"+string(id), []byte("1"))
						tx.Put("x:other", []byte("2"))
						tx.QueueAdd("q", string(id), 1)
						tx.QueueAdd("q", "other", 2)
						tx.AppendEvent(fftype.Event{Type: fftype.EventCreated, ExecutionID: id})
						return nil
					})
				}},
				{"range in a unit", func() error {
					return s.Update(ctx, 1, func(tx ffstore.Tx) error {
						items, err := tx.Range("q", nil, ffstore.MaxScore, 10)
						if err == nil && len(items) != 3 {
							err = fmt.Errorf("range: %v", items)
						}
						return err
					})
				}},
				{"pop", func() error {
					return s.Update(ctx, 1, func(tx ffstore.Tx) error {
						items, err := tx.(ffstore.PopFetcher).PopDueFetch("q", ffstore.MaxScore, 1, "x")
						if err == nil && len(items) != 1 {
							err = fmt.Errorf("pop: %v", items)
						}
						return err
					})
				}},
				// The last pop's commit read the record of "other", which its pop saw
				// next, so this pop takes it without a round trip; the commit finds the
				// library missing and runs again alone, without reading ahead.
				{"pop by foresight", func() error {
					return s.Update(ctx, 1, func(tx ffstore.Tx) error {
						return popOne(tx, "other", "2", 0, "no round trip")
					})
				}},
				// The last pop saw "third" next, without its record, so this one reads it
				// in the same round trip; the pop finds the library missing and runs
				// again alone, and the record is read after it.
				{"pop reading the records it expects", func() error {
					return s.Update(ctx, 1, func(tx ffstore.Tx) error {
						return popOne(tx, "third", "3", 3, "the pop with the read, the pop alone, the read")
					})
				}},
				{"checked view", func() error {
					return s.View(ctx, 1, func(tx ffstore.ReadTx) error {
						if _, _, err := tx.Get("x:" + string(id)); err != nil {
							return err
						}
						_, err := tx.Range("q", nil, ffstore.MaxScore, 10)
						return err
					})
				}},
				{"event bounds", func() error {
					_, last, err := s.EventBounds(ctx, 1)
					if err == nil && last != 1 {
						err = fmt.Errorf("last is %d", last)
					}
					return err
				}},
				{"trim", func() error { return s.TrimEvents(ctx, 1, 1) }},
			}
			for _, tc := range calls {
				flush()
				require.NoError(t, tc.call(), tc.name)
			}
		})
	}
}

// popOne pops one item of queue "q" in tx by PopDueFetch and checks that it is member,
// with "x:"+member reading value, in trips round trips (want says which).
func popOne(tx ffstore.Tx, member, value string, trips int, want string) error {
	items, err := tx.(ffstore.PopFetcher).PopDueFetch("q", ffstore.MaxScore, 1, "x")
	if err != nil {
		return err
	}
	if len(items) != 1 || items[0].Member != member {
		return fmt.Errorf("pop: %v", items)
	}
	if n := ffvalkey.ReadRoundTrips(tx); n != trips {
		return fmt.Errorf("%d round trips, want %s", n, want)
	}
	v, _, err := tx.Get("x:" + member)
	if err == nil && string(v) != value {
		err = fmt.Errorf("x:%s reads %q", member, v)
	}
	return err
}

// TestLibraryVersionsCoexist loads another version of the library beside this one, as
// during a rolling upgrade, and checks that both stay and that loading again is
// harmless.
func TestLibraryVersionsCoexist(t *testing.T) {
	t.Parallel()
	srv := testdb.NewRedis(t, testdb.RedisOptions{})
	s := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 2})
	c := ffvalkey.Client(s)
	ctx := t.Context()
	other := "#!lua name=flowfabric_v0\nredis.register_function('ffv0_unit', function() return 0 end)\n"
	require.NoError(t, c.Do(ctx, c.B().FunctionLoad().FunctionCode(other).Build()).Error())
	require.NoError(t, ffvalkey.LoadLibrary(ctx, s), "loading is idempotent")
	openStore(t, srv.URL(0), &ffvalkey.Options{KeyPrefix: s.KeyPrefix()})
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put("k", []byte("v")); return nil }))
	list, err := c.Do(ctx, c.B().FunctionList().Build()).ToArray()
	require.NoError(t, err)
	var names []string
	for _, lib := range list {
		m, err := lib.AsMap()
		require.NoError(t, err)
		msg := m["library_name"]
		name, err := msg.ToString()
		require.NoError(t, err)
		names = append(names, name)
	}
	require.ElementsMatch(t, []string{"flowfabric_v0", ffvalkey.LibraryName}, names)
}

// TestTrimFreesAServerAtMaxmemory: on a server that refuses writes at maxmemory, the
// store can still trim its event logs (the engine's retention sweep), and so free the
// space that lets units commit again.
func TestTrimFreesAServerAtMaxmemory(t *testing.T) {
	t.Parallel()
	srv := testdb.NewRedis(t, testdb.RedisOptions{Args: []string{"--maxmemory", "6mb", "--maxmemory-policy", "noeviction"}})
	s := openStore(t, srv.URL(0), &ffvalkey.Options{Shards: 1})
	ctx := t.Context()
	data := []byte(`"` + strings.Repeat("x", 4000) + `"`)
	fill := func(tx ffstore.Tx) error {
		for range 10 {
			tx.AppendEvent(fftype.Event{Version: 1, Type: fftype.EventProgress, ExecutionID: fftype.NewExecutionID(0),
				Namespace: "default", Lane: "l", Data: data})
		}
		return nil
	}
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = s.Update(ctx, 0, fill)
	}
	require.ErrorContains(t, err, "out of memory", "the events fill the server")
	_, last, err := s.EventBounds(ctx, 0)
	require.NoError(t, err)
	require.NoError(t, s.TrimEvents(ctx, 0, last))
	require.NoError(t, s.Update(ctx, 0, fill), "the trim made room")
}

// TestPopMarks checks what a pop leaves when its unit never commits: an item whose mark
// has lapsed (its unit died a while ago) is popped again; one whose mark is live is
// skipped, by pops and by ranges inside units, but read by views; an aborted unit
// releases its marks at once.
func TestPopMarks(t *testing.T) {
	t.Parallel()
	s := openStore(t, testdb.SharedRedis(t).URL(0), &ffvalkey.Options{Shards: 2})
	ctx := t.Context()
	require.NoError(t, s.Update(ctx, 1, func(tx ffstore.Tx) error {
		for i, m := range []string{"a", "b", "c", "d"} {
			tx.QueueAdd("q", m, int64(i))
		}
		return nil
	}))
	require.NoError(t, ffvalkey.Mark(ctx, s, 1, "q", "a", time.Now().Add(-time.Second)))
	require.NoError(t, ffvalkey.Mark(ctx, s, 1, "q", "b", time.Now().Add(time.Hour)))

	var popped, ranged []ffstore.QueueItem
	require.NoError(t, s.Update(ctx, 1, func(tx ffstore.Tx) error {
		var err error
		if ranged, err = tx.Range("q", nil, ffstore.MaxScore, 10); err != nil {
			return err
		}
		popped, err = tx.PopDue("q", 2, 10)
		return err
	}))
	require.Equal(t, []ffstore.QueueItem{{Member: "a", Score: 0}, {Member: "c", Score: 2}}, popped)
	require.Equal(t, []ffstore.QueueItem{{Member: "a", Score: 0}, {Member: "c", Score: 2}, {Member: "d", Score: 3}}, ranged,
		"a unit's range leaves out what others are popping")

	var viewed []ffstore.QueueItem
	require.NoError(t, s.View(ctx, 1, func(tx ffstore.ReadTx) error {
		var err error
		viewed, err = tx.Range("q", nil, ffstore.MaxScore, 10)
		return err
	}))
	require.Equal(t, []ffstore.QueueItem{{Member: "b", Score: 1}, {Member: "d", Score: 3}}, viewed, "a view reads what is committed")

	errBoom := errors.New("boom")
	require.ErrorIs(t, s.Update(ctx, 1, func(tx ffstore.Tx) error {
		items, err := tx.PopDue("q", ffstore.MaxScore, 10)
		require.Equal(t, []ffstore.QueueItem{{Member: "d", Score: 3}}, items)
		return errors.Join(err, errBoom)
	}), errBoom)
	require.NoError(t, s.Update(ctx, 1, func(tx ffstore.Tx) error {
		items, err := tx.PopDue("q", ffstore.MaxScore, 10)
		require.Equal(t, []ffstore.QueueItem{{Member: "d", Score: 3}}, items, "the aborted unit released d")
		return err
	}))
}

// TestConcurrentClaimsDoNotConflict runs units shaped like the engine's claim — pop the
// head, read the next head, write the popped member's record — from many goroutines on
// one queue: none loses a race, and each item goes to exactly one unit.
func TestConcurrentClaimsDoNotConflict(t *testing.T) {
	t.Parallel()
	s := openStore(t, testdb.SharedRedis(t).URL(0), &ffvalkey.Options{Shards: 1})
	ctx := t.Context()
	const items, workers = 400, 16
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		for i := range items {
			tx.QueueAdd("ready", fmt.Sprintf("m%03d", i), int64(i/10))
		}
		return nil
	}))
	var mu sync.Mutex
	got := map[string]int{}
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				var popped []ffstore.QueueItem
				err := s.Update(ctx, 0, func(tx ffstore.Tx) error {
					var err error
					if popped, err = tx.PopDue("ready", ffstore.MaxScore, 1); err != nil || len(popped) == 0 {
						return err
					}
					if _, err := tx.Range("ready", nil, ffstore.MaxScore, 1); err != nil {
						return err
					}
					tx.Put("x:"+popped[0].Member, []byte("claimed"))
					return nil
				})
				if errors.Is(err, fftype.ErrStoreConflict) {
					conflicts.Add(1)
					continue
				}
				if err != nil || len(popped) == 0 {
					return
				}
				mu.Lock()
				got[popped[0].Member]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Zero(t, conflicts.Load())
	require.Len(t, got, items)
	for m, n := range got {
		require.Equal(t, 1, n, m)
	}
}

// TestChangesFromAnotherProcess checks the doorbell between two stores on one server,
// as two processes would have: a commit of one wakes the other's readers, and a head
// it moved earlier reaches the other's QueueHeads at once.
func TestChangesFromAnotherProcess(t *testing.T) {
	t.Parallel()
	url := testdb.SharedRedis(t).URL(0)
	a := openStore(t, url, &ffvalkey.Options{Shards: 2})
	b := openStore(t, url, &ffvalkey.Options{KeyPrefix: a.KeyPrefix()})
	ctx := t.Context()
	heads, err := a.QueueHeads(ctx, []string{"ready:"})
	require.NoError(t, err)
	require.Empty(t, heads)
	ch := a.Changes(ctx)
	// a subscribes in the background: commit until its first wake-up arrives.
	for i := int64(0); ; i-- {
		require.NoError(t, b.Update(ctx, 1, func(tx ffstore.Tx) error {
			tx.QueueAdd("ready:x", "m", i) // each one earlier than the last
			return nil
		}))
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
			require.Greater(t, i, int64(-100), "no wake-up from the other store")
			continue
		}
		heads, err := a.QueueHeads(ctx, []string{"ready:"})
		require.NoError(t, err)
		require.Equal(t, []ffstore.QueueHead{{Shard: 1, Queue: "ready:x", Item: ffstore.QueueItem{Member: "m", Score: i}}}, heads)
		return
	}
}

// TestChangesWakeOnceSubscribed: Changes returns before the store's first SUBSCRIBE is in
// place, and wake-ups other processes publish until then reach nobody; so once it is in
// place every reader is woken to read again, with no commit to wake it.
func TestChangesWakeOnceSubscribed(t *testing.T) {
	t.Parallel()
	url := testdb.SharedRedis(t).URL(0)
	a := openStore(t, url, &ffvalkey.Options{Shards: 1})
	select {
	case <-a.Changes(t.Context()):
	case <-time.After(10 * time.Second):
		t.Fatal("the store subscribed (or never did) without waking its readers")
	}
}

// TestDrop checks that Drop deletes the store's keys and nothing else, on a server and a
// Cluster, with a prefix that holds characters special to SCAN MATCH, beside a store
// whose prefix extends it.
func TestDrop(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		prefix := testdb.RedisPrefix(t)
		keep := openStore(t, url, &ffvalkey.Options{KeyPrefix: prefix + "*", Shards: 4})
		drop := openStore(t, url, &ffvalkey.Options{KeyPrefix: prefix + "[", Shards: 4})
		nested := openStore(t, url, &ffvalkey.Options{KeyPrefix: prefix + "[:x", Shards: 4})
		ctx := t.Context()
		for _, s := range []*ffvalkey.Store{keep, drop, nested} {
			for shard := range 4 {
				require.NoError(t, s.Update(ctx, shard, func(tx ffstore.Tx) error {
					tx.Put("k", []byte("v"))
					tx.QueueAdd("q", "m", 1)
					tx.AppendEvent(fftype.Event{Type: fftype.EventCreated})
					return nil
				}))
			}
		}
		count := func(s *ffvalkey.Store) int {
			c := ffvalkey.Client(s)
			n := 0
			for _, node := range c.Nodes() {
				keys, err := node.Do(ctx, node.B().Keys().Pattern("*").Build()).AsStrSlice()
				require.NoError(t, err)
				p := s.KeyPrefix()
				for _, k := range keys {
					if k == p+":meta" || k == p+":hint" || strings.HasPrefix(k, p+":{") {
						n++
					}
				}
			}
			return n
		}
		before, beforeNested := count(keep), count(nested)
		require.Positive(t, before)
		require.Positive(t, beforeNested)
		require.Positive(t, count(drop))
		require.NoError(t, drop.Drop(ctx))
		require.Zero(t, count(drop))
		require.Equal(t, before, count(keep))
		require.Equal(t, beforeNested, count(nested), "a store whose prefix extends the dropped one's keeps its keys")
	})
}

// TestLargeUnit commits a unit of many records, queue items and events, then deletes
// them in another: the library passes them to the server in batches.
func TestLargeUnit(t *testing.T) {
	t.Parallel()
	s := openStore(t, testdb.SharedRedis(t).URL(0), &ffvalkey.Options{Shards: 1})
	ctx := t.Context()
	const n = 5000
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		for i := range n {
			tx.Put("k"+strconv.Itoa(i), []byte(strconv.Itoa(i)))
			tx.QueueAdd("q", "m"+strconv.Itoa(i), int64(i))
			tx.QueueAdd("r", "m"+strconv.Itoa(i), int64(i))
			tx.AppendEvent(fftype.Event{Type: fftype.EventCreated})
		}
		return nil
	}))
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		keys := make([]string, n)
		for i := range n {
			keys[i] = "k" + strconv.Itoa(i)
		}
		if err := tx.Prefetch(keys...); err != nil {
			return err
		}
		for i := range n {
			v, ok, err := tx.Get(keys[i])
			if err != nil || !ok || string(v) != strconv.Itoa(i) {
				return fmt.Errorf("%s: %q %v %v", keys[i], v, ok, err)
			}
			tx.Delete(keys[i])
		}
		items, err := tx.PopDue("q", ffstore.MaxScore, n)
		if err == nil && len(items) != n {
			err = fmt.Errorf("popped %d", len(items))
		}
		if err != nil {
			return err
		}
		// A queue read whole, checked at commit, and rewritten whole.
		items, err = tx.Range("r", nil, ffstore.MaxScore, n)
		if err == nil && len(items) != n {
			err = fmt.Errorf("ranged %d", len(items))
		}
		for _, it := range items {
			tx.QueueAdd("r", it.Member, it.Score+n)
		}
		return err
	}))
	_, last, err := s.EventBounds(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(n), last)
	require.NoError(t, s.View(ctx, 0, func(tx ffstore.ReadTx) error {
		_, ok, err := tx.Get("k0")
		require.False(t, ok)
		items, err2 := tx.Range("q", nil, ffstore.MaxScore, 10)
		require.Empty(t, items)
		rescored, err3 := tx.Range("r", nil, ffstore.MaxScore, n+1)
		require.Len(t, rescored, n)
		require.Equal(t, ffstore.QueueItem{Member: "m0", Score: n}, rescored[0])
		return errors.Join(err, err2, err3)
	}))
}

// TestUnitChecksQueueReads shows that a unit's commit checks the queue items it read with
// Range: when another unit removed or re-scored one of them meanwhile, the commit fails
// with a store conflict and writes nothing; when they all still hold, it commits.
func TestUnitChecksQueueReads(t *testing.T) {
	t.Parallel()
	testdb.OnSharedRedis(t, func(t *testing.T, url string) {
		s := openStore(t, url, &ffvalkey.Options{Shards: 2})
		ctx := t.Context()
		require.NoError(t, s.Update(ctx, 1, func(tx ffstore.Tx) error {
			for i, m := range []string{"a", "b", "c"} {
				tx.QueueAdd("q", m, int64(i))
				tx.QueueAdd("other", m, int64(i))
			}
			return nil
		}))
		// readThenWrite ranges both queues, lets meddle commit a unit of its own, then
		// writes a record.
		readThenWrite := func(key string, meddle func(tx ffstore.Tx)) error {
			return s.Update(ctx, 1, func(tx ffstore.Tx) error {
				for _, q := range []string{"q", "other"} {
					if _, err := tx.Range(q, nil, ffstore.MaxScore, 10); err != nil {
						return err
					}
				}
				require.NoError(t, s.Update(ctx, 1, func(tx ffstore.Tx) error { meddle(tx); return nil }))
				tx.Put(key, []byte("v"))
				return nil
			})
		}
		requireAbsent := func(key string) {
			t.Helper()
			require.NoError(t, s.View(ctx, 1, func(tx ffstore.ReadTx) error {
				_, ok, err := tx.Get(key)
				require.False(t, ok, "the failed unit wrote %s", key)
				return err
			}))
		}

		err := readThenWrite("removed", func(tx ffstore.Tx) { tx.QueueRemove("other", "c") })
		require.ErrorIs(t, err, fftype.ErrStoreConflict, "an item read was removed")
		requireAbsent("removed")

		err = readThenWrite("rescored", func(tx ffstore.Tx) { tx.QueueAdd("q", "b", 7) })
		require.ErrorIs(t, err, fftype.ErrStoreConflict, "an item read was re-scored")
		requireAbsent("rescored")

		require.NoError(t, readThenWrite("held", func(tx ffstore.Tx) { tx.QueueAdd("q", "d", 9) }),
			"an item added after the read does not change what was read")
	})
}

// TestMissingReadsIgnoreOtherDeletes: a unit or a view that read a record as missing is
// checked on that record alone, so deleting another record of the shard meanwhile (as
// retention and lease release do all the time) is no conflict.
func TestMissingReadsIgnoreOtherDeletes(t *testing.T) {
	t.Parallel()
	s := openStore(t, testdb.SharedRedis(t).URL(0), &ffvalkey.Options{Shards: 1})
	ctx := t.Context()
	put := func(key string) error {
		return s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Put(key, []byte("v")); return nil })
	}
	require.NoError(t, put("present"))
	deleteOther := func() {
		require.NoError(t, put("other"))
		require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error { tx.Delete("other"); return nil }))
	}
	require.NoError(t, s.Update(ctx, 0, func(tx ffstore.Tx) error {
		if _, ok, err := tx.Get("absent"); err != nil || ok {
			return fmt.Errorf("absent: found %v, %v", ok, err)
		}
		deleteOther()
		tx.Put("written", []byte("v"))
		return nil
	}), "nothing the unit read changed")

	runs := 0
	require.NoError(t, s.View(ctx, 0, func(tx ffstore.ReadTx) error {
		runs++
		if _, ok, err := tx.Get("absent"); err != nil || ok {
			return fmt.Errorf("absent: found %v, %v", ok, err)
		}
		deleteOther()
		_, _, err := tx.Get("present")
		return err
	}), "nothing the view read changed")
	require.Equal(t, 1, runs)

	err := s.Update(ctx, 0, func(tx ffstore.Tx) error {
		if _, ok, err := tx.Get("absent"); err != nil || ok {
			return fmt.Errorf("absent: found %v, %v", ok, err)
		}
		require.NoError(t, put("absent"))
		tx.Put("written", []byte("w"))
		return nil
	})
	require.ErrorIs(t, err, fftype.ErrStoreConflict, "the record read as missing was created")
}
