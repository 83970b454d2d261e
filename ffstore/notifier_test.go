package ffstore

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNotifier(t *testing.T) {
	t.Parallel()
	var n Notifier
	n.Notify() // no subscribers: nothing to do
	ctx, cancel := context.WithCancel(t.Context())
	ch := n.Changes(ctx)
	n.Notify()
	n.Notify() // coalesced with the first
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up")
	}
	select {
	case <-ch:
		t.Fatal("two wake-ups for coalesced notifies")
	default:
	}
	n.Notify() // pending while nobody reads: kept, not lost
	_, ok := <-ch
	require.True(t, ok)
	cancel()
	for range ch { // drains until closed
	}
}
