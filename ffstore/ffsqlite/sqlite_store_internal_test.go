package ffsqlite

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowfabric/flowfabric/ffstore"
	"github.com/flowfabric/flowfabric/fftype"
)

// TestCloseWithFullQueue: Close called while the unit queue is full and an Update waits
// for room in it fails that Update, still runs every unit already queued, and does not
// keep the running unit from calling Now and View (the contract lets a unit call Now),
// which may then report the store closed.
// Close used to take a lock that the waiting Update held for reading, and a pending lock
// blocks new readers, so Now inside the running unit, and with it the writer and Close,
// waited forever.
func TestCloseWithFullQueue(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ff.db"), nil)
	require.NoError(t, err)

	entered, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- s.Update(ctx, 0, func(ffstore.Tx) error {
			close(entered)
			<-release
			_, _ = s.Now(ctx)
			_ = s.View(ctx, 0, func(tx ffstore.ReadTx) error {
				_, _, err := tx.Get("k")
				return err
			})
			return nil
		})
	}()
	<-entered
	var queued sync.WaitGroup
	queuedErrs := make(chan error, maxBatch)
	for range maxBatch {
		queued.Go(func() {
			queuedErrs <- s.Update(ctx, 0, func(tx ffstore.Tx) error {
				tx.Put("k", []byte("v"))
				return nil
			})
		})
	}
	require.Eventually(t, func() bool { return len(s.units) == maxBatch }, 10*time.Second, time.Millisecond)
	waiting := &doneSignal{Context: ctx, called: make(chan struct{})}
	waited := make(chan error, 1)
	go func() { waited <- s.Update(waiting, 0, func(ffstore.Tx) error { return nil }) }()
	<-waiting.called // the Update is about to wait for room in the full queue

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-waited:
		require.ErrorIs(t, err, &fftype.Error{Kind: fftype.KindUnavailable})
	case <-time.After(10 * time.Second):
		t.Fatal("an Update waiting for room in the unit queue did not return when Close was called")
	}
	close(release)
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	require.NoError(t, <-held)
	queued.Wait()
	close(queuedErrs)
	for err := range queuedErrs {
		require.NoError(t, err)
	}
}

// doneSignal is a context that closes called when Done is first called: Update calls it
// as it starts to wait for room in the unit queue.
type doneSignal struct {
	context.Context
	called chan struct{}
	once   sync.Once
}

func (c *doneSignal) Done() <-chan struct{} {
	c.once.Do(func() { close(c.called) })
	return c.Context.Done()
}
