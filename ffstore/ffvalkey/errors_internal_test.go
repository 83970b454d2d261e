package ffvalkey

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestErrorReplies sorts real error replies of a server: rueidis drops the "ERR " of the
// server's generic errors, which must still be told apart from replies with a code of
// their own, even when their text starts with an upper-case word ("DB index ...").
// Replies with codes a test server cannot be made to send come from a script's
// redis.error_reply, which sends its text as it is.
func TestErrorReplies(t *testing.T) {
	t.Parallel()
	srv := testdb.SharedRedis(t)
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true, ForceSingleClient: true})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	key := testdb.RedisPrefix(t) + ":string"
	require.NoError(t, client.Do(t.Context(), client.B().Set().Key(key).Value("v").Build()).Error())
	reply := func(text string) []string {
		return []string{"EVAL", "return redis.error_reply('" + text + "')", "0"}
	}

	for _, tc := range []struct {
		name      string
		cmd       []string
		code      string
		retryable bool
		class     errorClass
		message   string // what storeError's message holds, if anything in particular
	}{
		{name: "DatabaseOutOfRange", cmd: []string{"SELECT", "99"}, code: "ERR"},
		{name: "BadClientName", cmd: []string{"CLIENT", "SETNAME", "my app"}, code: "ERR"},
		{name: "UnknownCommand", cmd: []string{"NOSUCHCOMMAND"}, code: "ERR"},
		{name: "ScriptError", cmd: []string{"EVAL", "return redis.call('nosuchcommand')", "0"}, code: "ERR"},
		{name: "FunctionNotFound", cmd: []string{"FCALL", "nosuchfunction", "0"}, code: "ERR", class: classReload},
		{name: "WrongType", cmd: []string{"HGET", key, "f"}, code: "WRONGTYPE"},
		{name: "ServerFull", cmd: reply("ERR max number of clients reached"), code: "ERR", retryable: true},
		{name: "ClusterNodeFull", cmd: reply("ERR max number of clients + cluster connections reached"), code: "ERR", retryable: true},
		{name: "ScriptKilled", cmd: reply("ERR Script killed by user with SCRIPT KILL..."), code: "ERR", retryable: true},
		{name: "UnknownCode", cmd: reply("MYCODE an error of a module"), code: "ERR"},
		{name: "Loading", cmd: reply("LOADING Redis is loading the dataset in memory"), code: "LOADING", retryable: true, class: classBusy},
		{name: "MasterDown", cmd: reply("MASTERDOWN Link with MASTER is down"), code: "MASTERDOWN", retryable: true, class: classBusy},
		{name: "Busy", cmd: reply("BUSY Redis is busy running a script"), code: "BUSY", retryable: true},
		{name: "OutOfMemory", cmd: reply("OOM command not allowed when used memory > maxmemory"), code: "OOM", retryable: true, message: "out of memory"},
		{name: "NoPermission", cmd: reply("NOPERM this user has no permissions"), code: "NOPERM", message: "refused the credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := client.Do(t.Context(), client.B().Arbitrary(tc.cmd...).Build()).Error()
			var re *rueidis.RedisError
			require.ErrorAs(t, err, &re)
			require.Equal(t, tc.code, errorCode(re), "reply %q", re.Error())
			require.Equal(t, tc.class, classify(t.Context(), err), "reply %q", re.Error())
			e := storeError(err, "op")
			require.Equal(t, tc.retryable, e.Retryable, "reply %q", re.Error())
			require.Contains(t, e.Message, tc.message)
		})
	}
}

// TestStoreBoundIsNotTheCallersContext: a call under a bound of the store's own (a
// commit's) that the server does not answer in time fails as unavailable and retryable,
// not with the bare context error, which the caller would take for its own context ending.
func TestStoreBoundIsNotTheCallersContext(t *testing.T) {
	t.Parallel()
	srv := testdb.NewRedis(t, testdb.RedisOptions{})
	s, err := Open(t.Context(), srv.URL(0), &Options{KeyPrefix: testdb.RedisPrefix(t)})
	require.NoError(t, err)
	defer s.Close()
	other, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	require.NoError(t, err)
	defer other.Close()
	// The server holds every other client's commands for a second.
	require.NoError(t, other.Do(t.Context(), other.B().Arbitrary("CLIENT", "PAUSE", "1000", "ALL").Build()).Error())

	ctx, cancel := ffstore.WithStoreTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = s.do(ctx, "read a key", true, func() rueidis.Completed { return s.client.B().Get().Key("k").Build() })
	require.ErrorIs(t, err, fftype.ErrUnavailable)
	require.True(t, fftype.IsRetryable(err))
	require.NotErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, other.Do(t.Context(), other.B().Arbitrary("CLIENT", "UNPAUSE").Build()).Error())
}
