package ffconnect_test

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric"
	"github.com/flowfabric/flowfabric/ffconnect"
	"github.com/flowfabric/flowfabric/fftype"
	"github.com/flowfabric/flowfabric/internal/testdb"
)

// TestOpenNetworkStores opens the Postgres and Redis stores by URL and runs a create on
// each, so the URL switch reaches every store.
func TestOpenNetworkStores(t *testing.T) {
	t.Parallel()
	urls := map[string]string{
		"postgres": testdb.SharedPostgres(t).URL("postgres") + "&schema=" + testdb.Schema(t) + "&migrate=true",
		"redis":    testdb.SharedRedis(t).URL(0) + "?prefix=" + testdb.RedisPrefix(t),
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := ffconnect.Open(t.Context(), url, nil)
			require.NoError(t, err, url)
			defer s.Close()
			require.GreaterOrEqual(t, s.Shards(), 1)
			_, err = s.Now(t.Context())
			require.NoError(t, err)
		})
	}
	_, err := ffconnect.Open(t.Context(), "postgres://nobody@127.0.0.1:1/db?connect_timeout=1", nil)
	require.ErrorIs(t, err, fftype.ErrUnavailable)
}

// TestOpenAndConnectGiveTheStoreALogger pins that the store Open and Connect open logs to
// the caller's logger: here the Redis store's warning that the server has appendonly off
// (the test servers run without persistence). Connect takes the worker's logger when the
// client config names none.
func TestOpenAndConnectGiveTheStoreALogger(t *testing.T) {
	t.Parallel()
	url := testdb.SharedRedis(t).URL(0) + "?prefix=" + testdb.RedisPrefix(t)
	logTo := func(b *syncBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

	var opened syncBuffer
	s, err := ffconnect.Open(t.Context(), url, &ffconnect.OpenOpts{Logger: logTo(&opened)})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Contains(t, opened.String(), "appendonly off")

	var connected syncBuffer
	w, err := ffconnect.Connect(t.Context(), &flowfabric.WorkerConfig{Store: url, WorkerID: "w", Lanes: []string{"l"},
		Logger: logTo(&connected)}, nil)
	require.NoError(t, err)
	require.NoError(t, w.Close(t.Context()))
	require.Contains(t, connected.String(), "appendonly off")
}

// syncBuffer is a buffer a logger writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
