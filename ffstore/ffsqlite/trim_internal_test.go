package ffsqlite

import (
	"context"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestTrimInTheGroupCommitOfAnAppend: a trim through the end of the log, in the same
// group commit as the append of the log's last event, trims that event too.
func TestTrimInTheGroupCommitOfAnAppend(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ff.db"), &Options{Shards: 1})
	require.NoError(t, err)
	defer s.Close()
	appendOne := func(context.Context) error {
		return s.Update(ctx, 0, func(tx ffstore.Tx) error {
			tx.AppendEvent(fftype.Event{Type: fftype.EventCreated, Time: time.Unix(1, 0)})
			return nil
		})
	}
	require.NoError(t, appendOne(ctx))

	// Hold the writer inside a unit while an append and then a trim queue behind it: the
	// writer takes both into the same group commit.
	entered, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- s.Update(ctx, 0, func(ffstore.Tx) error {
			close(entered)
			<-release
			return nil
		})
	}()
	<-entered
	appended, trimmed := make(chan error, 1), make(chan error, 1)
	go func() { appended <- appendOne(ctx) }()
	require.Eventually(t, func() bool { return len(s.units) == 1 }, 10*time.Second, time.Millisecond)
	go func() { trimmed <- s.TrimEvents(ctx, 0, math.MaxUint64) }()
	require.Eventually(t, func() bool { return len(s.units) == 2 }, 10*time.Second, time.Millisecond)
	close(release)
	require.NoError(t, <-held)
	require.NoError(t, <-appended)
	require.NoError(t, <-trimmed)

	trim, last, err := s.EventBounds(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(2), last)
	require.Equal(t, last, trim, "a trim through the end reaches the event appended in its group commit")
}
